//! What the runtime tells its embedder: the [`RuntimeObserver`] the host passes in
//! ([`RuntimeConfig::observer`](crate::RuntimeConfig)), so metrics and job context live in the
//! host and the runtime depends on neither.

use std::time::Duration;

/// One finished provider call, as metrics label it.
#[derive(Debug, Clone, Copy)]
pub struct CallRecord<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Provider version.
    pub version: &'a str,
    /// The export called (`start_backup`, `poll_operation`, …).
    pub function: &'a str,
    /// Zone uuid the call ran for.
    pub zone: &'a str,
    /// `ok`, or the [`CallError::kind`](crate::CallError::kind) it ended with.
    pub outcome: &'static str,
    /// Wall-clock time of the call, admission included.
    pub elapsed: Duration,
}

/// Hooks the runtime calls; every method has a do-nothing default. Implementations must be
/// cheap and must not block: they run on the call path.
pub trait RuntimeObserver: Send + Sync + std::fmt::Debug {
    /// A provider call finished (successfully or not).
    fn provider_call(&self, _call: &CallRecord<'_>) {}

    /// A component was loaded; `from_cache` tells whether its compiled code came from the
    /// compiled-component cache.
    fn component_loaded(&self, _from_cache: bool) {}

    /// The job the current task works for, if any: tagged on every provider call's span.
    fn current_job(&self) -> Option<String> {
        None
    }
}

/// The observer used when the embedder passes none.
#[derive(Debug, Default)]
pub(crate) struct NoObserver;

impl RuntimeObserver for NoObserver {}
