//! Backup schedules (spec §3.5).

use crate::bnr_support::*;
use crate::support_api::*;

async fn setup(s: &TestServer, user_driven: bool) -> (Client<'_>, String) {
    let offering = import(s, "gold-policy", "Gold", user_driven).await;
    let user = s.client(s.create_user("kim", "User", None).await);
    let vm = vm(s, &user, "sched", false).await;
    assign(&user, &id(&vm), &id(&offering)).await;
    (user, id(&vm))
}

fn schedule<'a>(
    vm: &'a str,
    interval: &'a str,
    text: &'a str,
    tz: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("virtualmachineid", vm),
        ("intervaltype", interval),
        ("schedule", text),
        ("timezone", tz),
    ]
}

#[tokio::test]
async fn create_answers_the_schedule_with_its_next_run() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, true).await;
    let mut p = schedule(&vm, "daily", "30:02", "europe/berlin");
    p.push(("maxbackups", "7"));
    let r = user.call("createBackupSchedule", &p).await;
    let sch = &r.ok("createBackupSchedule")["backupschedule"];
    assert_eq!(sch["virtualmachineid"], vm.as_str());
    assert_eq!(sch["virtualmachinename"], "sched");
    assert_eq!(sch["intervaltype"], "DAILY");
    assert_eq!(sch["schedule"], "30:02");
    assert_eq!(sch["timezone"], "Europe/Berlin");
    assert_eq!(sch["maxbackups"], 7);
    assert!(sch.get("quiescevm").is_none());
    let next = sch["nextrun"].as_str().unwrap();
    let parsed = bnr::scheduler::schedule::parse_cloudstack_date(next).expect("CloudStack date");
    assert!(parsed > jiff::Timestamp::now());
    let local = parsed.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!((local.hour(), local.minute()), (2, 30));
    let events = s
        .admin()
        .call(
            "listEvents",
            &[("type", "BACKUP.SCHEDULE.CONFIGURE"), ("listall", "true")],
        )
        .await;
    assert_eq!(events.ok("listEvents")["count"], 1);
}

#[tokio::test]
async fn one_schedule_per_interval_type_create_and_update_are_upserts() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, true).await;
    let first = user
        .call(
            "createBackupSchedule",
            &schedule(&vm, "DAILY", "00:01", "UTC"),
        )
        .await;
    let first_id = id(&first.ok("createBackupSchedule")["backupschedule"]);
    let again = user
        .call(
            "createBackupSchedule",
            &schedule(&vm, "DAILY", "15:03", "UTC"),
        )
        .await;
    let again = &again.ok("createBackupSchedule")["backupschedule"];
    assert_eq!(id(again), first_id, "same (VM, interval) updates in place");
    assert_eq!(again["schedule"], "15:03");
    let upd = user
        .call(
            "updateBackupSchedule",
            &schedule(&vm, "DAILY", "45:04", "UTC"),
        )
        .await;
    assert_eq!(
        upd.ok("updateBackupSchedule")["backupschedule"]["schedule"],
        "45:04"
    );
    user.call(
        "createBackupSchedule",
        &schedule(&vm, "WEEKLY", "00:01:2", "UTC"),
    )
    .await
    .ok("createBackupSchedule");
    let listed = user
        .call("listBackupSchedule", &[("virtualmachineid", &vm)])
        .await;
    let inner = listed.ok("listBackupSchedule");
    assert_eq!(inner["count"], 2);
    let types: Vec<&str> = items(inner, "backupschedule")
        .iter()
        .map(|s| s["intervaltype"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["DAILY", "WEEKLY"]);

    let by_id = user.call("listBackupSchedule", &[("id", &first_id)]).await;
    assert_eq!(by_id.ok("listBackupSchedule")["count"], 1);
    user.call("deleteBackupSchedule", &[("id", &first_id)])
        .await
        .ok("deleteBackupSchedule");
    let listed = user.call("listBackupSchedule", &[]).await;
    assert_eq!(listed.ok("listBackupSchedule")["count"], 1);
    user.call("deleteBackupSchedule", &[("virtualmachineid", &vm)])
        .await
        .ok("deleteBackupSchedule");
    let listed = user
        .call("listBackupSchedule", &[("virtualmachineid", &vm)])
        .await;
    assert_eq!(*listed.ok("listBackupSchedule"), serde_json::json!({}));
    let r = user
        .call("deleteBackupSchedule", &[("id", &first_id)])
        .await;
    r.err("deleteBackupSchedule", 431);
    let r = user.call("deleteBackupSchedule", &[]).await;
    assert_eq!(
        r.err("deleteBackupSchedule", 530),
        "Either instance ID or ID of backup schedule needs to be specified."
    );
}

#[tokio::test]
async fn malformed_interval_schedule_or_time_zone_is_a_431_with_the_reason() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, true).await;
    for (interval, text, tz, needle) in [
        ("YEARLY", "00", "UTC", "invalid interval type"),
        (
            "MONTHLY",
            "00:01:29",
            "UTC",
            "day of month 29 is out of range",
        ),
        ("DAILY", "00", "UTC", "expected MM:HH"),
        ("HOURLY", "x", "UTC", "is not a number"),
        ("HOURLY", "5", "Mars/Olympus", "unknown time zone"),
    ] {
        let r = user
            .call("createBackupSchedule", &schedule(&vm, interval, text, tz))
            .await;
        let err = r.err("createBackupSchedule", 431);
        assert!(err.contains(needle), "{interval} {text} {tz}: {err}");
    }
    let listed = user
        .call("listBackupSchedule", &[("virtualmachineid", &vm)])
        .await;
    assert_eq!(*listed.ok("listBackupSchedule"), serde_json::json!({}));
}

#[tokio::test]
async fn maxbackups_and_quiescevm_follow_the_providers_capabilities() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, true).await;
    let mut p = schedule(&vm, "HOURLY", "5", "UTC");
    p.push(("maxbackups", "-1"));
    let r = user.call("createBackupSchedule", &p).await;
    assert_eq!(
        r.err("createBackupSchedule", 530),
        "maxbackups should be a non-negative integer"
    );
    for q in ["true", "false"] {
        let mut p = schedule(&vm, "HOURLY", "5", "UTC");
        p.push(("quiescevm", q));
        let r = user.call("createBackupSchedule", &p).await;
        let text = r.err("createBackupSchedule", 530);
        assert!(
            text.starts_with("Quiesce VM option is supported only"),
            "{text}"
        );
    }
    let mut p = schedule(&vm, "HOURLY", "5", "UTC");
    p.push(("maxbackups", "0"));
    let r = user.call("createBackupSchedule", &p).await;
    assert_eq!(
        r.ok("createBackupSchedule")["backupschedule"]["maxbackups"],
        0
    );
}

#[tokio::test]
async fn sla_offerings_and_unassigned_vms_refuse_schedules() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, false).await;
    let r = user
        .call("createBackupSchedule", &schedule(&vm, "HOURLY", "5", "UTC"))
        .await;
    assert_eq!(
        r.err("createBackupSchedule", 530),
        "The selected backup offering does not allow user-defined backup schedule"
    );
    let bare = crate::bnr_support::vm(&s, &user, "bare", false).await;
    let r = user
        .call(
            "createBackupSchedule",
            &schedule(&id(&bare), "HOURLY", "5", "UTC"),
        )
        .await;
    assert_eq!(
        r.err("createBackupSchedule", 530),
        "Cannot configure backup schedule for the VM without having any backup offering"
    );
}

#[tokio::test]
async fn schedules_are_listed_per_account_and_guarded_per_vm() {
    let s = start(Installed::Dummy).await;
    let (user, vm) = setup(&s, true).await;
    user.call("createBackupSchedule", &schedule(&vm, "HOURLY", "5", "UTC"))
        .await
        .ok("createBackupSchedule");
    let other = s.client(s.create_user("lee", "User", None).await);
    let theirs = other.call("listBackupSchedule", &[]).await;
    assert_eq!(*theirs.ok("listBackupSchedule"), serde_json::json!({}));
    let r = other
        .call("listBackupSchedule", &[("virtualmachineid", &vm)])
        .await;
    r.err("listBackupSchedule", 530);
    let r = other
        .call(
            "createBackupSchedule",
            &schedule(&vm, "DAILY", "00:01", "UTC"),
        )
        .await;
    r.err("createBackupSchedule", 530);
    let r = other
        .call("deleteBackupSchedule", &[("virtualmachineid", &vm)])
        .await;
    r.err("deleteBackupSchedule", 530);
    let all = s
        .admin()
        .call("listBackupSchedule", &[("listall", "true")])
        .await;
    assert_eq!(all.ok("listBackupSchedule")["count"], 1);
    let kw = s
        .admin()
        .call(
            "listBackupSchedule",
            &[("listall", "true"), ("keyword", "sch")],
        )
        .await;
    assert_eq!(kw.ok("listBackupSchedule")["count"], 1);
    let kw = s
        .admin()
        .call(
            "listBackupSchedule",
            &[("listall", "true"), ("keyword", "nomatch")],
        )
        .await;
    assert_eq!(*kw.ok("listBackupSchedule"), serde_json::json!({}));
}
