//! `ccbt mount` and `ccbt unmount`.

use crate::node::Node;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_fs::{mount, MountConfig};
use ccbt_xet::head::{parse_share_id, share_id_hex};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A mount point left by a crashed FUSE process answers ENOTCONN.
fn check_mount_point(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "{} is a stale mount left by a crashed ccbt; clear it with `ccbt unmount {}`",
            dir.display(),
            dir.display()
        ),
        Err(e) => bail!("cannot use {} as a mount point: {e}", dir.display()),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", dir.display()),
        Ok(_) => Ok(()),
    }
}

/// The torrent a mount target names, with the peers to dial; `None` for a share.
///
/// A 40-hex id is either a share or a v1 info-hash: a checkpoint here says torrent; otherwise the
/// given peers are asked for the metadata (share swarms offer none, so they answer at once).
fn torrent_target(
    ctx: &Ctx,
    a: &MountArgs,
) -> Result<Option<(ccbt_core::Metainfo, Vec<SocketAddr>)>> {
    use crate::bt_cmds::{is_info_hash, resolve_torrent, Sources};
    let target = a.target.as_str();
    let src = |timeout| Sources {
        peers: &a.net.peers,
        trackers: &a.net.trackers,
        listen: ctx.listen(a.net.listen),
        timeout: Duration::from_secs(timeout),
    };
    if Path::new(target).is_file() || target.len() == 64 {
        return resolve_torrent(ctx, target, &src(a.net.timeout)).map(Some);
    }
    if target.starts_with("magnet:") {
        let m = ccbt_core::Magnet::parse(target)?;
        if m.v1.is_none() && m.v2.is_none() {
            return Ok(None); // a share (urn:btpk)
        }
        return resolve_torrent(ctx, target, &src(a.net.timeout)).map(Some);
    }
    if !is_info_hash(target) {
        return Ok(None);
    }
    let hex = target.to_lowercase();
    if ccbt_core::resume::Checkpoint::load(&ctx.data_dir, &hex)?.is_some() {
        return resolve_torrent(ctx, &hex, &src(a.net.timeout)).map(Some);
    }
    if a.net.peers.is_empty() || !a.net.trackers.is_empty() {
        return Ok(None); // trackers cannot tell a share from a torrent: take it as a share
    }
    match resolve_torrent(ctx, &hex, &src(15)) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            tracing::debug!("{hex} is not a torrent the peers know ({e:#}); trying it as a share");
            Ok(None)
        }
    }
}

fn mount_torrent_cmd(
    ctx: &Ctx,
    a: &MountArgs,
    meta: ccbt_core::Metainfo,
    peers: Vec<SocketAddr>,
) -> Result<()> {
    use ccbt_core::session::{Session, TorrentConfig};
    let rt = crate::runtime()?;
    let _in_runtime = rt.enter();
    let listen = ctx.listen(a.net.listen);
    let session = rt.block_on(Session::start(
        ctx.session_config(listen),
        ccbt_core::extension::Registry::default(),
    ))?;
    if let Some(d) = ctx.discovery(session.listen_addr()) {
        session.set_discovery(d);
    }
    let hex = ccbt_core::encoding::to_hex(
        &meta
            .v1_hash
            .or_else(|| meta.v2_hash.map(|h| h[..20].try_into().unwrap()))
            .unwrap(),
    );
    let out = ctx.data_dir.join("torrents").join(&hex);
    std::fs::create_dir_all(&out)?;
    let cfg = TorrentConfig {
        out_dir: out,
        seed: true,
        data_dir: Some(ctx.data_dir.clone()),
        peers,
        ..Default::default()
    };
    let name = meta.name.clone();
    // Streaming priority: players read a file's head and tail (container indexes) first.
    let edges: Vec<u32> = meta
        .files
        .iter()
        .filter(|f| !f.pad && f.length > 0)
        .flat_map(|f| {
            [
                (f.offset / meta.piece_length) as u32,
                ((f.offset + f.length - 1) / meta.piece_length) as u32,
            ]
        })
        .collect();
    let handle = std::sync::Arc::new(session.add_torrent(meta, cfg)?);
    for p in edges {
        handle.set_piece_priority(p, 2);
    }
    let bg = ccbt_fs::torrent::mount_torrent(
        handle.clone(),
        &a.dir,
        Duration::from_secs(ctx.config.fs.read_timeout_secs.max(1)),
        ctx.config.fs.read_ahead_kb,
    )
    .with_context(|| format!("cannot mount on {}", a.dir.display()))?;
    if !ctx.quiet {
        eprintln!(
            "mounted torrent {name} ({hex}) read-only on {}; reads stream pieces as they arrive",
            a.dir.display()
        );
    }
    rt.block_on(wait_for_stop(&a.dir));
    handle.stop();
    let _ = bg.umount_and_join();
    rt.block_on(handle.finished());
    Ok(())
}

/// What to tell a user whose share was not found: where we looked and what else to try.
pub fn no_source_hint(ctx: &Ctx) -> String {
    match ctx.dht_started() {
        Some(_) => " on the DHT or from peers (is the owner's node running? --peer ADDR or --tracker URL help too)".into(),
        None => " (the DHT is off: give --peer ADDR or --tracker URL, or turn the DHT on)".into(),
    }
}

async fn wait_for_stop(dir: &Path) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    let gone = async {
        // `ccbt unmount` (or umount) ends the session from outside.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !is_mounted(dir) {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = gone => {}
    }
}

pub fn mount_cmd(ctx: &Ctx, a: MountArgs) -> Result<()> {
    check_mount_point(&a.dir)?;
    let is_share = parse_share_id(a.target.rsplit_once('@').map_or(a.target.as_str(), |x| x.0))
        .is_some()
        && !Path::new(&a.target).is_file();
    if !is_share {
        crate::daemon::client::refuse_if_daemon(
            ctx,
            "a torrent mount runs its own session (add the torrent to the daemon with `ccbt add`)",
        )?;
    }
    if let Some((meta, peers)) = torrent_target(ctx, &a)? {
        return mount_torrent_cmd(ctx, &a, meta, peers);
    }
    // ID@SEQ: one old version, read-only.
    let (target, frozen) = match a.target.rsplit_once('@') {
        Some((t, seq)) if !a.target.starts_with("magnet:") => (
            t,
            Some(
                seq.parse::<u64>()
                    .with_context(|| format!("{seq:?} is not a version number"))?,
            ),
        ),
        _ => (a.target.as_str(), None),
    };
    let Some(id) = parse_share_id(target) else {
        bail!("{:?} is neither a share id, a .torrent file, nor a torrent checkpointed in this data dir", a.target);
    };
    if frozen.is_none()
        && crate::daemon::client::mount_via_daemon(ctx, &share_id_hex(&id), &a.dir, &a.net.peers)?
    {
        return Ok(());
    }
    crate::daemon::client::refuse_if_daemon(
        ctx,
        "`ccbt mount ID@SEQ` runs its own session; mount the newest version through the daemon",
    )?;
    let rt = crate::runtime()?;
    let _in_runtime = rt.enter();
    let listen = ctx.listen(a.net.listen);
    let node = rt.block_on(Node::start(
        ctx,
        listen,
        a.net.trackers.clone(),
        a.net.peers.clone(),
    ))?;
    node.join(id)?;
    // The newest version we know: our own (owner, earlier follower) or the first a peer offers.
    let head = rt.block_on(async {
        let mut rx = node.xet.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.net.timeout);
        loop {
            if let Some(h) = node.xet.newest_head(&id) {
                if node.xet.peer_count(&id) > 0 || node.shares.signing_key(&id).ok().flatten().is_some() {
                    // Let the other peers speak before settling on a version.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                return Ok(node.xet.newest_head(&id).unwrap_or(h));
            }
            tokio::select! {
                _ = rx.recv() => {}
                _ = tokio::time::sleep_until(deadline) => bail!("no version of share {} found within {}s{}", share_id_hex(&id), a.net.timeout, no_source_hint(ctx)),
            }
        }
    })?;
    let head = match frozen {
        Some(seq) => old_head(&node, &head, seq, a.net.timeout)?,
        None => head,
    };
    // A head can come from the DHT before any peer does (a cold mount by share id): the
    // listing is fetched from peers, so wait (bounded) for one rather than fail at once.
    let have_listing = node.shares.listing(&head).is_ok();
    if !have_listing && node.xet.peer_count(&id) == 0 {
        if !ctx.quiet {
            eprintln!(
                "version {} found; waiting for a peer that serves it...",
                head.seq
            );
        }
        if !rt.block_on(
            node.xet
                .wait_for_peer(&id, Duration::from_secs(a.net.timeout)),
        ) {
            bail!(
                "version {} of share {} is known but no peer serving it connected within {}s{}",
                head.seq,
                share_id_hex(&id),
                a.net.timeout,
                no_source_hint(ctx)
            );
        }
    }
    let cfg = mount_config(&ctx.config.fs, &ctx.data_dir, id, frozen.is_some());
    let m = mount(
        node.xet.clone(),
        rt.handle().clone(),
        head.clone(),
        &a.dir,
        cfg,
    )
    .with_context(|| format!("cannot mount on {}", a.dir.display()))?;
    let owner = m.writable();
    if !ctx.quiet {
        eprintln!(
            "mounted share {} version {} on {} ({}); Ctrl-C or `ccbt unmount {}` to stop",
            share_id_hex(&id),
            head.seq,
            a.dir.display(),
            if owner {
                "writable: changes are published as new versions"
            } else if frozen.is_some() {
                "read-only, this version only"
            } else {
                "read-only"
            },
            a.dir.display()
        );
    }
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        let gone = async {
            // `ccbt unmount` (or umount) ends the session from outside.
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !is_mounted(&a.dir) {
                    break;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = gone => {}
        }
    });
    m.flush_publish();
    let _ = m.unmount();
    let _ = std::fs::remove_file(crate::node::socket_path(&ctx.data_dir));
    Ok(())
}

/// The mount settings from `[fs]`.
pub fn mount_config(
    fs: &crate::config::Fs,
    data_dir: &Path,
    share: ccbt_xet::head::ShareId,
    frozen: bool,
) -> MountConfig {
    MountConfig {
        share,
        overlay_dir: data_dir.join("overlay").join(share_id_hex(&share)),
        read_timeout: Duration::from_secs(fs.read_timeout_secs.max(1)),
        publish_debounce: Duration::from_millis(fs.publish_debounce_ms),
        read_ahead_kb: fs.read_ahead_kb,
        file_cache_dir: data_dir.join("fscache"),
        file_cache_bytes: fs.file_cache_mib << 20,
        history: fs.history,
        show_history: fs.show_history,
        frozen,
        cache_limit: fs.cache_limit_mib << 20,
    }
}

/// The head of old version `seq`: held here, or asked of the share's peers.
fn old_head(
    node: &Node,
    newest: &ccbt_xet::head::Head,
    seq: u64,
    timeout: u64,
) -> Result<ccbt_xet::head::Head> {
    let id = newest.share_id();
    if let Ok(h) = node.shares.head(&id, Some(seq)) {
        return Ok(h);
    }
    if seq == 0 || seq > newest.seq {
        bail!(
            "share {} has no version {seq} (the newest known is {})",
            share_id_hex(&id),
            newest.seq
        );
    }
    let rt = crate::runtime()?;
    rt.block_on(async {
        let t = Duration::from_secs(timeout);
        if !node.xet.wait_for_peer(&id, t).await {
            bail!("version {seq} is not held here and no peer of the share answered within {timeout}s");
        }
        tokio::time::timeout(t, node.xet.fetch_head(&id, seq))
            .await
            .ok()
            .flatten()
            .with_context(|| format!("no peer serves version {seq} of share {}", share_id_hex(&id)))
    })
}

fn is_mounted(dir: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(dir) else {
        return true;
    };
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(canon.to_str().unwrap_or("")))
        })
        .unwrap_or(true)
}

pub fn unmount_cmd(_ctx: &Ctx, dir: PathBuf) -> Result<()> {
    let ok = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        || std::process::Command::new("umount")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        || std::process::Command::new("umount")
            .arg("-l")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        bail!(
            "cannot unmount {} (is it mounted? try `umount {}` as root)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}
