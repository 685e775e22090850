//! The install email ("your eSIM is ready") end to end, short of the engine:
//! the fake provider's answer → install and plan variables → templates → the
//! inline QR code → the real mailer → a real SMTP server; then the received
//! message is read as a mail client would (MIME tree, `cid:` link, links,
//! and the QR code decoded back from its pixels). Also `render` and
//! `check` of the built binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use esim_notify::config::Secret;
use esim_notify::mailer::{
    message_id_for, InlineImage, Mailer, MailerSettings, OutgoingEmail, Tls, TransportSettings,
};
use esim_notify::provider::{self, Esim, InstallVars, Provider, ProviderSettings};
use esim_notify::render::{sample_vars, NoticeClass, Templates};
use mailparse::{MailHeaderMap, ParsedMail};

use crate::fake_provider::{self as fake, FakeProvider};
use crate::helpers::{copy_dir, TEMPLATES};
use crate::smtp::mailin_server;

const BIN: &str = env!("CARGO_BIN_EXE_esim-notify");
const ORDER: &str = "B26042217160011";
const AC_A: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";
const AC_B: &str = "LPA:1$smdp.example.org$K2-1X9Y7Z-0QW3E5";

/// An install template as an operator would write one with SPEC §7's
/// variables (the shipped templates are another helper's; these are the test's).
const HTML: &str = r#"{{#> layout}}
<h1>Your eSIM{{#if plan.name}} for {{plan.name}}{{/if}} is ready</h1>
<p><img src="{{install.qrImage}}" width="200" height="200" alt="eSIM QR code"></p>
{{#if install.qrCodeUrl}}<p>Cannot see the code? <a href="{{install.qrCodeUrl}}">Open it</a></p>{{/if}}
<p><a href="{{install.appleUrl}}">Install on iPhone</a> <a href="{{install.androidUrl}}">Install on Android</a></p>
<p>SM-DP+ address: {{install.smdpAddress}}</p>
<p>Activation code: {{install.matchingId}}</p>
<p>APN: {{install.apn}}</p>
{{#if install.shortUrl}}<p><a href="{{install.shortUrl}}">Installation page</a></p>{{/if}}
{{/layout}}
"#;
const TEXT: &str = "Your eSIM{{#if plan.name}} for {{plan.name}}{{/if}} is ready.\n\
iPhone: {{install.appleUrl}}\nAndroid: {{install.androidUrl}}\n\
SM-DP+ address: {{install.smdpAddress}}\nActivation code: {{install.matchingId}}\nAPN: {{install.apn}}\n";
const SUBJECT: &str = "Your eSIM{{#if plan.name}} for {{plan.name}}{{/if}} is ready to install\n";

/// The shipped templates with the test's `esim_ready`, in `dir`.
pub fn templates_in(dir: &Path) -> std::path::PathBuf {
    let t = dir.join("templates");
    copy_dir(Path::new(TEMPLATES), &t);
    std::fs::write(t.join("esim_ready.html.hbs"), HTML).unwrap();
    std::fs::write(t.join("esim_ready.txt.hbs"), TEXT).unwrap();
    std::fs::write(t.join("esim_ready.subject.hbs"), SUBJECT).unwrap();
    t
}

fn smtp_mailer(port: u16) -> Mailer {
    Mailer::new(MailerSettings {
        from: "Example eSIM <noreply@example.com>".into(),
        reply_to: None,
        transport: TransportSettings::Smtp {
            host: "127.0.0.1".into(),
            port,
            tls: Tls::None,
            username: String::new(),
            password: String::new(),
            pool_size: 1,
        },
        send_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

/// What the dispatcher will do for one eSIM: variables, render, inline QR.
fn install_email(templates: &Templates, esim: &Esim) -> OutgoingEmail {
    let mut vars = sample_vars(NoticeClass::Ready, true, &Default::default());
    let install = InstallVars::from(esim);
    vars["install"] = install.vars();
    vars["plan"] = provider::plan_vars(esim.plan.as_ref());
    vars["esim"]["esimTranNo"] = esim.esim_tran_no.clone().into();
    vars["esim"]["iccid"] = esim.iccid.clone().into();
    let r = templates.render("esim_ready", None, &vars).unwrap();
    let inline_images = install.inline_images(&r.html).unwrap();
    OutgoingEmail {
        to_email: "ana@example.com".into(),
        to_name: Some("Ana".into()),
        subject: r.subject,
        text: r.text,
        html: r.html,
        message_id: message_id_for(&format!("{}/ready", esim.name()), "noreply@example.com"),
        template: "esim_ready".into(),
        list_unsubscribe: None,
        inline_images,
    }
}

pub fn ctype(p: &ParsedMail) -> String {
    p.ctype.mimetype.to_ascii_lowercase()
}

/// HTML attribute text back to the URL a mail client follows.
pub fn unescape(s: &str) -> String {
    s.replace("&#x3D;", "=")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The `href`/`src` values of an HTML text, unescaped.
pub fn links(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| unescape(&rest[..end]))
        })
        .collect()
}

/// The text of an HTML part without its tags.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The text of a QR code in a PNG, read from its pixels.
pub fn decode_qr(png_bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    let (w, h) = (frame.width as usize, frame.height as usize);
    let pixels = &buf[..frame.buffer_size()];
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn one_install_email_per_esim_with_the_qr_code_inline_and_one_tap_links() {
    let fake = FakeProvider::start(vec![fake::page(
        vec![
            fake::esim("26042217160001", "8943108170000775671", ORDER, AC_A),
            fake::esim("26042217160002", "8943108170000775672", ORDER, AC_B),
        ],
        1,
        2,
    )])
    .await;
    let provider = Provider::new(ProviderSettings {
        access_code: Secret::new("code"),
        base_url: fake.base_url.clone(),
        requests_per_second: 8,
        timeout: Duration::from_secs(5),
        retries: 0,
        initial_backoff: Duration::from_millis(10),
        page_size: 50,
    })
    .unwrap();
    let esims = provider.query_by_order(ORDER).await.unwrap();
    assert_eq!(esims.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let templates = Templates::load(&templates_in(dir.path()), "en", chrono_tz::UTC).unwrap();
    let problems = templates.check(
        &[("esim_ready".to_string(), NoticeClass::Ready)],
        &Default::default(),
    );
    assert!(problems.is_empty(), "{problems:?}");

    let (port, smtp) = mailin_server();
    let mailer = smtp_mailer(port);
    for esim in &esims {
        mailer.send(&install_email(&templates, esim)).await.unwrap();
    }
    let received = smtp.received();
    assert_eq!(received.len(), 2, "one email per eSIM");

    for (raw, ac) in received.iter().zip([AC_A, AC_B]) {
        let subject = check_install_email(raw, ac);
        assert!(subject.contains("Spain 5GB 30Days"), "{subject}");
    }
}

/// An install email as a mail client reads it: SPEC §7's
/// multipart/alternative [text, related [HTML, inline PNG]] with the PNG
/// referenced by `cid:` from the HTML, both one-tap links carrying `ac`
/// URL-encoded, the manual-entry fields, and a QR code that decodes to `ac`.
/// Returns the parsed subject.
pub fn check_install_email(raw: &str, ac: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    // SPEC §7: the top level stays multipart/alternative [text, HTML].
    assert_eq!(ctype(&mail), "multipart/alternative", "{raw}");
    assert_eq!(mail.subparts.len(), 2);
    let (text, related) = (&mail.subparts[0], &mail.subparts[1]);
    assert_eq!(ctype(text), "text/plain");
    assert_eq!(ctype(related), "multipart/related");
    assert_eq!(related.subparts.len(), 2);
    let (html, image) = (&related.subparts[0], &related.subparts[1]);
    assert_eq!(ctype(html), "text/html");
    assert_eq!(ctype(image), "image/png");

    // The image part: inline, with a Content-ID the HTML refers to.
    let cid = image.headers.get_first_value("Content-ID").unwrap();
    let cid = cid.trim().trim_start_matches('<').trim_end_matches('>');
    let disposition = image.get_content_disposition();
    assert_eq!(disposition.disposition, mailparse::DispositionType::Inline);
    let html_body = html.get_body().unwrap();
    assert!(
        links(&html_body, "src").contains(&format!("cid:{cid}")),
        "{html_body}"
    );

    // The two one-tap links carry the activation code URL-encoded.
    let encoded = ac.replace(':', "%3A").replace('$', "%24");
    let apple = format!("https://esimsetup.apple.com/esim_qrcode_provisioning?carddata={encoded}");
    let android =
        format!("https://esimsetup.android.com/esim_qrcode_provisioning?carddata={encoded}");
    let hrefs = links(&html_body, "href");
    assert!(hrefs.contains(&apple), "{hrefs:?}");
    assert!(hrefs.contains(&android), "{hrefs:?}");
    let text_body = text.get_body().unwrap();
    assert!(
        text_body.contains(&apple) && text_body.contains(&android),
        "{text_body}"
    );

    // Manual entry: the code split into its address and matching ID.
    let (_, rest) = ac.split_once("LPA:1$").unwrap();
    let (address, matching) = rest.split_once('$').unwrap();
    // The HTML's words, without its tags (a value may sit in a <strong>).
    let html_words = strip_tags(&html_body);
    for body in [&html_words, &text_body] {
        assert!(
            body.contains(&format!("SM-DP+ address: {address}")),
            "{body}"
        );
        assert!(
            body.contains(&format!("Activation code: {matching}")),
            "{body}"
        );
        // The APN, wherever the template puts it (the shipped one: a remedy
        // after the manual entry, see wording.rs).
        assert!(body.contains("APN") && body.contains("drei.at"), "{body}");
    }

    // The picture is the activation code.
    let png_bytes = image.get_body_raw().unwrap();
    assert!(png_bytes.starts_with(b"\x89PNG"));
    assert_eq!(decode_qr(&png_bytes), ac);
    mail.headers.get_first_value("Subject").unwrap()
}

#[tokio::test]
async fn an_email_without_images_keeps_its_two_part_shape() {
    let (port, smtp) = mailin_server();
    let mailer = smtp_mailer(port);
    let email = |inline_images: Vec<InlineImage>| OutgoingEmail {
        to_email: "ana@example.com".into(),
        to_name: None,
        subject: "10% of your data left".into(),
        text: "Hello\n".into(),
        html: "<p>Hello</p>".into(),
        message_id: message_id_for("x/data/0.1", "noreply@example.com"),
        template: "data_usage".into(),
        list_unsubscribe: None,
        inline_images,
    };
    mailer.send(&email(Vec::new())).await.unwrap();
    let raw = smtp.received().pop().unwrap();
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    assert_eq!(ctype(&mail), "multipart/alternative");
    let kinds: Vec<_> = mail.subparts.iter().map(ctype).collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    assert!(!raw.to_ascii_lowercase().contains("multipart/related"));

    // A content ID that would break the header or a `cid:` URL is refused.
    let bad = InlineImage::png("no at sign<>", "x.png", vec![1, 2, 3]);
    let err = mailer.send(&email(vec![bad])).await.unwrap_err();
    assert_eq!(err.kind(), "invalid");
}

// --- the built binary ----------------------------------------------------

const ORDER_STATUS: &str = r#"{"notifyType":"ORDER_STATUS","notifyId":"447602ac1e5c4bb4980f786b0c2934d6","eventGenerateTime":"2026-04-22T17:16:34Z","content":{"orderNo":"B26042217160011","orderStatus":"GOT_RESOURCE","transactionId":"7544949834056-1-TR_50_30"}}"#;

/// Runs the binary on a config in `dir`; `access_code` goes in by the
/// environment, as the README advises.
fn run(dir: &Path, templates: &Path, access_code: Option<&str>, args: &[&str]) -> (i32, String) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[email]\ntransport = \"file\"\nfile_dir = \"{}\"\n[templates]\ndir = \"{}\"\n",
            dir.join("data").display(),
            dir.join("mail-out").display(),
            templates.display()
        ),
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.arg("--config").arg(&config).args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ESIM_NOTIFY_") {
            c.env_remove(k);
        }
    }
    if let Some(code) = access_code {
        c.env("ESIM_NOTIFY_PROVIDER__ACCESS_CODE", code);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn render_shows_the_install_email_from_sample_data_with_its_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let templates = templates_in(dir.path());
    let body = dir.path().join("order_status.json");
    std::fs::write(&body, ORDER_STATUS).unwrap();
    let body = body.to_str().unwrap();

    let (code, out) = run(
        dir.path(),
        &templates,
        Some("secret-code-77"),
        &["render", body],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SAMPLE data"), "{out}");
    assert!(out.contains("does not query the provider API"), "{out}");
    assert!(out.contains("Template: esim_ready"), "{out}");
    let cid_line = out
        .lines()
        .find(|l| l.starts_with("----- inline image/png <"))
        .unwrap_or_else(|| panic!("{out}"));
    let cid = &cid_line["----- inline image/png <".len()..cid_line.find('>').unwrap()];
    assert!(out.contains(&format!("src=\"cid:{cid}\"")), "{out}");
    assert!(out.contains("esimsetup.apple.com"), "{out}");
    assert!(!out.contains("secret-code-77"));
    // The code itself, drawn for the terminal.
    assert!(out.contains("████ ▄▄▄▄▄ █"), "{out}");

    // Without the provider API a server sends no install email; render still
    // shows it, and says a server would not send it.
    let (code, out) = run(dir.path(), &templates, None, &["render", body]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Template: esim_ready"), "{out}");
    assert!(out.contains("provider.access_code is empty"), "{out}");
    assert!(out.contains("SAMPLE data"), "{out}");
}

#[test]
fn check_warns_when_templates_use_plan_or_install_without_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let templates = templates_in(dir.path());

    let (code, out) = run(dir.path(), &templates, None, &["check"]);
    assert_eq!(code, 0, "warnings are not problems: {out}");
    let plan = out
        .lines()
        .find(|l| l.contains("`plan` is always null"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        plan.starts_with("warning: provider.access_code is empty"),
        "{plan}"
    );
    assert!(plan.contains("data_usage"), "{plan}");
    assert!(
        !plan.contains("esim_ready"),
        "esim_ready is not sent at all: {plan}"
    );
    let install = out
        .lines()
        .find(|l| l.contains("`install`"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        install.contains("esim_ready") && install.contains("never sent"),
        "{install}"
    );

    // With the access code, the install template is checked and renders.
    let (code, out) = run(dir.path(), &templates, Some("secret-code-77"), &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("`plan` is always null"), "{out}");
    assert!(!out.contains("`install`"), "{out}");

    // A misspelt install variable is a problem with file and line.
    std::fs::write(
        templates.join("esim_ready.txt.hbs"),
        "Tap: {{install.appleUrl}}\nScan: {{install.qrImag}}\n",
    )
    .unwrap();
    let (code, out) = run(dir.path(), &templates, Some("secret-code-77"), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("esim_ready.txt.hbs:2"), "{out}");
    assert!(out.contains("install.qrImag"), "{out}");
}
