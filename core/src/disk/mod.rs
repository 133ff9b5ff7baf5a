//! Torrent data on disk: the piece space mapped onto files, and resume checkpoints.

pub mod resume;
pub mod storage;
