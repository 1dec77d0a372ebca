//! Scheduler benchmarks (self-timed, `harness = false`):
//!
//! 1. One scheduler tick over 100,000 schedules with 1 % due: the selection and the
//!    enqueue bookkeeping (job row, Scheduled event, in-flight marker) — the backups themselves
//!    are not taken (the scheduled work is a stand-in that stays pending). Also the steady state
//!    (reap 1,000 finished runs and start 1,000) and an idle tick (nothing due).
//! 2. One reconciliation pass over 10,000 instances: against the dummy provider (whose
//!    capabilities turn reconciliation off, so the pass is deadlines + usage, and, forced, 10,000
//!    `list-restore-points` calls answered "unsupported"), and against the `scripted` fixture
//!    (first pass adopts one restore point per instance, then a steady pass with nothing to do).
//!
//! Run: `cargo xtask plugins` (builds the components), then
//! `cargo bench -p bnr --bench scheduler`. Numbers: docs/benchmarks.md ("Scheduler").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bnr::store::db::params;
use jiff::Timestamp;

use bnr::config::{BACKUP_FRAMEWORK_ENABLED, Settings};
use bnr::inventory::bootstrap::{BootstrapOptions, bootstrap_if_empty};
use bnr::jobs::{JobFuture, JobManager};
use bnr::scheduler::sync::{ProviderResolver, Syncer, ZoneProvider};
use bnr::scheduler::tick::{ScheduledRun, ScheduledWork, Ticker};
use bnr::store::{OpError, Store};
use bnr_runtime::{CallContext, Grants, Provider, Runtime, RuntimeConfig};

const SCHEDULES: i64 = 100_000;
const DUE: i64 = SCHEDULES / 100;
const INSTANCES: i64 = 10_000;
const TICK_ROUNDS: usize = 15;
const SYNC_ROUNDS: usize = 5;
/// 2025-03-03T00:00:00Z.
const T0: i64 = 1_740_960_000;

/// The scheduled work stand-in: the job stays pending (nothing is backed up).
struct Parked;

impl ScheduledWork for Parked {
    fn run(&self, _run: ScheduledRun) -> JobFuture {
        Box::pin(std::future::pending())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    settings: Settings,
    jobs: JobManager,
    zone_id: i64,
    zone_uuid: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("bench.sqlite")).expect("store");
    let settings = Settings::load(store.clone()).expect("settings");
    let boot = bootstrap_if_empty(
        &store,
        &settings,
        dir.path(),
        &BootstrapOptions {
            admin_password: Some("pw".into()),
            admin_keys: Some(("k".into(), "s".into())),
        },
    )
    .expect("bootstrap")
    .expect("fresh");
    settings
        .set_blocking(BACKUP_FRAMEWORK_ENABLED, "true", Some(boot.zone_id))
        .expect("enable");
    let jobs = JobManager::new(store.clone());
    Env {
        _dir: dir,
        store,
        settings,
        jobs,
        zone_id: boot.zone_id,
        zone_uuid: boot.zone_uuid,
    }
}

/// `n` instances of the admin account with two volumes each, assigned to one offering.
fn populate_instances(env: &Env, n: i64, provider: &str) -> i64 {
    let (zone, provider) = (env.zone_id, provider.to_string());
    env.store
        .write_blocking(move |tx| {
            tx.execute(
                "INSERT INTO backup_offerings(uuid, name, description, external_id, zone_id,
                                              provider, user_driven, created)
                 VALUES (lower(hex(randomblob(16))), 'Gold', 'gold', 'gold-policy', ?1, ?2, 1, 0)",
                params![zone, provider],
            )?;
            let offering = tx
                .as_sqlite()
                .expect("the bench store is SQLite")
                .last_insert_rowid();
            let mut vm = tx.prepare(
                "INSERT INTO vms(uuid, name, display_name, internal_name, account_id, domain_id,
                                 zone_id, service_offering_id, template_id, state,
                                 backup_offering_id, created)
                 VALUES (?1, ?2, ?2, ?3, 1, 1, ?4, 1, 1, 'Running', ?5, 0)",
            )?;
            let mut vol = tx.prepare(
                "INSERT INTO volumes(uuid, name, vm_id, account_id, domain_id, zone_id, type,
                                     size_bytes, path, device_id, state, created)
                 VALUES (?1, ?2, ?3, 1, 1, ?4, ?5, ?6, ?1, ?7, 'Ready', 0)",
            )?;
            for i in 0..n {
                vm.execute(params![
                    format!("00000000-0000-4000-8000-{i:012}"),
                    format!("vm-{i}"),
                    format!("i-2-{i}-VM"),
                    zone,
                    offering
                ])?;
                let vm_id = tx
                    .as_sqlite()
                    .expect("the bench store is SQLite")
                    .last_insert_rowid();
                vol.execute(params![
                    format!("10000000-0000-4000-8000-{i:012}"),
                    format!("ROOT-{i}"),
                    vm_id,
                    zone,
                    "ROOT",
                    2i64 << 30,
                    0
                ])?;
                vol.execute(params![
                    format!("20000000-0000-4000-8000-{i:012}"),
                    format!("DATA-{i}"),
                    vm_id,
                    zone,
                    "DATADISK",
                    5i64 << 30,
                    1
                ])?;
            }
            Ok::<_, OpError>(offering)
        })
        .expect("populate instances")
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    format!(
        "min {:>8.2} ms  median {:>8.2} ms  mean {:>8.2} ms  max {:>8.2} ms  (n={})",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        mean,
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

fn exec(store: &Store, sql: &str) {
    let sql = sql.to_string();
    store
        .write_blocking(move |tx| tx.execute_batch(&sql).map_err(OpError::from))
        .expect("sql");
}

async fn bench_tick() {
    let env = env();
    populate_instances(&env, SCHEDULES, "dummy");
    // One hourly schedule per instance; 1 % due at T0, the rest spread over later minutes.
    env.store
        .write_blocking(move |tx| {
            let mut st = tx.prepare(
                "INSERT INTO backup_schedules(uuid, vm_id, interval_type, schedule, timezone,
                                              next_run, max_backups, account_id, domain_id, created)
                 VALUES (lower(hex(randomblob(16))), ?1, 'HOURLY', ?2, 'UTC', ?3, 0, 1, 1, 0)",
            )?;
            let vm_ids: Vec<i64> = tx
                .prepare("SELECT id FROM vms ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<bnr::store::db::Result<_>>()?;
            for (i, vm_id) in (0i64..).zip(vm_ids) {
                // Due ones at minute 0 (next_run = T0); the others are not due during the
                // benchmark (their next run is planned a year ahead), at minutes 1..59.
                let (minute, next_run) = if i < DUE {
                    (0, T0)
                } else {
                    let minute = 1 + i % 59;
                    (minute, T0 + 365 * 86_400 + minute * 60)
                };
                st.execute(params![vm_id, minute.to_string(), next_run])?;
            }
            Ok::<_, OpError>(())
        })
        .expect("schedules");
    exec(&env.store, "ANALYZE");
    let ticker = Ticker::new(
        env.store.clone(),
        env.settings.clone(),
        env.jobs.clone(),
        Arc::new(Parked),
    );

    let mut idle = Vec::new();
    for _ in 0..TICK_ROUNDS {
        let started = Instant::now();
        let r = ticker.tick(ts(T0 - 1)).await.expect("tick");
        idle.push(started.elapsed());
        assert!(r.started.is_empty());
    }
    let mut start_due = Vec::new();
    for _ in 0..TICK_ROUNDS {
        let started = Instant::now();
        let r = ticker.tick(ts(T0)).await.expect("tick");
        start_due.push(started.elapsed());
        assert_eq!(r.started.len() as i64, DUE);
        // Not measured: put the due ones back.
        exec(
            &env.store,
            &format!(
                "UPDATE backup_schedules SET async_job_id = NULL, next_run = {T0}
                 WHERE async_job_id IS NOT NULL;
                 DELETE FROM events WHERE type = 'BACKUP.CREATE';
                 UPDATE async_jobs SET status = 1 WHERE status = 0;"
            ),
        );
    }
    let mut steady = Vec::new();
    // Start the due set once, then each round: mark its jobs finished, tick an hour later
    // (reap 1,000 → next slot, then start the 1,000 due again).
    ticker.tick(ts(T0)).await.expect("tick");
    for round in 1..=TICK_ROUNDS as i64 {
        let now = T0 + round * 3600;
        // The runs ended a minute after their slot.
        exec(
            &env.store,
            &format!(
                "UPDATE async_jobs SET status = 1, completed = {} WHERE status = 0",
                now - 3600 + 60
            ),
        );
        let started = Instant::now();
        let r = ticker.tick(ts(now)).await.expect("tick");
        steady.push(started.elapsed());
        assert_eq!((r.reaped as i64, r.started.len() as i64), (DUE, DUE));
    }
    println!(
        "scheduler tick, {SCHEDULES} schedules, nothing due:         {}",
        stats(idle)
    );
    println!(
        "scheduler tick, {SCHEDULES} schedules, start {DUE} due:       {}",
        stats(start_due)
    );
    println!(
        "scheduler tick, {SCHEDULES} schedules, reap {DUE} + start {DUE}: {}",
        stats(steady)
    );
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("timestamp")
}

struct Fixed {
    provider: Arc<Provider>,
    settings: HashMap<String, String>,
}

impl ProviderResolver for Fixed {
    fn zone_provider(&self, _zone_id: i64, zone_uuid: &str) -> Option<ZoneProvider> {
        Some(ZoneProvider {
            provider: self.provider.clone(),
            ctx: CallContext::new(zone_uuid, self.settings.clone(), Grants::default()),
        })
    }
}

fn component(path: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let file = target.join(path);
    assert!(
        file.exists(),
        "{} is missing: run `cargo xtask plugins` first",
        file.display()
    );
    file
}

async fn bench_sync(runtime: &Arc<Runtime>) {
    // Dummy: reconciliation is off by capability.
    {
        let env = env();
        populate_instances(&env, INSTANCES, "dummy");
        let provider = runtime
            .load_file(&component("providers/bnr_dummy.wasm"))
            .expect("dummy loads");
        let resolver = Arc::new(Fixed {
            provider,
            settings: HashMap::new(),
        });
        let syncer = Syncer::new(
            env.store.clone(),
            env.settings.clone(),
            env.jobs.clone(),
            resolver.clone(),
        );
        let mut full = Vec::new();
        for round in 0..SYNC_ROUNDS as i64 {
            let started = Instant::now();
            syncer.pass(ts(T0 + round * 300)).await;
            full.push(started.elapsed());
        }
        let zp = resolver
            .zone_provider(env.zone_id, &env.zone_uuid)
            .expect("provider");
        let mut forced = Vec::new();
        for round in 0..SYNC_ROUNDS as i64 {
            let started = Instant::now();
            let r = syncer
                .reconcile(env.zone_id, &zp, T0 + round * 300)
                .await
                .expect("reconcile");
            forced.push(started.elapsed());
            assert_eq!(
                r.failed.len() as i64,
                INSTANCES,
                "dummy answers unsupported"
            );
        }
        println!(
            "sync pass, {INSTANCES} instances, dummy (no reconciliation):    {}",
            stats(full)
        );
        println!(
            "reconcile, {INSTANCES} instances, dummy forced (unsupported):  {}",
            stats(forced)
        );
    }
    // Scripted: one restore point listed for every instance.
    {
        let env = env();
        populate_instances(&env, INSTANCES, "scripted");
        let provider = runtime
            .load_file(&component("fixtures/bnr_fixture_scripted.wasm"))
            .expect("scripted loads");
        let settings = HashMap::from([(
            "backup.plugin.scripted.restore-points".to_string(),
            format!("rp-1,{T0},FULL,1073741824,7516192768"),
        )]);
        let resolver = Arc::new(Fixed { provider, settings });
        let syncer = Syncer::new(
            env.store.clone(),
            env.settings.clone(),
            env.jobs.clone(),
            resolver.clone(),
        );
        let zp = resolver
            .zone_provider(env.zone_id, &env.zone_uuid)
            .expect("provider");
        let started = Instant::now();
        let first = syncer
            .reconcile(env.zone_id, &zp, T0)
            .await
            .expect("reconcile");
        let adopt = started.elapsed();
        assert_eq!(first.adopted as i64, INSTANCES);
        let mut steady = Vec::new();
        for round in 1..=SYNC_ROUNDS as i64 {
            let started = Instant::now();
            let r = syncer
                .reconcile(env.zone_id, &zp, T0 + round * 300)
                .await
                .expect("reconcile");
            steady.push(started.elapsed());
            assert_eq!((r.instances as i64, r.adopted), (INSTANCES, 0));
        }
        let mut full = Vec::new();
        for round in 1..=SYNC_ROUNDS as i64 {
            let started = Instant::now();
            syncer.pass(ts(T0 + round * 300)).await;
            full.push(started.elapsed());
        }
        println!(
            "reconcile, {INSTANCES} instances, scripted, first pass adopting {INSTANCES}: {:>8.2} ms",
            adopt.as_secs_f64() * 1e3
        );
        println!(
            "reconcile, {INSTANCES} instances, scripted, steady:          {}",
            stats(steady)
        );
        println!(
            "sync pass, {INSTANCES} instances, scripted (all steps):      {}",
            stats(full)
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(bench_tick());
    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = Runtime::new(RuntimeConfig::new(cache.path())).expect("runtime");
    rt.block_on(bench_sync(&runtime));
}
