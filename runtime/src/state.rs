//! What a provider's store holds, and the host side of every import it may call.
//!
//! Defaults are deny-by-default, as in wasmtime's `WasiCtxBuilder`:
//! - WASI: no preopened directories, no environment, no arguments, stdin empty, stdout
//!   discarded, stderr captured (tail only), no TCP/UDP/DNS (every socket address refused),
//!   real clocks and randomness (bounded per call).
//! - `host.setting`: only settings the provider declared; undeclared names read as unset.
//! - `host.remote-exec`: only granted targets; everything else is `denied` before any I/O.
//!   Granted targets are reached over SSH (`ssh.rs`) with the connection the grant carries.
//! - `wasi:http`: only linked for providers that declare an HTTP need, and then only to the
//!   call's granted authorities (checked in [`HttpPolicy::send_request`], so a denied
//!   request never leaves the process); HTTPS to a destination with a TLS grant is checked
//!   against that grant's trust (`tls.rs`).
//!
//! The host functions live here once; each interface version's bindings (`bindings/`)
//! convert their records and call them: exec requests become [`ExecRequest`], results come
//! back as [`ExecOutcome`] / [`ExecFailure`], and 1.2.0's `current-host` shows the call's
//! [`HypervisorHost`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tracing::Instrument;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::detached::{self, DetachedState};
use super::grants::{CallContext, Grants, HypervisorHost};
use super::limits::{
    LOG_BYTES_PER_CALL, LOG_MESSAGE_MAX_BYTES, LOG_MESSAGES_PER_CALL, RANDOM_BYTES_MAX,
    RESOURCE_TABLE_MAX, STDERR_CAPTURE_BYTES, STORE_MAX_INSTANCES, STORE_MAX_MEMORIES,
    STORE_MAX_TABLES, TABLE_ELEMENTS_MAX,
};
use super::ssh::{self, ExecCall, ExecFailure, ExecOutcome, SshConnection};
use super::tls;
use super::types::{LogLevel, Need, ProviderInfo, SettingKind};
use super::untrusted;

/// Where provider log lines go (`RUST_LOG=bnr::provider=debug` shows them all).
pub const PROVIDER_LOG_TARGET: &str = "bnr::provider";

/// What a provider declared, computed once at load.
#[derive(Debug)]
pub(crate) struct Declared {
    /// Provider name, for log tags.
    pub name: Arc<str>,
    /// Provider version, for log tags and metric labels.
    pub version: Arc<str>,
    /// Declared setting names with their defaults.
    pub settings: HashMap<String, Option<String>>,
    /// Names of settings declared secret (values are redacted from the provider's logs).
    pub secret_settings: Vec<String>,
    /// Whether an `http-to-setting` need was declared.
    pub http: bool,
    /// Whether a remote-exec need was declared.
    pub exec: bool,
}

impl Declared {
    pub(crate) fn from_info(info: &ProviderInfo) -> Self {
        Self {
            name: Arc::from(info.name.as_str()),
            version: Arc::from(info.version.as_str()),
            settings: info
                .settings
                .iter()
                .map(|s| (s.name.clone(), s.default_value.clone()))
                .collect(),
            secret_settings: info
                .settings
                .iter()
                .filter(|s| s.secret || matches!(s.kind, SettingKind::Secret))
                .map(|s| s.name.clone())
                .collect(),
            http: info
                .needs
                .iter()
                .any(|n| matches!(n, Need::HttpToSetting(_) | Need::HttpsToSetting(_))),
            exec: info.needs.iter().any(|n| {
                matches!(
                    n,
                    Need::RemoteExecOnInstanceHost
                        | Need::RemoteExecToSetting(_)
                        | Need::SshToSetting(_)
                )
            }),
        }
    }

    /// Before `describe()` ran: nothing declared, so nothing readable or reachable.
    pub(crate) fn nothing(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            version: Arc::from(""),
            settings: HashMap::new(),
            secret_settings: Vec::new(),
            http: false,
            exec: false,
        }
    }
}

/// What one call may read and reach: the `CallContext` filtered by what was declared.
#[derive(Debug)]
pub(crate) struct CallScope {
    pub provider: Arc<str>,
    pub zone: String,
    /// The backup the calls work on, if any.
    pub backup: Option<String>,
    /// Values of declared settings only (zone value, else declared default).
    pub settings: HashMap<String, String>,
    /// Values of the zone's secret settings, redacted from all provider text
    /// (`untrusted::sanitize`).
    pub secrets: Vec<String>,
    /// Grants, emptied of any kind the provider did not declare.
    pub grants: Grants,
    /// The hypervisor host the call works on.
    pub host: Option<HypervisorHost>,
}

impl CallScope {
    pub(crate) fn new(declared: &Declared, ctx: &CallContext) -> Self {
        let settings: HashMap<String, String> = declared
            .settings
            .iter()
            .filter_map(|(name, default)| {
                let value = ctx.settings.get(name).or(default.as_ref())?;
                Some((name.clone(), value.clone()))
            })
            .collect();
        let secrets = declared
            .secret_settings
            .iter()
            .filter_map(|name| settings.get(name))
            .filter(|v| v.len() >= untrusted::MIN_REDACTED_SECRET_LEN)
            .cloned()
            .collect();
        Self {
            provider: declared.name.clone(),
            zone: ctx.zone_uuid.clone(),
            backup: ctx.backup_uuid.clone(),
            settings,
            secrets,
            grants: Grants {
                http_authorities: if declared.http {
                    ctx.grants.http_authorities.clone()
                } else {
                    Vec::new()
                },
                exec_targets: if declared.exec {
                    ctx.grants.exec_targets.clone()
                } else {
                    Vec::new()
                },
                ssh: if declared.exec {
                    ctx.grants.ssh.clone()
                } else {
                    Vec::new()
                },
                tls: if declared.http {
                    ctx.grants.tls.clone()
                } else {
                    Vec::new()
                },
            },
            host: ctx.host.clone(),
        }
    }
}

/// Per-store data.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpPolicy,
    pub limiter: GuestLimiter,
    pub scope: Arc<CallScope>,
    pub cpu: CpuMeter,
    pub stderr: StderrTail,
    log: LogBudget,
}

impl HostState {
    pub(crate) fn new(scope: Arc<CallScope>, memory_bytes: usize, http_timeout: Duration) -> Self {
        let stderr = StderrTail::default();
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(RANDOM_BYTES_MAX)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCE_TABLE_MAX);
        Self {
            wasi,
            table,
            http: WasiHttpCtx::new(),
            hooks: HttpPolicy {
                scope: scope.clone(),
                timeout: http_timeout,
            },
            limiter: GuestLimiter::new(memory_bytes),
            scope,
            cpu: CpuMeter::default(),
            stderr,
            log: LogBudget::default(),
        }
    }

    /// Resets the per-call accounting for a new call on the same store.
    pub(crate) fn begin_call(&mut self, cpu_budget_ticks: u64) {
        self.cpu = CpuMeter {
            ticks: 0,
            budget: cpu_budget_ticks,
        };
        self.log = LogBudget::default();
        self.limiter.hit = None;
        self.stderr.clear();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Guest CPU accounting in epoch ticks (see `limits::EPOCH_TICK`). The deadline callback
/// only runs while guest code executes, so time spent awaiting the host is not counted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CpuMeter {
    pub ticks: u64,
    pub budget: u64,
}

/// Which store limit a guest hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory,
    Table,
}

/// Store limits; remembers which limit was hit so the error can be classified exactly.
pub(crate) struct GuestLimiter {
    memory_bytes: usize,
    pub hit: Option<LimitHit>,
}

/// Error returned into wasmtime when a guest exceeds a store limit (turns into a trap).
#[derive(Debug, thiserror::Error)]
#[error("guest exceeded its {what} limit (asked for {desired}, limit {limit})")]
pub(crate) struct LimitExceeded {
    what: &'static str,
    desired: usize,
    limit: usize,
}

impl GuestLimiter {
    fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            hit: None,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = maximum.map_or(self.memory_bytes, |m| m.min(self.memory_bytes));
        if desired > limit {
            self.hit = Some(LimitHit::Memory);
            // An error (not `Ok(false)`) so the guest traps at once instead of seeing a failed
            // `memory.grow` and possibly spinning on retries.
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "memory",
                desired,
                limit,
            }));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = Some(LimitHit::Memory);
        Err(error.context("memory growth failed"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = maximum.map_or(TABLE_ELEMENTS_MAX, |m| m.min(TABLE_ELEMENTS_MAX));
        if desired > limit {
            self.hit = Some(LimitHit::Table);
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "table",
                desired,
                limit,
            }));
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = Some(LimitHit::Table);
        Err(error.context("table growth failed"))
    }

    fn instances(&self) -> usize {
        STORE_MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        STORE_MAX_TABLES
    }

    fn memories(&self) -> usize {
        STORE_MAX_MEMORIES
    }
}

#[derive(Debug, Default)]
struct LogBudget {
    messages: u32,
    bytes: usize,
    exhausted: bool,
}

impl HostState {
    pub(crate) fn log_line(&mut self, level: LogLevel, message: String) {
        let budget = &mut self.log;
        if budget.exhausted {
            return;
        }
        // Bounded, one line, secrets redacted: a provider cannot forge log lines.
        let message = untrusted::sanitize(&message, LOG_MESSAGE_MAX_BYTES, &self.scope.secrets);
        budget.messages += 1;
        budget.bytes += message.len();
        if budget.messages > LOG_MESSAGES_PER_CALL || budget.bytes > LOG_BYTES_PER_CALL {
            budget.exhausted = true;
            tracing::warn!(
                target: PROVIDER_LOG_TARGET,
                provider = %self.scope.provider,
                zone = %self.scope.zone,
                "provider log budget for this call exhausted ({LOG_MESSAGES_PER_CALL} messages / \
                 {LOG_BYTES_PER_CALL} bytes); further messages are dropped"
            );
            return;
        }
        let (provider, zone) = (&*self.scope.provider, self.scope.zone.as_str());
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: PROVIDER_LOG_TARGET, provider, zone, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: PROVIDER_LOG_TARGET, provider, zone, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: PROVIDER_LOG_TARGET, provider, zone, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: PROVIDER_LOG_TARGET, provider, zone, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: PROVIDER_LOG_TARGET, provider, zone, "{message}")
            }
        }
    }

    pub(crate) fn setting_value(&self, name: &str) -> Option<String> {
        self.scope.settings.get(name).cloned()
    }

    /// `host.remote-exec` of either version: the grant check first (a denied target gets
    /// nothing sent), then the request's bounds, then SSH with the target's connection.
    /// `login` is what a 1.0.0 request names itself (port, user, optional password).
    async fn remote_exec_call(
        &mut self,
        request: Result<ExecCall, ExecFailure>,
        target: &str,
        login: Option<LegacyLogin>,
    ) -> Result<ExecOutcome, ExecFailure> {
        let (host, connection, call) = self.resolve_exec(request, target, login)?;
        let started = std::time::Instant::now();
        let outcome = ssh::run(&host, &connection, &call).await;
        let result = match &outcome {
            Ok(done) => format!("exit {}", done.exit_code),
            Err(failure) => format!("{failure:?}"),
        };
        tracing::info!(
            target: PROVIDER_LOG_TARGET,
            provider = %self.scope.provider,
            zone = %self.scope.zone,
            exec_target = %host,
            port = connection.port,
            user = %connection.username,
            command_bytes = call.command.len(),
            stdin_bytes = call.stdin.len(),
            millis = started.elapsed().as_millis() as u64,
            result = %untrusted::sanitize(&result, 1024, &self.scope.secrets),
            "remote exec"
        );
        outcome
    }

    /// 1.2.0's `remote-exec-start`: the same checks as `remote-exec`, then the command runs on
    /// its own (`detached.rs`).
    fn remote_exec_start(
        &mut self,
        request: Result<ExecCall, ExecFailure>,
        target: &str,
    ) -> Result<String, ExecFailure> {
        let (host, connection, call) = self.resolve_exec(request, target, None)?;
        tracing::info!(
            target: PROVIDER_LOG_TARGET,
            provider = %self.scope.provider,
            zone = %self.scope.zone,
            exec_target = %host,
            port = connection.port,
            user = %connection.username,
            command_bytes = call.command.len(),
            "remote exec started"
        );
        detached::start(self.exec_owner(), host, connection, call)
    }

    /// Who a detached command belongs to: only the same provider in the same zone sees it.
    fn exec_owner(&self) -> (String, String) {
        (self.scope.provider.to_string(), self.scope.zone.clone())
    }

    /// The grant check first (a denied target gets nothing sent), then the request's bounds,
    /// then the target's connection.
    fn resolve_exec(
        &mut self,
        request: Result<ExecCall, ExecFailure>,
        target: &str,
        login: Option<LegacyLogin>,
    ) -> Result<(String, SshConnection, ExecCall), ExecFailure> {
        let target = untrusted::sanitize(target, 256, &[]);
        if !self.scope.grants.allows_exec(&target) {
            tracing::warn!(
                target: PROVIDER_LOG_TARGET,
                provider = %self.scope.provider,
                zone = %self.scope.zone,
                exec_target = %target,
                "remote exec denied: target not granted"
            );
            return Err(ExecFailure::Denied(format!(
                "remote exec to `{target}` is not granted to this provider in this zone"
            )));
        }
        let call = request?;
        let granted = self
            .scope
            .grants
            .ssh_for(&target)
            .map(|g| g.connection.clone());
        let connection = match (granted, login) {
            // A connection the operator configured wins over what a 1.0.0 request names.
            (Some(Ok(connection)), _) => connection,
            (Some(Err(problem)), _) => return Err(ExecFailure::InvalidConfig(problem)),
            // Without one, a 1.0.0 request's own login is used; the host key still has to be
            // pinned by the operator, so it is reported as unknown (with its fingerprint).
            (None, Some(login)) => SshConnection {
                port: login.port,
                username: login.username,
                password: login.password,
                private_key: None,
                host_keys: Vec::new(),
                credential_source: "the request".to_owned(),
            },
            (None, None) => {
                return Err(ExecFailure::InvalidConfig(format!(
                    "no SSH connection (port, credentials, host key) is configured for `{target}`"
                )));
            }
        };
        let host = super::grants::normalize_exec_target(&target).unwrap_or(target);
        Ok((host, connection, call))
    }
}

/// What a 1.0.0 `exec-request` names besides the command.
pub(crate) struct LegacyLogin {
    pub port: u16,
    pub username: String,
    pub password: Option<String>,
}

/// A `host.remote-exec` request of any version, before the host's bounds are applied.
pub(crate) struct ExecRequest {
    /// Host name or address; must be a granted target.
    pub target: String,
    pub command: String,
    pub stdin: Vec<u8>,
    pub timeout_ms: u32,
    pub max_output_bytes: u32,
}

/// The host functions every interface version shares; each version's bindings convert its
/// records and call these.
impl HostState {
    /// `remote-exec` (1.1.0 on): the request's own bounds, capped by the host's.
    pub(crate) async fn remote_exec_bounded(
        &mut self,
        request: ExecRequest,
    ) -> Result<ExecOutcome, ExecFailure> {
        let call = ExecCall::bounded(
            request.command,
            request.stdin,
            request.timeout_ms,
            request.max_output_bytes,
        );
        self.remote_exec_call(call, &request.target, None).await
    }

    /// 1.0.0's `remote-exec`, whose request may name its own login.
    pub(crate) async fn remote_exec_legacy(
        &mut self,
        request: ExecRequest,
        login: LegacyLogin,
    ) -> Result<ExecOutcome, ExecFailure> {
        let call = ExecCall::bounded(
            request.command,
            request.stdin,
            request.timeout_ms,
            request.max_output_bytes,
        );
        self.remote_exec_call(call, &request.target, Some(login))
            .await
    }

    /// `remote-exec-start` (1.2.0 on).
    pub(crate) fn remote_exec_detached(
        &mut self,
        request: ExecRequest,
    ) -> Result<String, ExecFailure> {
        // A detached command may run past the interactive cap; `detached.rs` applies its own.
        let timeout = Duration::from_millis(u64::from(request.timeout_ms));
        let call = ExecCall::bounded(
            request.command,
            request.stdin,
            request.timeout_ms,
            request.max_output_bytes,
        )
        .map(|mut call| {
            call.timeout = timeout;
            call
        });
        self.remote_exec_start(call, &request.target)
    }

    /// `remote-exec-poll` (1.2.0 on): only this provider's commands in this zone are visible.
    pub(crate) fn remote_exec_state(&self, id: &str) -> DetachedState {
        detached::poll(&self.exec_owner(), id)
    }

    /// `remote-exec-cancel` (1.2.0 on).
    pub(crate) fn remote_exec_stop(&self, id: &str) -> bool {
        detached::cancel(&self.exec_owner(), id)
    }

    /// `current-host` (1.2.0 on): the hypervisor host this call works on.
    pub(crate) fn current_host_record(&self) -> Option<&HypervisorHost> {
        self.scope.host.as_ref()
    }
}

/// Outbound HTTP policy: the allowlist check and timeout clamp for every `wasi:http` request.
pub(crate) struct HttpPolicy {
    scope: Arc<CallScope>,
    timeout: Duration,
}

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (http::Response<wasmtime_wasi_http::WasiBody>, IoFuture),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let allowed = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => self.scope.grants.allows_http(scheme, authority),
            _ => false,
        };
        // A destination with a TLS grant is reachable over HTTPS only.
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls_grant = uri.authority().and_then(|authority| {
            let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            self.scope.grants.tls_for(authority.host(), port).cloned()
        });
        if allowed && !https && tls_grant.is_some() {
            tracing::warn!(
                target: PROVIDER_LOG_TARGET,
                provider = %self.scope.provider,
                zone = %self.scope.zone,
                authority = %uri.authority().map(|a| a.as_str()).unwrap_or(""),
                "outbound HTTP denied: the destination is granted for HTTPS only"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if !allowed {
            tracing::warn!(
                target: PROVIDER_LOG_TARGET,
                provider = %self.scope.provider,
                zone = %self.scope.zone,
                authority = %uri.authority().map(|a| a.as_str()).unwrap_or(""),
                "outbound HTTP denied: authority not granted"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let cap = self.timeout;
        let clamp = |t: Option<Duration>| Some(t.map_or(cap, |t| t.min(cap)));
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: clamp(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout)),
        };
        let tls_grant = match tls_grant {
            None => None,
            Some(grant) => match grant.trust {
                Ok(trust) => Some((trust, grant.authority)),
                Err(problem) => {
                    tracing::warn!(
                        target: PROVIDER_LOG_TARGET,
                        provider = %self.scope.provider,
                        zone = %self.scope.zone,
                        authority = %grant.authority,
                        %problem,
                        "outbound HTTPS refused: the TLS trust settings are malformed"
                    );
                    return Box::new(async move {
                        Err(wasmtime_wasi_http::Error::InternalError(Some(problem)))
                    });
                }
            },
        };
        // The connection outlives the hook (its driver is polled elsewhere): whatever the HTTP
        // stack logs about it names the provider and zone through this span.
        let span = tracing::info_span!(
            "provider_connection",
            provider = %self.scope.provider,
            zone = %self.scope.zone,
        );
        let io_span = span.clone();
        let in_span =
            move |io: IoFuture| -> IoFuture { Box::new(Box::into_pin(io).instrument(io_span)) };
        if let Some((trust, authority)) = tls_grant {
            let origin = tls::Origin {
                provider: self.scope.provider.clone(),
                zone: self.scope.zone.clone(),
            };
            return Box::new(
                async move {
                    let (response, io) = tokio::time::timeout(
                        cap,
                        tls::send_with_trust(request, options, &trust, &authority, origin),
                    )
                    .await
                    .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??;
                    Ok((response, in_span(io)))
                }
                .instrument(span),
            );
        }
        Box::new(
            async move {
                let sent = tokio::time::timeout(
                    cap,
                    wasmtime_wasi_http::default_send_request(request, Some(options)),
                )
                .await
                .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??;
                let (response, io) = sent;
                Ok((response.map(BodyExt::boxed_unsync), in_span(Box::new(io))))
            }
            .instrument(span),
        )
    }
}

/// Keeps the last `STDERR_CAPTURE_BYTES` a guest wrote to stderr. Writes never fail, so a
/// chatty guest cannot make its own panic report fail.
#[derive(Clone, Default)]
pub(crate) struct StderrTail {
    buffer: Arc<Mutex<Vec<u8>>>,
}

/// Bytes offered to a writer per `check-write` (a WASI stream permit).
const STDERR_WRITE_PERMIT: usize = 64 << 10;

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock();
        if bytes.len() >= STDERR_CAPTURE_BYTES {
            buffer.clear();
            buffer.extend_from_slice(&bytes[bytes.len() - STDERR_CAPTURE_BYTES..]);
            return;
        }
        buffer.extend_from_slice(bytes);
        if buffer.len() > STDERR_CAPTURE_BYTES {
            let excess = buffer.len() - STDERR_CAPTURE_BYTES;
            buffer.drain(..excess);
        }
    }

    fn clear(&self) {
        self.buffer.lock().clear();
    }

    /// The captured text (lossy UTF-8).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock()).into_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Grants;
    use crate::types::{Capabilities, DeleteGranularity, SettingDecl, SettingKind};

    fn decl(name: &str, default: Option<&str>, secret: bool) -> SettingDecl {
        SettingDecl {
            name: name.into(),
            description: String::new(),
            kind: if secret {
                SettingKind::Secret
            } else {
                SettingKind::Text
            },
            default_value: default.map(Into::into),
            secret,
        }
    }

    fn info(needs: Vec<Need>) -> ProviderInfo {
        ProviderInfo {
            name: "unit".into(),
            description: String::new(),
            version: "1.0.0".into(),
            settings: vec![
                decl("vendor.user", None, false),
                decl("vendor.password", None, true),
                decl("vendor.port", Some("9398"), false),
            ],
            needs,
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: false,
                single_volume_restore: false,
                delete_granularity: DeleteGranularity::Chain,
                deletes_backups_on_offering_removal: false,
                reconciliation: false,
                provider_owned_retention: false,
                cross_zone_instance_creation: false,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn state(needs: Vec<Need>, grants: Grants) -> HostState {
        let declared = Declared::from_info(&info(needs));
        let ctx = CallContext::new(
            "zone-1",
            [
                ("vendor.user", "backup-admin"),
                ("vendor.password", "hunter2-secret"),
                ("other.provider.password", "not-yours"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            grants,
        );
        let scope = Arc::new(CallScope::new(&declared, &ctx));
        HostState::new(scope, 1 << 20, Duration::from_secs(1))
    }

    fn exec_request(target: &str) -> ExecRequest {
        ExecRequest {
            target: target.into(),
            command: "true".into(),
            stdin: Vec::new(),
            timeout_ms: 1000,
            max_output_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn a_provider_reads_declared_settings_and_nothing_else() {
        let state = state(vec![], Grants::default());
        for (name, expected) in [
            ("vendor.user", Some("backup-admin")),
            ("vendor.password", Some("hunter2-secret")),
            ("vendor.port", Some("9398")),
            ("other.provider.password", None),
            ("missing", None),
        ] {
            let value = state.setting_value(name);
            assert_eq!(value.as_deref(), expected, "{name}");
        }
    }

    #[tokio::test]
    async fn remote_exec_is_denied_unless_granted_and_needs_a_configured_connection() {
        let grants = Grants {
            exec_targets: vec!["kvm1.lan".into()],
            ..Grants::default()
        };
        let mut state = state(vec![Need::RemoteExecOnInstanceHost], grants.clone());
        let denied = state.remote_exec_bounded(exec_request("kvm2.lan")).await;
        assert!(matches!(denied, Err(ExecFailure::Denied(_))), "{denied:?}");
        // Granted, but nobody configured how to log on: refused before any connection.
        let granted = state.remote_exec_bounded(exec_request("KVM1.lan")).await;
        assert!(
            matches!(&granted, Err(ExecFailure::InvalidConfig(m)) if m.to_lowercase().contains("kvm1.lan")),
            "{granted:?}"
        );

        // The same grants mean nothing to a provider that did not declare remote exec.
        let mut state = self::state(vec![], grants);
        let denied = state.remote_exec_bounded(exec_request("kvm1.lan")).await;
        assert!(matches!(denied, Err(ExecFailure::Denied(_))), "{denied:?}");
    }

    #[test]
    fn grants_of_a_kind_the_provider_did_not_declare_are_dropped_from_the_call() {
        let grants = Grants {
            http_authorities: vec!["https://veeam.lan:9398".into()],
            exec_targets: vec!["kvm1.lan".into()],
            ..Grants::default()
        };
        let scope = &state(vec![], grants.clone()).scope;
        assert_eq!(scope.grants, Grants::default());
        let scope = &state(vec![Need::HttpToSetting("vendor.user".into())], grants).scope;
        assert_eq!(
            scope.grants.http_authorities,
            vec!["https://veeam.lan:9398"]
        );
        assert!(scope.grants.exec_targets.is_empty());
    }

    #[tokio::test]
    async fn logging_is_bounded_per_call_and_reset_for_the_next() {
        let mut state = state(vec![], Grants::default());
        let huge = "x".repeat(LOG_MESSAGE_MAX_BYTES * 10);
        state.log_line(LogLevel::Info, huge);
        assert!(state.log.bytes <= LOG_MESSAGE_MAX_BYTES + '…'.len_utf8());
        for _ in 0..LOG_MESSAGES_PER_CALL {
            state.log_line(LogLevel::Debug, "line".into());
        }
        assert!(state.log.exhausted);
        let counted = state.log.messages;
        state.log_line(LogLevel::Error, "dropped".into());
        assert_eq!(
            state.log.messages, counted,
            "nothing counted once exhausted"
        );

        state.begin_call(10);
        assert!(!state.log.exhausted);
        assert_eq!(state.log.messages, 0);
    }

    #[test]
    fn secret_setting_values_are_redacted_from_log_lines() {
        let state = state(vec![], Grants::default());
        assert_eq!(
            untrusted::sanitize(
                "login backup-admin / hunter2-secret failed\nforged",
                LOG_MESSAGE_MAX_BYTES,
                &state.scope.secrets
            ),
            "login backup-admin / *** failed forged"
        );
    }

    #[test]
    fn memory_growth_past_the_cap_fails_and_is_remembered() {
        let mut limiter = GuestLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(limiter.hit, None);
        assert!(
            limiter
                .memory_growing(1 << 20, (1 << 20) + 1, None)
                .is_err()
        );
        assert_eq!(limiter.hit, Some(LimitHit::Memory));
    }

    #[test]
    fn stderr_keeps_only_the_tail() {
        let tail = StderrTail::default();
        tail.push(&vec![b'a'; STDERR_CAPTURE_BYTES]);
        tail.push(b"the end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_CAPTURE_BYTES);
        assert!(text.ends_with("the end"));
        tail.push(&vec![b'b'; STDERR_CAPTURE_BYTES * 2]);
        assert_eq!(tail.text(), "b".repeat(STDERR_CAPTURE_BYTES));
    }
}
