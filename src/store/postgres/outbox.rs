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
use super::{sql, PgStorage};
use crate::store::{Claim, Group, QueueColumns, QueueIndexer, StoreError};

/// Rows whose columns an older release left empty, filled per round trip.
const INDEX_BATCH: i64 = 500;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);

/// Runs one statement in a transaction of its own that does not wait for its
/// WAL flush (`synchronous_commit` off for it alone), in one round trip.
/// For the writes a database crash may lose without harm, which a send
/// makes several of: a renewed lease (lost: it runs out sooner, and the
/// notice is sent at least once), a released one (lost: it runs out), a
/// rate-bucket cell (lost: the bucket forgets a send), a head made due.
/// The claim and every outcome stay synchronous: a lost claim would let two
/// instances hold one token.
async fn without_wal_wait(
    client: &deadpool_postgres::Object,
    statement: &str,
    params: &[Param<'_>],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    // Prepared first, so the three go out in this order with nothing awaited
    // in between.
    let s = client.prepare_cached(statement).await?;
    let commit = client.prepare_cached(sql::COMMIT).await?;
    let (_, rows, _) = futures_util::future::try_join3(
        client.batch_execute(sql::BEGIN_NO_WAL_WAIT),
        client.query(&s, params),
        client.execute(&commit, &[]),
    )
    .await?;
    Ok(rows)
}

impl Group for PgStorage {
    fn claim(&self, max: usize, lease: Duration, owner: &str) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.client()?;
        let claimed = wait(async {
            let s = client.prepare_cached(sql::CLAIM).await?;
            client
                .query(&s, &[&(max as i64), &secs(lease), &owner])
                .await
        });
        // The dispatcher's poll: it also notices the database is back.
        let rows = self.answered(&client, claimed)?;
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
        let rows = wait(without_wal_wait(
            &client,
            sql::RENEW,
            &[&key, &token, &secs(lease)],
        ))
        .map_err(|e| self.lost(&client, e))?;
        Ok(rows.len() == 1)
    }

    fn release(&self, key: &[u8], token: i64) -> Result<(), StoreError> {
        let client = self.client()?;
        wait(without_wal_wait(&client, sql::RELEASE, &[&key, &token]))
            .map_err(|e| self.lost(&client, e))?;
        Ok(())
    }

    fn next_due(&self) -> Result<Option<Duration>, StoreError> {
        let client = self.client()?;
        let row = wait(async {
            let s = client.prepare_cached(sql::NEXT_DUE).await?;
            client.query_one(&s, &[]).await
        })
        .map_err(|e| self.lost(&client, e))?;
        let wait_s: Option<f64> = row.get(0);
        Ok(wait_s.map(|s| Duration::from_secs_f64(s.clamp(0.0, 86_400.0))))
    }

    fn recheck_heads(&self, esims: &[u64]) -> Result<(), StoreError> {
        if esims.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = esims.iter().map(|e| *e as i64).collect();
        let client = self.client()?;
        wait(without_wal_wait(&client, sql::RECHECK_HEADS, &[&ids]))
            .map_err(|e| self.lost(&client, e))?;
        Ok(())
    }

    fn take(
        &self,
        key: &[u8],
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Result<(), Duration>, StoreError> {
        let client = self.client()?;
        // Taken: the row's new arrival time, and no wait. Refused: the row
        // unchanged, and how long until a cell is free.
        let rows = wait(without_wal_wait(
            &client,
            sql::TAKE,
            &[&key, &secs(interval), &secs(tolerance)],
        ))
        .map_err(|e| self.lost(&client, e))?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Io("the rate bucket answered no row".into()))?;
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
        wait(without_wal_wait(
            &client,
            sql::GIVE_BACK,
            &[&key, &secs(interval)],
        ))
        .map_err(|e| self.lost(&client, e))?;
        Ok(())
    }

    fn forget_full(&self) -> Result<(), StoreError> {
        let client = self.client()?;
        wait(client.execute(sql::FORGET_FULL, &[])).map_err(|e| self.lost(&client, e))?;
        Ok(())
    }
}

/// Fills the queue columns of rows an older release wrote without them.
pub fn index_existing(store: &PgStorage, indexer: QueueIndexer) -> Result<(), StoreError> {
    let client = store.client()?;
    loop {
        let rows = wait(client.query(sql::UNINDEXED, &[&INDEX_BATCH]))
            .map_err(|e| store.lost(&client, e))?;
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
            filled += wait(client.execute(sql::INDEX_ONE, &[&key, &esim, &due, &recheck]))
                .map_err(|e| store.lost(&client, e))? as usize;
        }
        if filled == 0 {
            return Ok(());
        }
    }
}
