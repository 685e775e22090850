//! The eSIM Access API client against a fake of the API on a loopback port
//! (`fake_provider`), answering as the reference shows: what it reads, what
//! it retries, its pace, and that the access code stays secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use esim_notify::config::Secret;
use esim_notify::provider::{EsimQuery, Provider, ProviderError, ProviderSettings};
use serde_json::json;

use crate::fake_provider::{self as fake, FakeProvider, Reply};
use crate::helpers::{eventually, free_port, load_config};

const CODE: &str = "rt-TESTCODE-5f0c81d2a9";
const AC_A: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";
const AC_B: &str = "LPA:1$rsp-eu.redteamobile.com$9F1E0C6A2B3D4E5F60718293A4B5C6D7";
const AC_C: &str = "LPA:1$rsp-eu.redteamobile.com$00AA11BB22CC33DD44EE55FF66778899";
const ORDER: &str = "B26042217160011";

fn settings(base_url: &str) -> ProviderSettings {
    ProviderSettings {
        access_code: Secret::new(CODE),
        base_url: base_url.to_string(),
        requests_per_second: 50,
        timeout: Duration::from_secs(5),
        retries: 2,
        initial_backoff: Duration::from_millis(20),
        page_size: 2,
    }
}

fn client(fake: &FakeProvider) -> Provider {
    Provider::new(settings(&fake.base_url)).unwrap()
}

fn esim_a() -> serde_json::Value {
    fake::esim("26042217160001", "8943108170000775671", ORDER, AC_A)
}

fn esim_b() -> serde_json::Value {
    fake::esim("26042217160002", "0089431081700007756", ORDER, AC_B)
}

fn esim_c() -> serde_json::Value {
    fake::esim("26042217160003", "8943108170000775699", ORDER, AC_C)
}

#[tokio::test]
async fn two_esims_of_one_order_in_one_answer() {
    let fake = FakeProvider::start(vec![fake::page(vec![esim_a(), esim_b()], 1, 2)]).await;
    let esims = client(&fake).query_by_order(ORDER).await.unwrap();

    assert_eq!(esims.len(), 2);
    let (a, b) = (&esims[0], &esims[1]);
    assert_eq!(a.esim_tran_no.as_deref(), Some("26042217160001"));
    assert_eq!(a.iccid.as_deref(), Some("8943108170000775671"));
    assert_eq!(a.order_no.as_deref(), Some(ORDER));
    assert_eq!(
        a.transaction_id.as_deref(),
        Some("7544949834056-1-TR_50_30")
    );
    assert_eq!(a.ac.as_deref(), Some(AC_A));
    assert_eq!(
        a.qr_code_url.as_deref(),
        Some("https://p.qrsim.net/26042217160001.png")
    );
    assert_eq!(
        a.short_url.as_deref(),
        Some("https://p.qrsim.net/26042217160001")
    );
    assert_eq!(a.apn.as_deref(), Some("drei.at"));
    assert_eq!(
        a.expired_time,
        Some("2026-05-29T18:34:17Z".parse().unwrap())
    );
    assert_eq!(a.total_volume, Some(5_368_709_120));
    assert_eq!(a.total_duration, Some(30));
    assert_eq!(a.duration_unit.as_deref(), Some("DAY"));
    assert_eq!(a.esim_status.as_deref(), Some("GOT_RESOURCE"));
    assert_eq!(a.smdp_status.as_deref(), Some("RELEASED"));
    let plan = a.plan.as_ref().unwrap();
    assert_eq!(plan.name.as_deref(), Some("Spain 5GB 30Days"));
    assert_eq!(plan.slug.as_deref(), Some("ES_5_30"));
    assert_eq!(plan.volume, Some(5_368_709_120));
    assert_eq!(plan.duration, Some(30));
    assert_eq!(plan.duration_unit.as_deref(), Some("DAY"));
    assert_eq!(plan.location_code.as_deref(), Some("ES"));
    // ICCIDs stay strings: the leading zeros are kept.
    assert_eq!(b.iccid.as_deref(), Some("0089431081700007756"));
    assert_eq!(b.ac.as_deref(), Some(AC_B));

    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/v1/open/esim/query");
    assert_eq!(seen[0].access_code.as_deref(), Some(CODE));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({"orderNo": ORDER, "pager": {"pageNum": 1, "pageSize": 2}})
    );
}

#[tokio::test]
async fn pages_are_followed_until_every_esim_is_read() {
    let fake = FakeProvider::start(vec![
        fake::page(vec![esim_a(), esim_b()], 1, 3),
        fake::page(vec![esim_c()], 2, 3),
    ])
    .await;
    let esims = client(&fake).query_by_order(ORDER).await.unwrap();
    let trans: Vec<_> = esims
        .iter()
        .map(|e| e.esim_tran_no.clone().unwrap())
        .collect();
    assert_eq!(
        trans,
        ["26042217160001", "26042217160002", "26042217160003"]
    );
    let pages: Vec<_> = fake
        .requests()
        .iter()
        .map(|s| s.body["pager"]["pageNum"].clone())
        .collect();
    assert_eq!(pages, [json!(1), json!(2)]);
}

#[tokio::test]
async fn a_page_that_repeats_an_esim_does_not_list_it_twice() {
    // Pages may shift while they are read; an empty page ends the reading.
    let fake = FakeProvider::start(vec![
        fake::page(vec![esim_a(), esim_b()], 1, 3),
        fake::page(vec![esim_b()], 2, 3),
        fake::page(vec![], 3, 3),
    ])
    .await;
    let esims = client(&fake).query_by_order(ORDER).await.unwrap();
    assert_eq!(esims.len(), 2);
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn one_esim_by_esim_tran_no_or_by_iccid() {
    let fake = FakeProvider::start(vec![
        fake::page(vec![esim_b()], 1, 1),
        fake::page(vec![esim_a(), esim_b()], 1, 2),
        fake::page(vec![esim_a()], 1, 1),
    ])
    .await;
    let p = client(&fake);
    let b = p.query_by_esim_tran_no("26042217160002").await.unwrap();
    assert_eq!(b.unwrap().ac.as_deref(), Some(AC_B));
    // A recycled ICCID lists every eSIM that had it.
    let list = p.query_by_iccid("8943108170000775671").await.unwrap();
    assert_eq!(list.len(), 2);
    // An answer about another eSIM is no answer.
    assert_eq!(
        p.query_by_esim_tran_no("26042217160002").await.unwrap(),
        None
    );
    let asked: Vec<_> = fake.requests().iter().map(|s| s.body.clone()).collect();
    assert_eq!(asked[0]["esimTranNo"], "26042217160002");
    assert_eq!(asked[1]["iccid"], "8943108170000775671");
}

#[tokio::test]
async fn success_false_is_a_refusal_with_its_code_and_is_not_retried() {
    let fake = FakeProvider::start(vec![fake::refused("310241", "The order does not exist")]).await;
    let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Refused {
            code: "310241".into(),
            msg: "The order does not exist".into()
        }
    );
    assert!(!err.retry_later());
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn not_ready_twice_then_ready() {
    let fake = FakeProvider::start(vec![
        fake::not_ready(),
        fake::not_ready(),
        fake::page(vec![esim_a()], 1, 1),
    ])
    .await;
    let p = client(&fake);
    for asked in 1..=2 {
        let err = p.query_by_order(ORDER).await.unwrap_err();
        assert_eq!(err, ProviderError::NotReady);
        assert!(err.retry_later());
        // The client does not retry it itself: allocation takes minutes.
        assert_eq!(fake.count(), asked);
    }
    let esims = p.query_by_order(ORDER).await.unwrap();
    assert_eq!(esims[0].ac.as_deref(), Some(AC_A));
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_retried() {
    let slow = Reply::Slow(
        Duration::from_secs(30),
        Box::new(fake::page(vec![esim_a()], 1, 1)),
    );
    let fake = FakeProvider::start(vec![slow.clone(), fake::page(vec![esim_a()], 1, 1)]).await;
    let mut s = settings(&fake.base_url);
    s.timeout = Duration::from_millis(300);
    let esims = Provider::new(s)
        .unwrap()
        .query_by_order(ORDER)
        .await
        .unwrap();
    assert_eq!(esims.len(), 1);
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn an_answer_always_slower_than_the_timeout_is_a_timeout_after_the_retries() {
    let slow = Reply::Slow(
        Duration::from_secs(30),
        Box::new(fake::page(vec![esim_a()], 1, 1)),
    );
    let fake = FakeProvider::start_with(vec![], move |_| slow.clone()).await;
    let mut s = settings(&fake.base_url);
    s.timeout = Duration::from_millis(200);
    s.retries = 2;
    let err = Provider::new(s)
        .unwrap()
        .query_by_order(ORDER)
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Timeout(Duration::from_millis(200)));
    assert!(err.retry_later());
    assert_eq!(fake.count(), 3, "one try and two retries");
}

#[tokio::test]
async fn a_malformed_body_is_named_and_not_retried() {
    for body in [
        "<html><body>Bad Gateway</body></html>",
        r#"{"success":true,"obj":{"esimList":"x"}}"#,
    ] {
        let fake = FakeProvider::start(vec![Reply::Raw(body.into())]).await;
        let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
        assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
        assert!(!err.retry_later());
        assert_eq!(fake.count(), 1);
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let fake = FakeProvider::start(vec![
        Reply::Status(503, "unavailable".into()),
        Reply::HangUp,
        fake::page(vec![esim_a()], 1, 1),
    ])
    .await;
    let esims = client(&fake).query_by_order(ORDER).await.unwrap();
    assert_eq!(esims.len(), 1);
    assert_eq!(fake.count(), 3);

    let fake = FakeProvider::start_with(vec![], |_| Reply::Status(500, "oops".into())).await;
    let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
    assert_eq!(err, ProviderError::Transport("HTTP 500".into()));
    assert!(err.retry_later());
    assert_eq!(fake.count(), 3, "one try and two retries");
    let times: Vec<_> = fake.requests().iter().map(|s| s.at).collect();
    // The backoff doubles: at least half of 20 ms, then half of 40 ms.
    assert!(times[1] - times[0] >= Duration::from_millis(10));
    assert!(times[2] - times[1] >= Duration::from_millis(20));
}

#[tokio::test]
async fn a_4xx_is_a_refusal_with_the_providers_reason_when_it_gives_one() {
    let fake = FakeProvider::start(vec![
        Reply::Status(
            401,
            r#"{"success":false,"errorCode":"101003","errorMsg":"invalid access code"}"#.into(),
        ),
        Reply::Status(404, "not here".into()),
    ])
    .await;
    let p = client(&fake);
    assert_eq!(
        p.query_by_order(ORDER).await.unwrap_err(),
        ProviderError::Refused {
            code: "101003".into(),
            msg: "invalid access code".into()
        }
    );
    assert_eq!(
        p.query_by_order(ORDER).await.unwrap_err(),
        ProviderError::Refused {
            code: "HTTP 404".into(),
            msg: "not here".into()
        }
    );
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_transport_error() {
    let mut s = settings(&format!("http://127.0.0.1:{}", free_port()));
    s.retries = 1;
    let err = Provider::new(s)
        .unwrap()
        .query_by_order(ORDER)
        .await
        .unwrap_err();
    match &err {
        ProviderError::Transport(why) => assert!(why.to_lowercase().contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Three callers share one client (as the dispatcher's sends do); the fake
/// counts what arrives. Turns are spaced 1/rate apart (no burst), so any
/// closed 1-second window holds at most rate + 1 of them; one more is
/// allowed for the time a request takes from its turn to the fake, so the
/// bound cannot be met by chance, while a missing, per-caller or bursting
/// limit (all 12 at once, or 3 × rate per second) is far above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_exceed_the_configured_rate_across_callers() {
    let fake = FakeProvider::start_with(vec![], |_| fake::page(vec![esim_a()], 1, 1)).await;
    let mut s = settings(&fake.base_url);
    s.requests_per_second = 5;
    let p = Provider::new(s).unwrap();
    let mut callers = Vec::new();
    for _ in 0..3 {
        let p = p.clone();
        callers.push(tokio::spawn(async move {
            for _ in 0..4 {
                p.query(EsimQuery::OrderNo(ORDER)).await.unwrap();
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    assert_eq!(fake.count(), 12);
    let most = fake.most_within(Duration::from_secs(1));
    assert!(most <= 5 + 2, "{most} requests within one second");
    let seen = fake.requests();
    let span = seen.last().unwrap().at - seen[0].at;
    // 12 evenly spaced turns at 5 per second span at least 11 intervals
    // (less the same allowance of one interval).
    assert!(span >= Duration::from_millis(200 * 10), "{span:?}");
}

/// A writer into a shared buffer, for a subscriber set for this test only.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_access_code_is_sent_but_never_logged_or_shown() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // This (current-thread) test's runtime runs the client and the fake.
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start(vec![
        Reply::Status(502, "bad gateway".into()),
        fake::refused("101003", "invalid access code"),
    ])
    .await;
    let p = client(&fake);
    let err = p.query_by_order(ORDER).await.unwrap_err();
    assert!(fake
        .requests()
        .iter()
        .all(|s| s.access_code.as_deref() == Some(CODE)));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "the retry is logged: {logs}");
    for shown in [
        logs,
        format!("{p:?}"),
        format!("{err:?} {err}"),
        format!("{:?}", settings(&fake.base_url)),
    ] {
        assert!(!shown.contains(CODE), "{shown}");
        assert!(!shown.contains("TESTCODE"), "{shown}");
    }
}

#[test]
fn the_client_comes_from_provider_settings_only_with_an_access_code() {
    let off = load_config("");
    assert!(ProviderSettings::from_config(&off).is_none());
    let blank = load_config("[provider]\naccess_code = \"  \"\n");
    assert!(ProviderSettings::from_config(&blank).is_none());
    assert!(!blank.provider_enabled());

    let env = [(
        "ESIM_NOTIFY_PROVIDER__ACCESS_CODE".to_string(),
        "0042abc".to_string(),
    )];
    let on = esim_notify::config::Config::from_sources(
        "[provider]\nrequests_per_second = 3\ntimeout = \"2s\"\n",
        env,
    )
    .unwrap();
    let s = ProviderSettings::from_config(&on).unwrap();
    assert_eq!(s.access_code.expose(), "0042abc");
    assert_eq!(s.base_url, "https://api.esimaccess.com");
    assert_eq!(s.requests_per_second, 3);
    assert_eq!(s.timeout, Duration::from_secs(2));

    let bad = esim_notify::config::Config::from_sources(
        "[provider]\nbase_url = \"api.esimaccess.com\"\n",
        std::iter::empty(),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("provider.base_url"), "{bad}");
}

#[test]
fn an_access_code_over_plain_http_to_another_host_is_warned_about() {
    let warned = |base: &str| {
        let c = load_config(&format!(
            "[provider]\naccess_code = \"c\"\nbase_url = \"{base}\"\n"
        ));
        c.warnings()
            .iter()
            .any(|w| w.contains("travels unencrypted") && w.contains("provider.base_url"))
    };
    assert!(warned("http://api.esimaccess.com"));
    assert!(!warned("https://api.esimaccess.com"));
    assert!(!warned("http://127.0.0.1:8099"));
}

/// A 3xx is not followed (the next hop would get `RT-AccessCode`): the
/// error names where it pointed, and the other server hears nothing.
#[tokio::test]
async fn a_redirect_is_not_followed_and_names_its_target() {
    let elsewhere = FakeProvider::start_with(vec![], |_| fake::page(vec![esim_a()], 1, 1)).await;
    let target = format!("{}{}", elsewhere.base_url, "/api/v1/open/esim/query");
    for code in [301, 302, 307, 308] {
        let fake = FakeProvider::start(vec![Reply::Redirect(code, target.clone())]).await;
        let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
        match &err {
            ProviderError::Refused { code: c, msg } => {
                assert_eq!(c, &format!("HTTP {code}"));
                assert!(msg.contains(&target), "{msg}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert!(!err.retry_later());
        assert_eq!(fake.count(), 1, "a redirect is not retried");
        assert!(!err.to_string().contains(CODE));
    }
    let seen = elsewhere.requests();
    assert!(
        seen.is_empty(),
        "the redirect target received {} request(s), access code {:?}",
        seen.len(),
        seen.first().and_then(|s| s.access_code.clone())
    );
}

/// An answer over the cap (1 MiB) is an error naming the cap, whether it
/// says its length up front or streams without end; the client stops
/// reading, so the other side cannot make it hold more than the cap.
#[tokio::test]
async fn an_answer_over_one_mib_is_cut_off() {
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let fake = FakeProvider::start(vec![Reply::Raw(huge)]).await;
    let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("1 MiB"), "{err}");
    assert_eq!(fake.count(), 1, "not retried");

    let fake = FakeProvider::start(vec![Reply::Endless]).await;
    let err = client(&fake).query_by_order(ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("1 MiB"), "{err}");
    // The fake writes until the client hangs up; what it got out is the
    // cap plus what socket buffers hold, far from the gigabytes an
    // unbounded read would take in the 5 s timeout.
    assert!(
        eventually(Duration::from_secs(5), || async {
            fake.endless_ended() == 1
        })
        .await,
        "the client did not hang up"
    );
    let streamed = fake.streamed();
    assert!(streamed < 32 * 1024 * 1024, "{streamed} bytes read");
}
