//! The provider runtime: wasmtime engine, compiled-component cache, sandbox policy, the host
//! side of the WIT imports, and the per-zone provider registry.
//!
//! *Architecture invariant:* provider code never touches the database and never sees
//! anything it was not granted. Every call runs in a fresh, bounded store (see [`limits`]);
//! its failures are typed ([`CallError`]) and never take the host down.
//!
//! Entry points: [`Runtime::new`] (one per process), [`Runtime::load_file`] →
//! [`Provider`], [`Provider`]'s export methods with a [`CallContext`], [`ZoneRegistry`] and
//! [`Catalog`]. See `docs/runtime.md` for the sandbox defaults and the capability model.

#![warn(missing_docs)]

mod bindings;
mod cache;
mod detached;
mod engine;
mod error;
mod grants;
mod https_pool;
mod inspect;
pub mod limits;
mod observer;
mod provider;
mod registry;
mod size;
mod ssh;
mod state;
mod tls;
pub mod types;
pub mod untrusted;

pub use cache::CacheOutcome;
pub use engine::{LoadStats, Runtime, RuntimeConfig, inspect};
pub use error::{CallError, LoadError};
pub use grants::{
    CallContext, Grants, HypervisorHost, NEED_INSTANCE_HOST, OPERATOR_EXEC_PREFIX, SshGrant,
    TlsGrant, check_operator_extra, ungranted_needs,
};
pub use https_pool::idle_https_connections;
pub use inspect::{
    Inspection, SUPPORTED_WIT_VERSIONS, WIT_PACKAGE, capability_flags, delete_granularity_name,
    describe_need, setting_prefix,
};
pub use limits::{PoolConfig, SandboxLimits};
pub use observer::{CallRecord, RuntimeObserver};
pub use provider::{Provider, Session};
pub use registry::{BUILTIN_PROVIDERS, Catalog, ZoneRegistry};
pub use ssh::SshConnection;
pub use state::PROVIDER_LOG_TARGET;
pub use tls::TlsTrust;
