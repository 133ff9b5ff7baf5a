//! `[fs] cache_limit_mib`: a mount keeps the store's chunk bytes under a limit by evicting the
//! least recently read chunks that nothing protects (pins, listings, the owner's only copies:
//! `ccbt_xet::local::protected`). Checked after every [`CHECK_EVERY`] bytes fetched, so the
//! store stays under the limit plus about one such batch (and the read-ahead in flight).
//!
//! Leaf locks only (see the lock order in `lib.rs`); the eviction itself runs under `running`,
//! which no other lock is taken inside of except the store's own.

use ccbt_xet::net::ShareNet;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Protected = Arc<HashSet<[u8; 32]>>;

/// Bytes fetched between two checks.
pub const CHECK_EVERY: u64 = 4 << 20;
/// How long the protected set is reused before it is walked again.
const KEEP_FOR: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct CacheLimit {
    /// 0: no limit.
    pub limit: u64,
    fetched: AtomicU64,
    tick: AtomicU64,
    uses: Mutex<HashMap<[u8; 32], u64>>,
    /// The protected set and when it was walked.
    keep: Mutex<Option<(Instant, Protected)>>,
    running: Mutex<()>,
}

impl CacheLimit {
    pub fn new(limit: u64) -> CacheLimit {
        CacheLimit {
            limit,
            ..Default::default()
        }
    }

    /// A chunk was read (its recency for eviction).
    pub fn used(&self, h: &[u8; 32]) {
        if self.limit == 0 {
            return;
        }
        let t = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        self.uses.lock().unwrap().insert(*h, t);
    }

    /// Bytes were fetched; past a batch, evicts down to the limit.
    pub fn fetched(&self, node: &ShareNet, bytes: u64) {
        if self.limit == 0 {
            return;
        }
        if self.fetched.fetch_add(bytes, Ordering::Relaxed) + bytes < CHECK_EVERY {
            return;
        }
        let Ok(_g) = self.running.try_lock() else {
            return; // another thread is evicting
        };
        self.fetched.store(0, Ordering::Relaxed);
        let keep = {
            let mut k = self.keep.lock().unwrap();
            match &*k {
                Some((at, set)) if at.elapsed() < KEEP_FOR => set.clone(),
                _ => {
                    let set = Arc::new(ccbt_xet::local::protected(&node.shares, &|s, q| {
                        node.peer_holds(s, q)
                    }));
                    *k = Some((Instant::now(), set.clone()));
                    set
                }
            }
        };
        let uses = self.uses.lock().unwrap().clone();
        match ccbt_xet::local::enforce_limit(&node.shares, self.limit, &uses, &keep) {
            Ok(r) if r.chunks > 0 => {
                tracing::debug!(
                    "cache limit: evicted {} chunks ({} bytes)",
                    r.chunks,
                    r.bytes
                );
                let gone: HashSet<[u8; 32]> = r.evicted.into_iter().collect();
                self.uses.lock().unwrap().retain(|h, _| !gone.contains(h));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cache limit: cannot evict: {e}"),
        }
    }
}
