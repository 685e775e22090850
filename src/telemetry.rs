//! Logs: human-readable by default, JSON when `[log] format = "json"`.
//! Addresses are masked where they are logged (`customers::mask_email`);
//! secrets are never logged (`config::Secret` has a redacted `Debug`).

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber once; later calls (tests) are ignored.
/// `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: Option<&Config>) {
    let level = config.map(|c| c.log.level.as_str()).unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = config.is_some_and(|c| c.log.format == LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
