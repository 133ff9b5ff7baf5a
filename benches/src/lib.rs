//! Benchmarks live in `benches/benches/` (criterion), `benches/examples/` (best-of-rounds runners)
//! and `benches/*.sh` (comparisons with other tools). This library holds what they share.

use ccbt_xet::chunker::chunk_reference;
use ccbt_xet::hash::{chunk_hash, file_hash, merkle_root, MerkleEntry};

/// `n` pseudo-random bytes (xorshift64 from `seed`): incompressible, with Xet chunks of the
/// usual sizes.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The baseline: the Xet file hash by the spec, byte at a time, one thread.
pub fn reference_file_hash(d: &[u8]) -> [u8; 32] {
    let mut prev = 0;
    let nodes: Vec<MerkleEntry> = chunk_reference(d)
        .iter()
        .map(|&c| {
            let n = MerkleEntry {
                hash: chunk_hash(&d[prev..c]),
                size: (c - prev) as u64,
            };
            prev = c;
            n
        })
        .collect();
    file_hash(&merkle_root(&nodes), nodes.len()).0
}
