pub mod config;
pub mod event;
