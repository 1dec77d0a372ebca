//! The provider's protocol modules against `networker-sim`: REST over a socket, the host scripts
//! run in process on the simulator's state (the SSH transport is the host's, tested end to end).

mod support;

use std::collections::HashMap;

use bnr_networker::error::{Error, Result};
use bnr_networker::ops::{self, Config, Host, Outcome, Shell, ShellState, Status, Vm};
use bnr_networker::rest::Client;
use networker_sim::{Domain, HostConfig, NextBackup, Running};
use support::Http;

const VM_NAME: &str = "i-2-15-VM";
const VM_UUID: &str = "b1f5c3a0-1111-2222-3333-444455556666";

/// Runs the scripts on the simulator's state; a command finishes when first polled.
struct SimShell<'a> {
    sim: &'a Running,
    started: HashMap<String, (String, String)>,
    next: u32,
}

impl<'a> SimShell<'a> {
    fn new(sim: &'a Running) -> Self {
        SimShell {
            sim,
            started: HashMap::new(),
            next: 0,
        }
    }
}

impl Shell for SimShell<'_> {
    fn start(&mut self, target: &str, command: &str, _timeout_secs: u64) -> Result<String> {
        self.next += 1;
        let id = format!("exec-{}", self.next);
        self.started
            .insert(id.clone(), (target.to_string(), command.to_string()));
        Ok(id)
    }

    fn poll(&mut self, id: &str) -> Result<ShellState> {
        let Some((host, command)) = self.started.remove(id) else {
            return Ok(ShellState::Unknown);
        };
        let out = self
            .sim
            .admin
            .with_state(|s| networker_sim::script::exec(s, &host, &command));
        if out.hang {
            self.started.insert(id.to_string(), (host, command));
            return Ok(ShellState::Running);
        }
        Ok(ShellState::Finished {
            exit_code: out.exit as i32,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn cancel(&mut self, id: &str) -> bool {
        self.started.remove(id).is_some()
    }
}

async fn sim() -> Running {
    let mut host = HostConfig::new("kvm1", "cluster1");
    host.domains = vec![Domain::with_root_disk(VM_NAME, VM_UUID)];
    networker_sim::start(networker_sim::Config {
        hosts: vec![host],
        ..Default::default()
    })
    .await
    .expect("sim")
}

fn client(sim: &Running) -> Client<Http> {
    Client::new(&sim.rest_url, "administrator", "password", Http)
}

fn config(sim: &Running) -> Config {
    Config {
        server: sim.rest_addr.ip().to_string(),
        pool: "Default".into(),
        verbose: false,
        script_timeout_secs: 60,
        pool_path: "/var/lib/libvirt/images".into(),
    }
}

fn vm() -> Vm {
    Vm {
        uuid: VM_UUID.into(),
        internal_name: VM_NAME.into(),
        hypervisor: "KVM".into(),
        state: "Running".into(),
        volume_bytes: 1 << 30,
    }
}

fn host() -> Host {
    Host {
        name: "kvm1".into(),
        address: "kvm1".into(),
        cluster: "cluster1".into(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Takes a backup to its end, the way bnr drives it: start, then poll until it is not running.
fn backup(sim: &Running, shell: &mut SimShell<'_>, policy: &str) -> Status {
    let handle = ops::start_backup(
        &mut client(sim),
        shell,
        &config(sim),
        &vm(),
        Some(&host()),
        policy,
        now(),
    )
    .expect("started");
    poll_to_end(sim, shell, &handle)
}

fn poll_to_end(sim: &Running, shell: &mut SimShell<'_>, handle: &str) -> Status {
    for _ in 0..3 {
        match ops::poll(&mut client(sim), shell, handle, now()).expect("polled") {
            Status::Running(_) => continue,
            done => return done,
        }
    }
    panic!("still running after 3 polls")
}

async fn policy(sim: &Running, name: &str) -> String {
    let offerings = ops::offerings(&mut client(sim)).unwrap();
    offerings
        .into_iter()
        .find(|(_, n, _)| n == name)
        .unwrap_or_else(|| panic!("no policy {name}"))
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn offerings_are_the_policies_marked_csbkp_with_their_retention() {
    let sim = sim().await;
    let offerings = tokio::task::spawn_blocking({
        let url = sim.rest_url.clone();
        move || ops::offerings(&mut Client::new(&url, "administrator", "password", Http))
    })
    .await
    .unwrap()
    .unwrap();
    let names: Vec<&str> = offerings.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(names.contains(&"CSBRONZE"), "{names:?}");
    assert!(names.contains(&"CSSILVER"), "{names:?}");
    assert!(!names.contains(&"Server Protection"), "{names:?}");
    assert!(!names.contains(&"Platinum-CSBKP-"), "{names:?}");
    let silver = offerings.iter().find(|(_, n, _)| n == "CSSILVER").unwrap();
    assert!(silver.2.contains("7 Days"), "{}", silver.2);

    let mut bad = Client::new(&sim.rest_url, "administrator", "wrong", Http);
    let err = tokio::task::spawn_blocking(move || ops::offerings(&mut bad))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_found_by_its_exact_save_time_then_restored_and_deleted() {
    let sim = sim().await;
    let bronze = policy(&sim, "CSBRONZE").await;
    let result = tokio::task::block_in_place(|| {
        let mut shell = SimShell::new(&sim);
        let status = backup(&sim, &mut shell, &bronze);
        let Status::Finished(Outcome::BackupTaken {
            id,
            size,
            protected_size,
            created,
            ..
        }) = status
        else {
            panic!("{status:?}")
        };
        assert_eq!(size, 1 << 30, "the save set's size in bytes");
        assert_eq!(protected_size, 1 << 30);
        assert!((created - now()).abs() < 120, "{created}");

        let points = ops::restore_points(&mut client(&sim), &vm(), now()).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].id, id);
        assert_eq!(points[0].size, 1 << 30);

        let handle = ops::start_restore(
            &mut client(&sim),
            &mut shell,
            &config(&sim),
            &vm(),
            &id,
            Some(&host()),
            now(),
        )
        .unwrap();
        assert_eq!(
            poll_to_end(&sim, &mut shell, &handle),
            Status::Finished(Outcome::Restored)
        );

        let handle = ops::start_restore_volume(
            &mut client(&sim),
            &mut shell,
            &config(&sim),
            &id,
            VM_UUID,
            "0c0ffee0-0000-4000-8000-000000000001",
            1 << 30,
            Some(&host()),
            now(),
        )
        .unwrap();
        assert_eq!(
            poll_to_end(&sim, &mut shell, &handle),
            Status::Finished(Outcome::VolumeRestored {
                path: "/var/lib/libvirt/images/0c0ffee0-0000-4000-8000-000000000001".into(),
                size: 1 << 30
            })
        );

        let metrics = ops::metrics(&mut client(&sim), &[vm()], now()).unwrap();
        assert_eq!(metrics, vec![(VM_UUID.to_string(), 1 << 30, 1 << 30)]);

        ops::delete(&mut client(&sim), &id).unwrap();
        // Deleting again is not an error: the save set is gone either way.
        ops::delete(&mut client(&sim), &id).unwrap();
        ops::restore_points(&mut client(&sim), &vm(), now()).unwrap()
    });
    assert!(result.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_or_two_matching_save_sets_are_clear_errors() {
    let sim = sim().await;
    let bronze = policy(&sim, "CSBRONZE").await;
    for (next, needle) in [
        (NextBackup::NoSaveSet, "no save set"),
        (NextBackup::TwoSaveSets, "2 save sets"),
    ] {
        sim.admin.faults(|f| f.next_backup = next);
        let status =
            tokio::task::block_in_place(|| backup(&sim, &mut SimShell::new(&sim), &bronze));
        let Status::Failed(Error::Rejected(message)) = status else {
            panic!("{status:?}")
        };
        assert!(message.contains(needle), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn script_exit_codes_say_what_to_fix_on_the_host() {
    let sim = sim().await;
    let bronze = policy(&sim, "CSBRONZE").await;
    for (code, needle) in [
        (1, "not installed"),
        (2, "not running"),
        (3, "resolved"),
        (4, "QEMU"),
        (5, "libvirt domain"),
        (7, "snapshot"),
        (8, "blockcommit"),
        (255, "mandatory argument"),
    ] {
        sim.admin
            .host_faults("kvm1", |f| f.backup_exit = Some(code))
            .unwrap();
        let status =
            tokio::task::block_in_place(|| backup(&sim, &mut SimShell::new(&sim), &bronze));
        let Status::Failed(Error::Rejected(message)) = status else {
            panic!("{code}: {status:?}")
        };
        assert!(
            message.contains(&format!("exited with {code}")),
            "{message}"
        );
        assert!(message.contains(needle), "{code}: {message}");
    }
    sim.admin
        .host_faults("kvm1", |f| {
            f.backup_exit = None;
            f.save_fails = true;
        })
        .unwrap();
    let status = tokio::task::block_in_place(|| backup(&sim, &mut SimShell::new(&sim), &bronze));
    let Status::Failed(Error::Rejected(message)) = status else {
        panic!("{status:?}")
    };
    assert!(message.contains("without a save time"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_kvm_or_stopped_instances_are_refused_before_anything_runs() {
    let sim = sim().await;
    let bronze = policy(&sim, "CSBRONZE").await;
    let before = sim.admin.counters();
    tokio::task::block_in_place(|| {
        let mut shell = SimShell::new(&sim);
        for (vm, needle) in [
            (
                Vm {
                    hypervisor: "VMware".into(),
                    ..vm()
                },
                "KVM instances only",
            ),
            (
                Vm {
                    state: "Stopped".into(),
                    ..vm()
                },
                "running instances only",
            ),
        ] {
            let err = ops::start_backup(
                &mut client(&sim),
                &mut shell,
                &config(&sim),
                &vm,
                Some(&host()),
                &bronze,
                now(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(shell.started.is_empty());
    });
    assert_eq!(sim.admin.counters().ssh_commands, before.ssh_commands);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_networker_outage_is_an_error_never_an_empty_list() {
    let sim = sim().await;
    sim.admin.faults(|f| {
        f.rest = vec![networker_sim::RestFault {
            endpoint: "GET /global/backups".into(),
            status: Some(503),
            delay_ms: None,
            empty: false,
            times: None,
        }];
    });
    let err = tokio::task::block_in_place(|| {
        ops::restore_points(&mut client(&sim), &vm(), now()).unwrap_err()
    });
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_operation_costs_one_probe_and_the_requests_it_needs() {
    let sim = sim().await;
    let bronze = policy(&sim, "CSBRONZE").await;
    tokio::task::block_in_place(|| {
        let mut shell = SimShell::new(&sim);
        // Every call below is one provider call: a fresh client, as in the component.
        let mut c = client(&sim);
        let handle = ops::start_backup(
            &mut c,
            &mut shell,
            &config(&sim),
            &vm(),
            Some(&host()),
            &bronze,
            now(),
        )
        .unwrap();
        assert_eq!(c.requests, 2, "start backup: probe + policies");
        let mut c = client(&sim);
        let Status::Finished(Outcome::BackupTaken { id, .. }) =
            ops::poll(&mut c, &mut shell, &handle, now()).unwrap()
        else {
            panic!("not finished")
        };
        assert_eq!(
            c.requests, 2,
            "finish backup: probe + the exact save-time query"
        );
        let mut c = client(&sim);
        let handle = ops::start_restore(
            &mut c,
            &mut shell,
            &config(&sim),
            &vm(),
            &id,
            Some(&host()),
            now(),
        )
        .unwrap();
        assert_eq!(c.requests, 2, "start restore: probe + the save set");
        let mut c = client(&sim);
        assert_eq!(
            ops::poll(&mut c, &mut shell, &handle, now()).unwrap(),
            Status::Finished(Outcome::Restored)
        );
        assert_eq!(c.requests, 0, "finish restore: nothing from NetWorker");
        let vms: Vec<Vm> = (0..5).map(|_| vm()).collect();
        let mut c = client(&sim);
        ops::metrics(&mut c, &vms, now()).unwrap();
        assert_eq!(c.requests, 1 + 5, "metrics: probe + one query per instance");
        let mut c = client(&sim);
        ops::delete(&mut c, &id).unwrap();
        assert_eq!(c.requests, 2, "delete: probe + DELETE");
    });
    assert_eq!(
        sim.admin.host_counters("kvm1").unwrap().commands,
        2,
        "one script run per backup or restore"
    );
}
