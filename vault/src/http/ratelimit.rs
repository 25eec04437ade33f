//! Per-client request-rate limits (token buckets), used for detokenize: a stolen
//! client certificate cannot drain the vault faster than its configured rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets keyed by client name.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` requests per second on average, bursts of up to `burst` (0: one
    /// second's worth, at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = if burst == 0 {
            rate.max(1.0)
        } else {
            f64::from(burst)
        };
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(wait)` when there is none (retry after `wait`).
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock: refuse rather than let requests through unlimited.
            return Err(Duration::from_secs(1));
        };
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.rate.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills_per_client() {
        let l = RateLimiter::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t0).is_ok());
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(l.check_at("b", t0).is_ok(), "buckets are per client");
        assert!(l.check_at("a", t0 + Duration::from_millis(100)).is_ok());
        assert!(l.check_at("a", t0 + Duration::from_millis(100)).is_err());
    }
}
