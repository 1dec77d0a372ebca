//! A loaded provider ([`Provider`]) and the calls into it ([`Session`]).
//!
//! Every call runs in a store of its own: a memory cap, an epoch deadline (yield every tick
//! for fairness, interrupt past the CPU budget), a wall-clock timeout, a result-size bound.
//! A trap, a limit hit or a timeout drops that store and becomes a [`CallError`]; the next
//! call starts from a fresh instance.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};

use super::bindings::{ProviderBindings, ProviderPre};
use super::cache::CacheOutcome;
use super::engine::{LoadStats, RuntimeShared};
use super::error::CallError;
use super::grants::CallContext;
use super::inspect::Inspection;
use super::limits::{DESCRIBE_TIMEOUT, GUEST_PANIC_MAX_BYTES, TRAP_MESSAGE_MAX_BYTES};
use super::observer::CallRecord;
use super::size::ResultSize;
use super::state::{CallScope, Declared, HostState, PROVIDER_LOG_TARGET};
use super::types::{
    BackupOptions, BackupRef, Instance, Metric, Policy, PollStatus, ProviderInfo, RestorePoint,
    RestoreTarget, Started, StorageStats, VolumeRestoreRequest, Zone,
};
use super::untrusted::{self, Boundary, Untrusted};

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
    /// This provider's share of the instance slots (`PoolConfig::max_instances_per_provider`),
    /// taken before a slot of the shared pool, so a slow provider cannot hold the whole pool.
    share: Arc<Semaphore>,
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
        let share = Arc::new(Semaphore::new(shared.instances_per_provider()));
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
            share,
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

    /// Whether this provider takes over pending operations that version `version` of provider
    /// `name` started: only the same provider, only an earlier version, and only when this one
    /// declares (`adopts-operations-from`, WIT 1.3.0 on) a requirement that `version` matches.
    pub fn adopts_operations_of(&self, name: &str, version: &str) -> bool {
        crate::inspect::adopts(&self.info, name, version)
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
        let permit = self.shared.admit(Some(&self.share)).await?;
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
    _permit: Admission,
}

/// The permits a session holds until dropped: a slot of the provider's share (none for
/// `describe()` at load) and a slot of the shared pool.
pub(crate) struct Admission {
    pub _share: Option<OwnedSemaphorePermit>,
    pub _pool: OwnedSemaphorePermit,
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
        permit: Admission,
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
        // Bounds what the host copies out of the guest in one go (a result, a log message):
        // checking the size after the copy would let aliased strings inflate host memory far
        // beyond the guest's own memory cap before the check runs.
        store.set_hostcall_fuel(limits.max_result_bytes);
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
    fn settle<R: ResultSize + Untrusted>(
        &mut self,
        live: Live,
        export: &'static str,
        outcome: wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        match outcome {
            Ok(mut value) => {
                let size = value.result_size();
                if size > self.shared.limits.max_result_bytes {
                    self.report(export, &CallError::ResultTooLarge, Some(size));
                    // Drop the instance too: its memory is as large as the result.
                    return Err(CallError::ResultTooLarge);
                }
                // The one boundary for what the provider returned: numbers range-checked,
                // text bounded, sanitised and redacted, identifiers checked.
                if let Err(reason) = value.admit(&self.boundary()) {
                    let error = CallError::InvalidResult(reason);
                    self.report(export, &error, None);
                    return Err(error);
                }
                self.live = Some(live);
                Ok(value)
            }
            Err(err) => Err(self.classify(live.store.data(), err, export)),
        }
    }

    fn boundary(&self) -> Boundary<'_> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Boundary {
            secrets: &self.scope.secrets,
            now,
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
        } else if is_hostcall_fuel_exhausted(&err) {
            // The result (or a log message) was bigger than the copy bound.
            CallError::ResultTooLarge
        } else if trap.is_none() && export == "instantiate" {
            CallError::Instantiate(untrusted::sanitize(
                &format!("{err:#}"),
                TRAP_MESSAGE_MAX_BYTES,
                &self.scope.secrets,
            ))
        } else {
            let message = match trap {
                Some(trap) => trap.to_string(),
                None => err.root_cause().to_string(),
            };
            CallError::Trap {
                message: untrusted::sanitize(&message, TRAP_MESSAGE_MAX_BYTES, &self.scope.secrets),
                guest_panic: panic_text(&state.stderr.text()).map(|text| {
                    untrusted::sanitize(&text, GUEST_PANIC_MAX_BYTES + 4, &self.scope.secrets)
                }),
            }
        };
        self.report(export, &error, None);
        error
    }

    fn report(&self, export: &'static str, error: &CallError, size: Option<usize>) {
        tracing::warn!(
            target: PROVIDER_LOG_TARGET,
            provider = %self.declared.name,
            version = %self.declared.version,
            zone = %self.scope.zone,
            export,
            kind = error.kind(),
            result_bytes = size,
            error = %error.detail(),
            "provider call failed"
        );
    }

    /// The span of one call: provider, version, zone, export, and the job and backup it works
    /// for.
    fn call_span(&self, export: &'static str) -> tracing::Span {
        tracing::info_span!(
            "provider_call",
            provider = %self.declared.name,
            version = %self.declared.version,
            zone = %self.scope.zone,
            function = export,
            job = self.shared.observer.current_job().as_deref(),
            backup = self.scope.backup.as_deref(),
        )
    }

    /// Metrics of every finished call, and the WARN line of a provider's own error (sandbox
    /// failures are logged where they are classified).
    fn observe(
        &self,
        export: &'static str,
        started: std::time::Instant,
        error: Option<&CallError>,
    ) {
        if let Some(error @ CallError::Provider(_)) = error {
            tracing::warn!(
                target: PROVIDER_LOG_TARGET,
                provider = %self.declared.name,
                version = %self.declared.version,
                zone = %self.scope.zone,
                export,
                kind = error.kind(),
                error = %error,
                "provider call failed"
            );
        }
        self.shared.observer.provider_call(&CallRecord {
            provider: &self.declared.name,
            version: &self.declared.version,
            function: export,
            zone: &self.scope.zone,
            outcome: error.map_or("ok", CallError::kind),
            elapsed: started.elapsed(),
        });
    }

    fn timeout(&self) -> Duration {
        self.shared.limits.call_timeout
    }

    fn timed_out(&self, export: &'static str) -> CallError {
        self.report(export, &CallError::Timeout, None);
        CallError::Timeout
    }

    /// `describe()`: at load, and again by health probes before a new version takes traffic.
    pub async fn describe(&mut self) -> Result<ProviderInfo, CallError> {
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
        $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;
    )*) => {
        impl Session {$(
            $(#[$doc])*
            pub async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, CallError> {
                let timeout = self.timeout();
                let started = std::time::Instant::now();
                let span = self.call_span(stringify!($name));
                let call = async {
                    let mut live = self.take_live().await?;
                    let outcome = live.bindings.$name(&mut live.store, $($arg),*).await;
                    self.settle(live, stringify!($name), outcome)
                };
                let result = match tokio::time::timeout(timeout, call).instrument(span.clone()).await {
                    Ok(result) => result.and_then(|r| r.map_err(CallError::Provider)),
                    Err(_) => Err(self.timed_out(stringify!($name))),
                };
                span.in_scope(|| self.observe(stringify!($name), started, result.as_ref().err()));
                result
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
    list_policies(zone: &Zone) -> Vec<Policy>;
    /// Whether `external_id` names a policy in the zone.
    validate_policy(zone: &Zone, external_id: &str) -> bool;
    /// Registers an instance with a policy; may return a provider-side reference for it.
    assign_instance(vm: &Instance, policy: &str) -> Option<String>;
    /// Unregisters an instance from its policy.
    remove_instance(vm: &Instance, policy: &str) -> ();
    /// Starts a backup: a finished result or a handle to poll.
    start_backup(vm: &Instance, policy: &str, opts: BackupOptions) -> Started;
    /// Starts deleting a backup.
    start_delete(backup: &BackupRef, forced: bool) -> Started;
    /// Starts restoring a backup over an instance or into a new one.
    start_restore(backup: &BackupRef, target: &RestoreTarget) -> Started;
    /// Starts restoring one volume of a backup.
    start_restore_volume(req: &VolumeRestoreRequest) -> Started;
    /// Progress or the terminal result of a pending operation.
    poll_operation(handle: &str) -> PollStatus;
    /// Cancels a pending operation.
    cancel_operation(handle: &str) -> ();
    /// The provider's restore points for an instance (only with `capabilities.reconciliation`).
    list_restore_points(vm: &Instance) -> Vec<RestorePoint>;
    /// Current sizes of the given instances' backups.
    metrics(zone: &Zone, vms: &[Instance]) -> Vec<Metric>;
    /// Used and total bytes of the zone's backup storage (WIT `get-storage-stats`).
    storage_stats(zone: &Zone) -> StorageStats;
}

/// Whether wasmtime stopped copying a value out of the guest because it exceeded the store's
/// hostcall fuel. The error type is private to wasmtime; its text is the only handle on it.
fn is_hostcall_fuel_exhausted(err: &wasmtime::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
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
