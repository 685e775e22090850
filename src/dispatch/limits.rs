//! Rate limits (SPEC §8) and retry delays.
//!
//! governor's own `until_ready` sleeps on its own clock, which neither a
//! shutdown nor tokio's test clock can interrupt; so only `check` is used
//! here, and callers turn a refusal into a wait they schedule themselves.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;

use crate::config::{RateLimit, Retry};
use crate::customers::suppression_key;

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The global limiter and the per-recipient one, built from one
/// `[rate_limit]` section; a reload that changes it builds a new set.
pub struct Limits {
    pub settings: RateLimit,
    global: Direct,
    per_recipient: Option<Keyed>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(settings: &RateLimit) -> Limits {
        let global = Quota::per_second(nz(settings.per_second)).allow_burst(nz(settings.burst));
        let per_recipient = NonZeroU32::new(settings.per_recipient_per_hour)
            .map(|n| RateLimiter::keyed(Quota::per_hour(n)));
        Limits {
            settings: settings.clone(),
            global: RateLimiter::direct(global),
            per_recipient,
        }
    }

    /// Takes one send from the global budget, or says how long until one is free.
    pub fn global(&self) -> Result<(), Duration> {
        self.global
            .check()
            .map_err(|nu| nu.wait_time_from(self.global.clock().now()))
    }

    /// Takes one send from the recipient's hourly quota (0 = no quota).
    pub fn recipient(&self, email: &str) -> Result<(), Duration> {
        let Some(l) = &self.per_recipient else {
            return Ok(());
        };
        l.check_key(&suppression_key(email))
            .map_err(|nu| nu.wait_time_from(l.clock().now()))
    }

    /// Forgets recipients whose quota is full again, so the map stays as
    /// small as the set of recent recipients.
    pub fn retain_recent(&self) {
        if let Some(l) = &self.per_recipient {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The longest wait before attempt `attempt + 1` after `attempt` failed
/// ones: `initial_backoff` doubling up to `max_backoff`.
pub fn backoff_cap(failed: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = failed.saturating_sub(1).min(32);
    initial
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(max)
        .min(max)
}

/// "Full jitter": anywhere between zero and the cap, so that many notices
/// refused together (a greylisting burst) do not all come back together.
pub fn jittered(cap: Duration) -> Duration {
    let ms = cap.as_millis().min(u64::MAX as u128) as u64;
    if ms == 0 {
        return cap;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

/// The retry delay after `failed` failed attempts.
pub fn retry_delay(failed: u32, retry: &Retry) -> Duration {
    jittered(backoff_cap(
        failed,
        retry.initial_backoff.0,
        retry.max_backoff.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let caps: Vec<Duration> = (1..=9).map(|n| backoff_cap(n, s(30), s(3600))).collect();
        assert_eq!(
            caps,
            vec![
                s(30),
                s(60),
                s(120),
                s(240),
                s(480),
                s(960),
                s(1920),
                s(3600),
                s(3600)
            ]
        );
        assert_eq!(backoff_cap(0, s(30), s(3600)), s(30));
        assert_eq!(backoff_cap(u32::MAX, s(30), s(3600)), s(3600));
    }

    #[test]
    fn jitter_stays_within_the_cap() {
        for _ in 0..200 {
            assert!(jittered(Duration::from_millis(200)) <= Duration::from_millis(200));
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn recipient_quota_is_per_address_and_case_blind() {
        let l = Limits::new(&RateLimit {
            per_second: 100,
            burst: 100,
            per_recipient_per_hour: 2,
        });
        assert!(l.recipient("ana@example.com").is_ok());
        assert!(l.recipient("ANA@example.com").is_ok());
        let wait = l.recipient("ana@example.com").unwrap_err();
        // One send comes back every 30 minutes.
        assert!(wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60));
        assert!(l.recipient("bob@example.com").is_ok());
    }

    #[test]
    fn no_recipient_quota_when_zero() {
        let l = Limits::new(&RateLimit {
            per_second: 100,
            burst: 100,
            per_recipient_per_hour: 0,
        });
        for _ in 0..50 {
            assert!(l.recipient("ana@example.com").is_ok());
        }
    }

    #[test]
    fn global_burst_then_wait() {
        let l = Limits::new(&RateLimit {
            per_second: 2,
            burst: 3,
            per_recipient_per_hour: 0,
        });
        for _ in 0..3 {
            assert!(l.global().is_ok());
        }
        let wait = l.global().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
