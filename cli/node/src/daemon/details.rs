//! What the details pane and `GET /api/items/{id}/details` show: a torrent's peers, files and
//! trackers; a share's residency, versions, writers and mount.

use super::{Daemon, Kind};

impl Daemon {
    /// A torrent's peers, files and trackers; a share's residency (blocking: store reads).
    pub fn details(&self, id: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        let (kind, handle_peers, mount) = {
            let g = self.live.lock().unwrap();
            let l = g.get(id)?;
            let t = l
                .handle
                .as_ref()
                .map(|h| (h.peers(), h.files(), h.trackers()));
            let mount = l.item.mount.clone().map(|m| (m, l.mounted.is_some()));
            (l.item.kind, t, mount)
        };
        Some(match kind {
            Kind::Torrent => {
                let (peers, files, trackers) = handle_peers.unwrap_or_default();
                json!({
                    "peers": peers.iter().map(|p| json!({
                        "addr": p.addr.to_string(), "client": p.client, "down_rate": p.down_rate,
                        "up_rate": p.up_rate, "downloaded": p.downloaded, "uploaded": p.uploaded,
                        "progress": p.progress, "outgoing": p.outgoing,
                    })).collect::<Vec<_>>(),
                    "files": files.iter().map(|f| json!({
                        "path": f.path, "size": f.size, "progress": f.progress,
                    })).collect::<Vec<_>>(),
                    "trackers": trackers.iter().map(|t| json!({
                        "url": t.url, "kind": t.kind, "status": t.status,
                        "announces": t.announces, "failures": t.failures, "peers": t.peers,
                        "seeders": t.seeders, "leechers": t.leechers, "message": t.message,
                        "next_announce_secs": t.next_announce_secs,
                    })).collect::<Vec<_>>(),
                })
            }
            Kind::Share => {
                let (share, _) = super::item_share(id)?;
                let mut v = crate::pin::residency_json(&self.node, &share);
                if !v.is_object() {
                    v = json!({});
                }
                // The newest versions held here (the owner's), and where it is mounted.
                let versions = self.node.shares.versions(&share).unwrap_or_default();
                v["versions"] = json!(versions
                    .iter()
                    .rev()
                    .take(10)
                    .map(|x| json!({"seq": x.seq, "time": x.time, "size": x.size}))
                    .collect::<Vec<_>>());
                v["writers"] = json!(self
                    .node
                    .xet
                    .newest_head(&share)
                    .map_or(0, |h| h.value.writers.len()));
                v["mount"] = json!(mount.map(|(m, on)| json!({"dir": m, "mounted": on})));
                v
            }
        })
    }
}
