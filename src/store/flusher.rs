//! Group commit: one real sync for every request waiting on durability.
//!
//! sled only syncs in the background (every 500 ms), and its `flush_async`
//! deadlocks when eight or more callers await it at once (sled #1308). So a
//! single thread owns flushing: a request commits its writes, then asks to be
//! woken once they are on disk; the thread takes every request queued so far,
//! runs one flush, and wakes them all. A request queued while a flush runs
//! waits for the next one, which is what makes its writes covered.
//!
//! sled's own `flush()` is not enough for that: on Linux it ends with
//! `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, which hands the pages to
//! the device but flushes neither the device's write cache nor the file's
//! metadata (its size, when the log grew). [`SledFiles::sync`] therefore
//! finishes every flush with `fdatasync` of the store's files.
//!
//! A failed sync is fatal, as PostgreSQL treats a failed `fsync`: Linux
//! reports a writeback error once and may then drop the dirty pages, so a
//! later sync "succeeds" although the earlier writes never reached the disk,
//! and the commits still in sled's memory (a notifyId's dedup key among
//! them) would answer the provider's retry with `duplicate`. So after the
//! first failure the flusher syncs nothing more: every waiting request and
//! every later one is refused (503), the failure is published once through
//! [`Flusher::failed`], and `serve` stops without another write and exits
//! non-zero; the next start recovers from sled's log what really is on disk.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use tokio::sync::{oneshot, watch};

type Waiter = oneshot::Sender<Result<(), String>>;

/// How long a flush waits for more requests to join it, under load.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_micros(1000);

/// The env var that turns the `fdatasync`s off. Bench only (`bench/run.sh`
/// measures what they cost with it): a store run with it set can lose
/// acknowledged webhooks on a power cut, so the server warns when it is set.
pub const UNSAFE_NO_FDATASYNC: &str = "ESIM_NOTIFY_UNSAFE_NO_FDATASYNC";

/// The env var that makes a group commit fail, for tests only: set to `N`,
/// the `N`th sync of the flusher (counted from 1, after the start) fails as
/// a disk that refused the write would, without writing anything, and
/// sled's background flush is turned off so that nothing else reaches the
/// file before the process stops. The server warns loudly when it is set.
pub const UNSAFE_FAIL_SYNC: &str = "ESIM_NOTIFY_UNSAFE_FAIL_SYNC";

/// Which sync [`UNSAFE_FAIL_SYNC`] makes fail, if it is set to a number.
pub fn injected_sync_failure() -> Option<u64> {
    let n = std::env::var(UNSAFE_FAIL_SYNC)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (n > 0).then_some(n)
}

/// What a request waiting on durability is told once a sync has failed:
/// short, since the reason itself is logged once, by the flusher.
pub const STOPPED_AFTER_FAILED_SYNC: &str = "the store stopped syncing after a failed sync";

/// What must reach the disk after sled's `flush()` for a commit to survive
/// a power cut, given how sled 0.34.7 lays out its directory:
///
/// - `db`: the log and every page; one `fdatasync` of it per flush covers
///   all commits so far (on Linux it flushes the file whatever descriptor
///   wrote it, so our own read-only handle, opened once, is enough; it
///   does not touch sled's `flock`, which belongs to sled's descriptor).
/// - `blobs/<lsn>`: a record larger than a quarter of a segment (128 KiB)
///   goes to its own new file, which sled writes and never syncs while the
///   log entry pointing at it is synced. Each flush lists `blobs/`,
///   `fdatasync`s the files it has not synced yet, then `fsync`s the
///   directory so their names survive too. The listing is usually empty;
///   our records are far below the threshold, so this is a guard.
/// - `conf`, `db`, `blobs/` and the store directory itself are created once,
///   at open: they are synced once there (with the parent directory), not
///   on every flush.
/// - `snap.*` are not synced: a snapshot is a cache that sled rebuilds from
///   the log when it is missing.
pub struct SledFiles {
    data: File,
    blobs: PathBuf,
    synced_blobs: HashSet<std::ffi::OsString>,
    enabled: bool,
}

impl SledFiles {
    /// Opens the data file once and makes what sled created at open durable.
    pub fn open(dir: &Path) -> std::io::Result<SledFiles> {
        let enabled = std::env::var_os(UNSAFE_NO_FDATASYNC).is_none_or(|v| v.is_empty());
        let data = File::open(dir.join("db"))?;
        let files = SledFiles {
            data,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            enabled,
        };
        if let Some(n) = injected_sync_failure() {
            tracing::warn!(
                "{UNSAFE_FAIL_SYNC}={n} is set: sync {n} of this store WILL FAIL ON PURPOSE and the \
                 server will stop (a test of the failed-sync path; never set it in production)"
            );
        }
        if !enabled {
            tracing::warn!(
                "{UNSAFE_NO_FDATASYNC} is set: webhooks are acknowledged before they are on disk (bench only)"
            );
            return Ok(files);
        }
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()?;
        }
        files.data.sync_all()?;
        sync_dir(&files.blobs)?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// Makes everything sled has flushed durable: see the type's doc.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.data.sync_data()?;
        let mut present = HashSet::new();
        let mut new = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                // A blob gone since the listing was collected by sled: fine.
                match File::open(self.blobs.join(&name)) {
                    Ok(f) => f.sync_data()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            sync_dir(&self.blobs)?;
        }
        // Forget blobs sled has removed, so the set stays the directory's size.
        self.synced_blobs = present;
        Ok(())
    }
}

/// `fsync` of a directory: makes the names created in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Owns the flushing thread. Dropping it ends the thread and waits for it,
/// so that the store's files are closed once the store is dropped (a
/// restart in the same process can open them again at once).
pub struct Flusher {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
    /// `Some(why)` once a sync has failed; never cleared (see the module doc).
    failed: watch::Sender<Option<String>>,
}

impl Flusher {
    /// Starts the thread; `flush` makes everything written so far durable.
    pub fn spawn<F>(flush: F) -> Flusher
    where
        F: Fn() -> Result<(), String> + Send + 'static,
    {
        Flusher::spawn_failing_at(flush, injected_sync_failure())
    }

    /// [`Flusher::spawn`], where the `fail_at`th sync (from 1) fails without
    /// running `flush` (see [`UNSAFE_FAIL_SYNC`]).
    fn spawn_failing_at<F>(flush: F, fail_at: Option<u64>) -> Flusher
    where
        F: Fn() -> Result<(), String> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let (failed, _) = watch::channel(None);
        let failed_tx = failed.clone();
        let thread = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let mut last_batch = 1;
                let mut syncs = 0u64;
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    if failed_tx.borrow().is_some() {
                        // No sync after a failed one: it could only lie.
                        batch.extend(rx.try_iter());
                        for waiter in batch {
                            let _ = waiter.send(Err(STOPPED_AFTER_FAILED_SYNC.into()));
                        }
                        continue;
                    }
                    // Under load (the last flush served several requests) wait a
                    // moment for more to join: fewer, fuller flushes cost less
                    // CPU per request. A lone request is flushed at once.
                    if last_batch > 1 {
                        thread::sleep(GROUP_WINDOW);
                    }
                    batch.extend(rx.try_iter());
                    last_batch = batch.len();
                    syncs += 1;
                    let result = if fail_at == Some(syncs) {
                        Err(format!(
                            "fdatasync: injected failure of sync {syncs} ({UNSAFE_FAIL_SYNC})"
                        ))
                    } else {
                        flush()
                    };
                    if let Err(why) = &result {
                        tracing::error!(
                            error = %why,
                            waiting = batch.len(),
                            "STORE SYNC FAILED: what was committed since the last sync may not be on disk; \
                             refusing every request that waits for the disk and stopping, \
                             the next start recovers from the store's log"
                        );
                        failed_tx.send_replace(Some(why.clone()));
                    }
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawning the store flusher thread");
        Flusher {
            tx: Some(tx),
            thread: Some(thread),
            failed,
        }
    }

    /// Changes to `Some(why)` when a sync fails; the process must then stop
    /// without writing anything more.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    /// Why syncing stopped, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Resolves once everything committed before this call is on disk.
    pub fn durable(&self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let sent = match &self.tx {
            Some(sender) => sender.send(tx).map_err(|mpsc::SendError(w)| w),
            None => Err(tx),
        };
        if let Err(waiter) = sent {
            let _ = waiter.send(Err("the store flusher has stopped".into()));
        }
        rx
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_few_flushes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let flusher = Flusher::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let waits: Vec<_> = (0..64).map(|_| flusher.durable()).collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "64 waiters took {n} flushes");
    }

    /// A record over sled's blob threshold lands in its own file under
    /// `blobs/`, which sled never syncs: the sync must find it and sync it.
    #[test]
    fn sync_covers_new_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut files = SledFiles::open(dir.path()).unwrap();
        db.insert("big", vec![7u8; 300 * 1024]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!blobs.is_empty(), "a 300 KiB value should be a blob");
        for b in &blobs {
            assert!(files.synced_blobs.contains(b), "blob {b:?} not synced");
        }
    }

    /// The switches are not config keys: the config must not warn about them.
    #[test]
    fn the_switches_are_known_not_to_be_keys() {
        for var in [UNSAFE_NO_FDATASYNC, UNSAFE_FAIL_SYNC] {
            assert!(crate::config::NOT_KEYS.contains(&var), "{var}");
        }
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let flusher = Flusher::spawn(|| Err("disk full".into()));
        assert_eq!(
            flusher.durable().await.unwrap(),
            Err("disk full".to_string())
        );
    }

    /// After one failed sync no later sync runs (it could report success for
    /// writes the kernel already dropped): every later waiter is refused.
    #[tokio::test]
    async fn a_failed_sync_is_final() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let flusher = Flusher::spawn_failing_at(
            move || {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            Some(2),
        );
        let mut failed = flusher.failed();
        assert_eq!(flusher.durable().await.unwrap(), Ok(()));
        assert!(flusher.failure().is_none());
        let err = flusher.durable().await.unwrap().unwrap_err();
        assert!(err.contains("injected"), "{err}");
        failed.wait_for(Option::is_some).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                flusher.durable().await.unwrap(),
                Err(STOPPED_AFTER_FAILED_SYNC.to_string())
            );
        }
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            1,
            "no sync after the failure"
        );
    }
}
