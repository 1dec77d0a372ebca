//! Remote command execution (`host.remote-exec`, SSH run by the host).
//!
//! The target must be granted: the provider declares [`Need::SshToSetting`](crate::Need)
//! (connection, credentials and pinned host key in zone settings),
//! [`Need::RemoteExecOnInstanceHost`](crate::Need) or
//! [`Need::RemoteExecToSetting`](crate::Need), and the operator allows it. Anything else fails
//! with [`ExecError::Denied`] and nothing is sent. The host logs on: the provider names the
//! target, never a password.
//!
//! Scripts go in through standard input, so nothing needs shell quoting:
//!
//! ```no_run
//! # use bnr_sdk::prelude::*;
//! # fn run() -> Result<()> {
//! let host: String = settings::require("backup.plugin.veeam.ssh.host")?;
//! let script = "Get-VBRJob | Select-Object Name, Id | ConvertTo-Json";
//! let output = exec::Command::new(&host, "powershell -NoProfile -NonInteractive -Command -")
//!     .stdin(script)
//!     .timeout(std::time::Duration::from_secs(30))
//!     .run()?        // ExecError converts into ProviderError with `?`
//!     .check()?;     // non-zero exit code → ProviderError::Internal with stderr
//! bnr_sdk::info!("{}", output.stdout);
//! # Ok(())
//! # }
//! ```

pub use crate::types::{ExecError, ExecOutput, ExecRequest, ExecState};

use crate::ProviderError;
use crate::bindings::bnr::provider::host;
use std::time::Duration;

/// Default command timeout; the host clamps it to its own limit and the call's deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound of stdout and of stderr, each; the host clamps it to its own limit.
pub const DEFAULT_MAX_OUTPUT_BYTES: u32 = 1 << 20;
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
    /// `command` on `target` (host name or address, as the granting setting names it), with
    /// empty standard input, [`DEFAULT_TIMEOUT`] and [`DEFAULT_MAX_OUTPUT_BYTES`].
    pub fn new(target: &str, command: &str) -> Self {
        Command {
            request: ExecRequest {
                target: target.into(),
                command: command.into(),
                stdin: Vec::new(),
                timeout_ms: duration_to_ms(DEFAULT_TIMEOUT),
                max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            },
        }
    }

    /// Bytes written to the command's standard input (then closed).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.request.stdin = input.into();
        self
    }

    /// Limit for connecting, logging on and running the command.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout_ms = duration_to_ms(timeout);
        self
    }

    /// Bound of stdout and of stderr, each; more ends in [`ExecError::OutputTooLarge`].
    pub fn max_output_bytes(mut self, bytes: u32) -> Self {
        self.request.max_output_bytes = bytes;
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

    /// Start the command and return at once with its id; the host runs it on its own, bounded
    /// by [`timeout`](Command::timeout) (capped at 12 hours). Follow it with [`poll`] and
    /// [`cancel`] from later calls (keep the id in the operation handle).
    pub fn start(&self) -> Result<String, ExecError> {
        host::remote_exec_start(&self.request)
    }
}

/// Where the command `id` from [`Command::start`] is. A finished or failed state is reported
/// once; after that (and after a restart of bnr) the id is [`ExecState::Unknown`].
pub fn poll(id: &str) -> ExecState {
    host::remote_exec_poll(id)
}

/// Stop the command `id`; false when there was none.
pub fn cancel(id: &str) -> bool {
    host::remote_exec_cancel(id)
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
        ExecError::HostKeyUnknown(fingerprint) => format!(
            "the remote host's key {fingerprint} is not pinned; check it and add it to the \
             host-key setting"
        ),
        ExecError::HostKeyMismatch(fingerprint) => format!(
            "the remote host presented key {fingerprint}, which does not match the pinned one"
        ),
        ExecError::OutputTooLarge(limit) => {
            format!("the remote command wrote more than {limit} bytes")
        }
        ExecError::InvalidConfig(m) => format!("remote execution is misconfigured: {m}"),
        ExecError::InvalidRequest(m) => format!("remote command refused: {m}"),
    }
}

impl From<ExecError> for ProviderError {
    fn from(error: ExecError) -> Self {
        let message = describe_error(&error);
        match error {
            // The operator's configuration decides what may be reached and trusted.
            ExecError::Denied(_)
            | ExecError::InvalidConfig(_)
            | ExecError::HostKeyUnknown(_)
            | ExecError::HostKeyMismatch(_) => ProviderError::InvalidConfig(message),
            ExecError::Unreachable(_) | ExecError::Timeout => ProviderError::Unavailable(message),
            ExecError::AuthFailed(_) => ProviderError::Unauthorized(message),
            ExecError::OutputTooLarge(_) | ExecError::InvalidRequest(_) => {
                ProviderError::Internal(message)
            }
        }
    }
}
