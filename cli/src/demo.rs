//! `ccbt demo`: the idea on one machine, on loopback, in a temporary directory that is removed
//! afterwards (docs/cli.md). Two nodes: A publishes a folder and mounts it (writable, it owns the
//! key); B knows only the share id and A's DHT node on loopback: it gets the head and A's address
//! from the DHT, then mounts the share from A over the `ccbt_xet` extension. A file is edited in place through A's
//! mount; B's mount shows the new content seconds later, and the demo prints the bytes that moved
//! against the file's size. Then the local half: versions, export, a torrent of the folder.

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
        outln!("\n== {msg}");
    }
}

pub fn demo(ctx: &Ctx) -> Result<()> {
    let tmp = tempdir()?;
    // A reader that goes away (`ccbt demo | head`) ends the demo early: nothing may stay behind.
    let t = tmp.clone();
    *crate::AT_EXIT.lock().unwrap() = Some(Box::new(move || {
        for m in ["mnt-a", "mnt-b"] {
            if let Ok(c) = std::ffi::CString::new(t.join(m).as_os_str().as_encoded_bytes()) {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&t);
    }));
    let res = two_nodes(ctx, &tmp).and_then(|_| run(ctx, &tmp));
    crate::AT_EXIT.lock().unwrap().take();
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

/// The network part: two nodes, two mounts, an edit that travels.
fn two_nodes(ctx: &Ctx, tmp: &Path) -> Result<()> {
    use ccbt_core::extension::Registry;
    use ccbt_core::session::{Session, SessionConfig};
    use ccbt_xet::net::ShareNet;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    if !Path::new("/dev/fuse").exists() {
        outln!("(no /dev/fuse here: skipping the two-node mount part of the demo)");
        return Ok(());
    }
    let folder = tmp.join("shared-folder");
    std::fs::create_dir_all(&folder)?;
    fill(&folder.join("movie.mkv"), 48 << 20, 11)?;
    std::fs::write(folder.join("notes.txt"), "meeting at 10\n")?;
    let a_shares = Arc::new(Shares::open(&tmp.join("node-a-net"))?);
    step(ctx, "node A publishes a 48 MiB folder");
    let r = a_shares.publish(&folder, ShareChoice::New, &AtomicU64::new(0))?;
    let id = r.share;
    outln!("share id {}", share_id_hex(&id));
    let rt = crate::runtime()?;
    let _in_rt = rt.enter();
    // Each node has a DHT node on its peer port. A starts a private loopback DHT; B knows only
    // A's DHT address and the share id: no peer address, no tracker.
    let start_node = |shares: Arc<Shares>,
                      bootstrap: Vec<String>|
     -> Result<(
        Arc<ShareNet>,
        Session,
        ccbt_core::session::TorrentHandle,
        ccbt_dht::Dht,
    )> {
        let xet = ShareNet::new(shares);
        let mut reg = Registry::default();
        reg.register(xet.extension());
        let session = rt.block_on(Session::start(SessionConfig::default(), reg))?;
        let dht = ccbt_dht::Dht::start(ccbt_dht::DhtConfig {
            bind: session.listen_addr(),
            bootstrap,
            state_file: None,
            // Both nodes share 127.0.0.1: no per-IP limits on this private network.
            settings: ccbt_dht::node::Settings {
                max_nodes_per_ip: 0,
                queries_per_ip_per_sec: 0,
                read_only: false,
            },
        })?;
        session.set_discovery(ccbt_core::session::discovery::DiscoveryHandle(Arc::new(
            dht.clone(),
        )));
        let swarm = session.add_swarm(id, vec![], vec![])?;
        Ok((xet, session, swarm, dht))
    };
    let (a_xet, _a_session, _a_swarm, a_dht) = start_node(a_shares.clone(), vec![])?;
    let head = a_shares.head(&id, None)?;
    rt.block_on(a_dht.put(ccbt_node::node::head_item(&head)))?;
    let b_shares = Arc::new(Shares::open(&tmp.join("node-b-net"))?);
    let (b_xet, _b_session, b_swarm, b_dht) =
        start_node(b_shares, vec![a_dht.local_addr().to_string()])?;
    step(ctx, "node B mounts it knowing only the share id");
    let t_find = Instant::now();
    let found = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let kind = ccbt_dht::node::ItemKind::Mutable {
                        k: None,
                        salt: Vec::new(),
                        min_seq: None,
                    };
                    if let Ok(Some(it)) = b_dht.get(id, kind).await {
                        if let Some(h) = ccbt_node::node::head_from_item(&it) {
                            return h;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
        })
        .context("node B found no head on the DHT")?;
    found.verify_for(&id)?;
    outln!(
        "B asked the DHT (bootstrapped from A's DHT node at {}) for the share id: version {} in {:.0} ms, signature verified; A's address comes from the DHT too",
        a_dht.local_addr(),
        found.seq,
        t_find.elapsed().as_secs_f64() * 1000.0
    );
    b_xet.offer_head(found, None);
    let cfg = |name: &str| ccbt_fs::MountConfig {
        share: id,
        overlay_dir: tmp.join(name).join("overlay"),
        read_timeout: Duration::from_secs(20),
        publish_debounce: Duration::from_millis(300),
        read_ahead_kb: 1024,
        file_cache_dir: tmp.join(name).join("fscache"),
        file_cache_bytes: 1 << 30,
        history: true,
        show_history: false,
        frozen: false,
        cache_limit: 0,
    };
    let (ma, mb) = (tmp.join("mnt-a"), tmp.join("mnt-b"));
    std::fs::create_dir_all(&ma)?;
    std::fs::create_dir_all(&mb)?;
    let mount_a = ccbt_fs::mount(
        a_xet.clone(),
        rt.handle().clone(),
        head,
        &ma,
        cfg("node-a-net"),
    )?;
    // B has the head from the DHT (a newer one may have come over the wire since).
    let deadline = Instant::now() + Duration::from_secs(20);
    let head_b = loop {
        if let Some(h) = b_xet.newest_head(&id) {
            break h;
        }
        ensure!(Instant::now() < deadline, "node B never heard from node A");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mount_b = ccbt_fs::mount(
        b_xet.clone(),
        rt.handle().clone(),
        head_b,
        &mb,
        cfg("node-b-net"),
    )?;
    outln!(
        "A mounted it (writable) at {}, B mounted it (read-only) at {}",
        ma.display(),
        mb.display()
    );
    let listing: Vec<String> = std::fs::read_dir(&mb)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    outln!(
        "B's mount lists {listing:?}; notes.txt on B: {:?}",
        std::fs::read_to_string(mb.join("notes.txt"))?.trim()
    );

    step(
        ctx,
        "A edits notes.txt and 4 KiB in the middle of movie.mkv, in place, through its mount",
    );
    let wire0 = b_swarm.stats().wire_in;
    let t0 = Instant::now();
    std::fs::write(ma.join("notes.txt"), "meeting moved to 11\n")?;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(ma.join("movie.mkv"))?;
        f.write_all_at(&[0x42; 4096], 24 << 20)?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(mb.join("notes.txt"))
        .map(|s| !s.contains("11"))
        .unwrap_or(true)
    {
        ensure!(Instant::now() < deadline, "B's mount did not show the edit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = t0.elapsed();
    outln!(
        "B's mount shows {:?} {:.2}s after the edit (version {})",
        std::fs::read_to_string(mb.join("notes.txt"))?.trim(),
        seen.as_secs_f64(),
        mount_b.seq()
    );
    let mut probe = vec![0u8; 4096];
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(mb.join("movie.mkv"))?.read_exact_at(&mut probe, 24 << 20)?;
    }
    ensure!(
        probe.iter().all(|&b| b == 0x42),
        "B reads the old movie bytes"
    );
    let moved = b_swarm.stats().wire_in - wire0;
    outln!(
        "bytes that reached B for this version: {} on the wire (file size {}: {:.3}%)",
        human_bytes(moved),
        human_bytes(48 << 20),
        100.0 * moved as f64 / (48u64 << 20) as f64
    );
    drop(mount_b);
    mount_a.unmount()?;

    Ok(())
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
    outln!(
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
    outln!(
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
        outln!("version {seq}: notes.txt = {:?}", notes.trim());
    }
    let out2 = std::fs::read(tmp.join("export-v2/2026/video.mp4"))?;
    ensure!(
        out2 == std::fs::read(folder.join("2026/video.mp4"))?,
        "video differs"
    );
    outln!("version 2 video.mp4 equals the edited file");
    let report = shares.verify(&|_| {})?;
    ensure!(
        report.damage.is_empty(),
        "store damaged: {:?}",
        report.damage
    );
    outln!("cas verify: clean");

    step(ctx, "the same folder as a classic hybrid torrent");
    let m = create_torrent(&folder, &CreateOptions::default(), &AtomicU64::new(0))?;
    outln!(
        "v1 {}  v2 {}  {} pieces of {}",
        m.v1_hash.map(|h| to_hex(&h)).unwrap_or_default(),
        m.v2_hash.map(|h| to_hex(&h)).unwrap_or_default(),
        m.piece_count(),
        human_bytes(m.piece_length)
    );
    outln!("\ndemo finished; temporary files removed");
    Ok(())
}
