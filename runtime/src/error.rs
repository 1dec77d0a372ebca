//! Typed errors at the runtime boundary: why a call failed ([`CallError`]) and why a
//! component could not be loaded ([`LoadError`]).

use super::types::ProviderError;

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
    /// The guest trapped (a panic, `unreachable`, an invalid memory access, ...). The panic
    /// text is detail for operators ([`CallError::detail`], logs): it is not part of the
    /// message users see.
    #[error("provider trapped: {message}")]
    Trap {
        /// What wasmtime reported (bounded in length).
        message: String,
        /// The guest's stderr tail, which holds the panic message of a Rust provider (passed
        /// through the untrusted-text boundary: bounded, sanitised, redacted).
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
    /// The provider returned a value bnr cannot accept (a size beyond the documented bound,
    /// a time far in the future, an identifier that is too long ...). Nothing of it was used.
    #[error("provider returned an invalid result: {0}")]
    InvalidResult(String),
    /// No instance slot became free in time; the call may be retried.
    #[error("provider runtime is busy; retry later")]
    Busy,
    /// The call could not start (instantiation failed for another reason).
    #[error("provider could not be started: {0}")]
    Instantiate(String),
}

impl CallError {
    /// The full text for operators: the message plus, for a trap, the guest's panic text.
    /// Users are shown the `Display` text only.
    pub fn detail(&self) -> String {
        match self {
            CallError::Trap {
                guest_panic: Some(panic),
                ..
            } => format!("{self} (guest said: {panic})"),
            _ => self.to_string(),
        }
    }

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
            CallError::InvalidResult(_) => "invalid_result",
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
    /// Another component claims the same provider name.
    #[error(
        "provider name `{name}` is claimed by several components ({}); {}",
        files.join(", "),
        match kept {
            Some(kept) => format!("the built-in {kept} is kept and the others are refused"),
            None => "none of them is loaded".to_owned(),
        }
    )]
    NameConflict {
        /// The contested name.
        name: String,
        /// Every file that claims it.
        files: Vec<String>,
        /// The built-in component that was kept, if one of them is built in.
        kept: Option<String>,
    },
    /// Reading the file (or the compiled cache) failed.
    #[error("{0}")]
    Io(std::io::Error),
}
