//! The group's queue and rate buckets on PostgreSQL (SPEC §10).
//!
//! A due notice is claimed by one statement: the first queued notice of
//! its eSIM (no lower key with the same `esim`), due on the database's
//! clock, and held by no live lease, taken `FOR UPDATE SKIP LOCKED` so
//! instances that claim at once never wait for nor take each other's rows.
//! The claim bumps `token`; every outcome names it
//! ([`Unit::holds`](crate::store::Unit::holds)), so an instance whose lease
//! ran out (stopped, partitioned) records nothing when it comes back. A
//! lease that ran out is simply claimable again: the claim reports whose it
//! was, and the engine writes that rescue in the eSIM's decision log.
//!
//! The rate buckets are GCRA "theoretical arrival times", one row each,
//! advanced by one conditional `UPDATE`: one round trip per send, exact for
//! the whole group, on the database's clock.

use std::time::Duration;

use super::pool::wait;
use super::{db_error, PgStorage};
use crate::store::{Claim, Group, QueueColumns, QueueIndexer, StoreError};

/// Rows whose columns an older release left empty, filled per round trip.
const INDEX_BATCH: i64 = 500;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Group for PgStorage {
    fn claim(&self, max: usize, lease: Duration, owner: &str) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.client()?;
        let rows = wait(async {
            let s = client
                .prepare_cached(
                    "WITH c AS (
                         SELECT q.key, q.owner, q.lease_until FROM queue q
                         WHERE q.esim IS NOT NULL AND q.due <= now()
                           AND (q.lease_until IS NULL OR q.lease_until <= now())
                           AND NOT EXISTS (SELECT 1 FROM queue p
                                           WHERE p.esim = q.esim AND p.key < q.key)
                         ORDER BY q.due
                         LIMIT $1
                         FOR UPDATE OF q SKIP LOCKED)
                     UPDATE queue SET lease_until = now() + make_interval(secs => $2),
                                      owner = $3, token = queue.token + 1
                     FROM c WHERE queue.key = c.key
                     RETURNING queue.key, queue.token, c.owner, c.lease_until IS NOT NULL",
                )
                .await?;
            client
                .query(&s, &[&(max as i64), &secs(lease), &owner])
                .await
        })
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let was: Option<String> = r.get(2);
                let leased: bool = r.get(3);
                Claim {
                    key: r.get(0),
                    token: r.get(1),
                    rescued_from: leased.then(|| was.unwrap_or_default()),
                }
            })
            .collect())
    }

    fn renew(&self, key: &[u8], token: i64, lease: Duration) -> Result<bool, StoreError> {
        let client = self.client()?;
        let n = wait(async {
            let s = client
                .prepare_cached(
                    "UPDATE queue SET lease_until = now() + make_interval(secs => $3)
                     WHERE key = $1 AND token = $2 AND lease_until IS NOT NULL",
                )
                .await?;
            client.execute(&s, &[&key, &token, &secs(lease)]).await
        })
        .map_err(db_error)?;
        Ok(n == 1)
    }

    fn release(&self, key: &[u8], token: i64) -> Result<(), StoreError> {
        let client = self.client()?;
        wait(async {
            let s = client
                .prepare_cached(
                    "UPDATE queue SET lease_until = NULL, owner = NULL
                     WHERE key = $1 AND token = $2",
                )
                .await?;
            client.execute(&s, &[&key, &token]).await
        })
        .map_err(db_error)?;
        Ok(())
    }

    fn next_due(&self) -> Result<Option<Duration>, StoreError> {
        let client = self.client()?;
        let row = wait(async {
            let s = client
                .prepare_cached(
                    "SELECT greatest(extract(epoch FROM min(greatest(due, lease_until)) - now()), 0)::float8
                     FROM queue WHERE esim IS NOT NULL",
                )
                .await?;
            client.query_one(&s, &[]).await
        })
        .map_err(db_error)?;
        let wait_s: Option<f64> = row.get(0);
        Ok(wait_s.map(|s| Duration::from_secs_f64(s.clamp(0.0, 86_400.0))))
    }

    fn recheck_heads(&self, esims: &[u64]) -> Result<(), StoreError> {
        if esims.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = esims.iter().map(|e| *e as i64).collect();
        let client = self.client()?;
        wait(async {
            let s = client
                .prepare_cached(
                    "UPDATE queue SET due = now()
                     WHERE recheck AND due > now() AND key IN (
                         SELECT DISTINCT ON (esim) key FROM queue
                         WHERE esim = ANY($1) ORDER BY esim, key)",
                )
                .await?;
            client.execute(&s, &[&ids]).await
        })
        .map_err(db_error)?;
        Ok(())
    }

    fn take(
        &self,
        key: &[u8],
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Result<(), Duration>, StoreError> {
        let client = self.client()?;
        let row = wait(async {
            // Taken: the row's new arrival time, and no wait. Refused: the
            // row unchanged, and how long until a cell is free.
            let s = client
                .prepare_cached(
                    "WITH taken AS (
                         INSERT INTO rates AS r (key, tat)
                         VALUES ($1, now() + make_interval(secs => $2))
                         ON CONFLICT (key) DO UPDATE
                             SET tat = greatest(r.tat, now()) + make_interval(secs => $2)
                             WHERE greatest(r.tat, now()) - make_interval(secs => $3) <= now()
                         RETURNING 1)
                     SELECT (SELECT count(*) FROM taken)::int8,
                            coalesce((SELECT extract(epoch FROM
                                         tat - make_interval(secs => $3) - now())::float8
                                      FROM rates WHERE key = $1), 0)",
                )
                .await?;
            client
                .query_one(&s, &[&key, &secs(interval), &secs(tolerance)])
                .await
        })
        .map_err(db_error)?;
        let taken: i64 = row.get(0);
        if taken == 1 {
            return Ok(Ok(()));
        }
        let wait_s: f64 = row.get(1);
        // A refusal always waits a little: the bucket is full right now.
        Ok(Err(Duration::from_secs_f64(wait_s.clamp(0.001, 86_400.0))))
    }

    fn give_back(&self, key: &[u8], interval: Duration) -> Result<(), StoreError> {
        let client = self.client()?;
        wait(async {
            let s = client
                .prepare_cached(
                    "UPDATE rates SET tat = tat - make_interval(secs => $2) WHERE key = $1",
                )
                .await?;
            client.execute(&s, &[&key, &secs(interval)]).await
        })
        .map_err(db_error)?;
        Ok(())
    }

    fn forget_full(&self) -> Result<(), StoreError> {
        let client = self.client()?;
        wait(client.execute("DELETE FROM rates WHERE tat < now()", &[])).map_err(db_error)?;
        Ok(())
    }
}

/// Fills the queue columns of rows an older release wrote without them.
pub fn index_existing(store: &PgStorage, indexer: QueueIndexer) -> Result<(), StoreError> {
    let client = store.client()?;
    loop {
        let rows = wait(client.query(
            "SELECT key, value FROM queue WHERE esim IS NULL AND due IS NULL ORDER BY key LIMIT $1",
            &[&INDEX_BATCH],
        ))
        .map_err(db_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut filled = 0usize;
        for r in &rows {
            let key: Vec<u8> = r.get(0);
            let value: Vec<u8> = r.get(1);
            // An undecodable row gets a due time and no eSIM: never claimed,
            // never looked at again by this loop.
            let cols = indexer(&value);
            let (esim, due, recheck) = match cols {
                Some(QueueColumns {
                    esim,
                    due,
                    recheck_on_arrival,
                }) => (Some(esim as i64), due, recheck_on_arrival),
                None => (None, chrono::Utc::now(), false),
            };
            filled += wait(client.execute(
                "UPDATE queue SET esim = $2, due = $3, recheck = $4 WHERE key = $1",
                &[&key, &esim, &due, &recheck],
            ))
            .map_err(db_error)? as usize;
        }
        if filled == 0 {
            return Ok(());
        }
    }
}
