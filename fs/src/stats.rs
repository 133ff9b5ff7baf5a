//! Process-wide statistics of share-mount reads served by this process (passthrough reads go
//! to the kernel and are not seen): a latency histogram for the daemon's metrics. Lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in seconds.
pub const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

static COUNTS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];
static SUM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Records one read's latency.
pub fn observe(d: Duration) {
    let s = d.as_secs_f64();
    let i = BUCKETS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(BUCKETS.len());
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
    SUM_NANOS.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

/// Reads so far: cumulative count per bucket bound (the last is +Inf), the sum in seconds, and
/// the count.
pub fn snapshot() -> (Vec<(f64, u64)>, f64, u64) {
    let mut acc = 0;
    let mut out = Vec::with_capacity(BUCKETS.len() + 1);
    for (i, c) in COUNTS.iter().enumerate() {
        acc += c.load(Ordering::Relaxed);
        out.push((BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), acc));
    }
    (out, SUM_NANOS.load(Ordering::Relaxed) as f64 / 1e9, acc)
}
