//! `ccbt mount` and `ccbt unmount`: the flags, the daemon when one runs, and what to say; the
//! work is `ccbt_node::mount`.

use crate::Ctx;
use anyhow::Result;
use ccbt_node::mount::{self, Target};
use ccbt_node::torrent::Sources;
use ccbt_xet::head::share_id_hex;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct MountArgs {
    /// Share id (40 hex or magnet:?xs=urn:btpk:...), a .torrent file, a magnet link, or a torrent's
    /// info-hash (40 hex v1 / 64 hex v2; metadata from this data dir's checkpoint or from --peer)
    pub target: String,
    /// Mount point (an existing empty directory)
    pub dir: PathBuf,
    #[command(flatten)]
    pub net: crate::sync_cmds::SwarmArgs,
}

pub fn mount_cmd(ctx: &Ctx, a: MountArgs) -> Result<()> {
    mount::check_mount_point(&a.dir)?;
    if !mount::looks_like_share(&a.target)
        && crate::daemon::client::mount_torrent_via_daemon(ctx, &a.target, &a.dir, &a.net.peers)?
    {
        return Ok(());
    }
    let src = Sources {
        peers: &a.net.peers,
        trackers: &a.net.trackers,
        listen: ctx.listen(a.net.listen),
        timeout: Duration::from_secs(a.net.timeout),
    };
    let (id, frozen) = match mount::resolve(ctx, &a.target, &src)? {
        Target::Torrent(meta, peers) => {
            let m = mount::mount_torrent(ctx, &a.dir, *meta, peers, src.listen)?;
            if !ctx.quiet {
                eprintln!(
                    "mounted torrent {} ({}) read-only on {}; reads stream pieces as they arrive",
                    m.name,
                    m.info_hash_hex,
                    a.dir.display()
                );
            }
            return Ok(m.run(&a.dir)?);
        }
        Target::Share { id, frozen } => (id, frozen),
    };
    let named = match frozen {
        Some(seq) => format!("{}@{seq}", share_id_hex(&id)),
        None => share_id_hex(&id),
    };
    if crate::daemon::client::mount_via_daemon(ctx, &named, &a.dir, &a.net.peers)? {
        return Ok(());
    }
    let m = mount::mount_share(ctx, id, frozen, &a.dir, &src)?;
    if !ctx.quiet {
        eprintln!(
            "mounted share {} version {} on {} ({}); Ctrl-C or `ccbt unmount {}` to stop",
            share_id_hex(&id),
            m.head.seq,
            a.dir.display(),
            if m.writable() {
                "writable: changes are published as new versions"
            } else if m.frozen {
                "read-only, this version only"
            } else {
                "read-only"
            },
            a.dir.display()
        );
    }
    Ok(m.run(&a.dir)?)
}

pub fn unmount_cmd(_ctx: &Ctx, dir: PathBuf) -> Result<()> {
    Ok(mount::unmount(&dir)?)
}
