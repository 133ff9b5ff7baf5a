//! `ccbt-fs`: a share as a live directory through FUSE (`fuser`).
//!
//! Metadata comes from an in-memory tree built from the version's listing (inode numbers are stable
//! by path across versions). Reads walk the file's Merkle tree only along the path that covers the
//! requested range; missing nodes and chunks are fetched from peers, verified, and cached in the
//! CAS, with read-ahead for sequential readers. A new head swaps the tree atomically; an open handle
//! keeps the content it opened.
//!
//! On the node that holds the share's key the mount is writable: changed files live in a
//! copy-on-write overlay under the data dir; on close/fsync a debounced publisher re-chunks dirty
//! files, signs the next version and pushes it to peers. The overlay state is written on every
//! change, so dirty data left by a crash is published on the next mount.

mod filecache;
pub mod torrent;

use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{Head, HeadValue, ShareId};
use ccbt_xet::listing::{self, Entry, Kind as EKind};
use ccbt_xet::net::{Kind, XetNode};
use ccbt_xet::tree;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// Stands for "size not known" (a listing root): large enough to cover any tree.
const UNKNOWN_SIZE: u64 = u64::MAX / 4;
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD: usize = 8;

#[derive(Debug, Clone)]
enum Content {
    /// A file in the CAS: its Merkle root.
    Cas(XetHash),
    /// A file in the overlay (owner mounts); `root` is its last published root, if clean; `gen`
    /// changes with every write, so a publish keeps a root only for files untouched meanwhile.
    Overlay {
        path: PathBuf,
        root: Option<XetHash>,
        gen: u64,
    },
}

#[derive(Debug, Clone)]
struct Node {
    path: String,
    kind: EKind,
    size: u64,
    content: Content,
    exec: bool,
    mtime: i64,
    target: Option<String>,
    children: BTreeMap<String, u64>,
}

/// The working tree: listing entries by inode.
#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
    seq: u64,
}

/// Open files of one inode on a mount that passes through. The kernel refuses to mix page-cached
/// opens of an inode with passthrough ones, and all passthrough opens of an inode must name one
/// backing file (on a read-only mount an inode's content never changes, so one copy serves all).
#[derive(Default)]
struct InodeIo {
    cached: u32,
    /// The backing file and how many opens use it.
    passthrough: Option<(Arc<fuser::BackingId>, u32)>,
}

struct Handle {
    /// The kernel reads this open from a local copy (the daemon never sees its reads).
    passthrough: bool,
    content: Content,
    size: u64,
    last_end: u64,
    /// Read-ahead has been requested up to here (so a sequential reader checks each chunk once).
    ahead: u64,
}

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
}

struct Shared {
    node: Arc<XetNode>,
    rt: tokio::runtime::Handle,
    cfg: MountConfig,
    key: Option<ed25519_dalek::SigningKey>,
    tree: Mutex<Tree>,
    inos: Mutex<(HashMap<String, u64>, u64)>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Owner: a publish is wanted (and when the last change happened).
    dirty: Mutex<Option<Instant>>,
    wake: Condvar,
    published: Mutex<u64>,
    published_cv: Condvar,
    /// Set when the mount goes away: background threads end.
    closed: AtomicBool,
    /// Parsed (and verified) Merkle nodes: a read walks a few levels, and random readers walk the
    /// same upper levels again and again.
    node_cache: Mutex<HashMap<XetHash, Arc<Vec<ccbt_xet::hash::Node>>>>,
    /// The most recently read chunks (verified), for readers that hit the same chunk many times.
    chunk_cache: Mutex<std::collections::VecDeque<(XetHash, Arc<Vec<u8>>)>>,
    /// The content root each inode was last opened with: reopening the same immutable content
    /// keeps the kernel's page cache (FOPEN_KEEP_CACHE), anything else drops it.
    opened_roots: Mutex<HashMap<u64, XetHash>>,
    /// Local chunks already checked against their hash by this mount.
    verified: Mutex<std::collections::HashSet<XetHash>>,
    /// Overlay files that began as a published version: that version and the byte ranges
    /// rewritten since, so publishing re-chunks only around them. Not persisted: after a crash
    /// the whole file is re-chunked.
    edits: Mutex<HashMap<PathBuf, Edits>>,
    /// Local copies of large files (see [`filecache`]).
    cache: filecache::FileCache,
    /// The kernel agreed to FUSE passthrough at init.
    passthrough: AtomicBool,
    /// Open files per inode, on mounts that pass through (see [`InodeIo`]).
    io: Mutex<HashMap<u64, InodeIo>>,
    /// Contents opened through passthrough so far (logged once each).
    passed: Mutex<std::collections::HashSet<XetHash>>,
}

struct Edits {
    base: (XetHash, u64),
    ranges: Vec<(u64, u64)>,
}

/// Chunk hashes remembered as verified (32 bytes each) before the set starts over.
const VERIFIED_MAX: usize = 1 << 18;

/// How often a read-only mount makes the chunks it fetched durable.
const CACHE_COMMIT: Duration = Duration::from_secs(2);

/// Chunks kept in the read cache (up to 128 KiB each).
const CHUNK_CACHE: usize = 64;
/// Parsed nodes kept before the node cache is cleared.
const NODE_CACHE: usize = 1 << 16;

/// The filesystem handed to fuser.
pub struct ShareFs(Arc<Shared>);

/// A mounted share; dropping it unmounts.
pub struct Mounted {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    /// The version the mount shows.
    pub fn seq(&self) -> u64 {
        self.shared.tree.lock().unwrap().seq
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
        if self.shared.key.is_some() && self.shared.dirty.lock().unwrap().is_some() {
            let _ = publish(&self.shared);
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
        if let Err(e) = self.shared.node.shares.store.commit_cached() {
            tracing::warn!("cannot index the chunks read: {e}");
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn errno(e: impl std::fmt::Display, code: Errno) -> Errno {
    tracing::warn!("{e}");
    code
}

impl Shared {
    /// Only read-only mounts pass through: the kernel requires every open of an inode with a
    /// backing file to pass through to that same file, so an owner could not open a file for
    /// writing while someone reads it.
    fn passes(&self) -> bool {
        self.key.is_none() && self.passthrough.load(Ordering::Relaxed)
    }

    /// The backing file for an open to pass through to: the content's local copy, unless the
    /// inode has page-cached opens. Counts the open either way, and asks for a copy when there
    /// is none.
    fn open_backing(
        &self,
        ino: u64,
        content: &Content,
        size: u64,
        name: &str,
        reply: &ReplyOpen,
    ) -> Option<Arc<fuser::BackingId>> {
        let (Content::Cas(root), true) = (content, self.passes()) else {
            return None;
        };
        let mut io = self.io.lock().unwrap();
        let e = io.entry(ino).or_default();
        if let Some((b, n)) = &mut e.passthrough {
            *n += 1;
            return Some(b.clone());
        }
        if e.cached == 0 {
            if let Some(f) = self.cache.open(root, size) {
                match reply.open_backing(&f) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        e.passthrough = Some((b.clone(), 1));
                        if self.passed.lock().unwrap().insert(*root) {
                            tracing::info!("{name}: reads pass through to its local copy");
                        }
                        return Some(b);
                    }
                    Err(err) => {
                        tracing::info!("{name}: passthrough refused ({err}); reading through ccbt");
                        self.passthrough.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        self.cache.want(*root, size, name);
        e.cached += 1;
        None
    }

    /// An open file of `ino` was released.
    fn io_closed(&self, ino: u64, passthrough: bool) {
        let mut io = self.io.lock().unwrap();
        let Some(e) = io.get_mut(&ino) else { return };
        if passthrough {
            if let Some((_, n)) = &mut e.passthrough {
                *n -= 1;
                if *n == 0 {
                    e.passthrough = None; // drops the backing id
                }
            }
        } else {
            e.cached = e.cached.saturating_sub(1);
        }
        if e.cached == 0 && e.passthrough.is_none() {
            io.remove(&ino);
        }
    }

    fn ino_for(&self, path: &str) -> u64 {
        let mut g = self.inos.lock().unwrap();
        if let Some(i) = g.0.get(path) {
            return *i;
        }
        g.1 += 1;
        let i = g.1;
        g.0.insert(path.to_string(), i);
        i
    }

    /// Builds the tree of a version from its listing.
    fn build(&self, seq: u64, entries: &[Entry]) -> Tree {
        let mut t = Tree {
            nodes: HashMap::new(),
            seq,
        };
        t.nodes.insert(
            ROOT,
            Node {
                path: String::new(),
                kind: EKind::Dir,
                size: 0,
                content: Content::Cas(XetHash::ZERO),
                exec: false,
                mtime: now_secs(),
                target: None,
                children: BTreeMap::new(),
            },
        );
        for e in entries {
            // On a read-only mount a file's inode names its content too: a new version of a
            // file is a new inode (as when an editor saves by rename), so an inode's bytes never
            // change and files open at the old version keep it, passthrough included.
            let ino = if self.key.is_none() && e.kind == EKind::File {
                self.ino_for(&format!("{}\0{}", e.path, XetHash(e.root).to_hex()))
            } else {
                self.ino_for(&e.path)
            };
            // Parents first (listings are sorted, but a parent dir entry may be absent).
            let mut parent = ROOT;
            let mut acc = String::new();
            let comps: Vec<&str> = e.path.split('/').collect();
            for c in &comps[..comps.len() - 1] {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(c);
                let pi = self.ino_for(&acc);
                t.nodes.entry(pi).or_insert_with(|| Node {
                    path: acc.clone(),
                    kind: EKind::Dir,
                    size: 0,
                    content: Content::Cas(XetHash::ZERO),
                    exec: false,
                    mtime: e.mtime,
                    target: None,
                    children: BTreeMap::new(),
                });
                t.nodes
                    .get_mut(&parent)
                    .unwrap()
                    .children
                    .insert(c.to_string(), pi);
                parent = pi;
            }
            let name = comps[comps.len() - 1].to_string();
            let existing_children = t
                .nodes
                .get(&ino)
                .map(|n| n.children.clone())
                .unwrap_or_default();
            t.nodes.insert(
                ino,
                Node {
                    path: e.path.clone(),
                    kind: e.kind,
                    size: e.size,
                    content: Content::Cas(XetHash(e.root)),
                    exec: e.executable,
                    mtime: e.mtime,
                    target: e.target.clone(),
                    children: existing_children,
                },
            );
            t.nodes.get_mut(&parent).unwrap().children.insert(name, ino);
        }
        t
    }

    fn attr(&self, ino: u64, n: &Node) -> FileAttr {
        let t = UNIX_EPOCH + Duration::from_secs(n.mtime.max(0) as u64);
        let (kind, perm) = match n.kind {
            EKind::Dir => (FileType::Directory, 0o755),
            EKind::Link => (FileType::Symlink, 0o777),
            EKind::File => (FileType::RegularFile, if n.exec { 0o755 } else { 0o644 }),
        };
        let size = match n.kind {
            EKind::Link => n.target.as_ref().map(|s| s.len() as u64).unwrap_or(0),
            _ => n.size,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: if self.key.is_some() {
                perm
            } else {
                perm & 0o555
            },
            nlink: if n.kind == EKind::Dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 65536,
            flags: 0,
        }
    }

    /// Fetches a hash's bytes (node or chunk) from peers, storing it in the CAS.
    fn fetch(&self, h: XetHash, kind: Kind) -> Result<(Kind, Vec<u8>), Errno> {
        let node = self.node.clone();
        let share = self.cfg.share;
        let timeout = self.cfg.read_timeout;
        let r = self.rt.block_on(async move {
            tokio::time::timeout(timeout, node.fetch(&share, h, kind, 0)).await
        });
        match r {
            Ok(Ok((k, data))) => {
                let store = &self.node.shares.store;
                match k {
                    Kind::Node => store
                        .put_node(&h.0, &data)
                        .map_err(|e| errno(e, Errno::EIO))?,
                    _ => {
                        store
                            .put_chunk_cached(&h.0, &data)
                            .map_err(|e| errno(e, Errno::EIO))?;
                    }
                }
                Ok((k, data.to_vec()))
            }
            Ok(Err(e)) => Err(errno(format!("read failed: {e}"), Errno::EIO)),
            Err(_) => Err(errno(
                format!("read timed out after {timeout:?}: no peer supplied {h}"),
                Errno::EIO,
            )),
        }
    }

    /// The chunks (offset, hash, size) of a file that overlap `[off, end)`, fetching the nodes on
    /// the way down from the root as needed.
    fn chunks_for(
        &self,
        root: XetHash,
        size: u64,
        off: u64,
        end: u64,
    ) -> Result<Vec<(u64, XetHash, u64)>, Errno> {
        let store = &self.node.shares.store;
        let mut out = Vec::new();
        let mut stack = vec![(root, 0u64, size)];
        while let Some((h, base, len)) = stack.pop() {
            if base >= end || base + len <= off || len == 0 {
                continue;
            }
            // A cached empty list marks a leaf (a node always has children): each lookup of a
            // leaf would otherwise cost two store reads on every read call.
            let cached = self.node_cache.lock().unwrap().get(&h).cloned();
            let kids = match cached {
                Some(k) if k.is_empty() => None,
                Some(k) => Some(k),
                None => {
                    let text = match store.get_node(&h.0).map_err(|e| errno(e, Errno::EIO))? {
                        Some(t) => Some(t),
                        None if store.has_chunk(&h.0).map_err(|e| errno(e, Errno::EIO))? => None,
                        None => {
                            // Unknown here: a node if it covers more than a chunk can, else ask
                            // for either.
                            let want = if len < UNKNOWN_SIZE
                                && len > ccbt_xet::chunker::MAX_CHUNK as u64
                            {
                                Kind::Node
                            } else {
                                Kind::Any
                            };
                            match self.fetch(h, want)? {
                                (Kind::Node, t) => Some(t),
                                _ => None,
                            }
                        }
                    };
                    match text {
                        Some(t) => {
                            let k = Arc::new(
                                tree::parse_node(h, &t).map_err(|e| errno(e, Errno::EIO))?,
                            );
                            let mut c = self.node_cache.lock().unwrap();
                            if c.len() >= NODE_CACHE {
                                c.clear();
                            }
                            c.insert(h, k.clone());
                            Some(k)
                        }
                        None => {
                            let mut c = self.node_cache.lock().unwrap();
                            if c.len() >= NODE_CACHE {
                                c.clear();
                            }
                            c.insert(h, Arc::new(Vec::new()));
                            None
                        }
                    }
                }
            };
            match kids {
                Some(kids) => {
                    let mut b = base;
                    let mut items = Vec::with_capacity(kids.len());
                    for k in kids.iter() {
                        items.push((k.hash, b, k.size));
                        b += k.size;
                    }
                    stack.extend(items.into_iter().rev());
                }
                None => out.push((base, h, len)),
            }
        }
        Ok(out)
    }

    /// A local chunk matches its hash. Each chunk is hashed the first time this mount reads it;
    /// random readers come back to the same chunks many times.
    fn check(&self, data: &[u8], h: XetHash) -> bool {
        if self.verified.lock().unwrap().contains(&h) {
            return true;
        }
        if ccbt_xet::hash::chunk_hash(data) != h {
            return false;
        }
        let mut v = self.verified.lock().unwrap();
        if v.len() >= VERIFIED_MAX {
            v.clear();
        }
        v.insert(h);
        true
    }

    fn cached_chunk(&self, h: XetHash) -> Option<Arc<Vec<u8>>> {
        self.chunk_cache
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| *k == h)
            .map(|(_, d)| d.clone())
    }

    fn chunk(&self, h: XetHash) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(d) = self.cached_chunk(h) {
            return Ok(d);
        }
        self.load_chunk(h)
    }

    /// A chunk from the store (or a peer), verified, and kept in the read cache.
    fn load_chunk(&self, h: XetHash) -> Result<Arc<Vec<u8>>, Errno> {
        let store = &self.node.shares.store;
        let data = match store.get_chunk(&h.0).map_err(|e| errno(e, Errno::EIO))? {
            Some(d) if self.check(&d, h) => d,
            _ => self.fetch(h, Kind::Chunk)?.1,
        };
        let d = Arc::new(data);
        let mut c = self.chunk_cache.lock().unwrap();
        if c.len() >= CHUNK_CACHE {
            c.pop_front();
        }
        c.push_back((h, d.clone()));
        Ok(d)
    }

    /// Copies each chunk's range `[s, s + dst.len())` into `dst`, verifying the chunk.
    fn fill_parts(&self, parts: Vec<(XetHash, u64, usize, &mut [u8])>) -> Result<(), Errno> {
        for (h, clen, s, dst) in parts {
            let e = s + dst.len();
            // A chunk read to its end is copied straight from the store into the reply; one that
            // goes on past this read goes through the cache, as the next read starts there.
            let cached = self.cached_chunk(h);
            if e as u64 == clen && cached.is_none() {
                let copied = self
                    .node
                    .shares
                    .store
                    .with_chunk(&h.0, |d| {
                        let ok = d.len() as u64 == clen && self.check(d, h);
                        if ok {
                            dst.copy_from_slice(&d[s..e]);
                        }
                        ok
                    })
                    .map_err(|e| errno(e, Errno::EIO))?;
                if copied == Some(true) {
                    continue;
                }
            }
            let data = match cached {
                Some(d) => d,
                None => self.load_chunk(h)?,
            };
            if data.len() as u64 != clen {
                return Err(Errno::EIO);
            }
            dst.copy_from_slice(&data[s..e]);
        }
        Ok(())
    }

    fn read_cas(
        &self,
        root: XetHash,
        size: u64,
        off: u64,
        len: u32,
        ahead: Option<&mut u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let end = (off + len as u64).min(size);
        if off >= end {
            return Ok(());
        }
        let chunks = self.chunks_for(root, size, off, end)?;
        let at = out.len();
        out.resize(at + (end - off) as usize, 0);
        // Each chunk's slice of the reply.
        let mut parts = Vec::with_capacity(chunks.len());
        let mut rest = &mut out[at..];
        for (base, h, clen) in &chunks {
            let s = (off.max(*base) - base) as usize;
            let e = (end.min(base + clen) - base) as usize;
            let (dst, r) = rest.split_at_mut(e - s);
            rest = r;
            parts.push((*h, *clen, s, dst));
        }
        // Verifying and copying a large read's chunks is split over two threads: on a local
        // store that work, not I/O, bounds a sequential reader.
        if parts.len() >= 6 {
            let second = parts.split_off(parts.len() / 2);
            std::thread::scope(|sc| {
                let t = sc.spawn(|| self.fill_parts(second));
                let a = self.fill_parts(parts);
                let b = t.join().unwrap_or(Err(Errno::EIO));
                a.and(b)
            })?;
        } else {
            self.fill_parts(parts)?;
        }
        if let Some(ahead) = ahead {
            // Read-ahead: warm the next chunks in the background for a sequential reader. Each
            // range is looked at once per handle.
            let ahead_end = (end + READ_AHEAD as u64 * 65536).min(size);
            // A reader that jumped back starts a fresh window.
            let from = if *ahead > end && *ahead <= ahead_end {
                *ahead
            } else {
                end
            };
            if from >= ahead_end {
                return Ok(());
            }
            *ahead = ahead_end;
            if let Ok(next) = self.chunks_for(root, size, from, ahead_end) {
                let store_missing: Vec<XetHash> = next
                    .iter()
                    .map(|c| c.1)
                    .filter(|h| !self.node.shares.store.has_chunk(&h.0).unwrap_or(true))
                    .collect();
                let node = self.node.clone();
                let share = self.cfg.share;
                for h in store_missing {
                    let node = node.clone();
                    self.rt.spawn(async move {
                        if let Ok((_, d)) = node.fetch(&share, h, Kind::Chunk, 0).await {
                            let _ = node.shares.store.put_chunk_cached(&h.0, &d);
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends the bytes of `[off, off+len)` (clipped to `size`) to `out`.
    fn read_content(
        &self,
        c: &Content,
        size: u64,
        off: u64,
        len: u32,
        ahead: Option<&mut u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        match c {
            Content::Cas(root) => self.read_cas(*root, size, off, len, ahead, out),
            Content::Overlay { path, .. } => {
                let f = std::fs::File::open(path).map_err(|e| errno(e, Errno::EIO))?;
                let end = (off + len as u64).min(size);
                if off >= end {
                    return Ok(());
                }
                let start = out.len();
                out.resize(start + (end - off) as usize, 0);
                let n = f
                    .read_at(&mut out[start..], off)
                    .map_err(|e| errno(e, Errno::EIO))?;
                out.truncate(start + n);
                Ok(())
            }
        }
    }

    // ---- owner side ----

    fn writable(&self) -> Result<(), Errno> {
        if self.key.is_none() {
            tracing::warn!("write refused: this node does not hold the share's key, so the mount is read-only (EROFS)");
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    fn overlay_path(&self, ino: u64) -> PathBuf {
        self.cfg.overlay_dir.join(format!("f{ino}-{}", now_nanos()))
    }

    /// Makes a file's content an overlay copy (materialising it from the CAS on first write).
    fn to_overlay(&self, t: &mut Tree, ino: u64) -> Result<PathBuf, Errno> {
        let n = t.nodes.get(&ino).ok_or(Errno::ENOENT)?.clone();
        if let Content::Overlay { path, .. } = &n.content {
            return Ok(path.clone());
        }
        let Content::Cas(root) = n.content else {
            unreachable!()
        };
        let p = self.overlay_path(ino);
        std::fs::create_dir_all(&self.cfg.overlay_dir).map_err(|e| errno(e, Errno::EIO))?;
        let mut f = std::fs::File::create(&p).map_err(|e| errno(e, Errno::EIO))?;
        if n.size > 0 {
            // Make sure every chunk is here, then copy.
            self.chunks_for(root, n.size, 0, n.size)?
                .iter()
                .try_for_each(|(_, h, _)| self.chunk(*h).map(|_| ()))?;
            tree::read_into(&self.node.shares.store, root, n.size, &mut f, true)
                .map_err(|e| errno(e, Errno::EIO))?;
            f.set_len(n.size).map_err(|e| errno(e, Errno::EIO))?;
        }
        t.nodes.get_mut(&ino).unwrap().content = Content::Overlay {
            path: p.clone(),
            root: None,
            gen: 0,
        };
        self.edits.lock().unwrap().insert(
            p.clone(),
            Edits {
                base: (root, n.size),
                ranges: Vec::new(),
            },
        );
        Ok(p)
    }

    /// Bytes `[a, b)` of an overlay file were rewritten.
    fn note_edit(&self, path: &Path, a: u64, b: u64) {
        if let Some(e) = self.edits.lock().unwrap().get_mut(path) {
            // Adjacent small writes (a sequential writer) merge, keeping the list short.
            match e.ranges.last_mut() {
                Some(last) if last.0 <= b && a <= last.1 => {
                    *last = (last.0.min(a), last.1.max(b));
                }
                _ => e.ranges.push((a, b)),
            }
            if e.ranges.len() > 4096 {
                let lo = e.ranges.iter().map(|r| r.0).min().unwrap_or(0);
                let hi = e.ranges.iter().map(|r| r.1).max().unwrap_or(0);
                e.ranges = vec![(lo, hi)];
            }
        }
    }

    fn changed(&self, t: &Tree) {
        self.save_state(t);
        *self.dirty.lock().unwrap() = Some(Instant::now());
    }

    fn request_publish(&self) {
        if self.key.is_some() && self.dirty.lock().unwrap().is_some() {
            self.wake.notify_all();
        }
    }

    /// The working tree, persisted so a crash does not lose dirty data.
    fn save_state(&self, t: &Tree) {
        if self.key.is_none() {
            return;
        }
        let p = self.cfg.overlay_dir.join("state");
        let tmp = p.with_extension("tmp");
        if std::fs::create_dir_all(&self.cfg.overlay_dir).is_ok()
            && std::fs::write(&tmp, encode_state(t)).is_ok()
        {
            let _ = std::fs::rename(&tmp, &p);
        }
    }

    fn load_state(&self) -> Option<Vec<(Entry, Option<PathBuf>)>> {
        decode_state(&std::fs::read(self.cfg.overlay_dir.join("state")).ok()?)
    }
}

/// The owner's working tree as bencode (any byte in a name survives): one dictionary per entry,
/// with its CAS root or its overlay file.
fn encode_state(t: &Tree) -> Vec<u8> {
    use ccbt_core::bencode::OwnedValue as V;
    let mut nodes: Vec<&Node> = t.nodes.values().filter(|n| !n.path.is_empty()).collect();
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    V::List(
        nodes
            .into_iter()
            .map(|n| {
                let (root, ovl) = match &n.content {
                    Content::Cas(r) => (r.0.to_vec(), None),
                    Content::Overlay { path, .. } => (
                        [0u8; 32].to_vec(),
                        Some(path.to_string_lossy().into_owned()),
                    ),
                };
                let mut d = vec![
                    (
                        "k",
                        V::bytes(match n.kind {
                            EKind::File => "f",
                            EKind::Dir => "d",
                            EKind::Link => "l",
                        }),
                    ),
                    ("m", V::Int(n.mtime)),
                    ("p", V::bytes(n.path.as_bytes())),
                    ("r", V::bytes(root)),
                    ("s", V::Int(n.size as i64)),
                    ("x", V::Int(n.exec as i64)),
                ];
                if let Some(o) = ovl {
                    d.push(("o", V::bytes(o.as_bytes())));
                }
                if let Some(tg) = &n.target {
                    d.push(("t", V::bytes(tg.as_bytes())));
                }
                V::dict(d)
            })
            .collect(),
    )
    .encode()
}

fn decode_state(b: &[u8]) -> Option<Vec<(Entry, Option<PathBuf>)>> {
    use ccbt_core::bencode::Value;
    let v = ccbt_core::bencode::decode(b).ok()?;
    let mut out = Vec::new();
    for item in v.as_list()? {
        let d = item.as_dict()?;
        let kind = match d.get(b"k")?.as_bytes()? {
            b"f" => EKind::File,
            b"d" => EKind::Dir,
            _ => EKind::Link,
        };
        let path = d.get(b"p")?.as_str()?.to_string();
        listing::check_path(&path).ok()?;
        out.push((
            Entry {
                path,
                kind,
                size: d.get(b"s")?.as_int()?.max(0) as u64,
                root: d.get(b"r")?.as_bytes()?.try_into().ok()?,
                executable: d.get(b"x")?.as_int()? != 0,
                mtime: d.get(b"m")?.as_int()?,
                target: d.get(b"t").and_then(Value::as_str).map(str::to_string),
            },
            d.get(b"o").and_then(Value::as_str).map(PathBuf::from),
        ));
    }
    Some(out)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Publishes the working tree as the next version (owner mounts).
fn publish(s: &Shared) -> Result<u64, String> {
    let key = s.key.as_ref().ok_or("not the owner")?;
    *s.dirty.lock().unwrap() = None;
    let snapshot = s.tree.lock().unwrap().clone();
    let store = &s.node.shares.store;
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    let mut new_roots = Vec::new();
    for (ino, n) in &snapshot.nodes {
        if n.path.is_empty() {
            continue;
        }
        let root = match &n.content {
            Content::Cas(r) => *r,
            Content::Overlay { root: Some(r), .. } => *r,
            Content::Overlay {
                path,
                root: None,
                gen,
            } => {
                let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
                let edits = s
                    .edits
                    .lock()
                    .unwrap()
                    .get(path)
                    .map(|e| (e.base, e.ranges.clone()));
                let inc = edits.and_then(|(base, ranges)| {
                    match tree::store_incremental(store, base, &f, n.size, &ranges, &mut nodes) {
                        Ok(i) => {
                            tracing::info!(
                                "{}: re-chunked {} bytes around {} edits, reused {} chunks",
                                n.path,
                                i.bytes_read,
                                ranges.len(),
                                i.chunks_reused
                            );
                            Some(i.root)
                        }
                        Err(e) => {
                            tracing::debug!(
                                "{}: incremental re-chunk failed ({e}); reading it all",
                                n.path
                            );
                            None
                        }
                    }
                });
                let root = match inc {
                    Some(r) => r,
                    None => {
                        tree::store_file(store, &f, &AtomicU64::new(0), &mut nodes)
                            .map_err(|e| e.to_string())?
                            .merkle_root
                    }
                };
                new_roots.push((*ino, path.clone(), *gen, root, n.size));
                root
            }
        };
        entries.push(Entry {
            path: n.path.clone(),
            kind: n.kind,
            size: n.size,
            root: if n.kind == EKind::File {
                root.0
            } else {
                [0; 32]
            },
            executable: n.exec,
            mtime: n.mtime,
            target: n.target.clone(),
        });
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let bytes = listing::encode(&entries);
    let l = tree::store_reader(store, &bytes[..], &AtomicU64::new(0), &mut nodes)
        .map_err(|e| e.to_string())?;
    let rec = s
        .node
        .shares
        .record(&s.cfg.share)
        .map_err(|e| e.to_string())?
        .ok_or("share record missing")?;
    let seq = rec.seq + 1;
    let head = Head::sign(
        key,
        seq,
        HeadValue {
            root: l.merkle_root.0,
            size: entries.iter().map(|e| e.size).sum(),
            time: now_secs(),
        },
    );
    let mut vb = ccbt_cas::VersionBatch::default();
    for (h, t) in nodes {
        vb.node(h, t);
    }
    vb.head(s.cfg.share, seq, head.encode());
    vb.share(
        s.cfg.share,
        ccbt_xet::shares::ShareRecord {
            public_key: head.public_key,
            seq,
            owner: true,
        }
        .encode(),
    );
    store.commit_version(vb).map_err(|e| e.to_string())?;
    {
        // The published roots become the overlay files' clean state (unless written meanwhile).
        let mut t = s.tree.lock().unwrap();
        let mut edits = s.edits.lock().unwrap();
        for (ino, p, g, r, size) in new_roots {
            if let Some(n) = t.nodes.get_mut(&ino) {
                if let Content::Overlay { path, root, gen } = &mut n.content {
                    if *path == p && *gen == g {
                        *root = Some(r);
                        // Untouched since it was read: it is the base of later edits.
                        edits.insert(
                            p,
                            Edits {
                                base: (r, size),
                                ranges: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        drop(edits);
        t.seq = seq;
        s.save_state(&t);
    }
    s.node.offer_head(head, None);
    s.node.have_version(&s.cfg.share, seq);
    *s.published.lock().unwrap() = seq;
    s.published_cv.notify_all();
    tracing::info!("published version {seq} of the share from the mount");
    Ok(seq)
}

fn publisher(s: Arc<Shared>) {
    loop {
        let mut g = s.dirty.lock().unwrap();
        loop {
            match *g {
                Some(t) if t.elapsed() >= s.cfg.publish_debounce => break,
                Some(t) => {
                    let wait = s.cfg.publish_debounce - t.elapsed();
                    g = s.wake.wait_timeout(g, wait).unwrap().0;
                }
                None => g = s.wake.wait_timeout(g, Duration::from_secs(1)).unwrap().0,
            }
            if s.closed.load(Ordering::Relaxed) {
                return;
            }
        }
        drop(g);
        if let Err(e) = publish(&s) {
            tracing::error!("cannot publish the mount's changes: {e}");
        }
    }
}

/// Watches for newer heads (read-only mounts) and swaps the tree.
fn follower(s: Arc<Shared>) {
    let mut rx = s.node.subscribe();
    let mut last_commit = Instant::now();
    loop {
        // Polling keeps this thread independent of the runtime's lifetime.
        let next = rx.try_recv();
        if s.closed.load(Ordering::Relaxed) {
            return;
        }
        // Chunks fetched for reads become durable (flushed, then indexed) every few seconds.
        if last_commit.elapsed() >= CACHE_COMMIT {
            last_commit = Instant::now();
            if let Err(e) = s.node.shares.store.commit_cached() {
                tracing::warn!("cannot index the chunks read so far: {e}");
            }
        }
        let Ok((share, seq)) = next else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if share != s.cfg.share || seq <= s.tree.lock().unwrap().seq {
            continue;
        }
        let Some(head) = s.node.newest_head(&share) else {
            continue;
        };
        match load_listing(&s, &head) {
            Ok(entries) => {
                let t = s.build(head.seq, &entries);
                *s.tree.lock().unwrap() = t;
                tracing::info!("mount now shows version {}", head.seq);
            }
            Err(e) => tracing::warn!("cannot load version {}: {e:?}", head.seq),
        }
    }
}

fn load_listing(s: &Shared, head: &Head) -> Result<Vec<Entry>, Errno> {
    let root = XetHash(head.value.root);
    let size = UNKNOWN_SIZE; // the listing's size is not in the head: cover everything
    let chunks = s.chunks_for(root, size, 0, size)?;
    let mut bytes = Vec::new();
    for (_, h, _) in chunks {
        bytes.extend_from_slice(&s.chunk(h)?);
    }
    listing::decode(&bytes).map_err(|e| errno(e, Errno::EIO))
}

/// Mounts `head`'s version of the share at `dir`.
pub fn mount(
    node: Arc<XetNode>,
    rt: tokio::runtime::Handle,
    head: Head,
    dir: &Path,
    cfg: MountConfig,
) -> std::io::Result<Mounted> {
    let key = node.shares.signing_key(&cfg.share).ok().flatten();
    let cfg_cache = (cfg.file_cache_dir.clone(), cfg.file_cache_bytes);
    let shared = Arc::new(Shared {
        node,
        rt,
        cfg,
        key,
        tree: Mutex::new(Tree::default()),
        inos: Mutex::new((HashMap::from([(String::new(), ROOT)]), ROOT)),
        handles: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        dirty: Mutex::new(None),
        wake: Condvar::new(),
        published: Mutex::new(head.seq),
        published_cv: Condvar::new(),
        closed: AtomicBool::new(false),
        node_cache: Mutex::new(HashMap::new()),
        chunk_cache: Mutex::new(std::collections::VecDeque::new()),
        opened_roots: Mutex::new(HashMap::new()),
        verified: Mutex::new(std::collections::HashSet::new()),
        edits: Mutex::new(HashMap::new()),
        cache: filecache::FileCache::new(cfg_cache.0, cfg_cache.1),
        passthrough: AtomicBool::new(false),
        io: Mutex::new(HashMap::new()),
        passed: Mutex::new(std::collections::HashSet::new()),
    });
    // An owner's overlay left by a crash wins over the last published version.
    let recovered = if shared.key.is_some() {
        shared.load_state()
    } else {
        None
    };
    let tree = match &recovered {
        Some(items) => {
            let entries: Vec<Entry> = items.iter().map(|(e, _)| e.clone()).collect();
            let mut t = shared.build(head.seq, &entries);
            for (e, ovl) in items {
                if let Some(p) = ovl {
                    let ino = shared.ino_for(&e.path);
                    if let Some(n) = t.nodes.get_mut(&ino) {
                        n.content = Content::Overlay {
                            path: p.clone(),
                            root: None,
                            gen: 0,
                        };
                    }
                }
            }
            t
        }
        None => {
            let entries = load_listing(&shared, &head).map_err(|e| {
                std::io::Error::other(format!("cannot load the share's listing ({e:?})"))
            })?;
            shared.build(head.seq, &entries)
        }
    };
    *shared.tree.lock().unwrap() = tree;
    if recovered.is_some() {
        tracing::info!("publishing changes left in the overlay by an earlier mount");
        *shared.dirty.lock().unwrap() = Some(Instant::now() - Duration::from_secs(3600));
    }
    let mut opts = vec![
        fuser::MountOption::FSName("ccbt".into()),
        fuser::MountOption::Subtype("ccbt".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    if shared.key.is_none() {
        opts.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = opts;
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(ShareFs(shared.clone()), dir, &config)?;
    set_read_ahead(dir, shared.cfg.read_ahead_kb);
    if shared.cache.enabled() && shared.key.is_none() {
        let s = shared.clone();
        std::thread::spawn(move || s.cache.run(&s.node.shares.store, &s.closed));
    }
    if shared.key.is_some() {
        let s = shared.clone();
        std::thread::spawn(move || publisher(s));
        shared.wake.notify_all();
    } else {
        let s = shared.clone();
        std::thread::spawn(move || follower(s));
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

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let n = name.to_str().ok_or(Errno::EINVAL)?;
    if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
        return Err(Errno::EINVAL);
    }
    Ok(n)
}

impl ShareFs {
    /// The name of an entry about to be created: the mount must be writable and the name valid.
    fn new_name<'a>(&self, name: &'a OsStr) -> Result<&'a str, Errno> {
        self.0.writable()?;
        name_str(name)
    }

    fn child_path(t: &Tree, parent: u64, name: &str) -> Result<String, Errno> {
        let p = t.nodes.get(&parent).ok_or(Errno::ENOENT)?;
        if p.kind != EKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(if p.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", p.path, name)
        })
    }

    /// Inserts a new node under `parent` (owner mounts).
    fn insert(
        &self,
        t: &mut Tree,
        parent: u64,
        name: &str,
        mut n: Node,
    ) -> Result<(u64, FileAttr), Errno> {
        let path = Self::child_path(t, parent, name)?;
        if t.nodes[&parent].children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        n.path = path.clone();
        let ino = self.0.ino_for(&path);
        let attr = self.0.attr(ino, &n);
        t.nodes.insert(ino, n);
        t.nodes
            .get_mut(&parent)
            .unwrap()
            .children
            .insert(name.to_string(), ino);
        Ok((ino, attr))
    }

    fn remove(&self, t: &mut Tree, parent: u64, name: &str, dir: bool) -> Result<(), Errno> {
        let ino = *t
            .nodes
            .get(&parent)
            .ok_or(Errno::ENOENT)?
            .children
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let n = &t.nodes[&ino];
        if dir && n.kind != EKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !dir && n.kind == EKind::Dir {
            return Err(Errno::EISDIR);
        }
        if dir && !n.children.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let path = n.path.clone();
        t.nodes.get_mut(&parent).unwrap().children.remove(name);
        // Open handles keep their content (an unlinked open file stays readable).
        t.nodes.remove(&ino);
        self.0.inos.lock().unwrap().0.remove(&path);
        Ok(())
    }

    /// Re-keys a subtree's paths after a rename.
    fn repath(&self, t: &mut Tree, ino: u64, path: String) {
        let children: Vec<(String, u64)> = {
            let n = t.nodes.get_mut(&ino).unwrap();
            n.path = path.clone();
            n.children.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        self.0.inos.lock().unwrap().0.insert(path.clone(), ino);
        for (name, c) in children {
            self.repath(t, c, format!("{path}/{name}"));
        }
    }
}

impl ShareFs {
    /// `mkdir` and `symlink`: a new directory or link under `parent` (owner mounts).
    fn add_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        kind: EKind,
        target: Option<String>,
        reply: ReplyEntry,
    ) {
        let name = match self.new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut t = self.0.tree.lock().unwrap();
        let n = Node {
            path: String::new(),
            kind,
            size: 0,
            content: Content::Cas(XetHash::ZERO),
            exec: false,
            mtime: now_secs(),
            target,
            children: BTreeMap::new(),
        };
        match self.insert(&mut t, parent.0, name, n) {
            Ok((_, attr)) => {
                self.0.changed(&t);
                self.0.request_publish();
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    /// `unlink` and `rmdir`.
    fn remove_entry(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        if let Err(e) = self.0.writable() {
            return reply.error(e);
        }
        let mut t = self.0.tree.lock().unwrap();
        match name
            .to_str()
            .ok_or(Errno::ENOENT)
            .and_then(|n| self.remove(&mut t, parent.0, n, dir))
        {
            Ok(()) => {
                self.0.changed(&t);
                self.0.request_publish();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for ShareFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        if self.0.cache.enabled() && self.0.key.is_none() {
            // Depth 2: the data dir may itself be on a stacked filesystem (overlayfs).
            let ok = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(2).is_ok();
            self.0.passthrough.store(ok, Ordering::Relaxed);
            if !ok {
                tracing::info!(
                    "the kernel does not offer FUSE passthrough: every read goes through ccbt"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = self.0.tree.lock().unwrap();
        let Some(ino) = name
            .to_str()
            .and_then(|n| t.nodes.get(&parent.0)?.children.get(n).copied())
        else {
            return reply.error(Errno::ENOENT);
        };
        reply.entry(&TTL, &self.0.attr(ino, &t.nodes[&ino]), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = self.0.tree.lock().unwrap();
        match t.nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &self.0.attr(ino.0, n)),
            None => {
                // An unlinked file still open: answer from its handle.
                let hs = self.0.handles.lock().unwrap();
                match fh.and_then(|f| hs.get(&f.0)) {
                    Some(h) => {
                        let n = Node {
                            path: String::new(),
                            kind: EKind::File,
                            size: h.size,
                            content: h.content.clone(),
                            exec: false,
                            mtime: now_secs(),
                            target: None,
                            children: BTreeMap::new(),
                        };
                        reply.attr(&TTL, &self.0.attr(ino.0, &n))
                    }
                    None => reply.error(Errno::ENOENT),
                }
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = self.0.tree.lock().unwrap();
        match t.nodes.get(&ino.0).and_then(|n| n.target.clone()) {
            Some(target) => reply.data(target.as_bytes()),
            None => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let wants_write =
            flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if wants_write {
            if let Err(e) = self.0.writable() {
                return reply.error(e);
            }
        }
        let mut t = self.0.tree.lock().unwrap();
        let Some(n) = t.nodes.get(&ino.0).cloned() else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind == EKind::Dir {
            return reply.error(Errno::EISDIR);
        }
        let mut content = n.content.clone();
        let mut size = n.size;
        if wants_write {
            match self.0.to_overlay(&mut t, ino.0) {
                Ok(p) => {
                    if flags.0 & libc::O_TRUNC != 0 {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .and_then(|f| f.set_len(0));
                        let nn = t.nodes.get_mut(&ino.0).unwrap();
                        self.0.note_edit(&p, 0, nn.size);
                        nn.size = 0;
                        nn.mtime = now_secs();
                        if let Content::Overlay { root, gen, .. } = &mut nn.content {
                            *root = None;
                            *gen += 1;
                        }
                        size = 0;
                        self.0.changed(&t);
                    }
                    content = t.nodes[&ino.0].content.clone();
                }
                Err(e) => return reply.error(e),
            }
        }
        drop(t);
        let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
        let backing = self.0.open_backing(ino.0, &content, size, &n.path, &reply);
        // Published content never changes under a root, so the kernel may keep what it cached
        // the last time this inode was opened with the same root.
        let flags = match &content {
            Content::Cas(root) => {
                let root = *root;
                let mut r = self.0.opened_roots.lock().unwrap();
                match r.insert(ino.0, root) {
                    Some(prev) if prev == root => FopenFlags::FOPEN_KEEP_CACHE,
                    _ => FopenFlags::empty(),
                }
            }
            Content::Overlay { .. } => {
                self.0.opened_roots.lock().unwrap().remove(&ino.0);
                FopenFlags::empty()
            }
        };
        self.0.handles.lock().unwrap().insert(
            fh,
            Handle {
                passthrough: backing.is_some(),
                content,
                size,
                last_end: 0,
                ahead: 0,
            },
        );
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            None => reply.opened(FileHandle(fh), flags),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let (content, fsize, sequential) = {
            let mut hs = self.0.handles.lock().unwrap();
            let Some(h) = hs.get_mut(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            // Overlay files can grow while open: take the current size from the tree.
            if let Content::Overlay { .. } = h.content {
                if let Some(n) = self.0.tree.lock().unwrap().nodes.get(&ino.0) {
                    h.size = n.size;
                }
            }
            let seq = offset == h.last_end;
            h.last_end = offset + size as u64;
            (h.content.clone(), h.size, seq.then_some(h.ahead))
        };
        let mut ahead = sequential.unwrap_or(0);
        // One reply buffer per FUSE thread: a fresh 1 MiB allocation per read costs page faults.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut out = b.borrow_mut();
            out.clear();
            let res = self.0.read_content(
                &content,
                fsize,
                offset,
                size,
                sequential.is_some().then_some(&mut ahead),
                &mut out,
            );
            if sequential.is_some() {
                if let Some(h) = self.0.handles.lock().unwrap().get_mut(&fh.0) {
                    h.ahead = h.ahead.max(ahead);
                }
            }
            match res {
                Ok(()) => reply.data(&out),
                Err(e) => reply.error(e),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.0.writable() {
            return reply.error(e);
        }
        let mut t = self.0.tree.lock().unwrap();
        let path = match self.0.to_overlay(&mut t, ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let n = t.nodes.get_mut(&ino.0).unwrap();
        let off = if flags.0 & libc::O_APPEND != 0 {
            n.size
        } else {
            offset
        };
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(data, off));
        if let Err(e) = res {
            return reply.error(errno(e, Errno::EIO));
        }
        // A write past the end leaves a hole of zeros, which is new content too.
        self.0
            .note_edit(&path, off.min(n.size), off + data.len() as u64);
        n.size = n.size.max(off + data.len() as u64);
        n.mtime = now_secs();
        if let Content::Overlay { root, gen, .. } = &mut n.content {
            *root = None;
            *gen += 1;
        }
        let content = n.content.clone();
        let size = n.size;
        if let Some(h) = self.0.handles.lock().unwrap().get_mut(&fh.0) {
            h.content = content;
            h.size = size;
        }
        self.0.changed(&t);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.0.handles.lock().unwrap().remove(&fh.0);
        if let Some(h) = h {
            self.0.io_closed(ino.0, h.passthrough);
            // Read through the daemon: once its chunks are all here, later opens can pass through.
            if let (false, Content::Cas(root), true) = (h.passthrough, &h.content, self.0.passes())
            {
                self.0
                    .cache
                    .want(*root, h.size, &format!("inode {}", ino.0));
            }
        }
        self.0.request_publish();
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Overlay data is on disk in the data dir and the state file names it; publish soon.
        self.0.request_publish();
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let t = self.0.tree.lock().unwrap();
        let Some(n) = t.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let parent = if n.path.is_empty() {
            ROOT
        } else {
            let pp = n.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            *self.0.inos.lock().unwrap().0.get(pp).unwrap_or(&ROOT)
        };
        let mut items: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        for (name, c) in &n.children {
            let k = match t.nodes.get(c).map(|x| x.kind) {
                Some(EKind::Dir) => FileType::Directory,
                Some(EKind::Link) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            items.push((*c, k, name.clone()));
        }
        fill_dir(reply, offset, items);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let t = self.0.tree.lock().unwrap();
        let used: u64 = t.nodes.values().map(|n| n.size.div_ceil(4096)).sum();
        reply.statfs(
            used + (1 << 24),
            1 << 24,
            1 << 24,
            t.nodes.len() as u64 + (1 << 20),
            1 << 20,
            4096,
            255,
            4096,
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match self.new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut t = self.0.tree.lock().unwrap();
        let _ = std::fs::create_dir_all(&self.0.cfg.overlay_dir);
        let p = self.0.overlay_path(0);
        if let Err(e) = std::fs::File::create(&p) {
            return reply.error(errno(e, Errno::EIO));
        }
        let n = Node {
            path: String::new(),
            kind: EKind::File,
            size: 0,
            content: Content::Overlay {
                path: p,
                root: None,
                gen: 0,
            },
            exec: mode & 0o111 != 0,
            mtime: now_secs(),
            target: None,
            children: BTreeMap::new(),
        };
        match self.insert(&mut t, parent.0, name, n) {
            Ok((ino, attr)) => {
                let content = t.nodes[&ino].content.clone();
                self.0.changed(&t);
                let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
                self.0.handles.lock().unwrap().insert(
                    fh,
                    Handle {
                        passthrough: false,
                        content,
                        size: 0,
                        last_end: 0,
                        ahead: 0,
                    },
                );
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.add_entry(parent, name, EKind::Dir, None, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Some(target) = target.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        self.add_entry(
            parent,
            link_name,
            EKind::Link,
            Some(target.to_string()),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.0.writable() {
            return reply.error(e);
        }
        let (Some(name), Ok(newname)) = (name.to_str(), name_str(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        let mut t = self.0.tree.lock().unwrap();
        let res = (|| {
            let ino = *t
                .nodes
                .get(&parent.0)
                .ok_or(Errno::ENOENT)?
                .children
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let newpath = Self::child_path(&t, newparent.0, newname)?;
            if let Some(&victim) = t.nodes[&newparent.0].children.get(newname) {
                if victim == ino {
                    return Ok(());
                }
                let vdir = t.nodes[&victim].kind == EKind::Dir;
                if vdir && !t.nodes[&victim].children.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                // Replacing an open file: its handles keep the old content.
                t.nodes
                    .get_mut(&newparent.0)
                    .unwrap()
                    .children
                    .remove(newname);
                t.nodes.remove(&victim);
            }
            t.nodes.get_mut(&parent.0).unwrap().children.remove(name);
            t.nodes
                .get_mut(&newparent.0)
                .unwrap()
                .children
                .insert(newname.to_string(), ino);
            self.0
                .inos
                .lock()
                .unwrap()
                .0
                .remove(&t.nodes[&ino].path.clone());
            self.repath(&mut t, ino, newpath);
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.0.changed(&t);
                self.0.request_publish();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_none() && size.is_none() && mtime.is_none() {
            let t = self.0.tree.lock().unwrap();
            return match t.nodes.get(&ino.0) {
                Some(n) => reply.attr(&TTL, &self.0.attr(ino.0, n)),
                None => reply.error(Errno::ENOENT),
            };
        }
        if let Err(e) = self.0.writable() {
            return reply.error(e);
        }
        let mut t = self.0.tree.lock().unwrap();
        if !t.nodes.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        if let Some(sz) = size {
            let p = match self.0.to_overlay(&mut t, ino.0) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(sz))
            {
                return reply.error(errno(e, Errno::EIO));
            }
            let n = t.nodes.get_mut(&ino.0).unwrap();
            self.0.note_edit(&p, n.size.min(sz), n.size.max(sz));
            n.size = sz;
            n.mtime = now_secs();
            if let Content::Overlay { root, gen, .. } = &mut n.content {
                *root = None;
                *gen += 1;
            }
            let (c, s) = (n.content.clone(), n.size);
            if let Some(f) = fh {
                if let Some(h) = self.0.handles.lock().unwrap().get_mut(&f.0) {
                    h.content = c;
                    h.size = s;
                }
            }
        }
        let n = t.nodes.get_mut(&ino.0).unwrap();
        if let Some(m) = mode {
            n.exec = m & 0o111 != 0;
        }
        if let Some(m) = mtime {
            n.mtime = match m {
                TimeOrNow::SpecificTime(st) => st
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
                TimeOrNow::Now => now_secs(),
            };
        }
        let attr = self.0.attr(ino.0, n);
        self.0.changed(&t);
        self.0.request_publish();
        reply.attr(&TTL, &attr);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, kind: EKind, content: Content, target: Option<&str>) -> Node {
        Node {
            path: path.into(),
            kind,
            size: 7,
            content,
            exec: true,
            mtime: 1_700_000_000,
            target: target.map(str::to_string),
            children: BTreeMap::new(),
        }
    }

    #[test]
    fn overlay_state_roundtrips_any_name() {
        let mut t = Tree::default();
        t.nodes
            .insert(1, node("", EKind::Dir, Content::Cas(XetHash::ZERO), None));
        t.nodes.insert(
            2,
            node(
                "dir\twith tab",
                EKind::Dir,
                Content::Cas(XetHash::ZERO),
                None,
            ),
        );
        t.nodes.insert(
            3,
            node(
                "dir\twith tab/ünï\nline.bin",
                EKind::File,
                Content::Cas(XetHash([9; 32])),
                None,
            ),
        );
        t.nodes.insert(
            4,
            node(
                "dirty.txt",
                EKind::File,
                Content::Overlay {
                    path: PathBuf::from("/ov/f4 x"),
                    root: None,
                    gen: 3,
                },
                None,
            ),
        );
        t.nodes.insert(
            5,
            node(
                "link",
                EKind::Link,
                Content::Cas(XetHash::ZERO),
                Some("target\twith tab"),
            ),
        );
        let back = decode_state(&encode_state(&t)).expect("decodes");
        assert_eq!(back.len(), 4);
        let by: HashMap<&str, &(Entry, Option<PathBuf>)> =
            back.iter().map(|e| (e.0.path.as_str(), e)).collect();
        assert_eq!(by["dir\twith tab/ünï\nline.bin"].0.root, [9; 32]);
        assert_eq!(by["dirty.txt"].1.as_deref(), Some(Path::new("/ov/f4 x")));
        assert_eq!(by["link"].0.target.as_deref(), Some("target\twith tab"));
        assert!(by["dirty.txt"].0.executable && by["dirty.txt"].0.size == 7);
        assert_eq!(decode_state(b"garbage"), None);
    }
}
