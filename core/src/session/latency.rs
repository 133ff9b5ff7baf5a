//! The runtime-latency probe: a task that sleeps 50 ms in a loop and records how late it wakes.
//! A late wake-up means something blocked a runtime worker (a disk read, a store call, hashing)
//! and every peer task waited with it. `ccbt status --json` shows the figures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 50 ms: often enough to catch any stall a peer would notice, rare enough to cost nothing idle.
const PERIOD: Duration = Duration::from_millis(50);
/// Samples kept: about the last minute.
const KEEP: usize = 1200;

/// Lateness percentiles over the last minute, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuntimeLatency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Default)]
pub(crate) struct LatencyProbe {
    /// Lateness of each wake-up, in microseconds (a leaf lock).
    late_us: Mutex<VecDeque<u32>>,
}

impl LatencyProbe {
    /// Starts the probe on the current runtime; it ends when the runtime does.
    pub(crate) fn start() -> Arc<LatencyProbe> {
        let p = Arc::new(LatencyProbe::default());
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(PERIOD).await;
                let late = t.elapsed().saturating_sub(PERIOD);
                let Some(p) = weak.upgrade() else { return };
                p.record(late);
            }
        });
        p
    }

    fn record(&self, late: Duration) {
        let mut q = self.late_us.lock().unwrap();
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(late.as_micros().min(u32::MAX as u128) as u32);
    }

    pub(crate) fn stats(&self) -> RuntimeLatency {
        let mut v: Vec<u32> = self.late_us.lock().unwrap().iter().copied().collect();
        if v.is_empty() {
            return RuntimeLatency::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        RuntimeLatency {
            samples: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recorded_lateness() {
        let p = LatencyProbe::default();
        assert_eq!(p.stats().samples, 0);
        for ms in 1..=100u64 {
            p.record(Duration::from_millis(ms));
        }
        let s = p.stats();
        assert_eq!(s.samples, 100);
        assert!((s.p50_ms - 51.0).abs() < 1.01, "{s:?}");
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_worker_shows_as_lateness() {
        let p = LatencyProbe::start();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Block the only worker for 200 ms, as a synchronous disk read would.
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(200)) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(p.stats().max_ms >= 150.0, "{:?}", p.stats());
    }
}
