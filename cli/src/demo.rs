//! `ccbt demo`: the idea on one machine, in a temporary directory that is removed afterwards.
//!
//! Today it shows the local half: publish a folder, edit a file in place, republish, and how few
//! bytes the new version needed; export both versions and check them; make a torrent of the
//! folder. (Two nodes and live mounts join it as the network and FUSE layers land.)

use crate::progress::human_bytes;
use crate::Ctx;
use anyhow::{ensure, Context, Result};
use ccbt_core::create::{create_torrent, CreateOptions};
use ccbt_core::encoding::to_hex;
use ccbt_xet::head::share_id_hex;
use ccbt_xet::shares::{ShareChoice, Shares};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;

fn fill(path: &Path, len: usize, seed: u64) -> Result<()> {
    let mut x = seed | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = left.min(8);
        f.write_all(&b[..n])?;
        left -= n;
    }
    Ok(())
}

fn step(ctx: &Ctx, msg: &str) {
    if !ctx.quiet {
        println!("\n== {msg}");
    }
}

pub fn demo(ctx: &Ctx) -> Result<()> {
    let tmp = tempdir()?;
    let res = run(ctx, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

fn tempdir() -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("ccbt-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    Ok(p)
}

fn run(ctx: &Ctx, tmp: &Path) -> Result<()> {
    let folder = tmp.join("photos");
    std::fs::create_dir_all(folder.join("2026"))?;
    fill(&folder.join("2026/video.mp4"), 64 << 20, 7)?;
    fill(&folder.join("2026/raw.dng"), 9 << 20, 8)?;
    std::fs::write(folder.join("notes.txt"), "shopping: milk, eggs\n")?;
    let shares = Shares::open(&tmp.join("node-a"))?;

    step(ctx, "node A publishes a 73 MiB folder");
    let r1 = shares.publish(&folder, ShareChoice::Auto, &AtomicU64::new(0))?;
    println!(
        "share id {} version {}: {} files, {}, stored {}",
        share_id_hex(&r1.share),
        r1.seq,
        r1.files,
        human_bytes(r1.logical_bytes),
        human_bytes(r1.new_chunk_bytes + r1.new_node_bytes)
    );

    step(
        ctx,
        "A edits 4 KiB in the middle of the 64 MiB video, in place, and republishes",
    );
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(folder.join("2026/video.mp4"))?;
        f.seek(SeekFrom::Start(32 << 20))?;
        f.write_all(&[0x42; 4096])?;
    }
    std::fs::write(folder.join("notes.txt"), "shopping: milk, eggs, coffee\n")?;
    let r2 = shares.publish(&folder, ShareChoice::Auto, &AtomicU64::new(0))?;
    let moved = r2.new_chunk_bytes + r2.new_node_bytes;
    println!(
        "version {}: new bytes stored {} for a {} folder ({:.3}% of it)",
        r2.seq,
        human_bytes(moved),
        human_bytes(r2.logical_bytes),
        100.0 * moved as f64 / r2.logical_bytes as f64
    );
    ensure!(
        moved < 1 << 20,
        "a 4 KiB edit should not store {moved} bytes"
    );

    step(ctx, "both versions export byte-identical");
    for (seq, want_notes) in [(1, "eggs\n"), (2, "coffee\n")] {
        let out = tmp.join(format!("export-v{seq}"));
        shares.export(&r1.share, Some(seq), &out)?;
        let notes = std::fs::read_to_string(out.join("notes.txt"))?;
        ensure!(
            notes.ends_with(want_notes),
            "version {seq} has the wrong notes"
        );
        println!("version {seq}: notes.txt = {:?}", notes.trim());
    }
    let out2 = std::fs::read(tmp.join("export-v2/2026/video.mp4"))?;
    ensure!(
        out2 == std::fs::read(folder.join("2026/video.mp4"))?,
        "video differs"
    );
    println!("version 2 video.mp4 equals the edited file");
    let report = shares.verify(&|_| {})?;
    ensure!(
        report.damage.is_empty(),
        "store damaged: {:?}",
        report.damage
    );
    println!("cas verify: clean");

    step(ctx, "the same folder as a classic hybrid torrent");
    let m = create_torrent(&folder, &CreateOptions::default(), &AtomicU64::new(0))?;
    println!(
        "v1 {}  v2 {}  {} pieces of {}",
        m.v1_hash.map(|h| to_hex(&h)).unwrap_or_default(),
        m.v2_hash.map(|h| to_hex(&h)).unwrap_or_default(),
        m.piece_count(),
        human_bytes(m.piece_length)
    );
    println!("\ndemo finished; temporary files removed");
    Ok(())
}
