//! Long provider operations (pending handles polled to the end), deadlines, hot swap of a
//! zone's provider under load, the expunge guard, and recovery after a restart.

use std::sync::Arc;

use serde_json::Value;

use bnr::inventory::ExpungeGuard;

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

#[tokio::test]
async fn pending_operations_are_polled_to_completion() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "lena").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "2",
        Some(&s.zone_id),
    )
    .await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let first = r.ok("createBackup");
    let backup_id = first["id"].as_str().unwrap().to_string();
    // The provider needs at least two seconds; the answer comes at once.
    assert_eq!(get_backup(&user, &backup_id).await["status"], "BackingUp");
    let jobid = first["jobid"].as_str().unwrap().to_string();
    s.wait_job(&jobid).await;
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "BackedUp");
    assert!(b["externalid"].as_str().unwrap().starts_with("scripted-"));
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );

    stop(&user, &id(&vm)).await;
    job_ok(
        &user
            .call_async("restoreBackup", &[("id", &backup_id)])
            .await,
    );
    job_ok(&user.call_async("deleteBackup", &[("id", &backup_id)]).await);
    let r = user
        .call("listBackups", &[("virtualmachineid", &id(&vm))])
        .await;
    assert_eq!(*r.ok("listBackups"), serde_json::json!({}));
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );
}

#[tokio::test]
async fn an_operation_past_its_deadline_is_cancelled_and_fails() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "milo").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "3600",
        Some(&s.zone_id),
    )
    .await;
    set_config(&s, "backup.framework.operation.timeout", "1", None).await;
    let (backup_id, done) = create_backup(&user, &id(&vm), &[]).await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert_eq!(
        text,
        "Backup provider scripted did not finish the backup operation within 1 seconds; it was cancelled"
    );
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "Error");
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );
    let reason = count(
        &s,
        "SELECT COUNT(*) FROM backups WHERE status_reason LIKE '%it was cancelled'",
    )
    .await;
    assert_eq!(reason, 1);
}

#[tokio::test]
async fn a_pending_failure_reported_by_poll_fails_the_job() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "nina").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "1",
        Some(&s.zone_id),
    )
    .await;
    set_config(&s, "backup.plugin.scripted.mode", "fail", Some(&s.zone_id)).await;
    let (backup_id, done) = create_backup(&user, &id(&vm), &[]).await;
    let (_, text) = job_error(&done);
    assert!(text.contains("scripted backup failed on purpose"), "{text}");
    assert_eq!(get_backup(&user, &backup_id).await["status"], "Error");
}

#[tokio::test]
async fn swapping_a_zones_provider_under_load_fails_nothing() {
    let s = start(Installed::DummyAndScripted).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let silver = import(&s, "silver-policy", "Silver", true).await;
    assert_eq!(
        (gold["provider"].as_str(), silver["provider"].as_str()),
        (Some("dummy"), Some("scripted"))
    );
    let creds = s.create_user("owen", "User", None).await;
    let user = s.client(creds.clone());
    let a = vm(&s, &user, "on-dummy", false).await;
    let b = vm(&s, &user, "on-scripted", false).await;
    assign(&user, &id(&a), &id(&gold)).await;
    assign(&user, &id(&b), &id(&silver)).await;
    const ROUNDS: usize = 12;

    let take_and_delete = |vm: String| {
        let user = s.client(creds.clone());
        async move {
            let mut failures = Vec::new();
            for _ in 0..ROUNDS {
                let (bid, done) = create_backup(&user, &vm, &[]).await;
                if done["jobstatus"] != 1 {
                    failures.push(done.to_string());
                    continue;
                }
                // deleteBackup uses the zone's current provider: whichever the swap left.
                let deleted = user.call_async("deleteBackup", &[("id", &bid)]).await;
                if deleted["jobstatus"] != 1 {
                    failures.push(deleted.to_string());
                }
            }
            failures
        }
    };
    let swap = async {
        let mut failures = Vec::new();
        for i in 0..ROUNDS * 2 {
            let name = if i % 2 == 0 { "dummy" } else { "scripted" };
            let r = s
                .admin()
                .call(
                    "updateConfiguration",
                    &[
                        ("name", "backup.framework.provider.plugin"),
                        ("value", name),
                        ("zoneid", &s.zone_id),
                    ],
                )
                .await;
            if r.status != 200 {
                failures.push(r.text.clone());
            }
            let offers = s
                .admin()
                .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
                .await;
            if offers.status != 200 {
                failures.push(offers.text.clone());
            }
            tokio::task::yield_now().await;
        }
        failures
    };
    let (fa, fb, fs) = tokio::join!(take_and_delete(id(&a)), take_and_delete(id(&b)), swap);
    assert!(
        fa.is_empty() && fb.is_empty() && fs.is_empty(),
        "failures: {fa:?} {fb:?} {fs:?}"
    );
    let r = user.call("listBackups", &[]).await;
    assert_eq!(*r.ok("listBackups"), serde_json::json!({}));
    // The registry follows the setting.
    let provider = s
        .state
        .ext::<Arc<bnr::service::BackupService>>()
        .unwrap()
        .providers()
        .for_zone(1, &s.zone_id)
        .unwrap();
    assert_eq!(provider.name(), "scripted");
}

#[tokio::test]
async fn a_long_backup_in_flight_finishes_on_its_provider_across_a_swap() {
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_vm(&s, "pia").await;
    let user = s.client(creds);
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "2",
        Some(&s.zone_id),
    )
    .await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let first = r.ok("createBackup").clone();
    // Swap the zone away and make `scripted` fail new work: the running poll is unaffected
    // by the swap (it holds its provider) and only new calls would see the change.
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "dummy",
        Some(&s.zone_id),
    )
    .await;
    s.wait_job(first["jobid"].as_str().unwrap()).await;
    let b = get_backup(&user, first["id"].as_str().unwrap()).await;
    assert_eq!(b["status"], "BackedUp");
    assert!(b["externalid"].as_str().unwrap().starts_with("scripted-"));
}

#[tokio::test]
async fn the_expunge_guard_refuses_vms_with_backups_and_detaches_the_others() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("quentin", "User", None).await);
    let with_backups = vm(&s, &user, "kept", false).await;
    let without = vm(&s, &user, "empty", false).await;
    let bare = vm(&s, &user, "bare", false).await;
    assign(&user, &id(&with_backups), &id(&gold)).await;
    assign(&user, &id(&without), &id(&gold)).await;
    let b = backup(&user, &id(&with_backups)).await;
    let guard = s
        .state
        .ext::<Arc<dyn ExpungeGuard>>()
        .expect("guard registered")
        .clone();
    let caller = s
        .state
        .store()
        .read(|c| bnr::identity::get_user(c, 1).map(|u| u.caller()))
        .await
        .unwrap();
    let refused = guard
        .before_expunge(&caller, internal_id(&s, id(&with_backups)).await)
        .await
        .expect_err("a VM with backups keeps its offering");
    let text = refused.to_string();
    assert!(text.contains("with 1 backups"), "{text}");
    assert!(
        text.contains("remove the backup offering before proceeding"),
        "{text}"
    );

    guard
        .before_expunge(&caller, internal_id(&s, id(&without)).await)
        .await
        .expect("no backups: detached");
    let r = user
        .call("listVirtualMachines", &[("id", &id(&without))])
        .await;
    assert!(
        r.ok("listVirtualMachines")["virtualmachine"][0]
            .get("backupofferingid")
            .is_none()
    );
    guard
        .before_expunge(&caller, internal_id(&s, id(&bare)).await)
        .await
        .expect("no offering: nothing to do");

    // After the offering is removed, the VM with backups may go; its backups stay.
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&with_backups))],
            )
            .await,
    );
    guard
        .before_expunge(&caller, internal_id(&s, id(&with_backups)).await)
        .await
        .expect("offering removed");
    assert_eq!(get_backup(&user, &id(&b)).await["status"], "BackedUp");
}

#[tokio::test]
async fn work_interrupted_by_a_stop_is_ended_at_the_next_start() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("rita", "User", None).await);
    let vm = vm(&s, &user, "crashy", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let b = backup(&user, &id(&vm)).await;
    let b_uuid = id(&b);
    // What a process killed mid-backup leaves behind: a pending job, a BackingUp backup and its
    // provider operation.
    s.state
        .store()
        .write(move |tx| {
            tx.execute_batch(&format!(
                "INSERT INTO async_jobs(uuid, account_id, user_id, cmd, status, result_code, instance_type, instance_uuid, created)
                   SELECT '5e0c2a4e-1111-4222-8333-944455556666', account_id, 1, 'createBackup', 0, 0, 'Backup', uuid, 0 FROM backups WHERE uuid = '{b_uuid}';
                 UPDATE backups SET status = 'BackingUp' WHERE uuid = '{b_uuid}';
                 INSERT INTO provider_operations(job_id, zone_id, provider, handle, kind, backup_id, deadline, created)
                   SELECT (SELECT id FROM async_jobs WHERE uuid = '5e0c2a4e-1111-4222-8333-944455556666'), zone_id, 'dummy', 'h', 'backup', id, 0, 0
                   FROM backups WHERE uuid = '{b_uuid}';"
            ))
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .unwrap();
    let TestServer { dir, .. } = s;
    let s = start_in(dir, Installed::Dummy).await;
    // The scheduler's resume hook picks the operation up by its handle; the dummy does not
    // know `h`, so the resumed job ends it as a failure.
    s.wait_job("5e0c2a4e-1111-4222-8333-944455556666").await;
    let admin = s.admin();
    let after = get_backup(&admin, &id(&b)).await;
    assert_eq!(after["status"], "Error");
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );
    let job = admin
        .call(
            "queryAsyncJobResult",
            &[("jobid", "5e0c2a4e-1111-4222-8333-944455556666")],
        )
        .await;
    assert_eq!(job.ok("queryAsyncJobResult")["jobstatus"], 2);
}

async fn internal_id(s: &TestServer, uuid: String) -> i64 {
    s.state
        .store()
        .read(move |c| {
            c.query_row("SELECT id FROM vms WHERE uuid = ?1", [uuid], |r| {
                r.get::<i64>(0)
            })
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .unwrap()
}
