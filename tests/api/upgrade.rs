//! Upgrading: a store written by the release before versioned records
//! (`tests/fixtures/store-v0`, JSON records) opens, is migrated once, and
//! keeps working: its queue, parked notices, dead letters, suppressions
//! (also a forgotten customer's hashed one), bindings, flags and secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use esim_notify::customers::{IdKind, Recipient};
use esim_notify::engine::{DeadRetry, Engine, IngestOutcome, LogKind, SuppressReason};
use esim_notify::event::{Event, Identifiers};
use esim_notify::policy::Rules;
use serde_json::Value;

use crate::helpers::{copy_dir, open_engine, Binary};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v0");

/// A fresh copy of the fixture (sled writes on open), and what it was written with.
fn fixture() -> (tempfile::TempDir, PathBuf, DateTime<Utc>, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    copy_dir(Path::new(FIXTURE), &store);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("meta.json")).unwrap()).unwrap();
    let at = DateTime::parse_from_rfc3339(meta["written_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let secret = meta["unsubscribe_secret"].as_str().unwrap().to_string();
    (dir, store, at, secret)
}

fn open(store: &Path) -> Engine {
    open_engine(store, Duration::from_secs(7 * 86400)).unwrap()
}

#[test]
fn a_store_of_json_records_is_migrated_and_keeps_its_queue_and_lists() {
    let (_dir, store, t0, secret) = fixture();
    let engine = open(&store);

    // The queue: ana's 10 % notice, with the figures it was decided on.
    let outbox = engine.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let q = &outbox[0];
    assert_eq!(q.recipient.email, "ana@example.com");
    assert_eq!(q.recipient.locale.as_deref(), Some("es"));
    assert_eq!(q.notice.template, "data_usage");
    assert_eq!(q.notice.level, Some(0.1));
    assert_eq!(q.queued_at, t0);
    let vars = q.vars.to_json();
    assert_eq!(vars["usage"]["thresholdPercent"], 10.0);
    assert_eq!(vars["usage"]["remain"], 1073741824 / 2);
    assert_eq!(vars["event"]["notifyId"], "n-ana-10");

    // Parked: T2's 20 %.
    let parked = engine.parked().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].ids.esim_tran_no.as_deref(), Some("T2"));
    assert_eq!(parked[0].parked.notice.level, Some(0.2));
    assert_eq!(parked[0].parked.parked_at, t0);

    // Dead: bob's used-up, with the automatic suppression it caused.
    let dead = engine.dead().unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("550"), "{}", dead[0].reason);
    let bob = engine.suppression("bob@example.com").unwrap().unwrap();
    assert!(bob.added_by(dead[0].notice.id), "{bob:?}");
    assert_eq!(bob.reason, SuppressReason::Bounced);
    let carol = engine.suppression("carol@example.com").unwrap().unwrap();
    assert_eq!(carol.reason, SuppressReason::Unsubscribed);
    assert!(carol.auto_for.is_empty());
    // dave was forgotten: only the keyed hash is left, and it still holds.
    let dave = engine.suppression("dave@example.com").unwrap().unwrap();
    assert!(dave.email.starts_with('#'), "{dave:?}");
    assert_eq!(
        (dave.reason, dave.detail.as_deref()),
        (SuppressReason::Operator, Some("complaint"))
    );
    assert!(engine
        .suppressions()
        .unwrap()
        .iter()
        .all(|s| !s.email.contains("dave")));

    // The counts the metrics read were carried over.
    let c = engine.counts();
    assert_eq!((c.outbox, c.parked, c.dead), (1, 1, 1));

    // Flags, secrets and the last webhook time.
    assert!(engine.paused().unwrap());
    assert_eq!(
        hex::encode(engine.secret("unsubscribe").unwrap()),
        secret,
        "links already mailed keep working"
    );
    assert_eq!(engine.last_webhook().unwrap(), Some(t0));

    // Decision logs read back, erin's send included.
    let erin = engine.esim_view(None, "T5").unwrap().unwrap();
    assert_eq!(
        erin.recipient.as_ref().map(|r| r.email.as_str()),
        Some("erin@example.com")
    );
    let kinds: Vec<LogKind> = erin.decisions.iter().map(|d| d.what).collect();
    assert!(kinds.contains(&LogKind::Sent), "{kinds:?}");
    assert_eq!(erin.state.cycle_volume, Some(10737418240));
}

#[test]
fn after_the_migration_it_decides_as_before() {
    let (_dir, store, t0, _) = fixture();
    let engine = open(&store);
    let rules = Rules::default();
    let post = |body: &str, at| {
        let v: Value = serde_json::from_str(body).unwrap();
        engine
            .ingest(&Event::from_value(&v).unwrap(), &v, &rules, at)
            .unwrap()
    };
    // A notifyId seen before the upgrade is still a duplicate within delivery_dedup.
    let again = r#"{"notifyType":"DATA_USAGE","notifyId":"n-ana-10","content":{"esimTranNo":"T1","totalVolume":10737418240,"remain":1}}"#;
    assert_eq!(
        post(again, t0 + chrono::Duration::hours(1)),
        IngestOutcome::Duplicate
    );

    // ana's 10 % is queued already: a later 10 % report sends nothing more,
    // USED_UP is new.
    let used_up = r#"{"notifyType":"ESIM_STATUS","notifyId":"n-ana-up","content":{"esimTranNo":"T1","iccid":"8900T1","esimStatus":"USED_UP","smdpStatus":"ENABLED"}}"#;
    let IngestOutcome::Accepted { queued, .. } = post(used_up, t0 + chrono::Duration::hours(2))
    else {
        panic!("accepted");
    };
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].notice.template, "esim_used_up");

    // Binding T2 releases the notice parked before the upgrade.
    let recipient = Recipient {
        email: "gus@example.com".into(),
        name: None,
        locale: None,
        timezone: None,
    };
    let ids = Identifiers {
        esim_tran_no: Some("T2".into()),
        ..Default::default()
    };
    let report = engine
        .bind(
            &recipient,
            &ids,
            Duration::from_secs(72 * 3600),
            t0 + chrono::Duration::hours(3),
        )
        .unwrap();
    assert_eq!(report.released.len(), 1);
    assert_eq!(engine.counts().parked, 0);

    // The ICCID-only binding made before its eSIM appeared still finds it.
    let fay = r#"{"notifyType":"ESIM_STATUS","notifyId":"n-fay","content":{"esimTranNo":"T6","iccid":"8900T6","esimStatus":"IN_USE","smdpStatus":"ENABLED"}}"#;
    let IngestOutcome::Accepted { queued, .. } = post(fay, t0 + chrono::Duration::hours(4)) else {
        panic!("accepted");
    };
    assert_eq!(queued[0].recipient.email, "fay@example.com");
    assert_eq!(
        engine
            .recipient_by(IdKind::Iccid, "8900T6")
            .unwrap()
            .map(|r| r.email),
        Some("fay@example.com".into())
    );

    // bob's dead letter retries, lifting the suppression its refusal added.
    let id = engine.dead().unwrap()[0].notice.id;
    let retried = engine
        .retry_dead(id, t0 + chrono::Duration::hours(5))
        .unwrap();
    assert!(
        matches!(
            retried,
            DeadRetry::Requeued {
                lifted: Some(_),
                ..
            }
        ),
        "{retried:?}"
    );
}

#[test]
fn the_migration_runs_once_and_a_reopened_store_is_already_current() {
    let (_dir, store, _, _) = fixture();
    let first = open(&store).outbox().unwrap();
    // Opened again: nothing left to convert, the same records.
    let second = open(&store).outbox().unwrap();
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_binary_serves_an_upgraded_store_and_says_it_migrated() {
    if crate::helpers::sled_only("a sled store from an older release") {
        return;
    }
    let (dir, _store, _, _) = fixture();
    let server = Binary::serve(dir.path(), "").await;
    let rows: Vec<Value> = reqwest::get(server.admin_url("/admin/outbox"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["template"], "data_usage");
    assert_eq!(rows[0]["waiting_for"], "paused by operator");
    let log = server.kill();
    assert_eq!(
        log.matches("store migrated from format 0").count(),
        1,
        "{log}"
    );
    // Started again: no second migration.
    let server = Binary::serve(dir.path(), "").await;
    let log = server.kill();
    assert!(!log.contains("store migrated"), "{log}");
}

const FIXTURE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1");

/// A format-1 store (versioned records, free-text suppression reasons):
/// each suppression gets one of the four reasons, since when it was added,
/// and its text as detail, once; the rest of the store is untouched.
#[test]
fn a_format_1_store_gets_suppression_reasons_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    copy_dir(Path::new(FIXTURE_V1), &store);
    let written = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let engine = open(&store);
    let get = |e: &str| engine.suppression(e).unwrap().unwrap();
    let ana = get("ana@example.com");
    assert_eq!(
        (ana.reason, ana.detail.as_deref(), ana.since),
        (SuppressReason::Unsubscribed, Some("one-click"), written)
    );
    let bob = get("bob@example.com");
    assert_eq!(bob.reason, SuppressReason::Bounced);
    assert!(
        bob.detail.as_deref().unwrap().contains("user unknown"),
        "{bob:?}"
    );
    let dead = engine.dead().unwrap();
    assert!(bob.added_by(dead[0].notice.id), "a retry still lifts it");
    assert_eq!(get("carol@example.com").reason, SuppressReason::Operator);
    let dave = get("dave@example.com");
    assert_eq!(
        (dave.reason, dave.detail.as_deref()),
        (SuppressReason::Operator, Some("asked by phone"))
    );
    assert_eq!(get("erin@example.com").reason, SuppressReason::Complained);
    drop(engine);
    // Opened again: nothing to convert, the same list.
    let first: Vec<_> = vec![ana, bob];
    let engine = open(&store);
    assert_eq!(
        vec![
            get2(&engine, "ana@example.com"),
            get2(&engine, "bob@example.com")
        ],
        first
    );
}

fn get2(engine: &Engine, email: &str) -> esim_notify::engine::Suppression {
    engine.suppression(email).unwrap().unwrap()
}
