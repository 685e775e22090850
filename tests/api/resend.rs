//! `POST /admin/esims/{id}/resend` (issue 21): an email queued again for the
//! eSIM's current recipient, through the running application, a real SMTP
//! server and the fake provider. The install email goes out with the
//! activation code the provider gives now (not the one first sent); the
//! decision log says the operator asked; each refusal answers with its
//! status and reason and queues nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_provider::{self as fake, FakeProvider};
use crate::helpers::{data_usage, eventually, spawn_app, TestApp};
use crate::install_email::check_install_email;

const ORDER: &str = "B26050110000001";
const TRAN: &str = "26050110000001";
const ICCID: &str = "8943108170000775681";
const AC_FIRST: &str = "LPA:1$rsp-eu.redteamobile.com$11111111111111111111111111111111";
const AC_NOW: &str = "LPA:1$rsp-eu.redteamobile.com$22222222222222222222222222222222";
const LIMIT: Duration = Duration::from_secs(20);
const GB: u64 = 1 << 30;

/// The provider answers every question with this one eSIM and the
/// activation code `ac` holds at the time of asking.
async fn provider(ac: Arc<Mutex<String>>) -> FakeProvider {
    FakeProvider::start_with(vec![], move |_| {
        let code = ac.lock().unwrap().clone();
        fake::page(vec![fake::esim(TRAN, ICCID, ORDER, &code)], 1, 1)
    })
    .await
}

async fn app_with(fake: &FakeProvider) -> TestApp {
    spawn_app(&format!(
        "[provider]\naccess_code = \"fake-code\"\nbase_url = \"{}\"\ntimeout = \"1s\"\n",
        fake.base_url
    ))
    .await
}

async fn resend(app: &TestApp, esim: &str, body: Value) -> (u16, Value) {
    let url = app.admin_url(&format!("/admin/esims/{esim}/resend"));
    app.send_json(reqwest::Method::POST, &url, body).await
}

/// `PUT /admin/suppressions/{email}` with a reason, as a script sends it.
async fn suppress(app: &TestApp, email: &str, reason: &str) {
    let r = app
        .http
        .put(app.admin_url(&format!("/admin/suppressions/{email}")))
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn order_status() -> String {
    json!({
        "notifyType": "ORDER_STATUS", "notifyId": "o-1",
        "eventGenerateTime": "2026-05-01T10:00:00Z",
        "content": {"orderNo": ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": "tx-resend"}
    })
    .to_string()
}

fn header(raw: &str, name: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name).unwrap_or_default()
}

async fn decisions(app: &TestApp, esim: &str) -> Vec<Value> {
    let (s, v) = app
        .get_json(&app.admin_url(&format!("/admin/esims/{esim}")))
        .await;
    assert_eq!(s, 200, "{v}");
    v["decisions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_install_email_is_resent_with_the_code_the_provider_gives_now() {
    let ac = Arc::new(Mutex::new(AC_FIRST.to_string()));
    let fake = provider(ac.clone()).await;
    let app = app_with(&fake).await;
    let (s, _) = app
        .bind(json!({"email": "ana@example.com", "name": "Ana", "transactionId": "tx-resend"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.post(&order_status()).await.0, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let first = app.received()[0].clone();
    check_install_email(&first, AC_FIRST);

    // The provider now gives another code (say the profile was re-issued);
    // the customer lost the first email.
    *ac.lock().unwrap() = AC_NOW.to_string();
    let asked_before = fake.count();
    let (s, answer) = resend(&app, TRAN, json!({"template": "esim_ready"})).await;
    assert_eq!(s, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["template"], "esim_ready");
    assert_eq!(answer["recipient"], "a***@example.com");
    let notice = answer["notice"].as_u64().expect("the queued notice's id");

    assert!(
        eventually(LIMIT, || async { app.received().len() == 2 }).await,
        "the resent install email arrives"
    );
    let again = app.received()[1].clone();
    assert!(again.contains("To: Ana <ana@example.com>"), "{again}");
    check_install_email(&again, AC_NOW);
    assert!(
        !again.contains("11111111111111111111111111111111"),
        "not the old code"
    );
    // A new Message-ID: a mailbox that kept (or deleted) the first takes it.
    assert_ne!(header(&first, "Message-ID"), header(&again, "Message-ID"));
    // The provider was asked about this eSIM, not about its order.
    let asked: Vec<_> = fake.requests().into_iter().skip(asked_before).collect();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|r| r.body["esimTranNo"] == TRAN),
        "{asked:?}"
    );

    let log = decisions(&app, TRAN).await;
    let about: Vec<&Value> = log
        .iter()
        .filter(|d| d["notice"].as_u64() == Some(notice))
        .collect();
    let says = |kind: &str, text: &str| {
        about
            .iter()
            .any(|d| d["what"] == kind && d["detail"].as_str().unwrap().contains(text))
    };
    assert!(says("note", "requested by the operator"), "{about:?}");
    assert!(says("note", "activation code looked up again"), "{about:?}");
    assert!(says("sent", "a***@example.com"), "{about:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_email_is_resent_as_it_stands_to_the_address_bound_now() {
    let app = spawn_app("").await;
    app.bind(json!({"email": "old@example.com", "esimTranNo": "RS1"}))
        .await;
    let (s, _) = app
        .post(&data_usage(
            "r-10",
            "RS1",
            "8900000000000001201",
            5 * GB,
            GB / 2,
        ))
        .await;
    assert_eq!(s, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    // Support corrects the address, then resends.
    app.bind(json!({"email": "new@example.com", "esimTranNo": "RS1"}))
        .await;
    let (s, answer) = resend(&app, "RS1", json!({"template": "data_usage"})).await;
    assert_eq!(s, 202, "{answer}");
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    let (first, again) = (&app.received()[0], &app.received()[1]);
    assert!(again.contains("To: new@example.com"), "{again}");
    assert_eq!(header(first, "Subject"), header(again, "Subject"));
    assert_ne!(header(first, "Message-ID"), header(again, "Message-ID"));
    // By the ICCID too: any identifier names the eSIM.
    let (s, _) = resend(
        &app,
        "8900000000000001201",
        json!({"template": "data_usage"}),
    )
    .await;
    assert_eq!(s, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why_and_queue_nothing() {
    let app = spawn_app("").await;
    app.bind(json!({"email": "bo@example.com", "esimTranNo": "RS2"}))
        .await;
    app.post(&data_usage(
        "r2-10",
        "RS2",
        "8900000000000001202",
        5 * GB,
        GB / 2,
    ))
    .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    // Parked: a known eSIM nobody is bound to.
    app.post(&data_usage(
        "r3-10",
        "RS3",
        "8900000000000001203",
        5 * GB,
        GB / 2,
    ))
    .await;

    let cases = [
        (
            "NOPE",
            json!({"template": "data_usage"}),
            404,
            "no eSIM known",
        ),
        (
            "RS2",
            json!({"template": "nonsense"}),
            400,
            "unknown template",
        ),
        ("RS2", json!({}), 400, "template"),
        (
            "RS2",
            json!({"template": "esim_activated"}),
            400,
            "never queued",
        ),
        (
            "RS2",
            json!({"template": "validity_usage"}),
            400,
            "nothing to resend",
        ),
        // Without the provider, no activation code can be looked up.
        ("RS2", json!({"template": "esim_ready"}), 400, "access_code"),
        (
            "RS3",
            json!({"template": "data_usage"}),
            400,
            "no customer is bound",
        ),
    ];
    for (esim, body, status, reason) in cases {
        let (s, v) = resend(&app, esim, body.clone()).await;
        assert_eq!(s, status, "{esim} {body}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{esim} {body}: {error}");
    }

    // Suppressed by the operator: stops every email, so 409 with the why.
    suppress(&app, "bo@example.com", "asked by phone").await;
    let (s, v) = resend(&app, "RS2", json!({"template": "data_usage"})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["suppression"]["reason"], "operator");
    assert!(
        v["error"].as_str().unwrap().contains("asked by phone"),
        "{v}"
    );

    // Unsubscribed: a reminder stays stopped (409) …
    suppress(&app, "bo@example.com", "unsubscribed").await;
    let (s, _) = resend(&app, "RS2", json!({"template": "data_usage"})).await;
    assert_eq!(s, 409);

    // … and nothing was queued or sent by any refusal.
    let (_, outbox) = app.get_json(&app.admin_url("/admin/outbox")).await;
    assert_eq!(outbox, json!([]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_customer_still_gets_a_resent_install_email() {
    let ac = Arc::new(Mutex::new(AC_FIRST.to_string()));
    let fake = provider(ac.clone()).await;
    let app = app_with(&fake).await;
    app.bind(json!({"email": "cy@example.com", "transactionId": "tx-resend"}))
        .await;
    app.post(&order_status()).await;
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    suppress(&app, "cy@example.com", "unsubscribed").await;
    // esim_ready is a service email (email.essential): it still goes.
    let (s, v) = resend(&app, ICCID, json!({"template": "esim_ready"})).await;
    assert_eq!(s, 202, "{v}");
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    // Bounced: the provider may close the account; nothing goes.
    suppress(&app, "cy@example.com", "bounced").await;
    let (s, v) = resend(&app, ICCID, json!({"template": "esim_ready"})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["suppression"]["reason"], "bounced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_no_longer_true_is_refused_not_queued_to_be_dropped() {
    let app = spawn_app("").await;
    app.bind(json!({"email": "di@example.com", "esimTranNo": "RS4"}))
        .await;
    app.post(&data_usage(
        "r4-10",
        "RS4",
        "8900000000000001204",
        5 * GB,
        GB / 2,
    ))
    .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let (s, _) = resend(&app, "RS4", json!({"template": "data_usage"})).await;
    assert_eq!(s, 202, "true while the plan runs");
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    // Cancelled: the data email is no longer true; the cancellation is.
    app.post(&crate::helpers::esim_status(
        "r4-c",
        "RS4",
        "8900000000000001204",
        "CANCEL",
    ))
    .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 3 }).await);
    let (s, v) = resend(&app, "RS4", json!({"template": "data_usage"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no longer true"),
        "{v}"
    );
    let (s, v) = resend(&app, "RS4", json!({"template": "esim_cancelled"})).await;
    assert_eq!(s, 202, "{v}");
    assert!(eventually(LIMIT, || async { app.received().len() == 4 }).await);
}
