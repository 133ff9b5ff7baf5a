//! Peer exchange (BEP 11) with libtorrent: C is told only of B, and B can hardly upload, so C
//! completes only if B's PEX told it of the seeder A. With B = ccbt and B = libtorrent, and with
//! libtorrent as C learning from ccbt.

use ccbt_tests::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    torrent: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    make_tree(&root.join("seed/data"), &[("big.bin", 4 << 20)]);
    let torrent = root.join("t.torrent");
    ccbt_ok(&[
        "create",
        s(&root.join("seed/data")),
        "--v1",
        "--piece-length",
        "64K",
        "-o",
        s(&torrent),
        "-q",
    ]);
    Setup {
        _tmp: tmp,
        root,
        torrent,
    }
}

/// B: ccbt, downloading slowly from A (so A, a seed, keeps the connection: seeds drop each
/// other) and uploading at 1 KiB/s.
fn ccbt_b(st: &Setup, a: &str) -> (ChildGuard, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let g = spawn_ccbt(
        &[
            "--data-dir",
            s(&st.root.join("B")),
            "download",
            s(&st.torrent),
            "-o",
            s(&st.root.join("B-dl")),
            "--peer",
            a,
            "--down-limit",
            "80",
            "--up-limit",
            "1",
            "--listen",
            &listen,
        ],
        &st.root.join("B.log"),
    );
    wait_listening(&listen, 20);
    // Connected to A once its first bytes are in.
    wait_until(30.0, "B to start downloading from A", || {
        std::fs::read_to_string(st.root.join("B.log")).is_ok_and(|l| l.contains("down "))
            || std::fs::metadata(st.root.join("B-dl/data/big.bin")).is_ok()
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    (g, listen)
}

fn ccbt_c(st: &Setup, b: &str) -> f64 {
    let t0 = Instant::now();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut g = spawn_ccbt_env(
        &[
            "--log-level",
            "debug",
            "--data-dir",
            s(&st.root.join("C")),
            "download",
            s(&st.torrent),
            "-o",
            s(&st.root.join("C-dl")),
            "--peer",
            b,
            "--listen",
            &listen,
        ],
        &st.root.join("C.log"),
        &[],
    );
    let logs = ["A.log", "B.log", "C.log"].map(|l| st.root.join(l));
    wait_until_logs(
        120.0,
        "C to finish (only possible with A's address)",
        &logs.each_ref().map(|p| p.as_path()),
        || g.0.try_wait().unwrap().is_some(),
    );
    assert!(
        same_file(
            &st.root.join("C-dl/data/big.bin"),
            &st.root.join("seed/data/big.bin")
        ),
        "C's copy differs: {}",
        std::fs::read_to_string(st.root.join("C.log")).unwrap_or_default()
    );
    t0.elapsed().as_secs_f64()
}

fn seed_dir(st: &Setup) -> &Path {
    Box::leak(Box::new(st.root.join("seed")))
}

#[test]
fn ccbt_learns_a_peer_through_ccbt_pex() {
    let st = setup();
    let pa = free_port();
    let _a = spawn_lt_seed(&st.torrent, seed_dir(&st), pa, &[]);
    let (_b, b) = ccbt_b(&st, &format!("127.0.0.1:{pa}"));
    let secs = ccbt_c(&st, &b);
    eprintln!("C (ccbt) finished in {secs:.1}s via A learnt from B = ccbt");
}

#[test]
fn ccbt_learns_a_peer_through_libtorrent_pex() {
    let st = setup();
    // A: ccbt seeding; B: libtorrent, downloading from A, then uploading at 1 KiB/s.
    let a = format!("127.0.0.1:{}", free_port());
    let _a = spawn_ccbt(
        &[
            "--data-dir",
            s(&st.root.join("A")),
            "seed",
            s(&st.torrent),
            s(seed_dir(&st)),
            "--listen",
            &a,
        ],
        &st.root.join("A.log"),
    );
    wait_listening(&a, 20);
    let pb = free_port();
    let _b = ChildGuard(
        std::process::Command::new("/usr/bin/python3")
            .env("LT_UPLOAD_LIMIT", "1024")
            .env("LT_DOWNLOAD_LIMIT", "81920")
            .arg(root().join("tests/scripts/lt_tool.py"))
            .args([
                "leech",
                s(&st.torrent),
                s(&st.root.join("B-dl")),
                &pb.to_string(),
                "120",
                &a,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&format!("127.0.0.1:{pb}"), 20);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let secs = ccbt_c(&st, &format!("127.0.0.1:{pb}"));
    eprintln!("C (ccbt) finished in {secs:.1}s via A learnt from B = libtorrent");
}

#[test]
fn libtorrent_learns_a_peer_through_ccbt_pex() {
    let st = setup();
    let pa = free_port();
    let _a = spawn_lt_seed(&st.torrent, seed_dir(&st), pa, &[]);
    let (_b, b) = ccbt_b(&st, &format!("127.0.0.1:{pa}"));
    let pc = free_port().to_string();
    let r = lt_tool(&[
        "leech",
        s(&st.torrent),
        s(&st.root.join("C-lt")),
        &pc,
        "120",
        &b,
    ]);
    assert_eq!(r["done"], true, "{r}");
    assert!(same_file(
        &st.root.join("C-lt/data/big.bin"),
        &st.root.join("seed/data/big.bin")
    ));
    eprintln!(
        "C (libtorrent) finished in {}s via A learnt from B = ccbt",
        r["seconds"]
    );
}
