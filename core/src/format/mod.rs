//! Formats: what torrents, magnets and bencode look like on disk and on the wire. Pure: no I/O
//! but `create`, which reads the files it hashes.

pub mod bencode;
pub mod create;
pub mod encoding;
pub mod magnet;
pub mod merkle;
pub mod metainfo;
