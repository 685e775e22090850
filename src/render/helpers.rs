//! The helpers templates use to turn raw provider numbers into words a customer reads.
//!
//! They return derived JSON strings (`call_inner`) rather than writing to the output, so
//! they also work inside subexpressions (`{{#if (bytes usage.remain)}}`) and the
//! registry applies its own escaping: none for subjects and text, HTML for HTML.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

/// Default `datetime` format: day month year, 24 h clock and the zone abbreviation, so a
/// customer abroad sees which clock the time is on ("23 April 2026, 19:13 CEST").
pub const DEFAULT_DATETIME_FORMAT: &str = "%-d %B %Y, %H:%M %Z";

/// Names of the helpers registered here; the checker must know them to tell a helper call
/// from a variable reference.
pub const CUSTOM_HELPERS: &[&str] = &["bytes", "percent", "datetime"];

/// Helpers that ship with handlebars 6 (no optional features enabled).
pub const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

pub fn register(reg: &mut Handlebars<'static>, default_timezone: Tz) {
    reg.register_helper("bytes", Box::new(BytesHelper));
    reg.register_helper("percent", Box::new(PercentHelper));
    reg.register_helper("datetime", Box::new(DatetimeHelper { default_timezone }));
}

fn other(msg: String) -> RenderError {
    RenderErrorReason::Other(msg).into()
}

/// Strict mode only covers plain `{{x}}` expressions; a helper sees a missing variable as
/// null. Failing here too keeps a typo in `{{bytes usage.remian}}` from becoming "".
fn required_param<'a, 'rc>(
    h: &'a Helper<'rc>,
    idx: usize,
    r: &Handlebars<'_>,
) -> Result<&'a PathAndJson<'rc>, RenderError> {
    let p = h
        .param(idx)
        .ok_or_else(|| other(format!("`{}` needs a value to format", h.name())))?;
    if r.strict_mode() && p.is_value_missing() {
        return Err(other(format!(
            "`{}`: unknown variable `{}`",
            h.name(),
            p.relative_path().map(String::as_str).unwrap_or("?")
        )));
    }
    Ok(p)
}

fn optional_param<'a, 'rc>(
    h: &'a Helper<'rc>,
    idx: usize,
    r: &Handlebars<'_>,
) -> Result<Option<&'a PathAndJson<'rc>>, RenderError> {
    match h.param(idx) {
        None => Ok(None),
        Some(_) => required_param(h, idx, r).map(Some),
    }
}

/// Provider numbers may arrive as JSON numbers or numeric strings (SPEC §5).
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn trim_decimals(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// 1024-based, because that is how plans are sold: a "5 GB" plan has 5·1024³ bytes and
/// must be shown as "5 GB", not "5.37 GB".
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let sign = if bytes < 0.0 { "-" } else { "" };
    let mut v = bytes.abs();
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // 1023.999 KB would otherwise print as "1024 KB".
    if (v * 100.0).round() / 100.0 >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let num = trim_decimals(format!("{v:.2}"));
    let sign = if num == "0" { "" } else { sign };
    format!("{sign}{num} {}", UNITS[unit])
}

pub fn format_percent(fraction: f64, decimals: usize) -> String {
    let mut s = format!("{:.*}", decimals, fraction * 100.0);
    if s.starts_with('-')
        && s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
    {
        s.remove(0);
    }
    format!("{s}%")
}

/// Accepts the offsets the provider is known to send (`Z`, `+00:00`, `+0000`); a value
/// without offset is taken as UTC, the provider's clock.
pub fn parse_instant(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt);
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&naive).fixed_offset());
        }
    }
    None
}

/// chrono's `Display` for a bad format string returns `fmt::Error`, which `to_string`
/// turns into a panic; an operator's typo in a format must be a render error instead.
pub fn format_instant(
    instant: &DateTime<FixedOffset>,
    tz: Tz,
    format: &str,
) -> Result<String, String> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid datetime format `{format}`"));
    }
    let local = instant.with_timezone(&tz);
    let mut out = String::new();
    write!(out, "{}", local.format(format))
        .map_err(|_| format!("invalid datetime format `{format}`"))?;
    Ok(out)
}

pub struct BytesHelper;

impl HelperDef for BytesHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = required_param(h, 0, r)?.value();
        if v.is_null() {
            return Ok(ScopedJson::Derived(Value::String(String::new())));
        }
        let n = as_number(v).ok_or_else(|| other(format!("bytes: {v} is not a number")))?;
        Ok(ScopedJson::Derived(Value::String(format_bytes(n))))
    }
}

pub struct PercentHelper;

impl HelperDef for PercentHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = required_param(h, 0, r)?.value();
        let decimals = match optional_param(h, 1, r)?.map(PathAndJson::value) {
            None | Some(Value::Null) => 0,
            Some(d) => match as_number(d) {
                Some(d) if (0.0..=10.0).contains(&d) && d.fract() == 0.0 => d as usize,
                _ => return Err(other(format!("percent: decimals {d} must be 0 to 10"))),
            },
        };
        if v.is_null() {
            return Ok(ScopedJson::Derived(Value::String(String::new())));
        }
        let n = as_number(v).ok_or_else(|| other(format!("percent: {v} is not a number")))?;
        Ok(ScopedJson::Derived(Value::String(format_percent(
            n, decimals,
        ))))
    }
}

pub struct DatetimeHelper {
    pub default_timezone: Tz,
}

impl HelperDef for DatetimeHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = required_param(h, 0, r)?.value();
        let format = match optional_param(h, 1, r)?.map(PathAndJson::value) {
            None | Some(Value::Null) => DEFAULT_DATETIME_FORMAT.to_owned(),
            Some(Value::String(f)) => f.clone(),
            Some(f) => return Err(other(format!("datetime: format {f} is not a string"))),
        };
        let s = match v {
            Value::Null => return Ok(ScopedJson::Derived(Value::String(String::new()))),
            Value::String(s) => s,
            other_value => {
                return Err(other(format!("datetime: {other_value} is not a timestamp")))
            }
        };
        let instant =
            parse_instant(s).ok_or_else(|| other(format!("datetime: cannot read `{s}`")))?;
        // A customer's timezone was validated when it was bound; if a bad one slips through,
        // the configured default is a better email than none.
        let tz = ctx
            .data()
            .pointer("/customer/timezone")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Tz>().ok())
            .unwrap_or(self.default_timezone);
        let text = format_instant(&instant, tz, &format).map_err(other)?;
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg() -> Handlebars<'static> {
        let mut r = Handlebars::new();
        r.set_strict_mode(true);
        r.register_escape_fn(handlebars::no_escape);
        register(&mut r, chrono_tz::Europe::Berlin);
        r
    }

    fn render(t: &str, data: Value) -> Result<String, handlebars::RenderError> {
        reg().render_template(t, &data)
    }

    #[test]
    fn bytes_is_1024_based_with_two_decimals() {
        assert_eq!(format_bytes(5368709120.0), "5 GB");
        assert_eq!(format_bytes(5351505742.0), "4.98 GB");
        assert_eq!(format_bytes(1536.0), "1.5 KB");
        assert_eq!(format_bytes(0.0), "0 B");
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(1048575.0), "1 MB");
        assert_eq!(format_bytes(3.0 * 1024f64.powi(5)), "3072 TB");
    }

    #[test]
    fn bytes_helper_accepts_numbers_strings_and_null() {
        let d = json!({"a": 5368709120u64, "b": "1536", "n": null});
        assert_eq!(
            render("{{bytes a}}|{{bytes b}}|{{bytes n}}", d).unwrap(),
            "5 GB|1.5 KB|"
        );
        assert!(render("{{bytes a}}", json!({"a": "lots"})).is_err());
        assert!(render("{{bytes missing}}", json!({})).is_err());
    }

    #[test]
    fn percent_rounds_to_requested_decimals() {
        let d = json!({"t": 0.1, "r": 0.0997, "s": "0.5", "n": null});
        assert_eq!(
            render(
                "{{percent t}} {{percent r 2}} {{percent r}} {{percent s}}[{{percent n}}]",
                d
            )
            .unwrap(),
            "10% 9.97% 10% 50%[]"
        );
        assert!(render("{{percent t \"x\"}}", json!({"t": 0.1})).is_err());
    }

    #[test]
    fn datetime_uses_customer_timezone_then_default() {
        let t = "{{datetime when}}";
        let berlin_default =
            json!({"when": "2026-04-23T17:13:00Z", "customer": {"timezone": null}});
        assert_eq!(
            render(t, berlin_default).unwrap(),
            "23 April 2026, 19:13 CEST"
        );
        let tokyo =
            json!({"when": "2026-04-23T17:13:00+0000", "customer": {"timezone": "Asia/Tokyo"}});
        assert_eq!(render(t, tokyo).unwrap(), "24 April 2026, 02:13 JST");
        let fmt = json!({"when": "2026-04-23T17:13:00+00:00", "customer": {"timezone": "UTC"}});
        assert_eq!(
            render("{{datetime when \"%Y-%m-%d %H:%M\"}}", fmt).unwrap(),
            "2026-04-23 17:13"
        );
    }

    #[test]
    fn datetime_null_is_empty_and_garbage_is_an_error() {
        assert_eq!(
            render("[{{datetime n}}]", json!({"n": null})).unwrap(),
            "[]"
        );
        assert!(render("{{datetime s}}", json!({"s": "tomorrow"})).is_err());
        assert!(render(
            "{{datetime s \"%Q\"}}",
            json!({"s": "2026-04-23T17:13:00Z"})
        )
        .is_err());
    }
}
