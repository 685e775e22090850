//! What the provider's API adds to a notice just before it is sent, asked
//! outside every unit of work (issue 11):
//!
//! - an install notice of a whole order (ORDER_STATUS names no eSIM) is
//!   replaced by one install notice per eSIM of the order, each with its
//!   activation code; while the provider cannot say, it waits, within
//!   `retry.max_age`, then becomes a dead letter naming why: it is never
//!   sent without its activation code;
//! - every notice gets its eSIM's plan, asked once per allowance and kept
//!   with the eSIM; when the provider does not answer, a notice waits at
//!   most `provider.plan_wait` and then goes without it.

use chrono::{DateTime, Utc};

use super::send::Ctx;
use crate::engine::{is_resent_install, QueuedNotice};
use crate::event::Identifiers;
use crate::policy::NoticeKind;
use crate::provider::{EsimQuery, Plan, ProviderError};

/// What the provider step decided for one notice.
pub enum Enriched {
    /// Send it, with the plan when one is known.
    Send { plan: Option<Plan> },
    /// It was an order's notice: these replace it (durable already).
    Replaced(Vec<QueuedNotice>),
    /// Look again at `until`.
    Wait { until: DateTime<Utc>, why: String },
    /// It can never be sent.
    Dead(String),
    /// It can no longer be sent, for a reason that is no failure.
    Superseded(String),
}

pub async fn enrich(
    ctx: &Ctx,
    q: &QueuedNotice,
    ids: &Identifiers,
    now: DateTime<Utc>,
) -> Enriched {
    let needs_code = q.notice.kind == NoticeKind::Ready && q.vars.activation_code().is_none();
    let Some(provider) = &ctx.provider else {
        if needs_code {
            // Queued while the API was configured, and it no longer is.
            return Enriched::Superseded(
                "no activation code and [provider] has no access code: an install email is never sent without one".into(),
            );
        }
        return Enriched::Send { plan: None };
    };
    if needs_code && is_resent_install(q) {
        return refresh(ctx, q, ids, now).await;
    }
    if needs_code {
        return expand(ctx, q, ids, now).await;
    }
    match ctx.store.plan_of(q.esim) {
        Ok(Some(plan)) => return Enriched::Send { plan: Some(plan) },
        Ok(None) => {}
        Err(e) => tracing::error!(notice = q.id, error = %e, "cannot read the cached plan"),
    }
    let query = match (&ids.esim_tran_no, &ids.iccid) {
        (Some(t), _) => EsimQuery::EsimTranNo(t),
        (None, Some(i)) => EsimQuery::Iccid(i),
        (None, None) => return Enriched::Send { plan: None },
    };
    match provider.query(query).await {
        Ok(esims) => {
            let found = esims
                .into_iter()
                .find(|e| ids.esim_tran_no.is_none() || e.esim_tran_no == ids.esim_tran_no);
            let Some(esim) = found else {
                return Enriched::Send { plan: None };
            };
            let plan = esim.plan.clone();
            if let Some(p) = &plan {
                if let Err(e) = ctx
                    .store
                    .cache_plan(q.esim, p.clone(), esim.total_volume, now)
                {
                    tracing::error!(notice = q.id, error = %e, "cannot keep the plan");
                }
            }
            Enriched::Send { plan }
        }
        Err(e) => {
            let give_up_at = q.queued_at + ctx.config.provider.plan_wait.0;
            if now >= give_up_at {
                tracing::warn!(notice = q.id, error = %e, "no plan from the provider within provider.plan_wait: sent without it");
                return Enriched::Send { plan: None };
            }
            Enriched::Wait {
                until: (now + later(ctx, q, now)).min(give_up_at),
                why: format!("provider: plan look-up: {e}"),
            }
        }
    }
}

/// The order's eSIMs, each with its activation code, replace its notice.
async fn expand(ctx: &Ctx, q: &QueuedNotice, ids: &Identifiers, now: DateTime<Utc>) -> Enriched {
    let provider = ctx.provider.as_ref().expect("checked by the caller");
    let answer = match (&ids.order_no, &ids.esim_tran_no) {
        (Some(order), _) => provider.query(EsimQuery::OrderNo(order)).await,
        (None, Some(t)) => provider.query(EsimQuery::EsimTranNo(t)).await,
        (None, None) => {
            return Enriched::Dead("no orderNo or esimTranNo to ask the provider with".into())
        }
    };
    let reason = match answer {
        Ok(esims) if esims.iter().any(|e| e.ac.is_some()) => {
            // Only eSIMs with a code: the others are asked for again later,
            // by a later ORDER_STATUS or an operator's retry.
            let ready: Vec<_> = esims.into_iter().filter(|e| e.ac.is_some()).collect();
            return match ctx.store.expand_order(q.id, &ready, now) {
                Ok((queued, decisions)) => {
                    ctx.metrics.decisions(&decisions);
                    match ctx.store.durable().await {
                        Ok(Ok(())) => {}
                        _ => tracing::error!(notice = q.id, "install notices not synced yet"),
                    }
                    tracing::info!(
                        notice = q.id,
                        esims = ready.len(),
                        queued = queued.len(),
                        "order expanded into install notices"
                    );
                    Enriched::Replaced(queued)
                }
                Err(e) => {
                    tracing::error!(notice = q.id, error = %e, "cannot queue the install notices");
                    Enriched::Wait {
                        until: now + later(ctx, q, now),
                        why: "store error".into(),
                    }
                }
            };
        }
        Ok(_) => "the order lists no eSIM with an activation code yet".to_string(),
        Err(ProviderError::NotReady) => "profiles still being allocated".to_string(),
        Err(e) => e.to_string(),
    };
    not_yet(ctx, q, now, reason)
}

/// An operator's resend of one eSIM's install email (`engine::resend`): its
/// activation code asked again, for this eSIM only (its order may hold
/// others, whose customers asked for nothing).
async fn refresh(ctx: &Ctx, q: &QueuedNotice, ids: &Identifiers, now: DateTime<Utc>) -> Enriched {
    let provider = ctx.provider.as_ref().expect("checked by the caller");
    let query = match (&ids.esim_tran_no, &ids.iccid) {
        (Some(t), _) => EsimQuery::EsimTranNo(t),
        (None, Some(i)) => EsimQuery::Iccid(i),
        (None, None) => {
            return Enriched::Dead("no esimTranNo or ICCID to ask the provider with".into())
        }
    };
    let reason = match provider.query(query).await {
        Ok(esims) => {
            let this = esims.into_iter().find(|e| {
                e.ac.is_some()
                    && match &ids.esim_tran_no {
                        Some(t) => e.esim_tran_no.as_ref() == Some(t),
                        None => e.iccid == ids.iccid,
                    }
            });
            match this {
                Some(esim) => {
                    return match ctx.store.fill_install(q.id, &esim, now) {
                        Ok(Some(filled)) => Enriched::Replaced(vec![filled]),
                        Ok(None) => Enriched::Superseded("no longer queued".into()),
                        Err(e) => {
                            tracing::error!(notice = q.id, error = %e, "cannot keep the activation code");
                            Enriched::Wait {
                                until: now + later(ctx, q, now),
                                why: "store error".into(),
                            }
                        }
                    };
                }
                None => "the provider lists this eSIM without an activation code".to_string(),
            }
        }
        Err(ProviderError::NotReady) => "profiles still being allocated".to_string(),
        Err(e) => e.to_string(),
    };
    not_yet(ctx, q, now, reason)
}

/// No activation code yet: wait and ask again, within `retry.max_age`.
fn not_yet(ctx: &Ctx, q: &QueuedNotice, now: DateTime<Utc>, reason: String) -> Enriched {
    if now >= q.queued_at + ctx.config.retry.max_age.0 {
        return Enriched::Dead(format!(
            "no activation code from the provider within retry.max_age: {reason}"
        ));
    }
    Enriched::Wait {
        until: now + later(ctx, q, now),
        why: format!("provider: {reason}"),
    }
}

/// How long to wait before asking the provider again: as long as the notice
/// has waited so far (so the waits double), within the retry backoff bounds.
fn later(ctx: &Ctx, q: &QueuedNotice, now: DateTime<Utc>) -> chrono::Duration {
    let retry = &ctx.config.retry;
    let waited = (now - q.queued_at).to_std().unwrap_or_default();
    let wait = waited.clamp(retry.initial_backoff.0, retry.max_backoff.0);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60))
}
