//! The admin listener: `/admin/*` behind the token, and `/metrics`.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics as m;
use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

/// Routes of the public listener that belong to operations (one-click unsubscribe).
pub fn public_routes(_cfg: &mut web::ServiceConfig) {}

/// `Authorization: Bearer <token>`, or HTTP Basic with the token as the
/// password (so a browser can open the preview). No token configured: open.
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

async fn metrics(app: web::Data<AppState>) -> HttpResponse {
    let counts = app.store.counts();
    let oldest = app
        .store
        .oldest_queued()
        .ok()
        .flatten()
        .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    m::set_gauges(counts, oldest, app.dispatch.is_paused());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render())
}
