//! `ccbt-node`: everything a command, the daemon and its HTTP handlers share, behind one typed
//! API. [`Env`] is the resolved configuration and the process's runtime and DHT node; [`Node`]
//! owns the BitTorrent session with the `ccbt_xet` extension, the store and every share's swarm;
//! [`socket`] is the typed request/reply protocol through which a second command reaches the
//! node running on its data dir; [`mount`] resolves what a mount names and runs it; [`pin`] is
//! files on demand on a running node.
//!
//! The binary (`cli/src`) parses flags, calls into this crate and prints; it holds no session
//! logic of its own.

pub mod config;
pub mod daemon;
pub mod dht;
pub mod env;
pub mod error;
pub mod mount;
pub mod node;
pub mod pin;
pub mod publish;
pub mod socket;
pub mod sync;
pub mod torrent;

pub use config::Config;
pub use env::{runtime, Env};
pub use error::{Context, Error, Result};
pub use node::Node;

/// `1.5 GiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}
