//! The send loop against real SMTP servers on 127.0.0.1, through the
//! application as production starts it (`spawn_app`): webhooks over HTTP,
//! customers through the admin API, the real engine, dispatcher and mailer
//! with the shipped templates. The last tests run the built binary, kill
//! it and start it again.
//!
//! Servers: `mailin-embedded` with scripted answers where it can play the
//! part, and a switchable scripted server (`smtp::switchable_server`) where
//! it cannot (AUTH over plain TCP, a server that never answers).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use esim_notify::dispatch::DispatchHandle;
use esim_notify::engine::{DeadRetry, Engine, LogKind, QueuedNotice, SendOutcome, SuppressReason};
use serde_json::{json, Value};

use crate::helpers::{open_engine, spawn_app_with_smtp, Binary, TestApp};
use crate::smtp::{
    free_port, mailin_on, mailin_server, switchable_server, Mailin, Mode, Stoppable,
};

const LIMIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1024 * 1024 * 1024;

/// The application, with its engine and dispatcher at hand.
struct Harness {
    app: TestApp,
    store: Arc<Engine>,
    dispatch: DispatchHandle,
}

/// A notice the application queued, as its decision log names it.
struct Queued {
    id: u64,
    identity: String,
}

async fn start(smtp_port: u16, extra: &str) -> Harness {
    let app = spawn_app_with_smtp(extra, smtp_port, Mailin::default()).await;
    Harness {
        store: app.engine.clone(),
        dispatch: app.dispatch.clone(),
        app,
    }
}

fn data_usage(notify_id: &str, tran: &str, total: u64, remain: u64) -> String {
    json!({
        "notifyType": "DATA_USAGE",
        "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:21:59Z",
        "content": {
            "esimTranNo": tran, "iccid": format!("8900{tran}"),
            "totalVolume": total, "orderUsage": total - remain, "remain": remain,
            "lastUpdateTime": "2026-04-22T15:53:03Z"
        }
    })
    .to_string()
}

fn esim_status(notify_id: &str, tran: &str, status: &str) -> String {
    json!({
        "notifyType": "ESIM_STATUS",
        "notifyId": notify_id,
        "eventGenerateTime": "2026-04-22T17:27:44Z",
        "content": {
            "esimTranNo": tran, "iccid": format!("8900{tran}"),
            "esimStatus": status, "smdpStatus": "ENABLED"
        }
    })
    .to_string()
}

impl Harness {
    /// Binds a customer to an esimTranNo through the admin API.
    async fn bind(&self, email: &str, name: &str, tran: &str) {
        let (status, body) = self
            .app
            .bind(json!({"email": email, "name": name, "esimTranNo": tran}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Posts a delivery over HTTP; returns the notices it queued, read
    /// from the eSIM's decision log (they may already be sent).
    async fn post(&self, body: &str) -> Vec<Queued> {
        let (status, answer) = self.app.post(body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("accepted")),
            "{answer}"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        let tran = v["content"]["esimTranNo"].as_str().unwrap();
        let needle = format!("notifyId={}", v["notifyId"].as_str().unwrap());
        let log = self.store.esim_view(None, tran).unwrap().unwrap().decisions;
        log.iter()
            .skip_while(|d| !(d.what == LogKind::Event && d.detail.contains(&needle)))
            .skip(1)
            .take_while(|d| d.what != LogKind::Event)
            .filter(|d| d.what == LogKind::Queued)
            .map(|d| Queued {
                id: d.notice.unwrap(),
                identity: d.detail.split(" to ").next().unwrap().to_string(),
            })
            .collect()
    }

    fn outbox(&self) -> Vec<QueuedNotice> {
        self.store.outbox().unwrap()
    }

    fn decisions(&self, tran: &str) -> Vec<(LogKind, Option<String>, String)> {
        self.store
            .esim_view(None, tran)
            .unwrap()
            .unwrap()
            .decisions
            .into_iter()
            .map(|d| (d.what, d.template, d.detail))
            .collect()
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// Polls `cond` until it holds or `LIMIT` passes.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A header's value, unfolded (long headers continue on indented lines).
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\r\n\r\n").next().unwrap_or(mail);
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(str::to_string)
}

// 1 ------------------------------------------------------------------------------------

#[tokio::test]
async fn data_usage_for_a_bound_customer_is_delivered_over_smtp() {
    let (port, smtp) = mailin_server();
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    let queued = h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    assert_eq!(queued.len(), 1);

    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    let mail = &smtp.received()[0];
    assert_eq!(
        header(mail, "From").as_deref(),
        Some("\"Example eSIM\" <noreply@example.com>")
    );
    assert_eq!(header(mail, "To").as_deref(), Some("Ana <ana@example.com>"));
    let subject = header(mail, "Subject").unwrap();
    assert!(subject.contains("10%"), "{subject}");
    assert_eq!(
        header(mail, "Message-ID"),
        Some(esim_notify::mailer::message_id_for(
            &queued[0].identity,
            "Example eSIM <noreply@example.com>"
        ))
    );
    assert!(mail.contains("multipart/alternative"));
    assert!(mail.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(mail.contains("Content-Type: text/html; charset=utf-8"));

    assert!(eventually(|| h.outbox().is_empty()).await, "left the queue");
    let log = h.decisions("T1");
    assert!(
        log.iter().any(|(k, t, d)| *k == LogKind::Sent
            && t.as_deref() == Some("data_usage")
            && d.contains("a***@example.com")
            && !d.contains("ana@")),
        "{log:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn one_click_mode_sends_a_signed_unsubscribe_link() {
    let (port, smtp) = mailin_server();
    let h = start(
        port,
        "[server]\npublic_url = \"https://notify.example.com\"\n[email]\nlist_unsubscribe = \"one-click\"\n",
    )
    .await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    let mail = &smtp.received()[0];
    let target = header(mail, "List-Unsubscribe").unwrap();
    let token = target
        .strip_prefix("<https://notify.example.com/unsubscribe?t=")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or_else(|| panic!("{target}"));
    let signer = esim_notify::unsubscribe::Signer::new(h.store.secret("unsubscribe").unwrap());
    assert_eq!(signer.verify(token).as_deref(), Some("ana@example.com"));
    assert_eq!(
        header(mail, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    h.stop().await;
}

// 2 ------------------------------------------------------------------------------------

#[tokio::test]
async fn temporary_refusals_are_retried_with_the_same_message_id() {
    let (port, smtp) = mailin_server();
    smtp.0.lock().unwrap().data_end.extend([
        (451, "4.7.1 greylisted, try later"),
        (451, "4.7.1 greylisted, try later"),
    ]);
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    let tried = smtp.tried();
    assert_eq!(tried.len(), 3, "two refusals, then accepted");
    let ids: BTreeSet<String> = tried
        .iter()
        .map(|m| header(m, "Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one Message-ID for every attempt: {ids:?}");
    assert_eq!(smtp.received().len(), 1, "exactly one delivery");
    let log = h.decisions("T1");
    let failed = log.iter().filter(|(k, _, _)| *k == LogKind::Failed).count();
    assert_eq!(failed, 2, "{log:?}");
    h.stop().await;
}

// 3 ------------------------------------------------------------------------------------

#[tokio::test]
async fn user_unknown_is_a_dead_letter_and_a_suppression_its_retry_lifts() {
    let (port, smtp) = mailin_server();
    smtp.0
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 <ana@example.com>: user unknown"));
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    let queued = h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    assert!(eventually(|| h.store.dead().unwrap().len() == 1).await);
    let dead = h.store.dead().unwrap();
    assert_eq!(dead[0].notice.id, queued[0].id);
    assert!(dead[0].reason.contains("550"), "{}", dead[0].reason);
    assert_eq!(dead[0].notice.last_error.as_ref(), Some(&dead[0].reason));
    let s = h
        .store
        .suppression("ana@example.com")
        .unwrap()
        .expect("suppressed");
    assert_eq!(s.reason, SuppressReason::Bounced);
    let detail = s.detail.clone().unwrap_or_default();
    assert!(detail.contains("user unknown"), "{detail}");
    assert!(s.added_by(queued[0].id), "{s:?}");
    assert!(h.outbox().is_empty());
    assert!(smtp.received().is_empty());

    // The mailbox exists again (the scripted 550 was used up): retrying the
    // dead letter lifts the suppression its own refusal added, and delivers.
    let url = h
        .app
        .admin_url(&format!("/admin/dead/{}/retry", queued[0].id));
    let r = h.app.http.post(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let row: Value = r.json().await.unwrap();
    assert_eq!(row["lifted_suppression"]["reason"], json!("bounced"));
    assert_eq!(h.store.suppression("ana@example.com").unwrap(), None);
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(h.store.dead().unwrap().is_empty());
    let log = h.decisions("T1");
    assert!(
        log.iter().any(|(k, _, d)| *k == LogKind::Note
            && d.contains("suppression of a***@example.com")
            && d.contains("lifted")),
        "{log:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_retry_never_lifts_a_suppression_made_for_another_reason() {
    let (port, smtp) = mailin_server();
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.dispatch.set_paused(true);
    let queued = h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    let id = queued[0].id;
    // The customer unsubscribed while the send was out, and the send then
    // came back "user unknown": the unsubscribe stays what it was.
    h.store
        .suppress(
            "ana@example.com",
            SuppressReason::Unsubscribed,
            Some("one-click"),
            Utc::now(),
        )
        .unwrap();
    h.store
        .record(
            id,
            &SendOutcome::Dead {
                reason: "550 at RCPT: user unknown".into(),
                suppress: Some("user unknown (550 5.1.1)".into()),
            },
            Utc::now(),
        )
        .unwrap();
    let s = h.store.suppression("ana@example.com").unwrap().unwrap();
    assert_eq!(s.reason, SuppressReason::Unsubscribed);
    assert!(s.auto_for.is_empty(), "{s:?}");

    match h.store.retry_dead(id, Utc::now()).unwrap() {
        DeadRetry::Suppressed(s) => assert_eq!(s.reason, SuppressReason::Unsubscribed),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.store.dead().unwrap().len(), 1, "the dead letter stays");
    assert!(h.outbox().is_empty());
    assert!(h.store.suppression("ana@example.com").unwrap().is_some());
    h.dispatch.set_paused(false);
    assert!(smtp.tried().is_empty());
    h.stop().await;
}

// 4 ------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_authentication_pauses_sending_without_dead_letters() {
    let (port, smtp) = switchable_server(Mode::AuthFails).await;
    // A quota of one per recipient: the refused attempts must not spend it
    // (SPEC §8: the quota counts messages the mail server accepted).
    let h = start(
        port,
        "[email.smtp]\nusername = \"relay\"\npassword = \"not-the-password\"\n[rate_limit]\nper_recipient_per_hour = 1\n",
    )
    .await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.bind("bob@example.com", "Bob", "T2").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    h.post(&data_usage("n2", "T2", 10 * GIB, GIB)).await;

    assert!(
        eventually(|| h.dispatch.is_paused()).await,
        "sending paused"
    );
    assert!(h.dispatch.is_transport_broken());
    assert!(!h.dispatch.is_operator_paused());
    // Probes keep failing for a while: still nothing dead, everything queued.
    assert!(
        eventually(|| h.outbox().iter().any(|q| q
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("transport broken") && w.contains("535"))))
        .await,
        "{:?}",
        h.outbox()
    );
    assert!(h.store.dead().unwrap().is_empty());
    assert_eq!(h.outbox().len(), 2);
    assert!(
        h.outbox().iter().all(|q| q.attempts == 0),
        "a broken transport is not the notice's attempt"
    );

    smtp.set(Mode::Behaves);
    assert!(
        eventually(|| smtp.received().len() == 2).await,
        "the queue drains"
    );
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(eventually(|| !h.dispatch.is_paused()).await);
    assert!(h.store.dead().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn refused_attempts_do_not_spend_the_recipient_quota() {
    let (port, smtp) = mailin_server();
    smtp.0.lock().unwrap().data_end.extend([
        (451, "4.7.1 greylisted, try later"),
        (451, "4.7.1 greylisted, try later"),
    ]);
    let h = start(port, "[rate_limit]\nper_recipient_per_hour = 1\n").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    assert!(
        eventually(|| smtp.received().len() == 1).await,
        "delivered on the third attempt, not held for the quota: {:?}",
        h.outbox()
    );
    assert_eq!(smtp.tried().len(), 3);
    assert!(eventually(|| h.outbox().is_empty()).await);
    // The accepted one did spend it.
    h.bind("ana@example.com", "Ana", "T2").await;
    h.post(&data_usage("n2", "T2", 10 * GIB, GIB)).await;
    assert!(
        eventually(|| h
            .outbox()
            .first()
            .is_some_and(|q| q.waiting_for.as_deref() == Some("recipient quota")))
        .await,
        "{:?}",
        h.outbox()
    );
    h.stop().await;
}

// 5 ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_server_that_never_greets_pauses_sending_and_spends_no_attempt() {
    let (port, smtp) = switchable_server(Mode::Silent).await;
    let h = start(port, "[email]\nsend_timeout = \"1s\"\n").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    // SPEC §8: timing out before the greeting is the transport's trouble.
    assert!(
        eventually(|| h.outbox().first().is_some_and(|q| q
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("transport broken") && w.contains("greeting"))))
        .await,
        "{:?}",
        h.outbox()
    );
    assert!(h.dispatch.is_transport_broken());
    assert_eq!(h.outbox()[0].attempts, 0, "{:?}", h.outbox());
    smtp.set(Mode::Behaves);
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(h.store.dead().unwrap().is_empty());
    h.stop().await;
}

// 6 ------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_refused_pauses_sending_until_a_server_appears() {
    let port = free_port();
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    assert!(
        eventually(|| h.outbox().first().is_some_and(|q| q
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("transport broken"))))
        .await,
        "{:?}",
        h.outbox()
    );
    assert!(h.dispatch.is_transport_broken());
    assert_eq!(h.outbox()[0].attempts, 0, "{:?}", h.outbox());
    let smtp = mailin_on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(eventually(|| !h.dispatch.is_transport_broken()).await);
    h.stop().await;
}

/// Issue 18's scenario: 6 attempts, 1-2 s backoff, the relay stopped for
/// about two seconds (its open connections cut) and started again on the
/// same port. Full jitter spent all six attempts in about a second and
/// dead-lettered the notice; now the outage pauses sending and costs no
/// notice an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_for_two_seconds_delays_notices_and_loses_none() {
    let relay = Stoppable::new().await;
    let h = start(
        relay.port,
        "[retry]\nmax_attempts = 6\ninitial_backoff = \"1s\"\nmax_backoff = \"2s\"\n",
    )
    .await;
    let customers = [
        ("ana@example.com", "T1"),
        ("bob@example.com", "T2"),
        ("eve@example.com", "T3"),
    ];
    for (email, tran) in customers {
        h.bind(email, "Customer", tran).await;
    }
    // A first email leaves an open connection in the pool, which the outage cuts.
    h.post(&data_usage("n0", "T1", 10 * GIB, 4 * GIB)).await;
    assert!(eventually(|| relay.mailin.received().len() == 1).await);
    assert!(eventually(|| h.outbox().is_empty()).await);

    relay.stop();
    let down = tokio::time::Instant::now();
    for (i, (_, tran)) in customers.iter().enumerate() {
        h.post(&data_usage(&format!("n{}", i + 1), tran, 10 * GIB, GIB))
            .await;
    }
    assert!(
        eventually(|| h.dispatch.is_transport_broken()).await,
        "{:?}",
        h.outbox()
    );
    // Until the relay is back: paused, nothing dead, no attempt spent.
    while down.elapsed() < Duration::from_secs(2) {
        let rows = h.outbox();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows.iter().all(|q| q.attempts == 0), "{rows:?}");
        assert!(h.store.dead().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.outbox().iter().any(|q| q
        .waiting_for
        .as_deref()
        .is_some_and(|w| w.starts_with("transport broken"))));
    relay.start().await;

    assert!(
        eventually(|| relay.mailin.received().len() == 4).await,
        "{:?}",
        h.outbox()
    );
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(h.store.dead().unwrap().is_empty(), "no dead letter");
    assert!(eventually(|| !h.dispatch.is_paused()).await);
    for (_, tran) in customers {
        let log = h.decisions(tran);
        assert!(
            !log.iter().any(|(k, _, _)| *k == LogKind::Failed),
            "no attempt spent on the outage: {log:?}"
        );
        let sent: Vec<_> = log.iter().filter(|(k, _, _)| *k == LogKind::Sent).collect();
        assert!(
            sent.last()
                .is_some_and(|(_, _, d)| d.contains("(attempt 1)")),
            "{log:?}"
        );
    }
    relay.stop();
    h.stop().await;
}

// 7 ------------------------------------------------------------------------------------

#[tokio::test]
async fn over_the_recipient_quota_a_notice_waits_and_others_go() {
    let (port, smtp) = mailin_server();
    let h = start(port, "[rate_limit]\nper_recipient_per_hour = 2\n").await;
    for tran in ["T1", "T2", "T3"] {
        h.bind("ana@example.com", "Ana", tran).await;
    }
    h.bind("bob@example.com", "Bob", "T4").await;
    for (i, tran) in ["T1", "T2", "T3", "T4"].iter().enumerate() {
        h.post(&data_usage(&format!("n{i}"), tran, 10 * GIB, GIB))
            .await;
    }

    assert!(
        eventually(|| smtp.received().len() == 3 && h.outbox().len() == 1).await,
        "received {}, outbox {:?}",
        smtp.received().len(),
        h.outbox()
    );
    let waiting = &h.outbox()[0];
    assert_eq!(waiting.recipient.email, "ana@example.com");
    assert_eq!(waiting.waiting_for.as_deref(), Some("recipient quota"));
    assert_eq!(waiting.attempts, 0, "a quota wait is not an attempt");
    assert!(waiting.next_attempt > Utc::now() + chrono::Duration::minutes(20));
    let to: Vec<String> = smtp
        .received()
        .iter()
        .map(|m| header(m, "To").unwrap())
        .collect();
    assert_eq!(
        to.iter().filter(|t| t.contains("bob@")).count(),
        1,
        "{to:?}"
    );
    assert_eq!(
        to.iter().filter(|t| t.contains("ana@")).count(),
        2,
        "{to:?}"
    );
    h.stop().await;
}

// 8 ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_notice_overtaken_while_queued_is_superseded_not_sent() {
    let (port, smtp) = mailin_server();
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.dispatch.set_paused(true);
    assert!(h.dispatch.is_paused());
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    h.post(&esim_status("n2", "T1", "USED_UP")).await;
    let outbox = h.outbox();
    assert_eq!(
        outbox
            .iter()
            .map(|q| q.notice.template.as_str())
            .collect::<Vec<_>>(),
        vec!["data_usage", "esim_used_up"],
        "queued while paused, intake goes on"
    );
    assert!(smtp.tried().is_empty());

    h.dispatch.set_paused(false);
    assert!(
        eventually(|| h.outbox().is_empty()).await,
        "{:?}",
        h.outbox()
    );
    let received = smtp.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        header(&received[0], "Subject").as_deref(),
        Some("You've used all your data")
    );
    let log = h.decisions("T1");
    assert!(
        log.iter()
            .any(|(k, t, _)| *k == LogKind::Superseded && t.as_deref() == Some("data_usage")),
        "{log:?}"
    );
    h.stop().await;
}

// quiet hours ----------------------------------------------------------------------------

/// A quiet window around the current UTC time: from an hour ago to two hours ahead.
fn quiet_now() -> String {
    use chrono::Timelike;
    let now = Utc::now();
    let minute = now.hour() * 60 + now.minute();
    let at = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    format!(
        "[delivery]\nquiet_hours = \"{}-{}\"\n",
        at(minute + 23 * 60),
        at(minute + 120)
    )
}

#[tokio::test]
async fn quiet_hours_hold_a_notice_but_not_a_bypassing_one_behind_it() {
    let (port, smtp) = mailin_server();
    let h = start(port, &quiet_now()).await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.bind("bob@example.com", "Bob", "T2").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    h.post(&data_usage("n2", "T2", 10 * GIB, GIB)).await;
    assert!(
        eventually(|| {
            let o = h.outbox();
            o.len() == 2
                && o.iter()
                    .all(|q| q.waiting_for.as_deref() == Some("quiet hours"))
        })
        .await,
        "{:?}",
        h.outbox()
    );
    assert!(h
        .outbox()
        .iter()
        .all(|q| q.next_attempt > Utc::now() + chrono::Duration::minutes(100)));

    // USED_UP bypasses quiet hours and overtakes T1's waiting 10 %: the head
    // is looked at again, superseded, and USED_UP goes out now.
    h.post(&esim_status("n3", "T1", "USED_UP")).await;
    assert!(eventually(|| smtp.received().len() == 1).await);
    assert_eq!(
        header(&smtp.received()[0], "Subject").as_deref(),
        Some("You've used all your data")
    );
    assert!(
        eventually(|| h.outbox().len() == 1).await,
        "{:?}",
        h.outbox()
    );
    let left = &h.outbox()[0];
    assert_eq!(left.recipient.email, "bob@example.com");
    assert_eq!(left.waiting_for.as_deref(), Some("quiet hours"));
    h.stop().await;
}

// shutdown -------------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_leaves_unsent_notices_queued() {
    let port = free_port();
    let h = start(port, "").await;
    h.bind("ana@example.com", "Ana", "T1").await;
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    // The relay is down: the notice was tried and is held for the transport.
    assert!(
        eventually(|| h.outbox().first().is_some_and(|q| q
            .waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("transport broken"))))
        .await
    );
    let store = h.store.clone();
    h.stop().await;
    assert_eq!(
        store.outbox().unwrap().len(),
        1,
        "still queued for the next start"
    );
}

// 9 ------------------------------------------------------------------------------------

/// Binds customers offline, as `customers add` does while no server runs.
fn bind_offline(dir: &std::path::Path, customers: &[(String, String)]) {
    let store = open_engine(&dir.join("data"), Duration::from_secs(3600)).unwrap();
    for (email, tran) in customers {
        let recipient = esim_notify::customers::Recipient {
            email: email.clone(),
            name: Some("User".into()),
            locale: None,
            timezone: None,
        };
        let ids = esim_notify::event::Identifiers {
            esim_tran_no: Some(tran.clone()),
            ..Default::default()
        };
        store
            .bind(&recipient, &ids, Duration::from_secs(3600), Utc::now())
            .unwrap();
    }
    store.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_acknowledged_notices_it_sends_each_once_after_a_restart() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let extra = "[email]\nsend_timeout = \"2s\"\n";
    let customers: Vec<(String, String)> = (0..N)
        .map(|i| (format!("user{i}@example.com"), format!("K{i}")))
        .collect();
    bind_offline(dir.path(), &customers);

    // Acknowledge N deliveries while no mail server listens, then kill -9.
    let server = Binary::serve_smtp(dir.path(), smtp_port, extra).await;
    for i in 0..N {
        let body = data_usage(&format!("crash-{i}"), &format!("K{i}"), 10 * GIB, GIB);
        assert_eq!(server.post(&body).await, 200);
    }
    let first_log = server.kill();

    // Start again with a mail server on that port: everything arrives, once.
    let smtp = mailin_on(std::net::TcpListener::bind(("127.0.0.1", smtp_port)).unwrap());
    let server = Binary::serve_smtp(dir.path(), smtp_port, extra).await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let drained = loop {
        let depth = crate::helpers::sample(&server.metrics().await, "esim_notify_outbox_depth");
        if depth == Some(0.0) && smtp.received().len() >= N {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        drained,
        "received {} of {N}\n{first_log}\n{}",
        smtp.received().len(),
        server.kill()
    );
    let received = smtp.received();
    let ids: BTreeSet<String> = received
        .iter()
        .map(|m| header(m, "Message-ID").unwrap())
        .collect();
    let to: BTreeSet<String> = received.iter().map(|m| header(m, "To").unwrap()).collect();
    assert_eq!(received.len(), N, "each once");
    assert_eq!(ids.len(), N, "distinct Message-IDs");
    assert_eq!(to.len(), N, "every customer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_working_transport_is_probed_at_once_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, smtp) = switchable_server(Mode::AuthFails).await;
    // The transport pause's backoff is an hour: the stored next attempt is
    // an hour away when the first run stops.
    let extra = "[email.smtp]\nusername = \"relay\"\npassword = \"not-the-password\"\n\
                 [retry]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\n";
    bind_offline(
        dir.path(),
        &[("ana@example.com".to_string(), "T1".to_string())],
    );
    let http = reqwest::Client::new();
    let outbox = |server: &Binary| {
        let url = server.admin_url("/admin/outbox");
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    let broken = |rows: &[Value]| {
        rows.iter().any(|r| {
            r["waiting_for"]
                .as_str()
                .is_some_and(|w| w.starts_with("transport broken"))
        })
    };

    let server = Binary::serve_smtp(dir.path(), smtp_port, extra).await;
    assert_eq!(
        server.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await,
        200
    );
    let mut held = false;
    for _ in 0..500 {
        if broken(&outbox(&server).await) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "{:?}", outbox(&server).await);
    // A graceful stop (SIGTERM), the password fixed, a new start.
    assert!(server.terminate(), "a clean exit on SIGTERM");
    smtp.set(Mode::Behaves);

    let server = Binary::serve_smtp(dir.path(), smtp_port, extra).await;
    let rows = outbox(&server).await;
    assert!(
        !broken(&rows),
        "nothing is shown as broken from the previous run: {rows:?}"
    );
    let mut delivered = false;
    for _ in 0..500 {
        if smtp.received().len() == 1 && outbox(&server).await.is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered,
        "sent at once, not an hour later: {:?}\n{}",
        outbox(&server).await,
        server.kill()
    );
}
