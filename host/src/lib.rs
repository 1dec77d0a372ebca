//! bnr: a Backup & Recovery control plane.
pub mod api;
pub mod cluster;
pub mod config;
pub mod console;
pub mod identity;
pub mod inventory;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod scheduler;
pub mod service;
pub mod store;
