//! Records that do not decode are set aside, not fatal.
//!
//! One damaged queue entry (a bad sector, a bug in an older release, a
//! hand-edited store) used to stop the server at start: the dispatcher
//! loads the whole queue, the decode failed, `serve` exited, and systemd
//! restarted it into the same failure forever. Now, when the store opens,
//! every record of the keyspaces read whole (the queue, the dead letters,
//! the suppression list) is checked; one that does not decode is moved,
//! bytes untouched, to the set-aside keyspace with the reason, logged, and
//! counted (`esim_notify_records_set_aside`); everything else starts. An
//! operator sees them at `GET /admin/set-aside` (README, troubleshooting).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::decode;
use super::model::{DeadLetter, QueuedNotice, Suppression};
use super::Engine;
use crate::store::{Space, StoreError};

/// A record taken out of its keyspace because it did not decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// The keyspace it was in (`queue`, `dead`, `suppressions`).
    pub space: String,
    /// Its key there.
    pub key: Vec<u8>,
    /// Its bytes, as found.
    pub bytes: Vec<u8>,
    /// Why it could not be read.
    pub reason: String,
    #[serde(with = "crate::serde_time")]
    pub at: DateTime<Utc>,
}

/// Why some bytes are not a record of the keyspace's type, if they are not.
type Check = fn(&[u8]) -> Option<String>;

/// The keyspaces checked at open, each with the record type it holds.
fn checked() -> [(Space, &'static str, Check); 3] {
    fn check<R: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
        decode::<R>(bytes).err().map(|e| e.to_string())
    }
    [
        (Space::Queue, "queue", check::<QueuedNotice>),
        (Space::Dead, "dead", check::<DeadLetter>),
        (Space::Suppress, "suppressions", check::<Suppression>),
    ]
}

/// The set-aside key: the keyspace's name, a `/`, the original key.
fn aside_key(space: &str, key: &[u8]) -> Vec<u8> {
    let mut k = space.as_bytes().to_vec();
    k.push(b'/');
    k.extend_from_slice(key);
    k
}

/// Moves every record of the checked keyspaces that does not decode to the
/// set-aside keyspace; returns how many it moved.
pub fn sweep(engine: &Engine, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let mut found = Vec::new();
    for (space, name, check) in checked() {
        for kv in engine.storage().scan(space, &[]) {
            let (key, bytes) = kv?;
            if let Some(reason) = check(&bytes) {
                found.push((space, name, key, bytes, reason));
            }
        }
    }
    if found.is_empty() {
        return Ok(0);
    }
    let moved = engine.unit(|tx| {
        let mut moved = 0;
        for (space, name, key, bytes, reason) in &found {
            // Only as it was found (nothing else runs at open, but be exact).
            if tx.get_raw(*space, key)?.as_deref() != Some(bytes.as_slice()) {
                continue;
            }
            tx.delete(*space, key);
            let counts = tx.counts();
            match space {
                Space::Queue => counts.outbox -= 1,
                Space::Dead => counts.dead -= 1,
                _ => {}
            }
            let record = SetAside {
                space: name.to_string(),
                key: key.clone(),
                bytes: bytes.clone(),
                reason: reason.clone(),
                at: now,
            };
            tx.put(Space::SetAside, &aside_key(name, key), &record);
            moved += 1;
        }
        Ok(moved)
    })?;
    for (_, name, key, bytes, reason) in &found {
        tracing::error!(
            space = name,
            key = %hex(key),
            size = bytes.len(),
            reason = %reason,
            "RECORD SET ASIDE: it does not decode; the rest of the store is used as usual \
             (see GET /admin/set-aside)"
        );
    }
    Ok(moved)
}

/// Every record set aside so far, oldest key first.
pub fn list(engine: &Engine) -> Result<Vec<SetAside>, StoreError> {
    super::views::all(engine.storage(), Space::SetAside)
}

/// How many records are set aside.
pub fn count(engine: &Engine) -> usize {
    engine.storage().scan(Space::SetAside, &[]).count()
}

/// Bytes as lower-case hex, for keys in logs and the admin API.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
