//! `GET /admin/esims?q=…`: "why did this customer get (or not get) that
//! email?". Takes any identifier (esimTranNo, iccid, orderNo,
//! transactionId) or a customer's address, and shows the eSIM: its
//! identifiers, data cycle, status, recipient (in full: this is that
//! customer's page), what waits for it, and its decision log as a timeline,
//! each event with what it decided.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::page::{self, bytes, percent, url_encode, when, Nav};
use crate::customers::{mask_email, IdKind};
use crate::engine::{resendable, EsimView};
use crate::http::state::AppState;
use crate::store::StoreError;

#[derive(Deserialize, Default)]
struct Query {
    #[serde(default)]
    q: Option<String>,
}

/// A link to this page for one eSIM, by the identifier operators know it by.
pub fn esim_href(label: &str) -> String {
    format!("/admin/esims?q={}", url_encode(label))
}

/// "10 %" for a data level (a fraction of the allowance remaining).
pub fn level_label(level: Option<f64>) -> Option<String> {
    level.map(percent)
}

pub async fn page(app: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let q = web::Query::<Query>::from_query(req.query_string())
        .map(|q| q.into_inner().q.unwrap_or_default())
        .unwrap_or_default();
    let q = q.trim().to_string();
    let state = app.clone();
    let query = q.clone();
    let (status, data) = super::page::read_blocking(move || search(&state, &query)).await;
    let mut data = data;
    data["q"] = json!(q);
    for key in ["error", "esim", "choices", "bound_only", "moved"] {
        if data.get(key).is_none() {
            data[key] = Value::Null;
        }
    }
    page::render_status(&app, status, Nav::Esims, "eSIMs", "esims", data)
}

fn search(app: &AppState, q: &str) -> Result<(StatusCode, Value), StoreError> {
    let store = app.store.as_ref();
    if q.is_empty() {
        return Ok((StatusCode::OK, json!({})));
    }
    if q.contains('@') {
        // No index by address: the bindings are read (see Store::bindings_of).
        let bindings = store.bindings_of(q)?;
        let mut views: Vec<EsimView> = Vec::new();
        let mut bound_only = Vec::new();
        for (kind, value) in &bindings {
            match store.esim_view(Some(*kind), value)? {
                Some(v) => {
                    if !views.iter().any(|o| o.id == v.id) {
                        views.push(v);
                    }
                }
                None => bound_only.push(json!({"kind": kind.wire_name(), "value": value})),
            }
        }
        // Only eSIMs this address actually receives for (a recycled ICCID
        // may name another eSIM now, another binding may take precedence);
        // the others are named, so a search never ends on a blank page.
        let (mine, elsewhere): (Vec<EsimView>, Vec<EsimView>) = views.into_iter().partition(|v| {
            v.recipient
                .as_ref()
                .is_some_and(|r| r.email.eq_ignore_ascii_case(q))
        });
        let mut views = mine;
        let moved: Vec<Value> = elsewhere
            .iter()
            .map(|v| {
                json!({
                    "label": label_of(v),
                    "href": esim_href(&label_of(v)),
                    "email": v.recipient.as_ref().map(|r| mask_email(&r.email)),
                })
            })
            .collect();
        return Ok(match views.len() {
            0 if bindings.is_empty() => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no eSIM is bound to {q}")}),
            ),
            0 if bound_only.is_empty() => (
                StatusCode::NOT_FOUND,
                json!({
                    "error": format!("no eSIM's emails go to {q} now: each eSIM it is bound to goes to another address"),
                    "moved": moved,
                }),
            ),
            0 => (
                StatusCode::OK,
                json!({"bound_only": bound_only, "moved": moved}),
            ),
            1 => (
                StatusCode::OK,
                json!({"esim": esim_json(app, views.remove(0))?, "bound_only": bound_only}),
            ),
            _ => {
                let choices: Vec<Value> = views.iter().map(choice).collect();
                (
                    StatusCode::OK,
                    json!({"choices": choices, "bound_only": bound_only}),
                )
            }
        });
    }
    match store.esim_view(None, q)? {
        Some(v) => Ok((StatusCode::OK, json!({"esim": esim_json(app, v)?}))),
        None => {
            // A customer may be bound by this identifier before any event.
            let mut bound_only = Vec::new();
            for kind in IdKind::LOOKUP_ORDER {
                if store.recipient_by(kind, q)?.is_some() {
                    bound_only.push(json!({"kind": kind.wire_name(), "value": q}));
                }
            }
            if bound_only.is_empty() {
                Ok((
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("no eSIM known as {q}: no event carried that identifier, and no customer is bound to it")}),
                ))
            } else {
                Ok((StatusCode::OK, json!({"bound_only": bound_only})))
            }
        }
    }
}

fn label_of(v: &EsimView) -> String {
    v.ids
        .esim_tran_no
        .clone()
        .or_else(|| v.ids.iccid.clone())
        .unwrap_or_else(|| format!("esim-{}", v.id))
}

fn choice(v: &EsimView) -> Value {
    json!({
        "label": label_of(v),
        "href": esim_href(&label_of(v)),
        "iccid": v.ids.iccid,
        "status": v.state.esim_status,
        "decisions": v.decisions.len(),
    })
}

fn esim_json(app: &AppState, v: EsimView) -> Result<Value, StoreError> {
    let now = Utc::now();
    let s = &v.state;
    let ids: Vec<Value> = [
        ("esimTranNo", &v.ids.esim_tran_no),
        ("iccid", &v.ids.iccid),
        ("orderNo", &v.ids.order_no),
        ("transactionId", &v.ids.transaction_id),
    ]
    .into_iter()
    .map(|(k, val)| json!({"name": k, "value": val}))
    .collect();
    let bytes = |b: Option<u64>| b.map(bytes);
    let remain_pct = match (s.usage.remain, s.usage.total_volume) {
        (Some(r), Some(t)) if t > 0 => Some(percent(r as f64 / t as f64)),
        _ => None,
    };
    let cycle = json!({
        "number": s.cycle,
        "volume": bytes(s.cycle_volume),
        "remain": bytes(s.usage.remain),
        "remain_percent": remain_pct,
        "opened_at": s.cycle_opened_at.map(|t| when(t, now)),
        "level": level_label(s.data_level),
        "used_up": s.used_up_cycle.is_some_and(|c| c == s.cycle),
        "last_update": s.usage.last_update_time.map(|t| when(t, now)),
    });
    let status = json!({
        "esim": s.esim_status,
        "smdp": s.smdp_status,
        "order": s.order_status,
        "terminal": s.terminal,
        "expires_at": s.expires_at.map(|t| when(t, now)),
    });
    let recipient = v.recipient.as_ref().map(
        |r| json!({"email": r.email, "name": r.name, "locale": r.locale, "timezone": r.timezone}),
    );
    let suppressed = match &v.recipient {
        Some(r) => app.store.suppression(&r.email)?,
        None => None,
    };
    let mut resend = Vec::new();
    for t in resendable(s, &app.rules(), now) {
        let words = super::timeline::template_words(&t);
        // The engine's own rule: what this suppression stops.
        let blocked = match &v.recipient {
            Some(r) => app.store.suppression_stopping(&r.email, &t)?.is_some(),
            None => true,
        };
        let to = v.recipient.as_ref().map_or("nobody", |r| r.email.as_str());
        resend.push(json!({
            "template": t,
            "words": words,
            "body": json!({"template": t}).to_string(),
            "blocked": blocked,
            "confirm": format!("Send the {words} email ({t}) again to {to}?"),
        }));
    }
    let suppression =
        suppressed.map(|sup| super::suppressions::row(&sup, &app.config.email.essential, now));
    // The form binds the eSIM by its most precise identifier, which comes
    // first in the look-up (SPEC §6), so it overrides an order-wide binding.
    let bind_by = [
        ("esimTranNo", &v.ids.esim_tran_no),
        ("iccid", &v.ids.iccid),
        ("orderNo", &v.ids.order_no),
        ("transactionId", &v.ids.transaction_id),
    ]
    .into_iter()
    .find_map(|(k, val)| val.as_ref().map(|val| json!({"kind": k, "value": val})));
    let park_for = chrono::Duration::from_std(app.config.customers.park_for.0)
        .unwrap_or(chrono::Duration::MAX);
    let parked: Vec<Value> = v
        .parked
        .iter()
        .map(|p| {
            json!({
                "template": p.notice.template,
                "level": level_label(p.notice.level),
                "parked_at": when(p.parked_at, now),
                "expires_at": p.parked_at.checked_add_signed(park_for).map(|t| when(t, now)),
            })
        })
        .collect();
    let waiting: Vec<Value> = app
        .store
        .outbox()?
        .into_iter()
        .filter(|q| q.esim == v.id)
        .map(|q| {
            json!({
                "id": q.id,
                "template": q.notice.template,
                "level": level_label(q.notice.level),
                "next_attempt": when(q.next_attempt, now),
                "waiting_for": q.waiting_for,
                "attempts": q.attempts,
            })
        })
        .collect();
    let dead: Vec<Value> = app
        .store
        .dead()?
        .into_iter()
        .filter(|d| d.notice.esim == v.id)
        .map(|d| {
            json!({
                "id": d.notice.id,
                "template": d.notice.notice.template,
                "reason": d.reason,
                "died_at": when(d.died_at, now),
                "recipient": mask_email(&d.notice.recipient.email),
            })
        })
        .collect();
    Ok(json!({
        "label": label_of(&v),
        "ids": ids,
        "cycle": cycle,
        "status": status,
        "recipient": recipient,
        "parked": parked,
        "waiting": waiting,
        "dead": dead,
        "timeline": super::timeline::timeline(&v.decisions, now),
        "suppression": suppression,
        "resend": resend,
        "resend_url": format!("/admin/esims/{}/resend", url_encode(&label_of(&v))),
        "bind_by": bind_by,
        "json_href": format!("/admin/esims/{}", url_encode(&label_of(&v))),
    }))
}
