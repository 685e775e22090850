//! The template variables of SPEC §7, built from what the engine knows.
//!
//! The event-time part (`event`, `usage`, `validity`, `status`) is captured
//! when a notice is decided, so a retried or released email still tells the
//! figures that caused it; the customer-time part (`customer`, `brand`,
//! `esim`, `plan`) is filled just before sending, so a corrected name or
//! brand applies to everything still queued.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::customers::Recipient;
use crate::event::{Event, Identifiers, Validity};
use crate::policy::{EsimState, Notice, NoticeKind};

/// The event-time part of a notice's variables, as the store keeps it with
/// the notice: the few figures that caused it, not the webhook's body
/// (which the store keeps once, with the event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Captured {
    pub notify_type: Option<String>,
    pub notify_id: Option<String>,
    #[serde(with = "crate::serde_time::option")]
    pub generated_at: Option<DateTime<Utc>>,
    pub figures: Figures,
}

/// The group of variables of a notice's class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Figures {
    Usage {
        total_volume: Option<u64>,
        order_usage: Option<u64>,
        remain: Option<u64>,
        /// remain / totalVolume, else the provider's remainThreshold.
        remain_fraction: Option<f64>,
        /// The threshold crossed.
        threshold: Option<f64>,
    },
    Validity(Validity),
    Status {
        esim_status: Option<String>,
        smdp_status: Option<String>,
    },
    /// The install data of one eSIM, from the provider; all `None` for the
    /// order-wide notice an ORDER_STATUS queues before the provider was asked.
    Install {
        ac: Option<String>,
        qr_code_url: Option<String>,
        short_url: Option<String>,
        apn: Option<String>,
    },
    /// Nothing kept (a forgotten customer's dead letter).
    #[default]
    Redacted,
}

/// What to keep of an event for one of the notices it caused.
pub fn capture(event: &Event, notice: &Notice, state: &EsimState) -> Captured {
    Captured {
        notify_type: Some(event.notify_type.as_str().to_string()),
        notify_id: event.notify_id.clone(),
        generated_at: event.generated_at,
        figures: figures(notice, state),
    }
}

/// The figures of a notice decided with no event (an operator's resend):
/// what the eSIM's state says now; `event` is null in its email.
pub fn capture_now(notice: &Notice, state: &EsimState) -> Captured {
    Captured {
        notify_type: None,
        notify_id: None,
        generated_at: None,
        figures: figures(notice, state),
    }
}

/// The group of variables of `notice`'s class, from the eSIM's state (the
/// install data comes later, from the provider).
fn figures(notice: &Notice, state: &EsimState) -> Figures {
    match notice.kind {
        NoticeKind::Data => {
            let u = &state.usage;
            let total = u.total_volume.filter(|t| *t > 0);
            Figures::Usage {
                total_volume: u.total_volume,
                order_usage: u.order_usage,
                remain: u.remain,
                remain_fraction: match (u.remain, total) {
                    (Some(r), Some(t)) => Some(r as f64 / t as f64),
                    _ => u.remain_threshold,
                },
                threshold: notice.level,
            }
        }
        NoticeKind::Validity => Figures::Validity(state.validity.clone()),
        NoticeKind::Status => Figures::Status {
            esim_status: notice.status.clone().or_else(|| state.esim_status.clone()),
            smdp_status: state.smdp_status.clone(),
        },
        NoticeKind::Ready => Figures::Install {
            ac: None,
            qr_code_url: None,
            short_url: None,
            apn: None,
        },
    }
}

impl Captured {
    /// The activation code an install notice carries, once the provider gave it.
    pub fn activation_code(&self) -> Option<&str> {
        match &self.figures {
            Figures::Install { ac, .. } => ac.as_deref(),
            _ => None,
        }
    }

    /// `event`, and the group of its class (`usage`, `validity`, `status`, `install`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "event".into(),
            json!({
                "notifyType": self.notify_type,
                "notifyId": self.notify_id,
                "eventGenerateTime": self.generated_at.map(|t| t.to_rfc3339()),
            }),
        );
        let pct = |f: f64| (f * 10000.0).round() / 100.0;
        match &self.figures {
            Figures::Usage {
                total_volume,
                order_usage,
                remain,
                remain_fraction,
                threshold,
            } => {
                m.insert(
                    "usage".into(),
                    json!({
                        "totalVolume": total_volume,
                        "orderUsage": order_usage,
                        "remain": remain,
                        "remainPercent": remain_fraction.map(pct),
                        "usedPercent": remain_fraction.map(|f| pct(1.0 - f)),
                        "threshold": threshold,
                        "thresholdPercent": threshold.map(pct),
                    }),
                );
            }
            Figures::Validity(v) => {
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
            Figures::Status {
                esim_status,
                smdp_status,
            } => {
                m.insert(
                    "status".into(),
                    json!({ "esimStatus": esim_status, "smdpStatus": smdp_status }),
                );
            }
            Figures::Install {
                ac,
                qr_code_url,
                short_url,
                apn,
            } => {
                let esim = crate::provider::Esim {
                    ac: ac.clone(),
                    qr_code_url: qr_code_url.clone(),
                    short_url: short_url.clone(),
                    apn: apn.clone(),
                    ..Default::default()
                };
                m.insert(
                    "install".into(),
                    crate::provider::InstallVars::from(&esim).vars(),
                );
            }
            Figures::Redacted => {}
        }
        Value::Object(m)
    }
}

/// The full variable set for one email: the captured event-time part plus
/// `customer`, `brand`, `esim` and `plan`.
pub fn email_vars(
    captured: &Captured,
    recipient: &Recipient,
    ids: &Identifiers,
    brand: &BTreeMap<String, String>,
    plan: Option<&Value>,
) -> Value {
    let mut m = match captured.to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert(
        "customer".into(),
        json!({
            "email": recipient.email,
            "name": recipient.name,
            "locale": recipient.locale,
            "timezone": recipient.timezone,
        }),
    );
    let esim = json!({
        "iccid": ids.iccid,
        "esimTranNo": ids.esim_tran_no,
        "orderNo": ids.order_no,
        "transactionId": ids.transaction_id,
    });
    // The standard brand keys are always present (null when unset), as `check`
    // assumes; `topup_url` names this eSIM.
    m.insert(
        "brand".into(),
        crate::brand::brand_vars(brand, false, &esim),
    );
    m.insert("esim".into(), esim);
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
