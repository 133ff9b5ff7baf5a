//! The socket task on top of the sans-IO [`Node`]: one UDP socket (the listen port), one task that
//! owns the node, feeds it datagrams and the time, sends what it produces and hands finished
//! operations back to their callers. [`Dht`] is the cheap, cloneable handle.
//!
//! The socket is the one a uTP stack will share: KRPC datagrams are bencoded dictionaries and
//! start with `d`, uTP packets never do (their first byte is type and version), so packets are
//! told apart by their first byte; the others are counted and dropped until uTP exists.

use crate::krpc::NodeInfo;
use crate::node::{self, Done, FoundItem, ItemKind, Node, Outcome, PutItem, Request, Settings};
use crate::Id;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The routers BitTorrent clients bootstrap from (the default of `[discovery] dht_bootstrap`).
pub const PUBLIC_ROUTERS: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// How often the routing table is written to the data dir.
const SAVE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// The UDP address (the peer listen address).
    pub bind: SocketAddr,
    /// `host:port` of nodes to bootstrap from.
    pub bootstrap: Vec<String>,
    /// Where the routing table is saved and read back at start.
    pub state_file: Option<PathBuf>,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot open the DHT's UDP socket on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("the DHT has stopped")]
    Stopped,
}

/// A snapshot for `ccbt dht status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: Id,
    pub local: SocketAddr,
    pub nodes: usize,
    /// (bucket index, nodes, replacements) for buckets that hold any.
    pub buckets: Vec<(usize, usize, usize)>,
    pub items: usize,
    pub peer_hashes: usize,
    pub ops_running: usize,
    pub external_ip: Option<std::net::Ipv4Addr>,
    pub bootstrap: Vec<SocketAddrV4>,
    pub stats: node::Stats,
    /// Datagrams that were not KRPC (uTP, later).
    pub other_packets: u64,
}

enum Cmd {
    Op(Request, oneshot::Sender<Done>),
    Status(oneshot::Sender<Status>),
    /// Writes the routing table now; answers when written.
    Save(oneshot::Sender<()>),
    /// Our external address, learned by port mapping.
    External(std::net::Ipv4Addr),
}

/// A running DHT node.
#[derive(Clone)]
pub struct Dht {
    tx: mpsc::Sender<Cmd>,
    local: SocketAddr,
}

impl Dht {
    /// Binds the socket and starts the node task on the current tokio runtime (call it inside
    /// one, or with a runtime entered). Bootstrap names are resolved in the background.
    pub fn start(cfg: DhtConfig) -> Result<Dht, DhtError> {
        // The listen port's UDP socket, shared with uTP (whichever starts first binds it).
        let mux = ccbt_core::session::udp::UdpMux::get_or_bind(cfg.bind)
            .map_err(|e| DhtError::Bind(cfg.bind, e))?;
        let local = mux.local;
        let saved = cfg
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| node::load_state(&b));
        let now = Instant::now();
        let id = saved
            .as_ref()
            .map(|s| s.0)
            .unwrap_or_else(|| Node::random_id(&mut rand::thread_rng(), None));
        let mut node = Node::new(id, cfg.settings.clone(), rand::random(), now);
        node.local_ip = match local.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            _ => None,
        };
        let saved_nodes: Vec<NodeInfo> = saved.map(|s| s.1).unwrap_or_default();
        node.add_saved(&saved_nodes, now);
        let (tx, rx) = mpsc::channel(256);
        let input = mux.subscribe_krpc();
        tokio::spawn(run(mux, input, node, rx, cfg, saved_nodes));
        Ok(Dht { tx, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs one operation to its end.
    pub async fn request(&self, req: Request) -> Result<Done, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Op(req, tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Peers for `info_hash`; with `announce`, also announces us on that TCP port (0: the UDP
    /// source port, BEP 5's implied_port).
    pub async fn get_peers(
        &self,
        info_hash: Id,
        announce: Option<u16>,
    ) -> Result<Vec<SocketAddrV4>, DhtError> {
        match self
            .request(Request::GetPeers {
                info_hash,
                announce,
            })
            .await?
            .outcome
        {
            Outcome::Peers { peers, .. } => Ok(peers),
            _ => Ok(Vec::new()),
        }
    }

    /// A BEP 44 item: immutable by its SHA-1, or mutable (the newest verified `seq`).
    pub async fn get(&self, target: Id, kind: ItemKind) -> Result<Option<FoundItem>, DhtError> {
        match self.request(Request::Get { target, kind }).await?.outcome {
            Outcome::Item(i) => Ok(i),
            _ => Ok(None),
        }
    }

    /// Stores a BEP 44 item on the closest nodes; returns how many stored it and the last error.
    pub async fn put(&self, item: PutItem) -> Result<(Id, usize, Option<(i64, String)>), DhtError> {
        match self.request(Request::Put(item)).await?.outcome {
            Outcome::Put {
                target,
                stored,
                error,
            } => Ok((target, stored, error)),
            _ => Err(DhtError::Stopped),
        }
    }

    pub async fn ping(&self, addr: SocketAddrV4) -> Result<Option<Id>, DhtError> {
        match self.request(Request::Ping(addr)).await?.outcome {
            Outcome::Pong(id) => Ok(id),
            _ => Ok(None),
        }
    }

    pub async fn status(&self) -> Result<Status, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Status(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Writes the routing table to the data dir now.
    pub async fn save(&self) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Save(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Waits (bounded) until the routing table holds a node; returns how many it holds.
    pub async fn wait_for_nodes(&self, timeout: Duration) -> usize {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.status().await.map(|s| s.nodes).unwrap_or(0);
            if n > 0 || tokio::time::Instant::now() >= end {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Resolves `host:port` names to IPv4 addresses (each bounded; failures are logged).
async fn resolve(names: Vec<String>) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for n in names {
        match tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(&n)).await {
            Ok(Ok(addrs)) => {
                let v4: Vec<SocketAddrV4> = addrs
                    .filter_map(|a| match a {
                        SocketAddr::V4(a) => Some(a),
                        SocketAddr::V6(_) => None,
                    })
                    .collect();
                if v4.is_empty() {
                    tracing::warn!("DHT bootstrap node {n} has no IPv4 address");
                }
                out.extend(v4);
            }
            Ok(Err(e)) => tracing::warn!("cannot resolve DHT bootstrap node {n}: {e}"),
            Err(_) => tracing::warn!("resolving DHT bootstrap node {n} timed out"),
        }
    }
    out
}

fn save_to(path: &Option<PathBuf>, node: &Node) {
    let Some(p) = path else { return };
    // Never overwrite a useful table with an empty one (a run that could not reach anybody).
    if node.table.is_empty() {
        return;
    }
    let tmp = p.with_extension("tmp");
    let r = std::fs::write(&tmp, node.save_state(Instant::now()))
        .and_then(|_| std::fs::rename(&tmp, p));
    if let Err(e) = r {
        tracing::warn!("cannot save the DHT routing table to {}: {e}", p.display());
    }
}

async fn run(
    mux: Arc<ccbt_core::session::udp::UdpMux>,
    mut input: mpsc::Receiver<ccbt_core::session::udp::Datagram>,
    mut node: Node,
    mut rx: mpsc::Receiver<Cmd>,
    cfg: DhtConfig,
    saved: Vec<NodeInfo>,
) {
    let (boot_tx, mut boot_rx) = mpsc::channel(1);
    let names = cfg.bootstrap.clone();
    tokio::spawn(async move {
        let _ = boot_tx.send(resolve(names).await).await;
    });
    let mut waiters: std::collections::HashMap<node::OpId, oneshot::Sender<Done>> =
        Default::default();
    let sock = mux.socket.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            d = input.recv() => match d {
                Some((pkt, SocketAddr::V4(from))) => {
                    tracing::trace!("DHT in from {from}: {} bytes", pkt.len());
                    node.handle(from, &pkt, Instant::now());
                }
                Some(_) => {}
                None => break,
            },
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Op(req, reply)) => {
                    let op = node.start(req, Instant::now());
                    waiters.insert(op, reply);
                }
                Some(Cmd::Status(reply)) => {
                    let _ = reply.send(Status {
                        id: node.id(),
                        local: sock.local_addr().unwrap_or(cfg.bind),
                        nodes: node.table.len(),
                        buckets: node.table.bucket_sizes(),
                        items: node.server.items.len(),
                        peer_hashes: node.server.stored_hashes(),
                        ops_running: node.ops_running(),
                        external_ip: node.external_ip,
                        bootstrap: node.bootstrap_nodes().to_vec(),
                        stats: node.stats.clone(),
                        other_packets: mux.other.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
                Some(Cmd::Save(reply)) => {
                    save_to(&cfg.state_file, &node);
                    let _ = reply.send(());
                }
                Some(Cmd::External(ip)) => node.set_external_ip(ip, Instant::now()),
            },
            Some(mut addrs) = boot_rx.recv() => {
                // Saved nodes are asked too: the routers may be unreachable.
                addrs.extend(saved.iter().map(|n| n.addr));
                addrs.dedup();
                node.set_bootstrap(addrs);
                node.tick(Instant::now());
            }
            _ = tick.tick() => {
                node.tick(Instant::now());
                if last_save.elapsed() >= SAVE_EVERY {
                    last_save = Instant::now();
                    save_to(&cfg.state_file, &node);
                }
            }
        }
        while let Some((to, pkt)) = node.poll_transmit() {
            // A full socket buffer drops the packet, as the network would.
            let r = sock.try_send_to(&pkt, SocketAddr::V4(to));
            tracing::trace!("DHT out to {to}: {} bytes: {r:?}", pkt.len());
        }
        while let Some(d) = node.poll_event() {
            if let Some(w) = waiters.remove(&d.op) {
                let _ = w.send(d);
            }
        }
    }
    save_to(&cfg.state_file, &node);
}

/// The DHT as the session's peer source.
impl ccbt_core::session::discovery::Discovery for Dht {
    fn find_peers(
        &self,
        info_hash: [u8; 20],
        announce: Option<u16>,
    ) -> ccbt_core::session::discovery::PeersFuture {
        let d = self.clone();
        Box::pin(async move {
            d.get_peers(info_hash, announce)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(SocketAddr::V4)
                .collect()
        })
    }

    fn external_address(&self, ip: std::net::IpAddr) {
        if let std::net::IpAddr::V4(ip) = ip.to_canonical() {
            // Full queue: the next renewal tells it again.
            let _ = self.tx.try_send(Cmd::External(ip));
        }
    }
}
