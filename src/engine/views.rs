//! Reads: what the dispatcher, the admin API and the CLI look at. They go
//! straight to committed data, outside any unit of work, so a reader never
//! waits for intake and intake never waits for a reader.

use super::codec::decode;
use super::model::{DeadLetter, EsimView, LogEntry, ParkedNotice, QueuedNotice, Suppression};
use super::records::EsimRecord;
use super::resolve::{find, recipient_for};
use super::tx::Tx;
use super::Engine;
use crate::customers::IdKind;
use crate::store::{Entry, Space, Storage, StoreError, Unit};

/// The committed state seen through the [`Unit`] interface, so the engine's
/// look-ups serve reads and units alike. Nothing is written through it.
pub struct Snapshot<'a> {
    pub storage: &'a dyn Storage,
}

impl Unit for Snapshot<'_> {
    fn get(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.storage.get(space, key)
    }
    fn put(&mut self, _: Space, _: &[u8], _: Vec<u8>) {
        debug_assert!(false, "a read wrote to the store");
    }
    fn delete(&mut self, _: Space, _: &[u8]) {
        debug_assert!(false, "a read deleted from the store");
    }
    fn scan(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.storage.scan(space, prefix).collect()
    }
    fn next_id(&mut self) -> u64 {
        debug_assert!(false, "a read asked for an id");
        0
    }
}

/// Every record of a keyspace, decoded, in key order.
pub fn all<R: serde::de::DeserializeOwned>(
    storage: &dyn Storage,
    space: Space,
) -> Result<Vec<R>, StoreError> {
    storage.scan(space, &[]).map(|kv| decode(&kv?.1)).collect()
}

pub fn outbox(engine: &Engine) -> Result<Vec<QueuedNotice>, StoreError> {
    all(engine.storage(), Space::Queue)
}

pub fn dead(engine: &Engine) -> Result<Vec<DeadLetter>, StoreError> {
    all(engine.storage(), Space::Dead)
}

pub fn suppressions(engine: &Engine) -> Result<Vec<Suppression>, StoreError> {
    all(engine.storage(), Space::Suppress)
}

/// Every parked notice, with its eSIM's identifiers, oldest eSIM first.
pub fn parked(engine: &Engine) -> Result<Vec<ParkedNotice>, StoreError> {
    let mut out = Vec::new();
    for rec in all::<EsimRecord>(engine.storage(), Space::Esims)? {
        for p in rec.parked {
            out.push(ParkedNotice {
                esim: rec.id,
                ids: rec.state.ids.clone(),
                parked: p,
            });
        }
    }
    Ok(out)
}

/// By any identifier (`kind` None tries each kind in lookup order).
pub fn esim_view(
    tx: &mut Tx,
    kind: Option<IdKind>,
    value: &str,
) -> Result<Option<EsimView>, StoreError> {
    let Some(rec) = find(tx, kind, value)? else {
        return Ok(None);
    };
    let recipient = recipient_for(tx, &rec.state)?;
    let decisions = tx
        .scan::<LogEntry>(Space::Log, &super::codec::id(rec.id))?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    Ok(Some(EsimView {
        id: rec.id,
        ids: rec.state.ids.clone(),
        state: rec.state,
        recipient,
        parked: rec.parked,
        decisions,
    }))
}
