//! Numbers, byte sizes, percentages, dates and plural forms in the customer's
//! language, from the CLDR data ICU4X compiles in.
//!
//! Hand-written tables of decimal separators or month names would cover the
//! five shipped languages and quietly get the sixth wrong; CLDR knows that
//! Spanish writes "4,98", Swiss German "4.98", French puts a no-break space
//! before "%", Turkish puts "%" first, and that German months are
//! capitalised. Every function takes a parsed [`Locale`]; one ICU cannot
//! load (an odd tag) falls back to CLDR's root data rather than failing an
//! email.

use chrono::{DateTime, Datelike, Offset, Timelike, Utc};
use chrono_tz::Tz;
use fixed_decimal::{Decimal, Sign};
use icu_datetime::fieldsets::{self, zone};
use icu_datetime::input::{
    Date, DateTime as IcuDateTime, Time, TimeZone, UtcOffset, ZonedDateTime,
};
use icu_datetime::DateTimeFormatter;
use icu_decimal::DecimalFormatter;
use icu_experimental::dimension::percent::formatter::PercentFormatter;
use icu_locale_core::Locale;
use icu_plurals::{PluralCategory, PluralRules};
use writeable::Writeable;

/// Reads a locale as customer records spell it ("es-MX", "pt_BR", "DE").
pub fn parse_locale(tag: &str) -> Option<Locale> {
    let t = tag.trim().replace('_', "-");
    if t.is_empty() {
        return None;
    }
    t.parse::<Locale>().ok()
}

/// A locale and its CLDR parent locales within its language, most specific
/// first: "es-MX" -> ["es-MX", "es-419", "es"] (Latin-American Spanish shares
/// es-419), "pt-AO" -> ["pt-AO", "pt-PT", "pt"], "de-AT" -> ["de-AT", "de"].
/// From CLDR's parentLocales (ICU4X's fallback data), not a table of ours, so
/// a folder `es-419` or `en-001` serves every region CLDR says it should.
/// Parents in another language (CLDR sends some scripts elsewhere) are left
/// out: one email is in one language. Empty for a tag that does not parse.
pub fn parent_chain(tag: &str) -> Vec<String> {
    use icu_locale::fallback::LocaleFallbacker;
    let Some(locale) = parse_locale(tag) else {
        return Vec::new();
    };
    let language = locale.id.language;
    let mut out: Vec<String> = vec![locale.id.to_string()];
    let mut it = LocaleFallbacker::new()
        .for_config(Default::default())
        .fallback_for((&locale).into());
    while !it.get().is_unknown() {
        let l = it.get();
        if l.language == language {
            let s = l.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
        }
        it.step();
    }
    let lang = language.to_string();
    if !out.contains(&lang) {
        out.push(lang);
    }
    out
}

/// The language of a locale tag, lower-cased ("es" for "es-MX").
pub fn language_of(tag: &str) -> String {
    let t = tag.trim().replace('_', "-").to_ascii_lowercase();
    match t.split_once('-') {
        Some((lang, _)) => lang.to_owned(),
        None => t,
    }
}

/// `value` rounded to at most `max_decimals` places, trailing zeros dropped
/// ("4.980" -> "4.98", "5.00" -> "5"), never "-0".
fn decimal(value: f64, max_decimals: usize) -> Decimal {
    let text = format!("{:.*}", max_decimals, value);
    let mut d: Decimal = text.parse().unwrap_or_default();
    d.absolute.trim_end();
    if d.absolute.is_zero() {
        d.sign = Sign::None;
    }
    d
}

fn decimal_formatter(locale: &Locale) -> Option<DecimalFormatter> {
    DecimalFormatter::try_new(locale.into(), Default::default())
        .or_else(|_| DecimalFormatter::try_new(Locale::UNKNOWN.into(), Default::default()))
        .ok()
}

/// A number with the locale's decimal and grouping separators, at most
/// `max_decimals` places: 9.97 -> "9,97" (es), 3072 -> "3.072" (de).
pub fn number(locale: &Locale, value: f64, max_decimals: usize) -> String {
    let d = decimal(value, max_decimals);
    match decimal_formatter(locale) {
        Some(f) => f.format(&d).write_to_string().into_owned(),
        None => d.to_string(),
    }
}

/// 1024-based, because that is how plans are sold: a "5 GB" plan has 5·1024³
/// bytes and must read "5 GB", not "5.37 GB". Below a GB, whole units ("510 MB",
/// not "510.46 MB": nobody counts fractions of a megabyte); from a GB, at most two
/// decimals ("4.98 GB"), in the locale's notation ("4,98 GB"). The unit symbols are
/// the language's own ([`byte_units`]), with a plain space before them.
pub fn bytes(locale: &Locale, bytes: f64) -> String {
    let units = byte_units(locale);
    let negative = bytes < 0.0;
    let mut v = bytes.abs();
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // Rounded for display, 1023.6 MB would read "1024 MB": it is 1 GB.
    let decimals = |unit: usize| if unit >= 3 { 2 } else { 0 };
    let shown = |v: f64, unit: usize| {
        let f = 10f64.powi(decimals(unit) as i32);
        (v * f).round() / f
    };
    if shown(v, unit) >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let v = if negative { -v } else { v };
    format!("{} {}", number(locale, v, decimals(unit)), units[unit])
}

/// B, KB, MB, GB, TB as the language writes them: French (and every French-speaking
/// market) counts in octets, "Go", as its eSIM shops sell "5 Go · 30 jours"; the
/// other shipped languages use the English symbols, as their shops do.
pub fn byte_units(locale: &Locale) -> [&'static str; 5] {
    match locale.id.language.as_str() {
        "fr" => ["o", "Ko", "Mo", "Go", "To"],
        _ => ["B", "KB", "MB", "GB", "TB"],
    }
}

/// A fraction as a percentage in the locale's notation, `decimals` places at
/// most: 0.1 -> "10%" (en, pt), "10 %" (es, fr, de; a no-break space),
/// "%10" (tr).
pub fn percent(locale: &Locale, fraction: f64, decimals: usize) -> String {
    let d = decimal(fraction * 100.0, decimals);
    let formatter = PercentFormatter::try_new(locale.into(), Default::default())
        .or_else(|_| PercentFormatter::try_new(Locale::UNKNOWN.into(), Default::default()));
    match formatter {
        Ok(f) => f.format(&d).write_to_string().into_owned(),
        Err(_) => format!("{d}%"),
    }
}

/// The CLDR plural category of `n` in the locale ("one", "few", "other"...),
/// so templates can pick "1 hora" / "37 horas" by the language's own rules.
pub fn plural_category(locale: &Locale, n: f64) -> &'static str {
    let d = decimal(n, 3);
    let rules = PluralRules::try_new_cardinal(locale.into())
        .or_else(|_| PluralRules::try_new_cardinal(Locale::UNKNOWN.into()));
    let Ok(rules) = rules else {
        return "other";
    };
    match rules.category_for(&d) {
        PluralCategory::Zero => "zero",
        PluralCategory::One => "one",
        PluralCategory::Two => "two",
        PluralCategory::Few => "few",
        PluralCategory::Many => "many",
        PluralCategory::Other => "other",
    }
}

/// The named `datetime` styles; any other format is a strftime string.
pub const DATETIME_STYLES: &[&str] = &["full", "long", "date", "time", "short"];

/// What `{{datetime x}}` uses without a format.
pub const DEFAULT_DATETIME_STYLE: &str = "full";

/// The instant as ICU input, on the wall clock of `tz`. The zone keeps its
/// IANA identity, so ICU can name it the way the locale does ("CEST", "MESZ")
/// or fall back to the offset ("GMT+2").
fn zoned(
    instant: &DateTime<Utc>,
    tz: Tz,
) -> Option<
    ZonedDateTime<
        icu_calendar::Iso,
        icu_datetime::input::TimeZoneInfo<icu_time::zone::models::AtTime>,
    >,
> {
    let local = instant.with_timezone(&tz);
    let date = Date::try_new_iso(local.year(), local.month() as u8, local.day() as u8).ok()?;
    let time = Time::try_new(
        local.hour() as u8,
        local.minute() as u8,
        local.second().min(59) as u8,
        0,
    )
    .ok()?;
    let offset = UtcOffset::try_from_seconds(local.offset().fix().local_minus_utc()).ok();
    let zone = TimeZone::from_iana_id(tz.name())
        .with_offset(offset)
        .at_date_time(IcuDateTime { date, time });
    Some(ZonedDateTime { date, time, zone })
}

macro_rules! icu_format {
    ($locale:expr, $fieldset:expr, $input:expr) => {{
        let f = DateTimeFormatter::try_new($locale.into(), $fieldset)
            .or_else(|_| DateTimeFormatter::try_new(Locale::UNKNOWN.into(), $fieldset));
        match f {
            Ok(f) => Ok(f.format($input).write_to_string().into_owned()),
            Err(e) => Err(format!("cannot format a date: {e}")),
        }
    }};
}

/// An instant on the customer's clock in the customer's language. `style` is
/// one of [`DATETIME_STYLES`] or a strftime format whose month and weekday
/// names (`%B %b %A %a`) come out in the locale's language.
pub fn datetime(
    locale: &Locale,
    instant: &DateTime<Utc>,
    tz: Tz,
    style: &str,
) -> Result<String, String> {
    if style.contains('%') {
        return strftime(locale, instant, tz, style);
    }
    let z = zoned(instant, tz).ok_or_else(|| "date out of range".to_owned())?;
    match style {
        // "Thursday, April 23, 2026 at 7:13 PM GMT+2", "jueves, 23 de abril de 2026, 19:13 CEST"
        "full" => icu_format!(
            locale,
            fieldsets::YMDE::long()
                .with_time_hm()
                .with_zone(zone::SpecificShort),
            &z
        ),
        "long" => icu_format!(
            locale,
            fieldsets::YMD::long()
                .with_time_hm()
                .with_zone(zone::SpecificShort),
            &z
        ),
        "date" => icu_format!(locale, fieldsets::YMDE::long(), &z),
        "time" => icu_format!(
            locale,
            fieldsets::T::hm().with_zone(zone::SpecificShort),
            &z
        ),
        "short" => icu_format!(locale, fieldsets::YMD::short().with_time_hm(), &z),
        other => Err(format!(
            "unknown datetime format `{other}`: use one of {} or a strftime format such as \"%Y-%m-%d\"",
            DATETIME_STYLES.join(", ")
        )),
    }
}

/// chrono's strftime, with the name fields in the locale's language. A bad
/// format is an error (chrono's `Display` would panic on it).
fn strftime(
    locale: &Locale,
    instant: &DateTime<Utc>,
    tz: Tz,
    format: &str,
) -> Result<String, String> {
    use chrono::format::{Fixed, Item, StrftimeItems};
    use std::fmt::Write;
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid datetime format `{format}`"));
    }
    let local = instant.with_timezone(&tz);
    let z = zoned(instant, tz).ok_or_else(|| "date out of range".to_owned())?;
    let mut out = String::new();
    for item in items {
        let name = match &item {
            Item::Fixed(Fixed::LongMonthName) => {
                Some(icu_format!(locale, fieldsets::M::long(), &z.date))
            }
            Item::Fixed(Fixed::ShortMonthName) => {
                Some(icu_format!(locale, fieldsets::M::medium(), &z.date))
            }
            Item::Fixed(Fixed::LongWeekdayName) => {
                Some(icu_format!(locale, fieldsets::E::long(), &z.date))
            }
            Item::Fixed(Fixed::ShortWeekdayName) => {
                Some(icu_format!(locale, fieldsets::E::medium(), &z.date))
            }
            _ => None,
        };
        match name {
            Some(n) => out.push_str(&n?),
            None => write!(out, "{}", local.format_with_items(std::iter::once(item)))
                .map_err(|_| format!("invalid datetime format `{format}`"))?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn l(tag: &str) -> Locale {
        parse_locale(tag).unwrap()
    }

    #[test]
    fn parent_locales_are_cldrs() {
        assert_eq!(parent_chain("es-MX"), ["es-MX", "es-419", "es"]);
        assert_eq!(parent_chain("es_ar"), ["es-AR", "es-419", "es"]);
        assert_eq!(parent_chain("es-CO"), ["es-CO", "es-419", "es"]);
        assert_eq!(parent_chain("es-419"), ["es-419", "es"]);
        assert_eq!(parent_chain("es-ES"), ["es-ES", "es"]);
        assert_eq!(parent_chain("es"), ["es"]);
        assert_eq!(parent_chain("pt-AO"), ["pt-AO", "pt-PT", "pt"]);
        assert_eq!(parent_chain("de-AT"), ["de-AT", "de"]);
        assert!(parent_chain("not a locale!").is_empty());
    }

    #[test]
    fn locales_are_read_as_shops_spell_them() {
        assert_eq!(l("pt_BR").to_string(), "pt-BR");
        assert_eq!(l(" es-mx ").to_string(), "es-MX");
        assert!(parse_locale("").is_none());
        assert!(parse_locale("not a locale!").is_none());
        assert_eq!(language_of("es_MX"), "es");
        assert_eq!(language_of("DE"), "de");
    }

    #[test]
    fn bytes_are_1024_based_in_the_locale_notation() {
        // SPEC §7's examples.
        assert_eq!(bytes(&l("en"), 5368709120.0), "5 GB");
        assert_eq!(bytes(&l("en"), 5351505742.0), "4.98 GB");
        assert_eq!(bytes(&l("en"), 535150574.0), "510 MB");
        for tag in ["es", "de", "pt", "pt-BR"] {
            assert_eq!(bytes(&l(tag), 5351505742.0), "4,98 GB", "{tag}");
            assert_eq!(bytes(&l(tag), 5368709120.0), "5 GB", "{tag}");
            assert_eq!(bytes(&l(tag), 535150574.0), "510 MB", "{tag}");
        }
        assert_eq!(bytes(&l("es-MX"), 5351505742.0), "4.98 GB");
        assert_eq!(bytes(&l("en"), 0.0), "0 B");
        assert_eq!(bytes(&l("en"), 512.0), "512 B");
        assert_eq!(bytes(&l("en"), 3.0 * 1024f64.powi(5)), "3,072 TB");
        assert_eq!(bytes(&l("de"), 3.0 * 1024f64.powi(5)), "3.072 TB");
    }

    #[test]
    fn bytes_below_a_gigabyte_have_no_decimals() {
        assert_eq!(bytes(&l("en"), 1536.0), "2 KB");
        assert_eq!(bytes(&l("de"), 1536.0), "2 KB");
        assert_eq!(bytes(&l("en"), 1048575.0), "1 MB");
        // 1023.6 MB rounds to a whole GB, not "1024 MB".
        assert_eq!(bytes(&l("en"), 1023.6 * 1024.0 * 1024.0), "1 GB");
        assert_eq!(bytes(&l("en"), 1023.4 * 1024.0 * 1024.0), "1,023 MB");
        assert_eq!(bytes(&l("en"), 1.5 * 1024f64.powi(3)), "1.5 GB");
        assert_eq!(bytes(&l("en"), 300.0 * 1024.0), "300 KB");
    }

    #[test]
    fn french_counts_in_octets() {
        assert_eq!(bytes(&l("fr"), 5351505742.0), "4,98 Go");
        assert_eq!(bytes(&l("fr"), 5368709120.0), "5 Go");
        assert_eq!(bytes(&l("fr"), 535150574.0), "510 Mo");
        assert_eq!(bytes(&l("fr"), 300.0 * 1024.0), "300 Ko");
        assert_eq!(bytes(&l("fr"), 0.0), "0 o");
        assert_eq!(bytes(&l("fr-CA"), 5351505742.0), "4,98 Go");
        assert_eq!(bytes(&l("fr-CH"), 5351505742.0), "4,98 Go");
    }

    #[test]
    fn numbers_and_percentages_follow_cldr() {
        assert_eq!(number(&l("en"), 9.97, 2), "9.97");
        assert_eq!(number(&l("fr"), 9.97, 2), "9,97");
        assert_eq!(number(&l("de"), 10.0, 2), "10");
        assert_eq!(number(&l("en"), -0.001, 2), "0");
        assert_eq!(percent(&l("en"), 0.1, 0), "10%");
        assert_eq!(percent(&l("es"), 0.1, 0), "10\u{a0}%");
        assert_eq!(percent(&l("de"), 0.0997, 2), "9,97\u{a0}%");
        assert_eq!(percent(&l("fr"), 0.5, 0), "50\u{a0}%");
        assert_eq!(percent(&l("pt"), 0.2, 0), "20%");
        assert_eq!(percent(&l("tr"), 0.1, 0), "%10");
        assert_eq!(percent(&l("en"), 0.0997, 0), "10%");
    }

    #[test]
    fn plural_categories_are_the_languages_own() {
        assert_eq!(plural_category(&l("en"), 1.0), "one");
        assert_eq!(plural_category(&l("en"), 37.0), "other");
        assert_eq!(plural_category(&l("fr"), 0.0), "one", "French: 0 heure");
        assert_eq!(plural_category(&l("en"), 0.0), "other");
        assert_eq!(plural_category(&l("pl"), 3.0), "few");
    }

    #[test]
    fn datetime_names_months_and_weekdays_in_the_language_and_zone() {
        let t = Utc.with_ymd_and_hms(2026, 4, 23, 17, 13, 0).unwrap();
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        let full = |tag: &str| datetime(&l(tag), &t, madrid, "full").unwrap();
        assert!(
            full("es").starts_with("jueves, 23 de abril de 2026"),
            "{}",
            full("es")
        );
        assert!(full("es").contains("19:13"), "{}", full("es"));
        assert!(
            full("fr").starts_with("jeudi 23 avril 2026"),
            "{}",
            full("fr")
        );
        assert!(
            full("de").starts_with("Donnerstag, 23. April 2026"),
            "{}",
            full("de")
        );
        assert!(full("de").contains("19:13 MESZ"), "{}", full("de"));
        assert!(
            full("pt").starts_with("quinta-feira, 23 de abril de 2026"),
            "{}",
            full("pt")
        );
        assert!(
            full("en").starts_with("Thursday, April 23, 2026"),
            "{}",
            full("en")
        );
        assert!(full("en").contains("7:13"), "{}", full("en"));
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let d = datetime(&l("en"), &t, tokyo, "date").unwrap();
        assert_eq!(d, "Friday, April 24, 2026");
        assert_eq!(
            datetime(&l("es"), &t, madrid, "%A %-d de %B de %Y, %H:%M").unwrap(),
            "jueves 23 de abril de 2026, 19:13"
        );
        assert_eq!(
            datetime(&l("de"), &t, madrid, "%a, %d. %B").unwrap(),
            "Do, 23. April"
        );
        assert_eq!(
            datetime(&l("en"), &t, chrono_tz::UTC, "%Y-%m-%d %H:%M").unwrap(),
            "2026-04-23 17:13"
        );
        assert!(datetime(&l("en"), &t, madrid, "%Q").is_err());
        assert!(datetime(&l("en"), &t, madrid, "fancy").is_err());
    }
}
