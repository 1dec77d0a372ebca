//! End to end through the HTTP API: a KVM zone on the `networker` provider against
//! `networker-sim` (NetWorker REST) and its KVM hosts (the nsrkvm scripts over SSH).

use std::sync::Arc;

use serde_json::Value;

use bnr_runtime::{Runtime, RuntimeConfig};
use networker_sim::{Disk, Domain, HostConfig, Running};

use crate::bnr_support::*;
use crate::server_kvm::{add_cluster, add_host};
use crate::support_api::*;

const URL: &str = "backup.plugin.networker.url";
/// The NetWorker API's and the KVM hosts' passwords (not words that occur in messages, which
/// would be redacted as secrets).
const NW_PASSWORD: &str = "nw-secret-41";
const HOST_PASSWORD: &str = "kvm-secret-42";
/// CloudStack's KVM volumes are files named by the volume's uuid in the pool's directory.
const POOL: &str = "/var/lib/libvirt/images";

pub(crate) struct Kvm {
    pub sim: Running,
    pub s: TestServer,
    pub _cache: Option<tempfile::TempDir>,
}

/// `networker-sim` with two KVM hosts, kvm1 and kvm2, in cluster1.
pub(crate) async fn networker_simulator() -> Running {
    networker_sim::start(networker_sim::Config {
        hosts: ["kvm1", "kvm2"]
            .map(|name| HostConfig {
                password: Some(HOST_PASSWORD.into()),
                ..HostConfig::new(name, "cluster1")
            })
            .to_vec(),
        password: NW_PASSWORD.into(),
        ..Default::default()
    })
    .await
    .expect("networker-sim")
}

/// A server whose zone runs on two KVM hosts of `networker-sim` (kvm1 reached as 127.0.0.1,
/// kvm2 as localhost), backed up by the `networker` provider.
async fn kvm_zone() -> Kvm {
    let sim = networker_simulator().await;
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::new(cache.path())).expect("runtime");
    let (dummy, networker) = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || {
            let load = |p: std::path::PathBuf| {
                runtime
                    .load_file(&p)
                    .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask plugins`)", p.display()))
            };
            (load(dummy_wasm()), load(networker_wasm()))
        }
    })
    .await
    .unwrap();
    let s = start_loaded(
        tempfile::tempdir().unwrap(),
        Some(Arc::clone(&runtime)),
        &[dummy, networker],
    )
    .await;
    configure_kvm_zone(&s, &sim).await;
    Kvm {
        sim,
        s,
        _cache: Some(cache),
    }
}

/// Makes `s.zone_id` a KVM zone on the sim's hosts (host keys pinned), backed up by
/// `networker` against the sim.
pub(crate) async fn configure_kvm_zone(s: &TestServer, sim: &Running) {
    let cluster = add_cluster(s, "cluster1").await;
    for (name, address) in [("kvm1", "127.0.0.1"), ("kvm2", "localhost")] {
        let host = sim.host(name).unwrap();
        let added = add_host(
            s,
            &cluster,
            &format!("{address}:{}", host.ssh_addr.port()),
            name,
        )
        .await;
        // The sim's real key, in place of the placeholder `add_host` pins.
        s.admin()
            .call(
                "updateHost",
                &[
                    ("id", &id(&added)),
                    ("hostkeyfingerprint", &host.host_key_fingerprint),
                    ("password", HOST_PASSWORD),
                ],
            )
            .await
            .ok("updateHost");
    }
    let zone = s.zone_id.clone();
    // NetWorker runs its scripts on the instance's host: a need the zone must grant first.
    s.admin()
        .call(
            "updateBackupProviderGrants",
            &[
                ("zoneid", &zone),
                ("provider", "networker"),
                ("grants", "remote-exec-on-instance-host"),
            ],
        )
        .await
        .ok("updateBackupProviderGrants");
    set_config(
        s,
        "backup.framework.provider.plugin",
        "networker",
        Some(&zone),
    )
    .await;
    set_config(s, URL, &sim.rest_url, Some(&zone)).await;
    set_config(
        s,
        "backup.plugin.networker.password",
        NW_PASSWORD,
        Some(&zone),
    )
    .await;
}

/// Deploys a KVM instance and tells the sim host it landed on about its libvirt domain.
pub(crate) async fn kvm_vm(k: &Kvm, client: &Client<'_>, name: &str) -> (Value, String) {
    let v = vm(&k.s, client, name, false).await;
    let listed =
        k.s.admin()
            .call(
                "listVirtualMachines",
                &[("id", &id(&v)), ("listall", "true")],
            )
            .await;
    let listed = listed.ok("listVirtualMachines")["virtualmachine"][0].clone();
    assert_eq!(listed["hypervisor"], "KVM");
    let host = match listed["hostname"].as_str().unwrap() {
        "127.0.0.1" => "kvm1",
        "localhost" => "kvm2",
        other => panic!("unexpected host {other}"),
    };
    let name = listed["instancename"].as_str().unwrap().to_string();
    k.sim
        .admin
        .add_domain(host, domain(client, &name, &id(&v)).await)
        .unwrap();
    (v, host.to_string())
}

/// The libvirt domain of an instance: its volumes as files named by their uuids.
async fn domain(client: &Client<'_>, name: &str, vm: &str) -> Domain {
    let r = client
        .call(
            "listVolumes",
            &[("virtualmachineid", vm), ("listall", "true")],
        )
        .await;
    let disks = items(r.ok("listVolumes"), "volume")
        .into_iter()
        .enumerate()
        .map(|(i, v)| Disk {
            target: format!("vd{}", (b'a' + i as u8) as char),
            path: format!("{POOL}/{}", v["id"].as_str().unwrap()),
            size: v["size"].as_u64().unwrap(),
            device: "disk".into(),
        })
        .collect();
    Domain {
        name: name.into(),
        uuid: vm.into(),
        disks,
    }
}

pub(crate) async fn import_policy(k: &Kvm, policy: &str) -> Value {
    let r =
        k.s.admin()
            .call("listBackupProviderOfferings", &[("zoneid", &k.s.zone_id)])
            .await;
    let offerings = items(r.ok("listBackupProviderOfferings"), "backupoffering")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let found = offerings
        .iter()
        .find(|o| o["name"] == policy)
        .unwrap_or_else(|| panic!("no {policy} in {offerings:?}"));
    import(&k.s, found["externalid"].as_str().unwrap(), policy, true).await
}

pub(crate) fn save_set_sizes(k: &Kvm) -> Vec<(String, u64)> {
    k.sim.admin.with_state(|s| {
        s.save_sets
            .iter()
            .map(|set| (set.id.clone(), set.size()))
            .collect()
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kvm_instance_is_backed_up_restored_and_deleted_through_networker() {
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, host) = kvm_vm(&k, &user, "web").await;
    let bronze = import_policy(&k, "CSBRONZE").await;
    assert_eq!(bronze["provider"], "networker");
    assert!(bronze["externalid"].as_str().is_some(), "{bronze}");
    assign(&user, &id(&v), &id(&bronze)).await;

    // Back up: the script runs on the instance's host, the save set is found by its save time.
    let b = backup(&user, &id(&v)).await;
    assert_eq!(b["status"], "BackedUp", "{b}");
    let sets = save_set_sizes(&k);
    assert_eq!(sets.len(), 1);
    assert_eq!(b["externalid"], sets[0].0.as_str());
    assert_eq!(
        b["size"], sets[0].1,
        "size in bytes as NetWorker reports it"
    );
    let created = b["created"].as_str().unwrap();
    let created = chrono_like(created);
    assert!((created - now()).abs() < 300, "{b}");
    assert_eq!(k.sim.admin.host_counters(&host).unwrap().backups, 1);

    // Restore in place (the instance must be stopped): runs on its last host.
    stop(&user, &id(&v)).await;
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    job_ok(&done);
    assert_eq!(k.sim.admin.host_counters(&host).unwrap().restores, 1);

    // One volume to another instance.
    let (other, _) = kvm_vm(&k, &user, "other").await;
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let root = backed[0]["uuid"].as_str().unwrap().to_string();
    let done = user
        .call_async(
            "restoreVolumeFromBackupAndAttachToVM",
            &[
                ("backupid", &id(&b)),
                ("volumeid", &root),
                ("virtualmachineid", &id(&other)),
            ],
        )
        .await;
    job_ok(&done);
    let vols = user
        .call(
            "listVolumes",
            &[("virtualmachineid", &id(&other)), ("listall", "true")],
        )
        .await;
    let vols = items(vols.ok("listVolumes"), "volume")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(vols.len(), 2, "{vols:?}");
    assert_eq!(vols[1]["type"], "DATADISK");

    // Delete: the save set is gone from NetWorker too.
    let done = user.call_async("deleteBackup", &[("id", &id(&b))]).await;
    job_ok(&done);
    assert!(save_set_sizes(&k).is_empty());

    // Remove from the offering: NetWorker keeps nothing per instance.
    let done = user
        .call_async(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &id(&v))],
        )
        .await;
    job_ok(&done);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_faults_end_in_clear_errors_and_leave_nothing_transitional() {
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, host) = kvm_vm(&k, &user, "web").await;
    let bronze = import_policy(&k, "CSBRONZE").await;
    assign(&user, &id(&v), &id(&bronze)).await;

    // A script exit code says what to fix on the host.
    k.sim
        .admin
        .host_faults(&host, |f| f.backup_exit = Some(5))
        .unwrap();
    let (backup_id, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains("exited with 5"), "{message}");
    assert!(message.contains("libvirt domain"), "{message}");
    assert_eq!(get_backup(&user, &backup_id).await["status"], "Error");
    k.sim
        .admin
        .host_faults(&host, |f| f.backup_exit = None)
        .unwrap();

    // Wrong host credentials.
    let hosts = k.s.admin().call("listHosts", &[("name", &host)]).await;
    let host_id = hosts.ok("listHosts")["host"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    k.s.admin()
        .call("updateHost", &[("id", &host_id), ("password", "wrong")])
        .await
        .ok("updateHost");
    let (_, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains("password"), "{message}");

    // An unpinned (here: different) host key is refused, and the error shows the key.
    let real = k.sim.host(&host).unwrap().host_key_fingerprint.clone();
    k.s.admin()
        .call(
            "updateHost",
            &[
                ("id", &host_id),
                ("password", HOST_PASSWORD),
                (
                    "hostkeyfingerprint",
                    "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
                ),
            ],
        )
        .await
        .ok("updateHost");
    let (_, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains(&real), "{message}");

    // A stopped instance is refused before anything runs on the host.
    k.s.admin()
        .call(
            "updateHost",
            &[("id", &host_id), ("hostkeyfingerprint", &real)],
        )
        .await
        .ok("updateHost");
    stop(&user, &id(&v)).await;
    let before = k.sim.admin.counters().ssh_commands;
    let (_, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains("running instances only"), "{message}");
    assert_eq!(k.sim.admin.counters().ssh_commands, before);

    // Nothing is left BackingUp.
    let r = user
        .call("listBackups", &[("virtualmachineid", &id(&v))])
        .await;
    for b in items(r.ok("listBackups"), "backup") {
        assert_eq!(b["status"], "Error", "{b}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_runs_on_an_up_host_of_the_cluster_when_the_last_host_is_down() {
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, host) = kvm_vm(&k, &user, "web").await;
    let other = if host == "kvm1" { "kvm2" } else { "kvm1" };
    // Its domain's files are visible from both hosts (shared storage).
    let name =
        k.s.admin()
            .call(
                "listVirtualMachines",
                &[("id", &id(&v)), ("listall", "true")],
            )
            .await
            .ok("listVirtualMachines")["virtualmachine"][0]["instancename"]
            .as_str()
            .unwrap()
            .to_string();
    k.sim
        .admin
        .add_domain(other, domain(&user, &name, &id(&v)).await)
        .unwrap();
    let bronze = import_policy(&k, "CSBRONZE").await;
    assign(&user, &id(&v), &id(&bronze)).await;
    let b = backup(&user, &id(&v)).await;
    stop(&user, &id(&v)).await;

    let hosts = k.s.admin().call("listHosts", &[]).await;
    let hosts = items(hosts.ok("listHosts"), "host")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let by_name = |n: &str| {
        hosts
            .iter()
            .find(|h| h["name"] == n)
            .map(|h| h["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    k.s.admin()
        .call("updateHost", &[("id", &by_name(&host)), ("state", "Down")])
        .await
        .ok("updateHost");
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    job_ok(&done);
    assert_eq!(k.sim.admin.host_counters(other).unwrap().restores, 1);
    assert_eq!(k.sim.admin.host_counters(&host).unwrap().restores, 0);

    // No host up at all: a clear error, before anything runs.
    k.s.admin()
        .call(
            "updateHost",
            &[("id", &by_name(other)), ("state", "Maintenance")],
        )
        .await
        .ok("updateHost");
    let r = user.call("restoreBackup", &[("id", &id(&b))]).await;
    let message = r.err("restoreBackup", 530);
    assert!(message.contains("No KVM host is Up"), "{message}");
}

/// `2026-11-30T06:10:00+0000` (CloudStack's date format) → Unix seconds.
fn chrono_like(text: &str) -> i64 {
    let fixed = if text.len() == 24 {
        format!("{}:{}", &text[..22], &text[22..])
    } else {
        text.to_string()
    };
    bnr_time(&fixed)
}

fn bnr_time(text: &str) -> i64 {
    let (date, rest) = text.split_at(10);
    let mut d = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let clock = &rest[1..9];
    let mut c = clock.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, min, sec) = (c.next().unwrap(), c.next().unwrap(), c.next().unwrap());
    let zone = &rest[9..];
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let offset = sign
        * (zone[1..3].parse::<i64>().unwrap() * 3600 + zone[4..6].parse::<i64>().unwrap() * 60);
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + h * 3600 + min * 60 + sec - offset
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_script_ends_the_backup_in_error_within_its_deadline_and_is_cancelled() {
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, host) = kvm_vm(&k, &user, "web").await;
    let bronze = import_policy(&k, "CSBRONZE").await;
    assign(&user, &id(&v), &id(&bronze)).await;
    set_config(
        &k.s,
        "backup.framework.operation.timeouts",
        "networker:backup=2",
        None,
    )
    .await;
    k.sim.admin.host_faults(&host, |f| f.hang = true).unwrap();

    let (backup_id, done) = create_backup(&user, &id(&v), &[]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains("within 2 seconds"), "{message}");
    assert_eq!(get_backup(&user, &backup_id).await["status"], "Error");
    // The script's SSH session was closed by the cancel (bounded wait, no sleeping on state).
    let mut live = u64::MAX;
    for _ in 0..100 {
        live = k.sim.admin.host_counters(&host).unwrap().ssh_live;
        if live == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(live, 0, "the hanging session is closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_networker_outage_during_sync_keeps_every_backup_and_an_expired_save_set_is_refused() {
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, _) = kvm_vm(&k, &user, "web").await;
    let bronze = import_policy(&k, "CSBRONZE").await;
    assign(&user, &id(&v), &id(&bronze)).await;
    let b = backup(&user, &id(&v)).await;

    k.sim.admin.faults(|f| {
        f.rest = vec![networker_sim::RestFault {
            endpoint: "any".into(),
            status: Some(503),
            delay_ms: None,
            empty: false,
            times: None,
        }];
    });
    crate::sched_support::sync(&k.s, now()).await;
    let kept = get_backup(&user, &id(&b)).await;
    assert_eq!(kept["status"], "BackedUp", "{kept}");
    assert_eq!(kept["size"], b["size"]);
    k.sim.admin.faults(|f| f.rest.clear());

    // CSBRONZE keeps save sets one day: two days on, NetWorker has recycled it.
    k.sim.admin.advance_clock(2 * 86_400);
    assert_eq!(k.sim.admin.purge(), 1);
    stop(&user, &id(&v)).await;
    let done = user.call_async("restoreBackup", &[("id", &id(&b))]).await;
    let (_, message) = job_error(&done);
    assert!(message.contains("expired"), "{message}");
    assert!(
        message.contains(b["externalid"].as_str().unwrap()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_by_maxbackups_on_a_schedule_deletes_the_oldest_save_set_in_networker() {
    use crate::sched_support::{HOUR, configure_schedule, next_run, tick};
    let k = kvm_zone().await;
    let user = k.s.client(k.s.create_user("nina", "User", None).await);
    let (v, _) = kvm_vm(&k, &user, "web").await;
    let bronze = import_policy(&k, "CSBRONZE").await;
    assign(&user, &id(&v), &id(&bronze)).await;
    let hourly =
        id(&configure_schedule(&user, &id(&v), "HOURLY", "05", &[("maxbackups", "2")]).await);
    let first = next_run(&user, &hourly).await;
    let mut taken = Vec::new();
    for run in 0..3 {
        // An hour between runs on NetWorker's and the host's clocks too (save times differ).
        k.sim.admin.advance_clock(HOUR);
        let report = tick(&k.s, first + run * HOUR).await;
        assert_eq!(report.started.len(), 1, "run {run}");
        let backups = crate::sched_support::backups_of(&user, &id(&v)).await;
        let newest = backups
            .iter()
            .map(|b| b["externalid"].as_str().unwrap().to_string())
            .find(|e| !taken.contains(e))
            .expect("the run's backup");
        taken.push(newest);
        assert_eq!(backups.len(), taken.len().min(2), "after run {run}");
    }
    let mut left: Vec<String> = save_set_sizes(&k).into_iter().map(|(id, _)| id).collect();
    left.sort();
    let mut kept = taken[1..].to_vec();
    kept.sort();
    assert_eq!(left, kept, "the oldest save set was deleted in NetWorker");
}
