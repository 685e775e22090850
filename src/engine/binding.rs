//! The customer directory's writes: binding a recipient (which releases what
//! was parked for the eSIMs it names), removing a binding, and forgetting a
//! customer altogether.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::id;
use super::intake::queue_or_suppress;
use super::model::{
    BindReport, DeadLetter, ForgetReport, LogEntry, LogKind, QueuedNotice, Replaced,
};
use super::readdress::{bound_now, move_queued};
use super::records::{ident, EsimRecord, StoredBinding};
use super::resolve::{alias, recipient_for, record_of};
use super::suppression::hash_on_forget;
use super::tx::Tx;
use crate::customers::{IdKind, Recipient};
use crate::event::Identifiers;
use crate::policy::{self, Notice};
use crate::store::{Space, StoreError};
use crate::vars::Captured;

/// Binds `recipient` to every identifier given and, per eSIM they name,
/// releases the most severe parked notice of each kind that is still true
/// (SPEC §6); the rest are recorded as superseded. Names each identifier
/// that was bound to another address (`replaced`), and moves the queued
/// notices of every eSIM whose recipient this changed (`readdress`).
pub fn bind(
    tx: &mut Tx,
    recipient: &Recipient,
    ids: &Identifiers,
    park_for: Duration,
    essential: &[String],
    now: DateTime<Utc>,
) -> Result<BindReport, StoreError> {
    let mut report = BindReport::default();
    let mut esims = BTreeSet::new();
    let mut named = Vec::new();
    for kind in IdKind::LOOKUP_ORDER {
        let Some(v) = kind.get(ids) else { continue };
        let found = alias(tx, kind, v)?;
        named.push((kind, v, found));
        esims.extend(found);
    }
    let mut before = Vec::new();
    for &esim in &esims {
        before.push((esim, bound_now(tx, esim)?));
    }
    for (kind, v, found) in named {
        let key = ident(kind, v);
        if let Some(old) = tx.get::<StoredBinding>(Space::Customers, &key)? {
            if !old.recipient.email.eq_ignore_ascii_case(&recipient.email) {
                report.replaced.push(Replaced {
                    identifier: kind,
                    value: v.to_string(),
                    email: old.recipient.email,
                });
            }
        }
        let mut b = StoredBinding {
            recipient: recipient.clone(),
            iccid_owner: None,
            bound_at: now,
        };
        if let (IdKind::Iccid, Some(esim)) = (kind, found) {
            b.iccid_owner = record_of(tx, esim)?.and_then(|r| r.state.ids.esim_tran_no);
        }
        tx.put(Space::Customers, &key, &b);
    }
    // The bindings just written are read back through the unit.
    let mut changed = BTreeSet::new();
    for (esim, was) in before {
        if bound_now(tx, esim)? != was {
            changed.insert(esim);
        }
    }
    report.moved = move_queued(tx, &changed, now)?;
    for esim in esims {
        let Some(mut rec) = record_of(tx, esim)? else {
            continue;
        };
        if rec.parked.is_empty() {
            continue;
        }
        // The bindings just written are read back through the unit.
        let Some(r) = recipient_for(tx, &rec.state)? else {
            continue;
        };
        expire_parked(tx, &mut rec, now, park_for)?;
        let live = std::mem::take(&mut rec.parked);
        let counts = tx.counts();
        counts.parked -= live.len() as i64;
        let notices: Vec<Notice> = live.iter().map(|p| p.notice.clone()).collect();
        let verdicts = policy::release(&rec.state, &notices, now);
        for (p, verdict) in live.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => {
                    let q = queue_or_suppress(
                        tx,
                        &rec,
                        p.identity,
                        p.notice,
                        p.vars,
                        r.clone(),
                        LogKind::Released,
                        essential,
                        now,
                    )?;
                    report.released.extend(q);
                }
                Err(reason) => {
                    report.superseded += 1;
                    let entry = LogEntry::new(
                        now,
                        LogKind::Superseded,
                        Some(&p.notice.template),
                        format!("{}: {reason}", p.identity),
                    );
                    tx.log(rec.id, entry);
                }
            }
        }
        tx.put(Space::Esims, &id(rec.id), &rec);
    }
    Ok(report)
}

/// Drops the notices parked longer than `park_for` (SPEC §6: they expire),
/// logging each; returns how many.
pub fn expire_parked(
    tx: &mut Tx,
    rec: &mut EsimRecord,
    now: DateTime<Utc>,
    park_for: Duration,
) -> Result<usize, StoreError> {
    let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut rec.parked)
        .into_iter()
        .partition(|p| older_than(p.parked_at, now, park_for));
    rec.parked = keep;
    let counts = tx.counts();
    counts.parked -= gone.len() as i64;
    for p in &gone {
        let detail = format!(
            "{}: parked since {}, longer than customers.park_for, with no recipient",
            p.identity,
            p.parked_at.to_rfc3339()
        );
        tx.log(
            rec.id,
            LogEntry::new(now, LogKind::Expired, Some(&p.notice.template), detail),
        );
    }
    Ok(gone.len())
}

/// Whether `t` is at least `age` before `now`.
pub fn older_than(t: DateTime<Utc>, now: DateTime<Utc>, age: Duration) -> bool {
    now.signed_duration_since(t)
        .to_std()
        .is_ok_and(|a| a >= age)
}

pub fn unbind(tx: &mut Tx, kind: IdKind, value: &str) -> Result<bool, StoreError> {
    let key = ident(kind, value);
    if tx.get_raw(Space::Customers, &key)?.is_none() {
        return Ok(false);
    }
    tx.delete(Space::Customers, &key);
    Ok(true)
}

/// Takes a notice out of the queue, unsent, and says why in its log.
pub fn cancel_queued(
    tx: &mut Tx,
    q: &QueuedNotice,
    now: DateTime<Utc>,
    why: &str,
) -> Result<(), StoreError> {
    tx.delete(Space::Queue, &id(q.id));
    let counts = tx.counts();
    counts.outbox -= 1;
    let entry = LogEntry::new(now, LogKind::Cancelled, Some(&q.notice.template), why).about(q.id);
    tx.log(q.esim, entry);
    Ok(())
}

/// Removes every binding of the address, cancels its queued notices,
/// redacts it from dead letters, and keeps a suppression of it only as a
/// keyed hash. `secret` keys that hash.
pub fn forget(
    tx: &mut Tx,
    email: &str,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Result<ForgetReport, StoreError> {
    let mut report = ForgetReport::default();
    hash_on_forget(tx, secret, email)?;
    super::sent::forget(tx, email)?;
    let same = |e: &str| e.eq_ignore_ascii_case(email.trim());
    for (k, b) in tx.scan::<StoredBinding>(Space::Customers, &[])? {
        if same(&b.recipient.email) {
            tx.delete(Space::Customers, &k);
            report.bindings += 1;
        }
    }
    for (_, q) in tx.scan::<QueuedNotice>(Space::Queue, &[])? {
        if same(&q.recipient.email) {
            cancel_queued(tx, &q, now, "customer forgotten")?;
            report.cancelled += 1;
            report.cancelled_ids.push(q.id);
        }
    }
    for (k, mut d) in tx.scan::<DeadLetter>(Space::Dead, &[])? {
        if same(&d.notice.recipient.email) {
            d.notice.recipient = Recipient {
                email: FORGOTTEN.into(),
                name: None,
                locale: None,
                timezone: None,
            };
            d.notice.vars = Captured::default();
            tx.put(Space::Dead, &k, &d);
            report.redacted += 1;
        }
    }
    Ok(report)
}

/// What a forgotten customer's dead letters show instead of the address.
pub const FORGOTTEN: &str = "forgotten";
