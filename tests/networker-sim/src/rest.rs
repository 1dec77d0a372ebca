//! The NetWorker REST front end (`/nwrestapi/v3/...`, JSON, HTTP Basic on every request).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::Sim;
use crate::admin;
use crate::query::{self, Clause, Term};
use crate::state::{EmptyList, PolicyQuery, State};

pub const BASE: &str = "/nwrestapi/v3";
const VERSION: &str = "19.4.0.6.Build.6";
/// Longest injected delay; a test asking for more gets this.
const MAX_DELAY: Duration = Duration::from_secs(600);

/// What one listener serves.
#[derive(Clone)]
pub struct Listener {
    pub sim: Arc<Sim>,
    pub scheme: &'static str,
    pub rest: bool,
    pub admin: bool,
}

pub fn router(listener: Listener) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(listener)
}

pub(crate) fn json_reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// NetWorker's error document.
fn error(status: StatusCode, message: &str, method: &Method, path: &str) -> Response {
    let class = if status.is_client_error() {
        "Client Error"
    } else {
        "Server Error"
    };
    let body = json!({
        "message": message,
        "status": {
            "code": status.as_u16(),
            "codeClass": class,
            "reasonPhrase": status.canonical_reason().unwrap_or(""),
        },
        "userAgentRequest": format!("{method} {path}"),
        "version": VERSION,
    });
    let mut response = json_reply(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"NetWorker REST API\""),
        );
    }
    response
}

/// The endpoint a request is counted under, with ids replaced by placeholders.
fn endpoint(method: &Method, segments: &[&str]) -> String {
    let template: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(n, s)| if n >= 2 && n % 2 == 0 { "{id}" } else { s })
        .collect();
    format!("{method} /{}", template.join("/"))
}

async fn handle(
    AxState(listener): AxState<Listener>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut path = uri.path().to_string();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    if listener.admin
        && let Some(rest) = path.strip_prefix("/admin")
    {
        return admin::handle(&listener.sim, &method, rest, &body);
    }
    let rest = match path.strip_prefix(BASE) {
        Some(rest) if listener.rest && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => return error(StatusCode::NOT_FOUND, "Not found", &method, &path),
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let endpoint = endpoint(&method, &segments);
    let (delay, status, empty) = listener.sim.state.lock().unwrap().request(&endpoint);
    if let Some(delay) = delay {
        tokio::time::sleep(delay.min(MAX_DELAY)).await;
    }
    if let Some(status) = status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "Injected fault", &method, &path);
    }
    let mut state = listener.sim.state.lock().unwrap();
    if !authorized(&state, &headers) {
        state.counters.unauthorized += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized access: The user name or password is incorrect",
            &method,
            &path,
        );
    }
    let params: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let query = match param("q").map(query::parse).transpose() {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid query: {}", e.0),
                &method,
                &path,
            );
        }
    };
    let fields: Option<Vec<String>> =
        param("fl").map(|f| f.split(',').map(|s| s.trim().to_string()).collect());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("{}://{}{BASE}", listener.scheme, host);
    let ctx = Request {
        query: query.as_deref(),
        fields: fields.as_deref(),
        empty,
        base: &base,
    };
    let answer = route(&mut state, &method, &segments, &ctx);
    match answer {
        Ok(Answer::Json(v)) => json_reply(StatusCode::OK, &v),
        Ok(Answer::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Err((status, message)) => error(status, &message, &method, &path),
    }
}

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    decoded.split_once(':').is_some_and(|(user, password)| {
        user == state.server.username && password == state.server.password
    })
}

struct Request<'a> {
    query: Option<&'a [Clause]>,
    fields: Option<&'a [String]>,
    /// An injected fault asks for an empty list.
    empty: bool,
    base: &'a str,
}

enum Answer {
    Json(Value),
    NoContent,
}

type Routed = Result<Answer, (StatusCode, String)>;

fn route(state: &mut State, method: &Method, segments: &[&str], req: &Request) -> Routed {
    let get = method == Method::GET;
    match segments {
        [] if get => Ok(Answer::Json(json!({
            "links": [{"href": format!("{}/global", req.base), "rel": "global"}],
            "version": VERSION,
        }))),
        ["global"] if get => {
            let links: Vec<Value> = ["backups", "clients", "pools", "protectionpolicies"]
                .iter()
                .map(|r| json!({"href": format!("{}/global/{r}", req.base), "rel": r}))
                .collect();
            Ok(Answer::Json(json!({ "links": links })))
        }
        ["global", "protectionpolicies"] if get => {
            let items: Vec<Value> = match state.faults.policy_query {
                PolicyQuery::Empty => Vec::new(),
                mode => {
                    let negated = mode == PolicyQuery::LeadingDashNegates
                        && req.query.is_some_and(|q| {
                            q.iter().any(|c| {
                                c.bare && matches!(&c.term, Term::Exact(v) if v.starts_with('-'))
                            })
                        });
                    let query = if mode == PolicyQuery::IgnoreQuery {
                        None
                    } else {
                        req.query
                    };
                    state
                        .policies
                        .iter()
                        .map(|p| state.policy_json(p, req.base))
                        .filter(|v| !negated && selected(query, v, state))
                        .collect()
                }
            };
            Ok(Answer::Json(list("protectionPolicies", items, req, state)))
        }
        ["global", "protectionpolicies", name] if get => state
            .policies
            .iter()
            .find(|p| p.name == *name)
            .map(|p| Answer::Json(project(state.policy_json(p, req.base), req.fields)))
            .ok_or_else(|| not_found("protection policy", name)),
        ["global", "protectionpolicies", name, "workflows"] if get => {
            let policy = state
                .policies
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| not_found("protection policy", name))?;
            let workflows = state.policy_json(policy, req.base)["workflows"].clone();
            let items = workflows.as_array().cloned().unwrap_or_default();
            Ok(Answer::Json(list("workflows", items, req, state)))
        }
        ["global", "backups"] if get => {
            let items = backups(state, req, |_| true);
            Ok(Answer::Json(list("backups", items, req, state)))
        }
        ["global", "backups", id] if get => state
            .visible_save_sets()
            .find(|s| s.id == *id)
            .map(|s| Answer::Json(project(state.save_set_json(s, req.base), req.fields)))
            .ok_or_else(|| not_found("backup", id)),
        ["global", "backups", id] if method == Method::DELETE => {
            let now = state.server_now();
            let hide_expired = state.faults.purge_on_expiry;
            let before = state.save_sets.len();
            state
                .save_sets
                .retain(|s| s.id != *id || (hide_expired && s.expired(now)));
            if state.save_sets.len() == before {
                return Err(not_found("backup", id));
            }
            Ok(Answer::NoContent)
        }
        ["global", "clients"] if get => {
            let items = state
                .clients
                .iter()
                .map(|c| state.client_json(c, req.base))
                .filter(|v| selected(req.query, v, state))
                .collect();
            Ok(Answer::Json(list("clients", items, req, state)))
        }
        ["global", "clients", id] if get => state
            .clients
            .iter()
            .find(|c| c.resource_id == *id)
            .map(|c| Answer::Json(project(state.client_json(c, req.base), req.fields)))
            .ok_or_else(|| not_found("client", id)),
        ["global", "clients", id, "backups"] if get => {
            let hostname = state
                .clients
                .iter()
                .find(|c| c.resource_id == *id)
                .map(|c| c.hostname.clone())
                .ok_or_else(|| not_found("client", id))?;
            let items = backups(state, req, |s| s.client.eq_ignore_ascii_case(&hostname));
            Ok(Answer::Json(list("backups", items, req, state)))
        }
        ["global", "pools"] if get => {
            let items = state
                .pools
                .iter()
                .map(|p| json!({"name": p, "poolType": "Backup", "enabled": true}))
                .filter(|v| selected(req.query, v, state))
                .collect();
            Ok(Answer::Json(list("pools", items, req, state)))
        }
        []
        | ["global"]
        | [
            "global",
            "protectionpolicies" | "backups" | "clients" | "pools",
        ]
        | ["global", "protectionpolicies" | "clients", _]
        | ["global", "backups", _] => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} is not allowed on this resource"),
        )),
        _ => Err((StatusCode::NOT_FOUND, "Not found".into())),
    }
}

fn not_found(kind: &str, id: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("The requested {kind} '{id}' was not found"),
    )
}

fn selected(query: Option<&[Clause]>, v: &Value, state: &State) -> bool {
    query.is_none_or(|q| query::matches(q, v, &state.tz()))
}

fn backups(
    state: &State,
    req: &Request,
    keep: impl Fn(&crate::state::SaveSet) -> bool,
) -> Vec<Value> {
    state
        .visible_save_sets()
        .filter(|s| keep(s))
        .filter(|s| req.query.is_none_or(|q| query::may_match_save_set(q, s)))
        .map(|s| state.save_set_json(s, req.base))
        .filter(|v| selected(req.query, v, state))
        .collect()
}

fn list(key: &str, items: Vec<Value>, req: &Request, state: &State) -> Value {
    let items: Vec<Value> = if req.empty {
        Vec::new()
    } else {
        items.into_iter().map(|v| project(v, req.fields)).collect()
    };
    if items.is_empty() && state.faults.empty_list == EmptyList::CountOnly {
        return json!({"count": 0});
    }
    json!({ key: items, "count": items.len() })
}

/// `fl=a,b`: keep only the named top-level fields.
fn project(v: Value, fields: Option<&[String]>) -> Value {
    match (fields, v) {
        (Some(fields), Value::Object(map)) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect(),
        ),
        (_, v) => v,
    }
}

impl State {
    /// Counts a request and applies the first matching fault: (delay, status, empty list).
    pub(crate) fn request(&mut self, endpoint: &str) -> (Option<Duration>, Option<u16>, bool) {
        *self
            .counters
            .requests
            .entry(endpoint.to_string())
            .or_default() += 1;
        let Some(n) = self
            .faults
            .rest
            .iter()
            .position(|f| f.endpoint == "any" || f.endpoint == endpoint)
        else {
            return (None, None, false);
        };
        let fault = self.faults.rest[n].clone();
        if let Some(times) = fault.times {
            if times <= 1 {
                self.faults.rest.remove(n);
            } else {
                self.faults.rest[n].times = Some(times - 1);
            }
        }
        (
            fault.delay_ms.map(Duration::from_millis),
            fault.status,
            fault.empty,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_counted_with_ids_replaced() {
        assert_eq!(endpoint(&Method::GET, &[]), "GET /");
        assert_eq!(
            endpoint(&Method::GET, &["global", "backups"]),
            "GET /global/backups"
        );
        assert_eq!(
            endpoint(&Method::DELETE, &["global", "backups", "abc"]),
            "DELETE /global/backups/{id}"
        );
        assert_eq!(
            endpoint(&Method::GET, &["global", "clients", "1.2", "backups"]),
            "GET /global/clients/{id}/backups"
        );
    }
}
