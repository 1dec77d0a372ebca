//! Several `bnr serve --cluster` processes on one database (PostgreSQL; the takeover and the
//! identity cache also on one SQLite file in WAL mode): a replica killed (`kill -9`) or paused
//! (SIGSTOP) in the middle of a provider operation; its backup completes on another replica,
//! resumed from the persisted handle, and nothing the paused replica does after it wakes lands.
//! A zone's provider swap made on one replica reaches the others under load.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::ops_shutdown::{dummy_and_scripted, finished, get, inner, scripted_vm, zone_setting};
use crate::support_api::*;
use crate::support_replicas::{BnrProcess, Engine, SharedStore, until};

/// The next replica on `shared`, serving.
async fn start(shared: &SharedStore, providers: &Path) -> BnrProcess {
    shared.replica(providers).spawn().await
}

/// Replica A with a scripted zone whose operations take `op_seconds`, a backup started on A
/// and polled there; replica B started next to it. Returns (A, B, job, backup, vm).
async fn backup_polled_on_a(
    shared: &SharedStore,
    providers: &Path,
    op_seconds: &str,
) -> (BnrProcess, BnrProcess, String, String, String) {
    let a = start(shared, providers).await;
    let (zone, vm) = scripted_vm(&a.addr).await;
    zone_setting(
        &a.addr,
        &zone,
        "backup.plugin.scripted.op-seconds",
        op_seconds,
    )
    .await;
    let b = start(shared, providers).await;
    let (status, v) = get(&a.addr, "createBackup", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let job = inner(&v)["jobid"].as_str().unwrap().to_string();
    let backup = inner(&v)["id"].as_str().unwrap().to_string();
    let mut polled = false;
    for _ in 0..600 {
        let (_, v) = get(&a.addr, "queryAsyncJobResult", &[("jobid", &job)])
            .await
            .unwrap();
        assert_eq!(
            inner(&v)["jobstatus"],
            0,
            "the operation outlives the test: {v}"
        );
        if inner(&v)["jobprocstatus"].as_i64().unwrap_or(0) > 0 {
            polled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polled, "the job reported no progress on A");
    (a, b, job, backup, vm)
}

async fn backups_of(addr: &str, vm: &str) -> Vec<serde_json::Value> {
    let (_, v) = get(addr, "listBackups", &[("virtualmachineid", vm)])
        .await
        .unwrap();
    inner(&v)["backup"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_replica_killed_mid_operation_has_its_backup_completed_by_another_from_the_handle() {
    for engine in [Engine::Postgres, Engine::Sqlite] {
        killed_mid_operation(engine).await;
    }
}

async fn killed_mid_operation(engine: Engine) {
    let shared = SharedStore::new(engine);
    let providers = dummy_and_scripted();
    let (mut a, b, job, backup, vm) = backup_polled_on_a(&shared, providers.path(), "6").await;
    a.kill();
    // B declares A dead after the lease, adopts the job and polls the same handle.
    let done = finished(&b.addr, &job).await;
    assert_eq!(done["jobstatus"], 1, "{engine:?}: {done}");
    let backups = backups_of(&b.addr, &vm).await;
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["id"], backup.as_str());
    assert_eq!(backups[0]["status"], "BackedUp");
    assert!(b.logged("took over the work of dead replicas"));
    assert!(b.logged("resuming interrupted job"));
    if engine == Engine::Postgres {
        let db = shared.connect().await;
        let b_id = replica_id(&db, &b).await;
        let row = db
            .query_one(
                "SELECT status, owner FROM async_jobs WHERE uuid = $1",
                &[&job],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
        assert_eq!(row.get::<_, Option<i64>>(1), Some(b_id));
        let pending: i64 = db
            .query_one("SELECT COUNT(*) FROM provider_operations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            pending, 0,
            "the adopted operation was forgotten once finished"
        );
    }
}

/// The `replicas.id` of a running replica (its name carries its listen address).
async fn replica_id(db: &tokio_postgres::Client, replica: &BnrProcess) -> i64 {
    db.query_one(
        "SELECT id FROM replicas WHERE name LIKE $1 || ' %' ORDER BY id DESC LIMIT 1",
        &[&replica.addr],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_replica_paused_past_its_lease_writes_nothing_when_it_wakes() {
    let shared = SharedStore::new(Engine::Postgres);
    let providers = dummy_and_scripted();
    let (a, b, job, backup, vm) = backup_polled_on_a(&shared, providers.path(), "4").await;
    let db = shared.connect().await;
    let (a_id, b_id) = (replica_id(&db, &a).await, replica_id(&db, &b).await);
    a.signal("-STOP");
    let done = finished(&b.addr, &job).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert!(b.logged("took over the work of dead replicas"));
    let epoch_fenced: i64 = db
        .query_one("SELECT epoch FROM replicas WHERE id = $1", &[&a_id])
        .await
        .unwrap()
        .get(0);
    // A wakes long after its operation finished at the provider: it must notice it was fenced
    // and re-join under a new epoch, writing nothing for the work it lost.
    a.signal("-CONT");
    for _ in 0..600 {
        if a.logged("re-joined the cluster") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.logged("replica fenced itself"), "{:?}", a.log());
    assert!(a.logged("re-joined the cluster"));
    // A answers again, and sees what B wrote: one backup, the job's outcome B's.
    let after = finished(&a.addr, &job).await;
    assert_eq!(after, done);
    let backups = backups_of(&a.addr, &vm).await;
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["id"], backup.as_str());
    assert_eq!(backups[0]["status"], "BackedUp");
    let (_, v) = get(
        &b.addr,
        "listEvents",
        &[("type", "BACKUP.CREATE"), ("pagesize", "500")],
    )
    .await
    .unwrap();
    let completed = inner(&v)["event"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["state"] == "Completed")
        .count();
    assert_eq!(completed, 1, "{v}");
    // The rows say the same: the job and its outcome are B's, nothing is pending, one backup
    // row, and A is back under a later epoch than the one it was fenced with.
    let row = db
        .query_one(
            "SELECT status, owner FROM async_jobs WHERE uuid = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(b_id));
    let counts = db
        .query_one(
            "SELECT (SELECT COUNT(*) FROM provider_operations),
                    (SELECT COUNT(*) FROM backups WHERE removed IS NULL),
                    (SELECT epoch FROM replicas WHERE id = $1)",
            &[&a_id],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 0);
    assert_eq!(counts.get::<_, i64>(1), 1);
    assert!(counts.get::<_, i64>(2) > epoch_fenced);
}

/// The value replica `addr` shows for a zone setting.
async fn zone_value(addr: &str, zone: &str, name: &str) -> Option<String> {
    let (status, v) = get(
        addr,
        "listConfigurations",
        &[("name", name), ("zoneid", zone)],
    )
    .await?;
    assert_eq!(status, 200, "{v}");
    inner(&v)["configuration"][0]["value"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn a_zone_swap_made_on_one_replica_takes_effect_on_the_others_under_load() {
    let shared = SharedStore::new(Engine::Postgres);
    let providers = dummy_and_scripted();
    let a = start(&shared, providers.path()).await;
    let b = start(&shared, providers.path()).await;
    let c = start(&shared, providers.path()).await;
    let (addr_a, addr_b, addr_c) = (a.addr.clone(), b.addr.clone(), c.addr.clone());
    let zone = inner(&get(&addr_a, "listZones", &[]).await.unwrap().1)["zone"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Signed reads on B and C all along: none may fail while the zone swaps.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [addr_b.clone(), addr_c.clone()]
        .into_iter()
        .map(|addr| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get(&addr, "listBackupProviders", &[]).await {
                        Some((200, _)) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // The swap on A (dummy → scripted), with an offering and a VM of the new provider.
    let swapped = std::time::Instant::now();
    let (zone2, vm) = scripted_vm(&addr_a).await;
    assert_eq!(zone2, zone);
    for addr in [&addr_b, &addr_c] {
        until(
            &format!("the swap did not reach {addr}"),
            Duration::from_millis(10),
            async || {
                zone_value(addr, &zone, "backup.framework.provider.plugin")
                    .await
                    .as_deref()
                    == Some("scripted")
            },
        )
        .await;
    }
    eprintln!(
        "swap visible on B and C {:?} after it started on A",
        swapped.elapsed()
    );
    // B takes backups with the new provider.
    let (status, v) = get(&addr_b, "createBackup", &[("virtualmachineid", &vm)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let done = finished(&addr_b, inner(&v)["jobid"].as_str().unwrap()).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    let backups = backups_of(&addr_c, &vm).await;
    assert_eq!(backups.len(), 1);
    assert!(
        backups[0]["externalid"]
            .as_str()
            .is_some_and(|id| id.starts_with("scripted-")),
        "{backups:?}"
    );
    // Propagation time of a setting changed on A, seen on B.
    let mut times = Vec::new();
    for round in 1..=10 {
        let value = round.to_string();
        let changed = std::time::Instant::now();
        zone_setting(&addr_a, &zone, "backup.plugin.scripted.op-seconds", &value).await;
        until(
            &format!("round {round} did not reach B"),
            Duration::from_millis(5),
            async || {
                zone_value(&addr_b, &zone, "backup.plugin.scripted.op-seconds").await
                    == Some(value.clone())
            },
        )
        .await;
        times.push(changed.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(ok > 0);
        assert_eq!(failed, 0, "requests failed on a replica during the swap");
    }
    times.sort();
    eprintln!(
        "setting propagation A → B over {} changes: p50 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// One signed GET as `creds`; the HTTP status.
async fn status_as(addr: &str, creds: &Creds, command: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let q = query_string(&signed_params(creds, command, &[]));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /client/api?{q} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

#[tokio::test]
async fn a_user_disabled_on_one_replica_is_refused_by_another_that_cached_its_key() {
    let shared = SharedStore::new(Engine::Sqlite);
    let providers = dummy_and_scripted();
    let a = start(&shared, providers.path()).await;
    let b = start(&shared, providers.path()).await;
    let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());
    let (status, v) = get(
        &addr_a,
        "createAccount",
        &[
            ("username", "roamer"),
            ("password", "pw-roamer"),
            ("email", "r@example.com"),
            ("firstname", "R"),
            ("lastname", "M"),
            ("roletype", "User"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let user = inner(&v)["account"]["user"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = get(&addr_a, "registerUserKeys", &[("id", &user)])
        .await
        .unwrap();
    let keys = &inner(&v)["userkeys"];
    let creds = Creds {
        api_key: keys["apikey"].as_str().unwrap().to_string(),
        secret_key: keys["secretkey"].as_str().unwrap().to_string(),
    };
    // B loads (and caches) the credential.
    until(
        "B never accepted the new key",
        Duration::from_millis(20),
        async || status_as(&addr_b, &creds, "listZones").await == 200,
    )
    .await;
    let (status, v) = get(&addr_a, "disableUser", &[("id", &user)]).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let disabled = std::time::Instant::now();
    until(
        "B still accepts a user disabled on A",
        Duration::from_millis(10),
        async || status_as(&addr_b, &creds, "listZones").await == 401,
    )
    .await;
    eprintln!(
        "user disabled on A refused by B after {:?}",
        disabled.elapsed()
    );
}
