//! The engine: SPEC §5–6 over the storage interface.
//!
//! Each operation is one unit of work ([`tx::Tx`]): it reads the records it
//! needs, decides, and writes every record and decision-log line it causes,
//! committed whole or not at all and never interleaved with another
//! operation. The rules themselves are pure (`policy`); this folder applies
//! them to stored state: which eSIM (`resolve`), one delivery (`intake`),
//! bindings and release (`binding`), the suppression list (`suppression`),
//! what became of a notice (`outcomes`), what a sent message is found by
//! (`sent`) and the mail provider's reports about it (`feedback`), reads
//! (`views`), retention
//! (`retention`) and the upgrade of older stores (`migrate`).
//!
//! Nothing here names sled: [`Engine::new`] takes any [`Storage`].

mod api_keys;
mod binding;
mod codec;
mod feedback;
mod intake;
mod leases;
mod migrate;
pub mod model;
mod outcomes;
mod readdress;
mod ready;
mod records;
mod resend;
mod resolve;
mod retention;
mod sent;
pub mod set_aside;
mod stats;
mod suppression;
mod tx;
mod views;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

pub use feedback::{Report, ReportKind, ReportOutcome};
pub use leases::{Held, POLL};
pub use model::*;
pub use resend::{is_resent_install, resendable, Resend};
pub use retention::{event_past_history, Ages};
pub use stats::{DayCounts, DayStats};

use crate::customers::{IdKind, Recipient};
use crate::event::{Event, Identifiers};
use crate::policy::{EsimState, Rules};
use crate::store::{Space, Storage, StoreError};
use records::{ident, meta, StoredBinding};
use tx::Tx;
use views::Snapshot;

pub struct Engine {
    storage: Arc<dyn Storage>,
    /// The counts as this process committed them, for readers that must not
    /// wait (metrics): read at open, then each unit's change added (changes
    /// add up in any order, so threads reporting late need no ordering).
    counts: Mutex<CountsDelta>,
    policy: EnginePolicy,
}

/// What the engine's decisions read from the configuration at start.
#[derive(Debug, Clone, Default)]
pub struct EnginePolicy {
    /// `store.delivery_dedup`: how long a notifyId is a duplicate.
    pub dedup_window: Duration,
    /// `email.essential`: the service emails an `unsubscribed` address still
    /// gets (SPEC §6 "Suppressed address").
    pub essential: Vec<String>,
    /// `templates.default_timezone`: whose calendar days the daily counters
    /// count in (`stats`).
    pub zone: chrono_tz::Tz,
}

impl Engine {
    /// The engine over `storage`, upgraded to this release's record format.
    /// No template is essential until [`Engine::with_essential`] says so.
    pub fn new(storage: Arc<dyn Storage>, dedup_window: Duration) -> Result<Engine, StoreError> {
        let engine = Engine {
            storage,
            counts: Mutex::new(CountsDelta::default()),
            policy: EnginePolicy {
                dedup_window,
                essential: Vec::new(),
                zone: chrono_tz::UTC,
            },
        };
        migrate::migrate(&engine)?;
        set_aside::sweep(&engine, Utc::now())?;
        engine.storage.index_queue(leases::queue_columns)?;
        let counts = engine.stored_counts()?;
        *engine.counts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
        Ok(engine)
    }

    /// The engine over the store `[store]` names (once per process: sled
    /// holds a lock; a second opener gets [`StoreError::Locked`]).
    pub fn open(config: &crate::config::Config) -> Result<Engine, StoreError> {
        let storage = crate::store::open(config)?;
        Ok(Engine::new(storage, config.store.delivery_dedup.0)?
            .with_essential(config.email.essential.clone())
            .counting_days_in(config.default_tz()))
    }

    /// The templates an `unsubscribed` address still gets (`email.essential`).
    pub fn with_essential(mut self, essential: Vec<String>) -> Engine {
        self.policy.essential = essential;
        self
    }

    /// The daily counters count calendar days in `zone`
    /// (`templates.default_timezone`; UTC until said).
    pub fn counting_days_in(mut self, zone: chrono_tz::Tz) -> Engine {
        self.policy.zone = zone;
        self
    }

    fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Runs `work` as one unit of work; keeps the counts in step.
    ///
    /// `work` may run more than once: a shared store runs a unit again from
    /// the start when the database aborted it (a deadlock between two
    /// units) or when it must run alone (it scans); only the last run's
    /// writes are committed, so the work must not change anything but `tx`.
    fn unit<R>(&self, work: impl FnMut(&mut Tx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.unit_logged(work).map(|(r, _)| r)
    }

    /// [`Engine::unit`], also returning the decision-log lines written.
    fn unit_logged<R>(
        &self,
        mut work: impl FnMut(&mut Tx) -> Result<R, StoreError>,
    ) -> Result<(R, Vec<LogEntry>), StoreError> {
        let (r, written, delta) = self.storage.run(|unit| {
            let mut tx = Tx::new(unit).counting_days_in(self.policy.zone);
            let r = work(&mut tx)?;
            let (written, delta) = tx.finish()?;
            Ok((r, written, delta))
        })?;
        if !delta.is_zero() {
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(&delta);
        }
        Ok((r, written))
    }

    /// The counts as the store holds them: the single record of a store
    /// written before the counts were sharded, plus every shard.
    fn stored_counts(&self) -> Result<CountsDelta, StoreError> {
        let base: Counts = self
            .read(|tx| tx.get(Space::Meta, meta::COUNTS))?
            .unwrap_or_default();
        let mut sum = CountsDelta {
            outbox: base.outbox as i64,
            parked: base.parked as i64,
            dead: base.dead as i64,
        };
        for kv in self.storage.scan(Space::Meta, meta::COUNT_SHARDS) {
            let (_, v) = kv?;
            sum.add(&codec::decode(&v)?);
        }
        Ok(sum)
    }

    /// Runs look-ups on committed data, outside any unit of work.
    fn read<R>(
        &self,
        work: impl FnOnce(&mut Tx) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut snapshot = Snapshot {
            storage: self.storage(),
        };
        work(&mut Tx::new(&mut snapshot))
    }

    // ---------------------------------------------------------------- intake

    /// Records one delivery and every decision it causes, atomically. Not
    /// yet durable: await [`Engine::durable`] before acknowledging it.
    pub fn ingest(
        &self,
        event: &Event,
        body: &Value,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let (outcome, written) =
            self.unit_logged(|tx| intake::ingest(tx, event, body, rules, &self.policy, now))?;
        Ok(match outcome {
            IngestOutcome::Accepted { esim, queued, .. } => IngestOutcome::Accepted {
                esim,
                queued,
                decisions: written,
            },
            d => d,
        })
    }

    /// Resolves once everything committed before the call is on disk.
    pub fn durable(&self) -> oneshot::Receiver<Result<(), String>> {
        self.storage.durable()
    }

    /// Makes everything committed durable now (shutdown, CLI).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.storage.flush()
    }

    /// Records set aside because they did not decode (see [`set_aside`]).
    pub fn set_aside(&self) -> Result<Vec<set_aside::SetAside>, StoreError> {
        set_aside::list(self)
    }

    /// How many records are set aside (the `records_set_aside` gauge).
    pub fn set_aside_count(&self) -> usize {
        set_aside::count(self)
    }

    /// `Some(why)` once a sync failed: the server stops (see `store::flusher`).
    pub fn sync_failed(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.storage.failed()
    }

    // ------------------------------------------------------------- customers

    /// Binds a recipient to identifiers and releases what was parked for them.
    pub fn bind(
        &self,
        recipient: &Recipient,
        ids: &Identifiers,
        park_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<BindReport, StoreError> {
        let (mut report, written) = self.unit_logged(|tx| {
            binding::bind(tx, recipient, ids, park_for, &self.policy.essential, now)
        })?;
        report.decisions = written;
        Ok(report)
    }

    pub fn recipient_by(&self, kind: IdKind, value: &str) -> Result<Option<Recipient>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .get::<StoredBinding>(Space::Customers, &ident(kind, value))?
                .map(|b| b.recipient))
        })
    }

    /// Every identifier bound to `email` (compared case-insensitively), so
    /// the console finds a customer's eSIMs by address. There is no index by
    /// address: this reads every binding, as `forget` does.
    pub fn bindings_of(&self, email: &str) -> Result<Vec<(IdKind, String)>, StoreError> {
        let email = email.trim();
        let mut out = Vec::new();
        for (k, b) in self.read(|tx| tx.scan::<StoredBinding>(Space::Customers, &[]))? {
            if !b.recipient.email.eq_ignore_ascii_case(email) {
                continue;
            }
            if let Some(id) = records::parse_ident(&k) {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn unbind(&self, kind: IdKind, value: &str) -> Result<bool, StoreError> {
        self.unit(|tx| binding::unbind(tx, kind, value))
    }

    /// Removes every binding of the address, cancels its queued notices and
    /// redacts it from dead letters.
    pub fn forget(&self, email: &str, now: DateTime<Utc>) -> Result<ForgetReport, StoreError> {
        // Before the unit: creating the secret the first time is a unit of its own.
        let secret = self.secret(suppression::FORGOTTEN_SECRET)?;
        self.unit(|tx| binding::forget(tx, email, &secret, now))
    }

    // ---------------------------------------------------------- suppressions

    pub fn suppress(
        &self,
        email: &str,
        reason: SuppressReason,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.unit(|tx| {
            suppression::suppress(tx, email, reason, detail, now);
            Ok(())
        })
    }

    pub fn unsuppress(&self, email: &str) -> Result<bool, StoreError> {
        self.unit(|tx| suppression::unsuppress(tx, email))
    }

    pub fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError> {
        self.read(|tx| suppression::active_suppression(tx, email))
    }

    /// The suppression that stops `template` going to `email`, if one does
    /// (an `unsubscribed` address still gets the `email.essential` ones).
    pub fn suppression_stopping(
        &self,
        email: &str,
        template: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        Ok(self
            .suppression(email)?
            .filter(|s| s.stops(template, &self.policy.essential)))
    }

    /// Whether `template` is a service email (`email.essential`).
    pub fn is_essential(&self, template: &str) -> bool {
        self.policy.essential.iter().any(|e| e == template)
    }

    pub fn suppressions(&self) -> Result<Vec<Suppression>, StoreError> {
        views::suppressions(self)
    }

    // ----------------------------------------------------------------- queue

    pub fn outbox(&self) -> Result<Vec<QueuedNotice>, StoreError> {
        views::outbox(self)
    }

    pub fn queued(&self, id: u64) -> Result<Option<QueuedNotice>, StoreError> {
        self.read(|tx| tx.get(Space::Queue, &codec::id(id)))
    }

    pub fn esim_state(&self, esim: EsimId) -> Result<Option<(EsimState, Identifiers)>, StoreError> {
        Ok(self.read(|tx| resolve::record_of(tx, esim))?.map(|r| {
            let ids = r.state.ids.clone();
            (r.state, ids)
        }))
    }

    /// The queued notice `q`, addressed to the recipient bound to its eSIM
    /// now (SPEC §6 "Whose address"): read first, written (and the change
    /// logged) only when the binding changed since it was queued.
    pub fn follow_binding(
        &self,
        q: QueuedNotice,
        now: DateTime<Utc>,
    ) -> Result<Option<QueuedNotice>, StoreError> {
        match self.read(|tx| readdress::bound_now(tx, q.esim))? {
            Some(r) if r != q.recipient => self.unit(|tx| readdress::follow_queued(tx, q.id, now)),
            _ => Ok(Some(q)),
        }
    }

    /// Applies the result of one send attempt to the queue and the decision log.
    pub fn record(
        &self,
        id: u64,
        outcome: &SendOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.unit(|tx| outcomes::record(tx, id, None, outcome, now))
    }

    /// [`Engine::record`] for a notice held under a shared store's lease:
    /// nothing is written when the lease was taken over (SPEC §10).
    pub fn record_held(
        &self,
        id: u64,
        token: Option<i64>,
        outcome: &SendOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.unit(|tx| outcomes::record(tx, id, token, outcome, now))
    }

    // ------------------------------------------- a store instances share

    /// True while the store's database cannot be reached; its backend has
    /// logged why, so callers answer 503 or wait without logging it again.
    pub fn unreachable(&self) -> bool {
        self.storage.unreachable()
    }

    /// Whether other instances share this store (SPEC §10): the dispatcher
    /// then takes its work from the store, not from a plan of its own.
    pub fn is_shared(&self) -> bool {
        self.storage.group().is_some()
    }

    /// Takes up to `max` due notices for this instance (`owner`), held for
    /// `lease`; a notice taken over from an instance whose lease ran out is
    /// recorded as rescued in its eSIM's decision log.
    pub fn claim(
        &self,
        max: usize,
        lease: std::time::Duration,
        owner: &str,
    ) -> Result<Vec<Held>, StoreError> {
        let Some(group) = self.storage.group() else {
            return Ok(Vec::new());
        };
        let held = leases::held(group.claim(max, lease, owner)?);
        let now = Utc::now();
        for h in held.iter().filter(|h| h.rescued_from.is_some()) {
            self.unit(|tx| leases::note_rescue(tx, h, owner, now))?;
        }
        Ok(held)
    }

    /// Extends a lease; false when it is no longer ours.
    pub fn renew(
        &self,
        id: u64,
        token: i64,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        match self.storage.group() {
            Some(g) => g.renew(&codec::id(id), token, lease),
            None => Ok(true),
        }
    }

    /// Lets go of a lease once the notice's outcome is recorded.
    pub fn release(&self, id: u64, token: i64) -> Result<(), StoreError> {
        match self.storage.group() {
            Some(g) => g.release(&codec::id(id), token),
            None => Ok(()),
        }
    }

    /// How long until the shared queue's first notice is due.
    pub fn next_due_in(&self) -> Result<Option<std::time::Duration>, StoreError> {
        match self.storage.group() {
            Some(g) => g.next_due(),
            None => Ok(None),
        }
    }

    /// Newly queued notices about these eSIMs: the first queued notice of
    /// each, if it waits for quiet hours or a quota, is looked at again (a
    /// newcomer may overtake it or bypass the wait).
    pub fn recheck_heads(&self, esims: &[EsimId]) -> Result<(), StoreError> {
        match self.storage.group() {
            Some(g) => g.recheck_heads(esims),
            None => Ok(()),
        }
    }

    /// The group's rate buckets (SPEC §10); `None` on a store no one shares.
    pub fn shared_rates(&self) -> Option<&dyn crate::store::Group> {
        self.storage.group()
    }

    // ------------------------------------------------ the mail provider's reports

    /// A bounce or complaint report (SPEC §8): finds the notice it is
    /// about, records it in its eSIM's decision log and suppresses the
    /// address as its kind says; returns the decision-log lines written.
    pub fn report(
        &self,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(ReportOutcome, Vec<LogEntry>), StoreError> {
        self.unit_logged(|tx| feedback::apply(tx, report, now))
    }

    /// True the first time `provider`'s signature `token` is presented
    /// (remembered for `store.history`): a replayed signature is refused.
    pub fn first_token(
        &self,
        provider: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.unit(|tx| sent::first_token(tx, provider, token, now))
    }

    pub fn cancel(&self, id: u64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.unit(|tx| outcomes::cancel(tx, id, now))
    }

    pub fn dead(&self) -> Result<Vec<DeadLetter>, StoreError> {
        views::dead(self)
    }

    /// Puts a dead letter back in the queue with its attempts reset, lifting
    /// the suppression its own "user unknown" added; refuses (and keeps the
    /// dead letter) when the address is suppressed for any other reason.
    pub fn retry_dead(&self, id: u64, now: DateTime<Utc>) -> Result<DeadRetry, StoreError> {
        self.unit(|tx| outcomes::retry_dead(tx, id, &self.policy.essential, now))
    }

    /// Makes queued notices due at `now` with nothing to wait for (at start,
    /// for notices a previous run held back for a broken transport).
    pub fn make_due(&self, ids: &[u64], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.unit(|tx| outcomes::make_due(tx, ids, now))
    }

    /// Replaces an order-wide install notice with one per eSIM of the
    /// provider's answer; returns them, for the dispatcher once durable.
    pub fn expand_order(
        &self,
        id: u64,
        esims: &[crate::provider::Esim],
        now: DateTime<Utc>,
    ) -> Result<(Vec<QueuedNotice>, Vec<LogEntry>), StoreError> {
        self.unit_logged(|tx| ready::expand_order(tx, id, esims, &self.policy.essential, now))
    }

    /// Queues `template` again for the eSIM known as `label`, for the
    /// recipient bound to it now, as the operator asked (`resend.rs`).
    pub fn resend(
        &self,
        label: &str,
        template: &str,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(Resend, Vec<LogEntry>), StoreError> {
        self.unit_logged(|tx| {
            resend::resend(tx, label, template, rules, &self.policy.essential, now)
        })
    }

    /// Fills a resent install notice with the install data the provider
    /// gave now; the notice as it now stands.
    pub fn fill_install(
        &self,
        id: u64,
        esim: &crate::provider::Esim,
        now: DateTime<Utc>,
    ) -> Result<Option<QueuedNotice>, StoreError> {
        self.unit(|tx| ready::fill_install(tx, id, esim, now))
    }

    /// Keeps the plan the provider described for an eSIM.
    pub fn cache_plan(
        &self,
        esim: EsimId,
        plan: crate::provider::Plan,
        total_volume: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.unit(|tx| ready::cache_plan(tx, esim, plan.clone(), total_volume, now))
    }

    /// The plan kept for an eSIM, if it still describes its allowance.
    pub fn plan_of(&self, esim: EsimId) -> Result<Option<crate::provider::Plan>, StoreError> {
        Ok(self
            .read(|tx| resolve::record_of(tx, esim))?
            .and_then(|r| r.plan.filter(|p| p.fresh_for(&r.state)).map(|p| p.plan)))
    }

    /// Every parked notice, with its eSIM's identifiers, oldest eSIM first.
    pub fn parked(&self) -> Result<Vec<ParkedNotice>, StoreError> {
        views::parked(self)
    }

    /// When the oldest queued notice was queued (the queue is in id order).
    pub fn oldest_queued(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.storage.scan(Space::Queue, &[]).next() {
            Some(kv) => Ok(Some(codec::decode::<QueuedNotice>(&kv?.1)?.queued_at)),
            None => Ok(None),
        }
    }

    // ------------------------------------------------------------ operations

    /// By any identifier (`kind` None tries each kind in lookup order).
    pub fn esim_view(
        &self,
        kind: Option<IdKind>,
        value: &str,
    ) -> Result<Option<EsimView>, StoreError> {
        self.read(|tx| views::esim_view(tx, kind, value))
    }

    pub fn paused(&self) -> Result<bool, StoreError> {
        Ok(self
            .storage
            .get(Space::Meta, meta::PAUSED)?
            .is_some_and(|v| v == b"1"))
    }

    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.unit(|tx| {
            let flag = if paused { b"1" } else { b"0" };
            tx.put_raw(Space::Meta, meta::PAUSED, flag.to_vec());
            Ok(())
        })
    }

    /// The store's counts. Those this process last committed, unless other
    /// instances share the store: then what the store holds now (the
    /// process's own copy when it cannot be read).
    pub fn counts(&self) -> Counts {
        let kept = *self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let counts = if self.is_shared() {
            self.stored_counts().unwrap_or(kept)
        } else {
            kept
        };
        counts.applied_to(Counts::default())
    }

    /// When the last delivery was accepted, kept across restarts (SPEC §9).
    pub fn last_webhook(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .storage
            .get(Space::Meta, meta::LAST_WEBHOOK)?
            .and_then(|v| codec::read_id(&v))
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64)))
    }

    /// A random key kept in the store, created (and synced) on first use,
    /// e.g. for unsubscribe links, so they stay valid across restarts.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let key = meta::secret(name);
        if let Some(v) = self.storage.get(Space::Meta, &key)? {
            return Ok(v);
        }
        let value = self.unit(|tx| {
            if let Some(v) = tx.get_raw(Space::Meta, &key)? {
                return Ok(v);
            }
            let fresh: [u8; 32] = rand::random();
            tx.put_raw(Space::Meta, &key, fresh.to_vec());
            Ok(fresh.to_vec())
        })?;
        self.flush()?;
        Ok(value)
    }

    /// Writes a consistent copy of the store into `dir` (which must not hold one yet).
    pub fn backup(&self, dir: &Path) -> Result<(), StoreError> {
        self.storage.backup(dir)
    }

    // ------------------------------------------------------- daily counters

    /// The zone whose calendar days the daily counters count.
    pub fn stats_zone(&self) -> chrono_tz::Tz {
        self.policy.zone
    }

    /// The daily counters from `from` to `to` (inclusive), per day and
    /// template with any count, oldest first (see `stats`).
    pub fn daily_stats(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DayStats>, StoreError> {
        stats::read(self, from, to)
    }

    /// The first day whose counters `history` keeps at `now`.
    pub fn first_kept_day(&self, now: DateTime<Utc>, history: Duration) -> chrono::NaiveDate {
        stats::first_kept_day(self.policy.zone, now, history)
    }

    /// Appends one line to an eSIM's decision log in a unit of its own,
    /// counted like every other line (a note from outside the engine's own
    /// decisions, such as a mail provider's report about a sent notice).
    pub fn append_log(&self, esim: EsimId, entry: LogEntry) -> Result<(), StoreError> {
        self.unit(|tx| {
            tx.log(esim, entry.clone());
            Ok(())
        })
    }

    /// Removes what has aged out; expires parked notices older than `park_for`.
    pub fn retain(&self, now: DateTime<Utc>, ages: &Ages) -> Result<RetentionReport, StoreError> {
        retention::retain(self, now, ages)
    }
}
