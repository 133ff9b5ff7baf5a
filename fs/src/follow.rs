//! Read-only mounts follow the share: when a newer head arrives, the tree is swapped atomically
//! (files already open keep the version they opened). In a share with writers every mount,
//! writable ones too, follows the merged view instead ([`crate::multi`]). The thread also makes
//! the chunks fetched for reads durable every few seconds.

use crate::inode::Tree;
use crate::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a read-only mount makes the chunks it fetched durable.
const CACHE_COMMIT: Duration = Duration::from_secs(2);
/// How often a mount of a share with writers checks whether a writer's version arrived.
const VIEW_CHECK: Duration = Duration::from_millis(100);

pub(crate) fn follower(s: Arc<Shared>) {
    let node = &s.reader.node;
    let mut rx = node.subscribe();
    let mut last_commit = Instant::now();
    let mut last_view = Instant::now();
    loop {
        // Polling keeps this thread independent of the runtime's lifetime.
        let next = rx.try_recv();
        if s.closed.load(Ordering::Relaxed) {
            return;
        }
        // Chunks fetched for reads become durable (flushed, then indexed) every few seconds.
        if last_commit.elapsed() >= CACHE_COMMIT {
            last_commit = Instant::now();
            if let Err(e) = node.shares.store.commit_cached() {
                tracing::warn!("cannot index the chunks read so far: {e}");
            }
        }
        if last_view.elapsed() >= VIEW_CHECK && s.multi() {
            last_view = Instant::now();
            s.refresh_view();
            continue;
        }
        let Ok((share, seq)) = next else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if share != s.cfg.share || s.cfg.frozen || s.owner() || s.multi() {
            continue;
        }
        if seq <= s.state().tree.seq {
            continue;
        }
        let Some(head) = node.newest_head(&share) else {
            continue;
        };
        // The listing is fetched without the state lock; only the swap takes it.
        match s.reader.load_listing(&head) {
            Ok(entries) => {
                let mut st = s.state();
                let st = &mut *st;
                if st.tree.seq < head.seq {
                    st.tree =
                        Tree::build(&mut st.inos, head.seq, &entries, true, SystemTime::now());
                    tracing::info!("mount now shows version {}", head.seq);
                }
            }
            Err(e) => tracing::warn!("cannot load version {}: {e:?}", head.seq),
        }
    }
}
