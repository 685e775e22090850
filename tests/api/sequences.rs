//! Issue 3's sequences end to end: posted over HTTP to the running app
//! (sending paused so the queue stays put), read back from `/admin/outbox`.


use crate::helpers::*;
use serde_json::{json, Value};

fn data(id: &str, tran: &str, total: u64, remain: u64) -> String {
    data_usage(id, tran, &format!("89{:0>17}", tran.len()), total, remain)
}

fn status(id: &str, tran: &str, s: &str) -> String {
    esim_status(id, tran, &format!("89{:0>17}", tran.len()), s)
}

fn validity(id: &str, tran: &str, expires: &str) -> String {
    json!({"notifyType":"VALIDITY_USAGE","notifyId":id,"content":{"esimTranNo":tran,"remain":1,"totalDuration":30,"durationUnit":"DAY","expiredTime":expires}}).to_string()
}

/// The outbox rows of one eSIM as (template, level), oldest first.
fn rows(outbox: &Value, tran: &str) -> Vec<(String, Option<f64>)> {
    outbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["esim"] == tran)
        .map(|r| {
            (
                r["template"].as_str().unwrap().to_string(),
                r["level"].as_f64(),
            )
        })
        .collect()
}

fn t(name: &str, level: Option<f64>) -> (String, Option<f64>) {
    (name.to_string(), level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_queue_what_spec_section_6_says() {
    let app = spawn_app("").await;
    assert_eq!(
        app.http
            .post(app.admin_url("/admin/pause"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    type Expected = Vec<(String, Option<f64>)>;
    let sequences: Vec<(&str, Vec<String>, Expected)> = vec![
        (
            "S1",
            vec![
                data("s1a", "S1", 100, 50),
                data("s1b", "S1", 100, 20),
                data("s1c", "S1", 100, 10),
            ],
            vec![
                t("data_usage", Some(0.5)),
                t("data_usage", Some(0.2)),
                t("data_usage", Some(0.1)),
            ],
        ),
        (
            "S22",
            vec![data("s2a", "S22", 100, 10), data("s2b", "S22", 100, 20)],
            vec![t("data_usage", Some(0.1))],
        ),
        (
            "S333",
            vec![
                data("s3a", "S333", 100, 10),
                data("s3b", "S333", 200, 20),
                data("s3c", "S333", 100, 5),
            ],
            vec![t("data_usage", Some(0.1)), t("data_usage", Some(0.1))],
        ),
        (
            "S4444",
            vec![
                status("s4a", "S4444", "USED_UP"),
                data("s4b", "S4444", 100, 10),
            ],
            vec![t("esim_used_up", None)],
        ),
        (
            "S55555",
            vec![
                status("s5a", "S55555", "CANCEL"),
                validity("s5b", "S55555", "2099-01-01T00:00:00Z"),
            ],
            vec![t("esim_cancelled", None)],
        ),
        (
            "S666666",
            vec![
                status("s6a", "S666666", "USED_EXPIRED"),
                status("s6b", "S666666", "UNUSED_EXPIRED"),
            ],
            vec![t("esim_expired", None)],
        ),
    ];
    for (tran, _, _) in &sequences {
        let (status, body) = app
            .bind(json!({"email": format!("{tran}@example.com"), "esimTranNo": tran}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (_, bodies, _) in &sequences {
        for b in bodies {
            assert_eq!(app.post(b).await, (200, json!({"status": "accepted"})));
        }
    }
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    for (tran, _, want) in &sequences {
        assert_eq!(&rows(&outbox, tran), want, "sequence {tran}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_esims_fifty_twenty_ten_park_and_one_binding_releases_only_ten() {
    let app = spawn_app("").await;
    assert_eq!(
        app.http
            .post(app.admin_url("/admin/pause"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    for (i, remain) in [50, 20, 10].into_iter().enumerate() {
        assert_eq!(
            app.post(&data(&format!("p{i}"), "PK1", 100, remain))
                .await
                .0,
            200
        );
    }
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    assert!(rows(&outbox, "PK1").is_empty());
    let (status, body) = app
        .bind(json!({"email": "late@example.com", "esimTranNo": "PK1"}))
        .await;
    assert_eq!(
        (
            status,
            body["released"].as_u64(),
            body["superseded"].as_u64()
        ),
        (200, Some(1), Some(2))
    );
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    assert_eq!(rows(&outbox, "PK1"), vec![t("data_usage", Some(0.1))]);
    app.stop().await;
}
