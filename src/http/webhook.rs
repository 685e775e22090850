//! The intake handler: who may post, what a delivery must look like, and
//! which status code says what (SPEC §4).
//!
//! Checks run in the SPEC's order — sender 403, token 401, size 413, shape
//! 400, store 503 — so that an outsider learns nothing about the token or
//! the store, and the provider only ever retries what a retry can fix.
//! A 200 `accepted` is sent only once the event and every decision it caused
//! are on disk.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt;
use ipnet::IpNet;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::{Engine, IngestOutcome};
use crate::event::Event;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::metrics::Metrics;
use crate::telemetry::{escape, Throttle};

/// Who may post, from `[security]`.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    /// Empty means no token is required.
    pub token: String,
}

/// Who sent a request, as far as the sender rule can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Ip(IpAddr),
    /// Behind a trusted proxy, the right-most hop that is not a trusted
    /// proxy is not an address (`unknown`, `unix:…`, garbage, an empty
    /// element, a header that is not text). Never allowed: an address we
    /// cannot read might be anyone's.
    Unreadable(String),
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Ip(ip) => write!(f, "{ip}"),
            Sender::Unreadable(hop) => write!(f, "unreadable hop \"{}\"", escape(hop)),
        }
    }
}

impl SenderPolicy {
    /// The sender is the TCP peer, unless the peer is a trusted proxy: then it
    /// is the right-most `X-Forwarded-For` address that is not a trusted
    /// proxy. A header from any other peer is ignored, so it cannot be spoofed.
    /// Walking right to left stops at the first hop that is not an address:
    /// what lies left of it cannot be trusted, so that hop is the sender.
    pub fn sender(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> Sender {
        let peer = canonical(peer);
        if !self.is_proxy(peer) {
            return Sender::Ip(peer);
        }
        let mut hops: Vec<&str> = Vec::new();
        for value in forwarded_for {
            // Visible ASCII only (what `HeaderValue::to_str` accepts): a
            // proxy writes addresses, anything else was not written by it.
            let Some(text) = std::str::from_utf8(value)
                .ok()
                .filter(|t| t.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
            else {
                return Sender::Unreadable(String::from_utf8_lossy(value).into_owned());
            };
            hops.extend(text.split(','));
        }
        let mut sender = peer;
        for hop in hops.into_iter().rev() {
            let hop = hop.trim();
            let Some(ip) = parse_hop(hop) else {
                return Sender::Unreadable(hop.chars().take(64).collect());
            };
            sender = ip;
            if !self.is_proxy(ip) {
                break;
            }
        }
        Sender::Ip(sender)
    }

    /// [`SenderPolicy::sender`] of a request: its TCP peer and its
    /// `X-Forwarded-For` headers (the webhook, and the shop API's networks).
    pub fn sender_of(&self, req: &HttpRequest) -> Sender {
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let forwarded: Vec<&[u8]> = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.as_bytes())
            .collect();
        self.sender(peer, &forwarded)
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// An empty allow-list lets every address in (with a warning at start);
    /// an unreadable sender is refused even then.
    pub fn allows(&self, sender: &Sender) -> bool {
        match sender {
            Sender::Ip(ip) => {
                self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(ip))
            }
            Sender::Unreadable(_) => false,
        }
    }

    /// Compares digests so the time taken does not depend on where the
    /// strings differ, nor on the token's length.
    pub fn token_ok(&self, given: Option<&str>) -> bool {
        if self.token.is_empty() {
            return true;
        }
        given.is_some_and(|given| same_secret(given, &self.token))
    }
}

/// Whether `given` is `expected`, in a time that depends on neither where
/// they differ nor their lengths (digests are compared).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// IPv4-mapped IPv6 peers (`::ffff:1.2.3.4`) are matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` hop: a bare address, `1.2.3.4:5678` or `[::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

fn answer(status: actix_web::http::StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// A refusal, in the one error shape of both listeners. The webhook answers
/// `HttpResponse` directly: its checks run in SPEC order and each decides
/// its own status.
fn error(status: actix_web::http::StatusCode, reason: impl Into<String>) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(status, reason))
}

/// Why a delivery was refused before it was read: one log budget each.
#[derive(Clone, Copy)]
enum Refusal {
    Sender = 0,
    Token = 1,
    TooLarge = 2,
    Invalid = 3,
    Slow = 4,
}

/// One WARN line per refusal reason per second at most (SPEC §9: logged
/// with reason and sender, rate-limited), each counting those left out.
static REFUSALS: Throttle<5> = Throttle::new(std::time::Duration::from_secs(1));

/// Counts, logs (throttled) and answers one refused delivery.
fn refuse(
    metrics: &Metrics,
    why: Refusal,
    sender: &Sender,
    status: actix_web::http::StatusCode,
    outcome: &'static str,
    reason: String,
) -> HttpResponse {
    metrics.webhook("unknown", outcome);
    if let Some(left_out) = REFUSALS.allow(why as usize) {
        tracing::warn!(
            status = status.as_u16(),
            %sender,
            reason = %escape(&reason),
            left_out,
            "webhook refused"
        );
    }
    error(status, reason)
}

/// `POST {webhook_path}`.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let policy = &app.sender;
    let sender = policy.sender_of(&req);
    if !policy.allows(&sender) {
        return refuse(
            &app.metrics,
            Refusal::Sender,
            &sender,
            S::FORBIDDEN,
            "rejected_ip",
            "sender address not allowed".into(),
        );
    }
    let token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    if !policy.token_ok(token.as_deref()) {
        return refuse(
            &app.metrics,
            Refusal::Token,
            &sender,
            S::UNAUTHORIZED,
            "rejected_token",
            "wrong or missing token".into(),
        );
    }

    let limit = app.max_body_bytes;
    let too_large = || {
        refuse(
            &app.metrics,
            Refusal::TooLarge,
            &sender,
            S::PAYLOAD_TOO_LARGE,
            "invalid",
            format!("body is larger than {limit} bytes"),
        )
    };
    let timeout = app.config.server.body_timeout.0;
    let body = match read_limited(&req, payload, limit, timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Unreadable) => {
            return refuse(
                &app.metrics,
                Refusal::Invalid,
                &sender,
                S::BAD_REQUEST,
                "invalid",
                "the body could not be read".into(),
            )
        }
        Err(BodyError::Slow) => {
            let mut r = refuse(
                &app.metrics,
                Refusal::Slow,
                &sender,
                S::REQUEST_TIMEOUT,
                "invalid",
                format!("the body did not arrive within {}s", timeout.as_secs_f64()),
            );
            // The rest of the body may still be on its way: do not read it.
            r.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return r;
        }
    };
    let invalid = |reason: String| {
        refuse(
            &app.metrics,
            Refusal::Invalid,
            &sender,
            S::BAD_REQUEST,
            "invalid",
            reason,
        )
    };

    let value: serde_json::Value = match crate::event::read_json(&body) {
        Ok(v) => v,
        Err(e) => return invalid(e.to_string()),
    };
    let event = match Event::from_value(&value) {
        Ok(e) => e,
        Err(e) => return invalid(e.to_string()),
    };
    let kind = event.notify_type.metric_label();
    if event.notify_type.is_ignored() {
        app.metrics.webhook(kind, "ignored");
        tracing::info!(notify_type = %escape(event.notify_type.as_str()), notify_id = %notify_id(&event), outcome = "ignored", "webhook");
        return answer(S::OK, json!({ "status": "ignored" }));
    }

    let rules = app.rules();
    let store = app.store.clone();
    let (e, now) = (event.clone(), Utc::now());
    let ingested = app
        .on_store(move |s| s.ingest(&e, &value, &rules, now))
        .await;
    let outcome = match ingested {
        Ok(o) => o,
        Err(e) => {
            // A database that cannot be reached was logged once, when it went.
            if !app.store.unreachable() {
                tracing::error!(error = %e, "webhook not recorded: store cannot write");
            }
            return error(
                S::SERVICE_UNAVAILABLE,
                "the store cannot write; retry later",
            );
        }
    };
    // A duplicate waits for durability too: the first delivery of that
    // notifyId may have been committed but not yet flushed, and answering
    // "duplicate" before it is on disk could lose it in a crash.
    let flushed = store
        .durable()
        .await
        .unwrap_or_else(|_| Err("the store flusher stopped".into()));
    if let Err(e) = flushed {
        tracing::error!(error = %e, "webhook not acknowledged: flush failed");
        return error(
            S::SERVICE_UNAVAILABLE,
            "the store cannot write; retry later",
        );
    }
    match outcome {
        IngestOutcome::Duplicate => {
            app.metrics.webhook(kind, "duplicate");
            tracing::info!(notify_type = kind, notify_id = %notify_id(&event), outcome = "duplicate", "webhook");
            answer(S::OK, json!({ "status": "duplicate" }))
        }
        IngestOutcome::Accepted {
            esim,
            queued,
            decisions,
        } => {
            app.metrics.webhook(kind, "accepted");
            // The stored value, so the gauge reads the same after a restart.
            app.metrics
                .last_webhook_at(store.last_webhook().ok().flatten());
            app.metrics.decisions(&decisions);
            for field in &event.unreadable {
                app.metrics.unreadable(kind, field);
            }
            tracing::info!(
                notify_type = kind,
                notify_id = %notify_id(&event),
                esim = %esim_name(&event, esim, store.as_ref()),
                queued = queued.len(),
                unreadable = %event.unreadable.join(","),
                outcome = "accepted",
                "webhook"
            );
            app.dispatch.enqueue(queued);
            answer(S::OK, json!({ "status": "accepted" }))
        }
    }
}

/// The notifyId as logged: escaped, `-` when absent (never `Some("…")`).
fn notify_id(event: &Event) -> String {
    escape(event.notify_id.as_deref().unwrap_or("-")).into_owned()
}

/// Names an eSIM in logs by what the admin API accepts (SPEC §9):
/// esimTranNo, else iccid — from the event, else from the store when the
/// event carried only an orderNo or transactionId. Never the internal number.
fn esim_name(event: &Event, esim: Option<crate::engine::EsimId>, store: &Engine) -> String {
    let pick =
        |ids: &crate::event::Identifiers| ids.esim_tran_no.clone().or_else(|| ids.iccid.clone());
    let name = pick(&event.ids).or_else(|| {
        esim.and_then(|id| store.esim_state(id).ok().flatten())
            .and_then(|(_, ids)| pick(&ids))
    });
    escape(name.as_deref().unwrap_or("-")).into_owned()
}

pub(super) enum BodyError {
    TooLarge,
    Unreadable,
    /// Still arriving after `server.body_timeout`.
    Slow,
}

/// The whole body within `timeout`: a declared Content-Length over `limit`
/// is refused before anything is read, a body that grows past it as soon
/// as it does.
pub(super) async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<web::BytesMut, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    tokio::time::timeout(timeout, read_body(payload, limit))
        .await
        .unwrap_or(Err(BodyError::Slow))
}

/// Reads the body up to `limit` bytes (a chunked body has no Content-Length
/// to refuse up front).
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, BodyError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], proxies: &[&str]) -> SenderPolicy {
        SenderPolicy {
            allowed: allowed
                .iter()
                .map(|s| crate::config::parse_net(s).unwrap())
                .collect(),
            trusted_proxies: proxies
                .iter()
                .map(|s| crate::config::parse_net(s).unwrap())
                .collect(),
            token: "s3cret".into(),
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let p = policy(&["3.1.131.226"], &["10.0.0.1"]);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(p.sender(peer, &[b"3.1.131.226"]), Sender::Ip(peer));
    }

    #[test]
    fn right_most_untrusted_hop_behind_a_proxy() {
        let p = policy(&["3.1.131.226"], &["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let s = p.sender(peer, &[b"6.6.6.6, 3.1.131.226", b"10.0.0.2"]);
        assert_eq!(s, Sender::Ip("3.1.131.226".parse().unwrap()));
        assert_eq!(p.sender(peer, &[]), Sender::Ip(peer));
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_the_walk_and_is_refused() {
        let p = policy(&["3.1.131.226"], &["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for xff in [
            &b"3.1.131.226, unknown"[..],
            b"3.1.131.226, unix:/run/x.sock",
            b"3.1.131.226,, 10.0.0.2",
            b"3.1.131.226,",
            b"",
            b"3.1.131.226 \xff",
            b"3.1.131.226\x01",
        ] {
            let s = p.sender(peer, &[xff]);
            assert!(matches!(s, Sender::Unreadable(_)), "{xff:?}: {s:?}");
            assert!(!p.allows(&s));
        }
        assert!(!policy(&[], &["10.0.0.0/8"]).allows(&Sender::Unreadable("x".into())));
        let shown = Sender::Unreadable("a\nb".into()).to_string();
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn tokens() {
        let p = policy(&[], &[]);
        assert!(p.token_ok(Some("s3cret")));
        assert!(!p.token_ok(Some("s3cre")));
        assert!(!p.token_ok(None));
    }
}
