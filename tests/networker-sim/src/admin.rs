//! `/admin/...`: JSON control of both simulators for tests and for `kvmhost-sim` (no
//! authentication: bind it to loopback). See `docs/networker.md` for the list.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Sim;
use crate::rest::json_reply;
use crate::script;
use crate::state::{Domain, Faults, HostFaults, Policy, RestFault, State, add_domain};

type Reply = Result<Value, (StatusCode, String)>;

pub fn handle(sim: &Sim, method: &Method, path: &str, body: &[u8]) -> Response {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut state = sim.state.lock().unwrap();
    match route(&mut state, method, &segments, body) {
        Ok(Value::Null) => StatusCode::NO_CONTENT.into_response(),
        Ok(v) => json_reply(StatusCode::OK, &v),
        Err((status, message)) => json_reply(status, &json!({ "error": message })),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

fn no_host(name: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("no host named '{name}'"))
}

#[derive(Deserialize)]
struct Clock {
    server_skew_secs: Option<i64>,
    advance_secs: Option<i64>,
    tz_offset_secs: Option<i32>,
}

#[derive(Deserialize)]
struct NewHost {
    name: String,
    #[serde(default = "default_cluster")]
    cluster: String,
    #[serde(default)]
    domains: Vec<Domain>,
    #[serde(default)]
    any_domain: bool,
}

fn default_cluster() -> String {
    "cluster1".into()
}

#[derive(Deserialize)]
struct Exec {
    command: String,
}

#[derive(Deserialize)]
struct SshEvent {
    event: String,
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

fn valid_name(name: &str) -> Result<(), (StatusCode, String)> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err((StatusCode::BAD_REQUEST, format!("invalid name '{name}'")));
    }
    Ok(())
}

fn route(state: &mut State, method: &Method, segments: &[&str], body: &[u8]) -> Reply {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let put = method == Method::PUT;
    let delete = method == Method::DELETE;
    match segments {
        ["state"] if get => Ok(snapshot(state)),
        ["counters"] if get => Ok(counters(state)),
        ["counters", "reset"] if post => {
            let live = state.counters.ssh_live;
            state.counters = Default::default();
            state.counters.ssh_live = live;
            for host in state.hosts.values_mut() {
                let live = host.counters.ssh_live;
                host.counters = Default::default();
                host.counters.ssh_live = live;
            }
            Ok(Value::Null)
        }
        ["faults"] if get => Ok(serde_json::to_value(&state.faults).unwrap_or_default()),
        ["faults"] if put => {
            state.faults = parse::<Faults>(body)?;
            Ok(Value::Null)
        }
        ["faults"] if delete => {
            state.faults = Faults::default();
            for host in state.hosts.values_mut() {
                host.faults = HostFaults::default();
            }
            Ok(Value::Null)
        }
        ["faults", "rest"] if post => {
            let fault = parse::<RestFault>(body)?;
            if fault.status.is_none() && fault.delay_ms.is_none() && !fault.empty {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "a REST fault needs status, delay_ms or empty".into(),
                ));
            }
            if let Some(status) = fault.status
                && !(400..=599).contains(&status)
            {
                return Err((StatusCode::BAD_REQUEST, "status must be 400-599".into()));
            }
            state.faults.rest.push(fault);
            Ok(Value::Null)
        }
        ["clock"] if post => {
            let clock = parse::<Clock>(body)?;
            if let Some(tz) = clock.tz_offset_secs {
                if tz.abs() > 18 * 3600 {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "tz_offset_secs out of range".into(),
                    ));
                }
                state.server.tz_offset_secs = tz;
            }
            if let Some(skew) = clock.server_skew_secs {
                state.server.clock_skew_secs = skew;
            }
            if let Some(advance) = clock.advance_secs {
                state.advance_secs += advance;
            }
            Ok(json!({
                "server_now": state.render_time(state.server_now()),
                "server_skew_secs": state.server.clock_skew_secs,
            }))
        }
        ["purge"] if post => Ok(json!({ "purged": state.purge_expired() })),
        ["policies"] if post => {
            let policy = parse::<Policy>(body)?;
            if policy.name.trim().is_empty() {
                return Err((StatusCode::BAD_REQUEST, "a policy needs a name".into()));
            }
            state.add_policy(policy);
            Ok(Value::Null)
        }
        ["policies", name] if delete => {
            let before = state.policies.len();
            state.policies.retain(|p| p.name != *name);
            if before == state.policies.len() {
                return Err((StatusCode::NOT_FOUND, format!("no policy '{name}'")));
            }
            Ok(Value::Null)
        }
        ["pools"] if post => {
            let Name { name } = parse(body)?;
            valid_name(&name.replace(' ', "_"))?;
            if !state.pools.contains(&name) {
                state.pools.push(name);
            }
            Ok(Value::Null)
        }
        ["clients"] if post => {
            let Name { name } = parse(body)?;
            valid_name(&name)?;
            state.add_client(&name);
            Ok(Value::Null)
        }
        ["hosts"] if post => {
            let host = parse::<NewHost>(body)?;
            valid_name(&host.name)?;
            valid_name(&host.cluster)?;
            state.add_host(&host.name, &host.cluster, host.domains, host.any_domain);
            Ok(Value::Null)
        }
        ["hosts", name] if get => {
            let host = state.hosts.get(*name).ok_or_else(|| no_host(name))?;
            Ok(host_json(host))
        }
        ["hosts", name, "domains"] if post => {
            let domain = parse::<Domain>(body)?;
            let host = state.hosts.get_mut(*name).ok_or_else(|| no_host(name))?;
            add_domain(host, domain);
            Ok(Value::Null)
        }
        ["hosts", name, "domains", domain] if delete => {
            let host = state.hosts.get_mut(*name).ok_or_else(|| no_host(name))?;
            let before = host.domains.len();
            host.domains.retain(|d| d.name != *domain);
            if before == host.domains.len() {
                return Err((StatusCode::NOT_FOUND, format!("no domain '{domain}'")));
            }
            Ok(Value::Null)
        }
        ["hosts", name, "faults"] if put => {
            let faults = parse::<HostFaults>(body)?;
            for (script, exit) in [
                ("backup", faults.backup_exit),
                ("restore", faults.restore_exit),
            ] {
                if let Some(exit) = exit
                    && !script::injectable_exit(script, exit)
                {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!("{script} script cannot end with exit code {exit}"),
                    ));
                }
            }
            let host = state.hosts.get_mut(*name).ok_or_else(|| no_host(name))?;
            host.faults = faults;
            Ok(Value::Null)
        }
        ["hosts", name, "exec"] if post => {
            let Exec { command } = parse(body)?;
            if !state.hosts.contains_key(*name) {
                return Err(no_host(name));
            }
            let outcome = script::exec(state, name, &command);
            Ok(serde_json::to_value(outcome).unwrap_or_default())
        }
        ["hosts", name, "ssh-event"] if post => {
            let SshEvent { event } = parse(body)?;
            if !state.hosts.contains_key(*name) {
                return Err(no_host(name));
            }
            state
                .ssh_event(name, &event)
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            Ok(Value::Null)
        }
        _ => Err((StatusCode::NOT_FOUND, "unknown admin endpoint".into())),
    }
}

impl State {
    /// Records an SSH event of a host: `open`, `close`, `auth_failure`.
    pub fn ssh_event(&mut self, host: &str, event: &str) -> Result<(), String> {
        let Some(h) = self.hosts.get_mut(host) else {
            return Err(format!("no host named '{host}'"));
        };
        match event {
            "open" => {
                h.counters.ssh_sessions += 1;
                h.counters.ssh_live += 1;
                self.counters.ssh_sessions += 1;
                self.counters.ssh_live += 1;
            }
            "close" => {
                h.counters.ssh_live = h.counters.ssh_live.saturating_sub(1);
                self.counters.ssh_live = self.counters.ssh_live.saturating_sub(1);
            }
            "auth_failure" => {
                h.counters.ssh_auth_failures += 1;
                self.counters.ssh_auth_failures += 1;
            }
            other => return Err(format!("unknown event '{other}'")),
        }
        Ok(())
    }
}

fn host_json(host: &crate::state::Host) -> Value {
    json!({
        "name": host.name,
        "cluster": host.cluster,
        "any_domain": host.any_domain,
        "domains": host.domains,
        "files": host.files,
        "faults": host.faults,
        "counters": host.counters,
    })
}

fn counters(state: &State) -> Value {
    let mut v = serde_json::to_value(&state.counters).unwrap_or_default();
    v["hosts"] = state
        .hosts
        .iter()
        .map(|(name, h)| {
            (
                name.clone(),
                serde_json::to_value(&h.counters).unwrap_or_default(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    v
}

fn snapshot(state: &State) -> Value {
    let now = state.server_now();
    let base = crate::rest::BASE;
    json!({
        "server": {
            "name": state.server.name,
            "aliases": state.server.aliases,
            "now": state.render_time(now),
            "tz_offset_secs": state.server.tz_offset_secs,
            "clock_skew_secs": state.server.clock_skew_secs,
        },
        "policies": state.policies,
        "pools": state.pools,
        "clients": state.clients.iter().map(|c| c.hostname.clone()).collect::<Vec<_>>(),
        "save_sets": state.save_sets.iter().map(|s| {
            let mut v = state.save_set_json(s, base);
            v["expired"] = json!(s.expired(now));
            v["pool"] = json!(s.pool);
            v["files"] = json!(s.files);
            v
        }).collect::<Vec<_>>(),
        "hosts": state.hosts.values().map(host_json).collect::<Vec<_>>(),
        "faults": state.faults,
        "counters": counters(state),
    })
}
