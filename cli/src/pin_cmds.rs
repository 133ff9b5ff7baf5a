//! Files on demand (xet/src/local.rs): `ccbt pin`, `unpin` and `evict`, and the running node's
//! side of them: pinned files fetched in the background (progress in `ccbt status`), pins that
//! follow a share fetched again at each new version, and evictions that know which peers hold
//! what.
//!
//! With a node running on the data dir (a mount, `ccbt seed`, the daemon) the commands go through
//! its socket; without one, pins are recorded (files are fetched when a node next runs) and an
//! owner's evictions are refused (no peer can be seen to hold the data).

use crate::node::{client_request, Node};
use crate::progress::human_bytes;
use crate::share_cmds::parse_id_seq;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{parse_share_id, share_id_hex, Head, ShareId};
use ccbt_xet::listing::Entry;
use ccbt_xet::local;
use ccbt_xet::shares::Shares;
use clap::Args;
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

#[derive(Args)]
pub struct PinArgs {
    /// Share id, optionally @VERSION (default: the newest, and each newer one as it comes)
    pub share: String,
    /// Files or directories in the share (default: everything)
    pub paths: Vec<String>,
}

#[derive(Args)]
pub struct EvictArgs {
    /// Share id
    pub share: String,
    /// Files or directories in the share (default: every file not pinned)
    pub paths: Vec<String>,
}

fn paths_json(p: &[String]) -> Value {
    json!(p)
}

pub fn pin(ctx: &Ctx, a: PinArgs) -> Result<()> {
    let (id, seq) = parse_id_seq(&a.share)?;
    let req = json!({"cmd": "pin", "share": share_id_hex(&id), "seq": seq, "paths": paths_json(&a.paths)});
    if let Some(v) = client_request(&ctx.data_dir, req)? {
        outln!(
            "pinned {} file(s), {} ({} local already); the running node fetches the rest \
             in the background: see `ccbt status`",
            v["files"],
            human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            human_bytes(v["local"].as_u64().unwrap_or(0)),
        );
        return Ok(());
    }
    let shares = open(ctx)?;
    if let Some(s) = seq {
        // An old version's files stay only if the version does.
        shares.pin(&id, s)?;
    }
    let head = shares.head(&id, seq)?;
    let files = local::pin(&shares, &head, seq.is_none(), &a.paths)?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let have: u64 = files
        .iter()
        .map(|f| local::file_local(&shares.store, f.root, f.size).local)
        .sum();
    outln!(
        "pinned {} file(s), {} ({} local); no node runs on this data dir, so the rest is \
         fetched when one does (`ccbt seed`, a mount, or the daemon)",
        files.len(),
        human_bytes(bytes),
        human_bytes(have)
    );
    Ok(())
}

pub fn unpin(ctx: &Ctx, a: PinArgs) -> Result<()> {
    let (id, seq) = parse_id_seq(&a.share)?;
    let req = json!({"cmd": "unpin", "share": share_id_hex(&id), "seq": seq, "paths": paths_json(&a.paths)});
    let n = match client_request(&ctx.data_dir, req)? {
        Some(v) => v["removed"].as_u64().unwrap_or(0),
        None => {
            let shares = open(ctx)?;
            let mut n = local::unpin(&shares, &id, &a.paths)? as u64;
            if let Some(s) = seq.filter(|_| a.paths.is_empty()) {
                n += shares.unpin(&id, s)? as u64;
            }
            n
        }
    };
    if n == 0 {
        bail!("nothing of {} was pinned", a.share);
    }
    if !ctx.quiet {
        outln!("unpinned {n} pin(s); their files may now be evicted");
    }
    Ok(())
}

pub fn evict(ctx: &Ctx, a: EvictArgs) -> Result<()> {
    let (id, _) = parse_id_seq(&a.share)?;
    let req = json!({"cmd": "evict", "share": share_id_hex(&id), "paths": paths_json(&a.paths)});
    let v = match client_request(&ctx.data_dir, req)? {
        Some(v) => v,
        None => {
            let shares = open(ctx)?;
            let head = shares.head(&id, None)?;
            report_json(&local::evict(&shares, &head, &a.paths, &|_, _| false)?)
        }
    };
    outln!(
        "evicted {} file(s): {} in {} chunk(s) dropped; they fetch again on read{}",
        v["files"],
        human_bytes(v["bytes"].as_u64().unwrap_or(0)),
        v["chunks"],
        match v["pinned"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} pinned file(s) kept)"),
            _ => String::new(),
        }
    );
    Ok(())
}

fn open(ctx: &Ctx) -> Result<Shares> {
    Shares::open(&ctx.data_dir)
        .with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))
}

fn report_json(r: &local::EvictReport) -> Value {
    json!({"files": r.files, "chunks": r.chunks, "bytes": r.bytes, "pinned": r.pinned})
}

// ---- the running node's side ----

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

/// `pin` through the socket.
pub async fn node_pin(node: &Arc<Node>, req: &Value) -> Result<Value> {
    let id = parse_share_id(req["share"].as_str().unwrap_or("")).context("bad share id")?;
    let seq = req["seq"].as_u64();
    let paths: Vec<String> = serde_json::from_value(req["paths"].clone()).unwrap_or_default();
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
    Ok(json!({"files": count, "bytes": bytes, "local": have}))
}

pub async fn node_unpin(node: &Arc<Node>, req: &Value) -> Result<Value> {
    let id = parse_share_id(req["share"].as_str().unwrap_or("")).context("bad share id")?;
    let paths: Vec<String> = serde_json::from_value(req["paths"].clone()).unwrap_or_default();
    let mut n = local::unpin(&node.shares, &id, &paths)? as u64;
    if let Some(s) = req["seq"].as_u64().filter(|_| paths.is_empty()) {
        n += node.shares.unpin(&id, s)? as u64;
    }
    Ok(json!({"removed": n}))
}

pub async fn node_evict(node: &Arc<Node>, req: &Value) -> Result<Value> {
    let id = parse_share_id(req["share"].as_str().unwrap_or("")).context("bad share id")?;
    let paths: Vec<String> = serde_json::from_value(req["paths"].clone()).unwrap_or_default();
    let head = newest_head(node, &id).context("no version of the share is known here")?;
    ensure_listing(node, &head).await?;
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || {
        let xet = n.xet.clone();
        local::evict(&n.shares, &head, &paths, &|s, seq| xet.peer_holds(s, seq))
    })
    .await??;
    // Local copies for passthrough reads would keep serving evicted files.
    crate::pin_cmds::drop_file_copies(&node.data_dir_path());
    Ok(report_json(&r))
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
                anyhow::Ok(missing)
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
