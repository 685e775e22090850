//! Sample variables: what `check` renders every template with, and what the preview shows.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::NoticeClass;
use crate::brand::brand_vars;

/// The sending instant `check` and the preview render with: 37 hours before the
/// sample plan ends, so the validity email shows its "hours left" wording.
pub fn sample_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 23, 4, 13, 0)
        .single()
        .expect("a valid instant")
}

const GIB: u64 = 1024 * 1024 * 1024;

/// The sample eSIM's activation code, install links and plan: what `check`,
/// the preview and `render` (which does not ask the provider) all show, so an
/// install email looks the same wherever it is previewed.
pub const SAMPLE_AC: &str = "LPA:1$rsp.example.net$A1B2-C3D4-E5F6";
pub const SAMPLE_QR_CODE_URL: &str = "https://p.qrsim.net/a1b2c3d4e5f6.png";
pub const SAMPLE_SHORT_URL: &str = "https://p.qrsim.net/a1b2c3d4e5f6";
pub const SAMPLE_PLAN_NAME: &str = "Europe 5GB 30 Days";
pub const SAMPLE_PLAN_SLUG: &str = "EU-5_30";
pub const SAMPLE_PLAN_LOCATION: &str = "EU";
pub const SAMPLE_PLAN_VOLUME: u64 = 5 * GIB;
pub const SAMPLE_PLAN_DAYS: u64 = 30;

/// `full = false` sets every value a real notice may lack to null. The few values kept
/// are the ones that define the notice, so a real one always has them: the recipient's
/// address, the event type, the data level crossed, the eSIM status, and the
/// activation code (SPEC §6: `esim_ready` is never sent without it).
pub fn sample_vars(class: NoticeClass, full: bool, brand: &BTreeMap<String, String>) -> Value {
    let mut root = Map::new();
    let opt = |v: Value| if full { v } else { Value::Null };

    root.insert(
        "customer".into(),
        json!({
            "email": "jane.doe@example.com",
            "name": opt(json!("Jane Doe")),
            "locale": opt(json!("en")),
            "timezone": opt(json!("Europe/Berlin")),
        }),
    );
    root.insert(
        "esim".into(),
        json!({
            "iccid": opt(json!("89852240400012345678")),
            "esimTranNo": opt(json!("25042312000001")),
            "orderNo": opt(json!("B25042312000001")),
            "transactionId": opt(json!("order-1042")),
        }),
    );
    root.insert("brand".into(), brand_vars(brand, full, &root["esim"]));
    root.insert(
        "unsubscribe_url".into(),
        opt(json!(
            "https://notify.example.com/unsubscribe?t=c2FtcGxlLXRva2VuLW5vdC1yZWFs"
        )),
    );
    let notify_type = match class {
        NoticeClass::Data => "DATA_USAGE",
        NoticeClass::Validity => "VALIDITY_USAGE",
        NoticeClass::Status => "ESIM_STATUS",
        NoticeClass::Ready => "ORDER_STATUS",
    };
    root.insert(
        "event".into(),
        json!({
            "notifyType": notify_type,
            "notifyId": opt(json!("6f1c2a9e-0d4b-4c8e-9a57-3b2f1e0d9c11")),
            "eventGenerateTime": opt(json!("2026-04-23T17:13:00Z")),
        }),
    );
    root.insert(
        "plan".into(),
        json!({
            "name": opt(json!(SAMPLE_PLAN_NAME)),
            "slug": opt(json!(SAMPLE_PLAN_SLUG)),
            "volume": opt(json!(SAMPLE_PLAN_VOLUME)),
            "duration": opt(json!(SAMPLE_PLAN_DAYS)),
            "durationUnit": opt(json!("DAY")),
            "locationCode": opt(json!(SAMPLE_PLAN_LOCATION)),
        }),
    );

    match class {
        NoticeClass::Data => {
            let total = 5 * GIB;
            let remain: u64 = 535_260_299; // 9.97 % of 5 GB
            let used = total - remain;
            let pct = |part: u64| ((part as f64 / total as f64) * 10_000.0).round() / 100.0;
            root.insert(
                "usage".into(),
                json!({
                    "totalVolume": opt(json!(total)),
                    "orderUsage": opt(json!(used)),
                    "remain": opt(json!(remain)),
                    "remainPercent": opt(json!(pct(remain))),
                    "usedPercent": opt(json!(pct(used))),
                    "threshold": 0.1,
                    "thresholdPercent": 10,
                }),
            );
        }
        NoticeClass::Validity => {
            root.insert(
                "validity".into(),
                json!({
                    "remain": opt(json!(1)),
                    "durationUnit": opt(json!("DAY")),
                    "totalDuration": opt(json!(30)),
                    "expiredTime": opt(json!("2026-04-24T17:13:00Z")),
                }),
            );
        }
        NoticeClass::Status => {
            root.insert(
                "status".into(),
                json!({
                    "esimStatus": "IN_USE",
                    "smdpStatus": opt(json!("ENABLED")),
                }),
            );
        }
        NoticeClass::Ready => {
            // appleUrl/androidUrl: the platforms' one-tap links with the URL-encoded
            // activation code (SPEC §7); qrImage: the inline QR code's cid: URL.
            let card = "LPA%3A1%24rsp.example.net%24A1B2-C3D4-E5F6";
            root.insert(
                "install".into(),
                json!({
                    "qrCodeUrl": opt(json!(SAMPLE_QR_CODE_URL)),
                    "shortUrl": opt(json!(SAMPLE_SHORT_URL)),
                    "ac": SAMPLE_AC,
                    "smdpAddress": opt(json!("rsp.example.net")),
                    "matchingId": opt(json!("A1B2-C3D4-E5F6")),
                    "apn": opt(json!("internet")),
                    "appleUrl": opt(json!(format!("https://esimsetup.apple.com/esim_qrcode_provisioning?carddata={card}"))),
                    "androidUrl": opt(json!(format!("https://esimsetup.android.com/esim_qrcode_provisioning?carddata={card}"))),
                    "qrImage": opt(json!("cid:esim-qr@esim-notify")),
                }),
            );
        }
    }
    Value::Object(root)
}

/// What the unsubscribe page can say: asking to confirm, done, and why it cannot.
pub const PAGE_STATES: &[&str] = &[
    "confirm",
    "done",
    "invalid",
    "incomplete",
    "retry",
    "disabled",
];

/// The variables of the unsubscribe page: `brand` and `page` {state, email, action};
/// `email` and `action` (the form's target) are null unless given ("confirm").
pub fn page_vars(
    state: &str,
    email: Option<&str>,
    action: Option<&str>,
    essential: &[String],
    brand: &BTreeMap<String, String>,
) -> Value {
    json!({
        "brand": brand_vars(brand, false, &Value::Null),
        "page": {"state": state, "email": email, "action": action, "essential": essential},
    })
}

/// [`page_vars`] as `check` renders each state.
pub fn sample_page_vars(state: &str, brand: &BTreeMap<String, String>) -> Value {
    let confirm = state == "confirm";
    page_vars(
        state,
        confirm.then_some("jane.doe@example.com"),
        confirm.then_some("/unsubscribe?t=c2FtcGxlLXRva2VuLW5vdC1yZWFs"),
        &["esim_ready".to_string(), "esim_cancelled".to_string()],
        brand,
    )
}
