//! Keeps working on a bad day (issue 18): a backup of a large store does not
//! stop intake nor the public listener.

use std::time::{Duration, Instant};

use esim_notify::event::Event;
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
