//! Host bindings generated from the WIT package `bnr:provider@1.1.0`, and their conversions.
//!
//! Its `types` interface holds the same definitions as 1.0.0's, so they are mapped onto the
//! 1.0.0 bindings (`with`); only `manifest` and the exec records of `host` are generated and
//! converted here.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.1.0",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "bnr:provider/types": super::v1_0::bnr::provider::types },
});

use self::bnr::provider::host::{ExecError, ExecOutput, ExecRequest, Host};
use self::bnr::provider::manifest as wit;
use super::v1_0::bnr::provider::types::LogLevel;
use crate::state::HostState;
use crate::types;

super::manifest_needs!();

/// 1.1.0's and 1.2.0's `provider-info`.
impl From<wit::ProviderInfo> for types::ProviderInfo {
    fn from(info: wit::ProviderInfo) -> Self {
        Self {
            name: info.name,
            description: info.description,
            version: info.version,
            settings: info.settings.into_iter().map(Into::into).collect(),
            needs: info.needs.into_iter().map(Into::into).collect(),
            capabilities: info.capabilities.into(),
            // Declared from 1.3.0 on: earlier components take over nothing.
            adopts_operations_from: None,
        }
    }
}

impl wit::Host for HostState {}

super::exec_records!();

impl Host for HostState {
    async fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_line(level.into(), message);
        Ok(())
    }

    async fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.setting_value(&name))
    }

    async fn remote_exec(
        &mut self,
        request: ExecRequest,
    ) -> wasmtime::Result<Result<ExecOutput, ExecError>> {
        Ok(self
            .remote_exec_bounded(request.into())
            .await
            .map(ExecOutput::from)
            .map_err(ExecError::from))
    }
}
