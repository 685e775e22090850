//! A failed sync is fatal (issue 18), proved on the built binary with the
//! test-only fault injection `ESIM_NOTIFY_UNSAFE_FAIL_SYNC`: the sync that
//! should make a webhook durable fails, the webhook is answered 503, the
//! process stops on its own with a non-zero status, and after a restart the
//! provider's retry of the same delivery is `accepted` (the event never
//! reached the disk, so `duplicate` would lose it) and its email goes once.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::smtp::mailin_server;

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_server_and_the_retry_is_accepted_after_a_restart() {
    if crate::helpers::sled_only("a failed sled fsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, smtp) = mailin_server();
    let http = reqwest::Client::new();
    // Sync 1 makes the binding durable; sync 2, the webhook's, fails.
    let mut server = Binary::serve_smtp_env(
        dir.path(),
        smtp_port,
        "",
        &[(esim_notify::store::flusher::UNSAFE_FAIL_SYNC, "2")],
    )
    .await;
    let bound = http
        .put(server.admin_url("/admin/customers"))
        .json(&json!({"email": "ana@example.com", "name": "Ana", "esimTranNo": "T1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 200);
    let body = data_usage("fs-1", "T1", "8944000000000000017", 10 * GIB, GIB);

    let answer = http
        .post(server.webhook_url())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "{:?}", answer.text().await);
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server stops by itself after a failed sync");
    assert!(!status.success(), "a non-zero exit: {status:?}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert_eq!(
        log.matches("STORE SYNC FAILED").count(),
        1,
        "the reason is logged once:\n{log}"
    );
    assert!(log.contains("injected failure"), "{log}");
    assert!(smtp.received().is_empty(), "nothing was sent for it");

    // Restarted (as systemd does), without the fault: the store recovers
    // from its log, where the refused delivery never arrived.
    let server = Binary::serve_smtp(dir.path(), smtp_port, "").await;
    let answer = http
        .post(server.webhook_url())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["status"], "accepted", "{json}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let smtp = smtp.clone();
            async move { smtp.received().len() == 1 }
        })
        .await,
        "its email is sent"
    );
    // Once: the queue is empty, and a further retry is a duplicate.
    let outbox = server.admin_url("/admin/outbox");
    assert!(
        eventually(Duration::from_secs(20), || {
            let (http, outbox) = (http.clone(), outbox.clone());
            async move {
                http.get(outbox)
                    .send()
                    .await
                    .unwrap()
                    .json::<Vec<serde_json::Value>>()
                    .await
                    .unwrap()
                    .is_empty()
            }
        })
        .await
    );
    let again = http
        .post(server.webhook_url())
        .body(body)
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = again.json().await.unwrap();
    assert_eq!(json["status"], "duplicate", "{json}");
    assert_eq!(smtp.received().len(), 1, "sent once");
    drop(server);
}
