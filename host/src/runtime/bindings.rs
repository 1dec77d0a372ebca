//! Host bindings generated from the frozen WIT package `bnr:provider@1.0.0`.
//!
//! Every import is `async` (so a slow host function never blocks an executor thread) and
//! `trappable` (a host-side failure becomes a trap for that one call, never a host crash).

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.0.0",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});
