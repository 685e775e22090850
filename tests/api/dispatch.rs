//! The send loop against real SMTP servers on 127.0.0.1: the real sled store,
//! the real dispatcher, the real mailer and the shipped templates; events go
//! in the way the webhook handler puts them in (ingest, wait until durable,
//! enqueue). The last test runs the built binary and kills it.
//!
//! Servers: `mailin-embedded` with scripted answers where it can play the
//! part, and a small scripted SMTP server on a tokio listener where it
//! cannot (AUTH over plain TCP, a server that never answers), switchable to
//! "behave" mid-test.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use esim_notify::config::Config;
use esim_notify::customers::Recipient;
use esim_notify::dispatch::{self, DispatchHandle};
use esim_notify::event::{Event, Identifiers};
use esim_notify::live::{build_live, rules_from, SharedLive};
use esim_notify::mailer::settings_from as mailer_settings;
use esim_notify::mailer::Mailer;
use esim_notify::policy::Rules;
use esim_notify::store::open as open_store;
use esim_notify::store::{
    DeadRetry, IngestOutcome, LogKind, QueuedNotice, SendOutcome, SledStore, Store,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::smtp::{free_port, mailin_on, mailin_server};

const LIMIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1024 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// scripted SMTP server that can misbehave, then behave

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// Refuses AUTH with 535.
    AuthFails,
    /// Accepts the connection and never says a word.
    Silent,
    /// A plain working server (AUTH accepted).
    Behaves,
}

#[derive(Clone)]
struct Scripted {
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

async fn scripted_server(mode: Mode) -> (u16, Scripted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = Scripted {
        mode: Arc::new(Mutex::new(mode)),
        received: Arc::default(),
    };
    let server = s.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = server.clone();
            tokio::spawn(async move {
                let mode = *s.mode.lock().unwrap();
                let (rd, mut wr) = sock.into_split();
                let mut lines = BufReader::new(rd).lines();
                if mode == Mode::Silent {
                    while let Ok(Some(_)) = lines.next_line().await {}
                    return;
                }
                if wr.write_all(b"220 scripted ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                let mut message = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            s.received
                                .lock()
                                .unwrap()
                                .push(std::mem::take(&mut message));
                            let _ = wr.write_all(b"250 queued\r\n").await;
                        } else {
                            message.push_str(&line);
                            message.push_str("\r\n");
                        }
                        continue;
                    }
                    let upper = line.to_ascii_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") {
                        b"250-scripted\r\n250 AUTH PLAIN LOGIN\r\n"
                    } else if upper.starts_with("AUTH") {
                        if mode == Mode::AuthFails {
                            b"535 5.7.8 Authentication credentials invalid\r\n"
                        } else {
                            b"235 2.7.0 ok\r\n"
                        }
                    } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                        b"250 ok\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = wr.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"502 not implemented\r\n"
                    };
                    if wr.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, s)
}

// ---------------------------------------------------------------------------------------
// the dispatcher with the real store and mailer, fed as the webhook feeds it

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dispatch: DispatchHandle,
    task: tokio::task::JoinHandle<()>,
    rules: Rules,
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn config_text(dir: &Path, smtp_port: u16, extra: &str) -> String {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let base = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = {store:?}
[email]
transport = "smtp"
send_timeout = "5s"
[email.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
pool_size = 2
[rate_limit]
per_second = 100
burst = 100
per_recipient_per_hour = 0
[retry]
initial_backoff = "200ms"
max_backoff = "1s"
[templates]
dir = {templates:?}
"#,
        store = dir.join("data").display().to_string(),
        templates = templates.display().to_string(),
    );
    let mut table: toml::Table = toml::from_str(&base).unwrap();
    merge(&mut table, toml::from_str(extra).unwrap());
    toml::to_string(&table).unwrap()
}

fn load_config(text: &str) -> Config {
    Config::from_sources(text, Vec::<(String, String)>::new()).unwrap()
}

async fn start(smtp_port: u16, extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = load_config(&config_text(dir.path(), smtp_port, extra));
    let live: SharedLive = Arc::new(std::sync::RwLock::new(Arc::new(
        build_live(&config).unwrap(),
    )));
    let store: Arc<dyn Store> = Arc::new(open_store(&config).unwrap());
    let mailer = Mailer::new(mailer_settings(&config)).unwrap();
    let rules = rules_from(&config);
    let (dispatch, task) = dispatch::spawn(dispatch::Deps {
        store: store.clone(),
        mailer,
        live,
        config: Arc::new(config),
        metrics: Default::default(),
    })
    .unwrap();
    Harness {
        _dir: dir,
        store,
        dispatch,
        task,
        rules,
    }
}

fn recipient(email: &str, name: &str) -> Recipient {
    Recipient {
        email: email.into(),
        name: Some(name.into()),
        locale: None,
        timezone: None,
    }
}

fn by_tran(tran: &str) -> Identifiers {
    Identifiers {
        esim_tran_no: Some(tran.into()),
        ..Default::default()
    }
}

fn bind(store: &dyn Store, email: &str, name: &str, tran: &str) {
    store
        .bind(
            &recipient(email, name),
            &by_tran(tran),
            Duration::from_secs(3600),
            Utc::now(),
        )
        .unwrap();
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
    /// What the webhook handler does with an accepted delivery.
    async fn post(&self, body: &str) -> Vec<QueuedNotice> {
        let event = Event::parse(body.as_bytes()).unwrap();
        let value: Value = serde_json::from_str(body).unwrap();
        let outcome = self
            .store
            .ingest(&event, &value, &self.rules, Utc::now())
            .unwrap();
        self.store.durable().await.unwrap().unwrap();
        match outcome {
            IngestOutcome::Accepted { queued, .. } => {
                self.dispatch.enqueue(queued.clone());
                queued
            }
            IngestOutcome::Duplicate => panic!("duplicate delivery"),
        }
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
        self.dispatch.shutdown();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the dispatcher stops")
            .unwrap();
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
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
    assert!(s.reason.contains("user unknown"), "{}", s.reason);
    assert!(s.added_by(queued[0].id), "{s:?}");
    assert!(h.outbox().is_empty());
    assert!(smtp.received().is_empty());

    // The mailbox exists again (the scripted 550 was used up): retrying the
    // dead letter lifts the suppression its own refusal added, and delivers.
    let DeadRetry::Requeued { notice, lifted } =
        h.store.retry_dead(queued[0].id, Utc::now()).unwrap()
    else {
        panic!("not requeued");
    };
    assert_eq!(lifted.map(|s| s.reason), Some(s.reason.clone()));
    assert_eq!(h.store.suppression("ana@example.com").unwrap(), None);
    h.dispatch.enqueue(vec![*notice]);
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    h.dispatch.set_paused(true);
    let queued = h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    let id = queued[0].id;
    // The customer unsubscribed while the send was out, and the send then
    // came back "user unknown": the unsubscribe stays what it was.
    h.store
        .suppress("ana@example.com", "unsubscribed (one-click)", Utc::now())
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
    assert_eq!(s.reason, "unsubscribed (one-click)");
    assert!(s.auto_for.is_empty(), "{s:?}");

    match h.store.retry_dead(id, Utc::now()).unwrap() {
        DeadRetry::Suppressed(s) => assert_eq!(s.reason, "unsubscribed (one-click)"),
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
    let (port, smtp) = scripted_server(Mode::AuthFails).await;
    // A quota of one per recipient: the refused attempts must not spend it
    // (SPEC §8: the quota counts messages the mail server accepted).
    let h = start(
        port,
        "[email.smtp]\nusername = \"relay\"\npassword = \"not-the-password\"\n[rate_limit]\nper_recipient_per_hour = 1\n",
    )
    .await;
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    bind(&*h.store, "bob@example.com", "Bob", "T2");
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    assert!(
        eventually(|| smtp.received().len() == 1).await,
        "delivered on the third attempt, not held for the quota: {:?}",
        h.outbox()
    );
    assert_eq!(smtp.tried().len(), 3);
    assert!(eventually(|| h.outbox().is_empty()).await);
    // The accepted one did spend it.
    bind(&*h.store, "ana@example.com", "Ana", "T2");
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
async fn a_server_that_never_answers_is_cut_off_and_retried() {
    let (port, smtp) = scripted_server(Mode::Silent).await;
    let h = start(port, "[email]\nsend_timeout = \"1s\"\n").await;
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    assert!(
        eventually(|| h.outbox().first().is_some_and(|q| q.attempts >= 1
            && q.last_error
                .as_deref()
                .is_some_and(|e| e.contains("send_timeout"))))
        .await,
        "{:?}",
        h.outbox()
    );
    assert!(!h.dispatch.is_paused(), "a timeout is the notice's trouble");
    smtp.set(Mode::Behaves);
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    assert!(h.store.dead().unwrap().is_empty());
    h.stop().await;
}

// 6 ------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_refused_is_retried_until_a_server_appears() {
    let port = free_port();
    let h = start(port, "").await;
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;

    assert!(
        eventually(|| h.outbox().first().is_some_and(|q| q.attempts >= 2
            && q.last_error.is_some()
            && q.waiting_for.as_deref() == Some("backoff")))
        .await,
        "{:?}",
        h.outbox()
    );
    let smtp = mailin_on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    assert!(eventually(|| smtp.received().len() == 1).await, "delivered");
    assert!(eventually(|| h.outbox().is_empty()).await);
    h.stop().await;
}

// 7 ------------------------------------------------------------------------------------

#[tokio::test]
async fn over_the_recipient_quota_a_notice_waits_and_others_go() {
    let (port, smtp) = mailin_server();
    let h = start(port, "[rate_limit]\nper_recipient_per_hour = 2\n").await;
    for tran in ["T1", "T2", "T3"] {
        bind(&*h.store, "ana@example.com", "Ana", tran);
    }
    bind(&*h.store, "bob@example.com", "Bob", "T4");
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
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
        Some("You have used all your data")
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    bind(&*h.store, "bob@example.com", "Bob", "T2");
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
        Some("You have used all your data")
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
    bind(&*h.store, "ana@example.com", "Ana", "T1");
    h.post(&data_usage("n1", "T1", 10 * GIB, GIB)).await;
    assert!(eventually(|| h.outbox().first().is_some_and(|q| q.attempts >= 1)).await);
    let store = h.store.clone();
    h.stop().await;
    assert_eq!(
        store.outbox().unwrap().len(),
        1,
        "still queued for the next start"
    );
}

// 9 ------------------------------------------------------------------------------------

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

struct Child {
    child: std::process::Child,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and waits for its /healthz; a start that fails
/// because the previous process has not let go of the store yet is retried.
async fn start_binary(config: &Path, log: &Path, public: u16) -> Child {
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Child {
            child: std::process::Command::new(env!("CARGO_BIN_EXE_esim-notify"))
                .arg("--config")
                .arg(config)
                .arg("serve")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap(),
        };
        let deadline = tokio::time::Instant::now() + LIMIT;
        while tokio::time::Instant::now() < deadline {
            if child.child.try_wait().unwrap().is_some() {
                break;
            }
            let url = format!("http://127.0.0.1:{public}/healthz");
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.child.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!(
        "the binary did not start:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_acknowledged_notices_it_sends_each_once_after_a_restart() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let (public, admin, smtp_port) = (free_port(), free_port(), free_port());
    let text = config_text(
        dir.path(),
        smtp_port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[email]\nsend_timeout = \"2s\"\n"
        ),
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let log = dir.path().join("server.log");

    // Customers first, while the store is free.
    {
        let config = load_config(&text);
        let store =
            SledStore::open(&config.store.path, 8 << 20, Duration::from_secs(3600)).unwrap();
        for i in 0..N {
            bind(
                &store,
                &format!("user{i}@example.com"),
                "User",
                &format!("K{i}"),
            );
        }
        store.flush().unwrap();
    }

    // Acknowledge N deliveries while no mail server listens, then kill -9.
    let mut child = start_binary(&config_path, &log, public).await;
    let http = reqwest::Client::new();
    for i in 0..N {
        let r = http
            .post(format!("http://127.0.0.1:{public}/webhooks/esimaccess"))
            .header("content-type", "application/json")
            .body(data_usage(
                &format!("crash-{i}"),
                &format!("K{i}"),
                10 * GIB,
                GIB,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    drop(child);

    // Start again with a mail server on that port: everything arrives, once.
    let smtp = mailin_on(std::net::TcpListener::bind(("127.0.0.1", smtp_port)).unwrap());
    let _child = start_binary(&config_path, &log, public).await;
    let drained = {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let depth = match http
                .get(format!("http://127.0.0.1:{admin}/metrics"))
                .send()
                .await
            {
                Ok(r) => metric(
                    &r.text().await.unwrap_or_default(),
                    "esim_notify_outbox_depth",
                ),
                Err(_) => None,
            };
            if depth == Some(0.0) && smtp.received().len() >= N {
                break true;
            }
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        drained,
        "received {} of {N}\n{}",
        smtp.received().len(),
        std::fs::read_to_string(&log).unwrap_or_default()
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
    let (public, admin) = (free_port(), free_port());
    let (smtp_port, smtp) = scripted_server(Mode::AuthFails).await;
    // The transport pause's backoff is an hour: the stored next attempt is
    // an hour away when the first run stops.
    let text = config_text(
        dir.path(),
        smtp_port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [email.smtp]\nusername = \"relay\"\npassword = \"not-the-password\"\n\
             [retry]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\n"
        ),
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let log = dir.path().join("server.log");
    {
        let config = load_config(&text);
        let store =
            SledStore::open(&config.store.path, 8 << 20, Duration::from_secs(3600)).unwrap();
        bind(&store, "ana@example.com", "Ana", "T1");
        store.flush().unwrap();
    }
    let http = reqwest::Client::new();
    let outbox = || async {
        http.get(format!("http://127.0.0.1:{admin}/admin/outbox"))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    };
    let broken = |rows: &[Value]| {
        rows.iter().any(|r| {
            r["waiting_for"]
                .as_str()
                .is_some_and(|w| w.starts_with("transport broken"))
        })
    };

    let mut child = start_binary(&config_path, &log, public).await;
    let r = http
        .post(format!("http://127.0.0.1:{public}/webhooks/esimaccess"))
        .header("content-type", "application/json")
        .body(data_usage("n1", "T1", 10 * GIB, GIB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut held = false;
    for _ in 0..500 {
        if broken(&outbox().await) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "{:?}", outbox().await);
    // A graceful stop (SIGTERM), the password fixed, a new start.
    let pid = child.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.child.wait().unwrap().success());
    drop(child);
    smtp.set(Mode::Behaves);

    let _child = start_binary(&config_path, &log, public).await;
    let rows = outbox().await;
    assert!(
        !broken(&rows),
        "nothing is shown as broken from the previous run: {rows:?}"
    );
    let mut delivered = false;
    for _ in 0..500 {
        if smtp.received().len() == 1 && outbox().await.is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered,
        "sent at once, not an hour later: {:?}\n{}",
        outbox().await,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
