//! The send loop. (Interface only in this commit; the loop itself follows.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::mailer::Mailer;
use crate::startup::SharedLive;
use crate::store::{QueuedNotice, Store};

pub struct Deps {
    pub store: Arc<dyn Store>,
    pub mailer: Mailer,
    pub live: SharedLive,
    pub config: Arc<Config>,
}

enum Command {
    Enqueue(Vec<QueuedNotice>),
}

/// How the rest of the program talks to the dispatcher; cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::UnboundedSender<Command>,
    running: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    stop: Arc<tokio::sync::Notify>,
}

impl DispatchHandle {
    /// Newly durable notices to schedule.
    pub fn enqueue(&self, notices: Vec<QueuedNotice>) {
        if !notices.is_empty() {
            let _ = self.tx.send(Command::Enqueue(notices));
        }
    }
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    /// Forget a notice that was cancelled or forgotten (the store already removed it).
    pub fn cancel(&self, id: u64) {
        let _ = id;
    }
    /// Stop or restart sending; the caller persists the flag in the store.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
    pub fn shutdown(&self) {
        self.stop.notify_one();
    }
}

pub fn spawn(deps: Deps) -> anyhow::Result<(DispatchHandle, tokio::task::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicBool::new(true));
    let paused = Arc::new(AtomicBool::new(deps.store.paused()?));
    let stop = Arc::new(tokio::sync::Notify::new());
    let handle = DispatchHandle {
        tx,
        running: running.clone(),
        paused,
        stop: stop.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                cmd = rx.recv() => match cmd {
                    Some(Command::Enqueue(_)) => {}
                    None => break,
                },
            }
        }
        running.store(false, Ordering::SeqCst);
    });
    Ok((handle, task))
}
