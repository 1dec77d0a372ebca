//! Assigning VMs to offerings and removing them (spec §3.3, §3.4).

use crate::bnr_support::*;

#[tokio::test]
async fn assignment_shows_on_the_vm_and_a_second_one_is_refused() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let silver = import(&s, "silver-policy", "Silver", true).await;
    let user = s.client(s.create_user("fay", "User", None).await);
    let vm = vm(&s, &user, "app", true).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let listed = user.call("listVirtualMachines", &[("id", &id(&vm))]).await;
    let v = &listed.ok("listVirtualMachines")["virtualmachine"][0];
    assert_eq!(v["backupofferingid"], gold["id"]);
    assert_eq!(v["backupofferingname"], "Gold");

    let r = user
        .call(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&vm)),
                ("backupofferingid", &id(&silver)),
            ],
        )
        .await;
    assert_eq!(
        r.err("assignVirtualMachineToBackupOffering", 530),
        "VM already is assigned to a backup offering, please remove the VM from its previous offering"
    );
    let events = s
        .admin()
        .call(
            "listEvents",
            &[("type", "BACKUP.OFFERING.ASSIGN"), ("listall", "true")],
        )
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

#[tokio::test]
async fn another_account_cannot_assign_or_remove_my_vm() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let owner = s.client(s.create_user("gina", "User", None).await);
    let other = s.client(s.create_user("hank", "User", None).await);
    let vm = vm(&s, &owner, "mine", false).await;
    let r = other
        .call(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&vm)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    let text = r.err("assignVirtualMachineToBackupOffering", 530);
    assert!(text.contains("does not have permission"), "{text}");
    assign(&owner, &id(&vm), &id(&gold)).await;
    let r = other
        .call(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &id(&vm))],
        )
        .await;
    r.err("removeVirtualMachineFromBackupOffering", 530);
    // A root admin may act on any VM.
    job_ok(
        &s.admin()
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&vm))],
            )
            .await,
    );
}

#[tokio::test]
async fn only_running_or_stopped_vms_in_the_offerings_zone_can_be_assigned() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("ivan", "User", None).await);
    let stopped = vm(&s, &user, "stopped", false).await;
    stop(&user, &id(&stopped)).await;
    assign(&user, &id(&stopped), &id(&gold)).await;

    // A VM in another zone cannot use this zone's offering.
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
    set_config(&s, "backup.framework.enabled", "true", Some(&zone2)).await;
    let r = user
        .call(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&far)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    let text = r.err("assignVirtualMachineToBackupOffering", 530);
    assert!(text.contains("belongs to zone zone1"), "{text}");
    // …and a zone where B&R is off refuses before anything else.
    set_config(&s, "backup.framework.enabled", "false", Some(&zone2)).await;
    let r = user
        .call(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&far)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    assert_eq!(
        r.err("assignVirtualMachineToBackupOffering", 530),
        "Backup and Recovery feature is disabled for the zone"
    );
}

#[tokio::test]
async fn removal_keeps_backups_flags_them_and_deletes_the_schedules() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("jane", "User", None).await);
    let vm = vm(&s, &user, "keep", false).await;
    let vm_id = id(&vm);
    let r = user
        .call(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &vm_id)],
        )
        .await;
    assert_eq!(
        r.err("removeVirtualMachineFromBackupOffering", 530),
        "No previously configured backup offering found for the VM"
    );
    assign(&user, &vm_id, &id(&gold)).await;
    let b = backup(&user, &vm_id).await;
    assert_eq!(b["vmbackupofferingremoved"], false);
    user.call(
        "createBackupSchedule",
        &[
            ("virtualmachineid", &vm_id),
            ("intervaltype", "HOURLY"),
            ("schedule", "5"),
            ("timezone", "UTC"),
        ],
    )
    .await
    .ok("createBackupSchedule");

    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &vm_id)],
            )
            .await,
    );
    let after = get_backup(&user, &id(&b)).await;
    assert_eq!(after["vmbackupofferingremoved"], true);
    assert_eq!(after["status"], "BackedUp");
    let schedules = user
        .call("listBackupSchedule", &[("virtualmachineid", &vm_id)])
        .await;
    assert_eq!(*schedules.ok("listBackupSchedule"), serde_json::json!({}));
    let listed = user.call("listVirtualMachines", &[("id", &vm_id)]).await;
    assert!(
        listed.ok("listVirtualMachines")["virtualmachine"][0]
            .get("backupofferingid")
            .is_none()
    );
    // Backups stay usable: delete works without an assignment.
    job_ok(&user.call_async("deleteBackup", &[("id", &id(&b))]).await);
    let events = s
        .admin()
        .call(
            "listEvents",
            &[("type", "BACKUP.OFFERING.BACKUPS.DEL"), ("listall", "true")],
        )
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}
