//! The provider's operations against `veeam-sim`, natively: plain HTTP over a socket and the
//! simulator's PowerShell side called directly.

mod support;

use std::time::Duration;

use bnr_veeam::em::Em;
use bnr_veeam::error::Error;
use bnr_veeam::ops::{self, Handle, Limits, Progress, Vm};
use support::{Http, SimShell, Sleep};
use veeam_sim::{Config, RestoreResult, Running, TaskOutcome, Timing};

const LIMITS: Limits = Limits {
    task_poll_interval_ms: 5,
    task_poll_max_retry: 200,
};

fn fast() -> Timing {
    Timing {
        task_phase_ms: 5,
        job_run_ms: 20,
        restore_phase_ms: 5,
        session_idle_ms: 60_000,
    }
}

fn sim(rt: &tokio::runtime::Runtime) -> Running {
    let running = rt
        .block_on(veeam_sim::start(Config {
            timing: fast(),
            ..Default::default()
        }))
        .unwrap();
    running.with_state(|s| {
        s.add_vm("i-2-4-VM");
    });
    running
}

fn em(running: &Running) -> Em<Http> {
    Em::new(
        Http::default(),
        &running.url(),
        "administrator",
        "P@ssword123",
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn vm() -> Vm {
    Vm {
        uuid: "506760dc-0000-4000-8000-000000000004".into(),
        internal_name: "i-2-4-VM".into(),
        hypervisor: "VMware".into(),
        host_address: Some("10.0.0.1".into()),
        job: None,
    }
}

/// Polls a handle until it leaves `Running`, at most `limit` times.
fn drive(running: &Running, handle: &Handle, limit: u32) -> Progress {
    for _ in 0..limit {
        let progress = em(running)
            .session(|em| ops::poll(em, &mut SimShell(running), handle, now()))
            .unwrap();
        if !matches!(progress, Progress::Running(..)) {
            return progress;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("operation still running after {limit} polls");
}

#[test]
fn the_main_flow_runs_against_the_simulator_and_leaves_no_session() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);

    let policies = em(&running).session(ops::list_policies).unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Gold", "Silver"]);
    let gold = policies[0].external_id.clone();
    assert!(
        em(&running)
            .session(|em| ops::validate_policy(em, &gold))
            .unwrap()
    );

    let job = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm(),
                &gold,
                Some("vcenter.local"),
            )
        })
        .unwrap();
    // Assigning again finds the same job and adds nothing.
    let again = em(&running).session(|em| {
        ops::assign(
            em,
            &mut SimShell(&running),
            &mut Sleep,
            LIMITS,
            &vm(),
            &gold,
            Some("vcenter.local"),
        )
    });
    let again = again.unwrap();
    assert_eq!(job, again);
    let vm = Vm {
        job: Some(job.clone()),
        ..vm()
    };
    running.with_state(|s| {
        let clone = s.job(&job).unwrap();
        assert_eq!(
            clone.name,
            "i-2-4-VM-CSBKP-506760dc-0000-4000-8000-000000000004"
        );
        assert_eq!(
            clone
                .includes
                .iter()
                .filter(|i| i.name == "i-2-4-VM")
                .count(),
            1
        );
        assert!(
            clone.schedule_enabled,
            "the clone's configured schedule is enabled"
        );
    });

    let first = em(&running)
        .session(|em| ops::start_backup(em, &vm))
        .unwrap();
    let Progress::BackupTaken(full) = drive(&running, &first, 200) else {
        panic!("no backup")
    };
    assert!(full.full);
    assert!(full.size > 0 && full.protected_size > 0);
    let second = em(&running)
        .session(|em| ops::start_backup(em, &vm))
        .unwrap();
    let Progress::BackupTaken(incr) = drive(&running, &second, 200) else {
        panic!("no backup")
    };
    assert!(!incr.full);
    assert_ne!(full.id, incr.id);

    let points = em(&running)
        .session(|em| ops::restore_points(em, "i-2-4-VM"))
        .unwrap();
    assert_eq!(
        points.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        [full.id.clone(), incr.id.clone()]
    );
    let metrics = em(&running)
        .session(|em| ops::metrics(em, std::slice::from_ref(&vm.uuid)))
        .unwrap();
    assert_eq!(metrics[0].1, full.size + incr.size);

    let restore = em(&running)
        .session(|em| ops::start_restore(em, &incr.id, 0))
        .unwrap();
    assert_eq!(drive(&running, &restore, 200), Progress::Restored);

    running.with_state(|s| s.faults.restore_result = RestoreResult::Warning);
    let restore = em(&running)
        .session(|em| ops::start_restore(em, &full.id, 0))
        .unwrap();
    assert_eq!(drive(&running, &restore, 200), Progress::Restored);

    running.with_state(|s| s.faults.restore_result = RestoreResult::Failed);
    let restore = em(&running)
        .session(|em| ops::start_restore(em, &full.id, 0))
        .unwrap();
    let Progress::Failed(Error::Rejected(why)) = drive(&running, &restore, 200) else {
        panic!("expected a failure")
    };
    assert!(why.contains("simulated datastore error"), "{why}");
    running.with_state(|s| s.faults.restore_result = RestoreResult::Success);

    let to_new = ops::start_restore_vm(
        &mut SimShell(&running),
        &full.id,
        "10.0.0.2",
        "datastore1",
        "i-2-9-VM",
        None,
        0,
    )
    .unwrap();
    assert_eq!(drive(&running, &to_new, 200), Progress::Restored);

    assert!(matches!(
        ops::delete(&mut SimShell(&running), &incr.id, false),
        Err(Error::Rejected(_))
    ));
    ops::delete(&mut SimShell(&running), &incr.id, true).unwrap();
    assert!(matches!(
        ops::delete(&mut SimShell(&running), &incr.id, true),
        Err(Error::NotFound(_))
    ));
    let left = em(&running)
        .session(|em| ops::restore_points(em, "i-2-4-VM"))
        .unwrap();
    assert_eq!(left.len(), 1);

    ops::remove(&mut SimShell(&running), &vm).unwrap();
    running.with_state(|s| assert!(s.job(&job).is_none()));
    // The backups stay, and the instance can be assigned again.
    let left = em(&running)
        .session(|em| ops::restore_points(em, "i-2-4-VM"))
        .unwrap();
    assert_eq!(left.len(), 1);
    em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm,
                &gold,
                Some("vcenter.local"),
            )
        })
        .unwrap();

    assert_eq!(running.live_sessions(), 0);
}

#[test]
fn wrong_credentials_name_the_settings() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    let mut em = Em::new(Http::default(), &running.url(), "administrator", "wrong").unwrap();
    let Err(Error::Unauthorized(message)) = em.session(ops::list_policies) else {
        panic!("expected 401")
    };
    assert!(
        message.contains("backup.plugin.veeam.password"),
        "{message}"
    );
}

#[test]
fn an_expired_session_is_renewed_once_and_still_logged_out() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    running.with_state(|s| s.faults.unauthorized = 1);
    let mut client = em(&running);
    let policies = client.session(ops::list_policies).unwrap();
    assert_eq!(policies.len(), 2);
    running.with_state(|s| {
        assert_eq!(s.counters.logons, 2);
        assert_eq!(s.counters.logouts, 1);
    });
    assert_eq!(running.live_sessions(), 0);
}

#[test]
fn a_non_vmware_instance_is_refused_before_anything_is_sent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    let kvm = Vm {
        hypervisor: "KVM".into(),
        ..vm()
    };
    let err = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &kvm,
                "urn:veeam:Job:x",
                None,
            )
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected(m) if m.contains("VMware")),
        "{err}"
    );
    running.with_state(|s| assert_eq!(s.counters.requests, 0));
}

#[test]
fn a_vanished_policy_and_a_failing_start_are_reported() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    let err = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm(),
                "urn:veeam:Job:00000000-0000-4000-8000-000000000000",
                None,
            )
        })
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");

    let gold = em(&running).session(ops::list_policies).unwrap()[0]
        .external_id
        .clone();
    let job = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm(),
                &gold,
                None,
            )
        })
        .unwrap();
    running.with_state(|s| {
        s.faults.task_outcome = TaskOutcome::Fail;
        s.faults.task_fail_message = Some("Job is disabled".into());
    });
    let vm = Vm {
        job: Some(job),
        ..vm()
    };
    let handle = em(&running)
        .session(|em| ops::start_backup(em, &vm))
        .unwrap();
    let Progress::Failed(err) = drive(&running, &handle, 200) else {
        panic!("expected failure")
    };
    assert!(err.to_string().contains("Job is disabled"), "{err}");
    assert_eq!(running.live_sessions(), 0);
}

#[test]
fn a_server_error_during_listing_is_an_error_not_an_empty_list() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    running.with_state(|s| {
        s.faults.server_error = 1;
        s.faults.server_error_path = "query".into();
    });
    let err = em(&running)
        .session(|em| ops::restore_points(em, "i-2-4-VM"))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert_eq!(running.live_sessions(), 0);
}

#[test]
fn version_profiles_and_extra_elements_parse() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for profile in [
        veeam_sim::Profile::V11,
        veeam_sim::Profile::V12,
        veeam_sim::Profile::V12_3,
    ] {
        let running = rt
            .block_on(veeam_sim::start(Config {
                timing: fast(),
                profile,
                ..Default::default()
            }))
            .unwrap();
        running.with_state(|s| {
            s.add_vm("i-2-4-VM");
            s.faults.extra_elements = true;
        });
        let gold = em(&running).session(ops::list_policies).unwrap()[0]
            .external_id
            .clone();
        let job = em(&running)
            .session(|em| {
                ops::assign(
                    em,
                    &mut SimShell(&running),
                    &mut Sleep,
                    LIMITS,
                    &vm(),
                    &gold,
                    None,
                )
            })
            .unwrap();
        let vm = Vm {
            job: Some(job),
            ..vm()
        };
        let handle = em(&running)
            .session(|em| ops::start_backup(em, &vm))
            .unwrap();
        assert!(
            matches!(drive(&running, &handle, 200), Progress::BackupTaken(_)),
            "{profile:?}"
        );
        let metrics = em(&running)
            .session(|em| ops::metrics(em, std::slice::from_ref(&vm.uuid)))
            .unwrap();
        assert!(
            metrics[0].1 > 0,
            "{profile:?}: sizes grouped from the backup names"
        );
    }
}

#[test]
fn an_unreachable_server_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/", closed.local_addr().unwrap());
    drop(closed);
    let mut em = Em::new(Http::default(), &url, "administrator", "x").unwrap();
    let err = em.session(ops::list_policies).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
}

#[test]
fn a_job_that_never_finishes_stays_running_and_sessions_are_still_closed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    let gold = em(&running).session(ops::list_policies).unwrap()[0]
        .external_id
        .clone();
    let job = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm(),
                &gold,
                None,
            )
        })
        .unwrap();
    running.with_state(|s| s.faults.task_outcome = TaskOutcome::Never);
    let vm = Vm {
        job: Some(job),
        ..vm()
    };
    let handle = em(&running)
        .session(|em| ops::start_backup(em, &vm))
        .unwrap();
    // Expire every session between polls: each poll logs on afresh.
    for _ in 0..5 {
        running.with_state(|s| s.sessions.clear());
        let p = em(&running)
            .session(|em| ops::poll(em, &mut SimShell(&running), &handle, now()))
            .unwrap();
        assert!(matches!(p, Progress::Running(..)), "{p:?}");
    }
    assert_eq!(running.live_sessions(), 0);
}

#[test]
fn handles_survive_their_text_form_and_garbage_is_refused() {
    let handles = [
        Handle::Backup {
            task: "task-7".into(),
            job: "urn:veeam:Job:ab-1".into(),
            vm: "i-2-4-VM".into(),
            after: 17,
            seen: vec!["p1".into(), "p2".into()],
        },
        Handle::Backup {
            task: "task-8".into(),
            job: "j".into(),
            vm: "v".into(),
            after: 0,
            seen: vec![],
        },
        Handle::Restore {
            task: "task-9".into(),
            deadline: 1_800_000_000,
        },
        Handle::RestoreVm {
            session: "s-1".into(),
            vm: "CS-RSTR-1".into(),
            volume: Some(42),
            deadline: 0,
        },
        Handle::RestoreVm {
            session: "s-1".into(),
            vm: "i-2-9-VM".into(),
            volume: None,
            deadline: 1_800_000_000,
        },
    ];
    for h in handles {
        assert_eq!(Handle::decode(&h.encode()).unwrap(), h);
    }
    // Handles kept before restores had a deadline still poll, without one.
    assert_eq!(
        Handle::decode("restore|task-3").unwrap(),
        Handle::Restore {
            task: "task-3".into(),
            deadline: 0
        }
    );
    assert_eq!(
        Handle::decode("restore-vm|s-2|i-2-9-VM|").unwrap(),
        Handle::RestoreVm {
            session: "s-2".into(),
            vm: "i-2-9-VM".into(),
            volume: None,
            deadline: 0
        }
    );
    for bad in [
        "",
        "backup|t",
        "restore|task-1;rm",
        "restore-vm|a|b|x",
        "restore|task-1|soon",
        "restore-vm|a|b||1|2",
        "nope|x",
    ] {
        assert!(
            matches!(Handle::decode(bad), Err(Error::NotFound(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_restore_past_its_deadline_fails_naming_the_restore_timeout_setting() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = sim(&rt);
    let gold = em(&running).session(ops::list_policies).unwrap()[0]
        .external_id
        .clone();
    let job = em(&running)
        .session(|em| {
            ops::assign(
                em,
                &mut SimShell(&running),
                &mut Sleep,
                LIMITS,
                &vm(),
                &gold,
                None,
            )
        })
        .unwrap();
    let vm = Vm {
        job: Some(job),
        ..vm()
    };
    let handle = em(&running)
        .session(|em| ops::start_backup(em, &vm))
        .unwrap();
    let Progress::BackupTaken(point) = drive(&running, &handle, 400) else {
        panic!("the backup should succeed")
    };
    running.with_state(|s| s.faults.restore_result = RestoreResult::Never);
    let far = now() + 3600;
    for deadline in [far, now()] {
        let in_place = em(&running)
            .session(|em| ops::start_restore(em, &point.id, deadline))
            .unwrap();
        let to_new = ops::start_restore_vm(
            &mut SimShell(&running),
            &point.id,
            "10.0.0.2",
            "datastore1",
            "i-2-9-VM",
            None,
            deadline,
        )
        .unwrap();
        for handle in [in_place, to_new] {
            // Polled at the deadline's second: given up; an hour before it: still running.
            let at_deadline = em(&running)
                .session(|em| ops::poll(em, &mut SimShell(&running), &handle, deadline))
                .unwrap();
            let Progress::Failed(Error::Rejected(why)) = at_deadline else {
                panic!("expected a failure at the deadline, got {at_deadline:?}")
            };
            assert!(why.contains("backup.plugin.veeam.restore.timeout"), "{why}");
            let early = em(&running)
                .session(|em| ops::poll(em, &mut SimShell(&running), &handle, deadline - 3600))
                .unwrap();
            assert!(matches!(early, Progress::Running(..)), "{early:?}");
        }
    }
    assert_eq!(running.live_sessions(), 0);
}
