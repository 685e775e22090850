//! The send loop (SPEC §8).
//!
//! One task owns the [`schedule::Schedule`] (loaded from the store's queue
//! at start, fed by [`DispatchHandle::enqueue`]) and starts one task per
//! send, at most `email.smtp.pool_size` at a time. Each send task makes the
//! last checks (still queued? overtaken? suppressed? quiet hours? quota?),
//! renders, sends and records the outcome in the store; the loop only keeps
//! the plan and the transport's health. A notice leaves the store's queue
//! only when an outcome that ends it is recorded, so whatever a crash or a
//! shutdown interrupts is sent after the restart (at least once, with the
//! same Message-ID).
//!
//! A broken transport (connection refused, reset or timing out before the
//! greeting, authentication refused, TLS failure, refusal at greeting) is
//! not the notices' fault: sending pauses, with a backoff of its own
//! (`initial_backoff` doubling up to `max_backoff`), and then a single probe
//! send decides whether everything drains or the pause goes on. No notice
//! spends an attempt on it and none is dead-lettered for it, so a relay
//! that is down for hours only delays the queue. This pause
//! is separate from the operator's (`set_paused`), which the store persists.

mod enrich;
mod limits;
mod quiet;
mod schedule;
mod send;
mod shared;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::engine::{Engine, QueuedNotice, SendOutcome};
use crate::live::{current, SharedLive};
use crate::mailer::Mailer;

pub use limits::{backoff_cap, Limits};
pub use quiet::quiet_until;
use schedule::{Plan, Schedule};
use send::{Ctx, Fate, Turn};
use shared::SharedQueue;

/// `waiting_for` values, as `store.outbox()` shows them.
pub const QUIET_HOURS: &str = crate::engine::QUIET_HOURS;
pub const RECIPIENT_QUOTA: &str = crate::engine::RECIPIENT_QUOTA;
/// A notice waiting out its backoff after a passing failure (SPEC §2: "a backoff").
pub const BACKOFF: &str = crate::engine::BACKOFF;
/// Shown for every queued notice while the operator's pause holds them all.
pub const PAUSED_BY_OPERATOR: &str = "paused by operator";
/// The start of the reason a notice waits for a broken transport.
pub const TRANSPORT_BROKEN: &str = "transport broken";

/// How often the per-recipient limiter forgets recipients back at full quota.
const RETAIN_EVERY: Duration = Duration::from_secs(600);

/// The longest the loop sleeps without looking at the wall clock again: the
/// plan is in wall-clock time (it is stored), tokio sleeps are monotonic.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub struct Deps {
    pub store: Arc<Engine>,
    pub mailer: Mailer,
    pub live: SharedLive,
    pub config: Arc<Config>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The eSIM Access API client, when `[provider]` has an access code.
    pub provider: Option<crate::provider::Provider>,
}

enum Command {
    Enqueue(Vec<QueuedNotice>),
    Cancel(u64),
    /// Something outside the plan changed (the operator's pause): look again.
    Wake,
}

struct Shared {
    running: AtomicBool,
    operator_paused: AtomicBool,
    transport_broken: AtomicBool,
    stop: watch::Sender<bool>,
}

/// How the rest of the program talks to the dispatcher; cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl DispatchHandle {
    /// Newly durable notices to schedule.
    pub fn enqueue(&self, notices: Vec<QueuedNotice>) {
        if !notices.is_empty() {
            let _ = self.tx.send(Command::Enqueue(notices));
        }
    }

    /// False once the loop has stopped (readiness).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// "Sending paused" for the metric and readiness: the operator's pause or
    /// a broken transport.
    pub fn is_paused(&self) -> bool {
        self.is_operator_paused() || self.is_transport_broken()
    }

    pub fn is_operator_paused(&self) -> bool {
        self.shared.operator_paused.load(Ordering::SeqCst)
    }

    pub fn is_transport_broken(&self) -> bool {
        self.shared.transport_broken.load(Ordering::SeqCst)
    }

    /// Forget a notice that was cancelled or forgotten (the store already removed it).
    pub fn cancel(&self, id: u64) {
        let _ = self.tx.send(Command::Cancel(id));
    }

    /// Stop or restart starting sends (those in flight finish); the caller
    /// persists the flag in the store. Intake goes on either way.
    pub fn set_paused(&self, paused: bool) {
        self.shared.operator_paused.store(paused, Ordering::SeqCst);
        let _ = self.tx.send(Command::Wake);
    }

    /// Stop starting sends; the loop ends once those in flight are back.
    /// Await the `JoinHandle` from [`spawn`] to know when.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }
}

pub fn spawn(deps: Deps) -> anyhow::Result<(DispatchHandle, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        running: AtomicBool::new(true),
        operator_paused: AtomicBool::new(deps.store.paused()?),
        transport_broken: AtomicBool::new(false),
        stop,
    });
    let (source, broken) = if deps.store.is_shared() {
        // The queue is the group's: claimed from the store as notices fall
        // due, never loaded whole (SPEC §10).
        let q = SharedQueue::new(deps.store.clone(), deps.config.store.lease.0);
        tracing::info!(instance = %q.owner, "dispatcher sends from the group's shared queue");
        // A broken transport is one instance's fact: notices an instance
        // held for its broken transport (this one before a restart, or one
        // that stopped) are due now, and this instance tries them.
        let held: Vec<u64> = deps
            .store
            .outbox()?
            .into_iter()
            .filter(|q| is_transport_wait(q.waiting_for.as_deref()))
            .map(|q| q.id)
            .collect();
        if !held.is_empty() {
            deps.store.make_due(&held, Utc::now())?;
            tracing::info!(
                held = held.len(),
                "notices held for a broken transport before this start are due now"
            );
        }
        (Source::Shared(q), None)
    } else {
        let (schedule, broken) = load_schedule(&deps.store)?;
        (Source::Local(schedule), broken)
    };
    let handle = DispatchHandle {
        tx,
        shared: shared.clone(),
    };
    let pool = deps.config.email.smtp.pool_size.max(1) as usize;
    // The same key the public /unsubscribe endpoint checks against (kept in the store).
    let unsubscribe = if deps.config.email.list_unsubscribe.trim() == "one-click" {
        Some(crate::unsubscribe::Signer::new(
            deps.store.secret("unsubscribe")?,
        ))
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        unsubscribe,
        store: deps.store,
        mailer: deps.mailer,
        live: deps.live,
        provider: deps.provider,
        config: deps.config,
        metrics: deps.metrics,
    });
    let task = tokio::spawn(async move {
        Loop {
            limits: Arc::new(Limits::for_store(
                &current(&ctx.live).config.rate_limit,
                &ctx.store,
            )),
            ctx,
            shared: shared.clone(),
            source,
            pool,
            in_flight: 0,
            broken,
            stop: stop_rx,
        }
        .run(rx)
        .await;
        shared.running.store(false, Ordering::SeqCst);
    });
    Ok((handle, task))
}

/// The plan kept in memory and fed from start (one instance on its own
/// store), resuming what the previous run left queued.
fn load_schedule(store: &Engine) -> anyhow::Result<(Schedule, Option<Broken>)> {
    let mut schedule = Schedule::default();
    let now = Utc::now();
    // A broken transport is a fact about the previous run, not this one: the
    // notices it held are due now, and one probe send (as after a pause)
    // tells whether the transport works before the rest go.
    let mut held = Vec::new();
    for mut q in store.outbox()? {
        if is_transport_wait(q.waiting_for.as_deref()) {
            held.push(q.id);
            q.next_attempt = now;
            q.waiting_for = None;
        }
        schedule.insert(q, now);
    }
    if !held.is_empty() {
        store.make_due(&held, now)?;
        tracing::info!(
            held = held.len(),
            "notices held for a broken transport in the previous run: one probe send first"
        );
    }
    let broken = (!held.is_empty()).then_some(Broken {
        until: now,
        backoff: Duration::ZERO,
        probing: false,
    });
    if schedule.len() > 0 {
        tracing::info!(queued = schedule.len(), "dispatcher resumes the queue");
    }
    Ok((schedule, broken))
}

/// Where the loop takes its sends from.
enum Source {
    /// This process's own plan (sled: one process holds the store).
    Local(Schedule),
    /// The shared store's queue, claimed under leases (SPEC §10).
    Shared(SharedQueue),
}

/// What a finished send task reports: the notice, whether it was the probe
/// of a broken transport, its turn, and the lease it was sent under.
type Done = (u64, bool, Turn, Option<i64>);

/// The transport-broken pause.
struct Broken {
    until: DateTime<Utc>,
    backoff: Duration,
    /// A probe send is out; nothing else starts until it is back.
    probing: bool,
}

struct Loop {
    ctx: Arc<Ctx>,
    shared: Arc<Shared>,
    source: Source,
    limits: Arc<Limits>,
    pool: usize,
    in_flight: usize,
    broken: Option<Broken>,
    stop: watch::Receiver<bool>,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut retain = tokio::time::interval(RETAIN_EVERY);
        retain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut stop = self.stop.clone();
        loop {
            if !stopping {
                self.start_due(&done_tx).await;
            }
            if stopping && self.in_flight == 0 {
                break;
            }
            let wake = if stopping { None } else { self.next_wake() };
            tokio::select! {
                Some((id, probe, turn, token)) = done_rx.recv() => {
                    self.in_flight -= 1;
                    self.finished(id, probe, turn, token);
                }
                cmd = rx.recv(), if !stopping => match cmd {
                    Some(Command::Enqueue(notices)) => match &mut self.source {
                        Source::Local(schedule) => {
                            let now = Utc::now();
                            for q in notices {
                                schedule.insert(q, now);
                            }
                        }
                        Source::Shared(q) => q.queued(notices.iter().map(|n| n.esim).collect()),
                    },
                    Some(Command::Cancel(id)) => {
                        if let Source::Local(schedule) = &mut self.source {
                            schedule.cancel(id);
                        }
                    }
                    Some(Command::Wake) => {}
                    None => stopping = true,
                },
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if self.in_flight > 0 {
                        tracing::info!(in_flight = self.in_flight, "dispatcher stopping: waiting for the sends in flight");
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {}
                _ = retain.tick() => self.limits.retain_recent(),
            }
        }
        self.ctx.mailer.close().await;
        match &self.source {
            Source::Local(schedule) => {
                tracing::info!(left_queued = schedule.len(), "dispatcher stopped")
            }
            Source::Shared(_) => tracing::info!("dispatcher stopped"),
        }
    }

    /// The next sends that may start now: one from the plan, or as many as
    /// there are free slots claimed from the group's store.
    async fn next_due(&mut self, now: DateTime<Utc>, probe: bool) -> Vec<Plan> {
        match &mut self.source {
            Source::Local(schedule) => schedule.pop_due(now).into_iter().collect(),
            Source::Shared(q) => {
                let room = if probe { 1 } else { self.pool - self.in_flight };
                q.take(room).await
            }
        }
    }

    /// Starts every send that may start now.
    async fn start_due(&mut self, done: &mpsc::UnboundedSender<Done>) {
        if let Source::Shared(q) = &mut self.source {
            if let Some(paused) = q.paused().await {
                if paused != self.shared.operator_paused.swap(paused, Ordering::SeqCst) {
                    tracing::info!(paused, "the group's pause changed");
                }
            }
        }
        if self.shared.operator_paused.load(Ordering::SeqCst) {
            return;
        }
        let settings = &current(&self.ctx.live).config.rate_limit;
        if *settings != self.limits.settings {
            tracing::info!(?settings, "rate limits changed");
            self.limits = Arc::new(Limits::for_store(settings, &self.ctx.store));
        }
        let now = Utc::now();
        while self.in_flight < self.pool {
            let probe = match &self.broken {
                None => false,
                Some(b) if b.probing || now < b.until || self.in_flight > 0 => return,
                Some(_) => true,
            };
            let due = self.next_due(now, probe).await;
            if due.is_empty() {
                return;
            }
            for q in due {
                self.start(q, probe, done);
            }
            if probe {
                return;
            }
        }
    }

    /// Starts one send task.
    fn start(&mut self, q: Plan, probe: bool, done: &mpsc::UnboundedSender<Done>) {
        self.in_flight += 1;
        if probe {
            if let Some(b) = &mut self.broken {
                b.probing = true;
            }
            tracing::info!(notice = q.id, "transport broken: trying one send");
        }
        let (ctx, limits, stop, done) = (
            self.ctx.clone(),
            self.limits.clone(),
            self.stop.clone(),
            done.clone(),
        );
        let (id, token) = (q.id, q.token);
        let kept = match (&self.source, token) {
            (Source::Shared(shared), Some(t)) => Some(shared.keep(id, t)),
            _ => None,
        };
        tokio::spawn(async move {
            // A panic in a send must not lose the slot nor the notice:
            // the inner task is joined and a panic becomes a retry later
            // (a shared store's lease is kept: it runs out by itself).
            let mut token = token;
            let turn = match tokio::spawn(send::turn(ctx, q, limits, stop)).await {
                Ok(t) => t,
                Err(e) => {
                    token = None;
                    tracing::error!(notice = id, error = %e, "send task failed");
                    Turn {
                        fate: Fate::Again {
                            at: Utc::now() + chrono::Duration::seconds(60),
                            why: Some("internal error".into()),
                        },
                        transport_ok: false,
                    }
                }
            };
            if let Some(k) = kept {
                k.abort();
            }
            let _ = done.send((id, probe, turn, token));
        });
    }

    fn finished(&mut self, id: u64, probe: bool, turn: Turn, token: Option<i64>) {
        let now = Utc::now();
        if let Some(b) = &mut self.broken {
            if probe {
                b.probing = false;
            }
            if turn.transport_ok {
                self.broken = None;
                self.shared.transport_broken.store(false, Ordering::SeqCst);
                tracing::warn!("transport works again: sending resumes");
            }
        }
        let fate = match &mut self.source {
            Source::Local(schedule) => match turn.fate {
                Fate::Done => {
                    schedule.finished(id, now);
                    return;
                }
                Fate::Again { at, why } => {
                    schedule.again(id, at, why);
                    return;
                }
                Fate::Replaced(notices) => {
                    schedule.finished(id, now);
                    for q in notices {
                        schedule.insert(q, now);
                    }
                    return;
                }
                broken => broken,
            },
            // The store is the plan: what the turn recorded is what the next
            // claim sees, so the lease goes, and the eSIM's next notice may
            // be due at once.
            Source::Shared(q) => {
                q.look_now();
                match turn.fate {
                    broken @ Fate::Broken { .. } => broken,
                    _ => {
                        if let Some(t) = token {
                            q.release(id, t);
                        }
                        return;
                    }
                }
            }
        };
        match fate {
            Fate::Done | Fate::Again { .. } | Fate::Replaced(_) => {}
            Fate::Broken { reason } => {
                let retry = &self.ctx.config.retry;
                let (initial, max) = (retry.initial_backoff.0, retry.max_backoff.0);
                let b = self.broken.get_or_insert(Broken {
                    until: now,
                    backoff: Duration::ZERO,
                    probing: false,
                });
                // The first failure starts the pause; a failed probe lengthens
                // it; sends that were already out when it started change nothing.
                if b.backoff.is_zero() || probe {
                    b.backoff = if b.backoff.is_zero() {
                        initial
                    } else {
                        (b.backoff * 2).min(max)
                    };
                    b.until = now + b.backoff;
                    tracing::warn!(reason = %reason, retry_in = %humantime::format_duration(b.backoff), "transport broken: sending paused");
                }
                self.shared.transport_broken.store(true, Ordering::SeqCst);
                let why = format!("{TRANSPORT_BROKEN}: {reason}");
                let until = b.until;
                send::record(
                    &self.ctx,
                    id,
                    token,
                    &SendOutcome::Wait {
                        until,
                        why: why.clone(),
                    },
                );
                match &mut self.source {
                    Source::Local(schedule) => schedule.again(id, until, Some(why)),
                    Source::Shared(q) => {
                        if let Some(t) = token {
                            q.release(id, t);
                        }
                    }
                }
            }
        }
    }

    /// When the loop must look again without being told (a due notice, the
    /// end of a transport pause); None when only a message can change things.
    fn next_wake(&mut self) -> Option<tokio::time::Instant> {
        if let Source::Shared(q) = &self.source {
            // Polled: another instance may queue, pause or resume.
            let blocked = self.shared.operator_paused.load(Ordering::SeqCst)
                || self.in_flight >= self.pool
                || matches!(&self.broken, Some(b) if b.probing || self.in_flight > 0);
            let not_before = self.broken.as_ref().map(|b| {
                let wait = (b.until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::Instant::now() + wait
            });
            return Some(q.next_wake(blocked, not_before));
        }
        if self.shared.operator_paused.load(Ordering::SeqCst) || self.in_flight >= self.pool {
            return None;
        }
        let Source::Local(schedule) = &mut self.source else {
            return None;
        };
        let due = schedule.next_due()?;
        let at = match &self.broken {
            None => due,
            Some(b) if b.probing || self.in_flight > 0 => return None,
            Some(b) => due.max(b.until),
        };
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Some(tokio::time::Instant::now() + wait.min(MAX_SLEEP))
    }
}

fn is_transport_wait(why: Option<&str>) -> bool {
    why.is_some_and(|w| w.starts_with(TRANSPORT_BROKEN))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
