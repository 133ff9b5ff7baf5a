//! Files in the CAS: a file is its Merkle tree (docs/formats.md). Storing chunks a file's bytes and
//! collects its internal nodes; reading walks the tree from the root and verifies every chunk.

use crate::file::{hash_file_parallel_with, ChunkInfo, FileDigest, FileHasher};
use crate::hash::{chunk_hash, internal_node, merkle_tree, node_text, MerkleEntry, XetHash};
use ccbt_cas::{CasError, ChunkBatch, Store};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Staged chunk bytes are handed to the writer thread in batches of about this size.
const BATCH_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Cas(#[from] CasError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("data for {0} is missing from the store")]
    Missing(XetHash),
    #[error("stored data for {0} is damaged (hash mismatch); run `ccbt cas verify`")]
    Damaged(XetHash),
    #[error("Merkle node {0} is malformed: {1}")]
    BadNode(XetHash, String),
}

/// Internal nodes of a file, ready for a version batch: (hash, text).
pub type NodeList = Vec<([u8; 32], Vec<u8>)>;

/// Collects the internal nodes of the tree over `chunks` and returns the root.
pub fn tree_nodes(chunks: &[ChunkInfo], out: &mut NodeList) -> XetHash {
    let leaves: Vec<MerkleEntry> = chunks.iter().map(ChunkInfo::node).collect();
    merkle_tree(&leaves, |n, children| {
        out.push((n.hash.0, node_text(children).into_bytes()))
    })
    .hash
}

/// Stores a version's listing: one chunk per piece ([`crate::listing::encode_pieces`]), so a
/// version that changes a few entries stores a few small chunks, not whole 64 KiB ones. Returns
/// the listing's Merkle root and size.
pub fn store_listing(
    store: &Store,
    entries: &[crate::listing::Entry],
    nodes: &mut NodeList,
) -> Result<(XetHash, u64), TreeError> {
    let mut batch = ChunkBatch::default();
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    for p in crate::listing::encode_pieces(entries) {
        let hash = crate::hash::chunk_hash(&p);
        store.stage_chunk(&mut batch, &hash.0, &p)?;
        chunks.push(ChunkInfo {
            offset,
            len: p.len() as u32,
            hash,
        });
        offset += p.len() as u64;
    }
    store.write_chunks(batch)?;
    Ok((tree_nodes(&chunks, nodes), offset))
}

/// Chunks, hashes and stores a file on all cores; only chunks the store lacks are written. (Small
/// files go through [`store_reader`]: many of them are stored in parallel, one per core.)
pub fn store_file(
    store: &Store,
    file: &std::fs::File,
    progress: &AtomicU64,
    nodes: &mut NodeList,
) -> Result<FileDigest, TreeError> {
    // Hashing and store writes overlap: full batches go to a writer thread (two in flight at most,
    // which bounds memory), so the cores keep chunking while RocksDB copies bytes.
    let (tx, rx) = std::sync::mpsc::sync_channel::<ChunkBatch>(1);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<(), CasError> {
            for b in rx {
                store.write_chunks(b)?;
            }
            Ok(())
        });
        let mut batch = ChunkBatch::default();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut err: Option<CasError> = None;
        let mut sink = |c: &ChunkInfo, data: &[u8]| {
            progress.fetch_add(data.len() as u64, Ordering::Relaxed);
            if err.is_some() || !seen.insert(c.hash.0) {
                return;
            }
            if let Err(e) = store.stage_chunk(&mut batch, &c.hash.0, data) {
                err = Some(e);
            } else if batch.len_bytes() >= BATCH_BYTES
                && tx.send(std::mem::take(&mut batch)).is_err()
            {
                err = Some(CasError::Corrupt("chunk writer stopped".into()));
            }
        };
        let digest = hash_file_parallel_with(file, &mut sink);
        let _ = tx.send(batch);
        drop(tx);
        let written = writer.join().expect("chunk writer panicked");
        let digest = digest?;
        // The writer's own error (a full disk...) is what stopped it: report that first.
        written?;
        if let Some(e) = err {
            return Err(e.into());
        }
        let root = tree_nodes(&digest.chunks, nodes);
        debug_assert_eq!(root, digest.merkle_root);
        Ok(digest)
    })
}

/// Chunks, hashes and stores a reader's bytes on one thread; only chunks the store lacks are
/// written. The path for small inputs (many small files are stored in parallel, one per core): no
/// writer thread and a modest buffer, since both would cost more than the file itself.
pub fn store_reader<R: Read>(
    store: &Store,
    mut reader: R,
    progress: &AtomicU64,
    nodes: &mut NodeList,
) -> Result<FileDigest, TreeError> {
    let mut batch = ChunkBatch::default();
    let mut err: Option<CasError> = None;
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut sink = |c: &ChunkInfo, data: &[u8]| {
        progress.fetch_add(data.len() as u64, Ordering::Relaxed);
        if err.is_some() || !seen.insert(c.hash.0) {
            return;
        }
        let r = store
            .stage_chunk(&mut batch, &c.hash.0, data)
            .and_then(|_| {
                if batch.len_bytes() >= BATCH_BYTES {
                    store.write_chunks(std::mem::take(&mut batch))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = r {
            err = Some(e);
        }
    };
    let mut h = FileHasher::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update_with(&buf[..n], &mut sink),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let digest = h.finish_with(&mut sink);
    if let Some(e) = err {
        return Err(e.into());
    }
    store.write_chunks(batch)?;
    tree_nodes(&digest.chunks, nodes);
    Ok(digest)
}

/// Parses a node's text into its children, strictly.
pub fn parse_node(hash: XetHash, text: &[u8]) -> Result<Vec<MerkleEntry>, TreeError> {
    let bad = |m: &str| TreeError::BadNode(hash, m.to_string());
    let s = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
    let mut out = Vec::new();
    for line in s.split_terminator('\n') {
        let (h, size) = line.split_once(" : ").ok_or_else(|| bad("bad line"))?;
        let h = XetHash::from_hex(h).ok_or_else(|| bad("bad child hash"))?;
        let size: u64 = size.parse().map_err(|_| bad("bad child size"))?;
        out.push(MerkleEntry { hash: h, size });
    }
    if out.is_empty() || !s.ends_with('\n') {
        return Err(bad("no children"));
    }
    if internal_node(&out).hash != hash {
        return Err(TreeError::Damaged(hash));
    }
    Ok(out)
}

/// Walks a file's tree, calling `leaf` with each chunk (hash, size) in order; `node` sees every
/// internal node hash. Nothing but node texts is read.
pub fn walk_tree(
    store: &Store,
    root: XetHash,
    size: u64,
    leaf: &mut dyn FnMut(XetHash, u64) -> Result<(), TreeError>,
    node: &mut dyn FnMut(XetHash),
) -> Result<(), TreeError> {
    if size == 0 {
        return Ok(());
    }
    match store.get_node(&root.0)? {
        Some(text) => {
            node(root);
            for c in parse_node(root, &text)? {
                walk_tree(store, c.hash, c.size, leaf, node)?;
            }
            Ok(())
        }
        None => leaf(root, size),
    }
}

/// A stored subtree: (offset in the file, hash, size).
pub type Span = (u64, XetHash, u64);

/// Children of a stored node with their offsets, or `None` for a chunk.
fn children(store: &Store, (off, h, size): Span) -> Result<Option<Vec<Span>>, TreeError> {
    if size == 0 {
        return Ok(Some(Vec::new()));
    }
    Ok(match store.get_node(&h.0)? {
        Some(text) => {
            let mut at = off;
            let mut v = Vec::new();
            for c in parse_node(h, &text)? {
                v.push((at, c.hash, c.size));
                at += c.size;
            }
            Some(v)
        }
        None => None,
    })
}

/// The chunks of `new` that are not at the same offset in `old`: what patching a copy of `old`
/// into `new` must write. Subtrees found unchanged at the same offset are skipped unread, so a
/// small edit in a large file costs a few node reads per tree level.
pub fn changed_leaves(
    store: &Store,
    old: (XetHash, u64),
    new: (XetHash, u64),
) -> Result<Vec<Span>, TreeError> {
    let mut out = Vec::new();
    diff(store, vec![(0, old.0, old.1)], (0, new.0, new.1), &mut out)?;
    Ok(out)
}

fn overlaps(a: &Span, b: &Span) -> bool {
    a.0 < b.0 + b.2 && b.0 < a.0 + a.2
}

fn diff(store: &Store, old: Vec<Span>, n: Span, out: &mut Vec<Span>) -> Result<(), TreeError> {
    if n.2 == 0 || old.iter().any(|o| o.0 == n.0 && o.1 == n.1) {
        return Ok(());
    }
    let mut olds: Vec<Span> = old.into_iter().filter(|o| overlaps(o, &n)).collect();
    let kids = children(store, n)?;
    // Bring the old side down to this item's granularity: old subtrees larger than it (or all
    // the way to chunks, when it is a chunk) are opened.
    loop {
        let mut opened = false;
        let mut next = Vec::with_capacity(olds.len());
        for o in olds {
            if o.2 > n.2 || (kids.is_none() && !(o.0 == n.0 && o.1 == n.1)) {
                if let Some(c) = children(store, o)? {
                    next.extend(c.into_iter().filter(|c| overlaps(c, &n)));
                    opened = true;
                    continue;
                }
            }
            next.push(o);
        }
        olds = next;
        if !opened {
            break;
        }
        if olds.iter().any(|o| o.0 == n.0 && o.1 == n.1) {
            return Ok(());
        }
    }
    match kids {
        Some(kids) => {
            for k in kids {
                diff(store, olds.clone(), k, out)?;
            }
        }
        None => out.push(n),
    }
    Ok(())
}

/// Every chunk of a stored file, with its offset.
pub fn leaves(store: &Store, root: XetHash, size: u64) -> Result<Vec<Span>, TreeError> {
    let mut out = Vec::new();
    let mut off = 0u64;
    walk_tree(
        store,
        root,
        size,
        &mut |h, len| {
            out.push((off, h, len));
            off += len;
            Ok(())
        },
        &mut |_| {},
    )?;
    Ok(out)
}

/// What [`store_incremental`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incremental {
    pub root: XetHash,
    /// File bytes read and re-chunked (the rest reused the base version's chunks).
    pub bytes_read: u64,
    pub chunks_reused: u64,
}

/// Chunks and stores a file that is a known base version with some byte ranges rewritten
/// (`dirty`, in file offsets; bytes outside them equal the base's at the same offset). Only the
/// regions around the dirty ranges are read: chunking restarts at the base cut before a dirty
/// range and stops at the first new cut past it that is also a base cut with a clean 64-byte
/// window, from where the base chunks are reused. The result is exactly what chunking the whole
/// file gives (content-defined cuts depend only on the bytes since the last cut).
pub fn store_incremental(
    store: &Store,
    base: (XetHash, u64),
    file: &std::fs::File,
    new_size: u64,
    dirty: &[(u64, u64)],
    nodes: &mut NodeList,
) -> Result<Incremental, TreeError> {
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;
    let (base_root, base_size) = base;
    let base_chunks = leaves(store, base_root, base_size)?;
    let by_start: HashMap<u64, usize> = base_chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.0, i))
        .collect();
    // A base cut is a content cut unless it is the base's end, which EOF forced.
    let real_cut = |p: u64| p < base_size || (p == base_size && new_size == base_size);
    let mut ranges: Vec<(u64, u64)> = dirty.iter().filter(|r| r.1 > r.0).copied().collect();
    if new_size > base_size {
        ranges.push((base_size, new_size));
    }
    ranges.sort_unstable();
    let dirty_in = |a: u64, b: u64| ranges.iter().any(|r| r.0 < b && a < r.1);
    let next_dirty = |pos: u64| {
        ranges
            .iter()
            .filter(|r| r.1 > pos)
            .map(|r| r.0.max(pos))
            .min()
            .unwrap_or(u64::MAX)
    };
    let mut out: Vec<ChunkInfo> = Vec::new();
    let mut stats = Incremental::default();
    let mut batch = ChunkBatch::default();
    let mut pos = 0u64;
    while pos < new_size {
        // Reuse base chunks up to the next dirty byte.
        let stop = next_dirty(pos).min(new_size);
        while let Some(&i) = by_start.get(&pos) {
            let (o, h, len) = base_chunks[i];
            if o + len > stop || !real_cut(o + len) {
                break;
            }
            out.push(ChunkInfo {
                offset: o,
                len: len as u32,
                hash: h,
            });
            stats.chunks_reused += 1;
            pos = o + len;
        }
        if pos >= new_size {
            break;
        }
        // Re-chunk from this cut until the cuts line up with the base again (or EOF).
        let first_dirty = next_dirty(pos);
        let mut h = FileHasher::new();
        let mut made: Vec<ChunkInfo> = Vec::new();
        let mut stage_err = None;
        let mut at = pos;
        let mut buf = vec![0u8; 128 * 1024];
        let resync = loop {
            let n = (new_size - at).min(buf.len() as u64) as usize;
            let mut sink = |c: &ChunkInfo, d: &[u8]| {
                made.push(ChunkInfo {
                    offset: pos + c.offset,
                    ..*c
                });
                if let Err(e) = store.stage_chunk(&mut batch, &c.hash.0, d) {
                    stage_err = Some(e);
                }
            };
            if n == 0 {
                h.finish_with(&mut sink);
                break None;
            }
            file.read_exact_at(&mut buf[..n], at)?;
            h.update_with(&buf[..n], &mut sink);
            at += n as u64;
            stats.bytes_read += n as u64;
            let found = made.iter().position(|c| {
                let end = c.offset + c.len as u64;
                end > first_dirty
                    && end < new_size
                    && by_start.contains_key(&end)
                    && real_cut(end)
                    && !dirty_in(end.saturating_sub(crate::chunker::WINDOW as u64), end)
            });
            if let Some(k) = found {
                break Some(k);
            }
        };
        if let Some(e) = stage_err {
            return Err(e.into());
        }
        if let Some(k) = resync {
            made.truncate(k + 1);
        }
        pos = made
            .last()
            .map(|c| c.offset + c.len as u64)
            .unwrap_or(new_size);
        out.extend(made);
    }
    store.write_chunks(batch)?;
    stats.root = tree_nodes(&out, nodes);
    Ok(stats)
}

/// Reads a chunk and checks it against its hash.
pub fn read_chunk(store: &Store, h: XetHash) -> Result<Vec<u8>, TreeError> {
    let data = store.get_chunk(&h.0)?.ok_or(TreeError::Missing(h))?;
    if chunk_hash(&data) != h {
        return Err(TreeError::Damaged(h));
    }
    Ok(data)
}

/// Writes a file's bytes to `out`. With `sparse`, all-zero chunks become holes (seeks); the
/// caller sets the final length.
pub fn read_into<W: Write + Seek>(
    store: &Store,
    root: XetHash,
    size: u64,
    out: &mut W,
    sparse: bool,
) -> Result<(), TreeError> {
    let mut written = 0u64;
    walk_tree(
        store,
        root,
        size,
        &mut |h, len| {
            let data = read_chunk(store, h)?;
            if data.len() as u64 != len {
                return Err(TreeError::Damaged(h));
            }
            if sparse && data.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(len as i64))?;
            } else {
                out.write_all(&data)?;
            }
            written += len;
            Ok(())
        },
        &mut |_| {},
    )?;
    if written != size {
        return Err(TreeError::Damaged(root));
    }
    Ok(())
}

/// Reads a whole (small) file, such as a listing, into memory.
pub fn read_to_vec(store: &Store, root: XetHash, size: u64) -> Result<Vec<u8>, TreeError> {
    let mut c = std::io::Cursor::new(Vec::with_capacity(size as usize));
    read_into(store, root, size, &mut c, false)?;
    Ok(c.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_bytes(store: &Store, data: &[u8]) -> (XetHash, u64) {
        let mut nodes = NodeList::new();
        let d = store_reader(store, data, &AtomicU64::new(0), &mut nodes).unwrap();
        for (h, t) in nodes {
            store.put_node(&h, &t).unwrap();
        }
        (d.merkle_root, data.len() as u64)
    }

    fn all_leaves(store: &Store, (root, size): (XetHash, u64)) -> Vec<Span> {
        leaves(store, root, size).unwrap()
    }

    #[test]
    fn incremental_rechunking_equals_full_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut x = 11u64;
        let mut rnd = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let base = rnd(12 << 20);
        let old = store_bytes(&store, &base);
        let patch = rnd(300_000);
        type Edit = Box<dyn Fn(&mut Vec<u8>) -> Vec<(u64, u64)>>;
        let write_at = |at: usize, len: usize| -> Edit {
            let p = patch[..len].to_vec();
            Box::new(move |f: &mut Vec<u8>| {
                if f.len() < at + len {
                    f.resize(at + len, 0);
                }
                f[at..at + len].copy_from_slice(&p);
                vec![(at as u64, (at + len) as u64)]
            })
        };
        let cases: Vec<(&str, Vec<Edit>)> = vec![
            ("1 KiB in the middle", vec![write_at(6 << 20, 1024)]),
            ("first bytes", vec![write_at(0, 10)]),
            (
                "two far apart",
                vec![write_at(1 << 20, 5000), write_at(9 << 20, 70_000)],
            ),
            ("append", vec![write_at(12 << 20, 300_000)]),
            (
                "hole past the end",
                vec![write_at((12 << 20) + 50_000, 4096)],
            ),
            (
                "overlapping the end",
                vec![write_at((12 << 20) - 100, 2000)],
            ),
            (
                "truncate",
                vec![Box::new(|f: &mut Vec<u8>| {
                    f.truncate(5_000_000);
                    vec![]
                })],
            ),
            (
                "truncate then write",
                vec![
                    Box::new(|f: &mut Vec<u8>| {
                        f.truncate(7_777_777);
                        vec![]
                    }),
                    write_at(3 << 20, 100),
                ],
            ),
        ];
        for (name, edits) in cases {
            let mut f = base.clone();
            let mut dirty = Vec::new();
            for e in &edits {
                dirty.extend(e(&mut f));
            }
            let path = dir.path().join("file");
            std::fs::write(&path, &f).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let mut nodes = NodeList::new();
            let inc =
                store_incremental(&store, old, &file, f.len() as u64, &dirty, &mut nodes).unwrap();
            for (h, t) in nodes {
                store.put_node(&h, &t).unwrap();
            }
            let full = store_bytes(&store, &f);
            assert_eq!(inc.root, full.0, "{name}");
            // Every byte readable from the store again.
            let mut back = std::io::Cursor::new(Vec::new());
            read_into(&store, inc.root, f.len() as u64, &mut back, false).unwrap();
            assert!(back.into_inner() == f, "{name}: stored bytes differ");
            if name == "1 KiB in the middle" {
                assert!(
                    inc.bytes_read <= 512 * 1024,
                    "{name}: read {}",
                    inc.bytes_read
                );
                assert!(inc.chunks_reused > 100, "{name}: {inc:?}");
            }
        }
    }

    #[test]
    fn changed_leaves_equals_the_full_leaf_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut x = 7u64;
        let base: Vec<u8> = (0..24 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let old = store_bytes(&store, &base);
        let mut overwrite = base.clone();
        overwrite[12 << 20..(12 << 20) + 1024].fill(0xAB);
        let mut insert = base.clone();
        insert.splice(5 << 20..5 << 20, [1u8; 100]);
        let truncated = base[..9 << 20].to_vec();
        for (name, new) in [
            ("overwrite", overwrite),
            ("insert", insert),
            ("truncate", truncated),
        ] {
            let new = store_bytes(&store, &new);
            let had: std::collections::HashSet<(u64, XetHash)> =
                all_leaves(&store, old).iter().map(|l| (l.0, l.1)).collect();
            let want: Vec<Span> = all_leaves(&store, new)
                .into_iter()
                .filter(|l| !had.contains(&(l.0, l.1)))
                .collect();
            let got = changed_leaves(&store, old, new).unwrap();
            assert_eq!(got, want, "{name}");
            if name == "overwrite" {
                assert!(
                    got.len() <= 3,
                    "a 1 KiB overwrite changed {} chunks",
                    got.len()
                );
            }
        }
        assert!(changed_leaves(&store, old, old).unwrap().is_empty());
    }
}
