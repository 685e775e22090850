//! A unit of work on PostgreSQL: one READ COMMITTED transaction.
//!
//! Reads go to the database through an overlay of the unit's own pending
//! writes (as on sled); the writes are sent at commit, one statement per
//! keyspace and kind (an `unnest` upsert, a `DELETE … = ANY`), pipelined
//! on the connection, then `COMMIT`.
//!
//! Units are serialised by what they touch (issue 19), which keeps the
//! storage seam's promise ("two units never interleave") for any number of
//! connections and instances while units about different eSIMs run side by
//! side:
//! - every unit holds [`UNIT_LOCK`] shared; a unit that must run alone
//!   holds it exclusively, and then needs no other lock;
//! - a read takes an advisory transaction lock on its key first (sent in
//!   the same round trip, before the read, so the read's snapshot is taken
//!   once the lock is held and sees what the previous holder committed,
//!   absent keys included); a key written without being read is locked at
//!   commit, all of them in one sorted statement. Locks are held to the
//!   end of the transaction: two-phase locking, so what units do is what
//!   they would have done one after the other. Keys that are fresh ids
//!   (decision-log lines, events) are written once and need no lock;
//! - a unit that scans (a range's absent keys cannot be locked one by one)
//!   or would hold more than [`MAX_KEY_LOCKS`] stops and runs again alone
//!   ([`Again::Alone`]): retention, forget, a rebind, key changes;
//! - a deadlock between two units' locks is found by the server, which
//!   aborts one; that unit runs again from the start ([`Again::Retry`]).

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Object;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

use super::db_error;
use super::pool::wait;
use super::schema::{table, ID_BLOCK};
use super::sql;
use crate::store::{Entry, QueueIndexer, Space, StoreError, Unit};

/// The advisory lock every unit holds until it ends ("esimunit"): shared
/// by units that lock their keys, exclusive for a unit that runs alone.
pub const UNIT_LOCK: i64 = 0x6573_696d_756e_6974;

/// A unit holding more key locks than this runs again alone instead (the
/// server's lock table is shared and bounded: `max_locks_per_transaction`
/// × connections).
pub const MAX_KEY_LOCKS: usize = 48;

/// Why a unit that failed may run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    No,
    /// The database aborted it (deadlock, serialisation failure).
    Retry,
    /// It must run alone: it scans, or locks too many keys.
    Alone,
}

/// Whether a failure is one PostgreSQL asks to retry the transaction for.
pub fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The advisory lock of one key: a stable hash (every instance and release
/// must agree) as the two-`int4` form, a lock space apart from the `int8`
/// locks ([`UNIT_LOCK`], the schema's). Two keys that share a hash only
/// wait for each other.
pub fn key_lock(space: Space, key: &[u8]) -> (i32, i32) {
    let mut h = Sha256::new();
    h.update(table(space).as_bytes());
    h.update([0]);
    h.update(key);
    let d = h.finalize();
    let word = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (word(&d[0..4]), word(&d[4..8]))
}

/// Keyspaces whose keys are fresh ids, written once by the unit that took
/// the id: nobody else can touch them while it runs.
fn fresh_keys(space: Space) -> bool {
    matches!(space, Space::Log | Space::Events)
}

pub struct PgUnit<'a> {
    pub client: &'a Object,
    /// Pending writes: `None` is a delete.
    pub writes: BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>,
    /// The ids block taken by this unit: next to hand out, end (exclusive).
    pub ids: Option<(u64, u64)>,
    /// The ids block was taken ahead, with the unit's first reads, and none
    /// of it is handed out yet: a lock taken after it makes it stale (see
    /// [`PgUnit::locks_taken`]).
    pub ids_ahead: bool,
    /// A failure where the trait has no `Result` (`next_id`): the unit
    /// cannot commit.
    pub failed: Option<StoreError>,
    /// A database error of this unit asked for a retry of the whole unit.
    pub retry: bool,
    /// Reads the queue's columns from its values (the engine's).
    pub indexer: Option<QueueIndexer>,
    /// Holds [`UNIT_LOCK`] exclusively: no key needs a lock of its own.
    pub alone: bool,
    /// The key locks this unit holds.
    pub locked: BTreeSet<(i32, i32)>,
    /// Set when the unit found it must run alone.
    pub again_alone: bool,
    /// Values that only grow, written apart after the commit ([`Unit::put_latest`]).
    pub latest: BTreeMap<(Space, Vec<u8>), Vec<u8>>,
    /// The transaction's `BEGIN` and unit lock, until sent in front of the
    /// unit's first statements ([`PgUnit::flight`]).
    pub begin: Option<String>,
    /// What this unit read: a key it holds the lock of (or any key, alone)
    /// cannot change under it, so a second read costs no round trip.
    pub read: std::collections::HashMap<(Space, Vec<u8>), Option<Vec<u8>>>,
}

impl PgUnit<'_> {
    fn db(&mut self, e: tokio_postgres::Error) -> StoreError {
        if retryable(&e) {
            self.retry = true;
        }
        db_error(e)
    }

    /// After a flight that took new locks. Ids increase in the order units
    /// on one eSIM run only when they are taken after that eSIM's lock: a
    /// block taken ahead of a lock (and not used yet) is dropped, and the
    /// next id takes a fresh one.
    fn locks_taken(&mut self) {
        if self.ids_ahead {
            self.ids = None;
            self.ids_ahead = false;
        }
    }

    /// Stops the unit: it runs again alone.
    fn must_run_alone(&mut self, why: &str) -> StoreError {
        self.again_alone = true;
        let e = StoreError::Io(format!("this unit runs again alone: {why}"));
        // Work that swallowed the error still cannot commit.
        self.failed.get_or_insert(StoreError::Io(e.to_string()));
        e
    }

    /// The lock `get` must take first, if any (none for fresh ids, none
    /// twice, none when alone).
    fn lock_to_take(&mut self, space: Space, key: &[u8]) -> Result<Option<(i32, i32)>, StoreError> {
        if self.alone || fresh_keys(space) {
            return Ok(None);
        }
        let lock = key_lock(space, key);
        if self.locked.contains(&lock) {
            return Ok(None);
        }
        if self.locked.len() >= MAX_KEY_LOCKS {
            return Err(self.must_run_alone("it reads too many keys"));
        }
        Ok(Some(lock))
    }

    /// Sends the pending writes and commits. Consumes the unit's writes.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // Keys written without being read, locked before anything is written.
        let mut to_lock: BTreeSet<(i32, i32)> = BTreeSet::new();
        if !self.alone {
            for (space, key) in self.writes.keys() {
                if !fresh_keys(*space) {
                    let lock = key_lock(*space, key);
                    if !self.locked.contains(&lock) {
                        to_lock.insert(lock);
                    }
                }
            }
            if self.locked.len() + to_lock.len() > MAX_KEY_LOCKS {
                return Err(self.must_run_alone("it writes too many keys"));
            }
        }
        let (lock_hi, lock_lo): (Vec<i32>, Vec<i32>) = to_lock.into_iter().unzip();
        let mut upserts: BTreeMap<Space, (Column, Column)> = BTreeMap::new();
        let mut deletes: BTreeMap<Space, Vec<Vec<u8>>> = BTreeMap::new();
        for ((space, key), w) in std::mem::take(&mut self.writes) {
            match w {
                Some(v) => {
                    let e = upserts.entry(space).or_default();
                    e.0.push(key);
                    e.1.push(v);
                }
                None => deletes.entry(space).or_default().push(key),
            }
        }
        // A queue row's eSIM and due time, for the group's claim.
        let queue_cols = match (self.indexer, upserts.get(&Space::Queue)) {
            (Some(index), Some((_, values))) => {
                let mut cols = (Vec::new(), Vec::new(), Vec::new());
                for v in values {
                    let c = index(v);
                    cols.0.push(c.map(|c| c.esim as i64));
                    cols.1.push(c.map_or_else(chrono::Utc::now, |c| c.due));
                    cols.2.push(c.is_some_and(|c| c.recheck_on_arrival));
                }
                Some(cols)
            }
            _ => None,
        };
        let sent = send_and_commit(
            self.client,
            (&lock_hi, &lock_lo),
            &deletes,
            &upserts,
            &queue_cols,
        );
        self.flight(sent)
    }

    /// Runs `statements` (a future that sends them on its first poll), with
    /// the unit's `BEGIN` in front when it was not sent yet: a unit's first
    /// round trip opens its transaction too.
    fn flight<T>(
        &mut self,
        statements: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let begin = self.begin.take();
        let client = self.client;
        let done = wait(async {
            match begin {
                Some(begin) => {
                    let (_, v) =
                        futures_util::future::try_join(client.batch_execute(&begin), statements)
                            .await?;
                    Ok(v)
                }
                None => statements.await,
            }
        });
        done.map_err(|e| self.db(e))
    }
}

type Column = Vec<Vec<u8>>;
type QueueCols = (
    Vec<Option<i64>>,
    Vec<chrono::DateTime<chrono::Utc>>,
    Vec<bool>,
);

/// Sends a unit's key locks, its writes and `COMMIT` in one flight, one
/// round trip. Every statement is prepared first (from the connection's
/// cache once warm), so nothing is awaited between sending them and the
/// server runs them in this order; an error in one aborts the transaction,
/// and the `COMMIT` after it then ends it as a rollback.
async fn send_and_commit(
    client: &Object,
    (lock_hi, lock_lo): (&Vec<i32>, &Vec<i32>),
    deletes: &BTreeMap<Space, Vec<Vec<u8>>>,
    upserts: &BTreeMap<Space, (Column, Column)>,
    queue_cols: &Option<QueueCols>,
) -> Result<(), tokio_postgres::Error> {
    type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
    let mut statements = Vec::new();
    let mut params: Vec<Vec<Param<'_>>> = Vec::new();
    if !lock_hi.is_empty() {
        statements.push(client.prepare_cached(sql::KEY_LOCKS).await?);
        params.push(vec![lock_hi, lock_lo]);
    }
    if !deletes.is_empty() || !upserts.is_empty() {
        let mut p: Vec<Param<'_>> = Vec::new();
        for keys in deletes.values() {
            p.push(keys);
        }
        for (space, (keys, values)) in upserts {
            p.push(keys);
            p.push(values);
            if let (Space::Queue, Some((esims, dues, rechecks))) = (*space, queue_cols) {
                p.extend([esims as Param<'_>, dues, rechecks]);
            }
        }
        let spaces = |m: Vec<Space>| m;
        let text = sql::writes(
            &spaces(deletes.keys().copied().collect()),
            &spaces(upserts.keys().copied().collect()),
            queue_cols.is_some(),
        );
        statements.push(client.prepare_cached(&text).await?);
        params.push(p);
    }
    statements.push(client.prepare_cached(sql::COMMIT).await?);
    params.push(Vec::new());
    let runs: Vec<_> = statements
        .iter()
        .zip(&params)
        .map(|(s, p)| client.execute(s, p))
        .collect();
    futures_util::future::try_join_all(runs).await?;
    Ok(())
}

impl Unit for PgUnit<'_> {
    fn get(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let id = (space, key.to_vec());
        if let Some(w) = self.writes.get(&id) {
            return Ok(w.clone());
        }
        if let Some(v) = self.read.get(&id) {
            return Ok(v.clone());
        }
        let client = self.client;
        let Some(lock) = self.lock_to_take(space, key)? else {
            let value = self.flight(value_of(client, space, key))?;
            self.read.insert(id, value.clone());
            return Ok(value);
        };
        let read = async {
            let s = client.prepare_cached(sql::KEY_LOCK).await?;
            // Both sent before either answer: the read runs once the lock is held.
            let (_, value) = futures_util::future::try_join(
                client.execute(&s, &[&lock.0, &lock.1]),
                value_of(client, space, key),
            )
            .await?;
            Ok(value)
        };
        let value = self.flight(read)?;
        self.locks_taken();
        self.locked.insert(lock);
        self.read.insert(id, value.clone());
        Ok(value)
    }

    /// One round trip: the locks of the keys not held yet (sorted, in one
    /// statement), then one read per keyspace, every answer kept for the
    /// reads that follow (absent keys too).
    fn prefetch(&mut self, keys: &[(Space, Vec<u8>)]) -> Result<(), StoreError> {
        let mut wanted: BTreeMap<Space, Vec<Vec<u8>>> = BTreeMap::new();
        let mut locks: BTreeSet<(i32, i32)> = BTreeSet::new();
        for (space, key) in keys {
            let id = (*space, key.clone());
            if self.writes.contains_key(&id) || self.read.contains_key(&id) {
                continue;
            }
            if !self.alone && !fresh_keys(*space) {
                let lock = key_lock(*space, key);
                if !self.locked.contains(&lock) {
                    locks.insert(lock);
                }
            }
            wanted.entry(*space).or_default().push(key.clone());
        }
        if wanted.is_empty() {
            return Ok(());
        }
        if self.locked.len() + locks.len() > MAX_KEY_LOCKS {
            return Err(self.must_run_alone("it reads too many keys"));
        }
        let (hi, lo): (Vec<i32>, Vec<i32>) = locks.iter().copied().unzip();
        let client = self.client;
        let spaces: Vec<Space> = wanted.keys().copied().collect();
        if !locks.is_empty() {
            self.locks_taken();
        }
        // A unit's first reads also take its ids, after their locks (a
        // delivery about a new eSIM then needs no round trip for them).
        let ids_ahead = self.ids.is_none() && self.begin.is_some();
        let (fetched, ids) = self.flight(async {
            let lock = client.prepare_cached(sql::KEY_LOCKS).await?;
            let read = client.prepare_cached(&sql::values_of(&spaces)).await?;
            let next = client.prepare_cached(sql::NEXT_IDS).await?;
            // The locks are sent first: the read's snapshot comes after them.
            let locked = async {
                if hi.is_empty() {
                    Ok(0)
                } else {
                    client.execute(&lock, &[&hi, &lo]).await
                }
            };
            type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
            let params: Vec<Param<'_>> = wanted.values().map(|k| k as Param<'_>).collect();
            let ids = async {
                if ids_ahead {
                    client
                        .query_one(&next, &[])
                        .await
                        .map(|r| Some(r.get::<_, i64>(0)))
                } else {
                    Ok(None)
                }
            };
            let (_, rows, ids) =
                futures_util::future::try_join3(locked, client.query(&read, &params), ids).await?;
            Ok((rows, ids))
        })?;
        self.locked.extend(locks);
        if let Some(start) = ids {
            let start = start as u64;
            self.ids = Some((start, start + ID_BLOCK as u64));
            self.ids_ahead = true;
        }
        let mut found: std::collections::HashMap<(Space, Vec<u8>), Vec<u8>> = fetched
            .into_iter()
            .map(|r| ((spaces[r.get::<_, i32>(0) as usize], r.get(1)), r.get(2)))
            .collect();
        for (space, keys) in wanted {
            for key in keys {
                let id = (space, key);
                let value = found.remove(&id);
                self.read.insert(id, value);
            }
        }
        Ok(())
    }

    fn put_latest(&mut self, space: Space, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        let e = self.latest.entry((space, key.to_vec())).or_default();
        if value > *e {
            *e = value;
        }
        Ok(())
    }

    fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        self.writes.insert((space, key.to_vec()), Some(value));
    }

    fn delete(&mut self, space: Space, key: &[u8]) {
        self.writes.insert((space, key.to_vec()), None);
    }

    fn scan(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        if !self.alone {
            return Err(self.must_run_alone("it scans"));
        }
        let rows = self.flight(super::scan_page(self.client, space, prefix, prefix, None))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
        let from = (space, prefix.to_vec());
        for ((s, k), w) in self.writes.range(from..) {
            if *s != space || !k.starts_with(prefix) {
                break;
            }
            match w {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn holds(&mut self, key: &[u8], token: i64) -> Result<bool, StoreError> {
        let client = self.client;
        let row = self.flight(async {
            let s = client.prepare_cached(sql::HOLDS).await?;
            client.query_opt(&s, &[&key]).await
        })?;
        Ok(row.is_some_and(|r| r.get::<_, i64>(0) == token))
    }

    fn next_id(&mut self) -> u64 {
        if let Some((next, end)) = self.ids {
            if next < end {
                self.ids_ahead = false;
                self.ids = Some((next + 1, end));
                return next;
            }
        }
        let client = self.client;
        let next = self.flight(async {
            let s = client.prepare_cached(sql::NEXT_IDS).await?;
            client.query_one(&s, &[]).await
        });
        match next {
            Ok(row) => {
                let start = row.get::<_, i64>(0) as u64;
                self.ids = Some((start + 1, start + ID_BLOCK as u64));
                start
            }
            Err(e) => {
                self.failed.get_or_insert(e);
                // Never committed: the unit fails at commit.
                0
            }
        }
    }
}

/// One committed value by key: what a unit reads past its own writes, and
/// what [`Storage::get`](crate::store::Storage::get) reads outside any unit.
pub(super) async fn value_of(
    client: &Object,
    space: Space,
    key: &[u8],
) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
    let s = client.prepare_cached(&sql::value_of(space)).await?;
    Ok(client.query_opt(&s, &[&key]).await?.map(|r| r.get(0)))
}
