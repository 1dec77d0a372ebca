//! Store-level tests of the tick bookkeeping and the usage periods with an injected clock and
//! a recording stand-in for the scheduled work. End-to-end behaviour through the API and real
//! providers is covered by `host/tests/all/sched_*.rs`.

use std::sync::Arc;

use crate::store::db::params;
use jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::json;

use super::tick::{ScheduledRun, ScheduledWork, SkipReason, Ticker};
use super::usage::{self, UsageQuery};
use crate::config::{BACKUP_FRAMEWORK_ENABLED, Settings};
use crate::identity::ListScope;
use crate::inventory::bootstrap::{BootstrapOptions, bootstrap_if_empty};
use crate::jobs::{JobFailure, JobFuture, JobManager, JobStatus};
use crate::store::query::Page;
use crate::store::{OpError, Store};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// 2025-03-03T00:00:00Z, a Monday.
const T0: i64 = 1_740_960_000;

#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<ScheduledRun>>,
    fail: Mutex<bool>,
}

impl ScheduledWork for Recorder {
    fn run(&self, run: ScheduledRun) -> JobFuture {
        self.runs.lock().push(run);
        let fail = *self.fail.lock();
        Box::pin(async move {
            if fail {
                Err(JobFailure {
                    code: 530,
                    text: "provider exploded".into(),
                })
            } else {
                Ok(json!({"success": true}))
            }
        })
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    settings: Settings,
    jobs: JobManager,
    work: Arc<Recorder>,
    ticker: Ticker,
    zone_id: i64,
    offering_id: i64,
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite")).unwrap();
        let settings = Settings::load(store.clone()).unwrap();
        let boot = bootstrap_if_empty(
            &store,
            &settings,
            dir.path(),
            &BootstrapOptions {
                admin_password: Some("pw".into()),
                admin_keys: Some(("k".into(), "s".into())),
            },
        )
        .unwrap()
        .unwrap();
        let jobs = JobManager::new(store.clone());
        let work = Arc::new(Recorder::default());
        let ticker = Ticker::new(store.clone(), settings.clone(), jobs.clone(), work.clone());
        let zone_id = boot.zone_id;
        let offering_id = store
            .write_blocking(|tx| {
                let inserted_id = tx.insert(
                    "INSERT INTO backup_offerings(uuid, name, description, external_id, zone_id,
                                                  provider, user_driven, created)
                     VALUES ('off-1', 'Gold', 'gold', 'gold-policy', ?1, 'dummy', 1, 0)",
                    [zone_id],
                )?;
                Ok::<_, OpError>(inserted_id)
            })
            .unwrap();
        Env {
            _dir: dir,
            store,
            settings,
            jobs,
            work,
            ticker,
            zone_id,
            offering_id,
        }
    }

    /// A VM of the admin account assigned to the offering.
    fn vm(&self, name: &str) -> i64 {
        let (zone, offering) = (self.zone_id, self.offering_id);
        let name = name.to_string();
        self.store
            .write_blocking(move |tx| {
                let inserted_id = tx.insert(
                    "INSERT INTO vms(uuid, name, display_name, internal_name, account_id, domain_id,
                                     zone_id, service_offering_id, template_id, state,
                                     backup_offering_id, created)
                     VALUES (?1, ?2, ?2, ?2, 1, 1, ?3, 1, 1, 'Running', ?4, 0)",
                    params![format!("vm-{name}"), name, zone, offering],
                )?;
                Ok::<_, OpError>(inserted_id)
            })
            .unwrap()
    }

    fn schedule(&self, vm_id: i64, interval: &str, text: &str, next_run: i64) -> i64 {
        let (interval, text) = (interval.to_string(), text.to_string());
        self.store
            .write_blocking(move |tx| {
                let inserted_id = tx.insert(
                    "INSERT INTO backup_schedules(uuid, vm_id, interval_type, schedule, timezone,
                                                  next_run, max_backups, account_id, domain_id,
                                                  created)
                     VALUES (?1, ?2, ?3, ?4, 'UTC', ?5, 0, 1, 1, 0)",
                    params![
                        format!("sched-{vm_id}-{interval}"),
                        vm_id,
                        interval,
                        text,
                        next_run
                    ],
                )?;
                Ok::<_, OpError>(inserted_id)
            })
            .unwrap()
    }

    fn sql(&self, sql: &str) {
        let sql = sql.to_string();
        self.store
            .write_blocking(move |tx| tx.execute_batch(&sql).map_err(OpError::from))
            .unwrap();
    }

    fn schedule_row(&self, id: i64) -> Option<(i64, Option<i64>)> {
        self.store
            .read_blocking(move |c| {
                let mut st =
                    c.prepare("SELECT next_run, async_job_id FROM backup_schedules WHERE id = ?1")?;
                let mut rows = st.query([id])?;
                Ok::<_, OpError>(match rows.next()? {
                    Some(r) => Some((r.get(0)?, r.get(1)?)),
                    None => None,
                })
            })
            .unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        self.store
            .read_blocking(move |c| Ok::<_, OpError>(c.query_row(&sql, [], |r| r.get(0))?))
            .unwrap()
    }

    async fn finish_all(&self, started: &[String]) {
        for job in started {
            let done = self.jobs.wait(job).await.unwrap().unwrap();
            assert_ne!(done.status, JobStatus::Pending);
        }
    }
}

#[tokio::test]
async fn a_due_schedule_starts_once_and_moves_to_the_next_slot_when_its_job_ends() {
    let env = Env::new();
    let vm = env.vm("web");
    // Daily at 02:30 UTC, first due at T0 + 2h30.
    let slot = T0 + 2 * HOUR + 30 * 60;
    let sched = env.schedule(vm, "DAILY", "30:02", slot);

    let early = env.ticker.tick(at(slot - 1)).await.unwrap();
    assert!(early.started.is_empty());

    let due = env.ticker.tick(at(slot)).await.unwrap();
    assert_eq!(due.started.len(), 1);
    let (next_run, job) = env.schedule_row(sched).unwrap();
    assert_eq!(next_run, slot, "the slot stays until the job is reaped");
    assert!(job.is_some());
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM events WHERE type = 'BACKUP.CREATE' AND state = 'Scheduled'"
        ),
        1
    );
    let run = env.work.runs.lock()[0].clone();
    assert_eq!((run.schedule_id, run.vm_id, run.slot), (sched, vm, slot));
    assert_eq!(run.interval.as_str(), "DAILY");

    env.finish_all(&due.started).await;
    let reaped = env.ticker.tick(at(slot + 60)).await.unwrap();
    assert_eq!(reaped.reaped, 1);
    assert!(reaped.started.is_empty());
    assert_eq!(env.schedule_row(sched).unwrap(), (slot + DAY, None));
}

/// Another ticker on the same database file, as a second replica (or a second leader) has:
/// its own connections, its own job manager, the same recording work.
fn claimer(env: &Env) -> (Ticker, JobManager) {
    let store = Store::open(env.store.path().unwrap()).unwrap();
    let settings = Settings::load(store.clone()).unwrap();
    let jobs = JobManager::new(store.clone());
    let ticker = Ticker::new(store, settings, jobs.clone(), env.work.clone());
    (ticker, jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_tickers_start_exactly_one_job_per_schedule_and_slot() {
    const SCHEDULES: i64 = 120;
    const HOURS: i64 = 6;
    let env = Env::new();
    for n in 0..SCHEDULES {
        let vm = env.vm(&format!("c{n}"));
        // Hourly at minute n % 60: slots spread over the hour.
        let minute = n % 60;
        env.schedule(vm, "HOURLY", &format!("{minute:02}"), T0 + minute * 60);
    }
    let claimers: Vec<(Ticker, JobManager)> = (0..4).map(|_| claimer(&env)).collect();
    for hour in 0..HOURS {
        // Every ticker ticks at once, twice an hour (each half sees due and not-yet-due slots).
        for half in [30 * 60 - 1, HOUR - 1] {
            let now = at(T0 + hour * HOUR + half);
            let ticks: Vec<_> = claimers
                .iter()
                .map(|(ticker, jobs)| {
                    let (ticker, jobs) = (ticker.clone(), jobs.clone());
                    tokio::spawn(async move {
                        let report = ticker.tick(now).await.unwrap();
                        for job in &report.started {
                            jobs.wait(job).await.unwrap().unwrap();
                        }
                        report.started.len()
                    })
                })
                .collect();
            for t in ticks {
                t.await.unwrap();
            }
        }
    }
    let runs = env.work.runs.lock().clone();
    let mut per_slot = std::collections::HashMap::<(i64, i64), usize>::new();
    for run in &runs {
        *per_slot.entry((run.schedule_id, run.slot)).or_default() += 1;
    }
    let duplicated: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated slots: {duplicated:?}");
    // Every schedule ran in every hour: slot minute m of hour h, none missed.
    assert_eq!(per_slot.len() as i64, SCHEDULES * HOURS);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM async_jobs WHERE cmd = 'createBackup'"),
        SCHEDULES * HOURS
    );
}

#[tokio::test]
async fn a_schedule_with_a_job_in_flight_is_not_started_again() {
    let env = Env::new();
    let vm = env.vm("db");
    let sched = env.schedule(vm, "HOURLY", "00", T0);
    // The job stays pending: the work is recorded but never completes.
    let first = env.ticker.tick(at(T0)).await.unwrap();
    assert_eq!(first.started.len(), 1);
    env.finish_all(&first.started).await;
    env.sql("UPDATE async_jobs SET status = 0");
    for minutes in [1, 59, 61, 600] {
        let later = env.ticker.tick(at(T0 + minutes * 60)).await.unwrap();
        assert!(later.started.is_empty(), "started again at +{minutes} min");
        assert_eq!(later.reaped, 0);
    }
    assert_eq!(env.work.runs.lock().len(), 1);
    assert_eq!(env.schedule_row(sched).unwrap().0, T0);
}

#[tokio::test]
async fn slots_missed_while_down_run_once_then_the_next_future_slot_is_planned() {
    let env = Env::new();
    let vm = env.vm("app");
    let sched = env.schedule(vm, "HOURLY", "15", T0 + 15 * 60);
    // Down for three days: 72 slots missed.
    let back = T0 + 3 * DAY + 7 * 60;
    let report = env.ticker.tick(at(back)).await.unwrap();
    assert_eq!(report.started.len(), 1);
    env.finish_all(&report.started).await;
    let again = env.ticker.tick(at(back + 1)).await.unwrap();
    assert_eq!((again.reaped, again.started.len()), (1, 0));
    assert_eq!(
        env.schedule_row(sched).unwrap(),
        (T0 + 3 * DAY + 15 * 60, None)
    );
    assert_eq!(env.work.runs.lock().len(), 1);
}

#[tokio::test]
async fn a_failed_run_moves_the_schedule_to_its_next_slot_like_a_successful_one() {
    let env = Env::new();
    let vm = env.vm("flaky");
    let sched = env.schedule(vm, "WEEKLY", "00:01:2", T0 + HOUR); // Mondays 01:00
    *env.work.fail.lock() = true;
    let report = env.ticker.tick(at(T0 + HOUR)).await.unwrap();
    env.finish_all(&report.started).await;
    let job = env.jobs.get(&report.started[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    env.ticker.tick(at(T0 + HOUR + 5)).await.unwrap();
    assert_eq!(
        env.schedule_row(sched).unwrap(),
        (T0 + 7 * DAY + HOUR, None)
    );
}

#[tokio::test]
async fn schedules_of_vanished_or_unassigned_instances_are_deleted() {
    let env = Env::new();
    let gone = env.vm("gone");
    let unassigned = env.vm("unassigned");
    let kept = env.vm("kept");
    let s_gone = env.schedule(gone, "HOURLY", "00", T0);
    let s_unassigned = env.schedule(unassigned, "DAILY", "00:00", T0);
    let s_kept = env.schedule(kept, "HOURLY", "00", T0);
    env.sql(&format!(
        "UPDATE vms SET removed = 1, state = 'Expunging' WHERE id = {gone};
         UPDATE vms SET backup_offering_id = NULL WHERE id = {unassigned};"
    ));
    let report = env.ticker.tick(at(T0)).await.unwrap();
    assert_eq!(report.deleted, 2);
    assert_eq!(report.started.len(), 1);
    assert!(env.schedule_row(s_gone).is_none());
    assert!(env.schedule_row(s_unassigned).is_none());
    assert!(env.schedule_row(s_kept).is_some());
    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE type = 'BACKUP.SCHEDULE.DELETE'"),
        2
    );
}

#[tokio::test]
async fn schedules_are_skipped_while_the_offering_zone_or_owner_forbids_and_run_once_allowed() {
    let env = Env::new();
    let vm = env.vm("guarded");
    let sched = env.schedule(vm, "HOURLY", "00", T0);
    let skipped = |report: &super::tick::TickReport| -> Vec<SkipReason> {
        report.skipped.iter().map(|(_, r)| *r).collect()
    };

    env.sql("UPDATE backup_offerings SET user_driven = 0");
    let r = env.ticker.tick(at(T0)).await.unwrap();
    assert_eq!(skipped(&r), [SkipReason::OfferingNotUserDriven]);
    env.sql("UPDATE backup_offerings SET user_driven = 1");

    env.settings
        .set(BACKUP_FRAMEWORK_ENABLED, "false", Some(env.zone_id))
        .await
        .unwrap();
    let r = env.ticker.tick(at(T0 + HOUR)).await.unwrap();
    assert_eq!(skipped(&r), [SkipReason::ZoneDisabled]);
    env.settings
        .set(BACKUP_FRAMEWORK_ENABLED, "true", Some(env.zone_id))
        .await
        .unwrap();

    env.sql("UPDATE accounts SET state = 'disabled' WHERE id = 1");
    let r = env.ticker.tick(at(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(skipped(&r), [SkipReason::OwnerDisabled]);
    env.sql("UPDATE accounts SET state = 'enabled' WHERE id = 1");

    assert!(env.work.runs.lock().is_empty());
    assert_eq!(env.schedule_row(sched).unwrap(), (T0, None), "still due");
    let r = env.ticker.tick(at(T0 + 3 * HOUR + 5)).await.unwrap();
    assert_eq!(r.started.len(), 1);
    env.finish_all(&r.started).await;
    env.ticker.tick(at(T0 + 3 * HOUR + 6)).await.unwrap();
    assert_eq!(env.schedule_row(sched).unwrap(), (T0 + 4 * HOUR, None));
}

#[tokio::test]
async fn scheduled_jobs_run_as_the_instance_owner() {
    let env = Env::new();
    let vm = env.vm("owned");
    env.schedule(vm, "HOURLY", "00", T0);
    let r = env.ticker.tick(at(T0)).await.unwrap();
    let job = env.jobs.get(&r.started[0]).await.unwrap().unwrap();
    assert_eq!((job.account_id, job.user_id), (1, 1));
    assert_eq!(job.cmd, "createBackup");
    assert_eq!(job.instance_uuid.as_deref(), Some("vm-owned"));
}

// ---------------------------------------------------------------------------------------------
// Usage

fn backup(env: &Env, vm: i64, size: i64, protected: i64) -> i64 {
    let (zone, offering) = (env.zone_id, env.offering_id);
    env.store
        .write_blocking(move |tx| {
            let inserted_id = tx.insert(
                "INSERT INTO backups(uuid, name, vm_id, external_id, date, size, protected_size,
                                     status, backup_offering_id, account_id, domain_id, zone_id)
                 VALUES (lower(hex(randomblob(16))), 'b', ?1, lower(hex(randomblob(8))), 0, ?2,
                         ?3, 'BackedUp', ?4, 1, 1, ?5)",
                params![vm, size, protected, offering, zone],
            )?;
            Ok::<_, OpError>(inserted_id)
        })
        .unwrap()
}

fn refresh(env: &Env, now: i64) {
    let zone = env.zone_id;
    env.store
        .write_blocking(move |tx| usage::refresh_zone(tx, zone, now))
        .unwrap();
}

fn records(env: &Env, start: i64, end: i64, now: i64) -> Vec<usage::UsageRecord> {
    env.store
        .read_blocking(move |c| {
            usage::records(
                c,
                &ListScope::All,
                &UsageQuery {
                    start,
                    end,
                    ..UsageQuery::default()
                },
                now,
                Page::ALL,
            )
        })
        .unwrap()
        .items
}

const GIB: i64 = 1 << 30;

#[test]
fn usage_is_time_weighted_across_size_changes_and_clipped_to_the_window() {
    let env = Env::new();
    let vm = env.vm("metered");
    refresh(&env, T0); // assigned, no backups: open at size 0
    let first = backup(&env, vm, GIB, 4 * GIB);
    refresh(&env, T0 + 2 * HOUR); // 0 → 1 GiB
    refresh(&env, T0 + 3 * HOUR); // unchanged: nothing happens
    backup(&env, vm, 2 * GIB, 4 * GIB);
    refresh(&env, T0 + 5 * HOUR); // 1 → 3 GiB
    env.sql(&format!(
        "UPDATE backups SET removed = 1, status = 'Removed' WHERE id = {first}"
    ));
    env.sql("UPDATE vms SET backup_offering_id = NULL");
    refresh(&env, T0 + 6 * HOUR); // 3 → 2 GiB (backups remain, so still open)
    env.sql("UPDATE backups SET removed = 1, status = 'Removed'");
    refresh(&env, T0 + 8 * HOUR); // nothing left: closed

    let all = records(&env, T0, T0 + DAY, T0 + DAY);
    assert_eq!(all.len(), 1);
    let r = &all[0];
    assert_eq!(r.hours, 8.0);
    // 0×2 + 1×3 + 3×1 + 2×2 = 10 GiB-hours; virtual 0×2 + 4×3 + 8×1 + 4×2 = 28.
    assert_eq!(r.size_gib_hours, 10.0);
    assert_eq!(r.protected_gib_hours, 28.0);
    assert_eq!((r.start, r.end), (T0, T0 + 8 * HOUR));
    assert_eq!(r.size, 2 * GIB, "sizes of the latest period in the window");

    let window = records(&env, T0 + 4 * HOUR, T0 + 7 * HOUR, T0 + DAY);
    assert_eq!(window[0].hours, 3.0);
    // 1×1 + 3×1 + 2×1
    assert_eq!(window[0].size_gib_hours, 6.0);
    assert!(records(&env, T0 + 9 * HOUR, T0 + DAY, T0 + DAY).is_empty());
}

#[test]
fn open_usage_periods_count_until_now() {
    let env = Env::new();
    let vm = env.vm("running");
    backup(&env, vm, GIB, GIB);
    refresh(&env, T0);
    let r = records(&env, T0 - DAY, T0 + DAY, T0 + 90 * 60);
    assert_eq!(r[0].hours, 1.5);
    assert_eq!(r[0].size_gib_hours, 1.5);
}
