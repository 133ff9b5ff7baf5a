//! The local socket (`<data dir>/ccbt.sock`, owner-only): how a second command on the same data
//! dir reaches the node running there instead of failing on the RocksDB lock. One JSON line per
//! request ([`Request`], tagged by `cmd`), one line back: `{"ok": REPLY}` or `{"error": TEXT}`,
//! where REPLY is the request's typed reply ([`PinReply`], [`PublishReply`]...).

use crate::dht::Lookup;
use crate::error::{Context, Error, Result};
use crate::node::Node;
use ccbt_xet::head::{parse_share_id, share_id_hex, ShareId};
use ccbt_xet::shares::ShareChoice;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ccbt.sock")
}

/// A request to the running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Shares, peers and counters: the JSON `ccbt status` prints.
    Status,
    /// Keep files of a share local (fetched in the background). Reply: [`PinReply`].
    Pin(PinRequest),
    /// Undo `pin`. Reply: [`UnpinReply`].
    Unpin(PinRequest),
    /// Drop local chunks of files not pinned. Reply: [`EvictReply`].
    Evict {
        share: String,
        #[serde(default)]
        paths: Vec<String>,
    },
    /// A DHT lookup on the node's warm routing table. Reply: the lookup's JSON.
    DhtRequest { req: Lookup },
    /// The DHT node's status JSON.
    DhtStatus,
    /// A share's versions. Reply: a list of [`VersionReply`].
    Versions { share: String },
    /// Publish a folder as a new version, pushed to the peers at once. Reply: [`PublishReply`].
    Publish {
        dir: PathBuf,
        share: Option<String>,
        #[serde(default)]
        new: bool,
        #[serde(default)]
        torrent: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    pub share: String,
    pub seq: Option<u64>,
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinReply {
    pub files: u64,
    pub bytes: u64,
    /// Bytes of those files already local.
    pub local: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpinReply {
    pub removed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvictReply {
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// Files kept because a pin holds them.
    pub pinned: u64,
}

impl From<&ccbt_xet::local::EvictReport> for EvictReply {
    fn from(r: &ccbt_xet::local::EvictReport) -> EvictReply {
        EvictReply {
            files: r.files,
            chunks: r.chunks,
            bytes: r.bytes,
            pinned: r.pinned,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionReply {
    pub seq: u64,
    pub time: i64,
    pub size: u64,
    pub root: String,
    /// The signed head record, hex.
    pub head: String,
}

impl From<&ccbt_xet::shares::VersionInfo> for VersionReply {
    fn from(v: &ccbt_xet::shares::VersionInfo) -> VersionReply {
        VersionReply {
            seq: v.seq,
            time: v.time,
            size: v.size,
            root: v.root.to_hex(),
            head: ccbt_core::encoding::to_hex(&v.head),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishReply {
    pub share: String,
    pub version: u64,
    pub new_share: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub logical_bytes: u64,
    pub new_chunk_bytes: u64,
    pub new_node_bytes: u64,
    pub new_bytes: u64,
    pub new_chunks: u64,
    pub listing_root: String,
    pub seconds: f64,
    pub warnings: Vec<String>,
    pub via_node: bool,
}

/// Parses a share id given over the socket.
pub(crate) fn share_arg(s: &str) -> Result<ShareId> {
    parse_share_id(s).with_context(|| format!("{s:?} is not a share id"))
}

/// Serves the socket of `node` on `data_dir` (replacing a stale one).
pub(crate) fn serve(node: &Arc<Node>, data_dir: &Path) -> Result<()> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let l =
        UnixListener::bind(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let node = node.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let node = node.clone();
            tokio::spawn(async move {
                let _ = handle_client(node, s).await;
            });
        }
    });
    Ok(())
}

async fn handle_client(node: Arc<Node>, s: UnixStream) -> Result<()> {
    let (r, mut w) = s.into_split();
    let mut line = String::new();
    // Bounded: a request is one short line.
    BufReader::new(r.take(1 << 20)).read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match answer(node, req).await {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "error": e.to_string() }),
        },
        Err(e) => json!({ "error": format!("bad request to the running node: {e}") }),
    };
    w.write_all(format!("{resp}\n").as_bytes()).await?;
    Ok(())
}

fn to_value<T: Serialize>(t: T) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

async fn answer(node: Arc<Node>, req: Request) -> Result<Value> {
    match req {
        Request::Status => {
            let n = node.clone();
            Ok(tokio::task::spawn_blocking(move || n.status()).await?)
        }
        Request::Pin(p) => to_value(crate::pin::pin(&node, &p).await?),
        Request::Unpin(p) => to_value(crate::pin::unpin(&node, &p).await?),
        Request::Evict { share, paths } => {
            to_value(crate::pin::evict(&node, &share, &paths).await?)
        }
        Request::DhtRequest { req } => {
            let d = node
                .dht
                .as_ref()
                .context("the running node has the DHT off")?;
            let r = req.request()?;
            let done = d.request(r.clone()).await?;
            Ok(crate::dht::done_json(&r, &done))
        }
        Request::DhtStatus => match &node.dht {
            Some(d) => Ok(crate::dht::status_json(&d.status().await?)),
            None => Err(Error::msg("the running node has the DHT off")),
        },
        Request::Versions { share } => {
            let id = share_arg(&share)?;
            let v = node.shares.versions(&id)?;
            to_value(v.iter().map(VersionReply::from).collect::<Vec<_>>())
        }
        Request::Publish {
            dir,
            share,
            new,
            torrent,
        } => {
            let choice = match (share, new) {
                (Some(s), _) => ShareChoice::Existing(share_arg(&s)?),
                (None, true) => ShareChoice::New,
                _ => ShareChoice::Auto,
            };
            to_value(publish(&node, dir, choice, torrent).await?)
        }
    }
}

/// Publishes `dir` on the running node: stored, pushed to every connected peer at once, and
/// with `torrent` also seeded as a torrent from the folder.
async fn publish(
    node: &Arc<Node>,
    dir: PathBuf,
    choice: ShareChoice,
    torrent: bool,
) -> Result<PublishReply> {
    let n = node.clone();
    let started = std::time::Instant::now();
    let data_dir = node.data_dir_path();
    let (r, t, dir) = tokio::task::spawn_blocking(move || -> Result<_> {
        let t = if torrent {
            Some(crate::publish::version_torrent(&data_dir, &dir)?)
        } else {
            None
        };
        let ih = t.as_ref().map(|t| t.1);
        let r = n
            .shares
            .publish_with_ih(&dir, choice, &AtomicU64::new(0), ih)?;
        Ok((r, t, dir))
    })
    .await??;
    // The version as a torrent: seeded from the folder from now on.
    if let Some((meta, ih)) = t {
        let cfg = ccbt_core::session::TorrentConfig {
            out_dir: dir.parent().unwrap_or(Path::new("/")).to_path_buf(),
            seed: true,
            resume: true,
            data_dir: Some(node.data_dir_path()),
            ..Default::default()
        };
        match node.session.add_torrent(meta, cfg) {
            Ok(h) => node.torrents.lock().unwrap().push(h),
            Err(e) => tracing::warn!(
                "cannot seed the torrent {}: {e}",
                ccbt_core::encoding::to_hex(&ih)
            ),
        }
    }
    // Push the new head to every connected peer at once.
    let head = node.shares.head(&r.share, Some(r.seq))?;
    node.join(r.share)?;
    node.xet.offer_head(head, None);
    node.xet.have_version(&r.share, r.seq);
    Ok(PublishReply {
        share: share_id_hex(&r.share),
        version: r.seq,
        new_share: r.created_share,
        files: r.files,
        dirs: r.dirs,
        symlinks: r.links,
        logical_bytes: r.logical_bytes,
        new_chunk_bytes: r.new_chunk_bytes,
        new_node_bytes: r.new_node_bytes,
        new_bytes: r.new_chunk_bytes + r.new_node_bytes,
        new_chunks: r.new_chunks,
        listing_root: r.listing_root.to_hex(),
        seconds: started.elapsed().as_secs_f64(),
        warnings: r.warnings,
        via_node: true,
    })
}

/// Sends a request to the node running on `data_dir`, if one is. `Ok(None)`: no node.
pub fn call<R: DeserializeOwned>(data_dir: &Path, req: &Request) -> Result<Option<R>> {
    let path = socket_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => {
            // A node that died left its socket behind.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
    };
    use std::io::{BufRead, Write};
    // Bounded, except a publish, whose time grows with the folder.
    const REPLY_SECS: u64 = 120;
    if !matches!(req, Request::Publish { .. }) {
        s.set_read_timeout(Some(std::time::Duration::from_secs(REPLY_SECS)))?;
    }
    writeln!(s, "{}", serde_json::to_string(req)?)?;
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::msg(format!(
                "the node running on {} did not answer within {REPLY_SECS} s (is it stuck? stop it: Ctrl-C where it runs, or `ccbt stop` for a daemon)",
                data_dir.display()
            )),
            _ => Error::Io(e),
        })?;
    let mut v: Value = serde_json::from_str(&line).context("bad reply from the running node")?;
    if let Some(e) = v["error"].as_str() {
        return Err(Error::msg(e));
    }
    Ok(Some(
        serde_json::from_value(v["ok"].take()).context("bad reply from the running node")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_form() {
        let r = Request::Pin(PinRequest {
            share: "ab".into(),
            seq: Some(3),
            paths: vec!["x".into()],
        });
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j,
            json!({"cmd": "pin", "share": "ab", "seq": 3, "paths": ["x"]})
        );
        let back: Request = serde_json::from_value(json!({"cmd": "dht_status"})).unwrap();
        assert!(matches!(back, Request::DhtStatus));
        let l: Request = serde_json::from_value(
            json!({"cmd": "dht_request", "req": {"op": "peers", "ih": "00"}}),
        )
        .unwrap();
        assert!(matches!(
            l,
            Request::DhtRequest {
                req: Lookup::Peers { .. }
            }
        ));
        assert!(serde_json::from_value::<Request>(json!({"cmd": "format_disk"})).is_err());
    }
}
