//! The `networker` backup provider: KVM instances protected by Dell EMC NetWorker.
//!
//! NetWorker's REST API keeps the books (protection policies become offerings, save sets are
//! backups); the backups and restores themselves run on the KVM host of the instance, as
//! CloudStack's `nsrkvmbackup.sh` and `nsrkvmrestore.sh` over SSH. The protocol lives in plain
//! modules (`rest`, `model`, `script`, `ops`, `time`) over small transport traits, so it is
//! tested natively against `networker-sim`; the component glue binds them to the host's HTTP
//! and remote-exec imports.

pub mod error;
pub mod model;
pub mod ops;
pub mod rest;
pub mod script;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod component;
