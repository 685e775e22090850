//! Issue 22, the reseller's brand from config (SPEC §3 `[brand]`) and the shared layout, over SMTP:
//! the top-up link names the customer's eSIM, the logo replaces the name,
//! the accent colours buttons and links, and a bad accent is refused.

use serde_json::json;

use crate::helpers::{load_config, spawn_app, test_config_toml};
use crate::locales::{bind, nth_mail, post, visible};
use esim_notify::config::Config;

const GIB: u64 = 1024 * 1024 * 1024;

/// A DATA_USAGE body whose identifiers need URL-encoding in a link.
fn data_usage_with(notify_id: &str, tran: &str, iccid: &str, transaction_id: &str) -> String {
    json!({
        "notifyType": "DATA_USAGE", "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:21:59Z",
        "content": {
            "iccid": iccid, "orderNo": format!("B{tran}"), "esimTranNo": tran,
            "transactionId": transaction_id,
            "totalVolume": 5 * GIB, "orderUsage": 4 * GIB, "remain": GIB / 2,
            "lastUpdateTime": "2026-04-22T15:53:03Z"
        }
    })
    .to_string()
}

#[tokio::test]
async fn the_topup_link_of_a_data_email_names_that_esim_url_encoded() {
    let app = spawn_app(
        "[brand]\ntopup_url = \"https://shop.example/topup?iccid={iccid}&order={orderNo}&ref={transactionId}\"\n",
    )
    .await;
    let tran = "26060100000001";
    bind(&app, tran, None, "UTC").await;
    post(
        &app,
        data_usage_with("t-1", tran, "8943108170001029631", "order 42/ä&x"),
    )
    .await;
    let mail = nth_mail(&app, 1).await;
    let link = "https://shop.example/topup?iccid=8943108170001029631&order=B26060100000001&ref=order%2042%2F%C3%A4%26x";
    assert!(mail.text.contains(link), "{}", mail.text);
    // In the HTML the link is attribute-escaped (`&amp;`, `&#x3D;`): read as a browser does.
    let html = mail.html.replace("&#x3D;", "=").replace("&amp;", "&");
    assert!(html.contains(&format!("href=\"{link}\"")), "{}", mail.html);
    assert!(!mail.raw.contains("{iccid}"));
}

#[tokio::test]
async fn the_logo_replaces_the_name_with_it_as_alt_text_and_the_accent_colours_the_button() {
    let app = spawn_app(
        "[brand]\nname = \"Acme & Co\"\nlogo_url = \"https://cdn.example/logo.png\"\naccent_color = \"#FFD400\"\n",
    )
    .await;
    let tran = "26060100000002";
    bind(&app, tran, None, "UTC").await;
    post(
        &app,
        data_usage_with("t-2", tran, "8943108170001029632", "tx"),
    )
    .await;
    let mail = nth_mail(&app, 1).await;
    let h = &mail.html;
    assert!(
        h.contains("<img src=\"https://cdn.example/logo.png\" alt=\"Acme &amp; Co\" height=\"40\""),
        "{h}"
    );
    // A yellow accent: the button is yellow with dark text, in light mode.
    assert!(h.contains("bgcolor=\"#ffd400\""), "{h}");
    assert!(
        h.contains("color:#111827;text-decoration:none;border-radius:6px;\">Top up now"),
        "{h}"
    );
    assert!(h.contains("a { color: #ffd400; }"), "{h}");
    assert!(
        !h.contains("#0b57d0"),
        "no default accent left in the data email"
    );
    // Dark mode: the yellow reads on the dark card as is, with dark text on the button.
    assert!(
        h.contains(".btn { background-color: #ffd400 !important; }"),
        "{h}"
    );
    assert!(h.contains(".btn a { color: #111827 !important; }"), "{h}");
    // Without a logo, the name.
    let plain = spawn_app("").await;
    bind(&plain, tran, None, "UTC").await;
    post(
        &plain,
        data_usage_with("t-3", tran, "8943108170001029632", "tx"),
    )
    .await;
    let mail = nth_mail(&plain, 1).await;
    assert!(!mail.html.contains("<img src=\"https"), "{}", mail.html);
    assert!(visible(&mail.html).contains("Example eSIM"));
    assert!(mail.html.contains("bgcolor=\"#0b57d0\""));
}

#[test]
fn a_bad_accent_colour_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["blue", "#0b57d", "0b57d0", ""] {
        let text = test_config_toml(
            dir.path(),
            2525,
            &format!("[brand]\naccent_color = \"{bad}\"\n"),
        );
        let err = Config::from_sources(&text, std::iter::empty())
            .err()
            .unwrap_or_else(|| panic!("`{bad}` accepted"))
            .to_string();
        assert!(err.contains("brand.accent_color"), "{bad}: {err}");
    }
    let ok = test_config_toml(dir.path(), 2525, "[brand]\naccent_color = \"#7A0019\"\n");
    assert!(load_config(&ok)
        .warnings()
        .iter()
        .all(|w| !w.contains("brand.")));
}

#[test]
fn check_warns_of_an_http_logo_and_an_accent_too_pale_on_white() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_toml(
        dir.path(),
        2525,
        "[brand]\nlogo_url = \"http://cdn.example/logo.png\"\naccent_color = \"#ffd400\"\n",
    );
    let w = load_config(&text).warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("brand.logo_url") && w.contains("https")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("brand.accent_color") && w.contains(":1 on white")),
        "{w:?}"
    );
}

/// Mail apps fill the inbox preview with the body's first 100-odd characters:
/// after the preheader comes invisible padding, so the preview is not followed
/// by "Example eSIM … Hi Jane Doe,".
#[tokio::test]
async fn the_preheader_is_padded_so_the_preview_stops_there() {
    let app = spawn_app("").await;
    let tran = "26060100000004";
    bind(&app, tran, None, "UTC").await;
    post(
        &app,
        data_usage_with("t-4", tran, "8943108170001029634", "tx"),
    )
    .await;
    let mail = nth_mail(&app, 1).await;
    let body = mail.html.split("<body").nth(1).expect("a body");
    let before_header = body.split("<table").next().unwrap();
    assert!(
        before_header.contains("512 MB of 5 GB left."),
        "the preheader first: {before_header}"
    );
    let pad = "&#847;&zwnj;&nbsp;";
    assert!(
        before_header.matches(pad).count() >= 80,
        "padding after the preheader: {before_header}"
    );
}

/// SPEC §7 with CLDR's parent locales: an `es-MX` customer gets the `es-419`
/// version of an email when the folder has it, the `es` one otherwise; a customer
/// from Spain never gets `es-419`.
#[tokio::test]
async fn an_es_mx_customer_gets_the_es_419_email_when_it_exists_and_es_otherwise() {
    let tpl = tempfile::tempdir().unwrap();
    crate::helpers::copy_dir(std::path::Path::new(crate::helpers::TEMPLATES), tpl.path());
    let lat = tpl.path().join("es-419");
    let _ = std::fs::remove_dir_all(&lat);
    std::fs::create_dir_all(&lat).unwrap();
    let es = tpl.path().join("es");
    for part in ["subject", "txt", "html"] {
        let body = std::fs::read_to_string(es.join(format!("esim_activated.{part}.hbs"))).unwrap();
        let body = match part {
            "subject" => "Tu eSIM ya está activa (Latinoamérica)\n".to_owned(),
            "txt" => format!("Configuración > Celular\n{body}"),
            _ => body.replace(
                "{{#> layout}}",
                "{{#> layout}}<p>Configuración &gt; Celular</p>",
            ),
        };
        std::fs::write(lat.join(format!("esim_activated.{part}.hbs")), body).unwrap();
    }
    let app = spawn_app(&format!(
        "[templates]\ndir = \"{}\"\n",
        tpl.path().display()
    ))
    .await;
    let (mx, spain) = ("26060300000001", "26060300000002");
    bind(&app, mx, Some("es-MX"), "America/Mexico_City").await;
    bind(&app, spain, Some("es-ES"), "Europe/Madrid").await;
    post(
        &app,
        crate::helpers::esim_status("l-1", mx, "89l1", "IN_USE"),
    )
    .await;
    let activated = nth_mail(&app, 1).await;
    assert_eq!(activated.subject, "Tu eSIM ya está activa (Latinoamérica)");
    assert!(
        activated.text.starts_with("Configuración > Celular"),
        "{}",
        activated.text
    );
    assert!(activated.html.contains("<html lang=\"es-MX\">"));
    // Not in es-419: the es email, in Spanish, with Mexican numbers.
    post(
        &app,
        crate::helpers::esim_status("l-2", mx, "89l1", "USED_EXPIRED"),
    )
    .await;
    let expired = nth_mail(&app, 2).await;
    let es_subject = std::fs::read_to_string(es.join("esim_expired.subject.hbs")).unwrap();
    assert_eq!(expired.subject, es_subject.trim());
    assert!(expired.html.contains("<html lang=\"es-MX\">"));
    // Spain: the es files.
    post(
        &app,
        crate::helpers::esim_status("l-3", spain, "89l2", "IN_USE"),
    )
    .await;
    let spain_mail = nth_mail(&app, 3).await;
    assert_eq!(spain_mail.subject, "Tu eSIM ya está activa");
    assert!(!spain_mail.text.contains("Celular"));
}
