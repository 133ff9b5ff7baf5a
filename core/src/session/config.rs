//! What a session and a torrent are started with (the CLI fills these from config and flags).

use super::portmap;
use crate::picker::Strategy;
use crate::storage::Prealloc;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub listen: SocketAddr,
    /// Bytes/s, 0 = unlimited.
    pub global_down: u64,
    pub global_up: u64,
    /// Threads that write and hash received blocks (0: one per core).
    pub hash_workers: usize,
    /// Peer exchange (BEP 11) on public torrents and swarms.
    pub pex: bool,
    /// MSE/PE: dial encrypted and accept both (`Prefer`), plaintext only, or RC4 only.
    pub encryption: crate::mse::Policy,
    /// Peer transports: TCP and uTP (BEP 29, on the listen port's UDP socket, shared with the
    /// DHT); which one is dialled first.
    pub enable_tcp: bool,
    pub enable_utp: bool,
    pub prefer_utp: bool,
    /// Map the listen port on the gateway with the first of these protocols that works (none:
    /// off) and announce the external address to trackers and the DHT.
    pub port_mapping: Vec<portmap::Method>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            global_down: 0,
            global_up: 0,
            hash_workers: 0,
            pex: true,
            encryption: crate::mse::Policy::Prefer,
            enable_tcp: true,
            enable_utp: true,
            prefer_utp: false,
            port_mapping: Vec::new(),
        }
    }
}

/// Per-torrent settings (the CLI fills them from config and flags).
#[derive(Debug, Clone)]
pub struct TorrentConfig {
    pub out_dir: PathBuf,
    pub prealloc: Prealloc,
    pub strategy: Strategy,
    pub endgame_duplicates: u8,
    /// Minimum request pipeline per peer (it grows with the peer's rate).
    pub pipeline_depth: usize,
    pub max_peers: usize,
    pub upload_slots: usize,
    /// Glob patterns on file paths: download only matching files / skip matching files.
    pub only: Vec<String>,
    pub skip: Vec<String>,
    /// Keep seeding after completion (until `seed_ratio`, if set).
    pub seed: bool,
    pub seed_ratio: Option<f64>,
    pub down_limit: u64,
    pub up_limit: u64,
    /// Where checkpoints live (`None`: no checkpoints).
    pub data_dir: Option<PathBuf>,
    /// Use an existing checkpoint.
    pub resume: bool,
    pub peers: Vec<SocketAddr>,
    pub use_trackers: bool,
    /// Fetch from the torrent's `url-list` (BEP 19 web seeds).
    pub use_web_seeds: bool,
    /// An extension-only swarm (a share): no pieces, always "seeding", dials every known peer and
    /// announces `left = 1` so trackers hand out every member.
    pub swarm: bool,
    /// The DHT is asked at most this often (P2P CAS swarms; zero: as peers are needed).
    pub discovery_min_wait: Duration,
}

impl Default for TorrentConfig {
    fn default() -> Self {
        TorrentConfig {
            out_dir: PathBuf::from("."),
            prealloc: Prealloc::Sparse,
            strategy: Strategy::RarestFirst,
            endgame_duplicates: 2,
            pipeline_depth: 64,
            max_peers: 50,
            upload_slots: 8,
            only: Vec::new(),
            skip: Vec::new(),
            seed: false,
            seed_ratio: None,
            down_limit: 0,
            up_limit: 0,
            data_dir: None,
            resume: true,
            peers: Vec::new(),
            use_trackers: true,
            use_web_seeds: true,
            swarm: false,
            discovery_min_wait: Duration::ZERO,
        }
    }
}
