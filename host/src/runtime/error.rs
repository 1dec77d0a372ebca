//! Typed errors at the runtime boundary: why a call failed ([`CallError`]) and why a
//! component could not be loaded ([`LoadError`]).

use super::wit::ProviderError;

/// Why a provider call did not produce a value.
///
/// A provider's own, intended failure is [`CallError::Provider`]; everything else is the
/// sandbox stopping a misbehaving call. None of them affects other calls: each call runs in
/// its own store, which is dropped afterwards.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The provider answered with an error on purpose.
    #[error("{}", describe_provider_error(.0))]
    Provider(ProviderError),
    /// The guest trapped (a panic, `unreachable`, an invalid memory access, ...).
    #[error("provider trapped: {message}{}", .guest_panic.as_deref().map(|p| format!(" (guest said: {p})")).unwrap_or_default())]
    Trap {
        /// What wasmtime reported (bounded in length).
        message: String,
        /// The guest's stderr tail, which holds the panic message of a Rust provider.
        guest_panic: Option<String>,
    },
    /// The guest tried to grow its memory beyond the cap.
    #[error("provider exceeded its memory limit")]
    MemoryLimit,
    /// The guest used up its CPU budget and was interrupted.
    #[error("provider exceeded its CPU budget")]
    CpuLimit,
    /// The call did not finish within its wall-clock bound.
    #[error("provider call timed out")]
    Timeout,
    /// The returned value was larger than the result-size bound.
    #[error("provider returned a result larger than the allowed size")]
    ResultTooLarge,
    /// No instance slot became free in time; the call may be retried.
    #[error("provider runtime is busy; retry later")]
    Busy,
    /// The call could not start (instantiation failed for another reason).
    #[error("provider could not be started: {0}")]
    Instantiate(String),
}

impl CallError {
    /// A short, stable name of the failure kind (metric label, log field).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Provider(e) => match e {
                ProviderError::NotFound(_) => "provider_not_found",
                ProviderError::InvalidConfig(_) => "provider_invalid_config",
                ProviderError::Unauthorized(_) => "provider_unauthorized",
                ProviderError::Unavailable(_) => "provider_unavailable",
                ProviderError::Rejected(_) => "provider_rejected",
                ProviderError::Unsupported(_) => "provider_unsupported",
                ProviderError::Internal(_) => "provider_internal",
            },
            CallError::Trap { .. } => "trap",
            CallError::MemoryLimit => "memory_limit",
            CallError::CpuLimit => "cpu_limit",
            CallError::Timeout => "timeout",
            CallError::ResultTooLarge => "result_too_large",
            CallError::Busy => "busy",
            CallError::Instantiate(_) => "instantiate",
        }
    }

    /// Whether the same call may succeed if retried later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Busy
                | CallError::Timeout
                | CallError::Provider(ProviderError::Unavailable(_))
        )
    }
}

fn describe_provider_error(err: &ProviderError) -> String {
    let (kind, message) = match err {
        ProviderError::NotFound(m) => ("not found", m),
        ProviderError::InvalidConfig(m) => ("invalid configuration", m),
        ProviderError::Unauthorized(m) => ("unauthorized", m),
        ProviderError::Unavailable(m) => ("unavailable", m),
        ProviderError::Rejected(m) => ("rejected", m),
        ProviderError::Unsupported(m) => ("unsupported", m),
        ProviderError::Internal(m) => ("internal error", m),
    };
    format!("provider error ({kind}): {message}")
}

/// Why a component was refused or could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (the `\\0asm` magic number is missing)")]
    NotWasm,
    /// A core module instead of a component.
    #[error(
        "this is a core WebAssembly module, not a component; build the provider for the \
         `wasm32-wasip2` target (it emits a component)"
    )]
    NotAComponent,
    /// A component, but not one of the `bnr:provider` `backup-provider` world.
    #[error("wrong world: {0}")]
    WrongWorld(String),
    /// Built against a version of the provider interface this host does not load.
    #[error("unsupported provider interface version {found}; this host supports {supported}")]
    UnsupportedVersion {
        /// The version the component was built against.
        found: String,
        /// The versions this host accepts.
        supported: String,
    },
    /// Malformed or truncated bytes, or a component that breaks a load-time rule.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The compiler rejected the component.
    #[error("component failed to compile: {0}")]
    Compile(String),
    /// `describe()` failed at load time.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// Reading the file (or the compiled cache) failed.
    #[error("{0}")]
    Io(std::io::Error),
}
