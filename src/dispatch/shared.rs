//! Where a dispatcher of a group takes its work (SPEC §10): not from a plan
//! of its own, which would never see what another instance queued, but by
//! claiming due notices from the shared store, each held under a lease that
//! the send renews and the outcome names.
//!
//! The store is polled: every [`POLL`] while there is room for sends, at
//! once when this instance queued something or a send came back. Nothing
//! depends on being woken by another instance.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::schedule::Plan;
use crate::engine::{Engine, EsimId, POLL};

pub struct SharedQueue {
    engine: Arc<Engine>,
    /// This instance's name in the leases (and in the decision log of a rescue).
    pub owner: String,
    lease: Duration,
    /// When to claim next.
    next_look: Instant,
    /// When to read the group's pause next.
    next_pause_read: Instant,
}

impl SharedQueue {
    pub fn new(engine: Arc<Engine>, lease: Duration) -> SharedQueue {
        SharedQueue {
            engine,
            owner: instance_name(),
            lease,
            next_look: Instant::now(),
            next_pause_read: Instant::now(),
        }
    }

    /// Claims up to `max` due notices (off the async workers).
    pub async fn take(&mut self, max: usize) -> Vec<Plan> {
        if max == 0 || Instant::now() < self.next_look {
            return Vec::new();
        }
        let (engine, owner, lease) = (self.engine.clone(), self.owner.clone(), self.lease);
        let claimed = tokio::task::spawn_blocking(move || engine.claim(max, lease, &owner)).await;
        let held = match claimed {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                // A database that cannot be reached was logged once, when it went.
                if !self.engine.unreachable() {
                    tracing::warn!(error = %e, "cannot claim due notices from the store");
                }
                self.next_look = Instant::now() + POLL;
                return Vec::new();
            }
            Err(_) => {
                self.next_look = Instant::now() + POLL;
                return Vec::new();
            }
        };
        // A round that filled every free slot may have left more due.
        if held.len() < max {
            self.next_look = Instant::now() + POLL;
        }
        let now = chrono::Utc::now();
        held.into_iter()
            .map(|h| {
                if let Some(from) = &h.rescued_from {
                    tracing::warn!(notice = h.id, from = %from, "took over a notice whose lease ran out");
                }
                Plan {
                    id: h.id,
                    esim: 0,
                    next_attempt: now,
                    waiting_for: None,
                    token: Some(h.token),
                }
            })
            .collect()
    }

    /// Look at the store at once (this instance queued something, or a send
    /// came back and the eSIM's next notice may be due).
    pub fn look_now(&mut self) {
        self.next_look = Instant::now();
    }

    /// Newly queued notices of this instance: their eSIMs' first notices
    /// are looked at again if they wait for quiet hours or a quota.
    pub fn queued(&mut self, esims: Vec<EsimId>) {
        self.look_now();
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.recheck_heads(&esims) {
                tracing::warn!(error = %e, "cannot look again at the first notices of newly queued eSIMs");
            }
        });
    }

    /// When the loop must look again without being told: the next claim
    /// (not before `not_before`, a transport pause), unless `blocked` (no
    /// room, paused), and the next read of the group's pause in any case.
    pub fn next_wake(&self, blocked: bool, not_before: Option<Instant>) -> Instant {
        if blocked {
            return self.next_pause_read;
        }
        let look = match not_before {
            Some(t) => self.next_look.max(t),
            None => self.next_look,
        };
        look.min(self.next_pause_read)
    }

    /// The group's pause, read from the store every [`POLL`] (another
    /// instance's `pause` holds this one too); `None` when not yet due or
    /// unreadable.
    pub async fn paused(&mut self) -> Option<bool> {
        if Instant::now() < self.next_pause_read {
            return None;
        }
        self.next_pause_read = Instant::now() + POLL;
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.paused()).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        }
    }

    /// Lets go of a lease once the notice's outcome is recorded.
    pub fn release(&self, id: u64, token: i64) {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.release(id, token) {
                tracing::warn!(notice = id, error = %e, "cannot let go of a lease (it runs out by itself)");
            }
        });
    }

    /// Keeps a lease while its send runs: renewed every third of it.
    pub fn keep(&self, id: u64, token: i64) -> tokio::task::JoinHandle<()> {
        let (engine, lease) = (self.engine.clone(), self.lease);
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.renew(id, token, lease)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::warn!(notice = id, "lease lost while sending");
                        return;
                    }
                    _ => {}
                }
            }
        })
    }
}

/// This instance's name: the host name and process id, unique while it runs.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}:{}", std::process::id())
}
