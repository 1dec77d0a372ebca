//! The real binary over a loopback socket: bootstrap files, signed requests, graceful stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support_api::*;

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn bnr_serve_bootstraps_a_data_dir_and_answers_signed_requests_over_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Find a free port; the server binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bnr"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("BNR_ADMIN_API_KEY")
        .env_remove("BNR_ADMIN_SECRET_KEY")
        .env_remove("BNR_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bnr");
    // Wait for the "serving" log line (event-driven: read the log until it appears).
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::task::spawn_blocking(move || {
        for line in lines.by_ref() {
            let line = line.expect("log line");
            if line.contains("serving the CloudStack API") {
                return Some(lines);
            }
        }
        None
    })
    .await
    .expect("reader");
    let Some(rest) = ready else {
        let _ = child.kill();
        panic!("bnr exited before serving");
    };
    // Keep draining the log so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || rest.count());

    let keys_path = dir.path().join("admin-keys.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys_path)
            .expect("keys file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(&keys_path).unwrap()).unwrap();
    let creds = Creds {
        api_key: keys["apikey"].as_str().unwrap().to_string(),
        secret_key: keys["secretkey"].as_str().unwrap().to_string(),
    };
    assert!(dir.path().join("admin-password").exists());
    let q = query_string(&signed_params(&creds, "listZones", &[]));
    let (status, body) = http_get(&addr, &format!("/client/api?{q}")).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["listzonesresponse"]["zone"][0]["name"], "zone1");
    let q = query_string(&signed_params(
        &creds,
        "listConfigurations",
        &[("name", "backup.framework.enabled")],
    ));
    let (_, body) = http_get(&addr, &format!("/client/api?{q}")).await;
    assert!(body.contains("\"value\":\"true\""), "{body}");

    // SIGTERM → graceful shutdown with exit status 0.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    drain.join().expect("drain");
}
