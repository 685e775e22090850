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

use crate::event::Event;
use crate::metrics as m;
use crate::startup::AppState;
use crate::store::IngestOutcome;

/// Who may post, from `[security]`.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    /// Empty means no token is required.
    pub token: String,
}

impl SenderPolicy {
    /// The sender is the TCP peer, unless the peer is a trusted proxy: then it
    /// is the right-most `X-Forwarded-For` address that is not a trusted
    /// proxy. A header from any other peer is ignored, so it cannot be spoofed.
    pub fn sender(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_proxy(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .filter_map(|s| parse_hop(s.trim()))
            .collect();
        let mut sender = peer;
        for hop in hops.into_iter().rev() {
            sender = hop;
            if !self.is_proxy(hop) {
                break;
            }
        }
        sender
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// An empty allow-list lets everyone in (with a warning at start).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// Compares digests so the time taken does not depend on where the
    /// strings differ, nor on the token's length.
    pub fn token_ok(&self, given: Option<&str>) -> bool {
        if self.token.is_empty() {
            return true;
        }
        let Some(given) = given else { return false };
        let a = Sha256::digest(given.as_bytes());
        let b = Sha256::digest(self.token.as_bytes());
        a.ct_eq(&b).into()
    }
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

fn error(status: actix_web::http::StatusCode, reason: impl Into<String>) -> HttpResponse {
    answer(status, json!({ "error": reason.into() }))
}

/// `POST {webhook_path}`.
pub async fn receive(
    req: HttpRequest,
    mut payload: web::Payload,
    app: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let policy = &app.sender;
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let sender = policy.sender(peer, &forwarded);
    if !policy.allows(sender) {
        m::webhook("unknown", "rejected_ip");
        tracing::warn!(%sender, "webhook refused: sender address not allowed");
        return error(S::FORBIDDEN, "sender address not allowed");
    }
    let token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    if !policy.token_ok(token.as_deref()) {
        m::webhook("unknown", "rejected_token");
        tracing::warn!(%sender, "webhook refused: wrong or missing token");
        return error(S::UNAUTHORIZED, "wrong or missing token");
    }

    let limit = app.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        m::webhook("unknown", "invalid");
        return error(
            S::PAYLOAD_TOO_LARGE,
            format!("body is larger than {limit} bytes"),
        );
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            m::webhook("unknown", "invalid");
            return error(S::BAD_REQUEST, "the body could not be read");
        };
        if body.len() + chunk.len() > limit {
            m::webhook("unknown", "invalid");
            return error(
                S::PAYLOAD_TOO_LARGE,
                format!("body is larger than {limit} bytes"),
            );
        }
        body.extend_from_slice(&chunk);
    }

    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            m::webhook("unknown", "invalid");
            return error(S::BAD_REQUEST, format!("body is not valid JSON: {e}"));
        }
    };
    let event = match Event::from_value(&value) {
        Ok(e) => e,
        Err(e) => {
            m::webhook("unknown", "invalid");
            return error(S::BAD_REQUEST, e.to_string());
        }
    };
    let kind = event.notify_type.metric_label();
    if event.notify_type.is_ignored() {
        m::webhook(kind, "ignored");
        tracing::info!(notify_type = event.notify_type.as_str(), notify_id = ?event.notify_id, outcome = "ignored", "webhook");
        return answer(S::OK, json!({ "status": "ignored" }));
    }

    let rules = app.rules();
    let store = app.store.clone();
    let outcome = match store.ingest(&event, &value, &rules, Utc::now()) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "webhook not recorded: store cannot write");
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
            m::webhook(kind, "duplicate");
            tracing::info!(notify_type = kind, notify_id = ?event.notify_id, outcome = "duplicate", "webhook");
            answer(S::OK, json!({ "status": "duplicate" }))
        }
        IngestOutcome::Accepted {
            esim,
            queued,
            decisions,
        } => {
            m::webhook(kind, "accepted");
            m::last_webhook_now();
            m::decisions(&decisions);
            for field in &event.unreadable {
                m::unreadable(kind, field);
            }
            tracing::info!(
                notify_type = kind,
                notify_id = ?event.notify_id,
                esim = ?esim,
                queued = queued.len(),
                unreadable = ?event.unreadable,
                outcome = "accepted",
                "webhook"
            );
            app.dispatch.enqueue(queued);
            answer(S::OK, json!({ "status": "accepted" }))
        }
    }
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
        assert_eq!(p.sender(peer, &["3.1.131.226"]), peer);
    }

    #[test]
    fn right_most_untrusted_hop_behind_a_proxy() {
        let p = policy(&["3.1.131.226"], &["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let s = p.sender(peer, &["6.6.6.6, 3.1.131.226", "10.0.0.2"]);
        assert_eq!(s, "3.1.131.226".parse::<IpAddr>().unwrap());
        assert_eq!(p.sender(peer, &[]), peer);
    }

    #[test]
    fn tokens() {
        let p = policy(&[], &[]);
        assert!(p.token_ok(Some("s3cret")));
        assert!(!p.token_ok(Some("s3cre")));
        assert!(!p.token_ok(None));
    }
}
