//! Host bindings generated from the WIT package `bnr:provider@1.2.0`.
//!
//! Its `types` and `manifest` interfaces hold the same definitions as 1.1.0's, so they are
//! mapped onto the earlier bindings (`with`): every version shares one set of domain types, and
//! only `host` (1.1.0's functions plus `current-host`) is generated here.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.2.0",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    with: {
        "bnr:provider/types": super::v1_0::bnr::provider::types,
        "bnr:provider/manifest": super::v1_1::bnr::provider::manifest,
    },
});
