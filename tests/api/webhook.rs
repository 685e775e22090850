//! The intake over real HTTP on loopback with a real sled store in a temp
//! dir: one test per row of SPEC §4's webhook table, the sender rules, the
//! wire quirks, durability across restarts and `kill -9`.

use std::time::Duration;

use crate::helpers::*;
use esim_notify::customers::IdKind;
use esim_notify::store::Space;
use serde_json::{json, Value};

const SAMPLE_DATA: &str = r#"{"notifyType":"DATA_USAGE","eventGenerateTime":"2025-07-21T10:57:28Z","notifyId":"f776267e8d6745db8cc316e4c146ea0c","content":{"orderNo":"B25052822150009","transactionId":"unique_id_from_partner","esimTranNo":"25052822150009","iccid":"8943108170001029631","totalVolume":53687091200,"orderUsage":48335585458,"remain":5351505742,"lastUpdateTime":"2025-07-21T09:38:25Z","remainThreshold":0.1}}"#;
const SAMPLE_HEALTH: &str = r#"{"notifyType":"CHECK_HEALTH","notifyId":"918ff7f6f41143078585a85797e613f7","eventGenerateTime":"2026-04-22T11:31:33Z","content":{"orderNo":"1234567890","orderStatus":"Test"}}"#;

/// Opens the store a stopped app left behind (`open_engine` waits for sled
/// to let go of its lock).
fn open_store(path: &std::path::Path) -> esim_notify::engine::Engine {
    crate::helpers::open_engine(path, Duration::from_secs(7 * 86400))
        .unwrap_or_else(|e| panic!("store does not open: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_duplicate_then_ignored() {
    let app = spawn_app("").await;
    assert_eq!(
        app.post(SAMPLE_DATA).await,
        (200, json!({"status": "accepted"}))
    );
    assert_eq!(
        app.post(SAMPLE_DATA).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(
        app.post(SAMPLE_HEALTH).await,
        (200, json!({"status": "ignored"}))
    );
    let unknown = r#"{"notifyType":"SOMETHING_NEW","notifyId":"x1","content":{}}"#;
    assert_eq!(app.post(unknown).await, (200, json!({"status": "ignored"})));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_not_allowed_is_403() {
    let app = spawn_app("[security]\nallowed_ips = [\"3.1.131.226\"]\n").await;
    let (status, body) = app.post(SAMPLE_DATA).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("not allowed"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_401_and_checked_after_the_sender() {
    let app = spawn_app("[security]\nwebhook_token = \"s3cret\"\n").await;
    assert_eq!(app.post(SAMPLE_DATA).await.0, 401);
    let wrong = format!("{}?token=s3cre", app.webhook_url());
    assert_eq!(app.post_to(&wrong, SAMPLE_DATA).await.0, 401);
    let right = format!("{}?token=s3cret", app.webhook_url());
    assert_eq!(app.post_to(&right, SAMPLE_DATA).await.0, 200);
    app.stop().await;

    // An outsider with the right token is still refused as an outsider first.
    let app =
        spawn_app("[security]\nwebhook_token = \"s3cret\"\nallowed_ips = [\"3.1.131.226\"]\n")
            .await;
    assert_eq!(app.post(SAMPLE_DATA).await.0, 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let app = spawn_app("[server]\nmax_body_bytes = 200\n").await;
    let (status, body) = app.post(SAMPLE_DATA).await;
    assert_eq!(status, 413, "{body}");
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures_util::stream::iter(
        SAMPLE_DATA
            .as_bytes()
            .chunks(50)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = app
        .http
        .post(app.webhook_url())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_with_a_reason() {
    let app = spawn_app("").await;
    for (body, reason) in [
        ("not json", "not valid JSON"),
        ("[1,2]", "not a JSON object"),
        (r#"{"content":{}}"#, "notifyType"),
        (r#"{"notifyType":7,"content":{}}"#, "notifyType"),
        (r#"{"notifyType":"DATA_USAGE"}"#, "content"),
        (r#"{"notifyType":"DATA_USAGE","content":"x"}"#, "content"),
    ] {
        let (status, answer) = app.post(body).await;
        assert_eq!(status, 400, "{body}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{body}: {error}");
    }
    app.stop().await;
}

/// A store that cannot give back what it holds is a 503, so the provider
/// retries: here an eSIM record is made unreadable on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_is_503() {
    let app = spawn_app("").await;
    assert_eq!(app.post(SAMPLE_DATA).await.0, 200);
    let (extra, port, smtp) = (String::new(), app.smtp_port, app.smtp.clone());
    let dir = app.stop().await;
    {
        // Every eSIM record replaced by bytes that do not decode, through
        // the store as the server opens it (sled or PostgreSQL).
        let store = crate::helpers::open_storage(&dir.path().join("data")).unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan(Space::Esims, &[])
            .map(|kv| kv.unwrap().0)
            .collect();
        assert!(!keys.is_empty());
        store
            .run(|u| {
                for k in &keys {
                    u.put(Space::Esims, k, b"{not json".to_vec());
                }
                Ok(())
            })
            .unwrap();
        store.flush().unwrap();
    }
    let app = spawn_app_in(dir, &extra, port, smtp).await;
    let again = SAMPLE_DATA.replace("f776267e8d6745db8cc316e4c146ea0c", "another-delivery");
    let (status, body) = app.post(&again).await;
    assert_eq!(status, 503, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_spoof_from_an_untrusted_peer_is_refused() {
    // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is ignored.
    let app = spawn_app(
        "[security]\nallowed_ips = [\"3.1.131.226\"]\ntrusted_proxies = [\"10.1.2.3\"]\n",
    )
    .await;
    let r = app
        .http
        .post(app.webhook_url())
        .header("x-forwarded-for", "3.1.131.226")
        .body(SAMPLE_DATA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_sender() {
    let app = spawn_app("[security]\nallowed_ips = [\"3.1.131.226\"]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n").await;
    let post = |xff: &'static str, id: &'static str| {
        let body = SAMPLE_DATA.replace("f776267e8d6745db8cc316e4c146ea0c", id);
        let req = app
            .http
            .post(app.webhook_url())
            .header("x-forwarded-for", xff)
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post("3.1.131.226", "a").await, 200);
    assert_eq!(
        post("3.1.131.226, 10.0.0.7", "b").await,
        200,
        "trusted hops are skipped"
    );
    assert_eq!(
        post("3.1.131.226, 6.6.6.6", "c").await,
        403,
        "a client cannot prepend the provider"
    );
    assert_eq!(post("6.6.6.6", "d").await, 403);
    app.stop().await;
}

/// Behind the proxy, a hop that is not an address ends the walk and is the
/// sender, which is never allowed; a header that is not text is refused too
/// (it used to fall back to the proxy's own, allowed, address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_an_unreadable_hop_is_refused() {
    let app = spawn_app("[security]\nallowed_ips = [\"3.1.131.226\", \"127.0.0.1\"]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n").await;
    let post = |xff: &'static [u8], id: &'static str| {
        let body = SAMPLE_DATA.replace("f776267e8d6745db8cc316e4c146ea0c", id);
        let req = app
            .http
            .post(app.webhook_url())
            .header(
                "x-forwarded-for",
                reqwest::header::HeaderValue::from_bytes(xff).unwrap(),
            )
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for (xff, id) in [
        (&b"3.1.131.226, unknown"[..], "u1"),
        (b"3.1.131.226, unix:/run/proxy.sock", "u2"),
        (b"3.1.131.226, , 10.0.0.7", "u3"),
        (b"3.1.131.226\xff", "u4"),
    ] {
        let (status, body) = post(xff, id).await;
        assert_eq!(status, 403, "{}", String::from_utf8_lossy(xff));
        assert!(body["error"].as_str().unwrap().contains("not allowed"));
    }
    assert_eq!(post(b"3.1.131.226, 10.0.0.7", "ok").await.0, 200);
    app.stop().await;
}

/// A body still arriving after `server.body_timeout` is cut with 408 and a
/// JSON reason, even from an allowed sender with the right token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_still_arriving_is_cut_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app("[server]\nbody_timeout = \"1s\"\n").await;
    let mut conn = tokio::net::TcpStream::connect(app.public).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.config.server.webhook_path,
        SAMPLE_DATA.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&SAMPLE_DATA.as_bytes()[..20]).await.unwrap();
    // The rest never comes; the server answers on its own (bounded wait).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#""error":"the body did not arrive"#),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_remembers_notify_ids() {
    let app = spawn_app("").await;
    assert_eq!(app.post(SAMPLE_DATA).await.1["status"], "accepted");
    let app = app.restart().await;
    assert_eq!(app.post(SAMPLE_DATA).await.1["status"], "duplicate");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_numbers_and_compact_offsets_are_read() {
    let app = spawn_app("").await;
    let body = r#"{"notifyType":"DATA_USAGE","notifyId":"s1","content":{"esimTranNo":"T-STR","iccid":"0089000000000000001","totalVolume":"53687091200","orderUsage":"48335585458","remain":"5351505742","lastUpdateTime":"2025-07-21T09:38:25+0000"}}"#;
    assert_eq!(app.post(body).await.0, 200);
    let validity = r#"{"notifyType":"VALIDITY_USAGE","notifyId":"s2","content":{"esimTranNo":"T-STR","remain":"1","totalDuration":"30","durationUnit":"DAY","expiredTime":"2099-04-23T17:13:19+0000"}}"#;
    assert_eq!(app.post(validity).await.0, 200);
    let dir = app.stop().await;
    let store = open_store(&dir.path().join("data"));
    let view = store.esim_view(None, "T-STR").unwrap().expect("eSIM known");
    assert_eq!(
        view.ids.iccid.as_deref(),
        Some("0089000000000000001"),
        "leading zeros kept"
    );
    assert_eq!(view.state.usage.total_volume, Some(53_687_091_200));
    assert_eq!(view.state.usage.remain, Some(5_351_505_742));
    assert_eq!(
        view.state.usage.last_update_time.map(|t| t.to_rfc3339()),
        Some("2025-07-21T09:38:25+00:00".to_string())
    );
    assert_eq!(
        view.state.expires_at.map(|t| t.to_rfc3339()),
        Some("2099-04-23T17:13:19+00:00".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_field_is_still_accepted() {
    let app = spawn_app("").await;
    let body = r#"{"notifyType":"DATA_USAGE","notifyId":"u1","content":{"esimTranNo":"T-BAD","totalVolume":"lots","remain":12}}"#;
    assert_eq!(app.post(body).await, (200, json!({"status": "accepted"})));
    let dir = app.stop().await;
    let store = open_store(&dir.path().join("data"));
    let view = store
        .esim_view(Some(IdKind::EsimTranNo), "T-BAD")
        .unwrap()
        .unwrap();
    let log: Vec<String> = view.decisions.iter().map(|d| d.detail.clone()).collect();
    assert!(
        log.iter().any(|d| d.contains("unreadable=totalVolume")),
        "{log:?}"
    );
    assert!(store.outbox().unwrap().is_empty());
}

/// serde_json refuses `1e400` ("number out of range") while parsing, which
/// made the whole delivery a 400; it is an unreadable field (SPEC §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_beyond_any_float_is_an_unreadable_field_not_a_400() {
    let app = spawn_app("").await;
    let (s, v) = app
        .bind(json!({"email": "ana@example.com", "esimTranNo": "T-HUGE"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let body = r#"{"notifyType":"DATA_USAGE","notifyId":"huge-1","content":{"esimTranNo":"T-HUGE","totalVolume":1e400,"orderUsage":-1E+999,"remain":12,"remainThreshold":0.1}}"#;
    assert_eq!(app.post(body).await, (200, json!({"status": "accepted"})));
    assert_eq!(app.post(body).await, (200, json!({"status": "duplicate"})));
    let (s, view) = app.get_json(&app.admin_url("/admin/esims/T-HUGE")).await;
    assert_eq!(s, 200, "{view}");
    let details: Vec<String> = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("unreadable=totalVolume")),
        "{details:?}"
    );
    // No data notice from figures that cannot be read.
    let queued = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["what"] == "queued")
        .count();
    assert_eq!(queued, 0, "{view}");
    // A body that is broken for another reason is still a 400.
    let broken = r#"{"notifyType":"DATA_USAGE","content":{"totalVolume":1e400,}}"#;
    let (s, v) = app.post(broken).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_iccid_with_a_new_esim_tran_no_is_a_new_esim() {
    let app = spawn_app("").await;
    let first = esim_status("r1", "OLD-TRAN", "8910300000000000001", "IN_USE");
    let second = data_usage("r2", "NEW-TRAN", "8910300000000000001", 1000, 400);
    assert_eq!(app.post(&first).await.0, 200);
    assert_eq!(app.post(&second).await.0, 200);
    let dir = app.stop().await;
    let store = open_store(&dir.path().join("data"));
    let old = store
        .esim_view(Some(IdKind::EsimTranNo), "OLD-TRAN")
        .unwrap()
        .unwrap();
    let new = store
        .esim_view(Some(IdKind::EsimTranNo), "NEW-TRAN")
        .unwrap()
        .unwrap();
    assert_ne!(old.id, new.id);
    assert_eq!(
        new.state.esim_status, None,
        "the old eSIM's state does not carry over"
    );
    let by_iccid = store
        .esim_view(Some(IdKind::Iccid), "8910300000000000001")
        .unwrap()
        .unwrap();
    assert_eq!(by_iccid.id, new.id, "the ICCID now names the new eSIM");
}

/// 64 clients at once, each a distinct event: all acknowledged, and every
/// acknowledged event is on disk after `kill -9` of the real binary.
#[test]
fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports();
    let extra = format!(
        "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[email]\ntransport = \"file\"\n"
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, test_config_toml(dir.path(), 9, &extra)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_esim-notify"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Vec<String> = rt.block_on(async {
        let http = reqwest::Client::new();
        let ready = until_ready(&http, public, Duration::from_secs(20)).await;
        assert!(ready, "server did not become ready");
        let url = format!("http://127.0.0.1:{public}/webhooks/esimaccess");
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let tran = format!("KILL{i:04}");
                    let body =
                        data_usage(&format!("kill-{i}"), &tran, &format!("89{i:018}"), 1000, 50);
                    let r = http.post(url).body(body).send().await.unwrap();
                    let status = r.status().as_u16();
                    let answer: Value = r.json().await.unwrap();
                    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
                    tran
                })
            })
            .collect();
        let mut acked = Vec::new();
        for t in tasks {
            acked.push(t.await.unwrap());
        }
        acked
    });
    child.kill().unwrap(); // SIGKILL: no chance to flush on the way out
    child.wait().unwrap();
    assert_eq!(acked.len(), 64);
    let store = open_store(&dir.path().join("data"));
    for tran in acked {
        let view = store.esim_view(Some(IdKind::EsimTranNo), &tran).unwrap();
        assert!(view.is_some(), "acknowledged event for {tran} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_on_both_listeners() {
    let app = spawn_app("").await;
    for base in [app.public, app.admin] {
        let (status, _) = app.get_json(&format!("http://{base}/healthz")).await;
        assert_eq!(status, 200);
        let (status, body) = app.get_json(&format!("http://{base}/readyz")).await;
        assert_eq!(status, 200, "{body}");
    }
    app.stop().await;
}

/// A flood of refused deliveries writes a bounded number of WARN lines (one
/// per reason per second, each counting those left out), with reason and sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_webhooks_writes_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(dir.path(), "[security]\nallowed_ips = [\"3.1.131.226\"]\n").await;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    for i in 0..300 {
        let body = data_usage(&format!("flood-{i}"), "F1", "8900000000000000001", 100, 5);
        let r = http
            .post(server.webhook_url())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let seconds = started.elapsed().as_secs();
    let log = server.kill();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("webhook refused"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("sender=127.0.0.1"), "{}", lines[0]);
    assert!(
        lines[0].contains("sender address not allowed"),
        "{}",
        lines[0]
    );
    // One line per second at most (plus the first), whatever the rate.
    assert!(
        lines.len() as u64 <= seconds + 2,
        "{} lines in {seconds}s",
        lines.len()
    );
}

/// Text from outside cannot forge a log line: a newline in a forgotten
/// address stays inside the one line that logs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_forgotten_address_does_not_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(dir.path(), "").await;
    // Only an orderNo: the log still names the eSIM by its esimTranNo.
    let http = reqwest::Client::new();
    let first = data_usage("named-1", "T-LOG", "8900000000000000777", 100, 50);
    assert_eq!(
        http.post(server.webhook_url())
            .body(first)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let by_order = r#"{"notifyType":"DATA_USAGE","notifyId":"named-2","content":{"orderNo":"BT-LOG","totalVolume":100,"remain":40}}"#;
    assert_eq!(
        http.post(server.webhook_url())
            .body(by_order)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let forged = "2026-01-01T00:00:00.000000Z  INFO esim_notify: FORGED";
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/admin/customers/forget",
            server.admin
        ))
        .json(&json!({ "email": format!("ana@example.com\n{forged}") }))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status() == 400,
        "{}",
        r.status()
    );
    let log = server.kill();
    let webhooks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("notify_id=named-"))
        .collect();
    assert_eq!(webhooks.len(), 2, "{log}");
    for line in webhooks {
        assert!(line.contains("esim=T-LOG"), "{line}");
        assert!(!line.contains("Some("), "{line}");
    }
    assert!(
        log.contains("FORGED"),
        "the address is logged (masked):\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line:\n{log}"
    );
}
