//! Files on demand (xet/src/local.rs): `ccbt pin`, `unpin` and `evict`. The running node's side
//! of them is `ccbt_node::pin`.
//!
//! With a node running on the data dir (a mount, `ccbt seed`, the daemon) the commands go through
//! its socket; without one, pins are recorded (files are fetched when a node next runs) and an
//! owner's evictions are refused (no peer can be seen to hold the data).

use crate::progress::human_bytes;
use crate::share_cmds::parse_id_seq;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_node::socket::{call, EvictReply, PinReply, PinRequest, Request, UnpinReply};
use ccbt_xet::head::share_id_hex;
use ccbt_xet::local;
use ccbt_xet::shares::Shares;
use clap::Args;

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

pub fn pin(ctx: &Ctx, a: PinArgs) -> Result<()> {
    let (id, seq) = parse_id_seq(&a.share)?;
    let req = Request::Pin(PinRequest {
        share: share_id_hex(&id),
        seq,
        paths: a.paths.clone(),
    });
    if let Some(v) = call::<PinReply>(&ctx.data_dir, &req)? {
        outln!(
            "pinned {} file(s), {} ({} local already); the running node fetches the rest \
             in the background: see `ccbt status`",
            v.files,
            human_bytes(v.bytes),
            human_bytes(v.local),
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
    let req = Request::Unpin(PinRequest {
        share: share_id_hex(&id),
        seq,
        paths: a.paths.clone(),
    });
    let n = match call::<UnpinReply>(&ctx.data_dir, &req)? {
        Some(v) => v.removed,
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
    let req = Request::Evict {
        share: share_id_hex(&id),
        paths: a.paths.clone(),
    };
    let v = match call::<EvictReply>(&ctx.data_dir, &req)? {
        Some(v) => v,
        None => {
            let shares = open(ctx)?;
            let head = shares.head(&id, None)?;
            EvictReply::from(&local::evict(&shares, &head, &a.paths, &|_, _| false)?)
        }
    };
    outln!(
        "evicted {} file(s): {} in {} chunk(s) dropped; they fetch again on read{}",
        v.files,
        human_bytes(v.bytes),
        v.chunks,
        if v.pinned > 0 {
            format!(" ({} pinned file(s) kept)", v.pinned)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn open(ctx: &Ctx) -> Result<Shares> {
    Shares::open(&ctx.data_dir)
        .with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))
}
