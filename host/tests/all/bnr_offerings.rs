//! Backup offerings: import, list, update, delete (spec §3.2).

use crate::bnr_support::*;
use crate::support_api::*;

#[tokio::test]
async fn an_imported_offering_is_listed_with_cloudstack_fields() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    assert_eq!(gold["name"], "Gold");
    assert_eq!(gold["description"], "Gold description");
    assert_eq!(gold["externalid"], "gold-policy");
    assert_eq!(gold["provider"], "dummy");
    assert_eq!(gold["allowuserdrivenbackups"], true);
    assert_eq!(gold["zoneid"], s.zone_id.as_str());
    assert_eq!(gold["zonename"], "zone1");
    assert_eq!(gold["crosszoneinstancecreation"], true);
    assert!(gold["created"].as_str().unwrap().ends_with("+0000"));

    let listed = s
        .admin()
        .call("listBackupOfferings", &[("zoneid", &s.zone_id)])
        .await;
    let inner = listed.ok("listBackupOfferings");
    assert_eq!(inner["count"], 1);
    assert_eq!(inner["backupoffering"][0], gold);
    let by_id = s
        .admin()
        .call("listBackupOfferings", &[("id", &id(&gold))])
        .await;
    assert_eq!(
        by_id.ok("listBackupOfferings")["backupoffering"][0]["id"],
        gold["id"]
    );

    let events = s
        .admin()
        .call("listEvents", &[("type", "BACKUP.IMPORT.OFFERING")])
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

async fn import_call(s: &TestServer, ext: &str, name: &str) -> Resp {
    s.admin()
        .call(
            "importBackupOffering",
            &[
                ("zoneid", &s.zone_id),
                ("externalid", ext),
                ("name", name),
                ("description", "d"),
                ("allowuserdrivenbackups", "true"),
            ],
        )
        .await
}

#[tokio::test]
async fn import_refuses_duplicates_and_policies_the_provider_does_not_know() {
    let s = start(Installed::Dummy).await;
    import(&s, "gold-policy", "Gold", true).await;
    let dup_ext = import_call(&s, "gold-policy", "Other").await;
    assert_eq!(
        dup_ext.err("importBackupOffering", 530),
        "A backup offering with external ID gold-policy already exists"
    );
    let dup_name = import_call(&s, "silver-policy", "Gold").await;
    assert_eq!(
        dup_name.err("importBackupOffering", 530),
        "A backup offering with the same name already exists in this zone"
    );
    // The provider is asked in the job.
    let r = import_call(&s, "platinum-policy", "Platinum").await;
    let jobid = r.ok("importBackupOffering")["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_job(&jobid).await;
    let done = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    let (code, text) = job_error(done.ok("queryAsyncJobResult"));
    assert_eq!(code, 530);
    assert!(
        text.starts_with("Backup offering 'platinum-policy' does not exist on provider dummy"),
        "{text}"
    );
    let listed = s.admin().call("listBackupOfferings", &[]).await;
    assert_eq!(listed.ok("listBackupOfferings")["count"], 1);
}

#[tokio::test]
async fn users_only_see_user_driven_offerings_and_keyword_is_a_name_substring() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold Backups", true).await;
    let sla = import(&s, "silver-policy", "Silver SLA", false).await;
    let user = s.client(s.create_user("dave", "User", None).await);
    let seen = user.call("listBackupOfferings", &[]).await;
    let inner = seen.ok("listBackupOfferings");
    assert_eq!(inner["count"], 1);
    assert_eq!(inner["backupoffering"][0]["id"], gold["id"]);
    let admin_seen = s.admin().call("listBackupOfferings", &[]).await;
    assert_eq!(admin_seen.ok("listBackupOfferings")["count"], 2);
    // By id, a user still gets the SLA offering (CloudStack returns it regardless).
    let by_id = user.call("listBackupOfferings", &[("id", &id(&sla))]).await;
    assert_eq!(
        by_id.ok("listBackupOfferings")["backupoffering"][0]["id"],
        sla["id"]
    );

    let kw = s
        .admin()
        .call("listBackupOfferings", &[("keyword", "sla")])
        .await;
    let inner = kw.ok("listBackupOfferings");
    assert_eq!(inner["count"], 1);
    assert_eq!(inner["backupoffering"][0]["id"], sla["id"]);
    let none = s
        .admin()
        .call("listBackupOfferings", &[("keyword", "bronze")])
        .await;
    assert_eq!(*none.ok("listBackupOfferings"), serde_json::json!({}));
    let paged = s
        .admin()
        .call("listBackupOfferings", &[("page", "2"), ("pagesize", "1")])
        .await;
    let inner = paged.ok("listBackupOfferings");
    assert_eq!(inner["count"], 2);
    assert_eq!(inner["backupoffering"][0]["id"], sla["id"]);
}

#[tokio::test]
async fn update_changes_only_the_given_fields_and_needs_one() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let r = s
        .admin()
        .call("updateBackupOffering", &[("id", &id(&gold))])
        .await;
    let text = r.err("updateBackupOffering", 431);
    assert!(
        text.contains("Missing one of the following parameters"),
        "{text}"
    );

    let r = s
        .admin()
        .call(
            "updateBackupOffering",
            &[("id", &id(&gold)), ("allowuserdrivenbackups", "false")],
        )
        .await;
    let o = &r.ok("updateBackupOffering")["backupoffering"];
    assert_eq!(o["allowuserdrivenbackups"], false);
    assert_eq!(o["name"], "Gold");
    let r = s
        .admin()
        .call(
            "updateBackupOffering",
            &[
                ("id", &id(&gold)),
                ("name", "Gold 2"),
                ("description", "new"),
            ],
        )
        .await;
    let o = &r.ok("updateBackupOffering")["backupoffering"];
    assert_eq!(
        (o["name"].as_str(), o["description"].as_str()),
        (Some("Gold 2"), Some("new"))
    );
    assert_eq!(o["allowuserdrivenbackups"], false);

    let silver = import(&s, "silver-policy", "Silver", true).await;
    let r = s
        .admin()
        .call(
            "updateBackupOffering",
            &[("id", &id(&silver)), ("name", "Gold 2")],
        )
        .await;
    r.err("updateBackupOffering", 431);

    s.admin()
        .call("deleteBackupOffering", &[("id", &id(&silver))])
        .await
        .ok("deleteBackupOffering");
    let r = s
        .admin()
        .call(
            "updateBackupOffering",
            &[("id", &id(&silver)), ("name", "x")],
        )
        .await;
    let text = r.err("updateBackupOffering", 431);
    assert!(
        text.starts_with("Unable to find Backup Offering with id"),
        "{text}"
    );
    let r = s
        .admin()
        .call(
            "updateBackupOffering",
            &[
                ("id", "5d0fd8b0-0000-4000-8000-000000000000"),
                ("name", "x"),
            ],
        )
        .await;
    r.err("updateBackupOffering", 431);

    let events = s
        .admin()
        .call("listEvents", &[("type", "BACKUP.OFFERING.EDIT")])
        .await;
    assert_eq!(events.ok("listEvents")["count"], 2);
}

#[tokio::test]
async fn delete_is_refused_while_backups_or_assigned_vms_reference_the_offering() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("erin", "User", None).await);
    let vm = vm(&s, &user, "web", false).await;
    assign(&user, &id(&vm), &id(&gold)).await;
    let r = s
        .admin()
        .call("deleteBackupOffering", &[("id", &id(&gold))])
        .await;
    assert_eq!(
        r.err("deleteBackupOffering", 530),
        "Backup offering is assigned to VMs, remove the assignment(s) in order to remove the offering."
    );
    let b = backup(&user, &id(&vm)).await;
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&vm))],
            )
            .await,
    );
    let r = s
        .admin()
        .call("deleteBackupOffering", &[("id", &id(&gold))])
        .await;
    assert_eq!(
        r.err("deleteBackupOffering", 530),
        "Backup Offering cannot be removed as it has backups associated with it."
    );
    job_ok(&user.call_async("deleteBackup", &[("id", &id(&b))]).await);
    let r = s
        .admin()
        .call("deleteBackupOffering", &[("id", &id(&gold))])
        .await;
    assert_eq!(r.ok("deleteBackupOffering")["success"], true);
    let listed = s.admin().call("listBackupOfferings", &[]).await;
    assert_eq!(*listed.ok("listBackupOfferings"), serde_json::json!({}));
    // Deleted offerings can be imported again under the same name and external id.
    import(&s, "gold-policy", "Gold", true).await;
    let r = s
        .admin()
        .call("deleteBackupOffering", &[("id", &id(&gold))])
        .await;
    r.err("deleteBackupOffering", 530);
}
