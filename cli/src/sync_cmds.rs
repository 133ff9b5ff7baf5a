//! `ccbt seed` (no torrent: serve every share), `ccbt sync` and `ccbt status`.

use crate::progress::human_bytes;
use crate::Ctx;
use anyhow::{Context, Result};
use ccbt_node::socket::{call, Request};
use ccbt_node::Node;
use ccbt_xet::head::{parse_share_id, share_id_hex};
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct SyncArgs {
    /// Share id (40 hex or magnet:?xs=urn:btpk:...)
    pub share: String,
    /// Directory to keep as a copy of the newest version
    pub dir: PathBuf,
    /// Keep running and apply every new version as it arrives
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub net: SwarmArgs,
}

/// Where a share's (or magnet's) peers are found; shared by `sync` and `mount`.
#[derive(Args)]
pub struct SwarmArgs {
    /// Address to listen on for peers
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A peer to connect to (repeatable)
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    /// A tracker to announce to (repeatable)
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Seconds to wait for a first version (or a torrent's metadata) from peers
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

async fn until_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `ccbt seed` without a torrent: serve every share in the data dir until stopped.
pub fn serve(
    ctx: &Ctx,
    listen: Option<SocketAddr>,
    trackers: Vec<String>,
    peers: Vec<SocketAddr>,
) -> Result<()> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listen = ctx.listen(listen);
        let node = Node::start(ctx, listen, trackers, peers.clone()).await?;
        let n = node.join_all()?;
        let torrents = node.serve_checkpoints(&peers);
        if !ctx.quiet {
            eprintln!(
                "serving {n} shares and {} torrents on {}; `ccbt publish DIR` on this data dir pushes new versions",
                torrents.len(),
                node.session.listen_addr()
            );
        }
        until_signal().await;
        node.stop_torrents(&torrents).await;
        Ok(())
    })
}

pub fn sync(ctx: &Ctx, a: SyncArgs) -> Result<()> {
    let id =
        parse_share_id(&a.share).with_context(|| format!("{:?} is not a share id", a.share))?;
    if crate::daemon::client::sync_via_daemon(
        ctx,
        &share_id_hex(&id),
        &a.dir,
        a.follow,
        &a.net.peers,
        a.net.timeout,
    )? {
        return Ok(());
    }
    let rt = crate::runtime()?;
    rt.block_on(async {
        let listen = ctx.listen(a.net.listen);
        let node = Node::start(ctx, listen, a.net.trackers.clone(), a.net.peers.clone()).await?;
        node.join(id)?;
        let run = ccbt_node::sync::SyncLoop {
            node: &node,
            share: id,
            dir: &a.dir,
            follow: a.follow,
            // Spare copies only pay off for a follower that will see the next version.
            spare: if a.follow { ctx.config.xet.sync_spare_mib << 20 } else { 0 },
            first_timeout: Some(Duration::from_secs(a.net.timeout)),
            resume: true,
            retry: None,
            hint: ctx.no_source_hint(),
        }
        .run(|r| {
            let Ok(s) = r else { return };
            let r = &s.report;
            if ctx.json {
                let c = node.xet.counters(&id);
                outln!("{}", json!({
                    "event": "version", "share": share_id_hex(&id), "seq": r.seq,
                    "files_written": r.files_written, "files_deleted": r.files_deleted,
                    "fetched_chunks": r.fetched_chunks, "fetched_bytes": r.fetched_bytes,
                    "fetched_nodes": r.fetched_nodes, "dedup_chunks": r.dedup_chunks, "spares_used": r.spares_used,
                    "seconds": r.seconds, "wire_in": s.wire_in,
                    "fetched_from": c.fetched_from.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::HashMap<_, _>>(),
                }));
            } else if !ctx.quiet {
                outln!(
                    "version {}: {} files written, {} removed; fetched {} chunks ({}) and {} nodes, {} chunks already here, {} on the wire, {:.2}s",
                    r.seq, r.files_written, r.files_deleted, r.fetched_chunks, human_bytes(r.fetched_bytes),
                    r.fetched_nodes, r.dedup_chunks, human_bytes(s.wire_in), r.seconds
                );
            }
        });
        tokio::select! {
            r = run => Ok(r?),
            _ = until_signal() => Ok(()),
        }
    })
}

pub fn status(ctx: &Ctx) -> Result<()> {
    let v = match call::<serde_json::Value>(&ctx.data_dir, &Request::Status)? {
        Some(v) => v,
        None => {
            let shares = ccbt_xet::shares::Shares::open(&ctx.data_dir)?;
            let list: Vec<_> = shares.list()?.iter().map(|(id, r)| json!({"share": share_id_hex(id), "version": r.seq, "owner": r.owner, "peers": 0})).collect();
            json!({"listen": null, "shares": list})
        }
    };
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match v["listen"].as_str() {
        Some(l) => outln!("node running, listening on {l}"),
        None => outln!("no node running on this data dir (start one with `ccbt seed`)"),
    }
    for s in v["shares"].as_array().into_iter().flatten() {
        outln!(
            "{}  v{}  {}  peers {}  fetched {}  served {}  dedup {}",
            s["share"].as_str().unwrap_or(""),
            s["version"],
            if s["owner"].as_bool().unwrap_or(false) {
                "owner"
            } else {
                "follower"
            },
            s["peers"],
            human_bytes(s["fetched_bytes"].as_u64().unwrap_or(0)),
            human_bytes(s["served_bytes"].as_u64().unwrap_or(0)),
            human_bytes(s["dedup_bytes"].as_u64().unwrap_or(0)),
        );
        let r = &s["residency"];
        if let Some(total) = r["total_bytes"].as_u64() {
            let fetch = match (
                r["pin_fetch"]["done"].as_bool(),
                r["pin_fetch"]["bytes"].as_u64(),
            ) {
                (Some(false), Some(b)) => format!(", fetching pinned files ({})", human_bytes(b)),
                _ => String::new(),
            };
            outln!(
                "    local {} of {}, pinned {}{fetch}",
                human_bytes(r["local_bytes"].as_u64().unwrap_or(0)),
                human_bytes(total),
                human_bytes(r["pinned_bytes"].as_u64().unwrap_or(0)),
            );
        }
    }
    Ok(())
}
