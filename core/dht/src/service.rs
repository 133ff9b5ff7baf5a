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
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
    pub external_ip: Option<IpAddr>,
    pub bootstrap: Vec<SocketAddr>,
    /// The IPv6 node (BEP 32), when IPv6 is available: its address and routing-table size.
    pub local6: Option<SocketAddr>,
    pub nodes6: usize,
    pub stats: node::Stats,
    /// Datagrams that were not KRPC (uTP, later).
    pub other_packets: u64,
}

pub use ccbt_core::session::discovery::PeerSink;

enum Cmd {
    Op(Request, oneshot::Sender<Done>, Option<PeerSink>),
    Status(oneshot::Sender<Status>),
    /// Writes the routing table now; answers when written.
    Save(oneshot::Sender<()>),
    /// Our external address, learned by port mapping.
    External(IpAddr),
}

/// A running DHT node: the IPv4 node, and (BEP 32) an IPv6 node on the same port when the host
/// has IPv6. Each has its own socket, routing table and saved state; lookups, announces and
/// items go to both, and their answers are merged.
#[derive(Clone)]
pub struct Dht {
    tx: mpsc::Sender<Cmd>,
    local: SocketAddr,
    v6: Option<(mpsc::Sender<Cmd>, SocketAddr)>,
    /// Routing-table sizes of the IPv4 and IPv6 nodes (written by their tasks every tick): an
    /// operation does not wait for a node whose table is empty.
    sizes: Arc<[std::sync::atomic::AtomicUsize; 2]>,
}

/// The IPv6 address to bind beside an IPv4 one: loopback beside loopback (tests), any beside
/// any; none beside a specific IPv4 address (the user chose one interface).
fn v6_bind(v4: SocketAddr) -> Option<SocketAddr> {
    match v4.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            Some(SocketAddr::from((Ipv6Addr::LOCALHOST, v4.port())))
        }
        IpAddr::V4(ip) if ip.is_unspecified() => {
            Some(SocketAddr::from((Ipv6Addr::UNSPECIFIED, v4.port())))
        }
        IpAddr::V4(_) => None,
        IpAddr::V6(_) => Some(v4),
    }
}

/// A put's target, how many nodes stored it, and the last error a node gave.
pub type PutResult = (Id, usize, Option<(i64, String)>);

/// `dht.dat` -> `dht6.dat`.
fn state6(p: &std::path::Path) -> PathBuf {
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("dht");
    let ext = p.extension().and_then(|s| s.to_str()).unwrap_or("dat");
    p.with_file_name(format!("{stem}6.{ext}"))
}

impl Dht {
    /// Binds the socket and starts the node task on the current tokio runtime (call it inside
    /// one, or with a runtime entered). Bootstrap names are resolved in the background.
    pub fn start(cfg: DhtConfig) -> Result<Dht, DhtError> {
        let bind4 = match cfg.bind {
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_loopback() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let sizes: Arc<[std::sync::atomic::AtomicUsize; 2]> = Arc::new(Default::default());
        let (tx, local) = start_node(&cfg, bind4, cfg.state_file.clone(), (sizes.clone(), 0))?;
        // The IPv6 node is a bonus: a host without IPv6 runs the IPv4 one alone.
        let v6 = v6_bind(SocketAddr::from((bind4.ip(), local.port()))).and_then(|b| {
            let state = cfg.state_file.as_deref().map(state6);
            match start_node(&cfg, b, state, (sizes.clone(), 1)) {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::debug!("no IPv6 DHT node: {e}");
                    None
                }
            }
        });
        Ok(Dht {
            tx,
            local,
            v6,
            sizes,
        })
    }

    /// The IPv6 node's address, if it runs.
    pub fn local_addr6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().map(|v| v.1)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs one operation to its end on the IPv4 node (a ping of an IPv6 address on the IPv6
    /// node). [`Dht::get_peers`], [`Dht::get`] and [`Dht::put`] use both nodes.
    pub async fn request(&self, req: Request) -> Result<Done, DhtError> {
        let to6 = matches!(req, Request::Ping(a) if a.is_ipv6());
        match (&self.v6, to6) {
            (Some((tx6, _)), true) => op(tx6, req, None).await,
            _ => op(&self.tx, req, None).await,
        }
    }

    fn has_nodes(&self, family: usize) -> bool {
        self.sizes[family].load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Runs `req` on both nodes at once (the IPv6 one when it runs). When one finishes, the
    /// other is waited for only if its table holds nodes (an empty node would sit out its wait
    /// for a bootstrap that may never come, as an IPv6 node with only IPv4 routers does).
    async fn both(
        &self,
        req: Request,
        early: Option<PeerSink>,
    ) -> Result<(Done, Option<Done>), DhtError> {
        let Some((tx6, _)) = &self.v6 else {
            return Ok((op(&self.tx, req, early).await?, None));
        };
        let f4 = op(&self.tx, req.clone(), early.clone());
        let f6 = op(tx6, req, early);
        tokio::pin!(f4, f6);
        tokio::select! {
            a = &mut f4 => {
                let a = a?;
                let b = if self.has_nodes(1) { f6.await.ok() } else { None };
                Ok((a, b))
            }
            b = &mut f6 => match b {
                Ok(b) if !self.has_nodes(0) => Ok((b, None)),
                b => Ok((f4.await?, b.ok())),
            },
        }
    }

    /// Peers for `info_hash`; with `announce`, also announces us on that TCP port (0: the UDP
    /// source port, BEP 5's implied_port). `early` gets peers as they are found (a caller can
    /// dial them while the lookup walks on); the result holds them all.
    pub async fn get_peers(
        &self,
        info_hash: Id,
        announce: Option<u16>,
        early: Option<PeerSink>,
    ) -> Result<Vec<SocketAddr>, DhtError> {
        let (a, b) = self
            .both(
                Request::GetPeers {
                    info_hash,
                    announce,
                },
                early,
            )
            .await?;
        let mut out = Vec::new();
        for d in std::iter::once(a).chain(b) {
            if let Outcome::Peers { peers, .. } = d.outcome {
                for p in peers {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        Ok(out)
    }

    /// A BEP 44 item: immutable by its SHA-1, or mutable (the newest verified `seq`).
    pub async fn get(&self, target: Id, kind: ItemKind) -> Result<Option<FoundItem>, DhtError> {
        let (a, b) = self.both(Request::Get { target, kind }, None).await?;
        let seq = |i: &FoundItem| i.mutable.as_ref().map_or(0, |m| m.seq);
        let mut best: Option<FoundItem> = None;
        for d in std::iter::once(a).chain(b) {
            if let Outcome::Item(Some(i)) = d.outcome {
                if best.as_ref().is_none_or(|b| seq(&i) > seq(b)) {
                    best = Some(i);
                }
            }
        }
        Ok(best)
    }

    /// Stores a BEP 44 item on the closest nodes; returns how many stored it and the last error.
    pub async fn put(&self, item: PutItem) -> Result<PutResult, DhtError> {
        let (a, b) = self.both(Request::Put(item), None).await?;
        let mut out: Option<PutResult> = None;
        for d in std::iter::once(a).chain(b) {
            if let Outcome::Put {
                target,
                stored,
                error,
            } = d.outcome
            {
                out = Some(match out {
                    None => (target, stored, error),
                    Some((t, n, e)) => (t, n + stored, e.or(error)),
                });
            }
        }
        out.ok_or(DhtError::Stopped)
    }

    pub async fn ping(&self, addr: SocketAddr) -> Result<Option<Id>, DhtError> {
        match self.request(Request::Ping(addr)).await?.outcome {
            Outcome::Pong(id) => Ok(id),
            _ => Ok(None),
        }
    }

    pub async fn status(&self) -> Result<Status, DhtError> {
        let mut s = status_of(&self.tx).await?;
        if let Some((tx6, local6)) = &self.v6 {
            s.local6 = Some(*local6);
            if let Ok(s6) = status_of(tx6).await {
                s.nodes6 = s6.nodes;
                s.stats.queries_in += s6.stats.queries_in;
                s.stats.queries_out += s6.stats.queries_out;
            }
        }
        Ok(s)
    }

    /// Writes the routing tables to the data dir now.
    pub async fn save(&self) -> Result<(), DhtError> {
        for tx in std::iter::once(&self.tx).chain(self.v6.as_ref().map(|v| &v.0)) {
            let (reply, rx) = oneshot::channel();
            tx.send(Cmd::Save(reply))
                .await
                .map_err(|_| DhtError::Stopped)?;
            rx.await.map_err(|_| DhtError::Stopped)?;
        }
        Ok(())
    }

    /// Waits (bounded) until a routing table holds a node; returns how many they hold.
    pub async fn wait_for_nodes(&self, timeout: Duration) -> usize {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.status().await.map(|s| s.nodes + s.nodes6).unwrap_or(0);
            if n > 0 || tokio::time::Instant::now() >= end {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn op(
    tx: &mpsc::Sender<Cmd>,
    req: Request,
    early: Option<PeerSink>,
) -> Result<Done, DhtError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Cmd::Op(req, reply, early))
        .await
        .map_err(|_| DhtError::Stopped)?;
    rx.await.map_err(|_| DhtError::Stopped)
}

async fn status_of(tx: &mpsc::Sender<Cmd>) -> Result<Status, DhtError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Cmd::Status(reply))
        .await
        .map_err(|_| DhtError::Stopped)?;
    rx.await.map_err(|_| DhtError::Stopped)
}

/// Binds a node's socket (the listen port's, shared with uTP) and starts its task.
/// The table-size slot a node's task writes: (the shared sizes, its index).
type SizeSlot = (Arc<[std::sync::atomic::AtomicUsize; 2]>, usize);

fn start_node(
    cfg: &DhtConfig,
    bind: SocketAddr,
    state_file: Option<PathBuf>,
    size: SizeSlot,
) -> Result<(mpsc::Sender<Cmd>, SocketAddr), DhtError> {
    let mux =
        ccbt_core::session::udp::UdpMux::get_or_bind(bind).map_err(|e| DhtError::Bind(bind, e))?;
    let local = mux.local;
    let saved = state_file
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| node::load_state(&b));
    let now = Instant::now();
    let id = saved
        .as_ref()
        .map(|s| s.0)
        .unwrap_or_else(|| Node::random_id(&mut rand::thread_rng(), None));
    let mut node = Node::new(id, cfg.settings.clone(), rand::random(), now);
    node.local_ip = Some(local.ip());
    // A saved table of the other family (an older file) is not used.
    let saved_nodes: Vec<NodeInfo> = saved
        .map(|s| s.1)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.addr.is_ipv6() == local.is_ipv6())
        .collect();
    node.add_saved(&saved_nodes, now);
    let (tx, rx) = mpsc::channel(256);
    let input = mux.subscribe_krpc();
    let cfg = DhtConfig {
        state_file,
        ..cfg.clone()
    };
    tokio::spawn(run(mux, input, node, rx, cfg, saved_nodes, size));
    Ok((tx, local))
}

/// Resolves `host:port` names to addresses of one family (each bounded; failures are logged).
async fn resolve(names: Vec<String>, v6: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for n in names {
        match tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(&n)).await {
            Ok(Ok(addrs)) => {
                let all: Vec<SocketAddr> = addrs.collect();
                if all.is_empty() && !v6 {
                    tracing::warn!("DHT bootstrap node {n} has no address");
                }
                // Each node bootstraps from its own family's addresses.
                out.extend(all.into_iter().filter(|a| a.is_ipv6() == v6));
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
    size: SizeSlot,
) {
    let (boot_tx, mut boot_rx) = mpsc::channel(1);
    let names = cfg.bootstrap.clone();
    let v6 = mux.local.is_ipv6();
    tokio::spawn(async move {
        let _ = boot_tx.send(resolve(names, v6).await).await;
    });
    let mut waiters: std::collections::HashMap<node::OpId, oneshot::Sender<Done>> =
        Default::default();
    let mut sinks: std::collections::HashMap<node::OpId, PeerSink> = Default::default();
    let sock = mux.socket.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            d = input.recv() => match d {
                Some((pkt, from)) => {
                    let from = crate::krpc::canonical(from);
                    if from.is_ipv6() == v6 {
                        tracing::trace!("DHT in from {from}: {} bytes", pkt.len());
                        node.handle(from, &pkt, Instant::now());
                    }
                }
                None => break,
            },
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Op(req, reply, early)) => {
                    let op = node.start(req, Instant::now());
                    waiters.insert(op, reply);
                    if let Some(e) = early {
                        sinks.insert(op, e);
                    }
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
                        local6: None,
                        nodes6: 0,
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
                size.0[size.1].store(node.table.len(), std::sync::atomic::Ordering::Relaxed);
                if last_save.elapsed() >= SAVE_EVERY {
                    last_save = Instant::now();
                    save_to(&cfg.state_file, &node);
                }
            }
        }
        while let Some((to, pkt)) = node.poll_transmit() {
            // A full socket buffer drops the packet, as the network would.
            if to.is_ipv6() != v6 {
                continue; // a node of the other family (never in this table, but told about)
            }
            let r = sock.try_send_to(&pkt, to);
            tracing::trace!("DHT out to {to}: {} bytes: {r:?}", pkt.len());
        }
        while let Some((op, peers)) = node.poll_found() {
            if let Some(s) = sinks.get(&op) {
                let _ = s.send(peers);
            }
        }
        while let Some(d) = node.poll_event() {
            sinks.remove(&d.op);
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
        early: Option<PeerSink>,
    ) -> ccbt_core::session::discovery::PeersFuture {
        let d = self.clone();
        Box::pin(async move {
            d.get_peers(info_hash, announce, early)
                .await
                .unwrap_or_default()
        })
    }

    fn external_address(&self, ip: IpAddr) {
        // Full queue: the next renewal tells it again. Each node keeps its own family's.
        let ip = ip.to_canonical();
        let _ = self.tx.try_send(Cmd::External(ip));
        if let Some((tx6, _)) = &self.v6 {
            let _ = tx6.try_send(Cmd::External(ip));
        }
    }
}
