//! Running it as an operator does: the quick start with the shipped config,
//! logs, metrics of sends, pause/resume, backup under load, one-click
//! unsubscribe.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The built binary with the shipped `config.toml` and `templates/`, run from
/// a copy of the checkout (only the ports moved, so tests can run at once).
struct Shipped {
    dir: tempfile::TempDir,
    child: Child,
    public: u16,
    admin: u16,
}

impl Shipped {
    fn start(extra_env: &[(&str, &str)]) -> Shipped {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            format!("{ROOT}/config.toml"),
            dir.path().join("config.toml"),
        )
        .unwrap();
        copy_dir(
            &std::path::Path::new(ROOT).join("templates"),
            &dir.path().join("templates"),
        );
        let [public, admin] = free_ports();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_esim-notify"));
        cmd.current_dir(dir.path())
            .env_remove("ESIM_NOTIFY_CONFIG")
            .env("ESIM_NOTIFY_SERVER__LISTEN", format!("127.0.0.1:{public}"))
            .env("ESIM_NOTIFY_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let s = Shipped {
            dir,
            child,
            public,
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("http://127.0.0.1:{public}/readyz"))
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "the shipped config did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// SIGTERM, wait, and return what it logged.
    fn stop(self) -> (String, tempfile::TempDir) {
        unsafe_sigterm(self.child.id());
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "exit status {:?}", out.status);
        (String::from_utf8_lossy(&out.stderr).into_owned(), self.dir)
    }
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

const SAMPLE_DATA: &str = r#"{"notifyType":"DATA_USAGE","eventGenerateTime":"2025-07-21T10:57:28Z","notifyId":"f776267e8d6745db8cc316e4c146ea0c","content":{"orderNo":"B25052822150009","transactionId":"unique_id_from_partner","esimTranNo":"25052822150009","iccid":"8943108170001029631","totalVolume":53687091200,"orderUsage":48335585458,"remain":5351505742,"lastUpdateTime":"2025-07-21T09:38:25Z","remainThreshold":0.1}}"#;

/// The README's quick start, literally: shipped config, bind, post the
/// sample, find an .eml in mail-out/. Also: the log lines mask the address.
#[test]
fn quick_start_leaves_an_eml_and_logs_mask_addresses() {
    let app = Shipped::start(&[("ESIM_NOTIFY_LOG__FORMAT", "json")]);
    let http = reqwest::blocking::Client::new();
    let bound = http
        .put(format!("http://127.0.0.1:{}/admin/customers", app.admin))
        .json(&json!({"email": "ana.lopez@example.com", "name": "Ana", "esimTranNo": "25052822150009"}))
        .send()
        .unwrap();
    assert_eq!(bound.status(), 200);
    let r = http
        .post(format!(
            "http://127.0.0.1:{}/webhooks/esimaccess",
            app.public
        ))
        .header("content-type", "application/json")
        .body(SAMPLE_DATA)
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap(), json!({"status": "accepted"}));
    let out = app.dir.path().join("mail-out");
    let deadline = Instant::now() + Duration::from_secs(20);
    let eml = loop {
        let found: Vec<_> = std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = found.first() {
            break std::fs::read_to_string(p).unwrap();
        }
        assert!(Instant::now() < deadline, "no .eml in mail-out/");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        eml.contains("Subject: 10% or less of your data left"),
        "{eml}"
    );
    assert!(eml.contains("ana.lopez@example.com"));
    let (log, _dir) = app.stop();
    assert!(
        log.lines().any(|l| l.contains("\"outcome\":\"accepted\"")),
        "one JSON line per webhook:\n{log}"
    );
    assert!(
        log.contains("a***@example.com"),
        "sends are logged with the masked address:\n{log}"
    );
    assert!(
        !log.contains("ana.lopez@example.com"),
        "a full address reached the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_sent_email_and_pause_holds_sending_while_intake_goes_on() {
    let app = spawn_app("").await;
    assert_eq!(
        app.bind(json!({"email": "ana@example.com", "esimTranNo": "P1"}))
            .await
            .0,
        200
    );
    // Only this test sends data_usage in this binary, so the delta is exact.
    let sent = "esim_notify_notices_total{template=\"data_usage\",outcome=\"sent\"}";
    let before = metric(&app, sent).await.unwrap_or(0.0);

    let paused = app
        .http
        .post(app.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status().as_u16(), 200);
    assert_eq!(
        app.post(&esim_status("p-1", "P1", "8900000000000000101", "IN_USE"))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post(&data_usage("p-2", "P1", "8900000000000000101", 1000, 90))
            .await
            .0,
        200
    );
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    assert_eq!(
        outbox.as_array().unwrap().len(),
        2,
        "intake goes on while paused: {outbox}"
    );
    assert_eq!(metric(&app, "esim_notify_sending_paused").await, Some(1.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.received().is_empty(), "nothing is sent while paused");

    let resumed = app
        .http
        .post(app.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 2
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&app, sent).await == Some(before + 1.0)
        })
        .await,
        "the sent email is counted under its template"
    );
    assert_eq!(metric(&app, "esim_notify_outbox_depth").await, Some(0.0));
    app.stop().await;
}

/// A backup taken while webhooks keep arriving opens on its own and holds
/// every event acknowledged before it was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_holds_every_acknowledged_event() {
    let app = spawn_app("").await;
    let load = {
        let (http, url) = (app.http.clone(), app.webhook_url());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..300 {
                let tran = format!("BK{i:04}");
                let body = data_usage(
                    &format!("bk-{i}"),
                    &tran,
                    &format!("8901{i:015}"),
                    1000,
                    400,
                );
                let r = http.post(&url).body(body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                acked.push((Instant::now(), tran));
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let target = backup_dir.path().join("copy");
    let asked = Instant::now();
    let r = app
        .http
        .post(app.admin_url("/admin/backup"))
        .json(&json!({"dir": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let acked = load.await.unwrap();
    app.stop().await;
    let copy = crate::helpers::open_engine(&target, Duration::from_secs(86400)).unwrap();
    let before: Vec<_> = acked.iter().filter(|(t, _)| *t < asked).collect();
    assert!(!before.is_empty(), "the load had started before the backup");
    for (_, tran) in before {
        assert!(
            copy.esim_view(None, tran).unwrap().is_some(),
            "{tran} acknowledged before the backup is missing"
        );
    }
}

/// One-click unsubscribe (RFC 8058): the header's link, POSTed as a mail
/// client would, suppresses the address (`unsubscribed`); its next
/// reminder is recorded as suppressed, not sent (service emails still go:
/// `suppression_reasons.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_suppresses_the_next_notice() {
    let app = spawn_app("[email]\nlist_unsubscribe = \"one-click\"\n").await;
    assert_eq!(
        app.bind(json!({"email": "ana@example.com", "esimTranNo": "U1"}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post(&esim_status("u-1", "U1", "8900000000000000201", "IN_USE"))
            .await
            .0,
        200
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await
    );
    let mail = app.received().remove(0);
    assert!(
        mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mail}"
    );
    let unfolded = mail.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = unfolded
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe: "))
        .expect("List-Unsubscribe header");
    let url = header
        .trim_start_matches("List-Unsubscribe: ")
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    assert!(
        url.starts_with(&format!("http://{}/unsubscribe?t=", app.public)),
        "{url}"
    );

    // The address is not readable in the link (proxy and mail logs keep URLs).
    let token = url.rsplit_once("t=").unwrap().1;
    for shown in [
        "ana".to_string(),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            "ana@example.com",
        )[..8]
            .to_string(),
    ] {
        assert!(!token.contains(&shown), "{token} shows {shown}");
    }

    // A link scanner's GET does not unsubscribe; a forged token is refused.
    let page = app.http.get(&url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let brand = app.config.brand["name"].clone();
    let html = page.text().await.unwrap();
    assert!(html.contains(&brand), "the page names {brand}: {html}");
    // A repeated `t` is a client error answered in JSON, as every 4xx.
    let twice = app.http.get(format!("{url}&t=x")).send().await.unwrap();
    assert_eq!(twice.status().as_u16(), 400);
    let v: Value = twice.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    let (_, list) = app.get_json(&app.admin_url("/admin/suppressions")).await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    let forged = app.http.post(format!("{url}x")).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 400);

    let r = app
        .http
        .post(&url)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = app
        .get_json(&app.admin_url("/admin/suppressions/ana@example.com"))
        .await;
    assert_eq!(status, 200);

    assert_eq!(
        app.post(&data_usage(
            "u-2",
            "U1",
            "8900000000000000201",
            10 << 30,
            1 << 30
        ))
        .await
        .0,
        200
    );
    let suppressed = eventually(Duration::from_secs(10), || async {
        let (_, view) = app.get_json(&app.admin_url("/admin/esims/U1")).await;
        view["decisions"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["what"] == "suppressed"))
    })
    .await;
    assert!(suppressed, "the next notice is recorded as suppressed");
    assert_eq!(app.received().len(), 1, "and not sent");
    app.stop().await;
}

/// After `customers forget`, a suppressed address stays suppressed but is
/// kept only as a keyed hash: the suppression list no longer holds it, and a
/// notice to it after it is bound again is still not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_address_stays_suppressed_only_as_a_hash() {
    let app = spawn_app("").await;
    let put = app
        .http
        .put(app.admin_url("/admin/suppressions/Ana.Lopez@Example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let bound = app
        .bind(json!({"email": "ana.lopez@example.com", "esimTranNo": "F1"}))
        .await;
    assert_eq!(bound.0, 200);
    let forget = app
        .http
        .post(app.admin_url("/admin/customers/forget"))
        .json(&json!({"email": "ana.lopez@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forget.status().as_u16(), 200);

    let (_, list) = app.get_json(&app.admin_url("/admin/suppressions")).await;
    let text = list.to_string().to_lowercase();
    assert!(!text.contains("ana.lopez"), "{text}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, _) = app
        .get_json(&app.admin_url("/admin/suppressions/ana.lopez@example.com"))
        .await;
    assert_eq!(status, 200, "still suppressed");

    assert_eq!(
        app.bind(json!({"email": "ana.lopez@example.com", "esimTranNo": "F1"}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post(&esim_status("f-1", "F1", "8900000000000000301", "IN_USE"))
            .await
            .0,
        200
    );
    let (_, view) = app.get_json(&app.admin_url("/admin/esims/F1")).await;
    assert!(
        view["decisions"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["what"] == "suppressed")),
        "{view}"
    );
    app.stop().await;
}
