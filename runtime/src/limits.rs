//! Sandbox limits: every bound a provider call runs under, each a named constant with its reason.
//!
//! [`SandboxLimits`] bounds one call (memory, CPU, wall clock, result size, logging);
//! [`PoolConfig`] sizes the engine's pooling allocator (how many calls may run at once).

use std::time::Duration;

/// Largest linear memory a provider instance may grow to.
///
/// Providers are glue between bnr and a vendor API: backup data never flows through them, so a
/// few MiB is typical. 64 MiB leaves room for large vendor responses while keeping the worst
/// case of a full pool (`PoolConfig::max_instances` × this) far below the machine's RAM.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Guest CPU time one call may use before the epoch deadline interrupts it.
///
/// Vendor calls are I/O bound; long work is asynchronous behind an operation handle, so a
/// call that computes for seconds is a bug (or an attack) and must not hold a core forever.
pub const DEFAULT_CPU_BUDGET: Duration = Duration::from_secs(5);

/// Wall-clock bound of one call, including time spent waiting on the network or sleeping.
///
/// Every call path that reaches a vendor goes through this; 30 s is above any sane single
/// vendor request and well below CloudStack's own async-job polling horizon.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Wall-clock bound of `describe()` at load (if the call timeout is not shorter): it only
/// builds a record and must not call the host, so anything slow is broken or hostile, and a
/// load must not hang on it. Components load in parallel, so one hostile `describe()` costs
/// start-up at most this once, not once per component.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings one provider may declare. Real providers declare about ten (CloudStack's Veeam
/// plugin has eight); every one becomes a row of `listConfigurations`.
pub const DESCRIBE_MAX_SETTINGS: usize = 64;

/// Needs one provider may declare (each is a grant rule evaluated on every call).
pub const DESCRIBE_MAX_NEEDS: usize = 16;

/// Longest setting name (`backup.plugin.<provider>.<key>`), in bytes.
pub const DESCRIBE_MAX_SETTING_NAME_BYTES: usize = 128;

/// Longest description (of the provider or of a setting) and version, in bytes: shown in
/// listings, never a document.
pub const DESCRIBE_MAX_TEXT_BYTES: usize = 1 << 10;

/// Longest declared default value of a setting, in bytes (room for a URL or a PEM block).
pub const DESCRIBE_MAX_DEFAULT_BYTES: usize = 4 << 10;

/// Components loaded at once at start-up (each load compiles on its own thread). Loading in
/// parallel bounds start-up by the slowest component rather than the sum of all of them.
pub const LOAD_PARALLELISM: usize = 4;

/// Instance slots one provider may hold at once, at most (see [`PoolConfig`]): a slow or
/// hostile provider serving one zone must leave slots for the providers of other zones.
pub const DEFAULT_INSTANCES_PER_PROVIDER: u32 = 8;

/// Largest size, in bytes, a provider may report (backup, restore point, volume, storage):
/// 2^53 = 8 PiB, far beyond any real backup, and the largest integer every JSON client reads
/// exactly. Larger values fail the call (`CallError::InvalidResult`) instead of reaching the
/// store, where sums of them could overflow.
pub const MAX_REPORTED_BYTES: u64 = 1 << 53;

/// How far in the future a provider-reported time may lie (clock skew between bnr and the
/// vendor); later times fail the call.
pub const MAX_REPORTED_CLOCK_SKEW: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest provider-originated text (error message, panic text, log message, progress
/// message) kept after the untrusted-text boundary; longer text is cut and marked `…`.
pub const PROVIDER_TEXT_MAX_BYTES: usize = 1 << 10;

/// Longest identifier a provider may return (external ids, handles, volume paths, policy
/// ids and names); longer ones fail the call, since cutting an id would corrupt it.
pub const PROVIDER_ID_MAX_BYTES: usize = 1 << 10;

/// Largest value (approximate in-memory bytes) a call may return to the host.
///
/// Results are stored and serialised by the layers above; anything bigger than this is a
/// runaway list, not a real answer. The guest memory cap already bounds the lift itself.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 16 << 20;

/// How long a call waits for a free instance slot before it fails with `Busy`.
///
/// Short bursts above the pool size queue briefly instead of failing; a sustained overload
/// surfaces quickly as a retryable error rather than an ever-growing queue.
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Upper bound for every timeout of one outbound HTTP request (connect, first byte, between
/// bytes). Guests may ask for less, never for more.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest message one `host.log` call may write; longer ones are cut (a provider must not
/// be able to flood the host log with a single call).
pub const LOG_MESSAGE_MAX_BYTES: usize = 4 << 10;

/// Messages one provider call may log; later ones are dropped (one warning says so).
pub const LOG_MESSAGES_PER_CALL: u32 = 256;

/// Total log bytes one provider call may write; later messages are dropped.
pub const LOG_BYTES_PER_CALL: usize = 128 << 10;

/// Bytes of guest stderr kept per call (the tail: a panic message is written last).
pub const STDERR_CAPTURE_BYTES: usize = 16 << 10;

/// Longest panic text reported in `CallError::Trap` (reports and API errors stay readable).
pub const GUEST_PANIC_MAX_BYTES: usize = 2 << 10;

/// Longest trap description reported in `CallError::Trap`.
pub const TRAP_MESSAGE_MAX_BYTES: usize = 2 << 10;

/// Host-side resources (streams, HTTP requests, ...) one store may hold at once, so a guest
/// cannot grow host memory through handles the memory cap does not see.
pub const RESOURCE_TABLE_MAX: usize = 4096;

/// Largest buffer one `wasi:random` call may ask the host to fill.
pub const RANDOM_BYTES_MAX: u64 = 1 << 20;

/// Core instances, tables and memories one store may create. A Rust `wasm32-wasip2`
/// component needs ~5 core instances, 1–2 tables and 1–2 memories.
pub const STORE_MAX_INSTANCES: usize = 16;
/// See [`STORE_MAX_INSTANCES`].
pub const STORE_MAX_TABLES: usize = 32;
/// See [`STORE_MAX_INSTANCES`].
pub const STORE_MAX_MEMORIES: usize = 4;

/// Largest table a guest may grow to (function tables of real components hold a few
/// thousand entries; the pool reserves this many per table slot).
pub const TABLE_ELEMENTS_MAX: usize = 20_000;

/// Largest `.wasm` file the runtime reads; bigger files are refused before parsing.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Period of the engine's epoch ticker: the granularity of CPU accounting and of the yields
/// that keep CPU-bound guests fair to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default number of provider instances alive at once (see [`PoolConfig`]).
pub const DEFAULT_POOL_INSTANCES: u32 = 32;

/// Bounds for one provider call. The defaults are the named constants of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory, in bytes ([`DEFAULT_MEMORY_BYTES`]).
    pub memory_bytes: usize,
    /// Guest CPU time per call ([`DEFAULT_CPU_BUDGET`]); accounted in [`EPOCH_TICK`] steps.
    pub cpu_budget: Duration,
    /// Wall-clock time per call ([`DEFAULT_CALL_TIMEOUT`]).
    pub call_timeout: Duration,
    /// Largest returned value in bytes ([`DEFAULT_MAX_RESULT_BYTES`]).
    pub max_result_bytes: usize,
    /// Wait for a free instance slot before `Busy` ([`DEFAULT_ADMISSION_WAIT`]).
    pub admission_wait: Duration,
    /// Cap of every outbound HTTP timeout ([`DEFAULT_HTTP_TIMEOUT`]).
    pub http_timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpu_budget: DEFAULT_CPU_BUDGET,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            admission_wait: DEFAULT_ADMISSION_WAIT,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }
}

impl SandboxLimits {
    /// CPU budget in epoch ticks (at least one).
    pub(crate) fn cpu_budget_ticks(&self) -> u64 {
        let ticks = self.cpu_budget.as_nanos() / EPOCH_TICK.as_nanos();
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// Sizing of the pooling instance allocator.
///
/// The pool reserves virtual address space up front: about `max_instances ×
/// memories_per_instance × (4 GiB + 32 MiB guard)` on x86-64 (no RAM is committed until used).
/// That reservation lets bounds checks be elided; it is why the pool is sized to real
/// concurrency rather than "large". If the reservation fails (e.g. under `ulimit -v`), the
/// runtime falls back to on-demand allocation and logs a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Use the pooling allocator at all (`false`: allocate on demand, slower instantiation).
    pub enabled: bool,
    /// Provider instances alive at once, across all providers ([`DEFAULT_POOL_INSTANCES`]).
    /// Calls beyond this wait up to `SandboxLimits::admission_wait`, then fail with `Busy`.
    pub max_instances: u32,
    /// Instance slots one provider may hold at once ([`DEFAULT_INSTANCES_PER_PROVIDER`]);
    /// the rest of the pool stays available to other providers. Calls beyond this wait up to
    /// `SandboxLimits::admission_wait`, then fail with `Busy`.
    pub max_instances_per_provider: u32,
    /// Linear memories per instance slot (Rust components use one or two).
    pub memories_per_instance: u32,
    /// Core instances per component (a Rust `wasm32-wasip2` component uses about five).
    pub core_instances_per_instance: u32,
    /// Tables per instance slot.
    pub tables_per_instance: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_instances: DEFAULT_POOL_INSTANCES,
            max_instances_per_provider: DEFAULT_INSTANCES_PER_PROVIDER,
            memories_per_instance: 2,
            core_instances_per_instance: 8,
            tables_per_instance: 4,
        }
    }
}
