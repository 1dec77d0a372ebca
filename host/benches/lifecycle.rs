//! Provider lifecycle benchmark: `cargo xtask plugins && cargo bench -p bnr --bench lifecycle`.
//!
//! In one process, through the API router (no socket), on a bare server (bundled dummy):
//!
//! 1. install of a component, upload to ready, with a cold compiled cache (first time this
//!    sha256 is seen) and a warm one (the same component deleted and uploaded again), for the
//!    `dummy-next` fixture and for the same fixture padded to 5 MB with a custom section;
//! 2. swap latency: `updateBackupProviderPlugin` (health probe included) back and forth;
//! 3. requests failed during those swaps, with signed reads running concurrently.
//!
//! Prints a Markdown table (see docs/benchmarks.md).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha1::Sha1;
use tower::ServiceExt;

use bnr::api::router;
use bnr::api::serve::{default_providers, prepare_with_policy};
use bnr::inventory::bootstrap::BootstrapOptions;

const API_KEY: &str = "bench-api-key";
const SECRET_KEY: &str = "bench-secret-key";
/// Swaps measured (alternating between the two versions).
const SWAPS: usize = 40;

fn component(stem: &str) -> Vec<u8> {
    let exe = std::env::current_exe().expect("bench binary path");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(|| {
            exe.ancestors()
                .nth(3)
                .expect("<target>/<profile>/deps")
                .into()
        });
    let path = target.join("fixtures").join(format!("{stem}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins` first", path.display()))
}

/// `wasm` with a custom section appended so the whole is `size` bytes (still a valid component).
fn padded(wasm: &[u8], size: usize) -> Vec<u8> {
    let name = b"bnr-bench-padding";
    let payload = size - wasm.len() - 1 - 5 - 1 - name.len();
    let mut out = wasm.to_vec();
    out.push(0x00);
    let mut len = (1 + name.len() + payload) as u32;
    // Fixed-width (5-byte) LEB128, so the section length is exact.
    for i in 0..5 {
        let byte = (len & 0x7f) as u8 | if i < 4 { 0x80 } else { 0 };
        out.push(byte);
        len >>= 7;
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + payload, 0);
    out
}

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

fn signed(command: &str, params: &[(&str, &str)]) -> String {
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("command".into(), command.into()));
    all.push(("response".into(), "json".into()));
    all.push(("apiKey".into(), API_KEY.into()));
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let unsigned = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase();
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET_KEY.as_bytes()).expect("hmac");
    mac.update(unsigned.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    all.push(("signature".into(), sig));
    all.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn call(
    app: &axum::Router,
    command: &str,
    params: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/client/api?{}", signed(command, params)));
    if body.is_some() {
        req = req.header("content-type", "application/wasm");
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("data dir");
    let opts = BootstrapOptions {
        admin_password: Some("bench-password".into()),
        admin_keys: Some((API_KEY.into(), SECRET_KEY.into())),
    };
    let (state, _) = prepare_with_policy(dir.path(), &opts, default_providers(dir.path()), true)
        .await
        .expect("server");
    let app = router(state);

    let next = component("bnr_fixture_dummy_next");
    let big = padded(&next, 5 << 20);
    assert_eq!(big.len(), 5 << 20);
    let mut rows = Vec::new();
    for (label, wasm) in [
        ("dummy-next (105 KB)", &next),
        ("dummy-next padded to 5 MB", &big),
    ] {
        for cache in ["cold", "warm"] {
            let started = Instant::now();
            let (status, body) =
                call(&app, "addBackupProviderPlugin", &[], Some(wasm.clone())).await;
            let took = started.elapsed();
            assert_eq!(status, 200, "{body}");
            rows.push(format!(
                "| install {label}, upload to ready, {cache} compiled cache | {} |",
                ms(took)
            ));
            let (status, body) = call(
                &app,
                "deleteBackupProviderPlugin",
                &[("name", "dummy"), ("version", "1.1.0")],
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let (status, body) = call(&app, "addBackupProviderPlugin", &[], Some(next.clone())).await;
    assert_eq!(status, 200, "{body}");

    // Swaps back and forth, with signed reads running alongside.
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let load = async {
        while !stop.load(Ordering::Relaxed) {
            for command in ["listBackupProviders", "listZones"] {
                let (status, _) = call(&app, command, &[], None).await;
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let swaps = async {
        let mut samples = Vec::new();
        for i in 0..SWAPS {
            let version = if i % 2 == 0 { "1.1.0" } else { "1.0.0" };
            let started = Instant::now();
            let (status, body) = call(
                &app,
                "updateBackupProviderPlugin",
                &[("name", "dummy"), ("version", version)],
                None,
            )
            .await;
            samples.push(started.elapsed());
            assert_eq!(status, 200, "{body}");
        }
        stop.store(true, Ordering::Relaxed);
        samples
    };
    let ((), mut samples) = tokio::join!(load, swaps);
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    rows.push(format!(
        "| swap (updateBackupProviderPlugin, probe in 1 zone), warm, p50 / max of {SWAPS} | {} / {} |",
        ms(p50),
        ms(max)
    ));
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    rows.push(format!(
        "| signed reads during the swaps: failed / total | {failed} / {} |",
        ok + failed
    ));
    println!("| measurement | result |\n|---|---|");
    for row in rows {
        println!("{row}");
    }
}
