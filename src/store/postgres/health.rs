//! Whether the database answers, as the rest of the process needs to know
//! it (SPEC §10, "the database down"): `/readyz` says 503 at once, webhooks
//! answer 503, the dispatcher waits, and the log says why ONCE when the
//! database goes away and once when it is back, not once per request.
//!
//! Nothing polls: every unit, read and claim reports here whether it
//! reached the server, so the flag follows the traffic; a call that works
//! once [`SETTLE`] has passed since the last failure (a webhook the
//! provider retries, the dispatcher's claim every half second) clears it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after the last failure a success counts as "back": while a
/// server shuts down, connections still open answer for a moment after
/// others have failed, and the flag must not flap (nor log) with them.
const SETTLE: Duration = Duration::from_secs(1);

use tokio_postgres::error::SqlState;

/// The flag and its two log lines.
#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    /// When a call last failed to reach the database.
    last_failure: Mutex<Option<Instant>>,
}

impl Health {
    /// True from a call that could not reach the database until one that
    /// could, [`SETTLE`] after the last failure.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A call reached the database.
    pub fn up(&self) {
        if !self.down.load(Ordering::Relaxed) {
            return;
        }
        let settled = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= SETTLE);
        if settled && self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!("the database answers again: webhooks are accepted and sending resumes");
        }
    }

    /// A call could not reach the database (`why` names no secret: errors
    /// of tokio-postgres and the pool never carry the URL's password).
    pub fn down(&self, why: &str) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = %why,
                "the database cannot be reached: webhooks answer 503 (the provider retries them), \
                 sending waits, /readyz answers 503; all of it resumes by itself once it is back"
            );
        }
    }
}

/// Whether an error means the server was not reached (or went away), as
/// opposed to an answer it gave.
pub fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error on the connection.
        None => true,
        Some(c) => {
            c.code().starts_with("08") // connection exception
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        }
    }
}
