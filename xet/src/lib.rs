//! `ccbt-xet`: the share layer.
//!
//! Today: Xet-compatible content-defined chunking ([`chunker`]), Xet hashes and the
//! variable-branching Merkle tree ([`hash`]), and whole-file chunk+hash, streaming or on all cores
//! ([`file`]). Boundaries and hashes are bit-identical to HuggingFace xet-core (DESIGN.md §3); the
//! reference vectors in `tests/data/xet-vectors` are checked by `tests/vectors.rs`.

pub mod chunker;
pub mod file;
pub mod hash;

pub use file::{hash_bytes, hash_reader, hash_reader_parallel, ChunkInfo, FileDigest, FileHasher};
pub use hash::{Node, XetHash};
