//! The helpers templates use to turn raw provider numbers into words a customer reads.
//!
//! They return derived JSON values (`call_inner`) rather than writing to the output, so
//! they also work inside subexpressions (`{{#if (lt (hours_left x) 48)}}`) and the
//! registry applies its own escaping: none for subjects and text, HTML for HTML.
//!
//! Formatting follows the email's locale and the time helpers count from the sending
//! instant; both reach a helper through the render context ([`RENDER_KEY`], set by
//! `Templates::render_at`). Without it (a registry used on its own) a helper falls
//! back to `customer.locale`, then the default locale, and to the clock.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use icu_locale_core::Locale;
use serde_json::Value;

use super::format;
use super::RENDER_KEY;

/// Names of the helpers registered here; the checker must know them to tell a helper call
/// from a variable reference.
pub const CUSTOM_HELPERS: &[&str] = &[
    "bytes",
    "number",
    "percent",
    "ratio",
    "datetime",
    "hours_left",
    "days_left",
    "plural",
    "lang",
];

/// Helpers that ship with handlebars 6 (no optional features enabled).
pub const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

pub fn register(reg: &mut Handlebars<'static>, default_timezone: Tz, default_locale: &str) {
    let defaults = Defaults {
        timezone: default_timezone,
        locale: format::parse_locale(default_locale).unwrap_or(Locale::UNKNOWN),
    };
    reg.register_helper("bytes", Box::new(Bytes(defaults.clone())));
    reg.register_helper("number", Box::new(Number(defaults.clone())));
    reg.register_helper("percent", Box::new(Percent(defaults.clone())));
    reg.register_helper("ratio", Box::new(Ratio));
    reg.register_helper("datetime", Box::new(Datetime(defaults.clone())));
    reg.register_helper("hours_left", Box::new(TimeLeft { per: 3600 }));
    reg.register_helper("days_left", Box::new(TimeLeft { per: 86_400 }));
    reg.register_helper("plural", Box::new(Plural(defaults.clone())));
    reg.register_helper("lang", Box::new(Lang(defaults)));
}

#[derive(Clone)]
struct Defaults {
    timezone: Tz,
    locale: Locale,
}

impl Defaults {
    /// The email's locale: set by the render, else the customer's, else the default.
    fn locale(&self, ctx: &Context) -> Locale {
        let data = ctx.data();
        data.get(RENDER_KEY)
            .and_then(|r| r.get("locale"))
            .and_then(Value::as_str)
            .or_else(|| data.pointer("/customer/locale").and_then(Value::as_str))
            .and_then(format::parse_locale)
            .unwrap_or_else(|| self.locale.clone())
    }

    /// A customer's timezone was validated when it was bound; if a bad one slips
    /// through, the configured default is a better email than none.
    fn timezone(&self, ctx: &Context) -> Tz {
        ctx.data()
            .pointer("/customer/timezone")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Tz>().ok())
            .unwrap_or(self.timezone)
    }
}

/// The sending instant the render was given, else the clock.
fn now(ctx: &Context) -> DateTime<Utc> {
    ctx.data()
        .get(RENDER_KEY)
        .and_then(|r| r.get("now"))
        .and_then(Value::as_str)
        .and_then(parse_instant)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

fn other(msg: String) -> RenderError {
    RenderErrorReason::Other(msg).into()
}

fn text(s: String) -> Result<ScopedJson<'static>, RenderError> {
    Ok(ScopedJson::Derived(Value::String(s)))
}

fn empty() -> Result<ScopedJson<'static>, RenderError> {
    text(String::new())
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

/// The number to format, or None for null (which formats as "").
fn number_param(
    h: &Helper<'_>,
    idx: usize,
    r: &Handlebars<'_>,
) -> Result<Option<f64>, RenderError> {
    let v = required_param(h, idx, r)?.value();
    if v.is_null() {
        return Ok(None);
    }
    as_number(v)
        .map(Some)
        .ok_or_else(|| other(format!("{}: {v} is not a number", h.name())))
}

fn decimals_param(
    h: &Helper<'_>,
    idx: usize,
    r: &Handlebars<'_>,
    default: usize,
) -> Result<usize, RenderError> {
    match optional_param(h, idx, r)?.map(PathAndJson::value) {
        None | Some(Value::Null) => Ok(default),
        Some(d) => match as_number(d) {
            Some(d) if (0.0..=10.0).contains(&d) && d.fract() == 0.0 => Ok(d as usize),
            _ => Err(other(format!("{}: decimals {d} must be 0 to 10", h.name()))),
        },
    }
}

/// Accepts the offsets the provider is known to send (`Z`, `+00:00`, `+0000`); a value
/// without offset is taken as UTC, the provider's clock.
pub fn parse_instant(s: &str) -> Option<DateTime<chrono::FixedOffset>> {
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

/// The timestamp to format, or None for null.
fn instant_param(h: &Helper<'_>, r: &Handlebars<'_>) -> Result<Option<DateTime<Utc>>, RenderError> {
    match required_param(h, 0, r)?.value() {
        Value::Null => Ok(None),
        Value::String(s) => parse_instant(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .ok_or_else(|| other(format!("{}: cannot read `{s}`", h.name()))),
        v => Err(other(format!("{}: {v} is not a timestamp", h.name()))),
    }
}

/// `{{bytes usage.remain}}`: 5351505742 -> "4.98 GB" (en), "4,98 GB" (es), "4,98 Go" (fr).
struct Bytes(Defaults);

impl HelperDef for Bytes {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        match number_param(h, 0, r)? {
            None => empty(),
            Some(n) => text(format::bytes(&self.0.locale(ctx), n)),
        }
    }
}

/// `{{number usage.remainPercent}}`: 9.97 -> "9.97" (en), "9,97" (fr); at most two
/// decimals unless a second parameter says otherwise.
struct Number(Defaults);

impl HelperDef for Number {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let decimals = decimals_param(h, 1, r, 2)?;
        match number_param(h, 0, r)? {
            None => empty(),
            Some(n) => text(format::number(&self.0.locale(ctx), n, decimals)),
        }
    }
}

/// `{{percent usage.threshold}}`: a fraction, 0.1 -> "10%" (en), "10 %" (es).
struct Percent(Defaults);

impl HelperDef for Percent {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let decimals = decimals_param(h, 1, r, 0)?;
        match number_param(h, 0, r)? {
            None => empty(),
            Some(n) => text(format::percent(&self.0.locale(ctx), n, decimals)),
        }
    }
}

/// `(ratio usage.remain usage.totalVolume)`: a / b, or null when either is null or b
/// is 0, so `{{percent (ratio a b)}}` shows nothing rather than "NaN%".
struct Ratio;

impl HelperDef for Ratio {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let a = number_param(h, 0, r)?;
        let b = number_param(h, 1, r)?;
        let v = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => serde_json::Number::from_f64(a / b)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
        Ok(ScopedJson::Derived(v))
    }
}

/// `{{datetime validity.expiredTime}}` in the customer's timezone and language;
/// a second parameter picks a style ("full", "long", "date", "time", "short") or a
/// strftime format ("%Y-%m-%d").
struct Datetime(Defaults);

impl HelperDef for Datetime {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let style = match optional_param(h, 1, r)?.map(PathAndJson::value) {
            None | Some(Value::Null) => format::DEFAULT_DATETIME_STYLE.to_owned(),
            Some(Value::String(f)) => f.clone(),
            Some(f) => return Err(other(format!("datetime: format {f} is not a string"))),
        };
        let Some(instant) = instant_param(h, r)? else {
            return empty();
        };
        let s = format::datetime(&self.0.locale(ctx), &instant, self.0.timezone(ctx), &style)
            .map_err(|e| other(format!("datetime: {e}")))?;
        text(s)
    }
}

/// `{{hours_left validity.expiredTime}}` / `{{days_left …}}`: whole hours (days) from
/// the sending instant until a timestamp, rounded down and never below 0; null for
/// null. Counted at sending, not when the provider reported, so an email that waited
/// out quiet hours still tells the truth.
struct TimeLeft {
    per: i64,
}

impl HelperDef for TimeLeft {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let Some(until) = instant_param(h, r)? else {
            return Ok(ScopedJson::Derived(Value::Null));
        };
        let secs = (until - now(ctx)).num_seconds().max(0);
        Ok(ScopedJson::Derived(Value::from(secs / self.per)))
    }
}

/// `{{plural n one="hora" other="horas"}}`: the word for `n` by the language's CLDR
/// plural rules (zero, one, two, few, many, other); `other` is required and is used
/// for any category not given.
struct Plural(Defaults);

impl HelperDef for Plural {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let word = |key: &str| -> Option<String> {
            h.hash_get(key)
                .and_then(|v| v.value().as_str())
                .map(str::to_owned)
        };
        let Some(fallback) = word("other") else {
            return Err(other(
                "plural: needs other=\"…\" (and one=\"…\" etc.)".to_owned(),
            ));
        };
        let Some(n) = number_param(h, 0, r)? else {
            return text(fallback);
        };
        let category = format::plural_category(&self.0.locale(ctx), n);
        text(word(category).unwrap_or(fallback))
    }
}

/// `{{lang}}`: the email's locale as a BCP 47 tag, for `<html lang="…">`.
struct Lang(Defaults);

impl HelperDef for Lang {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        text(self.0.locale(ctx).to_string())
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
        register(&mut r, chrono_tz::Europe::Berlin, "en");
        r
    }

    fn render(t: &str, data: Value) -> Result<String, handlebars::RenderError> {
        reg().render_template(t, &data)
    }

    /// As `Templates::render_at` passes them.
    fn at(locale: &str, now: &str, mut data: Value) -> Value {
        data[RENDER_KEY] = json!({"locale": locale, "now": now});
        data
    }

    #[test]
    fn bytes_accepts_numbers_strings_and_null_in_the_email_locale() {
        let d = json!({"a": 5368709120u64, "b": "1536", "c": 5351505742u64, "n": null});
        assert_eq!(
            render("{{bytes a}}|{{bytes b}}|{{bytes c}}|{{bytes n}}", d.clone()).unwrap(),
            "5 GB|2 KB|4.98 GB|"
        );
        assert_eq!(
            render(
                "{{bytes b}}|{{bytes c}}",
                at("es", "2026-01-01T00:00:00Z", d.clone())
            )
            .unwrap(),
            "2 KB|4,98 GB"
        );
        assert_eq!(
            render("{{bytes c}}", at("fr", "2026-01-01T00:00:00Z", d)).unwrap(),
            "4,98 Go"
        );
        assert!(render("{{bytes a}}", json!({"a": "lots"})).is_err());
        assert!(render("{{bytes missing}}", json!({})).is_err());
    }

    #[test]
    fn the_customer_locale_applies_when_the_render_gives_none() {
        let d = json!({"c": 5351505742u64, "customer": {"locale": "de_DE"}});
        assert_eq!(render("{{bytes c}}", d).unwrap(), "4,98 GB");
        let d = json!({"c": 5351505742u64, "customer": {"locale": null}});
        assert_eq!(
            render("{{bytes c}}", d).unwrap(),
            "4.98 GB",
            "the default locale"
        );
    }

    #[test]
    fn percent_number_and_ratio() {
        let d =
            json!({"t": 0.1, "r": 0.0997, "s": "0.5", "n": null, "rem": 25, "tot": 50, "zero": 0});
        assert_eq!(
            render(
                "{{percent t}} {{percent r 2}} {{percent r}} {{percent s}}[{{percent n}}] {{percent (ratio rem tot)}}[{{percent (ratio rem zero)}}][{{percent (ratio n tot)}}]",
                d.clone()
            )
            .unwrap(),
            "10% 9.97% 10% 50%[] 50%[][]"
        );
        assert_eq!(
            render(
                "{{percent r 2}} {{number 9.97}} {{number 3.14159 3}}",
                at("fr", "2026-01-01T00:00:00Z", d)
            )
            .unwrap(),
            "9,97\u{a0}% 9,97 3,142"
        );
        assert!(render("{{percent t \"x\"}}", json!({"t": 0.1})).is_err());
    }

    #[test]
    fn datetime_uses_customer_timezone_then_default_and_the_email_language() {
        let t = "{{datetime when}}";
        let berlin_default =
            json!({"when": "2026-04-23T17:13:00Z", "customer": {"timezone": null}});
        assert_eq!(
            render(t, berlin_default.clone()).unwrap(),
            "Thursday, April 23, 2026 at 7:13\u{202f}PM GMT+2"
        );
        let es = render(t, at("es", "2026-01-01T00:00:00Z", berlin_default)).unwrap();
        assert_eq!(es, "jueves, 23 de abril de 2026 a las 19:13 CEST");
        let tokyo =
            json!({"when": "2026-04-23T17:13:00+0000", "customer": {"timezone": "Asia/Tokyo"}});
        assert_eq!(
            render("{{datetime when \"date\"}}", tokyo).unwrap(),
            "Friday, April 24, 2026"
        );
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
        let s = json!({"s": "2026-04-23T17:13:00Z"});
        assert!(render("{{datetime s \"%Q\"}}", s.clone()).is_err());
        assert!(render("{{datetime s \"fancy\"}}", s).is_err());
    }

    #[test]
    fn time_left_counts_from_the_sending_instant() {
        let exp = json!({"exp": "2026-04-24T17:13:00Z", "n": null});
        let t = "{{hours_left exp}}h {{days_left exp}}d [{{hours_left n}}]";
        // 37 h 59 min before: whole hours, rounded down.
        assert_eq!(
            render(t, at("en", "2026-04-23T03:14:00Z", exp.clone())).unwrap(),
            "37h 1d []"
        );
        assert_eq!(
            render(t, at("en", "2026-04-21T17:13:00Z", exp.clone())).unwrap(),
            "72h 3d []"
        );
        assert_eq!(
            render(t, at("en", "2026-04-24T16:30:00Z", exp.clone())).unwrap(),
            "0h 0d []"
        );
        assert_eq!(
            render(t, at("en", "2026-04-25T00:00:00Z", exp.clone())).unwrap(),
            "0h 0d []",
            "never negative"
        );
        assert_eq!(
            render(
                "{{#if (lt (hours_left exp) 48)}}soon{{/if}}",
                at("en", "2026-04-23T03:14:00Z", exp)
            )
            .unwrap(),
            "soon"
        );
    }

    #[test]
    fn plural_follows_the_language_rules() {
        let t = "{{n}} {{plural n one=\"heure\" other=\"heures\"}}";
        let d = |n: u32| json!({"n": n});
        assert_eq!(
            render(t, at("fr", "2026-01-01T00:00:00Z", d(0))).unwrap(),
            "0 heure"
        );
        assert_eq!(
            render(t, at("fr", "2026-01-01T00:00:00Z", d(37))).unwrap(),
            "37 heures"
        );
        assert_eq!(
            render(t, at("en", "2026-01-01T00:00:00Z", d(1))).unwrap(),
            "1 heure"
        );
        assert_eq!(
            render(t, at("en", "2026-01-01T00:00:00Z", d(0))).unwrap(),
            "0 heures"
        );
        assert!(
            render("{{plural 1 one=\"x\"}}", json!({})).is_err(),
            "other is required"
        );
    }

    #[test]
    fn lang_is_the_email_locale() {
        assert_eq!(
            render("{{lang}}", at("es-MX", "2026-01-01T00:00:00Z", json!({}))).unwrap(),
            "es-MX"
        );
        assert_eq!(
            render("{{lang}}", json!({"customer": {"locale": null}})).unwrap(),
            "en"
        );
    }
}
