//! Where peers come from besides trackers and the command line: the DHT (and later anything else
//! that finds peers by info-hash). The session only sees this trait, so `ccbt-core` does not
//! depend on the DHT crate (which depends on it for bencode).

use super::TorrentShared;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub type PeersFuture = Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send>>;
/// Where a lookup hands out peers as it finds them, before it ends.
pub type PeerSink = tokio::sync::mpsc::UnboundedSender<Vec<SocketAddr>>;

pub trait Discovery: Send + Sync + 'static {
    /// Peers for `info_hash`; with `announce`, also announces us as a peer on that TCP port.
    /// `early`, if given, gets peers as they are found, so they can be dialed at once (a lookup
    /// walks on for a while after the first peers come).
    fn find_peers(
        &self,
        info_hash: [u8; 20],
        announce: Option<u16>,
        early: Option<PeerSink>,
    ) -> PeersFuture;
    /// Our external address as the port mapping learned it (BEP 42 ids derive from it).
    fn external_address(&self, _ip: std::net::IpAddr) {}
}

/// A shareable discovery service (cloneable, printable in configs).
#[derive(Clone)]
pub struct DiscoveryHandle(pub Arc<dyn Discovery>);

impl std::fmt::Debug for DiscoveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryHandle")
    }
}

/// The DHT: announce and get peers now, again soon while peers are scarce, and every 15 minutes
/// once the swarm is found (BEP 5 announces expire after about 30 minutes).
pub(crate) async fn discovery_loop(
    t: Arc<TorrentShared>,
    d: DiscoveryHandle,
    mut quit: watch::Receiver<bool>,
) {
    let port = t.session.listen_addr.port();
    let mut hashes = vec![t.info_hash];
    if let Some(v2) = t.meta.v2_hash {
        let short: [u8; 20] = v2[..20].try_into().unwrap();
        if short != t.info_hash {
            hashes.push(short);
        }
    }
    // Adds peers to the known set and wakes the driver to dial them; how many were not us.
    let add = |peers: Vec<SocketAddr>| {
        let mut n = 0;
        let mut s = t.state.lock().unwrap();
        for p in peers {
            if !super::is_self(&t, p) {
                s.add_known(p);
                n += 1;
            }
        }
        drop(s);
        t.wake.notify_one();
        n
    };
    loop {
        let mut found = 0;
        for h in &hashes {
            // Peers found early are dialed at once; the full set comes at the end anyway.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let lookup = d.0.find_peers(*h, Some(port), Some(tx));
            tokio::pin!(lookup);
            let peers = loop {
                tokio::select! {
                    p = &mut lookup => break p,
                    Some(early) = rx.recv() => { add(early); }
                    _ = quit.changed() => return,
                }
            };
            found += add(peers);
        }
        let connected = t.state.lock().unwrap().peers.len();
        let wait = if found == 0 {
            Duration::from_secs(10)
        } else if connected < 3 {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(15 * 60)
        }
        .max(t.cfg.discovery_min_wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = quit.changed() => return,
        }
    }
}
