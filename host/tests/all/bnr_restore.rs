//! Restoring backups, restoring single volumes, creating instances from backups (spec §3.7, §3.11).

use serde_json::{Value, json};

use crate::bnr_support::*;
use crate::support_api::*;

/// An offering, a user, a VM with ROOT + DATADISK assigned to it, and one backup.
async fn protected<'a>(s: &'a TestServer, user: &str) -> (Client<'a>, Value, Value) {
    let gold = import(s, "gold-policy", "Gold", true).await;
    let client = s.client(s.create_user(user, "User", None).await);
    let vm = vm(s, &client, &format!("{user}-vm"), true).await;
    assign(&client, &id(&vm), &id(&gold)).await;
    let b = backup(&client, &id(&vm)).await;
    (client, vm, b)
}

async fn vm_state(client: &Client<'_>, vm: &str) -> String {
    let r = client.call("listVirtualMachines", &[("id", vm)]).await;
    r.ok("listVirtualMachines")["virtualmachine"][0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn volumes(client: &Client<'_>, vm: &str) -> Vec<Value> {
    let r = client
        .call("listVolumes", &[("virtualmachineid", vm)])
        .await;
    items(r.ok("listVolumes"), "volume")
        .into_iter()
        .cloned()
        .collect()
}

#[tokio::test]
async fn restore_is_refused_on_a_running_vm_and_leaves_a_stopped_one_stopped() {
    let s = start(Installed::Dummy).await;
    let (user, vm, b) = protected(&s, "tina").await;
    let r = user.call("restoreBackup", &[("id", &id(&b))]).await;
    assert_eq!(
        r.err("restoreBackup", 530),
        "Existing VM should be stopped before being restored from backup"
    );
    assert_eq!(vm_state(&user, &id(&vm)).await, "Running");
    stop(&user, &id(&vm)).await;
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    assert_eq!(job_ok(&done), &json!({"success": true}));
    assert_eq!(vm_state(&user, &id(&vm)).await, "Stopped");
    assert!(
        volumes(&user, &id(&vm))
            .await
            .iter()
            .all(|v| v["state"] == "Ready")
    );
    let events = user.call("listEvents", &[("type", "BACKUP.RESTORE")]).await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

#[tokio::test]
async fn a_failed_restore_returns_the_vm_to_stopped_with_ready_volumes() {
    let s = start(Installed::DummyAndScripted).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let (user, vm, b) = protected(&s, "uma").await;
    stop(&user, &id(&vm)).await;
    set_config(&s, "backup.plugin.scripted.mode", "fail", Some(&s.zone_id)).await;
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(
        text.starts_with(&format!("Error restoring VM from backup [{}]", id(&b))),
        "{text}"
    );
    assert_eq!(vm_state(&user, &id(&vm)).await, "Stopped");
    assert!(
        volumes(&user, &id(&vm))
            .await
            .iter()
            .all(|v| v["state"] == "Ready")
    );
}

#[tokio::test]
async fn volume_restore_is_guarded_by_the_attach_detach_setting() {
    let s = start(Installed::Dummy).await;
    let (user, vm, b) = protected(&s, "vera").await;
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let data_uuid = backed[1]["uuid"].as_str().unwrap().to_string();
    let params = |target: &str| {
        vec![
            ("backupid".to_string(), id(&b)),
            ("volumeid".to_string(), data_uuid.clone()),
            ("virtualmachineid".to_string(), target.to_string()),
        ]
    };
    let call = |p: Vec<(String, String)>| {
        let user = &user;
        async move {
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            user.call("restoreVolumeFromBackupAndAttachToVM", &p).await
        }
    };
    let r = call(params(&id(&vm))).await;
    assert_eq!(
        r.err("restoreVolumeFromBackupAndAttachToVM", 530),
        "The selected VM has backups, cannot restore and attach volume to the VM."
    );
    // A VM without an offering may receive the volume.
    let plain = crate::bnr_support::vm(&s, &user, "plain", false).await;
    let r = call(params(&id(&plain))).await;
    let jobid = r.ok("restoreVolumeFromBackupAndAttachToVM")["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_job(&jobid).await;
    let vols = volumes(&user, &id(&plain)).await;
    assert_eq!(vols.len(), 2);
    let restored = &vols[1];
    assert_eq!(restored["type"], "DATADISK");
    assert_eq!(
        restored["name"],
        format!("RestoredVol-{}", backed_name(&s, &data_uuid).await)
    );
    assert_eq!(restored["size"], backed[1]["size"]);
    assert_eq!(restored["state"], "Ready");

    set_config(&s, "backup.enable.attach.detach.of.volumes", "true", None).await;
    let done = {
        let r = call(params(&id(&vm))).await;
        let jobid = r.ok("restoreVolumeFromBackupAndAttachToVM")["jobid"]
            .as_str()
            .unwrap()
            .to_string();
        s.wait_job(&jobid).await;
        user.call("queryAsyncJobResult", &[("jobid", &jobid)])
            .await
            .ok("queryAsyncJobResult")
            .clone()
    };
    job_ok(&done);
    assert_eq!(volumes(&user, &id(&vm)).await.len(), 3);
    let events = user
        .call("listEvents", &[("type", "BACKUP.RESTORE.VOLUME.TO.VM")])
        .await;
    assert_eq!(events.ok("listEvents")["count"], 2);

    // Now the VM has one disk more than the backup: an in-place restore is refused.
    stop(&user, &id(&vm)).await;
    let r = user.call("restoreBackup", &[("id", &id(&b))]).await;
    assert_eq!(
        r.err("restoreBackup", 530),
        "Unable to restore VM with the current backup as the backup has different number of disks as the VM"
    );
    assert_eq!(vm_state(&user, &id(&vm)).await, "Stopped");

    let mut unknown = params(&id(&plain));
    unknown[1].1 = "not-in-the-backup".into();
    let r = call(unknown).await;
    assert_eq!(
        r.err("restoreVolumeFromBackupAndAttachToVM", 530),
        "Failed to find volume with Id not-in-the-backup in the backed-up volumes metadata"
    );
}

async fn backed_name(s: &TestServer, volume_uuid: &str) -> String {
    let uuid = volume_uuid.to_string();
    s.state
        .store()
        .read(move |c| {
            c.query_row("SELECT name FROM volumes WHERE uuid = ?1", [uuid], |r| {
                r.get(0)
            })
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn volume_restore_across_zones_is_refused() {
    let s = start(Installed::Dummy).await;
    let (user, _vm, b) = protected(&s, "wade").await;
    let z2 = s.admin().call("createZone", &[("name", "zone2")]).await;
    let zone2 = id(&z2.ok("createZone")["zone"]);
    let (so, _, t) = s.catalog().await;
    let far = user
        .call_async(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &t),
                ("zoneid", &zone2),
                ("name", "far"),
            ],
        )
        .await;
    let far = job_ok(&far)["virtualmachine"].clone();
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let r = user
        .call(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", backed[0]["uuid"].as_str().unwrap()),
                ("virtualmachineid", &id(&far)),
            ],
        )
        .await;
    assert_eq!(
        r.err("restoreVolumeFromBackupAndAttachToVM", 530),
        "Cross zone backup restoration of volume is not allowed"
    );
}

#[tokio::test]
async fn create_vm_from_backup_uses_the_backup_metadata_and_starts_it() {
    let s = start(Installed::Dummy).await;
    let (user, vm, b) = protected(&s, "xena").await;
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&vm)), ("forced", "true")],
            )
            .await,
    );
    let r = user
        .call(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("name", "from-backup"),
                ("displayname", "From backup"),
            ],
        )
        .await;
    let first = r.ok("createVMFromBackup");
    let new_id = first["id"].as_str().expect("create-style id").to_string();
    let jobid = first["jobid"].as_str().unwrap().to_string();
    s.wait_job(&jobid).await;
    let done = user.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
    let created = &job_ok(done.ok("queryAsyncJobResult"))["virtualmachine"];
    assert_eq!(created["id"], new_id.as_str());
    assert_eq!(created["name"], "from-backup");
    assert_eq!(created["displayname"], "From backup");
    assert_eq!(created["state"], "Running");
    assert_eq!(created["serviceofferingid"], vm["serviceofferingid"]);
    assert_eq!(created["templateid"], vm["templateid"]);
    assert_eq!(created["zoneid"], s.zone_id.as_str());
    let vols = volumes(&user, &new_id).await;
    assert_eq!(vols.len(), 2, "same number of disks as the backup");
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    assert_eq!(vols[1]["size"], backed[1]["size"]);
    let events = user
        .call("listEvents", &[("type", "VM.CREATE.FROM.BACKUP")])
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);

    let stopped = user
        .call_async(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("name", "cold"),
                ("startvm", "false"),
            ],
        )
        .await;
    assert_eq!(job_ok(&stopped)["virtualmachine"]["state"], "Stopped");
}

#[tokio::test]
async fn create_vm_from_backup_in_another_zone_follows_the_provider_capability() {
    let s = start(Installed::Dummy).await;
    let (user, _vm, b) = protected(&s, "yara").await;
    let z2 = s.admin().call("createZone", &[("name", "zone2")]).await;
    let zone2 = id(&z2.ok("createZone")["zone"]);
    // dummy allows cross-zone instance creation.
    let done = user
        .call_async(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &zone2),
                ("name", "far-copy"),
            ],
        )
        .await;
    assert_eq!(job_ok(&done)["virtualmachine"]["zoneid"], zone2.as_str());

    let r = user
        .call(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("diskofferingid", &s.catalog().await.1),
            ],
        )
        .await;
    r.err("createVMFromBackup", 530);
    let other = s.client(s.create_user("zack", "User", None).await);
    let r = other
        .call(
            "createVMFromBackup",
            &[("backupid", &id(&b)), ("zoneid", &s.zone_id)],
        )
        .await;
    r.err("createVMFromBackup", 530);
}

#[tokio::test]
async fn a_failed_create_vm_from_backup_leaves_no_instance_behind() {
    let s = start(Installed::DummyAndScripted).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let (user, _vm, b) = protected(&s, "abby").await;
    set_config(&s, "backup.plugin.scripted.mode", "fail", Some(&s.zone_id)).await;
    let before = user
        .call("listVirtualMachines", &[])
        .await
        .ok("listVirtualMachines")["count"]
        .clone();
    let r = user
        .call(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("name", "doomed"),
            ],
        )
        .await;
    let jobid = r.ok("createVMFromBackup")["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_job(&jobid).await;
    let done = user.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
    let (code, text) = job_error(done.ok("queryAsyncJobResult"));
    assert_eq!(code, 530);
    assert!(
        text.starts_with("Failed to create Instance doomed from backup"),
        "{text}"
    );
    let after = user
        .call("listVirtualMachines", &[])
        .await
        .ok("listVirtualMachines")["count"]
        .clone();
    assert_eq!(before, after);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM volumes WHERE removed IS NULL AND vm_id IN (SELECT id FROM vms WHERE name = 'doomed')").await, 0);
    // The name is free again.
    set_config(&s, "backup.plugin.scripted.mode", "ok", Some(&s.zone_id)).await;
    job_ok(
        &user
            .call_async(
                "createVMFromBackup",
                &[
                    ("backupid", &id(&b)),
                    ("zoneid", &s.zone_id),
                    ("name", "doomed"),
                ],
            )
            .await,
    );
}

#[tokio::test]
async fn providers_without_the_capabilities_refuse_volume_restore_and_new_instances() {
    let s = start(Installed::DummyAndHostile).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "hostile",
        Some(&s.zone_id),
    )
    .await;
    let fine = import(&s, "fine", "Fine", true).await;
    assert_eq!(fine["provider"], "hostile");
    assert!(fine.get("crosszoneinstancecreation").is_none());
    let user = s.client(s.create_user("bert", "User", None).await);
    let vm = vm(&s, &user, "plain", false).await;
    assign(&user, &id(&vm), &id(&fine)).await;
    let b = backup(&user, &id(&vm)).await;
    assert!(b["externalid"].as_str().unwrap().starts_with("hostile-"));
    let r = user
        .call(
            "createVMFromBackup",
            &[("backupid", &id(&b)), ("zoneid", &s.zone_id)],
        )
        .await;
    assert_eq!(
        r.err("createVMFromBackup", 530),
        "Create instance from backup is not supported for this provider."
    );
    let target = crate::bnr_support::vm(&s, &user, "target", false).await;
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let r = user
        .call(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", backed[0]["uuid"].as_str().unwrap()),
                ("virtualmachineid", &id(&target)),
            ],
        )
        .await;
    assert_eq!(
        r.err("restoreVolumeFromBackupAndAttachToVM", 530),
        "Backup provider hostile does not support restoring a single volume"
    );
    let r = user.call("listVirtualMachines", &[]).await;
    assert_eq!(
        r.ok("listVirtualMachines")["count"],
        2,
        "nothing was allocated"
    );
}

#[tokio::test]
async fn a_destroyed_vm_can_be_restored_and_comes_back_stopped() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("cora", "User", None).await);
    // ROOT only: destroying a VM detaches its data disks, which changes its disk count.
    let vm = vm(&s, &user, "cora-vm", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let b = backup(&user, &id(&vm)).await;
    job_ok(
        &user
            .call_async("destroyVirtualMachine", &[("id", &id(&vm))])
            .await,
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM vms WHERE name = 'cora-vm' AND state = 'Destroyed'"
        )
        .await,
        1
    );
    job_ok(&user.call_async("restoreBackup", &[("id", &id(&b))]).await);
    assert_eq!(vm_state(&user, &id(&vm)).await, "Stopped");
    assert!(
        volumes(&user, &id(&vm))
            .await
            .iter()
            .all(|v| v["state"] == "Ready")
    );
}

#[tokio::test]
async fn expunge_is_guarded_and_orphan_backups_stay_usable() {
    let s = start(Installed::Dummy).await;
    let (user, vm, b) = protected(&s, "dora").await;
    let admin = s.admin();
    let done = admin
        .call_async(
            "destroyVirtualMachine",
            &[("id", &id(&vm)), ("expunge", "true")],
        )
        .await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(text.contains("with 1 backups"), "{text}");
    assert_eq!(
        vm_state(&user, &id(&vm)).await,
        "Running",
        "nothing changed"
    );

    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&vm))],
            )
            .await,
    );
    job_ok(
        &admin
            .call_async(
                "destroyVirtualMachine",
                &[("id", &id(&vm)), ("expunge", "true")],
            )
            .await,
    );
    let orphan = get_backup(&user, &id(&b)).await;
    assert_eq!(orphan["isbackupvmexpunged"], true);
    assert_eq!(orphan["vmbackupofferingremoved"], true);
    let r = user.call("restoreBackup", &[("id", &id(&b))]).await;
    assert_eq!(
        r.err("restoreBackup", 530),
        "The Instance from which the backup was taken could not be found."
    );
    let done = user
        .call_async(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("name", "reborn"),
            ],
        )
        .await;
    assert_eq!(job_ok(&done)["virtualmachine"]["state"], "Running");
    job_ok(&user.call_async("deleteBackup", &[("id", &id(&b))]).await);
}

#[tokio::test]
async fn expunging_an_assigned_vm_without_backups_removes_it_from_the_offering() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("ezra", "User", None).await);
    let vm = vm(&s, &user, "goner", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    job_ok(
        &s.admin()
            .call_async(
                "destroyVirtualMachine",
                &[("id", &id(&vm)), ("expunge", "true")],
            )
            .await,
    );
    // The offering has no assigned VM left: it can be deleted.
    s.admin()
        .call("deleteBackupOffering", &[("id", &id(&gold))])
        .await
        .ok("deleteBackupOffering");
    let events = s
        .admin()
        .call(
            "listEvents",
            &[("type", "BACKUP.OFFERING.REMOVE"), ("listall", "true")],
        )
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}
