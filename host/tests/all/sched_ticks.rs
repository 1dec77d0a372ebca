//! The scheduler tick end to end: schedules created over HTTP, ticks at injected instants,
//! backups taken through the real providers, restarts on the same data directory.

use crate::bnr_support::*;
use crate::sched_support::*;

/// Slots `first + k·period` that are at or before `last`.
fn slots_until(first: i64, period: i64, last: i64) -> usize {
    if last < first {
        0
    } else {
        ((last - first) / period + 1) as usize
    }
}

fn with_interval<'a>(
    backups: &'a [serde_json::Value],
    interval: &str,
) -> Vec<&'a serde_json::Value> {
    backups
        .iter()
        .filter(|b| b["intervaltype"] == interval)
        .collect()
}

#[tokio::test]
async fn scheduled_backups_run_exactly_once_per_slot_over_simulated_days_and_restarts() {
    let mut s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (creds, vm) = protected_vm(&s, "olga", "web", &id(&gold)).await;
    let user = s.client(creds.clone());
    let hourly = id(&configure_schedule(&user, &vm, "HOURLY", "17", &[]).await);
    let daily = id(&configure_schedule(&user, &vm, "DAILY", "45:03", &[]).await);
    let first_hourly = next_run(&user, &hourly).await;
    let first_daily = next_run(&user, &daily).await;
    let manual = backup(&user, &vm).await;
    assert_eq!(manual["intervaltype"], "MANUAL");

    // Three simulated days in 20-minute steps, every instant ticked twice, a restart each day.
    let begin = first_hourly - 5 * MINUTE;
    let mut now = begin;
    let mut last = now;
    let mut days_done = 0;
    while now <= begin + 3 * DAY {
        let first = tick(&s, now).await;
        let again = tick(&s, now).await;
        assert!(
            again.started.is_empty(),
            "a second tick at the same instant started a run"
        );
        assert!(first.started.len() <= 2);
        last = now;
        now += 20 * MINUTE;
        if (now - begin) / DAY > days_done {
            days_done += 1;
            s = restart(s, Installed::Dummy).await;
        }
    }
    let user = s.client(creds);
    let expected_hourly = slots_until(first_hourly, HOUR, last);
    let expected_daily = slots_until(first_daily, DAY, last);
    assert!(expected_hourly >= 72 && expected_daily >= 2);

    let backups = backups_of(&user, &vm).await;
    let hourly_backups = with_interval(&backups, "HOURLY");
    let daily_backups = with_interval(&backups, "DAILY");
    assert_eq!(hourly_backups.len(), expected_hourly);
    assert_eq!(daily_backups.len(), expected_daily);
    assert_eq!(with_interval(&backups, "MANUAL").len(), 1);
    assert!(
        backups.iter().all(|b| b["status"] == "BackedUp"),
        "{backups:?}"
    );
    let scheduled_events = events_of(&s, "BACKUP.CREATE")
        .await
        .into_iter()
        .filter(|e| e["state"] == "Scheduled")
        .count();
    assert_eq!(scheduled_events, expected_hourly + expected_daily);
    // Every run is one createBackup job of the owner; none is left running.
    assert_eq!(
        scalar(
            &s,
            "SELECT COUNT(*) FROM async_jobs WHERE cmd = 'createBackup' AND status = 1"
        )
        .await,
        (expected_hourly + expected_daily + 1) as i64
    );
    assert_eq!(
        scalar(&s, "SELECT COUNT(*) FROM async_jobs WHERE status = 0").await,
        0
    );
    // The schedules wait for their next slot after the last tick.
    let next_hourly = next_run(&user, &hourly).await;
    assert!(
        next_hourly > last && next_hourly <= last + HOUR,
        "{next_hourly} vs {last}"
    );
}

#[tokio::test]
async fn a_slot_missed_while_bnr_was_down_runs_once_then_the_next_future_slot_is_planned() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (creds, vm) = protected_vm(&s, "pia", "db", &id(&gold)).await;
    let user = s.client(creds.clone());
    let daily = id(&configure_schedule(&user, &vm, "DAILY", "30:02", &[]).await);
    let d0 = next_run(&user, &daily).await;
    assert_eq!(tick(&s, d0).await.started.len(), 1);

    // Down for three days and five hours: three slots pass without a tick.
    let s = restart(s, Installed::Dummy).await;
    let user = s.client(creds);
    let back = d0 + 3 * DAY + 5 * HOUR;
    let report = tick(&s, back).await;
    assert_eq!((report.reaped, report.started.len()), (1, 1));
    let report = tick(&s, back + MINUTE).await;
    assert_eq!((report.reaped, report.started.len()), (1, 0));
    assert_eq!(next_run(&user, &daily).await, d0 + 4 * DAY);
    assert_eq!(backups_of(&user, &vm).await.len(), 2);
    assert_eq!(tick(&s, d0 + 4 * DAY).await.started.len(), 1);
    assert_eq!(backups_of(&user, &vm).await.len(), 3);
}

#[tokio::test]
async fn retention_deletes_the_oldest_scheduled_backups_beyond_maxbackups_and_keeps_manual_ones() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (creds, vm) = protected_vm(&s, "quinn", "files", &id(&gold)).await;
    let user = s.client(creds);
    let hourly = id(&configure_schedule(&user, &vm, "HOURLY", "05", &[("maxbackups", "2")]).await);
    assert_eq!(
        schedule_of(&user, &hourly).await.expect("schedule")["maxbackups"],
        2
    );
    let manual = backup(&user, &vm).await;
    let h0 = next_run(&user, &hourly).await;

    let mut scheduled_ids = Vec::new();
    for k in 0..3 {
        let report = tick(&s, h0 + k * HOUR).await;
        assert_eq!(report.started.len(), 1);
        let backups = backups_of(&user, &vm).await;
        let hourly_backups = with_interval(&backups, "HOURLY");
        let newest = hourly_backups
            .iter()
            .map(|b| id(b))
            .find(|b| !scheduled_ids.contains(b))
            .expect("the run's backup");
        scheduled_ids.push(newest);
        // Never more than maxbackups of the schedule; the manual one never counts.
        assert_eq!(
            hourly_backups.len(),
            scheduled_ids.len().min(2),
            "after run {k}"
        );
        assert!(backups.iter().any(|b| b["id"] == manual["id"]));
    }
    let kept: Vec<String> = with_interval(&backups_of(&user, &vm).await, "HOURLY")
        .iter()
        .map(|b| id(b))
        .collect();
    assert_eq!(kept, scheduled_ids[1..].to_vec(), "the oldest one went");
    let deletes = events_of(&s, "BACKUP.DELETE").await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["resourceid"], scheduled_ids[0].as_str());
}

#[tokio::test]
async fn schedules_of_vanished_or_unassigned_instances_are_deleted_by_the_tick() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (creds, gone) = protected_vm(&s, "rita", "gone", &id(&gold)).await;
    let user = s.client(creds.clone());
    let unassigned = id(&vm(&s, &user, "loose", false).await);
    assign(&user, &unassigned, &id(&gold)).await;
    let kept = id(&vm(&s, &user, "kept", false).await);
    assign(&user, &kept, &id(&gold)).await;
    let s_gone = id(&configure_schedule(&user, &gone, "HOURLY", "10", &[]).await);
    let s_unassigned = id(&configure_schedule(&user, &unassigned, "HOURLY", "10", &[]).await);
    let s_kept = id(&configure_schedule(&user, &kept, "HOURLY", "10", &[]).await);
    let due = next_run(&user, &s_kept).await;
    // Both states arise behind the API's back (e.g. an instance expunged by the cloud, an
    // offering detached by an operator); the API itself also drops schedules on removal.
    exec(
        &s,
        &format!(
            "UPDATE vms SET state = 'Expunging', removed = 1 WHERE uuid = '{gone}';
             UPDATE vms SET backup_offering_id = NULL WHERE uuid = '{unassigned}';"
        ),
    )
    .await;
    let report = tick(&s, due).await;
    assert_eq!((report.deleted, report.started.len()), (2, 1));
    assert!(schedule_of(&s.admin(), &s_gone).await.is_none());
    assert!(schedule_of(&s.admin(), &s_unassigned).await.is_none());
    assert!(schedule_of(&user, &s_kept).await.is_some());
    let deleted = events_of(&s, "BACKUP.SCHEDULE.DELETE").await;
    assert_eq!(deleted.len(), 2);
    assert!(
        deleted.iter().all(|e| e["account"] == "rita"),
        "{deleted:?}"
    );
}

#[tokio::test]
async fn schedules_are_skipped_while_the_zone_is_disabled_and_run_once_it_is_enabled_again() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (creds, vm) = protected_vm(&s, "sam", "app", &id(&gold)).await;
    let user = s.client(creds);
    let hourly = id(&configure_schedule(&user, &vm, "HOURLY", "00", &[]).await);
    let h0 = next_run(&user, &hourly).await;
    set_config(
        &s,
        "backup.framework.enabled",
        "false",
        Some(&s.zone_id.clone()),
    )
    .await;
    for k in 0..3 {
        let report = tick(&s, h0 + k * HOUR).await;
        assert!(report.started.is_empty());
        assert_eq!(report.skipped.len(), 1);
    }
    set_config(
        &s,
        "backup.framework.enabled",
        "true",
        Some(&s.zone_id.clone()),
    )
    .await;
    assert_eq!(tick(&s, h0 + 3 * HOUR + 1).await.started.len(), 1);
    assert_eq!(tick(&s, h0 + 3 * HOUR + 2).await.started.len(), 0);
    assert_eq!(next_run(&user, &hourly).await, h0 + 4 * HOUR);
    assert_eq!(backups_of(&user, &vm).await.len(), 1);
}

#[tokio::test]
async fn a_failing_provider_fails_only_its_run_and_every_schedule_moves_on() {
    let s = start(Installed::DummyAndScripted).await;
    let zone = s.zone_id.clone();
    let gold = import(&s, "gold-policy", "Gold", true).await; // on dummy
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&zone),
    )
    .await;
    let silver = import(&s, "silver-policy", "Scripted Silver", true).await; // on scripted
    set_config(&s, "backup.plugin.scripted.mode", "fail", Some(&zone)).await;
    let (creds, healthy) = protected_vm(&s, "tess", "healthy", &id(&gold)).await;
    let user = s.client(creds);
    let failing = id(&vm(&s, &user, "failing", false).await);
    assign(&user, &failing, &id(&silver)).await;
    let s_healthy = id(&configure_schedule(&user, &healthy, "HOURLY", "20", &[]).await);
    let s_failing = id(&configure_schedule(&user, &failing, "HOURLY", "20", &[]).await);
    let h0 = next_run(&user, &s_failing).await;
    assert_eq!(next_run(&user, &s_healthy).await, h0);

    let report = tick(&s, h0).await;
    assert_eq!(report.started.len(), 2);
    let mut outcomes = Vec::new();
    for job in &report.started {
        let done = s
            .admin()
            .call("queryAsyncJobResult", &[("jobid", job)])
            .await
            .ok("queryAsyncJobResult")
            .clone();
        outcomes.push(done);
    }
    let failed: Vec<_> = outcomes.iter().filter(|d| d["jobstatus"] == 2).collect();
    let succeeded: Vec<_> = outcomes.iter().filter(|d| d["jobstatus"] == 1).collect();
    assert_eq!((failed.len(), succeeded.len()), (1, 1), "{outcomes:?}");
    let (code, text) = job_error(failed[0]);
    assert_eq!(code, 530);
    assert!(
        text.contains("scripted") && text.contains("failed on purpose"),
        "{text}"
    );
    let failing_backups = backups_of(&user, &failing).await;
    assert_eq!(failing_backups.len(), 1);
    assert_eq!(failing_backups[0]["status"], "Error");
    assert_eq!(backups_of(&user, &healthy).await[0]["status"], "BackedUp");

    // Both schedules move to the next slot; the failed one is not retried before it.
    let report = tick(&s, h0 + 30 * MINUTE).await;
    assert_eq!((report.reaped, report.started.len()), (2, 0));
    assert_eq!(next_run(&user, &s_failing).await, h0 + HOUR);
    assert_eq!(next_run(&user, &s_healthy).await, h0 + HOUR);
    set_config(&s, "backup.plugin.scripted.mode", "ok", Some(&zone)).await;
    let report = tick(&s, h0 + HOUR).await;
    assert_eq!(report.started.len(), 2);
    let statuses: Vec<_> = backups_of(&user, &failing)
        .await
        .iter()
        .map(|b| b["status"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(statuses, ["Error", "BackedUp"]);
}

#[tokio::test]
async fn a_provider_hanging_in_a_scheduled_run_fails_it_at_the_deadline_and_the_schedule_moves_on()
{
    let s = start(Installed::DummyAndScripted).await;
    let zone = s.zone_id.clone();
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&zone),
    )
    .await;
    let silver = import(&s, "silver-policy", "Silver", true).await;
    let (creds, vm) = protected_vm(&s, "uma", "stuck", &id(&silver)).await;
    let user = s.client(creds);
    // Every operation stays pending for an hour; bnr gives it one second.
    set_config(&s, "backup.plugin.scripted.op-seconds", "3600", Some(&zone)).await;
    set_config(&s, "backup.framework.operation.timeout", "1", None).await;
    let hourly = id(&configure_schedule(&user, &vm, "HOURLY", "40", &[]).await);
    let h0 = next_run(&user, &hourly).await;
    let report = tick(&s, h0).await;
    let done = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &report.started[0])])
        .await
        .ok("queryAsyncJobResult")
        .clone();
    let (code, text) = job_error(&done);
    assert_eq!(code, 530);
    assert!(
        text.contains("did not finish the backup operation within 1 seconds"),
        "{text}"
    );
    assert_eq!(backups_of(&user, &vm).await[0]["status"], "Error");
    assert_eq!(
        scalar(&s, "SELECT COUNT(*) FROM provider_operations").await,
        0
    );
    let report = tick(&s, h0 + MINUTE).await;
    assert_eq!((report.reaped, report.started.len()), (1, 0));
    assert_eq!(next_run(&user, &hourly).await, h0 + HOUR);
}
