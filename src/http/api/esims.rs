//! `GET /api/v1/esims/{identifier}` (scope `esims:read`): what a shop's "my
//! eSIMs" page shows its customer. Built from the engine's view of the eSIM
//! but only what the customer may see: identifiers, status, data left,
//! expiry, plan name, and each email with its template, time and state.
//! Never the decision log's wording, the recipient, another customer's
//! data, nor the activation code or install links (the engine keeps none of
//! those in the eSIM's state; this answer is built field by field, so a
//! field added to the state later does not leak through here).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::require;
use crate::api_keys::Scope;
use crate::engine::{EsimView, LogKind, QueuedNotice};
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::operator_views::EsimIds;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EsimAnswer {
    identifiers: EsimIds,
    /// The last esimStatus the provider reported.
    status: Option<String>,
    plan_name: Option<String>,
    data: Data,
    expires_at: Option<DateTime<Utc>>,
    emails: Vec<Email>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    total: Option<u64>,
    remaining: Option<u64>,
    /// 0 to 100, one decimal.
    remaining_percent: Option<f64>,
}

/// Where one email stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum State {
    /// Waiting for the shop to bind a customer to the eSIM.
    Parked,
    /// Queued; `at` is when it goes.
    Due,
    Sent,
    /// The mail provider reported it undeliverable.
    Bounced,
    /// Given up after its attempts.
    Failed,
    /// Not sent: overtaken by a newer fact, cancelled, or the address is
    /// suppressed.
    Cancelled,
}

#[derive(Debug, Serialize)]
struct Email {
    template: String,
    state: State,
    at: DateTime<Utc>,
}

pub async fn get(app: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Answer {
    require(&req, Scope::EsimsRead)?;
    let wanted = id.trim().to_string();
    let found = app
        .on_store(move |s| {
            let Some(v) = s.esim_view(None, &wanted)? else {
                return Ok(None);
            };
            let mut queued = Vec::new();
            for n in due_ids(&v) {
                queued.extend(s.queued(n)?);
            }
            let plan = s.plan_of(v.id)?.and_then(|p| p.name);
            Ok(Some((v, queued, plan)))
        })
        .await?;
    let Some((v, queued, plan_name)) = found else {
        return Err(ApiError::not_found(format!(
            "no eSIM known as {}",
            id.trim()
        )));
    };
    Ok(HttpResponse::Ok().json(answer(&v, &queued, plan_name)))
}

/// The notices the log says are still queued.
fn due_ids(v: &EsimView) -> Vec<u64> {
    emails_by_notice(v)
        .into_iter()
        .filter(|(_, e)| e.state == State::Due)
        .map(|(id, _)| id)
        .collect()
}

/// Each queued notice's latest state, read from the decision log in order
/// (only the kind, template and time of each line: never its detail).
fn emails_by_notice(v: &EsimView) -> BTreeMap<u64, Email> {
    let mut out: BTreeMap<u64, Email> = BTreeMap::new();
    for d in &v.decisions {
        let (Some(n), Some(template)) = (d.notice, d.template.as_ref()) else {
            continue;
        };
        let state = match d.what {
            LogKind::Queued | LogKind::Released | LogKind::Requeued => State::Due,
            LogKind::Sent => State::Sent,
            LogKind::Bounced => State::Bounced,
            LogKind::Dead => State::Failed,
            LogKind::Superseded | LogKind::Cancelled | LogKind::Suppressed => State::Cancelled,
            // A failed attempt that will be retried is still due; the rest
            // say nothing about where the email stands.
            _ => continue,
        };
        out.insert(
            n,
            Email {
                template: template.clone(),
                state,
                at: d.at,
            },
        );
    }
    out
}

fn answer(v: &EsimView, queued: &[QueuedNotice], plan_name: Option<String>) -> EsimAnswer {
    let mut emails: Vec<Email> = v
        .parked
        .iter()
        .map(|p| Email {
            template: p.notice.template.clone(),
            state: State::Parked,
            at: p.parked_at,
        })
        .collect();
    for (n, mut e) in emails_by_notice(v) {
        if e.state == State::Due {
            match queued.iter().find(|q| q.id == n) {
                Some(q) => e.at = q.next_attempt,
                // Logged as queued but gone from the queue (an outcome not
                // yet logged, or retention): say nothing rather than guess.
                None => continue,
            }
        }
        emails.push(e);
    }
    emails.sort_by_key(|e| e.at);
    let s = &v.state;
    let total = s.cycle_volume.or(s.usage.total_volume);
    let remaining = s.usage.remain;
    let remaining_percent = match (total, remaining) {
        (Some(t), Some(r)) if t > 0 => Some(((r.min(t) as f64 / t as f64) * 1000.0).round() / 10.0),
        _ => None,
    };
    EsimAnswer {
        identifiers: EsimIds {
            esim_tran_no: v.ids.esim_tran_no.clone(),
            iccid: v.ids.iccid.clone(),
            order_no: v.ids.order_no.clone(),
            transaction_id: v.ids.transaction_id.clone(),
        },
        status: s.esim_status.clone(),
        plan_name,
        data: Data {
            total,
            remaining,
            remaining_percent,
        },
        expires_at: s.expires_at,
        emails,
    }
}
