//! The queue of a store several instances share (SPEC §10): which due
//! notices this instance takes, and the decision-log line when it takes
//! one over from an instance whose lease ran out.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::{decode, id, read_id};
use super::model::{LogEntry, LogKind, QueuedNotice, QUIET_HOURS, RECIPIENT_QUOTA};
use super::tx::Tx;
use crate::store::{QueueColumns, Space, StoreError};

/// A queued notice this instance holds while it sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub id: u64,
    /// The fencing token every write about this send names.
    pub token: i64,
    pub rescued_from: Option<String>,
}

/// What a shared store indexes of a queued notice (its [`QueueIndexer`](crate::store::QueueIndexer)).
pub fn queue_columns(bytes: &[u8]) -> Option<QueueColumns> {
    let q: QueuedNotice = decode(bytes).ok()?;
    Some(QueueColumns {
        esim: q.esim,
        due: q.next_attempt,
        recheck_on_arrival: q
            .waiting_for
            .as_deref()
            .is_some_and(|w| w == QUIET_HOURS || w == RECIPIENT_QUOTA),
    })
}

/// Turns the store's claims into notice ids; a key that is not an id (it
/// cannot be: the engine writes every queue key) is let go of.
pub fn held(claims: Vec<crate::store::Claim>) -> Vec<Held> {
    claims
        .into_iter()
        .filter_map(|c| {
            Some(Held {
                id: read_id(&c.key)?,
                token: c.token,
                rescued_from: c.rescued_from,
            })
        })
        .collect()
}

/// Writes in the eSIM's decision log that this instance took the notice
/// over from `from`, whose lease ran out (it stopped or lost the database
/// while sending: the email may have gone out once already).
pub fn note_rescue(tx: &mut Tx, h: &Held, me: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    if !tx.holds(h.id, h.token)? {
        return Ok(());
    }
    let Some(q) = tx.get::<QueuedNotice>(Space::Queue, &id(h.id))? else {
        return Ok(());
    };
    let from = h.rescued_from.as_deref().unwrap_or_default();
    let line = LogEntry::new(
        now,
        LogKind::Note,
        Some(&q.notice.template),
        format!(
            "rescued by instance {me}: the lease of instance {} ran out while it held the notice",
            if from.is_empty() { "?" } else { from }
        ),
    )
    .about(h.id);
    tx.log(q.esim, line);
    Ok(())
}

/// How long a sleeping dispatcher of a group waits at most before it looks
/// at the shared queue again (another instance may have queued something).
pub const POLL: Duration = Duration::from_millis(500);
