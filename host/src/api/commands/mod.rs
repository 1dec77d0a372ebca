//! Built-in commands. Each module has a `register(&mut Registry)` adding its commands; B&R
//! commands are added the same way by their own module (see docs/api.md).

pub mod apis;
pub mod backup;
pub mod backup_offering;
pub mod backup_schedule;
pub mod backup_usage;
pub mod config;
pub mod events;
pub mod identity;
pub mod inventory;
pub mod jobs;
pub mod kvm;
pub mod plugins;
pub mod vmware;

use super::registry::{Registry, RegistryError};

/// The registry with every built-in command.
pub fn registry() -> Result<Registry, RegistryError> {
    let mut r = Registry::new();
    apis::register(&mut r)?;
    jobs::register(&mut r)?;
    identity::register(&mut r)?;
    config::register(&mut r)?;
    events::register(&mut r)?;
    inventory::register(&mut r)?;
    vmware::register(&mut r)?;
    kvm::register(&mut r)?;
    Ok(r)
}
