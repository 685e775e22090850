//! Every shipped email in every shipped language, as `.eml` files written by
//! the real mailer's file transport: the input of the CI email gate
//! (`.ci/email-gate`), which checks them with SpamAssassin, tidy and a strict
//! MIME parser, and screenshots them.
//!
//! `cargo run --example render_emails -- [--config config.toml] [--out DIR] [--brand KEY=VALUE]...`
//!
//! `--brand` overrides one `[brand]` key (checked as the config checks it), so the
//! gate can render a set as a reseller would brand it: a logo and another accent.
//!
//! Each email is rendered from the sample data `check` uses (every field
//! filled, the brand's support page, postal address and an unsubscribe link
//! included so the whole footer shows), as of the sample sending instant.
//! Files are named `TEMPLATE[+VARIANT].LOCALE.eml`; the variants are the
//! boundary cases of the data and validity emails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use esim_notify::config::Config;
use esim_notify::live::{load_templates, template_classes};
use esim_notify::mailer::{
    message_id_for, settings_from, Mailer, OutgoingEmail, TransportSettings,
};
use esim_notify::render::{sample_now, sample_vars, NoticeClass};
use serde_json::{json, Value};

/// The shipped languages, with a customer who would read each.
const CUSTOMERS: &[(&str, &str, &str)] = &[
    ("en", "Jane Doe", "Europe/London"),
    ("es", "Ana García", "Europe/Madrid"),
    ("es-419", "Lucía Hernández", "America/Mexico_City"),
    ("fr", "Camille Martin", "Europe/Paris"),
    ("de", "Jonas Becker", "Europe/Berlin"),
    ("pt", "João Silva", "America/Sao_Paulo"),
];

const GIB: u64 = 1024 * 1024 * 1024;

/// A variant's name ("" for the sample itself) and how it changes the sample.
type Variant = (&'static str, fn(&mut Value));

/// Boundary cases worth seeing besides the sample.
fn variants(class: NoticeClass) -> Vec<Variant> {
    match class {
        NoticeClass::Data => vec![
            ("", |_| {}),
            ("half", |v| set_usage(v, 50 * GIB, 25 * GIB, 0.5)),
            ("zero", |v| set_usage(v, 5 * GIB, 0, 0.1)),
        ],
        NoticeClass::Validity => vec![
            ("", |_| {}),
            ("days", |v| {
                v["validity"]["expiredTime"] = json!("2026-04-27T17:13:00Z");
            }),
        ],
        _ => vec![("", |_| {})],
    }
}

fn set_usage(v: &mut Value, total: u64, remain: u64, threshold: f64) {
    let pct = (remain as f64 / total as f64 * 10_000.0).round() / 100.0;
    v["usage"] = json!({
        "totalVolume": total, "orderUsage": total - remain, "remain": remain,
        "remainPercent": pct, "usedPercent": 100.0 - pct,
        "threshold": threshold, "thresholdPercent": threshold * 100.0,
    });
}

fn main() {
    let mut config_path = PathBuf::from("config.toml");
    let mut out = PathBuf::from("target/ci-artefacts/emails");
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config_path = args.next().expect("--config PATH").into(),
            "--out" => out = args.next().expect("--out DIR").into(),
            "--brand" => {
                let kv = args.next().expect("--brand KEY=VALUE");
                let (k, v) = kv.split_once('=').expect("--brand KEY=VALUE");
                overrides.push((k.to_owned(), v.to_owned()));
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: render_emails [--config PATH] [--out DIR] [--brand KEY=VALUE]..."
                );
                std::process::exit(2);
            }
        }
    }
    let mut config = Config::load(&config_path).unwrap_or_else(|e| {
        eprintln!("{}: {e}", config_path.display());
        std::process::exit(1);
    });
    config.brand.extend(overrides);
    let bad = esim_notify::brand::problems(&config.brand);
    if !bad.is_empty() {
        for (key, reason) in bad {
            eprintln!("{key}: {reason}");
        }
        std::process::exit(1);
    }
    let templates = load_templates(&config).unwrap_or_else(|problems| {
        eprintln!("{}", problems.join("\n"));
        std::process::exit(1);
    });
    // The shipped config leaves these empty; the sample values show the whole footer.
    let brand: BTreeMap<String, String> = config
        .brand
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut wanted = template_classes(&config);
    for t in config.notify.order_status.values() {
        if !wanted.iter().any(|(n, _)| n == t) {
            wanted.push((t.clone(), NoticeClass::Ready));
        }
    }

    std::fs::create_dir_all(&out).expect("output folder");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut written = 0;
    for (name, class) in &wanted {
        for (variant, change) in variants(*class) {
            for (locale, customer, tz) in CUSTOMERS {
                let mut vars = sample_vars(*class, true, &brand);
                change(&mut vars);
                // Service emails go without an unsubscribe link, as the dispatcher sends them.
                if config.email.essential.contains(name) {
                    vars["unsubscribe_url"] = serde_json::Value::Null;
                }
                vars["customer"]["locale"] = json!(locale);
                vars["customer"]["name"] = json!(customer);
                vars["customer"]["timezone"] = json!(tz);
                let rendered = templates
                    .render_at(name, Some(locale), &vars, sample_now())
                    .unwrap_or_else(|e| panic!("{name} {locale}: {e}"));
                let stem = if variant.is_empty() {
                    format!("{name}.{locale}")
                } else {
                    format!("{name}+{variant}.{locale}")
                };
                // The install email's QR code, embedded as the sender embeds it.
                let images = esim_notify::provider::install::images_in_vars(&vars, &rendered.html)
                    .unwrap_or_else(|e| panic!("{stem}: {e}"));
                write_eml(&runtime, &config, &out, &stem, customer, rendered, images);
                written += 1;
            }
        }
    }
    println!("wrote {written} emails into {}", out.display());
}

/// Sends through the mailer's file transport into a folder of its own, then
/// names the one file it wrote.
fn write_eml(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    out: &Path,
    stem: &str,
    name: &str,
    rendered: esim_notify::render::Rendered,
    inline_images: Vec<esim_notify::mailer::InlineImage>,
) {
    let dir = out.join(format!(".{stem}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = settings_from(config);
    settings.transport = TransportSettings::File { dir: dir.clone() };
    let mailer = Mailer::new(settings).expect("mailer settings");
    let email = OutgoingEmail {
        to_email: "customer@example.com".into(),
        to_name: Some(name.into()),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        message_id: message_id_for(stem, &config.email.from),
        template: stem.to_string(),
        list_unsubscribe: None,
        inline_images,
    };
    runtime
        .block_on(mailer.send(&email))
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let file = std::fs::read_dir(&dir)
        .expect("the transport's folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "eml"))
        .expect("one .eml");
    std::fs::rename(&file, out.join(format!("{stem}.eml"))).expect("rename");
    let _ = std::fs::remove_dir_all(&dir);
}
