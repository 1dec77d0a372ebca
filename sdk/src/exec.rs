//! Remote command execution (`host.remote-exec`, SSH run by the host).
//!
//! The target must be granted: the provider declares
//! [`Need::RemoteExecOnInstanceHost`](crate::Need) or
//! [`Need::RemoteExecToSetting`](crate::Need) and the operator allows it. Anything else fails with
//! [`ExecError::Denied`] and nothing is sent.
//!
//! ```no_run
//! # use bnr_sdk::prelude::*;
//! # fn run(instance: Instance) -> Result<()> {
//! let host = instance.host_address.clone().ok_or_else(|| ProviderError::Rejected("no host".into()))?;
//! let output = exec::Command::new(&host, "virsh domblklist i-2-10-VM")
//!     .timeout(std::time::Duration::from_secs(30))
//!     .run()?        // ExecError converts into ProviderError with `?`
//!     .check()?;     // non-zero exit code → ProviderError::Internal with stderr
//! bnr_sdk::info!("{}", output.stdout);
//! # Ok(())
//! # }
//! ```

pub use crate::types::{ExecError, ExecOutput, ExecRequest};

use crate::ProviderError;
use crate::bindings::bnr::provider::host;
use std::time::Duration;

/// Default SSH port.
pub const DEFAULT_PORT: u16 = 22;
/// Default user when none is set.
pub const DEFAULT_USER: &str = "root";
/// Default command timeout; the host clamps it to the call's own deadline anyway.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of stderr/stdout goes into an error message built by [`ExecOutput::check`].
const MAX_OUTPUT_IN_ERROR: usize = 1024;

/// Run `request` as is.
pub fn run(request: &ExecRequest) -> Result<ExecOutput, ExecError> {
    host::remote_exec(request)
}

/// Builder for an [`ExecRequest`].
#[derive(Clone, Debug)]
pub struct Command {
    request: ExecRequest,
}

impl Command {
    /// `command` on `target` (host name or address), as [`DEFAULT_USER`] on port [`DEFAULT_PORT`]
    /// with the credential the operator configured for the target.
    pub fn new(target: &str, command: &str) -> Self {
        Command {
            request: ExecRequest {
                target: target.into(),
                port: DEFAULT_PORT,
                username: DEFAULT_USER.into(),
                password: None,
                command: command.into(),
                timeout_ms: duration_to_ms(DEFAULT_TIMEOUT),
            },
        }
    }

    /// SSH port.
    pub fn port(mut self, port: u16) -> Self {
        self.request.port = port;
        self
    }

    /// Remote user.
    pub fn user(mut self, username: &str) -> Self {
        self.request.username = username.into();
        self
    }

    /// Password instead of the operator-configured credential.
    pub fn password(mut self, password: &str) -> Self {
        self.request.password = Some(password.into());
        self
    }

    /// Command timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout_ms = duration_to_ms(timeout);
        self
    }

    /// The request this builder describes.
    pub fn request(&self) -> &ExecRequest {
        &self.request
    }

    /// Run the command.
    pub fn run(&self) -> Result<ExecOutput, ExecError> {
        run(&self.request)
    }
}

fn duration_to_ms(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl ExecOutput {
    /// `Ok(self)` when the exit code is 0, otherwise [`ProviderError::Internal`] with the exit code
    /// and the start of stderr (or stdout when stderr is empty).
    pub fn check(self) -> Result<ExecOutput, ProviderError> {
        if self.exit_code == 0 {
            return Ok(self);
        }
        let output = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        Err(ProviderError::Internal(format!(
            "remote command exited with {}: {}",
            self.exit_code,
            truncate(output.trim(), MAX_OUTPUT_IN_ERROR)
        )))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A readable sentence for `error` (the generated `Display` is the `Debug` form).
pub fn describe_error(error: &ExecError) -> String {
    match error {
        ExecError::Denied(m) => format!("remote execution denied: {m}"),
        ExecError::Unreachable(m) => format!("remote host unreachable: {m}"),
        ExecError::AuthFailed(m) => format!("remote authentication failed: {m}"),
        ExecError::Timeout => "remote command timed out".into(),
    }
}

impl From<ExecError> for ProviderError {
    fn from(error: ExecError) -> Self {
        let message = describe_error(&error);
        match error {
            // Not granted: the operator's configuration decides what may be reached.
            ExecError::Denied(_) => ProviderError::InvalidConfig(message),
            ExecError::Unreachable(_) | ExecError::Timeout => ProviderError::Unavailable(message),
            ExecError::AuthFailed(_) => ProviderError::Unauthorized(message),
        }
    }
}
