//! Mailgun's JSON webhooks: `{"signature": {timestamp, token, signature},
//! "event-data": {…}}`. The signature is lowercase-hex HMAC-SHA256 of
//! `timestamp ‖ token` under `feedback.mailgun_signing_key`; the body
//! itself is not signed, so a captured signature block could carry forged
//! event data: a timestamp outside [`WINDOW`] is refused, and so is a token
//! presented before (remembered in the store, so every instance of a group
//! knows it).
//!
//! `failed` (`severity` permanent or temporary) and `complained` are read;
//! other events are acknowledged and counted as ignored. Mailgun echoes our
//! Message-ID (without `<>`) in `message.headers.message-id` and our
//! variables in `user-variables`; `event-data.id` makes a repeat.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::Value;

use super::{bad_request, body, derived_id, notice_id, off, take, text, unauthorized, unavailable};
use crate::engine::{Report, ReportKind};
use crate::http::state::AppState;
use crate::mailer::relay_tags::NOTICE_ID;

const PROVIDER: &str = "mailgun";

/// How far a signature's timestamp may be from now, either way.
pub const WINDOW: i64 = 5 * 60;

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> HttpResponse {
    let key = app.config.feedback.mailgun_signing_key.clone();
    if key.is_blank() {
        return off(PROVIDER);
    }
    let raw = match body(&app, PROVIDER, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad_request(&app, PROVIDER, "the body is not a JSON object"),
    };
    let sig = v.get("signature").cloned().unwrap_or(Value::Null);
    // The timestamp is a JSON string in Mailgun's SDKs, a number in one table of its docs.
    let timestamp = match sig.get("timestamp") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (Some(timestamp), Some(token), Some(signature)) =
        (timestamp, text(&sig, "token"), text(&sig, "signature"))
    else {
        return unauthorized(&app, PROVIDER, "missing signature block");
    };
    if !verify(key.expose(), &timestamp, &token, &signature) {
        return unauthorized(&app, PROVIDER, "signature does not verify");
    }
    let now = Utc::now();
    let fresh = timestamp
        .trim()
        .parse::<i64>()
        .is_ok_and(|t| (now.timestamp() - t).abs() <= WINDOW);
    if !fresh {
        return unauthorized(&app, PROVIDER, "stale timestamp");
    }
    match app
        .on_store(move |s| s.first_token(PROVIDER, &token, now))
        .await
    {
        Ok(true) => {}
        Ok(false) => return unauthorized(&app, PROVIDER, "signature token already used"),
        Err(e) => return unavailable(PROVIDER, e),
    }
    match read(v.get("event-data").unwrap_or(&Value::Null)) {
        Some(r) => take(&app, PROVIDER, vec![r], 0).await,
        None => take(&app, PROVIDER, Vec::new(), 1).await,
    }
}

/// Whether `signature` (hex) is HMAC-SHA256(key, timestamp ‖ token),
/// compared in constant time.
pub fn verify(key: &str, timestamp: &str, token: &str, signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given).is_ok()
}

fn read(e: &Value) -> Option<Report> {
    let event = text(e, "event")?;
    let kind = match (event.as_str(), text(e, "severity").as_deref()) {
        ("failed", Some("permanent")) => ReportKind::PermanentBounce,
        ("failed", _) => ReportKind::TransientBounce,
        ("complained", _) => ReportKind::Complaint,
        _ => return None,
    };
    let recipient = text(e, "recipient");
    let status = e.get("delivery-status").cloned().unwrap_or(Value::Null);
    let code = status
        .get("code")
        .map(|c| c.to_string())
        .unwrap_or_default();
    let words = text(&status, "message")
        .or_else(|| text(&status, "description"))
        .or_else(|| text(e, "reason"))
        .unwrap_or_default();
    let message_id = e
        .get("message")
        .and_then(|m| m.get("headers"))
        .and_then(|h| text(h, "message-id"));
    let event_id = text(e, "id").unwrap_or_else(|| {
        derived_id(&[
            &event,
            recipient.as_deref().unwrap_or(""),
            message_id.as_deref().unwrap_or(""),
            &e.get("timestamp")
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ])
    });
    let diagnostic = if event == "complained" {
        "complained".to_string()
    } else {
        format!("{code} {words}")
            .trim()
            .replace("null", "")
            .trim()
            .to_string()
    };
    Some(Report {
        provider: PROVIDER,
        event_id,
        kind,
        recipient,
        notice: notice_id(e.get("user-variables").and_then(|u| u.get(NOTICE_ID))),
        message_id,
        diagnostic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac() {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000tok");
        let sig = hex::encode(mac.finalize().into_bytes());
        assert!(verify("key", "1700000000", "tok", &sig));
        assert!(!verify("key", "1700000001", "tok", &sig));
        assert!(!verify("other", "1700000000", "tok", &sig));
        assert!(!verify("key", "1700000000", "tok", "zz"));
    }

    #[test]
    fn events() {
        let e = serde_json::json!({"event":"failed","severity":"temporary","recipient":"a@b.c","id":"x",
            "delivery-status":{"code":451},"message":{"headers":{"message-id":"n@our"}},"user-variables":{"notice_id":"7"}});
        let r = read(&e).unwrap();
        assert_eq!(
            (r.kind, r.notice, r.message_id.as_deref()),
            (ReportKind::TransientBounce, Some(7), Some("n@our"))
        );
        assert!(read(&serde_json::json!({"event":"delivered"})).is_none());
    }
}
