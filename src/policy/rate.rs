//! Rate limits: a token bucket per route and per caller.
//!
//! The bucket is kept as one number, the time at which it would be full again (GCRA, the
//! generic cell rate algorithm), in one atomic: taking a token is a compare-and-swap, with
//! no lock on the request path and no timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// One bucket: `per_second` requests on average, up to `burst` at once.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    /// Nanoseconds one request costs.
    interval: u64,
    /// How far ahead of now the bucket's time may run: the burst beyond the first request.
    tolerance: u64,
    /// Nanoseconds after `epoch` when the bucket is full again (never in the past by more
    /// than it matters: earlier times count as now).
    full_at: AtomicU64,
    epoch: Instant,
}

impl Bucket {
    pub fn new(limit: RateLimit) -> Bucket {
        let interval = (1e9 / limit.per_second).round().clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        let tolerance = interval.saturating_mul(u64::from(limit.burst.max(1) - 1));
        Bucket { limit, interval, tolerance, full_at: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// The limit this bucket enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token, or says how long until one is free.
    pub fn take(&self) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.take_at(now)
    }

    fn take_at(&self, now: u64) -> Result<(), Duration> {
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let start = full_at.max(now);
            let ahead = start - now;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                start.saturating_add(self.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => full_at = actual,
            }
        }
    }
}

/// A wait as the whole seconds of `Retry-After`, rounded up and at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn bucket(per_second: f64, burst: u32) -> Bucket {
        Bucket::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_passes_at_once_then_one_request_per_interval() {
        let b = bucket(2.0, 3);
        for _ in 0..3 {
            assert_eq!(b.take_at(0), Ok(()));
        }
        assert_eq!(b.take_at(0), Err(Duration::from_millis(500)));
        assert_eq!(b.take_at(SECOND / 4), Err(Duration::from_millis(250)));
        assert_eq!(b.take_at(SECOND / 2), Ok(()));
        assert!(b.take_at(SECOND / 2).is_err());
        // Idle time refills the bucket up to the burst, never beyond.
        let later = 100 * SECOND;
        for _ in 0..3 {
            assert_eq!(b.take_at(later), Ok(()));
        }
        assert!(b.take_at(later).is_err());
    }

    #[test]
    fn slow_rates_and_a_burst_of_one() {
        let b = bucket(0.5, 1);
        assert_eq!(b.take_at(0), Ok(()));
        assert_eq!(b.take_at(SECOND), Err(Duration::from_secs(1)));
        assert_eq!(b.take_at(2 * SECOND), Ok(()));
    }

    #[test]
    fn concurrent_takers_get_exactly_the_burst() {
        let b = std::sync::Arc::new(bucket(0.001, 50));
        let granted = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (b, granted) = (std::sync::Arc::clone(&b), std::sync::Arc::clone(&granted));
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if b.take().is_ok() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
