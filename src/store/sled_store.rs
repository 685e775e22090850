//! The sled implementation of [`Store`].
//!
//! Decisions are taken one at a time: every write operation holds one lock
//! while it reads what it needs, computes, and commits its whole write set as
//! one atomic sled batch. All records live in one sled tree, each kind under
//! a one-byte prefix (a "space"): a batch on one tree is atomic and far
//! cheaper than a transaction across trees, which measured as half of the
//! intake's cost. Holding the lock is cheap (memory
//! reads and one in-memory commit); what is slow, the fsync, happens outside
//! it in the group-commit [`Flusher`]. This makes "sixteen concurrent
//! deliveries of the same notice queue one email" true by construction, and
//! a crash can never leave a dedup key without its queue entry.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::flusher::{Flusher, SledFiles};
use super::keys;
use super::*;
use crate::customers::{mask_email, suppression_key, IdKind, Recipient};
use crate::event::{Event, Identifiers};
use crate::policy::{self, EsimState, Notice, Rules};
use crate::vars;

/// The kinds of record, each a keyspace of the one tree.
#[derive(Clone, Copy)]
enum T {
    Dedup = 0,
    Events,
    Esims,
    Aliases,
    Customers,
    Queue,
    Dead,
    Log,
    Suppress,
    Meta,
}

/// The secret that keys the hashes of forgotten addresses.
const FORGOTTEN_SECRET: &str = "forgotten";

/// `#` and HMAC-SHA256(secret, address lower-cased) in hex: the same
/// address always gives the same key, and the key gives back no address
/// without the store's secret. It holds no `@`, so it never equals the key
/// of an address still stored in clear.
fn forgotten_key(secret: &[u8], email: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(suppression_key(email).as_bytes());
    format!("#{}", hex::encode(mac.finalize().into_bytes()))
}

/// The key prefix of each space, in the order of [`T`]. Stable: it is the
/// layout on disk.
const PREFIXES: [u8; 10] = [b'd', b'e', b's', b'a', b'c', b'q', b'x', b'l', b'u', b'm'];

/// The sled tree holding every space.
const TREE: &str = "esim-notify";

/// One keyspace of the tree: the same reads as a `sled::Tree`, with the
/// prefix added to keys going in and stripped from keys coming out.
struct Space {
    tree: sled::Tree,
    prefix: u8,
}

type Entry = sled::Result<(sled::IVec, sled::IVec)>;

impl Space {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(self.key(key.as_ref()))
    }

    fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> impl Iterator<Item = Entry> {
        self.tree
            .scan_prefix(self.key(prefix.as_ref()))
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    fn iter(&self) -> impl Iterator<Item = Entry> {
        self.scan_prefix([])
    }

    fn first(&self) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        self.iter().next().transpose()
    }
}

const META_NEXT_ID: &[u8] = b"next_id";
/// Ids reserved per write of [`META_NEXT_ID`].
const ID_BLOCK: u64 = 4096;
const META_COUNTS: &[u8] = b"counts";
const META_PAUSED: &[u8] = b"paused";
/// When the last delivery was accepted (Unix ms), so the metric survives a restart.
const META_LAST_WEBHOOK: &[u8] = b"last_webhook";

/// What is kept of one eSIM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EsimRecord {
    id: EsimId,
    state: EsimState,
    #[serde(default)]
    parked: Vec<Parked>,
    created_at: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
}

/// A binding as stored. `iccid_owner` is the esimTranNo the ICCID belonged
/// to when bound (or first seen after binding): ICCIDs are recycled, and a
/// customer bound by ICCID must not follow it to the next eSIM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredBinding {
    recipient: Recipient,
    #[serde(default)]
    iccid_owner: Option<String>,
    bound_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventRecord {
    at: DateTime<Utc>,
    esim: Option<EsimId>,
    notify_type: String,
    notify_id: Option<String>,
    body: Value,
}

/// Writes collected under the lock and committed as one atomic batch.
#[derive(Default)]
struct Writes {
    batch: sled::Batch,
    touched: bool,
}

impl Writes {
    fn put<V: Serialize>(&mut self, t: T, key: impl AsRef<[u8]>, value: &V) {
        let bytes = serde_json::to_vec(value).expect("serializing a store record");
        self.put_raw(t, key, bytes);
    }
    fn put_raw(&mut self, t: T, key: impl AsRef<[u8]>, bytes: Vec<u8>) {
        self.batch.insert(prefixed(t, key.as_ref()), bytes);
        self.touched = true;
    }
    fn del(&mut self, t: T, key: impl AsRef<[u8]>) {
        self.batch.remove(prefixed(t, key.as_ref()));
        self.touched = true;
    }
}

fn prefixed(t: T, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(PREFIXES[t as usize]);
    k.extend_from_slice(key);
    k
}

/// State that only changes under the write lock.
struct Locked {
    next_id: u64,
    /// Ids below this are reserved on disk; the counter is persisted only
    /// when it passes it, a block at a time (as sled's own `generate_id`
    /// does), not on every commit. After a crash ids resume past the block.
    reserved: u64,
    counts: Counts,
    /// The counts as last written.
    persisted: Counts,
    /// Log lines written by the operation holding the lock.
    written: Vec<LogEntry>,
}

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    spaces: Vec<Space>,
    lock: Mutex<Locked>,
    /// A copy of the counts for readers that must not wait for the lock (metrics).
    counts: Mutex<Counts>,
    flusher: Flusher,
    /// Shared by the flusher thread and [`Store::flush`] (shutdown, CLI).
    files: Arc<Mutex<SledFiles>>,
    dedup_window: Duration,
}

/// sled's flush, then the real sync it leaves out (see [`SledFiles`]).
fn sync(db: &sled::Db, files: &Mutex<SledFiles>) -> Result<(), StoreError> {
    db.flush().map_err(io)?;
    // A panic mid-sync leaves nothing half done: the next sync redoes it.
    let mut f = files.lock().unwrap_or_else(|p| p.into_inner());
    f.sync().map_err(|e| io(format!("fdatasync: {e}")))
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl SledStore {
    /// Opens (or creates) the store. Fails with [`StoreError::Locked`] when a
    /// running server holds it: the CLI then goes through the admin API.
    pub fn open(
        path: &Path,
        cache_bytes: u64,
        dedup_window: Duration,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
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
        let spaces: Vec<Space> = PREFIXES
            .iter()
            .map(|p| Space {
                tree: tree.clone(),
                prefix: *p,
            })
            .collect();
        let meta = &spaces[T::Meta as usize];
        let next_id = match meta.get(META_NEXT_ID).map_err(io)? {
            Some(b) => keys::read_id(&b).ok_or_else(|| StoreError::Corrupt("next_id".into()))?,
            None => 1,
        };
        let counts: Counts = match meta.get(META_COUNTS).map_err(io)? {
            Some(b) => decode(&b)?,
            None => Counts::default(),
        };
        let files = Arc::new(Mutex::new(
            SledFiles::open(path).map_err(|e| io(format!("syncing {}: {e}", path.display())))?,
        ));
        let flush_db = db.clone();
        let flush_files = files.clone();
        let flusher =
            Flusher::spawn(move || sync(&flush_db, &flush_files).map_err(|e| e.to_string()));
        Ok(SledStore {
            db,
            tree,
            spaces,
            lock: Mutex::new(Locked {
                next_id,
                reserved: next_id,
                counts,
                persisted: counts,
                written: Vec::new(),
            }),
            counts: Mutex::new(counts),
            flusher,
            files,
            dedup_window,
        })
    }

    fn tree(&self, t: T) -> &Space {
        &self.spaces[t as usize]
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding the lock cannot leave a half-written commit
        // (commits are atomic), so the data behind a poisoned lock is fine.
        let mut l = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        l.written.clear();
        l
    }

    fn get<V: DeserializeOwned>(
        &self,
        t: T,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<V>, StoreError> {
        match self.tree(t).get(key).map_err(io)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn scan<V: DeserializeOwned>(&self, t: T) -> Result<Vec<(sled::IVec, V)>, StoreError> {
        self.tree(t)
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(io)?;
                Ok((k, decode(&v)?))
            })
            .collect()
    }

    fn next_id(l: &mut Locked) -> u64 {
        let id = l.next_id;
        l.next_id += 1;
        id
    }

    /// Commits a write set together with the id reservation and the counts,
    /// when those changed: every key written costs sled log space.
    fn commit(&self, l: &mut Locked, mut w: Writes) -> Result<(), StoreError> {
        if !w.touched {
            return Ok(());
        }
        let reserve = l.next_id >= l.reserved;
        if reserve {
            w.put_raw(
                T::Meta,
                META_NEXT_ID,
                keys::id(l.next_id + ID_BLOCK).to_vec(),
            );
        }
        if l.counts != l.persisted {
            w.put(T::Meta, META_COUNTS, &l.counts);
        }
        self.tree.apply_batch(w.batch).map_err(io)?;
        if reserve {
            l.reserved = l.next_id + ID_BLOCK;
        }
        l.persisted = l.counts;
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = l.counts;
        Ok(())
    }

    fn log(&self, l: &mut Locked, w: &mut Writes, esim: EsimId, entry: LogEntry) {
        let seq = Self::next_id(l);
        w.put(T::Log, keys::log(esim, seq), &entry);
        l.written.push(entry);
    }

    fn alias(&self, kind: IdKind, value: &str) -> Result<Option<EsimId>, StoreError> {
        Ok(self
            .tree(T::Aliases)
            .get(keys::ident(kind, value))
            .map_err(io)?
            .and_then(|b| keys::read_id(&b)))
    }

    fn record_of(&self, esim: EsimId) -> Result<Option<EsimRecord>, StoreError> {
        self.get(T::Esims, keys::id(esim))
    }

    /// Finds the eSIM an event is about, or starts a new one (SPEC §5).
    /// esimTranNo is the stable key; an eSIM known only by orderNo or
    /// transactionId (from ORDER_STATUS) adopts the first esimTranNo it is
    /// seen with; an ICCID seen with a different esimTranNo than the one it
    /// belongs to is a recycled ICCID, hence a new eSIM.
    fn resolve(
        &self,
        l: &mut Locked,
        w: &mut Writes,
        ids: &Identifiers,
        now: DateTime<Utc>,
    ) -> Result<EsimRecord, StoreError> {
        let mut found: Option<EsimRecord> = None;
        if let Some(t) = &ids.esim_tran_no {
            if let Some(id) = self.alias(IdKind::EsimTranNo, t)? {
                found = self.record_of(id)?;
            } else {
                // Adopt an eSIM known without an esimTranNo, never one with another.
                for kind in [IdKind::Iccid, IdKind::OrderNo, IdKind::TransactionId] {
                    let Some(v) = kind.get(ids) else { continue };
                    if let Some(id) = self.alias(kind, v)? {
                        if let Some(rec) = self.record_of(id)? {
                            if rec.state.ids.esim_tran_no.is_none() {
                                found = Some(rec);
                                break;
                            }
                        }
                    }
                }
            }
        } else {
            for kind in [IdKind::Iccid, IdKind::OrderNo, IdKind::TransactionId] {
                let Some(v) = kind.get(ids) else { continue };
                if let Some(id) = self.alias(kind, v)? {
                    found = self.record_of(id)?;
                    if found.is_some() {
                        break;
                    }
                }
            }
        }
        let mut rec = match found {
            Some(rec) => rec,
            None => EsimRecord {
                id: Self::next_id(l),
                state: EsimState::default(),
                parked: Vec::new(),
                created_at: now,
                last_event_at: now,
            },
        };
        // Learn the identifiers; the ICCID moves to this eSIM if it was recycled.
        let known = &mut rec.state.ids;
        if known.esim_tran_no.is_none() {
            known.esim_tran_no = ids.esim_tran_no.clone();
        }
        if ids.iccid.is_some() {
            known.iccid = ids.iccid.clone();
        }
        if known.order_no.is_none() {
            known.order_no = ids.order_no.clone();
        }
        if known.transaction_id.is_none() {
            known.transaction_id = ids.transaction_id.clone();
        }
        for kind in IdKind::LOOKUP_ORDER {
            let Some(v) = kind.get(ids) else { continue };
            let existing = self.alias(kind, v)?;
            let claim = match kind {
                IdKind::EsimTranNo | IdKind::Iccid => existing != Some(rec.id),
                // An order may hold several eSIMs: the first keeps the alias.
                IdKind::OrderNo | IdKind::TransactionId => existing.is_none(),
            };
            if claim {
                w.put_raw(T::Aliases, keys::ident(kind, v), keys::id(rec.id).to_vec());
            }
        }
        // A binding made by ICCID before any eSIM was seen with it belongs to
        // the first eSIM that shows up with that ICCID.
        if let (Some(iccid), Some(tran)) = (&ids.iccid, &rec.state.ids.esim_tran_no) {
            let key = keys::ident(IdKind::Iccid, iccid);
            if let Some(mut b) = self.get::<StoredBinding>(T::Customers, &key)? {
                if b.iccid_owner.is_none() {
                    b.iccid_owner = Some(tran.clone());
                    w.put(T::Customers, &key, &b);
                }
            }
        }
        Ok(rec)
    }

    /// The recipient of an eSIM by its identifiers in SPEC §6 order, with
    /// `extra` bindings (being written now) taking precedence for their keys.
    fn recipient_for(
        &self,
        state: &EsimState,
        extra: Option<(&Identifiers, &StoredBinding)>,
    ) -> Result<Option<Recipient>, StoreError> {
        for kind in IdKind::LOOKUP_ORDER {
            let Some(v) = kind.get(&state.ids) else {
                continue;
            };
            let binding = match extra {
                Some((ids, b)) if kind.get(ids) == Some(v) => {
                    let mut b = b.clone();
                    if kind == IdKind::Iccid && b.iccid_owner.is_none() {
                        b.iccid_owner = state.ids.esim_tran_no.clone();
                    }
                    Some(b)
                }
                _ => self.get::<StoredBinding>(T::Customers, keys::ident(kind, v))?,
            };
            let Some(b) = binding else { continue };
            if kind == IdKind::Iccid {
                if let Some(owner) = &b.iccid_owner {
                    if state.ids.esim_tran_no.as_ref().is_some_and(|t| t != owner) {
                        continue;
                    }
                }
            }
            return Ok(Some(b.recipient));
        }
        Ok(None)
    }

    /// The key a forgotten address's suppression is kept under, if any
    /// address was ever forgotten. Reads the secret without creating it, so
    /// it is safe under the lock.
    fn forgotten_suppression_key(&self, email: &str) -> Result<Option<String>, StoreError> {
        let secret = self
            .tree(T::Meta)
            .get(format!("secret/{FORGOTTEN_SECRET}"))
            .map_err(io)?;
        Ok(secret.map(|k| forgotten_key(&k, email)))
    }

    /// Queues a notice for a known recipient, or records why it is not sent.
    #[allow(clippy::too_many_arguments)]
    fn queue_or_suppress(
        &self,
        l: &mut Locked,
        w: &mut Writes,
        rec: &EsimRecord,
        identity: String,
        notice: Notice,
        vars: Value,
        recipient: Recipient,
        how: LogKind,
        now: DateTime<Utc>,
        queued: &mut Vec<QueuedNotice>,
    ) -> Result<(), StoreError> {
        let template = Some(notice.template.clone());
        if let Some(s) = self.suppression(&recipient.email)? {
            let detail = format!(
                "{identity}: {} is suppressed ({})",
                mask_email(&recipient.email),
                s.reason
            );
            self.log(
                l,
                w,
                rec.id,
                LogEntry::new(now, LogKind::Suppressed, template.as_deref(), detail),
            );
            return Ok(());
        }
        let id = Self::next_id(l);
        let qn = QueuedNotice {
            id,
            esim: rec.id,
            identity,
            notice,
            recipient,
            queued_at: now,
            attempts: 0,
            next_attempt: now,
            waiting_for: None,
            last_error: None,
            vars,
        };
        w.put(T::Queue, keys::id(id), &qn);
        l.counts.outbox += 1;
        let detail = format!("{} to {}", qn.identity, mask_email(&qn.recipient.email));
        self.log(
            l,
            w,
            rec.id,
            LogEntry::new(now, how, template.as_deref(), detail).about(id),
        );
        queued.push(qn);
        Ok(())
    }

    /// Drops the notices parked longer than `park_for` (SPEC §6: they
    /// expire), logging each; returns how many.
    fn expire_parked(
        &self,
        l: &mut Locked,
        w: &mut Writes,
        rec: &mut EsimRecord,
        now: DateTime<Utc>,
        park_for: Duration,
    ) -> usize {
        let (gone, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut rec.parked).into_iter().partition(|p| {
                now.signed_duration_since(p.parked_at)
                    .to_std()
                    .is_ok_and(|age| age >= park_for)
            });
        rec.parked = keep;
        l.counts.parked = l.counts.parked.saturating_sub(gone.len() as u64);
        for p in &gone {
            let detail = format!(
                "{}: parked since {}, longer than customers.park_for, with no recipient",
                p.identity,
                p.parked_at.to_rfc3339()
            );
            self.log(
                l,
                w,
                rec.id,
                LogEntry::new(now, LogKind::Expired, Some(&p.notice.template), detail),
            );
        }
        gone.len()
    }

    /// Deletes keys a thousand per commit, so that retention never holds
    /// the write lock (and so intake) for a whole scan.
    fn delete_in_chunks(&self, t: T, keys: &[sled::IVec]) -> Result<usize, StoreError> {
        for chunk in keys.chunks(1000) {
            let mut l = self.lock();
            let mut w = Writes::default();
            for k in chunk {
                w.del(t, k);
            }
            self.commit(&mut l, w)?;
        }
        Ok(keys.len())
    }

    /// Takes a notice out of the queue, unsent, and says why in its log.
    fn cancel_queued(
        &self,
        l: &mut Locked,
        w: &mut Writes,
        q: &QueuedNotice,
        now: DateTime<Utc>,
        why: &str,
    ) {
        w.del(T::Queue, keys::id(q.id));
        l.counts.outbox = l.counts.outbox.saturating_sub(1);
        let entry =
            LogEntry::new(now, LogKind::Cancelled, Some(&q.notice.template), why).about(q.id);
        self.log(l, w, q.esim, entry);
    }

    fn esim_key(state: &EsimState, id: EsimId) -> String {
        state
            .ids
            .esim_tran_no
            .clone()
            .unwrap_or_else(|| format!("esim-{id}"))
    }

    fn find_esim(
        &self,
        kind: Option<IdKind>,
        value: &str,
    ) -> Result<Option<EsimRecord>, StoreError> {
        let kinds: Vec<IdKind> = match kind {
            Some(k) => vec![k],
            None => IdKind::LOOKUP_ORDER.to_vec(),
        };
        for k in kinds {
            if let Some(id) = self.alias(k, value)? {
                if let Some(rec) = self.record_of(id)? {
                    return Ok(Some(rec));
                }
            }
        }
        Ok(None)
    }
}

fn event_summary(event: &Event) -> String {
    let mut s = event.notify_type.as_str().to_string();
    if let Some(id) = &event.notify_id {
        s.push_str(&format!(" notifyId={id}"));
    }
    if let Some(st) = &event.esim_status {
        s.push_str(&format!(" esimStatus={st}"));
    }
    if let Some(st) = &event.smdp_status {
        s.push_str(&format!(" smdpStatus={st}"));
    }
    if let (Some(r), Some(t)) = (event.usage.remain, event.usage.total_volume) {
        s.push_str(&format!(" remain={r}/{t}"));
    }
    if let Some(t) = event.validity.expired_time {
        s.push_str(&format!(" expiredTime={}", t.to_rfc3339()));
    }
    if !event.unreadable.is_empty() {
        s.push_str(&format!(" unreadable={}", event.unreadable.join(",")));
    }
    s
}

impl Store for SledStore {
    fn ingest(
        &self,
        event: &Event,
        body: &Value,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let mut l = self.lock();
        let mut w = Writes::default();
        if let Some(nid) = &event.notify_id {
            if let Some(seen) = self.tree(T::Dedup).get(nid).map_err(io)? {
                let seen = keys::read_id(&seen).unwrap_or(0) as i64;
                if millis(now) - seen < self.dedup_window.as_millis() as i64 {
                    return Ok(IngestOutcome::Duplicate);
                }
            }
            w.put_raw(T::Dedup, nid, keys::id(millis(now) as u64).to_vec());
        }
        let mut queued = Vec::new();
        let esim = if event.ids.is_empty() {
            None
        } else {
            let mut rec = self.resolve(&mut l, &mut w, &event.ids, now)?;
            let outcome = policy::apply(&mut rec.state, event, rules, now);
            let summary = event_summary(event);
            self.log(
                &mut l,
                &mut w,
                rec.id,
                LogEntry::new(now, LogKind::Event, None, summary),
            );
            for note in outcome.notes {
                self.log(
                    &mut l,
                    &mut w,
                    rec.id,
                    LogEntry::new(now, LogKind::Note, None, note),
                );
            }
            let key = Self::esim_key(&rec.state, rec.id);
            for notice in outcome.notices {
                let identity = notice.identity(&key);
                let vars = vars::event_vars(event, &notice, &rec.state);
                match self.recipient_for(&rec.state, None)? {
                    Some(r) => self.queue_or_suppress(
                        &mut l,
                        &mut w,
                        &rec,
                        identity,
                        notice,
                        vars,
                        r,
                        LogKind::Queued,
                        now,
                        &mut queued,
                    )?,
                    None => {
                        let template = Some(notice.template.clone());
                        self.log(
                            &mut l,
                            &mut w,
                            rec.id,
                            LogEntry::new(
                                now,
                                LogKind::Parked,
                                template.as_deref(),
                                format!("{identity}: no recipient bound to this eSIM yet"),
                            ),
                        );
                        rec.parked.push(Parked {
                            identity,
                            notice,
                            vars,
                            parked_at: now,
                        });
                        l.counts.parked += 1;
                    }
                }
            }
            rec.last_event_at = now;
            w.put(T::Esims, keys::id(rec.id), &rec);
            Some(rec.id)
        };
        let seq = Self::next_id(&mut l);
        w.put(
            T::Events,
            keys::id(seq),
            &EventRecord {
                at: now,
                esim,
                notify_type: event.notify_type.as_str().to_string(),
                notify_id: event.notify_id.clone(),
                body: body.clone(),
            },
        );
        w.put_raw(
            T::Meta,
            META_LAST_WEBHOOK,
            keys::id(millis(now) as u64).to_vec(),
        );
        self.commit(&mut l, w)?;
        Ok(IngestOutcome::Accepted {
            esim,
            queued,
            decisions: std::mem::take(&mut l.written),
        })
    }

    fn durable(&self) -> oneshot::Receiver<Result<(), String>> {
        self.flusher.durable()
    }

    fn flush(&self) -> Result<(), StoreError> {
        sync(&self.db, &self.files)
    }

    fn bind(
        &self,
        recipient: &Recipient,
        ids: &Identifiers,
        park_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<BindReport, StoreError> {
        let mut l = self.lock();
        let mut w = Writes::default();
        let mut report = BindReport::default();
        let mut esims = BTreeSet::new();
        let template_binding = StoredBinding {
            recipient: recipient.clone(),
            iccid_owner: None,
            bound_at: now,
        };
        for kind in IdKind::LOOKUP_ORDER {
            let Some(v) = kind.get(ids) else { continue };
            let alias = self.alias(kind, v)?;
            let mut b = template_binding.clone();
            if let (IdKind::Iccid, Some(id)) = (kind, alias) {
                b.iccid_owner = self.record_of(id)?.and_then(|r| r.state.ids.esim_tran_no);
            }
            w.put(T::Customers, keys::ident(kind, v), &b);
            esims.extend(alias);
        }
        for esim in esims {
            let Some(mut rec) = self.record_of(esim)? else {
                continue;
            };
            if rec.parked.is_empty() {
                continue;
            }
            let Some(r) = self.recipient_for(&rec.state, Some((ids, &template_binding)))? else {
                continue;
            };
            self.expire_parked(&mut l, &mut w, &mut rec, now, park_for);
            let live = std::mem::take(&mut rec.parked);
            l.counts.parked = l.counts.parked.saturating_sub(live.len() as u64);
            let notices: Vec<Notice> = live.iter().map(|p| p.notice.clone()).collect();
            let verdicts = policy::release(&rec.state, &notices, now);
            let mut queued = Vec::new();
            for (p, verdict) in live.into_iter().zip(verdicts) {
                match verdict {
                    Ok(()) => self.queue_or_suppress(
                        &mut l,
                        &mut w,
                        &rec,
                        p.identity,
                        p.notice,
                        p.vars,
                        r.clone(),
                        LogKind::Released,
                        now,
                        &mut queued,
                    )?,
                    Err(reason) => {
                        report.superseded += 1;
                        self.log(
                            &mut l,
                            &mut w,
                            rec.id,
                            LogEntry::new(
                                now,
                                LogKind::Superseded,
                                Some(&p.notice.template),
                                format!("{}: {reason}", p.identity),
                            ),
                        );
                    }
                }
            }
            report.released.extend(queued);
            w.put(T::Esims, keys::id(rec.id), &rec);
        }
        self.commit(&mut l, w)?;
        report.decisions = std::mem::take(&mut l.written);
        Ok(report)
    }

    fn recipient_by(&self, kind: IdKind, value: &str) -> Result<Option<Recipient>, StoreError> {
        Ok(self
            .get::<StoredBinding>(T::Customers, keys::ident(kind, value))?
            .map(|b| b.recipient))
    }

    fn bindings_of(&self, email: &str) -> Result<Vec<(IdKind, String)>, StoreError> {
        let email = email.trim();
        let mut out = Vec::new();
        for (k, b) in self.scan::<StoredBinding>(T::Customers)? {
            if !b.recipient.email.eq_ignore_ascii_case(email) {
                continue;
            }
            let key = String::from_utf8_lossy(&k);
            let Some((tag, value)) = key.split_once(':') else {
                continue;
            };
            if let Some(kind) = IdKind::LOOKUP_ORDER.into_iter().find(|k| k.tag() == tag) {
                out.push((kind, value.to_string()));
            }
        }
        Ok(out)
    }

    fn unbind(&self, kind: IdKind, value: &str) -> Result<bool, StoreError> {
        let mut l = self.lock();
        let key = keys::ident(kind, value);
        if self.tree(T::Customers).get(&key).map_err(io)?.is_none() {
            return Ok(false);
        }
        let mut w = Writes::default();
        w.del(T::Customers, &key);
        self.commit(&mut l, w)?;
        Ok(true)
    }

    fn forget(&self, email: &str, now: DateTime<Utc>) -> Result<ForgetReport, StoreError> {
        // Before the lock: `secret` takes it to create the key the first time.
        let hash_key = self.secret(FORGOTTEN_SECRET)?;
        let mut l = self.lock();
        let mut w = Writes::default();
        let mut report = ForgetReport::default();
        // A suppressed address stays suppressed, but only as a keyed hash: it
        // is still never mailed, and the address itself is no longer stored.
        let plain = suppression_key(email);
        if let Some(s) = self.get::<Suppression>(T::Suppress, &plain)? {
            let hashed = forgotten_key(&hash_key, email);
            w.del(T::Suppress, &plain);
            w.put(
                T::Suppress,
                &hashed,
                &Suppression {
                    email: hashed.clone(),
                    ..s
                },
            );
        }
        let same = |e: &str| e.eq_ignore_ascii_case(email.trim());
        for (k, b) in self.scan::<StoredBinding>(T::Customers)? {
            if same(&b.recipient.email) {
                w.del(T::Customers, &k);
                report.bindings += 1;
            }
        }
        for (_, q) in self.scan::<QueuedNotice>(T::Queue)? {
            if same(&q.recipient.email) {
                self.cancel_queued(&mut l, &mut w, &q, now, "customer forgotten");
                report.cancelled += 1;
                report.cancelled_ids.push(q.id);
            }
        }
        for (k, mut d) in self.scan::<DeadLetter>(T::Dead)? {
            if same(&d.notice.recipient.email) {
                d.notice.recipient = Recipient {
                    email: "forgotten".into(),
                    name: None,
                    locale: None,
                    timezone: None,
                };
                d.notice.vars = Value::Null;
                w.put(T::Dead, &k, &d);
                report.redacted += 1;
            }
        }
        self.commit(&mut l, w)?;
        Ok(report)
    }

    fn suppress(&self, email: &str, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut l = self.lock();
        let mut w = Writes::default();
        let key = suppression_key(email);
        w.put(
            T::Suppress,
            &key,
            &Suppression {
                email: key.clone(),
                reason: reason.to_string(),
                at: now,
                auto_for: Vec::new(),
            },
        );
        self.commit(&mut l, w)
    }

    fn unsuppress(&self, email: &str) -> Result<bool, StoreError> {
        let mut l = self.lock();
        let mut key = suppression_key(email);
        if self.tree(T::Suppress).get(&key).map_err(io)?.is_none() {
            match self.forgotten_suppression_key(email)? {
                Some(k) if self.tree(T::Suppress).get(&k).map_err(io)?.is_some() => key = k,
                _ => return Ok(false),
            }
        }
        let mut w = Writes::default();
        w.del(T::Suppress, &key);
        self.commit(&mut l, w)?;
        Ok(true)
    }

    fn suppression(&self, email: &str) -> Result<Option<Suppression>, StoreError> {
        if let Some(s) = self.get(T::Suppress, suppression_key(email))? {
            return Ok(Some(s));
        }
        match self.forgotten_suppression_key(email)? {
            Some(k) => self.get(T::Suppress, k),
            None => Ok(None),
        }
    }

    fn suppressions(&self) -> Result<Vec<Suppression>, StoreError> {
        Ok(self
            .scan(T::Suppress)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    fn outbox(&self) -> Result<Vec<QueuedNotice>, StoreError> {
        Ok(self.scan(T::Queue)?.into_iter().map(|(_, q)| q).collect())
    }

    fn queued(&self, id: u64) -> Result<Option<QueuedNotice>, StoreError> {
        self.get(T::Queue, keys::id(id))
    }

    fn esim_state(&self, esim: EsimId) -> Result<Option<(EsimState, Identifiers)>, StoreError> {
        Ok(self.record_of(esim)?.map(|r| {
            let ids = r.state.ids.clone();
            (r.state, ids)
        }))
    }

    fn record(&self, id: u64, outcome: &SendOutcome, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut l = self.lock();
        let Some(mut q) = self.get::<QueuedNotice>(T::Queue, keys::id(id))? else {
            // Cancelled or forgotten while it was being sent.
            return Ok(());
        };
        let mut w = Writes::default();
        let template = q.notice.template.clone();
        let entry = |what: LogKind, detail: String| {
            LogEntry::new(now, what, Some(&template), detail).about(id)
        };
        let done = match outcome {
            SendOutcome::Sent { message_id } => {
                let e = entry(
                    LogKind::Sent,
                    format!(
                        "to {} (attempt {}), Message-ID {message_id}",
                        mask_email(&q.recipient.email),
                        q.attempts + 1
                    ),
                );
                self.log(&mut l, &mut w, q.esim, e);
                true
            }
            SendOutcome::Retry {
                error,
                next_attempt,
            } => {
                q.attempts += 1;
                q.last_error = Some(error.clone());
                q.next_attempt = *next_attempt;
                q.waiting_for = Some(super::BACKOFF.into());
                let e = entry(
                    LogKind::Failed,
                    format!(
                        "attempt {}: {error}; retry at {}",
                        q.attempts,
                        next_attempt.to_rfc3339()
                    ),
                );
                self.log(&mut l, &mut w, q.esim, e);
                w.put(T::Queue, keys::id(id), &q);
                false
            }
            SendOutcome::Wait { until, why } => {
                q.next_attempt = *until;
                q.waiting_for = Some(why.clone());
                w.put(T::Queue, keys::id(id), &q);
                false
            }
            SendOutcome::Dead { reason, suppress } => {
                let e = entry(LogKind::Dead, reason.clone());
                self.log(&mut l, &mut w, q.esim, e);
                if let Some(why) = suppress {
                    let key = suppression_key(&q.recipient.email);
                    // Never turn a suppression an operator or the customer
                    // made into an automatic one a retry could lift.
                    let s = match self.get::<Suppression>(T::Suppress, &key)? {
                        Some(s) if s.auto_for.is_empty() => None,
                        Some(mut s) => {
                            if !s.added_by(id) {
                                s.auto_for.push(id);
                            }
                            Some(s)
                        }
                        None => Some(Suppression {
                            email: key.clone(),
                            reason: why.clone(),
                            at: now,
                            auto_for: vec![id],
                        }),
                    };
                    if let Some(s) = s {
                        w.put(T::Suppress, &key, &s);
                    }
                }
                q.attempts += 1;
                // The dead letter's row shows what its last attempt met, as
                // a queued notice's does.
                q.last_error = Some(reason.clone());
                w.put(
                    T::Dead,
                    keys::id(id),
                    &DeadLetter {
                        notice: q.clone(),
                        reason: reason.clone(),
                        died_at: now,
                    },
                );
                l.counts.dead += 1;
                true
            }
            SendOutcome::Superseded(reason) => {
                self.log(
                    &mut l,
                    &mut w,
                    q.esim,
                    entry(LogKind::Superseded, reason.clone()),
                );
                true
            }
            SendOutcome::Suppressed(reason) => {
                self.log(
                    &mut l,
                    &mut w,
                    q.esim,
                    entry(LogKind::Suppressed, reason.clone()),
                );
                true
            }
        };
        if done {
            w.del(T::Queue, keys::id(id));
            l.counts.outbox = l.counts.outbox.saturating_sub(1);
        }
        self.commit(&mut l, w)
    }

    fn cancel(&self, id: u64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut l = self.lock();
        let Some(q) = self.get::<QueuedNotice>(T::Queue, keys::id(id))? else {
            return Ok(false);
        };
        let mut w = Writes::default();
        self.cancel_queued(&mut l, &mut w, &q, now, "cancelled by the operator");
        self.commit(&mut l, w)?;
        Ok(true)
    }

    fn dead(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.scan(T::Dead)?.into_iter().map(|(_, d)| d).collect())
    }

    fn retry_dead(&self, id: u64, now: DateTime<Utc>) -> Result<DeadRetry, StoreError> {
        let mut l = self.lock();
        let Some(d) = self.get::<DeadLetter>(T::Dead, keys::id(id))? else {
            return Ok(DeadRetry::NotFound);
        };
        if d.notice.recipient.email == "forgotten" {
            return Ok(DeadRetry::NotFound);
        }
        let mut w = Writes::default();
        let key = suppression_key(&d.notice.recipient.email);
        let lifted = match self.get::<Suppression>(T::Suppress, &key)? {
            Some(s) if s.added_by(id) => {
                w.del(T::Suppress, &key);
                Some(s)
            }
            // Requeued it would only be dropped as suppressed, and the dead
            // letter lost with it.
            Some(s) => return Ok(DeadRetry::Suppressed(s)),
            None => None,
        };
        let mut q = d.notice;
        q.attempts = 0;
        q.queued_at = now;
        q.next_attempt = now;
        q.waiting_for = None;
        w.del(T::Dead, keys::id(id));
        w.put(T::Queue, keys::id(id), &q);
        l.counts.dead = l.counts.dead.saturating_sub(1);
        l.counts.outbox += 1;
        let template = q.notice.template.clone();
        if let Some(s) = &lifted {
            let e = LogEntry::new(
                now,
                LogKind::Note,
                Some(&template),
                format!(
                    "suppression of {} ({}) lifted by the retry of the dead letter it came from",
                    mask_email(&s.email),
                    s.reason
                ),
            )
            .about(id);
            self.log(&mut l, &mut w, q.esim, e);
        }
        self.log(
            &mut l,
            &mut w,
            q.esim,
            LogEntry::new(
                now,
                LogKind::Requeued,
                Some(&template),
                format!("dead letter ({}) put back in the queue", d.reason),
            )
            .about(id),
        );
        self.commit(&mut l, w)?;
        Ok(DeadRetry::Requeued {
            notice: Box::new(q),
            lifted,
        })
    }

    fn make_due(&self, ids: &[u64], now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut l = self.lock();
        let mut w = Writes::default();
        for &id in ids {
            if let Some(mut q) = self.get::<QueuedNotice>(T::Queue, keys::id(id))? {
                q.next_attempt = now;
                q.waiting_for = None;
                w.put(T::Queue, keys::id(id), &q);
            }
        }
        self.commit(&mut l, w)
    }

    fn parked(&self) -> Result<Vec<ParkedNotice>, StoreError> {
        let mut out = Vec::new();
        for (_, rec) in self.scan::<EsimRecord>(T::Esims)? {
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

    fn esim_view(&self, kind: Option<IdKind>, value: &str) -> Result<Option<EsimView>, StoreError> {
        let Some(rec) = self.find_esim(kind, value)? else {
            return Ok(None);
        };
        let recipient = self.recipient_for(&rec.state, None)?;
        let decisions = self
            .tree(T::Log)
            .scan_prefix(keys::id(rec.id))
            .map(|r| {
                let (_, v) = r.map_err(io)?;
                decode(&v)
            })
            .collect::<Result<Vec<LogEntry>, _>>()?;
        Ok(Some(EsimView {
            id: rec.id,
            ids: rec.state.ids.clone(),
            state: rec.state,
            recipient,
            parked: rec.parked,
            decisions,
        }))
    }

    fn paused(&self) -> Result<bool, StoreError> {
        Ok(self
            .tree(T::Meta)
            .get(META_PAUSED)
            .map_err(io)?
            .is_some_and(|v| v.as_ref() == b"1"))
    }

    fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        let mut l = self.lock();
        let mut w = Writes::default();
        w.put_raw(
            T::Meta,
            META_PAUSED,
            if paused { b"1".to_vec() } else { b"0".to_vec() },
        );
        self.commit(&mut l, w)
    }

    fn last_webhook(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .tree(T::Meta)
            .get(META_LAST_WEBHOOK)
            .map_err(io)?
            .and_then(|v| keys::read_id(&v))
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64)))
    }

    fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let key = format!("secret/{name}");
        if let Some(v) = self.tree(T::Meta).get(&key).map_err(io)? {
            return Ok(v.to_vec());
        }
        let mut l = self.lock();
        if let Some(v) = self.tree(T::Meta).get(&key).map_err(io)? {
            return Ok(v.to_vec());
        }
        let fresh: [u8; 32] = rand::random();
        let mut w = Writes::default();
        w.put_raw(T::Meta, &key, fresh.to_vec());
        self.commit(&mut l, w)?;
        self.flush()?;
        Ok(fresh.to_vec())
    }

    fn oldest_queued(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.tree(T::Queue).first().map_err(io)? {
            Some((_, v)) => Ok(Some(decode::<QueuedNotice>(&v)?.queued_at)),
            None => Ok(None),
        }
    }

    fn backup(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(io(format!(
                "backup directory {} is not empty",
                dir.display()
            )));
        }
        // Holding the write lock makes the copy one consistent point in time.
        let _l = self.lock();
        let copy = sled::Config::new().path(dir).open().map_err(io)?;
        let target = copy.open_tree(TREE).map_err(io)?;
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(io)?;
            target.insert(k, v).map_err(io)?;
        }
        copy.flush().map_err(io)?;
        Ok(())
    }

    fn retain(
        &self,
        now: DateTime<Utc>,
        delivery_dedup: Duration,
        history: Duration,
        park_for: Duration,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let older = |t: DateTime<Utc>, d: Duration| {
            now.signed_duration_since(t)
                .to_std()
                .is_ok_and(|age| age >= d)
        };
        // Candidates are found without the lock and re-checked under it, in
        // small commits, so intake is never held up for a whole scan.
        let dedup_cut = millis(now) - delivery_dedup.as_millis() as i64;
        let stale: Vec<sled::IVec> = self
            .tree(T::Dedup)
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, v)| (keys::read_id(v).unwrap_or(0) as i64) < dedup_cut)
            .map(|(k, _)| k)
            .collect();
        report.dedup_removed = self.delete_in_chunks(T::Dedup, &stale)?;
        let mut old_events = Vec::new();
        for r in self.tree(T::Events).iter() {
            let (k, v) = r.map_err(io)?;
            let e: EventRecord = decode(&v)?;
            if !older(e.at, history) {
                break;
            }
            old_events.push(k);
        }
        report.events_removed = self.delete_in_chunks(T::Events, &old_events)?;
        let queued: BTreeSet<EsimId> = self.outbox()?.into_iter().map(|q| q.esim).collect();
        for r in self.tree(T::Esims).iter() {
            let (k, v) = r.map_err(io)?;
            let rec: EsimRecord = decode(&v)?;
            let forget = older(rec.last_event_at, history) && !queued.contains(&rec.id);
            let expire = rec.parked.iter().any(|p| older(p.parked_at, park_for));
            if !forget && !expire {
                continue;
            }
            let mut l = self.lock();
            let mut w = Writes::default();
            // Re-read under the lock: an event may have arrived meanwhile.
            let Some(mut rec) = self.record_of(rec.id)? else {
                continue;
            };
            if older(rec.last_event_at, history) && !queued.contains(&rec.id) {
                l.counts.parked = l.counts.parked.saturating_sub(rec.parked.len() as u64);
                w.del(T::Esims, &k);
                for kind in IdKind::LOOKUP_ORDER {
                    if let Some(v) = kind.get(&rec.state.ids) {
                        if self.alias(kind, v)? == Some(rec.id) {
                            w.del(T::Aliases, keys::ident(kind, v));
                        }
                    }
                }
                for kv in self.tree(T::Log).scan_prefix(keys::id(rec.id)) {
                    w.del(T::Log, kv.map_err(io)?.0);
                }
                report.esims_removed += 1;
            } else {
                report.parked_expired +=
                    self.expire_parked(&mut l, &mut w, &mut rec, now, park_for);
                w.put(T::Esims, &k, &rec);
            }
            self.commit(&mut l, w)?;
        }
        let old_dead: Vec<sled::IVec> = self
            .scan::<DeadLetter>(T::Dead)?
            .into_iter()
            .filter(|(_, d)| older(d.died_at, history))
            .map(|(k, _)| k)
            .collect();
        if !old_dead.is_empty() {
            let mut l = self.lock();
            let mut w = Writes::default();
            for k in &old_dead {
                if self.tree(T::Dead).get(k).map_err(io)?.is_some() {
                    w.del(T::Dead, k);
                    l.counts.dead = l.counts.dead.saturating_sub(1);
                    report.dead_removed += 1;
                }
            }
            self.commit(&mut l, w)?;
        }
        Ok(report)
    }
}
