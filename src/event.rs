//! The eSIM Access wire format and its quirks.
//!
//! The provider warns that content "may vary slightly", and it does: numbers
//! arrive as JSON numbers or strings, timestamps carry `Z`, `+0000` or
//! `+00:00`, most fields may be missing. Parsing is therefore two-step: the
//! envelope must be well-formed (a JSON object with a string `notifyType` and
//! an object `content`, otherwise the delivery is a 400), while every field of
//! the content is read leniently. A field that is present but unreadable is
//! recorded in [`Event::unreadable`] so that the notices needing it are not
//! sent, yet the delivery is still accepted: the provider cannot fix it by
//! retrying, and a 5xx would only make it try again.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a body is not an envelope; becomes the reason of a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("`notifyType` is missing or not a string")]
    NotifyType,
    #[error("`content` is missing or not an object")]
    Content,
}

/// The notification types the provider documents; anything else is kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotifyType {
    CheckHealth,
    OrderStatus,
    EsimStatus,
    SmdpEvent,
    DataUsage,
    ValidityUsage,
    Unknown(String),
}

impl NotifyType {
    pub fn parse(s: &str) -> NotifyType {
        match s {
            "CHECK_HEALTH" => NotifyType::CheckHealth,
            "ORDER_STATUS" => NotifyType::OrderStatus,
            "ESIM_STATUS" => NotifyType::EsimStatus,
            "SMDP_EVENT" => NotifyType::SmdpEvent,
            "DATA_USAGE" => NotifyType::DataUsage,
            "VALIDITY_USAGE" => NotifyType::ValidityUsage,
            other => NotifyType::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            NotifyType::Unknown(s) => s,
            known => known.metric_label(),
        }
    }

    /// CHECK_HEALTH and types we do not know are answered `ignored` and not stored.
    pub fn is_ignored(&self) -> bool {
        matches!(self, NotifyType::CheckHealth | NotifyType::Unknown(_))
    }

    /// A label for metrics: unknown types collapse into one value so that a
    /// sender cannot grow the label set without bound.
    pub fn metric_label(&self) -> &'static str {
        match self {
            NotifyType::CheckHealth => "CHECK_HEALTH",
            NotifyType::OrderStatus => "ORDER_STATUS",
            NotifyType::EsimStatus => "ESIM_STATUS",
            NotifyType::SmdpEvent => "SMDP_EVENT",
            NotifyType::DataUsage => "DATA_USAGE",
            NotifyType::ValidityUsage => "VALIDITY_USAGE",
            NotifyType::Unknown(_) => "unknown",
        }
    }
}

/// The identifiers an event may carry. esimTranNo is the stable key; ICCIDs
/// are recycled by the provider; orderNo and transactionId may cover several
/// eSIMs of one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifiers {
    pub esim_tran_no: Option<String>,
    pub iccid: Option<String>,
    pub order_no: Option<String>,
    pub transaction_id: Option<String>,
}

impl Identifiers {
    pub fn is_empty(&self) -> bool {
        self.esim_tran_no.is_none()
            && self.iccid.is_none()
            && self.order_no.is_none()
            && self.transaction_id.is_none()
    }
}

/// DATA_USAGE figures (and the optional ones some ESIM_STATUS events carry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub total_volume: Option<u64>,
    pub order_usage: Option<u64>,
    pub remain: Option<u64>,
    pub remain_threshold: Option<f64>,
    #[serde(default, with = "crate::serde_time::option")]
    pub last_update_time: Option<DateTime<Utc>>,
}

/// VALIDITY_USAGE figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    pub remain: Option<i64>,
    pub total_duration: Option<i64>,
    pub duration_unit: Option<String>,
    #[serde(default, with = "crate::serde_time::option")]
    pub expired_time: Option<DateTime<Utc>>,
}

/// One delivery, read as far as it can be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub notify_type: NotifyType,
    pub notify_id: Option<String>,
    pub generated_at: Option<DateTime<Utc>>,
    pub ids: Identifiers,
    pub esim_status: Option<String>,
    pub smdp_status: Option<String>,
    pub order_status: Option<String>,
    pub eid: Option<String>,
    pub usage: Usage,
    pub validity: Validity,
    /// Content fields that were present but could not be read, by their wire name.
    pub unreadable: Vec<String>,
}

impl Event {
    /// Parses a request body. Only the envelope can make it fail.
    pub fn parse(body: &[u8]) -> Result<Event, EnvelopeError> {
        Event::from_value(&read_json(body)?)
    }

    pub fn from_value(value: &Value) -> Result<Event, EnvelopeError> {
        let obj = value.as_object().ok_or(EnvelopeError::NotObject)?;
        let notify_type = obj
            .get("notifyType")
            .and_then(Value::as_str)
            .ok_or(EnvelopeError::NotifyType)?;
        let content = obj
            .get("content")
            .and_then(Value::as_object)
            .ok_or(EnvelopeError::Content)?;

        let mut r = Reader {
            content,
            unreadable: Vec::new(),
        };
        // The envelope's optional fields are as lenient as the content's:
        // an odd notifyId must not turn a real notification into a 400.
        let notify_id = match obj.get("notifyId") {
            Some(v) => text(v).filter(|s| !s.is_empty()),
            None => None,
        };
        let generated_at = obj.get("eventGenerateTime").and_then(|v| match v {
            Value::Null => None,
            v => {
                let t = v.as_str().and_then(parse_instant);
                if t.is_none() {
                    r.unreadable.push("eventGenerateTime".into());
                }
                t
            }
        });

        let ids = Identifiers {
            esim_tran_no: r.id("esimTranNo"),
            iccid: r.id("iccid"),
            order_no: r.id("orderNo"),
            transaction_id: r.id("transactionId"),
        };
        let usage = Usage {
            total_volume: r.u64("totalVolume"),
            order_usage: r.u64("orderUsage"),
            // DATA_USAGE says `remain`; some ESIM_STATUS events say `remainVolume`.
            remain: if notify_type == "DATA_USAGE" {
                r.u64("remain")
            } else {
                r.u64("remainVolume")
            },
            remain_threshold: r.f64("remainThreshold"),
            last_update_time: r.instant("lastUpdateTime"),
        };
        let validity = if notify_type == "VALIDITY_USAGE" {
            Validity {
                remain: r.i64("remain"),
                total_duration: r.i64("totalDuration"),
                duration_unit: r.string("durationUnit"),
                expired_time: r.instant("expiredTime"),
            }
        } else {
            Validity::default()
        };
        let esim_status = r.string("esimStatus");
        let smdp_status = r.string("smdpStatus");
        let order_status = r.string("orderStatus");
        let eid = r.string("eid");

        Ok(Event {
            notify_type: NotifyType::parse(notify_type),
            notify_id,
            generated_at,
            ids,
            esim_status,
            smdp_status,
            order_status,
            eid,
            usage,
            validity,
            unreadable: r.unreadable,
        })
    }

    /// Whether a wire field was present but unreadable.
    pub fn is_unreadable(&self, field: &str) -> bool {
        self.unreadable.iter().any(|f| f == field)
    }
}

/// A request body as JSON. A number too large for any float (`1e400`, or
/// 400 digits) is a syntax error to serde_json, which would turn the whole
/// delivery into a 400; it is a value that cannot be read, so such a number
/// is kept as its text (a string), and the field reading it reports it
/// unreadable (SPEC §5). Only a body that fails to parse is re-read this
/// way; the stored copy of the body then holds that number as a string.
///
/// (serde_json's `arbitrary_precision` would keep such numbers, but it
/// changes how every `Value` number serializes through other formats and
/// would apply to every crate in the build.)
pub fn read_json(body: &[u8]) -> Result<Value, EnvelopeError> {
    let first = match serde_json::from_slice(body) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    quote_overflowing_numbers(body)
        .and_then(|patched| serde_json::from_slice(&patched).ok())
        .ok_or_else(|| EnvelopeError::NotJson(first.to_string()))
}

/// `body` with every number literal outside strings whose value overflows
/// an f64 put in quotes, or `None` when there is none.
fn quote_overflowing_numbers(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut changed = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'"' {
            // A string, escapes included, copied as it is.
            let start = i;
            i += 1;
            while i < body.len() && body[i] != b'"' {
                i += if body[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(body.len());
            out.extend_from_slice(&body[start..i]);
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < body.len()
                && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let token = &body[start..i];
            let overflows = std::str::from_utf8(token)
                .ok()
                .filter(|t| is_json_number(t))
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_infinite);
            if overflows {
                out.push(b'"');
                out.extend_from_slice(token);
                out.push(b'"');
                changed = true;
            } else {
                out.extend_from_slice(token);
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    changed.then_some(out)
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(t: &str) -> bool {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let mut s = t.strip_prefix('-').unwrap_or(t);
    match digits(s) {
        0 => return false,
        n if n > 1 && s.starts_with('0') => return false,
        n => s = &s[n..],
    }
    if let Some(rest) = s.strip_prefix('.') {
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        s = &rest[n..];
    }
    if let Some(rest) = s.strip_prefix(['e', 'E']) {
        let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        s = &rest[n..];
    }
    s.is_empty()
}

/// Reads content fields leniently, remembering which ones were unreadable.
struct Reader<'a> {
    content: &'a Map<String, Value>,
    unreadable: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        match self.content.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        }
    }

    fn read<T>(&mut self, key: &str, f: impl FnOnce(&Value) -> Option<T>) -> Option<T> {
        let v = self.get(key)?;
        let out = f(v);
        if out.is_none() {
            self.unreadable.push(key.to_string());
        }
        out
    }

    /// Identifiers are strings (ICCIDs keep their leading zeros); a number is
    /// taken as its decimal text, which is all a JSON number can give.
    fn id(&mut self, key: &str) -> Option<String> {
        self.read(key, |v| text(v).map(|s| s.trim().to_string()))
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.read(key, |v| v.as_str().map(|s| s.trim().to_string()))
    }

    fn u64(&mut self, key: &str) -> Option<u64> {
        self.read(key, number_u64)
    }

    fn i64(&mut self, key: &str) -> Option<i64> {
        self.read(key, |v| match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    fn f64(&mut self, key: &str) -> Option<f64> {
        self.read(key, |v| {
            let f = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }?;
            f.is_finite().then_some(f)
        })
    }

    fn instant(&mut self, key: &str) -> Option<DateTime<Utc>> {
        self.read(key, |v| v.as_str().and_then(parse_instant))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Byte counts exceed 32 bits and may come as strings, or as floats with no
/// fraction (`5.36870912E9`).
fn number_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// Parses the timestamp shapes seen on the wire into an instant:
/// `2026-04-22T17:27:44Z`, `...+00:00`, `...+0000`, with or without
/// fractional seconds, and a bare `2026-04-22 17:27:44` taken as UTC.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_instants() {
        let a = parse_instant("2024-05-29T18:34:17+0000").unwrap();
        let b = parse_instant("2024-05-29T18:34:17Z").unwrap();
        let c = parse_instant("2024-05-29T20:34:17+02:00").unwrap();
        let d = parse_instant("2024-05-29T18:34:17.000+00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert!(parse_instant("yesterday").is_none());
    }

    #[test]
    fn sample_data_usage() {
        let body = br#"{"notifyType":"DATA_USAGE","eventGenerateTime":"2025-07-21T10:57:28Z","notifyId":"f776267e8d6745db8cc316e4c146ea0c","content":{"orderNo":"B25052822150009","transactionId":"unique_id_from_partner","esimTranNo":"25052822150009","iccid":"8943108170001029631","totalVolume":53687091200,"orderUsage":48335585458,"remain":5351505742,"lastUpdateTime":"2025-07-21T09:38:25Z","remainThreshold":0.1}}"#;
        let e = Event::parse(body).unwrap();
        assert_eq!(e.notify_type, NotifyType::DataUsage);
        assert_eq!(e.usage.total_volume, Some(53687091200));
        assert_eq!(e.usage.remain, Some(5351505742));
        assert_eq!(e.usage.remain_threshold, Some(0.1));
        assert_eq!(e.ids.esim_tran_no.as_deref(), Some("25052822150009"));
        assert!(e.unreadable.is_empty());
    }

    #[test]
    fn string_numbers_and_leading_zeros() {
        let body = br#"{"notifyType":"DATA_USAGE","content":{"iccid":"0089101","totalVolume":"53687091200","remain":" 100 ","remainThreshold":"0.2","orderUsage":"x"}}"#;
        let e = Event::parse(body).unwrap();
        assert_eq!(e.ids.iccid.as_deref(), Some("0089101"));
        assert_eq!(e.usage.total_volume, Some(53687091200));
        assert_eq!(e.usage.remain, Some(100));
        assert_eq!(e.usage.remain_threshold, Some(0.2));
        assert_eq!(e.usage.order_usage, None);
        assert_eq!(e.unreadable, vec!["orderUsage".to_string()]);
    }

    #[test]
    fn validity_expiry_with_compact_offset() {
        let body = br#"{"notifyType":"VALIDITY_USAGE","content":{"esimTranNo":"1","remain":"1","totalDuration":30,"durationUnit":"DAY","expiredTime":"2026-04-23T17:13:19+0000"}}"#;
        let e = Event::parse(body).unwrap();
        assert_eq!(e.validity.remain, Some(1));
        assert_eq!(
            e.validity.expired_time,
            parse_instant("2026-04-23T17:13:19Z")
        );
    }

    #[test]
    fn numbers_beyond_any_float_are_unreadable_fields_not_a_broken_body() {
        let body = br#"{"notifyType":"DATA_USAGE","notifyId":"n\"1e400","content":{"esimTranNo":"T1","totalVolume":1e400,"orderUsage":-1E+999,"remain":12,"remainThreshold":1e-400,"note":"1e400 \\\" 2e999"}}"#;
        let e = Event::parse(body).unwrap();
        assert_eq!(e.notify_id.as_deref(), Some("n\"1e400"));
        assert_eq!(e.usage.total_volume, None);
        assert_eq!(e.usage.order_usage, None);
        assert_eq!(e.usage.remain, Some(12));
        assert_eq!(e.unreadable, vec!["totalVolume", "orderUsage"]);
        let v = read_json(body).unwrap();
        assert_eq!(v["content"]["totalVolume"], "1e400");
        assert_eq!(v["content"]["note"], "1e400 \\\" 2e999");
        // A real syntax error is still one, with serde_json's own reason.
        for bad in [
            &br#"{"notifyType":"X","content":{"a":1e400,}}"#[..],
            b"{\"a\": 01e400}",
        ] {
            assert!(matches!(read_json(bad), Err(EnvelopeError::NotJson(_))));
        }
        assert!(is_json_number("-0.5e+10") && is_json_number("0") && is_json_number("10"));
        for t in ["-", "01", "1.", ".5", "1e", "1e+", "--1", "1-2"] {
            assert!(!is_json_number(t), "{t}");
        }
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(
            Event::parse(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(Event::parse(b"[]"), Err(EnvelopeError::NotObject));
        assert_eq!(
            Event::parse(br#"{"notifyType":1,"content":{}}"#),
            Err(EnvelopeError::NotifyType)
        );
        assert_eq!(
            Event::parse(br#"{"notifyType":"X","content":[]}"#),
            Err(EnvelopeError::Content)
        );
        let e = Event::parse(br#"{"notifyType":"NEW_THING","content":{}}"#).unwrap();
        assert!(e.notify_type.is_ignored());
    }
}
