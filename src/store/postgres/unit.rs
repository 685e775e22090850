//! A unit of work on PostgreSQL: one READ COMMITTED transaction.
//!
//! Reads go to the database through an overlay of the unit's own pending
//! writes (as on sled); the writes are sent at commit, one statement per
//! keyspace and kind (an `unnest` upsert, a `DELETE … = ANY`), pipelined
//! on the connection, then `COMMIT`.
//!
//! Units are serialised GLOBALLY for now: each transaction starts with
//! `pg_advisory_xact_lock(UNIT_LOCK)`, which is the storage seam's promise
//! ("two units never interleave") taken literally. Correct for any number of
//! connections and processes, but one unit at a time for the whole
//! database; the per-eSIM locks of issue 19's later steps replace it.

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::db_error;
use super::pool::wait;
use super::schema::ID_BLOCK;
use super::sql;
use crate::store::{Entry, QueueIndexer, Space, StoreError, Unit};

/// The advisory lock every unit holds until it ends ("esimunit").
pub const UNIT_LOCK: i64 = 0x6573_696d_756e_6974;

/// Whether a failure is one PostgreSQL asks to retry the transaction for.
pub fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
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
}

impl PgUnit<'_> {
    fn db(&mut self, e: tokio_postgres::Error) -> StoreError {
        if retryable(&e) {
            self.retry = true;
        }
        db_error(e)
    }

    /// Sends the pending writes and commits. Consumes the unit's writes.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        type Column = Vec<Vec<u8>>;
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
            for (space, (keys, values)) in &upserts {
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
            client.batch_execute("COMMIT").await
        });
        sent.map_err(|e| self.db(e))
    }
}

impl Unit for PgUnit<'_> {
    fn get(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(w) = self.writes.get(&(space, key.to_vec())) {
            return Ok(w.clone());
        }
        wait(value_of(self.client, space, key)).map_err(|e| self.db(e))
    }

    fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        self.writes.insert((space, key.to_vec()), Some(value));
    }

    fn delete(&mut self, space: Space, key: &[u8]) {
        self.writes.insert((space, key.to_vec()), None);
    }

    fn scan(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
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
