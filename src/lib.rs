pub mod config;
pub mod event;
pub mod mailer;
pub mod policy;
pub mod render;
