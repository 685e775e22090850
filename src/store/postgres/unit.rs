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
}

impl PgUnit<'_> {
    fn db(&mut self, e: tokio_postgres::Error) -> StoreError {
        if retryable(&e) {
            self.retry = true;
        }
        db_error(e)
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
        let indexer = self.indexer;
        // A queue row's eSIM and due time, for the group's claim.
        let queue_cols = match (indexer, upserts.get(&Space::Queue)) {
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
        let client = self.client;
        let sent = wait(async {
            if !lock_hi.is_empty() {
                // Sent first and awaited with the writes: one round trip.
                let s = client.prepare_cached(sql::KEY_LOCKS).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&lock_hi, &lock_lo];
                let locks = client.execute(&s, &params);
                let writes = send_writes(client, &deletes, &upserts, &queue_cols, indexer);
                futures_util::future::try_join(locks, writes).await?;
                return client.batch_execute("COMMIT").await;
            }
            send_writes(client, &deletes, &upserts, &queue_cols, indexer).await?;
            client.batch_execute("COMMIT").await
        });
        sent.map_err(|e| self.db(e))
    }
}

type Column = Vec<Vec<u8>>;
type QueueCols = (
    Vec<Option<i64>>,
    Vec<chrono::DateTime<chrono::Utc>>,
    Vec<bool>,
);

/// A unit's writes, every statement sent before the first answer is
/// awaited.
async fn send_writes(
    client: &Object,
    deletes: &BTreeMap<Space, Vec<Vec<u8>>>,
    upserts: &BTreeMap<Space, (Column, Column)>,
    queue_cols: &Option<QueueCols>,
    indexer: Option<QueueIndexer>,
) -> Result<(), tokio_postgres::Error> {
    let mut statements = Vec::new();
    for space in deletes.keys() {
        statements.push(client.prepare_cached(&sql::delete(*space)).await?);
    }
    for space in upserts.keys() {
        let text = if *space == Space::Queue && indexer.is_some() {
            sql::QUEUE_UPSERT.to_string()
        } else {
            sql::upsert(*space)
        };
        statements.push(client.prepare_cached(&text).await?);
    }
    // Every statement is sent before the first answer is awaited.
    type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
    let mut params: Vec<Vec<Param<'_>>> = Vec::new();
    for keys in deletes.values() {
        params.push(vec![keys]);
    }
    for (space, (keys, values)) in upserts {
        match (&queue_cols, *space == Space::Queue) {
            (Some((esims, dues, rechecks)), true) => {
                params.push(vec![keys, values, esims, dues, rechecks])
            }
            _ => params.push(vec![keys, values]),
        }
    }
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
        if let Some(w) = self.writes.get(&(space, key.to_vec())) {
            return Ok(w.clone());
        }
        let Some(lock) = self.lock_to_take(space, key)? else {
            return wait(value_of(self.client, space, key)).map_err(|e| self.db(e));
        };
        let client = self.client;
        let read = wait(async {
            let s = client.prepare_cached(sql::KEY_LOCK).await?;
            // Both sent before either answer: the read runs once the lock is held.
            let (_, value) = futures_util::future::try_join(
                client.execute(&s, &[&lock.0, &lock.1]),
                value_of(client, space, key),
            )
            .await?;
            Ok(value)
        });
        let value = read.map_err(|e| self.db(e))?;
        self.locked.insert(lock);
        Ok(value)
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
        let client = self.client;
        let rows =
            wait(super::scan_page(client, space, prefix, prefix, None)).map_err(|e| self.db(e))?;
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
        let row = wait(async {
            let s = client.prepare_cached(sql::HOLDS).await?;
            client.query_opt(&s, &[&key]).await
        })
        .map_err(|e| self.db(e))?;
        Ok(row.is_some_and(|r| r.get::<_, i64>(0) == token))
    }

    fn next_id(&mut self) -> u64 {
        if let Some((next, end)) = self.ids {
            if next < end {
                self.ids = Some((next + 1, end));
                return next;
            }
        }
        let client = self.client;
        match wait(client.query_one(sql::NEXT_IDS, &[])) {
            Ok(row) => {
                let start = row.get::<_, i64>(0) as u64;
                self.ids = Some((start + 1, start + ID_BLOCK as u64));
                start
            }
            Err(e) => {
                let e = self.db(e);
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
