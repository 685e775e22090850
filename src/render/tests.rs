use super::*;
use serde_json::json;
use std::fs;

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

#[test]
fn locale_chain_falls_back_by_language_then_default() {
    let d = tiny();
    write(d.path(), "es/t.subject.hbs", "Hola");
    write(d.path(), "pt-BR/t.subject.hbs", "Olá");
    write(d.path(), "en/t.subject.hbs", "Hello");
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

#[test]
fn orphan_locale_file_and_stray_hbs_are_load_problems() {
    let d = tiny();
    write(d.path(), "es/data_usge.subject.hbs", "x");
    write(d.path(), "t.text.hbs", "x");
    let problems = Templates::load(d.path(), "en", chrono_tz::UTC)
        .err()
        .unwrap();
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn shipped_previews_read_well() {
    // Not an assertion-heavy test: prints what a customer gets, for `--nocapture` review.
    let t = shipped();
    for (name, class) in [
        ("data_usage", NoticeClass::Data),
        ("validity_usage", NoticeClass::Validity),
        ("esim_used_up", NoticeClass::Status),
        ("esim_ready", NoticeClass::Ready),
    ] {
        for full in [true, false] {
            let r = t
                .render(name, None, &sample_vars(class, full, &BTreeMap::new()))
                .unwrap();
            println!(
                "=== {name} full={full}\nSubject: {}\n{}\n",
                r.subject, r.text
            );
        }
    }
    let es = t
        .render(
            "data_usage",
            Some("es"),
            &sample_vars(NoticeClass::Data, true, &BTreeMap::new()),
        )
        .unwrap();
    println!("=== es\nSubject: {}\n{}\n{}", es.subject, es.text, es.html);
}
