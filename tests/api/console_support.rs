//! Support from the console over HTTP (issue 21): the eSIM page's bind or
//! correct form, its suppression box and resend buttons, the suppression
//! list with its search and lift step, the timeline in sentences, and the
//! preview's unsubscribe link. Each state change is sent as the console's
//! JavaScript sends it (HTTP Basic, the console's header) and checked
//! through the admin API; without the header a browser's request is
//! refused and changes nothing. The same actions in Chromium are in
//! `console_browser.rs`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::console::{page, TOKEN};
use crate::helpers::*;

const CONSOLE: (&str, &str) = ("X-Esim-Notify-Console", "1");
const GB: u64 = 1024 * 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(20);

async fn app() -> TestApp {
    spawn_app(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await
}

/// A request as the console's browser sends it: HTTP Basic, with or without
/// the console's header.
async fn browser(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    guarded: bool,
) -> (u16, Value) {
    let mut r = app
        .http
        .request(method, app.admin_url(path))
        .basic_auth("operator", Some(TOKEN));
    if guarded {
        r = r.header(CONSOLE.0, CONSOLE.1);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn api(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(app.admin_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn to(raw: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), "To").unwrap_or_default()
}

/// A customer bound to `tran` and its 10 % email sent.
async fn sent_once(app: &TestApp, email: &str, tran: &str, iccid: &str) {
    let (s, _) = browser(
        app,
        Method::PUT,
        "/admin/customers",
        Some(json!({"email": email, "name": "Ana", "esimTranNo": tran})),
        true,
    )
    .await;
    assert_eq!(s, 200);
    let before = app.received().len();
    let (s, _) = app
        .post(&data_usage(
            &format!("{tran}-10"),
            tran,
            iccid,
            5 * GB,
            GB / 2,
        ))
        .await;
    assert_eq!(s, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == before + 1 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_actions_are_refused_without_the_consoles_header() {
    let app = app().await;
    sent_once(&app, "ana@example.com", "SG1", "8900000000000002001").await;
    let put = browser(
        &app,
        Method::PUT,
        "/admin/suppressions/ana@example.com",
        None,
        true,
    )
    .await;
    assert_eq!(put.0, 200);

    let forged = [
        (
            Method::PUT,
            "/admin/customers",
            Some(json!({"email": "mallory@example.com", "esimTranNo": "SG1"})),
        ),
        (
            Method::POST,
            "/admin/esims/SG1/resend",
            Some(json!({"template": "data_usage"})),
        ),
        (Method::DELETE, "/admin/suppressions/ana@example.com", None),
    ];
    for (method, path, body) in forged {
        let (s, v) = browser(&app, method.clone(), path, body, false).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("X-Esim-Notify-Console"));
    }
    // Nothing changed: the same binding, still suppressed, nothing queued.
    let (_, r) = api(&app, "/admin/customers?esimTranNo=SG1").await;
    assert_eq!(r["email"], "ana@example.com");
    let (s, _) = api(&app, "/admin/suppressions/ana@example.com").await;
    assert_eq!(s, 200);
    let (_, outbox) = api(&app, "/admin/outbox").await;
    assert_eq!(outbox, json!([]));
    // A cross-site Origin is refused even with the header.
    let r = app
        .http
        .delete(app.admin_url("/admin/suppressions/ana@example.com"))
        .basic_auth("operator", Some(TOKEN))
        .header(CONSOLE.0, CONSOLE.1)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The pages carry no inline script.
    let r = app
        .http
        .get(app.admin_url("/admin/suppression-list"))
        .basic_auth("operator", Some(TOKEN))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correcting_the_customer_from_the_esim_page_moves_what_is_queued() {
    let app = app().await;
    sent_once(&app, "old@example.com", "SB1", "8900000000000002002").await;
    let (s, html) = page(&app, "/admin/esims?q=SB1").await;
    assert_eq!(s, 200);
    // The form binds by esimTranNo and says what it replaces.
    assert!(html.contains("id=\"bind-form\""), "{html}");
    assert!(html.contains("name=\"esimTranNo\" value=\"SB1\""));
    assert!(html.contains("replacing <strong>old@example.com</strong>"));
    assert!(html.contains("id=\"suppressed\"") && html.contains("Not suppressed"));
    assert!(
        html.contains("data-template=\"data_usage\""),
        "a resend button"
    );

    // Paused: the next notice waits in the outbox for the old address.
    let (s, _) = browser(&app, Method::POST, "/admin/pause", None, true).await;
    assert_eq!(s, 200);
    app.post(&esim_status(
        "sb-act",
        "SB1",
        "8900000000000002002",
        "IN_USE",
    ))
    .await;
    let (_, outbox) = api(&app, "/admin/outbox").await;
    assert_eq!(outbox[0]["recipient"], "old@example.com", "{outbox}");

    // The form's submission, as console.js sends it.
    let (s, answer) = browser(
        &app,
        Method::PUT,
        "/admin/customers",
        Some(json!({"esimTranNo": "SB1", "email": "new@example.com", "name": "Ana B", "locale": "es", "timezone": "Europe/Madrid"})),
        true,
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(
        answer["replaced"],
        json!([{"identifier": "esimTranNo", "value": "SB1", "email": "o***@example.com"}])
    );
    let (_, r) = api(&app, "/admin/customers?esimTranNo=SB1").await;
    assert_eq!(
        r,
        json!({"email": "new@example.com", "name": "Ana B", "locale": "es", "timezone": "Europe/Madrid"})
    );
    let (_, outbox) = api(&app, "/admin/outbox").await;
    assert_eq!(
        outbox[0]["recipient"], "new@example.com",
        "the queued notice followed"
    );
    let (_, html) = page(&app, "/admin/esims?q=SB1").await;
    assert!(html.contains("replacing <strong>new@example.com</strong>"));
    assert!(
        html.contains("o***@example.com to n***@example.com"),
        "the log says so"
    );

    // Resumed: the activation email goes to the corrected address, in Spanish.
    browser(&app, Method::POST, "/admin/resume", None, true).await;
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    assert_eq!(to(&app.received()[1]), "\"Ana B\" <new@example.com>");

    // A resend button's call: the data email again, to the new address.
    let (s, v) = browser(
        &app,
        Method::POST,
        "/admin/esims/SB1/resend",
        Some(json!({"template": "data_usage"})),
        true,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert!(eventually(LIMIT, || async { app.received().len() == 3 }).await);
    assert_eq!(to(&app.received()[2]), "\"Ana B\" <new@example.com>");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suppression_list_searches_warns_and_lifts() {
    let app = app().await;
    sent_once(&app, "bounce@example.com", "SS1", "8900000000000002003").await;
    for (email, reason) in [
        ("bounce@example.com", "bounced"),
        ("spam@example.org", "complained"),
        ("bye@example.com", "unsubscribed"),
    ] {
        let (s, _) = browser(
            &app,
            Method::PUT,
            &format!("/admin/suppressions/{email}"),
            Some(json!({ "reason": reason })),
            true,
        )
        .await;
        assert_eq!(s, 200);
    }
    let (s, html) = page(&app, "/admin/suppression-list").await;
    assert_eq!(s, 200);
    for email in ["bounce@example.com", "spam@example.org", "bye@example.com"] {
        assert!(html.contains(&format!("data-email=\"{email}\"")), "{email}");
    }
    assert!(html.contains("stops the reminders; service emails still go (esim_ready"));
    assert!(html.contains("stops every email"));
    let (_, found) = page(&app, "/admin/suppression-list?q=example.org").await;
    assert!(
        found.contains("spam@example.org") && !found.contains("data-email=\"bye@example.com\"")
    );
    let (_, found) = page(&app, "/admin/suppression-list?q=unsubscribed").await;
    assert!(
        found.contains("data-email=\"bye@example.com\"")
            && !found.contains("data-email=\"spam@example.org\"")
    );

    // The eSIM page says its recipient is suppressed and why; no resend.
    let (_, html) = page(&app, "/admin/esims?q=SS1").await;
    assert!(
        html.contains("Suppressed: <strong>bounced</strong>"),
        "{html}"
    );
    assert!(
        html.contains("disabled title="),
        "the resend buttons are off"
    );

    // The lift step of a bounced address warns about the account.
    let (s, html) = page(
        &app,
        "/admin/suppression-list/lift?email=bounce%40example.com",
    )
    .await;
    assert_eq!(s, 200);
    assert!(html.contains("may suspend or close the account"), "{html}");
    assert!(html.contains("data-url=\"/admin/suppressions/bounce%40example.com\""));
    let (_, html) = page(
        &app,
        "/admin/suppression-list/lift?email=spam%40example.org",
    )
    .await;
    assert!(html.contains("marked an email as spam") && html.contains("close"));
    let (_, html) = page(&app, "/admin/suppression-list/lift?email=bye%40example.com").await;
    assert!(!html.contains("close the account") && html.contains("unsubscribed"));
    let (s, _) = page(
        &app,
        "/admin/suppression-list/lift?email=nobody%40example.com",
    )
    .await;
    assert_eq!(s, 404);

    // The lift button's call, as console.js sends it (the URL it names).
    let (s, _) = browser(
        &app,
        Method::DELETE,
        "/admin/suppressions/bounce%40example.com",
        None,
        true,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = api(&app, "/admin/suppressions/bounce@example.com").await;
    assert_eq!(s, 404);
    let (_, html) = page(&app, "/admin/suppression-list").await;
    assert!(!html.contains("data-email=\"bounce@example.com\""));
    // And the next email reaches the address again.
    let before = app.received().len();
    app.post(&esim_status(
        "ss-act",
        "SS1",
        "8900000000000002003",
        "IN_USE",
    ))
    .await;
    assert!(eventually(LIMIT, || async { app.received().len() == before + 1 }).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_reads_as_sentences() {
    let app = app().await;
    sent_once(&app, "ana.t@example.com", "ST1", "8900000000000002004").await;
    let (_, html) = page(&app, "/admin/esims?q=ST1").await;
    assert!(
        html.contains("10 % of data left, to a***@example.com"),
        "{html}"
    );
    assert!(
        html.contains("data usage, 512 MB of 5 GB left (10 %)"),
        "{html}"
    );
    // The engine's keys are only in the tooltips (the raw line).
    let visible: String = html
        .split("<span class=\"tl-detail\"")
        .skip(1)
        .map(|s| s.split_once('>').map_or("", |(_, rest)| rest))
        .map(|s| s.split("</span>").next().unwrap_or(""))
        .collect();
    assert!(!visible.is_empty());
    assert!(
        !visible.contains("cycle-0") && !visible.contains("/data/"),
        "{visible}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_shows_an_unsubscribe_link_only_when_list_unsubscribe_is_set() {
    let render = |app: &TestApp, template: &str| {
        let (http, url) = (app.http.clone(), app.admin_url("/admin/preview/render"));
        let body = json!({ "template": template });
        async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            format!("{}{}", v["html"], v["text"])
        }
    };
    let off = app().await;
    assert!(!render(&off, "data_usage").await.contains("Unsubscribe"));
    off.stop().await;
    let on = spawn_app(&format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[email]\nlist_unsubscribe = \"mailto:unsub@example.com\"\n"
    ))
    .await;
    assert!(render(&on, "data_usage").await.contains("Unsubscribe"));
    // A service email never offers it (the sender leaves it out too).
    assert!(!render(&on, "esim_ready").await.contains("Unsubscribe"));
    on.stop().await;
}
