//! The customer directory over HTTP: `PUT/GET/DELETE /admin/customers` on
//! the admin listener and `/api/v1/customers` for the shop (SPEC §4: the
//! same bodies and answers). One implementation; each listener adds only
//! its own check of who is calling.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::json;

use crate::customers::{mask_email, Binding, IdKind, Recipient};
use crate::http::answer::{durable, parse_json, Answer};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::operator_views::BindSummary;

/// The one identifier of a customer query (`?iccid=…`), or why there is not
/// exactly one.
pub fn identifier_from_query(query: &str) -> Result<(IdKind, String), String> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| format!("unreadable query string: {e}"))?
        .into_inner();
    let mut found = None;
    for (k, v) in pairs {
        let kind = IdKind::from_wire_name(&k).ok_or_else(|| {
            format!(
                "unknown identifier `{k}`: use one of iccid, esimTranNo, orderNo, transactionId"
            )
        })?;
        let v = v.trim().to_string();
        if v.is_empty() {
            return Err(format!("`{k}` is empty"));
        }
        if found.is_some() {
            return Err("give exactly one identifier".into());
        }
        found = Some((kind, v));
    }
    found.ok_or_else(|| {
        "no identifier given: add ?iccid=, ?esimTranNo=, ?orderNo= or ?transactionId=".into()
    })
}

/// A recipient as `GET …/customers` shows it.
pub fn recipient_json(r: &Recipient) -> serde_json::Value {
    json!({"email": r.email, "name": r.name, "locale": r.locale, "timezone": r.timezone})
}

/// `PUT …/customers`: binds, releases what was parked, answers `replaced`.
pub async fn put(app: web::Data<AppState>, body: web::Bytes) -> Answer {
    let binding: Binding = parse_json(&body)?;
    let (recipient, ids) = match binding.validate() {
        Ok(v) => v,
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let (who, park_for, now) = (
        recipient.clone(),
        app.config.customers.park_for.0,
        Utc::now(),
    );
    let report = app
        .on_store(move |s| s.bind(&who, &ids, park_for, now))
        .await?;
    durable(&app).await?;
    app.metrics.decisions(&report.decisions);
    let summary = BindSummary::of(&report);
    tracing::info!(
        recipient = %mask_email(&recipient.email),
        released = report.released.len(),
        superseded = report.superseded,
        replaced = summary.replaced.len(),
        moved = report.moved.len(),
        "customer bound"
    );
    for line in summary.replaced_lines() {
        tracing::warn!("{line}");
    }
    app.dispatch.enqueue(report.released);
    Ok(HttpResponse::Ok().json(summary))
}

/// `GET …/customers?iccid=…`: the recipient, or 404.
pub async fn get(app: web::Data<AppState>, req: HttpRequest) -> Answer {
    let (kind, value) = match identifier_from_query(req.query_string()) {
        Ok(v) => v,
        Err(e) => return Err(ApiError::bad_request(e)),
    };
    let v = value.clone();
    match app.on_store(move |s| s.recipient_by(kind, &v)).await? {
        Some(r) => Ok(HttpResponse::Ok().json(recipient_json(&r))),
        None => Err(ApiError::not_found(format!(
            "no customer bound to {} {value}",
            kind.wire_name()
        ))),
    }
}

/// `DELETE …/customers?iccid=…`: 204, or 404.
pub async fn delete(app: web::Data<AppState>, req: HttpRequest) -> Answer {
    let (kind, value) = match identifier_from_query(req.query_string()) {
        Ok(v) => v,
        Err(e) => return Err(ApiError::bad_request(e)),
    };
    let v = value.clone();
    if !app.on_store(move |s| s.unbind(kind, &v)).await? {
        return Err(ApiError::not_found(format!(
            "no customer bound to {} {value}",
            kind.wire_name()
        )));
    }
    durable(&app).await?;
    Ok(HttpResponse::NoContent().finish())
}
