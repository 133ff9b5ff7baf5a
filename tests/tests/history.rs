//! A share's history through the CLI and real mounts: `.ccbt/history/<seq>/` beside the live tree,
//! `ccbt log`, `ccbt diff` (its cost counted in CAS reads), `ccbt restore`, and `ccbt mount
//! ID@SEQ` on a fresh node that fetches the old version from a peer.

use ccbt_tests::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Command;

fn json(args: &[&str]) -> Value {
    let out = ccbt_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ccbt {args:?}: {e}: {out}"))
}

/// `diff -r A B` (exit 1 expected: they differ); its lines, sorted.
fn diff_r(a: &Path, b: &Path) -> Vec<String> {
    let o = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut l: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.replace(s(a), "OLD").replace(s(b), "NEW"))
        .collect();
    l.sort();
    l
}

fn newest_seq(data: &Path, id: &str) -> u64 {
    let log = json(&["--json", "--data-dir", s(data), "log", id]);
    log.as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn history_dir_log_diff_and_restore_on_a_live_owner_mount() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(
        &src,
        &[
            ("keep.txt", 1000),
            ("edit.bin", 300_000),
            ("gone.txt", 500),
            ("d/move.txt", 4000),
        ],
    );
    let a = t.path().join("A");
    let id = publish(&a, &src);
    let m = t.path().join("m");
    let (mut g, _) = mount(&a, &id, &m, &[], &t.path().join("A.log"));

    // Edits through the mount: one modified in place, one removed, one renamed, one added.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("edit.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB; 1024], 150_000).unwrap();
    drop(f);
    std::fs::remove_file(m.join("gone.txt")).unwrap();
    std::fs::rename(m.join("d/move.txt"), m.join("moved.txt")).unwrap();
    std::fs::File::create(m.join("new.txt"))
        .unwrap()
        .write_all(b"a new file\n")
        .unwrap();
    wait_until(30.0, "the edits to be published", || {
        json(&["--json", "--data-dir", s(&a), "diff", &format!("{id}@1")])["renamed"] == 1
            && newest_seq(&a, &id) >= 2
            && json(&["--json", "--data-dir", s(&a), "diff", &format!("{id}@1")])["added"] == 1
    });

    // `.ccbt` resolves by name but is not listed: find and du see the live tree only.
    let names: Vec<String> = std::fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n == ".ccbt"), "{names:?}");
    let versions: Vec<String> = std::fs::read_dir(m.join(".ccbt/history"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(versions.contains(&"1".to_string()), "{versions:?}");

    // diff -r between version 1 and the live tree shows exactly the edits.
    let h1 = m.join(".ccbt/history/1");
    assert_eq!(
        diff_r(&h1, &m),
        [
            "Binary files OLD/edit.bin and NEW/edit.bin differ".to_string(),
            "Only in NEW: moved.txt".into(),
            "Only in NEW: new.txt".into(),
            "Only in OLD/d: move.txt".into(),
            "Only in OLD: gone.txt".into(),
        ]
    );
    // Old bytes are exact, and history is read-only.
    assert_eq!(
        std::fs::read(h1.join("edit.bin")).unwrap(),
        std::fs::read(src.join("edit.bin")).unwrap()
    );
    let e = std::fs::write(h1.join("keep.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::create_dir(m.join(".ccbt/history/1/new")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(std::fs::metadata(m.join(".ccbt/history/999999")).is_err());

    // `ccbt diff` and `ccbt log` on the live share (the mount holds the store).
    let newest = newest_seq(&a, &id);
    let d = json(&[
        "--json",
        "--data-dir",
        s(&a),
        "diff",
        &format!("{id}@1"),
        &format!("@{newest}"),
    ]);
    assert_eq!(
        (d["added"].as_u64(), d["removed"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    assert_eq!(
        (d["modified"].as_u64(), d["renamed"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    let changes = d["changes"].as_array().unwrap();
    let edit = changes.iter().find(|c| c["path"] == "edit.bin").unwrap();
    // A 1 KiB edit changes one or two chunks of ~64 KiB, not the 300 KB file.
    let differ = edit["bytes_changed"].as_u64().unwrap();
    assert!((1024..300_000).contains(&differ), "{edit}");
    let mv = changes.iter().find(|c| c["change"] == "renamed").unwrap();
    assert_eq!(
        (mv["from"].as_str(), mv["path"].as_str()),
        (Some("d/move.txt"), Some("moved.txt"))
    );
    let text = ccbt_ok(&["--data-dir", s(&a), "diff", &format!("{id}@1")]);
    assert!(text.contains("R  d/move.txt -> moved.txt"), "{text}");
    assert!(
        text.contains("D  gone.txt") && text.contains("A  new.txt"),
        "{text}"
    );
    let log = json(&["--json", "--data-dir", s(&a), "log", &id]);
    let log = log.as_array().unwrap();
    assert_eq!(log[0]["added"], 4, "{log:?}");
    let total = |k: &str| log[1..].iter().map(|v| v[k].as_u64().unwrap()).sum::<u64>();
    assert!(
        total("modified") >= 1 && total("added") + total("renamed") >= 2,
        "{log:?}"
    );
    assert!(log
        .iter()
        .all(|v| v["author"].as_str().unwrap().len() == 64));
    unmount(&mut g);

    // Restore one path from version 1 as a new version, then everything.
    let out = ccbt_ok(&[
        "--data-dir",
        s(&a),
        "restore",
        &format!("{id}@1"),
        "gone.txt",
    ]);
    assert!(out.contains("restored gone.txt from @1"), "{out}");
    let e1 = t.path().join("e1");
    ccbt_ok(&["--data-dir", s(&a), "export", &id, s(&e1)]);
    assert_eq!(
        std::fs::read(e1.join("gone.txt")).unwrap(),
        std::fs::read(src.join("gone.txt")).unwrap()
    );
    assert!(
        e1.join("new.txt").exists(),
        "only the path named is restored"
    );
    ccbt_ok(&["--data-dir", s(&a), "restore", &format!("{id}@1")]);
    let e2 = t.path().join("e2");
    ccbt_ok(&["--data-dir", s(&a), "export", &id, s(&e2)]);
    assert_same_tree(&src, &e2);
    let d = json(&["--json", "--data-dir", s(&a), "diff", &format!("{id}@1")]);
    assert_eq!(d["changes"].as_array().unwrap().len(), 0, "{d}");
    // Not the owner: refused with a clear line.
    let o = ccbt(&[
        "--data-dir",
        s(&t.path().join("B")),
        "restore",
        &format!("{id}@1"),
    ]);
    assert!(!o.status.success());
}

/// A 1 GiB file of pseudo-random bytes, written in pieces (bounded memory).
fn big_file(p: &Path, len: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let piece = 8 << 20;
    for i in 0..len / piece {
        f.write_all(&pseudo_random(piece, 1000 + i as u64)).unwrap();
    }
}

#[test]
fn a_small_edit_in_a_1_gib_file_diffs_by_walking_only_the_changed_path() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    big_file(&src.join("big.bin"), 1 << 30);
    let a = t.path().join("A");
    let id = publish(&a, &src);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 1024], 600 << 20).unwrap();
    drop(f);
    publish(&a, &src);
    let d = json(&[
        "--json",
        "--data-dir",
        s(&a),
        "diff",
        &format!("{id}@1"),
        "@2",
    ]);
    assert_eq!(d["modified"], 1, "{d}");
    let reads = d["cas_reads"].as_u64().unwrap();
    let differ = d["bytes_changed"].as_u64().unwrap();
    // About 16,000 chunks under some 5,000 Merkle nodes (mean branching 4): a full walk reads
    // them all; the changed path a few per level on each side, plus the two listings.
    assert!(reads <= 200, "diff read {reads} CAS entries: {d}");
    assert!((1024..=512 << 10).contains(&differ), "{d}");
    // Equal versions: nothing read at all.
    let same = json(&[
        "--json",
        "--data-dir",
        s(&a),
        "diff",
        &format!("{id}@2"),
        "@2",
    ]);
    assert_eq!(same["cas_reads"], 0, "{same}");
    eprintln!(
        "diff of a 1 KiB edit in 1 GiB: {:.1} ms, {reads} CAS reads, {differ} bytes differ",
        d["ms"].as_f64().unwrap()
    );
}

#[test]
fn an_old_version_mounts_on_a_fresh_node_from_a_peer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, &[("a.bin", 700_000), ("b.txt", 3000)]);
    let v1 = t.path().join("v1");
    make_tree(&v1, &[("a.bin", 700_000), ("b.txt", 3000)]);
    let a = t.path().join("A");
    let id = publish(&a, &src);
    std::fs::write(src.join("b.txt"), b"version two\n").unwrap();
    std::fs::write(src.join("c.txt"), b"only in two\n").unwrap();
    publish(&a, &src);
    let alisten = format!("127.0.0.1:{}", free_port());
    let _seed = spawn_ccbt(
        &["--data-dir", s(&a), "seed", "--listen", &alisten],
        &t.path().join("A.log"),
    );
    wait_listening(&alisten, 20);

    let b = t.path().join("B");
    let mb = t.path().join("mb");
    let (mut g, _) = mount(
        &b,
        &format!("{id}@1"),
        &mb,
        &["--peer", &alisten],
        &t.path().join("B.log"),
    );
    // Version 1's bytes, fetched from A (B held nothing).
    assert_same_tree(&v1, &mb);
    let e = std::fs::write(mb.join("b.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // Its history reaches the newer version too, from the peer.
    assert_same_tree(&src, &mb.join(".ccbt/history/2"));
    unmount(&mut g);
    // A version nobody has: a clear error.
    let o = ccbt(&[
        "--data-dir",
        s(&b),
        "mount",
        &format!("{id}@9"),
        s(&mb),
        "--peer",
        &alisten,
        "--timeout",
        "10",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no version 9"), "{err}");
}
