//! Token-bucket rate limits (KiB/s from the config; 0 = unlimited). Pure arithmetic; callers sleep
//! for the returned delay, so one bucket can be shared by every peer task of a torrent or session.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` in bytes/s (0 = unlimited). The burst is a tenth of a second of traffic (at least
    /// one 16 KiB block) so short-term rates stay close to the limit.
    pub fn new(rate: u64) -> Self {
        TokenBucket {
            inner: Mutex::new(Inner {
                rate: rate as f64,
                burst: (rate as f64 / 10.0).max(16384.0),
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    pub fn set_rate(&self, rate: u64) {
        let mut g = self.inner.lock().unwrap();
        g.rate = rate as f64;
        g.burst = (rate as f64 / 10.0).max(16384.0);
    }

    pub fn unlimited(&self) -> bool {
        self.inner.lock().unwrap().rate == 0.0
    }

    /// Takes `n` bytes of tokens (going into debt if need be) and returns how long to wait.
    pub fn take(&self, n: usize) -> Duration {
        self.take_at(n, Instant::now())
    }

    fn take_at(&self, n: usize, now: Instant) -> Duration {
        let mut g = self.inner.lock().unwrap();
        if g.rate == 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(g.last).as_secs_f64();
        g.last = now;
        g.tokens = (g.tokens + elapsed * g.rate).min(g.burst);
        g.tokens -= n as f64;
        if g.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-g.tokens / g.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_matches() {
        let b = TokenBucket::new(1 << 20);
        let start = Instant::now();
        let mut t = start;
        // Simulate a sender that always waits what it is told.
        for _ in 0..640 {
            let d = b.take_at(16384, t);
            t += d;
        }
        let secs = t.duration_since(start).as_secs_f64();
        let rate = 640.0 * 16384.0 / secs;
        assert!((rate / (1 << 20) as f64 - 1.0).abs() < 0.05, "{rate}");
        assert_eq!(TokenBucket::new(0).take(1 << 30), Duration::ZERO);
    }
}
