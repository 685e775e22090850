//! What happens to a queued notice after it was decided: the result of a
//! send attempt, an operator's cancel, a dead letter's retry, and the
//! release of notices a broken transport held back.

use chrono::{DateTime, Utc};

use super::binding::{cancel_queued, FORGOTTEN};
use super::codec::id;
use super::model::{DeadLetter, DeadRetry, LogEntry, LogKind, QueuedNotice, SendOutcome};
use super::readdress::follow;
use super::suppression::{active_suppression, suppress_for_dead_letter};
use super::tx::Tx;
use super::BACKOFF;
use crate::customers::{mask_email, suppression_key};
use crate::store::{Space, StoreError};

/// Applies the result of one send attempt to the queue and the decision log.
/// With a `token` (a shared store's lease), nothing is written unless this
/// instance still holds the notice under it (SPEC §10).
pub fn record(
    tx: &mut Tx,
    qid: u64,
    token: Option<i64>,
    outcome: &SendOutcome,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(token) = token {
        if !tx.holds(qid, token)? {
            tracing::warn!(
                notice = qid,
                "lease taken over by another instance while sending: this outcome is not recorded"
            );
            return Ok(());
        }
    }
    let Some(mut q) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? else {
        // Cancelled or forgotten while it was being sent.
        return Ok(());
    };
    let template = q.notice.template.clone();
    let entry = |what: LogKind, detail: String| {
        LogEntry::new(now, what, Some(&template), detail).about(qid)
    };
    let done = match outcome {
        SendOutcome::Sent { message_id } => {
            let e = entry(
                LogKind::Sent,
                format!(
                    "to {} (attempt {}), Message-ID {message_id}",
                    mask_email(&q.recipient.email),
                    q.attempts + 1
                ),
            );
            tx.log(q.esim, e);
            // What a bounce or complaint report will find it by.
            super::sent::remember(tx, &q, message_id, now);
            true
        }
        SendOutcome::Retry {
            error,
            next_attempt,
        } => {
            q.attempts += 1;
            q.last_error = Some(error.clone());
            q.next_attempt = *next_attempt;
            q.waiting_for = Some(BACKOFF.into());
            let e = entry(
                LogKind::Failed,
                format!(
                    "attempt {}: {error}; retry at {}",
                    q.attempts,
                    next_attempt.to_rfc3339()
                ),
            );
            tx.log(q.esim, e);
            tx.put(Space::Queue, &id(qid), &q);
            false
        }
        SendOutcome::Wait { until, why } => {
            q.next_attempt = *until;
            q.waiting_for = Some(why.clone());
            tx.put(Space::Queue, &id(qid), &q);
            false
        }
        SendOutcome::Dead { reason, suppress } => {
            tx.log(q.esim, entry(LogKind::Dead, reason.clone()));
            if let Some(why) = suppress {
                suppress_for_dead_letter(tx, &q.recipient.email, why, qid, now)?;
            }
            q.attempts += 1;
            // The dead letter's row shows what its last attempt met, as a
            // queued notice's does.
            q.last_error = Some(reason.clone());
            tx.put(
                Space::Dead,
                &id(qid),
                &DeadLetter {
                    notice: q.clone(),
                    reason: reason.clone(),
                    died_at: now,
                },
            );
            tx.counts().dead += 1;
            true
        }
        SendOutcome::Superseded(reason) => {
            tx.log(q.esim, entry(LogKind::Superseded, reason.clone()));
            true
        }
        SendOutcome::Suppressed(reason) => {
            tx.log(q.esim, entry(LogKind::Suppressed, reason.clone()));
            true
        }
    };
    if done {
        tx.delete(Space::Queue, &id(qid));
        let counts = tx.counts();
        counts.outbox -= 1;
    }
    Ok(())
}

pub fn cancel(tx: &mut Tx, qid: u64, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let Some(q) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? else {
        return Ok(false);
    };
    cancel_queued(tx, &q, now, "cancelled by the operator")?;
    Ok(true)
}

/// Puts a dead letter back in the queue with its attempts reset, addressed
/// to the recipient bound to its eSIM now (SPEC §6 "Whose address"). When
/// the address is still the one that failed, the suppression its own "user
/// unknown" added is lifted; a corrected address leaves the old one
/// suppressed (that mailbox still does not exist). Refuses (and keeps the
/// dead letter) when the address it would go to is suppressed for this
/// template for any other reason.
pub fn retry_dead(
    tx: &mut Tx,
    qid: u64,
    essential: &[String],
    now: DateTime<Utc>,
) -> Result<DeadRetry, StoreError> {
    let Some(mut d) = tx.get::<DeadLetter>(Space::Dead, &id(qid))? else {
        return Ok(DeadRetry::NotFound);
    };
    if d.notice.recipient.email == FORGOTTEN {
        return Ok(DeadRetry::NotFound);
    }
    let failed_at = d.notice.recipient.email.clone();
    follow(tx, &mut d.notice, now)?;
    let same_address = d.notice.recipient.email.eq_ignore_ascii_case(&failed_at);
    let key = suppression_key(&d.notice.recipient.email);
    let lifted = match active_suppression(tx, &d.notice.recipient.email)? {
        Some(s) if same_address && s.added_by(qid) => {
            tx.delete(Space::Suppress, key.as_bytes());
            Some(s)
        }
        // Requeued it would only be dropped as suppressed, and the dead
        // letter lost with it.
        Some(s) if s.stops(&d.notice.notice.template, essential) => {
            return Ok(DeadRetry::Suppressed(s))
        }
        _ => None,
    };
    let mut q = d.notice;
    q.attempts = 0;
    q.queued_at = now;
    q.next_attempt = now;
    q.waiting_for = None;
    tx.delete(Space::Dead, &id(qid));
    tx.put(Space::Queue, &id(qid), &q);
    let counts = tx.counts();
    counts.dead -= 1;
    counts.outbox += 1;
    let template = q.notice.template.clone();
    if let Some(s) = &lifted {
        let e = LogEntry::new(
            now,
            LogKind::Note,
            Some(&template),
            format!(
                "suppression of {} ({}) lifted by the retry of the dead letter it came from",
                mask_email(&s.email),
                s.describe()
            ),
        )
        .about(qid);
        tx.log(q.esim, e);
    }
    tx.log(
        q.esim,
        LogEntry::new(
            now,
            LogKind::Requeued,
            Some(&template),
            format!("dead letter ({}) put back in the queue", d.reason),
        )
        .about(qid),
    );
    Ok(DeadRetry::Requeued {
        notice: Box::new(q),
        lifted,
    })
}

/// Makes queued notices due at `now` with nothing to wait for.
pub fn make_due(tx: &mut Tx, ids: &[u64], now: DateTime<Utc>) -> Result<(), StoreError> {
    for &qid in ids {
        if let Some(mut q) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? {
            q.next_attempt = now;
            q.waiting_for = None;
            tx.put(Space::Queue, &id(qid), &q);
        }
    }
    Ok(())
}
