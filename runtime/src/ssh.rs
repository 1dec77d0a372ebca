//! The SSH transport behind `host.remote-exec` (russh, ring crypto, no system libraries).
//!
//! One connection per request: connect, check the host key against the pins (refusing an
//! unknown or different key before anything is sent), authenticate (private key first, then
//! password), run one command with its stdin, collect exit status, stdout and stderr within
//! the bounds, disconnect. Connecting and the whole exchange are both time-bounded; output
//! past the bound ends the session. Secrets are never logged.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

/// Upper bound of one remote command, whatever the request asks (the provider call's own
/// timeout still applies and usually ends it first).
pub const EXEC_TIMEOUT_MAX: Duration = Duration::from_secs(15 * 60);
/// Bound of TCP connect + key exchange + authentication.
pub const SSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound of stdout and of stderr, each (the call's result is bounded at 16 MiB).
pub const EXEC_OUTPUT_MAX_BYTES: u32 = 4 << 20;
/// Largest standard input accepted (scripts, not data).
pub const EXEC_STDIN_MAX_BYTES: usize = 1 << 20;
/// Longest command line accepted.
pub const EXEC_COMMAND_MAX_BYTES: usize = 64 << 10;

/// How to reach and log on to one exec target. Built from zone settings (`ssh-to-setting`)
/// or by the caller from an operator's record of the host.
#[derive(Clone, PartialEq, Eq)]
pub struct SshConnection {
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub username: String,
    /// Password, if any.
    pub password: Option<String>,
    /// OpenSSH private key (PEM text), if any; tried before the password.
    pub private_key: Option<String>,
    /// Pinned host-key fingerprints, `SHA256:<base64>` as `ssh-keygen -lf` prints them.
    pub host_keys: Vec<String>,
    /// Where the credentials come from, for error messages (e.g. "settings `a.user`, `a.password`").
    pub credential_source: String,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("private_key", &self.private_key.as_ref().map(|_| "***"))
            .field("host_keys", &self.host_keys)
            .field("credential_source", &self.credential_source)
            .finish()
    }
}

/// One command to run, already bounded by the caller.
#[derive(Debug, Clone)]
pub(crate) struct ExecCall {
    pub command: String,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub max_output_bytes: u32,
}

impl ExecCall {
    /// Applies the host's caps to what a provider asked for; `Err` for input past the caps.
    pub(crate) fn bounded(
        command: String,
        stdin: Vec<u8>,
        timeout_ms: u32,
        max_output_bytes: u32,
    ) -> Result<Self, ExecFailure> {
        if command.len() > EXEC_COMMAND_MAX_BYTES || command.contains('\0') {
            return Err(ExecFailure::InvalidRequest(format!(
                "the command must be at most {EXEC_COMMAND_MAX_BYTES} bytes without NUL"
            )));
        }
        if stdin.len() > EXEC_STDIN_MAX_BYTES {
            return Err(ExecFailure::InvalidRequest(format!(
                "stdin is {} bytes; at most {EXEC_STDIN_MAX_BYTES} are accepted",
                stdin.len()
            )));
        }
        Ok(Self {
            command,
            stdin,
            timeout: Duration::from_millis(u64::from(timeout_ms)).min(EXEC_TIMEOUT_MAX),
            max_output_bytes: max_output_bytes.clamp(1, EXEC_OUTPUT_MAX_BYTES),
        })
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecOutcome {
    /// Exit status; -1 when the command ended without one (signal).
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Why a command did not run to its end. Each interface version maps these onto its own
/// `exec-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExecFailure {
    Denied(String),
    Unreachable(String),
    AuthFailed(String),
    Timeout,
    HostKeyUnknown(String),
    HostKeyMismatch(String),
    OutputTooLarge(u32),
    InvalidConfig(String),
    /// The request itself is out of bounds (command or stdin too large).
    InvalidRequest(String),
}

/// What the host-key check saw, kept for the error after a refused handshake.
#[derive(Debug, Clone, Default)]
struct KeyCheck {
    presented: Option<String>,
    pinned_any: bool,
}

struct PinningHandler {
    pins: Vec<String>,
    seen: Arc<Mutex<KeyCheck>>,
}

impl client::Handler for PinningHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            // Host certificates are not supported: only pinned keys are trusted.
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let accepted = self.pins.iter().any(|pin| pin == &fingerprint);
        *self.seen.lock() = KeyCheck {
            presented: Some(fingerprint),
            pinned_any: !self.pins.is_empty(),
        };
        Ok(accepted)
    }
}

/// Runs `call` on `host` (a granted target) with `connection`, bounded by `call.timeout`.
pub(crate) async fn run(
    host: &str,
    connection: &SshConnection,
    call: &ExecCall,
) -> Result<ExecOutcome, ExecFailure> {
    match tokio::time::timeout(call.timeout, run_unbounded(host, connection, call)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ExecFailure::Timeout),
    }
}

async fn run_unbounded(
    host: &str,
    connection: &SshConnection,
    call: &ExecCall,
) -> Result<ExecOutcome, ExecFailure> {
    let pins = parse_pins(&connection.host_keys)?;
    let seen = Arc::new(Mutex::new(KeyCheck::default()));
    let handler = PinningHandler {
        pins,
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(call.timeout),
        nodelay: true,
        ..client::Config::default()
    });
    let address = (
        host.trim_start_matches('[').trim_end_matches(']'),
        connection.port,
    );
    let connect = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|err| {
                ExecFailure::Unreachable(format!("{host}:{}: {err}", connection.port))
            })?;
        stream.set_nodelay(true).ok();
        let mut session = client::connect_stream(config, stream, handler)
            .await
            .map_err(|err| handshake_failure(host, connection.port, &seen.lock(), err))?;
        authenticate(&mut session, host, connection).await?;
        Ok::<_, ExecFailure>(session)
    };
    let session = match tokio::time::timeout(SSH_CONNECT_TIMEOUT.min(call.timeout), connect).await {
        Ok(session) => session?,
        Err(_) => return Err(ExecFailure::Timeout),
    };
    let outcome = run_command(&session, host, call).await;
    // Best effort: the server learns we are done; the TCP connection closes on drop anyway.
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    outcome
}

fn parse_pins(host_keys: &[String]) -> Result<Vec<String>, ExecFailure> {
    host_keys
        .iter()
        .map(|pin| {
            let pin = pin.trim();
            let valid = pin
                .strip_prefix("SHA256:")
                .is_some_and(|b64| !b64.is_empty() && b64.len() <= 64);
            if valid {
                Ok(pin.to_owned())
            } else {
                Err(ExecFailure::InvalidConfig(format!(
                    "host-key pin `{pin}` is not a `SHA256:…` fingerprint as `ssh-keygen -lf` \
                     prints it"
                )))
            }
        })
        .collect()
}

fn handshake_failure(host: &str, port: u16, seen: &KeyCheck, err: russh::Error) -> ExecFailure {
    match (&seen.presented, err) {
        (Some(fingerprint), russh::Error::UnknownKey) if seen.pinned_any => {
            ExecFailure::HostKeyMismatch(fingerprint.clone())
        }
        (Some(fingerprint), russh::Error::UnknownKey) => {
            ExecFailure::HostKeyUnknown(fingerprint.clone())
        }
        (None, russh::Error::UnknownKey) => ExecFailure::HostKeyUnknown(
            "(a host certificate; only pinned plain keys are accepted)".to_owned(),
        ),
        (_, err) => ExecFailure::Unreachable(format!("{host}:{port}: SSH handshake failed: {err}")),
    }
}

async fn authenticate(
    session: &mut client::Handle<PinningHandler>,
    host: &str,
    connection: &SshConnection,
) -> Result<(), ExecFailure> {
    let user = connection.username.as_str();
    let mut tried = Vec::new();
    if let Some(pem) = &connection.private_key {
        let key = russh::keys::decode_secret_key(pem, None).map_err(|err| {
            ExecFailure::InvalidConfig(format!(
                "the private key ({}) is not a usable unencrypted OpenSSH key: {err}",
                connection.credential_source
            ))
        })?;
        let hash = session
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let result = session
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|err| ExecFailure::Unreachable(format!("{host}: {err}")))?;
        if matches!(result, AuthResult::Success) {
            return Ok(());
        }
        tried.push("private key");
    }
    if let Some(password) = &connection.password {
        let result = session
            .authenticate_password(user, password)
            .await
            .map_err(|err| ExecFailure::Unreachable(format!("{host}: {err}")))?;
        if matches!(result, AuthResult::Success) {
            return Ok(());
        }
        tried.push("password");
    }
    if tried.is_empty() {
        return Err(ExecFailure::InvalidConfig(format!(
            "no password or private key is configured ({})",
            connection.credential_source
        )));
    }
    Err(ExecFailure::AuthFailed(format!(
        "{host} refused user `{user}` with the {} ({})",
        tried.join(" and the "),
        connection.credential_source
    )))
}

async fn run_command(
    session: &client::Handle<PinningHandler>,
    host: &str,
    call: &ExecCall,
) -> Result<ExecOutcome, ExecFailure> {
    let lost = |err: russh::Error| ExecFailure::Unreachable(format!("{host}: {err}"));
    let mut channel = session.channel_open_session().await.map_err(lost)?;
    channel
        .exec(true, call.command.as_bytes())
        .await
        .map_err(lost)?;
    if !call.stdin.is_empty() {
        channel.data_bytes(call.stdin.clone()).await.map_err(lost)?;
    }
    channel.eof().await.map_err(lost)?;

    let limit = call.max_output_bytes as usize;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut exit_code = None;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => append_bounded(&mut stdout, &data, limit, call)?,
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                append_bounded(&mut stderr, &data, limit, call)?
            }
            ChannelMsg::ExitStatus { exit_status } => {
                exit_code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                let note = format!("\n[killed by signal {signal_name:?}]");
                append_bounded(&mut stderr, note.as_bytes(), usize::MAX, call)?;
                exit_code.get_or_insert(-1);
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(ExecOutcome {
        exit_code: exit_code.unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn append_bounded(
    buffer: &mut Vec<u8>,
    data: &[u8],
    limit: usize,
    call: &ExecCall,
) -> Result<(), ExecFailure> {
    if buffer.len() + data.len() > limit {
        return Err(ExecFailure::OutputTooLarge(call.max_output_bytes));
    }
    buffer.extend_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_capped_and_oversized_input_refused() {
        let call = ExecCall::bounded("true".into(), vec![], u32::MAX, u32::MAX).unwrap();
        assert_eq!(call.timeout, EXEC_TIMEOUT_MAX);
        assert_eq!(call.max_output_bytes, EXEC_OUTPUT_MAX_BYTES);
        let big = vec![0; EXEC_STDIN_MAX_BYTES + 1];
        assert!(matches!(
            ExecCall::bounded("cat".into(), big, 1000, 10),
            Err(ExecFailure::InvalidRequest(_))
        ));
        assert!(matches!(
            ExecCall::bounded("a\0b".into(), vec![], 1000, 10),
            Err(ExecFailure::InvalidRequest(_))
        ));
    }

    #[test]
    fn pins_must_be_openssh_sha256_fingerprints() {
        assert!(parse_pins(&["SHA256:abc+/def".into()]).is_ok());
        assert!(matches!(
            parse_pins(&["MD5:aa:bb".into()]),
            Err(ExecFailure::InvalidConfig(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let connection = SshConnection {
            port: 22,
            username: "backup".into(),
            password: Some("hunter2-secret".into()),
            private_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----".into()),
            host_keys: vec![],
            credential_source: "settings".into(),
        };
        let shown = format!("{connection:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("BEGIN"), "{shown}");
    }
}
