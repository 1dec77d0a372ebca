//! The CloudStack wire protocol and nothing else: one endpoint (`/client/api`), GET = POST,
//! signature / session authentication, role checks, parameter binding, envelopes, errors.
//!
//! Invariant: only this layer knows CloudStack JSON. Lower layers return typed values and
//! `OpError`s; command handlers (in `commands`) turn them into response objects.

pub mod answers;
pub mod commands;
pub mod error;
pub mod health;
pub mod params;
pub mod registry;
pub mod render;
pub mod serve;
pub mod session;
pub mod signature;

use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::config::Settings;
use crate::identity::{self, Caller};
use crate::jobs::{JobFailure, JobManager, JobOutcome, JobSpec, OutcomeOf};
use crate::store::{OpError, Store, now};

pub use error::ApiError;
pub use registry::{AsyncStart, Command, Ctx, Entity, Param, Registry};
pub use render::{ApiResult, Format, Obj};

use error::code;
use params::RawParams;
use registry::Handler;
use render::{answer_body, error_response, ok_response, rendered_response};
use session::Sessions;

/// Largest request body accepted (form-encoded parameters; nothing legitimate comes close).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Commands that take a raw body (`application/wasm` or `application/octet-stream`): a
/// provider component of up to [`crate::plugins::MAX_UPLOAD_BYTES`].
const UPLOAD_COMMANDS: &[&str] = &["addBackupProviderPlugin"];
pub const DATABASE_FILE: &str = "bnr.sqlite";

/// The long-lived services every layer shares. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub store: Store,
    pub settings: Settings,
    pub jobs: JobManager,
}

impl Core {
    /// Opens `<data_dir>/bnr.sqlite` (migrating it), loads settings, creates the job manager.
    pub fn open(data_dir: &Path) -> anyhow::Result<Core> {
        Core::open_database(data_dir, None)
    }

    /// Opens `database` (`None`: `<data_dir>/bnr.sqlite`); the data directory keeps the key
    /// that seals secrets either way.
    pub fn open_database(
        data_dir: &Path,
        database: Option<&crate::store::Database>,
    ) -> anyhow::Result<Core> {
        use anyhow::Context;
        let default = crate::store::Database::Sqlite(data_dir.join(DATABASE_FILE));
        let database = database.unwrap_or(&default);
        let store = Store::open_database(database, data_dir)
            .with_context(|| format!("opening the database {database}"))?;
        tracing::info!(database = %database, "store opened");
        Core::from_store(store)
    }

    pub fn from_store(store: Store) -> anyhow::Result<Core> {
        let settings = Settings::load(store.clone())?;
        let jobs = JobManager::new(store.clone());
        Ok(Core {
            store,
            settings,
            jobs,
        })
    }
}

/// State shared by every request: the core services, the command registry, login sessions,
/// and typed extensions for services added by other layers (`ApiState::ext`).
#[derive(Clone)]
pub struct ApiState(Arc<StateInner>);

pub struct StateInner {
    pub core: Core,
    pub registry: Registry,
    pub sessions: Sessions,
    /// API-key credentials of signed requests, kept between requests.
    pub credentials: identity::CredentialCache,
    /// Rendered answers of read-only commands, kept while the store is unchanged.
    pub answers: answers::AnswerCache,
    /// Draining for shutdown, and the state-changing requests still running.
    pub lifecycle: health::Lifecycle,
    extensions: http::Extensions,
}

impl Deref for ApiState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl StateInner {
    pub fn store(&self) -> &Store {
        &self.core.store
    }
    pub fn settings(&self) -> &Settings {
        &self.core.settings
    }
    pub fn jobs(&self) -> &JobManager {
        &self.core.jobs
    }
    /// A service registered with [`ApiState::with_extensions`], e.g. the B&R service.
    pub fn ext<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

impl ApiState {
    pub fn new(core: Core, registry: Registry) -> ApiState {
        Self::with_extensions(core, registry, http::Extensions::new())
    }

    /// `extensions` holds services of other layers (insert `Arc<MyService>`; handlers call
    /// `ctx.state.ext::<Arc<MyService>>()`).
    pub fn with_extensions(
        core: Core,
        registry: Registry,
        extensions: http::Extensions,
    ) -> ApiState {
        ApiState(Arc::new(StateInner {
            credentials: identity::CredentialCache::new(core.store.clone()),
            answers: answers::AnswerCache::new(core.store.clone()),
            lifecycle: health::Lifecycle::default(),
            sessions: Sessions::new(core.store.clone()),
            core,
            registry,
            extensions,
        }))
    }
}

/// The HTTP router: `/client/api` (any method; GET and POST are handled alike), and the
/// unauthenticated probes `/healthz` and `/readyz`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/client/api", any(handle))
        .route("/client/api/", any(handle))
        .merge(crate::console::routes())
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        // `handle` reads the body itself, with the limit its kind allows.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Whether a request is a component upload: a raw body for an upload command (named in the
/// query string, which is where an upload's parameters are).
fn is_upload_request(uri: &Uri, headers: &HeaderMap) -> bool {
    let raw_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream")
        });
    raw_body
        && uri.query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "command" && UPLOAD_COMMANDS.contains(&v.as_ref()))
        })
}

async fn handle(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Only a component upload may exceed a parameter body's size; the limit is chosen before
    // anything is read, so other requests never buffer more than MAX_BODY_BYTES.
    let (limit, upload) = if is_upload_request(&uri, &headers) {
        (crate::plugins::MAX_UPLOAD_BYTES, true)
    } else {
        (MAX_BODY_BYTES, false)
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            let what = if upload { "component" } else { "request body" };
            let e = ApiError::new(
                413,
                Some(error::cs_code::SERVER_API_EXCEPTION),
                format!("The {what} is larger than {limit} bytes, or could not be read"),
            );
            return error_response(&e, "errorresponse", Format::Json);
        }
    };
    // A panic anywhere below becomes a 530 answer, never a dropped connection or a 500. The
    // request runs in this task (a spawned task per request costs more than a short read);
    // commands that change state still get their own task in `process`, so a client that
    // hangs up cannot cancel them half-way.
    let mut request = std::pin::pin!(process(state, method, uri, headers, body));
    let outcome = std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| request.as_mut().poll(cx))) {
            Ok(Poll::Ready(resp)) => Poll::Ready(Ok(resp)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panicked())
}

/// The answer to every request that arrives while the server drains for shutdown.
fn draining(format: Format) -> Response {
    error_response(
        &ApiError::new(
            503,
            Some(error::cs_code::SERVER_API_EXCEPTION),
            "The management server is shutting down; retry later",
        ),
        "errorresponse",
        format,
    )
}

/// The answer to a request whose handler panicked.
fn panicked() -> Response {
    tracing::error!("request handler panicked");
    error_response(
        &ApiError::internal(
            "Internal error executing command, please contact your system administrator",
        ),
        "errorresponse",
        Format::Json,
    )
}

/// Read-only commands run in the request's task: cancelling them when the client hangs up
/// loses nothing. CloudStack names its read-only commands `list*`, plus the job query.
fn runs_in_place(cmd: &Command) -> bool {
    (cmd.name.starts_with("list") || cmd.name == "queryAsyncJobResult")
        && matches!(cmd.handler, Some(Handler::Sync(_)))
}

/// Answers one request and counts it (by registered command and status) when metrics are on.
async fn process(
    state: ApiState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(metrics) = crate::metrics::get() else {
        return answer(state, method, uri, headers, body, &mut None).await;
    };
    let mut command = None;
    let resp = answer(state, method, uri, headers, body, &mut command).await;
    // Only registered names become labels: a client cannot grow the label set.
    let status = resp.status().as_u16();
    match &command {
        Some(CommandLabel::Registered(cmd)) if status == 200 => {
            let counter = cmd
                .answered_ok
                .get_or_init(|| metrics.http_request_counter(&cmd.name, status));
            counter.inc();
        }
        Some(CommandLabel::Registered(cmd)) => metrics.http_request(&cmd.name, status),
        Some(CommandLabel::Builtin(name)) => metrics.http_request(name, status),
        None => metrics.http_request("(none)", status),
    };
    resp
}

/// The command a request named, once known to exist.
enum CommandLabel {
    Registered(Arc<Command>),
    Builtin(&'static str),
}

async fn answer(
    state: ApiState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    command_label: &mut Option<CommandLabel>,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    // Bodies were bounded when read (`handle`); an upload's body is the component.
    let upload = is_upload_request(&uri, &headers).then(|| body.clone());
    let raw = match RawParams::parse(uri.query(), is_form.then_some(&body[..])) {
        Ok(raw) => raw,
        Err(e) => return error_response(&e, "errorresponse", Format::Json),
    };
    let format = match raw.get_ci("response") {
        Some(v) if v.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Xml,
    };
    if method != Method::GET && method != Method::POST {
        let e = ApiError::new(
            code::METHOD_NOT_ALLOWED,
            None,
            "Only GET and POST are supported",
        );
        return error_response(&e, "errorresponse", format);
    }
    let Some(command) = raw.get("command").map(str::to_string) else {
        let e = ApiError::new(code::BAD_REQUEST, None, "no command specified");
        return error_response(&e, "errorresponse", format);
    };
    if state.lifecycle.is_draining() {
        return draining(format);
    }
    match command.as_str() {
        "login" => {
            *command_label = Some(CommandLabel::Builtin("login"));
            return login(&state, &method, &raw, format).await;
        }
        "logout" => {
            *command_label = Some(CommandLabel::Builtin("logout"));
            return logout(&state, &raw, &headers, format).await;
        }
        _ => {}
    }
    let Some(cmd) = state.registry.get(&command).cloned() else {
        let e = ApiError::new(
            code::UNSUPPORTED_ACTION,
            Some(error::cs_code::SERVER_API_EXCEPTION),
            format!("The given command {command} does not exist or it is not available for user"),
        );
        return error_response(&e, "errorresponse", format);
    };
    *command_label = Some(CommandLabel::Registered(cmd.clone()));
    let named = cmd.clone();
    // No parameter goes into the span: they may hold secrets (keys, passwords, settings).
    let span = tracing::info_span!("api_request", command = %cmd.name);
    let outcome = if runs_in_place(&cmd) {
        dispatch(&state, cmd, &raw, &headers, format, upload)
            .instrument(span)
            .await
    } else {
        // Counted so that a shutdown waits for it (up to its deadline); refused once draining.
        let task = tokio::spawn(
            async move {
                let Some(_in_flight) = state.lifecycle.enter() else {
                    return Ok(draining(format));
                };
                dispatch(&state, cmd, &raw, &headers, format, upload).await
            }
            .instrument(span),
        );
        match task.await {
            Ok(outcome) => outcome,
            Err(_) => return panicked(),
        }
    };
    match outcome {
        Ok(resp) => resp,
        Err(e) => error_response(&e, &named.response_name, format),
    }
}

async fn dispatch(
    state: &ApiState,
    cmd: Arc<Command>,
    raw: &RawParams,
    headers: &HeaderMap,
    format: Format,
    upload: Option<Bytes>,
) -> Result<Response, ApiError> {
    let caller = authenticate(state, raw, headers).await?;
    if !cmd.allows(caller.role) {
        return Err(ApiError::not_available(&cmd.name));
    }
    // Checked above like every request: signature, expiry, enabled user and account, role.
    let kept = match &cmd.handler {
        Some(Handler::Sync(_)) if cmd.answers_from_store && state.answers.is_enabled() => {
            let key = answers::key(&cmd.name, &caller, raw, format);
            if let Some(body) = state.answers.get(&key) {
                return Ok(rendered_response(body, format));
            }
            // Read before the store is: an answer read while a write lands is not kept.
            Some((key, state.answers.generation()))
        }
        _ => None,
    };
    let values = params::bind(&cmd, raw, state.store()).await?;
    let name = &cmd.response_name;
    let handler = cmd
        .handler
        .clone()
        .ok_or_else(|| ApiError::internal("command has no handler"))?;
    let ctx = Ctx {
        state: state.clone(),
        caller: caller.clone(),
        command: cmd.clone(),
        values,
        upload,
        job: None,
    };
    match handler {
        Handler::Sync(h) => {
            let result = h(ctx).await?;
            let body = answer_body(name, &result, &cmd.object_name, format);
            if let Some((key, generation)) = kept {
                state.answers.put(key, generation, &body);
            }
            Ok(rendered_response(body, format))
        }
        Handler::Async(h) => {
            let ticket = state.jobs().ticket(JobSpec {
                account_id: caller.account_id,
                user_id: caller.user_id,
                cmd: cmd.name.clone(),
                instance_type: None,
                instance_uuid: None,
            })?;
            let ctx = Ctx {
                job: Some(ticket.clone()),
                ..ctx
            };
            let start = h(ctx).await?;
            let object_name: Arc<str> = cmd.object_name.as_str().into();
            let outcome_of = start.outcome_of.map(|answer_of| {
                let object_name = object_name.clone();
                Arc::new(move |result: &dyn std::any::Any| {
                    answer_of(result).map(|answer| job_outcome(answer, &object_name))
                }) as OutcomeOf
            });
            let work = start.work;
            let work = Box::pin(async move { job_outcome(work.await, &object_name) });
            let job_uuid = match start.job_uuid {
                Some(uuid) => {
                    state.jobs().spawn(uuid.clone(), work, outcome_of);
                    uuid
                }
                None => {
                    let ticket =
                        ticket.acting_on(start.instance_type.clone(), start.instance_uuid.clone());
                    state.jobs().submit_ticket(ticket, work, outcome_of).await?
                }
            };
            let mut body = json!({ "jobid": job_uuid });
            if let (Some(id), Value::Object(m)) = (start.id, &mut body) {
                m.insert("id".into(), Value::String(id));
            }
            Ok(ok_response(name, body, format))
        }
    }
}

/// A job's stored outcome from its command's answer.
fn job_outcome(answer: Result<ApiResult, ApiError>, object_name: &str) -> JobOutcome {
    match answer {
        Ok(result) => Ok(result.job_result(object_name)),
        Err(e) => Err(JobFailure {
            code: i64::from(e.code),
            text: e.text,
        }),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// API key + signature (§1.2), or a login session (§1.4). Every failure is the same 401.
async fn authenticate(
    state: &ApiState,
    raw: &RawParams,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let api_key = raw.get_ci("apikey");
    let signature = raw.get_ci("signature");
    if api_key.is_some() || signature.is_some() {
        let (Some(api_key), Some(signature)) = (api_key, signature) else {
            return Err(ApiError::credentials());
        };
        if raw.get_ci("signatureversion") == Some("3") {
            let expires = raw
                .get_ci("expires")
                .and_then(signature::parse_expires)
                .ok_or_else(ApiError::credentials)?;
            if expires <= now() {
                return Err(ApiError::credentials());
            }
        }
        let found = state.credentials.lookup(api_key).map_err(ApiError::from)?;
        let Some(credential) = found else {
            return Err(ApiError::credentials());
        };
        let user = &credential.user;
        if !signature::verify(credential.secret(), raw.iter(), signature) || !user.is_enabled() {
            return Err(ApiError::credentials());
        }
        return Ok(user.caller());
    }
    let user_id = session_user(state, raw, headers).await?;
    let user = state
        .store()
        .read(move |c| identity::get_live_user(c, user_id))
        .await
        .map_err(|_: OpError| ApiError::credentials())?;
    if !user.is_enabled() {
        return Err(ApiError::credentials());
    }
    Ok(user.caller())
}

/// The user of the session a request names. The `sessionkey` parameter is required, as in
/// CloudStack: browsers attach cookies to cross-site requests, so a cookie alone proves nothing
/// about who built the request (CSRF). A `sessionkey` cookie, when sent, must match it.
async fn session_user(
    state: &ApiState,
    raw: &RawParams,
    headers: &HeaderMap,
) -> Result<i64, ApiError> {
    let key = raw
        .get_ci("sessionkey")
        .filter(|k| !k.is_empty())
        .ok_or_else(ApiError::credentials)?;
    if cookie(headers, "sessionkey").is_some_and(|c| c != key) {
        return Err(ApiError::credentials());
    }
    let found = state
        .sessions
        .touch(key, cookie(headers, "JSESSIONID"), now())
        .await;
    match found {
        Ok(Some(user_id)) => Ok(user_id),
        Ok(None) => Err(ApiError::credentials()),
        Err(e) => Err(ApiError::from(OpError::from(e))),
    }
}

async fn login(state: &ApiState, method: &Method, raw: &RawParams, format: Format) -> Response {
    let name = "loginresponse";
    if method != Method::POST {
        let e = ApiError::new(
            code::METHOD_NOT_ALLOWED,
            Some(error::cs_code::SERVER_API_EXCEPTION),
            "Please use HTTP POST to authenticate using this API",
        );
        return error_response(&e, name, format);
    }
    let username = raw.get_ci("username").unwrap_or("").to_string();
    let password = raw.get_ci("password").unwrap_or("").to_string();
    let domain = raw.get_ci("domain").map(str::to_string);
    let domain_uuid = raw.get_ci("domainid").map(str::to_string);
    let failure = || {
        ApiError::new(
            code::ACCOUNT_ERROR,
            Some(error::cs_code::SERVER_API_EXCEPTION),
            format!(
                "Failed to authenticate user {} in domain {}; please provide valid credentials",
                username,
                domain.as_deref().or(domain_uuid.as_deref()).unwrap_or("/")
            ),
        )
    };
    let (d, du) = (domain.clone(), domain_uuid.clone());
    let domain_id = state
        .store()
        .read(move |c| identity::domain_id_for_login(c, d.as_deref(), du.as_deref()))
        .await;
    let domain_id = match domain_id {
        // An unknown domain costs a password check too: no oracle for which domains exist.
        Ok(id) => id.unwrap_or(-1),
        Err::<_, OpError>(e) => return error_response(&ApiError::from(e), name, format),
    };
    let attempts_allowed = state
        .settings()
        .get_i64(crate::config::INCORRECT_LOGIN_ATTEMPTS_ALLOWED, None)
        .unwrap_or(5);
    let outcome = identity::login(
        state.store(),
        &username,
        &password,
        domain_id,
        attempts_allowed,
    )
    .await;
    let user = match outcome {
        Ok(identity::LoginOutcome::Success(user)) => user,
        Ok(identity::LoginOutcome::Failed) => return error_response(&failure(), name, format),
        Ok(identity::LoginOutcome::FailedAndDisabled(user)) => {
            tracing::warn!(user = %user.uuid, attempts = attempts_allowed,
                "user disabled after repeated failed logins");
            return error_response(&failure(), name, format);
        }
        Err(e) => return error_response(&ApiError::from(e), name, format),
    };
    let (session_key, jsessionid) = match state.sessions.create(user.id, now()).await {
        Ok(created) => created,
        Err(e) => return error_response(&ApiError::from(OpError::from(e)), name, format),
    };
    let body = Obj::new()
        .str("username", &user.username)
        .str("userid", &user.uuid)
        .str("domainid", &user.account.domain_uuid)
        .str("timeout", session::SESSION_IDLE_TIMEOUT_SECS.to_string())
        .str("account", &user.account.name)
        .opt_str("firstname", user.firstname.clone())
        .opt_str("lastname", user.lastname.clone())
        .str("type", user.account.role.account_type().to_string())
        .str("registered", "false")
        .str("sessionkey", &session_key)
        .into_value();
    let mut resp = ok_response(name, body, format);
    for c in [
        format!("JSESSIONID={jsessionid}; Path=/client; HttpOnly; SameSite=Lax"),
        format!("sessionkey={session_key}; Path=/client; HttpOnly; SameSite=Lax"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Ends the session the request authenticates with; without one, 401 like any other command.
async fn logout(
    state: &ApiState,
    raw: &RawParams,
    headers: &HeaderMap,
    format: Format,
) -> Response {
    let name = "logoutresponse";
    if let Err(e) = session_user(state, raw, headers).await {
        return error_response(&e, name, format);
    }
    if let Some(key) = raw.get_ci("sessionkey")
        && let Err(e) = state.sessions.remove(key).await
    {
        return error_response(&ApiError::from(OpError::from(e)), name, format);
    }
    ok_response(name, json!({"description": "success"}), format)
}
