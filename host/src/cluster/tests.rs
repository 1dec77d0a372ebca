//! Replicas as separate stores on one SQLite file (each with its own connections, like separate
//! processes), with a short lease. State is polled with a bound, never slept for.

use std::time::{Duration, Instant};

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

fn node(path: &std::path::Path, name: &str) -> Node {
    let store = Store::open(path).unwrap();
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
        assert!(started.elapsed() < PATIENCE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Store::open(&path).unwrap();
    let settings = crate::config::Settings::load(store.clone()).unwrap();
    bootstrap_if_empty(
        &store,
        &settings,
        dir.path(),
        &BootstrapOptions {
            admin_password: Some("pw".into()),
            admin_keys: Some(("k".into(), "s".into())),
        },
    )
    .unwrap();
    (dir, path)
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
    let (_dir, path) = database();
    let a = node(&path, "a");
    until("a leads", || a.replica.is_leader()).await;
    let b = node(&path, "b");
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
    let (_dir, path) = database();
    let a = node(&path, "a");
    // A job of a's that never finishes on a.
    let job = a
        .jobs
        .submit(spec(), Box::pin(std::future::pending()))
        .await
        .unwrap();
    let a_owner = a.replica.owner().unwrap();
    assert_eq!(
        job_row(&a.store, &job),
        (0, Some(a_owner.replica), Some(a_owner.epoch))
    );
    let b = node(&path, "b");
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
    let (_dir, path) = database();
    let a = node(&path, "a");
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
