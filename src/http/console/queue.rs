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
use crate::operator_views::{dead_rows, outbox_rows, parked_rows, OutboxRow};
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

/// What a queued notice and a dead letter show alike; the address masked.
fn notice_row(r: &OutboxRow) -> Value {
    json!({
        "id": r.id,
        "esim": r.esim,
        "esim_href": esim_href(&r.esim),
        "recipient": mask_email(&r.recipient),
        "template": r.template,
        "level": level_label(r.level),
        "attempts": r.attempts,
    })
}

fn build(app: &AppState) -> Result<Value, StoreError> {
    let now = Utc::now();
    let store = app.store.as_ref();
    let outbox: Vec<Value> = outbox_rows(store, app.dispatch.is_operator_paused())?
        .into_iter()
        .map(|r| {
            let mut row = notice_row(&r);
            row["next_attempt"] = json!(when(r.next_attempt, now));
            row["due"] = json!(r.next_attempt <= now && r.waiting_for.is_none());
            row["waiting_for"] = json!(r.waiting_for);
            row["last_error"] = json!(r.last_error);
            row["confirm"] = json!(format!(
                "Cancel notice {} ({} to {})? It will not be sent.",
                r.id,
                r.template,
                row["recipient"].as_str().unwrap_or_default()
            ));
            row
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
            let mut row = notice_row(&r);
            row["died_at"] = json!(when(d.died_at, now));
            row["reason"] = json!(d.reason);
            row["confirm"] =
                json!(format!(
                "Retry dead letter {} ({} to {})? It goes back into the queue and is sent again.",
                r.id, r.template, row["recipient"].as_str().unwrap_or_default()
            ));
            row
        })
        .collect();
    Ok(json!({"outbox": outbox, "parked": parked, "dead": dead}))
}
