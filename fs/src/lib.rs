//! `ccbt-fs`: a share as a live directory through FUSE (`fuser`), and a torrent read-only.
//!
//! Modules by job:
//! - [`inode`]: the inode tree (pure; POSIX rules for names, links, renames, attributes);
//! - [`read`]: the read path (Merkle walks, fetches from peers, caches, read-ahead);
//! - [`overlay`]: the owner's edited files and the state file that survives a crash;
//! - [`publish`]: the owner's debounced publisher;
//! - [`follow`]: read-only mounts switching to newer heads;
//! - [`history`]: `.ccbt/history/<seq>/`, every version read-only;
//! - [`passthrough`]: FUSE passthrough to local copies on read-only mounts;
//! - [`ops`]: the `Filesystem` impl, a thin translation layer.
//!
//! # Lock order
//!
//! A mount has one state lock, [`Shared::state`] (the tree, open handles, unlinked-but-open
//! inodes). Locks are only ever taken in this order, and a thread holds at most one of each:
//!
//! 1. `publishing` (one publish at a time);
//! 2. `saver` (the last state-file generation written);
//! 3. `state`;
//! 4. leaf locks, which are never held while taking another lock: `dirty`, `published`, the
//!    read caches in [`read::Reader`], the passthrough maps, the file cache's queue.
//!
//! No lock is held across a fetch from a peer: reads copy what they need out of `state` and let
//! go before reading, and a file's first write materialises it from the CAS (fetching what is
//! missing) before taking `state` again. The one I/O done under `state` is the overlay `pwrite`
//! (and `ftruncate`) of a write, to local disk, so that writes and reads of a file stay ordered.

mod cachelimit;
mod filecache;
pub mod follow;
mod history;
pub mod inode;
mod multi;
mod ops;
pub mod overlay;
pub mod passthrough;
pub mod publish;
pub mod read;
pub mod stats;
pub mod torrent;
mod xattr;

use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{Head, ShareId};
use ccbt_xet::net::ShareNet;
use fuser::{Errno, FileType, INodeNo, ReplyDirectory};
use inode::{Content, InoMap, Inode, Tree};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub struct MountConfig {
    pub share: ShareId,
    /// Where the owner's overlay lives (`<data dir>/overlay/<share>`).
    pub overlay_dir: PathBuf,
    pub read_timeout: Duration,
    pub publish_debounce: Duration,
    /// Kernel read-ahead for the mount in KiB (0 leaves the kernel's 128 KiB default).
    pub read_ahead_kb: u32,
    /// Where local copies of large files live for passthrough reads (`<data dir>/fscache`), and
    /// how many bytes they may take (0: no copies, every read goes through the daemon).
    pub file_cache_dir: PathBuf,
    pub file_cache_bytes: u64,
    /// `.ccbt/history/<seq>/` resolves in the root (`[fs] history`).
    pub history: bool,
    /// ... and is listed by `readdir` of the root (`[fs] show_history`).
    pub show_history: bool,
    /// The mount shows this one version, read-only, and does not follow newer ones
    /// (`ccbt mount ID@SEQ`).
    pub frozen: bool,
    /// Chunk bytes the store may hold before unpinned chunks are evicted, least recently read
    /// first (`[fs] cache_limit_mib`; 0: no limit).
    pub cache_limit: u64,
}

/// An open file.
pub(crate) struct Handle {
    /// The kernel reads this open from a local copy (the daemon never sees its reads).
    pub passthrough: bool,
    /// What was opened: a read-only mount reads this version for as long as the file is open.
    /// (The owner's mount reads the inode's current content.)
    pub content: Content,
    pub size: u64,
    pub last_end: u64,
    /// Read-ahead has been requested up to here (so a sequential reader checks each chunk once).
    pub ahead: u64,
}

/// Everything behind the state lock.
pub(crate) struct State {
    pub tree: Tree,
    pub inos: InoMap,
    pub handles: HashMap<u64, Handle>,
    /// Open handles per inode.
    pub open: HashMap<u64, u32>,
    /// Inodes unlinked, or replaced by a rename, while open: kept until their last close, so
    /// fstat, read and write on them keep working.
    pub orphans: HashMap<u64, Inode>,
    /// The working tree changed since the state file was last written.
    pub unsaved: bool,
    /// Generation of the newest state encoded for the state file.
    pub save_gen: u64,
    /// The content root each inode was last opened with: reopening the same immutable content
    /// keeps the kernel's page cache (FOPEN_KEEP_CACHE), anything else drops it.
    pub opened_roots: HashMap<u64, XetHash>,
    /// Old versions under `.ccbt/history`.
    pub history: history::History,
    /// A share with writers: the merged view the tree shows.
    pub view: Option<multi::View>,
}

impl State {
    pub fn node(&self, ino: u64) -> Option<&Inode> {
        if history::is_history(ino) {
            return self.history.node(ino);
        }
        self.tree.nodes.get(&ino).or_else(|| self.orphans.get(&ino))
    }

    /// (History inodes are read-only: never returned here.)
    pub fn node_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        match self.tree.nodes.get_mut(&ino) {
            Some(n) => Some(n),
            None => self.orphans.get_mut(&ino),
        }
    }

    /// An inode left the tree: keep it while it is open, else drop its overlay file.
    pub fn unlinked(&mut self, ino: u64, n: Inode) {
        if self.open.get(&ino).is_some_and(|c| *c > 0) {
            self.orphans.insert(ino, n);
        } else if let Content::Overlay(o) = n.content {
            let _ = std::fs::remove_file(&o.path);
        }
    }
}

pub(crate) struct Shared {
    pub reader: read::Reader,
    pub cfg: MountConfig,
    /// The key this mount publishes with: the owner's, or (`writer`) an authorized writer's.
    pub key: Option<ed25519_dalek::SigningKey>,
    pub writer: bool,
    pub state: Mutex<State>,
    pub next_fh: AtomicU64,
    /// Owner: a publish is wanted (and when the last change happened).
    pub dirty: Mutex<Option<Instant>>,
    pub wake: Condvar,
    pub published: Mutex<u64>,
    pub published_cv: Condvar,
    pub publishing: Mutex<()>,
    /// The newest state-file generation written.
    pub saver: Mutex<u64>,
    /// Set when the mount goes away: background threads end.
    pub closed: AtomicBool,
    pub pt: passthrough::Passthrough,
}

impl Shared {
    pub fn owner(&self) -> bool {
        self.key.is_some()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The published view changed: publish after the debounce.
    pub fn changed(&self) {
        *self.dirty.lock().unwrap() = Some(Instant::now());
    }

    pub fn request_publish(&self) {
        if self.owner() && self.dirty.lock().unwrap().is_some() {
            self.wake.notify_all();
        }
    }

    /// Writes the state file if the tree changed since it was last written (`sync`: always, and
    /// durably). Encoded under the state lock, written outside it; a newer generation is never
    /// overwritten by an older one.
    pub fn save_state(&self, sync: bool) -> std::io::Result<()> {
        if !self.owner() {
            return Ok(());
        }
        let mut saver = self.saver.lock().unwrap();
        let (bytes, gen) = {
            let mut st = self.state();
            if !st.unsaved && !sync {
                return Ok(());
            }
            st.unsaved = false;
            st.save_gen += 1;
            (overlay::encode_state(&st.tree), st.save_gen)
        };
        if gen <= *saver {
            return Ok(());
        }
        match overlay::write_state(&self.cfg.overlay_dir, &bytes, sync) {
            Ok(()) => {
                *saver = gen;
                Ok(())
            }
            Err(e) => {
                self.state().unsaved = true;
                Err(e)
            }
        }
    }
}

/// `.ccbt/history`: the I/O half (heads and listings, read or fetched without the state lock).
impl Shared {
    /// The head of version `seq`: held here, or asked of the share's peers.
    fn version_head(&self, seq: u64) -> Result<Head, Errno> {
        let node = &self.reader.node;
        if let Ok(h) = node.shares.head(&self.cfg.share, Some(seq)) {
            return Ok(h);
        }
        let newest = node
            .newest_head(&self.cfg.share)
            .map_or(0, |h| h.seq)
            .max(self.state().tree.seq);
        if seq == 0 || seq > newest {
            return Err(Errno::ENOENT);
        }
        let (n, share, timeout) = (node.clone(), self.cfg.share, self.cfg.read_timeout);
        let got = self.reader.rt.block_on(async move {
            tokio::time::timeout(timeout, n.fetch_head(&share, seq)).await
        });
        match got {
            Ok(Some(h)) => Ok(h),
            _ => {
                tracing::warn!("version {seq} is neither held here nor served by a peer");
                Err(Errno::ENOENT)
            }
        }
    }

    /// Builds `.ccbt/history/<seq>` unless built (fetching its head and listing if need be).
    pub(crate) fn load_version(&self, seq: u64) -> Result<(), Errno> {
        if !self.cfg.history || seq > history::MAX_SEQ {
            return Err(Errno::ENOENT);
        }
        if self.state().history.loaded(seq) {
            return Ok(());
        }
        let head = self.version_head(seq)?;
        let entries = self.reader.load_listing(&head)?;
        self.state().history.load(seq, &entries, SystemTime::now());
        Ok(())
    }

    /// Before an operation on `ino`: its old version is built (the kernel may ask for an inode
    /// whose version was dropped to bound memory).
    pub(crate) fn ensure_history(&self, ino: u64) -> Result<(), Errno> {
        match history::version_of(ino) {
            Some(seq) => self.load_version(seq),
            None => Ok(()),
        }
    }

    /// The versions `.ccbt/history` lists: those held here (a store read) and the one shown.
    /// (Others still resolve by name when a peer serves them.)
    pub(crate) fn held_versions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .reader
            .node
            .shares
            .store
            .heads(&self.cfg.share)
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        v.push(self.state().tree.seq);
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The filesystem handed to fuser.
pub struct ShareFs(Arc<Shared>);

/// A mounted share; dropping it unmounts.
pub struct Mounted {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    /// Changes are published (the owner's mount, or an authorized writer's).
    pub fn writable(&self) -> bool {
        self.shared.owner()
    }

    /// The version the mount shows.
    pub fn seq(&self) -> u64 {
        self.shared.state().tree.seq
    }

    pub fn unmount(mut self) -> std::io::Result<()> {
        self.flush_publish();
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }

    /// Publishes pending changes now (owner mounts).
    pub fn flush_publish(&self) {
        if self.shared.owner() && self.shared.dirty.lock().unwrap().is_some() {
            if let Err(e) = publish::publish(&self.shared) {
                tracing::error!("cannot publish the mount's changes: {e}");
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        if let Err(e) = self.shared.save_state(true) {
            tracing::warn!("cannot save the mount's state: {e}");
        }
        if let Err(e) = self.shared.reader.node.shares.store.commit_cached() {
            tracing::warn!("cannot index the chunks read: {e}");
        }
    }
}

/// Mounts `head`'s version of the share at `dir`.
pub fn mount(
    node: Arc<ShareNet>,
    rt: tokio::runtime::Handle,
    head: Head,
    dir: &Path,
    cfg: MountConfig,
) -> std::io::Result<Mounted> {
    let mut key = if cfg.frozen {
        None
    } else {
        node.shares.signing_key(&cfg.share).ok().flatten()
    };
    // An authorized writer's mount is writable too (its versions are its own).
    let mut writer = false;
    if key.is_none() && !cfg.frozen {
        if let Ok(Some(w)) = node.shares.writer_key(false) {
            if head.value.writers.contains(&w.verifying_key().to_bytes()) {
                key = Some(w);
                writer = true;
            }
        }
    }
    let cache = filecache::FileCache::new(cfg.file_cache_dir.clone(), cfg.file_cache_bytes);
    let mut reader = read::Reader::new(node, rt, cfg.share, cfg.read_timeout);
    reader.limit = Arc::new(cachelimit::CacheLimit::new(cfg.cache_limit));
    let owner = key.is_some();
    let mut inos = InoMap::default();
    // An owner's overlay left by a crash wins over the last published version.
    let recovered = if owner {
        overlay::load_state(&cfg.overlay_dir)
    } else {
        None
    };
    let now = SystemTime::now();
    let had_state = recovered.is_some();
    let multi = !head.value.writers.is_empty() && !cfg.frozen;
    let tree = match recovered {
        Some(saved) => overlay::restore(&mut inos, head.seq, saved, now),
        None if multi => Tree::build(&mut inos, head.seq, &[], !owner, now),
        None => {
            let entries = reader.load_listing(&head).map_err(|e| {
                std::io::Error::other(format!("cannot load the share's listing ({e:?})"))
            })?;
            Tree::build(&mut inos, head.seq, &entries, !owner, now)
        }
    };
    // A writable tree restored from its state file goes on from the view it was built from.
    let view = if multi && had_state {
        multi::load_view(&cfg.overlay_dir, &reader)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        reader,
        cfg,
        key,
        writer,
        state: Mutex::new(State {
            tree,
            inos,
            handles: HashMap::new(),
            open: HashMap::new(),
            orphans: HashMap::new(),
            unsaved: false,
            save_gen: 0,
            opened_roots: HashMap::new(),
            history: history::History::new(now),
            view,
        }),
        next_fh: AtomicU64::new(1),
        dirty: Mutex::new(None),
        wake: Condvar::new(),
        published: Mutex::new(head.seq),
        published_cv: Condvar::new(),
        publishing: Mutex::new(()),
        saver: Mutex::new(0),
        closed: AtomicBool::new(false),
        pt: passthrough::Passthrough::new(cache),
    });
    if multi && !had_state {
        // The first view: merged before the kernel sees the mount.
        shared.refresh_view();
        if shared.state().view.is_none() {
            return Err(std::io::Error::other(
                "cannot merge the writers' versions of the share (are its peers up?)",
            ));
        }
    }
    if had_state {
        // Publishing an unchanged tree makes no version (see `publish`).
        tracing::info!("checking the overlay left by an earlier mount for changes to publish");
        *shared.dirty.lock().unwrap() = Some(Instant::now() - Duration::from_secs(3600));
    }
    let mut opts = vec![
        fuser::MountOption::FSName("ccbt".into()),
        fuser::MountOption::Subtype("ccbt".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    if !owner {
        opts.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = opts;
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(ShareFs(shared.clone()), dir, &config)?;
    set_read_ahead(dir, shared.cfg.read_ahead_kb);
    if shared.pt.cache.enabled() && !owner {
        let s = shared.clone();
        std::thread::spawn(move || s.pt.cache.run(&s.reader.node.shares.store, &s.closed));
    }
    let s = shared.clone();
    if owner {
        std::thread::spawn(move || publish::publisher(s));
        shared.wake.notify_all();
    }
    if !shared.cfg.frozen {
        // Read-only mounts follow newer versions; writable ones the other writers' (if any).
        let s = shared.clone();
        std::thread::spawn(move || follow::follower(s));
    }
    Ok(Mounted {
        shared,
        session: Some(session),
    })
}

/// Raises the kernel's read-ahead for the mount at `dir`: FUSE mounts start at 128 KiB, which
/// caps a sequential reader at one small request per round trip. Needs root (sysfs); without it
/// the default stays and a debug line says so.
pub fn set_read_ahead(dir: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    if kb == 0 {
        return;
    }
    let res = std::fs::metadata(dir).and_then(|m| {
        let dev = m.dev();
        let path = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        std::fs::write(path, kb.to_string())
    });
    if let Err(e) = res {
        tracing::debug!("cannot set the mount's read-ahead to {kb} KiB: {e}");
    }
}

/// Replies to a readdir from `offset` with `items` (ino, type, name), "." and ".." included.
pub(crate) fn fill_dir(
    mut reply: ReplyDirectory,
    offset: u64,
    items: Vec<(u64, FileType, String)>,
) {
    for (i, (ino, kind, name)) in items.into_iter().enumerate().skip(offset as usize) {
        if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
            break;
        }
    }
    reply.ok();
}

/// Waits (bounded) until the mount's owner has published version `seq` or later.
pub fn wait_published(m: &Mounted, seq: u64, timeout: Duration) -> bool {
    let g = m.shared.published.lock().unwrap();
    let (g, _) = m
        .shared
        .published_cv
        .wait_timeout_while(g, timeout, |p| *p < seq)
        .unwrap();
    *g >= seq
}
