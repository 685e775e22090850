//! `store copy --to URL` (SPEC §2, §10) with the built binary: a sled store
//! holding every kind of thing moves into an empty PostgreSQL database, and
//! a server on that database carries on where the sled one stopped; a
//! database that is not empty, or a sled store a server still holds, is
//! refused. And the way back: `backup DIR` of a PostgreSQL store is a sled
//! store that serves.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::pg::test_db;

const BIN: &str = env!("CARGO_BIN_EXE_esim-notify");
const GB: u64 = 1 << 30;
/// Sled, whatever backend this run's stores are on: the copy's source.
const ON_SLED: &str = "[store]\nbackend = \"sled\"\n";

fn on_postgres_toml(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool = 4\n")
}

async fn admin(http: &reqwest::Client, url: String, method: Method, body: Option<Value>) -> Value {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("admin request");
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.expect("JSON")
}

/// What the admin API shows of a store, for a before/after comparison.
async fn views(http: &reqwest::Client, base: impl Fn(&str) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/admin/outbox",
        "/admin/dead",
        "/admin/parked",
        "/admin/suppressions",
        "/admin/customers?esimTranNo=C2",
        "/admin/esims/8944000000000000109",
    ] {
        out.push(admin(http, base(path), Method::GET, None).await);
    }
    out
}

/// `esim-notify --config DIR/config.toml store copy --to URL`.
fn store_copy(dir: &Path, url: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["store", "copy", "--to", url])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The count printed for one kind: (read, copied).
fn counts(stdout: &str, kind: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind:?} line in\n{stdout}"));
    let n: Vec<u64> = line[kind.len()..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_copied_into_postgres_serves_the_same() {
    let Some(db) = test_db() else { return };
    let app = spawn_app(ON_SLED).await;
    let http = app.http.clone();
    // A dead letter and the suppression its "user unknown" added.
    app.smtp
        .0
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    app.bind(json!({"email": "dan@example.com", "esimTranNo": "C3"}))
        .await;
    let dead = data_usage("c-dead", "C3", "8944000000000000103", 10 * GB, GB);
    assert_eq!(app.post(&dead).await.0, 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.engine.dead().unwrap().len() == 1
        })
        .await,
        "the notice to dan died"
    );
    // An operator's suppression, a binding with nothing queued, a notice
    // queued while paused, three parked for a customer not bound yet.
    admin(
        &http,
        app.admin_url("/admin/suppressions/eve@example.com"),
        Method::PUT,
        Some(json!({"reason": "operator"})),
    )
    .await;
    app.bind(json!({"email": "bob@example.com", "esimTranNo": "C2"}))
        .await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "C1"}))
        .await;
    admin(&http, app.admin_url("/admin/pause"), Method::POST, None).await;
    let queued = data_usage("c-queued", "C1", "8944000000000000101", 10 * GB, GB);
    assert_eq!(app.post(&queued).await.0, 200);
    for (i, remain) in [5, 2, 1].into_iter().enumerate() {
        let body = data_usage(
            &format!("c-parked-{i}"),
            "C9",
            "8944000000000000109",
            10 * GB,
            remain * GB / 10,
        );
        assert_eq!(app.post(&body).await.0, 200);
    }
    let before = views(&http, |p| app.admin_url(p)).await;
    assert_eq!(
        before[0].as_array().unwrap().len(),
        1,
        "queued: {}",
        before[0]
    );
    // Parked notices of one eSIM keep the latest level only.
    assert_eq!(
        before[2].as_array().unwrap().len(),
        1,
        "parked: {}",
        before[2]
    );
    let sent_on_sled = app.received().len();

    // While the sled server runs, its lock refuses the copy.
    let (code, _, err) = store_copy(app.dir.path(), &db.url);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop the server"), "{err}");
    assert_eq!(
        crate::pg::query_i64(
            &db.url,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        0,
        "the database was not touched"
    );

    let (smtp_port, smtp) = (app.smtp_port, app.smtp.clone());
    let dir = app.stop().await;
    let (code, out, err) = store_copy(dir.path(), &db.url);
    assert_eq!(code, 0, "{out}{err}");
    for kind in [
        "eSIMs",
        "bindings",
        "queued notices",
        "dead letters",
        "suppressions",
        "decision log lines",
        "events within history",
    ] {
        let (read, copied) = counts(&out, kind);
        assert!(read > 0, "{kind}: {out}");
        assert_eq!(read, copied, "{kind}: {out}");
    }
    assert_eq!(counts(&out, "queued notices"), (1, 1), "{out}");
    assert_eq!(counts(&out, "dead letters"), (1, 1), "{out}");
    assert_eq!(counts(&out, "suppressions"), (2, 2), "{out}");
    assert_eq!(
        crate::pg::query_i64(&db.url, "SELECT count(*) FROM queue"),
        1
    );

    // A second copy into the same database is refused: it is not empty.
    let (code, _, err) = store_copy(dir.path(), &db.url);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        crate::pg::query_i64(&db.url, "SELECT count(*) FROM queue"),
        1,
        "the refused copy added nothing"
    );

    // A server on the database: the same views, and the queued notice goes
    // out once sending resumes (the pause was copied too).
    let server = Binary::serve_smtp(dir.path(), smtp_port, &on_postgres_toml(&db.url)).await;
    let after = views(&http, |p| server.admin_url(p)).await;
    assert_eq!(before, after);
    admin(&http, server.admin_url("/admin/resume"), Method::POST, None).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == sent_on_sled + 1
        })
        .await,
        "the queued notice was sent from PostgreSQL: {}",
        smtp.received().len()
    );
    assert!(smtp.received().last().unwrap().contains("ana@example.com"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            crate::pg::query_i64(&db.url, "SELECT count(*) FROM queue") == 0
        })
        .await,
        "the sent notice left the database's queue"
    );
    // New work takes ids above every copied one: the new notice and the
    // copied dead letter are told apart.
    let next = data_usage("c-new", "C2", "8944000000000000102", 10 * GB, GB);
    assert_eq!(server.post(&next).await, 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == sent_on_sled + 2
        })
        .await
    );
    let dead_after = admin(&http, server.admin_url("/admin/dead"), Method::GET, None).await;
    assert_eq!(dead_after, before[1], "the dead letter is the copied one");
    assert!(server.terminate());
}

/// The sequence of ids on the target starts above every id copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ids_on_the_target_start_above_every_copied_id() {
    let Some(db) = test_db() else { return };
    let app = spawn_app(ON_SLED).await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "I1"}))
        .await;
    admin(&app.http, app.admin_url("/admin/pause"), Method::POST, None).await;
    assert_eq!(
        app.post(&data_usage("i-1", "I1", "8944000000000000201", 10 * GB, GB))
            .await
            .0,
        200
    );
    let copied_id = app.engine.outbox().unwrap()[0].id;
    let dir = app.stop().await;
    let (code, out, err) = store_copy(dir.path(), &db.url);
    assert_eq!(code, 0, "{out}{err}");
    let next = crate::pg::query_i64(&db.url, "SELECT nextval('ids')");
    assert!(next as u64 > copied_id, "{next} <= {copied_id}");
}

/// A configured store that is already PostgreSQL is refused, saying how
/// to go the other way.
#[test]
fn copying_a_postgres_store_is_refused() {
    let Some(db) = test_db() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        test_config_toml(dir.path(), 1, &on_postgres_toml(&db.url)),
    )
    .unwrap();
    let (code, _, err) = store_copy(dir.path(), &db.url);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("backup DIR"), "{err}");
}

/// The way back to one VM: `backup DIR` of a PostgreSQL store writes a sled
/// store, and a server on it has the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_postgres_store_is_a_sled_store_that_serves() {
    let Some(db) = test_db() else { return };
    let app = spawn_app(&on_postgres_toml(&db.url)).await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "B1"}))
        .await;
    admin(&app.http, app.admin_url("/admin/pause"), Method::POST, None).await;
    assert_eq!(
        app.post(&data_usage("b-1", "B1", "8944000000000000301", 10 * GB, GB))
            .await
            .0,
        200
    );
    let target = app.dir.path().join("back-to-sled");
    let r = admin(
        &app.http,
        app.admin_url("/admin/backup"),
        Method::POST,
        Some(json!({ "dir": target })),
    )
    .await;
    assert!(r.is_object(), "{r}");
    let (smtp_port, smtp) = (app.smtp_port, app.smtp.clone());
    let outbox = app.engine.outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    // Kept: the backup is inside it.
    let _app_dir = app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let sled = format!(
        "[store]\nbackend = \"sled\"\npath = {:?}\n",
        target.display().to_string()
    );
    let server = Binary::serve_smtp(dir.path(), smtp_port, &sled).await;
    let http = reqwest::Client::new();
    let rows = admin(&http, server.admin_url("/admin/outbox"), Method::GET, None).await;
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["id"], outbox[0].id, "{rows}");
    admin(&http, server.admin_url("/admin/resume"), Method::POST, None).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 1
        })
        .await
    );
    assert!(smtp.received()[0].contains("ana@example.com"));
    assert!(server.terminate());
}
