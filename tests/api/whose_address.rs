//! Whose address (issue 18, SPEC §6 and §4 `replaced`): a notice goes to the
//! recipient bound to its eSIM when it is sent. Correcting an address moves
//! every queued notice, the decision log says so, and `PUT /admin/customers`
//! names each identifier it took from another address (masked).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{data_usage, eventually, spawn_app, TestApp};

const GIB: u64 = 1 << 30;
const LIMIT: Duration = Duration::from_secs(20);

async fn put_customer(app: &TestApp, body: Value) -> Value {
    let (status, v) = app.bind(body).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_address_takes_the_queued_notices_and_the_answer_names_what_it_replaced() {
    let app = spawn_app("").await;
    let v = put_customer(
        &app,
        json!({"email": "mia@old.example", "esimTranNo": "W1", "iccid": "8900000000000000701"}),
    )
    .await;
    assert_eq!(
        v,
        json!({"status": "bound", "released": 0, "superseded": 0, "replaced": []})
    );
    // The same address again replaces nothing.
    let v = put_customer(
        &app,
        json!({"email": "MIA@old.example", "esimTranNo": "W1"}),
    )
    .await;
    assert_eq!(v["replaced"], json!([]), "{v}");

    let r = app
        .http
        .post(app.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.post(&data_usage(
        "d-1",
        "W1",
        "8900000000000000701",
        10 * GIB,
        GIB,
    ))
    .await;
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    assert_eq!(outbox.as_array().unwrap().len(), 1, "{outbox}");

    let v = put_customer(
        &app,
        json!({"email": "mia@example.com", "esimTranNo": "W1", "iccid": "8900000000000000701"}),
    )
    .await;
    assert_eq!(
        v["replaced"],
        json!([
            // W1 was bound again as MIA@old.example: the same address, not a replacement.
            {"identifier": "esimTranNo", "value": "W1", "email": "M***@old.example"},
            {"identifier": "iccid", "value": "8900000000000000701", "email": "m***@old.example"},
        ]),
        "{v}"
    );
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    let shown = outbox[0]["recipient"].as_str().unwrap().to_string();
    assert!(
        shown.contains("example.com") && !shown.contains("old"),
        "{outbox}"
    );

    let r = app
        .http
        .post(app.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let mail = app.received().remove(0);
    assert!(mail.contains("mia@example.com"), "{mail}");
    assert!(!mail.contains("old.example"), "{mail}");
    let (_, view) = app.get_json(&app.admin_url("/admin/esims/W1")).await;
    let log = view["decisions"].as_array().unwrap();
    assert!(
        log.iter().any(|d| d["detail"]
            .as_str()
            .unwrap_or("")
            .contains("recipient changed from M***@old.example to m***@example.com")),
        "{view}"
    );
    app.stop().await;
}

/// A search for an address whose eSIMs now go to someone else says so,
/// instead of a blank page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_search_for_an_address_that_receives_nothing_now_says_why() {
    let app = spawn_app("").await;
    put_customer(
        &app,
        json!({"email": "ana@example.com", "iccid": "8900000000000000801"}),
    )
    .await;
    app.post(&data_usage(
        "d-1",
        "S1",
        "8900000000000000801",
        10 * GIB,
        GIB,
    ))
    .await;
    // Bob is bound by the esimTranNo, which comes first in lookup order.
    put_customer(
        &app,
        json!({"email": "bob@example.com", "esimTranNo": "S1"}),
    )
    .await;
    let r = app
        .http
        .get(app.admin_url("/admin/esims?q=ana@example.com"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let html = r.text().await.unwrap();
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("id=\"search-error\""), "{html}");
    assert!(
        html.contains("each eSIM it is bound to goes to another address"),
        "{html}"
    );
    assert!(html.contains("b***@example.com"), "{html}");
    app.stop().await;
}
