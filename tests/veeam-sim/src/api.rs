//! The Enterprise Manager REST front end (`/api/...`) and the admin endpoint (`/admin/...`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::Sim;
use crate::state::{Include, Job, LogonSession, State, TaskEffect, guid_of, new_guid};
use crate::xml::{self, document, esc};

/// Per-listener context: the scheme its `Href`s use.
#[derive(Clone)]
pub struct Listener {
    pub sim: Arc<Sim>,
    pub scheme: &'static str,
}

pub fn router(sim: Arc<Sim>, scheme: &'static str) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state(Listener { sim, scheme })
}

type Reply = (StatusCode, Vec<(&'static str, String)>, String);

fn xml_reply(status: StatusCode, body: String) -> Reply {
    (status, Vec::new(), body)
}

fn fail(status: StatusCode, message: &str) -> Reply {
    (status, Vec::new(), xml::error(status.as_u16(), message))
}

async fn handle(
    AxState(listener): AxState<Listener>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // EM tolerates the doubled slashes clients produce by joining `.../api/` and `/jobs`.
    let mut path = uri.path().to_string();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(rest) = path.strip_prefix("/admin") {
        return admin(&listener.sim, &method, rest, &body);
    }
    let received = Instant::now();
    let delay = listener.sim.state.lock().unwrap().faults.delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("{}://{}/api", listener.scheme, host);
    let (status, extra_headers, body) = match path.strip_prefix("/api") {
        Some(rest) => {
            let mut state = listener.sim.state.lock().unwrap();
            api(
                &mut state,
                &method,
                rest.trim_matches('/'),
                &query,
                &headers,
                &body,
                &base,
            )
        }
        None => fail(StatusCode::NOT_FOUND, "Not found"),
    };
    let mut response = (status, body).into_response();
    listener
        .sim
        .state
        .lock()
        .unwrap()
        .counters
        .http_answer_micros += received.elapsed().as_micros() as u64;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    for (name, value) in extra_headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.append(name, value);
        }
    }
    response
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    // Cookie wins over the header, as on EM.
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';').find_map(|pair| {
                pair.trim()
                    .strip_prefix("X-RestSvcSessionId=")
                    .map(str::to_string)
            })
        });
    cookie.or_else(|| {
        headers
            .get("X-RestSvcSessionId")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

fn endpoint_key(method: &Method, segments: &[&str], query: &[(String, String)]) -> String {
    let mut key = format!("{method} {}", segments.first().copied().unwrap_or(""));
    if segments.len() > 2 {
        key.push_str("/*/");
        key.push_str(segments[2]);
    } else if segments.len() == 2 {
        key.push_str("/*");
    }
    if let Some(action) = param(query, "action") {
        key.push_str("?action=");
        key.push_str(action);
    }
    key
}

fn api(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    base: &str,
) -> Reply {
    let now = Instant::now();
    state.advance(now);
    let segments: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    state.counters.requests += 1;
    *state
        .counters
        .by_endpoint
        .entry(endpoint_key(method, &segments, query))
        .or_default() += 1;

    if state.faults.server_error > 0 && path.contains(state.faults.server_error_path.as_str()) {
        state.faults.server_error -= 1;
        let status = state
            .faults
            .server_error_status
            .and_then(|s| StatusCode::from_u16(s).ok());
        return fail(
            status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Internal server error (injected)",
        );
    }

    match (method, segments.as_slice()) {
        (&Method::GET, []) => return xml_reply(StatusCode::OK, enterprise_manager(state, base)),
        (&Method::POST, ["sessionMngr"]) => return logon(state, query, headers, base, now),
        _ => {}
    }

    // Everything else needs a live session.
    let Some(token) = session_token(headers) else {
        return unauthorized("Session header X-RestSvcSessionId is missing");
    };
    if !state.sessions.contains_key(&token) {
        return unauthorized("Session is expired or invalid");
    }
    if state.faults.unauthorized > 0 {
        state.faults.unauthorized -= 1;
        state.sessions.remove(&token);
        return unauthorized("Session is expired or invalid");
    }
    if let Some(session) = state.sessions.get_mut(&token) {
        session.last_used = now;
    }

    match (method, segments.as_slice()) {
        (&Method::DELETE, ["logonSessions", id]) => {
            let owned = state
                .sessions
                .get(&token)
                .map(|s| s.session_id == *id)
                .unwrap_or(false);
            if !owned && !state.sessions.values().any(|s| s.session_id == *id) {
                return fail(StatusCode::NOT_FOUND, "Logon session not found");
            }
            state.sessions.retain(|_, s| s.session_id != *id);
            state.counters.logouts += 1;
            (StatusCode::NO_CONTENT, Vec::new(), String::new())
        }
        (&Method::GET, ["logonSessions", id]) => {
            match state.sessions.values().find(|s| s.session_id == *id) {
                Some(s) => xml_reply(
                    StatusCode::OK,
                    logon_session_body(base, &s.session_id, &s.user),
                ),
                None => fail(StatusCode::NOT_FOUND, "Logon session not found"),
            }
        }
        (&Method::GET, ["jobs"]) => list_jobs(state, query, base),
        (&Method::GET, ["jobs", id]) => match state.job(id) {
            Some(job) => xml_reply(
                StatusCode::OK,
                document_of(&xml::job_entity(state, base, job)),
            ),
            None => not_found("Job", id),
        },
        (&Method::POST, ["jobs", id]) => {
            job_action(state, id, param(query, "action"), body, base, now)
        }
        (&Method::GET, ["jobs", id, "includes"]) => match state.job(id) {
            Some(job) => {
                let inner: String = job
                    .includes
                    .iter()
                    .map(|i| xml::include_entity(base, job, i))
                    .collect();
                xml_reply(StatusCode::OK, document("ObjectsInJob", "", &inner))
            }
            None => not_found("Job", id),
        },
        (&Method::POST, ["jobs", id, "includes"]) => add_include(state, id, body, base, now),
        (&Method::DELETE, ["jobs", id, "includes", include]) => {
            remove_include(state, id, include, base, now)
        }
        (&Method::GET, ["tasks", id]) => match state.tasks.get(*id) {
            Some(task) => xml_reply(
                StatusCode::OK,
                document_of(&xml::task_entity(state, base, task, now)),
            ),
            None => not_found("Task", id),
        },
        (&Method::DELETE, ["tasks", id]) => match state.tasks.remove(*id) {
            Some(_) => (StatusCode::NO_CONTENT, Vec::new(), String::new()),
            None => not_found("Task", id),
        },
        (&Method::GET, ["hierarchyRoots"]) => {
            let inner = format!(
                "<Ref UID=\"urn:veeam:HierarchyRoot:{g}\" Name=\"{}\" Href=\"{base}/hierarchyRoots/{g}\" Type=\"HierarchyRootReference\"><Links>{}</Links></Ref>",
                esc(&state.vcenter),
                xml::backup_server_link(state, base),
                g = state.root_guid,
            );
            xml_reply(StatusCode::OK, document("EntityReferences", "", &inner))
        }
        (&Method::GET, ["lookup"]) => lookup(state, query),
        (&Method::GET, ["backupServers", id, "repositories"])
            if guid_of(id) == state.backup_server_guid =>
        {
            repositories(state, base)
        }
        (&Method::GET, ["repositories"]) => repositories(state, base),
        (&Method::GET, ["vmRestorePoints"]) => {
            let entity = param(query, "format").is_some_and(|f| f.eq_ignore_ascii_case("Entity"));
            let points: Vec<_> = state.restore_points.iter().collect();
            xml_reply(
                StatusCode::OK,
                restore_points_doc(state, base, &points, entity, None),
            )
        }
        (&Method::GET, ["vmRestorePoints", id]) => match state.restore_point(id) {
            Some(point) => xml_reply(
                StatusCode::OK,
                document_of(&xml::restore_point_entity(state, base, point)),
            ),
            None => not_found("VmRestorePoint", id),
        },
        (&Method::POST, ["vmRestorePoints", id]) if param(query, "action") == Some("restore") => {
            let Some(point) = state.restore_point(id).cloned() else {
                return not_found("VmRestorePoint", id);
            };
            if !body.is_empty()
                && roxmltree::Document::parse(&String::from_utf8_lossy(body)).is_err()
            {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Request body is not well-formed XML",
                );
            }
            let session = state.new_restore_session(&point, now, None);
            let task = state.new_task("StartVMRestore", now, TaskEffect::RestoreSession(session));
            task_reply(state, base, &task, now)
        }
        (&Method::GET, ["restoreSessions", id]) => match state.restore_sessions.get(guid_of(id)) {
            Some(session) => xml_reply(
                StatusCode::OK,
                document_of(&xml::restore_session_entity(state, base, session, now)),
            ),
            None => not_found("RestoreSession", id),
        },
        (&Method::GET, ["backupFiles"]) => {
            let files: Vec<_> = state.backup_files.iter().collect();
            xml_reply(StatusCode::OK, backup_files_doc(state, base, &files, None))
        }
        (&Method::GET, ["backups"]) => {
            let inner: String = state
                .jobs
                .iter()
                .filter(|j| state.backup_files.iter().any(|f| f.job_guid == j.guid))
                .map(|j| {
                    format!(
                        "<Ref UID=\"urn:veeam:Backup:{g}\" Name=\"{}\" Href=\"{base}/backups/{g}\" Type=\"BackupReference\"/>",
                        esc(&j.name),
                        g = j.guid
                    )
                })
                .collect();
            xml_reply(StatusCode::OK, document("EntityReferences", "", &inner))
        }
        (&Method::GET, ["query"]) => crate::query::run(state, query, base),
        (_, [first, ..])
            if [
                "jobs",
                "tasks",
                "vmRestorePoints",
                "restoreSessions",
                "backupFiles",
                "logonSessions",
                "lookup",
            ]
            .contains(first) =>
        {
            fail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        }
        _ => fail(StatusCode::NOT_FOUND, "Not found"),
    }
}

fn unauthorized(message: &str) -> Reply {
    (
        StatusCode::UNAUTHORIZED,
        vec![("WWW-Authenticate", "Basic realm=\"RestSvc\"".into())],
        xml::error(401, message),
    )
}

fn not_found(kind: &str, id: &str) -> Reply {
    // EM answers a malformed id (e.g. `null`) with 400, an unknown one with 404.
    let task_form = id
        .strip_prefix("task-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !task_form && uuid::Uuid::parse_str(guid_of(id)).is_err() {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!("Invalid {kind} id '{id}'"),
        );
    }
    fail(
        StatusCode::NOT_FOUND,
        &format!("{kind} '{id}' was not found"),
    )
}

/// Wraps an entity that already carries its own element name in a document with the namespace.
fn document_of(entity: &str) -> String {
    let Some(end) = entity.find([' ', '>']) else {
        return entity.to_string();
    };
    let root = &entity[1..end];
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<{root} xmlns=\"{}\"{}",
        xml::NS,
        &entity[1 + root.len()..]
    )
}

fn enterprise_manager(state: &State, base: &str) -> String {
    let versions: &[&str] = match state.profile {
        crate::state::Profile::V11 => &["v1_5", "v1_6"],
        _ => &["v1_5", "v1_6", "v1_7"],
    };
    let links: String = versions
        .iter()
        .map(|v| {
            xml::link(
                &format!("{base}/sessionMngr/?v={v}"),
                Some(v),
                Some("LogonSession"),
                "Create",
            )
        })
        .collect();
    let supported: String = versions
        .iter()
        .map(|v| format!("<SupportedVersion Name=\"{v}\"/>"))
        .collect();
    document(
        "EnterpriseManager",
        "",
        &format!("<Links>{links}</Links><SupportedVersions>{supported}</SupportedVersions>"),
    )
}

fn logon_session_body(base: &str, session_id: &str, user: &str) -> String {
    let href = format!("{base}/logonSessions/{session_id}");
    document(
        "LogonSession",
        &format!(" Href=\"{href}\" Type=\"LogonSession\""),
        &format!(
            "<Links>{}</Links><UserName>{}</UserName><SessionId>{session_id}</SessionId>",
            xml::link(&href, None, Some("LogonSession"), "Delete"),
            esc(user)
        ),
    )
}

fn logon(
    state: &mut State,
    query: &[(String, String)],
    headers: &HeaderMap,
    base: &str,
    now: Instant,
) -> Reply {
    let version = param(query, "v").unwrap_or("latest");
    let known: &[&str] = match state.profile {
        crate::state::Profile::V11 => &["latest", "v1_5", "v1_6"],
        _ => &["latest", "v1_5", "v1_6", "v1_7"],
    };
    if !known.contains(&version) {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!("Unsupported API version '{version}'"),
        );
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        return unauthorized("Authentication required");
    };
    if user != state.username || password != state.password {
        return unauthorized("Logon failed: the user name or password is incorrect");
    }
    if state.sessions.len() >= state.max_sessions {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "The maximum number of concurrent logon sessions has been reached",
        );
    }
    // The header token and the session id differ, as on EM: logout uses the id from the body.
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}{}", new_guid(), new_guid()));
    let session_id = new_guid();
    state.sessions.insert(
        token.clone(),
        LogonSession {
            user: user.to_string(),
            last_used: now,
            session_id: session_id.clone(),
        },
    );
    state.counters.logons += 1;
    (
        StatusCode::CREATED,
        vec![
            ("X-RestSvcSessionId", token.clone()),
            (
                "Set-Cookie",
                format!("X-RestSvcSessionId={token}; path=/; HttpOnly"),
            ),
        ],
        logon_session_body(base, &session_id, user),
    )
}

fn paging(query: &[(String, String)], total: usize) -> Result<Option<(usize, usize)>, Reply> {
    let Some(size) = param(query, "pageSize") else {
        return Ok(None);
    };
    let size: usize = size
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "Invalid pageSize"))?;
    let page: usize = match param(query, "page") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "Invalid page"))?,
        None => 1,
    };
    let _ = total;
    Ok(Some((size, page)))
}

pub fn paging_info(page: usize, size: usize, total: usize) -> String {
    let pages = total.div_ceil(size).max(1);
    format!("<PagingInfo PageNum=\"{page}\" PageSize=\"{size}\" PagesCount=\"{pages}\"/>")
}

fn list_jobs(state: &State, query: &[(String, String)], base: &str) -> Reply {
    let entity = param(query, "format").is_some_and(|f| f.eq_ignore_ascii_case("Entity"));
    let page = match paging(query, state.jobs.len()) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let jobs: Vec<&Job> = match page {
        Some((size, page)) => state
            .jobs
            .iter()
            .skip((page - 1) * size)
            .take(size)
            .collect(),
        None => state.jobs.iter().collect(),
    };
    let mut inner: String = jobs
        .iter()
        .map(|j| {
            if entity {
                xml::job_entity(state, base, j)
            } else {
                xml::job_ref(state, base, j)
            }
        })
        .collect();
    if let Some((size, page)) = page {
        inner.push_str(&paging_info(page, size, state.jobs.len()));
    }
    xml_reply(
        StatusCode::OK,
        document(if entity { "Jobs" } else { "EntityReferences" }, "", &inner),
    )
}

pub fn restore_points_doc(
    state: &State,
    base: &str,
    points: &[&crate::state::RestorePoint],
    entity: bool,
    paging: Option<String>,
) -> String {
    let mut inner: String = points
        .iter()
        .map(|p| {
            if entity {
                xml::restore_point_entity(state, base, p)
            } else {
                xml::restore_point_ref(base, p)
            }
        })
        .collect();
    inner.push_str(&paging.unwrap_or_default());
    document(
        if entity {
            "VmRestorePoints"
        } else {
            "EntityReferences"
        },
        "",
        &inner,
    )
}

pub fn backup_files_doc(
    state: &State,
    base: &str,
    files: &[&crate::state::BackupFile],
    paging: Option<String>,
) -> String {
    let mut inner: String = files
        .iter()
        .map(|f| xml::backup_file_entity(state, base, f))
        .collect();
    inner.push_str(&paging.unwrap_or_default());
    document("BackupFiles", "", &inner)
}

fn repositories(state: &State, base: &str) -> Reply {
    let inner: String = state
        .repositories
        .iter()
        .map(|r| {
            format!(
                "<Ref UID=\"urn:veeam:Repository:{g}\" Name=\"{}\" Href=\"{base}/repositories/{g}\" Type=\"RepositoryReference\"><Links>{}</Links></Ref>",
                esc(&r.name),
                xml::backup_server_link(state, base),
                g = r.guid
            )
        })
        .collect();
    xml_reply(StatusCode::OK, document("EntityReferences", "", &inner))
}

fn lookup(state: &State, query: &[(String, String)]) -> Reply {
    let (Some(host), Some(name)) = (param(query, "host"), param(query, "name")) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Parameters 'host' and 'name' are required",
        );
    };
    if !guid_of(host).eq_ignore_ascii_case(&state.root_guid) {
        return fail(
            StatusCode::NOT_FOUND,
            &format!("Hierarchy root '{host}' was not found"),
        );
    }
    let kind = param(query, "type").unwrap_or("Vm");
    let inner: String = if kind.eq_ignore_ascii_case("Vm") {
        state
            .vms
            .iter()
            .filter(|vm| vm.name == name)
            .map(|vm| {
                format!(
                    "<HierarchyItem Type=\"HierarchyItem\"><ObjectRef>{}</ObjectRef><ObjectType>Vm</ObjectType><ObjectName>{}</ObjectName></HierarchyItem>",
                    state.vm_ref(&vm.moref),
                    esc(&vm.name)
                )
            })
            .collect()
    } else {
        String::new()
    };
    xml_reply(StatusCode::OK, document("HierarchyItems", "", &inner))
}

fn task_reply(state: &State, base: &str, task: &str, now: Instant) -> Reply {
    let task = &state.tasks[task];
    xml_reply(
        StatusCode::ACCEPTED,
        document_of(&xml::task_entity(state, base, task, now)),
    )
}

fn parse_body(body: &[u8]) -> Result<roxmltree::Document<'_>, Reply> {
    let text = std::str::from_utf8(body)
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "Body is not UTF-8"))?;
    roxmltree::Document::parse(text)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, &format!("Malformed XML: {e}")))
}

fn child_text(doc: &roxmltree::Document<'_>, name: &str) -> Option<String> {
    doc.descendants()
        .find(|n| n.tag_name().name() == name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
}

fn job_action(
    state: &mut State,
    id: &str,
    action: Option<&str>,
    body: &[u8],
    base: &str,
    now: Instant,
) -> Reply {
    let Some(job) = state.job(id).cloned() else {
        return not_found("Job", id);
    };
    match action {
        Some("start") => {
            let task = state.new_task("StartJob", now, TaskEffect::None);
            if state.faults.task_outcome == crate::state::TaskOutcome::Success {
                state.start_job_run(&job.guid, now);
            }
            task_reply(state, base, &task, now)
        }
        Some("stop") => {
            state.stop_job_runs(&job.guid);
            let task = state.new_task("StopJob", now, TaskEffect::None);
            task_reply(state, base, &task, now)
        }
        Some("toggleScheduleEnabled") => {
            if let Some(j) = state.job_mut(id) {
                j.schedule_enabled = !j.schedule_enabled;
            }
            let task = state.new_task("UpdateJob", now, TaskEffect::None);
            task_reply(state, base, &task, now)
        }
        Some("clone") => {
            let doc = match parse_body(body) {
                Ok(doc) => doc,
                Err(reply) => return reply,
            };
            let (Some(name), Some(repo)) = (
                child_text(&doc, "JobName"),
                child_text(&doc, "RepositoryUid"),
            ) else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "JobCloneSpec needs JobName and RepositoryUid",
                );
            };
            if name.is_empty() {
                return fail(StatusCode::BAD_REQUEST, "JobName must not be empty");
            }
            if state
                .jobs
                .iter()
                .any(|j| j.name.eq_ignore_ascii_case(&name))
            {
                let task = state.failed_task(
                    "CloneJob",
                    now,
                    &format!("Job with name '{name}' already exists"),
                );
                return task_reply(state, base, &task, now);
            }
            if !state
                .repositories
                .iter()
                .any(|r| r.guid.eq_ignore_ascii_case(guid_of(&repo)))
            {
                let task = state.failed_task(
                    "CloneJob",
                    now,
                    &format!("Repository '{repo}' was not found"),
                );
                return task_reply(state, base, &task, now);
            }
            let task = state.new_task("CloneJob", now, TaskEffect::None);
            if state.faults.task_outcome == crate::state::TaskOutcome::Success {
                state.jobs.push(Job {
                    guid: new_guid(),
                    name,
                    description: format!("Cloned from {}", job.name),
                    retain_points: job.retain_points,
                    repository: guid_of(&repo).to_string(),
                    schedule_configured: job.schedule_configured,
                    schedule_enabled: job.schedule_enabled,
                    includes: job
                        .includes
                        .iter()
                        .map(|i| Include {
                            guid: new_guid(),
                            ..i.clone()
                        })
                        .collect(),
                    cloned: true,
                });
            }
            task_reply(state, base, &task, now)
        }
        _ => fail(StatusCode::BAD_REQUEST, "Unknown or missing action"),
    }
}

fn add_include(state: &mut State, id: &str, body: &[u8], base: &str, now: Instant) -> Reply {
    if state.job(id).is_none() {
        return not_found("Job", id);
    }
    let doc = match parse_body(body) {
        Ok(doc) => doc,
        Err(reply) => return reply,
    };
    let Some(obj_ref) = child_text(&doc, "HierarchyObjRef") else {
        return fail(
            StatusCode::BAD_REQUEST,
            "CreateObjectInJobSpec needs HierarchyObjRef",
        );
    };
    let vm = state
        .vms
        .iter()
        .find(|vm| state.vm_ref(&vm.moref) == obj_ref)
        .cloned();
    let Some(vm) = vm else {
        let task = state.failed_task(
            "AddJobObject",
            now,
            &format!("Object '{obj_ref}' was not found in the hierarchy"),
        );
        return task_reply(state, base, &task, now);
    };
    let name = child_text(&doc, "HierarchyObjName").unwrap_or(vm.name.clone());
    let task = state.new_task("AddJobObject", now, TaskEffect::None);
    if state.faults.task_outcome == crate::state::TaskOutcome::Success
        && let Some(job) = state.job_mut(id)
        && !job.includes.iter().any(|i| i.obj_ref == obj_ref)
    {
        job.includes.push(Include {
            guid: new_guid(),
            obj_ref,
            name,
        });
    }
    task_reply(state, base, &task, now)
}

fn remove_include(state: &mut State, id: &str, include: &str, base: &str, now: Instant) -> Reply {
    let Some(job) = state.job(id).cloned() else {
        return not_found("Job", id);
    };
    if !job
        .includes
        .iter()
        .any(|i| i.guid.eq_ignore_ascii_case(guid_of(include)))
    {
        return not_found("ObjectInJob", include);
    }
    if job.includes.len() == 1 {
        let task = state.failed_task(
            "RemoveJobObject",
            now,
            "Cannot remove the last object of the job",
        );
        return task_reply(state, base, &task, now);
    }
    let task = state.new_task("RemoveJobObject", now, TaskEffect::None);
    if let Some(job) = state.job_mut(id) {
        job.includes
            .retain(|i| !i.guid.eq_ignore_ascii_case(guid_of(include)));
    }
    task_reply(state, base, &task, now)
}

/// `/admin/...`: JSON control of the simulator for tests (no authentication; bind to loopback).
fn admin(sim: &Sim, method: &Method, path: &str, body: &[u8]) -> Response {
    let now = Instant::now();
    let mut state = sim.state.lock().unwrap();
    let json = |value: serde_json::Value| (StatusCode::OK, axum::Json(value)).into_response();
    let bad = |message: String| (StatusCode::BAD_REQUEST, message).into_response();
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/sessions") => {
            json(serde_json::json!({ "live": state.live_sessions(now) }))
        }
        (&Method::GET, "/counters") => {
            json(serde_json::to_value(&state.counters).unwrap_or_default())
        }
        (&Method::POST, "/counters/reset") => {
            state.counters = Default::default();
            json(serde_json::json!({}))
        }
        (&Method::GET, "/faults") => json(serde_json::to_value(&state.faults).unwrap_or_default()),
        (&Method::POST, "/faults") => match serde_json::from_slice(body) {
            Ok(faults) => {
                state.faults = faults;
                json(serde_json::json!({}))
            }
            Err(e) => bad(format!("invalid faults: {e}")),
        },
        (&Method::POST, "/timing") => match serde_json::from_slice(body) {
            Ok(timing) => {
                state.timing = timing;
                json(serde_json::json!({}))
            }
            Err(e) => bad(format!("invalid timing: {e}")),
        },
        (&Method::POST, "/profile") => match std::str::from_utf8(body)
            .ok()
            .and_then(crate::state::Profile::parse)
        {
            Some(profile) => {
                state.profile = profile;
                json(serde_json::json!({}))
            }
            None => bad("profile must be 11, 12 or 12.3".into()),
        },
        (&Method::POST, "/sessions/expire") => {
            state.sessions.clear();
            json(serde_json::json!({}))
        }
        (&Method::POST, "/vms") => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if v["name"].is_string() => {
                let moref = state.add_vm(v["name"].as_str().unwrap_or_default());
                json(serde_json::json!({ "moref": moref }))
            }
            _ => bad("expected {\"name\": \"...\"}".into()),
        },
        (&Method::POST, "/retention") => {
            let request = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
            let (Some(name), Some(points)) = (request["job"].as_str(), request["points"].as_u64())
            else {
                return bad("expected {\"job\": \"<job name>\", \"points\": N}".into());
            };
            if points == 0 {
                return bad("points must be at least 1".into());
            }
            match state.jobs.iter_mut().find(|j| j.name == name) {
                Some(job) => {
                    job.retain_points = points as usize;
                    json(serde_json::json!({}))
                }
                None => (StatusCode::NOT_FOUND, format!("no job named {name}")).into_response(),
            }
        }
        (&Method::GET, "/state") => json(serde_json::json!({
            "jobs": state.jobs.iter().map(|j| serde_json::json!({
                "uid": crate::state::urn("Job", &j.guid), "name": j.name,
                "retain_points": j.retain_points,
                "includes": j.includes.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "restore_points": state.restore_points.iter().map(|p| serde_json::json!({
                "id": p.guid, "vm": p.vm_name, "job": p.job_name, "full": p.full,
            })).collect::<Vec<_>>(),
            "restore_sessions": state.restore_sessions.len(),
            "vms": state.vms.iter().map(|vm| vm.name.clone()).collect::<Vec<_>>(),
            "vcenter": state.vcenter,
        })),
        _ => (StatusCode::NOT_FOUND, "unknown admin endpoint").into_response(),
    }
}
