//! `ccbt-core`: classic BitTorrent, independent of the share layer and of storage.
//!
//! Sans-IO protocol cores, each tested with byte vectors: a strict bencode codec ([`bencode`]),
//! metainfo for v1, v2 and hybrid torrents ([`metainfo`]), BEP 52 Merkle trees ([`merkle`]),
//! magnet links ([`magnet`]), the peer wire ([`wire`]), BEP 10 extensions ([`extension`]), BEP 9
//! metadata exchange ([`metadata`]), tracker formats ([`tracker`]), the piece picker ([`picker`]),
//! the choker ([`choker`]) and rate limits ([`ratelimit`]). Files are touched by [`storage`],
//! [`resume`] and [`create`] (hashing on all cores); sockets only by the tokio [`session`] on top.

pub mod bencode;
pub mod choker;
pub mod create;
pub mod encoding;
pub mod extension;
pub mod magnet;
pub mod merkle;
pub mod metadata;
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
