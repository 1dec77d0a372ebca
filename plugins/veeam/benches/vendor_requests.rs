//! Vendor requests per operation and the provider's own time per operation against
//! `veeam-sim` (no delays), and a sync pass over 1,000 protected instances.
//!
//! `cargo bench -p bnr-veeam --bench vendor_requests`. Native build: the provider logic
//! without the wasm sandbox; "own time" is wall time minus the time spent waiting on the
//! simulator's answers.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bnr_veeam::em::Em;
use bnr_veeam::ops::{self, Handle, Limits, Progress, Vm};
use support::{Http, SimShell, Sleep};
use veeam_sim::{Config, Running, Timing};

const LIMITS: Limits = Limits {
    task_poll_interval_ms: 0,
    task_poll_max_retry: 1000,
};

fn em(running: &Running) -> Em<Http> {
    Em::new(
        Http::default(),
        &running.url(),
        "administrator",
        "P@ssword123",
    )
    .unwrap()
}

struct Measured {
    requests: u64,
    ssh: u64,
    wall: Duration,
    waiting: Duration,
}

/// Runs `op` (one or more provider calls) and reports what the simulator saw.
fn measure(running: &Running, op: impl FnOnce(&mut Duration)) -> Measured {
    running.with_state(|s| s.counters = Default::default());
    let mut waiting = Duration::ZERO;
    let started = Instant::now();
    op(&mut waiting);
    let wall = started.elapsed();
    let (requests, ssh) = running.with_state(|s| (s.counters.requests, s.counters.ssh_commands));
    Measured {
        requests,
        ssh,
        wall,
        waiting,
    }
}

/// One provider call: a fresh client (one EM session), its time waiting on answers added up.
fn call<R>(running: &Running, waiting: &mut Duration, f: impl FnOnce(&mut Em<Http>) -> R) -> R {
    let mut client = em(running);
    let result = f(&mut client);
    client.logout();
    *waiting += client.transport().spent;
    result
}

fn report(name: &str, m: &Measured, cloudstack: &str) {
    println!(
        "{name:<34} {:>4} HTTP + {} SSH   wall {:>8.2?}  own {:>8.2?}   CloudStack: {cloudstack}",
        m.requests,
        m.ssh,
        m.wall,
        m.wall.saturating_sub(m.waiting),
    );
}

fn drive(running: &Running, waiting: &mut Duration, handle: &Handle) -> Progress {
    for _ in 0..1000 {
        let p = call(running, waiting, |em| {
            em.session(|em| ops::poll(em, &mut SimShell(running), handle, 0))
                .unwrap()
        });
        if !matches!(p, Progress::Running(..)) {
            return p;
        }
    }
    panic!("operation did not finish");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let zero = Timing {
        task_phase_ms: 0,
        job_run_ms: 0,
        restore_phase_ms: 0,
        session_idle_ms: 600_000,
    };
    let running = rt
        .block_on(veeam_sim::start(Config {
            timing: zero,
            max_sessions: 10_000,
            ..Default::default()
        }))
        .unwrap();
    running.with_state(|s| {
        s.add_vm("i-2-4-VM");
    });
    let vm = Vm {
        uuid: "506760dc-0000-4000-8000-000000000004".into(),
        internal_name: "i-2-4-VM".into(),
        hypervisor: "VMware".into(),
        host_address: Some("10.0.0.1".into()),
        job: None,
    };
    println!("veeam provider against veeam-sim (native, no simulated delays)");
    let mut gold = String::new();
    let m = measure(&running, |w| {
        gold = call(&running, w, |em| em.session(ops::list_policies).unwrap())[0]
            .external_id
            .clone()
    });
    report(
        "list offerings",
        &m,
        "logon + GET /jobs (+ SSH version probe), no logout",
    );
    let mut job = String::new();
    let m = measure(&running, |w| {
        job = call(&running, w, |em| {
            em.session(|em| {
                ops::assign(
                    em,
                    &mut SimShell(&running),
                    &mut Sleep,
                    LIMITS,
                    &vm,
                    &gold,
                    None,
                )
            })
            .unwrap()
        })
    });
    report(
        "assign",
        &m,
        "~14 HTTP (V3,V4,V5,V2,V3,V6,V7,V8,V9 + task polls/deletes) + 1-2 SSH, no logout",
    );
    let vm = Vm {
        job: Some(job),
        ..vm
    };
    let m = measure(&running, |w| {
        let h = call(&running, w, |em| {
            em.session(|em| ops::start_backup(em, &vm)).unwrap()
        });
        assert!(matches!(drive(&running, w, &h), Progress::BackupTaken(_)));
    });
    report(
        "backup (start + poll to the point)",
        &m,
        "logon + V12 + task polls + V14; point found by the next sync",
    );
    let point = call(&running, &mut Duration::default(), |em| {
        em.session(|em| ops::restore_points(em, "i-2-4-VM"))
            .unwrap()
    })[0]
        .id
        .clone();
    let m = measure(&running, |w| {
        let h = call(&running, w, |em| {
            em.session(|em| ops::start_restore(em, &point, 0)).unwrap()
        });
        assert_eq!(drive(&running, w, &h), Progress::Restored);
    });
    report(
        "restore in place",
        &m,
        "logon + V15 + task polls + V14 + 1/s session polls",
    );
    let m = measure(&running, |w| {
        call(&running, w, |em| {
            em.session(|em| ops::restore_points(em, "i-2-4-VM"))
                .unwrap()
        });
    });
    report(
        "restore points of one instance",
        &m,
        "logon + whole /vmRestorePoints (+ SSH probe)",
    );

    // 1,000 protected instances, one restore point each, made directly in the simulator.
    const N: usize = 1000;
    let uuids: Vec<String> = (0..N)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    running.with_state(|s| {
        for (i, uuid) in uuids.iter().enumerate() {
            let name = format!("i-3-{}-VM", 100 + i);
            let moref = s.add_vm(&name);
            let obj_ref = s.vm_ref(&moref);
            let guid = veeam_sim::state::new_guid();
            let repository = s.repositories[0].guid.clone();
            s.jobs.push(veeam_sim::state::Job {
                guid: guid.clone(),
                name: format!("{name}-CSBKP-{uuid}"),
                description: String::new(),
                repository,
                schedule_configured: true,
                schedule_enabled: true,
                includes: vec![veeam_sim::state::Include {
                    guid: veeam_sim::state::new_guid(),
                    obj_ref,
                    name,
                }],
                cloned: true,
                retain_points: 14,
            });
            s.start_job_run(&guid, Instant::now());
        }
    });
    let collection = call(&running, &mut Duration::default(), |em| {
        em.session(|em| {
            Ok(em
                .call("GET", "vmRestorePoints?format=Entity", None)?
                .body
                .len())
        })
        .unwrap()
    });
    let mut bytes = 0;
    let m = measure(&running, |w| {
        for i in 0..N {
            let name = format!("i-3-{}-VM", 100 + i);
            let mut client = em(&running);
            let points = client.session(|em| ops::restore_points(em, &name)).unwrap();
            assert_eq!(points.len(), 1);
            *w += client.transport().spent;
            bytes += client.transport().bytes;
        }
        call(&running, w, |em| {
            em.session(|em| ops::metrics(em, &uuids)).unwrap()
        });
    });
    report(
        &format!("sync pass, {N} instances"),
        &m,
        &format!(
            "{} HTTP ({N} x logon + whole /vmRestorePoints, + metrics) and {N} SSH probes unless version is set",
            2 * N + 2
        ),
    );
    println!(
        "  bytes read by the provider: {:.1} MB; CloudStack's per-instance whole-collection reads: {:.1} MB",
        bytes as f64 / 1e6,
        (collection * N) as f64 / 1e6
    );
    println!(
        "  live EM sessions after the run: {}",
        running.live_sessions()
    );
}
