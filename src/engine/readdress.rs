//! Whose address (SPEC §6): a notice goes to the recipient bound to its eSIM
//! when it is sent, not when it was queued. Correcting an address (binding
//! the eSIM to another one) moves the eSIM's queued notices, a dead letter's
//! retry goes to the address bound now, and just before a send the binding
//! is read again; each change is a line in the eSIM's decision log.
//!
//! A notice whose eSIM has no binding any more keeps the recipient it was
//! queued for: removing a binding is not a correction, and the notice was
//! decided for that customer (`customers forget` cancels it instead).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::codec::id;
use super::model::{LogEntry, LogKind, QueuedNotice};
use super::resolve::{recipient_for, record_of};
use super::tx::Tx;
use super::EsimId;
use crate::customers::{mask_email, Recipient};
use crate::store::{Space, StoreError};

/// The recipient bound to `esim` now (the recycling rule included), if any.
pub fn bound_now(tx: &mut Tx, esim: EsimId) -> Result<Option<Recipient>, StoreError> {
    match record_of(tx, esim)? {
        Some(rec) => recipient_for(tx, &rec.state),
        None => Ok(None),
    }
}

/// Points `q` at the recipient bound to its eSIM now; logs a change of
/// address. Returns whether anything changed (the caller writes `q`).
pub fn follow(tx: &mut Tx, q: &mut QueuedNotice, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let Some(r) = bound_now(tx, q.esim)? else {
        return Ok(false);
    };
    if r == q.recipient {
        return Ok(false);
    }
    if !r.email.eq_ignore_ascii_case(&q.recipient.email) {
        let detail = format!(
            "{}: recipient changed from {} to {} (the eSIM's binding)",
            q.identity,
            mask_email(&q.recipient.email),
            mask_email(&r.email)
        );
        tx.log(
            q.esim,
            LogEntry::new(now, LogKind::Note, Some(&q.notice.template), detail).about(q.id),
        );
    }
    q.recipient = r;
    Ok(true)
}

/// Moves the queued notices of `esims` to the recipient bound now. There is
/// no index of the queue by eSIM: this reads the queue once, so callers
/// call it only when a binding changed an eSIM's recipient.
pub fn move_queued(
    tx: &mut Tx,
    esims: &BTreeSet<EsimId>,
    now: DateTime<Utc>,
) -> Result<Vec<QueuedNotice>, StoreError> {
    let mut moved = Vec::new();
    if esims.is_empty() {
        return Ok(moved);
    }
    for (_, mut q) in tx.scan::<QueuedNotice>(Space::Queue, &[])? {
        if esims.contains(&q.esim) && follow(tx, &mut q, now)? {
            tx.put(Space::Queue, &id(q.id), &q);
            moved.push(q);
        }
    }
    Ok(moved)
}

/// [`follow`] for one queued notice, written back; `None` when it is no
/// longer queued.
pub fn follow_queued(
    tx: &mut Tx,
    qid: u64,
    now: DateTime<Utc>,
) -> Result<Option<QueuedNotice>, StoreError> {
    let Some(mut q) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? else {
        return Ok(None);
    };
    if follow(tx, &mut q, now)? {
        tx.put(Space::Queue, &id(qid), &q);
    }
    Ok(Some(q))
}
