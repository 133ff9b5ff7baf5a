//! `ccbt create` and `ccbt info`.

use crate::progress::{human_bytes, parse_size, ByteProgress};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::create::{create_torrent, CreateOptions, TorrentKind};
use ccbt_core::encoding::printable;
use ccbt_core::encoding::to_hex;
use ccbt_core::{Magnet, Metainfo};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct CreateArgs {
    /// File or directory to make a torrent of
    pub path: PathBuf,
    /// Tracker announce URL (repeat for backup tiers)
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Web seed URL (BEP 19)
    #[arg(short = 'w', long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// BEP 17 HTTP seed (a script answering `?info_hash=..&piece=N`; repeatable)
    #[arg(long = "http-seed", value_name = "URL")]
    pub http_seeds: Vec<String>,
    /// BitTorrent v1 only
    #[arg(long, group = "kind")]
    pub v1: bool,
    /// BitTorrent v2 only
    #[arg(long, group = "kind")]
    pub v2: bool,
    /// v1 + v2 in one torrent (the default)
    #[arg(long, group = "kind")]
    pub hybrid: bool,
    /// Piece length: bytes or 256K, 1M... (power of two, ≥ 16K; default: picked from the size)
    #[arg(long, value_parser = parse_size)]
    pub piece_length: Option<u64>,
    /// Mark the torrent private (no DHT or PEX)
    #[arg(long)]
    pub private: bool,
    #[arg(long)]
    pub comment: Option<String>,
    /// Leave out the creation date (reproducible output)
    #[arg(long)]
    pub no_date: bool,
    /// Where to write the .torrent
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let kind = if a.v1 {
        TorrentKind::V1
    } else if a.v2 {
        TorrentKind::V2
    } else {
        TorrentKind::Hybrid
    };
    let total = tree_size(&a.path)?;
    let opts = CreateOptions {
        kind,
        piece_length: a.piece_length,
        trackers: a.trackers.clone(),
        web_seeds: a.web_seeds.clone(),
        http_seeds: a.http_seeds.clone(),
        private: a.private,
        comment: a.comment.clone(),
        created_by: Some(format!("ccbt {}", env!("CARGO_PKG_VERSION"))),
        creation_date: (!a.no_date).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        }),
    };
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let m = {
        let _bar = ByteProgress::start("hashing", total, counter.clone(), ctx.quiet);
        create_torrent(&a.path, &opts, &counter)
            .with_context(|| format!("cannot create a torrent of {}", a.path.display()))?
    };
    let secs = started.elapsed().as_secs_f64();
    write_atomic(&a.output, &m.to_torrent_bytes())?;
    if ctx.json {
        let mut v = info_json(&m);
        v["output"] = json!(a.output);
        v["seconds"] = json!(secs);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ctx.quiet {
        outln!(
            "created {} ({}, {} in {} files, {} pieces of {}) in {:.2}s ({}/s)",
            a.output.display(),
            m.kind(),
            human_bytes(m.content_length()),
            m.files.iter().filter(|f| !f.pad).count(),
            m.piece_count(),
            human_bytes(m.piece_length),
            secs,
            human_bytes((m.content_length() as f64 / secs.max(1e-9)) as u64),
        );
        if let Some(h) = m.v1_hash {
            outln!("info-hash v1: {}", to_hex(&h));
        }
        if let Some(h) = m.v2_hash {
            outln!("info-hash v2: {}", to_hex(&h));
        }
        outln!("magnet: {}", magnet_of(&m));
    }
    Ok(())
}

fn tree_size(p: &Path) -> Result<u64> {
    let meta =
        std::fs::symlink_metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for e in std::fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))? {
        total += tree_size(&e?.path())?;
    }
    Ok(total)
}

/// Writes through a temporary file and a rename so a crash never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("ccbt-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn magnet_of(m: &Metainfo) -> Magnet {
    Magnet {
        v1: m.v1_hash,
        v2: m.v2_hash,
        name: Some(m.name.clone()),
        trackers: m.trackers.iter().flatten().cloned().collect(),
        web_seeds: m.url_list.clone(),
        ..Default::default()
    }
}

#[derive(Args)]
pub struct InfoArgs {
    /// A .torrent file or a magnet link
    pub target: String,
}

/// `info_json` as a serializer that writes the file list one entry at a time.
struct InfoJson<'a>(&'a Metainfo);

impl serde::Serialize for InfoJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.0;
        let mut head = info_json_head(m);
        let mut map = ser.serialize_map(None)?;
        if let serde_json::Value::Object(o) = &mut head {
            for (k, v) in std::mem::take(o) {
                map.serialize_entry(&k, &v)?;
            }
        }
        struct Files<'a>(&'a [ccbt_core::FileEntry]);
        impl serde::Serialize for Files<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_seq(self.0.iter().filter(|f| !f.pad).map(file_json))
            }
        }
        map.serialize_entry("files", &Files(&m.files))?;
        map.end()
    }
}

fn file_json(f: &ccbt_core::FileEntry) -> serde_json::Value {
    json!({
        "path": f.path_string(),
        "length": f.length,
        "executable": f.executable,
        "pieces_root": f.pieces_root.map(|r| to_hex(&r)),
    })
}

/// Everything of `info --json` but the file list.
fn info_json_head(m: &Metainfo) -> serde_json::Value {
    json!({
        "name": m.name,
        "kind": m.kind(),
        "info_hash_v1": m.v1_hash.map(|h| to_hex(&h)),
        "info_hash_v2": m.v2_hash.map(|h| to_hex(&h)),
        "piece_length": m.piece_length,
        "piece_count": m.piece_count(),
        "total_size": m.content_length(),
        "private": m.private,
        "multi_file": m.multi_file,
        "trackers": m.trackers,
        "url_list": m.url_list,
        "http_seeds": m.http_seeds,
        "comment": m.comment,
        "created_by": m.created_by,
        "creation_date": m.creation_date,
        "pad_files": m.files.iter().filter(|f| f.pad).count(),
        "magnet": magnet_of(m).format(),
    })
}

fn info_json(m: &Metainfo) -> serde_json::Value {
    let mut v = info_json_head(m);
    v["files"] = m.files.iter().filter(|f| !f.pad).map(file_json).collect();
    v
}

pub fn info(ctx: &Ctx, a: InfoArgs) -> Result<()> {
    if a.target.starts_with("magnet:") {
        let mg = Magnet::parse(&a.target)?;
        if ctx.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "name": mg.name,
                    "info_hash_v1": mg.v1.map(|h| to_hex(&h)),
                    "info_hash_v2": mg.v2.map(|h| to_hex(&h)),
                    "public_key": mg.public_key.map(|h| to_hex(&h)),
                    "trackers": mg.trackers,
                    "peers": mg.peers,
                    "web_seeds": mg.web_seeds,
                    "magnet": mg.format(),
                }))?
            );
        } else {
            outln!(
                "name:         {}",
                printable(mg.name.as_deref().unwrap_or("(not given)"))
            );
            if let Some(h) = mg.v1 {
                outln!("info-hash v1: {}", to_hex(&h));
            }
            if let Some(h) = mg.v2 {
                outln!("info-hash v2: {}", to_hex(&h));
            }
            if let Some(k) = mg.public_key {
                outln!("public key:   {} (BEP 46 mutable share)", to_hex(&k));
            }
            for t in &mg.trackers {
                outln!("tracker:      {}", printable(t));
            }
            for p in &mg.peers {
                outln!("peer:         {}", printable(&p.to_string()));
            }
            outln!("(file list and sizes arrive from peers: `ccbt download` or `ccbt mount` of the magnet fetches them)");
        }
        return Ok(());
    }
    let path = Path::new(&a.target);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > ccbt_core::bencode::MAX_INPUT {
        bail!(
            "{} is {} bytes, too large to be a torrent",
            path.display(),
            bytes.len()
        );
    }
    let m = Metainfo::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
    if ctx.json {
        // Streamed: a torrent may list a million files, and a JSON tree of them costs gigabytes.
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &InfoJson(&m)).map_err(|e| {
            // Keep the I/O error's kind: a closed pipe ends the command quietly.
            e.io_error_kind()
                .map_or_else(|| std::io::Error::other(e), std::io::Error::from)
        })?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    outln!("name:         {}", printable(&m.name));
    outln!("type:         {}", m.kind());
    if let Some(h) = m.v1_hash {
        outln!("info-hash v1: {}", to_hex(&h));
    }
    if let Some(h) = m.v2_hash {
        outln!("info-hash v2: {}", to_hex(&h));
    }
    outln!(
        "pieces:       {} × {}",
        m.piece_count(),
        human_bytes(m.piece_length)
    );
    outln!(
        "size:         {} ({} bytes)",
        human_bytes(m.content_length()),
        m.content_length()
    );
    outln!("private:      {}", if m.private { "yes" } else { "no" });
    for (i, tier) in m.trackers.iter().enumerate() {
        outln!("tracker {i}:    {}", printable(&tier.join(" ")));
    }
    for u in &m.url_list {
        outln!("web seed:     {}", printable(u));
    }
    for u in &m.http_seeds {
        outln!("http seed:    {}", printable(u));
    }
    if let Some(c) = &m.comment {
        outln!("comment:      {}", printable(c));
    }
    let real: Vec<_> = m.files.iter().filter(|f| !f.pad).collect();
    outln!("files ({}):", real.len());
    for f in real {
        outln!("  {:>14}  {}", f.length, printable(&f.path_string()));
    }
    outln!("magnet:       {}", printable(&magnet_of(&m).to_string()));
    Ok(())
}
