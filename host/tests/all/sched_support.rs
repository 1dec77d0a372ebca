//! Scheduler test support: the server's scheduler driven with an injected clock, schedules
//! over signed HTTP, restarts on the same data directory, and store inspection.

#![allow(dead_code)]

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use bnr::scheduler::schedule::parse_cloudstack_date;
use bnr::scheduler::service::Scheduler;
use bnr::scheduler::sync::SyncReport;
use bnr::scheduler::tick::TickReport;

use crate::bnr_support::*;
use crate::support_api::*;

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

pub fn scheduler(s: &TestServer) -> Arc<Scheduler> {
    s.state
        .ext::<Arc<Scheduler>>()
        .cloned()
        .expect("serve registers the scheduler")
}

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("timestamp")
}

/// One tick at `now`; waits (event-driven) for every job it started.
pub async fn tick(s: &TestServer, now: i64) -> TickReport {
    let report = scheduler(s).tick(at(now)).await.expect("tick");
    for job in &report.started {
        s.wait_job(job).await;
    }
    report
}

pub async fn sync(s: &TestServer, now: i64) -> SyncReport {
    scheduler(s).sync(at(now)).await
}

/// createBackupSchedule as `client`; returns the schedule object.
pub async fn configure_schedule(
    client: &Client<'_>,
    vm: &str,
    interval: &str,
    schedule: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut p = vec![
        ("virtualmachineid", vm),
        ("intervaltype", interval),
        ("schedule", schedule),
        ("timezone", "UTC"),
    ];
    p.extend_from_slice(extra);
    client
        .call("createBackupSchedule", &p)
        .await
        .ok("createBackupSchedule")["backupschedule"]
        .clone()
}

/// The schedule as listBackupSchedule shows it (`None` once deleted: listed without the id,
/// which no longer names a row).
pub async fn schedule_of(client: &Client<'_>, schedule_id: &str) -> Option<Value> {
    let r = client
        .call("listBackupSchedule", &[("listall", "true")])
        .await;
    items(r.ok("listBackupSchedule"), "backupschedule")
        .into_iter()
        .find(|v| v["id"] == schedule_id)
        .cloned()
}

/// `nextrun` of a schedule, Unix seconds.
pub async fn next_run(client: &Client<'_>, schedule_id: &str) -> i64 {
    let schedule = schedule_of(client, schedule_id)
        .await
        .expect("schedule exists");
    let text = schedule["nextrun"].as_str().expect("nextrun");
    parse_cloudstack_date(text).expect("date").as_second()
}

/// The backups of a VM (listall), oldest first.
pub async fn backups_of(client: &Client<'_>, vm: &str) -> Vec<Value> {
    let r = client
        .call(
            "listBackups",
            &[("virtualmachineid", vm), ("listall", "true")],
        )
        .await;
    items(r.ok("listBackups"), "backup")
        .into_iter()
        .cloned()
        .collect()
}

/// Events of a type (admin, listall), newest first.
pub async fn events_of(s: &TestServer, event_type: &str) -> Vec<Value> {
    let r = s
        .admin()
        .call(
            "listEvents",
            &[
                ("type", event_type),
                ("listall", "true"),
                ("pagesize", "-1"),
            ],
        )
        .await;
    items(r.ok("listEvents"), "event")
        .into_iter()
        .cloned()
        .collect()
}

/// A restart: the server is dropped and started again on the same data directory.
pub async fn restart(s: TestServer, installed: Installed) -> TestServer {
    let TestServer {
        dir, state, router, ..
    } = s;
    drop(router);
    drop(state);
    start_in(dir, installed).await
}

/// A user with a VM assigned to `offering`; returns (credentials, vm id).
pub async fn protected_vm(
    s: &TestServer,
    user: &str,
    vm_name: &str,
    offering: &str,
) -> (Creds, String) {
    let creds = s.create_user(user, "User", None).await;
    let client = s.client(creds.clone());
    let v = vm(s, &client, vm_name, true).await;
    assign(&client, &id(&v), offering).await;
    (creds, id(&v))
}

/// Runs SQL changing the store behind the API's back (states a user cannot produce).
pub async fn exec(s: &TestServer, sql: &str) {
    let sql = sql.to_string();
    s.state
        .store()
        .write(move |tx| tx.execute_batch(&sql).map_err(bnr::store::StoreError::from))
        .await
        .expect("sql");
}

/// One integer from the store.
pub async fn scalar(s: &TestServer, sql: &str) -> i64 {
    let sql = sql.to_string();
    s.state
        .store()
        .read(move |c| {
            c.query_row(&sql, [], |r| r.get(0))
                .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("query")
}
