//! One eSIM as the provider's API describes it, typed: what the rest of the
//! program uses, whatever quirks the wire had (see `wire.rs`).
//!
//! Serializable so the engine can cache it (the plan per eSIM) in the store.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One eSIM of `obj.esimList[]`. Every field may be unknown: the provider
/// sends empty strings for what it does not know, and they read as `None`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Esim {
    pub esim_tran_no: Option<String>,
    pub iccid: Option<String>,
    pub order_no: Option<String>,
    pub transaction_id: Option<String>,
    /// The LPA activation code `LPA:1$<SM-DP+ address>$<matching ID>`: whoever
    /// holds it can install the eSIM, so `Debug` shows only its address part.
    pub ac: Option<String>,
    pub qr_code_url: Option<String>,
    pub short_url: Option<String>,
    pub apn: Option<String>,
    pub expired_time: Option<DateTime<Utc>>,
    /// Bytes of the current plan; grows with a top-up.
    pub total_volume: Option<u64>,
    pub total_duration: Option<u64>,
    pub duration_unit: Option<String>,
    pub esim_status: Option<String>,
    pub smdp_status: Option<String>,
    /// From `packageList[0]`: the plan the customer bought.
    pub plan: Option<Plan>,
}

/// The plan customers recognise ("Spain 5GB 30Days"): the template variable
/// `plan` of SPEC §7.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// `packageName`.
    pub name: Option<String>,
    pub slug: Option<String>,
    /// Bytes.
    pub volume: Option<u64>,
    pub duration: Option<u64>,
    /// The package's own unit when it has one, else the eSIM's (`DAY`).
    pub duration_unit: Option<String>,
    /// ISO country code or a region code such as `EU`.
    pub location_code: Option<String>,
}

impl Plan {
    /// The `plan` object of SPEC §7 (every key present, null when unknown).
    pub fn vars(&self) -> Value {
        json!({
            "name": self.name,
            "slug": self.slug,
            "volume": self.volume,
            "duration": self.duration,
            "durationUnit": self.duration_unit,
            "locationCode": self.location_code,
        })
    }
}

/// The `plan` object for a notice: the eSIM's plan, or every key null when
/// it is not known (enrichment off, the provider did not answer).
pub fn plan_vars(plan: Option<&Plan>) -> Value {
    plan.map(Plan::vars)
        .unwrap_or_else(|| Plan::default().vars())
}

impl Esim {
    /// How logs name this eSIM (SPEC §9): its esimTranNo, else its iccid.
    pub fn name(&self) -> &str {
        self.esim_tran_no
            .as_deref()
            .or(self.iccid.as_deref())
            .unwrap_or("?")
    }
}

/// The activation code without its matching ID (the part that installs the
/// eSIM), for `Debug` and logs.
pub fn redact_ac(ac: &str) -> String {
    match ac.rsplit_once('$') {
        Some((head, _secret)) => format!("{head}$***"),
        None => "***".to_string(),
    }
}

impl fmt::Debug for Esim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Esim")
            .field("esim_tran_no", &self.esim_tran_no)
            .field("iccid", &self.iccid)
            .field("order_no", &self.order_no)
            .field("transaction_id", &self.transaction_id)
            .field("ac", &self.ac.as_deref().map(redact_ac))
            .field("qr_code_url", &self.qr_code_url.as_ref().map(|_| "***"))
            .field("short_url", &self.short_url.as_ref().map(|_| "***"))
            .field("apn", &self.apn)
            .field("expired_time", &self.expired_time)
            .field("total_volume", &self.total_volume)
            .field("total_duration", &self.total_duration)
            .field("duration_unit", &self.duration_unit)
            .field("esim_status", &self.esim_status)
            .field("smdp_status", &self.smdp_status)
            .field("plan", &self.plan)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_what_installs_the_esim() {
        let e = Esim {
            esim_tran_no: Some("23120118156818".into()),
            ac: Some("LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F".into()),
            qr_code_url: Some("https://p.qrsim.net/0fa4f29eb25b4d6c84ff4b8422a1da54.png".into()),
            short_url: Some("https://p.qrsim.net/0fa4f29eb25b4d6c84ff4b8422a1da54".into()),
            ..Default::default()
        };
        let d = format!("{e:?}");
        assert!(d.contains("rsp-eu.redteamobile.com"), "{d}");
        assert!(!d.contains("43DE23C67EE747BCAD6B63E8B67B261F"), "{d}");
        assert!(!d.contains("0fa4f29eb25b4d6c84ff4b8422a1da54"), "{d}");
        assert_eq!(redact_ac("garbage"), "***");
    }

    #[test]
    fn unknown_plan_has_every_key_null() {
        let v = plan_vars(None);
        for k in [
            "name",
            "slug",
            "volume",
            "duration",
            "durationUnit",
            "locationCode",
        ] {
            assert_eq!(v[k], Value::Null, "{k}");
        }
        let p = Plan {
            name: Some("Spain 5GB 30Days".into()),
            volume: Some(5_368_709_120),
            ..Default::default()
        };
        assert_eq!(plan_vars(Some(&p))["name"], "Spain 5GB 30Days");
        assert_eq!(plan_vars(Some(&p))["volume"], 5_368_709_120u64);
    }

    #[test]
    fn round_trips_through_json_for_the_cache() {
        let e = Esim {
            iccid: Some("0089000000000000001".into()),
            expired_time: Some("2024-05-29T18:34:17Z".parse().unwrap()),
            plan: Some(Plan {
                name: Some("Spain 5GB 30Days".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let back: Esim = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
