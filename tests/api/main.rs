//! The integration tests: one crate, one binary (zero2prod's shape), so the
//! helpers are compiled once and every test starts the app the same way
//! (`helpers::spawn_app`). Each module is one part of the product, as seen
//! from outside: HTTP on loopback, a real SMTP server, the built binary.

pub mod fake_provider;
pub mod helpers;
pub mod pg;
pub mod smtp;

mod admin;
mod admin_hosts;
mod bad_day;
mod brand;
mod cli;
mod console;
mod console_browser;
mod console_support;
mod data_words;
mod database_down;
mod dispatch;
mod durability;
mod failed_sync;
mod feedback;
mod group;
mod install_email;
mod intake_props;
mod lifecycle;
mod locales;
mod mailer;
mod metrics;
mod notices;
mod operations;
mod pg_units;
mod postgres;
mod postgres_tls;
mod provider;
mod ready;
mod resend;
mod sequences;
mod shop_api;
mod stats;
mod storage;
mod store_copy;
mod suppression_reasons;
mod templates;
mod unsubscribe_page;
mod upgrade;
mod webhook;
mod whose_address;
mod wording;
