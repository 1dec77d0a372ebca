//! Two vendors on one server: a VMware zone backed up by Veeam (`veeam-sim`, TLS and SSH
//! pinned) and a KVM zone backed up by NetWorker (`networker-sim` and its KVM hosts), each
//! through signed API calls. Each vendor sees only its own zone; swapping one zone's provider
//! leaves the other zone's calls and in-flight backups untouched.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::bnr_support::*;
use crate::networker_e2e::{
    Kvm, configure_kvm_zone, import_policy, kvm_vm, networker_simulator, save_set_sizes,
};
use crate::veeam_e2e::{Env, fast, simulator};

/// Requests the Veeam simulator has answered (REST and SSH).
fn veeam_requests(env: &Env) -> (u64, u64) {
    env.sim
        .with_state(|s| (s.counters.requests, s.counters.ssh_commands))
}

/// Requests the NetWorker simulator and its hosts have answered (REST and SSH).
fn networker_requests(kvm: &Kvm) -> (u64, u64) {
    let c = kvm.sim.admin.counters();
    (c.requests.values().sum(), c.ssh_commands)
}

/// The libvirt domain names NetWorker holds save sets of.
fn save_set_names(kvm: &Kvm) -> BTreeSet<String> {
    kvm.sim
        .admin
        .with_state(|s| s.save_sets.iter().map(|set| set.name.clone()).collect())
}

/// The VM names Veeam holds restore points of.
fn restore_point_names(env: &Env) -> BTreeSet<String> {
    env.sim
        .with_state(|s| s.restore_points.iter().map(|p| p.vm_name.clone()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_veeam_zone_and_a_networker_zone_on_one_server_back_up_apart_and_swap_apart() {
    // zone1 (bootstrap) is the VMware zone on Veeam; zone2 the KVM zone on NetWorker.
    let server = start(Installed::DummyVeeamAndNetworker).await;
    let z2 = server
        .admin()
        .call("createZone", &[("name", "zone2")])
        .await;
    let zone2 = id(&z2.ok("createZone")["zone"]);
    let kvm = Kvm {
        s: server.in_zone(&zone2),
        sim: networker_simulator().await,
        _cache: None,
    };
    configure_kvm_zone(&kvm.s, &kvm.sim).await;
    let veeam = Env::on(server, simulator(fast()).await, &[]).await;

    let vera = veeam
        .s
        .client(veeam.s.create_user("vera", "User", None).await);
    let nina = kvm.s.client(kvm.s.create_user("nina", "User", None).await);

    // Each zone lists and imports its own vendor's policies.
    let gold = veeam.gold().await;
    assert_eq!(gold["provider"], "veeam", "{gold}");
    assert_eq!(gold["zoneid"], veeam.s.zone_id.as_str(), "{gold}");
    let veeam_before_kvm = veeam_requests(&veeam);
    let bronze = import_policy(&kvm, "CSBRONZE").await;
    assert_eq!(bronze["provider"], "networker", "{bronze}");
    assert_eq!(bronze["zoneid"], zone2.as_str(), "{bronze}");

    // A KVM instance assigned and backed up through NetWorker: Veeam hears nothing of it.
    let (kvm_vm1, host) = kvm_vm(&kvm, &nina, "kvm-web").await;
    assign(&nina, &id(&kvm_vm1), &id(&bronze)).await;
    let kvm_backup = backup(&nina, &id(&kvm_vm1)).await;
    assert_eq!(kvm_backup["status"], "BackedUp", "{kvm_backup}");
    assert_eq!(kvm_backup["zoneid"], zone2.as_str(), "{kvm_backup}");
    assert_eq!(kvm.sim.admin.host_counters(&host).unwrap().backups, 1);
    assert_eq!(
        veeam_requests(&veeam),
        veeam_before_kvm,
        "Veeam saw nothing of the KVM zone"
    );

    // VMware instances assigned and backed up through Veeam: NetWorker hears nothing of them.
    let networker_before_vmware = networker_requests(&kvm);
    let (vmware_vm1, internal1) = veeam.instance(&vera, "vmw-web").await;
    let (vmware_vm2, internal2) = veeam.instance(&vera, "vmw-db").await;
    for v in [&vmware_vm1, &vmware_vm2] {
        assign(&vera, &id(v), &id(&gold)).await;
    }
    let vmware_backup = backup(&vera, &id(&vmware_vm1)).await;
    assert_eq!(vmware_backup["status"], "BackedUp", "{vmware_backup}");
    assert_eq!(veeam.points(&internal1).len(), 1);
    assert_eq!(
        networker_requests(&kvm),
        networker_before_vmware,
        "NetWorker saw nothing of the VMware zone"
    );

    // Each vendor holds backups of its own zone's instances only.
    let kvm_name = instance_name(&kvm.s, &id(&kvm_vm1)).await;
    assert_eq!(save_set_names(&kvm), BTreeSet::from([kvm_name.clone()]));
    assert_eq!(
        restore_point_names(&veeam),
        BTreeSet::from([internal1.clone()])
    );
    assert_eq!(save_set_sizes(&kvm).len(), 1);
    assert!(
        veeam
            .sim
            .with_state(|s| s.vms.iter().all(|vm| vm.name != kvm_name))
    );

    // Hot swap of the KVM zone to `dummy` while the VMware zone keeps working.
    let swapped = AtomicBool::new(false);
    let first_round_done = Notify::new();
    let vmware_load = async {
        let mut failures = Vec::new();
        let mut backed_up = Vec::new();
        let mut rounds_after_swap = 0;
        // Bounded: enough rounds that several run after the swap, never more than 12.
        for round in 0..12 {
            let was_swapped = swapped.load(Ordering::SeqCst);
            let vm = if round % 2 == 0 {
                &vmware_vm2
            } else {
                &vmware_vm1
            };
            let (backup_id, done) = create_backup(&vera, &id(vm), &[]).await;
            if done["jobstatus"] == 1 {
                backed_up.push(backup_id);
            } else {
                failures.push(format!("createBackup: {done}"));
            }
            for (command, params) in [
                ("listBackups", vec![("virtualmachineid", id(vm))]),
                (
                    "listBackupOfferings",
                    vec![("zoneid", veeam.s.zone_id.clone())],
                ),
                ("listVirtualMachines", vec![("id", id(vm))]),
            ] {
                let params: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = vera.call(command, &params).await;
                if r.status != 200 {
                    failures.push(format!("{command}: {} {}", r.status, r.text));
                }
            }
            first_round_done.notify_one();
            if was_swapped {
                rounds_after_swap += 1;
                if rounds_after_swap == 3 {
                    break;
                }
            }
        }
        (failures, backed_up, rounds_after_swap)
    };
    let swap = async {
        // The swap lands while the load runs: after its first round, with a backup in flight.
        first_round_done.notified().await;
        let r = veeam
            .s
            .admin()
            .call("createBackup", &[("virtualmachineid", &id(&vmware_vm1))])
            .await;
        let in_flight = r.ok("createBackup")["jobid"]
            .as_str()
            .expect("jobid")
            .to_string();
        let networker_before_swap = networker_requests(&kvm);
        set_config(
            &kvm.s,
            "backup.framework.provider.plugin",
            "dummy",
            Some(&zone2),
        )
        .await;
        swapped.store(true, Ordering::SeqCst);
        // New calls in the swapped zone go to `dummy` at once; NetWorker hears nothing more.
        let r = kvm
            .s
            .admin()
            .call("listBackupProviderOfferings", &[("zoneid", &zone2)])
            .await;
        let names: BTreeSet<String> = items(r.ok("listBackupProviderOfferings"), "backupoffering")
            .iter()
            .map(|o| o["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(names.contains("Golden Policy"), "{names:?}");
        assert!(!names.contains("CSBRONZE"), "{names:?}");
        assert_eq!(networker_requests(&kvm), networker_before_swap);
        in_flight
    };
    let ((failures, backed_up, rounds_after_swap), in_flight) = tokio::join!(vmware_load, swap);
    assert!(
        failures.is_empty(),
        "failed calls in the VMware zone: {failures:?}"
    );
    assert!(rounds_after_swap >= 1, "the load ran past the swap");
    veeam.s.wait_job(&in_flight).await;
    let done = veeam
        .s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &in_flight)])
        .await;
    job_ok(done.ok("queryAsyncJobResult"));
    for b in &backed_up {
        assert_eq!(get_backup(&vera, b).await["status"], "BackedUp");
    }
    assert_eq!(
        veeam.points(&internal1).len() + veeam.points(&internal2).len(),
        2 + backed_up.len(),
        "every backup of the VMware zone is a Veeam restore point"
    );
    // NetWorker still holds only the KVM zone's one save set, Veeam only VMware instances.
    assert_eq!(save_set_names(&kvm), BTreeSet::from([kvm_name]));
    assert_eq!(
        restore_point_names(&veeam),
        BTreeSet::from([internal1, internal2])
    );
    veeam.assert_no_live_session();
}
