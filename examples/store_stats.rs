//! Prints, per keyspace of a store, how many records it holds and their
//! bytes (keys and values as stored), and sled's size on disk: what the
//! scale benchmark reports next to `du`, to tell our bytes from sled's.
//!
//! `store_stats --config bench.toml` (the server must not be running)

#[path = "benchkit/mod.rs"]
mod benchkit;

use std::path::PathBuf;

use esim_notify::config::Config;
use esim_notify::store::{SledStorage, Space, Storage};

fn main() -> anyhow::Result<()> {
    let config = Config::load(&PathBuf::from(benchkit::required("--config")))?;
    let storage = SledStorage::open(&config.store.path, config.store.cache_mb * 1024 * 1024)?;
    let (mut all_n, mut all_b) = (0u64, 0u64);
    for space in Space::ALL {
        let (mut n, mut b) = (0u64, 0u64);
        for kv in storage.scan(space, &[]) {
            let (k, v) = kv?;
            n += 1;
            b += (k.len() + v.len()) as u64;
        }
        all_n += n;
        all_b += b;
        println!("space={space:?} records={n} bytes={b}");
    }
    println!("total records={all_n} bytes={all_b}");
    Ok(())
}
