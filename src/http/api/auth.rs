//! Who is calling `/api/v1`: `Authorization: Bearer <API key>`, checked on
//! every request against the store (no cache, so a key revoked on any
//! instance is refused on the next request everywhere), in this order:
//! `401` no key, or one the store does not know; `403` a key restricted to
//! networks the sender address (SPEC §4, through `trusted_proxies`) is not
//! in; `429` over the key's rate, with `Retry-After`. The scope is checked
//! by each handler ([`require`]): `403` without it.
//!
//! The key is never logged or kept: only its SHA-256 is looked up, and the
//! stored hash is compared with it in constant time. Refusals are logged
//! (throttled) with the key's name when there is one and the sender.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use chrono::Utc;
use subtle::ConstantTimeEq;

use super::rate::KeyLimiter;
use crate::api_keys::{self, ApiKey, Scope};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::webhook::Sender;
use crate::telemetry::{escape, Throttle};

/// The key a request was let in with, for its handler.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

/// One WARN line per kind of refusal per second at most.
static REFUSALS: Throttle<4> = Throttle::new(std::time::Duration::from_secs(1));

fn refuse(
    kind: usize,
    status: StatusCode,
    key: Option<&str>,
    sender: &Sender,
    reason: &str,
) -> ApiError {
    if let Some(left_out) = REFUSALS.allow(kind) {
        tracing::warn!(
            status = status.as_u16(),
            key = %key.map(escape).unwrap_or(std::borrow::Cow::Borrowed("-")),
            %sender,
            reason,
            left_out,
            "api request refused"
        );
    }
    ApiError::new(status, reason)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware on the `/api/v1` scope (the OpenAPI document excepted).
pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match admit(&req).await {
        Ok(key) => {
            req.extensions_mut().insert(Caller(key));
            let mut resp = next.call(req).await?.map_into_boxed_body();
            // A customer's data: no proxy or browser cache keeps it.
            resp.headers_mut().insert(
                actix_web::http::header::CACHE_CONTROL,
                actix_web::http::header::HeaderValue::from_static("no-store"),
            );
            Ok(resp)
        }
        Err(e) => {
            let resp = e.error_response();
            Ok(req.into_response(resp))
        }
    }
}

async fn admit(req: &ServiceRequest) -> Result<ApiKey, ApiError> {
    let (Some(app), Some(limiter)) = (
        req.app_data::<web::Data<AppState>>().cloned(),
        req.app_data::<web::Data<KeyLimiter>>().cloned(),
    ) else {
        // Fail closed: without its state the listener cannot tell who calls.
        return Err(ApiError::unavailable("the API is not set up"));
    };
    let sender = app.sender.sender_of(req.request());
    let Some(presented) = bearer(req.request()) else {
        return Err(refuse(
            0,
            StatusCode::UNAUTHORIZED,
            None,
            &sender,
            "missing API key: send Authorization: Bearer <key>",
        ));
    };
    let hash = api_keys::hash(presented);
    let wanted = hash.clone();
    let found = app.on_store(move |s| s.api_key_by_hash(&wanted)).await?;
    let key = match found {
        Some(k) if bool::from(k.hash.as_slice().ct_eq(hash.as_slice())) => k,
        _ => {
            return Err(refuse(
                0,
                StatusCode::UNAUTHORIZED,
                None,
                &sender,
                "unknown or revoked API key",
            ))
        }
    };
    if !key.networks.is_empty() {
        let inside = match &sender {
            Sender::Ip(ip) => key.networks.iter().any(|n| n.contains(ip)),
            Sender::Unreadable(_) => false,
        };
        if !inside {
            return Err(refuse(
                1,
                StatusCode::FORBIDDEN,
                Some(&key.name),
                &sender,
                "this API key may not be used from this address",
            ));
        }
    }
    if let Err(wait) = limiter.check(&key.name) {
        return Err(refuse(
            2,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&key.name),
            &sender,
            "too many requests for this API key; retry later",
        )
        .retry_after(wait));
    }
    let now = Utc::now();
    if key.last_used_is_stale(now) {
        // Off the request's path; a failure only leaves "last used" older.
        let app = app.clone();
        let hash = key.hash.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = app.store.touch_api_key(&hash, now) {
                tracing::warn!(error = %e, "cannot record an API key's last use");
            }
        });
    }
    tracing::debug!(key = %escape(&key.name), %sender, path = %escape(req.path()), "api request");
    Ok(key)
}

/// The caller's key, if it holds `scope`; `403` otherwise.
pub fn require(req: &HttpRequest, scope: Scope) -> Result<ApiKey, ApiError> {
    let Some(Caller(key)) = req.extensions().get::<Caller>().cloned() else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing API key"));
    };
    if !key.allows(scope) {
        let sender = match req.app_data::<web::Data<AppState>>() {
            Some(app) => app.sender.sender_of(req),
            None => Sender::Unreadable("-".into()),
        };
        return Err(refuse(
            3,
            StatusCode::FORBIDDEN,
            Some(&key.name),
            &sender,
            &format!("this API key does not have the scope `{scope}`"),
        ));
    }
    Ok(key)
}
