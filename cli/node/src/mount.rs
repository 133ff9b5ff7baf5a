//! Mounts: what a mount target names (a share, an old version of one, or a torrent), and the
//! node and FUSE session that serve it until it is unmounted or the process is told to stop.

use crate::bail;
use crate::env::{runtime, Env};
use crate::error::{Context, Result};
use crate::node::Node;
use crate::torrent::{is_info_hash, resolve_torrent, Sources};
use ccbt_fs::MountConfig;
use ccbt_xet::head::{parse_share_id, share_id_hex, Head, ShareId};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A mount point left by a crashed FUSE process answers ENOTCONN.
pub fn check_mount_point(dir: &Path) -> Result<()> {
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

/// What a mount target names.
pub enum Target {
    /// A torrent, with the peers to dial.
    Torrent(Box<ccbt_core::Metainfo>, Vec<SocketAddr>),
    /// A share: its newest version (live), or one old version (`ID@SEQ`, read-only).
    Share { id: ShareId, frozen: Option<u64> },
}

/// True when `target` is written as a share (`ID`, `ID@SEQ`, a BEP 46 share magnet) rather
/// than a torrent file; a bare 40-hex id may still turn out to be a torrent ([`resolve`]).
pub fn looks_like_share(target: &str) -> bool {
    parse_share_id(target.rsplit_once('@').map_or(target, |x| x.0)).is_some()
        && !Path::new(target).is_file()
}

/// Resolves a mount target. A 40-hex id is either a share or a v1 info-hash: a checkpoint here
/// says torrent; otherwise the given peers are asked for the metadata (share swarms offer none,
/// so they answer at once).
pub fn resolve(env: &Env, target: &str, src: &Sources) -> Result<Target> {
    if let Some(t) = torrent_target(env, target, src)? {
        return Ok(Target::Torrent(Box::new(t.0), t.1));
    }
    // ID@SEQ: one old version, read-only.
    let (name, frozen) = match target.rsplit_once('@') {
        Some((t, seq)) if !target.starts_with("magnet:") => (
            t,
            Some(
                seq.parse::<u64>()
                    .map_err(|_| crate::Error::msg(format!("{seq:?} is not a version number")))?,
            ),
        ),
        _ => (target, None),
    };
    let Some(id) = parse_share_id(name) else {
        bail!(
            "{target:?} is neither a share id, a .torrent file, nor a torrent checkpointed in this data dir"
        );
    };
    Ok(Target::Share { id, frozen })
}

fn torrent_target(
    env: &Env,
    target: &str,
    src: &Sources,
) -> Result<Option<(ccbt_core::Metainfo, Vec<SocketAddr>)>> {
    if Path::new(target).is_file() || target.len() == 64 {
        return resolve_torrent(env, target, src).map(Some);
    }
    if target.starts_with("magnet:") {
        let m = ccbt_core::Magnet::parse(target).context("cannot parse the magnet link")?;
        if m.v1.is_none() && m.v2.is_none() {
            return Ok(None); // a share (urn:btpk)
        }
        return resolve_torrent(env, target, src).map(Some);
    }
    if !is_info_hash(target) {
        return Ok(None);
    }
    let hex = target.to_lowercase();
    if ccbt_core::resume::Checkpoint::load(&env.data_dir, &hex)?.is_some() {
        return resolve_torrent(env, &hex, src).map(Some);
    }
    if src.peers.is_empty() || !src.trackers.is_empty() {
        return Ok(None); // trackers cannot tell a share from a torrent: take it as a share
    }
    let quick = Sources {
        timeout: Duration::from_secs(15),
        ..*src
    };
    match resolve_torrent(env, &hex, &quick) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            tracing::debug!("{hex} is not a torrent the peers know ({e}); trying it as a share");
            Ok(None)
        }
    }
}

/// The mount settings from `[fs]`.
pub fn mount_config(
    fs: &crate::config::Fs,
    data_dir: &Path,
    share: ShareId,
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

/// A torrent mounted read-only, streaming pieces on demand, in a session of its own.
pub struct TorrentMount {
    pub name: String,
    pub info_hash_hex: String,
    handle: Arc<ccbt_core::session::TorrentHandle>,
    bg: ccbt_fs::torrent::TorrentMounted,
}

/// Mounts `meta` on `dir`: its data goes under `<data dir>/torrents/<hash>` and is seeded while
/// mounted.
pub fn mount_torrent(
    env: &Env,
    dir: &Path,
    meta: ccbt_core::Metainfo,
    peers: Vec<SocketAddr>,
    listen: SocketAddr,
) -> Result<TorrentMount> {
    use ccbt_core::session::{Session, TorrentConfig};
    let rt = runtime()?;
    let _in_runtime = rt.enter();
    let session = rt.block_on(Session::start(
        env.session_config(listen),
        ccbt_core::extension::Registry::default(),
    ))?;
    if let Some(d) = env.discovery(session.listen_addr()) {
        session.set_discovery(d);
    }
    let hex = ccbt_core::encoding::to_hex(
        &meta
            .v1_hash
            .or_else(|| meta.v2_hash.map(|h| h[..20].try_into().unwrap()))
            .context("the torrent has no info-hash")?,
    );
    let out = env.data_dir.join("torrents").join(&hex);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let cfg = TorrentConfig {
        out_dir: out,
        seed: true,
        data_dir: Some(env.data_dir.clone()),
        peers,
        ..Default::default()
    };
    let name = meta.name.clone();
    // Streaming priority: players read a file's head and tail (container indexes) first.
    let edges = crate::torrent::edge_pieces(&meta);
    let handle = Arc::new(session.add_torrent(meta, cfg)?);
    for p in edges {
        handle.set_piece_priority(p, 2);
    }
    let bg = ccbt_fs::torrent::mount_torrent(
        handle.clone(),
        dir,
        Duration::from_secs(env.config.fs.read_timeout_secs.max(1)),
        env.config.fs.read_ahead_kb,
    )
    .with_context(|| format!("cannot mount on {}", dir.display()))?;
    Ok(TorrentMount {
        name,
        info_hash_hex: hex,
        handle,
        bg,
    })
}

impl TorrentMount {
    /// Serves until `dir` is unmounted or the process gets SIGINT/SIGTERM, then stops.
    pub fn run(self, dir: &Path) -> Result<()> {
        let rt = runtime()?;
        rt.block_on(wait_for_stop(dir));
        self.handle.stop();
        let _ = self.bg.umount_and_join();
        rt.block_on(self.handle.finished());
        Ok(())
    }
}

/// A share mounted by a node of its own.
pub struct ShareMount {
    pub node: Arc<Node>,
    pub head: Head,
    pub frozen: bool,
    mounted: ccbt_fs::Mounted,
}

/// Starts a node, finds the share's newest version (ours, or the first a peer or the DHT
/// offers; `frozen`: that old version), waits (bounded) for a peer when the listing must come
/// from one, and mounts it on `dir`: writable on the owner's node, read-only elsewhere.
pub fn mount_share(
    env: &Env,
    id: ShareId,
    frozen: Option<u64>,
    dir: &Path,
    src: &Sources,
) -> Result<ShareMount> {
    let rt = runtime()?;
    let _in_runtime = rt.enter();
    let timeout = src.timeout;
    let node = rt.block_on(Node::start(
        env,
        src.listen,
        src.trackers.to_vec(),
        src.peers.to_vec(),
    ))?;
    node.join(id)?;
    let head = rt.block_on(newest_head(env, &node, id, timeout))?;
    let head = match frozen {
        Some(seq) => old_head(&node, &head, seq, timeout)?,
        None => head,
    };
    // A head can come from the DHT before any peer does (a cold mount by share id): the
    // listing is fetched from peers, so wait (bounded) for one rather than fail at once.
    if node.shares.listing(&head).is_err() && node.xet.peer_count(&id) == 0 {
        env.note(&format!(
            "version {} found; waiting for a peer that serves it...",
            head.seq
        ));
        if !rt.block_on(node.xet.wait_for_peer(&id, timeout)) {
            bail!(
                "version {} of share {} is known but no peer serving it connected within {}s{}",
                head.seq,
                share_id_hex(&id),
                timeout.as_secs(),
                env.no_source_hint()
            );
        }
    }
    let cfg = mount_config(&env.config.fs, &env.data_dir, id, frozen.is_some());
    let mounted = ccbt_fs::mount(
        node.xet.clone(),
        rt.handle().clone(),
        head.clone(),
        dir,
        cfg,
    )
    .with_context(|| format!("cannot mount on {}", dir.display()))?;
    Ok(ShareMount {
        node,
        head,
        frozen: frozen.is_some(),
        mounted,
    })
}

/// The newest version `node` knows of share `id`: its own (owner, earlier follower) or the
/// first a peer or the DHT offers, waiting up to `timeout`.
pub async fn newest_head(env: &Env, node: &Node, id: ShareId, timeout: Duration) -> Result<Head> {
    let mut rx = node.xet.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(h) = node.xet.newest_head(&id) {
            if node.xet.peer_count(&id) > 0 || node.shares.signing_key(&id).ok().flatten().is_some()
            {
                // Let the other peers speak before settling on a version.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            return Ok(node.xet.newest_head(&id).unwrap_or(h));
        }
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::time::sleep_until(deadline) => bail!(
                "no version of share {} found within {}s{}",
                share_id_hex(&id),
                timeout.as_secs(),
                env.no_source_hint()
            ),
        }
    }
}

impl ShareMount {
    /// Whether this node may write (the owner's, or an authorized writer's, live mount).
    pub fn writable(&self) -> bool {
        self.mounted.writable()
    }

    /// Serves until `dir` is unmounted or the process gets SIGINT/SIGTERM; then the last edits
    /// are published and the mount removed.
    pub fn run(self, dir: &Path) -> Result<()> {
        let rt = runtime()?;
        rt.block_on(wait_for_stop(dir));
        self.mounted.flush_publish();
        let _ = self.mounted.unmount();
        let _ = std::fs::remove_file(crate::socket::socket_path(&self.node.data_dir_path()));
        Ok(())
    }
}

/// The head of old version `seq`: held here, or asked of the share's peers.
pub fn old_head(node: &Node, newest: &Head, seq: u64, timeout: Duration) -> Result<Head> {
    runtime()?.block_on(old_head_async(node, newest, seq, timeout))
}

/// [`old_head`] on the caller's runtime.
pub async fn old_head_async(
    node: &Node,
    newest: &Head,
    seq: u64,
    timeout: Duration,
) -> Result<Head> {
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
    if !node.xet.wait_for_peer(&id, timeout).await {
        bail!(
            "version {seq} is not held here and no peer of the share answered within {}s",
            timeout.as_secs()
        );
    }
    tokio::time::timeout(timeout, node.xet.fetch_head(&id, seq))
        .await
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "no peer serves version {seq} of share {}",
                share_id_hex(&id)
            )
        })
}

/// Until `dir` stops being a mount point (`ccbt unmount`, umount) or SIGINT/SIGTERM.
pub async fn wait_for_stop(dir: &Path) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    let gone = async {
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

/// Whether `dir` is a mount point now (true when that cannot be told).
pub fn is_mounted(dir: &Path) -> bool {
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

/// Whether `dir` is a mount point now (false when that cannot be told).
pub fn is_mounted_now(dir: &Path) -> bool {
    std::fs::canonicalize(dir).is_ok() && is_mounted(dir)
}

/// Unmounts a ccbt mount, also one left stale by a crash.
pub fn unmount(dir: &Path) -> Result<()> {
    let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
        std::process::Command::new(cmd)
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let d = dir.as_os_str();
    let ok = run("fusermount3", &["-u".as_ref(), d])
        || run("umount", &[d])
        || run("umount", &["-l".as_ref(), d]);
    if !ok {
        bail!(
            "cannot unmount {} (is it mounted? try `umount {}` as root)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> Env {
        let mut config = crate::Config::default();
        config.discovery.enable_dht = false;
        Env::new(config, dir.to_path_buf(), None, true, None, false)
    }

    fn src() -> Sources<'static> {
        Sources {
            peers: &[],
            trackers: &[],
            listen: "127.0.0.1:0".parse().unwrap(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn targets_name_shares_old_versions_or_nothing_known() {
        let t = tempfile::tempdir().unwrap();
        let e = env(t.path());
        let id = "ab".repeat(20);
        // A 40-hex id with no checkpoint and no peer to ask is a share.
        match resolve(&e, &id, &src()).unwrap() {
            Target::Share { frozen: None, .. } => {}
            _ => panic!("{id} should be a share"),
        }
        match resolve(&e, &format!("{id}@7"), &src()).unwrap() {
            Target::Share {
                frozen: Some(7), ..
            } => {}
            _ => panic!("ID@7 should be version 7"),
        }
        let err = resolve(&e, &format!("{id}@x"), &src()).err().unwrap();
        assert_eq!(err.to_string(), "\"x\" is not a version number");
        let err = resolve(&e, "no-such-thing", &src()).err().unwrap();
        assert!(err.to_string().contains("neither a share id"), "{err}");
        assert!(looks_like_share(&format!("{id}@3")));
        assert!(!looks_like_share(&"ab".repeat(32)));
    }

    #[test]
    fn a_regular_file_is_not_a_mount_point() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(check_mount_point(t.path()).is_ok());
        let err = check_mount_point(&f).unwrap_err().to_string();
        assert!(err.ends_with("is not a directory"), "{err}");
        let err = check_mount_point(&t.path().join("gone")).unwrap_err();
        assert!(err.to_string().starts_with("cannot use"), "{err}");
    }
}
