//! The Veeam provider end to end: signed API calls to bnr, the real `bnr_veeam.wasm` in the
//! sandbox, and `veeam-sim` started in-process with HTTPS (certificate pinned in the zone) and
//! its PowerShell-over-SSH side (host key pinned in the zone). Every test ends with no live
//! Enterprise Manager session on the simulator.

use std::time::{Duration, Instant};

use serde_json::Value;
use veeam_sim::{Config, Profile, RestoreResult, Running, TaskOutcome, Timing};

use crate::bnr_support::*;
use crate::sched_support::{HOUR, backups_of, configure_schedule, next_run, sync, tick};
use crate::support_api::*;

const SIM_PASSWORD: &str = "Sim-P@ss-4711";
const VCENTER: &str = "vcenter.local";

/// Short phases: a task, a job run and a restore session each finish within a few polls.
pub(crate) fn fast() -> Timing {
    Timing {
        task_phase_ms: 5,
        job_run_ms: 50,
        restore_phase_ms: 10,
        session_idle_ms: 10 * 60 * 1000,
    }
}

pub(crate) async fn simulator(timing: Timing) -> Running {
    simulator_as(Profile::V12, timing).await
}

async fn simulator_as(profile: Profile, timing: Timing) -> Running {
    let running = veeam_sim::start(Config {
        ssh_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: true,
        password: SIM_PASSWORD.into(),
        vcenter: VCENTER.into(),
        profile,
        timing,
        ..Default::default()
    })
    .await
    .expect("veeam-sim starts");
    // The ESXi hosts bnr's simulated inventory places instances on.
    running.with_state(|s| s.esxi_hosts = (1..=8).map(|i| format!("10.0.0.{i}")).collect());
    running
}

/// bnr with the Veeam provider, and the simulator its VMware zone points at.
pub(crate) struct Env {
    pub s: TestServer,
    pub sim: Running,
}

impl Env {
    async fn start() -> Env {
        Self::start_with(fast(), &[]).await
    }

    /// Zone settings in `overrides` replace (an empty value: leave unset) the working ones.
    async fn start_with(timing: Timing, overrides: &[(&str, &str)]) -> Env {
        Self::start_on(simulator(timing).await, overrides).await
    }

    async fn start_on(sim: Running, overrides: &[(&str, &str)]) -> Env {
        Self::on(start(Installed::DummyAndVeeam).await, sim, overrides).await
    }

    /// Makes `s.zone_id` a VMware zone backed up by `veeam` against `sim`.
    pub(crate) async fn on(s: TestServer, sim: Running, overrides: &[(&str, &str)]) -> Env {
        s.admin()
            .call(
                "addVmwareDc",
                &[
                    ("zoneid", &s.zone_id),
                    ("name", "DC1"),
                    ("vcenter", VCENTER),
                ],
            )
            .await
            .ok("addVmwareDc");
        let env = Env { s, sim };
        env.configure(overrides).await;
        env
    }

    async fn configure(&self, overrides: &[(&str, &str)]) {
        let sim = &self.sim;
        let url = sim.url();
        let pin = sim.cert_sha256.clone().expect("TLS on");
        let ssh_port = sim.ssh.expect("SSH on").port().to_string();
        let host_key = sim.ssh_host_key_fingerprint.clone().expect("SSH on");
        let working = [
            ("backup.framework.provider.plugin", "veeam"),
            ("backup.plugin.veeam.url", url.as_str()),
            ("backup.plugin.veeam.password", SIM_PASSWORD),
            ("backup.plugin.veeam.tls.pinned.cert", pin.as_str()),
            ("backup.plugin.veeam.ssh.port", ssh_port.as_str()),
            ("backup.plugin.veeam.ssh.host.key", host_key.as_str()),
            ("backup.plugin.veeam.vcenter", VCENTER),
            ("backup.plugin.veeam.task.poll.interval", "1"),
        ];
        for (name, value) in working {
            let value = overrides
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(value, |(_, v)| *v);
            if !value.is_empty() {
                set_config(&self.s, name, value, Some(&self.s.zone_id)).await;
            }
        }
        for (name, value) in overrides {
            if !working.iter().any(|(n, _)| n == name) {
                set_config(&self.s, name, value, Some(&self.s.zone_id)).await;
            }
        }
    }

    /// The UID of the simulator's template job `name`, as `listBackupProviderOfferings` shows it.
    async fn policy(&self, name: &str) -> String {
        let r = self
            .s
            .admin()
            .call(
                "listBackupProviderOfferings",
                &[("zoneid", &self.s.zone_id)],
            )
            .await;
        let listed = items(r.ok("listBackupProviderOfferings"), "backupoffering");
        listed
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no policy {name}: {listed:?}"))["externalid"]
            .as_str()
            .expect("externalid")
            .to_string()
    }

    /// Imports the simulator's `Gold` template job as a user-driven offering.
    pub(crate) async fn gold(&self) -> Value {
        let uid = self.policy("Gold").await;
        import(&self.s, &uid, "Gold", true).await
    }

    /// A VMware instance of `client` with a data disk, known to the simulated vCenter.
    pub(crate) async fn instance(&self, client: &Client<'_>, name: &str) -> (Value, String) {
        let v = vm(&self.s, client, name, true).await;
        let internal = self.internal_name(&id(&v)).await;
        self.sim.with_state(|s| s.add_vm(&internal));
        (v, internal)
    }

    async fn internal_name(&self, vm: &str) -> String {
        instance_name(&self.s, vm).await
    }

    /// The simulator's restore points of VM `internal`, oldest first: (guid, full).
    pub(crate) fn points(&self, internal: &str) -> Vec<(String, bool)> {
        self.sim.with_state(|s| {
            let mut points: Vec<_> = s
                .restore_points
                .iter()
                .filter(|p| p.vm_name == internal)
                .map(|p| (p.created, p.guid.clone(), p.full))
                .collect();
            points.sort();
            points.into_iter().map(|(_, g, f)| (g, f)).collect()
        })
    }

    /// The simulator's per-instance job of `internal`, with the names it includes.
    fn job_of(&self, internal: &str) -> Option<(String, Vec<String>)> {
        self.sim.with_state(|s| {
            s.jobs
                .iter()
                .find(|j| j.name.starts_with(&format!("{internal}-CSBKP-")))
                .map(|j| {
                    (
                        j.guid.clone(),
                        j.includes.iter().map(|i| i.name.clone()).collect(),
                    )
                })
        })
    }

    pub(crate) fn assert_no_live_session(&self) {
        assert_eq!(
            self.sim.live_sessions(),
            0,
            "every EM session was logged out"
        );
    }
}

/// The provider error text of a failed synchronous call.
fn provider_error(r: &Resp, command: &str) -> String {
    let text = r.err(command, 530);
    assert!(text.contains("veeam"), "names the provider: {text}");
    text
}

fn same_guid(a: &str, b: &str) -> bool {
    a.rsplit(':')
        .next()
        .unwrap_or(a)
        .eq_ignore_ascii_case(b.rsplit(':').next().unwrap_or(b))
}

async fn volumes_of(client: &Client<'_>, vm: &str) -> Vec<Value> {
    let r = client
        .call(
            "listVolumes",
            &[("virtualmachineid", vm), ("listall", "true")],
        )
        .await;
    items(r.ok("listVolumes"), "volume")
        .into_iter()
        .cloned()
        .collect()
}

async fn vm_state(client: &Client<'_>, vm: &str) -> String {
    let r = client
        .call("listVirtualMachines", &[("id", vm), ("listall", "true")])
        .await;
    r.ok("listVirtualMachines")["virtualmachine"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_whole_life_of_a_veeam_protected_instance_through_the_api() {
    let env = Env::start().await;
    let s = &env.s;

    // 1. Import: the simulator's template jobs are the provider's offerings.
    let gold = env.gold().await;
    assert_eq!(gold["name"], "Gold");
    assert_eq!(gold["provider"], "veeam");

    // 2. Assign: a per-instance job cloned from the template, with the VM in it.
    let user = s.client(s.create_user("vicky", "User", None).await);
    let (v, internal) = env.instance(&user, "vicky-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    let (job, included) = env.job_of(&internal).expect("the clone exists");
    assert!(included.contains(&internal), "{included:?}");

    // 3. Back up: the restore point the job made is the backup.
    let full = backup(&user, &id(&v)).await;
    assert_eq!(full["status"], "BackedUp");
    assert_eq!(full["type"], "Full");
    let points = env.points(&internal);
    assert_eq!(points.len(), 1);
    assert!(same_guid(
        full["externalid"].as_str().unwrap(),
        &points[0].0
    ));

    // 4. A second backup is an increment of the same chain.
    let incr = backup(&user, &id(&v)).await;
    assert_eq!(incr["type"], "Increment");
    let points = env.points(&internal);
    assert_eq!(points.len(), 2);
    assert!(same_guid(
        incr["externalid"].as_str().unwrap(),
        &points[1].0
    ));
    assert_eq!(
        points.iter().map(|p| p.1).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(backups_of(&user, &id(&v)).await.len(), 2);

    // 5. Restore in place: Success and Warning restore, Failed fails with Veeam's reason.
    stop(&user, &id(&v)).await;
    for result in [RestoreResult::Success, RestoreResult::Warning] {
        env.sim
            .with_state(|st| st.faults.restore_result = result.clone());
        let done = user
            .call_async("restoreBackup", &[("id", &id(&incr))])
            .await;
        job_ok(&done);
        assert_eq!(vm_state(&user, &id(&v)).await, "Stopped");
    }
    let restored: Vec<String> = env.sim.with_state(|st| {
        st.restore_sessions
            .values()
            .map(|r| r.restore_point.clone())
            .collect()
    });
    assert_eq!(restored.len(), 2);
    assert!(
        restored
            .iter()
            .all(|p| same_guid(p, incr["externalid"].as_str().unwrap())),
        "exactly the chosen point was restored: {restored:?}"
    );
    env.sim
        .with_state(|st| st.faults.restore_result = RestoreResult::Failed);
    let done = user
        .call_async("restoreBackup", &[("id", &id(&full))])
        .await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(text.contains("simulated datastore error"), "{text}");
    env.sim
        .with_state(|st| st.faults.restore_result = RestoreResult::Success);
    assert_eq!(vm_state(&user, &id(&v)).await, "Stopped");
    assert!(
        volumes_of(&user, &id(&v))
            .await
            .iter()
            .all(|vol| vol["state"] == "Ready")
    );
    assert_eq!(backups_of(&user, &id(&v)).await.len(), 2, "nothing lost");

    // 6. One volume to another instance (one without backups).
    let (other, _) = env.instance(&user, "vicky-other").await;
    let backed: Value = serde_json::from_str(full["volumes"].as_str().unwrap()).unwrap();
    let data_disk = backed[1]["uuid"].as_str().unwrap().to_string();
    let before = volumes_of(&user, &id(&other)).await.len();
    let done = user
        .call_async(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&full)),
                ("volumeid", &data_disk),
                ("virtualmachineid", &id(&other)),
            ],
        )
        .await;
    job_ok(&done);
    assert_eq!(volumes_of(&user, &id(&other)).await.len(), before + 1);
    let temporary: Vec<String> = env.sim.with_state(|st| {
        st.restore_sessions
            .values()
            .filter_map(|r| r.new_vm_name.clone())
            .collect()
    });
    assert!(
        temporary.iter().any(|n| n.starts_with("CS-RSTR-")),
        "{temporary:?}"
    );

    // 7. A new instance from the backup: Veeam restores the point under the new name.
    let r = user
        .call(
            "createVMFromBackup",
            &[
                ("backupid", &id(&incr)),
                ("zoneid", &s.zone_id),
                ("name", "vicky-copy"),
            ],
        )
        .await;
    let first = r.ok("createVMFromBackup");
    let copy = first["id"].as_str().unwrap().to_string();
    let jobid = first["jobid"].as_str().unwrap().to_string();
    s.wait_job(&jobid).await;
    let done = user.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
    let created = &job_ok(done.ok("queryAsyncJobResult"))["virtualmachine"];
    assert_eq!(created["id"], copy.as_str());
    assert_eq!(created["hypervisor"], "VMware");
    let copy_internal = env.internal_name(&copy).await;
    let names: Vec<String> = env.sim.with_state(|st| {
        st.restore_sessions
            .values()
            .filter_map(|r| r.new_vm_name.clone())
            .collect()
    });
    assert!(names.contains(&copy_internal), "{names:?}");

    // 8. Delete: Veeam drops chains, so only a forced delete goes, and takes the chain.
    let r = user.call("deleteBackup", &[("id", &id(&full))]).await;
    let refused = r.err("deleteBackup", 530);
    assert!(refused.contains("forced"), "{refused}");
    assert_eq!(env.points(&internal).len(), 2, "nothing deleted");
    let done = user
        .call_async("deleteBackup", &[("id", &id(&full)), ("forced", "true")])
        .await;
    job_ok(&done);
    assert!(
        env.points(&internal).is_empty(),
        "the chain is gone on Veeam"
    );
    assert!(backups_of(&user, &id(&v)).await.is_empty());

    // 9. Remove from the offering: the per-instance job goes.
    let done = user
        .call_async(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &id(&v))],
        )
        .await;
    job_ok(&done);
    assert!(env.job_of(&internal).is_none());

    // 10. Assign the same instance again: a new job, and backups work again.
    assign(&user, &id(&v), &id(&gold)).await;
    let (again, included) = env.job_of(&internal).expect("a new clone");
    assert_ne!(again, job);
    assert!(included.contains(&internal));
    let fresh = backup(&user, &id(&v)).await;
    assert_eq!(fresh["type"], "Full");

    env.assert_no_live_session();
    let counters = env.sim.with_state(|st| st.counters.clone());
    assert_eq!(counters.logons, counters.logouts, "{counters:?}");
}

#[tokio::test]
async fn an_expunged_vmware_instance_comes_back_from_its_veeam_backup_without_nics() {
    let env = Env::start().await;
    let s = &env.s;
    let gold = env.gold().await;
    let user = s.client(s.create_user("xavi", "User", None).await);
    let (v, internal) = env.instance(&user, "xavi-vm").await;
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
    assert!(
        volumes_of(&user, &id(&v))
            .await
            .iter()
            .all(|vol| vol["state"] == "Ready")
    );
    let restored: Vec<String> = env.sim.with_state(|st| {
        st.restore_sessions
            .values()
            .map(|r| r.restore_point.clone())
            .collect()
    });
    assert_eq!(restored.len(), 1);
    assert!(same_guid(&restored[0], b["externalid"].as_str().unwrap()));
    assert_eq!(env.points(&internal).len(), 1, "the backup is kept");
    env.assert_no_live_session();
}

#[tokio::test]
async fn scheduled_runs_back_up_through_veeam_and_veeams_retention_reaches_bnr_by_sync() {
    let env = Env::start().await;
    let s = &env.s;
    let gold = env.gold().await;
    let user = s.client(s.create_user("sami", "User", None).await);
    let (v, internal) = env.instance(&user, "sami-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;

    // Retention is the Veeam job's: bnr refuses a count of its own, as CloudStack does.
    let r = user
        .call(
            "createBackupSchedule",
            &[
                ("virtualmachineid", &id(&v)),
                ("intervaltype", "HOURLY"),
                ("schedule", "05"),
                ("timezone", "UTC"),
                ("maxbackups", "2"),
            ],
        )
        .await;
    let refused = r.err("createBackupSchedule", 530);
    assert!(refused.contains("retention"), "{refused}");

    let hourly = id(&configure_schedule(&user, &id(&v), "HOURLY", "05", &[]).await);
    // The job keeps two points per VM, as if its template said so.
    let (job, _) = env.job_of(&internal).expect("job");
    env.sim
        .with_state(|st| st.job_mut(&job).expect("job").retain_points = 2);
    let h0 = next_run(&user, &hourly).await;
    for k in 0..3 {
        let report = tick(s, h0 + k * HOUR).await;
        assert_eq!(report.started.len(), 1, "run {k}");
    }
    // Veeam merged the oldest point away; bnr still lists three until it syncs.
    let on_veeam = env.points(&internal);
    assert_eq!(on_veeam.len(), 2);
    assert_eq!(backups_of(&user, &id(&v)).await.len(), 3);
    let report = sync(s, h0 + 3 * HOUR).await;
    let reconciled = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("the zone was reconciled");
    assert_eq!(reconciled.retired, 1, "{reconciled:?}");
    let kept = backups_of(&user, &id(&v)).await;
    assert_eq!(kept.len(), 2);
    for (backup, (point, _)) in kept.iter().zip(&on_veeam) {
        assert!(same_guid(backup["externalid"].as_str().unwrap(), point));
        assert_eq!(backup["intervaltype"], "HOURLY");
    }
    env.assert_no_live_session();
}

#[tokio::test]
async fn veeam_11_and_12_3_with_unknown_elements_back_up_restore_and_sync_alike() {
    for profile in [Profile::V11, Profile::V12_3] {
        let env = Env::start_on(simulator_as(profile, fast()).await, &[]).await;
        env.sim.with_state(|st| st.faults.extra_elements = true);
        let s = &env.s;
        let gold = env.gold().await;
        let user = s.client(s.create_user("pia", "User", None).await);
        let (v, internal) = env.instance(&user, "pia-vm").await;
        assign(&user, &id(&v), &id(&gold)).await;
        let full = backup(&user, &id(&v)).await;
        let incr = backup(&user, &id(&v)).await;
        assert_eq!(
            (&full["type"], &incr["type"]),
            (&"Full".into(), &"Increment".into())
        );
        stop(&user, &id(&v)).await;
        job_ok(
            &user
                .call_async("restoreBackup", &[("id", &id(&incr))])
                .await,
        );
        let report = sync(s, jiff::Timestamp::now().as_second()).await;
        let reconciled = report.zone(&s.zone_id).unwrap().reconciled.clone().unwrap();
        assert_eq!(
            (reconciled.adopted, reconciled.retired),
            (0, 0),
            "{profile:?}: {reconciled:?}"
        );
        let listed = backups_of(&user, &id(&v)).await;
        let points = env.points(&internal);
        assert_eq!(listed.len(), 2);
        for (backup, (point, _)) in listed.iter().zip(&points) {
            assert!(same_guid(backup["externalid"].as_str().unwrap(), point));
            // Sizes come from the points' backup files (metrics per point).
            assert!(backup["size"].as_u64().unwrap_or(0) > 0, "{backup}");
        }
        env.assert_no_live_session();
    }
}

// ---- Bad input and faults: each ends in a clear error with nothing lost ----

#[tokio::test]
async fn failed_restores_to_a_new_instance_or_volume_leave_nothing_behind() {
    let env = Env::start().await;
    let s = &env.s;
    let gold = env.gold().await;
    let user = s.client(s.create_user("fred", "User", None).await);
    let (v, _) = env.instance(&user, "fred-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    let b = backup(&user, &id(&v)).await;
    let (other, _) = env.instance(&user, "fred-other").await;
    let instances_before = {
        let r = user.call("listVirtualMachines", &[]).await;
        items(r.ok("listVirtualMachines"), "virtualmachine").len()
    };
    env.sim
        .with_state(|st| st.faults.restore_result = RestoreResult::Failed);

    let r = user
        .call(
            "createVMFromBackup",
            &[
                ("backupid", &id(&b)),
                ("zoneid", &s.zone_id),
                ("name", "fred-copy"),
            ],
        )
        .await;
    let jobid = r.ok("createVMFromBackup")["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_job(&jobid).await;
    let done = user.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
    let (_, text) = job_error(done.ok("queryAsyncJobResult"));
    assert!(text.contains("simulated datastore error"), "{text}");
    let r = user.call("listVirtualMachines", &[]).await;
    assert_eq!(
        items(r.ok("listVirtualMachines"), "virtualmachine").len(),
        instances_before,
        "the instance allocated for the restore is gone"
    );

    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let before = volumes_of(&user, &id(&other)).await;
    let done = user
        .call_async(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", backed[1]["uuid"].as_str().unwrap()),
                ("virtualmachineid", &id(&other)),
            ],
        )
        .await;
    let (_, text) = job_error(&done);
    assert!(text.contains("simulated datastore error"), "{text}");
    let after = volumes_of(&user, &id(&other)).await;
    assert_eq!(after.len(), before.len(), "nothing attached");
    assert!(after.iter().all(|vol| vol["state"] == "Ready"));
    assert_eq!(get_backup(&user, &id(&b)).await["status"], "BackedUp");
    env.assert_no_live_session();
}

#[tokio::test]
async fn wrong_credentials_are_named_by_their_setting() {
    let env = Env::start_with(fast(), &[("backup.plugin.veeam.password", "not-it")]).await;
    let r = env
        .s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &env.s.zone_id)])
        .await;
    let text = provider_error(&r, "listBackupProviderOfferings");
    assert!(
        text.contains("backup.plugin.veeam.username")
            && text.contains("backup.plugin.veeam.password"),
        "{text}"
    );
    assert!(
        !text.contains("not-it"),
        "the password is never shown: {text}"
    );
    env.assert_no_live_session();
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let closed = crate::support_peers::free_port();
    let url = format!("https://127.0.0.1:{closed}/api/");
    let env = Env::start_with(fast(), &[("backup.plugin.veeam.url", &url)]).await;
    let r = env
        .s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &env.s.zone_id)])
        .await;
    let text = provider_error(&r, "listBackupProviderOfferings");
    assert!(text.contains("unreachable"), "{text}");
    assert_eq!(env.sim.with_state(|st| st.counters.requests), 0);
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_certificate_that_does_not_match_the_pin_is_refused() {
    let other = "ab".repeat(32);
    let env = Env::start_with(
        fast(),
        &[("backup.plugin.veeam.tls.pinned.cert", other.as_str())],
    )
    .await;
    let r = env
        .s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &env.s.zone_id)])
        .await;
    let text = provider_error(&r, "listBackupProviderOfferings");
    assert!(
        text.contains("backup.plugin.veeam.tls.pinned.cert"),
        "{text}"
    );
    assert_eq!(
        env.sim.with_state(|st| st.counters.requests),
        0,
        "nothing was sent to an untrusted server"
    );
    env.assert_no_live_session();
}

#[tokio::test]
async fn an_unpinned_ssh_host_key_is_refused_with_its_fingerprint() {
    let env = Env::start_with(fast(), &[("backup.plugin.veeam.ssh.host.key", "")]).await;
    let gold = env.gold().await;
    let user = env.s.client(env.s.create_user("una", "User", None).await);
    let (v, internal) = env.instance(&user, "una-vm").await;
    let done = user
        .call_async(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&v)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    let (_, text) = job_error(&done);
    let fingerprint = env.sim.ssh_host_key_fingerprint.clone().unwrap();
    assert!(text.contains(&fingerprint), "shows the key to pin: {text}");
    assert!(text.contains("backup.plugin.veeam.ssh.host.key"), "{text}");
    assert_eq!(env.sim.with_state(|st| st.counters.ssh_commands), 0);
    assert!(env.job_of(&internal).is_none(), "nothing made on Veeam");
    let r = user.call("listVirtualMachines", &[("id", &id(&v))]).await;
    assert!(
        r.ok("listVirtualMachines")["virtualmachine"][0]
            .get("backupofferingid")
            .is_none(),
        "the instance stays unassigned"
    );
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_non_vmware_instance_is_refused() {
    let sim = simulator(fast()).await;
    let s = start(Installed::DummyAndVeeam).await;
    // Deployed before the zone has a VMware datacenter: a KVM instance.
    let creds = s.create_user("kim", "User", None).await;
    let v = vm(&s, &s.client(creds.clone()), "kim-vm", false).await;
    s.admin()
        .call(
            "addVmwareDc",
            &[
                ("zoneid", &s.zone_id),
                ("name", "DC1"),
                ("vcenter", VCENTER),
            ],
        )
        .await
        .ok("addVmwareDc");
    let env = Env { s, sim };
    env.configure(&[]).await;
    let gold = env.gold().await;
    let user = env.s.client(creds);
    let done = user
        .call_async(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&v)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    let (_, text) = job_error(&done);
    assert!(text.contains("VMware instances only"), "{text}");
    assert!(env.sim.with_state(|st| st.jobs.iter().all(|j| !j.cloned)));
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_policy_that_vanished_from_veeam_fails_the_assignment_clearly() {
    let env = Env::start().await;
    let gold = env.gold().await;
    env.sim
        .with_state(|st| st.jobs.retain(|j| j.name != "Gold"));
    let user = env.s.client(env.s.create_user("vana", "User", None).await);
    let (v, internal) = env.instance(&user, "vana-vm").await;
    let done = user
        .call_async(
            "assignVirtualMachineToBackupOffering",
            &[
                ("virtualmachineid", &id(&v)),
                ("backupofferingid", &id(&gold)),
            ],
        )
        .await;
    let (_, text) = job_error(&done);
    assert!(text.contains("no longer exists"), "{text}");
    assert!(env.job_of(&internal).is_none());
    env.assert_no_live_session();
}

#[tokio::test]
async fn an_em_session_expiring_in_the_middle_of_a_poll_is_logged_on_again() {
    let env = Env::start_with(
        Timing {
            job_run_ms: 1500,
            ..fast()
        },
        &[],
    )
    .await;
    let gold = env.gold().await;
    let user = env.s.client(env.s.create_user("sven", "User", None).await);
    let (v, _) = env.instance(&user, "sven-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    let r = user
        .call("createBackup", &[("virtualmachineid", &id(&v))])
        .await;
    let first = r.ok("createBackup");
    let backup_id = first["id"].as_str().unwrap().to_string();
    let jobid = first["jobid"].as_str().unwrap().to_string();
    // Once the call that started the job has logged out, the session of the next request (a
    // poll's) expires under it.
    let started = Instant::now();
    let logouts_at_start = loop {
        let (task, logouts) = env
            .sim
            .with_state(|st| (!st.tasks.is_empty(), st.counters.logouts));
        if task {
            break logouts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (logons, logouts) = loop {
        let (logons, logouts) = env
            .sim
            .with_state(|st| (st.counters.logons, st.counters.logouts));
        if logouts > logouts_at_start {
            env.sim.with_state(|st| st.faults.unauthorized = 1);
            break (logons, logouts);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the start call never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    env.s.wait_job(&jobid).await;
    let done = user
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await
        .ok("queryAsyncJobResult")
        .clone();
    job_ok(&done);
    assert_eq!(get_backup(&user, &backup_id).await["status"], "BackedUp");
    let (left, logons_after, logouts_after) = env.sim.with_state(|st| {
        (
            st.faults.unauthorized,
            st.counters.logons,
            st.counters.logouts,
        )
    });
    assert_eq!(left, 0, "the 401 was served");
    // Every call logs on once and out once; the poll that met the 401 logged on once more.
    assert_eq!(
        (logons_after - logons) - (logouts_after - logouts),
        1,
        "exactly one re-logon"
    );
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_server_error_during_sync_deletes_nothing_in_bnr() {
    let env = Env::start().await;
    let gold = env.gold().await;
    let user = env.s.client(env.s.create_user("sara", "User", None).await);
    let (v, _) = env.instance(&user, "sara-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    let b = backup(&user, &id(&v)).await;
    env.sim.with_state(|st| {
        st.faults.server_error = 1000;
        st.faults.server_error_path = "query".into();
    });
    let now = jiff::Timestamp::now().as_second();
    let report = sync(&env.s, now).await;
    let reconciled = report
        .zone(&env.s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("reconciliation ran");
    assert_eq!(reconciled.retired, 0);
    assert!(
        !reconciled.failed.is_empty() || reconciled.stopped.is_some(),
        "{reconciled:?}"
    );
    let kept = backups_of(&user, &id(&v)).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], b["id"]);
    assert_eq!(kept[0]["status"], "BackedUp");

    env.sim.with_state(|st| st.faults.server_error = 0);
    let report = sync(&env.s, now + 60).await;
    let reconciled = report
        .zone(&env.s.zone_id)
        .unwrap()
        .reconciled
        .clone()
        .unwrap();
    assert!(reconciled.failed.is_empty() && reconciled.stopped.is_none());
    assert_eq!(reconciled.retired, 0);
    assert_eq!(backups_of(&user, &id(&v)).await.len(), 1);
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_job_that_never_finishes_ends_in_error_at_its_deadline() {
    let env = Env::start().await;
    set_config(
        &env.s,
        "backup.framework.operation.timeouts",
        "veeam:backup=3",
        None,
    )
    .await;
    let gold = env.gold().await;
    let user = env.s.client(env.s.create_user("nina", "User", None).await);
    let (v, internal) = env.instance(&user, "nina-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    env.sim
        .with_state(|st| st.faults.task_outcome = TaskOutcome::Never);
    let (backup_id, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, text) = job_error(&done);
    assert!(text.contains("within 3 seconds"), "{text}");
    let b = get_backup(&user, &backup_id).await;
    assert_eq!(b["status"], "Error", "not left transitional: {b}");
    assert!(env.points(&internal).is_empty());
    let stops = env.sim.with_state(|st| {
        st.counters
            .by_endpoint
            .iter()
            .filter(|(k, _)| k.contains("stop"))
            .map(|(_, n)| *n)
            .sum::<u64>()
    });
    assert!(stops >= 1, "the job was stopped on Veeam");
    env.assert_no_live_session();
}

#[tokio::test]
async fn a_restore_running_past_the_providers_restore_timeout_fails() {
    let env = Env::start_with(fast(), &[("backup.plugin.veeam.restore.timeout", "2")]).await;
    let gold = env.gold().await;
    let user = env.s.client(env.s.create_user("rita", "User", None).await);
    let (v, _) = env.instance(&user, "rita-vm").await;
    assign(&user, &id(&v), &id(&gold)).await;
    let b = backup(&user, &id(&v)).await;
    stop(&user, &id(&v)).await;
    env.sim
        .with_state(|st| st.faults.restore_result = RestoreResult::Never);
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(
        text.contains("backup.plugin.veeam.restore.timeout"),
        "{text}"
    );
    assert_eq!(vm_state(&user, &id(&v)).await, "Stopped");
    assert_eq!(get_backup(&user, &id(&b)).await["status"], "BackedUp");
    env.assert_no_live_session();
}

// ---- Measurement (ignored by default; see docs/benchmarks.md) ----

/// What the simulator and bnr's provider-call histogram say at one moment.
struct Snapshot {
    at: Instant,
    sim: veeam_sim::state::Counters,
    /// (seconds, count) of the veeam provider's calls, all functions.
    calls: (f64, u64),
}

/// Deltas between two snapshots.
struct Sample {
    wall: Duration,
    http: u64,
    ssh: u64,
    calls: u64,
    call_secs: f64,
    answer_secs: f64,
    by_endpoint: Vec<(String, u64)>,
}

impl Snapshot {
    async fn take(env: &Env) -> Snapshot {
        let metrics = bnr::metrics::enable();
        let text = env
            .s
            .state
            .store()
            .read(move |c| metrics.render(c, 0))
            .await
            .expect("metrics render");
        let mut calls = (0.0, 0);
        for line in text.lines().filter(|l| l.contains("provider=\"veeam\"")) {
            let value = line.rsplit(' ').next().unwrap_or("0");
            if line.starts_with("bnr_provider_call_duration_seconds_sum{") {
                calls.0 += value.parse::<f64>().unwrap_or(0.0);
            } else if line.starts_with("bnr_provider_call_duration_seconds_count{") {
                calls.1 += value.parse::<u64>().unwrap_or(0);
            }
        }
        Snapshot {
            at: Instant::now(),
            sim: env.sim.with_state(|s| s.counters.clone()),
            calls,
        }
    }

    async fn since(&self, env: &Env) -> Sample {
        let now = Snapshot::take(env).await;
        let by_endpoint = now
            .sim
            .by_endpoint
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    n - self.sim.by_endpoint.get(k).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Sample {
            wall: now.at - self.at,
            http: now.sim.requests - self.sim.requests,
            ssh: now.sim.ssh_commands - self.sim.ssh_commands,
            calls: now.calls.1 - self.calls.1,
            call_secs: now.calls.0 - self.calls.0,
            answer_secs: (now.sim.http_answer_micros + now.sim.ssh_answer_micros
                - self.sim.http_answer_micros
                - self.sim.ssh_answer_micros) as f64
                / 1e6,
            by_endpoint,
        }
    }
}

fn report(what: &str, m: &Sample) {
    let overhead = (m.call_secs - m.answer_secs).max(0.0);
    println!(
        "| {what} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms |",
        m.http,
        m.ssh,
        m.calls,
        m.wall.as_secs_f64() * 1e3,
        m.call_secs * 1e3,
        m.answer_secs * 1e3,
        overhead * 1e3 / m.calls.max(1) as f64,
    );
}

/// Vendor requests, provider-call time and the simulator's answer time per operation through
/// bnr (API → sandboxed provider → TLS / SSH → veeam-sim), and a sync pass over many
/// Veeam-protected instances. Run:
/// `cargo test -p bnr --test all veeam_e2e::measure -- --ignored --nocapture`
/// (`BNR_VEEAM_SYNC_N` instances, default 1000).
#[tokio::test]
#[ignore = "a measurement, run by hand; see docs/benchmarks.md"]
async fn measure_vendor_requests_and_bnr_overhead_per_operation() {
    let n: usize = std::env::var("BNR_VEEAM_SYNC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let zero = Timing {
        task_phase_ms: 0,
        job_run_ms: 0,
        restore_phase_ms: 0,
        session_idle_ms: 60 * 60 * 1000,
    };
    bnr::metrics::enable();
    let env = Env::start_with(zero, &[]).await;
    let s = &env.s;
    println!(
        "| operation (through the API) | EM requests | SSH commands | provider calls | wall | provider-call time | simulator answer time | bnr overhead per call |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");

    let before = Snapshot::take(&env).await;
    let uid = env.policy("Gold").await;
    report("listBackupProviderOfferings", &before.since(&env).await);
    let before = Snapshot::take(&env).await;
    let gold = import(s, &uid, "Gold", true).await;
    report("importBackupOffering", &before.since(&env).await);

    let user = s.client(s.create_user("mia", "User", None).await);
    let (v, _) = env.instance(&user, "mia-vm").await;
    let before = Snapshot::take(&env).await;
    assign(&user, &id(&v), &id(&gold)).await;
    report(
        "assignVirtualMachineToBackupOffering",
        &before.since(&env).await,
    );

    let before = Snapshot::take(&env).await;
    let full = backup(&user, &id(&v)).await;
    report("createBackup (full)", &before.since(&env).await);
    let before = Snapshot::take(&env).await;
    backup(&user, &id(&v)).await;
    report("createBackup (incremental)", &before.since(&env).await);

    stop(&user, &id(&v)).await;
    let before = Snapshot::take(&env).await;
    job_ok(
        &user
            .call_async("restoreBackup", &[("id", &id(&full))])
            .await,
    );
    report("restoreBackup (in place)", &before.since(&env).await);

    let before = Snapshot::take(&env).await;
    let now = jiff::Timestamp::now().as_second();
    sync(s, now).await;
    report("sync pass, 1 instance", &before.since(&env).await);

    let before = Snapshot::take(&env).await;
    job_ok(
        &user
            .call_async("deleteBackup", &[("id", &id(&full)), ("forced", "true")])
            .await,
    );
    report("deleteBackup (forced)", &before.since(&env).await);

    // N protected instances: deployed through the API, their Veeam jobs and one restore point
    // each made in the simulator, the assignment written to the store (assigning one by one
    // through Veeam is measured above).
    let offering = id(&gold);
    let owner = s.client(s.create_user("many", "User", None).await);
    let (so, _, template) = s.catalog().await;
    let mut assignments = String::new();
    for i in 0..n {
        let done = owner
            .call_async(
                "deployVirtualMachine",
                &[
                    ("serviceofferingid", so.as_str()),
                    ("templateid", template.as_str()),
                    ("zoneid", s.zone_id.as_str()),
                    ("name", &format!("many-{i}")),
                ],
            )
            .await;
        let vm = &job_ok(&done)["virtualmachine"];
        let uuid = id(vm);
        let internal = env.internal_name(&uuid).await;
        let job = env.sim.with_state(|st| {
            let moref = st.add_vm(&internal);
            let obj_ref = st.vm_ref(&moref);
            let guid = veeam_sim::state::new_guid();
            let repository = st.repositories[0].guid.clone();
            st.jobs.push(veeam_sim::state::Job {
                guid: guid.clone(),
                name: format!("{internal}-CSBKP-{uuid}"),
                description: String::new(),
                repository,
                schedule_configured: true,
                schedule_enabled: true,
                includes: vec![veeam_sim::state::Include {
                    guid: veeam_sim::state::new_guid(),
                    obj_ref,
                    name: internal.clone(),
                }],
                cloned: true,
                retain_points: 14,
            });
            st.start_job_run(&guid, Instant::now());
            guid
        });
        assignments.push_str(&format!(
            "UPDATE vms SET backup_offering_id = (SELECT id FROM backup_offerings WHERE uuid = '{offering}'), \
             backup_external_id = 'urn:veeam:Job:{job}' WHERE uuid = '{uuid}';"
        ));
    }
    crate::sched_support::exec(s, &assignments).await;

    let now = jiff::Timestamp::now().as_second();
    let before = Snapshot::take(&env).await;
    let first = sync(s, now).await;
    let adopting = before.since(&env).await;
    let reconciled = first.zone(&s.zone_id).unwrap().reconciled.clone().unwrap();
    assert_eq!(reconciled.adopted, n, "{reconciled:?}");
    report(&format!("sync pass, {n} instances (adopting)"), &adopting);
    let before = Snapshot::take(&env).await;
    let second = sync(s, now + 60).await;
    let steady = before.since(&env).await;
    let reconciled = second.zone(&s.zone_id).unwrap().reconciled.clone().unwrap();
    assert_eq!(reconciled.instances, n + 1, "{reconciled:?}");
    assert!(reconciled.failed.is_empty(), "{reconciled:?}");
    report(&format!("sync pass, {n} instances (steady)"), &steady);
    println!("\nrequests of the steady {n}-instance pass by endpoint:");
    for (endpoint, count) in &steady.by_endpoint {
        println!("  {endpoint}: {count}");
    }
    env.assert_no_live_session();

    // The transport alone, in this same build: a fresh TCP + TLS connection and one request,
    // as bnr's pinned-trust sender makes for every EM request.
    // Once with a new client configuration per request (as bnr does), once with one shared
    // configuration, whose session cache lets later handshakes resume.
    const BARE: u32 = 200;
    let started = Instant::now();
    for _ in 0..BARE {
        bare_https_request(env.sim.http, client_config()).await;
    }
    let fresh = started.elapsed() / BARE;
    let shared = client_config();
    let started = Instant::now();
    for _ in 0..BARE {
        bare_https_request(env.sim.http, shared.clone()).await;
    }
    let resumed = started.elapsed() / BARE;
    println!(
        "\nbare HTTPS request on a new connection (test process, same build): {:.2} ms; \
         with TLS session resumption: {:.2} ms",
        fresh.as_secs_f64() * 1e3,
        resumed.as_secs_f64() * 1e3
    );
}

/// A client configuration accepting any certificate: the point is the cost, not the trust.
fn client_config() -> std::sync::Arc<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// Connects, handshakes, sends `GET /api/` and reads the whole answer.
async fn bare_https_request(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
