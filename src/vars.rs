//! The template variables of SPEC §7, built from what the engine knows.
//!
//! The event-time part (`event`, `usage`, `validity`, `status`) is captured
//! when a notice is decided, so a retried or released email still tells the
//! figures that caused it; the customer-time part (`customer`, `brand`,
//! `esim`, `plan`) is filled just before sending, so a corrected name or
//! brand applies to everything still queued.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::customers::Recipient;
use crate::event::{Event, Identifiers};
use crate::policy::{EsimState, Notice, NoticeKind};

/// `event`, and the group of its class (`usage`, `validity`, `status`, `install`).
pub fn event_vars(event: &Event, notice: &Notice, state: &EsimState) -> Value {
    let mut m = Map::new();
    m.insert(
        "event".into(),
        json!({
            "notifyType": event.notify_type.as_str(),
            "notifyId": event.notify_id,
            "eventGenerateTime": event.generated_at.map(|t| t.to_rfc3339()),
        }),
    );
    match notice.kind {
        NoticeKind::Data => {
            let u = &state.usage;
            let total = u.total_volume.filter(|t| *t > 0);
            let remain_fraction = match (u.remain, total) {
                (Some(r), Some(t)) => Some(r as f64 / t as f64),
                _ => u.remain_threshold,
            };
            let pct = |f: f64| (f * 10000.0).round() / 100.0;
            m.insert(
                "usage".into(),
                json!({
                    "totalVolume": u.total_volume,
                    "orderUsage": u.order_usage,
                    "remain": u.remain,
                    "remainPercent": remain_fraction.map(pct),
                    "usedPercent": remain_fraction.map(|f| pct(1.0 - f)),
                    "threshold": notice.level,
                    "thresholdPercent": notice.level.map(pct),
                }),
            );
        }
        NoticeKind::Validity => {
            let v = &state.validity;
            m.insert(
                "validity".into(),
                json!({
                    "remain": v.remain,
                    "durationUnit": v.duration_unit,
                    "totalDuration": v.total_duration,
                    "expiredTime": v.expired_time.map(|t| t.to_rfc3339()),
                }),
            );
        }
        NoticeKind::Status => {
            m.insert(
                "status".into(),
                json!({
                    "esimStatus": notice.status.clone().or_else(|| state.esim_status.clone()),
                    "smdpStatus": state.smdp_status,
                }),
            );
        }
        NoticeKind::Ready => {
            m.insert(
                "install".into(),
                json!({
                    "qrCodeUrl": null, "shortUrl": null, "ac": null,
                    "smdpAddress": null, "matchingId": null, "apn": null,
                    "appleUrl": null, "androidUrl": null, "qrImage": null,
                }),
            );
        }
    }
    Value::Object(m)
}

/// The full variable set for one email: the captured event-time part plus
/// `customer`, `brand`, `esim` and `plan`.
pub fn email_vars(
    captured: &Value,
    recipient: &Recipient,
    ids: &Identifiers,
    brand: &BTreeMap<String, String>,
    plan: Option<&Value>,
) -> Value {
    let mut m = captured.as_object().cloned().unwrap_or_default();
    m.insert(
        "customer".into(),
        json!({
            "email": recipient.email,
            "name": recipient.name,
            "locale": recipient.locale,
            "timezone": recipient.timezone,
        }),
    );
    // The standard brand keys are always present (null when unset), as `check` assumes.
    m.insert("brand".into(), crate::render::brand_vars(brand, false));
    m.insert(
        "esim".into(),
        json!({
            "iccid": ids.iccid,
            "esimTranNo": ids.esim_tran_no,
            "orderNo": ids.order_no,
            "transactionId": ids.transaction_id,
        }),
    );
    m.insert(
        "plan".into(),
        plan.cloned().unwrap_or_else(|| {
            json!({
                "name": null, "slug": null, "volume": null,
                "duration": null, "durationUnit": null, "locationCode": null,
            })
        }),
    );
    m.entry("event").or_insert_with(
        || json!({"notifyType": null, "notifyId": null, "eventGenerateTime": null}),
    );
    // Set by the sender when `email.list_unsubscribe` is configured (SPEC §7).
    m.entry("unsubscribe_url").or_insert(Value::Null);
    Value::Object(m)
}
