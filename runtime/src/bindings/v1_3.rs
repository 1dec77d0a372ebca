//! Host bindings generated from the WIT package `bnr:provider@1.3.0`, and their conversions.
//!
//! Its `types` interface is 1.0.0's, mapped onto those bindings (`with`). `host` is 1.2.0's
//! (expanded from `host_since_v1_2`) and the needs of `manifest` are 1.1.0's (expanded from
//! `manifest_needs`); `provider-info`, which gains `adopts-operations-from`, converts here.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.3.0",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "bnr:provider/types": super::v1_0::bnr::provider::types },
});

use self::bnr::provider::host::{
    ExecError, ExecOutput, ExecRequest, ExecState, Host, HypervisorHost,
};
use self::bnr::provider::manifest as wit;
use super::v1_0::bnr::provider::types::LogLevel;
use crate::state::HostState;
use crate::types;

super::manifest_needs!();

/// 1.3.0's `provider-info`: 1.1.0's plus the versions whose operations this one adopts.
impl From<wit::ProviderInfo> for types::ProviderInfo {
    fn from(info: wit::ProviderInfo) -> Self {
        Self {
            name: info.name,
            description: info.description,
            version: info.version,
            settings: info.settings.into_iter().map(Into::into).collect(),
            needs: info.needs.into_iter().map(Into::into).collect(),
            capabilities: info.capabilities.into(),
            adopts_operations_from: info.adopts_operations_from,
        }
    }
}

impl wit::Host for HostState {}

super::host_since_v1_2!();
