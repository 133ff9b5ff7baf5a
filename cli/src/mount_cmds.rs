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
    /// Share id (40 hex or magnet:?xs=urn:btpk:...)
    pub target: String,
    /// Mount point (an existing empty directory)
    pub dir: PathBuf,
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Seconds to wait for the share's newest version from peers
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
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

pub fn mount_cmd(ctx: &Ctx, a: MountArgs) -> Result<()> {
    let Some(id) = parse_share_id(&a.target) else {
        bail!("{:?} is not a share id; torrent mounts are not implemented yet (download it with `ccbt download`)", a.target);
    };
    check_mount_point(&a.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _in_runtime = rt.enter();
    let listen = a
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], ctx.config.network.listen_port)));
    let node = rt.block_on(Node::start(
        ctx,
        listen,
        a.trackers.clone(),
        a.peers.clone(),
    ))?;
    node.join(id)?;
    // The newest version we know: our own (owner, earlier follower) or the first a peer offers.
    let head = rt.block_on(async {
        let mut rx = node.xet.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
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
                _ = tokio::time::sleep_until(deadline) => bail!("no version of share {} found within {}s (give --peer or --tracker)", share_id_hex(&id), a.timeout),
            }
        }
    })?;
    let cfg = MountConfig {
        share: id,
        overlay_dir: ctx.data_dir.join("overlay").join(share_id_hex(&id)),
        read_timeout: Duration::from_secs(ctx.config.fs.read_timeout_secs.max(1)),
        publish_debounce: Duration::from_millis(ctx.config.fs.publish_debounce_ms),
    };
    let owner = node.shares.signing_key(&id).ok().flatten().is_some();
    let m = mount(
        node.xet.clone(),
        rt.handle().clone(),
        head.clone(),
        &a.dir,
        cfg,
    )
    .with_context(|| format!("cannot mount on {}", a.dir.display()))?;
    if !ctx.quiet {
        eprintln!(
            "mounted share {} version {} on {} ({}); Ctrl-C or `ccbt unmount {}` to stop",
            share_id_hex(&id),
            head.seq,
            a.dir.display(),
            if owner {
                "writable: changes are published as new versions"
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
