//! Tenant isolation, the wire and the store: cross-account access, session CSRF, disabled
//! owners, restart recovery per instance, XML-safe envelopes, logins, secrets at rest.

use axum::http::Method;
use serde_json::Value;

use bnr::scheduler::schedule::IntervalType;
use bnr::scheduler::service::ServiceWork;
use bnr::scheduler::tick::{ScheduledRun, ScheduledWork};
use bnr::service::BackupService;
use std::sync::Arc;

use crate::bnr_support::*;
use crate::sched_support::{exec, scalar};
use crate::support_api::*;

/// A user with a VM (ROOT + DATADISK) assigned to an offering and one backup of it.
async fn protected<'a>(
    s: &'a TestServer,
    offering: &Value,
    user: &str,
) -> (Client<'a>, Value, Value) {
    let client = s.client(s.create_user(user, "User", None).await);
    let vm = vm(s, &client, &format!("{user}-vm"), true).await;
    assign(&client, &id(&vm), &id(offering)).await;
    let b = backup(&client, &id(&vm)).await;
    (client, vm, b)
}

fn data_volume_of_backup(b: &Value) -> String {
    let backed: Value = serde_json::from_str(b["volumes"].as_str().expect("volumes")).unwrap();
    backed[1]["uuid"].as_str().expect("uuid").to_string()
}

async fn volume_count(s: &TestServer, vm: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM volumes WHERE removed IS NULL AND vm_id = (SELECT id FROM vms WHERE uuid = '{vm}')"
    );
    scalar(s, &sql).await
}

#[tokio::test]
async fn a_user_cannot_restore_another_accounts_backup_volume_onto_an_own_vm() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (_alice, _alice_vm, b) = protected(&s, &gold, "alice").await;
    let bob = s.client(s.create_user("bob", "User", None).await);
    let bob_vm = vm(&s, &bob, "bob-vm", false).await;
    let r = bob
        .call(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", &data_volume_of_backup(&b)),
                ("virtualmachineid", &id(&bob_vm)),
            ],
        )
        .await;
    // The B&R commands wrap a permission error into 530, as CloudStack's do.
    let text = r.err("restoreVolumeFromBackupAndAttachToVM", 530);
    assert!(text.contains("does not have permission"), "{text}");
    assert_eq!(volume_count(&s, &id(&bob_vm)).await, 1);
    assert_eq!(
        scalar(
            &s,
            "SELECT COUNT(*) FROM async_jobs WHERE cmd = 'restoreVolumeFromBackupAndAttachToVM'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_root_admin_cannot_restore_one_accounts_backup_volume_onto_another_accounts_vm() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (_alice, _vm, b) = protected(&s, &gold, "alice").await;
    let bob = s.client(s.create_user("bob", "User", None).await);
    let bob_vm = vm(&s, &bob, "bob-vm", false).await;
    let r = s
        .admin()
        .call(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", &data_volume_of_backup(&b)),
                ("virtualmachineid", &id(&bob_vm)),
            ],
        )
        .await;
    let text = r.err("restoreVolumeFromBackupAndAttachToVM", 530);
    assert!(text.contains("different accounts"), "{text}");
    assert_eq!(volume_count(&s, &id(&bob_vm)).await, 1);
}

#[tokio::test]
async fn a_root_admin_cannot_attach_one_accounts_volume_to_another_accounts_vm() {
    let s = TestServer::start().await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    let bob = s.client(s.create_user("bob", "User", None).await);
    let (_, dof, _) = s.catalog().await;
    let done = alice
        .call_async(
            "createVolume",
            &[
                ("name", "alice-data"),
                ("diskofferingid", &dof),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    let volume = id(&done["jobresult"]["volume"]);
    let bob_vm = s.deploy(&bob, "bob-vm", &[]).await;
    let r = s
        .admin()
        .call(
            "attachVolume",
            &[("id", &volume), ("virtualmachineid", &id(&bob_vm))],
        )
        .await;
    let refused = match r
        .json
        .get("attachvolumeresponse")
        .and_then(|v| v.get("jobid"))
    {
        // Checked in the job: it must fail and leave the volume where it was.
        Some(job) => {
            let job = job.as_str().unwrap().to_string();
            s.wait_job(&job).await;
            let done = s
                .admin()
                .call("queryAsyncJobResult", &[("jobid", &job)])
                .await
                .ok("queryAsyncJobResult")
                .clone();
            job_error(&done).1
        }
        None => r.err("attachVolume", 531),
    };
    assert!(refused.contains("different accounts"), "{refused}");
    let listed = alice.call("listVolumes", &[("id", &volume)]).await;
    let v = &listed.ok("listVolumes")["volume"][0];
    assert!(v.get("virtualmachineid").is_none(), "{v}");
    assert_eq!(volume_count(&s, &id(&bob_vm)).await, 1);
}

async fn login(s: &TestServer, user: &str, password: &str) -> Resp {
    s.send(
        Method::POST,
        "/client/api",
        Some(format!(
            "command=login&username={user}&password={password}&domain=%2F&response=json"
        )),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
}

fn cookie_header(r: &Resp) -> String {
    r.set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn a_session_cookie_without_the_sessionkey_parameter_authenticates_nothing() {
    let s = TestServer::start().await;
    let r = login(&s, "admin", ADMIN_PASSWORD).await;
    let key = r.ok("login")["sessionkey"].as_str().unwrap().to_string();
    for c in &r.set_cookies {
        assert!(c.contains("SameSite=Lax"), "{c}");
        assert!(c.contains("HttpOnly"), "{c}");
    }
    let cookies = cookie_header(&r);
    // The cookies alone, as a cross-site link would send them: refused, by GET and by POST.
    for method in [Method::GET, Method::POST] {
        let r = s
            .send(
                method,
                "/client/api?command=listZones&response=json",
                None,
                &[("cookie", &cookies)],
            )
            .await;
        r.err("listZones", 401);
    }
    let before = scalar(&s, "SELECT COUNT(*) FROM zones").await;
    let r = s
        .send(
            Method::GET,
            "/client/api?command=createZone&name=evil&response=json",
            None,
            &[("cookie", &cookies)],
        )
        .await;
    r.err("createZone", 401);
    assert_eq!(scalar(&s, "SELECT COUNT(*) FROM zones").await, before);
    // With the parameter (what cloudmonkey sends) the session works.
    let uri = format!(
        "/client/api?command=listZones&response=json&sessionkey={}",
        encode(&key)
    );
    s.send(Method::GET, &uri, None, &[("cookie", &cookies)])
        .await
        .ok("listZones");
}

#[tokio::test]
async fn logout_needs_a_live_session() {
    let s = TestServer::start().await;
    let r = s
        .send(
            Method::GET,
            "/client/api?command=logout&response=json",
            None,
            &[],
        )
        .await;
    r.err("logout", 401);
    let r = s
        .send(
            Method::GET,
            "/client/api?command=logout&response=json&sessionkey=not-a-session",
            None,
            &[],
        )
        .await;
    r.err("logout", 401);
    let r = login(&s, "admin", ADMIN_PASSWORD).await;
    let key = r.ok("login")["sessionkey"].as_str().unwrap().to_string();
    let cookies = cookie_header(&r);
    // A cookie alone does not end a session either.
    s.send(
        Method::GET,
        "/client/api?command=logout&response=json",
        None,
        &[("cookie", &cookies)],
    )
    .await
    .err("logout", 401);
    let uri = format!(
        "/client/api?command=logout&response=json&sessionkey={}",
        encode(&key)
    );
    let out = s
        .send(Method::GET, &uri, None, &[("cookie", &cookies)])
        .await;
    assert_eq!(out.ok("logout")["description"], "success");
}

#[tokio::test]
async fn a_scheduled_run_for_a_disabled_owner_takes_no_backup() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let creds = s.create_user("dora", "User", None).await;
    let dora = s.client(creds);
    let v = vm(&s, &dora, "dora-vm", false).await;
    assign(&dora, &id(&v), &id(&gold)).await;
    let sched = crate::sched_support::configure_schedule(&dora, &id(&v), "HOURLY", "0", &[]).await;
    let ids = |sql: String| {
        let s = &s;
        async move { scalar(s, &sql).await }
    };
    let vm_id = ids(format!("SELECT id FROM vms WHERE uuid = '{}'", id(&v))).await;
    let schedule_id = ids(format!(
        "SELECT id FROM backup_schedules WHERE uuid = '{}'",
        id(&sched)
    ))
    .await;
    let (account_id, domain_id, user_id, zone_id) = (
        ids(format!("SELECT account_id FROM vms WHERE id = {vm_id}")).await,
        ids(format!("SELECT domain_id FROM vms WHERE id = {vm_id}")).await,
        ids("SELECT MAX(id) FROM users".into()).await,
        ids(format!("SELECT zone_id FROM vms WHERE id = {vm_id}")).await,
    );
    // The run was enqueued while the owner was enabled; the account was disabled since.
    exec(
        &s,
        &format!("UPDATE accounts SET state = 'disabled' WHERE id = {account_id}"),
    )
    .await;
    let service = s
        .state
        .ext::<Arc<BackupService>>()
        .cloned()
        .expect("B&R service");
    let run = ScheduledRun {
        job_uuid: "not-a-job".into(),
        schedule_id,
        schedule_uuid: id(&sched),
        interval: IntervalType::Hourly,
        max_backups: 0,
        quiesce: None,
        slot: 0,
        vm_id,
        vm_uuid: id(&v),
        zone_id,
        account_id,
        domain_id,
        user_id,
    };
    let outcome = ServiceWork::new(service).run(run).await;
    let failure = outcome.expect_err("a disabled owner's run must not take a backup");
    assert!(failure.text.contains("disabled"), "{}", failure.text);
    assert_eq!(scalar(&s, "SELECT COUNT(*) FROM backups").await, 0);
    // The tick does not start it either.
    let report = crate::sched_support::tick(&s, 4_000_000_000).await;
    assert!(report.started.is_empty());
    assert_eq!(scalar(&s, "SELECT COUNT(*) FROM backups").await, 0);
}

#[tokio::test]
async fn restart_recovery_frees_every_instance_whose_restore_no_pending_job_drives() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (_a, vm_a, b_a) = protected(&s, &gold, "ann").await;
    let (_b, vm_b, _b_b) = protected(&s, &gold, "ben").await;
    let (vm_a, vm_b) = (id(&vm_a), id(&vm_b));
    exec(
        &s,
        &format!(
            "UPDATE vms SET state = 'Restoring' WHERE uuid IN ('{vm_a}', '{vm_b}');
             UPDATE volumes SET state = 'Restoring'
               WHERE vm_id IN (SELECT id FROM vms WHERE uuid IN ('{vm_a}', '{vm_b}'));
             INSERT INTO async_jobs(uuid, account_id, user_id, cmd, status, instance_type, instance_uuid, created)
               SELECT 'pending-restore', account_id, (SELECT MIN(id) FROM users WHERE account_id = vms.account_id),
                      'restoreBackup', 0, 'Backup', '{}', 0 FROM vms WHERE uuid = '{vm_a}';",
            id(&b_a)
        ),
    )
    .await;
    let service = s
        .state
        .ext::<Arc<BackupService>>()
        .cloned()
        .expect("B&R service");
    service.recover_interrupted().await.expect("recovery");
    let state = |vm: String| {
        let s = &s;
        async move {
            let sql = format!("SELECT state = 'Restoring' FROM vms WHERE uuid = '{vm}'");
            scalar(s, &sql).await == 1
        }
    };
    assert!(
        state(vm_a.clone()).await,
        "the pending restore still drives A"
    );
    assert!(
        !state(vm_b.clone()).await,
        "nothing drives B: it is given back"
    );
    let restoring_volumes = |vm: String| {
        let s = &s;
        async move {
            let sql = format!(
                "SELECT COUNT(*) FROM volumes WHERE state = 'Restoring'
                 AND vm_id = (SELECT id FROM vms WHERE uuid = '{vm}')"
            );
            scalar(s, &sql).await
        }
    };
    assert_eq!(restoring_volumes(vm_a).await, 2);
    assert_eq!(restoring_volumes(vm_b).await, 0);
}
