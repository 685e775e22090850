//! The integration tests: one crate, one binary (zero2prod's shape), so the
//! helpers are compiled once and every test starts the app the same way
//! (`helpers::spawn_app`). Each module is one part of the product, as seen
//! from outside: HTTP on loopback, a real SMTP server, the built binary.

pub mod helpers;
pub mod smtp;

mod admin;
mod cli;
mod dispatch;
mod durability;
mod intake_props;
mod lifecycle;
mod locales;
mod mailer;
mod metrics;
mod notices;
mod operations;
mod sequences;
mod templates;
mod webhook;
