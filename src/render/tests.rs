use super::*;
use serde_json::json;
use std::fs;
use std::path::Path;

fn shipped() -> Templates {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    match Templates::load(&dir, "en", chrono_tz::UTC) {
        Ok(t) => t,
        Err(p) => panic!(
            "{}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

/// A minimal valid template set: `t` with three parts and a layout partial.
fn tiny() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "t.subject.hbs", "Hi {{customer.name}}\n");
    write(d.path(), "t.txt.hbs", "text {{customer.name}}\n");
    write(
        d.path(),
        "t.html.hbs",
        "{{#> layout}}<p>{{customer.name}}</p>{{/layout}}\n",
    );
    write(
        d.path(),
        "partials/layout.hbs",
        "<body>{{> @partial-block}}</body>",
    );
    d
}

fn check_one(dir: &Path, name: &str, class: NoticeClass) -> Vec<TemplateProblem> {
    let t = Templates::load(dir, "en", chrono_tz::UTC).expect("loads");
    t.check(&[(name.to_owned(), class)], &BTreeMap::new())
}

#[test]
fn templates_is_send_and_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Templates>();
}

#[test]
fn problem_display_omits_unknown_positions() {
    let p = TemplateProblem::new("templates/x.html.hbs", "boom");
    assert_eq!(p.to_string(), "templates/x.html.hbs: boom");
    let p = p.at(Some((12, 5)));
    assert_eq!(p.to_string(), "templates/x.html.hbs:12:5: boom");
}

#[test]
fn subject_is_one_trimmed_line() {
    assert_eq!(one_line("  a\n  b \r\n\n c  \n"), "a b c");
}

#[test]
fn text_loses_runs_of_blank_lines() {
    assert_eq!(tidy_text("\n\na  \n\n\n\nb\n\n\n"), "a\n\nb\n");
}

#[test]
fn whole_floats_print_as_integers() {
    let v = tidy_numbers(&json!({"a": 10.0, "b": 9.97, "c": [2.0], "d": 5}));
    assert_eq!(v, json!({"a": 10, "b": 9.97, "c": [2], "d": 5}));
}

#[test]
fn tiny_set_loads_and_checks_clean() {
    let d = tiny();
    assert!(check_one(d.path(), "t", NoticeClass::Data).is_empty());
}

#[test]
fn unknown_variable_in_else_of_each_and_with_block_params() {
    let d = tiny();
    write(
        d.path(),
        "t.txt.hbs",
        "{{#each brand}}{{@key}}={{this}} {{../customer.name}}{{else}}\n{{esim.nope}}{{/each}}\n{{#with customer as |c|}}{{c.email}}{{email}}{{c.phone}}{{/with}}\n{{@root.plan.name}}{{@root.plan.price}}\n",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Data);
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{text:#?}");
    assert!(
        text[0].contains("t.txt.hbs:2:1: unknown variable `esim.nope`"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("t.txt.hbs:3:") && text[1].contains("`c.phone`"),
        "{text:#?}"
    );
    assert!(
        text[2].contains("t.txt.hbs:4:") && text[2].contains("`@root.plan.price`"),
        "{text:#?}"
    );
}

#[test]
fn unknown_variable_in_helper_params_and_subexpressions() {
    let d = tiny();
    write(
        d.path(),
        "t.txt.hbs",
        "{{bytes usage.remian}}\n{{#if (gt usage.remain usage.totl)}}x{{/if}}\n{{percent usage.threshold decimals=plan.foo}}\n",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Data);
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(1), Some(2), Some(3)], "{problems:#?}");
}

#[test]
fn unknown_variable_in_a_partial_names_the_partial() {
    let d = tiny();
    write(
        d.path(),
        "partials/layout.hbs",
        "<body>\n{{> @partial-block}}\n{{validity.remain}}</body>",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Data);
    assert!(!problems.is_empty());
    let s = problems[0].to_string();
    assert!(
        s.contains("layout.hbs:3:1: unknown variable `validity.remain`"),
        "{s}"
    );
    assert!(s.contains("t.html.hbs"), "{s}");
    assert!(
        check_one(d.path(), "t", NoticeClass::Validity).is_empty(),
        "the same partial is fine for a validity template"
    );
}

#[test]
fn unknown_helper_and_partial_are_problems() {
    let d = tiny();
    write(
        d.path(),
        "t.txt.hbs",
        "{{shout customer.name}}\n{{> footer}}\n",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Status);
    let msgs: Vec<_> = problems.iter().map(|p| p.message.clone()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("unknown helper `shout`")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("unknown partial `footer`")),
        "{msgs:#?}"
    );
}

#[test]
fn inline_partials_are_known() {
    let d = tiny();
    write(
        d.path(),
        "t.txt.hbs",
        "{{#*inline \"sig\"}}{{brand.name}}{{/inline}}\n{{> sig}}\n",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Status);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A locale folder with all three parts of `t`: `subject` is its subject.
fn translate(dir: &Path, locale: &str, subject: &str) {
    write(dir, &format!("{locale}/t.subject.hbs"), subject);
    write(
        dir,
        &format!("{locale}/t.txt.hbs"),
        &format!("{subject} {{{{customer.name}}}}"),
    );
    write(
        dir,
        &format!("{locale}/t.html.hbs"),
        &format!("{{{{#> layout}}}}<p>{subject}</p>{{{{/layout}}}}"),
    );
}

#[test]
fn locale_chain_falls_back_by_language_then_default() {
    let d = tiny();
    translate(d.path(), "es", "Hola");
    translate(d.path(), "pt-BR", "Olá");
    translate(d.path(), "en", "Hello");
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).unwrap();
    let vars = sample_vars(NoticeClass::Data, true, &BTreeMap::new());
    let subj = |l: Option<&str>| t.render("t", l, &vars).unwrap().subject;
    assert_eq!(subj(Some("es-MX")), "Hola");
    assert_eq!(subj(Some("es_ES")), "Hola");
    assert_eq!(subj(Some("pt_br")), "Olá");
    assert_eq!(subj(Some("de")), "Hello");
    assert_eq!(subj(None), "Hello");
    assert_eq!(t.locales(), vec!["en", "es", "pt-BR"]);
}

/// SPEC §7: es-MX, then es, then `default_locale`, then the base files — also
/// when the customer's language has a folder that lacks this template, whose
/// partials then stay out of it (one email, one language).
#[test]
fn a_folder_without_the_template_falls_back_to_the_default_locales() {
    let d = tiny();
    translate(d.path(), "es", "Hola");
    write(
        d.path(),
        "es/partials/layout.hbs",
        "<body lang=es>{{> @partial-block}}</body>",
    );
    // `fr` translates another template and its layout, not `t`.
    write(d.path(), "u.subject.hbs", "U");
    write(d.path(), "u.txt.hbs", "U");
    write(d.path(), "u.html.hbs", "{{#> layout}}U{{/layout}}");
    for part in ["subject", "txt"] {
        write(d.path(), &format!("fr/u.{part}.hbs"), "Ufr");
    }
    write(d.path(), "fr/u.html.hbs", "{{#> layout}}Ufr{{/layout}}");
    write(
        d.path(),
        "fr/partials/layout.hbs",
        "<body lang=fr>{{> @partial-block}}</body>",
    );
    let t = Templates::load(d.path(), "es", chrono_tz::UTC).unwrap();
    let vars = sample_vars(NoticeClass::Data, true, &BTreeMap::new());
    let email = |l: Option<&str>| t.render("t", l, &vars).unwrap();
    for l in [Some("fr"), Some("fr-CA"), Some("it"), None] {
        let e = email(l);
        assert!(e.subject.starts_with("Hola"), "{l:?}: {}", e.subject);
        assert!(e.html.contains("lang=es"), "{l:?}: {}", e.html);
    }
    assert_eq!(t.choose("t", Some("fr")).folder.as_deref(), Some("es"));
    // `u` in French stays French.
    assert!(t
        .render("u", Some("fr"), &vars)
        .unwrap()
        .html
        .contains("lang=fr"));
}

#[test]
fn the_email_locale_is_the_customers_when_it_is_the_emails_language() {
    let d = tiny();
    translate(d.path(), "es", "Hola");
    write(d.path(), "t.subject.hbs", "{{lang}} {{bytes usage.remain}}");
    translate(d.path(), "fr", "{{lang}} {{bytes usage.remain}}");
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).unwrap();
    let c = |l: Option<&str>| t.choose("t", l);
    // es-MX reads the `es` files with Mexican numbers; es with Spanish ones.
    assert_eq!(c(Some("es-MX")).folder.as_deref(), Some("es"));
    assert_eq!(c(Some("es-MX")).locale, "es-MX");
    assert_eq!(c(Some("es")).locale, "es");
    // A language without a folder reads the base files, formatted as they are written.
    assert_eq!(c(Some("it")).folder, None);
    assert_eq!(c(Some("it")).locale, "en");
    assert_eq!(c(Some("en-GB")).locale, "en-GB");
    assert_eq!(c(None).locale, "en");
    let mut vars = sample_vars(NoticeClass::Data, true, &BTreeMap::new());
    vars["usage"]["remain"] = serde_json::json!(5351505742u64);
    let subj = |l: Option<&str>| t.render("t", l, &vars).unwrap().subject;
    assert_eq!(subj(Some("fr-CA")), "fr-CA 4,98 Go");
    assert_eq!(subj(Some("it")), "en 4.98 GB");
    assert_eq!(subj(Some("de")), "en 4.98 GB");
}

#[test]
fn a_half_translated_template_is_a_load_problem_naming_the_files() {
    let d = tiny();
    write(d.path(), "es/t.subject.hbs", "Hola");
    write(d.path(), "es/t.html.hbs", "{{#> layout}}Hola{{/layout}}");
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .expect("must fail");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, d.path().join("es/t.txt.hbs"));
    let msg = &problems[0].message;
    assert!(msg.contains("half-translated"), "{msg}");
    assert!(msg.contains("es/t.subject.hbs and es/t.html.hbs"), "{msg}");
    assert!(msg.contains("no txt part"), "{msg}");
}

#[test]
fn a_locale_is_warned_of_every_partial_with_words_it_lacks_but_shares_markup_only_ones() {
    let d = tiny();
    write(
        d.path(),
        "partials/footer.hbs",
        "Questions? {{brand.support_email}}",
    );
    write(
        d.path(),
        "t.html.hbs",
        "{{#> layout}}<p>{{customer.name}}</p>{{> footer}}{{/layout}}\n",
    );
    for (locale, hello) in [("es", "Hola"), ("es-MX", "Qué onda")] {
        translate(d.path(), locale, hello);
        write(
            d.path(),
            &format!("{locale}/t.html.hbs"),
            &format!("{{{{#> layout}}}}<p>{hello}</p>{{{{> footer}}}}{{{{/layout}}}}"),
        );
    }
    // It loads (SPEC §7: a locale overrides file by file) and its emails go out
    // with the base footer, but the operator is told which files to add.
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).expect("loads");
    let vars = sample_vars(NoticeClass::Status, true, &BTreeMap::new());
    assert!(t
        .render("t", Some("es"), &vars)
        .unwrap()
        .html
        .contains("Questions?"));
    let problems = t.warnings();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    // layout.hbs is markup only; footer.hbs has words. es-MX would inherit es's.
    assert_eq!(problems.len(), 2, "{text:#?}");
    for p in problems {
        assert!(p.message.contains("missing partial"), "{text:#?}");
    }
    assert!(problems
        .iter()
        .any(|p| p.file == d.path().join("es/partials/footer.hbs")));
    assert!(problems
        .iter()
        .any(|p| p.file == d.path().join("es-MX/partials/footer.hbs")));

    write(
        d.path(),
        "es/partials/footer.hbs",
        "¿Preguntas? {{brand.support_email}}",
    );
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).expect("es-MX inherits es's footer");
    assert!(t.warnings().is_empty(), "{:#?}", t.warnings());
    let html = |l: Option<&str>| t.render("t", l, &vars).unwrap().html;
    assert!(html(Some("es-MX")).contains("¿Preguntas?"));
    assert!(html(Some("es")).contains("¿Preguntas?"));
    assert!(html(Some("it")).contains("Questions?"));
    assert!(!html(Some("it")).contains("¿"));
    assert!(t
        .check(&[("t".to_owned(), NoticeClass::Status)], &BTreeMap::new())
        .is_empty());
}

#[test]
fn a_locale_partial_is_checked_with_the_templates_that_use_it() {
    let d = tiny();
    translate(d.path(), "es", "Hola");
    write(
        d.path(),
        "es/partials/layout.hbs",
        "<body>{{> @partial-block}}\n{{brand.telefono}}</body>",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Status);
    assert!(!problems.is_empty());
    let s = problems[0].to_string();
    assert!(
        s.contains("es/partials/layout.hbs:2:1: unknown variable `brand.telefono`"),
        "{s}"
    );
}

#[test]
fn orphan_locale_file_and_stray_hbs_are_load_problems() {
    let d = tiny();
    write(d.path(), "es/data_usge.subject.hbs", "x");
    write(d.path(), "t.text.hbs", "x");
    write(d.path(), "not a locale/t.subject.hbs", "x");
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .unwrap();
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn every_shipped_template_renders_in_every_shipped_language() {
    let t = shipped();
    for l in ["de", "es", "fr", "pt"] {
        assert!(t.locales().contains(&l.to_owned()), "{l}");
    }
    for (name, class) in [
        ("data_usage", NoticeClass::Data),
        ("validity_usage", NoticeClass::Validity),
        ("esim_activated", NoticeClass::Status),
        ("esim_used_up", NoticeClass::Status),
        ("esim_expired", NoticeClass::Status),
        ("esim_expired_unused", NoticeClass::Status),
        ("esim_cancelled", NoticeClass::Status),
        ("esim_revoked", NoticeClass::Status),
        ("esim_ready", NoticeClass::Ready),
    ] {
        for locale in ["en", "es", "es-419", "fr", "de", "pt"] {
            for full in [true, false] {
                let r = t
                    .render_at(
                        name,
                        Some(locale),
                        &sample_vars(class, full, &BTreeMap::new()),
                        sample_now(),
                    )
                    .unwrap_or_else(|e| panic!("{name} {locale} full={full}: {e}"));
                assert!(
                    r.html.contains(&format!("<html lang=\"{locale}\">")),
                    "{name} {locale}"
                );
                assert!(
                    !r.subject.is_empty() && !r.text.trim().is_empty(),
                    "{name} {locale}"
                );
            }
        }
    }
}

/// SPEC §7: subjects do not repeat the brand (it is in From:), and the validity
/// subject stays short in every language (it used to reach 60 characters in
/// French and German with a 12-letter brand).
#[test]
fn subjects_leave_the_brand_to_the_from_header_and_stay_short() {
    let t = shipped();
    let brand: BTreeMap<String, String> = [("name", "Globetrotter")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (name, class) in [
        ("data_usage", NoticeClass::Data),
        ("validity_usage", NoticeClass::Validity),
        ("esim_activated", NoticeClass::Status),
        ("esim_used_up", NoticeClass::Status),
        ("esim_expired", NoticeClass::Status),
        ("esim_expired_unused", NoticeClass::Status),
        ("esim_cancelled", NoticeClass::Status),
        ("esim_revoked", NoticeClass::Status),
        ("esim_ready", NoticeClass::Ready),
    ] {
        for locale in ["en", "es", "es-MX", "fr", "de", "pt"] {
            for full in [true, false] {
                let r = t
                    .render_at(
                        name,
                        Some(locale),
                        &sample_vars(class, full, &brand),
                        sample_now(),
                    )
                    .unwrap();
                assert!(
                    !r.subject.contains("Globetrotter"),
                    "{name} {locale}: {}",
                    r.subject
                );
                assert!(
                    !r.subject.contains("Example eSIM"),
                    "{name} {locale}: {}",
                    r.subject
                );
                let n = r.subject.chars().count();
                assert!(n <= 55, "{name} {locale}: {n} chars: {}", r.subject);
                if name == "validity_usage" {
                    assert!(n <= 50, "{name} {locale}: {n} chars: {}", r.subject);
                }
            }
        }
    }
}

#[test]
fn the_unsubscribe_page_is_checked_in_every_locale_and_state() {
    let d = tiny();
    write(
        d.path(),
        "partials/unsubscribe_page.hbs",
        "<html lang=\"{{lang}}\">{{#if (eq page.state \"confirm\")}}Stop {{page.email}}?{{/if}}</html>",
    );
    translate(d.path(), "es", "Hola");
    write(
        d.path(),
        "es/partials/unsubscribe_page.hbs",
        "<html>{{#if (eq page.state \"done\")}}Hecho {{page.correo}}{{/if}}</html>",
    );
    let problems = check_one(d.path(), "t", NoticeClass::Status);
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{text:#?}");
    assert!(
        text[0].contains("es/partials/unsubscribe_page.hbs:1:")
            && text[0].contains("`page.correo`"),
        "{text:#?}"
    );

    let t = Templates::load(d.path(), "en", chrono_tz::UTC).unwrap();
    let vars = page_vars(
        "confirm",
        Some("ana@example.com"),
        Some("/unsubscribe?t=x"),
        &[],
        &BTreeMap::new(),
    );
    let page = |wanted: &[&str]| {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        t.render_page(UNSUBSCRIBE_PAGE, &wanted, &vars)
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        page(&["it", "en-GB"]),
        "<html lang=\"en-GB\">Stop ana@example.com?</html>"
    );
    assert_eq!(page(&[]), "<html lang=\"en\">Stop ana@example.com?</html>");
    assert_eq!(
        page(&["es-AR"]),
        "<html></html>",
        "the es page, which says nothing on confirm"
    );
}

/// SPEC §7 with CLDR's parent locales: a Latin-American customer reads the `es-419`
/// files where they exist, else the `es` ones; a Spanish one never reads `es-419`;
/// the partials follow the same chain; numbers stay the customer's own.
#[test]
fn latin_american_spanish_goes_through_es_419_to_es() {
    let d = tiny();
    write(d.path(), "u.subject.hbs", "U {{lang}}");
    write(d.path(), "u.txt.hbs", "u");
    write(d.path(), "u.html.hbs", "{{#> layout}}u{{/layout}}");
    translate(d.path(), "es", "Ajustes {{lang}} {{bytes usage.remain}}");
    write(d.path(), "es/u.subject.hbs", "U es {{lang}} {{> sig}}");
    write(d.path(), "es/u.txt.hbs", "u");
    write(d.path(), "es/u.html.hbs", "{{#> layout}}u{{/layout}}");
    write(d.path(), "es/partials/sig.hbs", "firma");
    translate(
        d.path(),
        "es-419",
        "Configuración {{lang}} {{bytes usage.remain}}",
    );
    write(d.path(), "es-419/partials/sig.hbs", "firma-419");
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).unwrap();
    let mut vars = sample_vars(NoticeClass::Data, true, &BTreeMap::new());
    vars["usage"]["remain"] = serde_json::json!(5351505742u64);
    let subj = |name: &str, l: &str| t.render(name, Some(l), &vars).unwrap().subject;
    assert_eq!(subj("t", "es-MX"), "Configuración es-MX 4.98 GB");
    assert_eq!(subj("t", "es_ar"), "Configuración es-AR 4,98 GB");
    assert_eq!(subj("t", "es-CO"), "Configuración es-CO 4,98 GB");
    assert_eq!(subj("t", "es-419"), "Configuración es-419 4.98 GB");
    assert_eq!(subj("t", "es-ES"), "Ajustes es-ES 4,98 GB");
    assert_eq!(subj("t", "es"), "Ajustes es 4,98 GB");
    // Not in es-419: the es files, with es-419's partials and the customer's numbers.
    assert_eq!(subj("u", "es-MX"), "U es es-MX firma-419");
    assert_eq!(subj("u", "es-ES"), "U es es-ES firma");
}
