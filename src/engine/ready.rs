//! What the provider's API adds (issue 11): the eSIMs of an order, each with
//! its activation code, and the plan of an eSIM.
//!
//! ORDER_STATUS names an order, not its eSIMs, so intake queues one notice
//! for the order. When it is due, the dispatcher asks the provider (outside
//! every unit of work) and hands the answer here, where one unit replaces
//! the order's notice with one `esim_ready` per eSIM: each carries its own
//! activation code, goes to the recipient the order's notice had, and is
//! queued once per eSIM however often the order is reported.

use chrono::{DateTime, Utc};

use super::codec::id;
use super::intake::queue_or_suppress;
use super::model::{LogEntry, LogKind, QueuedNotice};
use super::records::{CachedPlan, EsimRecord};
use super::resolve::{record_of, resolve};
use super::tx::Tx;
use super::EsimId;
use crate::event::Identifiers;
use crate::provider::{Esim, Plan};
use crate::store::{Space, StoreError};
use crate::vars::{Captured, Figures};

/// Replaces the order-wide notice `qid` with one notice per eSIM of
/// `esims` (the provider's answer); returns the notices queued. Nothing
/// happens when the notice is no longer queued (cancelled meanwhile).
pub fn expand_order(
    tx: &mut Tx,
    qid: u64,
    esims: &[Esim],
    essential: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<QueuedNotice>, StoreError> {
    let Some(order) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? else {
        return Ok(Vec::new());
    };
    tx.delete(Space::Queue, &id(qid));
    let counts = tx.counts();
    counts.outbox -= 1;
    let names: Vec<&str> = esims.iter().map(Esim::name).collect();
    let template = order.notice.template.clone();
    tx.log(
        order.esim,
        LogEntry::new(
            now,
            LogKind::Note,
            Some(&template),
            format!(
                "{}: the order holds {} eSIM(s) ({}): one email each",
                order.identity,
                esims.len(),
                names.join(", ")
            ),
        )
        .about(qid),
    );
    // The order's own identifiers, for an eSIM the answer lists without them.
    let order_ids = record_of(tx, order.esim)?
        .map(|r| r.state.ids)
        .unwrap_or_default();
    let mut queued = Vec::new();
    for esim in esims {
        let ids = Identifiers {
            esim_tran_no: esim.esim_tran_no.clone(),
            iccid: esim.iccid.clone(),
            order_no: esim.order_no.clone().or(order_ids.order_no.clone()),
            transaction_id: esim
                .transaction_id
                .clone()
                .or(order_ids.transaction_id.clone()),
        };
        let mut rec = resolve(tx, &ids, now)?;
        let skip = if let Some(t) = &rec.state.terminal {
            Some(format!("terminal: {t}"))
        } else if rec.id != order.esim && rec.state.templates_notified.contains(&template) {
            Some(format!("{template} already queued for this eSIM"))
        } else {
            None
        };
        if let Some(why) = skip {
            tx.log(
                rec.id,
                LogEntry::new(now, LogKind::Superseded, Some(&template), why),
            );
            tx.put(Space::Esims, &id(rec.id), &rec);
            continue;
        }
        rec.state.templates_notified.insert(template.clone());
        if let Some(plan) = &esim.plan {
            rec.plan = Some(CachedPlan {
                plan: plan.clone(),
                total_volume: esim.total_volume,
                fetched_at: now,
            });
        }
        let vars = Captured {
            figures: Figures::Install {
                ac: esim.ac.clone(),
                qr_code_url: esim.qr_code_url.clone(),
                short_url: esim.short_url.clone(),
                apn: esim.apn.clone(),
            },
            ..order.vars.clone()
        };
        let identity = order.notice.identity(&rec.identity_key());
        let q = queue_or_suppress(
            tx,
            &rec,
            identity,
            order.notice.clone(),
            vars,
            order.recipient.clone(),
            LogKind::Queued,
            essential,
            now,
        )?;
        queued.extend(q);
        tx.put(Space::Esims, &id(rec.id), &rec);
    }
    Ok(queued)
}

/// Puts the install data the provider gave now for one eSIM into its
/// queued install notice (an operator's resend, `resend.rs`); keeps the
/// plan. Returns the notice as it now stands, `None` when it is no longer
/// queued (cancelled meanwhile).
pub fn fill_install(
    tx: &mut Tx,
    qid: u64,
    esim: &Esim,
    now: DateTime<Utc>,
) -> Result<Option<QueuedNotice>, StoreError> {
    let Some(mut q) = tx.get::<QueuedNotice>(Space::Queue, &id(qid))? else {
        return Ok(None);
    };
    q.vars.figures = Figures::Install {
        ac: esim.ac.clone(),
        qr_code_url: esim.qr_code_url.clone(),
        short_url: esim.short_url.clone(),
        apn: esim.apn.clone(),
    };
    tx.put(Space::Queue, &id(qid), &q);
    if let Some(plan) = &esim.plan {
        cache_plan(tx, q.esim, plan.clone(), esim.total_volume, now)?;
    }
    tx.log(
        q.esim,
        LogEntry::new(
            now,
            LogKind::Note,
            Some(&q.notice.template),
            format!(
                "{}: activation code looked up again from the provider",
                q.identity
            ),
        )
        .about(qid),
    );
    Ok(Some(q))
}

/// Keeps the plan the provider described for one eSIM.
pub fn cache_plan(
    tx: &mut Tx,
    esim: EsimId,
    plan: Plan,
    total_volume: Option<u64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(mut rec): Option<EsimRecord> = record_of(tx, esim)? else {
        return Ok(());
    };
    rec.plan = Some(CachedPlan {
        plan,
        total_volume,
        fetched_at: now,
    });
    tx.put(Space::Esims, &id(rec.id), &rec);
    Ok(())
}
