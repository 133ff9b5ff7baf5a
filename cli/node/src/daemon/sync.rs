//! A share synced into a directory by the daemon (`ccbt add SHARE -o DIR`, and `ccbt sync`
//! while a daemon runs).

use super::Daemon;
use ccbt_xet::head::ShareId;
use std::path::Path;
use std::time::Duration;

impl Daemon {
    /// `ccbt sync --follow` held by the daemon: every new version (or, with several writers, new
    /// merged view) written into `out`, fetching only missing chunks. Runs until the item is
    /// paused or removed (its task is aborted then).
    pub(super) async fn sync_share(&self, id: &str, share: ShareId, out: &Path) {
        if let Err(e) = std::fs::create_dir_all(out) {
            let e = format!("cannot create {}: {e}", out.display());
            return self.set_state(id, "error", Some(e), None);
        }
        let xet = &self.node.xet;
        let (mut heads, mut feeds) = (xet.subscribe(), xet.subscribe_feeds());
        // The version written and (several writers) the writers' versions its view merged.
        let (mut done, mut done_key) = (None::<u64>, Vec::new());
        loop {
            if let Some(h) = xet.newest_head(&share) {
                let key = xet.view_key(&share);
                let due = done.is_none_or(|seq| {
                    h.seq > seq || (!h.value.writers.is_empty() && key != done_key)
                });
                if due {
                    let spare = self.settings.sync_spare;
                    match ccbt_xet::sync::sync_version(xet, share, &h, out, spare).await {
                        Ok(r) => {
                            tracing::info!(
                                "share {id} version {} synced into {}: {} files written, {} removed",
                                r.seq,
                                out.display(),
                                r.files_written,
                                r.files_deleted
                            );
                            (done, done_key) = (Some(h.seq), key);
                            self.set_state(id, "synced", None, None);
                        }
                        Err(e) => {
                            let e = format!("cannot sync version {}: {e}", h.seq);
                            self.set_state(id, "error", Some(e), None);
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = heads.recv() => {}
                _ = feeds.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }
}
