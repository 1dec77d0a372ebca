//! Rendered answers of read-only commands kept in memory (`api::answers`): each measured read
//! command is answered from memory while nothing changed, and a write through the API is seen
//! by the very next read.

use serde_json::{Value, json};

use crate::bnr_support::*;
use crate::support_api::*;
use bnr::jobs::{JobFuture, JobSpec};

/// Reads `command` until its answer comes from memory (a write landing between a read and
/// keeping its answer leaves nothing kept); returns the answer.
async fn read_kept(
    s: &TestServer,
    client: &Client<'_>,
    command: &str,
    params: &[(&str, &str)],
) -> Value {
    let mut previous: Option<Value> = None;
    for _ in 0..50 {
        let hits = s.state.answers.hits();
        let answer = client.call(command, params).await.ok(command).clone();
        if s.state.answers.hits() > hits {
            if let Some(previous) = previous {
                assert_eq!(
                    previous, answer,
                    "{command}: the kept answer is the one read"
                );
            }
            return answer;
        }
        previous = Some(answer);
    }
    panic!("{command}: the answer was never served from memory");
}

#[tokio::test]
async fn list_zones_sees_a_new_zone() {
    let s = start(Installed::Dummy).await;
    let admin = s.admin();
    let before = read_kept(&s, &admin, "listZones", &[]).await;
    assert_eq!(before["count"], 1, "{before}");
    admin
        .call(
            "createZone",
            &[("name", "zone2"), ("networktype", "Advanced")],
        )
        .await
        .ok("createZone");
    let after = admin.call("listZones", &[]).await;
    let after = after.ok("listZones");
    assert_eq!(after["count"], 2, "{after}");
    assert!(
        items(after, "zone").iter().any(|z| z["name"] == "zone2"),
        "{after}"
    );
}

#[tokio::test]
async fn list_backup_offerings_sees_a_renamed_offering() {
    let s = start(Installed::Dummy).await;
    let offering = import(&s, "gold-policy", "Gold", true).await;
    let admin = s.admin();
    let before = read_kept(&s, &admin, "listBackupOfferings", &[]).await;
    assert_eq!(before["backupoffering"][0]["name"], "Gold", "{before}");
    admin
        .call(
            "updateBackupOffering",
            &[("id", &id(&offering)), ("name", "Platinum")],
        )
        .await
        .ok("updateBackupOffering");
    let after = admin.call("listBackupOfferings", &[]).await;
    assert_eq!(
        after.ok("listBackupOfferings")["backupoffering"][0]["name"],
        "Platinum"
    );
}

#[tokio::test]
async fn list_virtual_machines_sees_a_stopped_vm_and_answers_each_caller_its_own() {
    let s = start(Installed::Dummy).await;
    let creds = s.create_user("vmowner", "User", None).await;
    let user = s.client(creds);
    let vm = vm(&s, &user, "kept", false).await;
    let before = read_kept(&s, &user, "listVirtualMachines", &[]).await;
    assert_eq!(before["virtualmachine"][0]["state"], "Running", "{before}");
    // The same parameters from another caller: that caller's answer, not the kept one.
    let other = s.create_user("other", "User", None).await;
    let theirs = s.client(other).call("listVirtualMachines", &[]).await;
    assert_eq!(*theirs.ok("listVirtualMachines"), json!({}));
    stop(&user, &id(&vm)).await;
    let after = user.call("listVirtualMachines", &[]).await;
    assert_eq!(
        after.ok("listVirtualMachines")["virtualmachine"][0]["state"],
        "Stopped"
    );
}

#[tokio::test]
async fn list_backups_sees_a_new_and_a_deleted_backup() {
    let s = start(Installed::Dummy).await;
    let offering = import(&s, "gold-policy", "Gold", true).await;
    let admin = s.admin();
    let vm = vm(&s, &admin, "backed", false).await;
    assign(&admin, &id(&vm), &id(&offering)).await;
    let page = [("page", "1"), ("pagesize", "20")];
    let empty = read_kept(&s, &admin, "listBackups", &page).await;
    assert_eq!(empty, json!({}));
    let taken = backup(&admin, &id(&vm)).await;
    let listed = admin.call("listBackups", &page).await;
    let listed = listed.ok("listBackups");
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["backup"][0]["id"], taken["id"]);
    let kept = read_kept(&s, &admin, "listBackups", &page).await;
    assert_eq!(kept["count"], 1);
    let done = admin
        .call_async("deleteBackup", &[("id", &id(&taken))])
        .await;
    job_ok(&done);
    let after = admin.call("listBackups", &page).await;
    assert_eq!(*after.ok("listBackups"), json!({}));
}

#[tokio::test]
async fn list_backup_schedule_sees_an_updated_schedule() {
    let s = start(Installed::Dummy).await;
    let offering = import(&s, "gold-policy", "Gold", true).await;
    let admin = s.admin();
    let vm = id(&vm(&s, &admin, "scheduled", false).await);
    assign(&admin, &vm, &id(&offering)).await;
    let schedule = |text| {
        [
            ("virtualmachineid", vm.as_str()),
            ("intervaltype", "DAILY"),
            ("schedule", text),
            ("timezone", "UTC"),
            ("maxbackups", "3"),
        ]
    };
    admin
        .call("createBackupSchedule", &schedule("00:01"))
        .await
        .ok("createBackupSchedule");
    let by_vm = [("virtualmachineid", vm.as_str())];
    let before = read_kept(&s, &admin, "listBackupSchedule", &by_vm).await;
    assert_eq!(before["backupschedule"][0]["schedule"], "00:01", "{before}");
    admin
        .call("updateBackupSchedule", &schedule("30:02"))
        .await
        .ok("updateBackupSchedule");
    let after = admin.call("listBackupSchedule", &by_vm).await;
    assert_eq!(
        after.ok("listBackupSchedule")["backupschedule"][0]["schedule"],
        "30:02"
    );
}

#[tokio::test]
async fn query_async_job_result_sees_the_job_finish() {
    let s = start(Installed::Dummy).await;
    let (account, user): (i64, i64) = s
        .state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT account_id, id FROM users WHERE username = 'admin'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("admin ids");
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let work: JobFuture = Box::pin(async move {
        let _ = gate.await;
        Ok(json!({"success": true}))
    });
    let spec = JobSpec {
        account_id: account,
        user_id: user,
        cmd: "testCommand".into(),
        instance_type: None,
        instance_uuid: None,
    };
    let jobid = s
        .state
        .jobs()
        .submit(spec, work, None)
        .await
        .expect("submit");
    let admin = s.admin();
    let pending = read_kept(&s, &admin, "queryAsyncJobResult", &[("jobid", &jobid)]).await;
    assert_eq!(pending["jobstatus"], 0, "{pending}");
    release.send(()).expect("job waiting");
    s.wait_job(&jobid).await;
    let done = admin
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    let done = done.ok("queryAsyncJobResult");
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"], json!({"success": true}));
}

#[tokio::test]
async fn a_kept_answer_still_needs_a_valid_signature_and_an_enabled_user() {
    let s = start(Installed::Dummy).await;
    let creds = s.create_user("checked", "User", None).await;
    let user = s.client(creds.clone());
    read_kept(&s, &user, "listZones", &[]).await;
    let forged = s.client(Creds {
        api_key: creds.api_key.clone(),
        secret_key: "not-the-secret".into(),
    });
    let r = forged.call("listZones", &[]).await;
    r.err("listZones", 401);
    let listed = s
        .admin()
        .call("listUsers", &[("username", "checked")])
        .await;
    let user_id = listed.ok("listUsers")["user"][0]["id"]
        .as_str()
        .expect("user id")
        .to_string();
    s.admin()
        .call("disableUser", &[("id", &user_id)])
        .await
        .ok("disableUser");
    let r = user.call("listZones", &[]).await;
    r.err("listZones", 401);
}

#[tokio::test]
async fn with_kept_answers_off_every_read_comes_from_the_store() {
    let s = start(Installed::Dummy).await;
    let admin = s.admin();
    read_kept(&s, &admin, "listZones", &[]).await;
    s.state.answers.set_enabled(false);
    assert!(
        s.state.answers.is_empty(),
        "turning keeping off drops what is kept"
    );
    let hits = s.state.answers.hits();
    for _ in 0..5 {
        let zones = admin.call("listZones", &[]).await;
        assert_eq!(zones.ok("listZones")["count"], 1);
    }
    assert_eq!(
        s.state.answers.hits(),
        hits,
        "no read was answered from memory"
    );
    assert!(s.state.answers.is_empty(), "nothing was kept");
    admin
        .call(
            "createZone",
            &[("name", "zone2"), ("networktype", "Advanced")],
        )
        .await
        .ok("createZone");
    let after = admin.call("listZones", &[]).await;
    assert_eq!(after.ok("listZones")["count"], 2);
}
