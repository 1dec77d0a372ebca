//! Login latency: `cargo bench -p bnr --bench login`.
//!
//! `login` requests through the router (in process, no socket), median and p90 over N each:
//! a known user with the right password, the same user with a wrong one, an unknown user, and
//! a user whose password is still stored in the legacy SHA-256 form (wrong password, so it is
//! not upgraded: the cost of a login before argon2id). Then the share of the signed request
//! path spent opening the sealed secret key: a signed `listZones` through the router against
//! `Secrets::open` of a sealed key, medians over N. Prints Markdown tables.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use bnr::api::router;
use bnr::api::serve::prepare;
use bnr::inventory::bootstrap::BootstrapOptions;

/// Logins per case (`BNR_BENCH_LOGINS` overrides).
fn logins() -> usize {
    std::env::var("BNR_BENCH_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn legacy_hash(password: &str) -> String {
    let salt = [9u8; 16];
    let mut digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    for _ in 1..10_000 {
        digest = Sha256::new()
            .chain_update(salt)
            .chain_update(digest)
            .finalize();
    }
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    format!("sha256$10000${}${}", b64.encode(salt), b64.encode(digest))
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BootstrapOptions {
        admin_password: Some("admin-password".into()),
        admin_keys: Some((API_KEY.into(), SECRET_KEY.into())),
    };
    let (state, _) = prepare(dir.path(), &opts).await.expect("server");
    let secrets = state.store().secrets().clone();
    // No lockout while measuring wrong passwords.
    state
        .settings()
        .set("incorrect.login.attempts.allowed", "0", None)
        .await
        .expect("setting");
    let legacy = legacy_hash("legacy-password");
    state
        .store()
        .write(move |tx| {
            tx.execute(
                "INSERT INTO users(uuid, account_id, username, password_hash, created)
                 VALUES ('legacy-user', 1, 'legacy', ?1, 0)",
                [legacy],
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("legacy user");
    let app = router(state);
    let signed_app = app.clone();
    let login = |user: &'static str, password: &'static str| {
        let app = app.clone();
        async move {
            let body = format!(
                "command=login&username={user}&password={password}&domain=%2F&response=json"
            );
            let req = Request::post("/client/api")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request");
            let started = Instant::now();
            let resp = app.oneshot(req).await.expect("router");
            let took = started.elapsed();
            (resp.status().as_u16(), took)
        }
    };
    let cases: [(&str, &'static str, &'static str, u16); 4] = [
        ("known user, right password", "admin", "admin-password", 200),
        ("known user, wrong password", "admin", "wrong", 531),
        ("unknown user", "nobody", "wrong", 531),
        (
            "legacy SHA-256 hash, wrong password (the old cost)",
            "legacy",
            "wrong",
            531,
        ),
    ];
    println!("| case | median | p90 |\n|---|---|---|");
    let mut medians = Vec::new();
    for (name, user, password, status) in cases {
        let mut samples: Vec<Duration> = Vec::new();
        for _ in 0..logins() {
            let (got, took) = login(user, password).await;
            assert_eq!(got, status, "{name}");
            samples.push(took);
        }
        samples.sort();
        let median = samples[samples.len() / 2];
        let p90 = samples[samples.len() * 9 / 10];
        medians.push(median);
        println!(
            "| {name} | {:.2} ms | {:.2} ms |",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3
        );
    }
    println!(
        "\nunknown / known (wrong password): {:.2}",
        medians[2].as_secs_f64() / medians[1].as_secs_f64()
    );

    let n = logins() * 10;
    let uri = signed_uri("listZones");
    let mut request = Vec::new();
    for _ in 0..n {
        let req = Request::get(&uri).body(Body::empty()).expect("request");
        let started = Instant::now();
        let resp = signed_app.clone().oneshot(req).await.expect("router");
        request.push(started.elapsed());
        assert_eq!(resp.status().as_u16(), 200);
    }
    let sealed = secrets.seal(SECRET_KEY).expect("seal");
    let mut open = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let plain = secrets.open(&sealed).expect("open");
        open.push(started.elapsed());
        assert_eq!(plain, SECRET_KEY);
    }
    request.sort();
    open.sort();
    let (request, open) = (request[n / 2], open[n / 2]);
    println!(
        "\n| signed listZones (router, in process) | opening the sealed secret key | share |\n|---|---|---|\n| {:.1} µs | {:.2} µs | {:.1} % |",
        request.as_secs_f64() * 1e6,
        open.as_secs_f64() * 1e6,
        100.0 * open.as_secs_f64() / request.as_secs_f64()
    );
}

const API_KEY: &str = "bench-api-key";
const SECRET_KEY: &str = "bench-secret-key";

/// Java `URLEncoder` + `%20`, upper-case hex: what CloudStack (and `cs`) sign.
fn encode(v: &str) -> String {
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

/// A signed GET path (CloudStack's algorithm: sorted, encoded, lower-cased, HMAC-SHA1).
fn signed_uri(command: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut params = [
        ("apiKey", API_KEY.to_string()),
        ("command", command.to_string()),
        ("response", "json".to_string()),
    ];
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET_KEY.as_bytes()).expect("hmac key");
    mac.update(query.to_lowercase().as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("/client/api?{query}&signature={}", encode(&signature))
}
