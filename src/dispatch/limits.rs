//! Rate limits (SPEC §8) and retry delays.
//!
//! governor's own `until_ready` sleeps on its own clock, which neither a
//! shutdown nor tokio's test clock can interrupt; so only `check` is used
//! here, and callers turn a refusal into a wait they schedule themselves.
//!
//! The per-recipient quota counts messages the mail server accepted, not
//! attempts (SPEC §8): a send reserves one message of the quota, and the
//! reservation is given back unless the send is accepted. governor cannot
//! give a cell back, so this limiter is our own GCRA (the algorithm
//! governor implements): per address a "theoretical arrival time" that each
//! accepted message pushes one emission interval (an hour / quota) ahead.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;

use crate::config::{RateLimit, Retry};
use crate::customers::suppression_key;
use crate::engine::Engine;

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// The global limiter and the per-recipient one, built from one
/// `[rate_limit]` section; a reload that changes it builds a new set.
pub struct Limits {
    pub settings: RateLimit,
    global: Direct,
    per_recipient: Option<Recipients>,
    /// A store several instances share (SPEC §10): the limits are the
    /// group's, kept as GCRA buckets in the store, and the in-memory ones
    /// above are not used.
    shared: Option<Arc<Engine>>,
}

/// The shared bucket of the group's global limit.
const GLOBAL_BUCKET: &[u8] = b"global";

/// The shared bucket of one recipient's quota: a hash of the address, so
/// the table of buckets holds no addresses.
fn recipient_bucket(email: &str) -> Vec<u8> {
    use sha2::Digest;
    let mut key = b"to:".to_vec();
    key.extend_from_slice(&sha2::Sha256::digest(suppression_key(email).as_bytes()));
    key
}

/// When the shared buckets cannot be read, a send waits this long rather
/// than risk going over the group's rate.
const SHARED_UNREADABLE_WAIT: Duration = Duration::from_secs(1);

/// GCRA per address: `n` messages at once, then one per `interval`.
struct Recipients {
    interval: Duration,
    /// How far ahead of now an address's arrival time may be while it still
    /// has room: `interval * (n - 1)`, the burst.
    tolerance: Duration,
    tat: Mutex<HashMap<String, Instant>>,
}

impl Recipients {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.tat.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One message of a recipient's quota, held while its send is out. Dropped
/// without [`Reservation::accepted`], it is given back.
pub struct Reservation<'a> {
    limits: &'a Limits,
    key: Option<String>,
    /// The shared bucket the message was taken from (a group's store).
    bucket: Option<Vec<u8>>,
}

impl Reservation<'_> {
    /// The mail server accepted the message: the quota keeps it.
    pub fn accepted(mut self) {
        self.key = None;
        self.bucket = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let (Some(bucket), Some(engine), Some(r)) = (
            self.bucket.take(),
            self.limits.shared.clone(),
            &self.limits.per_recipient,
        ) {
            let interval = r.interval;
            let give_back = move || {
                if let Some(g) = engine.shared_rates() {
                    if let Err(e) = g.give_back(&bucket, interval) {
                        tracing::warn!(error = %e, "cannot give a recipient's quota back");
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(give_back)),
                Err(_) => give_back(),
            }
            return;
        }
        let (Some(key), Some(r)) = (self.key.take(), &self.limits.per_recipient) else {
            return;
        };
        if let Some(t) = r.map().get_mut(&key) {
            *t = t.checked_sub(r.interval).unwrap_or(*t);
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(settings: &RateLimit) -> Limits {
        let global = Quota::per_second(nz(settings.per_second)).allow_burst(nz(settings.burst));
        let per_recipient = NonZeroU32::new(settings.per_recipient_per_hour).map(|n| {
            let interval = Duration::from_secs(3600) / n.get();
            Recipients {
                interval,
                tolerance: interval * (n.get() - 1),
                tat: Mutex::new(HashMap::new()),
            }
        });
        Limits {
            settings: settings.clone(),
            global: RateLimiter::direct(global),
            per_recipient,
            shared: None,
        }
    }

    /// The limits of a group of instances: kept in `engine`'s shared store
    /// when it has one (SPEC §10), else in this process.
    pub fn for_store(settings: &RateLimit, engine: &Arc<Engine>) -> Limits {
        Limits {
            shared: engine.is_shared().then(|| engine.clone()),
            ..Limits::new(settings)
        }
    }

    /// One step of a shared bucket, off the async workers.
    async fn take_shared(
        engine: &Arc<Engine>,
        bucket: Vec<u8>,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<(), Duration> {
        let engine = engine.clone();
        let taken = tokio::task::spawn_blocking(move || {
            engine
                .shared_rates()
                .map(|g| g.take(&bucket, interval, tolerance))
        })
        .await;
        match taken {
            Ok(Some(Ok(r))) => r,
            Ok(None) => Ok(()),
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "the group's rate limits cannot be read: the send waits");
                Err(SHARED_UNREADABLE_WAIT)
            }
            Err(_) => Err(SHARED_UNREADABLE_WAIT),
        }
    }

    /// Takes one send from the global budget, or says how long until one is free.
    pub async fn global(&self) -> Result<(), Duration> {
        if let Some(engine) = &self.shared {
            let per_second = self.settings.per_second.max(1);
            let interval = Duration::from_secs(1) / per_second;
            let tolerance = interval * (self.settings.burst.max(1) - 1);
            return Self::take_shared(engine, GLOBAL_BUCKET.to_vec(), interval, tolerance).await;
        }
        self.global
            .check()
            .map_err(|nu| nu.wait_time_from(self.global.clock().now()))
    }

    /// Reserves one message of the recipient's hourly quota (0 = no quota),
    /// or says how long until one is free.
    pub async fn recipient(&self, email: &str) -> Result<Reservation<'_>, Duration> {
        let Some(r) = &self.per_recipient else {
            return Ok(Reservation {
                limits: self,
                key: None,
                bucket: None,
            });
        };
        if let Some(engine) = &self.shared {
            let bucket = recipient_bucket(email);
            Self::take_shared(engine, bucket.clone(), r.interval, r.tolerance).await?;
            return Ok(Reservation {
                limits: self,
                key: None,
                bucket: Some(bucket),
            });
        }
        let key = suppression_key(email);
        let now = Instant::now();
        let mut map = r.map();
        let tat = map.get(&key).copied().unwrap_or(now).max(now);
        let earliest = tat.checked_sub(r.tolerance).unwrap_or(now);
        if earliest > now {
            return Err(earliest - now);
        }
        map.insert(key.clone(), tat + r.interval);
        Ok(Reservation {
            limits: self,
            key: Some(key),
            bucket: None,
        })
    }

    /// Forgets recipients whose quota is full again, so the map stays as
    /// small as the set of recent recipients.
    pub fn retain_recent(&self) {
        if let Some(engine) = self.shared.clone() {
            // Fire and forget: the next sweep tries again if this one fails.
            drop(tokio::task::spawn_blocking(move || {
                if let Some(Err(e)) = engine.shared_rates().map(|g| g.forget_full()) {
                    tracing::warn!(error = %e, "cannot forget the group's full rate buckets");
                }
            }));
            return;
        }
        if let Some(r) = &self.per_recipient {
            let now = Instant::now();
            let mut map = r.map();
            map.retain(|_, tat| *tat > now);
            map.shrink_to_fit();
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

/// Jitter on top of the doubling step: up to a quarter of it, so that many
/// notices refused together (a greylisting burst) do not all come back at
/// once. It only ever adds: "full jitter" (anywhere from zero) let a notice
/// spend all its attempts within a second of a short outage.
pub fn jittered(step: Duration) -> Duration {
    let spread = (step / 4).as_millis().min(u64::MAX as u128) as u64;
    if spread == 0 {
        return step;
    }
    step + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
}

/// The retry delay after `failed` failed attempts (SPEC §8): exponential from
/// `initial_backoff`, jitter added, never more than `max_backoff` and never
/// less than `initial_backoff`.
pub fn retry_delay(failed: u32, retry: &Retry) -> Duration {
    let (initial, max) = (retry.initial_backoff.0, retry.max_backoff.0);
    jittered(backoff_cap(failed, initial, max))
        .min(max)
        .max(initial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

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
    fn jitter_only_adds_up_to_a_quarter() {
        for _ in 0..200 {
            let j = jittered(Duration::from_millis(200));
            assert!(j >= Duration::from_millis(200) && j <= Duration::from_millis(250));
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn retry_delay_never_waits_less_than_initial_backoff_nor_more_than_max() {
        let s = Duration::from_secs;
        for (initial, max) in [(s(1), s(2)), (s(30), s(3600)), (s(5), s(5))] {
            let retry = Retry {
                max_attempts: 10,
                initial_backoff: crate::config::Dur(initial),
                max_backoff: crate::config::Dur(max),
                max_age: crate::config::Dur(s(48 * 3600)),
            };
            for failed in 0..=40 {
                for _ in 0..50 {
                    let d = retry_delay(failed, &retry);
                    assert!(d >= initial, "attempt {failed}: {d:?} < {initial:?}");
                    assert!(
                        d >= backoff_cap(failed, initial, max),
                        "attempt {failed}: {d:?}"
                    );
                    assert!(d <= max, "attempt {failed}: {d:?} > {max:?}");
                }
            }
        }
    }

    #[test]
    fn recipient_quota_is_per_address_and_case_blind() {
        let l = Limits::new(&RateLimit {
            per_second: 100,
            burst: 100,
            per_recipient_per_hour: 2,
        });
        block_on(l.recipient("ana@example.com")).unwrap().accepted();
        block_on(l.recipient("ANA@example.com")).unwrap().accepted();
        let wait = block_on(l.recipient("ana@example.com")).err().unwrap();
        // One send comes back every 30 minutes.
        assert!(wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60));
        assert!(block_on(l.recipient("bob@example.com")).is_ok());
    }

    #[test]
    fn a_send_not_accepted_gives_its_quota_back() {
        let l = Limits::new(&RateLimit {
            per_second: 100,
            burst: 100,
            per_recipient_per_hour: 1,
        });
        for _ in 0..5 {
            // Reserved, then dropped: the attempt failed.
            drop(block_on(l.recipient("ana@example.com")).unwrap());
        }
        block_on(l.recipient("ana@example.com")).unwrap().accepted();
        assert!(block_on(l.recipient("ana@example.com")).is_err());
    }

    #[test]
    fn no_recipient_quota_when_zero() {
        let l = Limits::new(&RateLimit {
            per_second: 100,
            burst: 100,
            per_recipient_per_hour: 0,
        });
        for _ in 0..50 {
            block_on(l.recipient("ana@example.com")).unwrap().accepted();
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
            assert!(block_on(l.global()).is_ok());
        }
        let wait = block_on(l.global()).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
