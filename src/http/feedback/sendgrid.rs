//! SendGrid's Event Webhook: a JSON array of events, signed with ECDSA
//! P-256/SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp` header's
//! bytes followed by the raw body (never re-serialised: its `\r\n` between
//! events are part of what was signed). The signature header is base64 of a
//! DER `SEQUENCE {r, s}`; the key is `feedback.sendgrid_public_key`.
//!
//! `bounce` (`type` "bounce" permanent, "blocked" temporary), `dropped`
//! (never sent: an address SendGrid itself suppresses for a bounce or a
//! spam report counts as that) and `spamreport` are read; every other event
//! is acknowledged and counted as ignored. `sg_event_id` makes a repeat.
//! No replay window is documented (retries may keep their timestamp), so
//! none is imposed: a replayed batch repeats events already taken.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use serde_json::Value;

use super::{bad_request, body, derived_id, notice_id, off, take, text, unauthorized};
use crate::engine::{Report, ReportKind};
use crate::http::state::AppState;
use crate::mailer::relay_tags::NOTICE_ID;

const PROVIDER: &str = "sendgrid";
pub const SIGNATURE: &str = "X-Twilio-Email-Event-Webhook-Signature";
pub const TIMESTAMP: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> HttpResponse {
    let Some(point) = app.config.feedback.sendgrid_point() else {
        return off(PROVIDER);
    };
    let raw = match body(&app, PROVIDER, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes().to_vec());
    let (Some(signature), Some(timestamp)) = (header(SIGNATURE), header(TIMESTAMP)) else {
        return unauthorized(&app, PROVIDER, "missing signature or timestamp header");
    };
    if !verify(&point, &signature, &timestamp, &raw) {
        return unauthorized(&app, PROVIDER, "signature does not verify");
    }
    let events: Vec<Value> = match serde_json::from_slice(&raw) {
        Ok(Value::Array(events)) => events,
        _ => return bad_request(&app, PROVIDER, "the body is not a JSON array of events"),
    };
    let mut reports = Vec::new();
    let mut ignored = 0;
    for e in &events {
        match read(e) {
            Some(r) => reports.push(r),
            None => ignored += 1,
        }
    }
    take(&app, PROVIDER, reports, ignored).await
}

/// Whether `signature` (base64 DER) signs `timestamp ‖ body` under `point`.
pub fn verify(point: &[u8], signature: &[u8], timestamp: &[u8], body: &[u8]) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim_ascii()) else {
        return false;
    };
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp);
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&signed, &sig)
        .is_ok()
}

/// The report one event makes, if it is a bounce or a complaint.
fn read(e: &Value) -> Option<Report> {
    let event = text(e, "event")?;
    let reason = text(e, "reason").unwrap_or_default();
    let kind = match event.as_str() {
        "bounce" => match text(e, "type").as_deref() {
            Some("blocked") => ReportKind::TransientBounce,
            _ => ReportKind::PermanentBounce,
        },
        "spamreport" => ReportKind::Complaint,
        // Dropped: SendGrid did not send it. Only its own suppression of a
        // bounced, invalid or complaining address says something of the address.
        "dropped" => {
            let r = reason.to_ascii_lowercase();
            if r.contains("spam reporting") {
                ReportKind::Complaint
            } else if r.contains("bounced address") || r.contains("invalid") {
                ReportKind::PermanentBounce
            } else {
                ReportKind::TransientBounce
            }
        }
        _ => return None,
    };
    let recipient = text(e, "email");
    let status = text(e, "status").unwrap_or_default();
    let diagnostic = format!("{event}: {} {reason}", status).replace("  ", " ");
    let event_id = text(e, "sg_event_id").unwrap_or_else(|| {
        derived_id(&[
            &event,
            recipient.as_deref().unwrap_or(""),
            &e.get("timestamp")
                .map(|t| t.to_string())
                .unwrap_or_default(),
            &text(e, "sg_message_id").unwrap_or_default(),
        ])
    });
    Some(Report {
        provider: PROVIDER,
        event_id,
        kind,
        recipient,
        notice: notice_id(e.get(NOTICE_ID)),
        message_id: text(e, "smtp-id"),
        diagnostic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events() {
        let e = serde_json::json!({"email":"jane@example.net","event":"bounce","type":"blocked","reason":"x","sg_event_id":"a","notice_id":"42"});
        let r = read(&e).unwrap();
        assert_eq!((r.kind, r.notice), (ReportKind::TransientBounce, Some(42)));
        let e = serde_json::json!({"email":"jane@example.net","event":"dropped","reason":"Bounced Address"});
        assert_eq!(read(&e).unwrap().kind, ReportKind::PermanentBounce);
        assert!(read(&serde_json::json!({"event":"delivered"})).is_none());
        assert!(!verify(&[4; 65], b"AAAA", b"1", b"[]"));
    }
}
