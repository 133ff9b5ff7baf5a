//! `ccbt publish / versions / export / cas` on a real RocksDB store and real files.

use ccbt_tests::*;
use serde_json::Value;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn publish(data: &Path, dir: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["--data-dir", s(data), "publish", s(dir)];
    a.extend_from_slice(extra);
    ccbt_json(&a)
}

fn verify_clean(data: &Path) {
    let o = ccbt(&["--data-dir", s(data), "cas", "verify"]);
    assert!(
        o.status.success(),
        "cas verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn publish_export_roundtrip_with_every_kind_of_entry() {
    let t = tempfile::tempdir().unwrap();
    let (src, data) = (t.path().join("src"), t.path().join("data"));
    make_tree(
        &src,
        &[
            ("a.bin", 3_000_001),
            ("dir/b.txt", 12),
            ("dir/deep/er/c.bin", 200_000),
            ("ünïcødé/名前.txt", 77),
        ],
    );
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::create_dir_all(src.join("empty-dir/nested-empty")).unwrap();
    symlink("dir/b.txt", src.join("link")).unwrap();
    symlink("/nonexistent/target", src.join("dangling")).unwrap();
    // A symlink loop is stored as two links, never followed.
    symlink("loop-b", src.join("loop-a")).unwrap();
    symlink("loop-a", src.join("loop-b")).unwrap();
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A sparse 5 GiB file: identical zero chunks must dedupe to almost nothing.
    let sparse = std::fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(5 << 30).unwrap();
    drop(sparse);
    let fifo = src.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());

    let r = publish(&data, &src, &[]);
    assert_eq!(r["version"], 1);
    assert_eq!(r["new_share"], true);
    assert!(r["warnings"][0].as_str().unwrap().contains("fifo"));
    let id = r["share"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 40);
    let logical = r["logical_bytes"].as_u64().unwrap();
    assert!(logical > 5 << 30);
    let stored = r["new_chunk_bytes"].as_u64().unwrap();
    assert!(stored < 4 << 20, "5 GiB of zeros stored as {stored} bytes");

    // The key is private to its owner.
    let key = data.join("keys").join(format!("{id}.key"));
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);

    std::fs::remove_file(&fifo).unwrap();
    let out = t.path().join("out");
    ccbt_ok(&["--data-dir", s(&data), "export", &id, s(&out)]);
    assert_same_tree(&src, &out);
    let m = std::fs::metadata(out.join("run.sh")).unwrap();
    assert_eq!(m.mode() & 0o111, 0o111, "exec bit lost");
    assert_eq!(
        std::fs::metadata(out.join("a.bin")).unwrap().mode() & 0o111,
        0
    );
    assert_eq!(
        std::fs::metadata(out.join("a.bin")).unwrap().mtime(),
        std::fs::metadata(src.join("a.bin")).unwrap().mtime()
    );
    assert!(out.join("empty-dir/nested-empty").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("loop-a")).unwrap(),
        Path::new("loop-b")
    );
    // The exported sparse file is sparse too.
    let sm = std::fs::metadata(out.join("sparse.img")).unwrap();
    assert_eq!(sm.len(), 5 << 30);
    assert!(sm.blocks() * 512 < 64 << 20, "export wrote the zeros");

    // Exporting over a non-empty directory is refused; nothing is touched.
    let o = ccbt(&["--data-dir", s(&data), "export", &id, s(&out)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    verify_clean(&data);
}

/// Returns (new data chunks, new node+listing bytes) of a republish after `edit`.
fn republish_after(edit: impl FnOnce(&Path)) -> (u64, u64, u64) {
    let t = tempfile::tempdir().unwrap();
    let (src, data) = (t.path().join("src"), t.path().join("data"));
    make_tree(&src, &[("big.bin", 256 << 20), ("small.txt", 1000)]);
    let r1 = publish(&data, &src, &[]);
    edit(&src.join("big.bin"));
    let r2 = publish(&data, &src, &[]);
    assert_eq!(r2["share"], r1["share"], "same folder, same share");
    assert_eq!(r2["version"], 2);
    // Both versions export intact.
    let id = r1["share"].as_str().unwrap();
    let out = t.path().join("v2");
    ccbt_ok(&[
        "--data-dir",
        s(&data),
        "export",
        &format!("{id}@2"),
        s(&out),
    ]);
    assert_same_tree(&src, &out);
    (
        r2["new_chunks"].as_u64().unwrap(),
        r2["new_node_bytes"].as_u64().unwrap(),
        r2["new_chunk_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn small_overwrite_stores_few_chunks() {
    let (chunks, node_bytes, chunk_bytes) = republish_after(|p| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(&[0xAB; 1024], 128 << 20).unwrap();
    });
    // Data chunks: at most 3 (the listing is one more small chunk).
    assert!(chunks <= 4, "{chunks} new chunks");
    assert!(
        chunk_bytes <= 3 * 128 * 1024 + 64 * 1024,
        "{chunk_bytes} chunk bytes"
    );
    assert!(node_bytes < 16 * 1024, "{node_bytes} node bytes");
}

#[test]
fn middle_insert_stores_few_chunks() {
    let (chunks, node_bytes, chunk_bytes) = republish_after(|p| {
        let mut d = std::fs::read(p).unwrap();
        let mid = d.len() / 2;
        d.splice(mid..mid, std::iter::repeat_n(0x5Au8, 100));
        std::fs::write(p, d).unwrap();
    });
    assert!(chunks <= 4, "{chunks} new chunks");
    assert!(
        chunk_bytes <= 3 * 128 * 1024 + 64 * 1024,
        "{chunk_bytes} chunk bytes"
    );
    assert!(node_bytes < 16 * 1024, "{node_bytes} node bytes");
}

#[test]
fn copy_of_a_folder_is_a_new_share_with_almost_no_new_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (src, data) = (t.path().join("src"), t.path().join("data"));
    make_tree(&src, &[("x.bin", 40 << 20), ("y/z.bin", 3 << 20)]);
    let a = publish(&data, &src, &[]);
    let copy = t.path().join("copy");
    assert!(Command::new("cp")
        .args(["-r", s(&src), s(&copy)])
        .status()
        .unwrap()
        .success());
    let b = publish(&data, &copy, &[]);
    assert_ne!(a["share"], b["share"]);
    assert_eq!(b["new_share"], true);
    let new = b["new_chunk_bytes"].as_u64().unwrap() + b["new_node_bytes"].as_u64().unwrap();
    // Only the listing differs (other mtimes); every data chunk is shared.
    assert!(new < 16 * 1024, "{new} new bytes for a copy");
    // --new makes yet another share of the same folder; --share continues a given one.
    let c = publish(&data, &src, &["--new"]);
    assert_ne!(c["share"], a["share"]);
    let d = publish(&data, &src, &["--share", a["share"].as_str().unwrap()]);
    assert_eq!(d["share"], a["share"]);
    assert_eq!(d["version"], 2);
    let stats = ccbt_json(&["--data-dir", s(&data), "cas", "stats"]);
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 3.5, "{stats}");
}

#[test]
fn kill_9_during_publish_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, data) = (t.path().join("src"), t.path().join("data"));
    make_tree(&src, &[("one.bin", 5 << 20)]);
    let v1 = publish(&data, &src, &[]);
    let id = v1["share"].as_str().unwrap().to_string();
    let v1_copy = t.path().join("v1-copy");
    assert!(Command::new("cp")
        .args(["-a", s(&src), s(&v1_copy)])
        .status()
        .unwrap()
        .success());
    // A big new version to interrupt.
    make_tree(
        &src,
        &[
            ("one.bin", 5 << 20),
            ("big1.bin", 150 << 20),
            ("big2.bin", 150 << 20),
        ],
    );
    let mut seen_versions = 1;
    for (i, delay_ms) in [30u64, 150, 400, 800, 1500].into_iter().enumerate() {
        let mut child = ccbt_cmd()
            .args(["--data-dir", s(&data), "-q", "publish", s(&src)])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        verify_clean(&data);
        let vs = ccbt_json(&["--data-dir", s(&data), "versions", &id]);
        let n = vs.as_array().unwrap().len();
        assert!(n >= seen_versions, "a version disappeared");
        seen_versions = n;
        // Version 1 exports intact whatever happened.
        let out = t.path().join(format!("out{i}"));
        ccbt_ok(&[
            "--data-dir",
            s(&data),
            "export",
            &format!("{id}@1"),
            s(&out),
        ]);
        assert_same_tree(&v1_copy, &out);
        eprintln!("kill after {delay_ms} ms: exit {status:?}, {n} versions");
    }
    // The interrupted publish completes on a re-run.
    let done = publish(&data, &src, &[]);
    let out = t.path().join("final");
    ccbt_ok(&[
        "--data-dir",
        s(&data),
        "export",
        &format!("{id}@{}", done["version"]),
        s(&out),
    ]);
    assert_same_tree(&src, &out);
    // gc removes the orphans the kills left behind.
    ccbt_ok(&["--data-dir", s(&data), "cas", "gc"]);
    verify_clean(&data);
}

#[test]
fn bad_inputs_give_clear_errors_and_commit_nothing() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (src, data) = (t.path().join("src"), t.path().join("data"));
    make_tree(&src, &[("ok.bin", 100_000)]);
    let v1 = publish(&data, &src, &[]);
    let id = v1["share"].as_str().unwrap().to_string();
    let versions = || ccbt_json(&["--data-dir", s(&data), "versions", &id]);
    let before = versions();

    // A name that is not UTF-8.
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    std::fs::write(src.join(bad), b"x").unwrap();
    let o = ccbt(&["--data-dir", s(&data), "publish", s(&src)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not UTF-8"), "{err}");
    assert_eq!(versions(), before);
    std::fs::remove_file(src.join(bad)).unwrap();

    // A file that changes while it is read.
    let growing = src.join("growing.log");
    std::fs::write(&growing, pseudo_random(64 << 20, 5)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
                f.write_all(b"appended line\n").unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let o = ccbt(&["--data-dir", s(&data), "publish", s(&src)]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("changed while"),
        "{err}"
    );
    assert_eq!(versions(), before);
    std::fs::remove_file(&growing).unwrap();

    // An unreadable file (root reads everything, so run as nobody).
    let locked = src.join("locked.bin");
    std::fs::write(&locked, b"secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let nobody_data = t.path().join("nobody-data");
    std::fs::create_dir(&nobody_data).unwrap();
    assert!(Command::new("chown")
        .args(["65534:65534", s(&nobody_data)])
        .status()
        .unwrap()
        .success());
    for p in [&src, &t.path().to_path_buf()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(src.join("ok.bin"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ccbt_bin())
        .args(["--data-dir", s(&nobody_data), "publish", s(&src)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "publish of an unreadable file succeeded"
    );
    assert!(
        err.contains("locked.bin") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(std::fs::read_dir(nobody_data.join("keys"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));

    // The original share is untouched and clean.
    assert_eq!(versions(), before);
    verify_clean(&data);

    // Unknown shares and versions.
    let o = ccbt(&["--data-dir", s(&data), "versions", &"ab".repeat(20)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown share"));
    let o = ccbt(&[
        "--data-dir",
        s(&data),
        "export",
        &format!("{id}@9"),
        s(&t.path().join("x")),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no version 9"));
    let o = ccbt(&["--data-dir", s(&data), "versions", "not-an-id"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a share id"));
}

#[test]
fn demo_runs_and_cleans_up() {
    let out = ccbt_ok(&["demo"]);
    assert!(out.contains("demo finished"), "{out}");
    assert!(out.contains("version 2: new bytes stored"));
    // The two-node part: B's mount showed A's in-place edit.
    assert!(
        out.contains("B's mount shows \"meeting moved to 11\""),
        "{out}"
    );
    assert!(out.contains("bytes that reached B"), "{out}");
    // B started from the share id alone: head and peer from A's DHT node.
    assert!(
        out.contains("B asked the DHT (bootstrapped from A's DHT node at 127.0.0.1:"),
        "{out}"
    );
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ccbt-demo-"))
        .count();
    assert_eq!(left, 0, "demo left its temporary directory behind");
}

/// Publishing onto a disk that fills up fails in one line that says the disk is full (not that
/// the store is damaged), and the version published before stays whole.
#[test]
fn a_full_disk_during_publish_says_so_and_keeps_the_last_version() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let small = root.join("small-disk");
    let _g = mount_tmpfs(&small, "24m");
    let data = small.join("data");
    let src = root.join("src");
    make_tree(&src, &[("a.txt", 1000)]);
    let v1 = publish(&data, &src, &[]);
    // 64 MiB of incompressible bytes cannot fit in what is left of 24 MiB.
    make_tree(&src, &[("big.bin", 64 << 20)]);
    let o = ccbt(&["-q", "--data-dir", s(&data), "publish", s(&src)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a publish onto a full disk must fail");
    assert!(err.contains("disk holding the data dir is full"), "{err}");
    assert!(!err.contains("damaged"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Room again: the first version exports whole.
    std::fs::remove_file(src.join("big.bin")).unwrap();
    let out = root.join("out");
    ccbt_ok(&[
        "--data-dir",
        s(&data),
        "export",
        v1["share"].as_str().unwrap(),
        s(&out),
    ]);
    assert_eq!(
        std::fs::read(out.join("a.txt")).unwrap(),
        std::fs::read(src.join("a.txt")).unwrap()
    );
}
