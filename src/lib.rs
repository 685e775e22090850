//! esim-notify: eSIM Access webhooks in, one templated email per fact out.
//!
//! The data path, by file: `http::webhook` (who may post, status codes) → `event`
//! (the wire format) → `store` (one atomic decision per delivery, durable
//! before the 200) with `policy` (the notice rules) and `customers` (who gets
//! it) → `dispatch` (limits, retries) → `render` (templates) → `mailer`
//! (SMTP or files). `live` holds what SIGHUP swaps; `startup` wires
//! everything; `cli` and `http::admin` operate it.

pub mod api_keys;
pub mod brand;
pub mod cli;
pub mod config;
pub mod customers;
pub mod dispatch;
pub mod engine;
pub mod event;
pub mod http;
pub mod live;
pub mod locale_tags;
pub mod mailer;
pub mod metrics;
pub mod operator_views;
pub mod policy;
pub mod provider;
pub mod render;
pub mod serde_time;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod unsubscribe;
pub mod uri;
pub mod vars;
