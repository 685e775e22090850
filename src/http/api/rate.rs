//! The per-key rate limit of `/api/v1` (`[api] per_minute`, `burst`): one
//! GCRA bucket per key name, in this process (each instance of a group
//! counts its own). Buckets of keys not seen for a while are dropped now
//! and then, so a shop that rotates keys does not grow the map forever.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// How often buckets that have refilled are forgotten.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

pub struct KeyLimiter {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    last_retain: Mutex<Instant>,
}

impl KeyLimiter {
    pub fn new(per_minute: u32, burst: u32) -> KeyLimiter {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        KeyLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(nz(per_minute)).allow_burst(nz(burst))),
            last_retain: Mutex::new(Instant::now()),
        }
    }

    /// `Ok` when the key named `name` may make a request now; otherwise how
    /// many whole seconds (at least 1) until it may.
    pub fn check(&self, name: &str) -> Result<(), u64> {
        self.retain_now_and_then();
        self.limiter
            .check_key(&name.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                wait.as_secs_f64().ceil().max(1.0) as u64
            })
    }

    fn retain_now_and_then(&self) {
        let mut last = self.last_retain.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= RETAIN_EVERY {
            *last = Instant::now();
            self.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let l = KeyLimiter::new(1, 2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(l.check("b").is_ok());
    }
}
