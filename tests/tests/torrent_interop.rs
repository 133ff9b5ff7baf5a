//! `ccbt create` / `ccbt info` against independent software: libtorrent and mktorrent.

use ccbt_tests::*;
use serde_json::Value;
use std::path::Path;

/// Sizes chosen to straddle piece boundaries at 32 KiB pieces (none is a multiple of it).
const TREE: &[(&str, usize)] = &[
    ("alpha.bin", 1_000_003),
    ("dir/beta.bin", 70_001),
    ("dir/sub/gamma.bin", 32_769),
    ("dir/sub/tiny.txt", 5),
    ("empty.dat", 0),
    ("zeta/last.bin", 300_000),
];

fn sorted_files(v: &Value, strip_prefix: Option<&str>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["pad"].as_bool().unwrap_or(false))
        .map(|f| {
            let p = f["path"].as_str().unwrap().to_string();
            let p = match strip_prefix {
                Some(pre) => p
                    .strip_prefix(&format!("{pre}/"))
                    .map(str::to_string)
                    .unwrap_or(p),
                None => p,
            };
            (p, f["length"].as_u64().unwrap())
        })
        .collect();
    out.sort();
    out
}

fn check_with_libtorrent(torrent: &Path, save_path: &Path, kind: &str) {
    let ours = ccbt_json(&["info", s(torrent)]);
    let lt = lt_tool(&["info", s(torrent)]);
    assert_eq!(ours["kind"], kind);
    assert_eq!(ours["info_hash_v1"], lt["info_hash_v1"], "{kind} v1 hash");
    assert_eq!(ours["info_hash_v2"], lt["info_hash_v2"], "{kind} v2 hash");
    assert_eq!(ours["piece_count"], lt["num_pieces"]);
    match kind {
        "v1" => assert!(ours["info_hash_v2"].is_null() && !ours["info_hash_v1"].is_null()),
        "v2" => assert!(ours["info_hash_v1"].is_null() && !ours["info_hash_v2"].is_null()),
        _ => assert!(!ours["info_hash_v1"].is_null() && !ours["info_hash_v2"].is_null()),
    }
    let check = lt_tool(&["check", s(torrent), s(save_path)]);
    assert_eq!(
        check["pieces_have"], check["num_pieces"],
        "libtorrent found invalid pieces in a {kind} torrent: {check}"
    );
    assert_eq!(check["is_seeding"], true, "{check}");
}

#[test]
fn ccbt_torrents_load_and_verify_in_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, TREE);
    let single = tmp.path().join("single.bin");
    std::fs::write(&single, pseudo_random(777_777, 42)).unwrap();
    for kind in ["v1", "v2", "hybrid"] {
        for (src, label) in [(&tree, "tree"), (&single, "single")] {
            let out = tmp.path().join(format!("{label}-{kind}.torrent"));
            ccbt_ok(&[
                "create",
                s(src),
                &format!("--{kind}"),
                "--piece-length",
                "32K",
                "-o",
                s(&out),
                "-q",
            ]);
            check_with_libtorrent(&out, tmp.path(), kind);
            let ours = ccbt_json(&["info", s(&out)]);
            let lt = lt_tool(&["info", s(&out)]);
            let prefix = (label == "tree").then_some("tree");
            assert_eq!(sorted_files(&ours, None), sorted_files(&lt, prefix));
        }
    }
}

#[test]
fn v1_info_hash_equals_mktorrent() {
    require("mktorrent", "mktorrent");
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, TREE);
    let single = tmp.path().join("one.bin");
    std::fs::write(&single, pseudo_random(123_457, 9)).unwrap();
    for (src, exp) in [(&tree, "15"), (&tree, "18"), (&single, "16")] {
        let mk = tmp.path().join(format!("mk-{exp}.torrent"));
        let _ = std::fs::remove_file(&mk);
        let o = std::process::Command::new("mktorrent")
            .args([
                "-l",
                exp,
                "-a",
                "http://127.0.0.1:1/announce",
                "-o",
                s(&mk),
                s(src),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = tmp.path().join(format!("ours-{exp}.torrent"));
        let pl = (1u64 << exp.parse::<u32>().unwrap()).to_string();
        ccbt_ok(&[
            "create",
            s(src),
            "--v1",
            "--piece-length",
            &pl,
            "-o",
            s(&ours),
            "-q",
        ]);
        let a = ccbt_json(&["info", s(&ours)]);
        let b = ccbt_json(&["info", s(&mk)]);
        assert!(!a["info_hash_v1"].is_null());
        assert_eq!(a["info_hash_v1"], b["info_hash_v1"], "piece length 2^{exp}");
    }
}

#[test]
fn libtorrent_torrents_read_by_ccbt_info() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, TREE);
    for kind in ["v1", "v2", "hybrid"] {
        let out = tmp.path().join(format!("lt-{kind}.torrent"));
        let lt = lt_tool(&["create", s(&tree), s(&out), kind, "32768"]);
        let ours = ccbt_json(&["info", s(&out)]);
        assert_eq!(ours["info_hash_v1"], lt["info_hash_v1"], "{kind}");
        assert_eq!(ours["info_hash_v2"], lt["info_hash_v2"], "{kind}");
        assert_eq!(ours["kind"], kind);
        assert_eq!(ours["piece_length"], lt["piece_length"]);
        assert_eq!(ours["piece_count"], lt["num_pieces"]);
        assert_eq!(sorted_files(&ours, None), sorted_files(&lt, Some("tree")));
        // The magnet ccbt prints round-trips through its own parser.
        let mg = ours["magnet"].as_str().unwrap();
        let m = ccbt_json(&["info", mg]);
        assert_eq!(m["info_hash_v1"], ours["info_hash_v1"]);
        assert_eq!(m["info_hash_v2"], ours["info_hash_v2"]);
    }
}

#[test]
fn hostile_torrents_give_clear_errors() {
    let dir = root().join("tests/data/bad-torrents");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert!(expected.len() >= 30);
    for (file, want) in expected {
        let o = ccbt(&["info", s(&dir.join(file))]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file} panicked: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{file}: not one line: {err}");
        assert!(
            err.contains(want.as_str().unwrap()),
            "{file}: error {err:?} lacks {want}"
        );
    }
}

#[test]
fn create_rejects_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f.bin");
    std::fs::write(&f, b"data").unwrap();
    let out = tmp.path().join("o.torrent");
    for (args, want) in [
        (vec!["--piece-length", "1000"], "power of two"),
        (vec!["--piece-length", "8K"], "power of two"),
        (vec!["--piece-length", "fast"], "not a size"),
    ] {
        let mut a = vec!["create", s(&f), "-o", s(&out)];
        a.extend(args);
        let o = ccbt(&a);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(want));
    }
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let o = ccbt(&["create", s(&empty), "-o", s(&out)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("every file is empty"));
    let o = ccbt(&["create", s(&tmp.path().join("missing")), "-o", s(&out)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
}

#[test]
fn info_escapes_control_characters_and_ends_quietly_on_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("evil\x1b[2J\x07name");
    std::fs::write(&f, vec![7u8; 100_000]).unwrap();
    let t = tmp.path().join("evil.torrent");
    ccbt_ok(&["create", s(&f), "-o", s(&t)]);
    let out = ccbt_ok(&["info", s(&t)]);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(out.contains("evil\\u{1b}[2J\\u{7}name"), "{out}");
    let o = ccbt(&["info", "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%1b%5d0%3bx%07%0d%0aforged"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    assert!(
        !text.contains("ccbt magnet"),
        "hints name only commands that exist: {text}"
    );
    // `ccbt info X | head -1`: the reader goes away (the listing is larger than a pipe holds);
    // ccbt ends quietly with status 0.
    let many = tmp.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..2000 {
        std::fs::write(
            many.join(format!("file-with-a-rather-long-name-{i:05}")),
            b"x",
        )
        .unwrap();
    }
    let mt = tmp.path().join("many.torrent");
    ccbt_ok(&["create", s(&many), "-o", s(&mt)]);
    for json in [false, true] {
        let o = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' info {} '{}' | head -1 >/dev/null",
                ccbt_bin().display(),
                if json { "--json" } else { "" },
                s(&mt)
            ))
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "exit {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_torrent_with_too_many_files_is_refused_before_it_costs_memory() {
    require("prlimit", "util-linux");
    let tmp = tempfile::tempdir().unwrap();
    // 1 000 001 one-byte files: one more than ccbt accepts.
    let n = 1_000_001usize;
    let mut files = Vec::with_capacity(n * 30);
    files.push(b'l');
    for i in 0..n {
        let name = format!("f{i}");
        files.extend_from_slice(format!("d6:lengthi1e4:pathl{}:{name}ee", name.len()).as_bytes());
    }
    files.push(b'e');
    let pieces = n.div_ceil(1 << 20) * 20;
    let mut t = b"d4:infod5:files".to_vec();
    t.extend_from_slice(&files);
    t.extend_from_slice(
        format!("4:name4:many12:piece lengthi1048576e6:pieces{pieces}:").as_bytes(),
    );
    t.extend(std::iter::repeat_n(0u8, pieces));
    t.extend_from_slice(b"ee");
    let path = tmp.path().join("many.torrent");
    std::fs::write(&path, &t).unwrap();
    // Within 256 MiB of address space (the file alone is about 30 MB).
    let o = std::process::Command::new("prlimit")
        .arg(format!("--as={}", 256u64 << 20))
        .arg(ccbt_bin())
        .args(["info", s(&path)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("more than 1000000 files"), "{err}");
}
