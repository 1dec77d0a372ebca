//! A loaded provider ([`Provider`]) and the calls into it ([`Session`]).
//!
//! Every call runs in a store of its own: a memory cap, an epoch deadline (yield every tick
//! for fairness, interrupt past the CPU budget), a wall-clock timeout, a result-size bound.
//! A trap, a limit hit or a timeout drops that store and becomes a [`CallError`]; the next
//! call starts from a fresh instance.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};

use super::bindings::{ProviderBindings, ProviderPre, call_export};
use super::cache::CacheOutcome;
use super::engine::{LoadStats, RuntimeShared};
use super::error::CallError;
use super::grants::CallContext;
use super::inspect::Inspection;
use super::limits::{DESCRIBE_TIMEOUT, GUEST_PANIC_MAX_BYTES, TRAP_MESSAGE_MAX_BYTES};
use super::size::ResultSize;
use super::state::{CallScope, Declared, HostState, PROVIDER_LOG_TARGET, truncate_utf8};
use super::wit::{
    BackupOptions, BackupRef, Instance, Metric, Policy, PollStatus, ProviderInfo, RestorePoint,
    RestoreTarget, Started, StorageStats, VolumeRestoreRequest, Zone,
};

/// A loaded provider component. Cheap to share (`Arc<Provider>`); every call gets a fresh
/// store and instance, so calls never see each other's state.
pub struct Provider {
    info: ProviderInfo,
    sha256: String,
    wit_version: String,
    imports_http: bool,
    size_bytes: usize,
    stats: LoadStats,
    pre: ProviderPre,
    declared: Arc<Declared>,
    shared: Arc<RuntimeShared>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Provider {
    #[allow(
        clippy::too_many_arguments,
        reason = "private constructor, called once"
    )]
    pub(crate) fn new(
        info: ProviderInfo,
        sha256: String,
        wit_version: String,
        imports_http: bool,
        size_bytes: usize,
        stats: LoadStats,
        pre: ProviderPre,
        declared: Arc<Declared>,
        shared: Arc<RuntimeShared>,
    ) -> Self {
        Self {
            info,
            sha256,
            wit_version,
            imports_http,
            size_bytes,
            stats,
            pre,
            declared,
            shared,
        }
    }

    /// The `describe()` answer, cached at load.
    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }

    /// The provider's unique name (`info().name`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The provider's own version (`info().version`).
    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// Hex sha256 of the component's `.wasm` bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Version of the provider interface the component was built against.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }

    /// How the load went (from the compiled cache or compiled, and how long it took).
    pub fn load_stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Whether the compiled code came from a verified cache entry.
    pub fn loaded_from_cache(&self) -> bool {
        self.stats.cache == CacheOutcome::Hit
    }

    /// What `bnr plugin inspect` shows for this provider.
    pub fn inspection(&self) -> Inspection {
        Inspection {
            info: self.info.clone(),
            wit_version: self.wit_version.clone(),
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
            imports_http: self.imports_http,
        }
    }

    /// A session: one instance reused across several calls made with the same context
    /// (for long jobs that poll repeatedly). The session holds one instance slot until
    /// dropped. Each call is still bounded on its own; after a failed call the session
    /// starts the next call from a fresh instance.
    ///
    /// Fails with `Busy` when no slot frees up within `SandboxLimits::admission_wait`.
    pub async fn session(&self, ctx: &CallContext) -> Result<Session, CallError> {
        let permit = self.shared.admit().await?;
        let scope = Arc::new(CallScope::new(&self.declared, ctx));
        Ok(Session::new(
            self.shared.clone(),
            self.pre.clone(),
            self.declared.clone(),
            scope,
            permit,
        ))
    }
}

/// An instance slot of one provider, bound to one [`CallContext`].
pub struct Session {
    shared: Arc<RuntimeShared>,
    pre: ProviderPre,
    declared: Arc<Declared>,
    scope: Arc<CallScope>,
    /// `None` until the first call, and again after a failed or cancelled one.
    live: Option<Live>,
    _permit: OwnedSemaphorePermit,
}

struct Live {
    store: Store<HostState>,
    bindings: ProviderBindings,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("provider", &self.declared.name)
            .field("zone", &self.scope.zone)
            .field("instantiated", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        shared: Arc<RuntimeShared>,
        pre: ProviderPre,
        declared: Arc<Declared>,
        scope: Arc<CallScope>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            shared,
            pre,
            declared,
            scope,
            live: None,
            _permit: permit,
        }
    }

    /// The live instance for the next call (taken out of the session: if the call fails or
    /// its future is dropped, the instance is gone and the next call starts fresh).
    async fn take_live(&mut self) -> Result<Live, CallError> {
        let cpu_budget = self.shared.limits.cpu_budget_ticks();
        if let Some(mut live) = self.live.take() {
            live.store.data_mut().begin_call(cpu_budget);
            live.store.set_epoch_deadline(1);
            return Ok(live);
        }
        let limits = &self.shared.limits;
        let state = HostState::new(self.scope.clone(), limits.memory_bytes, limits.http_timeout);
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut cx| {
            let cpu = &mut cx.data_mut().cpu;
            cpu.ticks += 1;
            Ok(if cpu.ticks >= cpu.budget {
                UpdateDeadline::Interrupt
            } else {
                // Let other tasks run; the guest continues at the next tick.
                UpdateDeadline::Yield(1)
            })
        });
        store.data_mut().begin_call(cpu_budget);
        store.set_epoch_deadline(1);
        match self.pre.instantiate_async(&mut store).await {
            Ok(bindings) => Ok(Live { store, bindings }),
            Err(err) => Err(self.classify(store.data(), err, "instantiate")),
        }
    }

    /// Keeps the instance for the next call if this one went well; turns failures into
    /// `CallError`s.
    fn settle<R: ResultSize>(
        &mut self,
        live: Live,
        export: &'static str,
        outcome: wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        match outcome {
            Ok(value) => {
                let size = value.result_size();
                if size > self.shared.limits.max_result_bytes {
                    self.report(export, &CallError::ResultTooLarge, Some(size));
                    // Drop the instance too: its memory is as large as the result.
                    return Err(CallError::ResultTooLarge);
                }
                self.live = Some(live);
                Ok(value)
            }
            Err(err) => Err(self.classify(live.store.data(), err, export)),
        }
    }

    fn classify(&self, state: &HostState, err: wasmtime::Error, export: &'static str) -> CallError {
        let trap = err.downcast_ref::<Trap>().copied();
        let error = if state.limiter.hit.is_some() {
            CallError::MemoryLimit
        } else if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            CallError::Busy
        } else if trap == Some(Trap::Interrupt) {
            CallError::CpuLimit
        } else if trap.is_none() && export == "instantiate" {
            CallError::Instantiate(truncate_utf8(format!("{err:#}"), TRAP_MESSAGE_MAX_BYTES))
        } else {
            let message = match trap {
                Some(trap) => trap.to_string(),
                None => err.root_cause().to_string(),
            };
            CallError::Trap {
                message: truncate_utf8(message, TRAP_MESSAGE_MAX_BYTES),
                guest_panic: panic_text(&state.stderr.text()),
            }
        };
        self.report(export, &error, None);
        error
    }

    fn report(&self, export: &'static str, error: &CallError, size: Option<usize>) {
        tracing::warn!(
            target: PROVIDER_LOG_TARGET,
            provider = %self.declared.name,
            zone = %self.scope.zone,
            export,
            result_bytes = size,
            error = %error,
            "provider call failed"
        );
    }

    fn timeout(&self) -> Duration {
        self.shared.limits.call_timeout
    }

    fn timed_out(&self, export: &'static str) -> CallError {
        self.report(export, &CallError::Timeout, None);
        CallError::Timeout
    }

    /// `describe()`, used at load.
    pub(crate) async fn describe(&mut self) -> Result<ProviderInfo, CallError> {
        let timeout = self.timeout().min(DESCRIBE_TIMEOUT);
        let call = async {
            let mut live = self.take_live().await?;
            let outcome = live.bindings.describe(&mut live.store).await;
            self.settle(live, "describe", outcome)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out("describe")),
        }
    }
}

/// Defines each provider export twice: on [`Session`] (reusing its instance) and on
/// [`Provider`] (a fresh instance for this one call).
macro_rules! exports {
    ($(
        $(#[$doc:meta])*
        $name:ident => $call:ident($($arg:ident: $ty:ty),*) -> $ret:ty;
    )*) => {
        impl Session {$(
            $(#[$doc])*
            pub async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, CallError> {
                let timeout = self.timeout();
                let call = async {
                    let mut live = self.take_live().await?;
                    let outcome =
                        call_export!(&live.bindings, &mut live.store, $call($($arg),*));
                    self.settle(live, stringify!($name), outcome)
                };
                match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result?.map_err(CallError::Provider),
                    Err(_) => Err(self.timed_out(stringify!($name))),
                }
            }
        )*}

        impl Provider {$(
            $(#[$doc])*
            pub async fn $name(&self, ctx: &CallContext, $($arg: $ty),*) -> Result<$ret, CallError> {
                self.session(ctx).await?.$name($($arg),*).await
            }
        )*}
    };
}

exports! {
    /// The policies the provider offers in a zone.
    list_policies => call_list_policies(zone: &Zone) -> Vec<Policy>;
    /// Whether `external_id` names a policy in the zone.
    validate_policy => call_validate_policy(zone: &Zone, external_id: &str) -> bool;
    /// Registers an instance with a policy; may return a provider-side reference for it.
    assign_instance => call_assign_instance(vm: &Instance, policy: &str) -> Option<String>;
    /// Unregisters an instance from its policy.
    remove_instance => call_remove_instance(vm: &Instance, policy: &str) -> ();
    /// Starts a backup: a finished result or a handle to poll.
    start_backup => call_start_backup(vm: &Instance, policy: &str, opts: BackupOptions) -> Started;
    /// Starts deleting a backup.
    start_delete => call_start_delete(backup: &BackupRef, forced: bool) -> Started;
    /// Starts restoring a backup over an instance or into a new one.
    start_restore => call_start_restore(backup: &BackupRef, target: &RestoreTarget) -> Started;
    /// Starts restoring one volume of a backup.
    start_restore_volume => call_start_restore_volume(req: &VolumeRestoreRequest) -> Started;
    /// Progress or the terminal result of a pending operation.
    poll_operation => call_poll_operation(handle: &str) -> PollStatus;
    /// Cancels a pending operation.
    cancel_operation => call_cancel_operation(handle: &str) -> ();
    /// The provider's restore points for an instance (only with `capabilities.reconciliation`).
    list_restore_points => call_list_restore_points(vm: &Instance) -> Vec<RestorePoint>;
    /// Current sizes of the given instances' backups.
    metrics => call_metrics(zone: &Zone, vms: &[Instance]) -> Vec<Metric>;
    /// Used and total bytes of the zone's backup storage (WIT `get-storage-stats`).
    storage_stats => call_get_storage_stats(zone: &Zone) -> StorageStats;
}

/// The part of a guest's stderr that explains a trap: from the last panic message on (Rust
/// writes `thread '…' panicked at …`), minus the backtrace hint; bounded in length.
fn panic_text(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at").map_or(0, |at| {
        stderr[..at].rfind('\n').map_or(0, |newline| newline + 1)
    });
    let text: Vec<&str> = stderr[start..]
        .lines()
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let text = text.join("\n").trim().to_owned();
    if text.is_empty() {
        return None;
    }
    // Keep the end: that is where the message is when the text is long.
    let text = if text.len() > GUEST_PANIC_MAX_BYTES {
        let mut start = text.len() - GUEST_PANIC_MAX_BYTES;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &text[start..])
    } else {
        text
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::panic_text;

    #[test]
    fn panic_text_keeps_the_last_panic_message_without_the_backtrace_hint() {
        let stderr = "some earlier output\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom: disk on fire\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_text(stderr).as_deref(),
            Some("thread '<unnamed>' panicked at src/lib.rs:10:5:\nboom: disk on fire")
        );
    }

    #[test]
    fn empty_stderr_has_no_panic_text_and_long_text_is_bounded() {
        assert_eq!(panic_text("  \n"), None);
        let long = "x".repeat(10_000);
        let text = panic_text(&long).unwrap();
        assert!(text.len() <= super::GUEST_PANIC_MAX_BYTES + '…'.len_utf8());
    }
}
