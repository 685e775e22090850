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
use schedule::Schedule;
use send::{Ctx, Fate, Turn};

/// `waiting_for` values, as `store.outbox()` shows them.
pub const QUIET_HOURS: &str = "quiet hours";
pub const RECIPIENT_QUOTA: &str = "recipient quota";
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
    let mut schedule = Schedule::default();
    let now = Utc::now();
    // A broken transport is a fact about the previous run, not this one: the
    // notices it held are due now, and one probe send (as after a pause)
    // tells whether the transport works before the rest go.
    let mut held = Vec::new();
    for mut q in deps.store.outbox()? {
        if is_transport_wait(q.waiting_for.as_deref()) {
            held.push(q.id);
            q.next_attempt = now;
            q.waiting_for = None;
        }
        schedule.insert(q, now);
    }
    if !held.is_empty() {
        deps.store.make_due(&held, now)?;
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
            limits: Arc::new(Limits::new(&current(&ctx.live).config.rate_limit)),
            ctx,
            shared: shared.clone(),
            schedule,
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
    schedule: Schedule,
    limits: Arc<Limits>,
    pool: usize,
    in_flight: usize,
    broken: Option<Broken>,
    stop: watch::Receiver<bool>,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, bool, Turn)>();
        let mut retain = tokio::time::interval(RETAIN_EVERY);
        retain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut stop = self.stop.clone();
        loop {
            if !stopping {
                self.start_due(&done_tx);
            }
            if stopping && self.in_flight == 0 {
                break;
            }
            let wake = if stopping { None } else { self.next_wake() };
            tokio::select! {
                Some((id, probe, turn)) = done_rx.recv() => {
                    self.in_flight -= 1;
                    self.finished(id, probe, turn);
                }
                cmd = rx.recv(), if !stopping => match cmd {
                    Some(Command::Enqueue(notices)) => {
                        let now = Utc::now();
                        for q in notices {
                            self.schedule.insert(q, now);
                        }
                    }
                    Some(Command::Cancel(id)) => self.schedule.cancel(id),
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
        tracing::info!(left_queued = self.schedule.len(), "dispatcher stopped");
    }

    /// Starts every send that may start now.
    fn start_due(&mut self, done: &mpsc::UnboundedSender<(u64, bool, Turn)>) {
        if self.shared.operator_paused.load(Ordering::SeqCst) {
            return;
        }
        let settings = &current(&self.ctx.live).config.rate_limit;
        if *settings != self.limits.settings {
            tracing::info!(?settings, "rate limits changed");
            self.limits = Arc::new(Limits::new(settings));
        }
        let now = Utc::now();
        while self.in_flight < self.pool {
            let probe = match &self.broken {
                None => false,
                Some(b) if b.probing || now < b.until || self.in_flight > 0 => return,
                Some(_) => true,
            };
            let Some(q) = self.schedule.pop_due(now) else {
                return;
            };
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
            let id = q.id;
            tokio::spawn(async move {
                // A panic in a send must not lose the slot nor the notice:
                // the inner task is joined and a panic becomes a retry later.
                let turn = match tokio::spawn(send::turn(ctx, q, limits, stop)).await {
                    Ok(t) => t,
                    Err(e) => {
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
                let _ = done.send((id, probe, turn));
            });
            if probe {
                return;
            }
        }
    }

    fn finished(&mut self, id: u64, probe: bool, turn: Turn) {
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
        match turn.fate {
            Fate::Done => self.schedule.finished(id, now),
            Fate::Again { at, why } => self.schedule.again(id, at, why),
            Fate::Replaced(notices) => {
                self.schedule.finished(id, now);
                for q in notices {
                    self.schedule.insert(q, now);
                }
            }
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
                    &SendOutcome::Wait {
                        until,
                        why: why.clone(),
                    },
                );
                self.schedule.again(id, until, Some(why));
            }
        }
    }

    /// When the loop must look again without being told (a due notice, the
    /// end of a transport pause); None when only a message can change things.
    fn next_wake(&mut self) -> Option<tokio::time::Instant> {
        if self.shared.operator_paused.load(Ordering::SeqCst) || self.in_flight >= self.pool {
            return None;
        }
        let due = self.schedule.next_due()?;
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
