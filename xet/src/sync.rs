//! The sync engine: bring a version of a share into the local CAS and a plain directory.
//!
//! Trees are resolved level by level from their roots: whatever the CAS already holds (from any
//! share) is used as is, everything else is requested from peers in parallel (bounded), verified
//! and stored. Files are written into a hidden staging directory inside the target and renamed into
//! place, so no partial file is ever visible; files the previous version had and this one lacks are
//! removed. The version is committed last, as in `publish`.

use crate::hash::XetHash;
use crate::head::{share_id_hex, Head, ShareId};
use crate::listing::{self, Entry, Kind as EntryKind};
use crate::net::{Kind, NetError, ShareNet};
use crate::shares::ShareError;
use crate::{spare, tree};
use ccbt_cas::ChunkBatch;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Requests in flight at once across all peers.
const PARALLEL: usize = 64;
/// Fetched chunk bytes buffered before they are written to the store.
const BATCH_BYTES: u64 = 32 << 20;
/// Hidden directory inside a synced folder: staging files and the synced-version marker.
pub const STATE_DIR: &str = ".ccbt-sync";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error(transparent)]
    Listing(#[from] listing::ListingError),
    #[error(transparent)]
    Cas(#[from] ccbt_cas::CasError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |e| SyncError::Io(p.to_path_buf(), e)
}

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub seq: u64,
    pub files_written: u64,
    pub files_deleted: u64,
    pub fetched_chunks: u64,
    pub fetched_bytes: u64,
    pub fetched_nodes: u64,
    pub dedup_chunks: u64,
    /// Changed files patched from a ready spare copy instead of a full copy.
    pub spares_used: u64,
    pub seconds: f64,
}

/// Resolves trees to their leaves, fetching missing nodes and chunks. Returns root → leaves.
async fn resolve(
    node: &Arc<ShareNet>,
    share: &ShareId,
    min_seq: u64,
    roots: &[XetHash],
    fetched_nodes: &mut Vec<([u8; 32], Vec<u8>)>,
    report: &mut SyncReport,
) -> Result<HashMap<XetHash, Vec<(XetHash, u64)>>, SyncError> {
    let store = &node.shares.store;
    // children of every internal node we know; leaves are hashes with no entry.
    let mut kids: HashMap<XetHash, Vec<(XetHash, u64)>> = HashMap::new();
    let mut leaf: HashSet<XetHash> = HashSet::new();
    let mut frontier: Vec<XetHash> = roots.to_vec();
    let mut seen: HashSet<XetHash> = HashSet::new();
    let mut batch = ChunkBatch::default();
    while !frontier.is_empty() {
        let mut missing = Vec::new();
        let mut next = Vec::new();
        for h in frontier.drain(..) {
            if !seen.insert(h) {
                continue;
            }
            if let Some(text) = store.get_node(&h.0)? {
                let c = tree::parse_node(h, &text)?;
                next.extend(c.iter().map(|n| n.hash));
                kids.insert(h, c.iter().map(|n| (n.hash, n.size)).collect());
            } else if let Some(len) = store.chunk_len(&h.0)? {
                leaf.insert(h);
                node.count(share, |c| {
                    c.dedup_chunks += 1;
                    c.dedup_bytes += len as u64;
                });
                report.dedup_chunks += 1;
            } else {
                missing.push(h);
            }
        }
        // Fetch this level's missing hashes with a sliding window of PARALLEL requests (spread
        // over peers by `fetch`); chunk bytes go to the store in bounded batches.
        let mut todo = missing.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < PARALLEL {
                let Some(h) = todo.next() else { break };
                let (node, share) = (node.clone(), *share);
                running.spawn(async move { (h, node.fetch(&share, h, Kind::Any, min_seq).await) });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (h, r) = done.expect("fetch task");
            let (kind, data) = r?;
            match kind {
                Kind::Node => {
                    let c = tree::parse_node(h, &data)?;
                    next.extend(c.iter().map(|n| n.hash));
                    kids.insert(h, c.iter().map(|n| (n.hash, n.size)).collect());
                    fetched_nodes.push((h.0, data.to_vec()));
                    report.fetched_nodes += 1;
                }
                _ => {
                    store.stage_chunk(&mut batch, &h.0, &data)?;
                    report.fetched_chunks += 1;
                    report.fetched_bytes += data.len() as u64;
                    leaf.insert(h);
                    if batch.len_bytes() >= BATCH_BYTES {
                        store.write_chunks(std::mem::take(&mut batch))?;
                    }
                }
            }
        }
        frontier = next;
    }
    store.write_chunks(batch)?;
    // Flatten each root's tree into its leaf list.
    let mut out = HashMap::new();
    for r in roots {
        let mut leaves = Vec::new();
        let mut stack = vec![(*r, 0u64)];
        while let Some((h, size)) = stack.pop() {
            match kids.get(&h) {
                Some(c) => stack.extend(c.iter().rev().copied()),
                None => leaves.push((h, size)),
            }
        }
        out.insert(*r, leaves);
    }
    Ok(out)
}

/// Makes files (by root) and listings local: fetches every missing node and chunk from the
/// share's peers (`ccbt pin`). Nodes are stored as they come; no version is committed.
pub async fn fetch_roots(
    node: &Arc<ShareNet>,
    share: &ShareId,
    roots: &[XetHash],
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mut report = SyncReport::default();
    let mut nodes = Vec::new();
    resolve(node, share, 0, roots, &mut nodes, &mut report).await?;
    for (h, text) in nodes {
        node.shares.store.put_node(&h, &text)?;
    }
    node.shares.store.commit_cached()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("synced")
}

/// The version last written into `dir` (from its marker), if any.
pub fn synced_seq(dir: &Path) -> Option<(ShareId, u64)> {
    let t = std::fs::read_to_string(marker(dir)).ok()?;
    let (id, seq) = t.trim().split_once('@')?;
    Some((ccbt_core::encoding::hex_array(id)?, seq.parse().ok()?))
}

/// Fetches version `head` of `share` and writes it into `dir`. Up to `spare_budget` bytes of
/// large files get background spare copies for fast updates ([`crate::spare`]; 0 = none).
pub async fn sync_version(
    node: &Arc<ShareNet>,
    share: ShareId,
    head: &Head,
    dir: &Path,
    spare_budget: u64,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let mut report = SyncReport {
        seq: head.seq,
        ..Default::default()
    };
    let mut nodes = Vec::new();
    let root = XetHash(head.value.root);
    let resolved = resolve(node, &share, head.seq, &[root], &mut nodes, &mut report).await?;
    let store = &node.shares.store;
    let mut bytes = Vec::new();
    for (h, _) in &resolved[&root] {
        bytes.extend_from_slice(&tree::read_chunk(store, *h)?);
    }
    let mut entries = listing::decode(&bytes)?;
    // Several writers: the merged view of the owner's and the writers' newest versions.
    let writer_heads = node.writer_heads(&share);
    if !head.value.writers.is_empty() {
        let mut listings: HashMap<[u8; 32], Vec<Entry>> = HashMap::new();
        listings.insert(head.public_key, listing::decode_all(&bytes)?);
        for w in &writer_heads {
            let r = XetHash(w.value.root);
            let res = resolve(node, &share, 0, &[r], &mut nodes, &mut report).await?;
            let mut b = Vec::new();
            for (h, _) in &res[&r] {
                b.extend_from_slice(&tree::read_chunk(store, *h)?);
            }
            listings.insert(w.public_key, listing::decode_all(&b)?);
        }
        let feeds = crate::feeds::feeds_of(head, &writer_heads, |h| {
            Ok::<_, SyncError>(listings.remove(&h.public_key).unwrap_or_default())
        })?;
        entries = crate::writers::live(&crate::writers::merge(&feeds));
    }
    let file_roots: Vec<XetHash> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.size > 0)
        .map(|e| XetHash(e.root))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Large files missing here may have holders outside this share's swarm (P2P CAS).
    for e in &entries {
        if e.kind == EntryKind::File
            && e.size >= crate::net::CAS_MIN_SIZE
            && !node.shares.file_is_whole(e.root)
        {
            node.want_file(e.root, e.size);
        }
    }
    resolve(node, &share, head.seq, &file_roots, &mut nodes, &mut report).await?;
    // Commit the version (nodes, head, record) before touching the directory: from here on the
    // store can rebuild the files even if we are killed while writing them. Store and file
    // writes run on a blocking thread, not on the runtime's workers.
    let (n, h, d) = (node.clone(), head.clone(), dir.to_path_buf());
    let mut report = tokio::task::spawn_blocking(move || -> Result<SyncReport, SyncError> {
        n.shares.commit_head(&share, &h, nodes, None)?;
        if !h.value.writers.is_empty() {
            for w in &writer_heads {
                n.shares.keep_writer_head(w)?;
            }
        }
        tracing::debug!(
            "version {} resolved and committed in {:.3}s",
            h.seq,
            started.elapsed().as_secs_f64()
        );
        write_dir(&n, &share, &h, &entries, &d, spare_budget, &mut report)?;
        tracing::debug!(
            "version {} written in {:.3}s",
            h.seq,
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    })
    .await
    .map_err(|e| SyncError::Io(dir.to_path_buf(), std::io::Error::other(e)))??;
    report.seconds = started.elapsed().as_secs_f64();
    node.have_version(&share, head.seq);
    Ok(report)
}

fn write_dir(
    node: &Arc<ShareNet>,
    share: &ShareId,
    head: &Head,
    entries: &[Entry],
    dir: &Path,
    spare_budget: u64,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let store = &node.shares.store;
    let staging = dir.join(STATE_DIR).join("staging");
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    // Old versions whose background removal a crash interrupted.
    if let Ok(rd) = std::fs::read_dir(&staging) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("trash-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The previous version written here, to skip unchanged files and remove deleted ones.
    let prev: Vec<Entry> = match synced_seq(dir) {
        Some((id, seq)) if id == *share && seq < head.seq => node
            .shares
            .head(share, Some(seq))
            .ok()
            .and_then(|h| node.shares.listing(&h).ok())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let prev_map: HashMap<&str, &Entry> = prev.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut spares = Vec::new();
    let links: HashSet<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Link)
        .map(|e| e.path.as_str())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let mut anc = e.path.as_str();
        while let Some((parent, _)) = anc.rsplit_once('/') {
            if links.contains(parent) {
                return Err(listing::ListingError::UnsafePath(e.path.clone()).into());
            }
            anc = parent;
        }
        let target = dir.join(&e.path);
        let unchanged = prev_map.get(e.path.as_str()).is_some_and(|p| {
            p.kind == e.kind
                && p.root == e.root
                && p.size == e.size
                && p.perm() == e.perm()
                && p.target == e.target
        }) && std::fs::symlink_metadata(&target).is_ok();
        if unchanged {
            continue;
        }
        match e.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&target).map_err(io(&target))?;
            }
            EntryKind::Link => {
                let tmp = staging.join(format!("l{i}"));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &tmp)
                    .map_err(io(&tmp))?;
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p).map_err(io(p))?;
                }
                std::fs::rename(&tmp, &target).map_err(io(&target))?;
                report.files_written += 1;
            }
            EntryKind::File => {
                let tmp = staging.join(format!("f{i}"));
                let old = prev_map.get(e.path.as_str()).filter(|p| {
                    p.kind == EntryKind::File
                        && std::fs::symlink_metadata(&target)
                            .is_ok_and(|m| m.is_file() && m.len() == p.size)
                });
                let f = match old {
                    // Patch a copy of the previous version: only chunks that moved or changed are
                    // written (the copy is done in the kernel, or shared on reflink filesystems).
                    Some(p) => {
                        // A spare copy of exactly the previous version, made in the background
                        // after it was written, spares the full copy.
                        if !spare::take(dir, &e.path, &p.root, &tmp) {
                            std::fs::copy(&target, &tmp).map_err(io(&tmp))?;
                        } else {
                            tracing::debug!("{}: patching its spare copy", e.path);
                            report.spares_used += 1;
                        }
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&tmp)
                            .map_err(io(&tmp))?;
                        for (o, h, _) in tree::changed_leaves(
                            store,
                            (XetHash(p.root), p.size),
                            (XetHash(e.root), e.size),
                        )? {
                            use std::os::unix::fs::FileExt;
                            f.write_all_at(&tree::read_chunk(store, h)?, o)
                                .map_err(io(&tmp))?;
                        }
                        f
                    }
                    None => {
                        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                        tree::read_into(store, XetHash(e.root), e.size, &mut f, true)?;
                        f
                    }
                };
                f.set_len(e.size).map_err(io(&tmp))?;
                f.set_permissions(std::fs::Permissions::from_mode(e.perm()))
                    .map_err(io(&tmp))?;
                let t =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime.max(0) as u64);
                let _ = f.set_times(std::fs::FileTimes::new().set_modified(t));
                // No fsync before the rename (rsync makes the same choice): the CAS holds the
                // version durably, so a re-sync can always rebuild the file.
                drop(f);
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p).map_err(io(p))?;
                }
                let old_meta = std::fs::symlink_metadata(&target);
                if old_meta.as_ref().is_ok_and(|m| m.is_dir()) {
                    let _ = std::fs::remove_dir_all(&target);
                }
                // Replacing the last link of a large file frees all its blocks inside rename()
                // (a fifth of a second for 1 GiB on ext4): keep a link and free it in the
                // background instead.
                let trash = staging.join(format!("trash-{i}"));
                let keep_old = old_meta.is_ok_and(|m| m.is_file() && m.len() >= spare::MIN_SIZE)
                    && std::fs::hard_link(&target, &trash).is_ok();
                std::fs::rename(&tmp, &target).map_err(io(&target))?;
                if keep_old {
                    std::thread::spawn(move || std::fs::remove_file(trash));
                }
                report.files_written += 1;
                if let Ok(m) = std::fs::metadata(&target) {
                    use std::os::unix::fs::MetadataExt;
                    spares.push(crate::spare::Want {
                        path: e.path.clone(),
                        root: e.root,
                        target: target.clone(),
                        ino: m.ino(),
                        size: e.size,
                    });
                }
            }
        }
    }
    if spare_budget > 0 {
        crate::spare::schedule(dir, spares, spare_budget);
    }
    let now: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for p in prev.iter().rev() {
        if !now.contains(p.path.as_str()) {
            let t = dir.join(&p.path);
            let r = if p.kind == EntryKind::Dir {
                std::fs::remove_dir(&t)
            } else {
                std::fs::remove_file(&t)
            };
            if r.is_ok() {
                report.files_deleted += 1;
            }
        }
    }
    let m = marker(dir);
    let tmp = m.with_extension("tmp");
    std::fs::write(&tmp, format!("{}@{}\n", share_id_hex(share), head.seq)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &m).map_err(io(&m))?;
    Ok(())
}
