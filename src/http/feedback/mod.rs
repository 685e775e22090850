//! `POST /feedback/{ses,sendgrid,postmark,mailgun}` on the public listener
//! (SPEC §4, §8): the mail provider's bounce and complaint reports, one file
//! per provider for how it signs and what its payload says.
//!
//! What they share lives here. A provider that `[feedback]` leaves off
//! answers 404. A body is read whole (up to [`MAX_BODY`]) and verified on
//! its raw bytes before it is parsed; a bad signature or token is 401,
//! logged at most once a second per provider and never with the secret.
//! What a verified report did is 200 (also for a report about nothing we
//! sent, so the provider stops retrying), given only once it is on disk;
//! 503 only when the store cannot write (the provider retries). Nothing a
//! client sends is a 5xx.

pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod ses;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use super::webhook::{read_limited, BodyError};
use crate::customers::mask_email;
use crate::engine::{Report, ReportOutcome};
use crate::telemetry::{escape, Throttle};

/// The largest report body taken: SendGrid batches up to 768 KB.
pub const MAX_BODY: usize = 1024 * 1024;

/// What the feedback handlers share beyond the app: the client that fetches
/// SNS certificates and confirms subscriptions, and the certificates.
pub struct FeedbackState {
    client: reqwest::Client,
    certs: ses::Certificates,
}

impl FeedbackState {
    /// A client that never follows a redirect (a checked URL must not lead
    /// elsewhere) and gives up after 10 s.
    pub fn new() -> Result<FeedbackState, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(FeedbackState {
            client,
            certs: ses::Certificates::default(),
        })
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/feedback/ses", web::post().to(ses::receive))
        .route("/feedback/sendgrid", web::post().to(sendgrid::receive))
        .route("/feedback/postmark", web::post().to(postmark::receive))
        .route("/feedback/mailgun", web::post().to(mailgun::receive));
}

fn index(provider: &str) -> usize {
    crate::metrics::FEEDBACK_PROVIDERS
        .iter()
        .position(|p| *p == provider)
        .unwrap_or(0)
}

/// One WARN line per provider per second at most for refused requests.
static REFUSALS: Throttle<4> = Throttle::new(std::time::Duration::from_secs(1));

/// A provider `[feedback]` leaves off.
fn off(provider: &str) -> HttpResponse {
    ApiError::not_found(format!(
        "{provider} reports are not configured ([feedback])"
    ))
    .error_response()
}

/// A refused request: counted, logged (throttled; `reason` never holds a
/// secret), answered `{"error": reason}`.
fn refuse(
    app: &AppState,
    provider: &'static str,
    status: StatusCode,
    reason: impl Into<String>,
) -> HttpResponse {
    let reason = reason.into();
    app.metrics.feedback(provider, "rejected", 1);
    if let Some(left_out) = REFUSALS.allow(index(provider)) {
        tracing::warn!(
            provider,
            status = status.as_u16(),
            reason = %escape(&reason),
            left_out,
            "feedback report refused"
        );
    }
    ApiError::new(status, reason).error_response()
}

fn unauthorized(app: &AppState, provider: &'static str, reason: &str) -> HttpResponse {
    refuse(app, provider, StatusCode::UNAUTHORIZED, reason)
}

fn bad_request(app: &AppState, provider: &'static str, reason: impl Into<String>) -> HttpResponse {
    refuse(app, provider, StatusCode::BAD_REQUEST, reason)
}

/// The raw body, or the refusal to answer instead (413, 400, 408).
async fn body(
    app: &AppState,
    provider: &'static str,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<web::Bytes, HttpResponse> {
    let too_large = || {
        refuse(
            app,
            provider,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {MAX_BODY} bytes"),
        )
    };
    let timeout = app.config.server.body_timeout.0;
    match read_limited(req, payload, MAX_BODY, timeout).await {
        Ok(b) => Ok(b.freeze()),
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::Unreadable) => Err(bad_request(app, provider, "the body could not be read")),
        Err(BodyError::Slow) => {
            let mut r = refuse(
                app,
                provider,
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
            r.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            Err(r)
        }
    }
}

/// The store cannot write: the provider retries.
fn unavailable(provider: &str, e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(provider, error = %e, "feedback report not recorded: store cannot write");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store cannot write; retry later",
    )
    .error_response()
}

/// Applies verified reports (and counts the events that were none), then
/// answers once what they wrote is on disk.
async fn take(
    app: &AppState,
    provider: &'static str,
    reports: Vec<Report>,
    ignored: usize,
) -> HttpResponse {
    let now = Utc::now();
    let mut done = Vec::with_capacity(reports.len());
    for report in reports {
        let r = report.clone();
        // The eSIM's name for the log line is read here too, off the async workers.
        let taken = app
            .on_store(move |s| {
                let (outcome, written) = s.report(&r, now)?;
                let name = match &outcome {
                    ReportOutcome::Recorded { esim, .. } => esim_name(s, *esim),
                    _ => "-".to_string(),
                };
                Ok((outcome, written, name))
            })
            .await;
        match taken {
            Ok((outcome, written, name)) => done.push((report, outcome, written, name)),
            Err(e) => return unavailable(provider, e),
        }
    }
    let flushed = app
        .store
        .durable()
        .await
        .unwrap_or_else(|_| Err("the store flusher stopped".into()));
    if let Err(e) = flushed {
        return unavailable(provider, e);
    }
    let (mut recorded, mut unknown, mut repeated) = (0, 0, 0);
    for (report, outcome, written, name) in &done {
        app.metrics.decisions(written);
        let to = report
            .recipient
            .as_deref()
            .map(mask_email)
            .unwrap_or_else(|| "-".into());
        let label = match outcome {
            ReportOutcome::Recorded { template, .. } => {
                recorded += 1;
                tracing::info!(provider, kind = report.kind.label(), template = %template, esim = %name, to = %to, outcome = "recorded", "feedback report");
                report.kind.label()
            }
            ReportOutcome::Unknown => {
                unknown += 1;
                tracing::info!(provider, kind = report.kind.label(), to = %to, outcome = "unknown", "feedback report about no message sent");
                "unknown"
            }
            ReportOutcome::Repeated => {
                repeated += 1;
                "repeated"
            }
        };
        app.metrics.feedback(provider, label, 1);
    }
    app.metrics.feedback(provider, "ignored", ignored as u64);
    HttpResponse::Ok().json(json!({
        "status": "accepted",
        "recorded": recorded,
        "unknown": unknown,
        "repeated": repeated,
        "ignored": ignored,
    }))
}

/// An eSIM as logs name it: esimTranNo, else iccid (SPEC §9).
fn esim_name(store: &crate::engine::Engine, esim: crate::engine::EsimId) -> String {
    let name = store
        .esim_state(esim)
        .ok()
        .flatten()
        .and_then(|(_, ids)| ids.esim_tran_no.or(ids.iccid));
    escape(name.as_deref().unwrap_or("-")).into_owned()
}

/// The notice id a relay echoed from our custom data: a string or a number.
fn notice_id(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::Array(a) => notice_id(a.first()),
        _ => None,
    }
}

/// A string field, if present and a string.
fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
}

/// An event id for a report whose provider gave none: the same report gives
/// the same id, so a repeat is still recognised.
fn derived_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("h{}", &hex::encode(h.finalize())[..32])
}
