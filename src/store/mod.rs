//! Storage: keyspaces of bytes, units of work that commit atomically, and
//! durability on request. Nothing here knows what a notice or a customer is:
//! the rules of SPEC §5–6 live in `engine`, which reads and writes typed
//! records through this interface.
//!
//! A backend promises four things, and `tests/api/storage.rs` (the
//! conformance suite) checks each against any implementation:
//! - a unit of work sees its own writes and commits all of them or none;
//! - units are serialised: two units never interleave their reads and
//!   writes (sled: one lock; a database: a transaction with row locks);
//! - a scan returns a keyspace's keys in byte order;
//! - after [`Storage::durable`] resolves, everything committed before the
//!   call survives a crash or a power cut.
//!
//! Only this folder names sled or PostgreSQL: [`open`] picks the backend
//! `store.backend` names.

pub mod flusher;
mod group;
mod postgres;
mod sled_backend;

use std::path::Path;

use tokio::sync::{oneshot, watch};

pub use group::{Claim, Group, QueueColumns, QueueIndexer};
pub use postgres::PgStorage;
pub use sled_backend::SledStorage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally the running server) holds the store.
    #[error("the store at {0} is in use by another process")]
    Locked(String),
    #[error("store: {0}")]
    Io(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// The keyspaces. Each is an ordered map of byte keys to byte values; the
/// engine decides what the keys and values mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// notifyId -> when it was first accepted.
    Dedup,
    /// Accepted deliveries, oldest first.
    Events,
    /// What is known of each eSIM.
    Esims,
    /// Identifier -> eSIM.
    Aliases,
    /// Identifier -> bound recipient.
    Customers,
    /// Queued notices, oldest first.
    Queue,
    /// Dead letters.
    Dead,
    /// Each eSIM's decision log, in order.
    Log,
    /// Suppressed addresses.
    Suppress,
    /// Small records of the whole store (counts, flags, secrets, format).
    Meta,
    /// Records taken out of another keyspace because they could not be read.
    SetAside,
    /// Sent message -> its notice, so a mail provider's bounce or complaint
    /// report finds what it is about (issue 20).
    Sent,
    /// Small daily counters per day and template, for `/admin/stats`.
    Stats,
    /// The shop's API keys: a hash of each key with its name and scopes.
    ApiKeys,
}

impl Space {
    pub const ALL: [Space; 14] = [
        Space::Dedup,
        Space::Events,
        Space::Esims,
        Space::Aliases,
        Space::Customers,
        Space::Queue,
        Space::Dead,
        Space::Log,
        Space::Suppress,
        Space::Meta,
        Space::SetAside,
        Space::Sent,
        Space::Stats,
        Space::ApiKeys,
    ];
}

/// A key and its value, as scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One unit of work: reads see the committed state plus this unit's own
/// writes; the writes become visible together when the unit ends well.
pub trait Unit {
    fn get(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>);
    fn delete(&mut self, space: Space, key: &[u8]);
    /// Every entry whose key starts with `prefix`, in key order, this
    /// unit's own writes included.
    fn scan(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// A number never handed out before in this store, increasing. Ids lost
    /// to a unit that fails or to a crash are skipped, never reused.
    fn next_id(&mut self) -> u64;
    /// Says which keys the unit is about to read, so that a backend across a
    /// network reads (and locks) them in one round trip instead of one
    /// each; the reads that follow are then answered from what it fetched.
    /// Changes nothing a unit sees. A local store ignores it.
    fn prefetch(&mut self, keys: &[(Space, Vec<u8>)]) -> Result<(), StoreError> {
        let _ = keys;
        Ok(())
    }
    /// Raises the value at `key` to `value` when that is greater (compared
    /// as bytes): a mark many units write and nothing decides on, such as
    /// when the last webhook arrived. A shared store writes it apart from
    /// the unit, after it commits, at most once a second per process, so
    /// units do not wait for each other on one row for a gauge: it is then
    /// not part of the unit's atomic writes and may be behind the latest
    /// value by up to a second (a crash between the two loses a mark, never
    /// a decision).
    fn put_latest(&mut self, space: Space, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        match self.get(space, key)? {
            Some(old) if old >= value => {}
            _ => self.put(space, key, value),
        }
        Ok(())
    }
    /// Whether the queued notice at `key` is still held under `token`
    /// (SPEC §10: an instance whose lease was taken over records nothing),
    /// locking it until the unit ends. A store no one shares has no leases:
    /// always true.
    fn holds(&mut self, key: &[u8], token: i64) -> Result<bool, StoreError> {
        let _ = (key, token);
        Ok(true)
    }
}

/// The work a unit runs; `Err` abandons every write it made.
pub type Work<'a> = dyn FnMut(&mut dyn Unit) -> Result<(), StoreError> + 'a;

pub trait Storage: Send + Sync {
    /// Runs `work` as one unit: serialised with every other unit, committed
    /// atomically if it returns `Ok`, abandoned if it returns `Err`.
    /// Committed is not yet durable: see [`Storage::durable`]. A backend may
    /// abandon a run and start `work` again (a database's deadlock
    /// detection): work changes nothing but the unit.
    fn unit(&self, work: &mut Work<'_>) -> Result<(), StoreError>;
    /// A committed value, read outside any unit.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Committed entries whose key starts with `prefix`, in key order, read
    /// lazily outside any unit (a long scan never holds up writers).
    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;
    /// Resolves once everything committed before the call is on disk.
    fn durable(&self) -> oneshot::Receiver<Result<(), String>>;
    /// Makes everything committed durable before returning (shutdown, CLI).
    fn flush(&self) -> Result<(), StoreError>;
    /// Becomes `Some(why)` when the store can no longer promise durability
    /// (a failed sync): the process must stop without writing anything more
    /// and recover from what is on disk at its next start.
    fn failed(&self) -> watch::Receiver<Option<String>>;
    /// True while a store on another machine cannot be reached (SPEC §10:
    /// `/readyz` 503, webhooks 503, sending waits; the backend has logged
    /// why once). A local store is never unreachable.
    fn unreachable(&self) -> bool {
        false
    }
    /// Writes a consistent copy into `dir` (new or empty), while units go on.
    fn backup(&self, dir: &Path) -> Result<(), StoreError>;
    /// The leases and shared rate buckets of a store several instances
    /// open; `None` for a store one process holds alone (sled).
    fn group(&self) -> Option<&dyn Group> {
        None
    }
    /// How to read a queued notice's [`QueueColumns`]: a shared backend
    /// indexes them (and fills them in for rows written before it knew).
    fn index_queue(&self, indexer: QueueIndexer) -> Result<(), StoreError> {
        let _ = indexer;
        Ok(())
    }
}

impl dyn Storage {
    /// [`Storage::unit`] for work that returns a value. The work may run
    /// more than once (see [`Storage::unit`]); the value of the run that
    /// committed is returned.
    pub fn run<R>(
        &self,
        mut work: impl FnMut(&mut dyn Unit) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut out = None;
        self.unit(&mut |u| {
            out = Some(work(u)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Io("a unit of work did not run".into()))
    }
}

/// Opens the store `[store]` names. sled: once per process (it holds a
/// lock; a second opener gets [`StoreError::Locked`]). PostgreSQL: any
/// number of processes may open it (never `Locked`).
pub fn open(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Storage>, StoreError> {
    use crate::config::StoreBackend;
    Ok(match config.store.backend {
        StoreBackend::Sled => std::sync::Arc::new(SledStorage::open_with(
            &config.store.path,
            config.store.cache_mb * 1024 * 1024,
            config.store.compression,
        )?),
        StoreBackend::Postgres => std::sync::Arc::new(PgStorage::open(
            config.store.url.expose(),
            config.store.pool as usize,
        )?),
    })
}
