//! Publishing helpers shared by the foreground `publish` and the running node.

use crate::env::{runtime, Env};
use crate::error::{Context, Result};
use ccbt_xet::head::Head;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// `publish --torrent`: the folder as a hybrid torrent, checkpointed in the data dir so the node
/// (now, or the next `ccbt seed`) seeds it from the folder itself. Returns it and its v1 hash.
pub fn version_torrent(data_dir: &Path, dir: &Path) -> Result<(ccbt_core::Metainfo, [u8; 20])> {
    let meta = ccbt_core::create::create_torrent(
        dir,
        &ccbt_core::create::CreateOptions {
            created_by: Some(format!("ccbt {}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .with_context(|| format!("cannot make a torrent of {}", dir.display()))?;
    let ih = meta
        .v1_hash
        .context("a hybrid torrent has a v1 info-hash")?;
    let out_dir = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let n = meta.pieces.len().max(1);
    // No pieces marked: the first run rechecks the folder (it is the data) and then seeds.
    ccbt_core::resume::Checkpoint {
        info_hash_hex: ccbt_core::encoding::to_hex(&ih),
        torrent: meta.to_torrent_bytes(),
        out_dir,
        have: vec![0; n.div_ceil(8)],
        files: Vec::new(),
        saved: 0,
        only: Vec::new(),
        skip: Vec::new(),
        name: meta.name.clone(),
        pieces_have: 0,
        pieces_total: n as u64,
    }
    .save(data_dir)
    .context("cannot save the torrent's checkpoint")?;
    Ok((meta, ih))
}

/// Puts a head on the DHT from a short-lived node (bounded); returns how many nodes stored it.
pub fn put_head_on_dht(env: &Env, head: &Head) -> Result<usize> {
    let dht = env
        .dht(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
        .context("the DHT could not start")?;
    runtime()?.block_on(async {
        if dht.wait_for_nodes(Duration::from_secs(10)).await == 0 {
            crate::bail!("no DHT node answered within 10s");
        }
        let (_, stored, err) = tokio::time::timeout(
            Duration::from_secs(30),
            dht.put(crate::node::head_item(head)),
        )
        .await
        .context("the DHT put timed out")??;
        if stored == 0 {
            crate::bail!(
                "no DHT node stored it{}",
                err.map(|(c, m)| format!(" (error {c}: {m})"))
                    .unwrap_or_default()
            );
        }
        Ok(stored)
    })
}
