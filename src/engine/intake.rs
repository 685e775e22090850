//! One webhook delivery, from parsed event to decisions, in one unit of
//! work: dedup by notifyId, the eSIM, the policy, the recipient, and for
//! each notice queue, park or suppress; the event and the decision log.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::codec::{id, read_id};
use super::model::{IngestOutcome, LogEntry, LogKind, Parked, QueuedNotice};
use super::records::{meta, EsimRecord, EventRecord};
use super::resolve::{alias_keys, binding_keys, recipient_for, resolve};
use super::suppression::active_suppression;
use super::tx::Tx;
use super::EnginePolicy;
use crate::customers::{mask_email, Recipient};
use crate::event::Event;
use crate::policy::{self, Notice, Rules};
use crate::store::{Space, StoreError};
use crate::vars::{capture, Captured};

pub fn ingest(
    tx: &mut Tx,
    event: &Event,
    body: &Value,
    rules: &Rules,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
) -> Result<IngestOutcome, StoreError> {
    let millis = now.timestamp_millis();
    // What a delivery reads first, fetched (and locked) together: its
    // notifyId, the aliases of its identifiers, their customers, and the
    // shard of the counts it will likely change.
    let mut first = alias_keys(&event.ids);
    first.extend(binding_keys(&event.ids));
    first.push(tx.count_shard());
    if let Some(nid) = &event.notify_id {
        first.push((Space::Dedup, nid.as_bytes().to_vec()));
    }
    tx.prefetch(&first)?;
    if let Some(nid) = &event.notify_id {
        if let Some(seen) = tx.get_raw(Space::Dedup, nid.as_bytes())? {
            let seen = read_id(&seen).unwrap_or(0) as i64;
            if millis - seen < policy.dedup_window.as_millis() as i64 {
                return Ok(IngestOutcome::Duplicate);
            }
        }
        tx.put_raw(Space::Dedup, nid.as_bytes(), id(millis as u64).to_vec());
    }
    let mut queued = Vec::new();
    let esim = if event.ids.is_empty() {
        None
    } else {
        let mut rec = resolve(tx, &event.ids, now)?;
        let outcome = policy::apply(&mut rec.state, event, rules, now);
        // One line per delivery: what arrived and, when it decided nothing,
        // why (the policy's notes); each notice adds its own line below.
        let mut line = event_summary(event);
        if !outcome.notes.is_empty() {
            line.push_str(" — ");
            line.push_str(&outcome.notes.join("; "));
        }
        tx.log(rec.id, LogEntry::new(now, LogKind::Event, None, line));
        let key = rec.identity_key();
        for notice in outcome.notices {
            let identity = notice.identity(&key);
            let vars = capture(event, &notice, &rec.state);
            match recipient_for(tx, &rec.state)? {
                Some(r) => {
                    let q = queue_or_suppress(
                        tx,
                        &rec,
                        identity,
                        notice,
                        vars,
                        r,
                        LogKind::Queued,
                        &policy.essential,
                        now,
                    )?;
                    queued.extend(q);
                }
                None => park(tx, &mut rec, identity, notice, vars, now)?,
            }
        }
        rec.last_event_at = now;
        tx.put(Space::Esims, &id(rec.id), &rec);
        Some(rec.id)
    };
    let seq = tx.next_id();
    tx.put(
        Space::Events,
        &id(seq),
        &EventRecord {
            at: now,
            esim,
            body: serde_json::to_vec(body).unwrap_or_default(),
        },
    );
    tx.put_latest(Space::Meta, meta::LAST_WEBHOOK, id(millis as u64).to_vec())?;
    Ok(IngestOutcome::Accepted {
        esim,
        queued,
        decisions: Vec::new(),
    })
}

/// A notice with no recipient yet waits in its eSIM's record (SPEC §6).
fn park(
    tx: &mut Tx,
    rec: &mut EsimRecord,
    identity: String,
    notice: Notice,
    vars: Captured,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.log(
        rec.id,
        LogEntry::new(
            now,
            LogKind::Parked,
            Some(&notice.template),
            format!("{identity}: no recipient bound to this eSIM yet"),
        ),
    );
    rec.parked.push(Parked {
        identity,
        notice,
        vars,
        parked_at: now,
    });
    tx.counts().parked += 1;
    Ok(())
}

/// Queues a notice for a known recipient, or records why it is not sent:
/// a suppression stops it unless the address only unsubscribed and the
/// template is a service email (`essential`, SPEC §6). `how` is the
/// decision it is logged as (queued, or released from parking).
#[allow(clippy::too_many_arguments)]
pub fn queue_or_suppress(
    tx: &mut Tx,
    rec: &EsimRecord,
    identity: String,
    notice: Notice,
    vars: Captured,
    recipient: Recipient,
    how: LogKind,
    essential: &[String],
    now: DateTime<Utc>,
) -> Result<Option<QueuedNotice>, StoreError> {
    let template = notice.template.clone();
    let mut despite = None;
    if let Some(s) = active_suppression(tx, &recipient.email)? {
        if s.stops(&template, essential) {
            let detail = format!(
                "{identity}: {} is suppressed ({})",
                mask_email(&recipient.email),
                s.describe()
            );
            tx.log(
                rec.id,
                LogEntry::new(now, LogKind::Suppressed, Some(&template), detail),
            );
            return Ok(None);
        }
        despite = Some(format!(
            " ({} but {template} is a service email, email.essential)",
            s.reason
        ));
    }
    let qid = tx.next_id();
    let q = QueuedNotice {
        id: qid,
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
    tx.put(Space::Queue, &id(qid), &q);
    tx.counts().outbox += 1;
    let detail = format!(
        "{} to {}{}",
        q.identity,
        mask_email(&q.recipient.email),
        despite.unwrap_or_default()
    );
    tx.log(
        rec.id,
        LogEntry::new(now, how, Some(&template), detail).about(qid),
    );
    Ok(Some(q))
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
