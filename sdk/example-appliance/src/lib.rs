//! `example-appliance`: a small backup appliance with an HTTP/JSON API, kept in memory.
//!
//! It stands in for a vendor's product while a provider is written from `sdk/template/`: the
//! template provider talks to it, and `bnr plugin check` runs the provider contract against it.
//! A real product replaces it; nothing in bnr depends on it.
//!
//! Every request needs HTTP Basic authentication with the configured user and key (a wrong
//! pair answers 401). Under `/api/v1`:
//!
//! | request | answer |
//! |---|---|
//! | `GET /policies` | `200 [{"id", "name", "description", "retention_days"}]` |
//! | `PUT /protected/{vm}` `{"policy"}` | `200 {"vm", "policy"}`; `404` for an unknown policy |
//! | `DELETE /protected/{vm}` | `204`; `404` when the VM is not protected |
//! | `POST /backups` `{"vm", "disk_bytes"}` | `202 {"job"}`; `409` when the VM is not protected |
//! | `GET /backups?vm={vm}` | `200 [{"id", "vm", "policy", "created", "size", "protected"}]` |
//! | `POST /backups/{id}/restore` | `202 {"job"}`; `404` for an unknown backup |
//! | `DELETE /backups/{id}` | `204`; `404` for an unknown backup |
//! | `GET /jobs/{job}` | `200 {"id", "kind", "state", "percent", "backup"?, "error"?}` |
//! | `DELETE /jobs/{job}` | `204`: a running job is cancelled (state `failed`) |
//!
//! A job (`kind` `backup` or `restore`) is `running` for the configured duration with its
//! `percent` growing, then `done`; a finished backup job carries the new backup. `created` is
//! RFC 3339 in UTC. Errors are `{"error": "..."}`.
//!
//! [`Running::jobs`] lists the jobs the appliance accepted, with the times their status was
//! asked: a count of `start-backup` calls kept outside bnr (the replica tests use it).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Backups and jobs kept at most; beyond, new ones are refused (507) so memory stays bounded.
pub const MAX_RECORDS: usize = 10_000;
/// Longest VM or object id accepted.
const MAX_ID_BYTES: usize = 128;
/// Status requests whose time is kept per job (the first ones; later ones are only counted).
pub const POLL_TIMES_KEPT: usize = 32;

/// How the appliance runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The API user.
    pub user: String,
    /// The API key (the user's password in Basic authentication).
    pub key: String,
    /// How long a backup or restore job runs.
    pub job_duration: Duration,
}

impl Config {
    /// `127.0.0.1`, any free port, user `bnr`, jobs of one second.
    pub fn new(key: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            user: "bnr".into(),
            key: key.into(),
            job_duration: Duration::from_secs(1),
        }
    }
}

/// A running appliance; it stops when dropped.
pub struct Running {
    /// The API base URL, `http://ADDR/api/v1`: the provider's URL setting.
    pub url: String,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    appliance: Shared,
}

/// A job the appliance accepted, as [`Running::jobs`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    /// `backup` or `restore`.
    pub kind: &'static str,
    pub vm: String,
    /// The backup it made (a finished backup job) or restores (a restore job).
    pub backup: Option<String>,
    pub accepted: SystemTime,
    /// Status requests (`GET /jobs/{id}`) so far.
    pub polls: u64,
    /// When the first [`POLL_TIMES_KEPT`] of them came.
    pub poll_times: Vec<SystemTime>,
}

impl Running {
    /// Every job accepted so far, oldest first.
    pub fn jobs(&self) -> Vec<JobRecord> {
        let mut inventory = self.appliance.inventory();
        let ids: Vec<String> = inventory.jobs.keys().cloned().collect();
        for id in &ids {
            self.appliance.settle(&mut inventory, id);
        }
        let mut jobs: Vec<JobRecord> = inventory
            .jobs
            .iter()
            .map(|(id, job)| JobRecord {
                id: id.clone(),
                kind: match job.kind {
                    JobKind::Backup => "backup",
                    JobKind::Restore => "restore",
                },
                vm: job.vm.clone(),
                backup: job.backup.clone(),
                accepted: job.accepted,
                polls: job.polls,
                poll_times: job.poll_times.clone(),
            })
            .collect();
        jobs.sort_by(|a, b| a.accepted.cmp(&b.accepted).then(a.id.cmp(&b.id)));
        jobs
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Binds `config.listen` and serves until the returned handle is dropped.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    anyhow::ensure!(
        !config.user.is_empty() && !config.key.is_empty(),
        "the API user and key must not be empty"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let appliance = appliance(config);
    let app = router(appliance.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Running {
        url: format!("http://{addr}/api/v1"),
        addr,
        server,
        appliance,
    })
}

#[derive(Clone, Copy, Serialize)]
struct PolicyInfo {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    retention_days: u32,
}

/// The appliance's fixed policies.
const POLICIES: &[PolicyInfo] = &[
    PolicyInfo {
        id: "gold",
        name: "Gold",
        description: "Daily full backup, kept 30 days",
        retention_days: 30,
    },
    PolicyInfo {
        id: "silver",
        name: "Silver",
        description: "Weekly full backup, kept 90 days",
        retention_days: 90,
    },
];

#[derive(Clone, Serialize)]
struct Backup {
    id: String,
    vm: String,
    policy: String,
    created: String,
    size: u64,
    protected: u64,
}

#[derive(Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
enum JobKind {
    Backup,
    Restore,
}

struct Job {
    kind: JobKind,
    started: Instant,
    accepted: SystemTime,
    polls: u64,
    poll_times: Vec<SystemTime>,
    /// For a backup job: what it backs up, and what it made once done.
    vm: String,
    policy: String,
    disk_bytes: u64,
    backup: Option<String>,
    cancelled: bool,
}

struct Appliance {
    config: Config,
    state: Mutex<Inventory>,
}

#[derive(Default)]
struct Inventory {
    /// VM → policy.
    protected: HashMap<String, String>,
    backups: BTreeMap<String, Backup>,
    jobs: HashMap<String, Job>,
    next_id: u64,
}

impl Inventory {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:06}", self.next_id)
    }
}

type Shared = Arc<Appliance>;

impl Appliance {
    fn inventory(&self) -> MutexGuard<'_, Inventory> {
        // A panic while holding the lock leaves consistent maps (each change is one insert or
        // remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `job` has run its time (a backup job once [`settle`](Self::settle) recorded its
    /// backup, so its state and its backup never disagree).
    fn finished(&self, job: &Job) -> bool {
        match job.kind {
            JobKind::Backup => job.backup.is_some(),
            JobKind::Restore => job.started.elapsed() >= self.config.job_duration,
        }
    }

    /// Completes `job` if its time is up: a finished backup job records its backup.
    fn settle(&self, inventory: &mut Inventory, job_id: &str) {
        let due = match inventory.jobs.get(job_id) {
            Some(job) => {
                !job.cancelled
                    && job.backup.is_none()
                    && job.kind == JobKind::Backup
                    && job.started.elapsed() >= self.config.job_duration
            }
            None => false,
        };
        if !due {
            return;
        }
        let id = inventory.id("bk");
        let job = inventory.jobs.get_mut(job_id).expect("checked above");
        job.backup = Some(id.clone());
        let backup = Backup {
            id: id.clone(),
            vm: job.vm.clone(),
            policy: job.policy.clone(),
            created: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            size: job.disk_bytes,
            protected: job.disk_bytes,
        };
        inventory.backups.insert(id, backup);
    }
}

fn appliance(config: Config) -> Shared {
    Arc::new(Appliance {
        config,
        state: Mutex::new(Inventory::default()),
    })
}

fn router(shared: Shared) -> Router {
    let api = Router::new()
        .route("/policies", get(list_policies))
        .route("/protected/{vm}", put(protect).delete(unprotect))
        .route("/backups", post(start_backup).get(list_backups))
        .route("/backups/{id}", delete(delete_backup))
        .route("/backups/{id}/restore", post(start_restore))
        .route("/jobs/{id}", get(job_status).delete(cancel_job))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared);
    Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Basic authentication with the configured user and key; anything else is 401.
async fn authenticate(
    State(appliance): State<Shared>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let config = &appliance.config;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", config.user, config.key))
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_bytes(given, expected.as_bytes()) {
        let mut response = error(StatusCode::UNAUTHORIZED, "bad credentials");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"example-appliance\""),
        );
        return response;
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An id from a path or body: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn bad_id(what: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("{what} must be 1 to {MAX_ID_BYTES} of A-Z a-z 0-9 . _ -"),
    )
}

async fn list_policies() -> Response {
    axum::Json(POLICIES).into_response()
}

#[derive(Deserialize)]
struct ProtectBody {
    policy: String,
}

async fn protect(
    State(appliance): State<Shared>,
    Path(vm): Path<String>,
    axum::Json(body): axum::Json<ProtectBody>,
) -> Response {
    if !valid_id(&vm) {
        return bad_id("vm");
    }
    if !POLICIES.iter().any(|p| p.id == body.policy) {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no policy `{}`",
                body.policy.chars().take(64).collect::<String>()
            ),
        );
    }
    let mut inventory = appliance.inventory();
    if inventory.protected.len() >= MAX_RECORDS && !inventory.protected.contains_key(&vm) {
        return error(StatusCode::INSUFFICIENT_STORAGE, "too many protected VMs");
    }
    inventory.protected.insert(vm.clone(), body.policy.clone());
    axum::Json(json!({ "vm": vm, "policy": body.policy })).into_response()
}

async fn unprotect(State(appliance): State<Shared>, Path(vm): Path<String>) -> Response {
    match appliance.inventory().protected.remove(&vm) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "the VM is not protected"),
    }
}

#[derive(Deserialize)]
struct BackupBody {
    vm: String,
    #[serde(default)]
    disk_bytes: u64,
}

async fn start_backup(
    State(appliance): State<Shared>,
    axum::Json(body): axum::Json<BackupBody>,
) -> Response {
    if !valid_id(&body.vm) {
        return bad_id("vm");
    }
    let mut inventory = appliance.inventory();
    let Some(policy) = inventory.protected.get(&body.vm).cloned() else {
        return error(
            StatusCode::CONFLICT,
            "the VM is not protected: assign it to a policy first",
        );
    };
    if inventory.jobs.len() >= MAX_RECORDS || inventory.backups.len() >= MAX_RECORDS {
        return error(StatusCode::INSUFFICIENT_STORAGE, "the appliance is full");
    }
    let id = inventory.id("job");
    inventory.jobs.insert(
        id.clone(),
        Job {
            kind: JobKind::Backup,
            started: Instant::now(),
            accepted: SystemTime::now(),
            polls: 0,
            poll_times: Vec::new(),
            vm: body.vm,
            policy,
            disk_bytes: body.disk_bytes,
            backup: None,
            cancelled: false,
        },
    );
    (StatusCode::ACCEPTED, axum::Json(json!({ "job": id }))).into_response()
}

#[derive(Deserialize)]
struct BackupQuery {
    vm: String,
}

async fn list_backups(
    State(appliance): State<Shared>,
    Query(query): Query<BackupQuery>,
) -> Response {
    let mut inventory = appliance.inventory();
    let running: Vec<String> = inventory.jobs.keys().cloned().collect();
    for job in running {
        appliance.settle(&mut inventory, &job);
    }
    let backups: Vec<&Backup> = inventory
        .backups
        .values()
        .filter(|b| b.vm == query.vm)
        .collect();
    axum::Json(backups).into_response()
}

async fn delete_backup(State(appliance): State<Shared>, Path(id): Path<String>) -> Response {
    match appliance.inventory().backups.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "no such backup"),
    }
}

async fn start_restore(State(appliance): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inventory = appliance.inventory();
    let Some(backup) = inventory.backups.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such backup");
    };
    if inventory.jobs.len() >= MAX_RECORDS {
        return error(StatusCode::INSUFFICIENT_STORAGE, "the appliance is full");
    }
    let job = inventory.id("job");
    inventory.jobs.insert(
        job.clone(),
        Job {
            kind: JobKind::Restore,
            started: Instant::now(),
            accepted: SystemTime::now(),
            polls: 0,
            poll_times: Vec::new(),
            vm: backup.vm,
            policy: backup.policy,
            disk_bytes: backup.size,
            backup: Some(backup.id),
            cancelled: false,
        },
    );
    (StatusCode::ACCEPTED, axum::Json(json!({ "job": job }))).into_response()
}

async fn job_status(State(appliance): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inventory = appliance.inventory();
    appliance.settle(&mut inventory, &id);
    let Some(job) = inventory.jobs.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "no such job");
    };
    job.polls += 1;
    if job.poll_times.len() < POLL_TIMES_KEPT {
        job.poll_times.push(SystemTime::now());
    }
    let job = &inventory.jobs[&id];
    let duration = appliance.config.job_duration.as_millis().max(1);
    let elapsed = job.started.elapsed().as_millis();
    let (state, percent) = if job.cancelled {
        ("failed", 0)
    } else if appliance.finished(job) {
        ("done", 100)
    } else {
        ("running", (elapsed * 100 / duration).min(99))
    };
    let mut answer = json!({
        "id": id,
        "kind": job.kind,
        "state": state,
        "percent": percent,
    });
    if job.cancelled {
        answer["error"] = json!("cancelled");
    }
    if state == "done" {
        if let Some(backup) = job.backup.as_ref().and_then(|b| inventory.backups.get(b)) {
            answer["backup"] = json!(backup);
        } else if job.kind == JobKind::Backup {
            // The backup was deleted after its job finished.
            answer["error"] = json!("the backup no longer exists");
        }
    }
    axum::Json(answer).into_response()
}

async fn cancel_job(State(appliance): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inventory = appliance.inventory();
    appliance.settle(&mut inventory, &id);
    let running = match inventory.jobs.get(&id) {
        Some(job) => !appliance.finished(job),
        None => return error(StatusCode::NOT_FOUND, "no such job"),
    };
    if running && let Some(job) = inventory.jobs.get_mut(&id) {
        job.cancelled = true;
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    const AUTH: &str = "Basic Ym5yOms="; // bnr:k

    async fn call(app: &Router, method: &str, uri: &str, auth: &str, body: &str) -> (u16, String) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn app() -> Router {
        let mut config = Config::new("k");
        config.job_duration = Duration::ZERO;
        router(appliance(config))
    }

    #[tokio::test]
    async fn wrong_credentials_are_401() {
        let app = app();
        let (status, _) = call(&app, "GET", "/api/v1/policies", "Basic Ym5yOng=", "").await;
        assert_eq!(status, 401);
        let (status, _) = call(&app, "GET", "/api/v1/policies", "", "").await;
        assert_eq!(status, 401);
        let (status, body) = call(&app, "GET", "/api/v1/policies", AUTH, "").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"gold\""), "{body}");
    }

    #[tokio::test]
    async fn a_backup_needs_a_protected_vm_and_a_valid_id() {
        let app = app();
        let backup = r#"{"vm":"vm-1","disk_bytes":5}"#;
        let (status, _) = call(&app, "POST", "/api/v1/backups", AUTH, backup).await;
        assert_eq!(status, 409);
        let (status, _) = call(
            &app,
            "PUT",
            "/api/v1/protected/vm-1",
            AUTH,
            r#"{"policy":"none"}"#,
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &app,
            "PUT",
            "/api/v1/protected/a%2Fb",
            AUTH,
            r#"{"policy":"gold"}"#,
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = call(
            &app,
            "PUT",
            "/api/v1/protected/vm-1",
            AUTH,
            r#"{"policy":"gold"}"#,
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = call(&app, "POST", "/api/v1/backups", AUTH, backup).await;
        assert_eq!(status, 202, "{body}");
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        let job = job["job"].as_str().unwrap();
        let (_, body) = call(&app, "GET", &format!("/api/v1/jobs/{job}"), AUTH, "").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["state"], "done", "{body}");
        let id = status["backup"]["id"].as_str().unwrap().to_owned();
        let (_, body) = call(&app, "GET", "/api/v1/backups?vm=vm-1", AUTH, "").await;
        assert!(body.contains(&id), "{body}");
        let (status, _) = call(&app, "DELETE", &format!("/api/v1/backups/{id}"), AUTH, "").await;
        assert_eq!(status, 204);
        let (status, _) = call(&app, "DELETE", &format!("/api/v1/backups/{id}"), AUTH, "").await;
        assert_eq!(status, 404);
    }
}
