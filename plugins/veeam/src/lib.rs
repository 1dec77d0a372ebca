//! The `veeam` backup provider: VMware instances protected by Veeam Backup & Replication,
//! driven through Veeam Backup Enterprise Manager's XML REST API and PowerShell over SSH on
//! the Veeam server.
//!
//! The protocol lives in plain modules (`em`, `model`, `ops`, `ps`) over small
//! transport traits, so it is tested natively against `veeam-sim`; the component glue binds
//! them to the host's HTTP and remote-exec imports.

pub mod em;
pub mod error;
pub mod model;
pub mod ops;
pub mod ps;

#[cfg(target_arch = "wasm32")]
mod component;
