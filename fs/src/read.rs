//! The read path of a share mount: Merkle walks, chunk fetches from peers, caches, read-ahead.
//!
//! [`Reader`] owns its caches; each is a leaf lock (held for a lookup or an insert, never across
//! I/O, a fetch or another lock). Nothing here touches the mount's state lock: callers copy what
//! they need out of it first, so a read that waits on a peer never stalls other operations.

use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{Head, ShareId};
use ccbt_xet::listing::{self, Entry};
use ccbt_xet::net::{Kind, ShareNet};
use ccbt_xet::tree;
use fuser::Errno;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Stands for "size not known" (a listing root): large enough to cover any tree.
pub(crate) const UNKNOWN_SIZE: u64 = u64::MAX / 4;
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD: usize = 8;
/// Chunk hashes remembered as verified (32 bytes each) before the set starts over.
const VERIFIED_MAX: usize = 1 << 18;
/// Chunks kept in the read cache (up to 128 KiB each).
const CHUNK_CACHE: usize = 64;
/// Parsed nodes kept before the node cache is cleared.
const NODE_CACHE: usize = 1 << 16;

/// Logs an error and gives the errno for the kernel.
pub(crate) fn errno(e: impl std::fmt::Display, code: Errno) -> Errno {
    tracing::warn!("{e}");
    code
}

/// The errno of an I/O error (EIO when it has none): a full disk is ENOSPC, a file too large
/// EFBIG, as the user expects.
pub(crate) fn io_errno(e: std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(c) => {
            tracing::debug!("{e}");
            Errno::from_i32(c)
        }
        None => errno(e, Errno::EIO),
    }
}

/// A chunk of a file: where it starts in the file, its hash, its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkSpan {
    pub offset: u64,
    pub hash: XetHash,
    pub len: u64,
}

/// The slice `[from, from + dst.len())` of a chunk, to be copied into `dst`.
struct Part<'a> {
    hash: XetHash,
    chunk_len: u64,
    from: usize,
    dst: &'a mut [u8],
}

pub(crate) struct Reader {
    pub node: Arc<ShareNet>,
    pub rt: tokio::runtime::Handle,
    pub share: ShareId,
    pub timeout: Duration,
    /// Parsed (and verified) Merkle nodes: a read walks a few levels, and random readers walk the
    /// same upper levels again and again.
    node_cache: Mutex<HashMap<XetHash, Arc<Vec<ccbt_xet::hash::MerkleEntry>>>>,
    /// The most recently read chunks (verified), for readers that hit the same chunk many times.
    chunk_cache: Mutex<VecDeque<(XetHash, Arc<Vec<u8>>)>>,
    /// Local chunks already checked against their hash by this mount.
    verified: Mutex<HashSet<XetHash>>,
    /// `[fs] cache_limit_mib`.
    pub(crate) limit: Arc<crate::cachelimit::CacheLimit>,
}

impl Reader {
    pub fn new(
        node: Arc<ShareNet>,
        rt: tokio::runtime::Handle,
        share: ShareId,
        timeout: Duration,
    ) -> Reader {
        Reader {
            node,
            rt,
            share,
            timeout,
            node_cache: Mutex::new(HashMap::new()),
            chunk_cache: Mutex::new(VecDeque::new()),
            verified: Mutex::new(HashSet::new()),
            limit: Default::default(),
        }
    }

    /// Fetches a hash's bytes (node or chunk) from peers, storing it in the CAS.
    fn fetch(&self, h: XetHash, kind: Kind) -> Result<(Kind, Vec<u8>), Errno> {
        let node = self.node.clone();
        let share = self.share;
        let timeout = self.timeout;
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
                        self.limit.fetched(&self.node, data.len() as u64);
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

    /// The chunks of a file that overlap `[off, end)`, fetching the nodes on the way down from
    /// the root as needed.
    pub fn chunks_for(
        &self,
        root: XetHash,
        size: u64,
        off: u64,
        end: u64,
    ) -> Result<Vec<ChunkSpan>, Errno> {
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
                None => out.push(ChunkSpan {
                    offset: base,
                    hash: h,
                    len,
                }),
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

    pub fn chunk(&self, h: XetHash) -> Result<Arc<Vec<u8>>, Errno> {
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
    fn fill_parts(&self, parts: Vec<Part<'_>>) -> Result<(), Errno> {
        for Part {
            hash: h,
            chunk_len: clen,
            from: s,
            dst,
        } in parts
        {
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

    pub fn read_cas(
        &self,
        root: XetHash,
        size: u64,
        off: u64,
        len: u32,
        ahead: Option<&mut u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let t0 = std::time::Instant::now();
        let r = self.read_cas_timed(root, size, off, len, ahead, out);
        crate::stats::observe(t0.elapsed());
        r
    }

    fn read_cas_timed(
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
        // A large file may have holders outside this share's swarm (P2P CAS).
        self.node.want_file(root.0, size);
        let chunks = self.chunks_for(root, size, off, end)?;
        for c in &chunks {
            self.limit.used(&c.hash.0);
        }
        let at = out.len();
        out.resize(at + (end - off) as usize, 0);
        // Each chunk's slice of the reply.
        let mut parts = Vec::with_capacity(chunks.len());
        let mut rest = &mut out[at..];
        for c in &chunks {
            let s = (off.max(c.offset) - c.offset) as usize;
            let e = (end.min(c.offset + c.len) - c.offset) as usize;
            let (dst, r) = rest.split_at_mut(e - s);
            rest = r;
            parts.push(Part {
                hash: c.hash,
                chunk_len: c.len,
                from: s,
                dst,
            });
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
                    .map(|c| c.hash)
                    .filter(|h| !self.node.shares.store.has_chunk(&h.0).unwrap_or(true))
                    .collect();
                let node = self.node.clone();
                let share = self.share;
                for h in store_missing {
                    let node = node.clone();
                    let limit = self.limit.clone();
                    self.rt.spawn(async move {
                        if let Ok((_, d)) = node.fetch(&share, h, Kind::Chunk, 0).await {
                            // The store write (and any eviction) runs off the runtime's workers.
                            let n = node.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                let r = n.shares.store.put_chunk_cached(&h.0, &d);
                                limit.fetched(&n, d.len() as u64);
                                r
                            })
                            .await;
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// A version's listing, fetched as needed.
    pub fn load_listing(&self, head: &Head) -> Result<Vec<Entry>, Errno> {
        let mut v = self.load_listing_all(head)?;
        v.retain(|e| !e.is_gone());
        Ok(v)
    }

    /// A version's listing with its tombstones (several writers).
    pub fn load_listing_all(&self, head: &Head) -> Result<Vec<Entry>, Errno> {
        self.listing_at(XetHash(head.value.root))
    }

    /// The listing stored under `root`, tombstones included, fetched as needed.
    pub fn listing_at(&self, root: XetHash) -> Result<Vec<Entry>, Errno> {
        let size = UNKNOWN_SIZE; // the listing's size is not in the head: cover everything
        let chunks = self.chunks_for(root, size, 0, size)?;
        let mut bytes = Vec::new();
        for c in chunks {
            bytes.extend_from_slice(&self.chunk(c.hash)?);
        }
        listing::decode_all(&bytes).map_err(|e| errno(e, Errno::EIO))
    }

    /// Makes sure every chunk of a file is in the store (fetching what is missing).
    pub fn fetch_all(&self, root: XetHash, size: u64) -> Result<(), Errno> {
        self.chunks_for(root, size, 0, size)?
            .iter()
            .try_for_each(|c| self.chunk(c.hash).map(|_| ()))
    }
}
