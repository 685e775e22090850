//! Several instances on one PostgreSQL database (SPEC §10), as operators
//! run them: two built binaries, one database, one SMTP server. Each due
//! notice is sent by one instance; a lease that runs out is taken over;
//! a late outcome from an instance whose lease was taken changes nothing;
//! the pause and the rate limit are the group's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::helpers::*;
use crate::pg::{query_i64, test_db};
use crate::smtp::mailin_server;

fn group_toml(url: &str, extra: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool = 6\nlease = \"2s\"\n{extra}")
}

async fn put_customer(b: &Binary, binding: Value) {
    let status = reqwest::Client::new()
        .put(b.admin_url("/admin/customers"))
        .json(&binding)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "binding {binding}");
}

async fn admin_json(b: &Binary, path: &str) -> Value {
    reqwest::get(b.admin_url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// 10 000 notices, posted to two instances alternately: each sent exactly
/// once or superseded (no Message-ID twice, none lost), each eSIM's in
/// queue order, both instances sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_send_each_notice_once_and_each_esims_in_order() {
    let Some(db) = test_db() else { return };
    let (smtp, mailin) = mailin_server();
    let extra = "[email.smtp]\npool_size = 4\n";
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = group_toml(&db.url, extra);
    let (a, b) = tokio::join!(
        Binary::serve_smtp(d1.path(), smtp, &toml),
        Binary::serve_smtp(d2.path(), smtp, &toml),
    );
    // 2 500 eSIMs, each bound (half through each instance) and then told
    // four things in this order: activated, 50 %, 20 % and 10 % left.
    const ESIMS: usize = 2500;
    let tran = |i: usize| format!("G{i:05}");
    let iccid = |i: usize| format!("89000000000{i:08}");
    let email = |i: usize| format!("c{i}@example.com");
    let instances = [&a, &b];
    for chunk in (0..ESIMS).collect::<Vec<_>>().chunks(50) {
        let mut binds = Vec::new();
        for &i in chunk {
            binds.push(put_customer(
                instances[i % 2],
                json!({"email": email(i), "esimTranNo": tran(i)}),
            ));
        }
        futures_util::future::join_all(binds).await;
    }
    let total = 4 * ESIMS as u64;
    let mut posted = 0usize;
    for step in 0..4 {
        for chunk in (0..ESIMS).collect::<Vec<_>>().chunks(50) {
            let mut posts = Vec::new();
            for &i in chunk {
                let body = match step {
                    0 => esim_status(&format!("s-{i}"), &tran(i), &iccid(i), "IN_USE"),
                    n => {
                        let remain = [0, 500, 200, 100][n];
                        data_usage(&format!("d{n}-{i}"), &tran(i), &iccid(i), 1000, remain)
                    }
                };
                posted += 1;
                let to = instances[posted % 2];
                posts.push(async move { to.post(&body).await });
            }
            for status in futures_util::future::join_all(posts).await {
                assert_eq!(status, 200);
            }
        }
    }
    // Done when both queues are empty (a data notice overtaken by a more
    // severe one before its turn is superseded, not sent: SPEC §6).
    let done = eventually(Duration::from_secs(900), || async {
        query_i64(&db.url, "SELECT count(*) FROM queue") == 0
    })
    .await;
    assert!(done, "the queue drains: {} sent", mailin.received().len());
    // A moment more: a notice sent twice would show now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let outcome = |m: &str, o: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("esim_notify_notices_total{")
                    && l.contains(&format!("outcome=\"{o}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let both = |o: &str| outcome(&ma, o) + outcome(&mb, o);
    assert_eq!(
        both("queued"),
        total,
        "every posted event queued one notice"
    );
    let received = mailin.received();
    assert_eq!(
        both("sent") + both("superseded"),
        total,
        "each notice sent or superseded, once: sent {}, superseded {}",
        both("sent"),
        both("superseded")
    );
    assert_eq!(
        received.len() as u64,
        both("sent"),
        "each sent notice reached the relay once"
    );
    let ids: HashSet<_> = received
        .iter()
        .map(|m| header(m, "Message-ID").unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), received.len(), "no Message-ID twice");
    assert!(
        outcome(&ma, "sent") > 0 && outcome(&mb, "sent") > 0,
        "both instances sent"
    );
    // In order per eSIM: the activation first, then ever fewer percent left.
    let mut by_to: HashMap<String, Vec<String>> = HashMap::new();
    for m in &received {
        let to = header(m, "To").unwrap_or_default().to_string();
        by_to
            .entry(to)
            .or_default()
            .push(header(m, "Subject").unwrap_or_default().to_string());
    }
    assert_eq!(by_to.len(), ESIMS, "every customer heard");
    for (to, subjects) in &by_to {
        let pct: Vec<Option<u32>> = subjects.iter().map(|s| percent_in(s)).collect();
        assert_eq!(pct[0], None, "{to}: the activation first: {subjects:?}");
        let levels: Vec<u32> = pct[1..].iter().map(|p| p.expect("a data email")).collect();
        assert!(
            levels.windows(2).all(|w| w[0] > w[1]) && !levels.is_empty(),
            "{to}: {subjects:?}"
        );
    }
    assert!(a.terminate() && b.terminate());
}

/// The percentage a data email's subject names ("50 %", "50%"), if any.
fn percent_in(subject: &str) -> Option<u32> {
    let digits: String = subject
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .to_string();
    let n: u32 = digits.parse().ok()?;
    subject.contains('%').then_some(n)
}

/// An SMTP server that holds every message at the end of DATA until told to
/// answer, counting the messages it holds.
#[derive(Clone)]
struct HoldAtData {
    port: u16,
    held: Arc<Mutex<usize>>,
    accepted: Arc<Mutex<Vec<String>>>,
    release: watch::Sender<bool>,
}

impl HoldAtData {
    async fn start() -> HoldAtData {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HoldAtData {
            port,
            held: Arc::default(),
            accepted: Arc::default(),
            release: watch::channel(false).0,
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = sock.into_split();
                    let mut lines = BufReader::new(rd).lines();
                    let _ = wr.write_all(b"220 hold ESMTP\r\n").await;
                    let (mut in_data, mut message) = (false, String::new());
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                *s.held.lock().unwrap() += 1;
                                let mut release = s.release.subscribe();
                                let _ = release.wait_for(|r| *r).await;
                                s.accepted
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
                            b"250 hold\r\n"
                        } else if upper == "DATA" {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = wr.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if wr.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        server
    }

    fn held(&self) -> usize {
        *self.held.lock().unwrap()
    }
}

async fn decisions(b: &Binary, tran: &str) -> Vec<Value> {
    let view = admin_json(b, &format!("/admin/esims/{tran}")).await;
    view["decisions"].as_array().cloned().unwrap_or_default()
}

fn count_kind(decisions: &[Value], kind: &str) -> usize {
    decisions
        .iter()
        .filter(|d| d["what"].as_str() == Some(kind) || d["kind"].as_str() == Some(kind))
        .count()
}

/// A notice whose send is held at DATA when its instance is killed (-9) is
/// sent once by the other instance after the lease, and the eSIM's log
/// says it was taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_held_at_data_by_a_killed_instance_is_sent_once_by_the_other() {
    let Some(db) = test_db() else { return };
    let hold = HoldAtData::start().await;
    let (smtp, mailin) = mailin_server();
    let extra = "[email]\nsend_timeout = \"60s\"\n";
    let d1 = tempfile::tempdir().unwrap();
    let a = Binary::serve_smtp(d1.path(), hold.port, &group_toml(&db.url, extra)).await;
    put_customer(&a, json!({"email": "ana@example.com", "esimTranNo": "K1"})).await;
    let body = esim_status("k-1", "K1", "8900000000000000501", "IN_USE");
    assert_eq!(a.post(&body).await, 200);
    assert!(
        eventually(Duration::from_secs(20), || async { hold.held() == 1 }).await,
        "the first instance reached the end of DATA"
    );
    let log_a = a.kill();
    let d2 = tempfile::tempdir().unwrap();
    let b = Binary::serve_smtp(d2.path(), smtp, &group_toml(&db.url, extra)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            mailin.received().len() == 1
        })
        .await,
        "the second instance sent it after the lease ran out; first instance's log:\n{log_a}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mailin.received().len(),
        1,
        "sent once by the second instance"
    );
    let log = decisions(&b, "K1").await;
    let text = serde_json::to_string(&log).unwrap();
    assert!(text.contains("rescued by instance"), "{text}");
    assert_eq!(count_kind(&log, "sent"), 1, "{text}");
    assert_eq!(query_i64(&db.url, "SELECT count(*) FROM queue"), 0);
    assert!(b.terminate());
}

/// An instance stopped (SIGSTOP) while it holds a notice at DATA, past its
/// lease, then continued: the other instance sent the notice, and the late
/// outcome of the first changes nothing (one `sent` in the log, the queue
/// empty, nothing sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_outcome_from_an_instance_whose_lease_was_taken_changes_nothing() {
    let Some(db) = test_db() else { return };
    let hold = HoldAtData::start().await;
    let (smtp, mailin) = mailin_server();
    let extra = "[email]\nsend_timeout = \"60s\"\n";
    let d1 = tempfile::tempdir().unwrap();
    let a = Binary::serve_smtp(d1.path(), hold.port, &group_toml(&db.url, extra)).await;
    put_customer(&a, json!({"email": "ana@example.com", "esimTranNo": "S1"})).await;
    assert_eq!(
        a.post(&esim_status("s-1", "S1", "8900000000000000601", "IN_USE"))
            .await,
        200
    );
    assert!(eventually(Duration::from_secs(20), || async { hold.held() == 1 }).await);
    let pid = a.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let d2 = tempfile::tempdir().unwrap();
    let b = Binary::serve_smtp(d2.path(), smtp, &group_toml(&db.url, extra)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            mailin.received().len() == 1
        })
        .await,
        "the second instance took the notice over"
    );
    // The first comes back; its relay now accepts the message it held.
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    hold.release.send_replace(true);
    assert!(
        eventually(Duration::from_secs(20), || async {
            hold.accepted.lock().unwrap().len() == 1
        })
        .await
    );
    let log_path = a.log.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("lease taken over")
        })
        .await,
        "the first instance says it records nothing: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let log = decisions(&b, "S1").await;
    let text = serde_json::to_string(&log).unwrap();
    assert_eq!(count_kind(&log, "sent"), 1, "one sent, the taker's: {text}");
    assert!(text.contains("rescued by instance"), "{text}");
    assert_eq!(query_i64(&db.url, "SELECT count(*) FROM queue"), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mailin.received().len(), 1);
    assert!(a.terminate() && b.terminate());
}

/// Two instances started at once on an empty database: one schema, each
/// migration recorded once, and both serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_together_on_an_empty_database_make_one_schema() {
    let Some(db) = test_db() else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = group_toml(&db.url, "");
    let (a, b) = tokio::join!(
        Binary::serve(d1.path(), &toml),
        Binary::serve(d2.path(), &toml),
    );
    let versions = query_i64(&db.url, "SELECT count(*) FROM schema_version");
    let distinct = query_i64(
        &db.url,
        "SELECT count(DISTINCT version) FROM schema_version",
    );
    let max = query_i64(&db.url, "SELECT max(version)::int8 FROM schema_version");
    assert_eq!((versions, distinct), (max, max), "each migration once");
    assert!(max >= 2);
    assert!(a.terminate() && b.terminate());
}

/// `pause` on one instance holds every instance; `resume` on the other
/// lets everything go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_on_one_instance_pauses_the_group() {
    let Some(db) = test_db() else { return };
    let (smtp, mailin) = mailin_server();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = group_toml(&db.url, "");
    let (a, b) = tokio::join!(
        Binary::serve_smtp(d1.path(), smtp, &toml),
        Binary::serve_smtp(d2.path(), smtp, &toml),
    );
    let http = reqwest::Client::new();
    let paused = http.post(a.admin_url("/admin/pause")).send().await.unwrap();
    assert!(paused.status().is_success());
    // The other instance reads the group's pause within its poll.
    assert!(
        eventually(Duration::from_secs(5), || async {
            sample(&b.metrics().await, "esim_notify_sending_paused") == Some(1.0)
        })
        .await,
        "the second instance reports the pause"
    );
    for i in 0..10 {
        let tran = format!("P{i}");
        put_customer(
            &b,
            json!({"email": format!("p{i}@example.com"), "esimTranNo": tran}),
        )
        .await;
        let body = esim_status(
            &format!("p-{i}"),
            &tran,
            &format!("89000000000000007{i:02}"),
            "IN_USE",
        );
        assert_eq!(b.post(&body).await, 200);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mailin.received().len(),
        0,
        "nothing goes while the group is paused"
    );
    let resumed = http
        .post(b.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap();
    assert!(resumed.status().is_success());
    assert!(
        eventually(Duration::from_secs(20), || async {
            mailin.received().len() == 10
        })
        .await,
        "all ten go after the resume: {}",
        mailin.received().len()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            sample(&a.metrics().await, "esim_notify_sending_paused") == Some(0.0)
        })
        .await,
        "the first instance reads the resume too"
    );
    assert!(a.terminate() && b.terminate());
}

/// `rate_limit.per_second` is the group's: two instances with 4 per second
/// and a burst of 1 take at least (n - 1) / 4 seconds for n messages
/// between them (each alone would allow twice that rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_for_the_sum_of_the_instances() {
    let Some(db) = test_db() else { return };
    let (smtp, mailin) = mailin_server();
    let extra = "[rate_limit]\nper_second = 4\nburst = 1\n";
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = group_toml(&db.url, extra);
    let (a, b) = tokio::join!(
        Binary::serve_smtp(d1.path(), smtp, &toml),
        Binary::serve_smtp(d2.path(), smtp, &toml),
    );
    let http = reqwest::Client::new();
    assert!(http
        .post(a.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    const N: usize = 21;
    for i in 0..N {
        let tran = format!("R{i}");
        let to = if i % 2 == 0 { &a } else { &b };
        put_customer(
            to,
            json!({"email": format!("r{i}@example.com"), "esimTranNo": tran}),
        )
        .await;
        let body = esim_status(
            &format!("r-{i}"),
            &tran,
            &format!("89000000000000008{i:02}"),
            "IN_USE",
        );
        assert_eq!(to.post(&body).await, 200);
    }
    assert!(http
        .post(a.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while mailin.received().len() < N && Instant::now() < deadline {
        if first.is_none() && !mailin.received().is_empty() {
            first = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = first.expect("something was sent").elapsed();
    assert_eq!(mailin.received().len(), N);
    // 20 intervals of 250 ms after the first: 5 s for the group. Two
    // independent limits would have needed only half of that.
    assert!(
        took >= Duration::from_millis(4_600),
        "{N} messages in {took:?}: faster than 4 per second for the group"
    );
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let sent = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("esim_notify_notices_total{") && l.contains("outcome=\"sent\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(sent(&ma) > 0.0 && sent(&mb) > 0.0, "both instances sent");
    assert!(a.terminate() && b.terminate());
}

/// The same delivery posted to two instances at once is accepted once:
/// the second waits for the first's commit, then answers `duplicate`; one
/// email goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_posted_to_two_instances_at_once_is_accepted_once() {
    let Some(db) = test_db() else { return };
    let (smtp, mailin) = mailin_server();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = group_toml(&db.url, "");
    let (a, b) = tokio::join!(
        Binary::serve_smtp(d1.path(), smtp, &toml),
        Binary::serve_smtp(d2.path(), smtp, &toml),
    );
    let http = reqwest::Client::new();
    for i in 0..20 {
        let tran = format!("D{i}");
        put_customer(
            &a,
            json!({"email": format!("d{i}@example.com"), "esimTranNo": tran}),
        )
        .await;
        let body = esim_status(
            &format!("dup-{i}"),
            &tran,
            &format!("89000000000000009{i:02}"),
            "IN_USE",
        );
        let post = |url: String, body: String| {
            let http = http.clone();
            async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        };
        let (x, y) = tokio::join!(
            post(a.webhook_url(), body.clone()),
            post(b.webhook_url(), body.clone())
        );
        let mut answers = vec![x, y];
        answers.sort();
        assert_eq!(answers, ["accepted", "duplicate"], "delivery {i}");
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            mailin.received().len() == 20
        })
        .await,
        "{} sent",
        mailin.received().len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mailin.received().len(), 20, "one email per delivery");
    assert!(a.terminate() && b.terminate());
}
