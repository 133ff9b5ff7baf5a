//! Files on demand on a running node (xet/src/local.rs): pinned files fetched in the
//! background (progress in `ccbt status`), pins that follow a share fetched again at each new
//! version, and evictions that know which peers hold what.

use crate::error::{Context, Result};
use crate::human_bytes;
use crate::node::Node;
use crate::socket::{share_arg, EvictReply, PinReply, PinRequest, UnpinReply};
use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{share_id_hex, Head, ShareId};
use ccbt_xet::listing::Entry;
use ccbt_xet::local;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Background fetch of pinned files, per share (shown by `ccbt status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PinProgress {
    pub files: u64,
    pub bytes: u64,
    pub fetched_bytes: u64,
    pub done: bool,
}

/// The newest version the node knows: stored, or offered by a peer.
fn newest_head(node: &Node, id: &ShareId) -> Option<Head> {
    let stored = node.shares.head(id, None).ok();
    let heard = node.xet.newest_head(id);
    match (stored, heard) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Makes a head's listing local (fetched from peers when missing).
async fn ensure_listing(node: &Arc<Node>, head: &Head) -> Result<()> {
    if node.shares.listing(head).is_ok() {
        return Ok(());
    }
    let id = head.share_id();
    ccbt_xet::sync::fetch_roots(&node.xet, &id, &[XetHash(head.value.root)]).await?;
    node.shares
        .listing(head)
        .map(|_| ())
        .with_context(|| format!("cannot read the listing of version {}", head.seq))
}

/// Fetches pinned files in the background, counting progress for `ccbt status`.
fn fetch_pinned(node: &Arc<Node>, id: ShareId, files: Vec<Entry>) {
    let roots: Vec<XetHash> = files
        .iter()
        .filter(|f| f.size > 0)
        .map(|f| XetHash(f.root))
        .collect();
    let bytes = files.iter().map(|f| f.size).sum();
    node.pin_progress.lock().unwrap().insert(
        id,
        PinProgress {
            files: files.len() as u64,
            bytes,
            fetched_bytes: 0,
            done: false,
        },
    );
    let node = node.clone();
    tokio::spawn(async move {
        let r = ccbt_xet::sync::fetch_roots(&node.xet, &id, &roots).await;
        let mut g = node.pin_progress.lock().unwrap();
        let p = g.entry(id).or_default();
        match r {
            Ok(rep) => {
                p.fetched_bytes = rep.fetched_bytes;
                p.done = true;
                tracing::info!(
                    "share {}: pinned files local ({} fetched)",
                    share_id_hex(&id),
                    human_bytes(rep.fetched_bytes)
                );
            }
            Err(e) => tracing::warn!(
                "share {}: pinned files not all fetched yet ({e}); trying again later",
                share_id_hex(&id)
            ),
        }
    });
}

/// `pin` on the running node.
pub async fn pin(node: &Arc<Node>, req: &PinRequest) -> Result<PinReply> {
    let id = share_arg(&req.share)?;
    let seq = req.seq;
    let paths = req.paths.clone();
    node.join(id)?;
    let head = match seq {
        Some(s) => match node.shares.head(&id, Some(s)) {
            Ok(h) => h,
            Err(_) => {
                node.xet.wait_for_peer(&id, Duration::from_secs(10)).await;
                node.xet.fetch_head(&id, s).await.with_context(|| {
                    format!("version {s} is neither held here nor served by a peer")
                })?
            }
        },
        None => newest_head(node, &id).context("no version of the share is known here yet")?,
    };
    if let Some(s) = seq {
        let _ = node.shares.pin(&id, s);
    }
    ensure_listing(node, &head).await?;
    let (n, h) = (node.clone(), head.clone());
    let files =
        tokio::task::spawn_blocking(move || local::pin(&n.shares, &h, seq.is_none(), &paths))
            .await??;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let n = node.clone();
    let fs = files.clone();
    let have: u64 = tokio::task::spawn_blocking(move || {
        fs.iter()
            .map(|f| local::file_local(&n.shares.store, f.root, f.size).local)
            .sum()
    })
    .await?;
    let count = files.len();
    fetch_pinned(node, id, files);
    Ok(PinReply {
        files: count as u64,
        bytes,
        local: have,
    })
}

/// `unpin` on the running node.
pub async fn unpin(node: &Arc<Node>, req: &PinRequest) -> Result<UnpinReply> {
    let id = share_arg(&req.share)?;
    let mut n = local::unpin(&node.shares, &id, &req.paths)? as u64;
    if let Some(s) = req.seq.filter(|_| req.paths.is_empty()) {
        n += node.shares.unpin(&id, s)? as u64;
    }
    Ok(UnpinReply { removed: n })
}

/// `evict` on the running node: a chunk goes only where a peer is seen to hold it.
pub async fn evict(node: &Arc<Node>, share: &str, paths: &[String]) -> Result<EvictReply> {
    let id = share_arg(share)?;
    let paths = paths.to_vec();
    let head = newest_head(node, &id).context("no version of the share is known here")?;
    ensure_listing(node, &head).await?;
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || {
        let xet = n.xet.clone();
        local::evict(&n.shares, &head, &paths, &|s, seq| xet.peer_holds(s, seq))
    })
    .await??;
    // Local copies for passthrough reads would keep serving evicted files.
    drop_file_copies(&node.data_dir_path());
    Ok(EvictReply::from(&r))
}

/// Removes the mounts' local file copies (`<data dir>/fscache`): they are rebuilt from the CAS
/// as files are read again.
pub fn drop_file_copies(data_dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(data_dir.join("fscache")) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Every pin that follows its share moves to each newer version, whose files are fetched; pins
/// not complete yet are fetched again (every 30 s).
pub async fn pinner(node: Arc<Node>) {
    loop {
        let n = node.clone();
        let pins = tokio::task::spawn_blocking(move || local::pins(&n.shares))
            .await
            .unwrap_or_default();
        for p in pins {
            let head = match newest_head(&node, &p.share) {
                Some(h) if p.follow && h.seq > p.head.seq => h,
                _ => p.head.clone(),
            };
            if node.join(p.share).is_err() || ensure_listing(&node, &head).await.is_err() {
                continue;
            }
            let (n, h, path) = (node.clone(), head.clone(), p.path.clone());
            let (follow, moved) = (p.follow, head.seq != p.head.seq);
            let files = tokio::task::spawn_blocking(move || {
                // The pin record is rewritten only when it moves to a newer version.
                let files = if moved {
                    local::pin(&n.shares, &h, follow, &[path])?
                } else {
                    local::files_at(&n.shares, &h, &[path])?
                };
                let missing: Vec<Entry> = files
                    .into_iter()
                    .filter(|f| {
                        let l = local::file_local(&n.shares.store, f.root, f.size);
                        l.local < l.total
                    })
                    .collect();
                Ok::<_, crate::Error>(missing)
            })
            .await;
            if let Ok(Ok(missing)) = files {
                let busy = node
                    .pin_progress
                    .lock()
                    .unwrap()
                    .get(&p.share)
                    .is_some_and(|g| !g.done);
                if !missing.is_empty() && !busy {
                    fetch_pinned(&node, p.share, missing);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Per share for `ccbt status`: local, total and pinned bytes, and the pin fetch's progress.
pub fn residency_json(node: &Node, id: &ShareId) -> Value {
    let Some(head) = newest_head(node, id) else {
        return Value::Null;
    };
    let (local, total, pinned) = local::share_residency(&node.shares, &head).unwrap_or_default();
    let p = node.pin_progress.lock().unwrap().get(id).copied();
    json!({
        "local_bytes": local, "total_bytes": total, "pinned_bytes": pinned,
        "pin_fetch": p.map(|p| json!({"files": p.files, "bytes": p.bytes, "done": p.done})),
    })
}
