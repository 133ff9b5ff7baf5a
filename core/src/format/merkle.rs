//! BEP 52 SHA-256 Merkle trees: 16 KiB leaves, binary, padded to a power of two.
//!
//! Leaves past the end of a file are 32 zero bytes; a piece layer is padded with the root of an
//! all-zero-leaf subtree of one piece, which is what those zero leaves hash up to.

use sha2::{Digest, Sha256};

/// BEP 52 leaf block size.
pub const BLOCK: u64 = 16 * 1024;

pub type Hash32 = [u8; 32];

pub fn sha256(data: &[u8]) -> Hash32 {
    Sha256::digest(data).into()
}

fn hash_pair(a: &Hash32, b: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// Root of a tree whose bottom layer is `nodes`, padded with `pad` up to `width` (a power of two
/// ≥ `nodes.len()`).
pub fn root_padded(nodes: &[Hash32], width: usize, pad: Hash32) -> Hash32 {
    debug_assert!(width.is_power_of_two() && width >= nodes.len());
    if width == 1 {
        return nodes.first().copied().unwrap_or(pad);
    }
    let mut layer: Vec<Hash32> = nodes.to_vec();
    let mut pad = pad;
    let mut width = width;
    while width > 1 {
        let mut next = Vec::with_capacity(layer.len().div_ceil(2));
        for pair in layer.chunks(2) {
            let right = pair.get(1).unwrap_or(&pad);
            next.push(hash_pair(&pair[0], right));
        }
        pad = hash_pair(&pad, &pad);
        layer = next;
        width /= 2;
    }
    layer.first().copied().unwrap_or(pad)
}

/// Root of an all-zero-leaf subtree with `leaves` leaves (a power of two).
pub fn zero_subtree(leaves: usize) -> Hash32 {
    let mut h = [0u8; 32];
    let mut n = leaves;
    while n > 1 {
        h = hash_pair(&h, &h);
        n /= 2;
    }
    h
}

/// `pieces root` of a file from its piece layer (files longer than one piece).
pub fn root_from_piece_layer(layer: &[Hash32], piece_length: u64) -> Hash32 {
    let pad = zero_subtree((piece_length / BLOCK) as usize);
    root_padded(layer, layer.len().next_power_of_two(), pad)
}

/// Hash of one piece's leaves as it appears in the piece layer; for a file of at most one piece,
/// this is the file's `pieces root` (its tree is sized to the file, not to the piece).
pub fn piece_subtree(leaves: &[Hash32], piece_length: u64, file_longer_than_piece: bool) -> Hash32 {
    let width = if file_longer_than_piece {
        (piece_length / BLOCK) as usize
    } else {
        leaves.len().next_power_of_two()
    };
    root_padded(leaves, width, [0u8; 32])
}

/// The piece layer's number above the 16 KiB leaf layer (BEP 52 `base layer`).
pub fn piece_layer(piece_length: u64) -> u32 {
    (piece_length / BLOCK).trailing_zeros()
}

/// Most hashes asked or served in one BEP 52 request (the BEP says it SHOULD NOT exceed 512).
pub const MAX_HASHES: u32 = 512;

/// The answer to a BEP 52 hash request from a torrent's piece layers: piece-layer requests are
/// served with the requested hashes (padding past the file's end included) and then the uncle
/// hashes of the requested proof layers, lowest first; anything else is rejected.
///
/// Proof layer `k` is the sibling of the block's ancestor `k` layers above the base; the ones
/// inside the requested block (`k < log2(length)`) are omitted, as the BEP says.
pub fn serve_hash_request(
    meta: &crate::Metainfo,
    r: &crate::wire::HashReq,
) -> crate::wire::Message {
    use crate::wire::Message;
    let pl = meta.piece_length;
    let ok = r.base_layer == piece_layer(pl)
        && r.length >= 1
        && r.length <= MAX_HASHES
        && r.length.is_power_of_two()
        && r.index.is_multiple_of(r.length);
    let Some(layer) = meta.piece_layers.get(&r.pieces_root).filter(|_| ok) else {
        return Message::HashReject(*r);
    };
    let width = layer.len().next_power_of_two();
    if r.index as usize >= width || r.length as usize > width {
        return Message::HashReject(*r);
    }
    // Every layer from the padded piece layer up to the root.
    let mut levels = vec![{
        let mut l = layer.clone();
        l.resize(width, zero_subtree((pl / BLOCK) as usize));
        l
    }];
    while levels.last().unwrap().len() > 1 {
        let next = levels
            .last()
            .unwrap()
            .chunks(2)
            .map(|p| hash_pair(&p[0], &p[1]))
            .collect();
        levels.push(next);
    }
    let mut out = Vec::with_capacity((r.length as usize + 32) * 32);
    for k in r.index..r.index + r.length {
        out.extend_from_slice(&levels[0][k as usize]);
    }
    let top = levels.len() - 1; // the root's level
    let first = r.length.trailing_zeros() as usize;
    for (k, level) in levels
        .iter()
        .enumerate()
        .take((r.proof_layers as usize + 1).min(top))
        .skip(first)
    {
        let pos = (r.index as usize >> k) ^ 1;
        out.extend_from_slice(&level[pos]);
    }
    Message::Hashes {
        req: *r,
        hashes: bytes::Bytes::from(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_leaf_is_root() {
        let l = sha256(b"abc");
        assert_eq!(root_padded(&[l], 1, [0; 32]), l);
    }

    #[test]
    fn padding_matches_explicit_zero_leaves() {
        let leaves: Vec<Hash32> = (0..5u8).map(|i| sha256(&[i])).collect();
        let mut explicit = leaves.clone();
        explicit.resize(8, [0; 32]);
        let manual = {
            let l1: Vec<_> = explicit
                .chunks(2)
                .map(|p| hash_pair(&p[0], &p[1]))
                .collect();
            let l2: Vec<_> = l1.chunks(2).map(|p| hash_pair(&p[0], &p[1])).collect();
            hash_pair(&l2[0], &l2[1])
        };
        assert_eq!(root_padded(&leaves, 8, [0; 32]), manual);
        // Same root computed through a piece layer of 2-leaf pieces (piece = 32 KiB).
        let layer: Vec<Hash32> = leaves
            .chunks(2)
            .map(|c| piece_subtree(c, 2 * BLOCK, true))
            .collect();
        assert_eq!(root_from_piece_layer(&layer, 2 * BLOCK), manual);
    }
}
