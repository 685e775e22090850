//! Keeping the store bounded (SPEC §9): notifyIds past `delivery_dedup`,
//! events, idle eSIMs (with their aliases and decision logs), dead letters
//! and the records of sent messages (`sent`) past `history`, parked notices
//! past `park_for`, the daily counters of days before `history`.
//!
//! Candidates are found by scans outside any unit of work and removed in
//! small units that re-check them, so intake is never held up for a whole
//! scan and an eSIM that received an event meanwhile is kept.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::binding::{expire_parked, older_than};
use super::codec::{decode, read_id};
use super::model::{DeadLetter, QueuedNotice, RetentionReport};
use super::records::{ident, EsimRecord, EventRecord};
use super::resolve::{alias, record_of};
use super::{Engine, EsimId};
use crate::customers::IdKind;
use crate::store::{Space, StoreError};

/// Keys removed per unit of work.
const CHUNK: usize = 1000;

pub struct Ages {
    pub delivery_dedup: Duration,
    pub history: Duration,
    pub park_for: Duration,
}

pub fn retain(
    engine: &Engine,
    now: DateTime<Utc>,
    ages: &Ages,
) -> Result<RetentionReport, StoreError> {
    let storage = engine.storage();
    let mut report = RetentionReport::default();
    let dedup_cut = now.timestamp_millis() - ages.delivery_dedup.as_millis() as i64;
    let mut stale = Vec::new();
    for kv in storage.scan(Space::Dedup, &[]) {
        let (k, v) = kv?;
        if (read_id(&v).unwrap_or(0) as i64) < dedup_cut {
            stale.push(k);
        }
    }
    report.dedup_removed = delete_in_chunks(engine, Space::Dedup, &stale)?;

    // Events are in arrival order: stop at the first one young enough.
    let mut old_events = Vec::new();
    for kv in storage.scan(Space::Events, &[]) {
        let (k, v) = kv?;
        let e: EventRecord = decode(&v)?;
        if !older_than(e.at, now, ages.history) {
            break;
        }
        old_events.push(k);
    }
    report.events_removed = delete_in_chunks(engine, Space::Events, &old_events)?;

    let mut queued: BTreeSet<EsimId> = BTreeSet::new();
    for kv in storage.scan(Space::Queue, &[]) {
        queued.insert(decode::<QueuedNotice>(&kv?.1)?.esim);
    }
    let mut candidates = Vec::new();
    for kv in storage.scan(Space::Esims, &[]) {
        let rec: EsimRecord = decode(&kv?.1)?;
        let idle = older_than(rec.last_event_at, now, ages.history) && !queued.contains(&rec.id);
        let expiring = rec
            .parked
            .iter()
            .any(|p| older_than(p.parked_at, now, ages.park_for));
        if idle || expiring {
            candidates.push(rec.id);
        }
    }
    for esim in candidates {
        let (removed, expired) = engine.unit(|tx| {
            // Re-read in the unit: an event may have arrived meanwhile.
            let Some(mut rec) = record_of(tx, esim)? else {
                return Ok((false, 0));
            };
            if older_than(rec.last_event_at, now, ages.history) && !queued.contains(&rec.id) {
                let counts = tx.counts();
                counts.parked -= rec.parked.len() as i64;
                tx.delete(Space::Esims, &super::codec::id(rec.id));
                for kind in IdKind::LOOKUP_ORDER {
                    if let Some(v) = kind.get(&rec.state.ids) {
                        if alias(tx, kind, v)? == Some(rec.id) {
                            tx.delete(Space::Aliases, &ident(kind, v));
                        }
                    }
                }
                for k in tx.keys(Space::Log, &super::codec::id(rec.id))? {
                    tx.delete(Space::Log, &k);
                }
                Ok((true, 0))
            } else {
                let n = expire_parked(tx, &mut rec, now, ages.park_for)?;
                tx.put(Space::Esims, &super::codec::id(rec.id), &rec);
                Ok((false, n))
            }
        })?;
        report.esims_removed += usize::from(removed);
        report.parked_expired += expired;
    }

    let mut old_dead = Vec::new();
    for kv in storage.scan(Space::Dead, &[]) {
        let (k, v) = kv?;
        if older_than(decode::<DeadLetter>(&v)?.died_at, now, ages.history) {
            old_dead.push(k);
        }
    }
    for chunk in old_dead.chunks(CHUNK) {
        report.dead_removed += engine.unit(|tx| {
            let mut n = 0;
            for k in chunk {
                if tx.get_raw(Space::Dead, k)?.is_some() {
                    tx.delete(Space::Dead, k);
                    n += 1;
                }
            }
            let counts = tx.counts();
            counts.dead -= n as i64;
            Ok(n)
        })?;
    }
    let first_kept = super::stats::first_kept_day(engine.policy.zone, now, ages.history);
    report.stats_removed = super::stats::remove_before(engine, first_kept)?;
    // What reports find sent messages by, and the reports already taken.
    super::sent::retain(engine, now, ages.history)?;
    Ok(report)
}

fn delete_in_chunks(engine: &Engine, space: Space, keys: &[Vec<u8>]) -> Result<usize, StoreError> {
    for chunk in keys.chunks(CHUNK) {
        engine.unit(|tx| {
            for k in chunk {
                tx.delete(space, k);
            }
            Ok(())
        })?;
    }
    Ok(keys.len())
}

/// Whether an event record (the bytes of one `Events` entry) is past
/// `history` at `now`, as [`retain`] judges it: what `store copy` leaves
/// behind ("events within history").
pub fn event_past_history(
    value: &[u8],
    now: DateTime<Utc>,
    history: Duration,
) -> Result<bool, StoreError> {
    let e: EventRecord = decode(value)?;
    Ok(older_than(e.at, now, history))
}
