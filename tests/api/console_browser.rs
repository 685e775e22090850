//! The operator console in a real browser: the built binary with a real
//! SMTP test server and the shipped templates, driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`). Plain `cargo test` skips it
//! (printing why) unless `ESIM_NOTIFY_BROWSER=1`; `.ci/run` installs the
//! browser and runs it. Screenshots land in `target/ci-artefacts/console/`.
//!
//! Chromium runs headless with a fresh profile and without its background
//! networking (updates, sync, field trials), which a closed network refuses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const TOKEN: &str = "br0wser-t0ken";
const GB: u64 = 1024 * 1024 * 1024;

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-artefacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a loopback port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let path = std::env::var("ESIM_NOTIFY_CHROMEDRIVER")
        .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let port = free_port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {path}: {e} (install chromium-driver)"));
    let driver = Driver { child, port };
    let http = reqwest::Client::new();
    let up = eventually(Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(up, "chromedriver did not come up on port {port}");
    driver
}

async fn start_browser(driver: &Driver, profile: &Path) -> Client {
    let binary =
        std::env::var("ESIM_NOTIFY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1440,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session with Chromium")
}

/// Polls a JavaScript condition in the page (bounded) until it is true.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.execute(script, vec![]).await;
        if matches!(v, Ok(Value::Bool(true))) {
            return;
        }
        if Instant::now() > deadline {
            let shot = artefacts().join("failure.png");
            if let Ok(png) = c.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            panic!(
                "waited in vain for {what} (last: {v:?}); see {}",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(artefacts().join(format!("{name}.png")), png).unwrap();
}

/// A page on another site (`localhost`, not `127.0.0.1`) whose form posts
/// to the admin listener, as an attacker's page would.
async fn hostile_site(admin: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><title>win a prize</title><form method=\"post\" action=\"http://127.0.0.1:{admin}/admin/pause\">\
         <input type=\"hidden\" name=\"x\" value=\"1\"><button id=\"go\" type=\"submit\">claim</button></form>"
    );
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

async fn admin_json(
    server: &Binary,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("http://127.0.0.1:{}{path}", server.admin))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_webhook(server: &Binary, body: &str) {
    let r = reqwest::Client::new()
        .post(server.webhook_url())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    if std::env::var("ESIM_NOTIFY_BROWSER").as_deref() != Ok("1") {
        // Straight to stderr: the test harness captures println!, and a
        // skip nobody sees looks like a pass.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "console_browser: skipped; set ESIM_NOTIFY_BROWSER=1 with Debian's chromium and \
             chromium-driver installed to run it (.ci/run does)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    copy_dir(Path::new(TEMPLATES), &templates);
    let (smtp_port, smtp) = smtp::mailin_server();
    let server = Binary::serve_smtp(
        dir.path(),
        smtp_port,
        &format!(
            "[admin]\ntoken = \"{TOKEN}\"\n[templates]\ndir = \"{}\"\n",
            templates.display()
        ),
    )
    .await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = start_browser(&driver, profile.path()).await;
    let base = log_in(&c, &server).await;
    until(
        &c,
        "the overview",
        "return !!document.querySelector('.cards')",
    )
    .await;
    screenshot(&c, "overview").await;

    every_template_and_locale_renders(&c, &base).await;
    editing_the_sample_changes_the_subject(&c, &base).await;
    a_broken_template_shows_its_file_and_line(&c, &base, &templates).await;
    the_timeline_of_a_parked_then_sent_notice(&c, &base, &server, &smtp).await;
    a_dead_letter_retried_from_the_page_is_delivered(&c, &base, &server, &smtp).await;
    a_cross_site_form_is_refused(&c, &server).await;
    an_api_key_made_and_revoked_on_its_page(&c, &base, &server).await;

    c.close().await.unwrap();
    drop(driver);
    let log = server.kill();
    assert!(!log.contains("panicked"), "{log}");
}

async fn every_template_and_locale_renders(c: &Client, base: &str) {
    c.goto(&format!("{base}/admin/preview")).await.unwrap();
    until(
        c,
        "the template list",
        "return document.querySelectorAll('a.tpl-item').length > 0",
    )
    .await;
    let mut hrefs = Vec::new();
    for a in c.find_all(Locator::Css("a.tpl-item")).await.unwrap() {
        hrefs.push(a.attr("href").await.unwrap().expect("href"));
    }
    assert!(
        hrefs.len() >= 7 * 2,
        "every template in every locale: {hrefs:?}"
    );
    for href in &hrefs {
        c.goto(&format!("{base}{href}")).await.unwrap();
        until(
            c,
            "the subject",
            "return !!document.getElementById('subject')",
        )
        .await;
        let subject = text_of(c, "#subject").await;
        assert!(
            !subject.is_empty() && !subject.contains("cannot render"),
            "{href}: {subject:?}"
        );
        let problems = c.find_all(Locator::Css("#problems li")).await.unwrap();
        assert!(problems.is_empty(), "{href} lists a problem");
        assert!(c
            .find_all(Locator::Css("#problems-all"))
            .await
            .unwrap()
            .is_empty());
    }
    // The HTML part is its own document in the frame, styled as sent.
    c.goto(&format!(
        "{base}/admin/preview?template=data_usage&locale=en"
    ))
    .await
    .unwrap();
    until(c, "the frame", "return !!document.getElementById('frame')").await;
    c.enter_frame(0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = c
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .unwrap();
        if body.as_str().is_some_and(|b| b.contains("Example eSIM")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the HTML part did not load: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.enter_parent_frame().await.unwrap();
    screenshot(c, "templates").await;
    // Mobile width, dark: the switches change the frame, not the email.
    click(c, "button[data-width=mobile]").await;
    click(c, "button[data-theme=dark]").await;
    until(
        c,
        "the mobile, dark frame",
        "const w = document.getElementById('frame-wrap'); return w.classList.contains('mobile') && w.classList.contains('dark') && document.getElementById('frame').offsetWidth <= 400",
    )
    .await;
    screenshot(c, "templates-mobile-dark").await;
    click(c, "button[data-width=desktop]").await;
    click(c, "button[data-theme=light]").await;
}

async fn editing_the_sample_changes_the_subject(c: &Client, base: &str) {
    c.goto(&format!(
        "{base}/admin/preview?template=data_usage&locale=en"
    ))
    .await
    .unwrap();
    until(c, "the sample", "return !!document.getElementById('vars')").await;
    let before = text_of(c, "#subject").await;
    assert!(before.contains("10%"), "{before}");
    let vars = c.find(Locator::Css("#vars")).await.unwrap();
    let mut sample: Value =
        serde_json::from_str(&vars.prop("value").await.unwrap().unwrap()).unwrap();
    // The data subject states the threshold crossed (`usage.threshold`).
    sample["usage"]["threshold"] = json!(0.25);
    sample["usage"]["thresholdPercent"] = json!(25);
    // Typed as an operator would (the textarea's input events re-render).
    vars.clear().await.unwrap();
    vars.send_keys(&serde_json::to_string(&sample).unwrap())
        .await
        .unwrap();
    until(
        c,
        "the subject to follow the edit",
        "return document.getElementById('subject').textContent.includes('25%')",
    )
    .await;
    let note = text_of(c, "#sender-note").await;
    assert!(!note.is_empty());
}

async fn a_broken_template_shows_its_file_and_line(c: &Client, base: &str, templates: &Path) {
    let file = templates.join("data_usage.subject.hbs");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, "Only {{#if usage.thresholdPercent}}% left").unwrap();
    c.goto(&format!(
        "{base}/admin/preview?template=data_usage&locale=en"
    ))
    .await
    .unwrap();
    until(
        c,
        "the problem list",
        "return document.querySelectorAll('#problems li').length > 0",
    )
    .await;
    let problems = text_of(c, "#problems").await;
    assert!(problems.contains("data_usage.subject.hbs"), "{problems}");
    assert!(problems.contains("line 1"), "{problems}");
    assert!(text_of(c, "#subject").await.contains("cannot render"));
    // Reload now: refused, saying why; the sender keeps its templates.
    click(c, "#reload-now").await;
    until(
        c,
        "the reload's answer",
        "return document.getElementById('reload-result').textContent.startsWith('Refused')",
    )
    .await;
    assert!(text_of(c, "#reload-result")
        .await
        .contains("data_usage.subject.hbs"));
    screenshot(c, "templates-broken").await;
    std::fs::write(&file, original).unwrap();
    click(c, "#reload-now").await;
    until(
        c,
        "the reload to be taken",
        "return document.getElementById('reload-result').textContent.startsWith('Taken')",
    )
    .await;
    until(
        c,
        "the problems to go",
        "return document.getElementById('problems').hidden",
    )
    .await;
}

async fn the_timeline_of_a_parked_then_sent_notice(
    c: &Client,
    base: &str,
    server: &Binary,
    smtp: &smtp::Mailin,
) {
    // 50 % left while no customer is bound: parked. Then 10 %: parked too.
    // Binding the customer releases the 10 % (the 50 % is superseded by it).
    post_webhook(
        server,
        &data_usage("b-50", "BR1", "8900000000000000991", 5 * GB, 5 * GB / 2),
    )
    .await;
    post_webhook(
        server,
        &data_usage("b-10", "BR1", "8900000000000000991", 5 * GB, GB / 2),
    )
    .await;
    let (s, _) = admin_json(
        server,
        reqwest::Method::PUT,
        "/admin/customers",
        Some(json!({"email": "ana.browser@example.com", "name": "Ana", "iccid": "8900000000000000991"})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 1
        })
        .await
    );

    c.goto(&format!("{base}/admin/esims")).await.unwrap();
    let q = c.find(Locator::Css("input[name=q]")).await.unwrap();
    q.send_keys("ana.browser@example.com").await.unwrap();
    click(c, "form.search button").await;
    until(
        c,
        "the timeline",
        "return !!document.getElementById('timeline')",
    )
    .await;
    let kinds = c
        .execute(
            "return Array.from(document.querySelectorAll('#timeline li')).map(li => li.dataset.kind)",
            vec![],
        )
        .await
        .unwrap();
    let kinds: Vec<String> = serde_json::from_value(kinds).unwrap();
    let wanted = ["event", "parked", "event", "parked", "released", "sent"];
    let mut at = 0;
    for k in &kinds {
        if at < wanted.len() && k == wanted[at] {
            at += 1;
        }
    }
    assert_eq!(at, wanted.len(), "timeline out of order: {kinds:?}");
    let last_parked = kinds.iter().rposition(|k| k == "parked").unwrap();
    let superseded = kinds
        .iter()
        .position(|k| k == "superseded")
        .expect("the 50 % superseded");
    assert!(superseded > last_parked, "{kinds:?}");
    let sent = text_of(c, "#timeline li[data-kind=sent]").await;
    assert!(sent.contains("Message-ID"), "{sent}");
    assert!(text_of(c, "#recipient")
        .await
        .contains("ana.browser@example.com"));
    screenshot(c, "esim").await;
}

async fn a_dead_letter_retried_from_the_page_is_delivered(
    c: &Client,
    base: &str,
    server: &Binary,
    smtp: &smtp::Mailin,
) {
    // A mailbox refused once ("user unknown"): a dead letter.
    smtp.lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    let (s, _) = admin_json(
        server,
        reqwest::Method::PUT,
        "/admin/customers",
        Some(json!({"email": "bo.dead@example.com", "esimTranNo": "BD1"})),
    )
    .await;
    assert_eq!(s, 200);
    post_webhook(
        server,
        &data_usage("d-10", "BD1", "8900000000000000992", 5 * GB, GB / 2),
    )
    .await;
    let died = eventually(Duration::from_secs(20), || async {
        let (_, v) = admin_json(server, reqwest::Method::GET, "/admin/dead", None).await;
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(died, "no dead letter");
    let (_, v) = admin_json(server, reqwest::Method::GET, "/admin/dead", None).await;
    let dead_id = v[0]["id"].as_u64().unwrap();
    // Something waiting (sending paused) and something parked, for the picture.
    admin_json(server, reqwest::Method::POST, "/admin/pause", None).await;
    post_webhook(
        server,
        &esim_status("w-1", "BR1", "8900000000000000991", "IN_USE"),
    )
    .await;
    post_webhook(
        server,
        &data_usage("p-1", "BP1", "8900000000000000993", 5 * GB, GB),
    )
    .await;

    c.goto(&format!("{base}/admin/queue")).await.unwrap();
    until(
        c,
        "the dead letter row",
        &format!("return !!document.getElementById('dead-{dead_id}')"),
    )
    .await;
    assert!(!c
        .find_all(Locator::Css("#outbox tbody tr"))
        .await
        .unwrap()
        .is_empty());
    assert!(!c
        .find_all(Locator::Css("#parked tbody tr"))
        .await
        .unwrap()
        .is_empty());
    let page = c.source().await.unwrap();
    assert!(
        !page.contains("bo.dead@example.com"),
        "the address is masked here"
    );
    screenshot(c, "queue").await;
    admin_json(server, reqwest::Method::POST, "/admin/resume", None).await;

    let before = smtp.received().len();
    click(c, &format!("#dead-{dead_id} button")).await;
    // The page asks first.
    let question = c.get_alert_text().await.unwrap();
    assert!(question.contains("Retry dead letter"), "{question}");
    c.accept_alert().await.unwrap();
    until(
        c,
        "the page to say it is back in the queue",
        "const f = document.getElementById('flash'); return !!f && !f.hidden && f.textContent.includes('back in the queue')",
    )
    .await;
    let delivered = eventually(Duration::from_secs(20), || async {
        smtp.received()
            .iter()
            .skip(before)
            .any(|m| m.contains("To: bo.dead@example.com"))
    })
    .await;
    assert!(delivered, "the retried dead letter reached the SMTP server");
}

async fn a_cross_site_form_is_refused(c: &Client, server: &Binary) {
    let hostile = hostile_site(server.admin).await;
    c.goto(&format!("http://localhost:{hostile}/"))
        .await
        .unwrap();
    click(c, "#go").await;
    until(
        c,
        "the admin listener's answer",
        "return document.body && document.body.innerText.includes('error')",
    )
    .await;
    let body = text_of(c, "body").await;
    assert!(
        body.contains("cross-site request refused"),
        "the browser sent the operator's credentials and the guard refused: {body}"
    );
    screenshot(c, "cross-site-refused").await;
    let (_, ready) = admin_json(server, reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(ready["paused"], false, "the forged pause did nothing");
}

// ---------------------------------------------------------------- the chart

/// Sent, bounced and complained `k` days ago in the history the chart test
/// fills: a pattern with some shape, bounces on two days in three and a
/// complaint now and then.
fn filled_day(k: i64) -> (u64, u64, u64) {
    (
        20 + (k * 37 % 29) as u64,
        (k % 3) as u64,
        u64::from(k % 9 == 4),
    )
}

/// Thirty days of history made through the engine as the server makes it
/// (a customer bound, a delivery queued, the send recorded, the provider's
/// bounce or complaint appended to the decision log), each at its own time,
/// before the server opens the store.
fn fill_thirty_days(store: &Path) {
    use esim_notify::engine::{LogEntry, LogKind, SendOutcome};

    let engine = open_engine(store, Duration::from_secs(86_400)).unwrap();
    let now = chrono::Utc::now() - chrono::Duration::minutes(1);
    for k in 0..30 {
        let at = now - chrono::Duration::days(k);
        let (sent, bounced, complained) = filled_day(k);
        for i in 0..sent {
            let tran = format!("H{k}x{i}");
            let (esim, q) = queue_one(&engine, &tran, at);
            let message_id = format!("<{tran}@example.com>");
            engine
                .record(q.id, &SendOutcome::Sent { message_id }, at)
                .unwrap();
            let report = match i {
                i if i < bounced => Some(LogKind::Bounced),
                i if i < bounced + complained => Some(LogKind::Complained),
                _ => None,
            };
            if let Some(what) = report {
                let line =
                    LogEntry::new(at, what, Some(&q.notice.template), "reported").about(q.id);
                engine.append_log(esim, line).unwrap();
            }
        }
    }
    engine.flush().unwrap();
}

/// Opens the console's overview as the operator: the browser asks for the
/// token once (here: in the URL), then keeps it for the console's pages and
/// its fetch calls. Returns the admin listener's base URL.
async fn log_in(c: &Client, server: &Binary) -> String {
    c.goto(&format!(
        "http://operator:{TOKEN}@127.0.0.1:{}/admin/",
        server.admin
    ))
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", server.admin);
    c.goto(&format!("{base}/admin/")).await.unwrap();
    base
}

/// Scrolls the chart's panel to the top of the window, below the sticky header.
async fn show_the_chart(c: &Client) {
    c.execute(
        "const top = document.getElementById('sent').getBoundingClientRect().top; \
         window.scrollBy(0, top - document.querySelector('header.top').offsetHeight - 8)",
        vec![],
    )
    .await
    .unwrap();
}

/// Tells the page which colour scheme to prefer (`light` or `dark`),
/// through chromedriver's door to the DevTools protocol, and waits until it
/// does.
async fn prefer_scheme(driver: &Driver, c: &Client, scheme: &str) {
    let session = c.session_id().await.unwrap().expect("a session");
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
            driver.port
        ))
        .json(&json!({"cmd": "Emulation.setEmulatedMedia", "params":
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    until(
        c,
        scheme,
        &format!("return matchMedia('(prefers-color-scheme: {scheme})').matches"),
    )
    .await;
}

/// The overview's chart at a phone's width, light and dark (issue 20):
/// thirty days of history, three emails sent through the server today; the
/// drawing holds today's numbers and the week's rates name the thresholds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_chart_at_a_phone_s_width_light_and_dark() {
    if std::env::var("ESIM_NOTIFY_BROWSER").as_deref() != Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "console_browser: chart skipped; set ESIM_NOTIFY_BROWSER=1 (see the module doc)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    tokio::task::spawn_blocking({
        let store = store.clone();
        move || fill_thirty_days(&store)
    })
    .await
    .unwrap();
    let (smtp_port, smtp) = smtp::mailin_server();
    let server = Binary::serve_smtp(
        dir.path(),
        smtp_port,
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    for i in 0..3 {
        let tran = format!("T{i}");
        let (s, _) = admin_json(
            &server,
            reqwest::Method::PUT,
            "/admin/customers",
            Some(json!({"email": format!("today{i}@example.com"), "esimTranNo": tran})),
        )
        .await;
        assert_eq!(s, 200);
        post_webhook(
            &server,
            &data_usage(
                &format!("t-{i}"),
                &tran,
                &format!("89000000000000009{i:02}"),
                5 * GB,
                GB / 2,
            ),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 3
        })
        .await
    );

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = start_browser(&driver, profile.path()).await;
    c.set_window_size(400, 1000).await.unwrap();
    log_in(&c, &server).await;
    until(
        &c,
        "the chart",
        "return !!document.querySelector('svg.chart-svg g.day.today')",
    )
    .await;

    // What the page shows is what was filled and sent.
    let today = c
        .execute(
            "const g = document.querySelector('svg.chart-svg g.day.today'); \
             return [g.dataset.sent, g.dataset.bounced, g.dataset.complained].map(Number)",
            vec![],
        )
        .await
        .unwrap();
    let (sent0, bounced0, complained0) = filled_day(0);
    assert_eq!(today, json!([sent0 + 3, bounced0, complained0]));
    let week: (u64, u64, u64) = (0..7)
        .map(filled_day)
        .fold((3, 0, 0), |a, d| (a.0 + d.0, a.1 + d.1, a.2 + d.2));
    let bounce = text_of(&c, "#bounce-rate").await;
    let pct = format!("{:.1} %", week.1 as f64 * 100.0 / week.0 as f64);
    assert!(bounce.contains(&pct), "{pct} in {bounce}");
    assert!(
        bounce.contains(&format!("{} of {} sent bounced", week.1, week.0)),
        "{bounce}"
    );
    let complaint = text_of(&c, "#complaint-rate").await;
    assert!(
        complaint.contains("0.3 %") && complaint.contains("0.1 %"),
        "{complaint}"
    );
    // The drawing fits the phone's width (no sideways scrolling).
    let fits = c
        .execute(
            "const r = document.querySelector('svg.chart-svg').getBoundingClientRect(); \
             return r.width > 150 && r.right <= document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true));
    let label = c
        .execute(
            "const s = document.querySelector('svg.chart-svg'); \
             return s.getAttribute('role') + ': ' + document.getElementById('chart-title').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        label
            .as_str()
            .unwrap()
            .starts_with("img: Emails sent per day"),
        "{label}"
    );

    show_the_chart(&c).await;
    screenshot(&c, "overview-chart-light").await;
    prefer_scheme(&driver, &c, "dark").await;
    show_the_chart(&c).await;
    screenshot(&c, "overview-chart-dark").await;
    // And on a desktop's width, light.
    prefer_scheme(&driver, &c, "light").await;
    c.set_window_size(1440, 1100).await.unwrap();
    show_the_chart(&c).await;
    // The chart's panel alone: the picture the README shows.
    let panel = c.find(Locator::Css("#sent")).await.unwrap();
    let png = panel.screenshot().await.expect("a screenshot of the panel");
    std::fs::write(artefacts().join("overview-chart-wide.png"), png).unwrap();

    c.close().await.unwrap();
    drop(driver);
    let log = server.kill();
    assert!(!log.contains("panicked"), "{log}");
}

// --- Support from the console (issue 21) ------------------------------------
//
// A test of its own (its own server, with the fake provider for the install
// email), so it merges apart from the steps above. At a phone's width
// (400 px): support answers customers from anywhere.

const SUPPORT_TRAN: &str = "26050112000001";
const SUPPORT_ICCID: &str = "8943108170000775691";
const SUPPORT_ORDER: &str = "B26050112000001";
const AC_LOST: &str = "LPA:1$rsp-eu.redteamobile.com$33333333333333333333333333333333";
const AC_FRESH: &str = "LPA:1$rsp-eu.redteamobile.com$44444444444444444444444444444444";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_actions_in_a_real_browser() {
    if std::env::var("ESIM_NOTIFY_BROWSER").as_deref() != Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "console_browser (support): skipped; set ESIM_NOTIFY_BROWSER=1 with Debian's chromium and \
             chromium-driver installed to run it"
        );
        return;
    }
    use crate::fake_provider::{self as fake, FakeProvider};
    use std::sync::{Arc, Mutex};

    let ac = Arc::new(Mutex::new(AC_LOST.to_string()));
    let code = ac.clone();
    let provider = FakeProvider::start_with(vec![], move |_| {
        let ac = code.lock().unwrap().clone();
        fake::page(
            vec![fake::esim(SUPPORT_TRAN, SUPPORT_ICCID, SUPPORT_ORDER, &ac)],
            1,
            1,
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, smtp) = smtp::mailin_server();
    let server = Binary::serve_smtp(
        dir.path(),
        smtp_port,
        &format!(
            "[admin]\ntoken = \"{TOKEN}\"\n[provider]\naccess_code = \"fake\"\nbase_url = \"{}\"\ntimeout = \"2s\"\n",
            provider.base_url
        ),
    )
    .await;
    // The customer bought at the shop (bound by its order's transactionId)
    // and got the install email, then lost it.
    let (s, _) = admin_json(
        &server,
        reqwest::Method::PUT,
        "/admin/customers",
        Some(
            json!({"email": "lost.mail@example.com", "name": "Lu", "transactionId": "tx-support"}),
        ),
    )
    .await;
    assert_eq!(s, 200);
    post_webhook(
        &server,
        &json!({
            "notifyType": "ORDER_STATUS", "notifyId": "sup-order",
            "content": {"orderNo": SUPPORT_ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": "tx-support"}
        })
        .to_string(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 1
        })
        .await,
        "the first install email"
    );

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = start_browser(&driver, profile.path()).await;
    c.set_window_size(400, 1000).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.admin);
    c.goto(&format!(
        "http://operator:{TOKEN}@127.0.0.1:{}/admin/",
        server.admin
    ))
    .await
    .unwrap();

    correcting_the_address_in_the_browser(&c, &base, &server).await;
    resending_the_install_email_in_the_browser(&c, &base, &smtp, &ac).await;
    lifting_a_suppression_in_the_browser(&c, &base, &server, &smtp).await;

    c.close().await.unwrap();
    drop(driver);
    let log = server.kill();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("lost.mail@example.com") && !log.contains("right.mail@example.com"),
        "no full address in the log"
    );
}

/// A screenshot with the element `css` scrolled to the top of the window.
async fn screenshot_at(c: &Client, css: &str, name: &str) {
    c.execute(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); return true",
        vec![json!(css)],
    )
    .await
    .unwrap();
    screenshot(c, name).await;
}

/// Waits for the console's flash message to say `text`.
async fn flash_says(c: &Client, text: &str) -> String {
    until(
        c,
        &format!("the flash to say {text:?}"),
        &format!(
            "const f = document.getElementById('flash'); return !!f && !f.hidden && f.textContent.includes({})",
            json!(text)
        ),
    )
    .await;
    text_of(c, "#flash").await
}

async fn correcting_the_address_in_the_browser(c: &Client, base: &str, server: &Binary) {
    c.goto(&format!("{base}/admin/esims?q={SUPPORT_TRAN}"))
        .await
        .unwrap();
    until(
        c,
        "the bind form",
        "return !!document.getElementById('bind-form')",
    )
    .await;
    assert!(text_of(c, "#bind-form")
        .await
        .contains("lost.mail@example.com"));
    screenshot(c, "support-esim").await;
    screenshot_at(c, "#bind-form", "support-bind-form").await;
    let email = c
        .find(Locator::Css("#bind-form input[name=email]"))
        .await
        .unwrap();
    email.clear().await.unwrap();
    email.send_keys("right.mail@example.com").await.unwrap();
    let locale = c
        .find(Locator::Css("#bind-form input[name=locale]"))
        .await
        .unwrap();
    locale.clear().await.unwrap();
    locale.send_keys("es").await.unwrap();
    click(c, "#bind-submit").await;
    // The binding by esimTranNo comes first; nothing was bound to it before.
    let said = flash_says(c, "Customer bound").await;
    assert!(said.contains("replaced no other address"), "{said}");
    until(
        c,
        "the page to show the corrected customer",
        "return document.getElementById('recipient').textContent.includes('right.mail@example.com')",
    )
    .await;
    screenshot_at(c, "#bind-form", "support-esim-corrected").await;
    let (s, v) = admin_json(
        server,
        reqwest::Method::GET,
        &format!("/admin/customers?esimTranNo={SUPPORT_TRAN}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["email"], "right.mail@example.com");
    assert_eq!(v["locale"], "es");
    assert_eq!(v["name"], "Lu", "the form kept the name it showed");

    // Correcting it again says what it replaced.
    let email = c
        .find(Locator::Css("#bind-form input[name=email]"))
        .await
        .unwrap();
    email.clear().await.unwrap();
    email.send_keys("right.mail@example.com").await.unwrap();
    click(c, "#bind-submit").await;
    let said = flash_says(c, "Customer bound").await;
    assert!(
        said.contains("replaced no other address"),
        "same address: {said}"
    );
}

async fn resending_the_install_email_in_the_browser(
    c: &Client,
    base: &str,
    smtp: &smtp::Mailin,
    ac: &std::sync::Arc<std::sync::Mutex<String>>,
) {
    // The provider re-issued the profile: a resend must carry the new code.
    *ac.lock().unwrap() = AC_FRESH.to_string();
    c.goto(&format!("{base}/admin/esims?q={SUPPORT_TRAN}"))
        .await
        .unwrap();
    until(
        c,
        "the resend buttons",
        "return !!document.querySelector('#resend button')",
    )
    .await;
    let first = c
        .execute(
            "return document.querySelector('#resend button').dataset.template",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, json!("esim_ready"), "the install email comes first");
    let before = smtp.received().len();
    click(c, "#resend button[data-template=esim_ready]").await;
    let question = c.get_alert_text().await.unwrap();
    assert!(question.contains("right.mail@example.com"), "{question}");
    c.accept_alert().await.unwrap();
    let said = flash_says(c, "queued again").await;
    assert!(said.contains("r***@example.com"), "{said}");
    let delivered = eventually(Duration::from_secs(20), || async {
        smtp.received().iter().skip(before).any(|m| {
            m.contains("right.mail@example.com") && m.contains("44444444444444444444444444444444")
        })
    })
    .await;
    assert!(delivered, "the resent install email with the fresh code");
    c.goto(&format!("{base}/admin/esims?q={SUPPORT_TRAN}"))
        .await
        .unwrap();
    until(
        c,
        "the timeline",
        "return !!document.getElementById('timeline')",
    )
    .await;
    let timeline = text_of(c, "#timeline").await;
    assert!(
        timeline.contains("resend requested by the operator"),
        "{timeline}"
    );
    assert!(
        timeline.contains("install email (QR code) (resent)"),
        "{timeline}"
    );
    assert!(!timeline.contains("/ready/esim_ready/"), "{timeline}");
    screenshot_at(c, "#resend", "support-resend").await;
    screenshot_at(c, "#timeline", "support-resent-timeline").await;
}

async fn lifting_a_suppression_in_the_browser(
    c: &Client,
    base: &str,
    server: &Binary,
    smtp: &smtp::Mailin,
) {
    // The corrected address bounced once (the provider reported it).
    let (s, _) = admin_json(
        server,
        reqwest::Method::PUT,
        "/admin/suppressions/right.mail@example.com",
        Some(json!({"reason": "bounced"})),
    )
    .await;
    assert_eq!(s, 200);
    c.goto(&format!("{base}/admin/esims?q={SUPPORT_TRAN}"))
        .await
        .unwrap();
    until(
        c,
        "the suppressed box",
        "return !!document.getElementById('suppressed')",
    )
    .await;
    assert!(text_of(c, "#suppressed").await.contains("bounced"));
    c.goto(&format!("{base}/admin/suppression-list?q=right.mail"))
        .await
        .unwrap();
    until(
        c,
        "the list",
        "return document.querySelectorAll('tr.sup-row').length === 1",
    )
    .await;
    screenshot(c, "support-suppressions").await;
    click(c, "tr.sup-row a.btn").await;
    until(
        c,
        "the lift step",
        "return !!document.getElementById('lift-confirm')",
    )
    .await;
    let means = text_of(c, "#lift-means").await;
    assert!(means.contains("close the account"), "{means}");
    screenshot(c, "support-lift").await;
    click(c, "#lift-confirm").await;
    let said = flash_says(c, "lifted").await;
    assert!(said.contains("right.mail@example.com"), "{said}");
    let (s, _) = admin_json(
        server,
        reqwest::Method::GET,
        "/admin/suppressions/right.mail@example.com",
        None,
    )
    .await;
    assert_eq!(s, 404, "lifted");
    // And the next email reaches the address.
    let before = smtp.received().len();
    post_webhook(
        server,
        &esim_status("sup-act", SUPPORT_TRAN, SUPPORT_ICCID, "IN_USE"),
    )
    .await;
    let delivered = eventually(Duration::from_secs(20), || async {
        smtp.received()
            .iter()
            .skip(before)
            .any(|m| m.contains("right.mail@example.com"))
    })
    .await;
    assert!(delivered, "the activation email after the lift");
}

/// The API keys page (issue 21): a key created in the form is shown once
/// with a copy button, works against `/api/v1` at once, is in no page the
/// console serves afterwards, and revoking it (after a confirmation) makes
/// the next API request with it a 401.
async fn an_api_key_made_and_revoked_on_its_page(c: &Client, base: &str, server: &Binary) {
    c.goto(&format!("{base}/admin/api-keys")).await.unwrap();
    until(
        c,
        "the key form",
        "return !!document.getElementById('key-form')",
    )
    .await;
    c.find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("browser-shop")
        .await
        .unwrap();
    click(c, "input[value='esims:read']").await;
    click(c, "#key-create").await;
    until(
        c,
        "the new key",
        "const s = document.getElementById('key-shown'); return !!s && !s.hidden",
    )
    .await;
    let key = text_of(c, "#key-text").await;
    assert!(key.starts_with("esn_"), "{key}");
    click(c, "#key-copy").await;
    until(
        c,
        "the copy button's answer",
        "return document.getElementById('key-copied').textContent.length > 0",
    )
    .await;
    screenshot(c, "api-key-created").await;

    assert_eq!(
        crate::shop_api::key_status(server.public, &key).await,
        404,
        "the new key works at once"
    );

    c.goto(&format!("{base}/admin/api-keys")).await.unwrap();
    until(
        c,
        "the key's row",
        "return !!document.getElementById('key-browser-shop')",
    )
    .await;
    let page = c.source().await.unwrap();
    assert!(!page.contains(&key), "the key is shown again");
    screenshot(c, "api-keys").await;
    click(c, "#key-browser-shop button").await;
    let question = c.get_alert_text().await.unwrap();
    assert!(question.contains("Revoke the API key"), "{question}");
    c.accept_alert().await.unwrap();
    until(
        c,
        "the page to say it is revoked",
        "const f = document.getElementById('flash'); return !!f && !f.hidden && f.textContent.includes('revoked')",
    )
    .await;
    assert_eq!(
        crate::shop_api::key_status(server.public, &key).await,
        401,
        "a revoked key is refused at once"
    );
}
