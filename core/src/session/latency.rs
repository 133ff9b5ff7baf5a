//! The runtime-latency probe: a task that sleeps 50 ms in a loop and records how late it wakes.
//! A late wake-up means something blocked a runtime worker (a disk read, a store call, hashing)
//! and every peer task waited with it. `ccbt status --json` shows the figures.
//!
//! While nothing moves (the session's activity counter stands still for [`ACTIVE_FOR`]) it wakes
//! once a second instead: at 50 ms it was nearly all of an idle daemon's wake-ups (each sleep
//! also crossed one of the timer wheel's 64 ms boundaries, a second wake-up), about 40 a second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// 50 ms: often enough to catch any stall a peer would notice, rare enough to cost nothing idle.
const PERIOD: Duration = Duration::from_millis(50);
/// The period while idle.
const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// Activity this recent keeps the short period.
const ACTIVE_FOR: Duration = Duration::from_secs(10);
/// Samples kept: about the last minute of activity.
const KEEP: usize = 1200;

/// A counter that moves while the session works (bytes on the wire).
pub(crate) type Activity = Box<dyn Fn() -> u64 + Send + Sync>;

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
    /// Set once by the session; without it the probe always runs at [`PERIOD`].
    activity: OnceLock<Activity>,
}

impl LatencyProbe {
    /// Starts the probe on the current runtime; it ends when the runtime does.
    pub(crate) fn start() -> Arc<LatencyProbe> {
        let p = Arc::new(LatencyProbe::default());
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            // tokio's clock, so that a test can pause it.
            let (mut seen, mut moved) = (None, tokio::time::Instant::now());
            loop {
                let period = if moved.elapsed() < ACTIVE_FOR {
                    PERIOD
                } else {
                    IDLE_PERIOD
                };
                let t = tokio::time::Instant::now();
                tokio::time::sleep(period).await;
                let late = t.elapsed().saturating_sub(period);
                let Some(p) = weak.upgrade() else { return };
                p.record(late);
                match p.activity.get().map(|f| f()) {
                    Some(a) if seen == Some(a) => {}
                    a => {
                        seen = a;
                        moved = tokio::time::Instant::now();
                    }
                }
            }
        });
        p
    }

    /// The counter that tells the probe the session is busy (see the module's doc).
    pub(crate) fn set_activity(&self, f: Activity) {
        let _ = self.activity.set(f);
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

    /// Idle (the counter stands still) the probe wakes once a second; when the counter moves it
    /// is back to 50 ms within a second.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_idle_session_is_probed_once_a_second() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let p = LatencyProbe::start();
        let bytes = Arc::new(AtomicU64::new(0));
        let b = bytes.clone();
        p.set_activity(Box::new(move || b.load(Ordering::Relaxed)));
        // The first 10 s count as active (the counter was just seen).
        tokio::time::sleep(ACTIVE_FOR + Duration::from_millis(25)).await;
        let n0 = p.stats().samples;
        assert!((195..=201).contains(&n0), "{n0} samples in the first 10 s");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let n1 = p.stats().samples;
        assert!(
            (19..=21).contains(&(n1 - n0)),
            "{} samples in 20 idle s",
            n1 - n0
        );
        bytes.store(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n2 = p.stats().samples;
        assert!(n2 - n1 >= 35, "{} samples in 3 busy s", n2 - n1);
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
