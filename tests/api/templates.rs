//! The shipped templates and the loader/checker, through the public API only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use esim_notify::render::{
    sample_now, sample_vars, NoticeClass, RenderError, TemplateProblem, Templates,
};
use serde_json::{json, Value};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

fn joined(problems: &[TemplateProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(dir: &Path) -> Templates {
    Templates::load(dir, "en", chrono_tz::UTC).unwrap_or_else(|p| panic!("{}", joined(&p)))
}

fn shipped_set() -> Vec<(String, NoticeClass)> {
    let mut v = vec![
        ("data_usage".to_owned(), NoticeClass::Data),
        ("validity_usage".to_owned(), NoticeClass::Validity),
        ("esim_ready".to_owned(), NoticeClass::Ready),
    ];
    for s in [
        "esim_activated",
        "esim_used_up",
        "esim_expired",
        "esim_expired_unused",
        "esim_cancelled",
        "esim_revoked",
    ] {
        v.push((s.to_owned(), NoticeClass::Status));
    }
    v
}

/// The brand the template tests render with (also `wording.rs`).
pub(crate) fn brand() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_owned(), "Example eSIM".to_owned()),
        ("support_email".to_owned(), "support@example.com".to_owned()),
        ("website".to_owned(), "https://example.com".to_owned()),
        (
            "topup_url".to_owned(),
            "https://example.com/topup".to_owned(),
        ),
        ("whatsapp".to_owned(), "+1 555 0100".to_owned()),
    ])
}

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

/// A copy of the shipped folder, to break one file at a time.
fn copy_of_shipped() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.path().is_dir() {
                copy(&e.path(), &target);
            } else {
                fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let d = tempfile::tempdir().unwrap();
    copy(&shipped_dir(), d.path());
    d
}

#[test]
fn shipped_set_loads_and_checks_clean() {
    let t = load(&shipped_dir());
    let mut names = t.names();
    names.sort();
    let mut expected: Vec<String> = shipped_set().into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(t.locales(), vec!["de", "es", "es-419", "fr", "pt"]);
    let problems = t.check(&shipped_set(), &brand());
    assert!(problems.is_empty(), "{}", joined(&problems));
    // And with an empty [brand] table: standard keys are null, templates must cope.
    let problems = t.check(&shipped_set(), &BTreeMap::new());
    assert!(problems.is_empty(), "{}", joined(&problems));
}

#[test]
fn minimal_sample_renders_every_shipped_template() {
    let t = load(&shipped_dir());
    for (name, class) in shipped_set() {
        for locale in [
            None,
            Some("es"),
            Some("es-419"),
            Some("fr"),
            Some("de"),
            Some("pt-BR"),
        ] {
            for full in [true, false] {
                let vars = sample_vars(class, full, &brand());
                let r = t
                    .render(&name, locale, &vars)
                    .unwrap_or_else(|e| panic!("{name} {locale:?} full={full}: {e}"));
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'));
                assert!(!r.text.is_empty());
                assert!(r.html.contains("</html>"));
            }
        }
    }
}

#[test]
fn status_subjects_state_the_status_in_words() {
    let t = load(&shipped_dir());
    let vars = sample_vars(NoticeClass::Status, true, &brand());
    for (name, subject) in [
        ("esim_activated", "Your eSIM is active"),
        ("esim_used_up", "You've used all 5 GB of your plan"),
        ("esim_expired", "Your eSIM has expired"),
        (
            "esim_expired_unused",
            "Your eSIM expired before it was used",
        ),
        ("esim_cancelled", "Your eSIM has been cancelled"),
        ("esim_revoked", "Your eSIM has been deactivated"),
    ] {
        assert_eq!(t.render(name, None, &vars).unwrap().subject, subject);
    }
}

#[test]
fn the_install_email_has_every_way_to_install_in_every_language() {
    let t = load(&shipped_dir());
    let vars = sample_vars(NoticeClass::Ready, true, &brand());
    for locale in ["en", "es", "fr", "de", "pt"] {
        let ready = t.render("esim_ready", Some(locale), &vars).unwrap();
        let (h, x) = (&ready.html, &ready.text);
        assert!(
            h.contains("<img src=\"cid:esim-qr@esim-notify\""),
            "{locale}: the inline QR code"
        );
        for url in [
            "https://esimsetup.apple.com/esim_qrcode_provisioning?carddata",
            "https://esimsetup.android.com/esim_qrcode_provisioning?carddata",
        ] {
            assert!(h.contains(url), "{locale}: one-tap link {url}");
            assert!(x.contains(url), "{locale}: one-tap link {url} in the text");
        }
        for both in [
            "rsp.example.net",
            "A1B2-C3D4-E5F6",
            "LPA:1$rsp.example.net$A1B2-C3D4-E5F6",
            "internet",
            "https://p.qrsim.net/a1b2c3d4e5f6",
            "https://p.qrsim.net/a1b2c3d4e5f6.png",
            "iOS 17.4",
            "Android",
            "iPhone",
            "Europe 5GB 30 Days",
            if locale == "fr" {
                "5 Go · 30 "
            } else {
                "5 GB · 30 "
            },
        ] {
            assert!(h.contains(both), "{locale}: {both} in the HTML");
            assert!(x.contains(both), "{locale}: {both} in the text");
        }
    }
    // Without the optional fields (only the activation code is certain) it still reads.
    let minimal = sample_vars(NoticeClass::Ready, false, &brand());
    let r = t.render("esim_ready", Some("es"), &minimal).unwrap();
    assert!(r.text.contains("LPA:1$rsp.example.net$A1B2-C3D4-E5F6"));
    assert!(!r.html.contains("<img"));
    assert!(!r.text.contains("iPhone (iOS"));
}

#[test]
fn data_subject_contains_threshold_percentage() {
    let t = load(&shipped_dir());
    let mut vars = sample_vars(NoticeClass::Data, true, &brand());
    vars["usage"]["threshold"] = json!(0.1);
    vars["usage"]["thresholdPercent"] = json!(10.0);
    let r = t.render("data_usage", None, &vars).unwrap();
    assert_eq!(r.subject, "10% or less of your data left");
    assert!(r.text.contains("https://example.com/topup"));
    assert!(r.text.contains("support@example.com"));
    assert!(r.text.contains("89852240400012345678"));
    vars["usage"]["threshold"] = json!(0.2);
    vars["usage"]["thresholdPercent"] = json!(20);
    assert!(t
        .render("data_usage", None, &vars)
        .unwrap()
        .subject
        .contains("20%"));
}

#[test]
fn validity_subject_states_time_left_at_sending_and_body_the_local_expiry() {
    let t = load(&shipped_dir());
    let mut vars = sample_vars(NoticeClass::Validity, true, &brand());
    // The sample plan ends 2026-04-24T17:13Z; sample_now() is 37 hours before.
    let r = t
        .render_at("validity_usage", None, &vars, sample_now())
        .unwrap();
    assert_eq!(r.subject, "Your eSIM plan ends in 37 hours");
    assert!(
        r.text.contains("Friday, April 24, 2026 at 7:13"),
        "{}",
        r.text
    );
    assert!(r.text.contains("GMT+2"), "Berlin in summer: {}", r.text);
    vars["customer"]["timezone"] = Value::Null;
    let at =
        |h: i64, m: i64| sample_now() + chrono::Duration::hours(h) + chrono::Duration::minutes(m);
    let r = t
        .render_at("validity_usage", None, &vars, at(36, 30))
        .unwrap();
    assert_eq!(r.subject, "Your eSIM plan ends in less than an hour");
    assert!(r.text.contains("5:13"), "UTC: {}", r.text);
    let r = t
        .render_at("validity_usage", None, &vars, at(36, 0))
        .unwrap();
    assert_eq!(r.subject, "Your eSIM plan ends in 1 hour");
    let r = t
        .render_at("validity_usage", None, &vars, at(-11, 0))
        .unwrap();
    assert_eq!(r.subject, "Your eSIM plan ends in 2 days");
    let r = t
        .render_at("validity_usage", None, &vars, at(-72, 0))
        .unwrap();
    assert_eq!(r.subject, "Your eSIM plan ends in 4 days");
}

#[test]
fn html_is_escaped_only_in_the_html_part() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "t.subject.hbs", "Hi {{customer.name}}");
    write(d.path(), "t.txt.hbs", "Dear {{customer.name}}");
    write(d.path(), "t.html.hbs", "<p>{{customer.name}}</p>");
    let t = load(d.path());
    let mut vars = sample_vars(NoticeClass::Status, true, &brand());
    let evil = "<script>alert(1)</script> & Co";
    vars["customer"]["name"] = json!(evil);
    let r = t.render("t", None, &vars).unwrap();
    assert_eq!(r.subject, format!("Hi {evil}"));
    assert_eq!(r.text.trim_end(), format!("Dear {evil}"));
    assert!(!r.html.contains("<script>"));
    assert!(
        r.html
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"),
        "{}",
        r.html
    );

    // Same through the shipped templates and the layout partial, in every language.
    let t = load(&shipped_dir());
    for locale in ["en", "es", "fr", "de", "pt"] {
        let r = t.render("esim_activated", Some(locale), &vars).unwrap();
        assert!(r.text.contains(evil));
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("&amp; Co"));
    }
}

#[test]
fn subject_is_trimmed_to_one_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.subject.hbs",
        "\n  Your {{brand.name}}\n  eSIM  \n\n",
    );
    write(d.path(), "t.txt.hbs", "x");
    write(d.path(), "t.html.hbs", "x");
    let t = load(d.path());
    let r = t
        .render("t", None, &sample_vars(NoticeClass::Status, true, &brand()))
        .unwrap();
    assert_eq!(r.subject, "Your Example eSIM eSIM");
}

#[test]
fn a_locale_gets_every_part_in_its_language_and_falls_back_by_language() {
    let t = load(&shipped_dir());
    let vars = sample_vars(NoticeClass::Data, true, &brand());
    let es = t.render("data_usage", Some("es-MX"), &vars).unwrap();
    let en = t.render("data_usage", None, &vars).unwrap();
    // Mexican Spanish writes "10%" and a decimal point; Spain "10 %" and a comma.
    assert_eq!(es.subject, "Te queda el 10% o menos de tus datos");
    assert!(es.text.starts_with("Hola, Jane Doe:"), "{}", es.text);
    assert!(es.html.contains("<html lang=\"es-MX\">"));
    assert!(
        es.html.contains("Te quedan <strong>510 MB</strong>"),
        "{}",
        es.html
    );
    assert!(en.text.starts_with("Hi Jane Doe,"));
    let es = t.render("data_usage", Some("es"), &vars).unwrap();
    assert_eq!(es.subject, "Te queda el 10\u{a0}% o menos de tus datos");
    assert!(
        es.html.contains("Te quedan <strong>510 MB</strong>"),
        "{}",
        es.html
    );
    assert!(
        es.html.contains("¿Tienes alguna pregunta?"),
        "the Spanish footer"
    );
    assert!(!es.html.contains("Questions?"));
    let it = t.render("data_usage", Some("it"), &vars).unwrap();
    assert_eq!(it.subject, en.subject, "no `it` folder: the base files");
}

#[test]
fn a_locale_folder_with_only_a_subject_fails_naming_the_files() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "it/data_usage.subject.hbs",
        "Ti resta il {{percent usage.threshold}} dei dati",
    );
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .expect("must fail");
    let all = joined(&problems);
    for missing in ["it/data_usage.txt.hbs", "it/data_usage.html.hbs"] {
        assert!(
            problems.iter().any(|p| p.file == d.path().join(missing)),
            "{missing}: {all}"
        );
    }
    assert!(all.contains("half-translated"), "{all}");
    assert!(all.contains("it/data_usage.subject.hbs"), "{all}");

    // All three parts: it loads (SPEC §7, file by file), and the partials
    // with words it lacks are warnings naming the files to add.
    let base = |part: &str| {
        std::fs::read_to_string(d.path().join(format!("data_usage.{part}.hbs"))).unwrap()
    };
    write(d.path(), "it/data_usage.txt.hbs", &base("txt"));
    write(d.path(), "it/data_usage.html.hbs", &base("html"));
    let t = Templates::load(d.path(), "en", chrono_tz::UTC).expect("loads");
    let warned = joined(t.warnings());
    for missing in ["it/partials/footer.hbs", "it/partials/footer_text.hbs"] {
        assert!(
            t.warnings()
                .iter()
                .any(|p| p.file == d.path().join(missing)),
            "{missing}: {warned}"
        );
    }
    assert!(warned.contains("missing partial"), "{warned}");
}

#[test]
fn syntax_error_is_reported_with_file_and_line() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "esim_expired.txt.hbs",
        "Hello\n\nYour plan {{#if plan.name}}{{plan.name}}\n{{/each}}\n",
    );
    write(
        d.path(),
        "es/data_usage.subject.hbs",
        "Hola {{customer.name",
    );
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .expect("must fail");
    assert_eq!(problems.len(), 2, "{}", joined(&problems));
    let all = joined(&problems);
    let txt = problems
        .iter()
        .find(|p| p.file.ends_with("esim_expired.txt.hbs"))
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(txt.line, Some(4), "{all}");
    let es = problems
        .iter()
        .find(|p| p.file.ends_with("es/data_usage.subject.hbs"))
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(es.line, Some(1), "{all}");
    assert!(
        es.to_string().contains("data_usage.subject.hbs:1:"),
        "{all}"
    );
}

#[test]
fn missing_base_part_is_a_problem() {
    let d = copy_of_shipped();
    fs::remove_file(d.path().join("esim_revoked.html.hbs")).unwrap();
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .expect("must fail");
    assert_eq!(problems.len(), 1, "{}", joined(&problems));
    assert!(problems[0].file.ends_with("esim_revoked.html.hbs"));
}

#[test]
fn unknown_variable_inside_if_and_else_is_reported_with_file_and_line() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "esim_activated.html.hbs",
        "{{#> layout}}\n<p>{{#if plan.name}}{{plan.name}}{{else}}\n  {{plan.nmae}}{{/if}}</p>\n{{#if customer.name}}\n{{customer.first_name}}\n{{/if}}\n{{/layout}}\n",
    );
    let t = load(d.path());
    let problems = t.check(&shipped_set(), &brand());
    let all = joined(&problems);
    assert_eq!(problems.len(), 2, "{all}");
    let file = d.path().join("esim_activated.html.hbs");
    assert!(
        all.contains(&format!(
            "{}:3:3: unknown variable `plan.nmae`",
            file.display()
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "{}:5:1: unknown variable `customer.first_name`",
            file.display()
        )),
        "{all}"
    );
}

#[test]
fn data_template_using_validity_is_reported() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "data_usage.txt.hbs",
        "Less than {{usage.thresholdPercent}}%.\n{{#if usage.remain}}{{validity.remain}} days left{{/if}}\n",
    );
    let t = load(d.path());
    let problems = t.check(&shipped_set(), &brand());
    assert_eq!(problems.len(), 1, "{}", joined(&problems));
    assert!(problems[0].file.ends_with("data_usage.txt.hbs"));
    assert_eq!(problems[0].line, Some(2));
    assert!(problems[0]
        .message
        .contains("unknown variable `validity.remain`"));
    // The same variable is fine for a validity template.
    assert!(t
        .check(
            &[("data_usage".to_owned(), NoticeClass::Validity)],
            &brand()
        )
        .iter()
        .all(|p| !p.message.contains("validity.remain")));
}

#[test]
fn locale_variants_are_checked_too() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "es/data_usage.txt.hbs",
        "Hola\n{{usage.remian}}\n",
    );
    let t = load(d.path());
    let problems = t.check(&shipped_set(), &brand());
    assert_eq!(problems.len(), 1, "{}", joined(&problems));
    assert!(problems[0]
        .to_string()
        .contains("es/data_usage.txt.hbs:2:1: unknown variable `usage.remian`"));
}

#[test]
fn extra_brand_keys_are_variables() {
    let d = copy_of_shipped();
    write(
        d.path(),
        "esim_revoked.txt.hbs",
        "WhatsApp: {{brand.whatsapp}}\n{{brand.telegram}}\n",
    );
    let t = load(d.path());
    let problems = t.check(&shipped_set(), &brand());
    assert_eq!(problems.len(), 1, "{}", joined(&problems));
    assert!(problems[0].message.contains("brand.telegram"));
}

#[test]
fn render_errors_are_values() {
    let t = load(&shipped_dir());
    let vars = sample_vars(NoticeClass::Data, true, &brand());
    assert!(matches!(
        t.render("nope", None, &vars),
        Err(RenderError::UnknownTemplate(_))
    ));
    // Wrong class of variables at run time: strict mode fails instead of rendering "".
    let err = t
        .render(
            "data_usage",
            None,
            &sample_vars(NoticeClass::Status, true, &brand()),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("data_usage") && msg.contains("usage"), "{msg}");
    let wanted = [("nope".to_owned(), NoticeClass::Status)];
    assert_eq!(t.check(&wanted, &brand()).len(), 1);
}
