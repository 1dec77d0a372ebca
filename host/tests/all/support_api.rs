//! Test client for the CloudStack API: an in-process server (router driven with `oneshot`),
//! requests signed the way `cs` signs them, and helpers to create users and wait for jobs.
//!
//! Reuse it for command tests: `let s = TestServer::start().await; let r = s.admin().call("listZones", &[]).await;`

#![allow(dead_code)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::Value;
use sha1::Sha1;
use tempfile::TempDir;
use tower::ServiceExt;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bnr::api::serve::{default_providers, prepare_on};
use bnr::api::{ApiState, router};
use bnr::inventory::bootstrap::BootstrapOptions;
use bnr::store::Database;
use bnr::store::postgres::testing::TestDatabase;

pub const ADMIN_API_KEY: &str = "test-admin-api-key";
pub const ADMIN_SECRET_KEY: &str = "test-admin-secret-key";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// API credentials of one user.
#[derive(Debug, Clone)]
pub struct Creds {
    pub api_key: String,
    pub secret_key: String,
}

/// A bootstrapped server on a fresh data directory.
pub struct TestServer {
    pub state: ApiState,
    pub router: Router,
    pub dir: TempDir,
    pub zone_id: String,
    /// The PostgreSQL database of a `BNR_TEST_DATABASE=postgres` run (see [`test_database`]).
    pub database: Option<Arc<TestDatabase>>,
}

/// The variable that runs the API tests on PostgreSQL (`BNR_TEST_DATABASE=postgres`).
pub const TEST_DATABASE_VARIABLE: &str = "BNR_TEST_DATABASE";

/// Whether this run keeps its test servers' data in PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var(TEST_DATABASE_VARIABLE).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{TEST_DATABASE_VARIABLE}={other}: use postgres or sqlite"),
    }
}

/// On PostgreSQL runs, the database of the data directory `dir`: a fresh one, or the one of an
/// earlier server on `dir` (a restart keeps its data). Kept while the directory exists.
pub fn test_database(dir: &std::path::Path) -> Option<Arc<TestDatabase>> {
    let mut databases = databases().lock().unwrap();
    // Directories of finished tests are gone: their databases are dropped.
    databases.retain(|dir, _| dir.exists());
    if let Some(db) = databases.get(dir) {
        return Some(db.clone());
    }
    if !on_postgres() {
        return None;
    }
    let db = Arc::new(TestDatabase::create());
    databases.insert(dir.to_path_buf(), db.clone());
    Some(db)
}

/// Makes servers started on `dir` use `database`, whatever the run's mode.
pub fn use_database(dir: &std::path::Path, database: &Arc<TestDatabase>) {
    databases()
        .lock()
        .unwrap()
        .insert(dir.to_path_buf(), database.clone());
}

fn databases() -> &'static Mutex<HashMap<PathBuf, Arc<TestDatabase>>> {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, Arc<TestDatabase>>>> = OnceLock::new();
    DATABASES.get_or_init(Default::default)
}

/// The store option of a test server on `database`.
pub fn database_option(database: &Option<Arc<TestDatabase>>) -> Option<Database> {
    database
        .as_ref()
        .map(|db| Database::Postgres(db.url().to_string()))
}

/// An HTTP answer with its JSON body parsed (Null when not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub x_description: Option<String>,
    pub set_cookies: Vec<String>,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// The inner object of `{"<cmd>response": {...}}`; panics (test failure) on any other shape.
    pub fn inner(&self, command: &str) -> &Value {
        let key = format!("{}response", command.to_lowercase());
        let obj = self
            .json
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {}", self.text));
        assert_eq!(
            obj.len(),
            1,
            "exactly one top-level key expected: {}",
            self.text
        );
        obj.get(&key)
            .unwrap_or_else(|| panic!("missing {key}: {}", self.text))
    }

    /// Asserts HTTP 200 and returns the inner object.
    pub fn ok(&self, command: &str) -> &Value {
        assert_eq!(self.status, 200, "{command} failed: {}", self.text);
        self.inner(command)
    }

    /// Asserts an API error with `code` and returns its `errortext`.
    pub fn err(&self, command_or_error: &str, code: u16) -> String {
        assert_eq!(self.status, code, "expected {code}: {}", self.text);
        let inner = self.inner(command_or_error);
        assert_eq!(inner["errorcode"], code, "{}", self.text);
        inner["errortext"].as_str().unwrap_or_default().to_string()
    }
}

/// Java `URLEncoder` + `%20` for spaces, upper-case hex: what CloudStack hashes (cs's
/// `quote(v, safe="*")` equals this except for `~`).
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `cs`'s signature: sort by raw key, `k=encode(v)` joined by `&`, lower-cased, HMAC-SHA1, base64.
pub fn cs_signature(secret: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let unsigned = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase();
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(unsigned.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `expires` as cs sends it: now + `secs`, `%Y-%m-%dT%H:%M:%S+0000`.
pub fn expires_in(secs: i64) -> String {
    let ts = jiff::Timestamp::now().as_second() + secs;
    jiff::Timestamp::from_second(ts)
        .expect("timestamp")
        .strftime("%Y-%m-%dT%H:%M:%S+0000")
        .to_string()
}

/// Full parameter list of a cs-style request: user params, command, response=json, apiKey,
/// signatureVersion=3, expires, then signature.
pub fn signed_params(
    creds: &Creds,
    command: &str,
    params: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("command".into(), command.into()));
    all.push(("response".into(), "json".into()));
    all.push(("apiKey".into(), creds.api_key.clone()));
    all.push(("signatureVersion".into(), "3".into()));
    all.push(("expires".into(), expires_in(600)));
    let sig = cs_signature(&creds.secret_key, &all);
    all.push(("signature".into(), sig));
    all
}

/// `k=v&…` with values URL-encoded.
pub fn query_string(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A client acting with one set of credentials.
pub struct Client<'a> {
    pub server: &'a TestServer,
    pub creds: Creds,
}

impl Client<'_> {
    /// Signed GET (cs default).
    pub async fn call(&self, command: &str, params: &[(&str, &str)]) -> Resp {
        let q = query_string(&signed_params(&self.creds, command, params));
        self.server
            .send(Method::GET, &format!("/client/api?{q}"), None, &[])
            .await
    }

    /// Signed POST with the parameters in a form body (cs `method="post"`).
    pub async fn post(&self, command: &str, params: &[(&str, &str)]) -> Resp {
        let body = query_string(&signed_params(&self.creds, command, params));
        self.server
            .send(
                Method::POST,
                "/client/api",
                Some(body),
                &[("content-type", "application/x-www-form-urlencoded")],
            )
            .await
    }

    /// Runs an async command to completion; returns the final queryAsyncJobResult inner object.
    pub async fn call_async(&self, command: &str, params: &[(&str, &str)]) -> Value {
        let r = self.call(command, params).await;
        let jobid = r.ok(command)["jobid"].as_str().expect("jobid").to_string();
        self.server.wait_job(&jobid).await;
        self.call("queryAsyncJobResult", &[("jobid", &jobid)])
            .await
            .ok("queryAsyncJobResult")
            .clone()
    }
}

impl TestServer {
    /// Bootstraps a fresh data directory with known admin credentials.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = BootstrapOptions {
            admin_password: Some(ADMIN_PASSWORD.into()),
            admin_keys: Some((ADMIN_API_KEY.into(), ADMIN_SECRET_KEY.into())),
        };
        let database = test_database(dir.path());
        let (state, boot) = prepare_on(
            database_option(&database).as_ref(),
            dir.path(),
            &opts,
            default_providers(dir.path()),
            false,
        )
        .await
        .expect("server start");
        let boot = boot.expect("fresh data dir bootstraps");
        TestServer {
            router: router(state.clone()),
            state,
            dir,
            zone_id: boot.zone_uuid,
            database,
        }
    }

    /// The same server with the helpers acting in `zone` (another zone of one installation).
    pub fn in_zone(&self, zone: &str) -> TestServer {
        TestServer {
            state: self.state.clone(),
            router: self.router.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
            zone_id: zone.into(),
            database: self.database.clone(),
        }
    }

    pub fn admin(&self) -> Client<'_> {
        self.client(Creds {
            api_key: ADMIN_API_KEY.into(),
            secret_key: ADMIN_SECRET_KEY.into(),
        })
    }

    pub fn client(&self, creds: Creds) -> Client<'_> {
        Client {
            server: self,
            creds,
        }
    }

    /// Sends one request through the router (no socket).
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router is infallible");
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let x_description = header("x-description");
        let set_cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            x_description,
            set_cookies,
            text,
            json,
        }
    }

    /// Creates an account (role `User`, `DomainAdmin` or `Admin`) in `domain_id` (None = ROOT)
    /// and returns its user's fresh API keys.
    pub async fn create_user(&self, name: &str, role: &str, domain_id: Option<&str>) -> Creds {
        let admin = self.admin();
        let mut params = vec![
            ("username", name),
            ("password", "pw"),
            ("email", "u@example.com"),
            ("firstname", "F"),
            ("lastname", "L"),
            ("roletype", role),
        ];
        if let Some(d) = domain_id {
            params.push(("domainid", d));
        }
        let r = admin.call("createAccount", &params).await;
        let user_id = r.ok("createAccount")["account"]["user"][0]["id"]
            .as_str()
            .expect("user id")
            .to_string();
        let keys = admin.call("registerUserKeys", &[("id", &user_id)]).await;
        let k = &keys.ok("registerUserKeys")["userkeys"];
        Creds {
            api_key: k["apikey"].as_str().expect("apikey").to_string(),
            secret_key: k["secretkey"].as_str().expect("secretkey").to_string(),
        }
    }

    /// Waits (event-driven, bounded) until the job is terminal.
    pub async fn wait_job(&self, jobid: &str) {
        tokio::time::timeout(Duration::from_secs(30), self.state.jobs().wait(jobid))
            .await
            .expect("job finishes within 30 s")
            .expect("job lookup")
            .expect("job exists");
    }

    /// ids of the bootstrap offerings/template: (service offering, disk offering, template).
    pub async fn catalog(&self) -> (String, String, String) {
        let a = self.admin();
        let so = a
            .call("listServiceOfferings", &[])
            .await
            .ok("listServiceOfferings")["serviceoffering"][0]["id"]
            .as_str()
            .expect("service offering")
            .to_string();
        let dof = a
            .call("listDiskOfferings", &[])
            .await
            .ok("listDiskOfferings")["diskoffering"][0]["id"]
            .as_str()
            .expect("disk offering")
            .to_string();
        let t = a
            .call("listTemplates", &[("templatefilter", "all")])
            .await
            .ok("listTemplates")["template"][0]["id"]
            .as_str()
            .expect("template")
            .to_string();
        (so, dof, t)
    }

    /// Deploys a VM as `client` and waits for it; returns the VM object of the job result.
    pub async fn deploy(&self, client: &Client<'_>, name: &str, extra: &[(&str, &str)]) -> Value {
        let (so, _, t) = self.catalog().await;
        let mut params = vec![
            ("serviceofferingid", so.as_str()),
            ("templateid", t.as_str()),
            ("zoneid", self.zone_id.as_str()),
            ("name", name),
        ];
        params.extend_from_slice(extra);
        let done = client.call_async("deployVirtualMachine", &params).await;
        assert_eq!(done["jobstatus"], 1, "deploy failed: {done}");
        done["jobresult"]["virtualmachine"].clone()
    }
}
