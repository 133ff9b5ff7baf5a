//! `ccbt hash`: Xet file hashes in the shape of `sha256sum`.

use crate::Ctx;
use anyhow::{Context, Result};
use ccbt_xet::{hash_file_parallel, hash_reader, FileDigest};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct HashArgs {
    /// Files to hash (`-` for standard input)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also print every chunk: `<offset> <length> <chunk hash>`
    #[arg(long)]
    pub chunks: bool,
    /// Hash on one core only
    #[arg(long)]
    pub single_thread: bool,
}

pub fn hash(ctx: &Ctx, a: HashArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut json_out = Vec::new();
    let mut failed = 0;
    for p in &a.files {
        let res: Result<FileDigest> = (|| {
            if p.as_os_str() == "-" {
                return Ok(hash_reader(std::io::stdin().lock())?);
            }
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            if f.metadata()?.is_dir() {
                anyhow::bail!("{} is a directory", p.display());
            }
            let d = if a.single_thread {
                hash_reader(f)
            } else {
                hash_file_parallel(&f)
            };
            d.with_context(|| format!("cannot read {}", p.display()))
        })();
        let d = match res {
            Ok(d) => d,
            Err(e) => {
                // Like sha256sum: report, carry on with the other files, fail at the end.
                eprintln!("error: {e:#}");
                failed += 1;
                continue;
            }
        };
        if ctx.json {
            let mut v = json!({
                "path": p,
                "size": d.size,
                "file_hash": d.file_hash.to_hex(),
                "merkle_root": d.merkle_root.to_hex(),
                "num_chunks": d.chunks.len(),
            });
            if a.chunks {
                v["chunks"] = d
                    .chunks
                    .iter()
                    .map(|c| json!([c.offset, c.len, c.hash.to_hex()]))
                    .collect();
            }
            json_out.push(v);
        } else {
            if a.chunks {
                for c in &d.chunks {
                    writeln!(out, "{} {} {}", c.offset, c.len, c.hash)?;
                }
            }
            writeln!(out, "{}  {}", d.file_hash, p.display())?;
        }
    }
    if ctx.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json_out)?)?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be hashed", a.files.len());
    }
    Ok(())
}
