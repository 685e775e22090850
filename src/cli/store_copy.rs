//! `store copy --to URL` (SPEC §2, §10): the configured sled store moved
//! into an empty PostgreSQL database, the way from one VM to several.
//!
//! It runs with the server stopped: sled's lock says whether one runs, and a
//! copy taken while a server writes would miss what it writes next. Every
//! keyspace is copied as it is (the engine's record bytes are the same on
//! both backends), except events past `store.history`, which the next
//! retention sweep would drop anyway. The copy is one transaction on the
//! target; then every keyspace is counted there and compared with what was
//! read, and any difference is a failure (exit 1).

use std::cell::Cell;

use chrono::Utc;

use super::{FAILED, OK};
use crate::config::{Config, StoreBackend};
use crate::store::{Entry, PgStorage, SledStorage, Space, Storage, StoreError};

/// What each keyspace holds, as the counts are printed.
fn kind(space: Space) -> &'static str {
    match space {
        Space::Dedup => "notifyIds (dedup)",
        Space::Events => "events within history",
        Space::Esims => "eSIMs (with parked notices)",
        Space::Aliases => "eSIM identifiers",
        Space::Customers => "bindings",
        Space::Queue => "queued notices",
        Space::Dead => "dead letters",
        Space::Log => "decision log lines",
        Space::Suppress => "suppressions",
        Space::Meta => "store records (keys, counts, secrets)",
        Space::SetAside => "set-aside records",
        Space::Sent => "sent messages (for bounce reports)",
        Space::Stats => "daily counters",
        Space::ApiKeys => "API keys",
    }
}

pub fn run(config: &Config, to: &str) -> u8 {
    match copy(config, to) {
        Ok(true) => OK,
        Ok(false) => FAILED,
        Err(why) => {
            eprintln!("store copy: {why}");
            FAILED
        }
    }
}

/// `Ok(false)` when the counts read back differ (already printed).
fn copy(config: &Config, to: &str) -> Result<bool, String> {
    if config.store.backend != StoreBackend::Sled {
        return Err(
            "the configured store is already PostgreSQL; store copy moves a sled store \
             (to go back to sled, use `backup DIR`)"
                .into(),
        );
    }
    let source = SledStorage::open_with(
        &config.store.path,
        config.store.cache_mb * 1024 * 1024,
        config.store.compression,
    )
    .map_err(|e| match e {
        StoreError::Locked(_) => format!(
            "the store at {} is in use: stop the server first (a copy taken while it \
             runs would miss what it writes next)",
            config.store.path.display()
        ),
        e => e.to_string(),
    })?;
    let target = PgStorage::open(to, 2).map_err(|e| e.to_string())?;
    let source: &dyn Storage = &source;

    // An id past every id the sled store handed out (taking one burns it,
    // which ids allow): the target's sequence starts there.
    let next_id = source.run(|u| Ok(u.next_id())).map_err(|e| e.to_string())?;

    let now = Utc::now();
    let history = config.store.history.0;
    let read: [Cell<u64>; Space::ALL.len()] = Default::default();
    let mut batches = Space::ALL.iter().zip(&read).flat_map(|(&space, read)| {
        let mut rows = source.scan(space, &[]);
        let mut past_history = space == Space::Events;
        std::iter::from_fn(move || {
            let mut batch: Vec<Entry> = Vec::new();
            for entry in rows.by_ref() {
                let (k, v) = match entry {
                    Ok(e) => e,
                    Err(e) => return Some(Err(e)),
                };
                // Events are in arrival order: once one is within history,
                // every later one is too.
                if past_history {
                    match crate::engine::event_past_history(&v, now, history) {
                        Ok(true) => continue,
                        Ok(false) => past_history = false,
                        Err(e) => return Some(Err(e)),
                    }
                }
                batch.push((k, v));
                if batch.len() == PgStorage::BATCH {
                    break;
                }
            }
            if batch.is_empty() {
                return None;
            }
            read.set(read.get() + batch.len() as u64);
            Some(Ok((space, batch)))
        })
    });
    target
        .load(&mut batches, next_id)
        .map_err(|e| format!("nothing was copied: {e}"))?;
    drop(batches);

    println!("{:<40} {:>10} {:>10}", "kind", "read", "copied");
    let mut same = true;
    for (space, read) in Space::ALL.iter().zip(&read) {
        let copied = target.count(*space).map_err(|e| e.to_string())?;
        let mark = if copied == read.get() {
            ""
        } else {
            "  DIFFERS"
        };
        same &= copied == read.get();
        println!(
            "{:<40} {:>10} {:>10}{mark}",
            kind(*space),
            read.get(),
            copied
        );
    }
    if same {
        println!(
            "Copied {} into {}. Point store.url at it and set store.backend = \"postgres\".",
            config.store.path.display(),
            target.shown()
        );
    } else {
        eprintln!("store copy: the counts read back from the target differ from what was read");
    }
    Ok(same)
}
