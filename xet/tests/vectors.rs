//! Reproduces every reference vector produced by xet-core (tests/data/xet-vectors).

use ccbt_xet::hash::XetHash;
use ccbt_xet::{hash_bytes, hash_reader_parallel};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/xet-vectors")
}

fn raw_hex(h: &XetHash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn all_vectors_reproduce() {
    let mut n = 0;
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".bin.json") {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let input = std::fs::read(dir().join(v["file"].as_str().unwrap())).unwrap();
        assert_eq!(input.len() as u64, v["size"].as_u64().unwrap());
        for d in [
            hash_bytes(&input),
            hash_reader_parallel(&input[..]).unwrap(),
        ] {
            let name = v["file"].as_str().unwrap();
            assert_eq!(
                d.chunks.len() as u64,
                v["num_chunks"].as_u64().unwrap(),
                "{name}"
            );
            for (i, (c, want)) in d
                .chunks
                .iter()
                .zip(v["chunks"].as_array().unwrap())
                .enumerate()
            {
                assert_eq!(
                    c.offset,
                    want[0].as_u64().unwrap(),
                    "{name} chunk {i} offset"
                );
                assert_eq!(
                    c.len as u64,
                    want[1].as_u64().unwrap(),
                    "{name} chunk {i} length"
                );
                assert_eq!(
                    c.hash.to_hex(),
                    want[2].as_str().unwrap(),
                    "{name} chunk {i} hash"
                );
                assert_eq!(
                    raw_hex(&c.hash),
                    v["chunk_hashes_raw_hex"][i].as_str().unwrap()
                );
            }
            assert_eq!(
                d.merkle_root.to_hex(),
                v["merkle_root"].as_str().unwrap(),
                "{name} root"
            );
            assert_eq!(
                raw_hex(&d.merkle_root),
                v["merkle_root_raw_hex"].as_str().unwrap()
            );
            assert_eq!(
                d.file_hash.to_hex(),
                v["file_hash"].as_str().unwrap(),
                "{name} file hash"
            );
            assert_eq!(
                raw_hex(&d.file_hash),
                v["file_hash_raw_hex"].as_str().unwrap()
            );
        }
        n += 1;
    }
    assert_eq!(n, 7, "expected 7 vector files");
}
