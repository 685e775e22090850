//! The storage conformance suite: what any backend of `store::Storage` must
//! do for the engine to keep SPEC's promises. Each test runs against sled
//! and against PostgreSQL (`<test>::sled`, `<test>::postgres`; see
//! `pg.rs` for where the database comes from), except the sled-only ones.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use esim_notify::store::{PgStorage, SledStorage, Space, Storage, StoreError};

#[derive(Clone, Copy)]
enum Kind {
    Sled,
    Postgres,
}

/// Where a test's store lives: a temp dir (sled's store, backups) and,
/// on PostgreSQL, a database of its own.
struct Place {
    dir: tempfile::TempDir,
    db: Option<crate::pg::TestDb>,
}

/// `None`: no PostgreSQL here (the skip was said once on stderr).
fn place(kind: Kind) -> Option<Place> {
    let dir = tempfile::tempdir().unwrap();
    let db = match kind {
        Kind::Sled => None,
        Kind::Postgres => Some(crate::pg::test_db()?),
    };
    Some(Place { dir, db })
}

impl Place {
    /// The backend under test, fresh or reopened (a restart).
    fn open(&self) -> Arc<dyn Storage> {
        match &self.db {
            Some(db) => Arc::new(PgStorage::open(&db.url, 8).expect("the backend opens")),
            None => Arc::new(
                crate::helpers::open_sled(&self.dir.path().join("store"), 8 << 20)
                    .expect("the backend opens"),
            ),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A backup: a sled store, whatever the backend.
fn open_copy(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(SledStorage::open(dir, 8 << 20).expect("the copy opens"))
}

/// Runs a conformance test on both backends.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sled() {
                super::$name(super::Kind::Sled);
            }
            #[test]
            fn postgres() {
                super::$name(super::Kind::Postgres);
            }
        }
    };
}

fn value(s: &dyn Storage, space: Space, key: &[u8]) -> Option<Vec<u8>> {
    s.get(space, key).unwrap()
}

both!(a_unit_sees_its_own_writes_and_commits_them_all_or_none);
fn a_unit_sees_its_own_writes_and_commits_them_all_or_none(kind: Kind) {
    let Some(p) = place(kind) else { return };
    let s = p.open();
    // Abandoned: nothing of it is visible.
    let r = s.run(|u| {
        u.put(Space::Esims, b"a", b"1".to_vec());
        assert_eq!(u.get(Space::Esims, b"a")?, Some(b"1".to_vec()));
        u.put(Space::Queue, b"b", b"2".to_vec());
        Err::<(), _>(StoreError::Io("the work failed".into()))
    });
    assert!(r.is_err());
    assert_eq!(value(&*s, Space::Esims, b"a"), None);
    assert_eq!(value(&*s, Space::Queue, b"b"), None);
    // Committed: all of it, a delete included.
    s.run(|u| {
        u.put(Space::Esims, b"a", b"1".to_vec());
        u.put(Space::Queue, b"b", b"2".to_vec());
        u.put(Space::Queue, b"c", b"3".to_vec());
        u.delete(Space::Queue, b"c");
        assert_eq!(u.get(Space::Queue, b"c")?, None);
        Ok(())
    })
    .unwrap();
    assert_eq!(value(&*s, Space::Esims, b"a"), Some(b"1".to_vec()));
    assert_eq!(value(&*s, Space::Queue, b"b"), Some(b"2".to_vec()));
    assert_eq!(value(&*s, Space::Queue, b"c"), None);
}

both!(a_mark_that_only_grows_keeps_the_greatest_value_written);
fn a_mark_that_only_grows_keeps_the_greatest_value_written(kind: Kind) {
    // `put_latest` from several threads, values in no order: what is kept is
    // one of them, never more than the greatest; a shared store writes a
    // mark at most once a second per process (it may be behind by that
    // much), so after a pause the next greater value is kept exactly, and a
    // smaller one never lowers it. Compared as bytes: a big-endian time
    // sorts as one.
    let Some(p) = place(kind) else { return };
    let s = p.open();
    let mark = |s: &Arc<dyn Storage>| {
        u64::from_be_bytes(
            value(&**s, Space::Meta, b"mark")
                .expect("a mark is kept")
                .try_into()
                .unwrap(),
        )
    };
    let put = |s: &Arc<dyn Storage>, v: u64| {
        s.run(|u| u.put_latest(Space::Meta, b"mark", v.to_be_bytes().to_vec()))
            .unwrap()
    };
    let written = |t: u64, i: u64| (i * 7 + t * 13) % 200;
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    s.run(|u| {
                        u.put_latest(Space::Meta, b"mark", written(t, i).to_be_bytes().to_vec())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let all: BTreeSet<u64> = (0..4u64)
        .flat_map(|t| (0..50u64).map(move |i| written(t, i)))
        .collect();
    let kept = mark(&s);
    assert!(all.contains(&kept), "{kept} is one of the values written");
    if matches!(kind, Kind::Sled) {
        assert_eq!(
            kept,
            *all.last().unwrap(),
            "sled keeps the greatest at once"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&s, 500);
    assert_eq!(mark(&s), 500, "a greater value after a pause is kept");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&s, 3);
    assert_eq!(mark(&s), 500, "a smaller value changes nothing");
}

both!(keyspaces_are_separate_and_scans_come_in_key_order);
fn keyspaces_are_separate_and_scans_come_in_key_order(kind: Kind) {
    let Some(p) = place(kind) else { return };
    let s = p.open();
    s.run(|u| {
        for k in [3u64, 1, 2, 256] {
            u.put(Space::Queue, &k.to_be_bytes(), vec![k as u8]);
        }
        u.put(Space::Dead, &1u64.to_be_bytes(), b"dead".to_vec());
        u.put(Space::Log, b"ab", b"x".to_vec());
        u.put(Space::Log, b"b", b"y".to_vec());
        Ok(())
    })
    .unwrap();
    let keys: Vec<u64> = s
        .scan(Space::Queue, &[])
        .map(|kv| u64::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(keys, vec![1, 2, 3, 256]);
    assert_eq!(s.scan(Space::Dead, &[]).count(), 1);
    let under_a: Vec<Vec<u8>> = s.scan(Space::Log, b"a").map(|kv| kv.unwrap().0).collect();
    assert_eq!(under_a, vec![b"ab".to_vec()]);
    // Inside a unit, a scan merges the unit's own writes and deletes.
    s.run(|u| {
        u.delete(Space::Queue, &2u64.to_be_bytes());
        u.put(Space::Queue, &0u64.to_be_bytes(), vec![0]);
        let seen: Vec<u64> = u
            .scan(Space::Queue, &[])?
            .into_iter()
            .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
            .collect();
        assert_eq!(seen, vec![0, 1, 3, 256]);
        Ok(())
    })
    .unwrap();
}

both!(units_never_interleave);
fn units_never_interleave(kind: Kind) {
    // Read-modify-write of one counter from several threads: a lost update
    // would show as a total below threads x rounds.
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 200;
    let Some(p) = place(kind) else { return };
    let s = p.open();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    s.run(|u| {
                        let n = u
                            .get(Space::Meta, b"counter")?
                            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
                        std::thread::yield_now();
                        u.put(Space::Meta, b"counter", (n + 1).to_be_bytes().to_vec());
                        Ok(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let total = value(&*s, Space::Meta, b"counter").unwrap();
    assert_eq!(
        u64::from_be_bytes(total.try_into().unwrap()),
        THREADS * ROUNDS
    );
}

both!(ids_are_unique_and_increasing_across_units_threads_and_restarts);
fn ids_are_unique_and_increasing_across_units_threads_and_restarts(kind: Kind) {
    let Some(p) = place(kind) else { return };
    let mut seen = BTreeSet::new();
    let mut last = 0;
    {
        let s = p.open();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .map(|_| s.run(|u| Ok(u.next_id())).unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        for w in workers {
            let ids = w.join().unwrap();
            assert!(ids.windows(2).all(|p| p[0] < p[1]), "increasing per caller");
            for id in ids {
                assert!(seen.insert(id), "id {id} handed out twice");
                last = last.max(id);
            }
        }
        s.flush().unwrap();
    }
    let s = p.open();
    let after = s.run(|u| Ok(u.next_id())).unwrap();
    assert!(after > last, "{after} after a restart, {last} before");
}

both!(a_backup_is_a_consistent_copy_that_opens);
fn a_backup_is_a_consistent_copy_that_opens(kind: Kind) {
    let Some(p) = place(kind) else { return };
    let s = p.open();
    s.run(|u| {
        u.put(Space::Customers, b"t:T1", b"ana".to_vec());
        u.put(Space::Meta, b"secret/x", b"k".to_vec());
        Ok(())
    })
    .unwrap();
    let copy = p.path().join("copy");
    s.backup(&copy).unwrap();
    // A non-empty target is refused.
    assert!(s.backup(&copy).is_err());
    drop(s);
    let c = open_copy(&copy);
    assert_eq!(value(&*c, Space::Customers, b"t:T1"), Some(b"ana".to_vec()));
    assert_eq!(value(&*c, Space::Meta, b"secret/x"), Some(b"k".to_vec()));
}

// A backup does not stop units (intake, unsubscribes) while it copies,
// and is still one point in time: a writer that keeps moving a token (one
// queue key, its number in meta and in a customer record, changed together
// by each unit) commits throughout, and the copy holds exactly one
// consistent state of it.
both!(a_backup_is_one_point_in_time_while_units_go_on);
fn a_backup_is_one_point_in_time_while_units_go_on(kind: Kind) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(p) = place(kind) else { return };
    let s = p.open();
    // Enough data that the copy takes a while.
    for chunk in 0..40u32 {
        s.run(|u| {
            for i in 0..1000u32 {
                let key = (chunk * 1000 + i).to_be_bytes();
                u.put(Space::Events, &key, vec![7u8; 1024]);
            }
            Ok(())
        })
        .unwrap();
    }
    let step = |u: &mut dyn esim_notify::store::Unit, n: u64| {
        u.delete(Space::Queue, &(n - 1).to_be_bytes());
        u.put(Space::Queue, &n.to_be_bytes(), b"token".to_vec());
        u.put(Space::Meta, b"token", n.to_be_bytes().to_vec());
        u.put(Space::Customers, b"token", n.to_be_bytes().to_vec());
        // Something added and something removed on every step, too.
        u.put(Space::Dedup, &n.to_be_bytes(), vec![1]);
        u.delete(Space::Events, &((n % 40_000) as u32).to_be_bytes());
    };
    s.run(|u| {
        step(u, 1);
        Ok(())
    })
    .unwrap();
    let backing_up = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let during = AtomicU64::new(0);
    let copy = p.path().join("copy");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 1u64;
            while !done.load(Ordering::SeqCst) {
                n += 1;
                s.run(|u| {
                    step(u, n);
                    Ok(())
                })
                .unwrap();
                if backing_up.load(Ordering::SeqCst) {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // Let the writer get going first.
        std::thread::sleep(std::time::Duration::from_millis(20));
        backing_up.store(true, Ordering::SeqCst);
        s.backup(&copy).unwrap();
        backing_up.store(false, Ordering::SeqCst);
        done.store(true, Ordering::SeqCst);
    });
    assert!(
        during.load(Ordering::SeqCst) > 5,
        "units went on during the copy: {}",
        during.load(Ordering::SeqCst)
    );
    drop(s);
    let c = open_copy(&copy);
    let token = u64::from_be_bytes(
        value(&*c, Space::Meta, b"token")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let queue: Vec<_> = c.scan(Space::Queue, &[]).map(|kv| kv.unwrap().0).collect();
    assert_eq!(queue, vec![token.to_be_bytes().to_vec()], "token {token}");
    assert_eq!(
        value(&*c, Space::Customers, b"token"),
        Some(token.to_be_bytes().to_vec())
    );
    let dedup = c.scan(Space::Dedup, &[]).count() as u64;
    assert_eq!(dedup, token, "every step up to the token's, none after");
    let events = c.scan(Space::Events, &[]).count() as u64;
    assert_eq!(
        events,
        40_000 - token,
        "the removals up to the token's, none after"
    );
}

/// sled only (not part of the conformance suite): `store.compression`
/// decides the layout of a new store and of backups; an existing store keeps
/// its own whatever the setting, and a backup restored in its place is how
/// it changes.
#[test]
fn sled_compression_is_fixed_at_creation_and_changed_through_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    // sled's `conf` is text followed by a binary checksum.
    let layout =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p.join("conf")).unwrap()).into_owned();
    let store = dir.path().join("store");
    let open = |p: &Path, compression: bool| -> Arc<dyn Storage> {
        Arc::new(SledStorage::open_with(p, 8 << 20, compression).unwrap())
    };
    let s = open(&store, false);
    s.run(|u| {
        u.put(Space::Esims, b"a", b"1".to_vec());
        Ok(())
    })
    .unwrap();
    s.flush().unwrap();
    drop(s);
    assert!(
        layout(&store).contains("use_compression: false"),
        "{}",
        layout(&store)
    );

    // Opened with compression wanted: the store keeps its layout and its data.
    let s = open(&store, true);
    assert!(layout(&store).contains("use_compression: false"));
    assert_eq!(value(&*s, Space::Esims, b"a"), Some(b"1".to_vec()));
    // Its backup takes the configured layout and opens with either setting.
    let copy = dir.path().join("copy");
    s.backup(&copy).unwrap();
    drop(s);
    assert!(
        layout(&copy).contains("use_compression: true"),
        "{}",
        layout(&copy)
    );
    let c = open(&copy, false);
    assert_eq!(value(&*c, Space::Esims, b"a"), Some(b"1".to_vec()));
}

/// sled only: PostgreSQL has no lock of the store (several processes may
/// open one database).
#[test]
fn a_second_opener_is_refused_while_the_store_is_open() {
    let p = place(Kind::Sled).unwrap();
    let _first = p.open();
    match SledStorage::open(&p.path().join("store"), 8 << 20) {
        Err(StoreError::Locked(_)) => {}
        other => panic!("expected Locked, got {:?}", other.err()),
    }
}

/// Set in the child process of the crash test: the sled store directory.
const CHILD_DIR: &str = "ESIM_NOTIFY_TEST_STORAGE_CHILD";
/// Or, on PostgreSQL, the database URL.
const CHILD_URL: &str = "ESIM_NOTIFY_TEST_STORAGE_CHILD_URL";

/// The child of [`what_was_acknowledged_survives_a_kill`]: commits units
/// and prints the number of each once `durable` said it is on disk, until
/// it is killed. Does nothing unless started by that test.
#[test]
#[ignore = "run by what_was_acknowledged_survives_a_kill in a child process"]
fn storage_crash_child() {
    let s: Arc<dyn Storage> = if let Ok(url) = std::env::var(CHILD_URL) {
        Arc::new(PgStorage::open(&url, 2).unwrap())
    } else if let Ok(dir) = std::env::var(CHILD_DIR) {
        Arc::new(SledStorage::open(Path::new(&dir), 8 << 20).unwrap())
    } else {
        return;
    };
    for n in 0u64..1_000_000 {
        s.run(|u| {
            u.put(Space::Events, &n.to_be_bytes(), vec![7; 200]);
            Ok(())
        })
        .unwrap();
        if s.durable().blocking_recv().unwrap().is_ok() {
            println!("acked {n}");
        }
    }
}

both!(what_was_acknowledged_survives_a_kill);
fn what_was_acknowledged_survives_a_kill(kind: Kind) {
    let Some(p) = place(kind) else { return };
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "storage::storage_crash_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    match &p.db {
        Some(db) => child.env(CHILD_URL, &db.url),
        None => child.env(CHILD_DIR, p.path().join("store")),
    };
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("acked ") {
            acked.push(n.parse::<u64>().unwrap());
            if acked.len() == 300 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 300, "the child acknowledged units");
    let s = p.open();
    for n in acked {
        assert!(
            value(&*s, Space::Events, &n.to_be_bytes()).is_some(),
            "unit {n} was acknowledged as durable and is gone after the kill"
        );
    }
}

both!(daily_counters_are_exact_under_concurrent_units_on_the_zone_s_days);
/// The daily counters (issue 20), engine-level on both backends: counted
/// in the unit that appends each decision-log line, so exact when units
/// about many eSIMs run from many threads at once (a backend that ran them
/// side by side on a shared counter row without a lock would lose some);
/// on the calendar day of the configured zone; and removed with
/// `store.history`.
fn daily_counters_are_exact_under_concurrent_units_on_the_zone_s_days(kind: Kind) {
    use chrono::{NaiveDate, TimeZone, Utc};
    use esim_notify::engine::{Ages, Engine, SendOutcome};
    use std::time::Duration;

    let Some(p) = place(kind) else { return };
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let engine = Arc::new(
        Engine::new(p.open(), Duration::from_secs(86_400))
            .unwrap()
            .counting_days_in(berlin),
    );
    // Midnight in Berlin (UTC+1 in December) is 23:00 UTC: queued and
    // failed the second before it, on the 4th; sent after it, on the 5th.
    let before = Utc.with_ymd_and_hms(2026, 12, 4, 22, 59, 59).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 12, 4, 23, 0, 1).unwrap();
    let (threads, per_thread) = (8u64, 3u64);
    std::thread::scope(|s| {
        for t in 0..threads {
            let engine = engine.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let tran = format!("DC{t}x{i}");
                    let id = crate::helpers::queue_one(&engine, &tran, before).1.id;
                    let retry = SendOutcome::Retry {
                        error: "451 try later".into(),
                        next_attempt: before,
                    };
                    engine.record(id, &retry, before).unwrap();
                    let sent = SendOutcome::Sent {
                        message_id: format!("<{tran}@test>"),
                    };
                    engine.record(id, &sent, after).unwrap();
                }
            });
        }
    });
    let n = threads * per_thread;
    let d4 = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
    let d5 = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
    let on = |day: NaiveDate, rows: &[esim_notify::engine::DayStats]| {
        let mut sum = esim_notify::engine::DayCounts::default();
        for r in rows.iter().filter(|r| r.day == day) {
            sum.queued += r.counts.queued;
            sum.failed += r.counts.failed;
            sum.sent += r.counts.sent;
        }
        (sum.queued, sum.failed, sum.sent)
    };
    let rows = engine.daily_stats(d4, d5).unwrap();
    assert_eq!(
        on(d4, &rows),
        (n, n, 0),
        "queued and failed before midnight: {rows:?}"
    );
    assert_eq!(on(d5, &rows), (0, 0, n), "sent after it: {rows:?}");
    assert!(rows.iter().all(|r| r.template.is_some()), "{rows:?}");

    // Two days of history at 01:00 on the 7th (Berlin): the 5th is kept,
    // the 4th goes.
    let now = Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap();
    let ages = Ages {
        delivery_dedup: Duration::from_secs(86_400),
        history: Duration::from_secs(2 * 86_400),
        park_for: Duration::from_secs(3600),
    };
    let report = engine.retain(now, &ages).unwrap();
    assert!(report.stats_removed > 0, "{report:?}");
    let rows = engine.daily_stats(d4, d5).unwrap();
    assert!(rows.iter().all(|r| r.day == d5), "{rows:?}");
    assert_eq!(on(d5, &rows), (0, 0, n));
}
