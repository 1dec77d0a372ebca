//! SIGTERM in the middle of load: the real binary drains, and after a restart every accepted
//! job and every backup has reached a terminal state.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bnr_support::dummy_wasm;
use crate::support_api::*;

/// One signed GET over a fresh connection; `None` when the server no longer accepts them.
async fn get(addr: &str, command: &str, params: &[(&str, &str)]) -> Option<(u16, Value)> {
    let creds = Creds {
        api_key: ADMIN_API_KEY.into(),
        secret_key: ADMIN_SECRET_KEY.into(),
    };
    let q = query_string(&signed_params(&creds, command, params));
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /client/api?{q} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The one inner object of an answer.
fn inner(v: &Value) -> &Value {
    v.as_object()
        .and_then(|o| o.values().next())
        .unwrap_or(&Value::Null)
}

/// Waits (bounded, polling) until the job is terminal; returns its answer.
async fn finished(addr: &str, jobid: &str) -> Value {
    for _ in 0..600 {
        let (status, v) = get(addr, "queryAsyncJobResult", &[("jobid", jobid)])
            .await
            .expect("server answers");
        assert_eq!(status, 200, "{v}");
        if inner(&v)["jobstatus"] != 0 {
            return inner(&v).clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {jobid} is still pending after 30 s");
}

struct Server {
    child: Child,
    drain: Option<std::thread::JoinHandle<usize>>,
}

impl Server {
    fn start(dir: &std::path::Path, addr: &str) -> Server {
        let providers = dummy_wasm().parent().expect("providers dir").to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bnr"))
            .args(["serve", "--listen", addr, "--shutdown-grace-secs", "20"])
            .arg("--data-dir")
            .arg(dir)
            .arg("--providers-dir")
            .arg(providers)
            .env("RUST_LOG", "info")
            .env("BNR_ADMIN_API_KEY", ADMIN_API_KEY)
            .env("BNR_ADMIN_SECRET_KEY", ADMIN_SECRET_KEY)
            .env("BNR_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start bnr");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let serving = lines.by_ref().map_while(Result::ok).any(|l| {
            assert!(!l.contains('\u{1b}'), "no colour codes off a terminal: {l}");
            l.contains("serving the CloudStack API")
        });
        assert!(serving, "bnr exited before serving");
        // Keep draining the log so the child never blocks on a full pipe.
        let drain = Some(std::thread::spawn(move || lines.count()));
        Server { child, drain }
    }

    fn terminate(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status:?}");
        if let Some(d) = self.drain.take() {
            d.join().expect("log drain");
        }
    }
}

#[tokio::test]
async fn sigterm_under_load_leaves_every_job_and_backup_finished_or_resumed_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = tokio::task::spawn_blocking({
        let (dir, addr) = (dir.path().to_path_buf(), addr.clone());
        move || Server::start(&dir, &addr)
    })
    .await
    .unwrap();

    // An offering, and VMs assigned to it.
    let zone = inner(&get(&addr, "listZones", &[]).await.unwrap().1)["zone"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = get(
        &addr,
        "importBackupOffering",
        &[
            ("zoneid", &zone),
            ("externalid", "gold-policy"),
            ("name", "Gold"),
            ("description", "Gold"),
            ("allowuserdrivenbackups", "true"),
        ],
    )
    .await
    .unwrap();
    let offering =
        finished(&addr, inner(&v)["jobid"].as_str().unwrap()).await["jobresult"]["backupoffering"]
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    let catalog = |command: &'static str, key: &'static str| {
        let addr = addr.clone();
        async move {
            let extra: &[(&str, &str)] = if command == "listTemplates" {
                &[("templatefilter", "all")]
            } else {
                &[]
            };
            inner(&get(&addr, command, extra).await.unwrap().1)[key][0]["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let so = catalog("listServiceOfferings", "serviceoffering").await;
    let template = catalog("listTemplates", "template").await;
    let mut vms = Vec::new();
    for i in 0..4 {
        let name = format!("term-{i}");
        let (_, v) = get(
            &addr,
            "deployVirtualMachine",
            &[
                ("zoneid", &zone),
                ("serviceofferingid", &so),
                ("templateid", &template),
                ("name", &name),
            ],
        )
        .await
        .unwrap();
        let vm = finished(&addr, inner(&v)["jobid"].as_str().unwrap()).await["jobresult"]
            ["virtualmachine"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, v) = get(
            &addr,
            "assignVirtualMachineToBackupOffering",
            &[("virtualmachineid", &vm), ("backupofferingid", &offering)],
        )
        .await
        .unwrap();
        finished(&addr, inner(&v)["jobid"].as_str().unwrap()).await;
        vms.push(vm);
    }

    // Load: each client takes backups until the server stops answering (bounded).
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut clients = Vec::new();
    for vm in vms {
        let (addr, accepted) = (addr.clone(), accepted_tx.clone());
        clients.push(tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..2_000 {
                match get(&addr, "createBackup", &[("virtualmachineid", &vm)]).await {
                    Some((200, v)) => {
                        let _ = accepted.send(inner(&v)["jobid"].as_str().unwrap().to_string());
                    }
                    Some((503, _)) => refused += 1,
                    Some((status, v)) => panic!("unexpected answer {status}: {v}"),
                    None => break,
                }
            }
            refused
        }));
    }
    drop(accepted_tx);
    let mut jobs = Vec::new();
    while jobs.len() < 40 {
        jobs.push(
            accepted_rx
                .recv()
                .await
                .expect("the clients keep getting jobs"),
        );
    }
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    for c in clients {
        c.await.expect("client");
    }
    while let Some(job) = accepted_rx.recv().await {
        jobs.push(job);
    }

    let server = tokio::task::spawn_blocking({
        let (dir, addr) = (dir.path().to_path_buf(), addr.clone());
        move || Server::start(&dir, &addr)
    })
    .await
    .unwrap();
    for job in &jobs {
        let done = finished(&addr, job).await;
        assert!(done["jobstatus"] == 1 || done["jobstatus"] == 2, "{done}");
    }
    let (_, v) = get(
        &addr,
        "listBackups",
        &[("listall", "true"), ("pagesize", "-1")],
    )
    .await
    .unwrap();
    let backups = inner(&v)["backup"].as_array().cloned().unwrap_or_default();
    assert!(backups.len() >= jobs.len(), "{} backups", backups.len());
    for b in &backups {
        let status = b["status"].as_str().unwrap();
        assert!(
            matches!(status, "BackedUp" | "Error"),
            "backup {} left in {status}",
            b["id"]
        );
    }
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}
