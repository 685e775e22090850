pub mod event;
pub mod policy;
