//! What a store shared by several instances adds (SPEC §10): leases on the
//! queue's notices, so each due notice is sent by one instance, and rate
//! buckets the whole group draws from.
//!
//! sled has none of this: one process holds a sled store, and its
//! dispatcher keeps the plan and the limits in memory. A backend several
//! processes open (PostgreSQL) returns a [`Group`] from
//! [`Storage::group`](super::Storage::group), and the dispatcher then takes
//! its work from the store instead of its own plan.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::StoreError;

/// What a shared backend needs to know of a queued notice to choose what
/// is due: read by the engine from its own record bytes (the store does not
/// know the format). `None` for bytes that do not decode: such a row is
/// never claimed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueColumns {
    /// The eSIM whose notices go one at a time, in key order.
    pub esim: u64,
    /// When the notice may go.
    pub due: DateTime<Utc>,
    /// It waits for something a newcomer behind it may make moot (quiet
    /// hours, a quota): looked at again when one arrives.
    pub recheck_on_arrival: bool,
}

/// Reads [`QueueColumns`] from a queue value.
pub type QueueIndexer = fn(&[u8]) -> Option<QueueColumns>;

/// One notice this instance holds: its key in the queue and the fencing
/// token every write about it must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub key: Vec<u8>,
    pub token: i64,
    /// The instance whose lease ran out, when this claim took it over.
    pub rescued_from: Option<String>,
}

pub trait Group: Send + Sync {
    /// Takes up to `max` due notices that are the first queued of their
    /// eSIM and held by no live lease, holding each for `lease` (on the
    /// database's clock) under a new token.
    fn claim(&self, max: usize, lease: Duration, owner: &str) -> Result<Vec<Claim>, StoreError>;
    /// Extends a lease; false when it is no longer this holder's (taken
    /// over, or the notice left the queue).
    fn renew(&self, key: &[u8], token: i64, lease: Duration) -> Result<bool, StoreError>;
    /// Lets go of a lease once its outcome is recorded.
    fn release(&self, key: &[u8], token: i64) -> Result<(), StoreError>;
    /// How long until the first queued notice is due (zero when one is),
    /// `None` when the queue is empty.
    fn next_due(&self) -> Result<Option<Duration>, StoreError>;
    /// Makes the first queued notice of each of these eSIMs due now when it
    /// waits for something a newcomer may make moot.
    fn recheck_heads(&self, esims: &[u64]) -> Result<(), StoreError>;
    /// One GCRA step on the bucket `key`: takes a cell, or says how long
    /// until one is free. `interval` is the time one cell stands for,
    /// `tolerance` how far ahead of now the bucket may run (the burst).
    fn take(
        &self,
        key: &[u8],
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Result<(), Duration>, StoreError>;
    /// Gives back a cell taken from `key` (a send the relay did not accept).
    fn give_back(&self, key: &[u8], interval: Duration) -> Result<(), StoreError>;
    /// Forgets buckets that are full again.
    fn forget_full(&self) -> Result<(), StoreError>;
}
