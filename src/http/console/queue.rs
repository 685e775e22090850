//! `GET /admin/queue`: what waits and why (the outbox, with when each
//! notice goes and a cancel button), what is parked for want of a customer
//! (and when it expires), and the dead letters (with a retry button). The
//! buttons call the admin API (`DELETE /admin/outbox/{id}`, `POST
//! /admin/dead/{id}/retry`, pause/resume) after a confirmation, through
//! `console.js`. Addresses are masked here.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};

use super::esims::{esim_href, level_label};
use super::page::{self, when, Nav};
use crate::customers::mask_email;
use crate::http::state::AppState;
use crate::operator_views::{dead_rows, outbox_rows, parked_rows};
use crate::store::StoreError;

pub async fn page(app: web::Data<AppState>) -> HttpResponse {
    let state = app.clone();
    let (status, data) =
        super::page::read_blocking(move || build(&state).map(|v| (StatusCode::OK, v))).await;
    let mut data = data;
    if data.get("error").is_none() {
        data["error"] = Value::Null;
    }
    for key in ["outbox", "parked", "dead"] {
        if data.get(key).is_none() {
            data[key] = json!([]);
        }
    }
    page::render_status(&app, status, Nav::Queue, "Queue", "queue", data)
}

fn build(app: &AppState) -> Result<Value, StoreError> {
    let now = Utc::now();
    let store = app.store.as_ref();
    let outbox: Vec<Value> = outbox_rows(store, app.dispatch.is_operator_paused())?
        .into_iter()
        .map(|r| {
            let recipient = mask_email(&r.recipient);
            json!({
                "id": r.id,
                "esim": r.esim,
                "esim_href": esim_href(&r.esim),
                "recipient": recipient,
                "template": r.template,
                "level": level_label(r.level),
                "attempts": r.attempts,
                "next_attempt": when(r.next_attempt, now),
                "due": r.next_attempt <= now && r.waiting_for.is_none(),
                "waiting_for": r.waiting_for,
                "last_error": r.last_error,
                "confirm": format!(
                    "Cancel notice {} ({} to {recipient})? It will not be sent.",
                    r.id, r.template
                ),
            })
        })
        .collect();
    let parked: Vec<Value> = parked_rows(store, app.config.customers.park_for.0)?
        .into_iter()
        .map(|p| {
            let label = p
                .esim
                .esim_tran_no
                .clone()
                .or_else(|| p.esim.iccid.clone())
                .or_else(|| p.esim.order_no.clone())
                .or_else(|| p.esim.transaction_id.clone())
                .unwrap_or_default();
            json!({
                "esim": label,
                "esim_href": esim_href(&label),
                "iccid": p.esim.iccid,
                "order_no": p.esim.order_no,
                "template": p.template,
                "level": level_label(p.level),
                "parked_at": when(p.parked_at, now),
                "expires_at": when(p.expires_at, now),
            })
        })
        .collect();
    let dead: Vec<Value> = dead_rows(store)?
        .into_iter()
        .map(|d| {
            let r = d.notice;
            let recipient = mask_email(&r.recipient);
            json!({
                "id": r.id,
                "esim": r.esim,
                "esim_href": esim_href(&r.esim),
                "recipient": recipient,
                "template": r.template,
                "level": level_label(r.level),
                "attempts": r.attempts,
                "died_at": when(d.died_at, now),
                "reason": d.reason,
                "confirm": format!(
                    "Retry dead letter {} ({} to {recipient})? It goes back into the queue and is sent again.",
                    r.id, r.template
                ),
            })
        })
        .collect();
    Ok(json!({"outbox": outbox, "parked": parked, "dead": dead}))
}
