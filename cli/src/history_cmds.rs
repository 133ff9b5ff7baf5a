//! `ccbt log`, `ccbt diff` and `ccbt restore`: a share's history (xet/src/history.rs).
//!
//! `log` and `diff` only read: they open the store read-only when a node (a mount, the daemon)
//! holds it, so they work on a live share.

use crate::progress::human_bytes;
use crate::share_cmds::{fmt_time, parse_id_seq};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::{printable, to_hex};
use ccbt_xet::head::{share_id_hex, ShareId};
use ccbt_xet::history::{self, ChangeKind};
use ccbt_xet::shares::Shares;
use clap::Args;
use serde_json::json;
use std::time::Instant;

/// The store for reading: the normal open, or a read-only one while a node holds it.
fn open_for_reading(ctx: &Ctx) -> Result<Shares> {
    match Shares::open(&ctx.data_dir) {
        Ok(s) => Ok(s),
        Err(ccbt_xet::shares::ShareError::Cas(ccbt_cas::CasError::Locked(_))) => {
            Shares::open_read_only(&ctx.data_dir).with_context(|| {
                format!(
                    "cannot read the data dir {} (in use by a node)",
                    ctx.data_dir.display()
                )
            })
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))
        }
    }
}

#[derive(Args)]
pub struct LogArgs {
    /// Share id
    pub share: String,
}

pub fn log(ctx: &Ctx, a: LogArgs) -> Result<()> {
    let (id, _) = parse_id_seq(&a.share)?;
    let shares = open_for_reading(ctx)?;
    let mut log = history::log(&shares, &id)?;
    // Several writers: each writer's versions too (its own seqs), in time order; the author
    // column tells them apart.
    let newest = shares.head(&id, None)?;
    let owner_key = newest.public_key;
    if !newest.value.writers.is_empty() || !shares.feeds(&id)?.is_empty() {
        for w in shares.feeds(&id)? {
            log.extend(history::log(&shares, &w.feed_id())?);
        }
        log.sort_by_key(|s| (s.time, s.author != owner_key, s.author, s.seq));
    }
    if ctx.json {
        let v: Vec<_> = log
            .iter()
            .map(|s| {
                json!({
                    "seq": s.seq, "time": s.time, "author": to_hex(&s.author),
                    "writer": s.author != owner_key, "base": s.base,
                    "files": s.files, "size": s.size, "added": s.added, "removed": s.removed,
                    "modified": s.modified, "renamed": s.renamed, "bytes_changed": s.bytes,
                    "complete": !s.incomplete,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{:>5}  {:<20}  {:<8}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>10}",
        "seq",
        "time (UTC)",
        "author",
        "files",
        "added",
        "remov",
        "modif",
        "renam",
        "changed"
    );
    for s in log.iter().rev() {
        if s.incomplete {
            outln!(
                "{:>5}  {:<20}  {:<8}  (listing not held here: `ccbt mount {}@{}` fetches it)",
                s.seq,
                fmt_time(s.time),
                &to_hex(&s.author)[..8],
                share_id_hex(&id),
                s.seq
            );
            continue;
        }
        outln!(
            "{:>5}  {:<20}  {:<8}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>10}",
            s.seq,
            fmt_time(s.time),
            &to_hex(&s.author)[..8],
            s.files,
            s.added,
            s.removed,
            s.modified,
            s.renamed,
            human_bytes(s.bytes)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older version: ID@SEQ
    pub from: String,
    /// The newer version: ID@SEQ, or @SEQ for the same share (default: the newest)
    pub to: Option<String>,
    /// Only the totals
    #[arg(long)]
    pub stat: bool,
}

fn version_of(s: &str, default_id: Option<ShareId>) -> Result<(ShareId, Option<u64>)> {
    if let (Some(seq), Some(id)) = (s.strip_prefix('@'), default_id) {
        let seq = seq
            .parse()
            .with_context(|| format!("{seq:?} is not a version number"))?;
        return Ok((id, Some(seq)));
    }
    parse_id_seq(s)
}

pub fn diff(ctx: &Ctx, a: DiffArgs) -> Result<()> {
    let (id, from) = version_of(&a.from, None)?;
    let Some(from) = from else {
        bail!("give the older version as ID@SEQ");
    };
    let (id2, to) = match &a.to {
        Some(t) => version_of(t, Some(id))?,
        None => (id, None),
    };
    if id2 != id {
        bail!("both versions must be of the same share");
    }
    let shares = open_for_reading(ctx)?;
    let to = match to {
        Some(s) => s,
        None => shares.head(&id, None)?.seq,
    };
    let reads0 = shares.store.read_count();
    let t0 = Instant::now();
    let d = history::diff_versions(&shares, &id, from, to)?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let reads = shares.store.read_count() - reads0;
    if ctx.json {
        let changes: Vec<_> = d
            .changes
            .iter()
            .map(|c| {
                let (kind, from) = match &c.kind {
                    ChangeKind::Added => ("added", None),
                    ChangeKind::Removed => ("removed", None),
                    ChangeKind::Modified => ("modified", None),
                    ChangeKind::Renamed { from } => ("renamed", Some(from.clone())),
                };
                json!({"path": c.path, "change": kind, "from": from, "old_size": c.old_size,
                       "new_size": c.new_size, "bytes_changed": c.bytes, "dir": c.dir})
            })
            .collect();
        let mut v = json!({
            "share": share_id_hex(&id), "from": from, "to": to,
            "added": d.added(), "removed": d.removed(), "modified": d.modified(),
            "renamed": d.renamed(), "bytes_changed": d.bytes(),
            "cas_reads": reads, "ms": ms,
        });
        if !a.stat {
            v["changes"] = json!(changes);
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if !a.stat {
        for c in &d.changes {
            let slash = if c.dir { "/" } else { "" };
            match &c.kind {
                ChangeKind::Added => {
                    outln!("A  {}  (+{})", printable(&c.path), human_bytes(c.bytes))
                }
                ChangeKind::Removed => {
                    outln!(
                        "D  {}{slash}  (-{})",
                        printable(&c.path),
                        human_bytes(c.bytes)
                    )
                }
                ChangeKind::Modified => outln!(
                    "M  {}  ({} -> {}, {} differ)",
                    printable(&c.path),
                    human_bytes(c.old_size),
                    human_bytes(c.new_size),
                    human_bytes(c.bytes)
                ),
                ChangeKind::Renamed { from } => {
                    outln!("R  {} -> {}", printable(from), printable(&c.path))
                }
            }
        }
    }
    outln!(
        "{} added, {} removed, {} modified, {} renamed; {} differ ({}@{from} -> @{to})",
        d.added(),
        d.removed(),
        d.modified(),
        d.renamed(),
        human_bytes(d.bytes()),
        share_id_hex(&id),
    );
    Ok(())
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The version to restore from: ID@SEQ
    #[arg(value_name = "ID@SEQ")]
    pub from: String,
    /// Restore only this file or directory (a path inside the share); default: everything
    pub path: Option<String>,
}

pub fn restore(ctx: &Ctx, a: RestoreArgs) -> Result<()> {
    let (id, seq) = parse_id_seq(&a.from)?;
    let Some(seq) = seq else {
        bail!("give the version to restore as ID@SEQ");
    };
    let shares = match Shares::open(&ctx.data_dir) {
        Err(ccbt_xet::shares::ShareError::Cas(ccbt_cas::CasError::Locked(_))) => bail!(
            "the data dir {} is in use by a running node: unmount the share's owner mount (or \
             stop the daemon or seeder) and run `ccbt restore` again",
            ctx.data_dir.display()
        ),
        r => r.with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))?,
    };
    if shares.signing_key(&id)?.is_none() {
        bail!(
            "this node does not hold the key of share {}: only its owner can restore a version",
            share_id_hex(&id)
        );
    }
    let old_head = shares.head(&id, Some(seq))?;
    let cur_head = shares.head(&id, None)?;
    let old = shares
        .listing(&old_head)
        .with_context(|| format!("version {seq} is not held here"))?;
    let cur = shares.listing(&cur_head)?;
    let path = a.path.as_deref().map(|p| p.trim_matches('/'));
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        ccbt_xet::listing::check_path(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let in_old = old.iter().any(|e| e.path == p);
        let in_cur = cur.iter().any(|e| e.path == p);
        if !in_old && !in_cur {
            bail!(
                "{} is in neither version {seq} nor the newest version",
                printable(p)
            );
        }
    }
    let entries = history::restored_listing(&cur, &old, path);
    let missing = history::missing_files(&shares, &entries);
    if !missing.is_empty() {
        bail!(
            "{} file(s) of version {seq} are not held here (first: {}); `ccbt export {}@{seq}` \
             from a peer's copy, or mount it, then restore",
            missing.len(),
            printable(&missing[0]),
            share_id_hex(&id)
        );
    }
    let d = history::diff_listings(&shares, &cur, &entries);
    if d.changes.is_empty() {
        outln!(
            "nothing to restore: the newest version (@{}) already equals @{seq} there",
            cur_head.seq
        );
        return Ok(());
    }
    let head = history::commit_listing(&shares, &id, &entries)?;
    outln!(
        "restored {} from @{seq} as version {} ({} added, {} removed, {} modified, {} renamed)",
        path.filter(|p| !p.is_empty())
            .map_or("everything".into(), |p| printable(p).into_owned()),
        head.seq,
        d.added(),
        d.removed(),
        d.modified(),
        d.renamed()
    );
    outln!("peers get it when the share is next served (`ccbt seed`, a mount, or the daemon)");
    Ok(())
}
