//! Group commit: one `fsync` for every request waiting on durability.
//!
//! sled only syncs in the background (every 500 ms), and its `flush_async`
//! deadlocks when eight or more callers await it at once (sled #1308). So a
//! single thread owns flushing: a request commits its writes, then asks to be
//! woken once they are on disk; the thread takes every request queued so far,
//! runs one `flush`, and wakes them all. A request queued while a flush runs
//! waits for the next one, which is what makes its writes covered.

use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

/// How long a flush waits for more requests to join it, under load.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_micros(1000);

/// Owns the flushing thread. Dropping it ends the thread and waits for it,
/// so that the store's files are closed once the store is dropped (a
/// restart in the same process can open them again at once).
pub struct Flusher {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread; `flush` makes everything written so far durable.
    pub fn spawn<F>(flush: F) -> Flusher
    where
        F: Fn() -> Result<(), String> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let mut last_batch = 1;
                while let Ok(first) = rx.recv() {
                    // Under load (the last flush served several requests) wait a
                    // moment for more to join: fewer, fuller flushes cost less
                    // CPU per request. A lone request is flushed at once.
                    if last_batch > 1 {
                        thread::sleep(GROUP_WINDOW);
                    }
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    last_batch = batch.len();
                    let result = flush();
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawning the store flusher thread");
        Flusher {
            tx: Some(tx),
            thread: Some(thread),
        }
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

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let flusher = Flusher::spawn(|| Err("disk full".into()));
        assert_eq!(
            flusher.durable().await.unwrap(),
            Err("disk full".to_string())
        );
    }
}
