//! Binds N customers offline, before the server starts, through the real
//! store API (`Engine::bind`): customer n gets the n-th eSIM of a run
//! (`benchkit::esim_tran_no`). Faster than N `PUT /admin/customers`.
//!
//! `seed --config bench.toml --prefix e2e --count 10000`

#[path = "benchkit/mod.rs"]
mod benchkit;

use std::path::PathBuf;
use std::time::Instant;

use esim_notify::config::Config;
use esim_notify::customers::Recipient;
use esim_notify::engine::Engine;
use esim_notify::event::Identifiers;

fn main() -> anyhow::Result<()> {
    let config = Config::load(&PathBuf::from(benchkit::required("--config")))?;
    let prefix = benchkit::required("--prefix");
    let count: u64 = benchkit::arg("--count", 10_000);
    let store = Engine::open(&config)?;
    let park_for = config.customers.park_for.0;
    let t = Instant::now();
    for n in 0..count {
        let recipient = Recipient {
            email: benchkit::email(&prefix, n),
            name: Some(format!("Customer {n}")),
            locale: None,
            timezone: None,
        };
        let ids = Identifiers {
            esim_tran_no: Some(benchkit::esim_tran_no(&prefix, n)),
            ..Identifiers::default()
        };
        store.bind(&recipient, &ids, park_for, chrono::Utc::now())?;
    }
    store.flush()?;
    println!("bound={count} elapsed_s={:.3}", t.elapsed().as_secs_f64());
    Ok(())
}
