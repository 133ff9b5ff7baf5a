//! Files on demand: which files are local, pins that keep files local, and evictions (by
//! command, or past `[fs] cache_limit_mib`, least recently used first).
//!
//! What is never evicted ([`protected`]): the chunks of pinned files; the listings of every
//! version held; and the owner's data: every version of a share whose key this node holds,
//! except the newest when a connected peer holds that version whole (the caller says which
//! through `peer_holds`). Eviction drops chunks only; Merkle nodes stay (they are small and let
//! a read find what to fetch).

use crate::hash::XetHash;
use crate::head::{share_id_hex, Head, ShareId};
use crate::listing::{Entry, Kind};
use crate::shares::{Result, ShareError, Shares};
use crate::tree;
use ccbt_cas::Store;
use std::collections::{HashMap, HashSet};

/// How much of a file is in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Local {
    pub local: u64,
    pub total: u64,
}

impl Local {
    /// `full`, `partial` or `none`, as the `user.ccbt.local` attribute says.
    pub fn state(&self) -> &'static str {
        if self.local >= self.total {
            "full"
        } else if self.local == 0 {
            "none"
        } else {
            "partial"
        }
    }
}

/// Walks a file's tree: chunks held count as local; a missing node counts its whole subtree
/// as not local.
pub fn file_local(store: &Store, root: [u8; 32], size: u64) -> Local {
    let mut l = Local {
        local: 0,
        total: size,
    };
    if size == 0 {
        return l;
    }
    let mut stack = vec![(XetHash(root), size)];
    while let Some((h, len)) = stack.pop() {
        match store.get_node(&h.0) {
            Ok(Some(text)) => match tree::parse_node(h, &text) {
                Ok(kids) => stack.extend(kids.iter().map(|k| (k.hash, k.size))),
                Err(_) => continue,
            },
            _ => {
                if matches!(store.chunk_len(&h.0), Ok(Some(_))) {
                    l.local += len;
                }
            }
        }
    }
    l
}

/// The chunk hashes of a file that the store knows of (through its local nodes).
fn file_chunks(store: &Store, root: [u8; 32], size: u64, out: &mut HashSet<[u8; 32]>) {
    if size == 0 || root == [0; 32] {
        return;
    }
    let mut stack = vec![XetHash(root)];
    while let Some(h) = stack.pop() {
        match store.get_node(&h.0) {
            Ok(Some(text)) => {
                if let Ok(kids) = tree::parse_node(h, &text) {
                    stack.extend(kids.iter().map(|k| k.hash));
                }
            }
            _ => {
                out.insert(h.0);
            }
        }
    }
}

/// `paths`, or the whole share ("") when none is given.
fn paths_or_all(paths: &[String]) -> Vec<String> {
    if paths.is_empty() {
        vec![String::new()]
    } else {
        paths.to_vec()
    }
}

/// A pin: a path of a share's version (the head travels with the pin, so a follower that keeps
/// no versions of its own still knows what it pinned).
#[derive(Debug, Clone)]
pub struct Pin {
    pub share: ShareId,
    pub path: String,
    /// Follows the share: each newer version's files at `path` are kept local too.
    pub follow: bool,
    pub head: Head,
}

pub fn pins(shares: &Shares) -> Vec<Pin> {
    shares
        .store
        .file_pins()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(share, path, follow, head)| {
            let head = Head::decode(&head).ok()?;
            head.verify_for(&share).ok()?;
            Some(Pin {
                share,
                path,
                follow,
                head,
            })
        })
        .collect()
}

/// Files a pin keeps local.
fn pinned_entries(shares: &Shares) -> Vec<(ShareId, Entry)> {
    let mut out = Vec::new();
    for Pin {
        share: id,
        path,
        head,
        ..
    } in pins(shares)
    {
        let Ok(listing) = shares.listing(&head) else {
            continue;
        };
        out.extend(
            crate::listing::under(&listing, &path)
                .filter(|e| e.kind == Kind::File)
                .map(|e| (id, e.clone())),
        );
    }
    out
}

/// The files of version `head` at `paths` ("" or none: everything); its listing must be local.
pub fn files_at(shares: &Shares, head: &Head, paths: &[String]) -> Result<Vec<Entry>> {
    let listing = shares.listing(head)?;
    let mut files = Vec::new();
    for p in &paths_or_all(paths) {
        let p = p.trim_matches('/');
        let sel: Vec<&Entry> = crate::listing::under(&listing, p).collect();
        if sel.is_empty() {
            return Err(ShareError::Invalid(format!(
                "{p:?} is not in version {} of share {}",
                head.seq,
                share_id_hex(&head.share_id())
            )));
        }
        files.extend(sel.into_iter().filter(|e| e.kind == Kind::File).cloned());
    }
    Ok(files)
}

/// Pins `paths` ("" or none: everything) of version `head` (`follow`: and of each newer
/// version). Its listing must be local. Returns the files to make local.
pub fn pin(shares: &Shares, head: &Head, follow: bool, paths: &[String]) -> Result<Vec<Entry>> {
    let id = &head.share_id();
    let files = files_at(shares, head, paths)?;
    for p in &paths_or_all(paths) {
        shares
            .store
            .put_file_pin(id, p.trim_matches('/'), follow, &head.encode())?;
    }
    Ok(files)
}

/// Removes pins; returns how many there were.
pub fn unpin(shares: &Shares, id: &ShareId, paths: &[String]) -> Result<usize> {
    let mut n = 0;
    for p in paths_or_all(paths) {
        n += shares.store.delete_file_pin(id, p.trim_matches('/'))? as usize;
    }
    Ok(n)
}

/// Chunks that are never evicted (see the module doc).
pub fn protected(shares: &Shares, peer_holds: &dyn Fn(&ShareId, u64) -> bool) -> HashSet<[u8; 32]> {
    let store = &shares.store;
    let mut keep = HashSet::new();
    for (_, e) in pinned_entries(shares) {
        file_chunks(store, e.root, e.size, &mut keep);
    }
    for p in pins(shares) {
        file_chunks(store, p.head.value.root, u64::MAX, &mut keep);
    }
    for (id, rec) in shares.list().unwrap_or_default() {
        for v in shares.versions(&id).unwrap_or_default() {
            let Ok(head) = crate::head::Head::decode(&v.head) else {
                continue;
            };
            // The listing itself (chunks, even of one chunk).
            file_chunks(store, head.value.root, u64::MAX, &mut keep);
            let owner_only = rec.owner && !(head.seq == rec.seq && peer_holds(&id, head.seq));
            if owner_only {
                if let Ok(listing) = shares.listing(&head) {
                    for e in listing.iter().filter(|e| e.kind == Kind::File) {
                        file_chunks(store, e.root, e.size, &mut keep);
                    }
                }
            }
        }
    }
    keep
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictReport {
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// Files left local because a pin keeps them.
    pub pinned: u64,
    /// The chunks dropped (a cache that tracks them lets them go).
    pub evicted: Vec<[u8; 32]>,
}

/// Drops the local chunks of `paths` (none: every file) of version `head` (the newest known),
/// except what [`protected`] keeps. An owned share whose newest version no peer holds whole is
/// refused.
pub fn evict(
    shares: &Shares,
    head: &Head,
    paths: &[String],
    peer_holds: &dyn Fn(&ShareId, u64) -> bool,
) -> Result<EvictReport> {
    let id = &head.share_id();
    if shares.signing_key(id)?.is_some() && !peer_holds(id, head.seq) {
        return Err(ShareError::Invalid(format!(
            "refusing to evict: this node owns share {} and no connected peer holds version {} \
             whole, so these chunks may be the only copy (run a follower of the share first)",
            share_id_hex(id),
            head.seq
        )));
    }
    let files = files_at(shares, head, paths)?;
    let keep = protected(shares, peer_holds);
    let mut r = EvictReport::default();
    let mut drop = HashSet::new();
    for e in files {
        let mut c = HashSet::new();
        file_chunks(&shares.store, e.root, e.size, &mut c);
        // Only chunks held here count.
        c.retain(|h| matches!(shares.store.chunk_len(h), Ok(Some(_))));
        if c.is_empty() {
            continue;
        }
        if c.iter().all(|h| keep.contains(h)) {
            r.pinned += 1;
            continue;
        }
        r.files += 1;
        drop.extend(c.into_iter().filter(|h| !keep.contains(h)));
    }
    let drop: Vec<[u8; 32]> = drop.into_iter().collect();
    let (n, bytes) = shares.store.delete_chunks(&drop)?;
    r.chunks = n;
    r.bytes = bytes;
    r.evicted = drop;
    Ok(r)
}

/// Local chunk bytes (indexed and not yet indexed).
pub fn local_bytes(store: &Store) -> u64 {
    store.stats().map_or(0, |s| s.chunk_bytes) + store.unindexed_bytes()
}

/// Evicts chunks that are not protected, least recently used first (`last_use`: a tick per
/// chunk read in this process; chunks never read here go first), until the store's chunk
/// bytes are at most `limit`.
pub fn enforce_limit(
    shares: &Shares,
    limit: u64,
    last_use: &HashMap<[u8; 32], u64>,
    keep: &HashSet<[u8; 32]>,
) -> Result<EvictReport> {
    let mut r = EvictReport::default();
    // Cached reads are indexed first, so every chunk is a candidate.
    shares.store.commit_cached()?;
    let mut have = local_bytes(&shares.store);
    if have <= limit {
        return Ok(r);
    }
    let mut cands: Vec<(u64, [u8; 32], u32)> = shares
        .store
        .chunk_list()?
        .into_iter()
        .filter(|(h, _)| !keep.contains(h))
        .map(|(h, len)| (last_use.get(&h).copied().unwrap_or(0), h, len))
        .collect();
    cands.sort_unstable();
    let mut drop = Vec::new();
    for (_, h, len) in cands {
        if have <= limit {
            break;
        }
        drop.push(h);
        have = have.saturating_sub(len as u64);
    }
    let (n, bytes) = shares.store.delete_chunks(&drop)?;
    r.chunks = n;
    r.bytes = bytes;
    r.evicted = drop;
    Ok(r)
}

/// Per share: (local bytes, total bytes, pinned bytes) of the files of version `head`.
pub fn share_residency(shares: &Shares, head: &Head) -> Result<(u64, u64, u64)> {
    let id = &head.share_id();
    let listing = shares.listing(head)?;
    let pins: HashSet<[u8; 32]> = pinned_entries(shares)
        .into_iter()
        .filter(|(s, _)| s == id)
        .map(|(_, e)| e.root)
        .collect();
    let (mut local, mut total, mut pinned) = (0, 0, 0);
    for e in listing.iter().filter(|e| e.kind == Kind::File) {
        let l = file_local(&shares.store, e.root, e.size);
        local += l.local;
        total += e.size;
        if pins.contains(&e.root) {
            pinned += e.size;
        }
    }
    Ok((local, total, pinned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shares::ShareChoice;
    use std::sync::atomic::AtomicU64;

    fn publish(dir: &std::path::Path) -> (Shares, Head, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        let shares = Shares::open(data.path()).unwrap();
        let r = shares
            .publish(dir, ShareChoice::New, &AtomicU64::new(0))
            .unwrap();
        let head = shares.head(&r.share, None).unwrap();
        (shares, head, data)
    }

    #[test]
    fn evict_keeps_pins_and_the_owners_only_copy() {
        let src = tempfile::tempdir().unwrap();
        let rnd = |n: usize, seed: u64| -> Vec<u8> {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        std::fs::write(src.path().join("a"), rnd(300_000, 1)).unwrap();
        std::fs::write(src.path().join("b"), rnd(200_000, 2)).unwrap();
        let (shares, head, _d) = publish(src.path());
        let id = head.share_id();
        let files = files_at(&shares, &head, &[]).unwrap();
        let a = files.iter().find(|e| e.path == "a").unwrap().clone();
        assert_eq!(file_local(&shares.store, a.root, a.size).state(), "full");
        // The owner's only copy: refused.
        let e = evict(&shares, &head, &[], &|_, _| false).unwrap_err();
        assert!(e.to_string().contains("only copy"), "{e}");
        // A peer holds it; the pinned file stays.
        pin(&shares, &head, true, &["a".into()]).unwrap();
        let r = evict(&shares, &head, &[], &|s, q| s == &id && q == head.seq).unwrap();
        assert_eq!((r.files, r.pinned), (1, 1), "{r:?}");
        assert_eq!(file_local(&shares.store, a.root, a.size).state(), "full");
        let b = files.iter().find(|e| e.path == "b").unwrap();
        assert_eq!(file_local(&shares.store, b.root, b.size).state(), "none");
        let (local, total, pinned) = share_residency(&shares, &head).unwrap();
        assert_eq!((local, total, pinned), (300_000, 500_000, 300_000));
        // The listing is never evicted: the version still reads.
        assert!(shares.listing(&head).is_ok());
        assert_eq!(unpin(&shares, &id, &["a".into()]).unwrap(), 1);
        // The cache limit: everything unprotected goes, least recently used first.
        let keep = protected(&shares, &|_, _| true);
        let r = enforce_limit(&shares, 0, &HashMap::new(), &keep).unwrap();
        assert!(r.bytes >= 300_000, "{r:?}");
        assert_eq!(file_local(&shares.store, a.root, a.size).state(), "none");
        assert!(shares.listing(&head).is_ok());
    }
}
