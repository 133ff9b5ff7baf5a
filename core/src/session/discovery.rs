//! Where peers come from besides trackers and the command line: the DHT (and later anything else
//! that finds peers by info-hash). The session only sees this trait, so `ccbt-core` does not
//! depend on the DHT crate (which depends on it for bencode).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub type PeersFuture = Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send>>;

pub trait Discovery: Send + Sync + 'static {
    /// Peers for `info_hash`; with `announce`, also announces us as a peer on that TCP port.
    fn find_peers(&self, info_hash: [u8; 20], announce: Option<u16>) -> PeersFuture;
}

/// A shareable discovery service (cloneable, printable in configs).
#[derive(Clone)]
pub struct DiscoveryHandle(pub Arc<dyn Discovery>);

impl std::fmt::Debug for DiscoveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryHandle")
    }
}
