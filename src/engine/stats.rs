//! Daily counters of what happened to notices (`GET /admin/stats`, the
//! console's chart): per calendar day in `templates.default_timezone` and
//! per template, how many were queued, sent, failed, dead, bounced,
//! complained about and suppressed.
//!
//! Counted in ONE place: [`Tx::log`](super::tx::Tx::log) notes every
//! decision-log line a unit appends, keyed by its [`LogKind`], and
//! [`Tx::finish`](super::tx::Tx::finish) adds the unit's sums to the stored
//! counters in the same unit. So a counter moves exactly when its log line
//! is committed (never twice, never lost in a crash), and whoever appends a
//! line later (a mail provider's bounce report) is counted without doing
//! anything. Nothing here scans the decision log.
//!
//! One counter row per day, template and shard (the eSIM's id modulo
//! [`SHARDS`]): units about different eSIMs mostly write different rows, so
//! a store that runs them side by side does not queue them all behind one
//! hot row; a read sums the shards. Rows older than `store.history` are
//! removed by retention ([`remove_before`]).
//!
//! Key: `YYYY-MM-DD` (sorts as the day), `/`, the shard byte, then the
//! template's name (empty for a line without one).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::model::{LogEntry, LogKind};
use super::tx::Tx;
use super::{Engine, EsimId};
use crate::store::{Space, StoreError};

/// Rows per day and template, so concurrent units rarely share one.
pub const SHARDS: u64 = 32;

/// Length of the day at the start of a key (`2026-12-04`).
const DAY_LEN: usize = 10;

/// The counters of one day and template (one shard of them as stored).
/// Stored as a versioned record: a counter added later needs a new layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// Put in the outbox: queued at once, or released once a customer was
    /// bound (a parked notice counts when it is released, not when parked).
    pub queued: u64,
    /// Accepted by the mail server.
    pub sent: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Given up on (dead letters).
    pub dead: u64,
    /// Reported undeliverable by the mail provider after it accepted them.
    pub bounced: u64,
    /// Marked as spam by the recipient.
    pub complained: u64,
    /// Not sent because the address is on the suppression list.
    pub suppressed: u64,
}

impl DayCounts {
    /// The counter a decision-log line of kind `what` moves, if any.
    fn counter(&mut self, what: LogKind) -> Option<&mut u64> {
        Some(match what {
            LogKind::Queued | LogKind::Released => &mut self.queued,
            LogKind::Sent => &mut self.sent,
            LogKind::Failed => &mut self.failed,
            LogKind::Dead => &mut self.dead,
            LogKind::Bounced => &mut self.bounced,
            LogKind::Complained => &mut self.complained,
            LogKind::Suppressed => &mut self.suppressed,
            _ => return None,
        })
    }

    fn add(&mut self, other: &DayCounts) {
        self.queued += other.queued;
        self.sent += other.sent;
        self.failed += other.failed;
        self.dead += other.dead;
        self.bounced += other.bounced;
        self.complained += other.complained;
        self.suppressed += other.suppressed;
    }

    fn is_zero(&self) -> bool {
        *self == DayCounts::default()
    }
}

/// One day and template with its counts, as `/admin/stats` answers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayStats {
    /// The calendar day in `templates.default_timezone`.
    pub day: NaiveDate,
    /// `None` for lines that named no template (none of today's counted
    /// kinds is written without one).
    pub template: Option<String>,
    #[serde(flatten)]
    pub counts: DayCounts,
}

/// What one unit's log lines add, until the unit finishes.
#[derive(Debug, Default)]
pub struct Pending {
    deltas: BTreeMap<Vec<u8>, DayCounts>,
}

impl Pending {
    /// Notes one appended decision-log line, counted on its day in `zone`.
    pub fn note(&mut self, zone: Tz, esim: EsimId, entry: &LogEntry) {
        let mut delta = DayCounts::default();
        let Some(n) = delta.counter(entry.what) else {
            return;
        };
        *n = 1;
        let day = entry.at.with_timezone(&zone).date_naive();
        let key = key(day, esim % SHARDS, entry.template.as_deref().unwrap_or(""));
        self.deltas.entry(key).or_default().add(&delta);
    }

    /// The rows [`Pending::write`] reads.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.deltas.keys()
    }

    /// Adds the noted sums to the stored rows, inside the unit.
    pub fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        for (key, delta) in self.deltas {
            let mut row: DayCounts = tx.get(Space::Stats, &key)?.unwrap_or_default();
            row.add(&delta);
            tx.put(Space::Stats, &key, &row);
        }
        Ok(())
    }
}

fn key(day: NaiveDate, shard: u64, template: &str) -> Vec<u8> {
    let mut k = day.format("%Y-%m-%d").to_string().into_bytes();
    k.push(b'/');
    k.push(shard as u8);
    k.extend_from_slice(template.as_bytes());
    k
}

/// The day and template of a key; `None` for a key this layout never wrote.
fn parse_key(key: &[u8]) -> Option<(NaiveDate, String)> {
    let day = std::str::from_utf8(key.get(..DAY_LEN)?).ok()?;
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    if key.get(DAY_LEN) != Some(&b'/') {
        return None;
    }
    let template = String::from_utf8(key.get(DAY_LEN + 2..)?.to_vec()).ok()?;
    Some((day, template))
}

/// Every day and template from `from` to `to` (inclusive) with any count,
/// oldest day first, templates in name order; the shards summed.
pub fn read(engine: &Engine, from: NaiveDate, to: NaiveDate) -> Result<Vec<DayStats>, StoreError> {
    let mut sums: BTreeMap<(NaiveDate, String), DayCounts> = BTreeMap::new();
    let start = from.format("%Y-%m-%d").to_string();
    for kv in engine.storage().scan(Space::Stats, &[]) {
        let (k, v) = kv?;
        if k.as_slice() < start.as_bytes() {
            continue;
        }
        let Some((day, template)) = parse_key(&k) else {
            continue;
        };
        if day > to {
            // Keys sort by day: nothing later is wanted.
            break;
        }
        let counts: DayCounts = super::codec::decode(&v)?;
        sums.entry((day, template)).or_default().add(&counts);
    }
    Ok(sums
        .into_iter()
        .filter(|(_, c)| !c.is_zero())
        .map(|((day, template), counts)| DayStats {
            day,
            template: (!template.is_empty()).then_some(template),
            counts,
        })
        .collect())
}

/// The first day whose counters `store.history` still keeps at `now`: the
/// day (in `zone`) of the instant `history` ago.
pub fn first_kept_day(zone: Tz, now: DateTime<Utc>, history: std::time::Duration) -> NaiveDate {
    let history = chrono::Duration::from_std(history).unwrap_or(chrono::Duration::MAX);
    let then = now
        .checked_sub_signed(history)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    then.with_timezone(&zone).date_naive()
}

/// Removes the counters of every day before `first_kept`; returns how many
/// rows went. Found by a scan outside any unit (the keys sort by day, so it
/// stops at the first day kept), removed in one unit per chunk.
pub fn remove_before(engine: &Engine, first_kept: NaiveDate) -> Result<usize, StoreError> {
    let cut = first_kept.format("%Y-%m-%d").to_string();
    let mut old = Vec::new();
    for kv in engine.storage().scan(Space::Stats, &[]) {
        let (k, _) = kv?;
        if k.as_slice() >= cut.as_bytes() {
            break;
        }
        old.push(k);
    }
    for chunk in old.chunks(1000) {
        engine.unit(|tx| {
            for k in chunk {
                tx.delete(Space::Stats, k);
            }
            Ok(())
        })?;
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn line(at: DateTime<Utc>, what: LogKind, template: &str) -> LogEntry {
        LogEntry::new(at, what, Some(template), "")
    }

    #[test]
    fn a_line_counts_on_its_day_in_the_zone_and_in_its_shard() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 23:30 UTC on 4 December is 00:30 on the 5th in Berlin.
        let late = Utc.with_ymd_and_hms(2026, 12, 4, 23, 30, 0).unwrap();
        let mut p = Pending::default();
        p.note(berlin, 9, &line(late, LogKind::Sent, "data_low"));
        p.note(chrono_tz::UTC, 9, &line(late, LogKind::Sent, "data_low"));
        p.note(berlin, 10, &line(late, LogKind::Bounced, "data_low"));
        p.note(berlin, 9, &line(late, LogKind::Event, "data_low"));
        let keys: Vec<_> = p.deltas.keys().map(|k| parse_key(k).unwrap()).collect();
        let d5 = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let d4 = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        assert_eq!(
            keys,
            vec![
                (d4, "data_low".to_string()),
                (d5, "data_low".to_string()),
                (d5, "data_low".to_string()),
            ]
        );
        let shards: Vec<u8> = p.deltas.keys().map(|k| k[DAY_LEN + 1]).collect();
        assert_eq!(shards, vec![9, 9, 10], "eSIM 9 and 10 in shards 9 and 10");
        let sent: u64 = p.deltas.values().map(|c| c.sent).sum();
        let bounced: u64 = p.deltas.values().map(|c| c.bounced).sum();
        assert_eq!((sent, bounced), (2, 1), "an event line counts nowhere");
    }

    #[test]
    fn keys_sort_by_day_and_parse_back() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 9).unwrap();
        let e = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        assert!(key(d, 7, "zz") < key(e, 0, "aa"));
        assert_eq!(
            parse_key(&key(e, 3, "install")),
            Some((e, "install".into()))
        );
        assert_eq!(parse_key(&key(e, 3, "")), Some((e, String::new())));
        assert_eq!(parse_key(b"nonsense"), None);
    }

    #[test]
    fn the_first_kept_day_is_the_day_history_ago_in_the_zone() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 7, 0, 0).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            first_kept_day(chrono_tz::UTC, now, 2 * day),
            NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
        );
        let honolulu: Tz = "Pacific/Honolulu".parse().unwrap();
        assert_eq!(
            first_kept_day(honolulu, now, 2 * day),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
        assert_eq!(
            first_kept_day(chrono_tz::UTC, now, std::time::Duration::MAX),
            DateTime::<Utc>::MIN_UTC.date_naive()
        );
    }
}
