//! A unit of work with types: records read and written through the codec,
//! the decision-log lines written, and the store's counts kept in step.
//!
//! Every engine operation is one [`Tx`] over one storage unit, so what it
//! decides is committed whole or not at all, and operations on the same eSIM
//! never interleave.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{self, decode, encode};
use super::model::{CountsDelta, LogEntry};
use super::records::{log_key, meta};
use super::stats;
use super::EsimId;
use crate::store::{Space, StoreError, Unit};

pub struct Tx<'u> {
    unit: &'u mut dyn Unit,
    /// What this unit changes in the counts.
    counts: CountsDelta,
    /// Decision-log lines this unit wrote (for metrics and logs).
    pub written: Vec<LogEntry>,
    /// What those lines add to the daily counters, and the zone whose
    /// calendar days they count in (`templates.default_timezone`).
    stats: stats::Pending,
    zone: chrono_tz::Tz,
    /// The shard of the counts this unit adds its change to, picked at
    /// random when it starts (see [`Tx::count_shard`]).
    shard: u8,
}

impl<'u> Tx<'u> {
    pub fn new(unit: &'u mut dyn Unit) -> Tx<'u> {
        Tx {
            unit,
            counts: CountsDelta::default(),
            written: Vec::new(),
            stats: stats::Pending::default(),
            zone: chrono_tz::UTC,
            shard: rand::random(),
        }
    }

    /// Counts this unit's log lines on the calendar days of `zone`.
    pub fn counting_days_in(mut self, zone: chrono_tz::Tz) -> Tx<'u> {
        self.zone = zone;
        self
    }

    pub fn get<R: DeserializeOwned>(
        &mut self,
        space: Space,
        key: &[u8],
    ) -> Result<Option<R>, StoreError> {
        match self.unit.get(space, key)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    pub fn put<R: Serialize>(&mut self, space: Space, key: &[u8], record: &R) {
        self.unit.put(space, key, encode(record));
    }

    pub fn get_raw(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.unit.get(space, key)
    }

    pub fn put_raw(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        self.unit.put(space, key, value);
    }

    /// The keys about to be read, fetched together (see [`Unit::prefetch`]).
    pub fn prefetch(&mut self, keys: &[(Space, Vec<u8>)]) -> Result<(), StoreError> {
        self.unit.prefetch(keys)
    }

    /// Raises a mark that only grows (see [`Unit::put_latest`]).
    pub fn put_latest(
        &mut self,
        space: Space,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.unit.put_latest(space, key, value)
    }

    /// Whether this instance still holds queued notice `qid` under `token`
    /// (always on a store no one shares).
    pub fn holds(&mut self, qid: u64, token: i64) -> Result<bool, StoreError> {
        self.unit.holds(&codec::id(qid), token)
    }

    pub fn delete(&mut self, space: Space, key: &[u8]) {
        self.unit.delete(space, key);
    }

    /// Every record of a keyspace (under `prefix`), decoded, in key order.
    pub fn scan<R: DeserializeOwned>(
        &mut self,
        space: Space,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, R)>, StoreError> {
        self.unit
            .scan(space, prefix)?
            .into_iter()
            .map(|(k, v)| Ok((k, decode(&v)?)))
            .collect()
    }

    /// Keys only, for deletions.
    pub fn keys(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .unit
            .scan(space, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    pub fn next_id(&mut self) -> u64 {
        self.unit.next_id()
    }

    /// Appends a line to an eSIM's decision log, and counts it in the daily
    /// counters (written at [`Tx::finish`], in this unit).
    pub fn log(&mut self, esim: EsimId, entry: LogEntry) {
        let seq = self.next_id();
        self.put(Space::Log, &log_key(esim, seq), &entry);
        self.stats.note(self.zone, esim, &entry);
        self.written.push(entry);
    }

    /// The key of the counts' shard this unit writes if it changes them: a
    /// unit that likely will (a delivery) reads it with its first reads,
    /// saving a round trip at the end. 256 shards: units running side by
    /// side rarely wait for each other on one.
    pub fn count_shard(&self) -> (Space, Vec<u8>) {
        (Space::Meta, meta::count_shard(self.shard))
    }

    /// What this unit changes in the store's counts (added at
    /// [`Tx::finish`]).
    pub fn counts(&mut self) -> &mut CountsDelta {
        &mut self.counts
    }

    /// Adds the unit's log lines to the daily counters and its change of the
    /// counts to its shard of them (only when they changed:
    /// every key written costs log space), and hands back what the caller
    /// reports. The shards are written last and in one order (day counters
    /// by key, then one count shard), so two units on a shared store that
    /// meet on them wait for each other instead of deadlocking.
    pub fn finish(mut self) -> Result<Finished, StoreError> {
        let stats = std::mem::take(&mut self.stats);
        let delta = self.counts;
        let shard_key = meta::count_shard(self.shard);
        let mut keys: Vec<(Space, Vec<u8>)> =
            stats.keys().map(|k| (Space::Stats, k.clone())).collect();
        if !delta.is_zero() {
            keys.push((Space::Meta, shard_key.clone()));
        }
        if !keys.is_empty() {
            self.prefetch(&keys)?;
        }
        stats.write(&mut self)?;
        if !delta.is_zero() {
            let key = shard_key;
            let mut shard: CountsDelta = self.get(Space::Meta, &key)?.unwrap_or_default();
            shard.add(&delta);
            self.put(Space::Meta, &key, &shard);
        }
        Ok((self.written, delta))
    }
}

/// What a finished unit reports: the log lines it wrote, and what it changed
/// in the counts.
pub type Finished = (Vec<LogEntry>, CountsDelta);

/// An eSIM id as stored in an alias.
pub fn alias_value(esim: EsimId) -> Vec<u8> {
    codec::id(esim).to_vec()
}
