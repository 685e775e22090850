//! The PostgreSQL implementation of [`Storage`] (issue 19): the store any
//! number of instances share (SPEC §10).
//!
//! One table per [`Space`] (`key bytea primary key, value bytea`), created
//! and upgraded at open by [`schema`], every statement in [`sql`] and
//! prepared at open; a unit of work is one transaction ([`unit`]);
//! connections come from a pool on a runtime of the backend's own
//! ([`pool`]), so the synchronous trait works from any thread. The group's
//! queue leases and rate buckets are [`outbox`]; whether the database
//! answers is [`health`].
//!
//! Units run side by side, each locking the keys it reads and writes; one
//! that scans runs alone ([`unit`]).

mod backup;
mod bulk;
mod health;
mod outbox;
mod pool;
mod schema;
mod sql;
mod unit;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use tokio::sync::{oneshot, watch};
use tokio_postgres::Row;

use super::{Entry, Group, QueueIndexer, Space, Storage, StoreError, Work};
use pool::{wait, Connections};
use unit::{Again, PgUnit, UNIT_LOCK};

/// How many times a unit PostgreSQL aborted (deadlock, serialisation) runs again.
const RETRIES: u32 = 5;
/// Rows per round trip of a scan outside a unit.
const PAGE: i64 = 512;

pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres's errors never carry the URL or the password.
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!("database: {} ({})", db.message(), db.code().code())),
        None => StoreError::Io(format!("database: {e}")),
    }
}

/// The first key after every key starting with `prefix`; `None` when no
/// such key exists (an empty prefix, or only 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Up to [`PAGE`] entries (all of them when `limit` is `None`) of `space`
/// whose key starts with `prefix`, from `from` (inclusive) on, in key
/// order (bytea compares as bytes, like sled's keys).
async fn scan_page(
    client: &deadpool_postgres::Object,
    space: Space,
    prefix: &[u8],
    from: &[u8],
    limit: Option<i64>,
) -> Result<Vec<Entry>, tokio_postgres::Error> {
    let end = prefix_end(prefix);
    let s = client
        .prepare_cached(&sql::scan(space, end.is_some(), limit.is_some()))
        .await?;
    let rows: Vec<Row> = match (&end, &limit) {
        (Some(e), Some(l)) => client.query(&s, &[&from, e, l]).await?,
        (Some(e), None) => client.query(&s, &[&from, e]).await?,
        (None, Some(l)) => client.query(&s, &[&from, l]).await?,
        (None, None) => client.query(&s, &[&from]).await?,
    };
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub struct PgStorage {
    conns: Connections,
    /// `store.url` as it may be shown (no password).
    shown: String,
    /// Never set: a committed transaction is durable (synchronous_commit),
    /// so there is no sync of ours that can fail. Kept for the trait.
    failed: watch::Sender<Option<String>>,
    /// The engine's reader of queue values (set once at engine start).
    indexer: std::sync::OnceLock<QueueIndexer>,
    /// Whether the database answered the last call (SPEC §10).
    health: health::Health,
    /// When this instance last wrote each [`Unit::put_latest`] mark.
    raised: std::sync::Mutex<BTreeMap<(Space, Vec<u8>), std::time::Instant>>,
}

/// A mark is written at most this often per instance: the stored value is
/// then behind the latest one by less than this (a gauge in seconds).
const RAISE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl PgStorage {
    /// Connects, creates or upgrades the schema, and checks the pool works.
    /// Errors name `store.url` as it may be shown (no password).
    pub fn open(url: &str, pool_size: usize) -> Result<PgStorage, StoreError> {
        let url = pool::parse(url).map_err(|e| StoreError::Io(format!("store.url: {e}")))?;
        let shown = pool::shown(&url.config);
        let conns = Connections::new(url, pool_size.max(1))
            .map_err(|e| StoreError::Io(format!("store.url: {e}")))?;
        let client = conns.get().map_err(|e| {
            StoreError::Io(format!(
                "cannot connect to the database of store.url ({shown}): {e}"
            ))
        })?;
        let migrated = conns
            .on_runtime(async move {
                let r = match schema::migrate(&client).await {
                    Ok(()) => sql::check(&client).await,
                    Err(e) => Err(e),
                };
                drop(client);
                r
            })
            .map_err(StoreError::Io)?;
        migrated.map_err(|e| StoreError::Io(format!("store.url ({shown}): {e}")))?;
        Ok(PgStorage {
            conns,
            shown,
            failed: watch::channel(None).0,
            indexer: std::sync::OnceLock::new(),
            health: health::Health::default(),
            raised: Default::default(),
        })
    }

    /// The database's URL as it may be shown: user, hosts, database.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection of the pool; failing to get one means the database
    /// cannot be reached (the pool connects anew when its connections were
    /// lost).
    fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.conns.get().map_err(|e| {
            let e = format!("database: {e}");
            self.health.down(&e);
            StoreError::Io(e)
        })
    }

    /// A statement on `client` failed: when it did not reach the server
    /// (or the connection is gone since), the database is down.
    fn lost(&self, client: &deadpool_postgres::Object, e: tokio_postgres::Error) -> StoreError {
        if health::unreachable(&e) || client.is_closed() {
            self.health.down(&e.to_string());
        }
        db_error(e)
    }

    /// Runs one statement's future on a checked-out client, noting whether
    /// the database answered.
    fn answered<T>(
        &self,
        client: &deadpool_postgres::Object,
        r: Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.health.up();
                Ok(v)
            }
            Err(e) => Err(self.lost(client, e)),
        }
    }

    /// One attempt of a unit, alone (holding [`UNIT_LOCK`] exclusively) or
    /// beside others (shared, each key locked); `Err((why, again))`.
    fn attempt(&self, work: &mut Work<'_>, alone: bool) -> Result<(), (StoreError, Again)> {
        let client = self.client().map_err(|e| (e, Again::No))?;
        let mut guard = Open(Some(client));
        let client = guard.0.as_ref().expect("set above");
        let lock = if alone {
            "pg_advisory_xact_lock"
        } else {
            "pg_advisory_xact_lock_shared"
        };
        let mut u = PgUnit {
            client,
            writes: BTreeMap::new(),
            ids: None,
            ids_ahead: false,
            failed: None,
            retry: false,
            indexer: self.indexer.get().copied(),
            alone,
            locked: Default::default(),
            again_alone: false,
            latest: BTreeMap::new(),
            read: Default::default(),
            // Sent with the unit's first statements.
            begin: Some(format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT {lock}({UNIT_LOCK})"
            )),
        };
        let worked = work(&mut u);
        let result = match worked {
            Ok(()) => u.commit(),
            Err(e) => Err(e),
        };
        let again = if u.again_alone {
            Again::Alone
        } else if u.retry {
            Again::Retry
        } else {
            Again::No
        };
        match result {
            Ok(()) => {
                self.health.up();
                let latest = std::mem::take(&mut u.latest);
                if self.raise_latest(client, latest) {
                    guard.done();
                }
                Ok(())
            }
            Err(e) => {
                if !client.is_closed() && wait(client.batch_execute("ROLLBACK")).is_ok() {
                    guard.done();
                } else {
                    // The connection went away mid-unit: the server rolls
                    // the transaction back whole (or never saw its COMMIT).
                    self.health.down(&e.to_string());
                }
                Err((e, again))
            }
        }
    }

    /// Writes a committed unit's [`Unit::put_latest`] marks, each in a
    /// transaction of its own that does not wait for its WAL flush (the
    /// row is one every delivery raises: its lock is held for microseconds
    /// instead of a disk sync), and at most once per [`RAISE_EVERY`] per
    /// instance (a round trip saved per delivery under load). A mark that
    /// fails to be written is only logged: the unit's decisions are
    /// committed already. False when the connection may still be inside a
    /// transaction (it is then closed).
    fn raise_latest(
        &self,
        client: &deadpool_postgres::Object,
        marks: BTreeMap<(Space, Vec<u8>), Vec<u8>>,
    ) -> bool {
        for ((space, key), value) in marks {
            {
                let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
                let now = std::time::Instant::now();
                let id = (space, key.clone());
                if raised
                    .get(&id)
                    .is_some_and(|at| now.duration_since(*at) < RAISE_EVERY)
                {
                    continue;
                }
                raised.insert(id, now);
            }
            let raised = wait(async {
                let s = client.prepare_cached(&sql::latest(space)).await?;
                let begin = client.batch_execute(sql::BEGIN_NO_WAL_WAIT);
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&key, &value];
                let raise = client.execute(&s, &params);
                let commit = client.batch_execute("COMMIT");
                futures_util::future::try_join3(begin, raise, commit).await
            });
            if let Err(e) = raised {
                tracing::debug!(error = %db_error(e), "a mark of the last delivery was not written");
                if client.is_closed() || wait(client.batch_execute("ROLLBACK")).is_err() {
                    return false;
                }
            }
        }
        true
    }
}

/// A connection inside a transaction: dropped without [`Open::done`] (a
/// panic in the work, a failed rollback) it is closed instead of going back
/// to the pool, so the server rolls the transaction back and no later unit
/// runs inside it.
struct Open(Option<deadpool_postgres::Object>);

impl Open {
    fn done(&mut self) {
        self.0 = None;
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Storage for PgStorage {
    /// A unit runs beside others, locking what it reads and writes (see
    /// [`unit`]). One PostgreSQL aborts (a deadlock between two units'
    /// locks: 40P01, or 40001) runs again from the start, after a short
    /// random pause, up to [`RETRIES`] times, the last ones alone so that
    /// it ends; one that scans or locks too many keys runs again alone at
    /// once.
    fn unit(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let mut tries = 0;
        let mut alone = false;
        loop {
            match self.attempt(work, alone) {
                Ok(()) => return Ok(()),
                Err((_, Again::Alone)) if !alone => alone = true,
                Err((e, Again::Retry)) if tries < RETRIES => {
                    tries += 1;
                    alone = tries >= 2;
                    tracing::debug!(error = %e, tries, "unit aborted by the database, run again");
                    let pause = rand::random::<u64>() % (5 * u64::from(tries)) + 1;
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client()?;
        self.answered(&client, wait(unit::value_of(&client, space, key)))
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        Box::new(Scan {
            store: self,
            space,
            prefix: prefix.to_vec(),
            from: Some(prefix.to_vec()),
            page: VecDeque::new(),
        })
    }

    fn durable(&self) -> oneshot::Receiver<Result<(), String>> {
        // A unit returns after COMMIT, which with synchronous_commit on (the
        // default) returns once the WAL is flushed on the server.
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    fn unreachable(&self) -> bool {
        self.health.is_down()
    }

    fn backup(&self, dir: &Path) -> Result<(), StoreError> {
        backup::to_sled(self, dir)
    }

    fn group(&self) -> Option<&dyn Group> {
        Some(self)
    }

    fn index_queue(&self, indexer: QueueIndexer) -> Result<(), StoreError> {
        let _ = self.indexer.set(indexer);
        outbox::index_existing(self, indexer)
    }
}

/// A lazy scan outside any unit: pages of [`PAGE`] rows, each one round
/// trip and its own statement (as sled's scan, not one snapshot), holding no
/// connection between pages.
struct Scan<'a> {
    store: &'a PgStorage,
    space: Space,
    prefix: Vec<u8>,
    /// Where the next page starts; `None` once the last page was read.
    from: Option<Vec<u8>>,
    page: VecDeque<Entry>,
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.page.pop_front() {
            return Some(Ok(e));
        }
        let from = self.from.take()?;
        let client = match self.store.client() {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let page = wait(scan_page(
            &client,
            self.space,
            &self.prefix,
            &from,
            Some(PAGE),
        ));
        let rows = match self.store.answered(&client, page) {
            Ok(rows) => rows,
            Err(e) => return Some(Err(e)),
        };
        if rows.len() as i64 == PAGE {
            // The smallest key after the last one: the key with a 0 byte added.
            let mut next = rows.last().expect("a full page").0.clone();
            next.push(0);
            self.from = Some(next);
        }
        self.page = rows.into();
        self.page.pop_front().map(Ok)
    }
}
