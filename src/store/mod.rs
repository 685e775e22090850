//! Everything that must survive a crash: events, what is known of each eSIM,
//! the customer directory, the queue, dead letters and the decision log.
//!
//! The rest of the program talks to the [`Store`] trait; only this folder
//! names sled, so another engine is one new module. Writes are committed
//! atomically per operation; [`Store::durable`] then waits until they are on
//! disk (group commit), which is what the webhook's 200 waits for.

pub mod flusher;
mod keys;
mod sled_store;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::customers::{IdKind, Recipient};
use crate::event::{Event, Identifiers};
use crate::policy::{EsimState, Notice, Rules};

pub use sled_store::SledStore;

/// `waiting_for` of a notice waiting out its backoff after a passing failure.
pub const BACKOFF: &str = "backoff";

/// The engine's own number for one eSIM; identifiers may change or be
/// learned late, this does not.
pub type EsimId = u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally the running server) holds the store.
    #[error("the store at {0} is in use by another process")]
    Locked(String),
    #[error("store: {0}")]
    Io(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// A notice waiting in the queue, with everything needed to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedNotice {
    pub id: u64,
    pub esim: EsimId,
    /// The notice's full identity (eSIM, kind, template, level, epoch): the Message-ID source.
    pub identity: String,
    pub notice: Notice,
    pub recipient: Recipient,
    pub queued_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub waiting_for: Option<String>,
    pub last_error: Option<String>,
    /// Template variables captured when the notice was decided (event, usage, validity, status).
    pub vars: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub notice: QueuedNotice,
    pub reason: String,
    pub died_at: DateTime<Utc>,
}

/// A notice decided while no recipient was known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub identity: String,
    pub notice: Notice,
    pub vars: Value,
    pub parked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    Event,
    Queued,
    Parked,
    Released,
    Sent,
    Suppressed,
    Superseded,
    Failed,
    Dead,
    Expired,
    Cancelled,
    Requeued,
    Note,
}

/// One line of an eSIM's decision log (SPEC §6: every decision is recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    pub what: LogKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub detail: String,
}

impl LogKind {
    /// The `outcome` label of `esim_notify_notices_total` for a decision, if it counts there.
    pub fn notice_outcome(self) -> Option<&'static str> {
        Some(match self {
            LogKind::Queued => "queued",
            LogKind::Parked => "parked",
            LogKind::Released => "released",
            LogKind::Superseded => "superseded",
            LogKind::Suppressed => "suppressed",
            LogKind::Sent => "sent",
            LogKind::Failed => "failed",
            LogKind::Dead => "dead",
            _ => return None,
        })
    }
}

impl LogEntry {
    pub fn new(
        at: DateTime<Utc>,
        what: LogKind,
        template: Option<&str>,
        detail: impl Into<String>,
    ) -> LogEntry {
        LogEntry {
            at,
            what,
            notice: None,
            template: template.map(str::to_string),
            detail: detail.into(),
        }
    }

    /// The queued notice this line is about.
    pub fn about(mut self, notice: u64) -> LogEntry {
        self.notice = Some(notice);
        self
    }
}

/// What one webhook delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// The notifyId was seen within `delivery_dedup`: nothing changed.
    Duplicate,
    Accepted {
        esim: Option<EsimId>,
        /// Newly queued notices, for the dispatcher once they are durable.
        queued: Vec<QueuedNotice>,
        /// The decision log lines this delivery wrote (for metrics and logs).
        decisions: Vec<LogEntry>,
    },
}

/// What became of one send attempt, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted by the mail server; the Message-ID goes into the decision
    /// log, so support can find the very email in a customer's mailbox.
    Sent {
        message_id: String,
    },
    /// A failed attempt to be retried at `next_attempt`.
    Retry {
        error: String,
        next_attempt: DateTime<Utc>,
    },
    /// Not attempted: waits for a quota, quiet hours or a paused transport.
    Wait {
        until: DateTime<Utc>,
        why: String,
    },
    /// Given up; `suppress` adds the recipient to the suppression list with that reason.
    Dead {
        reason: String,
        suppress: Option<String>,
    },
    Superseded(String),
    Suppressed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    /// The dead letters whose refusal at RCPT ("user unknown") put the
    /// address here automatically; a retry of one of them may lift it.
    /// Empty for every other source (an operator, an unsubscribe, a
    /// complaint) and for records written before this field existed: those
    /// only an operator lifts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_for: Vec<u64>,
}

impl Suppression {
    /// Whether the refusal of notice `id` is what put the address here.
    pub fn added_by(&self, id: u64) -> bool {
        self.auto_for.contains(&id)
    }
}

/// What [`Store::retry_dead`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadRetry {
    /// Back in the queue; `lifted` is the automatic suppression this
    /// notice's own failure had added, now removed.
    Requeued {
        notice: Box<QueuedNotice>,
        lifted: Option<Suppression>,
    },
    /// No such dead letter (or its customer was forgotten).
    NotFound,
    /// The address is suppressed for another reason: the dead letter stays.
    Suppressed(Suppression),
}

/// A parked notice as operators see it (`outbox --parked`, `GET /admin/parked`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedNotice {
    pub esim: EsimId,
    pub ids: Identifiers,
    pub parked: Parked,
}

/// What the engine knows of one eSIM, for `GET /admin/esims/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct EsimView {
    pub id: EsimId,
    pub ids: Identifiers,
    pub state: EsimState,
    pub recipient: Option<Recipient>,
    pub parked: Vec<Parked>,
    pub decisions: Vec<LogEntry>,
}

/// Sizes the metrics report, kept up to date by the store rather than counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub outbox: u64,
    pub parked: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetReport {
    pub bindings: usize,
    pub cancelled: usize,
    pub redacted: usize,
    /// The queued notices removed, so a running dispatcher can drop them too.
    #[serde(default)]
    pub cancelled_ids: Vec<u64>,
}

/// What a customer binding did to the eSIMs it names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindReport {
    /// Parked notices released into the queue.
    pub released: Vec<QueuedNotice>,
    pub superseded: usize,
    /// The decision log lines the binding wrote (for metrics and logs).
    pub decisions: Vec<LogEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub dedup_removed: usize,
    pub events_removed: usize,
    pub esims_removed: usize,
    pub dead_removed: usize,
    pub parked_expired: usize,
}

pub trait Store: Send + Sync {
    /// Records one delivery and every decision it causes, atomically:
    /// dedup by notifyId, eSIM resolution, policy, recipient lookup,
    /// queue/park/suppress. Not yet durable: await [`Store::durable`].
    fn ingest(
        &self,
        event: &Event,
        body: &Value,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError>;
    /// Resolves once everything committed before the call is on disk.
    fn durable(&self) -> oneshot::Receiver<Result<(), String>>;
    /// Flushes synchronously (shutdown, CLI).
    fn flush(&self) -> Result<(), StoreError>;

    /// Binds a recipient to identifiers and releases what was parked for them.
    fn bind(
        &self,
        recipient: &Recipient,
        ids: &Identifiers,
        park_for: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<BindReport, StoreError>;
    fn recipient_by(&self, kind: IdKind, value: &str) -> Result<Option<Recipient>, StoreError>;
    /// Every identifier bound to `email` (compared case-insensitively), so
    /// the console finds a customer's eSIMs by address. There is no index
    /// by address: this reads every binding, as `forget` does.
    fn bindings_of(&self, email: &str) -> Result<Vec<(IdKind, String)>, StoreError>;
    fn unbind(&self, kind: IdKind, value: &str) -> Result<bool, StoreError>;
    /// Removes every binding of the address, cancels its queued notices and
    /// redacts it from dead letters.
    fn forget(&self, email: &str, now: DateTime<Utc>) -> Result<ForgetReport, StoreError>;

    fn suppress(&self, email: &str, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    fn unsuppress(&self, email: &str) -> Result<bool, StoreError>;
    fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError>;
    fn suppressions(&self) -> Result<Vec<Suppression>, StoreError>;

    fn outbox(&self) -> Result<Vec<QueuedNotice>, StoreError>;
    fn queued(&self, id: u64) -> Result<Option<QueuedNotice>, StoreError>;
    fn esim_state(&self, esim: EsimId) -> Result<Option<(EsimState, Identifiers)>, StoreError>;
    /// Applies the result of one send attempt to the queue and the decision log.
    fn record(&self, id: u64, outcome: &SendOutcome, now: DateTime<Utc>) -> Result<(), StoreError>;
    fn cancel(&self, id: u64, now: DateTime<Utc>) -> Result<bool, StoreError>;
    fn dead(&self) -> Result<Vec<DeadLetter>, StoreError>;
    /// Puts a dead letter back in the queue with its attempts reset, lifting
    /// the suppression its own "user unknown" added; refuses (and keeps the
    /// dead letter) when the address is suppressed for any other reason.
    fn retry_dead(&self, id: u64, now: DateTime<Utc>) -> Result<DeadRetry, StoreError>;
    /// Makes queued notices due at `now` with nothing to wait for (at start,
    /// for notices a previous run held back for a broken transport).
    fn make_due(&self, ids: &[u64], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every parked notice, with its eSIM's identifiers, oldest eSIM first.
    fn parked(&self) -> Result<Vec<ParkedNotice>, StoreError>;

    /// By any identifier (`kind` None tries each kind in lookup order).
    fn esim_view(&self, kind: Option<IdKind>, value: &str) -> Result<Option<EsimView>, StoreError>;
    fn paused(&self) -> Result<bool, StoreError>;
    fn set_paused(&self, paused: bool) -> Result<(), StoreError>;
    fn counts(&self) -> Counts;
    /// When the last delivery was accepted, kept across restarts (SPEC §9).
    fn last_webhook(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// A random key kept in the store, created on first use (e.g. for
    /// signing unsubscribe links, so they stay valid across restarts).
    fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// When the oldest queued notice was queued (the queue is in id order).
    fn oldest_queued(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Writes a consistent copy of the store into `dir` (which must not hold one yet).
    fn backup(&self, dir: &Path) -> Result<(), StoreError>;
    /// Removes what has aged out; expires parked notices older than `park_for`.
    fn retain(
        &self,
        now: DateTime<Utc>,
        delivery_dedup: std::time::Duration,
        history: std::time::Duration,
        park_for: std::time::Duration,
    ) -> Result<RetentionReport, StoreError>;
}

/// Opens the store `[store]` names (once per process: sled holds a lock).
pub fn open(config: &crate::config::Config) -> Result<SledStore, StoreError> {
    SledStore::open(
        &config.store.path,
        config.store.cache_mb * 1024 * 1024,
        config.store.delivery_dedup.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppression_written_before_auto_for_existed_reads_as_not_automatic() {
        let old = r#"{"email":"ana@example.com","reason":"user unknown (550 5.1.1)","at":"2026-04-22T17:21:59Z"}"#;
        let s: Suppression = serde_json::from_str(old).unwrap();
        assert!(s.auto_for.is_empty());
        assert!(!s.added_by(1));
        // And a manual one still serializes as before.
        assert!(!serde_json::to_string(&s).unwrap().contains("auto_for"));
    }
}
