//! The state every handler of both listeners shares.

use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::DispatchHandle;
use crate::engine::Engine;
use crate::http::webhook::SenderPolicy;
use crate::live::{current, SharedLive};
use crate::metrics::Metrics;
use crate::policy::Rules;
use crate::unsubscribe::Signer;

/// Shared by every handler of both listeners.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Engine>,
    pub sender: SenderPolicy,
    pub max_body_bytes: usize,
    pub live: SharedLive,
    pub dispatch: DispatchHandle,
    pub metrics: Arc<Metrics>,
    pub unsubscribe: Signer,
    /// The config file, if any: relative paths given at run time (`backup`)
    /// are resolved against its directory, as the config's own paths are.
    pub config_path: Option<std::path::PathBuf>,
}

impl AppState {
    pub fn rules(&self) -> Arc<Rules> {
        current(&self.live).rules.clone()
    }
}
