//! Postmark's bounce and spam-complaint webhooks: one JSON object each,
//! unsigned, so the URL carries `?token=` (`feedback.postmark_token`),
//! compared in constant time. `RecordType` says which; for a bounce its
//! `Type` decides permanent or transient (`TypeCode`s disagree across
//! Postmark's documents, so the name is read), and a type not named below
//! goes by `Inactive` (whether Postmark deactivated the address). Postmark
//! never echoes our Message-ID (its `MessageID` is its own): the notice is
//! found by `Metadata.notice_id`, else by `Email`. `RecordType` + `ID`
//! makes a repeat.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{bad_request, body, derived_id, notice_id, off, take, text, unauthorized};
use crate::engine::{Report, ReportKind};
use crate::http::state::AppState;
use crate::http::webhook::same_secret;
use crate::mailer::relay_tags::NOTICE_ID;

const PROVIDER: &str = "postmark";

/// Bounce types that say the address is gone for good.
const PERMANENT: [&str; 3] = ["HardBounce", "BadEmailAddress", "ManuallyDeactivated"];
/// Bounce types about this message only.
const TRANSIENT: [&str; 4] = ["Transient", "DnsError", "SoftBounce", "AutoResponder"];

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> HttpResponse {
    let expected = app.config.feedback.postmark_token.clone();
    if expected.is_blank() {
        return off(PROVIDER);
    }
    let token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    if !token.is_some_and(|t| same_secret(&t, expected.expose())) {
        return unauthorized(&app, PROVIDER, "wrong or missing token");
    }
    let raw = match body(&app, PROVIDER, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let record: Value = match serde_json::from_slice(&raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad_request(&app, PROVIDER, "the body is not a JSON object"),
    };
    match read(&record) {
        Some(r) => take(&app, PROVIDER, vec![r], 0).await,
        None => take(&app, PROVIDER, Vec::new(), 1).await,
    }
}

fn read(v: &Value) -> Option<Report> {
    let record_type = text(v, "RecordType")?;
    let bounce_type = text(v, "Type").unwrap_or_default();
    let kind = match record_type.as_str() {
        "SpamComplaint" => ReportKind::Complaint,
        "Bounce" if bounce_type == "SpamComplaint" => ReportKind::Complaint,
        "Bounce" if PERMANENT.contains(&bounce_type.as_str()) => ReportKind::PermanentBounce,
        "Bounce" if TRANSIENT.contains(&bounce_type.as_str()) => ReportKind::TransientBounce,
        "Bounce" if v.get("Inactive").and_then(Value::as_bool) == Some(true) => {
            ReportKind::PermanentBounce
        }
        "Bounce" => ReportKind::TransientBounce,
        _ => return None,
    };
    let recipient = text(v, "Email");
    let id = v.get("ID").map(|i| i.to_string()).filter(|i| i != "null");
    let event_id = match id {
        Some(id) => format!("{record_type}/{id}"),
        None => derived_id(&[
            &record_type,
            recipient.as_deref().unwrap_or(""),
            &text(v, "MessageID").unwrap_or_default(),
            &text(v, "BouncedAt").unwrap_or_default(),
        ]),
    };
    let details = text(v, "Details")
        .or_else(|| text(v, "Description"))
        .unwrap_or_default();
    Some(Report {
        provider: PROVIDER,
        event_id,
        kind,
        recipient,
        notice: notice_id(v.get("Metadata").and_then(|m| m.get(NOTICE_ID))),
        message_id: None,
        diagnostic: format!(
            "{} {details}",
            if bounce_type.is_empty() {
                &record_type
            } else {
                &bounce_type
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        let r = |j: Value| read(&j).map(|r| r.kind);
        assert_eq!(
            r(serde_json::json!({"RecordType":"Bounce","Type":"HardBounce","ID":1})),
            Some(ReportKind::PermanentBounce)
        );
        assert_eq!(
            r(serde_json::json!({"RecordType":"Bounce","Type":"SoftBounce","ID":1})),
            Some(ReportKind::TransientBounce)
        );
        assert_eq!(
            r(serde_json::json!({"RecordType":"Bounce","Type":"Blocked","Inactive":true})),
            Some(ReportKind::PermanentBounce)
        );
        assert_eq!(
            r(serde_json::json!({"RecordType":"SpamComplaint","Type":"SpamComplaint"})),
            Some(ReportKind::Complaint)
        );
        assert_eq!(r(serde_json::json!({"RecordType":"Delivery"})), None);
    }
}
