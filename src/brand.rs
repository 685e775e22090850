//! The reseller's brand (`[brand]`, SPEC §3): what its keys mean, how they are
//! checked, and the `brand` object every template sees.
//!
//! The brand is the one place a reseller makes the emails theirs, so what a
//! template needs from it is computed here once instead of in 50 template
//! files: the top-up link already naming the customer's eSIM, the accent
//! colour and the text colour that stays readable on it (in light and in
//! dark mode), and the logo. A leaf module: config validation, the template
//! variables and the samples all read the same rules.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The accent when `brand.accent_color` is not set (SPEC §3).
pub const DEFAULT_ACCENT: &str = "#0b57d0";

/// The placeholders `brand.topup_url` may hold, each the `esim` variable of the
/// same name (SPEC §3), so "Top up now" opens the shop on that customer's eSIM.
pub const TOPUP_PLACEHOLDERS: [&str; 4] = ["iccid", "esimTranNo", "orderNo", "transactionId"];

/// The `[brand]` keys every deployment has; they are always present so that shipped
/// templates may use them even when an operator blanks or removes one. The value is
/// the example `check` and the preview show when the operator's table lacks the key.
pub const STANDARD_BRAND_KEYS: &[(&str, &str)] = &[
    ("name", "Example eSIM"),
    ("support_email", "support@example.com"),
    ("support_url", "https://example.com/help"),
    (
        "address",
        "Example eSIM Ltd, 1 Sample Street, 08001 Barcelona, Spain",
    ),
    ("website", "https://example.com"),
    ("topup_url", "https://example.com/topup"),
];

/// Text on the accent when white does not read: the body text colour of the layout.
const DARK_TEXT: Rgb = Rgb(0x11, 0x18, 0x27);
const WHITE: Rgb = Rgb(0xff, 0xff, 0xff);
/// The card behind the content in dark mode (`partials/layout.hbs`).
const DARK_CARD: Rgb = Rgb(0x1c, 0x1f, 0x26);

/// WCAG 2 ratio for normal text (links read as text); 1.4.3.
const TEXT_CONTRAST: f64 = 4.5;
/// WCAG 2 ratio for large text and UI components (buttons); 1.4.11.
pub const UI_CONTRAST: f64 = 3.0;

/// An sRGB colour, as `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb` (either case); nothing else: CSS names and `#rgb` are refused so an
    /// operator's typo cannot become an invisible button.
    pub fn parse(s: &str) -> Option<Rgb> {
        let hex = s.trim().strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
    }

    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// WCAG 2 relative luminance.
    fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = c as f64 / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    /// `self` moved towards `other` by `t` (0 = self, 1 = other).
    fn mix(self, other: Rgb, t: f64) -> Rgb {
        let m = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
        Rgb(m(self.0, other.0), m(self.1, other.1), m(self.2, other.2))
    }
}

/// WCAG 2 contrast ratio of two colours, 1 to 21.
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// White or the dark text colour, whichever reads better on `bg`.
pub fn text_on(bg: Rgb) -> Rgb {
    if contrast(WHITE, bg) >= contrast(DARK_TEXT, bg) {
        WHITE
    } else {
        DARK_TEXT
    }
}

/// The accent as dark mode shows it: the accent itself when it reads as a link on
/// the dark card, else the accent lightened (towards white) just enough that it
/// does, so a navy or black brand colour does not vanish at night.
pub fn accent_for_dark(accent: Rgb) -> Rgb {
    let mut t: f64 = 0.0;
    let mut c = accent;
    while contrast(c, DARK_CARD) < TEXT_CONTRAST && t < 1.0 {
        t += 0.05;
        c = accent.mix(WHITE, t.min(1.0));
    }
    c
}

/// `brand.accent_color` read, or the default when unset or (already refused by
/// the config check) unreadable.
fn accent_of(brand: &BTreeMap<String, String>) -> Rgb {
    brand
        .get("accent_color")
        .and_then(|s| Rgb::parse(s))
        .or_else(|| Rgb::parse(DEFAULT_ACCENT))
        .unwrap_or(Rgb(0x0b, 0x57, 0xd0))
}

/// `topup_url` with each `{placeholder}` replaced by the `esim` variable of that
/// name, URL-encoded ("" when unknown). `esim` is the `esim` template variable
/// (or null when there is no eSIM, as on a page).
pub fn fill_esim(url: &str, esim: &Value) -> String {
    let mut out = url.to_owned();
    for key in TOPUP_PLACEHOLDERS {
        let needle = format!("{{{key}}}");
        if out.contains(&needle) {
            let value = match &esim[key] {
                Value::String(s) => crate::uri::encode_component(s),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            out = out.replace(&needle, &value);
        }
    }
    out
}

/// The `{…}` names in `url` that are not placeholders (a typo such as `{ICCID}`
/// would otherwise reach customers as is).
fn unknown_placeholders(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !TOPUP_PLACEHOLDERS.contains(&name) {
            out.push(format!("{{{name}}}"));
        }
        rest = &after[end + 1..];
    }
    out
}

/// The `[brand]` values that cannot work, as (key, reason): the config refuses them.
pub fn problems(brand: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if let Some(a) = brand.get("accent_color") {
        if Rgb::parse(a).is_none() {
            p.push((
                "brand.accent_color".to_owned(),
                format!("`{a}` is not a colour: write it as #rrggbb, e.g. \"{DEFAULT_ACCENT}\""),
            ));
        }
    }
    if let Some(u) = brand.get("topup_url") {
        let unknown = unknown_placeholders(u);
        if !unknown.is_empty() {
            p.push((
                "brand.topup_url".to_owned(),
                format!(
                    "unknown placeholder {}: use {}",
                    unknown.join(", "),
                    TOPUP_PLACEHOLDERS.map(|k| format!("{{{k}}}")).join(", ")
                ),
            ));
        }
    }
    p
}

/// What works but a customer would notice (SPEC §3 warnings): a logo that is not
/// https (mail apps block or flag plain-http images) and an accent too pale on
/// white for a button or link (WCAG 1.4.11: under 3:1).
pub fn warnings(brand: &BTreeMap<String, String>) -> Vec<String> {
    let mut w = Vec::new();
    let logo = brand.get("logo_url").map(|s| s.trim()).unwrap_or("");
    if !logo.is_empty() && !logo.starts_with("https://") {
        w.push(format!("brand.logo_url = {logo} is not an https URL: mail apps block or warn about images not served over https, so customers would see no logo"));
    }
    if let Some(accent) = brand.get("accent_color").and_then(|a| Rgb::parse(a)) {
        let ratio = contrast(accent, WHITE);
        if ratio < UI_CONTRAST {
            w.push(format!("brand.accent_color = {} has a contrast of {ratio:.1}:1 on white, under the 3:1 buttons and links need to be seen (WCAG 1.4.11): choose a darker colour", accent.hex()));
        }
    }
    w
}

/// Builds the `brand` object from the `[brand]` table: every configured key, plus the
/// standard keys as null when unset, so `{{#if brand.topup_url}}` is never an unknown
/// variable. Use the same function for real renders and for samples so both agree.
/// `esim` is the email's `esim` variable (null for a page): `topup_url` comes with
/// its placeholders filled in for that eSIM.
///
/// Derived keys:
/// - `contact_url`, where a customer's "Contact us" button leads: `support_url`,
///   else a `mailto:` of `support_email`, else null (a `contact_url` of the
///   operator's own wins);
/// - `accent_color` (`#rrggbb`, the default when unset) and `accent_text_color`,
///   white or dark, whichever reads on it; `accent_dark_color` and
///   `accent_dark_text_color`, the same for dark mode (see [`accent_for_dark`]);
/// - `logo_url`, "" when unset.
pub fn brand_vars(brand: &BTreeMap<String, String>, fill_examples: bool, esim: &Value) -> Value {
    let mut m = Map::new();
    for (k, example) in STANDARD_BRAND_KEYS {
        let v = if fill_examples {
            Value::String((*example).to_owned())
        } else {
            Value::Null
        };
        m.insert((*k).to_owned(), v);
    }
    for (k, v) in brand {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    let set = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let contact =
        set("support_url").or_else(|| set("support_email").map(|e| format!("mailto:{e}")));
    let own_contact = set("contact_url");
    let topup = set("topup_url");
    let logo = set("logo_url").unwrap_or_default();
    if own_contact.is_none() {
        m.insert(
            "contact_url".into(),
            contact.map_or(Value::Null, Value::String),
        );
    }
    if let Some(url) = topup {
        m.insert("topup_url".into(), Value::String(fill_esim(&url, esim)));
    }
    m.insert("logo_url".into(), Value::String(logo));
    let accent = accent_of(brand);
    let dark = accent_for_dark(accent);
    for (k, c) in [
        ("accent_color", accent),
        ("accent_text_color", text_on(accent)),
        ("accent_dark_color", dark),
        ("accent_dark_text_color", text_on(dark)),
    ] {
        m.insert(k.into(), Value::String(c.hex()));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn colours_are_read_only_as_rrggbb() {
        assert_eq!(Rgb::parse("#0B57d0"), Some(Rgb(0x0b, 0x57, 0xd0)));
        for bad in ["0b57d0", "#0b57d", "#0b57d0f", "blue", "#gggggg", "", "#"] {
            assert_eq!(Rgb::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast(WHITE, Rgb(0, 0, 0)) - 21.0).abs() < 0.01);
        assert!((contrast(WHITE, WHITE) - 1.0).abs() < 0.01);
        // The default accent: white text on it.
        let def = Rgb::parse(DEFAULT_ACCENT).unwrap();
        assert_eq!(text_on(def), WHITE);
        // A yellow accent gets dark text.
        assert_eq!(text_on(Rgb::parse("#ffd400").unwrap()), DARK_TEXT);
    }

    #[test]
    fn dark_mode_lightens_an_accent_that_would_vanish() {
        for hex in [
            "#000000", "#0b57d0", "#1c1f26", "#7a0019", "#ffd400", "#ffffff",
        ] {
            let a = Rgb::parse(hex).unwrap();
            let d = accent_for_dark(a);
            assert!(
                contrast(d, DARK_CARD) >= TEXT_CONTRAST,
                "{hex} -> {}",
                d.hex()
            );
            assert!(contrast(text_on(d), d) >= UI_CONTRAST, "{hex}");
        }
        // An accent that already reads on the dark card is kept.
        let y = Rgb::parse("#ffd400").unwrap();
        assert_eq!(accent_for_dark(y), y);
    }

    #[test]
    fn topup_url_names_the_esim_url_encoded() {
        let esim = json!({"iccid": "8943108170001029631", "esimTranNo": "25052822150009",
            "orderNo": null, "transactionId": "a b&c/d"});
        assert_eq!(
            fill_esim(
                "https://s.example/t?i={iccid}&o={orderNo}&x={transactionId}#{esimTranNo}",
                &esim
            ),
            "https://s.example/t?i=8943108170001029631&o=&x=a%20b%26c%2Fd#25052822150009"
        );
        assert_eq!(
            fill_esim("https://s.example/{iccid}", &Value::Null),
            "https://s.example/"
        );
        assert_eq!(fill_esim("https://s.example/", &esim), "https://s.example/");
    }

    #[test]
    fn bad_brand_values_are_named() {
        let p = problems(&table(&[
            ("accent_color", "blue"),
            ("topup_url", "https://s/{ICCID}"),
        ]));
        let keys: Vec<_> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["brand.accent_color", "brand.topup_url"]);
        assert!(p[1].1.contains("{ICCID}"), "{}", p[1].1);
        assert!(problems(&table(&[
            ("accent_color", "#AABBCC"),
            ("topup_url", "https://s/?i={iccid}")
        ]))
        .is_empty());
    }

    #[test]
    fn warnings_name_an_http_logo_and_a_pale_accent() {
        let w = warnings(&table(&[
            ("logo_url", "http://x.example/l.png"),
            ("accent_color", "#ffd400"),
        ]));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("brand.logo_url") && w[1].contains("brand.accent_color"),
            "{w:?}"
        );
        assert!(warnings(&table(&[
            ("logo_url", "https://x.example/l.png"),
            ("accent_color", "#0b57d0")
        ]))
        .is_empty());
    }

    #[test]
    fn brand_vars_derive_colours_logo_and_topup() {
        let esim =
            json!({"iccid": "89 01", "esimTranNo": null, "orderNo": null, "transactionId": null});
        let v = brand_vars(
            &table(&[
                ("name", "Acme"),
                ("topup_url", "https://s/?i={iccid}"),
                ("accent_color", "#FFD400"),
            ]),
            false,
            &esim,
        );
        assert_eq!(v["topup_url"], "https://s/?i=89%2001");
        assert_eq!(v["accent_color"], "#ffd400");
        assert_eq!(v["accent_text_color"], "#111827");
        assert_eq!(v["logo_url"], "");
        let d = brand_vars(&BTreeMap::new(), false, &Value::Null);
        assert_eq!(d["accent_color"], DEFAULT_ACCENT);
        assert_eq!(d["accent_text_color"], "#ffffff");
        assert_eq!(d["topup_url"], Value::Null);
    }
}
