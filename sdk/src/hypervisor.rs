//! The hypervisor host a call works on (`host.current-host`, since `bnr:provider@1.2.0`).
//!
//! bnr keeps hosts and clusters in its inventory. For a backup the call's host is the one the
//! instance runs on; for a restore it is the host bnr chose (the instance's last host if it is
//! up, else an up host of its cluster, else an up host of the zone). With
//! [`Need::RemoteExecOnInstanceHost`](crate::Need) that host, and only it, is the granted exec
//! target, reached with the credentials and pinned host key bnr keeps for it:
//!
//! ```no_run
//! # use bnr_sdk::prelude::*;
//! # fn run() -> Result<()> {
//! let host = hypervisor::require()?;
//! let output = exec::Command::new(&host.address, "virsh list --name").run()?.check()?;
//! bnr_sdk::info!("{} in cluster {}: {}", host.name, host.cluster, output.stdout);
//! # Ok(())
//! # }
//! ```

pub use crate::types::HypervisorHost;

use crate::bindings::bnr::provider::host;
use crate::{ProviderError, Result};

/// The call's hypervisor host, if it has one.
pub fn current() -> Option<HypervisorHost> {
    host::current_host()
}

/// The call's hypervisor host, or [`ProviderError::Rejected`] saying the instance has none.
pub fn require() -> Result<HypervisorHost> {
    current().ok_or_else(|| {
        ProviderError::Rejected(
            "bnr gave this call no hypervisor host: the instance is not placed on a host of \
             bnr's inventory (add its cluster and hosts with addCluster/addHost)"
                .into(),
        )
    })
}
