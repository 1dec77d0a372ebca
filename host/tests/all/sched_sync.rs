//! The background sync pass end to end against the `scripted` provider: reconciliation,
//! outages, storage stats, and time-weighted usage over an injected timeline.

use serde_json::Value;

use crate::bnr_support::*;
use crate::sched_support::*;
use crate::support_api::*;

const GIB: i64 = 1 << 30;
/// An empty restore-point list (`updateConfiguration` refuses an empty value).
const NONE: &str = ";";

/// zone1 on the `scripted` provider with one user's VM assigned to its silver policy.
async fn scripted_zone(s: &TestServer, user: &str) -> (Creds, String) {
    let zone = s.zone_id.clone();
    set_config(
        s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&zone),
    )
    .await;
    let silver = import(s, "silver-policy", "Silver", true).await;
    protected_vm(s, user, "tracked", &id(&silver)).await
}

async fn set_zone(s: &TestServer, name: &str, value: &str) {
    let zone = s.zone_id.clone();
    set_config(s, name, value, Some(&zone)).await;
}

/// (external id, size, virtual size, status) of each backup, sorted by external id.
fn summary(backups: &[Value]) -> Vec<(String, i64, i64, String)> {
    let mut v: Vec<_> = backups
        .iter()
        .map(|b| {
            (
                b["externalid"].as_str().unwrap_or_default().to_string(),
                b["size"].as_i64().unwrap_or(-1),
                b["virtualsize"].as_i64().unwrap_or(-1),
                b["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(external: &str, size: i64, virtual_size: i64) -> (String, i64, i64, String) {
    (
        external.to_string(),
        size,
        virtual_size,
        "BackedUp".to_string(),
    )
}

#[tokio::test]
async fn reconciliation_adopts_updates_and_retires_backups_and_a_failing_provider_changes_nothing()
{
    let s = start(Installed::DummyAndScripted).await;
    let (creds, vm) = scripted_zone(&s, "ursa").await;
    let user = s.client(creds);
    let t = jiff::Timestamp::now().as_second() + DAY;

    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!(
            "rp-1,1700000000,FULL,{GIB},{},{vm}; rp-2,1700003600,INCREMENTAL,1024,{}",
            2 * GIB,
            2 * GIB
        ),
    )
    .await;
    let report = sync(&s, t).await;
    let zone = report.zone(&s.zone_id).expect("zone synced");
    assert_eq!(zone.provider.as_deref(), Some("scripted"));
    let r = zone.reconciled.as_ref().expect("reconciliation ran");
    assert_eq!((r.instances, r.adopted, r.updated, r.retired), (1, 2, 0, 0));
    let backups = backups_of(&user, &vm).await;
    assert_eq!(
        summary(&backups),
        [row("rp-1", GIB, 2 * GIB), row("rp-2", 1024, 2 * GIB)]
    );
    let rp1 = backups
        .iter()
        .find(|b| b["externalid"] == "rp-1")
        .expect("rp-1");
    assert_eq!(rp1["created"], "2023-11-14T22:13:20+0000");
    assert_eq!(rp1["intervaltype"], "MANUAL");
    assert_eq!(rp1["type"], "FULL");
    let adopted = events_of(&s, "BACKUP.CREATE").await;
    assert_eq!(adopted.len(), 2);
    assert!(adopted.iter().all(|e| e["account"] == "ursa"));

    // The provider's truth changes: rp-1 grew, rp-2 is gone, rp-3 is new.
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!(
            "rp-1,1700000000,FULL,{},{}; rp-3,1700007200,FULL,5,6",
            3 * GIB,
            2 * GIB
        ),
    )
    .await;
    let report = sync(&s, t + 300).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert_eq!((r.adopted, r.updated, r.retired), (1, 1, 1));
    let backups = backups_of(&user, &vm).await;
    assert_eq!(
        summary(&backups),
        [row("rp-1", 3 * GIB, 2 * GIB), row("rp-3", 5, 6)]
    );
    let retired = events_of(&s, "BACKUP.DELETE").await;
    assert_eq!(retired.len(), 1);
    assert!(
        retired[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer has restore point rp-2"),
        "{retired:?}"
    );

    // An outage, then a provider answering garbage: nothing changes either time.
    let events_before = scalar(&s, "SELECT COUNT(*) FROM events").await;
    set_zone(&s, "backup.plugin.scripted.restore-points", NONE).await;
    set_zone(&s, "backup.plugin.scripted.mode", "outage").await;
    let report = sync(&s, t + 600).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert!(
        r.stopped
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{r:?}"
    );
    assert_eq!((r.adopted, r.updated, r.retired), (0, 0, 0));
    set_zone(&s, "backup.plugin.scripted.mode", "ok").await;
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        "rp-1,not-a-date,FULL,1,1",
    )
    .await;
    let report = sync(&s, t + 900).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert_eq!(r.failed.len(), 1);
    assert!(r.failed[0].1.contains("invalid configuration"), "{r:?}");
    assert_eq!(
        summary(&backups_of(&user, &vm).await),
        [row("rp-1", 3 * GIB, 2 * GIB), row("rp-3", 5, 6)]
    );
    assert_eq!(
        scalar(&s, "SELECT COUNT(*) FROM events").await,
        events_before
    );

    // Back to normal with an empty list: everything bnr has is retired.
    set_zone(&s, "backup.plugin.scripted.restore-points", NONE).await;
    let report = sync(&s, t + 1200).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert_eq!(r.retired, 2);
    assert!(backups_of(&user, &vm).await.is_empty());
}

#[tokio::test]
async fn reconciliation_leaves_instances_with_work_in_flight_and_providers_without_the_capability_alone()
 {
    let s = start(Installed::DummyAndScripted).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (dummy_creds, dummy_vm) = protected_vm(&s, "vera", "ondummy", &id(&gold)).await;
    let dummy_user = s.client(dummy_creds);
    backup(&dummy_user, &dummy_vm).await;
    let t = jiff::Timestamp::now().as_second() + DAY;
    // dummy: reconciliation is off by capability, its backups are left as they are.
    let report = sync(&s, t).await;
    let zone = report.zone(&s.zone_id).expect("zone");
    assert_eq!(zone.provider.as_deref(), Some("dummy"));
    assert!(zone.reconciled.is_none());
    assert_eq!(backups_of(&dummy_user, &dummy_vm).await.len(), 1);

    let (creds, vm) = scripted_zone(&s, "wade").await;
    let user = s.client(creds);
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        "rp-9,1700000000,FULL,1,1",
    )
    .await;
    // A backup of this VM is being taken: its row is BackingUp, so the VM is left for later.
    exec(
        &s,
        &format!(
            "INSERT INTO backups(uuid, name, vm_id, date, status, backup_offering_id, account_id,
                             domain_id, zone_id)
         SELECT 'in-flight', 'in-flight', id, 0, 'BackingUp', backup_offering_id, account_id,
                domain_id, zone_id FROM vms WHERE uuid = '{vm}'"
        ),
    )
    .await;
    let report = sync(&s, t + 300).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert_eq!((r.busy, r.adopted), (1, 0));
    exec(
        &s,
        "UPDATE backups SET status = 'Error' WHERE uuid = 'in-flight'",
    )
    .await;
    let report = sync(&s, t + 600).await;
    let r = report
        .zone(&s.zone_id)
        .and_then(|z| z.reconciled.clone())
        .expect("ran");
    assert_eq!((r.busy, r.adopted), (0, 1));
    // Backups of the dummy-era offering belong to another provider and are never retired.
    assert_eq!(backups_of(&dummy_user, &dummy_vm).await.len(), 1);
    assert_eq!(
        summary(&backups_of(&user, &vm).await),
        [
            ("".to_string(), 0, 0, "Error".to_string()),
            row("rp-9", 1, 1)
        ]
    );
}

#[tokio::test]
async fn storage_stats_are_collected_per_zone_and_kept_through_an_outage() {
    let s = start(Installed::DummyAndScripted).await;
    let admin = s.admin();
    let t = jiff::Timestamp::now().as_second() + DAY;
    sync(&s, t).await; // dummy does not report storage stats
    let r = admin.call("listBackupStorageStats", &[]).await;
    assert!(items(r.ok("listBackupStorageStats"), "backupstoragestats").is_empty());

    let _ = scripted_zone(&s, "xena").await;
    // The scripted provider reports its configured restore points as the zone's storage.
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        "rp-1,1,FULL,600,3000;rp-2,2,FULL,400,2000,other",
    )
    .await;
    sync(&s, t + 300).await;
    set_zone(&s, "backup.plugin.scripted.mode", "outage").await;
    let report = sync(&s, t + 600).await;
    assert!(
        report
            .zone(&s.zone_id)
            .and_then(|z| z.stats.clone())
            .is_some_and(|r| r.is_err())
    );
    let r = admin
        .call("listBackupStorageStats", &[("zoneid", &s.zone_id)])
        .await;
    let listed = items(r.ok("listBackupStorageStats"), "backupstoragestats");
    assert_eq!(listed.len(), 1);
    let stats = listed[0];
    assert_eq!(stats["zoneid"], s.zone_id.as_str());
    assert_eq!(stats["zonename"], "zone1");
    assert_eq!(stats["provider"], "scripted");
    assert_eq!(
        (stats["usedbytes"].as_i64(), stats["totalbytes"].as_i64()),
        (Some(1000), Some(5000))
    );
    assert_eq!(
        stats["collected"].as_str(),
        Some(bnr::store::format_date(t + 300).as_str())
    );
    let user = s.client(s.create_user("yuri", "User", None).await);
    assert_eq!(user.call("listBackupStorageStats", &[]).await.status, 401);
}

fn date_param(secs: i64) -> String {
    at(secs).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

#[tokio::test]
async fn usage_records_are_time_weighted_over_an_injected_timeline() {
    let s = start(Installed::DummyAndScripted).await;
    let (_, vm) = scripted_zone(&s, "zora").await;
    let admin = s.admin();
    // Whole hours, a day ahead of the assignment (which opened a zero-size period).
    let t1 = (jiff::Timestamp::now().as_second() / HOUR + 24) * HOUR;
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!("rp-1,1700000000,FULL,{GIB},{}", 4 * GIB),
    )
    .await;
    sync(&s, t1).await; // adopted: 1 GiB from t1
    set_zone(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!("rp-1,1700000000,FULL,{},{}", 3 * GIB, 4 * GIB),
    )
    .await;
    sync(&s, t1 + 2 * HOUR).await; // 3 GiB from t1 + 2 h
    set_zone(&s, "backup.plugin.scripted.restore-points", NONE).await;
    sync(&s, t1 + 5 * HOUR).await; // retired: 0 from t1 + 5 h (still assigned)

    let list = |start: i64, end: i64, extra: Vec<(&'static str, String)>| {
        let admin = &admin;
        async move {
            let mut p = vec![
                ("startdate", date_param(start)),
                ("enddate", date_param(end)),
            ];
            p.extend(extra);
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = admin.call("listBackupUsageRecords", &p).await;
            items(r.ok("listBackupUsageRecords"), "backupusagerecord")
                .into_iter()
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    let records = list(t1, t1 + 5 * HOUR, vec![("virtualmachineid", vm.clone())]).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["virtualmachineid"], vm.as_str());
    assert_eq!(r["backupofferingname"], "Silver");
    assert_eq!(r["account"], "zora");
    assert_eq!(r["usagetype"], 28);
    assert_eq!(r["rawusage"], "5");
    assert_eq!(r["usage"], "5 Hrs");
    // 1 GiB × 2 h + 3 GiB × 3 h; virtual 4 GiB × 5 h.
    assert_eq!(r["sizegibhours"], 11.0);
    assert_eq!(r["virtualsizegibhours"], 20.0);
    assert_eq!(r["size"], 3 * GIB);
    assert_eq!(r["startdate"], bnr::store::format_date(t1).as_str());
    assert_eq!(
        r["enddate"],
        bnr::store::format_date(t1 + 5 * HOUR).as_str()
    );

    // A window around t1: an hour at size 0 since the assignment, an hour at 1 GiB.
    let records = list(t1 - HOUR, t1 + HOUR, vec![]).await;
    assert_eq!(
        (
            records[0]["rawusage"].clone(),
            records[0]["sizegibhours"].clone()
        ),
        ("2".into(), 1.0.into())
    );
    // After the retirement: hours at size 0 accrue only up to now, which is before t1.
    assert!(list(t1 + 5 * HOUR, t1 + 9 * HOUR, vec![]).await.is_empty());
    // Filters: another zone's or VM's usage is not listed.
    let other = s.client(s.create_user("abe", "User", None).await);
    let other_vm = id(&crate::bnr_support::vm(&s, &other, "unmetered", false).await);
    assert!(
        list(t1, t1 + 5 * HOUR, vec![("virtualmachineid", other_vm)])
            .await
            .is_empty()
    );
    let r = admin
        .call(
            "listBackupUsageRecords",
            &[("startdate", "2030-01-02"), ("enddate", "2030-01-01")],
        )
        .await;
    assert_eq!(r.status, 431);
    let user = s.client(s.create_user("bea", "User", None).await);
    assert_eq!(
        user.call(
            "listBackupUsageRecords",
            &[("startdate", "2030-01-01"), ("enddate", "2030-01-02")]
        )
        .await
        .status,
        401
    );
}

async fn sync_status(admin: &Client<'_>) -> Vec<Value> {
    let r = admin.call("listBackupSyncStatus", &[]).await;
    items(r.ok("listBackupSyncStatus"), "backupsyncstatus")
        .into_iter()
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_latest_sync_pass_of_each_zone_and_its_result_are_listed_for_root_admins() {
    let s = start(Installed::DummyAndScripted).await;
    let admin = s.admin();
    assert!(sync_status(&admin).await.is_empty(), "no pass yet");
    let t = jiff::Timestamp::now().as_second() + DAY;
    sync(&s, t).await;
    let listed = sync_status(&admin).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let zone = &listed[0];
    assert_eq!(zone["zoneid"], s.zone_id.as_str());
    assert_eq!(zone["zonename"], "zone1");
    assert_eq!(zone["provider"], "dummy");
    assert_eq!(zone["result"], "ok");
    assert_eq!(zone["failuresinarow"], 0);
    assert!(zone.get("error").is_none(), "{zone}");
    assert_eq!(
        zone["lastsync"].as_str(),
        Some(bnr::store::format_date(t).as_str())
    );

    // The vendor goes down: every pass fails, and says why.
    let _ = scripted_zone(&s, "sybil").await;
    set_zone(&s, "backup.plugin.scripted.mode", "outage").await;
    sync(&s, t + 300).await;
    sync(&s, t + 600).await;
    let r = admin
        .call("listBackupSyncStatus", &[("zoneid", &s.zone_id)])
        .await;
    let listed = items(r.ok("listBackupSyncStatus"), "backupsyncstatus");
    assert_eq!(listed.len(), 1);
    let zone = listed[0];
    assert_eq!(zone["provider"], "scripted");
    assert_eq!(zone["result"], "failed");
    assert_eq!(zone["failuresinarow"], 2);
    let error = zone["error"].as_str().expect("a reason");
    assert!(error.contains("storage statistics"), "{error}");
    assert_eq!(
        zone["lastsync"].as_str(),
        Some(bnr::store::format_date(t + 600).as_str())
    );

    // Back up: the run of failures ends.
    set_zone(&s, "backup.plugin.scripted.mode", "ok").await;
    sync(&s, t + 900).await;
    let zone = sync_status(&admin).await.remove(0);
    assert_eq!(
        (zone["result"].as_str(), zone["failuresinarow"].as_i64()),
        (Some("ok"), Some(0))
    );

    let user = s.client(s.create_user("ulla", "User", None).await);
    assert_eq!(user.call("listBackupSyncStatus", &[]).await.status, 401);
}
