//! `ccbt-core`: classic BitTorrent, independent of the share layer and of storage.
//!
//! Grouped by layer:
//! - [`format`]: bencode, metainfo (v1, v2, hybrid), BEP 52 Merkle trees, magnet links, torrent
//!   creation (hashing on all cores);
//! - [`proto`]: sans-IO protocol cores tested with byte vectors: the peer wire, BEP 10
//!   extensions, BEP 9 metadata, tracker formats, the piece picker, the choker, rate limits;
//! - [`disk`]: piece storage over files and resume checkpoints;
//! - [`session`]: tokio on top: one connect/accept path for peer streams, peer tasks, trackers,
//!   the disk pool (invariants in `docs/invariants.md`).
//!
//! The modules are re-exported at the crate root (`ccbt_core::bencode`, `ccbt_core::wire`...).

pub mod disk;
pub mod format;
pub mod proto;
pub mod session;

pub use disk::{resume, storage};
pub use format::{bencode, create, encoding, magnet, merkle, metainfo};
pub use proto::{
    choker, extension, metadata, mse, natpmp, pcp, pex, picker, ratelimit, tracker, wire,
};

pub use magnet::Magnet;
pub use metainfo::{FileEntry, Metainfo, MetainfoError};
