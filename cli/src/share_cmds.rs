//! `ccbt publish`, `versions`, `export`, `shares`, `pin`/`unpin` and `cas stats|verify|gc`.

use crate::progress::{human_bytes, ByteProgress};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_node::socket::{call, PublishReply, Request, VersionReply};
use ccbt_xet::head::{parse_share_id, share_id_hex, ShareId};
use ccbt_xet::shares::{ShareChoice, Shares};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn open(ctx: &Ctx) -> Result<Shares> {
    Shares::open(&ctx.data_dir)
        .with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))
}

fn parse_id(s: &str) -> Result<ShareId> {
    parse_share_id(s).with_context(|| {
        format!("{s:?} is not a share id (40 hex characters or magnet:?xs=urn:btpk:...)")
    })
}

/// `ID` or `ID@SEQ`.
pub(crate) fn parse_id_seq(s: &str) -> Result<(ShareId, Option<u64>)> {
    match s.rsplit_once('@') {
        Some((id, seq)) if !s.starts_with("magnet:") => Ok((
            parse_id(id)?,
            Some(
                seq.parse()
                    .with_context(|| format!("{seq:?} is not a version number"))?,
            ),
        )),
        _ => Ok((parse_id(s)?, None)),
    }
}

pub(crate) fn fmt_time(t: i64) -> String {
    // UTC, without pulling in a date crate: days since the epoch to a civil date.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[derive(Args)]
pub struct PublishArgs {
    /// Folder to publish
    pub dir: PathBuf,
    /// Publish as the next version of this share (you must own its key)
    #[arg(long, value_name = "ID", conflicts_with = "new")]
    pub share: Option<String>,
    /// Start a new share even if this folder was published before
    #[arg(long)]
    pub new: bool,
    /// Also make this version a hybrid torrent of the folder, seed it (with `ccbt seed` or the
    /// running node), and name its info-hash in the head (BEP 46: any client can fetch the
    /// newest version from `magnet:?xs=urn:btpk:<public key>`)
    #[arg(long)]
    pub torrent: bool,
}

fn tree_bytes(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else if m.is_file() {
        m.len()
    } else {
        0
    }
}

pub fn publish(ctx: &Ctx, a: PublishArgs) -> Result<()> {
    // A node running on this data dir owns the store: hand it the work (it also pushes the head).
    let dir = std::fs::canonicalize(&a.dir)
        .with_context(|| format!("cannot publish {}", a.dir.display()))?;
    let req = Request::Publish {
        dir: dir.clone(),
        share: a.share.clone(),
        new: a.new,
        torrent: a.torrent,
    };
    if let Some(v) = call::<PublishReply>(&ctx.data_dir, &req)? {
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else if ctx.quiet {
            outln!("{}", v.share);
        } else {
            outln!(
                "share:    {} (published through the running node, pushed to its peers)",
                v.share
            );
            outln!("version:  {}", v.version);
            outln!("stored:   {} new", human_bytes(v.new_bytes));
        }
        return Ok(());
    }
    let shares = open(ctx)?;
    let choice = match (&a.share, a.new) {
        (Some(id), _) => ShareChoice::Existing(parse_id(id)?),
        (None, true) => ShareChoice::New,
        (None, false) => ShareChoice::Auto,
    };
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let r = {
        let ih = if a.torrent {
            Some(ccbt_node::publish::version_torrent(&ctx.data_dir, &dir)?.1)
        } else {
            None
        };
        let _bar =
            ByteProgress::start("publishing", tree_bytes(&a.dir), counter.clone(), ctx.quiet);
        shares
            .publish_with_ih(&a.dir, choice, &counter, ih)
            .with_context(|| format!("cannot publish {}", a.dir.display()))?
    };
    let torrent_ih = shares
        .head(&r.share, Some(r.seq))
        .ok()
        .and_then(|h| h.value.ih);
    let secs = started.elapsed().as_secs_f64();
    let id = share_id_hex(&r.share);
    // No node runs here to announce the version: put its head on the DHT now, so followers
    // polling it see the new version even before a node serves it.
    let dht_nodes = if ctx.dht_enabled() {
        match ccbt_node::publish::put_head_on_dht(ctx, &shares.head(&r.share, Some(r.seq))?) {
            Ok(n) => Some(n),
            Err(e) => {
                if !ctx.quiet {
                    eprintln!("warning: the new head is not on the DHT: {e:#}; `ccbt seed` on this data dir puts it there");
                }
                Some(0)
            }
        }
    } else {
        None
    };
    if let (Some(ih), false, false) = (torrent_ih, ctx.json, ctx.quiet) {
        eprintln!(
            "torrent:  {} (hybrid; `ccbt seed` on this data dir seeds it)",
            ccbt_core::encoding::to_hex(&ih)
        );
    }
    if let (Some(n), false, false) = (dht_nodes, ctx.json, ctx.quiet) {
        if n > 0 {
            eprintln!("dht:      head put on {n} nodes");
        }
    }
    if ctx.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "share": id,
                "version": r.seq,
                "new_share": r.created_share,
                "files": r.files,
                "dirs": r.dirs,
                "symlinks": r.links,
                "logical_bytes": r.logical_bytes,
                "new_chunk_bytes": r.new_chunk_bytes,
                "new_node_bytes": r.new_node_bytes,
                "new_bytes": r.new_chunk_bytes + r.new_node_bytes,
                "new_chunks": r.new_chunks,
                "listing_root": r.listing_root.to_hex(),
                "seconds": secs,
                "warnings": r.warnings,
                "dht_nodes": dht_nodes,
                "torrent_info_hash": torrent_ih.map(|h| ccbt_core::encoding::to_hex(&h)),
            }))?
        );
    } else if ctx.quiet {
        outln!("{id}");
    } else {
        outln!(
            "share:    {id}{}",
            if r.created_share { " (new)" } else { "" }
        );
        outln!("version:  {}", r.seq);
        outln!(
            "files:    {} files, {} dirs, {} symlinks, {}",
            r.files,
            r.dirs,
            r.links,
            human_bytes(r.logical_bytes)
        );
        outln!(
            "stored:   {} new ({} in {} new chunks + {} of tree nodes and listing)",
            human_bytes(r.new_chunk_bytes + r.new_node_bytes),
            human_bytes(r.new_chunk_bytes),
            r.new_chunks,
            human_bytes(r.new_node_bytes)
        );
        outln!(
            "time:     {secs:.2}s ({}/s)",
            human_bytes((r.logical_bytes as f64 / secs.max(1e-9)) as u64)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct VersionsArgs {
    /// Share id
    pub share: String,
}

pub fn versions(ctx: &Ctx, a: VersionsArgs) -> Result<()> {
    let id = parse_id(&a.share)?;
    let req = Request::Versions {
        share: share_id_hex(&id),
    };
    let vs = match call::<Vec<VersionReply>>(&ctx.data_dir, &req)? {
        Some(v) => v,
        None => open(ctx)?
            .versions(&id)?
            .iter()
            .map(VersionReply::from)
            .collect(),
    };
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&vs)?);
    } else {
        outln!("{:>5}  {:<20}  {:>12}  root", "seq", "time (UTC)", "size");
        for v in vs {
            outln!(
                "{:>5}  {:<20}  {:>12}  {}",
                v.seq,
                fmt_time(v.time),
                human_bytes(v.size),
                v.root
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// Share id, optionally @VERSION (default: the newest)
    pub share: String,
    /// Directory to create (must not exist, or be empty)
    pub dir: PathBuf,
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<()> {
    let shares = open(ctx)?;
    let (id, seq) = parse_id_seq(&a.share)?;
    let started = Instant::now();
    let (head, bytes) = shares
        .export(&id, seq, &a.dir)
        .with_context(|| format!("cannot export to {}", a.dir.display()))?;
    if ctx.json {
        outln!(
            "{}",
            json!({"share": share_id_hex(&id), "version": head.seq, "bytes": bytes, "dir": a.dir})
        );
    } else if !ctx.quiet {
        outln!(
            "exported {} version {} ({}) to {} in {:.2}s",
            share_id_hex(&id),
            head.seq,
            human_bytes(bytes),
            a.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub fn list(ctx: &Ctx) -> Result<()> {
    let shares = open(ctx)?;
    let list = shares.list()?;
    if ctx.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, r)| json!({"share": share_id_hex(id), "version": r.seq, "owner": r.owner}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (id, r) in list {
            outln!(
                "{}  v{}  {}",
                share_id_hex(&id),
                r.seq,
                if r.owner { "owner" } else { "follower" }
            );
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum CasCmd {
    /// Logical vs stored bytes, chunk count, dedup ratio
    Stats,
    /// Re-hash every chunk and node and check every version is complete
    Verify,
    /// Remove old versions (beyond [xet] keep_versions) and unreachable data
    Gc {
        /// Versions of each share to keep (default: [xet] keep_versions)
        #[arg(long)]
        keep: Option<u64>,
    },
}

pub fn cas(ctx: &Ctx, cmd: CasCmd) -> Result<()> {
    let shares = open(ctx)?;
    match cmd {
        CasCmd::Stats => {
            let st = shares.store.stats()?;
            let logical = shares.logical_bytes()?;
            let ratio = if st.chunk_bytes > 0 {
                logical as f64 / st.chunk_bytes as f64
            } else {
                1.0
            };
            let disk = shares.store.disk_usage();
            if ctx.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "logical_bytes": logical,
                        "stored_chunk_bytes": st.chunk_bytes,
                        "chunk_count": st.chunk_count,
                        "node_bytes": st.node_bytes,
                        "node_count": st.node_count,
                        "dedup_ratio": ratio,
                        "disk_bytes": disk,
                        "shares": shares.list()?.len(),
                    }))?
                );
            } else {
                outln!(
                    "logical:  {} (every stored version, in full)",
                    human_bytes(logical)
                );
                outln!(
                    "stored:   {} in {} chunks",
                    human_bytes(st.chunk_bytes),
                    st.chunk_count
                );
                outln!(
                    "nodes:    {} in {} Merkle nodes",
                    human_bytes(st.node_bytes),
                    st.node_count
                );
                outln!("dedup:    {ratio:.2}x");
                outln!("on disk:  {}", human_bytes(disk));
            }
        }
        CasCmd::Verify => {
            let st = shares.store.stats()?;
            let counter = Arc::new(AtomicU64::new(0));
            let report = {
                let _bar =
                    ByteProgress::start("verifying", st.chunk_bytes, counter.clone(), ctx.quiet);
                shares.verify(&|n| {
                    counter.fetch_add(n, Ordering::Relaxed);
                })?
            };
            let damage = report.damage;
            if damage.is_empty() {
                if !ctx.quiet {
                    outln!(
                        "ok: {} chunks ({}) and {} nodes verified, every version complete",
                        st.chunk_count,
                        human_bytes(st.chunk_bytes),
                        st.node_count
                    );
                    if report.orphans > 0 {
                        outln!(
                            "note: {} unreferenced chunks from an interrupted publish; `ccbt cas gc` removes them",
                            report.orphans
                        );
                    }
                }
            } else {
                for d in &damage {
                    eprintln!("damaged: {d}");
                }
                bail!("{} problems found in the store", damage.len());
            }
        }
        CasCmd::Gc { keep } => {
            let keep = keep.unwrap_or(ctx.config.xet.keep_versions as u64).max(1);
            let r = shares.gc(keep)?;
            if ctx.json {
                outln!(
                    "{}",
                    json!({"versions_removed": r.heads_removed, "chunks_removed": r.chunks_removed,
                           "chunk_bytes_removed": r.chunk_bytes_removed, "nodes_removed": r.nodes_removed})
                );
            } else if !ctx.quiet {
                outln!(
                    "removed {} old versions, {} chunks ({}), {} nodes; kept the newest {keep} of each share and pins",
                    r.heads_removed,
                    r.chunks_removed,
                    human_bytes(r.chunk_bytes_removed),
                    r.nodes_removed
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_format() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::fmt_time(1_700_000_000), "2023-11-14 22:13:20Z");
    }
}
