//! The sled implementation of [`Storage`].
//!
//! Every keyspace lives in one sled tree under a one-byte prefix: a batch on
//! one tree is atomic and far cheaper than a transaction across trees (which
//! measured as half of the intake's cost). Units of work are serialised by
//! one lock: a unit reads through an overlay of its own pending writes and
//! commits them as one batch. Holding the lock is cheap (memory reads and one
//! in-memory commit); the slow part, the sync, happens outside it in the
//! group-commit [`Flusher`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};

use super::flusher::{Flusher, SledFiles};
use super::{Entry, Space, Storage, StoreError, Unit, Work};

/// The sled tree holding every space.
const TREE: &str = "esim-notify";

/// The key prefix of each space. Stable: it is the layout on disk.
fn prefix(space: Space) -> u8 {
    match space {
        Space::Dedup => b'd',
        Space::Events => b'e',
        Space::Esims => b's',
        Space::Aliases => b'a',
        Space::Customers => b'c',
        Space::Queue => b'q',
        Space::Dead => b'x',
        Space::Log => b'l',
        Space::Suppress => b'u',
        Space::Meta => b'm',
        Space::SetAside => b'z',
        Space::Sent => b'n',
        Space::Stats => b't',
        Space::ApiKeys => b'k',
    }
}

fn full_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix(space));
    k.extend_from_slice(key);
    k
}

/// Where the id counter is kept, in the meta space. Earlier releases kept it
/// under `next_id`; it is read from there once when this key is missing.
const NEXT_ID: &[u8] = b"store/next_id";
const LEGACY_NEXT_ID: &[u8] = b"next_id";
/// Ids reserved per write of [`NEXT_ID`], as sled's own `generate_id` does:
/// the counter is written once per block, not on every unit.
const ID_BLOCK: u64 = 4096;

/// State that only changes under the unit lock.
struct Ids {
    next: u64,
    /// Ids below this are reserved on disk; after a crash ids resume past it.
    reserved: u64,
    /// While a backup runs: each key a unit changed since the backup began,
    /// with its value at that instant (None: absent then). See [`SledStorage::backup`].
    before_backup: Option<BTreeMap<Vec<u8>, Option<sled::IVec>>>,
}

pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    lock: Mutex<Ids>,
    flusher: Flusher,
    /// Shared by the flusher thread and [`Storage::flush`] (shutdown, CLI).
    files: Arc<Mutex<SledFiles>>,
    /// `store.compression`: the layout of backups (and so of a store
    /// restored from one); this store's own is fixed since its creation.
    compression: bool,
    /// One backup at a time (they share [`Ids::before_backup`]).
    backups: Mutex<()>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Whether the store at `path` uses sled's zstd compression of its log:
/// whatever it was created with, since sled refuses to change it; for a new
/// store, `wanted` (`store.compression`).
///
/// Off by default, measured (BENCHMARKS.md): compression cuts the bytes on
/// disk about threefold, but sled replays every log message written since
/// the previous open when it starts, and decompresses each one on its own,
/// so a start after a long uptime takes about twenty-five times longer (43 s
/// instead of 1.6 s with 1 000 000 eSIMs), and intake runs at about half speed.
/// Disk is cheap on a VM; a webhook listener that is down for a minute is not.
fn compressed(path: &Path, wanted: bool) -> bool {
    match std::fs::read(path.join("conf")) {
        Ok(conf) => {
            let has = String::from_utf8_lossy(&conf).contains("use_compression: true");
            if has != wanted {
                tracing::warn!(
                    store = %path.display(),
                    compressed = has,
                    "store.compression = {wanted} applies only to a new store; this one keeps \
                     its layout (to change it: backup, stop, restore the backup in its place)"
                );
            }
            has
        }
        Err(_) => wanted,
    }
}

/// sled's flush, then the real sync it leaves out (see [`SledFiles`]).
fn sync(db: &sled::Db, files: &Mutex<SledFiles>) -> Result<(), StoreError> {
    db.flush().map_err(io)?;
    // A panic mid-sync leaves nothing half done: the next sync redoes it.
    let mut f = files.lock().unwrap_or_else(|p| p.into_inner());
    f.sync().map_err(|e| io(format!("fdatasync: {e}")))
}

impl SledStorage {
    /// Opens (or creates) the store. Fails with [`StoreError::Locked`] when a
    /// running server holds it: the CLI then goes through the admin API.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<SledStorage, StoreError> {
        Self::open_with(path, cache_bytes, false)
    }

    /// As [`SledStorage::open`], creating a new store with sled's log
    /// compression when `compression` is set (see [`compressed`]).
    pub fn open_with(
        path: &Path,
        cache_bytes: u64,
        compression: bool,
    ) -> Result<SledStorage, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .use_compression(compressed(path, compression))
            .compression_factor(1)
            // With a sync failure injected (tests), nothing reaches the file
            // but through our syncs, as on a disk that refused the writes.
            .flush_every_ms(match super::flusher::injected_sync_failure() {
                Some(_) => None,
                None => Some(500),
            })
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref ioe)
                    if ioe.kind() == std::io::ErrorKind::WouldBlock
                        || ioe.to_string().contains("lock") =>
                {
                    StoreError::Locked(path.display().to_string())
                }
                other => io(format!("opening {}: {other}", path.display())),
            })?;
        let tree = db.open_tree(TREE).map_err(io)?;
        let stored = match tree.get(full_key(Space::Meta, NEXT_ID)).map_err(io)? {
            Some(b) => Some(b),
            None => tree
                .get(full_key(Space::Meta, LEGACY_NEXT_ID))
                .map_err(io)?,
        };
        let next = match stored {
            Some(b) => read_u64(&b).ok_or_else(|| StoreError::Corrupt("next_id".into()))?,
            None => 1,
        };
        let files = Arc::new(Mutex::new(
            SledFiles::open(path).map_err(|e| io(format!("syncing {}: {e}", path.display())))?,
        ));
        let flush_db = db.clone();
        let flush_files = files.clone();
        let flusher =
            Flusher::spawn(move || sync(&flush_db, &flush_files).map_err(|e| e.to_string()));
        Ok(SledStorage {
            db,
            tree,
            lock: Mutex::new(Ids {
                next,
                reserved: next,
                before_backup: None,
            }),
            flusher,
            files,
            compression,
            backups: Mutex::new(()),
        })
    }

    /// Hands out ids from `next` on (or later), at once durable in the next
    /// flush: for a copy from another backend (`store::postgres`'s backup),
    /// whose ids this store must never hand out again.
    pub fn ids_from(&self, next: u64) -> Result<(), StoreError> {
        let mut ids = self.lock();
        ids.next = ids.next.max(next);
        let upto = ids.next + ID_BLOCK;
        self.tree
            .insert(full_key(Space::Meta, NEXT_ID), upto.to_be_bytes().to_vec())
            .map_err(io)?;
        ids.reserved = upto;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Ids> {
        // A panic while holding the lock cannot leave a half-written commit
        // (commits are atomic), so the data behind a poisoned lock is fine.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A unit in progress: the tree to read, and its writes so far (None: deleted).
struct SledUnit<'a> {
    tree: &'a sled::Tree,
    ids: &'a mut Ids,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Unit for SledUnit<'_> {
    fn get(&mut self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = full_key(space, key);
        if let Some(w) = self.writes.get(&k) {
            return Ok(w.clone());
        }
        Ok(self.tree.get(k).map_err(io)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        self.writes.insert(full_key(space, key), Some(value));
    }

    fn delete(&mut self, space: Space, key: &[u8]) {
        self.writes.insert(full_key(space, key), None);
    }

    fn scan(&mut self, space: Space, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let p = full_key(space, prefix);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.tree.scan_prefix(&p) {
            let (k, v) = kv.map_err(io)?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, w) in self.writes.range(p.clone()..) {
            if !k.starts_with(&p) {
                break;
            }
            match w {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged
            .into_iter()
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect())
    }

    fn next_id(&mut self) -> u64 {
        let id = self.ids.next;
        self.ids.next += 1;
        id
    }
}

impl Storage for SledStorage {
    fn unit(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let mut ids = self.lock();
        let before = ids.next;
        let mut unit = SledUnit {
            tree: &self.tree,
            ids: &mut ids,
            writes: BTreeMap::new(),
        };
        // An error drops `unit` and with it every write: nothing reaches sled.
        work(&mut unit)?;
        let SledUnit { writes, .. } = unit;
        if writes.is_empty() && ids.next == before {
            return Ok(());
        }
        let reserve = ids.next >= ids.reserved;
        if let Some(before) = ids.before_backup.as_mut() {
            // A backup is copying: keep what it must see of each key this
            // unit changes (read before the batch lands, under the lock).
            for k in writes.keys() {
                if !before.contains_key(k) {
                    before.insert(k.clone(), self.tree.get(k).map_err(io)?);
                }
            }
            let counter = full_key(Space::Meta, NEXT_ID);
            if reserve && !before.contains_key(&counter) {
                before.insert(counter.clone(), self.tree.get(&counter).map_err(io)?);
            }
        }
        let mut batch = sled::Batch::default();
        for (k, w) in writes {
            match w {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        if reserve {
            let upto = ids.next + ID_BLOCK;
            batch.insert(full_key(Space::Meta, NEXT_ID), upto.to_be_bytes().to_vec());
        }
        self.tree.apply_batch(batch).map_err(io)?;
        if reserve {
            ids.reserved = ids.next + ID_BLOCK;
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(full_key(space, key))
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn scan<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        Box::new(
            self.tree
                .scan_prefix(full_key(space, prefix))
                .map(|r| r.map(|(k, v)| (k[1..].to_vec(), v.to_vec())).map_err(io)),
        )
    }

    fn durable(&self) -> oneshot::Receiver<Result<(), String>> {
        self.flusher.durable()
    }

    fn flush(&self) -> Result<(), StoreError> {
        if let Some(why) = self.flusher.failure() {
            return Err(io(format!("not synced: an earlier sync failed ({why})")));
        }
        sync(&self.db, &self.files)
    }

    fn failed(&self) -> watch::Receiver<Option<String>> {
        self.flusher.failed()
    }

    fn backup(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(io(format!(
                "backup directory {} is not empty",
                dir.display()
            )));
        }
        let _one_backup = self.backups.lock().unwrap_or_else(|p| p.into_inner());
        // The copy takes the configured layout: restoring a backup is how a
        // store changes it.
        let copy = sled::Config::new()
            .path(dir)
            .use_compression(self.compression)
            .compression_factor(1)
            .open()
            .map_err(io)?;
        let target = copy.open_tree(TREE).map_err(io)?;
        // The copy is the store as it was at this instant, without holding
        // the unit lock while it runs (intake and unsubscribes go on): from
        // here, every unit records the earlier value of each key it changes,
        // the copy takes the tree as it iterates it, and at the end the
        // recorded earlier values replace whatever the iteration saw of
        // those keys (added keys are removed, removed keys come back).
        self.lock().before_backup = Some(BTreeMap::new());
        let copied = (|| {
            for kv in self.tree.iter() {
                let (k, v) = kv.map_err(io)?;
                target.insert(k, v).map_err(io)?;
            }
            Ok::<(), StoreError>(())
        })();
        let before = self.lock().before_backup.take().unwrap_or_default();
        copied?;
        for (k, v) in before {
            match v {
                Some(v) => target.insert(k, v).map_err(io)?,
                None => target.remove(k).map_err(io)?,
            };
        }
        copy.flush().map_err(io)?;
        Ok(())
    }
}
