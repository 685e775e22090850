//! Which locale tags a customer may be bound with: a BCP 47 tag whose
//! language, script and region CLDR knows (`en`, `es-MX`, `pt-BR`, `es-419`),
//! not merely one that is well-formed (`english` and `xx-YY` are).
//!
//! The source of "known" is CLDR itself, as compiled into ICU4X
//! (`icu_experimental`'s display-name data, already linked for the percent
//! formatter): a subtag is known when CLDR has an English name for it. That
//! list is ISO 639 languages, ISO 15924 scripts and ISO 3166 / UN M.49
//! regions as CLDR carries them, and it updates with the ICU4X version, so
//! there is no second, hand-kept list to drift.

use icu_experimental::displaynames::multi::{
    LanguageDisplayNames, RegionDisplayNames, ScriptDisplayNames,
};
use icu_experimental::displaynames::DisplayNamesOptions;
use icu_locale_core::{locale, Locale};

/// CLDR's English names. Built per call: the data is compiled in, so this is
/// a lookup, not a load (and ICU4X payloads are not `Sync`, so not shared).
struct Names {
    languages: LanguageDisplayNames,
    scripts: ScriptDisplayNames,
    regions: RegionDisplayNames,
}

fn names() -> Option<Names> {
    let en = || locale!("en").into();
    let o = DisplayNamesOptions::default;
    Some(Names {
        languages: LanguageDisplayNames::try_new(en(), o()).ok()?,
        scripts: ScriptDisplayNames::try_new(en(), o()).ok()?,
        regions: RegionDisplayNames::try_new(en(), o()).ok()?,
    })
}

/// The tag in its canonical form (`es_mx` -> `es-MX`), or why it is refused.
pub fn known_locale(tag: &str) -> Result<String, String> {
    let parsed = Locale::try_from_str(&tag.replace('_', "-"))
        .map_err(|_| "not a language tag such as \"en\", \"es-MX\" or \"pt-BR\"".to_string())?;
    let id = &parsed.id;
    let Some(names) = names() else {
        // Compiled-in data that does not load is a build defect; well-formed is
        // then the best that can be said.
        return Ok(parsed.to_string());
    };
    if id.language.is_unknown() || names.languages.of(id.language).is_none() {
        return Err(format!(
            "`{}` is not a language CLDR knows (use an ISO 639 code such as \"en\", \"es\", \"pt\")",
            id.language
        ));
    }
    if let Some(script) = id.script {
        if names.scripts.of(script).is_none() {
            return Err(format!("`{script}` is not a script CLDR knows"));
        }
    }
    if let Some(region) = id.region {
        if names.regions.of(region).is_none() {
            return Err(format!(
                "`{region}` is not a region CLDR knows (use an ISO 3166 code such as \"MX\" or a UN M.49 area such as \"419\")"
            ));
        }
    }
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::known_locale;

    #[test]
    fn cldr_tags_are_known_and_made_canonical() {
        for (tag, canonical) in [
            ("en", "en"),
            ("es-MX", "es-MX"),
            ("pt-BR", "pt-BR"),
            ("es-419", "es-419"),
            ("es_mx", "es-MX"),
            ("zh-Hant-TW", "zh-Hant-TW"),
            ("fil", "fil"),
            ("de-CH", "de-CH"),
        ] {
            assert_eq!(known_locale(tag).as_deref(), Ok(canonical), "{tag}");
        }
        for bad in [
            "english", "xx-YY", "en-YY", "xx", "und", "e", "en-Qqqq", "es-999", "",
        ] {
            assert!(known_locale(bad).is_err(), "{bad} was accepted");
        }
    }
}
