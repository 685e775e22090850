//! What the engine decides and keeps, as the rest of the program sees it:
//! queued notices, dead letters, parked notices, suppressions, the decision
//! log, and the reports of each operation. The store keeps these as
//! versioned binary records (`codec`); the admin API shows them as JSON,
//! with instants as RFC 3339 text (`serde_time`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::customers::Recipient;
use crate::event::Identifiers;
use crate::policy::{EsimState, Notice};
use crate::vars::Captured;

/// `waiting_for` of a notice waiting out its backoff after a passing failure.
pub const BACKOFF: &str = "backoff";
/// `waiting_for` of a notice held by the customer's quiet hours.
pub const QUIET_HOURS: &str = "quiet hours";
/// `waiting_for` of a notice held by its recipient's hourly quota.
pub const RECIPIENT_QUOTA: &str = "recipient quota";

/// The engine's own number for one eSIM; identifiers may change or be
/// learned late, this does not.
pub type EsimId = u64;

/// A notice waiting in the queue, with everything needed to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedNotice {
    pub id: u64,
    pub esim: EsimId,
    /// The notice's full identity (eSIM, kind, template, level, epoch): the Message-ID source.
    pub identity: String,
    pub notice: Notice,
    pub recipient: Recipient,
    #[serde(with = "crate::serde_time")]
    pub queued_at: DateTime<Utc>,
    pub attempts: u32,
    #[serde(with = "crate::serde_time")]
    pub next_attempt: DateTime<Utc>,
    pub waiting_for: Option<String>,
    pub last_error: Option<String>,
    /// What the event that caused it said (figures, not the body).
    pub vars: Captured,
}

impl QueuedNotice {
    /// A 10 % data notice for ana@example.com, due at `at`: the fixture of
    /// the dispatcher's unit tests.
    #[cfg(test)]
    pub fn example(id: u64, esim: EsimId, at: DateTime<Utc>) -> QueuedNotice {
        QueuedNotice {
            id,
            esim,
            identity: format!("T{esim}/data/data_usage/0.1/cycle-0"),
            notice: Notice {
                kind: crate::policy::NoticeKind::Data,
                template: "data_usage".into(),
                level: Some(0.1),
                epoch: "cycle-0".into(),
                status: None,
            },
            recipient: Recipient {
                email: "ana@example.com".into(),
                name: None,
                locale: None,
                timezone: None,
            },
            queued_at: at,
            attempts: 0,
            next_attempt: at,
            waiting_for: None,
            last_error: None,
            vars: Captured::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub notice: QueuedNotice,
    pub reason: String,
    #[serde(with = "crate::serde_time")]
    pub died_at: DateTime<Utc>,
}

/// A notice decided while no recipient was known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub identity: String,
    pub notice: Notice,
    pub vars: Captured,
    #[serde(with = "crate::serde_time")]
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
    /// The mail provider reported the message undeliverable (issue 20).
    Bounced,
    /// The recipient marked the message as spam (issue 20).
    Complained,
}

/// One line of an eSIM's decision log (SPEC §6: every decision is recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
    pub what: LogKind,
    pub notice: Option<u64>,
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
            LogKind::Bounced => "bounced",
            LogKind::Complained => "complained",
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
    /// The mail server accepted the message with this Message-ID.
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

/// Why an address is on the suppression list (SPEC §2, §6). The reason
/// decides what still goes to it: an address that `Unsubscribed` asked to
/// stop the reminders, not the service emails of what it buys
/// (`email.essential`); one that bounced or complained, or that the
/// operator stopped, gets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// The customer's one-click unsubscribe.
    Unsubscribed,
    /// The mail server refused the address for good ("user unknown").
    Bounced,
    /// The customer marked an email as spam.
    Complained,
    /// `suppress add` / `PUT /admin/suppressions`.
    Operator,
}

impl SuppressReason {
    pub const ALL: [SuppressReason; 4] = [
        SuppressReason::Unsubscribed,
        SuppressReason::Bounced,
        SuppressReason::Complained,
        SuppressReason::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::Unsubscribed => "unsubscribed",
            SuppressReason::Bounced => "bounced",
            SuppressReason::Complained => "complained",
            SuppressReason::Operator => "operator",
        }
    }

    /// The reason a word names exactly (any case), if it names one.
    pub fn parse(s: &str) -> Option<SuppressReason> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    /// The reason and detail of a free-text reason, as an operator gives it
    /// (`suppress add --reason`) and as stores before reasons kept it: a
    /// reason's own name is that reason; "unsubscribed (one-click)" (what
    /// the unsubscribe page wrote) is `unsubscribed`; "user unknown (550 …)"
    /// (what a refusal at RCPT wrote) is `bounced`; anything else is the
    /// operator's, the text kept as its detail.
    pub fn classify(text: &str) -> (SuppressReason, Option<String>) {
        let text = text.trim();
        if let Some(r) = SuppressReason::parse(text) {
            return (r, None);
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("unsubscribed") {
            // "unsubscribed (one-click)": the reason, then how.
            let how = text["unsubscribed".len()..]
                .trim_matches(|c: char| c.is_whitespace() || "():".contains(c));
            return (
                SuppressReason::Unsubscribed,
                (!how.is_empty()).then(|| how.to_string()),
            );
        }
        let reason = if lower.starts_with("user unknown") {
            SuppressReason::Bounced
        } else {
            SuppressReason::Operator
        };
        (reason, (!text.is_empty()).then(|| text.to_string()))
    }
}

impl std::fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub email: String,
    pub reason: SuppressReason,
    /// Since when the address is suppressed.
    #[serde(with = "crate::serde_time")]
    pub since: DateTime<Utc>,
    /// What else is known, kept apart from the reason: the mail server's
    /// diagnostic of a bounce, an operator's note, how the customer
    /// unsubscribed.
    #[serde(default)]
    pub detail: Option<String>,
    /// The dead letters whose refusal at RCPT ("user unknown") put the
    /// address here automatically; a retry of one of them may lift it.
    /// Empty for every other source (an operator, an unsubscribe, a
    /// complaint): those only an operator lifts.
    #[serde(default)]
    pub auto_for: Vec<u64>,
}

impl Suppression {
    /// Whether the refusal of notice `id` is what put the address here.
    pub fn added_by(&self, id: u64) -> bool {
        self.auto_for.contains(&id)
    }

    /// Whether it stops `template` (SPEC §6 "Suppressed address"): an
    /// unsubscribe stops everything but the service emails named in
    /// `email.essential`; any other reason stops everything.
    pub fn stops(&self, template: &str, essential: &[String]) -> bool {
        !(self.reason == SuppressReason::Unsubscribed && essential.iter().any(|e| e == template))
    }

    /// `bounced: user unknown (550 5.1.1 …)`: the reason, then the detail.
    pub fn describe(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.reason),
            None => self.reason.to_string(),
        }
    }
}

/// What [`Engine::retry_dead`](super::Engine::retry_dead) did.
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

/// What units changed in the [`Counts`]. Each unit adds its change to one of
/// a few shards (`meta/counts/<n>`) instead of rewriting one record, so
/// units running side by side on a shared store do not all wait for one
/// row; the counts are the old single record (a store written before the
/// shards) plus every shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsDelta {
    pub outbox: i64,
    pub parked: i64,
    pub dead: i64,
}

impl CountsDelta {
    pub fn add(&mut self, other: &CountsDelta) {
        self.outbox += other.outbox;
        self.parked += other.parked;
        self.dead += other.dead;
    }

    pub fn is_zero(&self) -> bool {
        *self == CountsDelta::default()
    }

    /// `base` changed by this delta, never below zero (a count whose
    /// decrement met a record that was never counted stays at zero).
    pub fn applied_to(&self, base: Counts) -> Counts {
        let apply = |n: u64, d: i64| (n as i64).saturating_add(d).max(0) as u64;
        Counts {
            outbox: apply(base.outbox, self.outbox),
            parked: apply(base.parked, self.parked),
            dead: apply(base.dead, self.dead),
        }
    }
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
    /// Identifiers that were bound to another address (SPEC §4 `replaced`).
    pub replaced: Vec<Replaced>,
    /// Queued notices that now go to the new address (SPEC §6 "Whose address").
    pub moved: Vec<QueuedNotice>,
    pub superseded: usize,
    /// The decision log lines the binding wrote (for metrics and logs).
    pub decisions: Vec<LogEntry>,
}

/// One identifier a binding took from another address. The address is the
/// previous one in full: whoever shows it masks it (`customers::mask_email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub identifier: crate::customers::IdKind,
    pub value: String,
    pub email: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub dedup_removed: usize,
    pub events_removed: usize,
    pub esims_removed: usize,
    pub dead_removed: usize,
    pub parked_expired: usize,
    /// Rows of daily counters of days past `history` (`stats`).
    pub stats_removed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_reasons_read_as_one_of_the_four() {
        use SuppressReason::*;
        let c = |t: &str| SuppressReason::classify(t);
        assert_eq!(c("complained"), (Complained, None));
        assert_eq!(c("Operator"), (Operator, None));
        assert_eq!(
            c("unsubscribed (one-click)"),
            (Unsubscribed, Some("one-click".into()))
        );
        assert_eq!(c("unsubscribed"), (Unsubscribed, None));
        let (r, d) = c("user unknown (550 5.1.1)");
        assert_eq!(
            (r, d.as_deref()),
            (Bounced, Some("user unknown (550 5.1.1)"))
        );
        assert_eq!(
            c("asked by phone"),
            (Operator, Some("asked by phone".into()))
        );
        assert_eq!(c(""), (Operator, None));
    }

    #[test]
    fn only_an_unsubscribe_lets_service_emails_through() {
        let essential = vec!["esim_ready".to_string()];
        let s = |reason| Suppression {
            email: "a@example.com".into(),
            reason,
            since: Utc::now(),
            detail: None,
            auto_for: Vec::new(),
        };
        assert!(!s(SuppressReason::Unsubscribed).stops("esim_ready", &essential));
        assert!(s(SuppressReason::Unsubscribed).stops("data_usage", &essential));
        for r in [
            SuppressReason::Bounced,
            SuppressReason::Complained,
            SuppressReason::Operator,
        ] {
            assert!(s(r).stops("esim_ready", &essential), "{r}");
        }
    }
}
