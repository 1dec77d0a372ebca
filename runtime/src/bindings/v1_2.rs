//! Host bindings generated from the WIT package `bnr:provider@1.2.0`, and their conversions.
//!
//! Its `types` and `manifest` interfaces hold the same definitions as 1.1.0's, so they are
//! mapped onto the earlier bindings (`with`): only `host` (1.1.0's functions plus
//! `remote-exec-start`/`-poll`/`-cancel` and `current-host`) is generated and converted here.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.2.0",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "bnr:provider/types": super::v1_0::bnr::provider::types,
        "bnr:provider/manifest": super::v1_1::bnr::provider::manifest,
    },
});

use self::bnr::provider::host::{
    ExecError, ExecOutput, ExecRequest, ExecState, Host, HypervisorHost,
};
use super::v1_0::bnr::provider::types::LogLevel;
use crate::state::HostState;

super::host_since_v1_2!();
