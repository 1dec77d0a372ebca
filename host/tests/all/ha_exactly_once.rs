//! Exactly once with real processes on PostgreSQL: three `bnr serve --cluster` replicas (lease
//! 2 s), a few hundred hourly schedules whose slots fall due spread over a window of real
//! time, and the scheduler leader killed with `kill -9` every 20–60 s and restarted. Every
//! (schedule, slot) gets exactly one job and none is missed. The provider is the template
//! (`sdk/template`) against the example appliance, which counts the `start-backup` calls it
//! accepted per instance: a count kept outside bnr's database.
//!
//! The schedules are created through the API; their `next_run` is then moved with SQL on the
//! test database. The schedule grammar has minute granularity, so without it a few hundred
//! slots in a window of two minutes would fall due in two or three bursts; moved, they come
//! due one after another, so kills land while slots are being claimed, started and polled.
//! Each schedule's own minute is half an hour away, so its next slot after the run is outside
//! the window: one slot per schedule in the window.
//!
//! The `#[ignore]`d benchmark runs the same with 50 kills and prints the failover times
//! (`docs/benchmarks.md`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::bnr_support::dummy_wasm;
use crate::ops_shutdown::{finished, get, inner, zone_setting};
use crate::support::component_path;
use crate::support_replicas::{BnrProcess, Engine, SharedStore};

/// The appliance's API key (the provider's secret setting).
const APPLIANCE_KEY: &str = "exactly-once-key";
/// How long a backup runs at the appliance: long enough that kills land on operations being
/// polled.
const BACKUP_SECONDS: u64 = 3;
/// The scheduler tick (and sync pass) interval of the replicas.
const TICK_SECONDS: &str = "2";
/// Log line of a replica that gained the scheduler lease, just before its first tick.
const LEADS: &str = "this replica leads the scheduler: ticking now";
/// Longer than any bound of a lease of 2 s, with room for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// What one run does.
struct Plan {
    schedules: usize,
    /// Slots come due over this window, starting a little after set-up.
    window: Duration,
    /// Seconds between kills, cycled.
    kill_gaps: &'static [u64],
    /// Stop killing after this many (the window still ends first when it is shorter).
    max_kills: usize,
}

/// What one kill cost.
#[derive(Debug)]
struct Kill {
    /// Kill → the new leader's first tick (its `LEADS` line).
    new_leader: Duration,
    /// Kill → the first poll at the appliance of the last of the killed replica's pending
    /// operations (`None`: it had none pending).
    resumed: Option<Duration>,
    operations: usize,
    /// The killed replica's runs caught between their claim and a persisted handle: pending,
    /// no operation row. The replica adopting them fails them.
    exposed: usize,
}

/// What a run found.
#[derive(Debug)]
struct Outcome {
    kills: Vec<Kill>,
    /// (schedule, slot) pairs: one per schedule.
    slots: usize,
    /// Scheduled jobs beyond the first of a slot.
    duplicated: usize,
    /// Slots without a job.
    missed: usize,
    /// Scheduled jobs that ended in failure (all of them interrupted by a kill before their
    /// provider operation was persisted).
    failed: usize,
    /// `start-backup` calls the appliance accepted beyond the first per instance.
    provider_duplicates: usize,
    /// Backup jobs the appliance accepted whose backup bnr does not record.
    provider_unknown: usize,
    /// Backup jobs the appliance accepted.
    provider_jobs: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_slot_runs_once_while_the_leader_is_killed_every_20_to_60_seconds() {
    let outcome = run(Plan {
        schedules: 240,
        window: Duration::from_secs(120),
        kill_gaps: &[20, 35, 60, 25, 45, 30],
        max_kills: 10,
    })
    .await;
    eprintln!("{outcome:#?}");
    let kills = outcome.kills.len();
    assert!(kills >= 3, "{kills} kills");
    assert_eq!(outcome.duplicated, 0, "a slot ran twice");
    assert_eq!(outcome.missed, 0, "a slot never ran");
    // bnr never calls start-backup again for a run it adopted: no duplicate at the provider
    // (bounded by the kills in any case).
    assert!(outcome.provider_duplicates <= kills, "{outcome:?}");
    // Only runs a kill caught between their claim and a persisted handle fail, and only they
    // leave the vendor a backup bnr does not record (when the vendor had accepted the call).
    let exposed: usize = outcome.kills.iter().map(|k| k.exposed).sum();
    assert!(outcome.failed <= exposed, "{outcome:?}");
    assert!(outcome.provider_unknown <= outcome.failed, "{outcome:?}");
    // Every other run's backup is at the vendor, and bnr records it.
    assert!(
        outcome.slots - outcome.failed <= outcome.provider_jobs - outcome.provider_unknown,
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: 50 leader kills, about 15 minutes; run by hand (docs/benchmarks.md)"]
async fn failover_over_50_leader_kills() {
    let outcome = run(Plan {
        schedules: 300,
        window: Duration::from_secs(720),
        kill_gaps: &[6, 8, 10],
        max_kills: 50,
    })
    .await;
    let mut leader: Vec<Duration> = outcome.kills.iter().map(|k| k.new_leader).collect();
    let mut resumed: Vec<Duration> = outcome.kills.iter().filter_map(|k| k.resumed).collect();
    leader.sort();
    resumed.sort();
    let pct = |v: &[Duration]| match v {
        [] => "-".to_string(),
        v => format!("p50 {:?}, max {:?}", v[v.len() / 2], v[v.len() - 1]),
    };
    eprintln!(
        "{} kills (lease 2 s): leader death → new leader's first tick: {}; replica death → \
         first poll of its adopted operations ({} kills with operations pending, {} operations): {}; \
         slots {}, duplicated {}, missed {}, failed {} (runs exposed to the kills {}), provider \
         jobs {}, provider duplicates {}, unknown to bnr {}",
        outcome.kills.len(),
        pct(&leader),
        resumed.len(),
        outcome.kills.iter().map(|k| k.operations).sum::<usize>(),
        pct(&resumed),
        outcome.slots,
        outcome.duplicated,
        outcome.missed,
        outcome.failed,
        outcome.kills.iter().map(|k| k.exposed).sum::<usize>(),
        outcome.provider_jobs,
        outcome.provider_duplicates,
        outcome.provider_unknown,
    );
    assert_eq!(outcome.kills.len(), 50);
    assert_eq!(outcome.duplicated, 0);
    assert_eq!(outcome.missed, 0);
    assert_eq!(outcome.provider_duplicates, 0);
}

/// Providers directory with the dummy and the template provider.
fn dummy_and_template() -> tempfile::TempDir {
    let providers = tempfile::tempdir().expect("providers dir");
    for wasm in [dummy_wasm(), component_path("acme_bnr_provider")] {
        std::fs::copy(&wasm, providers.path().join(wasm.file_name().unwrap())).expect("copy");
    }
    providers
}

async fn ok(addr: &str, command: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let (status, v) = get(addr, command, params)
        .await
        .unwrap_or_else(|| panic!("{command}: no answer from {addr}"));
    assert_eq!(status, 200, "{command}: {v}");
    inner(&v).clone()
}

/// Waits for an async job's success; its result.
async fn succeeded(addr: &str, answer: &serde_json::Value) -> serde_json::Value {
    let done = finished(addr, answer["jobid"].as_str().expect("jobid")).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    done["jobresult"].clone()
}

/// The acme zone with its gold policy imported; `n` VMs assigned to it, each with an hourly
/// schedule whose own minute is half an hour away. Returns the VM uuids.
async fn set_up(addr: &str, appliance_url: &str, n: usize) -> Vec<String> {
    let zone = ok(addr, "listZones", &[]).await["zone"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        addr,
        "updateConfiguration",
        &[
            ("name", "backup.framework.sync.interval"),
            ("value", TICK_SECONDS),
        ],
    )
    .await;
    zone_setting(addr, &zone, "backup.plugin.acme.url", appliance_url).await;
    zone_setting(addr, &zone, "backup.plugin.acme.key", APPLIANCE_KEY).await;
    zone_setting(addr, &zone, "backup.framework.provider.plugin", "acme").await;
    let offering = ok(
        addr,
        "importBackupOffering",
        &[
            ("zoneid", &zone),
            ("externalid", "gold"),
            ("name", "Gold"),
            ("description", "Gold"),
            ("allowuserdrivenbackups", "true"),
        ],
    )
    .await;
    let offering = succeeded(addr, &offering).await["backupoffering"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let so = ok(addr, "listServiceOfferings", &[]).await["serviceoffering"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let template =
        ok(addr, "listTemplates", &[("templatefilter", "all")]).await["template"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let minute = ((jiff::Timestamp::now().as_second() / 60 + 30) % 60).to_string();
    // A few clients at once: set-up is most of a short run.
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (addr, zone, so, template, offering, minute) = (
            addr.to_string(),
            zone.clone(),
            so.clone(),
            template.clone(),
            offering.clone(),
            minute.clone(),
        );
        workers.spawn(async move {
            let mut vms = Vec::new();
            for i in (worker..n).step_by(6) {
                let name = format!("sched-{i}");
                let deployed = ok(
                    &addr,
                    "deployVirtualMachine",
                    &[
                        ("zoneid", &zone),
                        ("serviceofferingid", &so),
                        ("templateid", &template),
                        ("name", &name),
                    ],
                )
                .await;
                let vm = succeeded(&addr, &deployed).await["virtualmachine"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let assigned = ok(
                    &addr,
                    "assignVirtualMachineToBackupOffering",
                    &[("virtualmachineid", &vm), ("backupofferingid", &offering)],
                )
                .await;
                succeeded(&addr, &assigned).await;
                ok(
                    &addr,
                    "createBackupSchedule",
                    &[
                        ("virtualmachineid", &vm),
                        ("intervaltype", "HOURLY"),
                        ("schedule", &minute),
                        ("timezone", "UTC"),
                    ],
                )
                .await;
                vms.push(vm);
            }
            vms
        });
    }
    let mut vms = Vec::new();
    while let Some(done) = workers.join_next().await {
        vms.extend(done.expect("set-up worker"));
    }
    vms
}

/// The process of the replica holding the scheduler lease now, if any.
async fn leader(db: &tokio_postgres::Client, replicas: &[BnrProcess]) -> Option<(usize, i64)> {
    let row = db
        .query_opt(
            "SELECT r.id, r.name FROM leases l JOIN replicas r ON r.id = l.holder
             WHERE l.name = 'scheduler'
               AND l.expires > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            &[],
        )
        .await
        .unwrap()?;
    let (id, name): (i64, String) = (row.get(0), row.get(1));
    let addr = name.split(' ').next()?;
    replicas
        .iter()
        .position(|r| r.addr == addr)
        .map(|i| (i, id))
}

async fn run(plan: Plan) -> Outcome {
    let mut config = example_appliance::Config::new(APPLIANCE_KEY);
    config.job_duration = Duration::from_secs(BACKUP_SECONDS);
    let appliance = example_appliance::start(config).await.expect("appliance");
    let providers = dummy_and_template();
    let shared = SharedStore::new(Engine::Postgres);
    let db = shared.connect().await;
    let start = |shared: &SharedStore, providers: &Path| shared.replica(providers).spawn();

    let first = start(&shared, providers.path()).await;
    let vms = set_up(&first.addr, &appliance.url, plan.schedules).await;
    let mut replicas = vec![first];
    for _ in 0..2 {
        replicas.push(start(&shared, providers.path()).await);
    }

    // Slots one after another over the window, from a few seconds from now.
    let window_start = jiff::Timestamp::now().as_second() + 5;
    let span = i64::try_from(plan.window.as_secs()).unwrap();
    let moved = db
        .execute(
            "UPDATE backup_schedules s SET next_run = $1 + ((r.n - 1) * $2) / $3
             FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM backup_schedules) r
             WHERE s.id = r.id",
            &[&window_start, &span, &(plan.schedules as i64)],
        )
        .await
        .unwrap();
    assert_eq!(moved as usize, plan.schedules);
    let window_end = window_start + span;

    let mut kills = Vec::new();
    let mut gaps = plan.kill_gaps.iter().cycle();
    let mut next_kill = Instant::now() + Duration::from_secs(*gaps.next().unwrap());
    while kills.len() < plan.max_kills && jiff::Timestamp::now().as_second() < window_end {
        if Instant::now() < next_kill {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Some((index, id)) = leader(&db, &replicas).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let killed_at = SystemTime::now();
        replicas[index].kill();
        kills.push(measure_kill(&db, &appliance, &mut replicas, index, id, killed_at).await);
        next_kill = Instant::now() + Duration::from_secs(*gaps.next().unwrap());
    }

    // Wait until every slot came due and every schedule has been reaped past the window.
    loop {
        let left: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM backup_schedules WHERE async_job_id IS NOT NULL OR next_run <= $1",
                &[&window_end],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            jiff::Timestamp::now().as_second() < window_end + PATIENCE.as_secs() as i64,
            "{left} schedules still not past the window"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    outcome(&db, &appliance, &vms, kills).await
}

/// After `replicas[index]` (replica row `id`) was killed at `killed_at`: restarts it, and waits
/// for a new leader's first tick and for the first poll of each operation it left pending.
async fn measure_kill(
    db: &tokio_postgres::Client,
    appliance: &example_appliance::Running,
    replicas: &mut [BnrProcess],
    index: usize,
    id: i64,
    killed_at: SystemTime,
) -> Kill {
    // What it left pending: nobody adopts before the lease runs out.
    let handles: Vec<String> = db
        .query(
            "SELECT handle FROM provider_operations WHERE owner = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let jobs: HashSet<String> = handles
        .iter()
        .filter_map(|h| h.rsplit(':').next().map(str::to_string))
        .collect();
    let exposed: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM async_jobs j WHERE j.status = 0 AND j.owner = $1
               AND NOT EXISTS (SELECT 1 FROM provider_operations p WHERE p.job_id = j.id)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let launch = replicas[index].launch.clone();
    replicas[index] = launch.spawn().await;

    let started = Instant::now();
    let new_leader = loop {
        if let Some(at) = replicas
            .iter()
            .filter_map(|r| r.logged_at(LEADS, killed_at))
            .min()
        {
            break at.duration_since(killed_at).unwrap_or_default();
        }
        assert!(started.elapsed() < PATIENCE, "no new leader after a kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resumed = loop {
        let records = appliance.jobs();
        let firsts: Vec<Option<SystemTime>> = records
            .iter()
            .filter(|j| jobs.contains(&j.id))
            .map(|j| j.poll_times.iter().copied().find(|t| *t > killed_at))
            .collect();
        if firsts.iter().all(Option::is_some) {
            break firsts
                .into_iter()
                .flatten()
                .max()
                .map(|t| t.duration_since(killed_at).unwrap_or_default());
        }
        assert!(
            started.elapsed() < PATIENCE,
            "operations of the killed replica were not polled again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Kill {
        new_leader,
        resumed,
        operations: jobs.len(),
        exposed: exposed as usize,
    }
}

async fn outcome(
    db: &tokio_postgres::Client,
    appliance: &example_appliance::Running,
    vms: &[String],
    kills: Vec<Kill>,
) -> Outcome {
    // Every job is terminal.
    let pending: i64 = db
        .query_one("SELECT COUNT(*) FROM async_jobs WHERE status = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "jobs still pending");
    // And every backup: a run failed by a kill ends its backup too.
    let transitional: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM backups WHERE removed IS NULL
               AND status IN ('Allocated', 'Queued', 'BackingUp', 'Restoring')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(transitional, 0, "backups left in a transitional state");
    // Every createBackup job of the run is a scheduled one. A run names its instance until its
    // backup row exists, then the backup.
    let mut per_vm: HashMap<String, (usize, usize)> = HashMap::new();
    for row in db
        .query(
            "SELECT COALESCE(v.uuid, j.instance_uuid), j.status FROM async_jobs j
             LEFT JOIN backups b ON j.instance_type = 'Backup' AND b.uuid = j.instance_uuid
             LEFT JOIN vms v ON v.id = b.vm_id
             WHERE j.cmd = 'createBackup'",
            &[],
        )
        .await
        .unwrap()
    {
        let entry = per_vm.entry(row.get(0)).or_default();
        entry.0 += 1;
        if row.get::<_, i64>(1) == 2 {
            entry.1 += 1;
        }
    }
    // The claims say the same: one Scheduled event per claimed slot, in the claim's transaction.
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for row in db
        .query(
            "SELECT resource_uuid FROM events WHERE type = 'BACKUP.CREATE' AND state = 'Scheduled'",
            &[],
        )
        .await
        .unwrap()
    {
        *claimed.entry(row.get(0)).or_default() += 1;
    }
    let jobs: HashMap<&String, usize> = per_vm.iter().map(|(vm, (n, _))| (vm, *n)).collect();
    assert_eq!(
        claimed.iter().collect::<HashMap<_, _>>(),
        jobs.iter()
            .map(|(vm, n)| (*vm, n))
            .collect::<HashMap<_, _>>(),
        "claims (Scheduled events) and jobs disagree"
    );
    let duplicated = per_vm.values().map(|(n, _)| n.saturating_sub(1)).sum();
    let missed = vms.iter().filter(|vm| !per_vm.contains_key(*vm)).count();
    let failed = per_vm.values().map(|(_, f)| f).sum();

    let known: HashSet<String> = db
        .query(
            "SELECT external_id FROM backups WHERE external_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let records: Vec<_> = appliance
        .jobs()
        .into_iter()
        .filter(|j| j.kind == "backup")
        .collect();
    let mut at_provider: HashMap<&str, usize> = HashMap::new();
    for job in &records {
        *at_provider.entry(job.vm.as_str()).or_default() += 1;
    }
    Outcome {
        kills,
        slots: vms.len(),
        duplicated,
        missed,
        failed,
        provider_duplicates: at_provider.values().map(|n| n - 1).sum(),
        provider_unknown: records
            .iter()
            .filter(|j| j.backup.as_ref().is_none_or(|b| !known.contains(b)))
            .count(),
        provider_jobs: records.len(),
    }
}
