//! The eSIM Access API: what the webhooks do not carry (the activation code
//! of a new eSIM, the plan's name), fetched when a notice is about to be sent.
//!
//! - `client.rs`: `POST /api/v1/open/esim/query` with its rate limit, timeout
//!   and retries; cheap to clone, one limit shared by every clone.
//! - `wire.rs`: the answer's envelope and quirks, read into typed eSIMs.
//! - `esim.rs`: [`Esim`] and [`Plan`], what the rest of the program uses.
//! - `install.rs`: the `install` template variables and the inline QR image.
//! - `qr.rs`: the QR code of an activation code as PNG (and for a terminal).
//!
//! Nothing here touches the store: the dispatcher calls it outside every
//! storage lock and caches what it needs.

mod client;
mod esim;
pub mod install;
pub mod qr;
mod wire;

use std::fmt;
use std::time::Duration;

pub use client::{EsimQuery, Provider};
pub use esim::{plan_vars, redact_ac, Esim, Plan};
pub use install::InstallVars;
pub use wire::NOT_READY_CODE;

use crate::config::{Config, Secret};

/// How the client talks to the API. `[provider]` gives the first four; the
/// others are fixed defaults that tests shorten.
#[derive(Clone)]
pub struct ProviderSettings {
    /// Sent as the `RT-AccessCode` header; never printed.
    pub access_code: Secret,
    /// `https://api.esimaccess.com`; the path is appended.
    pub base_url: String,
    /// One limit for every caller together (the provider allows 8).
    pub requests_per_second: u32,
    /// Bounds one request, from sending it to the end of the answer.
    pub timeout: Duration,
    /// Further attempts after a passing failure (connection, 5xx, 429, timeout).
    pub retries: u32,
    /// The wait before the first retry; doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// eSIMs asked for per page.
    pub page_size: u32,
}

pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_PAGE_SIZE: u32 = 50;

impl ProviderSettings {
    /// The client `[provider]` describes, or `None` when it has no access
    /// code (enrichment off).
    pub fn from_config(config: &Config) -> Option<ProviderSettings> {
        let p = &config.provider;
        if p.access_code.is_blank() {
            return None;
        }
        Some(ProviderSettings {
            access_code: Secret::new(p.access_code.expose().trim()),
            base_url: p.base_url.clone(),
            requests_per_second: p.requests_per_second,
            timeout: p.timeout.0,
            retries: DEFAULT_RETRIES,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("access_code", &self.access_code)
            .field("base_url", &self.base_url)
            .field("requests_per_second", &self.requests_per_second)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// Why a query gave no eSIMs. [`ProviderError::retry_later`] tells the
/// caller whether asking again later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// errorCode 200010: the order's profiles are still being allocated.
    #[error("the provider is still allocating the profiles (errorCode {NOT_READY_CODE}): ask again later")]
    NotReady,
    /// `success:false` with another code, or a 4xx: asking again will not help
    /// (a wrong access code, an unknown order).
    #[error("the provider refused the query ({code}): {msg}")]
    Refused { code: String, msg: String },
    /// No answer: connection refused or lost, a 5xx, a 429; after the retries.
    #[error("the provider cannot be reached: {0}")]
    Transport(String),
    /// An answer that is not the documented envelope.
    #[error("the provider's answer cannot be read: {0}")]
    Malformed(String),
    /// No complete answer within `provider.timeout`; after the retries.
    #[error("the provider did not answer within provider.timeout ({0:?})")]
    Timeout(Duration),
}

impl ProviderError {
    /// Whether the same query may succeed later: not ready yet, or the
    /// provider unreachable. A refusal or an unreadable answer will not
    /// change by itself.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            ProviderError::NotReady | ProviderError::Transport(_) | ProviderError::Timeout(_)
        )
    }

    /// Whether the client itself retries it (a passing failure of one request).
    fn passing(&self) -> bool {
        matches!(
            self,
            ProviderError::Transport(_) | ProviderError::Timeout(_)
        )
    }

    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::NotReady => "not_ready",
            ProviderError::Refused { .. } => "refused",
            ProviderError::Transport(_) => "transport",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::Timeout(_) => "timeout",
        }
    }
}

/// A setting the client cannot work with; `setting` is the config key to fix.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ProviderSetupError {
    pub setting: &'static str,
    pub reason: String,
}
