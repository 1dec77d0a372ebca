//! Replicas on PostgreSQL, each with its own data directory, as a user meets them behind a load
//! balancer without sticky sessions: a login made through one replica works on the others and
//! its logout, or the user's disabling, ends it everywhere at once; a provider installed and
//! switched to through one replica serves on every replica.

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bnr_support::scripted_wasm;
use crate::lifecycle_plugins::{key, sign};
use crate::ops_shutdown::{finished, get, inner, scripted_vm};
use crate::support_api::*;
use crate::support_replicas::{BnrProcess, Engine, SharedStore};

/// An HTTP answer: status, `Set-Cookie` values, JSON body.
struct Answer {
    status: u16,
    cookies: Vec<String>,
    body: Value,
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body).await.expect("send body");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let cookies = head
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or("").to_string())
        })
        .collect();
    Answer {
        status,
        cookies,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn form(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// A username/password login (cloudmonkey's way): (sessionkey, Cookie header value).
async fn login(addr: &str, username: &str, password: &str) -> (String, String) {
    let body = form(&[
        ("command", "login"),
        ("username", username),
        ("password", password),
        ("response", "json"),
    ]);
    let a = http(
        addr,
        "POST",
        "/client/api",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let key = inner(&a.body)["sessionkey"]
        .as_str()
        .expect("sessionkey")
        .to_string();
    assert_eq!(a.cookies.len(), 2, "{:?}", a.cookies);
    (key, a.cookies.join("; "))
}

/// A command with the session, by GET (query string) or POST (form body); the status.
async fn with_session(addr: &str, post: bool, command: &str, key: &str, cookie: &str) -> Answer {
    let params = form(&[
        ("command", command),
        ("sessionkey", key),
        ("response", "json"),
    ]);
    if post {
        http(
            addr,
            "POST",
            "/client/api",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", cookie),
            ],
            params.as_bytes(),
        )
        .await
    } else {
        http(
            addr,
            "GET",
            &format!("/client/api?{params}"),
            &[("Cookie", cookie)],
            b"",
        )
        .await
    }
}

/// Replicas on one fresh PostgreSQL database, each with its own data directory; the bundled
/// providers only.
async fn replicas(shared: &SharedStore, n: usize) -> (Vec<BnrProcess>, tempfile::TempDir) {
    let providers = tempfile::tempdir().expect("providers dir");
    let mut started = Vec::new();
    for _ in 0..n {
        started.push(shared.replica(providers.path()).spawn().await);
    }
    (started, providers)
}

#[tokio::test]
async fn a_login_on_one_replica_works_on_another_and_logout_ends_it_everywhere() {
    let shared = SharedStore::new(Engine::Postgres);
    let (r, _providers) = replicas(&shared, 2).await;
    let (a, b) = (&r[0].addr, &r[1].addr);
    let (key, cookie) = login(a, "admin", ADMIN_PASSWORD).await;
    for post in [false, true] {
        let answer = with_session(b, post, "listZones", &key, &cookie).await;
        assert_eq!(answer.status, 200, "post={post}: {}", answer.body);
        assert!(inner(&answer.body)["count"].as_i64().unwrap_or(0) >= 1);
    }
    // The database holds digests only: neither the key nor the cookie is found in it.
    let db = shared.connect().await;
    let rows = db
        .query(
            "SELECT key_sha256, jsessionid_sha256 FROM login_sessions",
            &[],
        )
        .await
        .expect("read sessions");
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert_eq!(stored, hex::encode(Sha256::digest(key.as_bytes())));
    let dump = db
        .query("SELECT login_sessions::text FROM login_sessions", &[])
        .await
        .expect("dump");
    let dump: String = dump.iter().map(|r| r.get::<_, String>(0)).collect();
    let jsessionid = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("JSESSIONID="))
        .expect("JSESSIONID cookie");
    assert!(!dump.contains(&key) && !dump.contains(jsessionid), "{dump}");

    let out = with_session(a, true, "logout", &key, &cookie).await;
    assert_eq!(out.status, 200, "{}", out.body);
    // No poll window: the next request on B after A answered is refused.
    for post in [false, true] {
        let answer = with_session(b, post, "listZones", &key, &cookie).await;
        assert_eq!(answer.status, 401, "post={post}: {}", answer.body);
    }
}

#[tokio::test]
async fn a_user_disabled_on_one_replica_loses_its_session_on_another_at_once() {
    let shared = SharedStore::new(Engine::Postgres);
    let (r, _providers) = replicas(&shared, 2).await;
    let (a, b) = (&r[0].addr, &r[1].addr);
    let (status, v) = get(
        a,
        "createAccount",
        &[
            ("username", "roamer"),
            ("password", "pw-roamer"),
            ("email", "r@example.com"),
            ("firstname", "R"),
            ("lastname", "M"),
            ("roletype", "User"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let user = inner(&v)["account"]["user"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (key, cookie) = login(a, "roamer", "pw-roamer").await;
    let answer = with_session(b, false, "listZones", &key, &cookie).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let (status, v) = get(a, "disableUser", &[("id", &user)]).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let answer = with_session(b, true, "listZones", &key, &cookie).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    // Ended, not only refused: enabling the user again does not bring the session back.
    let (status, v) = get(a, "enableUser", &[("id", &user)]).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let answer = with_session(b, false, "listZones", &key, &cookie).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

/// `addBackupProviderPlugin` with the component as the body, signed admin parameters in the
/// query string.
async fn upload(addr: &str, wasm: &[u8], params: &[(&str, &str)]) -> Answer {
    let creds = Creds {
        api_key: ADMIN_API_KEY.into(),
        secret_key: ADMIN_SECRET_KEY.into(),
    };
    let q = query_string(&signed_params(&creds, "addBackupProviderPlugin", params));
    http(
        addr,
        "POST",
        &format!("/client/api?{q}"),
        &[("Content-Type", "application/wasm")],
        wasm,
    )
    .await
}

#[tokio::test]
async fn a_provider_installed_and_switched_through_one_replica_serves_on_every_replica() {
    let shared = SharedStore::new(Engine::Postgres);
    let (r, _providers) = replicas(&shared, 3).await;
    let (a, b, c) = (&r[0].addr, &r[1].addr, &r[2].addr);
    let wasm = std::fs::read(scripted_wasm()).expect("the scripted fixture is built");
    let sha = hex::encode(Sha256::digest(&wasm));
    let (secret, public) = key();
    let (status, v) = get(
        a,
        "addBackupProviderSigningKey",
        &[("name", "vendor"), ("publickey", &public)],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let signature = sign(&secret, &wasm, "scripted", "1.0.0");
    let installed = upload(a, &wasm, &[("pluginsignature", &signature)]).await;
    assert_eq!(installed.status, 200, "{}", installed.body);

    // The zone switch through A waits for B and C to load it from the database.
    let (_zone, vm) = scripted_vm(a).await;
    for (replica, addr) in [("B", b), ("C", c)] {
        let (_, v) = get(addr, "listBackupProviderPlugins", &[("name", "scripted")])
            .await
            .unwrap();
        let listed = &inner(&v)["backupproviderplugin"][0];
        assert_eq!(listed["sha256"], sha.as_str(), "{replica}: {v}");
        assert_eq!(listed["state"], "Active", "{replica}: {v}");
    }
    for process in &r[1..] {
        let file = process
            .launch
            .data_dir
            .join("plugins")
            .join(format!("{sha}.wasm"));
        assert_eq!(
            std::fs::read(&file).expect("written from the database"),
            wasm
        );
    }

    // A backup through B runs on the component installed through A.
    let (status, v) = get(b, "createBackup", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let done = finished(b, inner(&v)["jobid"].as_str().unwrap()).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    let (_, v) = get(c, "listBackups", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    let backup = &inner(&v)["backup"][0];
    assert_eq!(backup["status"], "BackedUp", "{v}");
    assert!(
        backup["externalid"]
            .as_str()
            .is_some_and(|id| id.starts_with("scripted-")),
        "{v}"
    );
}

#[tokio::test]
async fn a_zone_is_not_switched_to_a_component_a_replica_refuses_to_load() {
    let shared = SharedStore::new(Engine::Postgres);
    let providers = tempfile::tempdir().expect("providers dir");
    // A accepts unsigned uploads (development); B does not, so it never loads one.
    let a = shared
        .replica(providers.path())
        .args(&["--allow-unsigned-plugins"])
        .spawn()
        .await;
    let b = shared.replica(providers.path()).spawn().await;
    let wasm = std::fs::read(scripted_wasm()).expect("the scripted fixture is built");
    let installed = upload(&a.addr, &wasm, &[]).await;
    assert_eq!(installed.status, 200, "{}", installed.body);
    let (_, v) = get(&a.addr, "listZones", &[]).await.unwrap();
    let zone = inner(&v)["zone"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = get(
        &a.addr,
        "updateConfiguration",
        &[
            ("name", "backup.framework.provider.plugin"),
            ("value", "scripted"),
            ("zoneid", &zone),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 530, "{v}");
    let text = inner(&v)["errortext"].as_str().unwrap_or_default();
    assert!(
        text.contains("not loaded yet by replica") && text.contains(&b.launch.addr),
        "{text}"
    );
    assert!(b.logged("installed backup provider not loaded"));
    // The zone kept its provider, on both replicas.
    for addr in [&a.addr, &b.addr] {
        let (_, v) = get(
            addr,
            "listConfigurations",
            &[
                ("name", "backup.framework.provider.plugin"),
                ("zoneid", &zone),
            ],
        )
        .await
        .unwrap();
        assert_eq!(inner(&v)["configuration"][0]["value"], "dummy", "{v}");
    }
}
