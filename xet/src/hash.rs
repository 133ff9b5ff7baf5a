//! Xet hashes (docs/formats.md): chunk hashes, the variable-branching Merkle tree, file hashes and the
//! Xet hex form. Pure functions.

use std::fmt;

pub const DATA_KEY: [u8; 32] = [
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
    155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
];
pub const INTERNAL_NODE_KEY: [u8; 32] = [
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83, 111, 55,
    199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
];
/// Largest group of children under one Merkle node.
pub const MAX_BRANCH: usize = 9;

/// A 32-byte Xet hash. `Display` prints the Xet hex form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct XetHash(pub [u8; 32]);

impl XetHash {
    pub const ZERO: XetHash = XetHash([0; 32]);

    /// Xet hex: four little-endian u64 words, each printed as 16 hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for w in self.0.chunks_exact(8) {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            s.push_str(&format!("{v:016x}"));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<XetHash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for i in 0..4 {
            let v = u64::from_str_radix(&s[i * 16..i * 16 + 16], 16).ok()?;
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        Some(XetHash(out))
    }

    /// The little-endian u64 of the last 8 bytes (drives group boundaries in the Merkle tree).
    fn tail_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[24..32].try_into().unwrap())
    }
}

impl fmt::Display for XetHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for XetHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XetHash({})", self.to_hex())
    }
}

pub fn chunk_hash(data: &[u8]) -> XetHash {
    XetHash(*blake3::keyed_hash(&DATA_KEY, data).as_bytes())
}

/// A Merkle node or leaf: its hash and the bytes it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerkleEntry {
    pub hash: XetHash,
    pub size: u64,
}

/// The text an internal node's hash is taken over (also how nodes are stored and sent).
pub fn node_text(children: &[MerkleEntry]) -> String {
    let mut s = String::with_capacity(children.len() * 90);
    for c in children {
        s.push_str(&c.hash.to_hex());
        s.push_str(" : ");
        s.push_str(&c.size.to_string());
        s.push('\n');
    }
    s
}

pub fn internal_node(children: &[MerkleEntry]) -> MerkleEntry {
    let text = node_text(children);
    MerkleEntry {
        hash: XetHash(*blake3::keyed_hash(&INTERNAL_NODE_KEY, text.as_bytes()).as_bytes()),
        size: children.iter().map(|c| c.size).sum(),
    }
}

/// Length of the group starting at `nodes[0]` (docs/formats.md).
pub fn group_len(nodes: &[MerkleEntry]) -> usize {
    if nodes.len() <= 2 {
        return nodes.len();
    }
    for (i, n) in nodes.iter().enumerate().take(MAX_BRANCH).skip(2) {
        if n.hash.tail_u64() % 4 == 0 {
            return i + 1;
        }
    }
    nodes.len().min(MAX_BRANCH)
}

/// Builds the tree bottom-up, calling `visit(node, children)` for every internal node made.
pub fn merkle_tree(
    leaves: &[MerkleEntry],
    mut visit: impl FnMut(&MerkleEntry, &[MerkleEntry]),
) -> MerkleEntry {
    if leaves.is_empty() {
        return MerkleEntry {
            hash: XetHash::ZERO,
            size: 0,
        };
    }
    let mut layer = leaves.to_vec();
    while layer.len() > 1 {
        let mut next = Vec::with_capacity(layer.len() / 3 + 1);
        let mut i = 0;
        while i < layer.len() {
            let n = group_len(&layer[i..]);
            let node = internal_node(&layer[i..i + n]);
            visit(&node, &layer[i..i + n]);
            next.push(node);
            i += n;
        }
        layer = next;
    }
    layer[0]
}

pub fn merkle_root(leaves: &[MerkleEntry]) -> XetHash {
    merkle_tree(leaves, |_, _| {}).hash
}

/// File hash from the Merkle root; a file without chunks has the all-zero hash.
pub fn file_hash(root: &XetHash, n_chunks: usize) -> XetHash {
    if n_chunks == 0 {
        return XetHash::ZERO;
    }
    XetHash(*blake3::keyed_hash(&[0u8; 32], &root.0).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_form_is_word_little_endian() {
        let mut b = [0u8; 32];
        b[0] = 0x01;
        b[7] = 0xff;
        let h = XetHash(b);
        assert!(h.to_hex().starts_with("ff00000000000001"));
        assert_eq!(XetHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(XetHash::from_hex("zz"), None);
    }

    #[test]
    fn groups_bounded() {
        let nodes: Vec<MerkleEntry> = (0..100u8)
            .map(|i| {
                let mut h = [0u8; 32];
                h[24] = 1 + (i % 3) * 4; // never divisible by 4 unless i%3... keep odd
                h[24] |= 1;
                MerkleEntry {
                    hash: XetHash(h),
                    size: 1,
                }
            })
            .collect();
        assert_eq!(group_len(&nodes), MAX_BRANCH);
        assert_eq!(group_len(&nodes[..2]), 2);
        let root = merkle_tree(&nodes, |n, c| {
            assert!(c.len() >= 2 && c.len() <= MAX_BRANCH || c.len() == 1);
            assert_eq!(n.size, c.iter().map(|c| c.size).sum::<u64>());
        });
        assert_eq!(root.size, 100);
    }
}
