//! Taking, listing and deleting backups (spec §3.6, §3.8, listBackups).

use serde_json::json;

use crate::bnr_support::*;
use crate::support_api::*;

#[tokio::test]
async fn create_backup_answers_id_and_jobid_and_the_backup_ends_backed_up() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("mia", "User", None).await);
    let vm = vm(&s, &user, "web01", true).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let (backup_id, done) = create_backup(&user, &id(&vm), &[]).await;
    assert_eq!(job_ok(&done), &json!({"success": true}));
    assert_eq!(done["jobinstancetype"], "Backup");
    assert_eq!(done["jobinstanceid"], backup_id.as_str());

    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "BackedUp");
    assert_eq!(b["type"], "FULL");
    assert_eq!(b["virtualmachineid"], vm["id"]);
    assert_eq!(b["virtualmachinename"], "web01");
    assert_eq!(b["backupofferingid"], gold["id"]);
    assert_eq!(b["backupofferingname"], "Gold");
    assert_eq!(b["account"], "mia");
    assert_eq!(b["zoneid"], s.zone_id.as_str());
    assert_eq!(b["zone"], "zone1");
    assert_eq!(b["intervaltype"], "MANUAL");
    assert_eq!(b["vmbackupofferingremoved"], false);
    assert_eq!(b["isbackupvmexpunged"], false);
    assert!(b["externalid"].as_str().unwrap().starts_with("dummy-"));
    let name = b["name"].as_str().unwrap();
    assert!(
        name.starts_with("web01-") && name.ends_with("+0000"),
        "{name}"
    );
    // `volumes` is a JSON string (CloudStack's Gson field names), sorted by device id.
    let volumes: serde_json::Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let volumes = volumes.as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0]["type"], "ROOT");
    assert_eq!(volumes[0]["deviceId"], 0);
    assert_eq!(volumes[1]["type"], "DATADISK");
    assert!(volumes[1]["diskOfferingId"].is_string());
    let total: i64 = volumes.iter().map(|v| v["size"].as_i64().unwrap()).sum();
    assert_eq!(b["size"], total);
    assert_eq!(b["virtualsize"], total);
    assert!(b.get("vmdetails").is_none());

    let with = user
        .call(
            "listBackups",
            &[("id", &backup_id), ("listvmdetails", "true")],
        )
        .await;
    let details = &with.ok("listBackups")["backup"][0]["vmdetails"];
    assert_eq!(details["serviceofferingid"], vm["serviceofferingid"]);
    assert_eq!(details["templateid"], vm["templateid"]);
    assert_eq!(details["serviceofferingname"], vm["serviceofferingname"]);
    assert_eq!(details["hypervisor"], "Simulator");

    let events = user.call("listEvents", &[("type", "BACKUP.CREATE")]).await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

#[tokio::test]
async fn names_descriptions_and_refusals_of_create_backup() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("noah", "User", None).await);
    let vm = vm(&s, &user, "named", false).await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    assert_eq!(
        r.err("createBackup", 530),
        "VM has not backup offering configured, cannot create backup before assigning it to a backup offering"
    );
    assign(&user, &id(&vm), &id(&gold)).await;
    let (bid, done) = create_backup(
        &user,
        &id(&vm),
        &[("name", "nightly"), ("description", "before upgrade")],
    )
    .await;
    job_ok(&done);
    let b = get_backup(&user, &bid).await;
    assert_eq!(
        (b["name"].as_str(), b["description"].as_str()),
        (Some("nightly"), Some("before upgrade"))
    );
    let r = user
        .call(
            "createBackup",
            &[("virtualmachineid", &id(&vm)), ("quiescevm", "false")],
        )
        .await;
    let text = r.err("createBackup", 530);
    assert!(
        text.starts_with("Quiesce VM option is supported only"),
        "{text}"
    );
    let r = user.call("createBackup", &[]).await;
    let text = r.err("createBackup", 431);
    assert!(text.contains("virtualmachineid"), "{text}");
    let other = s.client(s.create_user("olga", "User", None).await);
    let r = other
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    r.err("createBackup", 530);
    // Refusals leave nothing behind.
    let listed = s.admin().call("listBackups", &[("listall", "true")]).await;
    assert_eq!(listed.ok("listBackups")["count"], 1);
}

#[tokio::test]
async fn sla_offerings_refuse_ad_hoc_backups_of_users_but_not_of_root_admins() {
    let s = start(Installed::Dummy).await;
    let sla = import(&s, "silver-policy", "SLA", false).await;
    let user = s.client(s.create_user("pat", "User", None).await);
    let vm = vm(&s, &user, "sla-vm", false).await;
    assign(&user, &id(&vm), &id(&sla)).await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    assert_eq!(
        r.err("createBackup", 530),
        "The assigned backup offering does not allow ad-hoc user backup"
    );
    let b = backup(&s.admin(), &id(&vm)).await;
    assert_eq!(b["status"], "BackedUp");
    assert_eq!(
        b["account"], "pat",
        "the owner of a backup is the VM's owner"
    );
}

#[tokio::test]
async fn two_accounts_cannot_see_each_others_backups() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    let bob = s.client(s.create_user("bob", "User", None).await);
    let va = vm(&s, &alice, "alice-vm", false).await;
    let vb = vm(&s, &bob, "bob-vm", false).await;
    assign(&alice, &id(&va), &id(&gold)).await;
    assign(&bob, &id(&vb), &id(&gold)).await;
    let ba = backup(&alice, &id(&va)).await;
    let bb = backup(&bob, &id(&vb)).await;

    for (client, mine, theirs, their_vm) in [(&alice, &ba, &bb, &vb), (&bob, &bb, &ba, &va)] {
        for extra in [vec![], vec![("listall", "true")]] {
            let r = client.call("listBackups", &extra).await;
            let inner = r.ok("listBackups");
            assert_eq!(inner["count"], 1);
            assert_eq!(inner["backup"][0]["id"], mine["id"]);
        }
        let r = client.call("listBackups", &[("id", &id(theirs))]).await;
        assert_eq!(*r.ok("listBackups"), json!({}));
        let r = client
            .call("listBackups", &[("virtualmachineid", &id(their_vm))])
            .await;
        r.err("listBackups", 530);
        let r = client.call("deleteBackup", &[("id", &id(theirs))]).await;
        r.err("deleteBackup", 530);
        let r = client.call("restoreBackup", &[("id", &id(theirs))]).await;
        r.err("restoreBackup", 530);
    }
    let all = s.admin().call("listBackups", &[("listall", "true")]).await;
    assert_eq!(all.ok("listBackups")["count"], 2);
    let own = s.admin().call("listBackups", &[]).await;
    assert_eq!(
        *own.ok("listBackups"),
        json!({}),
        "without listall an admin sees its own"
    );
}

#[tokio::test]
async fn list_backups_filters_pages_and_counts_exactly() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let silver = import(&s, "silver-policy", "Silver", true).await;
    let user = s.client(s.create_user("quinn", "User", None).await);
    let v1 = vm(&s, &user, "alpha", false).await;
    let v2 = vm(&s, &user, "beta", false).await;
    assign(&user, &id(&v1), &id(&gold)).await;
    assign(&user, &id(&v2), &id(&silver)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (b, d) = create_backup(&user, &id(&v1), &[("name", &format!("a-{i}"))]).await;
        job_ok(&d);
        ids.push(b);
    }
    let (b2, d) = create_backup(&user, &id(&v2), &[("name", "b-0")]).await;
    job_ok(&d);

    let count = |r: Resp| r.ok("listBackups")["count"].as_i64().unwrap_or(0);
    assert_eq!(count(user.call("listBackups", &[]).await), 4);
    assert_eq!(
        count(
            user.call("listBackups", &[("virtualmachineid", &id(&v1))])
                .await
        ),
        3
    );
    assert_eq!(
        count(
            user.call("listBackups", &[("backupofferingid", &id(&silver))])
                .await
        ),
        1
    );
    assert_eq!(
        count(user.call("listBackups", &[("zoneid", &s.zone_id)]).await),
        4
    );
    assert_eq!(count(user.call("listBackups", &[("name", "a-1")]).await), 1);
    assert_eq!(
        count(user.call("listBackups", &[("name", "a-")]).await),
        0,
        "name is exact"
    );
    assert_eq!(
        count(user.call("listBackups", &[("keyword", "A-")]).await),
        3,
        "keyword: backup name"
    );
    assert_eq!(
        count(user.call("listBackups", &[("keyword", "bet")]).await),
        1,
        "keyword: VM name"
    );
    let page = user
        .call("listBackups", &[("page", "2"), ("pagesize", "2")])
        .await;
    let inner = page.ok("listBackups");
    assert_eq!(inner["count"], 4, "count is the total, not the page");
    let got: Vec<&str> = items(inner, "backup")
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), b2.as_str()]);
    let beyond = user
        .call("listBackups", &[("page", "9"), ("pagesize", "2")])
        .await;
    assert_eq!(*beyond.ok("listBackups"), json!({"count": 4}));

    job_ok(&user.call_async("deleteBackup", &[("id", &ids[0])]).await);
    assert_eq!(count(user.call("listBackups", &[]).await), 3);
    assert_eq!(
        count(
            user.call("listBackups", &[("backupofferingid", &id(&gold))])
                .await
        ),
        2
    );
    let r = user.call("deleteBackup", &[("id", &ids[0])]).await;
    r.err("deleteBackup", 530);
    let events = user.call("listEvents", &[("type", "BACKUP.DELETE")]).await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

#[tokio::test]
async fn a_provider_failure_marks_the_backup_error_with_the_reason() {
    let s = start(Installed::DummyAndScripted).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    assert_eq!(gold["provider"], "scripted");
    let user = s.client(s.create_user("ray", "User", None).await);
    let vm = vm(&s, &user, "flaky", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    set_config(&s, "backup.plugin.scripted.mode", "fail", Some(&s.zone_id)).await;
    let (bid, done) = create_backup(&user, &id(&vm), &[]).await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(
        text.starts_with("Backup provider scripted failed:"),
        "{text}"
    );
    assert!(text.contains("failed on purpose"), "{text}");
    let b = get_backup(&user, &bid).await;
    assert_eq!(b["status"], "Error");
    assert!(b.get("externalid").is_none());
    let errors = user
        .call(
            "listEvents",
            &[("type", "BACKUP.CREATE"), ("level", "ERROR")],
        )
        .await;
    assert_eq!(errors.ok("listEvents")["count"], 1);
    // An Error backup had nothing stored on the provider: it is deleted without asking it.
    job_ok(&user.call_async("deleteBackup", &[("id", &bid)]).await);

    set_config(
        &s,
        "backup.plugin.scripted.mode",
        "outage",
        Some(&s.zone_id),
    )
    .await;
    let r = user
        .call(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&vm)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    r.err("assignVirtualMachineToBackupOffering", 530);
    let done = user
        .call_async(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &id(&vm))],
        )
        .await;
    let (_, text) = job_error(&done);
    assert!(
        text.starts_with(
            "Failed to remove Instance from backup offering: Backup provider scripted failed"
        ),
        "{text}"
    );
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&vm)), ("forced", "true")],
            )
            .await,
    );
}

#[tokio::test]
async fn delete_backup_uses_the_zones_current_provider() {
    let s = start(Installed::DummyAndScripted).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("sam", "User", None).await);
    let vm = vm(&s, &user, "swap", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let b = backup(&user, &id(&vm)).await;
    // The zone now runs `scripted`, which is in an outage: the dummy backup cannot be deleted.
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    set_config(
        &s,
        "backup.plugin.scripted.mode",
        "outage",
        Some(&s.zone_id),
    )
    .await;
    let done = user.call_async("deleteBackup", &[("id", &id(&b))]).await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(
        text.starts_with("Failed to delete the backup: Backup provider scripted failed"),
        "{text}"
    );
    assert_eq!(get_backup(&user, &id(&b)).await["status"], "BackedUp");
    set_config(&s, "backup.plugin.scripted.mode", "ok", Some(&s.zone_id)).await;
    job_ok(&user.call_async("deleteBackup", &[("id", &id(&b))]).await);
    // Backups still use their offering's provider (dummy) while the zone runs scripted.
    let b2 = backup(&user, &id(&vm)).await;
    assert!(b2["externalid"].as_str().unwrap().starts_with("dummy-"));
}
