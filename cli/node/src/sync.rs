//! A share kept in step with a directory: the one loop behind the foreground `ccbt sync` and
//! the daemon's synced items. Each version (or, with several writers, each new merged view) is
//! written into the directory, fetching only the chunks not already here.

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::node::Node;
use ccbt_xet::head::{share_id_hex, ShareId};
use ccbt_xet::sync::{sync_version, synced_seq, SyncReport};
use std::path::Path;
use std::time::Duration;

/// One version written.
pub struct Synced {
    pub report: SyncReport,
    /// Bytes received on the share's swarm while it was written.
    pub wire_in: u64,
}

/// How a sync runs.
pub struct SyncLoop<'a> {
    pub node: &'a Node,
    pub share: ShareId,
    pub dir: &'a Path,
    /// Keep writing newer versions as they come; otherwise return once the newest is written.
    pub follow: bool,
    /// Bytes of spare copies kept for the next version (`[xet] sync_spare_mib`).
    pub spare: u64,
    /// Fail when no version at all is offered within this long (`None`: wait for ever).
    pub first_timeout: Option<Duration>,
    /// Skip a version the directory already holds (its state file says so).
    pub resume: bool,
    /// After a version fails: try again after this long (`None`: return the error).
    pub retry: Option<Duration>,
    /// What to say when no source offered a version in time.
    pub hint: String,
}

impl SyncLoop<'_> {
    /// Runs until done (one-shot) or for ever (`follow`); `each` hears every version written
    /// or failed.
    pub async fn run(self, mut each: impl FnMut(&Result<Synced>)) -> Result<()> {
        let (node, id) = (self.node, self.share);
        std::fs::create_dir_all(self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let xet = &node.xet;
        let (mut heads, mut feeds) = (xet.subscribe(), xet.subscribe_feeds());
        // The version written and (several writers) the writers' versions its view merged.
        let mut done: Option<u64> = match synced_seq(self.dir) {
            Some((s, seq)) if self.resume && s == id => Some(seq),
            _ => None,
        };
        let mut done_key = Vec::new();
        let deadline = self.first_timeout.map(|t| tokio::time::Instant::now() + t);
        let mut settled = false;
        loop {
            if let Some(h) = xet.newest_head(&id) {
                let key = xet.view_key(&id);
                let due = done.is_none_or(|seq| {
                    h.seq > seq || (!h.value.writers.is_empty() && key != done_key)
                });
                if due && !settled && !self.follow {
                    // Peers announce heads as they connect: give the others a moment, so a
                    // stale (or replayed) head from the fastest peer does not win.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    settled = true;
                    continue;
                }
                if due {
                    let wire0 = node.wire_in(&id);
                    let r = sync_version(xet, id, &h, self.dir, self.spare)
                        .await
                        .map(|report| Synced {
                            report,
                            wire_in: node.wire_in(&id) - wire0,
                        })
                        .map_err(|e| Error::msg(format!("cannot sync version {}: {e}", h.seq)));
                    each(&r);
                    match (r, self.retry) {
                        (Ok(_), _) => (done, done_key) = (Some(h.seq), key),
                        (Err(_), Some(wait)) => tokio::time::sleep(wait).await,
                        (Err(e), None) => return Err(e),
                    }
                    let newer = xet.newest_head(&id).is_some_and(|n| {
                        done.is_none_or(|d| n.seq > d)
                            || (!n.value.writers.is_empty() && xet.view_key(&id) != done_key)
                    });
                    if !self.follow && !newer && done.is_some() {
                        return Ok(());
                    }
                    continue;
                }
                if !self.follow {
                    // The newest version is already in the directory: once the other peers
                    // had a moment to offer a newer one, there is nothing to do.
                    if !settled {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        settled = true;
                        continue;
                    }
                    return Ok(());
                }
            }
            // A one-shot sync gives up when nothing is offered in time; a follower only until
            // its first version.
            let first_wait = deadline.filter(|_| done.is_none() || !self.follow);
            tokio::select! {
                _ = heads.recv() => {}
                _ = feeds.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = async { tokio::time::sleep_until(first_wait.unwrap()).await }, if first_wait.is_some() => {
                    bail!(
                        "no peer of share {} offered a version within {}s{}",
                        share_id_hex(&id),
                        self.first_timeout.unwrap_or_default().as_secs(),
                        self.hint
                    );
                }
            }
        }
    }
}
