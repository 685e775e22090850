//! The operator console over HTTP (issue 13): the render and reload
//! endpoints, "send me this one", the eSIM and queue pages, the token on
//! every page, the Content-Security-Policy, and the cross-site forgery rule.
//! What a real browser does with the pages is in `console_browser.rs`.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

pub const TOKEN: &str = "adm1n";
const CONSOLE: (&str, &str) = ("X-Esim-Notify-Console", "1");

/// An app whose templates are a copy of the shipped ones, to edit on disk.
async fn app_with_template_copy(extra: &str) -> (TestApp, tempfile::TempDir) {
    let templates = tempfile::tempdir().unwrap();
    copy_dir(Path::new(TEMPLATES), templates.path());
    let app = spawn_app(&format!(
        "[templates]\ndir = \"{}\"\n{extra}",
        templates.path().display()
    ))
    .await;
    (app, templates)
}

/// `POST /admin/preview/render` as a script calls it (no token configured).
async fn render(app: &TestApp, body: Value) -> (u16, Value) {
    let url = app.admin_url("/admin/preview/render");
    app.send_json(reqwest::Method::POST, &url, body).await
}

/// A console page as a browser gets it (HTTP Basic with [`TOKEN`]).
pub async fn page(app: &TestApp, path: &str) -> (u16, String) {
    let r = app
        .http
        .get(app.admin_url(path))
        .basic_auth("operator", Some(TOKEN))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_endpoint_renders_the_sample_and_edited_variables() {
    let app = spawn_app("").await;
    let (s, en) = render(&app, json!({"template": "data_usage"})).await;
    assert_eq!(s, 200, "{en}");
    assert!(
        en["subject"].as_str().unwrap().contains("10%"),
        "the data subject states the threshold: {en}"
    );
    assert!(en["text"].as_str().unwrap().contains("Jane Doe"), "{en}");
    assert!(en["html"].as_str().unwrap().contains("<"), "{en}");
    assert_eq!(en["problems"], json!([]));
    assert_eq!(en["sender"], "same", "nothing was edited: {en}");

    // Another locale, another subject.
    let (s, es) = render(&app, json!({"template": "data_usage", "locale": "es"})).await;
    assert_eq!(s, 200);
    assert_ne!(es["subject"], en["subject"], "{es}");

    // Edited variables are rendered as given.
    let mut vars = esim_notify::render::sample_vars(
        esim_notify::render::NoticeClass::Data,
        true,
        &Default::default(),
    );
    vars["usage"]["threshold"] = json!(0.2);
    vars["usage"]["thresholdPercent"] = json!(20);
    vars["customer"]["name"] = json!("Zoë Operator");
    let (s, edited) = render(
        &app,
        json!({"template": "data_usage", "timezone": "Asia/Tokyo", "vars": vars}),
    )
    .await;
    assert_eq!(s, 200, "{edited}");
    assert!(
        edited["subject"].as_str().unwrap().contains("20%"),
        "{edited}"
    );
    assert!(edited["text"].as_str().unwrap().contains("Zoë Operator"));

    // Some variables: laid over the sample, which gives the rest.
    let (s, some) = render(
        &app,
        json!({"template": "data_usage", "vars": {"customer": {"name": "Ana Partial"}}}),
    )
    .await;
    assert_eq!(s, 200, "{some}");
    assert!(some["problems"].as_array().unwrap().is_empty(), "{some}");
    assert!(
        some["text"].as_str().unwrap().contains("Ana Partial"),
        "{some}"
    );
    assert!(some["subject"].as_str().unwrap().contains('%'), "{some}");

    // A group a template needs taken away: a problem with its file and line.
    let (s, partial) = render(
        &app,
        json!({"template": "data_usage", "vars": {"usage": null}}),
    )
    .await;
    assert_eq!(s, 200, "{partial}");
    assert_eq!(partial["subject"], Value::Null);
    let p = &partial["problems"][0];
    assert!(p["file"].as_str().unwrap().ends_with(".hbs"), "{partial}");
    assert!(p["line"].as_u64().is_some(), "{partial}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_endpoint_refuses_what_cannot_be_rendered_with_a_reason() {
    let app = spawn_app("").await;
    for (body, want) in [
        (json!({"template": "no_such_template"}), 404),
        (
            json!({"template": "data_usage", "timezone": "Mars/Olympus"}),
            400,
        ),
        (json!({"template": "data_usage", "vars": [1, 2]}), 400),
        (json!({"locale": "es"}), 400),
    ] {
        let (s, v) = render(&app, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
        assert!(v["error"].is_string(), "{body}: {v}");
    }
    let r = app
        .http
        .post(app.admin_url("/admin/preview/render"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_broken_on_disk_shows_its_file_line_and_column() {
    let (app, templates) = app_with_template_copy("").await;
    let subject = templates.path().join("data_usage.subject.hbs");
    let original = std::fs::read_to_string(&subject).unwrap();

    // An unclosed block: the folder no longer loads.
    std::fs::write(&subject, "Only {{#if usage.thresholdPercent}}% left").unwrap();
    let (s, v) = render(&app, json!({"template": "data_usage"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["subject"], Value::Null);
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["file"]
                .as_str()
                .unwrap()
                .ends_with("data_usage.subject.hbs")
        })
        .unwrap_or_else(|| panic!("no problem names the broken file: {v}"));
    assert_eq!(p["line"], 1, "{v}");
    assert!(p["column"].as_u64().is_some(), "{v}");
    assert_eq!(v["sender"], "differs", "{v}");
    assert!(
        v["sender_subject"].as_str().unwrap().contains("10%"),
        "the sender keeps the loaded template: {v}"
    );
    let (_, html) = page(&app, "/admin/preview?template=data_usage").await;
    assert!(html.contains("data_usage.subject.hbs"), "{html}");
    assert!(html.contains("line 1"), "{html}");

    // An unknown variable in a branch the sample does not take: check finds it.
    std::fs::write(&subject, "{{#if usage.remian}}x{{/if}}Low data\n").unwrap();
    let (_, v) = render(&app, json!({"template": "data_usage"})).await;
    assert!(
        v["problems"].as_array().unwrap().iter().any(|p| {
            p["file"]
                .as_str()
                .unwrap()
                .ends_with("data_usage.subject.hbs")
                && p["line"] == 1
                && p["message"].as_str().unwrap().contains("remian")
        }),
        "{v}"
    );

    // A good edit shows before any reload; the sender still has the old one
    // (reloading is tested in operations.rs: the reload metric is
    // process-wide, so only that test reloads).
    std::fs::write(
        &subject,
        original.replace(" or less of your data left", " left, or less"),
    )
    .unwrap();
    let (_, v) = render(&app, json!({"template": "data_usage"})).await;
    assert_eq!(v["subject"], "10% left, or less", "{v}");
    assert_eq!(v["sender"], "differs", "{v}");
    assert!(v["sender_subject"]
        .as_str()
        .unwrap()
        .starts_with("10% or less"));
    app.stop().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_page_lists_every_template_and_locale_with_its_subject() {
    let app = spawn_app(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let (s, html) = page(&app, "/admin/preview").await;
    assert_eq!(s, 200);
    for name in [
        "data_usage",
        "validity_usage",
        "esim_activated",
        "esim_used_up",
        "esim_expired",
        "esim_cancelled",
        "esim_revoked",
        "esim_expired_unused",
        // Listed and rendered even without the provider API (no access code here).
        "esim_ready",
    ] {
        assert!(
            html.contains(&format!("data-template=\"{name}\" data-locale=\"es\"")),
            "{name} in es is listed"
        );
    }
    let r = app
        .http
        .post(app.admin_url("/admin/preview/render"))
        .bearer_auth(TOKEN)
        .json(&json!({"template": "esim_ready", "locale": "de"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ready: Value = r.json().await.unwrap();
    assert!(ready["problems"].as_array().unwrap().is_empty(), "{ready}");
    assert!(
        ready["html"]
            .as_str()
            .unwrap()
            .contains("esimsetup.apple.com"),
        "{ready}"
    );
    assert!(html.contains("10% or less of your data left"));
    assert!(!html.contains("cannot render"), "{html}");
    // The frame is its own document, from this listener.
    let frame = html
        .split("src=\"/admin/preview/frame?")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the HTML part's frame");
    let r = app
        .http
        .get(app.admin_url(&format!(
            "/admin/preview/frame?{}",
            frame.replace("&#x3D;", "=").replace("&amp;", "&")
        )))
        .basic_auth("operator", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("sandbox"), "{csp}");
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    assert!(r.text().await.unwrap().contains("<table"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_needs_the_token_and_carries_a_strict_csp() {
    let app = spawn_app(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    // One challenge per header: Chromium reads only the first challenge of
    // a header, so "Basic …, Bearer" in one line would ask for nothing.
    let r = app.http.get(app.admin_url("/admin/")).send().await.unwrap();
    let challenges: Vec<&str> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(challenges[0].starts_with("Basic realm="), "{challenges:?}");
    assert!(
        challenges
            .iter()
            .all(|c| !c.contains("Bearer") || c.starts_with("Bearer")),
        "{challenges:?}"
    );
    for path in [
        "/admin/",
        "/admin",
        "/admin/preview",
        "/admin/esims",
        "/admin/esims?q=nothing",
        "/admin/queue",
        "/admin/assets/console.js",
        "/admin/assets/preview.js",
        "/admin/assets/console.css",
        "/admin/preview/frame?template=data_usage",
    ] {
        let r = app.http.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without the token");
        let r = app
            .http
            .get(app.admin_url(path))
            .basic_auth("operator", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong token");
    }
    for path in ["/admin/", "/admin/preview", "/admin/esims", "/admin/queue"] {
        let r = app
            .http
            .get(app.admin_url(path))
            .basic_auth("operator", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>"), "{path}: no inline script");
        assert!(!body.contains(" style=\""), "{path}: no inline style");
    }
    let r = app
        .http
        .get(app.admin_url("/admin/assets/console.js"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(r.text().await.unwrap().contains("X-Esim-Notify-Console"));
    app.stop().await;
}

/// A request as a browser sends it: the operator's Basic credentials.
fn basic(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http
        .request(method, app.admin_url(path))
        .basic_auth("operator", Some(TOKEN))
}

async fn paused(app: &TestApp) -> bool {
    let (_, v) = app.get_json(&app.admin_url("/readyz")).await;
    v["paused"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_requests_that_change_state_need_the_console_header() {
    let app = spawn_app(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let own = format!("http://{}", app.admin);

    // A cross-site form: Basic credentials (the browser adds them), a form
    // body, the browser's markers, no header. Refused, nothing changes.
    let r = basic(&app, Method::POST, "/admin/pause")
        .header("Origin", "http://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("cross-site"), "{v}");
    assert!(!paused(&app).await);

    // Basic without the header: refused, even from this origin.
    for req in [
        basic(&app, Method::POST, "/admin/pause"),
        basic(&app, Method::POST, "/admin/pause").header("Origin", own.as_str()),
        basic(&app, Method::DELETE, "/admin/outbox/1"),
        basic(&app, Method::POST, "/admin/reload"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("X-Esim-Notify-Console"),
            "{v}"
        );
    }
    assert!(!paused(&app).await);

    // With the header (the console's own fetch): accepted.
    let r = basic(&app, Method::POST, "/admin/pause")
        .header(CONSOLE.0, CONSOLE.1)
        .header("Origin", own.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(paused(&app).await);

    // A foreign Origin is refused whatever it carries.
    let r = app
        .http
        .post(app.admin_url("/admin/resume"))
        .bearer_auth(TOKEN)
        .header(CONSOLE.0, CONSOLE.1)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(paused(&app).await);

    // A script with the Bearer token needs no header (SPEC's API unchanged).
    let r = app
        .http
        .post(app.admin_url("/admin/resume"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!paused(&app).await);

    // Without the token it is still 401 first.
    let r = app
        .http
        .post(app.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_scripts_still_work_and_browsers_still_need_the_header() {
    let app = spawn_app("").await;
    let post = |path: &str| app.http.post(app.admin_url(path));
    assert_eq!(post("/admin/pause").send().await.unwrap().status(), 200);
    assert_eq!(post("/admin/resume").send().await.unwrap().status(), 200);
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
        ("Cookie", "session=1"),
    ] {
        let r = post("/admin/pause")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
    }
    assert!(!paused(&app).await);
    app.stop().await;
}

const GB: u64 = 1024 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_esim_page_finds_an_esim_by_any_identifier_or_address_and_shows_its_timeline() {
    let app = spawn_app(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    // 50 % while no customer is bound: parked. 10 %: parked too. Binding
    // releases the 10 % and supersedes the 50 %; the 10 % is sent.
    for (id, remain) in [("c-50", 5 * GB / 2), ("c-10", GB / 2)] {
        let (s, _) = app
            .post(&data_usage(
                id,
                "CT1",
                "8900000000000000771",
                5 * GB,
                remain,
            ))
            .await;
        assert_eq!(s, 200);
    }
    let r = app
        .http
        .put(app.admin_url("/admin/customers"))
        .bearer_auth(TOKEN)
        .json(&json!({"email": "Ana.Console@example.com", "name": "Ana", "iccid": "8900000000000000771"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await
    );
    let mail = app.received().remove(0);
    let message_id = mail
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID")
        .trim()
        .to_string();

    // The sent decision carries the Message-ID (also in the JSON API).
    let r = app
        .http
        .get(app.admin_url("/admin/esims/CT1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["what"] == "sent" && d["detail"].as_str().unwrap().contains(&message_id)),
        "{v}"
    );

    for q in [
        "CT1",
        "8900000000000000771",
        "BCT1",
        "tx-CT1",
        "ana.console@EXAMPLE.com",
    ] {
        let (s, html) = page(&app, &format!("/admin/esims?q={q}")).await;
        assert_eq!(s, 200, "{q}");
        assert!(
            html.contains("ana.console@example.com") || html.contains("Ana.Console@example.com"),
            "{q}: the customer's own page shows the address"
        );
        let order: Vec<usize> = [
            "data-kind=\"event\"",
            "data-kind=\"parked\"",
            "data-kind=\"released\"",
            "data-kind=\"sent\"",
        ]
        .iter()
        .map(|k| html.find(k).unwrap_or_else(|| panic!("{q}: {k} missing")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{q}: {order:?}");
        assert!(html.contains("data-kind=\"superseded\""), "{q}");
        assert!(
            html.contains(&message_id.replace('<', "&lt;").replace('>', "&gt;")),
            "{q}"
        );
    }
    let (s, html) = page(&app, "/admin/esims?q=nobody-knows-this").await;
    assert_eq!(s, 404);
    assert!(html.contains("no eSIM known as nobody-knows-this"));
    let (s, _) = page(&app, "/admin/esims?q=nobody@example.com").await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_page_masks_addresses_and_offers_cancel_and_retry() {
    let (port, smtp) = smtp::mailin_server();
    let app = spawn_app_with_smtp(&format!("[admin]\ntoken = \"{TOKEN}\"\n"), port, smtp).await;
    // One dead letter (user unknown), one queued notice (paused), one parked.
    app.smtp
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    for (email, tran) in [
        ("dead.one@example.com", "QD1"),
        ("queued.one@example.com", "QQ1"),
    ] {
        let r = app
            .http
            .put(app.admin_url("/admin/customers"))
            .bearer_auth(TOKEN)
            .json(&json!({"email": email, "esimTranNo": tran}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    app.post(&data_usage(
        "q-1",
        "QD1",
        "8900000000000000781",
        5 * GB,
        GB / 2,
    ))
    .await;
    let dead = eventually(Duration::from_secs(20), || async {
        let r = app
            .http
            .get(app.admin_url("/admin/dead"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(dead);
    let r = app
        .http
        .post(app.admin_url("/admin/pause"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    app.post(&data_usage(
        "q-2",
        "QQ1",
        "8900000000000000782",
        5 * GB,
        GB / 2,
    ))
    .await;
    app.post(&data_usage(
        "q-3",
        "QP1",
        "8900000000000000783",
        5 * GB,
        GB / 2,
    ))
    .await;

    let (s, html) = page(&app, "/admin/queue").await;
    assert_eq!(s, 200);
    for address in ["dead.one@example.com", "queued.one@example.com"] {
        assert!(!html.contains(address), "{address} must be masked");
    }
    assert!(html.contains("d***@example.com"));
    assert!(html.contains("q***@example.com"));
    assert!(html.contains("paused by operator"));
    assert!(html.contains("data-method=\"DELETE\" data-url=\"/admin/outbox/"));
    assert!(html.contains("/retry\" data-confirm=\"Retry dead letter"));
    assert!(html.contains("QP1"), "the parked notice");
    assert!(html.contains("user unknown"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_me_this_one_sends_the_rendered_sample_marked_as_a_test() {
    let app = spawn_app("").await;
    let mut vars = esim_notify::render::sample_vars(
        esim_notify::render::NoticeClass::Data,
        true,
        &Default::default(),
    );
    vars["usage"]["threshold"] = json!(0.2);
    vars["usage"]["thresholdPercent"] = json!(20);
    let r = app
        .http
        .post(app.admin_url("/admin/preview/send"))
        .json(&json!({"template": "data_usage", "vars": vars, "to": "ops@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["via"].as_str().unwrap().starts_with("SMTP at 127.0.0.1"),
        "{v}"
    );
    let mail = app.received().remove(0);
    let subject = mail.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    assert!(subject.starts_with("Subject: [TEST] "), "{subject}");
    assert!(
        subject.contains("20%"),
        "the edited sample is what is sent: {subject}"
    );
    assert!(mail.contains("X-Esim-Notify-Test: yes"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");

    let r = app
        .http
        .post(app.admin_url("/admin/preview/send"))
        .json(&json!({"template": "data_usage", "to": "not an address"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(app.received().len(), 1);
    app.stop().await;
}

/// `GET /admin/preview/frame` reads and checks the template folder only
/// when a file in it changed (issue 18): the answer says which
/// (`X-Esim-Notify-Templates: read | cached`), and an edit still shows on
/// the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_frame_reads_the_folder_again_only_when_a_file_changes() {
    let (app, templates) = app_with_template_copy("").await;
    let frame = |query: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.admin_url(&format!("/admin/preview/frame?{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let folder = r
                .headers()
                .get("x-esim-notify-templates")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (folder, r.text().await.unwrap())
        }
    };
    let (first, html) = frame("template=data_usage").await;
    assert_eq!(first, "read");
    assert!(!html.contains("FRAME-EDIT-7Q"));
    let (second, again) = frame("template=data_usage").await;
    assert_eq!(second, "cached", "nothing changed on disk");
    assert_eq!(again, html);
    // Another template, locale or sample uses the same read of the folder.
    let (other, es) = frame("template=esim_activated&locale=es").await;
    assert_eq!(other, "cached");
    assert_ne!(es, html);

    // An edit of a partial (one folder down) shows at once.
    let footer = templates.path().join("partials/footer.hbs");
    let text = std::fs::read_to_string(&footer).unwrap();
    std::fs::write(&footer, format!("{text}<p>FRAME-EDIT-7Q</p>")).unwrap();
    let (after, edited) = frame("template=data_usage").await;
    assert_eq!(after, "read");
    assert!(edited.contains("FRAME-EDIT-7Q"), "{edited}");
    let (next, same) = frame("template=data_usage").await;
    assert_eq!(next, "cached");
    assert_eq!(same, edited);

    // A locale's file too, and a file removed.
    let es_html = templates.path().join("es/esim_activated.html.hbs");
    let text = std::fs::read_to_string(&es_html).unwrap();
    std::fs::write(
        &es_html,
        text.replace("{{#> layout}}", "{{#> layout}}<p>ES-EDIT-3K</p>"),
    )
    .unwrap();
    let (after, es) = frame("template=esim_activated&locale=es").await;
    assert_eq!(after, "read");
    assert!(es.contains("ES-EDIT-3K"), "{es}");
    std::fs::remove_file(&es_html).unwrap();
    let (after, es) = frame("template=esim_activated&locale=es").await;
    assert_eq!(after, "read");
    assert!(!es.contains("ES-EDIT-3K"));
    assert!(
        es.contains("Cannot render"),
        "a locale template lacking a part: {es}"
    );
    app.stop().await;
}
