//! `ccbt-xet`: the share layer.
//!
//! - [`chunker`]: Xet-compatible content-defined chunking (bit-identical to xet-core, docs/formats.md),
//!   streaming, with a multi-lane scan ([`gear`], the scan kernel).
//! - [`hash`]: chunk hashes, the variable-branching Merkle tree, file hashes, the Xet hex form.
//! - [`file`]: whole-file chunk + hash, streaming or on all cores, bounded memory.
//! - [`head`]: share keys, share ids, BEP 44-signed heads.
//! - [`listing`]: version listings (canonical bencode, strictly validated).
//! - [`tree`]: files as Merkle trees in the CAS: store, walk, read back verified.
//! - [`shares`]: publish a folder as a version, list versions, export, gc and verify.
//! - [`history`]: diffs between versions, per-version summaries, restores.
//!
//! The reference vectors in `tests/data/xet-vectors` are checked by `tests/vectors.rs`.

pub mod chunker;
pub mod feeds;
pub mod file;
pub mod gear;
pub mod hash;
pub mod head;
pub mod history;
pub mod listing;
pub mod local;
pub mod net;
pub mod shares;
pub mod spare;
pub mod sync;
pub mod tree;
pub mod wire;
pub mod writers;

pub use file::{
    hash_bytes, hash_file_parallel, hash_reader, hash_reader_parallel, ChunkInfo, FileDigest,
    FileHasher,
};
pub use hash::{MerkleEntry, XetHash};
