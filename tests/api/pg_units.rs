//! Units of work on PostgreSQL run side by side (issue 19): each locks the
//! keys it reads and writes, so units about different keys do not wait for
//! each other, units about one key do, a deadlock between two is run again,
//! and a unit that scans runs alone. sled runs one unit at a time, so these
//! are PostgreSQL's only; the conformance suite (`storage.rs`) checks what
//! both promise.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use esim_notify::store::{PgStorage, Space, Storage};

fn open() -> Option<(Arc<dyn Storage>, crate::pg::TestDb)> {
    let db = crate::pg::test_db()?;
    let s: Arc<dyn Storage> = Arc::new(PgStorage::open(&db.url, 8).expect("the store opens"));
    Some((s, db))
}

fn number(s: &dyn Storage, key: &[u8]) -> u64 {
    s.get(Space::Meta, key)
        .unwrap()
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
}

/// Waits (at most 10 s) for `flag`; whether it came.
fn until(flag: &AtomicBool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn units_about_different_keys_run_side_by_side() {
    let Some((s, _db)) = open() else { return };
    let inside = Arc::new(AtomicBool::new(false));
    let other_done = Arc::new(AtomicBool::new(false));
    let a = {
        let (s, inside, other_done) = (s.clone(), inside.clone(), other_done.clone());
        std::thread::spawn(move || {
            s.run(|u| {
                u.get(Space::Meta, b"a")?;
                inside.store(true, Ordering::SeqCst);
                // Still inside this unit: the other one must be able to end.
                let saw = until(&other_done);
                u.put(Space::Meta, b"a", vec![1]);
                Ok(saw)
            })
            .unwrap()
        })
    };
    assert!(until(&inside), "the first unit started");
    s.run(|u| {
        u.get(Space::Meta, b"b")?;
        u.put(Space::Meta, b"b", vec![2]);
        Ok(())
    })
    .unwrap();
    other_done.store(true, Ordering::SeqCst);
    assert!(
        a.join().unwrap(),
        "a unit on another key committed while the first was open"
    );
    assert_eq!(s.get(Space::Meta, b"a").unwrap(), Some(vec![1]));
    assert_eq!(s.get(Space::Meta, b"b").unwrap(), Some(vec![2]));
}

#[test]
fn a_unit_waits_for_the_unit_holding_its_key_and_reads_what_it_committed() {
    let Some((s, _db)) = open() else { return };
    let inside = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let first = {
        let (s, inside, release) = (s.clone(), inside.clone(), release.clone());
        std::thread::spawn(move || {
            s.run(|u| {
                u.get(Space::Esims, b"k")?;
                inside.store(true, Ordering::SeqCst);
                until(&release);
                u.put(Space::Esims, b"k", 7u64.to_be_bytes().to_vec());
                Ok(())
            })
            .unwrap()
        })
    };
    assert!(until(&inside));
    let second_done = Arc::new(AtomicBool::new(false));
    let second = {
        let (s, done) = (s.clone(), second_done.clone());
        std::thread::spawn(move || {
            let seen = s
                .run(|u| u.get(Space::Esims, b"k"))
                .unwrap()
                .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
            done.store(true, Ordering::SeqCst);
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !second_done.load(Ordering::SeqCst),
        "a unit reading a key another unit holds waits"
    );
    release.store(true, Ordering::SeqCst);
    first.join().unwrap();
    assert_eq!(
        second.join().unwrap(),
        Some(7),
        "and then reads what that unit committed"
    );
}

#[test]
fn two_units_that_deadlock_are_run_again_and_both_commit() {
    let Some((s, _db)) = open() else { return };
    let meet = Arc::new(Barrier::new(2));
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = |first: &'static [u8], second: &'static [u8]| {
        let (s, meet, runs) = (s.clone(), meet.clone(), runs.clone());
        std::thread::spawn(move || {
            let mut attempt = 0;
            s.run(|u| {
                attempt += 1;
                runs.fetch_add(1, Ordering::SeqCst);
                let a = u.get(Space::Meta, first)?.map_or(0, |b| b[0]);
                if attempt == 1 {
                    // Both hold their first key before either asks for its second.
                    meet.wait();
                }
                let b = u.get(Space::Meta, second)?.map_or(0, |b| b[0]);
                u.put(Space::Meta, first, vec![a + 1]);
                u.put(Space::Meta, second, vec![b + 1]);
                Ok(())
            })
        })
    };
    let one = worker(b"x", b"y");
    let two = worker(b"y", b"x");
    one.join().unwrap().expect("the first unit commits");
    two.join().unwrap().expect("the second unit commits");
    assert_eq!(s.get(Space::Meta, b"x").unwrap(), Some(vec![2]));
    assert_eq!(s.get(Space::Meta, b"y").unwrap(), Some(vec![2]));
    assert!(
        runs.load(Ordering::SeqCst) >= 3,
        "the database aborted one of them, which ran again"
    );
}

#[test]
fn a_unit_that_scans_runs_alone() {
    let Some((s, _db)) = open() else { return };
    s.run(|u| {
        u.put(Space::Meta, b"r/1", vec![1]);
        Ok(())
    })
    .unwrap();
    let past_scan = Arc::new(AtomicBool::new(false));
    let writer_done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let scanner = {
        let (s, past_scan, writer_done, runs) = (
            s.clone(),
            past_scan.clone(),
            writer_done.clone(),
            runs.clone(),
        );
        std::thread::spawn(move || {
            s.run(|u| {
                runs.fetch_add(1, Ordering::SeqCst);
                let n = u.scan(Space::Meta, b"r/")?.len() as u64;
                past_scan.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(400));
                u.put(Space::Meta, b"count", n.to_be_bytes().to_vec());
                // Whether a unit writing into the scanned range got in meanwhile.
                Ok(writer_done.load(Ordering::SeqCst))
            })
            .unwrap()
        })
    };
    assert!(until(&past_scan));
    s.run(|u| {
        u.put(Space::Meta, b"r/2", vec![2]);
        Ok(())
    })
    .unwrap();
    writer_done.store(true, Ordering::SeqCst);
    assert!(
        !scanner.join().unwrap(),
        "no unit committed while the scanning unit ran"
    );
    assert_eq!(number(&*s, b"count"), 1, "it counted what was there before");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "it ran again alone");
    assert_eq!(s.get(Space::Meta, b"r/2").unwrap(), Some(vec![2]));
}

#[test]
fn a_unit_writing_more_keys_than_it_may_lock_runs_alone_and_commits_them_all() {
    let Some((s, _db)) = open() else { return };
    let runs = AtomicUsize::new(0);
    s.run(|u| {
        runs.fetch_add(1, Ordering::SeqCst);
        for i in 0..500u32 {
            u.put(Space::Customers, &i.to_be_bytes(), vec![1]);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "it ran again alone");
    assert_eq!(s.scan(Space::Customers, &[]).count(), 500);
}
