//! `ccbt hash` as a user runs it: the xet-core reference vectors through the CLI (text and JSON),
//! a large file through the parallel file hasher against `--single-thread`, and a missing file.

use ccbt_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/xet-vectors")
}

/// (input path, expected vector) for every vector.
fn cases() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(vectors()).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".bin.json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            out.push((vectors().join(v["file"].as_str().unwrap()), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 7, "the vectors are missing");
    out
}

#[test]
fn vectors_through_the_cli_text_and_json() {
    let cases = cases();
    let mut args = vec!["hash", "--chunks"];
    args.extend(cases.iter().map(|(p, _)| s(p)));
    let text = ccbt_ok(&args);
    let mut lines = text.lines();
    for (p, v) in &cases {
        for c in v["chunks"].as_array().unwrap() {
            let want = format!("{} {} {}", c[0], c[1], c[2].as_str().unwrap());
            assert_eq!(lines.next(), Some(want.as_str()), "{}", p.display());
        }
        let want = format!("{}  {}", v["file_hash"].as_str().unwrap(), p.display());
        assert_eq!(lines.next(), Some(want.as_str()));
    }
    assert_eq!(lines.next(), None);

    let json = ccbt_json(&args);
    for ((p, v), got) in cases.iter().zip(json.as_array().unwrap()) {
        assert_eq!(got["path"].as_str(), Some(s(p)));
        for k in ["size", "num_chunks", "file_hash", "merkle_root", "chunks"] {
            assert_eq!(got[k], v[k], "{} {k}", p.display());
        }
    }
}

#[test]
fn large_file_on_all_cores_equals_one_core() {
    // 21 MiB: pseudo-random data with a long zero run (max-size chunks) across the hasher's
    // 1 MiB blocks, and the 1 MiB random vector, so chunk boundaries fall on both sides of blocks.
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::with_capacity(21 << 20);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while data.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data[(3 << 20) - 12_345..(5 << 20) + 777].fill(0);
    data.extend(std::fs::read(vectors().join("f_1MiB_random.bin")).unwrap());
    data.truncate((21 << 20) - 5);
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();

    let all = ccbt_ok(&["hash", "--chunks", s(&path)]);
    let one = ccbt_ok(&["hash", "--chunks", "--single-thread", s(&path)]);
    assert_eq!(all, one);
    // The chunk lines tile the file within the size rules.
    let mut at = 0u64;
    let lines: Vec<&str> = all.lines().collect();
    for l in &lines[..lines.len() - 1] {
        let f: Vec<&str> = l.split(' ').collect();
        let (off, len): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert_eq!(off, at, "{l}");
        assert!(len <= 128 * 1024 && f[2].len() == 64, "{l}");
        at += len;
    }
    assert_eq!(at, data.len() as u64);
    assert!(
        lines.len() > 200,
        "expected many chunks, got {}",
        lines.len()
    );
}

#[test]
fn a_missing_file_is_reported_and_the_others_still_hashed() {
    let (good, v) = cases()
        .into_iter()
        .find(|(p, _)| p.ends_with("e_131072B.bin"))
        .unwrap();
    let o = ccbt(&["hash", "/nonexistent/ccbt-test-file", s(&good)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot open /nonexistent/ccbt-test-file"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(v["file_hash"].as_str().unwrap()), "{out}");
}
