//! Keeps working on a bad day (issue 18): a backup of a large store does not
//! stop intake nor the public listener; a record that does not decode does
//! not stop the server from starting.

use std::time::{Duration, Instant};

use esim_notify::event::Event;
use esim_notify::store::Space;
use serde_json::json;

use crate::helpers::*;

/// A store of some size, made quickly through the engine: deliveries about
/// many eSIMs, each carrying a bulky field (kept with the event).
async fn fill(app: &TestApp, deliveries: usize, pad: usize) {
    let engine = app.engine.clone();
    let rules = esim_notify::live::rules_from(&app.config);
    tokio::task::spawn_blocking(move || {
        let padding = "x".repeat(pad);
        let now = chrono::Utc::now();
        for i in 0..deliveries {
            let body = json!({
                "notifyType": "DATA_USAGE",
                "notifyId": format!("fill-{i}"),
                "content": {
                    "esimTranNo": format!("F{i}"), "iccid": format!("89{i:018}"),
                    "totalVolume": 1000, "orderUsage": 100, "remain": 900,
                    "note": padding,
                }
            });
            let event = Event::from_value(&body).unwrap();
            engine.ingest(&event, &body, &rules, now).unwrap();
        }
        engine.flush().unwrap();
    })
    .await
    .unwrap();
}

/// Issue 18: the backup held the store's lock for the whole copy while
/// webhooks waited for it on actix's two workers, so `/healthz` stopped
/// answering too. Here four webhooks (one connection each, so both workers
/// get some) and a `/healthz` are sent once the copy has begun, and must all
/// be answered while the backup request is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_backup_healthz_and_webhooks_answer() {
    let app = spawn_app("").await;
    let started = Instant::now();
    fill(&app, 1_500, 24 * 1024).await;
    eprintln!("store filled in {:?}", started.elapsed());

    let target = app.dir.path().join("backup-1");
    let backup = {
        let (http, url, dir) = (
            app.http.clone(),
            app.admin_url("/admin/backup"),
            target.clone(),
        );
        tokio::spawn(async move {
            let began = Instant::now();
            let r = http
                .post(url)
                .json(&json!({ "dir": dir }))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.text().await.unwrap(),
                began.elapsed(),
            )
        })
    };
    // The copy has begun once its directory exists.
    assert!(
        eventually(Duration::from_secs(30), || {
            let t = target.clone();
            async move { t.join("db").exists() }
        })
        .await
    );
    let webhooks: Vec<_> = (0..4)
        .map(|i| {
            let (url, body) = (
                app.webhook_url(),
                data_usage(
                    &format!("during-{i}"),
                    &format!("D{i}"),
                    &format!("8944{i:015}"),
                    1000,
                    50,
                ),
            );
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let health = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.public))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    for w in webhooks {
        let (status, text) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a webhook answers")
            .unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("accepted"), "{text}");
    }
    assert!(
        !backup.is_finished(),
        "/healthz and the webhooks were answered only once the backup had ended"
    );
    let (status, text, took) = backup.await.unwrap();
    assert_eq!(status, 200, "{text}");
    eprintln!("backup took {took:?}");
    app.stop().await;
}

/// Issue 18: one queue record that does not decode stopped the server at
/// start (and systemd restarted it into the same failure). Now it is set
/// aside (metric, `GET /admin/set-aside`) and everything else starts: the
/// other queued notice is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_record_that_does_not_decode_is_set_aside_and_the_rest_starts() {
    let app = spawn_app("").await;
    // Two notices queued while sending is paused.
    let paused = app
        .http
        .post(app.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    for (email, tran, iccid) in [
        ("ana@example.com", "Q1", "8944000000000000101"),
        ("bob@example.com", "Q2", "8944000000000000102"),
    ] {
        let (status, body) = app
            .bind(json!({"email": email, "name": "Customer", "esimTranNo": tran}))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .post(&data_usage(&format!("n-{tran}"), tran, iccid, 1000, 50))
            .await;
        assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    }
    assert_eq!(app.engine.outbox().unwrap().len(), 2);
    let (port, smtp, store) = (app.smtp_port, app.smtp.clone(), app.store_path());
    let dir = app.stop().await;

    // The first queue record's bytes damaged (its version byte kept, so it
    // reaches the decoder).
    let damaged_key = {
        let storage = crate::helpers::open_storage(&store).unwrap();
        let (key, mut bytes) = storage.scan(Space::Queue, &[]).next().unwrap().unwrap();
        bytes.truncate(3);
        bytes.extend_from_slice(&[0xff; 5]);
        storage
            .run(|u| {
                u.put(Space::Queue, &key, bytes.clone());
                Ok(())
            })
            .unwrap();
        storage.flush().unwrap();
        key
    };

    let app = spawn_app_in(dir, "", port, smtp).await;
    assert_eq!(
        metric(&app, "esim_notify_records_set_aside").await,
        Some(1.0)
    );
    let (status, rows) = app.get_json(&app.admin_url("/admin/set-aside")).await;
    assert_eq!(status, 200);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["space"], "queue");
    let hex: String = damaged_key.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(rows[0]["key"], hex.as_str());
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("corrupt"),
        "{rows:?}"
    );
    // The rest of the queue is intact and goes out once sending resumes.
    assert_eq!(metric(&app, "esim_notify_outbox_depth").await, Some(1.0));
    let resumed = app
        .http
        .post(app.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await,
        "the intact notice is sent"
    );
    // The damaged one was Ana's (queued first); Bob's is the one sent.
    assert!(app.received()[0].contains("bob@example.com"));
    assert!(!app.received()[0].contains("ana@example.com"));
    // Set aside once: a restart does not count it again.
    let app = app.restart().await;
    assert_eq!(
        metric(&app, "esim_notify_records_set_aside").await,
        Some(1.0)
    );
    app.stop().await;
}
