//! The database goes away under load and comes back (SPEC §10): webhooks
//! answer 503 meanwhile (the provider retries them), `/readyz` says 503, the
//! log says why once, and everything resumes by itself; no notice that was
//! acknowledged is lost. On a PostgreSQL server of the test's own, which it
//! stops the way an operator's restart does (`pg_ctl stop -m fast`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use crate::pg::OwnServer;
use crate::smtp::mailin_server;

const ESIMS: usize = 300;

fn tran(i: usize) -> String {
    format!("D{i:05}")
}

fn email(i: usize) -> String {
    format!("down{i}@example.com")
}

/// The address of a received message's `To:` header.
fn to(message: &str) -> String {
    let v = message
        .lines()
        .find_map(|l| l.strip_prefix("To:"))
        .unwrap_or_default()
        .trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.to_string(),
    }
}

async fn ready_status(app: &Binary) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{}/readyz", app.public))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restarted_under_load_loses_no_acknowledged_notice() {
    let Some(pg) = OwnServer::start(&[], |_| {}) else {
        return;
    };
    let pg = Arc::new(pg);
    let (smtp, mailin) = mailin_server();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[store]\nbackend = \"postgres\"\nurl = {:?}\npool = 4\nlease = \"2s\"\n",
        pg.url("")
    );
    let app = Arc::new(Binary::serve_smtp(dir.path(), smtp, &toml).await);
    let http = reqwest::Client::new();
    for i in 0..ESIMS {
        let r = http
            .put(app.admin_url("/admin/customers"))
            .json(&serde_json::json!({"email": email(i), "esimTranNo": tran(i)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // The provider: each delivery posted until it is acknowledged, as it
    // retries a 5xx; a few at a time.
    let unavailable = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicUsize::new(0));
    let mut provider = Vec::new();
    for lane in 0..4 {
        let (app, unavailable, posted) = (app.clone(), unavailable.clone(), posted.clone());
        provider.push(tokio::spawn(async move {
            for i in (lane..ESIMS).step_by(4) {
                let body = data_usage(
                    &format!("down-{i}"),
                    &tran(i),
                    &format!("8900000000{i:09}"),
                    1000,
                    100,
                );
                let mut tries = 0;
                loop {
                    match app.post(&body).await {
                        200 => break,
                        503 => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("delivery {i}: status {other}"),
                    }
                    tries += 1;
                    assert!(tries < 600, "delivery {i} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                posted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // A third of the way in, the database goes away for a few seconds.
    assert!(
        eventually(Duration::from_secs(120), || async {
            posted.load(Ordering::Relaxed) >= ESIMS / 3
        })
        .await,
        "the first third is acknowledged"
    );
    let down = pg.clone();
    tokio::task::spawn_blocking(move || down.down())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            ready_status(&app).await == 503
        })
        .await,
        "/readyz answers 503 while the database is down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = pg.clone();
    tokio::task::spawn_blocking(move || up.up()).await.unwrap();

    for lane in provider {
        lane.await.unwrap();
    }
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "some deliveries met the outage and were answered 503"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            ready_status(&app).await == 200
        })
        .await,
        "/readyz is 200 again by itself"
    );

    // Every acknowledged delivery's email arrives.
    let all_sent = eventually(Duration::from_secs(180), || async {
        let got: std::collections::HashSet<String> =
            mailin.received().iter().map(|m| to(m)).collect();
        (0..ESIMS).all(|i| got.contains(&email(i)))
    })
    .await;
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in mailin.received() {
        *per.entry(to(&m)).or_default() += 1;
    }
    let missing: Vec<String> = (0..ESIMS)
        .map(email)
        .filter(|e| !per.contains_key(e))
        .collect();
    assert!(
        all_sent,
        "no acknowledged notice is lost; missing: {missing:?}"
    );
    // At-least-once: a send whose outcome could not be recorded because the
    // database went away goes again; never more than the sends in flight.
    let twice = per.values().filter(|n| **n > 1).count();
    assert!(
        twice <= 8,
        "{twice} recipients got their email more than once"
    );

    let app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("the provider's lanes are done"));
    let log_path = app.log.clone();
    assert!(app.terminate(), "it stops cleanly");
    let log = std::fs::read_to_string(log_path).unwrap();
    let said = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        said("the database cannot be reached"),
        1,
        "the outage is logged once, not per request:\n{log}"
    );
    assert_eq!(said("the database answers again"), 1, "{log}");
    assert_eq!(
        said("webhook not recorded"),
        0,
        "no line per refused webhook:\n{log}"
    );
}
