//! Torrents named by users: a .torrent file, a magnet (BEP 9 metadata from its peers,
//! trackers and the DHT; BEP 46 keys resolved on the DHT) or an info-hash with a checkpoint
//! here; and the torrent settings from the configuration.

use crate::bail;
use crate::env::{runtime, Env};
use crate::error::{Context, Error, Result};
use ccbt_core::encoding::{printable, to_hex};
use ccbt_core::picker::Strategy;
use ccbt_core::resume::Checkpoint;
use ccbt_core::session::TorrentConfig;
use ccbt_core::storage::Prealloc;
use ccbt_core::Metainfo;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub fn load_torrent(p: &Path) -> Result<(Metainfo, Vec<u8>)> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    let m = Metainfo::from_bytes(&bytes).with_context(|| p.display().to_string())?;
    Ok((m, bytes))
}

pub fn strategy(ctx: &Env, sequential: bool) -> Result<Strategy> {
    if sequential {
        return Ok(Strategy::Sequential);
    }
    ctx.config
        .strategy
        .piece_selection
        .parse()
        .map_err(Error::Msg)
}

pub fn base_cfg(ctx: &Env) -> Result<TorrentConfig> {
    let c = &ctx.config;
    Ok(TorrentConfig {
        prealloc: if c.disk.preallocate == "full" {
            Prealloc::Full
        } else {
            Prealloc::Sparse
        },
        strategy: strategy(ctx, false)?,
        endgame_duplicates: c.strategy.endgame_duplicates.clamp(1, 8) as u8,
        pipeline_depth: c.network.pipeline_depth.max(4) as usize,
        max_peers: c.network.max_peers_per_torrent.max(1) as usize,
        down_limit: c.limits.global_down_kib * 1024,
        up_limit: c.limits.global_up_kib * 1024,
        data_dir: Some(ctx.data_dir.clone()),
        ..Default::default()
    })
}

/// Where to look for a magnet's metadata besides the magnet itself.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub peers: &'a [SocketAddr],
    pub trackers: &'a [String],
    /// Our peer address (the DHT's UDP socket goes on it too).
    pub listen: SocketAddr,
    pub timeout: Duration,
}

/// True for a 40-hex (v1) or 64-hex (v2) info-hash.
pub fn is_info_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A torrent named on the command line: a .torrent file, a magnet, or an info-hash (40 hex v1 or
/// 64 hex v2). Magnets and info-hashes use this data dir's checkpoint when there is one, else
/// fetch the metadata (BEP 9) from the magnet's peers (`x.pe`) and trackers and from `src`.
/// Returns the torrent and the peers to dial.
pub fn resolve_torrent(
    ctx: &Env,
    target: &str,
    src: &Sources,
) -> Result<(Metainfo, Vec<SocketAddr>)> {
    let p = Path::new(target);
    let mut peers = src.peers.to_vec();
    let mut trackers = src.trackers.to_vec();
    if p.is_file() || !(target.starts_with("magnet:") || is_info_hash(target)) {
        return Ok((load_torrent(p)?.0, peers));
    }
    let (v1, v2) = if is_info_hash(target) {
        let b = ccbt_core::encoding::from_hex(target).context("bad info-hash")?;
        match b.len() {
            20 => (Some(b.try_into().unwrap()), None),
            _ => (None, Some(b.try_into().unwrap())),
        }
    } else {
        let m = ccbt_core::Magnet::parse(target).context("cannot parse the magnet link")?;
        for pe in &m.peers {
            match pe.parse() {
                Ok(a) => peers.push(a),
                Err(_) => tracing::warn!("ignoring x.pe={pe}: not an IP:port"),
            }
        }
        trackers.extend(m.trackers.clone());
        match (m.v1, m.v2, m.public_key) {
            (None, None, Some(k)) => (Some(resolve_bep46(ctx, &k, &m.salt, src.listen)?), None),
            (None, None, None) => {
                bail!("this magnet names no torrent (no urn:btih, urn:btmh or urn:btpk)")
            }
            (v1, v2, _) => (v1, v2),
        }
    };
    let swarm: [u8; 20] = v1.unwrap_or_else(|| v2.unwrap()[..20].try_into().unwrap());
    let hex = ccbt_core::encoding::to_hex(&swarm);
    if let Some(c) = Checkpoint::load(&ctx.data_dir, &hex)? {
        let meta =
            Metainfo::from_bytes(&c.torrent).context("the checkpoint's torrent is damaged")?;
        return Ok((meta, peers));
    }
    let dht = ctx.discovery(src.listen);
    if peers.is_empty() && trackers.is_empty() && dht.is_none() {
        bail!("no peer source for {hex}: the DHT is off, so give --peer ADDR, or a magnet with a tracker (tr=) or a peer (x.pe=)");
    }
    ctx.note(&format!(
        "fetching the torrent's metadata for {hex} from {} peer(s), {} tracker(s){}...",
        peers.len(),
        trackers.len(),
        if dht.is_some() { " and the DHT" } else { "" }
    ));
    let cfg = ccbt_core::session::metadata_fetch::FetchConfig {
        v1,
        v2,
        peers: peers.clone(),
        trackers: trackers.clone(),
        peer_id: ccbt_core::session::new_peer_id(),
        listen_port: src.listen.port(),
        discovery: dht.clone(),
        timeout: src.timeout,
        encryption: ctx.config.encryption()?,
        enable_tcp: ctx.config.network.enable_tcp,
        enable_utp: ctx.config.network.enable_utp,
        prefer_utp: ctx.config.network.prefer_utp,
    };
    let got = runtime()?.block_on(ccbt_core::session::metadata_fetch::fetch_metadata(cfg))?;
    let mut meta = Metainfo::from_info_bytes(&got.info)
        .context("the peers' metadata is not a valid torrent")?;
    meta.trackers = trackers.iter().map(|t| vec![t.clone()]).collect();
    // v2-only: the piece layers came over BEP 52 hash requests, checked against each file root.
    meta.piece_layers = got.piece_layers;
    ctx.note(&format!(
        "got the metadata: {} ({} files, {})",
        printable(&meta.name),
        meta.files.iter().filter(|f| !f.pad).count(),
        crate::human_bytes(meta.total_length())
    ));
    Ok((meta, peers))
}

/// BEP 46: the torrent a public key (and salt) currently names: the newest verified mutable
/// item on the DHT, whose value is a dictionary with `ih` (share heads published with
/// `--torrent` have one).
fn resolve_bep46(ctx: &Env, k: &[u8; 32], salt: &[u8], listen: SocketAddr) -> Result<[u8; 20]> {
    use ccbt_dht::node::ItemKind;
    let dht = ctx
        .dht(listen)
        .context("a magnet with xs=urn:btpk: is resolved on the DHT, which is off (--no-dht, CCBT_ENABLE_DHT=false); give --dht-bootstrap")?;
    let target = ccbt_dht::items::mutable_target(k, salt);
    let rt = runtime()?;
    let item = rt.block_on(async {
        dht.wait_for_nodes(Duration::from_secs(15)).await;
        for _ in 0..5 {
            let kind = ItemKind::Mutable {
                k: Some(*k),
                salt: salt.to_vec(),
                min_seq: None,
            };
            if let Ok(Some(it)) = dht.get(target, kind).await {
                return Some(it);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        None
    });
    let item = item.with_context(|| {
        format!(
            "no DHT node holds a signed item for key {} (target {})",
            to_hex(k),
            to_hex(&target)
        )
    })?;
    let seq = item.mutable.as_ref().map_or(0, |m| m.seq);
    let v = ccbt_core::bencode::decode(&item.v).context("the item's value is not bencode")?;
    let ih: [u8; 20] = v
        .as_dict()
        .and_then(|d| d.get(b"ih"))
        .and_then(|x| x.as_bytes())
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "the item for key {} (seq {seq}) names no torrent ('ih')",
                to_hex(k)
            )
        })?;
    ctx.note(&format!(
        "BEP 46: key {} at seq {seq} names torrent {}",
        to_hex(k),
        to_hex(&ih)
    ));
    Ok(ih)
}

/// The first and last piece of every file: what a player reads first.
pub fn edge_pieces(meta: &Metainfo) -> Vec<u32> {
    meta.files
        .iter()
        .filter(|f| !f.pad && f.length > 0)
        .flat_map(|f| {
            [
                (f.offset / meta.piece_length) as u32,
                ((f.offset + f.length - 1) / meta.piece_length) as u32,
            ]
        })
        .collect()
}

/// A torrent in a session of its own: the foreground `download`, `seed` and `resume`.
pub struct Solo {
    pub session: ccbt_core::session::Session,
    pub handle: ccbt_core::session::TorrentHandle,
}

/// Starts a session on `listen` (with the DHT as its peer source when on) holding `meta`.
pub async fn solo(
    env: &Env,
    listen: SocketAddr,
    meta: Metainfo,
    cfg: TorrentConfig,
) -> Result<Solo> {
    let session = ccbt_core::session::Session::start(
        env.session_config(listen),
        ccbt_core::extension::Registry::default(),
    )
    .await?;
    if let Some(d) = env.discovery(session.listen_addr()) {
        session.set_discovery(d);
    }
    let handle = session.add_torrent(meta, cfg)?;
    Ok(Solo { session, handle })
}
