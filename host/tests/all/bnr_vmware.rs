//! VMware zones (addVmwareDc) and the restore of an expunged VMware instance.

use serde_json::Value;

use crate::bnr_support::*;
use crate::support_api::*;

async fn add_dc(s: &TestServer, vcenter: &str) -> Value {
    let r = s
        .admin()
        .call(
            "addVmwareDc",
            &[
                ("zoneid", &s.zone_id),
                ("name", "DC1"),
                ("vcenter", vcenter),
                ("username", "administrator@vsphere.local"),
                ("password", "secret"),
            ],
        )
        .await;
    r.ok("addVmwareDc")["vmwaredc"].clone()
}

#[tokio::test]
async fn a_zone_with_a_vmware_datacenter_runs_its_instances_on_vmware() {
    let s = start(Installed::Dummy).await;
    let dc = add_dc(&s, "vcenter.local").await;
    assert_eq!(dc["vcenter"], "vcenter.local");
    assert_eq!(dc["zoneid"], s.zone_id.as_str());

    let listed = s
        .admin()
        .call("listVmwareDcs", &[("zoneid", &s.zone_id)])
        .await;
    let listed = listed.ok("listVmwareDcs");
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["vmwaredc"][0]["name"], "DC1");

    let again = s
        .admin()
        .call(
            "addVmwareDc",
            &[
                ("zoneid", &s.zone_id),
                ("name", "DC2"),
                ("vcenter", "other.local"),
            ],
        )
        .await;
    assert!(again.err("addVmwareDc", 530).contains("already associated"));
    let bad = s
        .admin()
        .call(
            "addVmwareDc",
            &[
                ("zoneid", &s.zone_id),
                ("name", "DC2"),
                ("vcenter", "vc; rm -rf /"),
            ],
        )
        .await;
    assert!(bad.err("addVmwareDc", 431).contains("vcenter"));

    let user = s.client(s.create_user("vera", "User", None).await);
    let v = vm(&s, &user, "vera-vm", false).await;
    let r = s
        .admin()
        .call(
            "listVirtualMachines",
            &[("id", &id(&v)), ("listall", "true")],
        )
        .await;
    let listed = &r.ok("listVirtualMachines")["virtualmachine"][0];
    assert_eq!(listed["hypervisor"], "VMware");
    assert!(
        listed["instancename"].as_str().unwrap().starts_with("i-"),
        "{listed}"
    );

    let refused = s
        .admin()
        .call("removeVmwareDc", &[("zoneid", &s.zone_id)])
        .await;
    assert!(
        refused
            .err("removeVmwareDc", 530)
            .contains("VMware instances")
    );
}

#[tokio::test]
async fn non_admins_cannot_see_or_change_vmware_datacenters() {
    let s = start(Installed::Dummy).await;
    let user = s.client(s.create_user("una", "User", None).await);
    let r = user
        .call(
            "addVmwareDc",
            &[
                ("zoneid", &s.zone_id),
                ("name", "DC1"),
                ("vcenter", "vc.local"),
            ],
        )
        .await;
    assert!([401, 432, 531].contains(&r.status), "{}", r.text);
}

#[tokio::test]
async fn restoring_an_expunged_vmware_instance_brings_it_back_from_the_backup() {
    let s = start(Installed::Dummy).await;
    add_dc(&s, "vcenter.local").await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("xena", "User", None).await);
    let v = vm(&s, &user, "xena-vm", true).await;
    assign(&user, &id(&v), &id(&gold)).await;
    let b = backup(&user, &id(&v)).await;
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&v))],
            )
            .await,
    );
    job_ok(
        &s.admin()
            .call_async(
                "destroyVirtualMachine",
                &[("id", &id(&v)), ("expunge", "true")],
            )
            .await,
    );
    assert_eq!(get_backup(&user, &id(&b)).await["isbackupvmexpunged"], true);

    job_ok(&user.call_async("restoreBackup", &[("id", &id(&b))]).await);

    let r = user.call("listVirtualMachines", &[("id", &id(&v))]).await;
    let back = &r.ok("listVirtualMachines")["virtualmachine"][0];
    assert_eq!(back["state"], "Stopped");
    assert_eq!(back["hypervisor"], "VMware");
    assert!(
        back.get("nic")
            .is_none_or(|n| n.as_array().is_none_or(Vec::is_empty)),
        "no NICs: {back}"
    );
    let r = user
        .call("listVolumes", &[("virtualmachineid", &id(&v))])
        .await;
    let vols = items(r.ok("listVolumes"), "volume");
    let backed_up = b["volumes"]
        .as_str()
        .map(|s| serde_json::from_str::<Vec<Value>>(s).unwrap().len());
    assert_eq!(
        Some(vols.len()),
        backed_up,
        "one volume per backed-up volume"
    );
    assert!(vols.iter().all(|v| v["state"] == "Ready"));
    assert_eq!(
        get_backup(&user, &id(&b)).await["isbackupvmexpunged"],
        false
    );
}

#[tokio::test]
async fn an_expunged_instance_outside_vmware_stays_gone() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("yuri", "User", None).await);
    let v = vm(&s, &user, "yuri-vm", false).await;
    assign(&user, &id(&v), &id(&gold)).await;
    let b = backup(&user, &id(&v)).await;
    job_ok(
        &user
            .call_async(
                "removeVirtualMachineFromBackupOffering",
                &[("virtualmachineid", &id(&v))],
            )
            .await,
    );
    job_ok(
        &s.admin()
            .call_async(
                "destroyVirtualMachine",
                &[("id", &id(&v)), ("expunge", "true")],
            )
            .await,
    );
    let r = user.call("restoreBackup", &[("id", &id(&b))]).await;
    assert_eq!(
        r.err("restoreBackup", 530),
        "The Instance from which the backup was taken could not be found."
    );
}
