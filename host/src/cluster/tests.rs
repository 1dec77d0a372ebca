//! Replicas as separate stores on one database (each with its own connections, like separate
//! processes), with a short lease, on SQLite (one file in WAL mode) and on PostgreSQL. State is
//! polled with a bound, never slept for.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::inventory::bootstrap::{BootstrapOptions, bootstrap_if_empty};
use crate::jobs::{JobSpec, JobStatus};

const LEASE: Duration = MIN_LEASE;
/// Longer than any bound the module states for a lease of [`LEASE`], with room for a loaded
/// machine.
const PATIENCE: Duration = Duration::from_secs(30);

struct Node {
    store: Store,
    jobs: JobManager,
    replica: Replica,
}

/// One database that several replicas open.
#[allow(clippy::large_enum_variant)] // two values per test
enum Shared {
    Sqlite(tempfile::TempDir, std::path::PathBuf),
    Postgres(
        tempfile::TempDir,
        crate::store::postgres::testing::TestDatabase,
    ),
}

impl Shared {
    fn open(&self) -> Store {
        match self {
            Shared::Sqlite(_, path) => Store::open(path).unwrap(),
            Shared::Postgres(dir, db) => {
                Store::open_postgres(db.url(), dir.path(), crate::store::MIGRATIONS).unwrap()
            }
        }
    }

    fn dir(&self) -> &std::path::Path {
        match self {
            Shared::Sqlite(dir, _) | Shared::Postgres(dir, _) => dir.path(),
        }
    }

    fn engine(&self) -> &'static str {
        match self {
            Shared::Sqlite(..) => "sqlite",
            Shared::Postgres(..) => "postgres",
        }
    }
}

fn node(shared: &Shared, name: &str) -> Node {
    let store = shared.open();
    let jobs = JobManager::new(store.clone());
    let replica = Replica::join(&store, &ClusterOptions::new(name, LEASE)).unwrap();
    replica.start(jobs.clone()).unwrap();
    Node {
        store,
        jobs,
        replica,
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bootstrapped database of each engine.
fn databases() -> [Shared; 2] {
    let sqlite = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Shared::Sqlite(dir, path)
    };
    let postgres = Shared::Postgres(
        tempfile::tempdir().unwrap(),
        crate::store::postgres::testing::TestDatabase::create(),
    );
    for shared in [&sqlite, &postgres] {
        let store = shared.open();
        let settings = crate::config::Settings::load(store.clone()).unwrap();
        bootstrap_if_empty(
            &store,
            &settings,
            shared.dir(),
            &BootstrapOptions {
                admin_password: Some("pw".into()),
                admin_keys: Some(("k".into(), "s".into())),
            },
        )
        .unwrap();
    }
    [sqlite, postgres]
}

fn spec() -> JobSpec {
    JobSpec {
        account_id: 1,
        user_id: 1,
        cmd: "createBackup".into(),
        instance_type: None,
        instance_uuid: None,
    }
}

fn job_row(store: &Store, uuid: &str) -> (i64, Option<i64>, Option<i64>) {
    let uuid = uuid.to_string();
    store
        .read_blocking(move |c| {
            Ok::<_, StoreError>(c.query_row(
                "SELECT status, owner, owner_epoch FROM async_jobs WHERE uuid = ?1",
                [uuid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_the_leader_stops_renewing() {
    for shared in databases() {
        leader_hand_over(&shared).await;
    }
}

async fn leader_hand_over(shared: &Shared) {
    let a = node(shared, "a");
    until("a leads", || a.replica.is_leader()).await;
    let b = node(shared, "b");
    // b stays a follower while a renews.
    let term_a = *a.replica.watch_leader().borrow();
    for _ in 0..3 {
        b.replica.lead(
            &b.store.dedicated_connection().unwrap(),
            b.replica.owner().unwrap(),
        );
        assert!(!b.replica.is_leader());
    }
    // a dies (its heartbeat thread stops; nothing is released): b leads with a new term.
    a.replica.halt_heartbeat();
    until("b leads", || b.replica.is_leader()).await;
    let term_b = *b.replica.watch_leader().borrow();
    assert!(term_b > term_a, "{term_b:?} after {term_a:?}");
    // a's renewal, matched on (name, holder, term), finds nothing: a gives leadership up.
    let conn = a.store.dedicated_connection().unwrap();
    a.replica.lead(&conn, a.replica.owner().unwrap());
    assert!(!a.replica.is_leader());
    b.replica.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_pending_job_is_adopted_and_its_late_outcome_does_not_land() {
    for shared in databases() {
        adopt_and_fence(&shared).await;
    }
}

async fn adopt_and_fence(shared: &Shared) {
    let a = node(shared, "a");
    // A job of a's that never finishes on a.
    let job = a
        .jobs
        .submit(spec(), Box::pin(std::future::pending()), None)
        .await
        .unwrap();
    let a_owner = a.replica.owner().unwrap();
    assert_eq!(
        job_row(&a.store, &job),
        (0, Some(a_owner.replica), Some(a_owner.epoch))
    );
    let b = node(shared, "b");
    a.replica.halt_heartbeat();
    // No resume hook on b: the adopted job is failed there as interrupted (the B&R hook
    // resumes provider operations; see the integration tests).
    until("b adopts a's job", || job_row(&b.store, &job).0 != 0).await;
    let (status, owner, _) = job_row(&b.store, &job);
    assert_eq!(status, JobStatus::Failed as i64);
    assert_eq!(owner, Some(b.replica.id()));
    // a wakes up and writes its outcome under its old epoch: nothing changes.
    let written = a
        .jobs
        .complete_as(&job, Ok(json!({"late": true})), Some(a_owner))
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(job_row(&b.store, &job).0, JobStatus::Failed as i64);
    b.replica.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_renew_fences_itself_and_rejoins_under_a_new_epoch() {
    for shared in databases() {
        self_fence(&shared).await;
    }
}

async fn self_fence(shared: &Shared) {
    let a = node(shared, "a");
    let before = a.replica.owner().unwrap();
    let mut owner = a.replica.watch_owner();
    // Another replica declares a dead (as after a pause past the lease): its epoch moves on.
    a.store
        .dedicated_connection()
        .unwrap()
        .execute(
            "UPDATE replicas SET epoch = epoch + 1, stopped = 1 WHERE id = ?1",
            [a.replica.id()],
        )
        .unwrap();
    // The next heartbeat matches nothing: a fences itself, then re-joins (only a fenced
    // replica re-joins, and re-joining is what moves the epoch past the bumped one).
    tokio::time::timeout(
        PATIENCE,
        owner.wait_for(|o| o.is_some_and(|o| o.epoch > before.epoch + 1)),
    )
    .await
    .expect("a fences itself and re-joins")
    .unwrap();
    let after = a.replica.owner().unwrap();
    assert_eq!(after.replica, before.replica);
    assert!(after.epoch > before.epoch + 1);
    a.replica.stop();
}

/// Counts every scheduled run (a stand-in for `start-backup` at the provider); each completes
/// at once.
#[derive(Default)]
struct CountingWork {
    runs: parking_lot::Mutex<Vec<crate::scheduler::tick::ScheduledRun>>,
}

impl crate::scheduler::tick::ScheduledWork for CountingWork {
    fn run(&self, run: crate::scheduler::tick::ScheduledRun) -> crate::jobs::JobFuture {
        self.runs.lock().push(run);
        Box::pin(async { Ok(json!({"success": true})) })
    }
}

struct SchedNode {
    node: Node,
    ticker: crate::scheduler::tick::Ticker,
}

fn sched_node(shared: &Shared, name: &str, work: &Arc<CountingWork>) -> SchedNode {
    let node = node(shared, name);
    let settings = crate::config::Settings::load(node.store.clone()).unwrap();
    let ticker = crate::scheduler::tick::Ticker::new(
        node.store.clone(),
        settings,
        node.jobs.clone(),
        work.clone(),
    );
    SchedNode { node, ticker }
}

/// Simulated time: 2025-03-03T00:00:00Z.
const T0: i64 = 1_740_960_000;

/// Three replicas, a few hundred hourly schedules spread over the hour, simulated time moving
/// ten minutes a step, and the leader killed every few steps (its heartbeat stops; it keeps
/// believing it leads and keeps ticking for two more steps, as a paused process that wakes
/// would: two leaders). Every slot runs exactly once: none duplicated, none missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_job_per_schedule_and_slot_while_leaders_are_killed() {
    for shared in databases() {
        leaders_killed(&shared).await;
    }
}

async fn leaders_killed(shared: &Shared) {
    const SCHEDULES: i64 = 240;
    const HOURS: i64 = 12;
    const STEP: i64 = 600;
    const KILL_EVERY: i64 = 9;
    let work = Arc::new(CountingWork::default());
    {
        let store = shared.open();
        store
            .write_blocking(move |tx| {
                let offering = tx.insert(
                    "INSERT INTO backup_offerings(uuid, name, description, external_id, zone_id,
                                                  provider, user_driven, created)
                     VALUES ('off-1', 'Gold', 'gold', 'gold-policy', 1, 'dummy', 1, 0)",
                    [],
                )?;
                for n in 0..SCHEDULES {
                    let vm = tx.insert(
                        "INSERT INTO vms(uuid, name, display_name, internal_name, account_id,
                                         domain_id, zone_id, service_offering_id, template_id,
                                         state, backup_offering_id, created)
                         VALUES (?1, ?2, ?2, ?2, 1, 1, 1, 1, 1, 'Running', ?3, 0)",
                        params![format!("vm-{n}"), format!("vm{n}"), offering],
                    )?;
                    let minute = (n * 7) % 60;
                    tx.execute(
                        "INSERT INTO backup_schedules(uuid, vm_id, interval_type, schedule,
                                                      timezone, next_run, max_backups,
                                                      account_id, domain_id, created)
                         VALUES (?1, ?2, 'HOURLY', ?3, 'UTC', ?4, 0, 1, 1, 0)",
                        params![
                            format!("s-{n}"),
                            vm,
                            format!("{minute:02}"),
                            T0 + minute * 60
                        ],
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
    let mut live: Vec<SchedNode> = (0..3)
        .map(|i| sched_node(shared, &format!("r{i}"), &work))
        .collect();
    // Killed leaders that still believe they lead, with the steps they keep ticking.
    let mut zombies: Vec<(SchedNode, i64)> = Vec::new();
    let mut failovers = Vec::new();
    let mut spawned = 3;
    let steps = HOURS * 3600 / STEP;
    for step in 0..=steps {
        let now = Timestamp::from_second(T0 + step * STEP).unwrap();
        // A leader among the live replicas (after a kill: the failover).
        let waited = Instant::now();
        until("a live replica leads", || {
            live.iter().any(|n| n.node.replica.is_leader())
        })
        .await;
        if step > 0 && step % KILL_EVERY == 1 {
            failovers.push(waited.elapsed());
        }
        let tickers: Vec<_> = live
            .iter()
            .filter(|n| n.node.replica.is_leader())
            .map(|n| (n.ticker.clone(), n.node.jobs.clone()))
            .chain(
                zombies
                    .iter()
                    .map(|(n, _)| (n.ticker.clone(), n.node.jobs.clone())),
            )
            .collect();
        let ticks: Vec<_> = tickers
            .into_iter()
            .map(|(ticker, jobs)| {
                tokio::spawn(async move {
                    let report = ticker.tick(now).await.unwrap();
                    for job in &report.started {
                        jobs.wait(job).await.unwrap();
                    }
                })
            })
            .collect();
        for t in ticks {
            t.await.unwrap();
        }
        zombies.retain_mut(|(z, left)| {
            *left -= 1;
            if *left == 0 {
                z.node.replica.stop();
            }
            *left > 0
        });
        if step % KILL_EVERY == 0 && step < steps {
            let i = live
                .iter()
                .position(|n| n.node.replica.is_leader())
                .unwrap();
            let killed = live.remove(i);
            killed.node.replica.halt_heartbeat();
            zombies.push((killed, 2));
            live.push(sched_node(shared, &format!("r{spawned}"), &work));
            spawned += 1;
        }
    }
    let runs = work.runs.lock().clone();
    let mut per_slot = std::collections::HashMap::<(i64, i64), usize>::new();
    for run in &runs {
        *per_slot.entry((run.schedule_id, run.slot)).or_default() += 1;
    }
    let duplicated = per_slot.values().filter(|n| **n > 1).count();
    // Slots from T0 up to the last simulated instant, per schedule.
    let expected: i64 = (0..SCHEDULES)
        .map(|n| {
            let first = T0 + ((n * 7) % 60) * 60;
            (T0 + steps * STEP - first) / 3600 + 1
        })
        .sum();
    failovers.sort();
    eprintln!(
        "{}: kills: {}, failover to a ticking leader p50 {:?} max {:?}; runs {}, slots {}, expected {}, duplicated {}",
        shared.engine(),
        failovers.len(),
        failovers.get(failovers.len() / 2),
        failovers.last(),
        runs.len(),
        per_slot.len(),
        expected,
        duplicated
    );
    assert_eq!(duplicated, 0, "duplicated slots");
    assert_eq!(per_slot.len() as i64, expected, "missed slots");
    assert_eq!(runs.len() as i64, expected);
    for n in live {
        n.node.replica.stop();
    }
}
