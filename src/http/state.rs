//! The state every handler of both listeners shares.

use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::DispatchHandle;
use crate::engine::Engine;
use crate::http::webhook::SenderPolicy;
use crate::live::{current, SharedLive};
use crate::metrics::Metrics;
use crate::policy::Rules;
use crate::store::StoreError;
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

    /// Runs store work on tokio's blocking pool. A unit of work may wait for
    /// the store's lock and a sled read may wait for the disk; on one of
    /// actix's two workers either would also hold up `/healthz` and every
    /// other request that worker took (ARCHITECTURE: store calls never block
    /// an async worker). Waiting for durability stays async: it is a channel.
    pub async fn on_store<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Engine) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(format!("store task failed: {e}"))))
    }
}
