//! Operations in trouble: provider progress reaches the job, and listBackups says why a backup
//! is in Error.

use std::time::Duration;

use serde_json::Value;

use crate::bnr_support::*;
use crate::support_api::*;

/// zone1 on `scripted`, an offering of it, and a user VM assigned to it.
async fn scripted_vm(s: &TestServer, user: &str) -> (Creds, Value) {
    set_config(
        s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let gold = import(s, "gold-policy", "Gold", true).await;
    let creds = s.create_user(user, "User", None).await;
    let client = s.client(creds.clone());
    let vm = vm(s, &client, &format!("{user}-vm"), false).await;
    assign(&client, &id(&vm), &id(&gold)).await;
    (creds, vm)
}

/// Polls `check` every 100 ms until it returns `Some`, for at most 60 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 60 s");
}

#[tokio::test]
async fn provider_progress_reaches_jobprocstatus_and_the_backup() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "percy").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "4",
        Some(&s.zone_id),
    )
    .await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let jobid = r.ok("createBackup")["jobid"].as_str().unwrap().to_string();
    let backup_id = r.ok("createBackup")["id"].as_str().unwrap().to_string();
    let percent = eventually("a progress report", || {
        let user = &user;
        let jobid = jobid.clone();
        async move {
            let r = user.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
            let job = r.ok("queryAsyncJobResult");
            let percent = job["jobprocstatus"].as_i64().unwrap();
            (job["jobstatus"] == 0 && percent > 0).then_some(percent)
        }
    })
    .await;
    assert!((1..=99).contains(&percent), "{percent}");
    // The backup the operation works on shows it too, with the provider's message.
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "BackingUp", "{b}");
    let on_backup = b["progress"].as_i64().expect("progress on the backup");
    assert!((percent..=99).contains(&on_backup), "{b}");
    let message = b["progressmessage"].as_str().expect("progress message");
    assert!(message.starts_with("scripted backup: "), "{message}");
    s.wait_job(&jobid).await;
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "BackedUp", "{b}");
    assert!(b.get("progress").is_none(), "no progress once settled: {b}");
}

#[tokio::test]
async fn list_backups_says_why_a_backup_is_in_error() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "otto").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "3600",
        Some(&s.zone_id),
    )
    .await;
    set_config(&s, "backup.framework.operation.timeout", "1", None).await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let first = r.ok("createBackup");
    let backup_id = first["id"].as_str().unwrap().to_string();
    let jobid = first["jobid"].as_str().unwrap().to_string();
    assert!(
        get_backup(&user, &backup_id)
            .await
            .get("statusreason")
            .is_none(),
        "no reason while the backup runs"
    );
    s.wait_job(&jobid).await;
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "Error", "{b}");
    let reason = b["statusreason"].as_str().expect("a reason for Error");
    assert!(reason.contains("did not finish"), "{reason}");
    // The failure's event names the provider (the console groups failures by it).
    let r = user
        .call(
            "listEvents",
            &[("type", "BACKUP.CREATE"), ("level", "ERROR")],
        )
        .await;
    let events = items(r.ok("listEvents"), "event");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["provider"], "scripted", "{}", events[0]);
}
