//! The PostgreSQL backend (issue 19, first step) beyond the conformance
//! suite (`storage.rs`): the whole app on it, the synchronous store called
//! from inside a runtime and from a plain thread, and a database that is
//! down at start. Real PostgreSQL (see `pg.rs`); skipped with one line when
//! there is none, failed when `ESIM_NOTIFY_REQUIRE_POSTGRES=1`.

use std::time::Duration;

use esim_notify::store::{PgStorage, Space, Storage, StoreError};
use serde_json::json;

use crate::helpers::*;
use crate::pg::test_db;

fn postgres_toml(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool = 4\n")
}

/// A webhook accepted, its email received over SMTP, the repost a
/// duplicate, and all of it still known after a restart on the same
/// database (and nothing written to a sled store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_on_postgres_and_survives_a_restart() {
    let Some(db) = test_db() else { return };
    let app = spawn_app(&postgres_toml(&db.url)).await;
    assert_eq!(
        app.bind(json!({"email": "ana@example.com", "esimTranNo": "P1"}))
            .await
            .0,
        200
    );
    let first = esim_status("pg-1", "P1", "8900000000000000301", "IN_USE");
    let (status, body) = app.post(&first).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await,
        "the email was sent: {:?}",
        app.received().len()
    );
    assert!(app.received()[0].contains("ana@example.com"));
    assert_eq!(app.post(&first).await.1["status"], "duplicate");
    assert!(
        !app.store_path().exists(),
        "no sled store was created: the state is in PostgreSQL"
    );

    let app = app.restart().await;
    assert_eq!(app.post(&first).await.1["status"], "duplicate");
    // The binding and the eSIM are remembered: a new event is emailed too.
    let second = esim_status("pg-2", "P1", "8900000000000000301", "CANCEL");
    assert_eq!(app.post(&second).await.1["status"], "accepted");
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 2
        })
        .await,
        "the second email was sent after the restart: {}",
        app.received().len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.received().len(), 2, "the first was not sent again");
    app.stop().await;
}

fn round_trip(s: &(dyn Storage + 'static), key: &[u8]) {
    s.run(|u| {
        let id = u.next_id();
        u.put(Space::Meta, key, id.to_be_bytes().to_vec());
        Ok(())
    })
    .unwrap();
    assert!(s.get(Space::Meta, key).unwrap().is_some());
    assert_eq!(s.scan(Space::Meta, key).count(), 1);
    // Resolved at once: a committed transaction is durable.
    s.durable().try_recv().unwrap().unwrap();
}

/// The trait is synchronous; the engine calls it from tokio tasks (the
/// dispatcher) and from threads with no runtime (CLI, `spawn_blocking`).
/// Neither may panic or hang, and the store may be dropped in either.
#[tokio::test(flavor = "current_thread")]
async fn the_store_works_inside_a_current_thread_runtime_and_on_a_plain_thread() {
    let Some(db) = test_db() else { return };
    let s = PgStorage::open(&db.url, 2).unwrap();
    round_trip(&s, b"in-runtime");
    let url = db.url.clone();
    std::thread::spawn(move || {
        let s = PgStorage::open(&url, 2).unwrap();
        round_trip(&s, b"plain-thread");
    })
    .join()
    .unwrap();
    assert!(s.get(Space::Meta, b"plain-thread").unwrap().is_some());
    drop(s);
}

/// A database that does not answer at start: an error that names
/// `store.url` and where it points, never the password, and no hang.
#[test]
fn a_database_down_at_start_is_a_clear_error_without_the_password() {
    // Nothing listens on port 1 of loopback.
    let started = std::time::Instant::now();
    let err = PgStorage::open("postgres://notify:s3cret@127.0.0.1:1/notify", 2)
        .err()
        .expect("no database there");
    let StoreError::Io(msg) = err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("store.url"), "{msg}");
    assert!(
        msg.contains("postgres://notify@127.0.0.1:1/notify"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// The same at the binary's start: the process exits non-zero, saying so.
#[test]
fn the_binary_refuses_to_start_when_the_database_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_toml(dir.path(), 1, "[store]\nbackend = \"postgres\"\n");
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_esim-notify"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("serve")
        .env_remove("RUST_LOG")
        .env(
            "ESIM_NOTIFY_STORE__URL",
            "postgres://notify:s3cret@127.0.0.1:1/notify",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("store.url"), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
}

/// Instances that start together on an empty database create the schema
/// once (migrations under an advisory lock); a database a newer release
/// upgraded is refused, saying so.
#[test]
fn the_schema_is_created_once_by_openers_that_start_together() {
    let Some(db) = test_db() else { return };
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || PgStorage::open(&url, 1).map(|_| ()))
        })
        .collect();
    for o in openers {
        o.join().unwrap().expect("every opener starts");
    }
    let versions = crate::pg::query_i64(&db.url, "SELECT count(*) FROM schema_version");
    let latest = crate::pg::query_i64(&db.url, "SELECT max(version)::int8 FROM schema_version");
    assert_eq!(versions, latest, "each migration applied once");
    // A table per keyspace, each exactly once, beside schema_version.
    for space in Space::ALL {
        let name = format!("{space:?}");
        let found = crate::pg::query_i64(
            &db.url,
            &format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' \
                 AND replace(table_name, '_', '') = lower('{name}')"
            ),
        );
        assert_eq!(found, 1, "the table of {name}");
    }

    crate::pg::admin(&db.url, "INSERT INTO schema_version (version) VALUES (999)").unwrap();
    let err = PgStorage::open(&db.url, 1)
        .err()
        .expect("a newer schema is refused");
    assert!(
        format!("{err}").contains("newer than this release"),
        "{err}"
    );
}

/// A database whose layout is not the one this release expects (here: a
/// queue column gone) stops the start at open, naming the statement that
/// does not prepare, instead of failing the first webhook that needs it.
#[test]
fn a_schema_that_does_not_fit_fails_at_open_naming_the_statement() {
    let Some(db) = test_db() else { return };
    drop(PgStorage::open(&db.url, 1).expect("a fresh database opens"));
    crate::pg::admin(&db.url, "ALTER TABLE queue DROP COLUMN recheck").unwrap();
    let err = PgStorage::open(&db.url, 1)
        .err()
        .expect("a statement no longer prepares");
    let msg = err.to_string();
    assert!(msg.contains("does not prepare"), "{msg}");
    assert!(msg.contains("recheck"), "the server's reason: {msg}");
}
