//! `ccbt-core`: classic BitTorrent, independent of the share layer and of storage.
//!
//! Today: a strict bencode codec ([`bencode`]), metainfo for v1, v2 and hybrid torrents
//! ([`metainfo`]), BEP 52 Merkle trees ([`merkle`]), magnet links ([`magnet`]) and torrent creation
//! hashing on all cores ([`create`]). Everything here is pure (no sockets); the only I/O is reading
//! files in [`create`].

pub mod bencode;
pub mod choker;
pub mod create;
pub mod encoding;
pub mod extension;
pub mod magnet;
pub mod merkle;
pub mod metainfo;
pub mod picker;
pub mod ratelimit;
pub mod resume;
pub mod session;
pub mod storage;
pub mod tracker;
pub mod wire;

pub use magnet::Magnet;
pub use metainfo::{FileEntry, Metainfo, MetainfoError};
