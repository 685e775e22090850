//! A mail provider's report about a message it accepted (SPEC §4
//! `/feedback/…`, §8): it finds its notice (`sent`), records what happened
//! in that eSIM's decision log and suppresses the address as SPEC §6 says:
//! a permanent bounce → `bounced`, a complaint → `complained`; a transient
//! bounce is recorded only. A report about nothing we sent, or one already
//! taken, changes nothing.

use chrono::{DateTime, Utc};

use super::model::{LogEntry, LogKind, SuppressReason};
use super::sent::{self, SentRecord};
use super::suppression::{active_suppression, suppress};
use super::tx::Tx;
use super::EsimId;
use crate::customers::mask_email;
use crate::mailer::mask_addresses;
use crate::store::StoreError;

/// What the provider says became of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The mailbox refuses it for good: the address is suppressed.
    PermanentBounce,
    /// The provider gave up on this message only: recorded, not suppressed.
    TransientBounce,
    /// The recipient marked it as spam: the address is suppressed.
    Complaint,
}

impl ReportKind {
    /// The `outcome` label of `esim_notify_feedback_reports_total`.
    pub fn label(self) -> &'static str {
        match self {
            ReportKind::PermanentBounce => "bounced",
            ReportKind::TransientBounce => "transient",
            ReportKind::Complaint => "complained",
        }
    }
}

/// One report, as read from a verified request.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `ses`, `sendgrid`, `postmark`, `mailgun`.
    pub provider: &'static str,
    /// The provider's id of this event (the same on its retries).
    pub event_id: String,
    pub kind: ReportKind,
    /// The address it concerns, when the provider names it.
    pub recipient: Option<String>,
    /// The notice id the message carried in the relay's custom data.
    pub notice: Option<u64>,
    /// Our Message-ID, when the provider echoes it.
    pub message_id: Option<String>,
    /// The provider's words (an SMTP reply, a complaint type); from outside.
    pub diagnostic: String,
}

/// What a report did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    Recorded {
        esim: EsimId,
        template: String,
        /// The suppression it added, if any.
        suppressed: Option<SuppressReason>,
    },
    /// About no message we sent (or one past `store.history`).
    Unknown,
    /// The same event was taken before.
    Repeated,
}

/// Longest diagnostic kept in a decision-log line.
const DIAGNOSTIC_MAX: usize = 300;

pub fn apply(
    tx: &mut Tx,
    report: &Report,
    now: DateTime<Utc>,
) -> Result<ReportOutcome, StoreError> {
    if sent::report_taken(tx, report.provider, &report.event_id)? {
        return Ok(ReportOutcome::Repeated);
    }
    // A report about nothing we know is not remembered: its retry, perhaps
    // once the send is recorded, is looked at afresh (and changes nothing
    // either way until it finds a message).
    let Some(rec) = sent::find(
        tx,
        report.notice,
        report.message_id.as_deref(),
        report.recipient.as_deref(),
    )?
    else {
        return Ok(ReportOutcome::Unknown);
    };
    sent::take_report(tx, report.provider, &report.event_id, now);
    let address = report
        .recipient
        .clone()
        .unwrap_or_else(|| rec.recipient.clone());
    let suppressed = match report.kind {
        ReportKind::PermanentBounce => Some(SuppressReason::Bounced),
        ReportKind::Complaint => Some(SuppressReason::Complained),
        ReportKind::TransientBounce => None,
    };
    let diagnostic = diagnostic(&report.diagnostic);
    if let Some(reason) = suppressed {
        let detail = format!("reported by {}: {diagnostic}", report.provider);
        if replaces(tx, &address)? {
            suppress(tx, &address, reason, Some(&detail), now);
        }
    }
    tx.log(rec.esim, entry(report, &rec, &address, &diagnostic, now));
    Ok(ReportOutcome::Recorded {
        esim: rec.esim,
        template: rec.template,
        suppressed,
    })
}

/// Whether a report's suppression takes the place of the address's current
/// one: none, an unsubscribe (which let service emails through) or the
/// automatic one a refusal at RCPT added (which a retry could lift) give
/// way; an operator's, or an earlier report's, stays as it was.
fn replaces(tx: &mut Tx, address: &str) -> Result<bool, StoreError> {
    Ok(match active_suppression(tx, address)? {
        None => true,
        Some(s) => s.reason == SuppressReason::Unsubscribed || !s.auto_for.is_empty(),
    })
}

fn entry(
    report: &Report,
    rec: &SentRecord,
    address: &str,
    diagnostic: &str,
    now: DateTime<Utc>,
) -> LogEntry {
    let to = mask_email(address);
    let by = report.provider;
    let (what, detail) = match report.kind {
        ReportKind::PermanentBounce => (
            LogKind::Bounced,
            format!("permanent bounce of the message to {to}, reported by {by}: {diagnostic}; address suppressed (bounced)"),
        ),
        ReportKind::Complaint => (
            LogKind::Complained,
            format!("{to} marked the message as spam, reported by {by}: {diagnostic}; address suppressed (complained)"),
        ),
        ReportKind::TransientBounce => (
            LogKind::Note,
            format!("transient bounce of the message to {to}, reported by {by}: {diagnostic}; recorded only, the address is not suppressed"),
        ),
    };
    LogEntry::new(now, what, Some(&rec.template), detail).about(rec.notice)
}

/// The provider's words as kept: addresses masked, one line, bounded.
fn diagnostic(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut d = mask_addresses(one_line.trim());
    if d.is_empty() {
        d = "no diagnostic given".into();
    }
    if d.chars().count() > DIAGNOSTIC_MAX {
        d = d.chars().take(DIAGNOSTIC_MAX).collect::<String>() + "…";
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_masked_and_bounded() {
        let d = diagnostic("550 5.1.1 <jane@example.net>: user unknown\r\nInjected: line");
        assert!(!d.contains("jane@"), "{d}");
        assert!(!d.contains('\n'), "{d}");
        assert_eq!(
            diagnostic("x".repeat(1000).as_str()).chars().count(),
            DIAGNOSTIC_MAX + 1
        );
        assert_eq!(diagnostic("  "), "no diagnostic given");
    }
}
