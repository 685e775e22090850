//! The provider's API in the running application (issue 11): ORDER_STATUS →
//! one install email per eSIM of the order, plan names in every email, and
//! what happens while the provider cannot answer. The application runs as
//! production starts it (`spawn_app`), against a fake of the provider's API
//! served on loopback by the test and a real SMTP server.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_provider::{self as fake, FakeProvider, Reply, Seen};
use crate::helpers::{eventually, spawn_app, TestApp};
use crate::install_email::check_install_email;

const ORDER: &str = "B26042217160011";
const TX: &str = "7544949834056-1-TR_50_30";
const AC_A: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";
const AC_B: &str = "LPA:1$smdp.example.org$K2-1X9Y7Z-0QW3E5";
const LIMIT: Duration = Duration::from_secs(20);

fn order_status(notify_id: &str) -> String {
    json!({
        "notifyType": "ORDER_STATUS", "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:16:34Z",
        "content": {"orderNo": ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": TX}
    })
    .to_string()
}

/// The two eSIMs of the order, as the provider lists them.
fn the_order() -> Reply {
    fake::page(
        vec![
            fake::esim("26042217160001", "8943108170000775671", ORDER, AC_A),
            fake::esim("26042217160002", "8943108170000775672", ORDER, AC_B),
        ],
        1,
        2,
    )
}

/// Answers by what was asked: the order, or one of its eSIMs.
fn by_request(seen: &Seen) -> Reply {
    match seen.body["esimTranNo"].as_str() {
        Some(t) => fake::page(
            vec![fake::esim(t, "8943108170000775679", ORDER, AC_A)],
            1,
            1,
        ),
        None => the_order(),
    }
}

/// The application with the provider configured and the shipped templates;
/// `extra` continues the `[provider]` table.
async fn app_with(fake: &FakeProvider, extra: &str) -> TestApp {
    spawn_app(&format!(
        "[provider]\naccess_code = \"fake-code\"\nbase_url = \"{}\"\ntimeout = \"1s\"\n{extra}",
        fake.base_url
    ))
    .await
}

async fn outbox(app: &TestApp) -> Vec<Value> {
    app.get_json(&app.admin_url("/admin/outbox"))
        .await
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn dead(app: &TestApp) -> Vec<Value> {
    app.get_json(&app.admin_url("/admin/dead"))
        .await
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn subject(raw: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), "Subject").unwrap()
}

/// The text part of a received email.
fn text(raw: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mail.subparts[0].get_body().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_sends_one_install_email_per_esim_once() {
    let fake = FakeProvider::start_with(vec![], by_request).await;
    let app = app_with(&fake, "").await;
    // The customer is bound by the transactionId of their order.
    let (status, _) = app
        .bind(json!({"email": "ana@example.com", "name": "Ana", "transactionId": TX}))
        .await;
    assert_eq!(status, 200);

    assert_eq!(app.post(&order_status("o1")).await.0, 200);
    assert!(
        eventually(LIMIT, || async { app.received().len() == 2 }).await,
        "two install emails: {:?}",
        outbox(&app).await
    );
    let received = app.received();
    let mut codes = Vec::new();
    for raw in &received {
        let ac = if raw.contains("26042217160001") {
            AC_A
        } else {
            AC_B
        };
        assert_eq!(
            check_install_email(raw, ac),
            "Your eSIM is ready to install"
        );
        let text = text(raw);
        assert!(
            text.contains("Your eSIM for Spain 5GB 30Days is ready"),
            "{text}"
        );
        codes.push(ac);
    }
    codes.sort();
    assert_eq!(codes, vec![AC_A, AC_B], "one email for each eSIM");
    assert!(eventually(LIMIT, || async { outbox(&app).await.is_empty() }).await);

    // Reported again: nothing more is sent.
    let asked = fake.count();
    assert_eq!(app.post(&order_status("o2")).await.0, 200);
    let (_, view) = app
        .get_json(&app.admin_url(&format!("/admin/esims/{ORDER}")))
        .await;
    let last = view["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["detail"].as_str().unwrap().contains("already queued"),
        "{last}"
    );
    assert!(outbox(&app).await.is_empty());
    assert_eq!(fake.count(), asked, "nothing more asked of the provider");
    assert_eq!(app.received().len(), 2);

    // Each eSIM's own timeline shows its install email sent.
    for tran in ["26042217160001", "26042217160002"] {
        let (_, v) = app
            .get_json(&app.admin_url(&format!("/admin/esims/{tran}")))
            .await;
        let sent = v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["what"] == "sent" && d["template"] == "esim_ready");
        assert!(sent, "{v}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_reported_before_its_customer_is_bound_waits_parked() {
    let fake = FakeProvider::start_with(vec![], by_request).await;
    let app = app_with(&fake, "").await;
    assert_eq!(app.post(&order_status("o1")).await.0, 200);
    let (_, parked) = app.get_json(&app.admin_url("/admin/parked")).await;
    assert_eq!(parked.as_array().unwrap().len(), 1, "{parked}");
    assert_eq!(
        fake.count(),
        0,
        "the provider is asked only when there is someone to tell"
    );

    let (status, body) = app
        .bind(json!({"email": "ana@example.com", "orderNo": ORDER}))
        .await;
    assert_eq!(
        (status, body["released"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_still_being_allocated_are_asked_for_again() {
    // 200010 twice, then the order.
    let fake =
        FakeProvider::start_with(vec![fake::not_ready(), fake::not_ready()], by_request).await;
    let app = app_with(&fake, "").await;
    app.bind(json!({"email": "ana@example.com", "transactionId": TX}))
        .await;
    assert_eq!(app.post(&order_status("o1")).await.0, 200);
    assert!(
        eventually(LIMIT, || async {
            outbox(&app).await.iter().any(|r| {
                r["waiting_for"]
                    .as_str()
                    .is_some_and(|w| w.contains("being allocated"))
            })
        })
        .await,
        "the outbox says what it waits for"
    );
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);
    assert!(dead(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_activation_code_an_install_email_dies_naming_why_never_goes_out() {
    let fake =
        FakeProvider::start_with(vec![], |_| fake::refused("310211", "order not found")).await;
    let app = app_with(&fake, "[retry]\nmax_age = \"2s\"\n").await;
    app.bind(json!({"email": "ana@example.com", "transactionId": TX}))
        .await;
    assert_eq!(app.post(&order_status("o1")).await.0, 200);
    assert!(
        eventually(LIMIT, || async { dead(&app).await.len() == 1 }).await,
        "{:?}",
        outbox(&app).await
    );
    let d = &dead(&app).await[0];
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("no activation code"), "{reason}");
    assert!(reason.contains("order not found"), "{reason}");
    assert!(app.received().is_empty(), "never sent without its code");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_email_names_the_plan_and_asks_for_it_once() {
    let fake = FakeProvider::start_with(vec![], by_request).await;
    let app = app_with(&fake, "").await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "26042217160001"}))
        .await;
    // One after the other: a 10 % arriving before the 50 % went would
    // supersede it (SPEC §6), and a group's dispatcher polls its queue.
    for (sent, (nid, remain)) in [("d1", 2_000_000_000u64), ("d2", 500_000_000)]
        .into_iter()
        .enumerate()
    {
        let body = json!({
            "notifyType": "DATA_USAGE", "notifyId": nid,
            "content": {"esimTranNo": "26042217160001", "iccid": "8943108170000775671",
                        "totalVolume": 5368709120u64, "orderUsage": 5368709120u64 - remain,
                        "remain": remain}
        });
        assert_eq!(app.post(&body.to_string()).await.0, 200);
        assert!(eventually(LIMIT, || async { app.received().len() == sent + 1 }).await);
    }
    for raw in app.received() {
        let text = text(&raw);
        assert!(text.contains("Your plan: Spain 5GB 30Days"), "{text}");
    }
    assert_eq!(
        fake.count(),
        1,
        "the plan is kept with the eSIM, asked once"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_provider_down_a_data_email_waits_then_goes_without_the_plan() {
    let fake = FakeProvider::start_with(vec![], |_| Reply::Status(503, "down".into())).await;
    let app = app_with(&fake, "plan_wait = \"2s\"\n").await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "T1"}))
        .await;
    let body = json!({
        "notifyType": "DATA_USAGE", "notifyId": "d1",
        "content": {"esimTranNo": "T1", "totalVolume": 1000, "orderUsage": 950, "remain": 50}
    });
    assert_eq!(app.post(&body.to_string()).await.0, 200);
    assert!(
        eventually(LIMIT, || async {
            outbox(&app).await.iter().any(|r| {
                r["waiting_for"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("provider: plan look-up"))
            })
        })
        .await,
        "it waits for the plan first"
    );
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let raw = &app.received()[0];
    assert_eq!(subject(raw), "10% or less of your data left");
    let text = text(raw);
    assert!(
        text.contains("50 B of 1,000 B left (5%).") && !text.contains(" plan"),
        "no plan named: {text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_the_provider_keep_to_its_rate() {
    let fake = FakeProvider::start_with(vec![], by_request).await;
    let app = app_with(&fake, "requests_per_second = 2\n").await;
    // Eight eSIMs, each needing its plan at once.
    for i in 0..8 {
        let tran = format!("R{i}");
        app.bind(json!({"email": format!("c{i}@example.com"), "esimTranNo": tran}))
            .await;
        let body = json!({
            "notifyType": "DATA_USAGE", "notifyId": format!("r{i}"),
            "content": {"esimTranNo": tran, "totalVolume": 1000, "orderUsage": 950, "remain": 50}
        });
        assert_eq!(app.post(&body.to_string()).await.0, 200);
    }
    assert!(eventually(LIMIT, || async { app.received().len() == 8 }).await);
    assert!(fake.count() >= 8);
    // One request every half second: within any second, at most two, and a
    // third only if it lands exactly on the window's end.
    let most = fake.most_within(Duration::from_millis(1000));
    assert!(most <= 3, "{most} requests within one second at 2/s");
    app.stop().await;
}
