//! Host bindings generated from the WIT package `bnr:provider@1.1.0`.
//!
//! Its `types` interface holds the same definitions as 1.0.0's, so they are mapped onto the
//! 1.0.0 bindings (`with`): both versions share one set of domain types, and only `manifest`
//! and the exec records of `host` are generated here.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.1.0",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    with: { "bnr:provider/types": super::v1_0::bnr::provider::types },
});
