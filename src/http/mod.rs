//! Both HTTP listeners: the shared state, the conventions every answer
//! follows (JSON 4xx, HEAD), the webhook and unsubscribe pages of the public
//! listener, and the admin API and preview of the admin listener. Nothing
//! here builds the app: `startup` wires these routes.

pub mod admin;
pub mod conventions;
pub mod error;
pub mod preview;
pub mod state;
pub mod unsubscribe;
pub mod webhook;
