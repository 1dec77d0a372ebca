//! API benchmarks: `cargo xtask plugins && cargo bench -p bnr --bench api`.
//!
//! A self-written harness over real loopback HTTP (the keep-alive HTTP/1.1 client of `client/`,
//! the same for every server measured), all in one process:
//!
//! 1. signed requests per second: `listZones` (and a `listBackups` page) on bnr against a bare
//!    axum handler answering a fixed JSON body, with the same client and concurrency;
//! 2. ad-hoc backups per second end to end through the dummy provider: signed `createBackup`
//!    until its job finished and the backup is `BackedUp`;
//! 3. signed `listBackups` latency (p50/p99) with 1,000,000 backups stored (bulk-inserted with
//!    SQL in one transaction), for several scopes and filters.
//!
//! Prints Markdown tables (see docs/benchmarks.md).

mod client;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bnr::store::db::params;

use bnr::api::ApiState;
use bnr::api::serve::{prepare_with, serve_on};
use bnr::inventory::bootstrap::BootstrapOptions;
use bnr::service::ProviderSource;
use bnr_runtime::{Catalog, Runtime, RuntimeConfig};
use client::{API_KEY, Conn, SECRET_KEY, json, ms, quantile, signed, target_dir};

/// Connections for the throughput runs (2 cores: client and server share them);
/// `BNR_BENCH_CONCURRENCY` overrides.
fn concurrency() -> usize {
    std::env::var("BNR_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}
/// Length of one throughput run.
const RUN: Duration = Duration::from_secs(4);
/// Backups stored for the latency runs (`BNR_BENCH_BACKUPS` overrides, for a quick smoke run).
fn backups_stored() -> i64 {
    std::env::var("BNR_BENCH_BACKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
/// VMs the stored backups belong to.
const VMS: i64 = 1_000;

/// Requests per second on one server with `concurrency()` connections.
async fn throughput(addr: std::net::SocketAddr, path: &str) -> f64 {
    client::throughput(&[addr], path, concurrency(), RUN).await
}

async fn wait_job(state: &ApiState, body: &[u8], command: &str) -> serde_json::Value {
    let v = json(body);
    let jobid = v[format!("{}response", command.to_lowercase())]["jobid"]
        .as_str()
        .unwrap_or_else(|| panic!("{command}: no jobid in {v}"))
        .to_string();
    let job = state
        .jobs()
        .wait(&jobid)
        .await
        .expect("job lookup")
        .expect("job exists");
    assert_eq!(
        job.status,
        bnr::jobs::JobStatus::Succeeded,
        "{command}: {:?}",
        job.result
    );
    v
}

/// Ad-hoc backups per second end to end: one client per VM loops signed `createBackup`, then
/// waits for its job to succeed.
async fn adhoc_backups(state: &ApiState, addr: std::net::SocketAddr, vms: &[String]) -> f64 {
    let backups_done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for vm in vms {
        let path = signed("createBackup", &[("virtualmachineid", vm)]);
        let (done, stop, state) = (backups_done.clone(), stop.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = conn.get(&path).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                wait_job(&state, &body, "createBackup").await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(client::WARM_UP).await;
    let before = backups_done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    let taken = backups_done.load(Ordering::Relaxed) - before;
    let backups_per_sec = taken as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("backup task");
    }
    backups_per_sec
}

/// (p50, p99, items in the last answer) of `n` signed requests for `path`, one at a time, after a
/// tenth as many to warm up.
async fn latencies(conn: &mut Conn, path: &str, n: usize) -> (Duration, Duration, usize) {
    for _ in 0..(n / 10).max(2) {
        let (status, _) = conn.get(path).await;
        assert_eq!(status, 200);
    }
    let mut samples = Vec::with_capacity(n);
    let mut items = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = conn.get(path).await;
        samples.push(started.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        items = json(&body)["listbackupsresponse"]["backup"]
            .as_array()
            .map_or(0, Vec::len);
    }
    (
        quantile(&mut samples, 0.5),
        quantile(&mut samples, 0.99),
        items,
    )
}

/// Least time per iteration of `f` over five runs of `n` iterations.
fn least_per_iteration(n: u32, mut f: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed() / n
        })
        .min()
        .expect("five runs")
}

/// One signed GET through the router, without the network, its whole answer read.
async fn in_process_request(router: &axum::Router, path: &str) {
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    let _ = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body");
}

/// See `BNR_BENCH_OVERHEAD` in `run`.
async fn overhead(state: &ApiState, path: &str) {
    bnr::logging::init(bnr::logging::LogFormat::Text, "info", true);
    let metrics = bnr::metrics::enable();
    let router = bnr::api::router(state.clone());
    let mut request = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let n = 20_000u32;
        for _ in 0..n {
            in_process_request(&router, path).await;
        }
        request = request.min(started.elapsed() / n);
    }
    let command = String::from("listZones");
    // What `api::answer` does per request: the span, entered while the handler's future is
    // polled (once for an in-place read), then closed.
    let span = least_per_iteration(200_000, || {
        let span = tracing::info_span!("api_request", command = %command);
        span.in_scope(|| std::hint::black_box(&command));
    });
    // What `api::process` does per answered request with metrics on.
    let counter = metrics.http_request_counter(&command, 200);
    let count = least_per_iteration(2_000_000, || {
        if bnr::metrics::get().is_some() {
            counter.inc();
        }
    });
    let share = |d: Duration| 100.0 * d.as_secs_f64() / request.as_secs_f64();
    println!("| what | per request | share of a signed `listZones` (in process, kept answer) |");
    println!("|---|---:|---:|");
    println!(
        "| whole request, span and counter on | {:.2} µs | 100 % |",
        request.as_secs_f64() * 1e6
    );
    println!(
        "| `api_request` span (RUST_LOG=info) | {} ns | {:.1} % |",
        span.as_nanos(),
        share(span)
    );
    println!(
        "| request counter (`--metrics-listen`) | {} ns | {:.2} % |",
        count.as_nanos(),
        share(count)
    );
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("data dir");
    let dummy = target_dir().join("providers/bnr_dummy.wasm");
    let runtime = Runtime::new(RuntimeConfig::new(dir.path().join("cache"))).expect("runtime");
    let catalog = Arc::new(Catalog::new());
    catalog.insert(
        runtime.load_file(&dummy).unwrap_or_else(|e| {
            panic!("{}: {e}; run `cargo xtask plugins` first", dummy.display())
        }),
    );
    let opts = BootstrapOptions {
        admin_password: Some("bench".into()),
        admin_keys: Some((API_KEY.into(), SECRET_KEY.into())),
    };
    let (state, boot) = prepare_with(
        dir.path(),
        &opts,
        ProviderSource::Loaded {
            runtime: Some(runtime),
            catalog,
        },
    )
    .await
    .expect("server");
    let zone = boot.expect("bootstrapped").zone_uuid;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));

    let bare = axum::Router::new().route(
        "/client/api",
        axum::routing::get(|| async {
            axum::Json(
                serde_json::json!({"listzonesresponse": {"count": 1, "zone": [{
                "id": "6e3b7a51-2f59-4e8b-9d0c-7b1a2f3e4d5c", "name": "zone1",
                "allocationstate": "Enabled", "networktype": "Advanced",
                "securitygroupsenabled": false, "localstorageenabled": false}]}}),
            )
        }),
    );
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bare_addr = bare_listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });

    let mut conn = Conn::open(addr).await;
    // An offering and a few VMs for the backup runs.
    let (status, body) = conn
        .get(&signed(
            "importBackupOffering",
            &[
                ("zoneid", &zone),
                ("externalid", "gold-policy"),
                ("name", "Gold"),
                ("description", "Gold"),
                ("allowuserdrivenbackups", "true"),
            ],
        ))
        .await;
    assert_eq!(status, 200);
    wait_job(&state, &body, "importBackupOffering").await;
    let offering: String = state
        .store()
        .read(|c| {
            c.query_row("SELECT uuid FROM backup_offerings", [], |r| r.get(0))
                .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("offering");
    let (so, template): (String, String) = state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT (SELECT uuid FROM service_offerings), (SELECT uuid FROM templates)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("catalog");
    let mut vms = Vec::new();
    for i in 0..concurrency() {
        let (status, body) = conn
            .get(&signed(
                "deployVirtualMachine",
                &[
                    ("zoneid", &zone),
                    ("serviceofferingid", &so),
                    ("templateid", &template),
                    ("name", &format!("bench-{i}")),
                ],
            ))
            .await;
        assert_eq!(status, 200);
        let v = wait_job(&state, &body, "deployVirtualMachine").await;
        let vm = v["deployvirtualmachineresponse"]["id"]
            .as_str()
            .expect("vm id")
            .to_string();
        let (status, body) = conn
            .get(&signed(
                "assignVirtualMachineToBackupOffering",
                &[("virtualmachineid", &vm), ("backupofferingid", &offering)],
            ))
            .await;
        assert_eq!(status, 200);
        wait_job(&state, &body, "assignVirtualMachineToBackupOffering").await;
        vms.push(vm);
    }

    println!("## API (release build, 2 tokio workers, loopback HTTP/1.1 keep-alive)\n");

    // 1. Throughput against a bare axum handler.
    let list_zones = signed("listZones", &[]);
    let list_page = signed("listBackups", &[("pagesize", "20"), ("listall", "true")]);
    // Profiling aid: `BNR_BENCH_ONLY=<command>` runs just that signed request for 10 s.
    if let Ok(only) = std::env::var("BNR_BENCH_INPROC") {
        // The subscriber and metrics `bnr serve` runs with, to measure their cost per request:
        // `BNR_BENCH_LOG=info` (the default filter: the request span is on) or `warn` (off);
        // `BNR_BENCH_METRICS=1` as with `--metrics-listen`.
        if let Ok(filter) = std::env::var("BNR_BENCH_LOG") {
            bnr::logging::init(bnr::logging::LogFormat::Text, &filter, true);
        }
        if std::env::var_os("BNR_BENCH_METRICS").is_some() {
            bnr::metrics::enable();
        }
        let router = bnr::api::router(state.clone());
        let path = signed(&only, &[("listall", "true")]);
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(5) {
            in_process_request(&router, &path).await;
            n += 1;
        }
        println!("{only} in process: {:.1} µs per request", 5e6 / n as f64);
        return;
    }
    // `BNR_BENCH_OVERHEAD=1`: what the request span and the request counter add to a signed
    // `listZones`, each timed alone in a tight loop (the least of five runs: tight loops of
    // tiny work are stable where whole requests on a shared VM are not), against the least
    // in-process cost of the whole request with both on.
    if std::env::var_os("BNR_BENCH_OVERHEAD").is_some() {
        overhead(&state, &list_zones).await;
        return;
    }
    if let Ok(only) = std::env::var("BNR_BENCH_ONLY") {
        let path = signed(&only, &[("listall", "true")]);
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            let (status, _) = conn.get(&path).await;
            assert_eq!(status, 200);
            n += 1;
        }
        println!("{only}: {:.0} req/s on one connection", n as f64 / 10.0);
        return;
    }
    // `BNR_BENCH_BACKUPS_ONLY=1`: just the ad-hoc backups run (for profiling it).
    if std::env::var_os("BNR_BENCH_BACKUPS_ONLY").is_some() {
        let backups_per_sec = adhoc_backups(&state, addr, &vms).await;
        println!(
            "ad-hoc backups end to end ({} clients): {backups_per_sec:.0} /s",
            concurrency()
        );
        return;
    }
    let mut bare_rps = Vec::new();
    let mut zones_rps = Vec::new();
    for _ in 0..2 {
        bare_rps.push(throughput(bare_addr, &list_zones).await);
        zones_rps.push(throughput(addr, &list_zones).await);
    }
    let bare_rps = bare_rps.iter().sum::<f64>() / bare_rps.len() as f64;
    let zones_rps = zones_rps.iter().sum::<f64>() / zones_rps.len() as f64;
    // `BNR_BENCH_THROUGHPUT_ONLY=1`: just the bare/listZones pair (skips the slow 1M-row part).
    if std::env::var_os("BNR_BENCH_THROUGHPUT_ONLY").is_some() {
        println!("| measurement | result |");
        println!("|---|---:|");
        println!("| bare axum JSON handler (fixed listZones body) | {bare_rps:.0} req/s |");
        println!(
            "| signed `listZones` | {zones_rps:.0} req/s ({:.0} % of bare) |",
            100.0 * zones_rps / bare_rps
        );
        return;
    }

    // 2. Ad-hoc backups end to end.
    let backups_per_sec = adhoc_backups(&state, addr, &vms).await;
    let (backed_up, other): (i64, i64) = state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT sum(status = 'BackedUp'), sum(status <> 'BackedUp') FROM backups",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("backup states");
    assert_eq!(other, 0, "every backup ends BackedUp");

    // listBackups page throughput with the small table (before the bulk insert).
    let page_rps = throughput(addr, &list_page).await;

    println!("| measurement | result | target |");
    println!("|---|---:|---:|");
    println!("| bare axum JSON handler (fixed listZones body) | {bare_rps:.0} req/s | – |");
    println!(
        "| signed `listZones` | {zones_rps:.0} req/s ({:.0} % of bare) | ≥ 50 % |",
        zones_rps / bare_rps * 100.0
    );
    println!(
        "| signed `listBackups` page of 20 ({backed_up} backups stored) | {page_rps:.0} req/s ({:.0} % of bare) | – |",
        page_rps / bare_rps * 100.0
    );
    println!(
        "| ad-hoc backups end to end (signed `createBackup` → job done, `BackedUp`; {} clients) | {backups_per_sec:.0} /s | ≥ 2,000 /s |",
        concurrency()
    );

    // 3. listBackups latency with a million backups.
    let started = Instant::now();
    let (owner, zone_id, offering_id) = state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT (SELECT id FROM accounts WHERE name = 'admin'), (SELECT id FROM zones), \
                 (SELECT id FROM backup_offerings)",
                [],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("ids");
    let first_vm: String = state
        .store()
        .write(move |tx| {
            let so: i64 = tx.query_row("SELECT id FROM service_offerings", [], |r| r.get(0))?;
            let tpl: i64 = tx.query_row("SELECT id FROM templates", [], |r| r.get(0))?;
            let mut vm_ids = Vec::with_capacity(VMS as usize);
            let mut first = String::new();
            {
                let mut insert_vm = tx.prepare(
                    "INSERT INTO vms(uuid, name, display_name, internal_name, account_id, domain_id, zone_id,
                                     service_offering_id, template_id, state, backup_offering_id, created)
                     VALUES (?1, ?2, ?2, ?3, ?4, 1, ?5, ?6, ?7, 'Stopped', ?8, 0)",
                )?;
                for i in 0..VMS {
                    let uuid = uuid::Uuid::new_v4().to_string();
                    if i == 0 {
                        first = uuid.clone();
                    }
                    insert_vm.execute(params![
                        uuid,
                        format!("bulk-{i}"),
                        format!("i-1-{i}-VM"),
                        owner,
                        zone_id,
                        so,
                        tpl,
                        offering_id
                    ])?;
                    vm_ids.push(tx.as_sqlite().expect("the bench store is SQLite").last_insert_rowid());
                }
                let mut insert = tx.prepare(
                    "INSERT INTO backups(uuid, name, vm_id, external_id, type, date, size, protected_size,
                                         status, backup_offering_id, account_id, domain_id, zone_id,
                                         backed_volumes)
                     VALUES (?1, ?2, ?3, ?4, 'FULL', ?5, 2147483648, 2147483648, 'BackedUp', ?6, ?7, 1, ?8, ?9)",
                )?;
                let volumes = r#"[{"uuid":"3b0c1f7e-5c1d-4c8e-9a53-0c7a1e2b3c4d","type":"ROOT","size":2147483648,"path":"3b0c1f7e-5c1d-4c8e-9a53-0c7a1e2b3c4d","deviceId":0}]"#;
                for i in 0..backups_stored() {
                    let vm = vm_ids[(i % VMS) as usize];
                    insert.execute(params![
                        uuid::Uuid::new_v4().to_string(),
                        format!("bulk-{}-{i}", i % VMS),
                        vm,
                        format!("dummy-bulk-{i}"),
                        1_700_000_000 + i,
                        offering_id,
                        owner,
                        zone_id,
                        volumes
                    ])?;
                }
            }
            Ok::<_, bnr::store::StoreError>(first)
        })
        .await
        .expect("bulk insert");
    let loaded = started.elapsed();

    let cases: Vec<(&str, String, usize)> = vec![
        (
            "own account, page 1 of 100",
            signed("listBackups", &[("pagesize", "100")]),
            400,
        ),
        (
            "`listall=true` (root admin: everything), page 1 of 100",
            signed("listBackups", &[("pagesize", "100"), ("listall", "true")]),
            400,
        ),
        (
            "`listall=true`, page 100 of 100 (offset 9,900)",
            signed(
                "listBackups",
                &[("pagesize", "100"), ("page", "100"), ("listall", "true")],
            ),
            400,
        ),
        (
            "`zoneid` + `backupofferingid`, page 1 of 100",
            signed(
                "listBackups",
                &[
                    ("pagesize", "100"),
                    ("zoneid", &zone),
                    ("backupofferingid", &offering),
                ],
            ),
            400,
        ),
        (
            "`virtualmachineid` (1,000 backups), page 1 of 100",
            signed(
                "listBackups",
                &[("pagesize", "100"), ("virtualmachineid", &first_vm)],
            ),
            400,
        ),
        (
            "exact `name`",
            signed("listBackups", &[("name", "bulk-7-7")]),
            400,
        ),
        (
            "`listall=true`, page 5,000 of 100 (offset 499,900)",
            signed(
                "listBackups",
                &[("pagesize", "100"), ("page", "5000"), ("listall", "true")],
            ),
            40,
        ),
        (
            "`keyword` (substring of backup or VM name; scans)",
            signed(
                "listBackups",
                &[("pagesize", "100"), ("keyword", "bulk-999-")],
            ),
            10,
        ),
    ];
    println!(
        "\n`listBackups` with {} backups of {VMS} VMs stored (bulk insert: {:.1} s); \
         one request at a time, signed, over HTTP:\n",
        backups_stored(),
        loaded.as_secs_f64()
    );
    // Each case repeats one request: served from the kept answers (`api/answers.rs`) after the
    // first. The second pass measures the store path a changing table or a replica gets: a
    // store marked shared (as `--cluster` marks it) keeps no answers.
    println!(
        "| signed `listBackups` | n | p50, kept answers on | p99, on | p50, kept answers off | p99, off | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut kept = Vec::with_capacity(cases.len());
    for (_, path, n) in &cases {
        kept.push(latencies(&mut conn, path, *n).await);
    }
    state.store().mark_shared();
    for ((name, path, n), (kept_p50, kept_p99, _)) in cases.iter().zip(kept) {
        let (p50, p99, items) = latencies(&mut conn, path, *n).await;
        let target = if name.contains("page 1 of 100") {
            "p50 ≤ 5 ms, p99 ≤ 20 ms"
        } else {
            "–"
        };
        println!(
            "| {name} ({items} items) | {n} | {} | {} | {} | {} | {target} |",
            ms(kept_p50),
            ms(kept_p99),
            ms(p50),
            ms(p99)
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
