//! A share synced into a directory by the daemon (`ccbt add SHARE -o DIR`, and `ccbt sync`
//! while a daemon runs): [`crate::sync::SyncLoop`] following for ever.

use super::Daemon;
use ccbt_xet::head::ShareId;
use std::path::Path;
use std::time::Duration;

impl Daemon {
    /// `ccbt sync --follow` held by the daemon: every new version (or, with several writers, new
    /// merged view) written into `out`, fetching only missing chunks. Runs until the item is
    /// paused or removed (its task is aborted then).
    pub(super) async fn sync_share(&self, id: &str, share: ShareId, out: &Path) {
        let run = crate::sync::SyncLoop {
            node: &self.node,
            share,
            dir: out,
            follow: true,
            spare: self.settings.sync_spare,
            first_timeout: None,
            resume: false,
            retry: Some(Duration::from_secs(5)),
            hint: String::new(),
        }
        .run(|r| match r {
            Ok(s) => {
                tracing::info!(
                    "share {id} version {} synced into {}: {} files written, {} removed",
                    s.report.seq,
                    out.display(),
                    s.report.files_written,
                    s.report.files_deleted
                );
                self.set_state(id, "synced", None, None);
            }
            Err(e) => self.set_state(id, "error", Some(e.to_string()), None),
        })
        .await;
        if let Err(e) = run {
            self.set_state(id, "error", Some(e.to_string()), None);
        }
    }
}
