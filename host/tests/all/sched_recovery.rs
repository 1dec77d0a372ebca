//! Kill and restart in the middle of long provider operations (`backup.plugin.scripted.op-seconds`): the
//! first "process" is a tokio runtime shut down without warning (every task of it stops where
//! it is, like a killed process), the second starts on the same data directory.

use std::time::Duration;

use serde_json::Value;

use crate::bnr_support::*;
use crate::sched_support::*;
use crate::support_api::*;

/// What the first process leaves behind for the test.
struct Killed {
    dir: tempfile::TempDir,
    /// Keeps a PostgreSQL run's database for the restart.
    _database: Option<std::sync::Arc<bnr::store::postgres::testing::TestDatabase>>,
    creds: Creds,
    vm: String,
    backup: String,
    job: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// zone1 on `scripted`, a user's VM assigned to its silver policy, operations pending for
/// `op_seconds`.
async fn scripted_vm(s: &TestServer, user: &str, op_seconds: &str) -> (Creds, String) {
    let zone = s.zone_id.clone();
    set_config(
        s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&zone),
    )
    .await;
    let silver = import(s, "silver-policy", "Silver", true).await;
    let vm = protected_vm(s, user, "long", &id(&silver)).await;
    set_config(
        s,
        "backup.plugin.scripted.op-seconds",
        op_seconds,
        Some(&zone),
    )
    .await;
    vm
}

/// Waits until the job's provider operation is persisted. There is no notification for that
/// moment, so the store is re-read (each read yields to the blocking pool); bounded.
async fn until_operation_persisted(s: &TestServer, job: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM provider_operations p JOIN async_jobs j ON j.id = p.job_id
         WHERE j.uuid = '{job}'"
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        while scalar(s, &sql).await == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the operation is persisted within 30 s");
}

/// Starts `command` in a first process, waits for its provider operation, then kills the
/// process.
fn run_and_kill(
    user: &str,
    op_seconds: &str,
    prepare: impl AsyncFnOnce(&TestServer, &Client<'_>, &str) -> Vec<(&'static str, String)>,
    command: &'static str,
) -> Killed {
    let first = runtime();
    let killed = first.block_on(async {
        let s = start(Installed::DummyAndScripted).await;
        let (creds, vm) = scripted_vm(&s, user, op_seconds).await;
        let client = s.client(creds.clone());
        let params = prepare(&s, &client, &vm).await;
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = client.call(command, &p).await;
        let answer = r.ok(command).clone();
        let job = answer["jobid"].as_str().expect("jobid").to_string();
        until_operation_persisted(&s, &job).await;
        let backup = answer["id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                params
                    .iter()
                    .find(|(k, _)| *k == "id")
                    .map(|(_, v)| v.clone())
            })
            .expect("backup id");
        let TestServer { dir, database, .. } = s;
        Killed {
            dir,
            _database: database,
            creds,
            vm,
            backup,
            job,
        }
    });
    first.shutdown_background();
    killed
}

async fn job_result(s: &TestServer, job: &str) -> Value {
    s.wait_job(job).await;
    s.admin()
        .call("queryAsyncJobResult", &[("jobid", job)])
        .await
        .ok("queryAsyncJobResult")
        .clone()
}

async fn no_backup_in_transition(s: &TestServer) {
    assert_eq!(
        scalar(
            s,
            "SELECT COUNT(*) FROM backups WHERE removed IS NULL
             AND status IN ('Allocated', 'Queued', 'BackingUp', 'Restoring')"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );
}

#[test]
fn a_backup_killed_mid_operation_is_resumed_by_its_handle_and_ends_backed_up() {
    let killed = run_and_kill(
        "ada",
        "2",
        async |_, _, vm| vec![("virtualmachineid", vm.to_string())],
        "createBackup",
    );
    runtime().block_on(async {
        let s = start_in(killed.dir, Installed::DummyAndScripted).await;
        let user = s.client(killed.creds);
        let done = job_result(&s, &killed.job).await;
        job_ok(&done);
        let b = get_backup(&user, &killed.backup).await;
        assert_eq!(b["status"], "BackedUp", "{b}");
        assert!(
            b["externalid"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("scripted-{}", killed.vm))),
            "{b}"
        );
        no_backup_in_transition(&s).await;
        let created = events_of(&s, "BACKUP.CREATE").await;
        assert!(created.iter().all(|e| e["level"] == "INFO"), "{created:?}");
    });
}

#[test]
fn a_job_whose_provider_is_gone_after_the_restart_fails_cleanly_with_a_reason_and_an_event() {
    let killed = run_and_kill(
        "bob",
        "3600",
        async |_, _, vm| vec![("virtualmachineid", vm.to_string())],
        "createBackup",
    );
    runtime().block_on(async {
        // The scripted provider is not installed any more: its handle cannot be polled.
        let s = start_in(killed.dir, Installed::Dummy).await;
        let user = s.client(killed.creds);
        let done = job_result(&s, &killed.job).await;
        let (code, text) = job_error(&done);
        assert_eq!(code, 530);
        assert!(text.contains("interrupted"), "{text}");
        let b = get_backup(&user, &killed.backup).await;
        assert_eq!(b["status"], "Error", "{b}");
        no_backup_in_transition(&s).await;
        let errors: Vec<Value> = events_of(&s, "BACKUP.CREATE")
            .await
            .into_iter()
            .filter(|e| e["level"] == "ERROR")
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let description = errors[0]["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("cannot be resumed") && description.contains("scripted"),
            "{description}"
        );
        assert_eq!(errors[0]["account"], "bob");
    });
}

#[test]
fn a_restore_killed_mid_operation_fails_cleanly_and_gives_the_instance_back() {
    let killed = run_and_kill(
        "cyd",
        "3600",
        async |s, client, vm| {
            // A backup taken at once, then a long restore of it.
            set_config(
                s,
                "backup.plugin.scripted.op-seconds",
                "0",
                Some(&s.zone_id.clone()),
            )
            .await;
            let b = backup(client, vm).await;
            set_config(
                s,
                "backup.plugin.scripted.op-seconds",
                "3600",
                Some(&s.zone_id.clone()),
            )
            .await;
            stop(client, vm).await;
            vec![("id", id(&b))]
        },
        "restoreBackup",
    );
    runtime().block_on(async {
        let s = start_in(killed.dir, Installed::DummyAndScripted).await;
        let user = s.client(killed.creds);
        let (code, _) = job_error(&job_result(&s, &killed.job).await);
        assert_eq!(code, 530);
        assert_eq!(
            get_backup(&user, &killed.backup).await["status"],
            "BackedUp"
        );
        let vm = user
            .call("listVirtualMachines", &[("id", &killed.vm)])
            .await
            .ok("listVirtualMachines")["virtualmachine"][0]
            .clone();
        assert_eq!(vm["state"], "Stopped");
        no_backup_in_transition(&s).await;
        let restore_errors = events_of(&s, "BACKUP.RESTORE")
            .await
            .into_iter()
            .filter(|e| e["level"] == "ERROR")
            .count();
        assert_eq!(restore_errors, 1);
    });
}

#[test]
fn an_operation_past_its_deadline_plus_one_interval_is_ended_by_the_sync_pass() {
    let killed = run_and_kill(
        "dee",
        "3600",
        async |s, _, vm| {
            set_config(s, "backup.framework.operation.timeout", "60", None).await;
            vec![("virtualmachineid", vm.to_string())]
        },
        "createBackup",
    );
    runtime().block_on(async {
        // Resumed: the provider keeps answering "running" (for an hour).
        let s = start_in(killed.dir, Installed::DummyAndScripted).await;
        let user = s.client(killed.creds);
        let deadline = scalar(&s, "SELECT deadline FROM provider_operations").await;
        let interval = 300; // backup.framework.sync.interval
        let report = sync(&s, deadline + interval).await;
        let zone = report.zone(&s.zone_id).expect("zone");
        assert_eq!((zone.expired_operations, zone.expired_backups), (0, 0));
        assert_eq!(
            get_backup(&user, &killed.backup).await["status"],
            "BackingUp"
        );

        let report = sync(&s, deadline + interval + 1).await;
        let zone = report.zone(&s.zone_id).expect("zone");
        assert_eq!((zone.expired_operations, zone.expired_backups), (1, 1));
        let (code, text) = job_error(&job_result(&s, &killed.job).await);
        assert_eq!(code, 530);
        assert!(text.contains("did not finish by its deadline"), "{text}");
        let b = get_backup(&user, &killed.backup).await;
        assert_eq!(b["status"], "Failed", "{b}");
        no_backup_in_transition(&s).await;
        let errors: Vec<Value> = events_of(&s, "BACKUP.CREATE")
            .await
            .into_iter()
            .filter(|e| e["level"] == "ERROR")
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("did not finish by its deadline")),
            "{errors:?}"
        );
    });
}

#[test]
fn a_poll_failing_again_and_again_raises_one_stalled_event_after_its_bounded_tries() {
    // The vendor goes down while the backup runs: the mode is set after the operation started
    // (its calls keep the settings they started with), and the restart resumes it under the
    // outage.
    let killed = run_and_kill(
        "stella",
        "3600",
        async |_, _, vm| vec![("virtualmachineid", vm.to_string())],
        "createBackup",
    );
    let second = runtime();
    let dir = second.block_on(async {
        let s = start_in(killed.dir, Installed::DummyAndScripted).await;
        set_config(
            &s,
            "backup.plugin.scripted.mode",
            "outage",
            Some(&s.zone_id),
        )
        .await;
        let TestServer { dir, .. } = s;
        dir
    });
    second.shutdown_background();
    runtime().block_on(async {
        let s = start_in(dir, Installed::DummyAndScripted).await;
        // 5 failed polls with backoff (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s): bounded wait of 60 s.
        let mut stalled = Vec::new();
        for _ in 0..600 {
            stalled = events_of(&s, "BACKUP.OPERATION.STALLED").await;
            if !stalled.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stalled.len(), 1, "{stalled:?}");
        let e = &stalled[0];
        assert_eq!(e["level"], "WARN", "{e}");
        assert_eq!(e["account"], "stella", "{e}");
        let text = e["description"].as_str().unwrap_or_default();
        assert!(
            text.contains("scripted") && text.contains("5 polls in a row"),
            "{text}"
        );
        // Still pending: the poll is retried until its deadline, not failed.
        let job = s
            .admin()
            .call("queryAsyncJobResult", &[("jobid", &killed.job)])
            .await
            .ok("queryAsyncJobResult")
            .clone();
        assert_eq!(job["jobstatus"], 0, "{job}");
    });
}
