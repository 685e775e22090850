//! Fills a store offline with N distinct eSIMs for the scale benchmark: one
//! DATA_USAGE delivery each (distinct notifyId, 70 % of the data left, so the
//! eSIM, its identifiers, the event and its log line are recorded but no
//! notice is queued), written through the real parser and the real
//! `Engine::ingest`, as the webhook handler does, minus HTTP and the per-request
//! fsync (one flush at the end). Two threads, as the public listener has two
//! workers.
//!
//! `load --config bench.toml --prefix scale --count 1000000`

#[path = "benchkit/mod.rs"]
mod benchkit;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use esim_notify::config::Config;
use esim_notify::engine::{Engine, IngestOutcome};
use esim_notify::event::Event;

fn main() -> anyhow::Result<()> {
    let config = Config::load(&PathBuf::from(benchkit::required("--config")))?;
    let prefix = benchkit::required("--prefix");
    let count: u64 = benchkit::arg("--count", 1_000_000);
    let remain_pct: u64 = benchkit::arg("--remain-pct", 70);
    let threads: usize = benchkit::arg("--threads", 2);
    let store: Arc<Engine> = Arc::new(Engine::open(&config)?);
    let rules = Arc::new(esim_notify::live::rules_from(&config));
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (store, rules, next, prefix) =
                (store.clone(), rules.clone(), next.clone(), prefix.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut accepted = 0;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return Ok(accepted);
                    }
                    let body = benchkit::data_usage(&prefix, n, remain_pct);
                    let value: serde_json::Value = serde_json::from_str(&body)?;
                    let event = Event::from_value(&value)?;
                    let outcome = store.ingest(&event, &value, &rules, chrono::Utc::now())?;
                    if matches!(outcome, IngestOutcome::Accepted { .. }) {
                        accepted += 1;
                    }
                    if n > 0 && n % 100_000 == 0 {
                        eprintln!(
                            "load: {n} events, {:.0}/s",
                            n as f64 / t.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        })
        .collect();
    let mut accepted = 0;
    for w in workers {
        accepted += w.join().expect("loader thread")?;
    }
    store.flush()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "loaded={count} accepted={accepted} elapsed_s={secs:.1} rate={:.0}",
        count as f64 / secs
    );
    Ok(())
}
