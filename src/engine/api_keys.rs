//! The shop's API keys in the store (`Space::ApiKeys`), keyed by the hash
//! of the key, so each request finds its key with one read and every
//! instance of a group sees a new or revoked key at once (SPEC §10). No
//! cache: a revocation must win on the next request.

use chrono::{DateTime, Utc};

use super::Engine;
use crate::api_keys::ApiKey;
use crate::store::{Space, StoreError};

impl Engine {
    /// Stores a new key; false (and nothing written) when a key of that
    /// name exists already.
    pub fn add_api_key(&self, key: &ApiKey) -> Result<bool, StoreError> {
        self.unit(|tx| {
            let taken = tx
                .scan::<ApiKey>(Space::ApiKeys, &[])?
                .iter()
                .any(|(_, k)| k.name == key.name);
            if !taken {
                tx.put(Space::ApiKeys, &key.hash, key);
            }
            Ok(!taken)
        })
    }

    /// Every key, in no particular order (the hash is the store's key).
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys = super::views::all::<ApiKey>(self.storage(), Space::ApiKeys)?;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    /// Removes the key named `name`; false when there is none.
    pub fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError> {
        self.unit(|tx| {
            let found = tx
                .scan::<ApiKey>(Space::ApiKeys, &[])?
                .into_iter()
                .find(|(_, k)| k.name == name);
            if let Some((at, _)) = &found {
                tx.delete(Space::ApiKeys, at);
            }
            Ok(found.is_some())
        })
    }

    /// The key whose hash is `hash`, read from committed data.
    pub fn api_key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKey>, StoreError> {
        self.read(|tx| tx.get::<ApiKey>(Space::ApiKeys, hash))
    }

    /// Records that the key was used at `now`, unless that was recorded
    /// less than a minute ago; nothing when it was revoked meanwhile.
    pub fn touch_api_key(&self, hash: &[u8], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.unit(|tx| {
            if let Some(mut k) = tx.get::<ApiKey>(Space::ApiKeys, hash)? {
                if k.last_used_is_stale(now) {
                    k.last_used = Some(now);
                    tx.put(Space::ApiKeys, hash, &k);
                }
            }
            Ok(())
        })
    }
}
