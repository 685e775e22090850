//! Suppression reasons (issue 18, SPEC §2 and §6 "Suppressed address"): an
//! address that unsubscribed from the reminders still gets the service
//! emails of `email.essential` (the install email of its next order, a
//! cancellation), without `List-Unsubscribe`; one that bounced, complained
//! or that the operator stopped gets nothing. Over HTTP on loopback, with
//! the fake provider and a real SMTP server.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_provider::{self as fake, FakeProvider, Reply, Seen};
use crate::helpers::{
    data_usage, esim_status, eventually, spawn_app, spawn_app_with_smtp, TestApp,
};
use crate::smtp::mailin_server;

const LIMIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;
const ORDER: &str = "B26120412000001";
const TX: &str = "tx-second-order";
const NEW_ESIM: &str = "26120412000001";
const NEW_ICCID: &str = "8943108170000775681";
const AC: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";

/// The provider knows one eSIM in the second order.
fn second_order(_: &Seen) -> Reply {
    fake::page(vec![fake::esim(NEW_ESIM, NEW_ICCID, ORDER, AC)], 1, 1)
}

fn got_resource(notify_id: &str) -> String {
    json!({
        "notifyType": "ORDER_STATUS", "notifyId": notify_id,
        "eventGenerateTime": "2026-12-04T12:00:00Z",
        "content": {"orderNo": ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": TX}
    })
    .to_string()
}

/// A header of a received message, unfolded.
pub fn header(raw: &str, name: &str) -> Option<String> {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name)
}

/// The one-click link of a received message's `List-Unsubscribe`.
pub fn one_click_link(raw: &str) -> String {
    let h = header(raw, "List-Unsubscribe").expect("List-Unsubscribe header");
    h.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

pub async fn decisions(app: &TestApp, id: &str) -> Vec<Value> {
    let (_, view) = app
        .get_json(&app.admin_url(&format!("/admin/esims/{id}")))
        .await;
    view["decisions"].as_array().cloned().unwrap_or_default()
}

/// Waits until the eSIM's decision log holds a line of kind `what` for `template`.
async fn decided(app: &TestApp, id: &str, what: &str, template: &str) -> Option<Value> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let found = decisions(app, id)
            .await
            .into_iter()
            .find(|d| d["what"] == what && d["template"] == template);
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_from_reminders_still_lets_the_install_email_of_the_next_order_through() {
    let fake = FakeProvider::start_with(vec![], second_order).await;
    let app = spawn_app(&format!(
        "[email]\nlist_unsubscribe = \"one-click\"\n\
         [provider]\naccess_code = \"fake-code\"\nbase_url = \"{}\"\ntimeout = \"1s\"\n",
        fake.base_url
    ))
    .await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "U1"}))
        .await;
    app.post(&data_usage(
        "d-1",
        "U1",
        "8900000000000000301",
        10 * GIB,
        GIB,
    ))
    .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let reminder = app.received().remove(0);
    let link = one_click_link(&reminder);
    let r = app
        .http
        .post(&link)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The list says why and since when.
    let (_, list) = app.get_json(&app.admin_url("/admin/suppressions")).await;
    assert_eq!(list[0]["email"], "ana@example.com", "{list}");
    assert_eq!(list[0]["reason"], "unsubscribed", "{list}");
    let since = list[0]["since"].as_str().expect("since");
    assert!(
        chrono::DateTime::parse_from_rfc3339(since).is_ok(),
        "{since}"
    );

    // The next purchase: the install email comes, without List-Unsubscribe.
    app.bind(json!({"email": "ana@example.com", "transactionId": TX}))
        .await;
    assert_eq!(app.post(&got_resource("o-1")).await.0, 200);
    assert!(
        eventually(LIMIT, || async { app.received().len() == 2 }).await,
        "the install email arrives: {:?}",
        decisions(&app, TX).await
    );
    let install = app.received().remove(1);
    assert!(install.contains("rsp-eu.redteamobile.com"), "{install}");
    assert_eq!(header(&install, "List-Unsubscribe"), None, "{install}");
    assert_eq!(header(&install, "List-Unsubscribe-Post"), None);
    let queued = decided(&app, NEW_ESIM, "queued", "esim_ready")
        .await
        .expect("queued");
    assert!(
        queued["detail"]
            .as_str()
            .unwrap()
            .contains("unsubscribed but esim_ready is a service email"),
        "{queued}"
    );

    // A cancellation is a service email too.
    app.post(&esim_status("c-1", "U1", "8900000000000000301", "CANCEL"))
        .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 3 }).await);
    let cancelled = app.received().remove(2);
    assert_eq!(header(&cancelled, "List-Unsubscribe"), None, "{cancelled}");

    // A reminder for the new eSIM is not.
    app.post(&data_usage("d-2", NEW_ESIM, NEW_ICCID, 10 * GIB, GIB))
        .await;
    let suppressed = decided(&app, NEW_ESIM, "suppressed", "data_usage")
        .await
        .expect("the reminder is suppressed");
    assert!(
        suppressed["detail"]
            .as_str()
            .unwrap()
            .contains("unsubscribed"),
        "{suppressed}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.received().len(), 3, "no reminder");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_bounced_gets_neither_reminders_nor_service_emails() {
    let (port, smtp) = mailin_server();
    smtp.0
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 <bob@example.com>: user unknown"));
    let app = spawn_app_with_smtp("", port, smtp).await;
    app.bind(json!({"email": "bob@example.com", "esimTranNo": "B1"}))
        .await;
    app.post(&data_usage(
        "d-1",
        "B1",
        "8900000000000000401",
        10 * GIB,
        GIB,
    ))
    .await;
    decided(&app, "B1", "dead", "data_usage")
        .await
        .expect("dead");
    let (status, s) = app
        .get_json(&app.admin_url("/admin/suppressions/bob@example.com"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(s["reason"], "bounced", "{s}");
    assert!(
        s["detail"].as_str().unwrap_or("").contains("user unknown"),
        "{s}"
    );

    // The relay would accept now: still nothing goes, not even a service email.
    app.post(&esim_status("c-1", "B1", "8900000000000000401", "CANCEL"))
        .await;
    let d = decided(&app, "B1", "suppressed", "esim_cancelled")
        .await
        .expect("suppressed");
    assert!(d["detail"].as_str().unwrap().contains("bounced"), "{d}");
    assert!(app.received().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_suppression_stops_service_emails_too() {
    let app = spawn_app("").await;
    let url = app.admin_url("/admin/suppressions/carol@example.com");
    let r = app.http.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["reason"], "operator", "{s}");
    // Free text is the operator's note, the reason stays one of the four.
    let r = app
        .http
        .put(&url)
        .json(&json!({"reason": "asked by phone"}))
        .send()
        .await
        .unwrap();
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        (&s["reason"], &s["detail"]),
        (&json!("operator"), &json!("asked by phone"))
    );

    app.bind(json!({"email": "carol@example.com", "esimTranNo": "C1"}))
        .await;
    app.post(&esim_status("c-1", "C1", "8900000000000000501", "CANCEL"))
        .await;
    decided(&app, "C1", "suppressed", "esim_cancelled")
        .await
        .expect("suppressed");
    assert!(app.received().is_empty());
    app.stop().await;
}
