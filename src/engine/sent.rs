//! What a mail provider's report needs to find the notice it is about
//! (`Space::Sent`), written in the unit that records a notice as sent:
//! by the notice's id (the custom-data header each relay echoes), by our
//! Message-ID, and the latest notice sent to each address. Also the
//! reports and signature tokens already taken, so that a repeated report
//! changes nothing twice. Every record carries its instant and is kept for
//! `store.history` (`retain`).
//!
//! Keys: `n` + notice id (8 bytes, big-endian) → [`SentRecord`];
//! `m` + Message-ID (no `<>`, lower case) → [`SentRef`]; `r` + address (as
//! the suppression list keys it) → [`SentRef`]; `f` + provider `/` event id
//! and `t` + provider `/` token → [`Seen`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::binding::older_than;
use super::codec::{decode, id};
use super::model::QueuedNotice;
use super::tx::Tx;
use super::{Engine, EsimId};
use crate::customers::suppression_key;
use crate::store::{Space, StoreError};

/// One sent message, as a report finds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    pub notice: u64,
    pub esim: EsimId,
    pub recipient: String,
    pub template: String,
    /// Without the angle brackets.
    pub message_id: String,
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
}

/// A pointer to a [`SentRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRef {
    pub notice: u64,
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
}

/// A report event or a signature token already taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
}

const BY_NOTICE: u8 = b'n';
const BY_MESSAGE_ID: u8 = b'm';
const BY_RECIPIENT: u8 = b'r';
const REPORT: u8 = b'f';
const TOKEN: u8 = b't';

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// A Message-ID as reports give it (`<a@b>`, `a@b`, any case) in one form.
pub fn bare_message_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_ascii_lowercase()
}

/// Records that `q` was sent as `message_id` (in the unit that logs `sent`).
pub fn remember(tx: &mut Tx, q: &QueuedNotice, message_id: &str, now: DateTime<Utc>) {
    let message_id = bare_message_id(message_id);
    let pointer = SentRef {
        notice: q.id,
        at: now,
    };
    tx.put(
        Space::Sent,
        &key(BY_MESSAGE_ID, message_id.as_bytes()),
        &pointer,
    );
    tx.put(
        Space::Sent,
        &key(BY_RECIPIENT, suppression_key(&q.recipient.email).as_bytes()),
        &pointer,
    );
    tx.put(
        Space::Sent,
        &key(BY_NOTICE, &id(q.id)),
        &SentRecord {
            notice: q.id,
            esim: q.esim,
            recipient: q.recipient.email.clone(),
            template: q.notice.template.clone(),
            message_id,
            at: now,
        },
    );
}

/// The sent message a report is about: by the notice id its custom data
/// carried (when that notice went to the reported address, if one is
/// reported), else by our Message-ID, else the latest sent to the address.
pub fn find(
    tx: &mut Tx,
    notice: Option<u64>,
    message_id: Option<&str>,
    recipient: Option<&str>,
) -> Result<Option<SentRecord>, StoreError> {
    let same_address = |r: &SentRecord| {
        recipient.is_none_or(|a| suppression_key(a) == suppression_key(&r.recipient))
    };
    if let Some(n) = notice {
        if let Some(r) = by_notice(tx, n)?.filter(same_address) {
            return Ok(Some(r));
        }
    }
    if let Some(m) = message_id.map(bare_message_id).filter(|m| !m.is_empty()) {
        if let Some(p) = tx.get::<SentRef>(Space::Sent, &key(BY_MESSAGE_ID, m.as_bytes()))? {
            if let Some(r) = by_notice(tx, p.notice)?.filter(same_address) {
                return Ok(Some(r));
            }
        }
    }
    if let Some(a) = recipient {
        let k = key(BY_RECIPIENT, suppression_key(a).as_bytes());
        if let Some(p) = tx.get::<SentRef>(Space::Sent, &k)? {
            return by_notice(tx, p.notice);
        }
    }
    Ok(None)
}

fn by_notice(tx: &mut Tx, notice: u64) -> Result<Option<SentRecord>, StoreError> {
    tx.get(Space::Sent, &key(BY_NOTICE, &id(notice)))
}

/// Whether `provider`'s report `event` was taken before.
pub fn report_taken(tx: &mut Tx, provider: &str, event: &str) -> Result<bool, StoreError> {
    Ok(tx
        .get_raw(
            Space::Sent,
            &key(REPORT, format!("{provider}/{event}").as_bytes()),
        )?
        .is_some())
}

/// Remembers that `provider`'s report `event` was taken.
pub fn take_report(tx: &mut Tx, provider: &str, event: &str, now: DateTime<Utc>) {
    let k = key(REPORT, format!("{provider}/{event}").as_bytes());
    tx.put(Space::Sent, &k, &Seen { at: now });
}

/// True the first time `provider`'s signature `token` is used.
pub fn first_token(
    tx: &mut Tx,
    provider: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    first(tx, TOKEN, provider, token, now)
}

fn first(
    tx: &mut Tx,
    prefix: u8,
    provider: &str,
    what: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let k = key(prefix, format!("{provider}/{what}").as_bytes());
    if tx.get_raw(Space::Sent, &k)?.is_some() {
        return Ok(false);
    }
    tx.put(Space::Sent, &k, &Seen { at: now });
    Ok(true)
}

/// On forgetting a customer: what was sent to the address goes too.
pub fn forget(tx: &mut Tx, email: &str) -> Result<(), StoreError> {
    let address = suppression_key(email);
    tx.delete(Space::Sent, &key(BY_RECIPIENT, address.as_bytes()));
    for (k, r) in tx.scan::<SentRecord>(Space::Sent, &[BY_NOTICE])? {
        if suppression_key(&r.recipient) == address {
            tx.delete(Space::Sent, &k);
            tx.delete(Space::Sent, &key(BY_MESSAGE_ID, r.message_id.as_bytes()));
        }
    }
    Ok(())
}

/// When a record of `Space::Sent` was written, by its key's kind.
fn written_at(k: &[u8], v: &[u8]) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(match k.first() {
        Some(&BY_NOTICE) => Some(decode::<SentRecord>(v)?.at),
        Some(&BY_MESSAGE_ID) | Some(&BY_RECIPIENT) => Some(decode::<SentRef>(v)?.at),
        Some(&REPORT) | Some(&TOKEN) => Some(decode::<Seen>(v)?.at),
        _ => None,
    })
}

/// Removes the records older than `history`; how many.
pub fn retain(
    engine: &Engine,
    now: DateTime<Utc>,
    history: std::time::Duration,
) -> Result<usize, StoreError> {
    let mut old = Vec::new();
    for kv in engine.storage().scan(Space::Sent, &[]) {
        let (k, v) = kv?;
        if written_at(&k, &v)?.is_some_and(|at| older_than(at, now, history)) {
            old.push(k);
        }
    }
    let mut removed = 0;
    for chunk in old.chunks(1000) {
        removed += engine.unit(|tx| {
            let mut n = 0;
            for k in chunk {
                // Re-read in the unit: a send may have just renewed it.
                let Some(v) = tx.get_raw(Space::Sent, k)? else {
                    continue;
                };
                if written_at(k, &v)?.is_some_and(|at| older_than(at, now, history)) {
                    tx.delete(Space::Sent, k);
                    n += 1;
                }
            }
            Ok(n)
        })?;
    }
    Ok(removed)
}
