//! The daemon's engine: one long-running session holding torrents (files and magnets) and
//! shares (followed, synced or mounted), each persisted as a record in the data dir's RocksDB so
//! that a restart, also after `kill -9`, brings all of it back; Prometheus metrics
//! ([`metrics`]) and alert rules ([`alerts`]) on it. The binary's `ccbt daemon` serves it over
//! HTTP; its handlers and the foreground commands call the typed methods here.
//!
//! State: `Daemon::live` (one mutex, never held across an await) maps item ids to what runs for
//! them. Records in the store are written before the API answers, so an acknowledged change
//! survives a crash.

pub mod alerts;
mod details;
pub mod metrics;
mod sync;

use crate::bail;
use crate::env::Env;
use crate::error::{Context, Result};
use crate::node::Node;
use ccbt_core::encoding::to_hex;
use ccbt_core::session::metadata_fetch::{fetch_metadata, FetchConfig};
use ccbt_core::session::{TorrentConfig, TorrentHandle};
use ccbt_core::Metainfo;
use ccbt_xet::head::{parse_share_id, share_id_hex, ShareId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Torrent,
    Share,
}

/// One thing the daemon holds, as persisted (`item/<id>`; a torrent's metainfo is in
/// `torrent/<id>` once known).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub kind: Kind,
    /// What was added: a path, a magnet link or a share id.
    pub source: String,
    pub name: String,
    pub out_dir: Option<PathBuf>,
    pub mount: Option<PathBuf>,
    pub paused: bool,
    /// KiB/s, 0 = unlimited.
    pub down_kib: u64,
    pub up_kib: u64,
    /// Peers to dial besides trackers and the DHT.
    #[serde(default)]
    pub extra_peers: Vec<SocketAddr>,
    pub added: u64,
}

/// What runs for an item.
struct Live {
    item: Item,
    handle: Option<Arc<TorrentHandle>>,
    mounted: Option<ccbt_fs::Mounted>,
    /// A torrent mounted read-only (`add --mount`), streaming pieces on demand.
    tmount: Option<ccbt_fs::torrent::TorrentMounted>,
    /// "fetching metadata", "downloading", "seeding", "paused", "following", "synced",
    /// "mounted", "error".
    state: String,
    error: Option<String>,
    /// The task resolving a magnet or waiting for a share's head (aborted on pause/remove).
    task: Option<tokio::task::JoinHandle<()>>,
    /// Pieces (have, total) when last running, shown while paused.
    last: (u64, u64),
}

impl Live {
    /// An item not running yet (started by `start_item`).
    fn new(item: Item, last: (u64, u64)) -> Live {
        Live {
            item,
            handle: None,
            mounted: None,
            tmount: None,
            state: "paused".into(),
            error: None,
            task: None,
            last,
        }
    }
}

/// An item as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemView {
    #[serde(flatten)]
    pub item: Item,
    pub state: String,
    pub error: Option<String>,
    pub progress: f64,
    pub pieces_have: u64,
    pub pieces_total: u64,
    pub size: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    /// A share's version on this node.
    pub version: Option<u64>,
}

/// Settings taken from the configuration at start (the daemon outlives the `Env` borrow).
struct Settings {
    base: TorrentConfig,
    data_dir: PathBuf,
    fetch: FetchConfig,
    fs: crate::config::Fs,
    /// `[xet] sync_spare_mib`, in bytes: spare copies for shares synced into a directory.
    sync_spare: u64,
}

pub struct Daemon {
    pub node: Arc<Node>,
    settings: Settings,
    live: Mutex<BTreeMap<String, Live>>,
    /// Session-wide limits, KiB/s.
    limits: Mutex<(u64, u64)>,
    pub stop: watch::Sender<bool>,
    pub metrics: metrics::Metrics,
    /// The config file watched for changes, and the values running now.
    pub config_path: PathBuf,
    pub config: Mutex<crate::config::Config>,
    pub alerts: alerts::Alerts,
    /// Peer connections per torrent (`[network] max_peers_per_torrent`, reloadable).
    max_peers: std::sync::atomic::AtomicUsize,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The swarm id of a torrent: v1 info-hash, or the v2 one truncated.
fn torrent_id(m: &Metainfo) -> String {
    to_hex(
        &m.v1_hash
            .or_else(|| m.v2_hash.map(|h| h[..20].try_into().unwrap()))
            .expect("a torrent has an info-hash"),
    )
}

/// What `POST /api/items` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// A magnet link, a share id (40 hex or `magnet:?xs=urn:btpk:`), or a path the daemon can read.
    #[serde(default)]
    pub source: Option<String>,
    /// A .torrent file's bytes, hex (for clients on another view of the filesystem).
    #[serde(default)]
    pub torrent_hex: Option<String>,
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    #[serde(default)]
    pub mount: Option<PathBuf>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
}

impl Daemon {
    /// The daemon on a started node: settings from `env`, limits from the configuration, alert
    /// rules from the store. Items come back with [`Daemon::restore`].
    pub fn new(env: &Env, node: Arc<Node>, listen: SocketAddr) -> Result<Arc<Daemon>> {
        let mut base = crate::torrent::base_cfg(env)?;
        // Limits are the daemon's to set, session-wide; per item they start unlimited.
        base.down_limit = 0;
        base.up_limit = 0;
        let fetch = FetchConfig {
            v1: None,
            v2: None,
            peers: Vec::new(),
            trackers: Vec::new(),
            peer_id: ccbt_core::session::new_peer_id(),
            listen_port: listen.port(),
            timeout: Duration::from_secs(120),
            discovery: None,
            encryption: env.config.encryption()?,
            enable_tcp: env.config.network.enable_tcp,
            enable_utp: env.config.network.enable_utp,
            prefer_utp: env.config.network.prefer_utp,
        };
        let (stop, _) = watch::channel(false);
        let d = Arc::new(Daemon {
            node: node.clone(),
            settings: Settings {
                base,
                data_dir: env.data_dir.clone(),
                fetch,
                fs: env.config.fs.clone(),
                sync_spare: env.config.xet.sync_spare_mib << 20,
            },
            live: Mutex::new(BTreeMap::new()),
            limits: Mutex::new((
                env.config.limits.global_down_kib,
                env.config.limits.global_up_kib,
            )),
            stop,
            metrics: metrics::Metrics::new(),
            alerts: alerts::Alerts::load(&node.shares.store),
            config_path: crate::config::Config::file_path(env.config_file.as_deref()),
            config: Mutex::new(env.config.clone()),
            max_peers: std::sync::atomic::AtomicUsize::new(
                env.config.network.max_peers_per_torrent.max(1) as usize,
            ),
        });
        // Session-wide limits from the configuration, as a reload would set them.
        let (down, up) = d.limits();
        d.node.session.set_global_limits(down * 1024, up * 1024);
        Ok(d)
    }

    fn store(&self) -> &ccbt_cas::Store {
        &self.node.shares.store
    }

    fn save(&self, item: &Item) -> Result<()> {
        let key = format!("item/{}", item.id);
        self.store()
            .put_daemon(key.as_bytes(), &serde_json::to_vec(item)?)
            .context("cannot write the daemon's record")
    }

    fn save_torrent(&self, id: &str, bytes: &[u8]) -> Result<()> {
        self.store()
            .put_daemon(format!("torrent/{id}").as_bytes(), bytes)
            .context("cannot write the daemon's record")
    }

    fn load_torrent(&self, id: &str) -> Option<Metainfo> {
        let recs = self
            .store()
            .daemon_records(format!("torrent/{id}").as_bytes())
            .ok()?;
        let (_, b) = recs.into_iter().next()?;
        Metainfo::from_bytes(&b).ok()
    }

    /// Adds what `req` names; answers with its id.
    pub fn add(self: &Arc<Self>, req: AddRequest) -> Result<String> {
        let abs = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
            match p {
                Some(p) if !p.is_absolute() => {
                    bail!("{} is not an absolute path", p.display())
                }
                p => Ok(p.clone()),
            }
        };
        let out_dir = abs(&req.out_dir)?;
        let mount = abs(&req.mount)?;
        let (kind, id, source, name, torrent) = if let Some(h) = &req.torrent_hex {
            let bytes = ccbt_core::encoding::from_hex(h).context("torrent_hex is not hex")?;
            let m = Metainfo::from_bytes(&bytes).context("not a valid .torrent")?;
            (
                Kind::Torrent,
                torrent_id(&m),
                "torrent".into(),
                m.name.clone(),
                Some(bytes),
            )
        } else {
            let Some(src) = req.source.clone() else {
                bail!("give a source (magnet, share id or path) or torrent_hex");
            };
            if src.starts_with("magnet:") {
                let m = ccbt_core::Magnet::parse(&src).context("not a valid magnet link")?;
                match (m.v1, m.v2) {
                    (Some(h), _) => (
                        Kind::Torrent,
                        to_hex(&h),
                        src.clone(),
                        m.name.clone().unwrap_or_default(),
                        None,
                    ),
                    (None, Some(h)) => (
                        Kind::Torrent,
                        to_hex(&h[..20]),
                        src.clone(),
                        m.name.clone().unwrap_or_default(),
                        None,
                    ),
                    (None, None) => {
                        let id = parse_share_id(&src)
                            .context("this magnet names neither a torrent nor a share")?;
                        (
                            Kind::Share,
                            share_id_hex(&id),
                            src.clone(),
                            String::new(),
                            None,
                        )
                    }
                }
            } else if let Some((id, frozen)) = item_share(&src) {
                if frozen.is_some() && mount.is_none() {
                    bail!("an old version (ID@SEQ) is only mounted, read-only: give --mount DIR (`ccbt export ID@SEQ DIR` writes it into a directory)");
                }
                (
                    Kind::Share,
                    match frozen {
                        Some(seq) => format!("{}@{seq}", share_id_hex(&id)),
                        None => share_id_hex(&id),
                    },
                    src.clone(),
                    String::new(),
                    None,
                )
            } else if Path::new(&src).is_file() {
                let bytes = std::fs::read(&src).with_context(|| format!("cannot read {src}"))?;
                let m = Metainfo::from_bytes(&bytes).with_context(|| src.clone())?;
                (
                    Kind::Torrent,
                    torrent_id(&m),
                    src.clone(),
                    m.name.clone(),
                    Some(bytes),
                )
            } else {
                bail!("{src:?} is neither a magnet, a share id nor a .torrent file the daemon can read");
            }
        };
        if kind == Kind::Torrent && out_dir.is_none() && mount.is_none() {
            bail!("say where to download it: give an output directory (-o DIR) or a mount point (--mount DIR)");
        }
        if kind == Kind::Torrent && mount.is_some() && out_dir.is_some() {
            bail!("a mounted torrent keeps its data in the data dir: give --mount DIR without -o");
        }
        // A mounted torrent's data lives in the data dir, as with `ccbt mount` alone.
        let out_dir = match (&kind, &mount) {
            (Kind::Torrent, Some(_)) => Some(self.settings.data_dir.join("torrents").join(&id)),
            _ => out_dir,
        };
        if kind == Kind::Share && mount.is_some() && out_dir.is_some() {
            bail!("a share is either synced into a directory (-o DIR) or mounted (--mount DIR), not both");
        }
        if self.live.lock().unwrap().contains_key(&id) {
            return Err(crate::Error::Conflict(format!("{id} is already added")));
        }
        let (down, up) = (
            self.settings.base.down_limit / 1024,
            self.settings.base.up_limit / 1024,
        );
        let item = Item {
            id: id.clone(),
            kind,
            source,
            name,
            out_dir,
            mount,
            paused: req.paused,
            down_kib: down,
            up_kib: up,
            extra_peers: req.peers.clone(),
            added: now_secs(),
        };
        if let Some(b) = &torrent {
            self.save_torrent(&id, b)?;
        }
        self.save(&item)?;
        self.live
            .lock()
            .unwrap()
            .insert(id.clone(), Live::new(item.clone(), (0, 0)));
        if !item.paused {
            self.start_item(&id);
        }
        tracing::info!(
            "added {} {id}",
            if kind == Kind::Torrent {
                "torrent"
            } else {
                "share"
            }
        );
        Ok(id)
    }

    /// Starts what an item needs (it is in `live`, not paused).
    fn start_item(self: &Arc<Self>, id: &str) {
        let Some(item) = self.live.lock().unwrap().get(id).map(|l| l.item.clone()) else {
            return;
        };
        match item.kind {
            Kind::Torrent => match self.load_torrent(id) {
                Some(m) => self.start_torrent(&item, m),
                None => {
                    let d = self.clone();
                    let id2 = id.to_string();
                    let task = tokio::spawn(async move { d.resolve_magnet(id2).await });
                    self.set_state(id, "fetching metadata", None, Some(task));
                }
            },
            Kind::Share => {
                let Some((share, _)) = item_share(&item.id) else {
                    return;
                };
                if let Err(e) = self.node.join_with(share, &item.extra_peers) {
                    self.set_state(id, "error", Some(format!("{e:#}")), None);
                    return;
                }
                let d = self.clone();
                let id2 = id.to_string();
                let task = tokio::spawn(async move { d.follow_share(id2, share).await });
                self.set_state(id, "following", None, Some(task));
            }
        }
    }

    fn set_state(
        &self,
        id: &str,
        state: &str,
        error: Option<String>,
        task: Option<tokio::task::JoinHandle<()>>,
    ) {
        if let Some(l) = self.live.lock().unwrap().get_mut(id) {
            l.state = state.into();
            l.error = error;
            if task.is_some() {
                l.task = task;
            }
        }
    }

    fn start_torrent(self: &Arc<Self>, item: &Item, meta: Metainfo) {
        let mut cfg = self.settings.base.clone();
        cfg.out_dir = item.out_dir.clone().unwrap_or_default();
        cfg.seed = true;
        cfg.resume = true;
        cfg.peers = item.extra_peers.clone();
        cfg.down_limit = item.down_kib * 1024;
        cfg.up_limit = item.up_kib * 1024;
        cfg.max_peers = self.max_peers.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = std::fs::create_dir_all(&cfg.out_dir) {
            self.set_state(
                &item.id,
                "error",
                Some(format!("cannot create {}: {e}", cfg.out_dir.display())),
                None,
            );
            return;
        }
        // Streaming priority for a mount: players read a file's head and tail first.
        let edges = if item.mount.is_some() {
            crate::torrent::edge_pieces(&meta)
        } else {
            Vec::new()
        };
        match self.node.session.add_torrent(meta, cfg) {
            Ok(h) => {
                let h = Arc::new(h);
                for p in edges {
                    h.set_piece_priority(p, 2);
                }
                if let Some(l) = self.live.lock().unwrap().get_mut(&item.id) {
                    l.handle = Some(h.clone());
                    l.state = "downloading".into();
                    l.error = None;
                }
                if let Some(dir) = item.mount.clone() {
                    let d = self.clone();
                    let id = item.id.clone();
                    tokio::spawn(async move { d.mount_torrent(id, h, dir).await });
                }
            }
            Err(e) => self.set_state(&item.id, "error", Some(e.to_string()), None),
        }
    }

    /// A mount that failed: the item shows why.
    fn mount_failed(&self, id: &str, dir: &Path, e: impl std::fmt::Display) {
        let e = format!("cannot mount on {}: {e}", dir.display());
        self.set_state(id, "error", Some(e), None);
    }

    /// Mounts a running torrent read-only on `dir` (its pieces stream on demand).
    async fn mount_torrent(self: Arc<Self>, id: String, h: Arc<TorrentHandle>, dir: PathBuf) {
        clear_stale_mount(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let (timeout, ra) = (
            Duration::from_secs(self.settings.fs.read_timeout_secs.max(1)),
            self.settings.fs.read_ahead_kb,
        );
        let d2 = dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            ccbt_fs::torrent::mount_torrent(h, &d2, timeout, ra)
        })
        .await;
        match r {
            Ok(Ok(m)) => {
                tracing::info!("torrent {id} mounted on {}", dir.display());
                match self.live.lock().unwrap().get_mut(&id) {
                    Some(l) if l.handle.is_some() => l.tmount = Some(m),
                    // Paused or removed meanwhile: the mount goes too.
                    _ => drop(m),
                }
            }
            Ok(Err(e)) => self.mount_failed(&id, &dir, e),
            Err(e) => self.mount_failed(&id, &dir, e),
        }
    }

    /// A magnet's metadata from its peers, trackers and the DHT; then the download starts.
    async fn resolve_magnet(self: Arc<Self>, id: String) {
        let Some(item) = self.live.lock().unwrap().get(&id).map(|l| l.item.clone()) else {
            return;
        };
        let m = match ccbt_core::Magnet::parse(&item.source) {
            Ok(m) => m,
            Err(e) => return self.set_state(&id, "error", Some(e.to_string()), None),
        };
        let mut cfg = self.settings.fetch.clone();
        cfg.v1 = m.v1;
        cfg.v2 = m.v2;
        cfg.peers = m
            .peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .chain(item.extra_peers.iter().copied())
            .collect();
        cfg.trackers = m.trackers.clone();
        cfg.discovery = self.node.session.discovery();
        cfg.listen_port = self.node.session.listen_addr().port();
        // Keep looking until found (a magnet may wait for its first peer for a long time).
        let got = loop {
            match fetch_metadata(cfg.clone()).await {
                Ok(g) => break g,
                Err(e) => {
                    self.set_state(&id, "fetching metadata", Some(e.to_string()), None);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        let mut meta = match Metainfo::from_info_bytes(&got.info) {
            Ok(m) => m,
            Err(e) => {
                return self.set_state(
                    &id,
                    "error",
                    Some(format!("the peers' metadata is not a valid torrent: {e}")),
                    None,
                )
            }
        };
        meta.trackers = m.trackers.iter().map(|t| vec![t.clone()]).collect();
        meta.piece_layers = got.piece_layers;
        if let Err(e) = self.save_torrent(&id, &meta.to_torrent_bytes()) {
            return self.set_state(&id, "error", Some(format!("{e:#}")), None);
        }
        let item = {
            let mut g = self.live.lock().unwrap();
            let Some(l) = g.get_mut(&id) else { return };
            l.item.name = meta.name.clone();
            l.item.clone()
        };
        let _ = self.save(&item);
        tracing::info!(
            "got the metadata of {id}: {}",
            ccbt_core::encoding::printable(&meta.name)
        );
        self.start_torrent(&item, meta);
    }

    /// A share: wait for its newest head, then mount it if asked.
    async fn follow_share(self: Arc<Self>, id: String, share: ShareId) {
        let Some(item) = self.live.lock().unwrap().get(&id).map(|l| l.item.clone()) else {
            return;
        };
        let mut rx = self.node.xet.subscribe();
        let head = loop {
            if let Some(h) = self
                .node
                .xet
                .newest_head(&share)
                .or_else(|| self.node.shares.head(&share, None).ok())
            {
                // Let the other peers speak before settling on a version.
                tokio::time::sleep(Duration::from_millis(300)).await;
                break self.node.xet.newest_head(&share).unwrap_or(h);
            }
            tokio::select! {
                _ = rx.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        };
        if let Some(out) = item.out_dir.clone() {
            return self.sync_share(&id, share, &out).await;
        }
        let Some(dir) = item.mount.clone() else {
            return self.set_state(&id, "following", None, None);
        };
        // `<share>@<seq>`: that one version, read-only (held here or asked of the peers).
        let frozen = item_share(&id).and_then(|x| x.1);
        let head = match frozen {
            Some(seq) => {
                let t = Duration::from_secs(60);
                match crate::mount::old_head_async(&self.node, &head, seq, t).await {
                    Ok(h) => h,
                    Err(e) => return self.set_state(&id, "error", Some(e.to_string()), None),
                }
            }
            None => head,
        };
        clear_stale_mount(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let fs = &self.settings.fs;
        let cfg = crate::mount::mount_config(fs, &self.settings.data_dir, share, frozen.is_some());
        let xet = self.node.xet.clone();
        let rt = tokio::runtime::Handle::current();
        let d2 = dir.clone();
        let r = tokio::task::spawn_blocking(move || ccbt_fs::mount(xet, rt, head, &d2, cfg)).await;
        match r {
            Ok(Ok(m)) => {
                tracing::info!("share {id} mounted on {}", dir.display());
                if let Some(l) = self.live.lock().unwrap().get_mut(&id) {
                    l.mounted = Some(m);
                    l.state = "mounted".into();
                    l.error = None;
                }
            }
            Ok(Err(e)) => self.mount_failed(&id, &dir, e),
            Err(e) => self.mount_failed(&id, &dir, e),
        }
    }

    /// Stops what runs for an item and waits for it (bounded); returns the torrent's files.
    async fn halt(&self, id: &str) -> Vec<PathBuf> {
        let (handle, mounted, tmount, task) = {
            let mut g = self.live.lock().unwrap();
            let Some(l) = g.get_mut(id) else {
                return Vec::new();
            };
            (
                l.handle.take(),
                l.mounted.take(),
                l.tmount.take(),
                l.task.take(),
            )
        };
        if let Some(t) = task {
            t.abort();
        }
        // A torrent's mount goes before its torrent: reads waiting for pieces end.
        if let Some(m) = tmount {
            let _ = tokio::task::spawn_blocking(move || m.umount_and_join()).await;
        }
        let mut files = Vec::new();
        if let Some(h) = handle {
            let s = h.stats();
            if let Some(l) = self.live.lock().unwrap().get_mut(id) {
                l.last = (s.pieces_have, s.pieces_total);
            }
            files = h.paths();
            h.stop();
            let _ = tokio::time::timeout(Duration::from_secs(15), h.finished()).await;
        }
        if let Some(m) = mounted {
            let _ = tokio::task::spawn_blocking(move || {
                m.flush_publish();
                m.unmount()
            })
            .await;
        }
        files
    }

    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<()> {
        let item = self.update(id, |i| i.paused = true)?;
        self.halt(id).await;
        self.set_state(id, "paused", None, None);
        tracing::info!("paused {}", item.id);
        Ok(())
    }

    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<()> {
        self.update(id, |i| i.paused = false)?;
        let running = self
            .live
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|l| l.handle.is_some() || l.mounted.is_some() || l.task.is_some());
        if !running {
            self.start_item(id);
        }
        Ok(())
    }

    pub async fn remove(self: &Arc<Self>, id: &str, delete_data: bool) -> Result<()> {
        if !self.live.lock().unwrap().contains_key(id) {
            return Err(crate::Error::NotFound(format!(
                "nothing with id {id} here (`ccbt list` shows what is)"
            )));
        }
        let files = self.halt(id).await;
        let item = self.live.lock().unwrap().remove(id).map(|l| l.item);
        self.store()
            .delete_daemon(format!("item/{id}").as_bytes())?;
        self.store()
            .delete_daemon(format!("torrent/{id}").as_bytes())?;
        if delete_data {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            let _ = ccbt_core::resume::Checkpoint::delete(&self.settings.data_dir, id);
            // Empty directories the torrent made are removed too (never anything else).
            if let Some(out) = item.as_ref().and_then(|i| i.out_dir.clone()) {
                for f in &files {
                    let mut d = f.parent();
                    while let Some(p) = d {
                        if p == out || !p.starts_with(&out) || std::fs::remove_dir(p).is_err() {
                            break;
                        }
                        d = p.parent();
                    }
                }
            }
        }
        tracing::info!(
            "removed {id}{}",
            if delete_data { " and its data" } else { "" }
        );
        Ok(())
    }

    /// Changes an item's record (persisted first) and returns it.
    fn update(&self, id: &str, f: impl FnOnce(&mut Item)) -> Result<Item> {
        let item = {
            let mut g = self.live.lock().unwrap();
            let Some(l) = g.get_mut(id) else {
                return Err(crate::Error::NotFound(format!(
                    "nothing with id {id} here (`ccbt list` shows what is)"
                )));
            };
            f(&mut l.item);
            l.item.clone()
        };
        self.save(&item)?;
        Ok(item)
    }

    /// Session-wide limits (`id` None) or one item's, in KiB/s.
    pub fn set_limits(
        &self,
        id: Option<&str>,
        down: Option<u64>,
        up: Option<u64>,
    ) -> Result<(u64, u64)> {
        match id {
            None => {
                let mut l = self.limits.lock().unwrap();
                l.0 = down.unwrap_or(l.0);
                l.1 = up.unwrap_or(l.1);
                self.node.session.set_global_limits(l.0 * 1024, l.1 * 1024);
                Ok(*l)
            }
            Some(id) => {
                let item = self.update(id, |i| {
                    i.down_kib = down.unwrap_or(i.down_kib);
                    i.up_kib = up.unwrap_or(i.up_kib);
                })?;
                if let Some(h) = self
                    .live
                    .lock()
                    .unwrap()
                    .get(id)
                    .and_then(|l| l.handle.as_ref())
                {
                    h.set_limits(item.down_kib * 1024, item.up_kib * 1024);
                }
                Ok((item.down_kib, item.up_kib))
            }
        }
    }

    /// Peer limit for every torrent, running and to come.
    pub fn set_max_peers(&self, n: usize) {
        self.max_peers
            .store(n, std::sync::atomic::Ordering::Relaxed);
        for l in self.live.lock().unwrap().values() {
            if let Some(h) = &l.handle {
                h.set_max_peers(n);
            }
        }
    }

    pub fn limits(&self) -> (u64, u64) {
        *self.limits.lock().unwrap()
    }

    pub fn list(&self) -> Vec<ItemView> {
        let g = self.live.lock().unwrap();
        g.values().map(|l| self.view(l)).collect()
    }

    pub fn get(&self, id: &str) -> Option<ItemView> {
        self.live.lock().unwrap().get(id).map(|l| self.view(l))
    }

    fn view(&self, l: &Live) -> ItemView {
        let mut v = ItemView {
            item: l.item.clone(),
            state: l.state.clone(),
            error: l.error.clone(),
            progress: 0.0,
            pieces_have: 0,
            pieces_total: 0,
            size: 0,
            downloaded: 0,
            uploaded: 0,
            download_rate: 0.0,
            upload_rate: 0.0,
            peers: 0,
            version: None,
        };
        if l.handle.is_none() && l.last.1 > 0 {
            (v.pieces_have, v.pieces_total) = l.last;
            v.progress = l.last.0 as f64 / l.last.1 as f64;
        }
        if let Some(h) = &l.handle {
            let s = h.stats();
            v.name_from(&s.name);
            v.pieces_have = s.pieces_have;
            v.pieces_total = s.pieces_total;
            v.size = h.meta().total_length();
            v.progress = if s.pieces_total > 0 {
                s.pieces_have as f64 / s.pieces_total as f64
            } else {
                1.0
            };
            v.downloaded = s.downloaded;
            v.uploaded = s.uploaded;
            v.download_rate = s.download_rate;
            v.upload_rate = s.upload_rate;
            v.peers = s.peers;
            if let Some(e) = s.error {
                v.state = "error".into();
                v.error = Some(e);
            } else {
                v.state = if s.complete { "seeding" } else { "downloading" }.into();
            }
        }
        if l.item.kind == Kind::Share {
            if let Some((id, _)) = item_share(&l.item.id) {
                v.version = self.node.xet.newest_head(&id).map(|h| h.seq);
                v.peers = self.node.xet.peer_count(&id);
                v.progress = if v.version.is_some() { 1.0 } else { 0.0 };
            }
        }
        v
    }

    /// Brings back every persisted item (paused ones stay paused).
    pub fn restore(self: &Arc<Self>) -> Result<usize> {
        let recs = self.store().daemon_records(b"item/")?;
        let mut n = 0;
        for (k, v) in recs {
            let item: Item = match serde_json::from_slice(&v) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(
                        "skipping a damaged daemon record {}: {e}",
                        String::from_utf8_lossy(&k)
                    );
                    continue;
                }
            };
            let id = item.id.clone();
            let paused = item.paused;
            let last = ccbt_core::resume::Checkpoint::load(&self.settings.data_dir, &id)
                .ok()
                .flatten()
                .map_or((0, 0), |c| (c.pieces_have, c.pieces_total));
            self.live
                .lock()
                .unwrap()
                .insert(id.clone(), Live::new(item, last));
            if !paused {
                self.start_item(&id);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Stops everything (checkpoints written, mounts published and unmounted), one item after
    /// another (each bounded in `halt`).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self.live.lock().unwrap().keys().cloned().collect();
        for id in ids {
            self.halt(&id).await;
        }
    }
}

/// The share an item id names, and the old version it is frozen at (`<share>@<seq>`: one
/// version mounted read-only).
pub fn item_share(id: &str) -> Option<(ShareId, Option<u64>)> {
    match id.rsplit_once('@') {
        Some((s, seq)) => Some((parse_share_id(s)?, Some(seq.parse().ok()?))),
        None => Some((parse_share_id(id)?, None)),
    }
}

/// A mount left by a killed daemon answers ENOTCONN: cleared before mounting again.
fn clear_stale_mount(dir: &Path) {
    if let Err(e) = std::fs::metadata(dir) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
    }
}

impl ItemView {
    fn name_from(&mut self, n: &str) {
        if self.item.name.is_empty() {
            self.item.name = n.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_name_a_share_or_one_version_of_it() {
        let hex = "cd".repeat(20);
        let (id, frozen) = item_share(&hex).unwrap();
        assert_eq!(share_id_hex(&id), hex);
        assert_eq!(frozen, None);
        assert_eq!(item_share(&format!("{hex}@12")).unwrap().1, Some(12));
        assert!(item_share(&format!("{hex}@x")).is_none());
        assert!(item_share("torrent-ish").is_none());
    }
}
