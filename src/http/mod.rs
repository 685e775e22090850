//! Both HTTP listeners: the shared state, the conventions every answer
//! follows (JSON 4xx, HEAD), the webhook and unsubscribe pages of the public
//! listener with the mail provider's reports (`feedback`), and the admin API, the operator console, its forgery guard
//! and its Host check (DNS rebinding) on the admin listener. Nothing here
//! builds the app: `startup` wires these routes.

pub mod admin;
pub mod answer;
pub mod api;
pub mod console;
pub mod conventions;
pub mod csrf;
pub mod customers;
pub mod error;
pub mod feedback;
pub mod host_guard;
pub mod keys;
pub mod resend;
pub mod state;
pub mod stats;
pub mod unsubscribe;
pub mod webhook;
