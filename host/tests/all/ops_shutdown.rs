//! SIGTERM in the middle of load: the real binary drains, and after a restart every accepted
//! job and every backup has reached a terminal state.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bnr_support::{dummy_wasm, scripted_wasm};
use crate::support_api::*;
pub(crate) use crate::support_replicas::free_addr;
use crate::support_replicas::{BnrProcess, Launch};

/// One signed GET over a fresh connection; `None` when the server no longer accepts them.
pub(crate) async fn get(
    addr: &str,
    command: &str,
    params: &[(&str, &str)],
) -> Option<(u16, Value)> {
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
pub(crate) fn inner(v: &Value) -> &Value {
    v.as_object()
        .and_then(|o| o.values().next())
        .unwrap_or(&Value::Null)
}

/// Waits (bounded, polling) until the job is terminal; returns its answer.
pub(crate) async fn finished(addr: &str, jobid: &str) -> Value {
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

/// `bnr serve` on `dir` at `addr` with the built-in providers and a 20 s shutdown grace.
fn start_server(dir: &std::path::Path, addr: &str) -> BnrProcess {
    let providers = dummy_wasm().parent().expect("providers dir").to_path_buf();
    Launch::single(dir, &providers)
        .at(addr)
        .args(&["--shutdown-grace-secs", "20"])
        .start()
}

/// SIGTERM; the server must exit cleanly within `bound` (far below the grace it runs with).
/// Returns its log lines.
fn terminate_within(server: BnrProcess, bound: Duration) -> Vec<String> {
    let (status, log) = server.terminate_within(bound);
    assert!(status.success(), "{status:?}");
    log
}

fn terminate(server: BnrProcess) {
    terminate_within(server, Duration::from_secs(120));
}

#[tokio::test]
async fn sigterm_under_load_leaves_every_job_and_backup_finished_or_resumed_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let server = tokio::task::spawn_blocking({
        let (dir, addr) = (dir.path().to_path_buf(), addr.clone());
        move || start_server(&dir, &addr)
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
    tokio::task::spawn_blocking(move || terminate(server))
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
        move || start_server(&dir, &addr)
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
    tokio::task::spawn_blocking(move || terminate(server))
        .await
        .unwrap();
}

/// A zone setting through the API (`updateConfiguration` with `zoneid`).
pub(crate) async fn zone_setting(addr: &str, zone: &str, name: &str, value: &str) {
    let (status, v) = get(
        addr,
        "updateConfiguration",
        &[("name", name), ("value", value), ("zoneid", zone)],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
}

/// The zone on the `scripted` provider, its gold policy imported, and a VM assigned to it:
/// (zone, vm).
pub(crate) async fn scripted_vm(addr: &str) -> (String, String) {
    let addr = addr.to_string();
    let zone = inner(&get(&addr, "listZones", &[]).await.unwrap().1)["zone"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    zone_setting(&addr, &zone, "backup.framework.provider.plugin", "scripted").await;
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
    let id_of = |v: &Value, key: &str| inner(v)[key][0]["id"].as_str().unwrap().to_string();
    let so = id_of(
        &get(&addr, "listServiceOfferings", &[]).await.unwrap().1,
        "serviceoffering",
    );
    let template = id_of(
        &get(&addr, "listTemplates", &[("templatefilter", "all")])
            .await
            .unwrap()
            .1,
        "template",
    );
    let (_, v) = get(
        &addr,
        "deployVirtualMachine",
        &[
            ("zoneid", &zone),
            ("serviceofferingid", &so),
            ("templateid", &template),
            ("name", "long-op"),
        ],
    )
    .await
    .unwrap();
    let vm =
        finished(&addr, inner(&v)["jobid"].as_str().unwrap()).await["jobresult"]["virtualmachine"]
            ["id"]
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
    (zone, vm)
}

/// Providers directory with the dummy and the `scripted` fixture.
pub(crate) fn dummy_and_scripted() -> tempfile::TempDir {
    let providers = tempfile::tempdir().expect("providers dir");
    for wasm in [dummy_wasm(), scripted_wasm()] {
        std::fs::copy(&wasm, providers.path().join(wasm.file_name().unwrap())).expect("copy");
    }
    providers
}

#[tokio::test]
async fn sigterm_releases_jobs_polling_persisted_operations_at_once_and_they_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = dummy_and_scripted();
    let addr = free_addr();
    // A grace far longer than the test: only releasing the polling job lets bnr stop in time.
    let start = {
        let (dir, addr, providers) = (
            dir.path().to_path_buf(),
            addr.clone(),
            providers.path().to_path_buf(),
        );
        move || {
            Launch::single(&dir, &providers)
                .at(&addr)
                .args(&["--shutdown-grace-secs", "3600"])
                .start()
        }
    };
    let server = tokio::task::spawn_blocking(start.clone()).await.unwrap();

    let (zone, vm) = scripted_vm(&addr).await;

    // A backup whose provider operation runs for 8 s.
    zone_setting(&addr, &zone, "backup.plugin.scripted.op-seconds", "8").await;
    let (status, v) = get(&addr, "createBackup", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let job = inner(&v)["jobid"].as_str().unwrap().to_string();
    let backup = inner(&v)["id"].as_str().unwrap().to_string();
    // Progress is reported once the operation is persisted and polled.
    let mut polled = false;
    for _ in 0..600 {
        let (_, v) = get(&addr, "queryAsyncJobResult", &[("jobid", &job)])
            .await
            .unwrap();
        assert_eq!(
            inner(&v)["jobstatus"],
            0,
            "the operation outlives the test's SIGTERM: {v}"
        );
        if inner(&v)["jobprocstatus"].as_i64().unwrap_or(0) > 0 {
            polled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polled, "the job reported no progress");

    tokio::task::spawn_blocking(move || terminate_within(server, Duration::from_secs(60)))
        .await
        .unwrap();

    // After a restart the job resumes by its handle and the backup ends BackedUp.
    let server = tokio::task::spawn_blocking(start).await.unwrap();
    let done = finished(&addr, &job).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    let (_, v) = get(&addr, "listBackups", &[("id", &backup)]).await.unwrap();
    assert_eq!(inner(&v)["backup"][0]["status"], "BackedUp", "{v}");
    tokio::task::spawn_blocking(move || terminate(server))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_provider_call_is_a_warn_line_whose_span_names_job_backup_zone_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = dummy_and_scripted();
    let addr = free_addr();
    let server = tokio::task::spawn_blocking({
        let (dir, addr, providers) = (
            dir.path().to_path_buf(),
            addr.clone(),
            providers.path().to_path_buf(),
        );
        move || {
            Launch::single(&dir, &providers)
                .at(&addr)
                .args(&["--log-format", "json"])
                .start()
        }
    })
    .await
    .unwrap();
    let (zone, vm) = scripted_vm(&addr).await;
    // The vendor refuses the backup at once.
    zone_setting(&addr, &zone, "backup.plugin.scripted.mode", "fail").await;
    let (status, v) = get(&addr, "createBackup", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let job = inner(&v)["jobid"].as_str().unwrap().to_string();
    let backup = inner(&v)["id"].as_str().unwrap().to_string();
    assert_eq!(finished(&addr, &job).await["jobstatus"], 2);
    let log =
        tokio::task::spawn_blocking(move || terminate_within(server, Duration::from_secs(120)))
            .await
            .unwrap();

    let failed: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "provider call failed")
        .collect();
    let line = failed
        .iter()
        .find(|l| l["fields"]["export"] == "start_backup")
        .unwrap_or_else(|| panic!("no WARN line for the failed start_backup: {failed:?}"));
    assert_eq!(line["level"], "WARN", "{line}");
    let fields = &line["fields"];
    assert_eq!(fields["provider"], "scripted", "{line}");
    assert_eq!(fields["zone"], zone.as_str(), "{line}");
    assert_eq!(fields["kind"], "provider_rejected", "{line}");
    assert!(
        fields["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{line}"
    );
    let span = &line["span"];
    assert_eq!(span["name"], "provider_call", "{line}");
    assert_eq!(span["job"], job.as_str(), "{line}");
    assert_eq!(span["backup"], backup.as_str(), "{line}");
    assert_eq!(span["zone"], zone.as_str(), "{line}");
    assert!(
        span["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{line}"
    );
}
