//! The admin listener: `/admin/*` behind the token, and `/metrics`.
//!
//! Every answer is JSON, errors as `{"error": reason}`. What a client sent
//! wrong is a 4xx with the reason, never a 500; a store that cannot read or
//! write is a 503, so a script knows a retry may help. Changes are answered
//! only once they are on disk, as the webhook's 200 is.
//! The console's pages (`GET /admin/`, `/admin/preview`, …) live in
//! `console/`; forged browser requests are refused by `csrf.rs`.

use std::path::{Path, PathBuf};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::customers::{mask_email, normalize_email};
use crate::engine::{DeadRetry, SuppressReason};
use crate::http::answer::{durable, parse_json, Answer};
use crate::http::customers::{self, recipient_json};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::live::ReloadOutcome;
use crate::operator_views::{
    dead_rows, outbox_rows, parked_rows, prepare_backup_target, retry_refused, EsimLabels,
    RetryAnswer,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics)).service(
        web::scope("/admin")
            // The last wrap runs first: the token is checked, then forgery.
            .wrap(from_fn(crate::http::csrf::refuse_forgeries))
            .wrap(from_fn(require_token))
            .configure(crate::http::console::routes)
            .route("/customers", web::put().to(customers::put))
            .route("/customers", web::get().to(customers::get))
            .route("/customers", web::delete().to(customers::delete))
            .route("/customers/forget", web::post().to(forget_customer))
            .route("/suppressions", web::get().to(list_suppressions))
            .route("/suppressions/{email}", web::get().to(get_suppression))
            .route("/suppressions/{email}", web::put().to(put_suppression))
            .route(
                "/suppressions/{email}",
                web::delete().to(delete_suppression),
            )
            .route("/outbox", web::get().to(list_outbox))
            .route("/outbox/{id}", web::delete().to(cancel_outbox))
            .route("/dead", web::get().to(list_dead))
            .route("/dead/{id}/retry", web::post().to(retry_dead))
            .route("/parked", web::get().to(list_parked))
            .route("/pause", web::post().to(pause))
            .route("/resume", web::post().to(resume))
            .route("/backup", web::post().to(backup))
            .route("/set-aside", web::get().to(list_set_aside))
            .route("/esims/{id}", web::get().to(esim))
            .route("/stats", web::get().to(crate::http::stats::stats))
            .route(
                "/esims/{id}/resend",
                web::post().to(crate::http::resend::resend),
            )
            .route("/reload", web::post().to(reload))
            .route("/keys", web::get().to(crate::http::keys::list))
            .route("/keys", web::post().to(crate::http::keys::create))
            .route("/keys/{name}", web::delete().to(crate::http::keys::revoke))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::not_found("not found"))
            })),
    );
}

/// `Authorization: Bearer <token>`, or HTTP Basic with the token as the
/// password (so a browser can open the console). No token configured: open.
pub fn authorized(req: &HttpRequest, token: &str) -> bool {
    if token.is_empty() {
        return true;
    }
    let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(t) = h.strip_prefix("Bearer ") {
        t.trim().to_string()
    } else if let Some(b) = h.strip_prefix("Basic ") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else {
            return false;
        };
        let raw = String::from_utf8_lossy(&raw).to_string();
        match raw.split_once(':') {
            Some((_, pw)) => pw.to_string(),
            None => return false,
        }
    } else {
        return false;
    };
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// Applied to the whole `/admin` scope, unknown paths included, so an
/// outsider cannot even learn which paths exist.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let token = req
        .app_data::<web::Data<AppState>>()
        .map(|a| a.config.admin.token.expose().to_string())
        .unwrap_or_default();
    if !authorized(req.request(), &token) {
        let resp = HttpResponse::Unauthorized()
            // Basic first, so a browser opening the console asks for the
            // token; one challenge per header, since Chromium does not read a
            // second challenge in the same header and then asks for nothing.
            .append_header((
                "WWW-Authenticate",
                "Basic realm=\"esim-notify admin\", charset=\"UTF-8\"",
            ))
            .append_header(("WWW-Authenticate", "Bearer realm=\"esim-notify admin\""))
            .json(json!({"error": "wrong or missing admin token"}));
        return Ok(req.into_response(resp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

async fn metrics(app: web::Data<AppState>) -> HttpResponse {
    let counts = app.store.counts();
    let oldest = app
        .store
        .oldest_queued()
        .ok()
        .flatten()
        .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    app.metrics
        .set_gauges(counts, oldest, app.dispatch.is_paused());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render())
}

// ---------------------------------------------------------------------------
// Handlers

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("`{raw}` is not a notice id")))
}

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

async fn forget_customer(app: web::Data<AppState>, body: web::Bytes) -> Answer {
    let EmailBody { email } = parse_json(&body)?;
    if email.trim().is_empty() {
        return Err(ApiError::bad_request("`email` is empty"));
    }
    let (address, now) = (email.clone(), Utc::now());
    let report = app.on_store(move |s| s.forget(&address, now)).await?;
    durable(&app).await?;
    for id in &report.cancelled_ids {
        app.dispatch.cancel(*id);
    }
    tracing::info!(
        recipient = %mask_email(&email),
        bindings = report.bindings,
        cancelled = report.cancelled,
        redacted = report.redacted,
        "customer forgotten"
    );
    Ok(HttpResponse::Ok().json(report))
}

async fn list_suppressions(app: web::Data<AppState>) -> Answer {
    Ok(HttpResponse::Ok().json(app.on_store(|s| s.suppressions()).await?))
}

async fn get_suppression(app: web::Data<AppState>, email: web::Path<String>) -> Answer {
    let address = email.clone();
    match app.on_store(move |s| s.suppression(&address)).await? {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(ApiError::not_found(format!("{email} is not suppressed"))),
    }
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn put_suppression(
    app: web::Data<AppState>,
    email: web::Path<String>,
    body: web::Bytes,
) -> Answer {
    let ReasonBody { reason } = if body.iter().all(u8::is_ascii_whitespace) {
        ReasonBody::default()
    } else {
        parse_json(&body)?
    };
    let email = match normalize_email(&email) {
        Ok(e) => e,
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    // One of the four reasons by name; other text is the operator's note.
    let (reason, detail) = SuppressReason::classify(reason.as_deref().unwrap_or("operator"));
    let (address, now) = (email.clone(), Utc::now());
    let suppression = app
        .on_store(move |s| {
            s.suppress(&address, reason, detail.as_deref(), now)?;
            s.suppression(&address)
        })
        .await?;
    durable(&app).await?;
    tracing::info!(recipient = %mask_email(&email), %reason, "address suppressed");
    match suppression {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(ApiError::unavailable(
            "the suppression just written cannot be read back",
        )),
    }
}

async fn delete_suppression(app: web::Data<AppState>, email: web::Path<String>) -> Answer {
    let address = email.to_string();
    if !app.on_store(move |s| s.unsuppress(&address)).await? {
        return Err(ApiError::not_found(format!("{email} is not suppressed")));
    }
    durable(&app).await?;
    tracing::info!(recipient = %mask_email(&email), "suppression removed");
    Ok(HttpResponse::NoContent().finish())
}

async fn list_outbox(app: web::Data<AppState>) -> Answer {
    let paused = app.dispatch.is_operator_paused();
    Ok(HttpResponse::Ok().json(app.on_store(move |s| outbox_rows(s, paused)).await?))
}

async fn list_parked(app: web::Data<AppState>) -> Answer {
    let park_for = app.config.customers.park_for.0;
    Ok(HttpResponse::Ok().json(app.on_store(move |s| parked_rows(s, park_for)).await?))
}

async fn cancel_outbox(app: web::Data<AppState>, id: web::Path<String>) -> Answer {
    let id = parse_id(&id)?;
    let now = Utc::now();
    if !app.on_store(move |s| s.cancel(id, now)).await? {
        return Err(ApiError::not_found(format!("no queued notice {id}")));
    }
    durable(&app).await?;
    app.dispatch.cancel(id);
    Ok(HttpResponse::NoContent().finish())
}

async fn list_dead(app: web::Data<AppState>) -> Answer {
    Ok(HttpResponse::Ok().json(app.on_store(dead_rows).await?))
}

async fn retry_dead(app: web::Data<AppState>, id: web::Path<String>) -> Answer {
    let id = parse_id(&id)?;
    let now = Utc::now();
    let (q, lifted) = match app.on_store(move |s| s.retry_dead(id, now)).await? {
        DeadRetry::Requeued { notice, lifted } => (*notice, lifted),
        DeadRetry::NotFound => {
            return Err(ApiError::not_found(format!(
                "no dead letter {id} (or its customer was forgotten)"
            )))
        }
        DeadRetry::Suppressed(s) => {
            return Err(ApiError::new(StatusCode::CONFLICT, retry_refused(id, &s))
                .with(json!({ "suppression": s })))
        }
    };
    durable(&app).await?;
    if let Some(s) = &lifted {
        tracing::info!(notice = id, recipient = %mask_email(&s.email), "automatic suppression lifted by a dead-letter retry");
    }
    let notice = q.clone();
    let row = app
        .on_store(move |s| EsimLabels::new(s).row(&notice))
        .await?;
    app.dispatch.enqueue(vec![q]);
    Ok(HttpResponse::Ok().json(RetryAnswer {
        notice: row,
        lifted_suppression: lifted,
    }))
}

async fn set_paused(app: &AppState, paused: bool) -> Answer {
    app.on_store(move |s| s.set_paused(paused)).await?;
    durable(app).await?;
    app.dispatch.set_paused(paused);
    tracing::info!(
        paused,
        "sending {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(HttpResponse::Ok().json(json!({ "paused": paused })))
}

async fn pause(app: web::Data<AppState>) -> Answer {
    set_paused(&app, true).await
}

async fn resume(app: web::Data<AppState>) -> Answer {
    set_paused(&app, false).await
}

#[derive(Deserialize)]
struct BackupBody {
    dir: PathBuf,
}

async fn backup(app: web::Data<AppState>, body: web::Bytes) -> Answer {
    let BackupBody { dir } = parse_json(&body)?;
    let base = app.config_path.as_deref().and_then(Path::parent);
    let dir = match prepare_backup_target(&dir, base, &app.config) {
        Ok(d) => d,
        Err(e) => return Err(ApiError::bad_request(e)),
    };
    // A long copy: off the async workers, and (store::SledStorage::backup)
    // without holding the store's lock, so intake goes on meanwhile.
    let target = dir.clone();
    app.on_store(move |s| s.backup(&target)).await?;
    tracing::info!(dir = %dir.display(), "backup written");
    Ok(HttpResponse::Ok().json(json!({"status": "ok", "dir": dir})))
}

/// Records set aside at start because they did not decode (engine::set_aside):
/// where each was, its key and size, why, and its bytes in hex for a post-mortem.
async fn list_set_aside(app: web::Data<AppState>) -> Answer {
    use crate::engine::set_aside::hex;
    let rows = app.on_store(|s| s.set_aside()).await?;
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "space": r.space,
                "key": hex(&r.key),
                "size": r.bytes.len(),
                "reason": r.reason,
                "at": r.at.to_rfc3339(),
                "bytes": hex(&r.bytes),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

async fn esim(app: web::Data<AppState>, id: web::Path<String>) -> Answer {
    let wanted = id.trim().to_string();
    let Some(v) = app.on_store(move |s| s.esim_view(None, &wanted)).await? else {
        return Err(ApiError::not_found(format!("no eSIM known as {id}")));
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": v.id,
        "identifiers": {
            "esimTranNo": v.ids.esim_tran_no,
            "iccid": v.ids.iccid,
            "orderNo": v.ids.order_no,
            "transactionId": v.ids.transaction_id,
        },
        "state": v.state,
        "recipient": v.recipient.as_ref().map(recipient_json),
        "parked": v.parked,
        "decisions": v.decisions,
    })))
}

/// What SIGHUP does, on request: `200 {"reloaded": true, "restart_needed":
/// […]}` when the new configuration and templates were taken; `422
/// {"error", "reloaded": false, "problems": […]}` when they were refused
/// (the previous ones stay in force); `409` when the configuration came
/// from no file.
async fn reload(app: web::Data<AppState>) -> Answer {
    let state = app.clone();
    let outcome = web::block(move || {
        crate::live::reload(
            &state.config,
            &state.live,
            state.config_path.as_deref(),
            &state.metrics,
        )
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("reload failed: {e}")))?;
    match outcome {
        ReloadOutcome::Applied { restart_needed } => Ok(
            HttpResponse::Ok().json(json!({"reloaded": true, "restart_needed": restart_needed}))
        ),
        ReloadOutcome::Refused { problems } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "reload refused, the previous configuration stays in force: {}",
                problems.join("; ")
            ),
        )
        .with(json!({"reloaded": false, "problems": problems}))),
        ReloadOutcome::NoFile => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the configuration came from no file: there is nothing to reload",
        )
        .with(json!({"reloaded": false, "problems": []}))),
    }
}
