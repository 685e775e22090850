//! The provider's answer on the wire, read tolerantly into typed eSIMs.
//!
//! The envelope is `{success, errorCode, errorMsg, obj}`, and a failure is
//! usually HTTP 200 with `success:false`. Inside, the documented quirks:
//! empty strings for unknown values, `+0000` offsets, numbers where strings
//! are documented and strings where numbers are, `activeType` a number.
//! Values are read field by field from a `serde_json::Value` rather than
//! with a derived struct, so one odd field costs that field, not the answer.

use serde_json::{Map, Value};

use super::esim::{Esim, Plan};
use super::ProviderError;
use crate::event::parse_instant;

/// The error code of "profiles are still being allocated: ask again later".
pub const NOT_READY_CODE: &str = "200010";

/// One page of `/esim/query`.
#[derive(Debug)]
pub struct Page {
    pub esims: Vec<Esim>,
    /// `obj.pager.total`: eSIMs over all pages, when the provider says.
    pub total: Option<u64>,
}

/// The envelope: an error when `success` is false, the page otherwise.
pub fn parse_page(body: &[u8]) -> Result<Page, ProviderError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("the answer is not JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(ProviderError::Malformed(
            "the answer is not a JSON object".into(),
        ));
    };
    refusal(&root)?;
    let obj = match root.get("obj") {
        Some(Value::Object(o)) => o,
        _ => {
            return Err(ProviderError::Malformed(
                "success without an `obj` object".into(),
            ))
        }
    };
    let list = match obj.get("esimList") {
        Some(Value::Array(a)) => a.as_slice(),
        // An order with nothing (yet) to list may come without the array.
        None | Some(Value::Null) => &[],
        Some(_) => {
            return Err(ProviderError::Malformed(
                "`obj.esimList` is not an array".into(),
            ))
        }
    };
    let mut esims = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(ProviderError::Malformed(format!(
                "`obj.esimList[{i}]` is not an object"
            )));
        };
        esims.push(esim(item));
    }
    let total = obj
        .get("pager")
        .and_then(Value::as_object)
        .and_then(|p| p.get("total"))
        .and_then(number);
    Ok(Page { esims, total })
}

/// `Ok` for `success: true`; the refusal otherwise (also for an envelope
/// read from a non-2xx answer).
pub fn refusal(root: &Map<String, Value>) -> Result<(), ProviderError> {
    let success = match root.get("success") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(ProviderError::Malformed(
                "no boolean `success` in the answer".into(),
            ))
        }
    };
    if success {
        return Ok(());
    }
    let code = root.get("errorCode").and_then(text).unwrap_or_default();
    let msg = root.get("errorMsg").and_then(text).unwrap_or_default();
    if code == NOT_READY_CODE {
        return Err(ProviderError::NotReady);
    }
    Err(ProviderError::Refused {
        code,
        msg: shorten(&msg),
    })
}

/// The provider's words go into logs and dead-letter reasons: one bounded line.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one = one.trim();
    match one.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &one[..cut]),
        None => one.to_string(),
    }
}

fn esim(o: &Map<String, Value>) -> Esim {
    let s = |k: &str| o.get(k).and_then(text);
    let n = |k: &str| o.get(k).and_then(number);
    let duration_unit = s("durationUnit");
    let plan = match o.get("packageList") {
        Some(Value::Array(list)) => list
            .first()
            .and_then(Value::as_object)
            .map(|p| plan(p, duration_unit.as_deref())),
        _ => None,
    };
    Esim {
        esim_tran_no: s("esimTranNo"),
        iccid: s("iccid"),
        order_no: s("orderNo"),
        transaction_id: s("transactionId"),
        ac: s("ac"),
        qr_code_url: s("qrCodeUrl"),
        short_url: s("shortUrl"),
        apn: s("apn"),
        expired_time: o
            .get("expiredTime")
            .and_then(Value::as_str)
            .and_then(parse_instant),
        total_volume: n("totalVolume"),
        total_duration: n("totalDuration"),
        duration_unit,
        esim_status: s("esimStatus"),
        smdp_status: s("smdpStatus"),
        plan,
    }
}

fn plan(p: &Map<String, Value>, esim_unit: Option<&str>) -> Plan {
    let s = |k: &str| p.get(k).and_then(text);
    let n = |k: &str| p.get(k).and_then(number);
    Plan {
        name: s("packageName"),
        slug: s("slug"),
        volume: n("volume"),
        duration: n("duration"),
        duration_unit: s("durationUnit").or_else(|| esim_unit.map(str::to_string)),
        location_code: s("locationCode"),
    }
}

/// A string, or a number taken as its digits; empty or blank is unknown.
/// (ICCIDs must stay strings: a number arriving here keeps its digits but a
/// leading zero it never had cannot be recovered.)
fn text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// A whole non-negative number, as a JSON number (also `5.36870912E9`) or a
/// string of one; anything else is unknown.
fn number(v: &Value) -> Option<u64> {
    let whole = |f: f64| (f >= 0.0 && f.fract() == 0.0 && f < 1.8e19).then_some(f as u64);
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(whole))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trimmed response of the reference, verbatim.
    const SAMPLE: &str = r#"{"success":true,"errorCode":"0","errorMsg":null,"obj":{"esimList":[{"esimTranNo":"23120118156818","orderNo":"B23120118131854","transactionId":"test344343433","iccid":"8943108170000775671","ac":"LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F","qrCodeUrl":"https://p.qrsim.net/0fa4f29eb25b4d6c84ff4b8422a1da54.png","shortUrl":"https://p.qrsim.net/0fa4f29eb25b4d6c84ff4b8422a1da54","smdpStatus":"RELEASED","eid":"","activeType":1,"expiredTime":"2024-05-29T18:34:17+0000","totalVolume":5368709120,"totalDuration":30,"durationUnit":"DAY","orderUsage":0,"esimStatus":"GOT_RESOURCE","pin":"","puk":"","apn":"drei.at","packageList":[{"packageName":"Spain 5GB 30Days","packageCode":"CKH003","slug":"ES_5_30","duration":30,"volume":5368709120,"locationCode":"ES","createTime":"2023-12-01T18:34:17+0000"}]}],"pager":{"pageSize":20,"pageNum":1,"total":1}}}"#;

    #[test]
    fn reads_the_reference_sample() {
        let page = parse_page(SAMPLE.as_bytes()).unwrap();
        assert_eq!(page.total, Some(1));
        let e = &page.esims[0];
        assert_eq!(e.esim_tran_no.as_deref(), Some("23120118156818"));
        assert_eq!(e.iccid.as_deref(), Some("8943108170000775671"));
        assert_eq!(e.order_no.as_deref(), Some("B23120118131854"));
        assert_eq!(e.transaction_id.as_deref(), Some("test344343433"));
        assert_eq!(
            e.ac.as_deref(),
            Some("LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F")
        );
        assert_eq!(e.apn.as_deref(), Some("drei.at"));
        assert_eq!(
            e.expired_time,
            Some("2024-05-29T18:34:17Z".parse().unwrap())
        );
        assert_eq!(e.total_volume, Some(5_368_709_120));
        assert_eq!(e.total_duration, Some(30));
        assert_eq!(e.duration_unit.as_deref(), Some("DAY"));
        assert_eq!(e.esim_status.as_deref(), Some("GOT_RESOURCE"));
        assert_eq!(e.smdp_status.as_deref(), Some("RELEASED"));
        let p = e.plan.as_ref().unwrap();
        assert_eq!(p.name.as_deref(), Some("Spain 5GB 30Days"));
        assert_eq!(p.slug.as_deref(), Some("ES_5_30"));
        assert_eq!(p.volume, Some(5_368_709_120));
        assert_eq!(p.duration, Some(30));
        assert_eq!(p.duration_unit.as_deref(), Some("DAY"));
        assert_eq!(p.location_code.as_deref(), Some("ES"));
    }

    #[test]
    fn quirks_empty_strings_swapped_types_and_odd_fields() {
        let body = serde_json::json!({
            "success": "true", "errorCode": 0, "errorMsg": "",
            "obj": {"esimList": [{
                "esimTranNo": 26042216320015u64,      // number where a string is documented
                "iccid": "  ", "apn": "", "ac": "",   // unknown
                "totalVolume": "21474836480",         // string where a number is documented
                "totalDuration": 3.0e1,
                "activeType": 2,
                "expiredTime": "2026-04-23T17:13:19+00:00",
                "qrCodeUrl": null,
                "packageList": "none",                // not a list: no plan, not an error
                "extra": {"nested": true}
            }], "pager": {"total": "1"}}
        });
        let page = parse_page(body.to_string().as_bytes()).unwrap();
        let e = &page.esims[0];
        assert_eq!(e.esim_tran_no.as_deref(), Some("26042216320015"));
        assert_eq!(e.iccid, None);
        assert_eq!(e.apn, None);
        assert_eq!(e.ac, None);
        assert_eq!(e.qr_code_url, None);
        assert_eq!(e.total_volume, Some(21_474_836_480));
        assert_eq!(e.total_duration, Some(30));
        assert_eq!(
            e.expired_time,
            Some("2026-04-23T17:13:19Z".parse().unwrap())
        );
        assert_eq!(e.plan, None);
        assert_eq!(page.total, Some(1));
    }

    #[test]
    fn failures_come_as_success_false() {
        let not_ready = br#"{"success":false,"errorCode":"200010","errorMsg":"profiles are being allocated","obj":null}"#;
        assert!(matches!(
            parse_page(not_ready),
            Err(ProviderError::NotReady)
        ));
        let refused = br#"{"success":false,"errorCode":310241,"errorMsg":"The order number does not exist\nreally","obj":null}"#;
        match parse_page(refused) {
            Err(ProviderError::Refused { code, msg }) => {
                assert_eq!(code, "310241");
                assert_eq!(msg, "The order number does not exist really");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_answers_are_named() {
        for body in [
            &b"<html>bad gateway</html>"[..],
            b"[]",
            b"{}",
            br#"{"success":true}"#,
            br#"{"success":true,"obj":{"esimList":{}}}"#,
            br#"{"success":true,"obj":{"esimList":[1]}}"#,
        ] {
            assert!(
                matches!(parse_page(body), Err(ProviderError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let empty = parse_page(br#"{"success":true,"obj":{}}"#).unwrap();
        assert!(empty.esims.is_empty());
    }

    #[test]
    fn shorten_bounds_and_flattens() {
        let long = "x".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 201);
        assert_eq!(shorten("a\r\nb"), "a  b");
    }
}
