//! The async BitTorrent session (tokio) on top of the pure protocol cores: one listener, torrents
//! keyed by info-hash, a task per peer connection, tracker announcers, and a driver per torrent that
//! connects peers, rechokes, checkpoints and notices completion.

mod config;
mod disk;
mod driver;
mod inspect;
pub use inspect::{client_name, FileInfo, PeerInfo, TrackerInfo};
mod latency;
mod transport;
pub use config::{SessionConfig, TorrentConfig};
pub use latency::RuntimeLatency;
pub mod discovery;
pub mod metadata_fetch;
mod peer;
pub mod portmap;
pub mod tracker_client;
pub mod udp;
mod utp;
mod webseed;

use crate::choker::{self, PeerStat};
use crate::encoding::to_hex;
use crate::extension::Registry;
use crate::metainfo::Metainfo;
use crate::picker::Picker;
use crate::ratelimit::TokenBucket;
use crate::resume::Checkpoint;
use crate::storage::{self, Expected, Storage};
use crate::tracker::{Announce, Event};
use crate::wire::Bitfield;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Checkpoint(#[from] crate::resume::CheckpointError),
    #[error("this torrent is already running in this session")]
    Duplicate,
}

/// A snapshot for progress displays and tests.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub name: String,
    pub pieces_have: u64,
    pub pieces_total: u64,
    pub wanted_left: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub complete: bool,
    pub hash_failures: u64,
    pub banned: usize,
    pub resumed_pieces: u64,
    pub rechecked: bool,
    pub tracker_errors: u64,
    pub tracker_ok: u64,
    pub wire_in: u64,
    pub wire_out: u64,
    /// Why the torrent stopped on its own (a disk that cannot be written), if it did.
    pub error: Option<String>,
}

pub(crate) enum Cmd {
    Have(u32),
    Choke,
    Unchoke,
    Cancel(crate::picker::Block),
    Close,
}

pub(crate) struct PeerEntry {
    pub addr: SocketAddr,
    pub peer_id: [u8; 20],
    pub cmd: mpsc::UnboundedSender<Cmd>,
    pub bitfield: Bitfield,
    pub interested: bool,
    pub choked_by_us: bool,
    pub down_total: u64,
    pub up_total: u64,
    last_down: u64,
    last_up: u64,
    pub down_rate: f64,
    pub up_rate: f64,
    pub connected_at: Instant,
    /// Asked to close to make room (it leaves the map when its task ends).
    pub evicted: bool,
    /// Where other peers can reach it (for PEX), if known.
    pub reachable: Option<SocketAddr>,
    /// We dialed it.
    pub outgoing: bool,
}

/// A peer that has neither wanted our data nor sent us any for this long may be dropped to make
/// room when every slot is taken (as libtorrent does), so idle connections cannot hold all slots.
pub(crate) const IDLE_EVICT_AFTER: Duration = Duration::from_secs(10);

impl State {
    /// The connected peer least worth keeping, if any may go: not interested in us, never sent
    /// us a byte, connected for a while; the longest-connected first.
    pub(crate) fn evictable(&self, now: Instant) -> Option<u64> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                !p.evicted
                    && !p.interested
                    && p.down_total == 0
                    && p.up_total == 0
                    && now.duration_since(p.connected_at) >= IDLE_EVICT_AFTER
            })
            .min_by_key(|(_, p)| p.connected_at)
            .map(|(k, _)| *k)
    }
}

pub(crate) struct State {
    pub picker: Picker,
    pub peers: HashMap<u64, PeerEntry>,
    known: HashMap<SocketAddr, (Option<Instant>, u32)>,
    /// Banned addresses: an IP, not (IP, port), so a banned peer cannot come back from another
    /// port.
    pub banned: HashSet<std::net::IpAddr>,
    pub banned_ids: HashSet<[u8; 20]>,
    pub strikes: HashMap<SocketAddr, u32>,
    pub connecting: HashSet<SocketAddr>,
    pub dirty: bool,
    pub hash_failures: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    optimistic: Option<u64>,
    /// The web seeds fetching for this torrent, by key (as peers are).
    pub(crate) web_seeds: HashMap<u64, webseed::WebSeed>,
    tracker_errors: u64,
    tracker_ok: u64,
    /// Per tracker URL: its last announce's outcome (the daemon's details).
    pub(crate) trackers: HashMap<String, inspect::TrackerState>,
}

impl State {
    pub(crate) fn add_known(&mut self, addr: SocketAddr) {
        self.known.entry(addr).or_insert((None, 0));
    }

    pub(crate) fn reset_backoff(&mut self, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.1 = 0;
        }
    }
}

/// A connection that lasted this long resets its address's redial backoff.
pub(crate) const REDIAL_RESET_AFTER: Duration = Duration::from_secs(30);

/// How long after its last dial an address is dialled again, `dials` being the dials since it
/// last held a lasting connection: 1, 2, 4 ... 60 s. A peer still loading its torrent or not
/// listening yet is found within seconds; one that keeps failing costs a dial a minute.
pub(crate) fn redial_after(dials: u32) -> Duration {
    match dials {
        0 => Duration::ZERO,
        n => Duration::from_secs((1u64 << (n - 1).min(6)).min(60)),
    }
}

pub(crate) struct TorrentShared {
    /// Unique in the session (shards the disk pool's work).
    pub id: u64,
    pub meta: Metainfo,
    pub info_hash: [u8; 20],
    pub storage: Storage,
    pub expected: Vec<Expected>,
    pub cfg: TorrentConfig,
    pub session: Arc<SessionInner>,
    pub state: Mutex<State>,
    pub down: TokenBucket,
    pub up: TokenBucket,
    /// Peer connections allowed (from `cfg.max_peers`; changed while running).
    pub max_peers: std::sync::atomic::AtomicUsize,
    pub stopping: AtomicBool,
    /// Wakes the driver at once (the last piece verified) instead of at its next tick.
    pub wake: tokio::sync::Notify,
    /// The first failed write (a full disk, say): the torrent stops with it rather than fetch
    /// the same pieces again and again.
    pub disk_error: Mutex<Option<String>>,
    /// Every byte read from / written to this torrent's peer sockets (protocol overhead included).
    pub wire_in: AtomicU64,
    pub wire_out: AtomicU64,
    resumed_pieces: u64,
    rechecked: bool,
}

pub(crate) struct SessionInner {
    pub peer_id: [u8; 20],
    pub listen_addr: SocketAddr,
    pub torrents: Mutex<HashMap<[u8; 20], Arc<TorrentShared>>>,
    pub down: TokenBucket,
    pub up: TokenBucket,
    pub registry: Registry,
    pub disk: disk::DiskPool,
    pub pex: bool,
    pub encryption: crate::mse::Policy,
    /// How peers are dialled (TCP, uTP, which first).
    pub(crate) dialer: transport::Dialer,
    /// Our address as the internet sees it (from port mapping), once known.
    pub external: Mutex<Option<SocketAddr>>,
    next_key: AtomicU64,
    latency: Arc<latency::LatencyProbe>,
    /// Set once, after start (the DHT binds the listen port the session chose).
    discovery: std::sync::OnceLock<discovery::DiscoveryHandle>,
}

impl SessionInner {
    pub(crate) fn key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

/// A fresh Azureus-style peer id (`-CC0100-` and 12 random characters).
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-CC0100-000000000000";
    for b in &mut id[8..] {
        *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
    }
    id
}

/// Simple glob: `*` any run, `?` one character; matched against the whole path.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Session {
    /// Binds the listener and starts accepting peers.
    pub async fn start(cfg: SessionConfig, registry: Registry) -> Result<Session, SessionError> {
        let listener = bind_listener(cfg.listen).await?;
        let bound = listener
            .local_addr()
            .map_err(|e| SessionError::Listen(cfg.listen, e))?;
        // Reported as configured (the DHT and trackers use it as IPv4), with the bound port.
        let listen_addr = SocketAddr::new(cfg.listen.ip(), bound.port());
        let (utp_tx, mut utp_rx) = mpsc::channel::<(utp::UtpStream, SocketAddr)>(64);
        let utp = if cfg.enable_utp {
            match udp::UdpMux::get_or_bind(listen_addr) {
                Ok(mux) => Some(utp::UtpSocket::start(mux, utp_tx)),
                Err(e) => {
                    tracing::warn!("uTP is off: cannot open UDP {listen_addr}: {e}");
                    None
                }
            }
        } else {
            None
        };
        let inner = Arc::new(SessionInner {
            dialer: transport::Dialer {
                tcp: cfg.enable_tcp,
                utp,
                prefer_utp: cfg.prefer_utp,
                bind_ip: Some(listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
            },
            external: Mutex::new(None),
            peer_id: new_peer_id(),
            listen_addr,
            torrents: Mutex::new(HashMap::new()),
            down: TokenBucket::new(cfg.global_down),
            up: TokenBucket::new(cfg.global_up),
            registry,
            disk: disk::DiskPool::start(cfg.hash_workers),
            pex: cfg.pex,
            encryption: cfg.encryption,
            next_key: AtomicU64::new(1),
            latency: latency::LatencyProbe::start(),
            discovery: std::sync::OnceLock::new(),
        });
        {
            let weak = Arc::downgrade(&inner);
            inner.latency.set_activity(Box::new(move || {
                weak.upgrade().map_or(0, |i| {
                    let ts = i.torrents.lock().unwrap();
                    ts.values()
                        .map(|t| {
                            t.wire_in.load(Ordering::Relaxed) + t.wire_out.load(Ordering::Relaxed)
                        })
                        .sum()
                })
            }));
        }
        if !cfg.port_mapping.is_empty() {
            let weak = Arc::downgrade(&inner);
            let methods = cfg.port_mapping.clone();
            tokio::spawn(portmap::keep_mapped(
                listen_addr.port(),
                methods,
                move |ext| {
                    if let Some(i) = weak.upgrade() {
                        *i.external.lock().unwrap() = Some(ext);
                        if let Some(d) = i.discovery.get() {
                            d.0.external_address(ext.ip());
                        }
                    }
                },
            ));
        }
        let acc = inner.clone();
        let tcp_on = cfg.enable_tcp;
        tokio::spawn(async move {
            loop {
                let (stream, addr) = transport::accept(&listener).await;
                if !tcp_on {
                    continue; // uTP only: the listener just holds the port
                }
                // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                let inner = acc.clone();
                tokio::spawn(async move {
                    let raw = transport::Raw::Tcp(stream);
                    if let Err(e) = accept_peer(inner, raw, addr).await {
                        tracing::debug!("incoming {addr}: {e}");
                    }
                });
            }
        });
        let acc = inner.clone();
        tokio::spawn(async move {
            while let Some((stream, addr)) = utp_rx.recv().await {
                let inner = acc.clone();
                tokio::spawn(async move {
                    let raw = transport::Raw::Utp(stream);
                    if let Err(e) = accept_peer(inner, raw, addr).await {
                        tracing::debug!("incoming uTP {addr}: {e}");
                    }
                });
            }
        });
        Ok(Session { inner })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// Session-wide rate limits in bytes/s (0 = unlimited), changed while running.
    pub fn set_global_limits(&self, down: u64, up: u64) {
        self.inner.down.set_rate(down);
        self.inner.up.set_rate(up);
    }

    /// Blocks queued for the disk workers (written and hashed as they arrive).
    pub fn disk_queue_depth(&self) -> usize {
        self.inner.disk.queue_depth()
    }

    /// Torrents and swarms running.
    pub fn torrent_count(&self) -> usize {
        let t = self.inner.torrents.lock().unwrap();
        let mut seen: Vec<*const TorrentShared> = t.values().map(Arc::as_ptr).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    /// Our address as the internet sees it, when port mapping found it.
    pub fn external_addr(&self) -> Option<SocketAddr> {
        *self.inner.external.lock().unwrap()
    }

    /// Peers from the DHT for every torrent and swarm added from now on (public torrents only).
    /// Set once; later calls are ignored.
    pub fn set_discovery(&self, d: discovery::DiscoveryHandle) {
        let _ = self.inner.discovery.set(d);
    }

    pub fn discovery(&self) -> Option<discovery::DiscoveryHandle> {
        self.inner.discovery.get().cloned()
    }

    /// How late the runtime's timers fire (see [`latency`]): the health of the async workers.
    pub fn runtime_latency(&self) -> RuntimeLatency {
        self.inner.latency.stats()
    }

    pub fn peer_id(&self) -> [u8; 20] {
        self.inner.peer_id
    }

    /// Joins an extension-only swarm (a share: info-hash = share id) announced to `trackers` and
    /// dialing `peers`. Extensions in the registry see its connections.
    /// A P2P CAS swarm (a file's, by the first 20 bytes of its root): like a share's swarm, but
    /// asking the DHT at most every `min_wait` (a node may be in dozens of them).
    pub fn add_cas_swarm(
        &self,
        info_hash: [u8; 20],
        min_wait: Duration,
    ) -> Result<TorrentHandle, SessionError> {
        self.swarm(info_hash, Vec::new(), Vec::new(), min_wait)
    }

    pub fn add_swarm(
        &self,
        info_hash: [u8; 20],
        trackers: Vec<String>,
        peers: Vec<SocketAddr>,
    ) -> Result<TorrentHandle, SessionError> {
        self.swarm(info_hash, trackers, peers, Duration::ZERO)
    }

    fn swarm(
        &self,
        info_hash: [u8; 20],
        trackers: Vec<String>,
        peers: Vec<SocketAddr>,
        discovery_min_wait: Duration,
    ) -> Result<TorrentHandle, SessionError> {
        let meta = Metainfo {
            name: format!("swarm-{}", to_hex(&info_hash)),
            info_bytes: Vec::new(),
            v1_hash: Some(info_hash),
            v2_hash: None,
            piece_length: 16384,
            multi_file: false,
            files: Vec::new(),
            pieces: Vec::new(),
            piece_layers: Default::default(),
            trackers: trackers.into_iter().map(|t| vec![t]).collect(),
            url_list: Vec::new(),
            http_seeds: Vec::new(),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
        };
        let cfg = TorrentConfig {
            seed: true,
            swarm: true,
            resume: false,
            data_dir: None,
            peers,
            discovery_min_wait,
            ..Default::default()
        };
        self.add_torrent(meta, cfg)
    }

    /// Adds a torrent: maps its files, restores or rechecks progress, and starts it.
    pub fn add_torrent(
        &self,
        meta: Metainfo,
        cfg: TorrentConfig,
    ) -> Result<TorrentHandle, SessionError> {
        let info_hash = meta
            .v1_hash
            .or_else(|| meta.v2_hash.map(|h| h[..20].try_into().unwrap()))
            .expect("a torrent has an info-hash");
        if self.inner.torrents.lock().unwrap().contains_key(&info_hash) {
            return Err(SessionError::Duplicate);
        }
        let storage = Storage::new(&meta, &cfg.out_dir, cfg.prealloc);
        let expected = storage::expected_hashes(&meta);
        let n = expected.len();
        let mut picker = Picker::new(meta.piece_length, meta.total_length(), Bitfield::new(n));
        picker.set_strategy(cfg.strategy);
        picker.set_endgame_duplicates(cfg.endgame_duplicates);
        // File selection: pieces touching no wanted file are skipped.
        if !cfg.only.is_empty() || !cfg.skip.is_empty() {
            let mut wanted = vec![false; n];
            for f in meta.files.iter().filter(|f| !f.pad) {
                let p = f.path_string();
                let want = (cfg.only.is_empty() || cfg.only.iter().any(|g| glob_match(g, &p)))
                    && !cfg.skip.iter().any(|g| glob_match(g, &p));
                if want && f.length > 0 {
                    let a = f.offset / meta.piece_length;
                    let b = (f.offset + f.length - 1) / meta.piece_length;
                    for i in a..=b {
                        wanted[i as usize] = true;
                    }
                }
            }
            for (i, w) in wanted.iter().enumerate() {
                if !w {
                    picker.set_priority(i as u32, 0);
                }
            }
        }
        // Progress: a checkpoint whose file states still match is trusted; otherwise any data on
        // disk is rechecked (in parallel).
        let hex = to_hex(&info_hash);
        let mut resumed = 0u64;
        let mut rechecked = false;
        let ckpt = match (&cfg.data_dir, cfg.resume) {
            (Some(d), true) => Checkpoint::load(d, &hex)?,
            _ => None,
        };
        let trusted = ckpt.as_ref().and_then(|c| {
            (c.files == storage.file_states())
                .then(|| Bitfield::from_bytes(&c.have, n))
                .flatten()
        });
        if let Some(bf) = trusted {
            for i in bf.ones() {
                picker.mark_have(i as u32);
                resumed += 1;
            }
        } else if storage.any_data() {
            rechecked = true;
            let pl = meta.piece_length;
            let good: Vec<bool> = off_runtime(|| {
                (0..n as u32)
                    .into_par_iter()
                    .map_init(Vec::new, |buf, p| {
                        storage::check_piece(&storage, &expected[p as usize], p, pl, buf)
                            .unwrap_or(false)
                    })
                    .collect()
            });
            for (i, g) in good.iter().enumerate() {
                if *g {
                    picker.mark_have(i as u32);
                    resumed += 1;
                }
            }
        }
        let mut state = State {
            picker,
            peers: HashMap::new(),
            known: HashMap::new(),
            banned: HashSet::new(),
            banned_ids: HashSet::new(),
            strikes: HashMap::new(),
            connecting: HashSet::new(),
            dirty: true,
            hash_failures: 0,
            downloaded: 0,
            uploaded: 0,
            optimistic: None,
            tracker_errors: 0,
            tracker_ok: 0,
            trackers: HashMap::new(),
            web_seeds: HashMap::new(),
        };
        for p in &cfg.peers {
            state.add_known(*p);
        }
        let shared = Arc::new(TorrentShared {
            id: self.inner.key(),
            down: TokenBucket::new(cfg.down_limit),
            up: TokenBucket::new(cfg.up_limit),
            max_peers: std::sync::atomic::AtomicUsize::new(cfg.max_peers),
            meta,
            info_hash,
            storage,
            expected,
            cfg,
            session: self.inner.clone(),
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            disk_error: Mutex::new(None),
            wire_in: AtomicU64::new(0),
            wire_out: AtomicU64::new(0),
            resumed_pieces: resumed,
            rechecked,
        });
        if shared.state.lock().unwrap().picker.complete() {
            shared
                .storage
                .create_all()
                .map_err(|e| SessionError::Io(format!("cannot create files: {e}")))?;
        }
        {
            let mut t = self.inner.torrents.lock().unwrap();
            t.insert(info_hash, shared.clone());
            if let Some(v2) = shared.meta.v2_hash {
                t.insert(v2[..20].try_into().unwrap(), shared.clone());
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (fin_tx, fin_rx) = watch::channel(false);
        let inner = self.inner.clone();
        let s2 = shared.clone();
        tokio::spawn(async move {
            driver::drive(s2.clone(), stop_rx).await;
            inner
                .torrents
                .lock()
                .unwrap()
                .retain(|_, v| !Arc::ptr_eq(v, &s2));
            let _ = fin_tx.send(true);
        });
        Ok(TorrentHandle {
            shared,
            stop: stop_tx,
            finished: fin_rx,
        })
    }
}

/// A running torrent.
pub struct TorrentHandle {
    shared: Arc<TorrentShared>,
    stop: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
}

impl TorrentHandle {
    pub fn stats(&self) -> Stats {
        stats(&self.shared)
    }

    pub fn info_hash(&self) -> [u8; 20] {
        self.shared.info_hash
    }

    /// This torrent's rate limits in bytes/s (0 = unlimited), changed while running.
    pub fn set_limits(&self, down: u64, up: u64) {
        self.shared.down.set_rate(down);
        self.shared.up.set_rate(up);
    }

    /// Peer connections allowed for this torrent, changed while running (existing connections
    /// over the new limit stay until they end).
    pub fn set_max_peers(&self, n: usize) {
        self.shared.max_peers.store(n.max(1), Ordering::Relaxed);
    }

    /// Asks the torrent to stop (announce `stopped`, checkpoint, close peers).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Resolves when the torrent has stopped (after completion when not seeding, or after `stop`).
    pub async fn finished(&self) {
        let mut rx = self.finished.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.shared.storage.paths()
    }

    /// The torrent being run.
    pub fn meta(&self) -> &Metainfo {
        &self.shared.meta
    }

    /// Whether piece `i` is downloaded and verified.
    pub fn have_piece(&self, i: u32) -> bool {
        self.shared
            .state
            .lock()
            .unwrap()
            .picker
            .have()
            .get(i as usize)
    }

    /// Piece priority (0 = skip, 1 = normal, higher first).
    pub fn set_piece_priority(&self, piece: u32, priority: u8) {
        self.shared
            .state
            .lock()
            .unwrap()
            .picker
            .set_priority(piece, priority);
    }

    /// Streaming: fetch `count` pieces from `from` before anything else (a reader is waiting).
    pub fn set_stream_window(&self, from: u32, count: u32) {
        self.shared
            .state
            .lock()
            .unwrap()
            .picker
            .set_stream_window(from, count);
    }

    /// Reads verified data from the piece space (pads and gaps read as zeros).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.shared.storage.read(off, buf)
    }

    /// Dials `addr` (now and on later retries).
    pub fn add_peer(&self, addr: SocketAddr) {
        self.shared.state.lock().unwrap().add_known(addr);
    }
}

fn stats(t: &TorrentShared) -> Stats {
    let s = t.state.lock().unwrap();
    Stats {
        name: t.meta.name.clone(),
        pieces_have: s.picker.have().count() as u64,
        pieces_total: s.picker.num_pieces() as u64,
        wanted_left: s.picker.wanted_left_bytes(),
        downloaded: s.downloaded,
        uploaded: s.uploaded,
        download_rate: s.peers.values().map(|p| p.down_rate).sum(),
        upload_rate: s.peers.values().map(|p| p.up_rate).sum(),
        peers: s.peers.len(),
        complete: s.picker.complete(),
        hash_failures: s.hash_failures,
        banned: s.banned.len(),
        resumed_pieces: t.resumed_pieces,
        rechecked: t.rechecked,
        tracker_errors: s.tracker_errors,
        tracker_ok: s.tracker_ok,
        wire_in: t.wire_in.load(Ordering::Relaxed),
        wire_out: t.wire_out.load(Ordering::Relaxed),
        error: t.disk_error.lock().unwrap().clone(),
    }
}

/// The peer listener. An unspecified IPv4 address (`0.0.0.0`) listens on both stacks: `[::]`
/// takes IPv4 peers too (as mapped addresses), unless the kernel has no IPv6.
async fn bind_listener(listen: SocketAddr) -> Result<TcpListener, SessionError> {
    if listen.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, listen.port()));
        if let Ok(l) = TcpListener::bind(v6).await {
            return Ok(l);
        }
    }
    TcpListener::bind(listen)
        .await
        .map_err(|e| SessionError::Listen(listen, e))
}

async fn accept_peer(
    inner: Arc<SessionInner>,
    raw: transport::Raw,
    addr: SocketAddr,
) -> Result<(), String> {
    // An encrypted handshake names its torrent by a hash of the info-hash: try each we serve.
    let skeys = || inner.torrents.lock().unwrap().keys().copied().collect();
    let (stream, theirs) = transport::accept_stream(raw, inner.encryption, skeys).await?;
    let t = inner
        .torrents
        .lock()
        .unwrap()
        .get(&theirs.info_hash)
        .cloned();
    let Some(t) = t else {
        return Err("unknown info-hash".into());
    };
    peer::run(t, stream, addr, Some(theirs)).await;
    Ok(())
}

/// Runs blocking work (disk reads, hashing on all cores) without stalling the runtime: on a
/// worker thread of a multi-thread runtime the worker hands its other tasks on first.
pub(crate) fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn save_checkpoint(t: &TorrentShared) {
    let Some(dir) = &t.cfg.data_dir else { return };
    let (have, count, total) = {
        let s = t.state.lock().unwrap();
        (
            s.picker.have().as_bytes().to_vec(),
            s.picker.have().count(),
            s.picker.num_pieces(),
        )
    };
    let c = Checkpoint {
        info_hash_hex: to_hex(&t.info_hash),
        torrent: t.meta.to_torrent_bytes(),
        out_dir: t.cfg.out_dir.clone(),
        have,
        files: t.storage.file_states(),
        saved: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        only: t.cfg.only.clone(),
        skip: t.cfg.skip.clone(),
        name: t.meta.name.clone(),
        pieces_have: count as u64,
        pieces_total: total as u64,
    };
    if let Err(e) = c.save(dir) {
        tracing::warn!("cannot save checkpoint: {e}");
    }
}

fn announce_params(t: &TorrentShared, event: Event) -> Announce {
    let s = t.state.lock().unwrap();
    Announce {
        info_hash: t.info_hash,
        peer_id: t.session.peer_id,
        port: t.session.listen_addr.port(),
        uploaded: s.uploaded,
        downloaded: s.downloaded,
        left: if t.cfg.swarm {
            1
        } else {
            s.picker.wanted_left_bytes()
        },
        event,
        numwant: 200,
        key: u32::from_be_bytes(t.session.peer_id[16..20].try_into().unwrap()),
        external: match *t.session.external.lock().unwrap() {
            Some(SocketAddr::V4(a)) => Some(a),
            _ => None,
        },
    }
}

/// One tracker URL: announce `started`, then on the interval; `completed` when done.
async fn tracker_loop(
    t: Arc<TorrentShared>,
    url: String,
    mut done: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut event = Event::Started;
    let started = Instant::now();
    let mut failures = 0u32;
    let mut sent_completed = *done.borrow();
    loop {
        let a = announce_params(&t, event);
        let wait = match tracker_client::announce(&url, &a).await {
            Ok(r) => {
                failures = 0;
                let mut s = t.state.lock().unwrap();
                s.tracker_ok += 1;
                let ts = s.trackers.entry(url.clone()).or_default();
                ts.announces += 1;
                ts.ok = true;
                ts.peers = Some(r.peers.len() as u32);
                ts.seeders = r.seeders;
                ts.leechers = r.leechers;
                ts.message = r.warning.clone();
                for p in r.peers {
                    if !is_self(&t, p) {
                        s.add_known(p);
                    }
                }
                if let Some(w) = r.warning {
                    tracing::warn!("tracker {url}: {w}");
                }
                event = Event::None;
                // Ask again soon (the tracker's min interval, within 5-60 s) while we know few
                // peers and for the first minutes, when others are joining too; then follow the
                // tracker's interval.
                let early = started.elapsed() < Duration::from_secs(300);
                let iv = if s.peers.len() < 3 || early {
                    r.min_interval.unwrap_or(30).clamp(5, 60)
                } else {
                    r.interval.clamp(30, 1800)
                };
                let wait = Duration::from_secs(iv as u64);
                s.trackers.entry(url.clone()).or_default().next = Some(Instant::now() + wait);
                wait
            }
            Err(e) => {
                failures += 1;
                let backoff = Duration::from_secs((1u64 << failures.min(7)).min(120));
                {
                    let mut s = t.state.lock().unwrap();
                    s.tracker_errors += 1;
                    let ts = s.trackers.entry(url.clone()).or_default();
                    ts.failures += 1;
                    ts.ok = false;
                    ts.message = Some(e.to_string());
                    ts.next = Some(Instant::now() + backoff);
                }
                tracing::warn!("tracker {url}: {e} (retrying in {}s)", backoff.as_secs());
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = done.changed() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            let a = announce_params(&t, Event::Stopped);
            let _ =
                tokio::time::timeout(Duration::from_secs(2), tracker_client::announce(&url, &a))
                    .await;
            return;
        }
        if *done.borrow() && !sent_completed {
            sent_completed = true;
            event = Event::Completed;
        }
    }
}

/// Trackers list the announcing peer too; never dial ourselves.
pub(crate) fn is_self(t: &TorrentShared, a: SocketAddr) -> bool {
    let me = t.session.listen_addr;
    a.port() == me.port() && (a.ip() == me.ip() || me.ip().is_unspecified())
}

async fn connect_peer(t: Arc<TorrentShared>, addr: SocketAddr) {
    let mse = Some((t.session.encryption, t.info_hash));
    let res = transport::connect(addr, Duration::from_secs(10), mse, &t.session.dialer).await;
    t.state.lock().unwrap().connecting.remove(&addr);
    match res {
        Ok(stream) => peer::run(t, stream, addr, None).await,
        Err(e) => tracing::debug!("connect {addr}: {e}"),
    }
}

fn rechoke(t: &TorrentShared, rotate: bool, turn: u64) {
    let mut s = t.state.lock().unwrap();
    let seeding = s.picker.complete();
    let stats: Vec<PeerStat> = s
        .peers
        .iter()
        .map(|(k, p)| PeerStat {
            key: *k,
            interested: p.interested,
            download_rate: p.down_rate,
            upload_rate: p.up_rate,
        })
        .collect();
    let slots = t.cfg.upload_slots.max(1);
    if rotate || s.optimistic.is_none_or(|o| !s.peers.contains_key(&o)) {
        let base = choker::rechoke(&stats, slots, seeding, None);
        s.optimistic = choker::next_optimistic(&stats, &base, turn);
    }
    let unchoke: HashSet<u64> = choker::rechoke(&stats, slots, seeding, s.optimistic)
        .into_iter()
        .collect();
    for (k, p) in s.peers.iter_mut() {
        let want_choked = !unchoke.contains(k);
        if want_choked != p.choked_by_us {
            p.choked_by_us = want_choked;
            let _ = p.cmd.send(if want_choked {
                Cmd::Choke
            } else {
                Cmd::Unchoke
            });
        }
    }
}
