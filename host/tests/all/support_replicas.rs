//! The real `bnr` binary as a process: one server (`ops_shutdown`) or several `bnr serve
//! --cluster` replicas on one database (`ha_replicas`), on a shared SQLite data directory or on
//! PostgreSQL (each replica with its own data directory, one `BNR_ENCRYPTION_KEY`). Log lines
//! are collected as they come; a process still running when its handle is dropped is killed.
//!
//! ```ignore
//! let shared = SharedStore::new(Engine::Postgres);
//! let a = shared.replica(providers).spawn().await;
//! a.signal("-STOP");
//! ```

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use parking_lot::Mutex;

use bnr::store::postgres::testing::TestDatabase;

use crate::support_api::{ADMIN_API_KEY, ADMIN_PASSWORD, ADMIN_SECRET_KEY};

/// The lease replicas run with unless told otherwise: the shortest accepted, so takeovers
/// happen within seconds.
pub const LEASE_SECS: u64 = 2;

/// The line `bnr serve` logs once it accepts requests.
const SERVING: &str = "serving the CloudStack API";

/// Polls `holds` every `every` until it is true, for at most 30 s: a loaded machine delays what
/// replicas see of each other, and these are no timing tests. Panics with `what` otherwise.
pub async fn until(what: &str, every: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if holds().await {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("{what}");
}

/// A free loopback address (`127.0.0.1:PORT`).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port();
    format!("127.0.0.1:{port}")
}

/// The engine replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One data directory (its SQLite file in WAL mode) for every replica.
    Sqlite,
    /// A fresh database on the run's PostgreSQL server (`BNR_TEST_POSTGRES_URL`); every
    /// replica has its own data directory and the same encryption key.
    Postgres,
}

/// The database several replicas share, and what each of them needs to open it.
pub struct SharedStore {
    engine: Engine,
    root: tempfile::TempDir,
    database: Option<TestDatabase>,
    /// `BNR_ENCRYPTION_KEY` of every replica (PostgreSQL: no data directory is shared).
    key: String,
    started: AtomicUsize,
}

impl SharedStore {
    pub fn new(engine: Engine) -> SharedStore {
        let root = tempfile::tempdir().expect("tempdir");
        let database = (engine == Engine::Postgres).then(TestDatabase::create);
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        SharedStore {
            engine,
            root,
            database,
            key: base64::engine::general_purpose::STANDARD.encode(key),
            started: AtomicUsize::new(0),
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The PostgreSQL database's URL (`None` on SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url())
    }

    /// The launch of the next replica on a free address: `--cluster` with [`LEASE_SECS`], the
    /// shared SQLite data directory, or `--database` with a data directory of its own.
    pub fn replica(&self, providers: &Path) -> Launch {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let (data_dir, database) = match &self.database {
            None => (self.root.path().join("data"), None),
            Some(db) => (
                self.root.path().join(format!("replica-{n}")),
                Some(db.url().to_string()),
            ),
        };
        let mut launch = Launch::single(&data_dir, providers);
        launch.database = database;
        launch.cluster_lease = Some(LEASE_SECS);
        launch.env("BNR_ENCRYPTION_KEY", &self.key)
    }

    /// A connection to the shared PostgreSQL database, for what a test sets up or checks
    /// beneath the API. Panics on SQLite.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let url = self
            .database_url()
            .expect("a direct connection is for PostgreSQL runs");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// How one `bnr serve` process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub addr: String,
    pub data_dir: PathBuf,
    pub providers: PathBuf,
    /// `--database` (default: SQLite in the data directory).
    pub database: Option<String>,
    /// `--cluster --replica-lease-secs N` when set.
    pub cluster_lease: Option<u64>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// One server on a free address with the test admin credentials, logging at `info`.
    pub fn single(data_dir: &Path, providers: &Path) -> Launch {
        Launch {
            addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            providers: providers.to_path_buf(),
            database: None,
            cluster_lease: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Listens on `addr` (a restart on the same address).
    pub fn at(mut self, addr: &str) -> Launch {
        self.addr = addr.to_string();
        self
    }

    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn lease(mut self, secs: u64) -> Launch {
        self.cluster_lease = Some(secs);
        self
    }

    /// Starts the process and waits (blocking) until it serves; panics with its log when it
    /// exits first.
    pub fn start(self) -> BnrProcess {
        BnrProcess::start(self)
    }

    /// [`Launch::start`] off the async runtime.
    pub async fn spawn(self) -> BnrProcess {
        tokio::task::spawn_blocking(move || self.start())
            .await
            .expect("start task")
    }
}

/// A running `bnr serve`; killed (SIGKILL) when dropped.
pub struct BnrProcess {
    child: Child,
    pub addr: String,
    pub launch: Launch,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl BnrProcess {
    fn start(launch: Launch) -> BnrProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bnr"));
        command.args(["serve", "--listen", &launch.addr]);
        if let Some(lease) = launch.cluster_lease {
            command.args(["--cluster", "--replica-lease-secs", &lease.to_string()]);
        }
        if let Some(url) = &launch.database {
            command.arg("--database").arg(url);
        }
        command
            .arg("--data-dir")
            .arg(&launch.data_dir)
            .arg("--providers-dir")
            .arg(&launch.providers)
            .args(&launch.args)
            .env("RUST_LOG", "info")
            .env("BNR_ADMIN_API_KEY", ADMIN_API_KEY)
            .env("BNR_ADMIN_SECRET_KEY", ADMIN_SECRET_KEY)
            .env("BNR_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("start bnr");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let serving = lines.by_ref().map_while(Result::ok).any(|l| {
            assert!(!l.contains('\u{1b}'), "no colour codes off a terminal: {l}");
            let serving = l.contains(SERVING);
            log.lock().push(l);
            serving
        });
        if !serving {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bnr exited before serving: {:#?}", log.lock());
        }
        // Keep reading so the child never blocks on a full pipe.
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        BnrProcess {
            child,
            addr: launch.addr.clone(),
            launch,
            log,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Whether a log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(text))
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    /// The time stamp of the first line containing `text` stamped at or after `after` (the
    /// text format's leading RFC 3339 time).
    pub fn logged_at(&self, text: &str, after: SystemTime) -> Option<SystemTime> {
        self.log.lock().iter().find_map(|l| {
            if !l.contains(text) {
                return None;
            }
            let stamp: jiff::Timestamp = l.split_whitespace().next()?.parse().ok()?;
            let at = SystemTime::from(stamp);
            (at >= after).then_some(at)
        })
    }

    /// SIGTERM, then waits for the exit; kills the process and panics past `bound`. Returns the
    /// exit status and every log line.
    pub fn terminate_within(mut self, bound: Duration) -> (ExitStatus, Vec<String>) {
        self.signal("-TERM");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > bound {
                let _ = self.child.kill();
                panic!("bnr did not stop within {bound:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        (status, self.log())
    }
}

impl Drop for BnrProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
