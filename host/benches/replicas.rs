//! Throughput with several replicas: `cargo xtask bench replicas` (starts a throw-away
//! PostgreSQL server from Debian's packages, as `cargo xtask test` does, and sets
//! `BNR_TEST_POSTGRES_URL`); `cargo bench -p bnr --bench replicas` alone measures only SQLite.
//!
//! Each configuration is a set of real `bnr serve` processes (the release binary, the dummy
//! provider, `RUST_LOG=warn`) on loopback, loaded by this process with the keep-alive signed
//! client of `client/`; every client spreads its requests over the processes round-robin. Per
//! configuration, bounded in time:
//!
//! 1. ad-hoc backups end to end: each client owns one VM and loops signed `createBackup`, then
//!    polls `queryAsyncJobResult` (1 ms doubling to 16 ms between polls) until the job
//!    succeeded; afterwards every backup is checked `BackedUp` through `listBackups`;
//! 2. signed `listBackups` (`listall=true`, page of 20) requests per second.
//!
//! The configurations: SQLite with one `bnr serve` (kept answers on) and with `--cluster`
//! (a replica never keeps answers: other processes write to its database), then PostgreSQL
//! (a fresh database each) with one `bnr serve`, and 1, 2 and 3 `bnr serve --cluster` replicas.
//! `BNR_BENCH_ROUNDS` (default 1) repeats the whole list, in reverse order every other round,
//! and prints per-round numbers and the median. Prints a Markdown table (docs/benchmarks.md).

mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bnr::store::postgres::testing::{TestDatabase, URL_VARIABLE};
use client::{API_KEY, Conn, RoundRobin, SECRET_KEY, WARM_UP, json, signed, target_dir};

/// Clients taking backups, one VM each (`BNR_BENCH_BACKUP_CLIENTS` overrides).
fn backup_clients() -> usize {
    env_number("BNR_BENCH_BACKUP_CLIENTS").unwrap_or(32)
}
/// Connections for the `listBackups` run (`BNR_BENCH_CONCURRENCY` overrides).
fn list_connections() -> usize {
    env_number("BNR_BENCH_CONCURRENCY").unwrap_or(16)
}
fn rounds() -> usize {
    env_number("BNR_BENCH_ROUNDS").unwrap_or(1).max(1)
}
fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Length of one counted run (after [`WARM_UP`]).
const RUN: Duration = Duration::from_secs(4);
/// How long a process may take from start to answering.
const START_BOUND: Duration = Duration::from_secs(120);
/// How long one job may stay pending before the bench gives up.
const JOB_BOUND: Duration = Duration::from_secs(60);
/// Longest pause between two polls of a job.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(16);

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy)]
struct Config {
    engine: Engine,
    processes: usize,
    cluster: bool,
}

impl Config {
    fn label(&self) -> String {
        let engine = match self.engine {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        };
        if self.cluster {
            format!(
                "{engine}, {} × `bnr serve --cluster` (kept answers off)",
                self.processes
            )
        } else {
            format!("{engine}, `bnr serve` (kept answers on)")
        }
    }
}

const CONFIGS: &[Config] = &[
    Config {
        engine: Engine::Sqlite,
        processes: 1,
        cluster: false,
    },
    Config {
        engine: Engine::Sqlite,
        processes: 1,
        cluster: true,
    },
    Config {
        engine: Engine::Postgres,
        processes: 1,
        cluster: false,
    },
    Config {
        engine: Engine::Postgres,
        processes: 1,
        cluster: true,
    },
    Config {
        engine: Engine::Postgres,
        processes: 2,
        cluster: true,
    },
    Config {
        engine: Engine::Postgres,
        processes: 3,
        cluster: true,
    },
];

/// One `bnr serve` process, killed when dropped; its output goes to a log file.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, database: Option<&str>, cluster: bool, n: usize) -> Server {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = data_dir.join(format!("bnr-{n}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_bnr"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--providers-dir")
            .arg(target_dir().join("providers"))
            .env("RUST_LOG", "warn")
            .env("BNR_ADMIN_API_KEY", API_KEY)
            .env("BNR_ADMIN_SECRET_KEY", SECRET_KEY)
            .env("BNR_ADMIN_PASSWORD", "bench")
            .env_remove("BNR_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        if let Some(url) = database {
            command.arg("--database").arg(url);
        }
        if cluster {
            command.arg("--cluster");
        }
        let child = command.spawn().expect("start bnr serve");
        let mut server = Server { child, addr, log };
        server.wait_listening();
        server
    }

    /// Bounded wait until the process accepts connections; fails when it exits first.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_BOUND;
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!(
                    "bnr serve exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "bnr serve did not listen within {START_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The inner object of a CloudStack answer (`{"<command>response": {...}}`).
fn inner(v: &serde_json::Value) -> &serde_json::Value {
    v.as_object()
        .and_then(|o| o.values().next())
        .unwrap_or(&serde_json::Value::Null)
}

/// Signed GET that must answer 200; the inner object of the answer.
async fn call(conns: &mut RoundRobin, path: &str) -> serde_json::Value {
    let (status, body) = conns.get(path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    inner(&json(&body)).clone()
}

/// Polls the job (on the next servers in turn) until it succeeded; returns its answer and the
/// number of polls. Fails on a failed job or after [`JOB_BOUND`].
async fn finished(conns: &mut RoundRobin, jobid: &str) -> (serde_json::Value, u64) {
    let query = signed("queryAsyncJobResult", &[("jobid", jobid)]);
    let deadline = Instant::now() + JOB_BOUND;
    let mut pause = Duration::from_millis(1);
    let mut polls = 0;
    loop {
        let answer = call(conns, &query).await;
        polls += 1;
        match answer["jobstatus"].as_i64() {
            Some(0) => {}
            Some(1) => return (answer, polls),
            _ => panic!("job {jobid} failed: {answer}"),
        }
        assert!(
            Instant::now() < deadline,
            "job {jobid} still pending after {JOB_BOUND:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    }
}

/// Starts an async command and waits for its job; returns the job's answer.
async fn run_job(
    conns: &mut RoundRobin,
    command: &str,
    params: &[(&str, &str)],
) -> serde_json::Value {
    let accepted = call(conns, &signed(command, params)).await;
    let jobid = accepted["jobid"]
        .as_str()
        .unwrap_or_else(|| panic!("{command}: no jobid in {accepted}"));
    finished(conns, jobid).await.0
}

/// The dummy's gold policy as an offering and `count` VMs assigned to it; returns the VMs.
async fn prepare(addr: SocketAddr, count: usize) -> Vec<String> {
    let mut conns = RoundRobin::open(&[addr], 0).await;
    let zones = call(&mut conns, &signed("listZones", &[])).await;
    let zone = zones["zone"][0]["id"].as_str().expect("a zone").to_string();
    let imported = run_job(
        &mut conns,
        "importBackupOffering",
        &[
            ("zoneid", &zone),
            ("externalid", "gold-policy"),
            ("name", "Gold"),
            ("description", "Gold"),
            ("allowuserdrivenbackups", "true"),
        ],
    )
    .await;
    let offering = imported["jobresult"]["backupoffering"]["id"]
        .as_str()
        .expect("offering id")
        .to_string();
    let first_id = |v: &serde_json::Value, key: &str| {
        v[key][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {v}"))
            .to_string()
    };
    let so = first_id(
        &call(&mut conns, &signed("listServiceOfferings", &[])).await,
        "serviceoffering",
    );
    let template = first_id(
        &call(
            &mut conns,
            &signed("listTemplates", &[("templatefilter", "all")]),
        )
        .await,
        "template",
    );
    let mut vms = Vec::with_capacity(count);
    for i in 0..count {
        let deployed = run_job(
            &mut conns,
            "deployVirtualMachine",
            &[
                ("zoneid", &zone),
                ("serviceofferingid", &so),
                ("templateid", &template),
                ("name", &format!("bench-{i}")),
            ],
        )
        .await;
        let vm = deployed["jobresult"]["virtualmachine"]["id"]
            .as_str()
            .expect("vm id")
            .to_string();
        run_job(
            &mut conns,
            "assignVirtualMachineToBackupOffering",
            &[("virtualmachineid", &vm), ("backupofferingid", &offering)],
        )
        .await;
        vms.push(vm);
    }
    vms
}

/// What one configuration measured.
#[derive(Clone, Copy)]
struct Measured {
    backups_per_sec: f64,
    polls_per_backup: f64,
    list_per_sec: f64,
    stored: u64,
}

/// Ad-hoc backups end to end: (backups/s, polls per backup, backups taken in all).
async fn backups(addrs: &[SocketAddr], vms: &[String]) -> (f64, f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (client, vm) in vms.iter().enumerate() {
        let create = signed("createBackup", &[("virtualmachineid", vm)]);
        let (done, polls, stop, addrs) =
            (done.clone(), polls.clone(), stop.clone(), addrs.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut conns = RoundRobin::open(&addrs, client).await;
            while !stop.load(Ordering::Relaxed) {
                let accepted = call(&mut conns, &create).await;
                let jobid = accepted["jobid"].as_str().expect("jobid").to_string();
                let (_, n) = finished(&mut conns, &jobid).await;
                polls.fetch_add(n, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let (done_before, polls_before) = (done.load(Ordering::Relaxed), polls.load(Ordering::Relaxed));
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    let taken = done.load(Ordering::Relaxed) - done_before;
    let polled = polls.load(Ordering::Relaxed) - polls_before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("backup client");
    }
    (
        taken as f64 / elapsed.as_secs_f64(),
        polled as f64 / taken.max(1) as f64,
        done.load(Ordering::Relaxed),
    )
}

/// Every backup stored is `BackedUp` (read through `listBackups`, 500 a page); returns how many.
async fn check_all_backed_up(addr: SocketAddr) -> u64 {
    let mut conn = Conn::open(addr).await;
    let mut seen = 0u64;
    for page in 1.. {
        let page = page.to_string();
        let (status, body) = conn
            .get(&signed(
                "listBackups",
                &[("listall", "true"), ("pagesize", "500"), ("page", &page)],
            ))
            .await;
        assert_eq!(status, 200);
        let answer = json(&body);
        let listed = inner(&answer);
        let items = listed["backup"].as_array().cloned().unwrap_or_default();
        for backup in &items {
            assert_eq!(backup["status"], "BackedUp", "{backup}");
        }
        seen += items.len() as u64;
        if items.len() < 500 {
            assert_eq!(listed["count"].as_u64().unwrap_or(0), seen, "count");
            return seen;
        }
    }
    unreachable!()
}

async fn measure(config: Config) -> Measured {
    let data_dir = tempfile::tempdir().expect("data dir");
    let database = match config.engine {
        Engine::Sqlite => None,
        // A fresh database on the server `BNR_TEST_POSTGRES_URL` names.
        Engine::Postgres => Some(TestDatabase::create()),
    };
    let url = database.as_ref().map(|d| d.url().to_string());
    // The first process bootstraps the empty store; the others join it once it answers.
    let dir = data_dir.path().to_path_buf();
    let (first_url, cluster) = (url.clone(), config.cluster);
    let first =
        tokio::task::spawn_blocking(move || Server::start(&dir, first_url.as_deref(), cluster, 0))
            .await
            .expect("start");
    let vms = prepare(first.addr, backup_clients()).await;
    let mut servers = vec![first];
    for n in 1..config.processes {
        let (dir, url) = (data_dir.path().to_path_buf(), url.clone());
        servers.push(
            tokio::task::spawn_blocking(move || Server::start(&dir, url.as_deref(), true, n))
                .await
                .expect("start"),
        );
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let (backups_per_sec, polls_per_backup, taken) = backups(&addrs, &vms).await;
    let stored = check_all_backed_up(addrs[0]).await;
    assert_eq!(stored, taken, "every backup taken is listed");
    let page = signed("listBackups", &[("listall", "true"), ("pagesize", "20")]);
    let list_per_sec = client::throughput(&addrs, &page, list_connections(), RUN).await;
    drop(servers);
    drop(database);
    Measured {
        backups_per_sec,
        polls_per_backup,
        list_per_sec,
        stored,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let postgres = std::env::var(URL_VARIABLE).ok();
    let configs: Vec<Config> = CONFIGS
        .iter()
        .copied()
        .filter(|c| c.engine == Engine::Sqlite || postgres.is_some())
        .collect();
    if postgres.is_none() {
        eprintln!("{URL_VARIABLE} not set: PostgreSQL not measured (`cargo xtask bench replicas`)");
    }
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds() {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let before = load_average();
            let measured = measure(configs[i]).await;
            eprintln!(
                "round {} {}: {:.0} backups/s ({:.1} polls each), {:.0} listBackups/s, {} stored; load {before} → {}",
                round + 1,
                configs[i].label(),
                measured.backups_per_sec,
                measured.polls_per_backup,
                measured.list_per_sec,
                measured.stored,
                load_average()
            );
            results[i].push(measured);
        }
    }
    println!(
        "## Replicas (release `bnr serve` processes, dummy provider, {} backup clients, {} list connections, round-robin; {} round(s), median)\n",
        backup_clients(),
        list_connections(),
        rounds()
    );
    println!(
        "| configuration | ad-hoc backups → `BackedUp` /s | polls per backup | signed `listBackups` (page of 20) req/s | backups stored |"
    );
    println!("|---|---:|---:|---:|---:|");
    let base_backups = median(results[0].iter().map(|m| m.backups_per_sec).collect());
    let base_list = median(results[0].iter().map(|m| m.list_per_sec).collect());
    for (config, measured) in configs.iter().zip(&results) {
        let backups = median(measured.iter().map(|m| m.backups_per_sec).collect());
        let polls = median(measured.iter().map(|m| m.polls_per_backup).collect());
        let list = median(measured.iter().map(|m| m.list_per_sec).collect());
        let stored = median(measured.iter().map(|m| m.stored as f64).collect());
        println!(
            "| {} | {backups:.0} ({:.2}) | {polls:.1} | {list:.0} ({:.2}) | {stored:.0} |",
            config.label(),
            backups / base_backups,
            list / base_list
        );
    }
    println!(
        "\n(ratios to the first row; load average at the end: {})",
        load_average()
    );
}
