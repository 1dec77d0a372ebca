//! SQLite store: one writer connection behind a mutex, a small pool of reader connections, WAL,
//! foreign keys on, embedded ordered migrations.
//!
//! Every call runs on tokio's blocking pool (`spawn_blocking`) so async handlers never block a
//! runtime worker on SQLite. Writes are serialised through the single writer (SQLite allows one
//! writer at a time anyway; a mutex is cheaper than `SQLITE_BUSY` retries); readers run
//! concurrently thanks to WAL.
//!
//! ```text
//! let vm = store.write(|tx| inventory::vm::insert(tx, &new_vm)).await?;
//! let page = store.read(|conn| inventory::vm::list(conn, &filter)).await?;
//! ```

pub mod events;
pub mod query;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use secrets::Secrets;

/// Ordered, embedded migrations. Each applies in one transaction and is recorded in
/// `schema_migrations(version)`. Later layers append here (e.g. `0002_backup`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sql: include_str!("migrations/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "backup",
        sql: include_str!("migrations/0002_backup.sql"),
    },
    Migration {
        version: 3,
        name: "security",
        sql: include_str!("migrations/0003_security.sql"),
    },
    Migration {
        version: 5,
        name: "vmware",
        sql: include_str!("migrations/0005_vmware.sql"),
    },
    Migration {
        version: 7,
        name: "health",
        sql: include_str!("migrations/0007_health.sql"),
    },
    Migration {
        version: 8,
        name: "kvm_hosts",
        sql: include_str!("migrations/0008_kvm_hosts.sql"),
    },
    Migration {
        version: 9,
        name: "plugins",
        sql: include_str!("migrations/0009_plugins.sql"),
    },
    Migration {
        version: 10,
        name: "operations",
        sql: include_str!("migrations/0010_operations.sql"),
    },
    Migration {
        version: 12,
        name: "provider_grants",
        sql: include_str!("migrations/0012_provider_grants.sql"),
    },
    Migration {
        version: 13,
        name: "cluster",
        sql: include_str!("migrations/0013_cluster.sql"),
    },
];

/// How long a connection waits on a lock held by another process before failing. Inside this
/// process writes are serialised by the writer mutex, so this only matters for outside tools.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections opened at start.
const READER_POOL_SIZE: usize = 4;
/// Reader connections kept for reuse once opened under load. Opening one costs far more than a
/// query (file open, pragmas, and its prepared statements are lost on close), so connections
/// opened for a burst stay up to this bound (about one per concurrent request a small host
/// serves); beyond it they are closed after use.
const MAX_IDLE_READERS: usize = 32;
/// Prepared statements cached per connection (list queries are few but hot).
const STATEMENT_CACHE_CAPACITY: usize = 128;

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The error kinds every layer above the store can produce. The api layer maps each kind to one
/// CloudStack error code (see `api::ApiError::from`), so lower layers never know HTTP.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A parameter value is wrong (→ 431).
    #[error("{0}")]
    InvalidParameter(String),
    /// The operation is not allowed in the current state of things (→ 530, CloudStack's usual).
    #[error("{0}")]
    InvalidState(String),
    /// The caller may not act on the resource (→ 531).
    #[error("{0}")]
    PermissionDenied(String),
    /// Infrastructure failure (→ 530).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Store(StoreError::Sqlite(e))
    }
}

pub type OpResult<T> = Result<T, OpError>;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    secrets: Secrets,
    identity_changes: Arc<IdentityChanges>,
}

/// Tables whose rows decide who a credential belongs to and whether it may be used.
const IDENTITY_TABLES: [&str; 3] = ["users", "accounts", "domains"];

/// Counts writes to [`IDENTITY_TABLES`], so an in-memory copy of credentials knows when it is
/// stale. SQLite's update hook sees every row change made through the writer, whatever code
/// path made it.
#[derive(Default)]
struct IdentityChanges {
    generation: AtomicU64,
    /// A change was seen in the transaction now running on the writer.
    in_transaction: AtomicBool,
}

impl IdentityChanges {
    fn row_changed(&self, table: &str) {
        if IDENTITY_TABLES.contains(&table) {
            self.in_transaction.store(true, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Called once the transaction has ended (committed or not): a copy loaded from a reader
    /// while the transaction ran saw the old rows, so it is made stale a second time.
    fn transaction_ended(&self) {
        if self.in_transaction.swap(false, Ordering::AcqRel) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Creates `dir` (and its parents) if needed and makes it `0700` whatever the umask: the data
/// directory holds the database and the key that seals its secrets.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes an existing file `0600` (the database, its WAL and shared memory, key files); logged,
/// not fatal, when the file is not ours to change.
fn restrict_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.permissions().mode() & 0o777 != 0o600
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(file = %path.display(), error = %e, "cannot make the file private (0600)");
    }
}

/// The database file and the files SQLite keeps next to it.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_with(path, MIGRATIONS)
    }

    /// Like [`Store::open`] with an explicit migration list (tests, or layers adding their own).
    pub fn open_with(
        path: impl AsRef<Path>,
        migrations: &[Migration],
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        create_private_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let secrets = Secrets::load(&dir)?;
        // SQLite gives the WAL and shared-memory files the database file's mode: create the
        // database private before SQLite does, and tighten files an older bnr left open.
        create_private_file(&path)?;
        let mut writer = open_connection(&path)?;
        // Deleted and overwritten rows are zeroed, so a replaced plaintext does not linger.
        writer.pragma_update(None, "secure_delete", "ON")?;
        apply_migrations(&mut writer, migrations)?;
        {
            let tx = writer.transaction()?;
            let sealed = secrets::seal_plaintext(&tx, &secrets)?;
            tx.commit()?;
            if sealed > 0 {
                writer.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
                tracing::info!(sealed, "encrypted secret keys stored in plain text");
            }
        }
        for file in database_files(&path) {
            restrict_file(&file);
        }
        let identity_changes = Arc::new(IdentityChanges::default());
        let changes = identity_changes.clone();
        writer.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                changes.row_changed(table)
            },
        ))?;
        let readers = (0..READER_POOL_SIZE)
            .map(|_| open_connection(&path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                secrets,
                identity_changes,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A connection of its own, outside the writer and the reader pool: for work that must
    /// never queue behind them (a replica's heartbeat and lease renewals). Autocommit.
    pub fn dedicated_connection(&self) -> Result<Connection, StoreError> {
        open_connection(&self.inner.path)
    }

    /// The keys that seal this database's secrets (see [`secrets`]).
    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    /// A number that grows whenever a row of `users`, `accounts` or `domains` changes (key
    /// regeneration, disable, removal, ...). Read it before loading credentials; a copy loaded
    /// under an older number is stale. Writes made by another process are not seen.
    pub fn identity_generation(&self) -> u64 {
        self.inner
            .identity_changes
            .generation
            .load(Ordering::Acquire)
    }

    /// Runs `f` inside one IMMEDIATE transaction on the writer; commits on `Ok`, rolls back on `Err`.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_blocking(f))
            .await
            .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    /// Runs `f` in a read transaction (a consistent snapshot) on a pooled reader connection.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    /// Like [`Store::read`] but runs on the calling thread, skipping the hand-off to the blocking
    /// pool (two thread wake-ups, which cost more than a short query). Only for short reads
    /// bounded by an index — a credential lookup, a uuid lookup, one page of a list — on hot
    /// request paths; anything that may scan stays on [`Store::read`].
    pub fn read_now<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E>,
        E: From<StoreError>,
    {
        self.read_blocking(f)
    }

    /// Blocking form of [`Store::write`], for code already off the async runtime.
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<StoreError>,
    {
        let started = crate::metrics::get().map(|m| (m, std::time::Instant::now()));
        let mut conn = self.inner.writer.lock();
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| E::from(e.into()))?;
            let value = f(&tx)?;
            tx.commit().map_err(|e| E::from(e.into()))?;
            Ok(value)
        })();
        self.inner.identity_changes.transaction_ended();
        drop(conn);
        if let Some((metrics, started)) = started {
            metrics.store_write(started.elapsed());
        }
        result
    }

    /// Blocking form of [`Store::read`].
    pub fn read_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E>,
        E: From<StoreError>,
    {
        let pooled = self.inner.readers.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.inner.path).map_err(E::from)?,
        };
        let result = read_snapshot(&conn, f);
        let mut readers = self.inner.readers.lock();
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }
}

/// Runs `f` in one read transaction (one consistent snapshot for all its statements). `BEGIN`
/// and `COMMIT` are cached statements: preparing them anew (as `Connection::transaction` does)
/// was a measurable share of a short read on the request path.
fn read_snapshot<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
    E: From<StoreError>,
{
    let store_err = |e: rusqlite::Error| E::from(StoreError::from(e));
    conn.prepare_cached("BEGIN DEFERRED")
        .and_then(|mut begin| begin.execute([]))
        .map_err(store_err)?;
    let value = f(conn);
    // Read-only: ending the snapshot; nothing to commit. Ended whatever `f` returned, so the
    // connection goes back to the pool outside any transaction.
    let ended = conn
        .prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]));
    if ended.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let value = value?;
    ended.map_err(store_err)?;
    Ok(value)
}

/// Creates the database file `0600` unless it exists (then it is tightened by the caller).
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer. synchronous=NORMAL is durable across process crashes
    // in WAL mode (only an OS crash may lose the last commits), and much faster than FULL.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Query planner stability: without it SQLite (built with STAT4) marks statements whose
    // bound values it looked at while checking partial indexes, and recompiles them on every
    // new binding, which defeats the statement cache on every hot query.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

fn apply_migrations(conn: &mut Connection, migrations: &[Migration]) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied INTEGER NOT NULL)",
    )?;
    let mut ordered: Vec<&Migration> = migrations.iter().collect();
    ordered.sort_by_key(|m| m.version);
    for m in ordered {
        let applied: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [m.version],
            |r| r.get(0),
        )?;
        if applied {
            continue;
        }
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(m.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations(version, name, applied) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, now()],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

/// Current time, Unix seconds UTC (the stored timestamp unit).
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A fresh public id: lower-case canonical UUID v4.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Formats a stored timestamp the CloudStack way: `yyyy-MM-dd'T'HH:mm:ss+0000`.
pub fn format_date(unix_seconds: i64) -> String {
    match jiff::Timestamp::from_second(unix_seconds) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string(),
        Err(_) => "1970-01-01T00:00:00+0000".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_like_cloudstack() {
        assert_eq!(format_date(1_714_558_830), "2024-05-01T10:20:30+0000");
    }

    #[test]
    fn migrations_are_recorded_and_not_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let versions: Vec<i64> = store
            .read_blocking(|c| -> Result<_, StoreError> {
                let mut st = c.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
                let v = st
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok(v)
            })
            .unwrap();
        let expected: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite")).unwrap();
        let r: Result<(), OpError> = store.write_blocking(|tx| {
            tx.execute(
                "INSERT INTO zones(uuid, name, created) VALUES ('u', 'z', 0)",
                [],
            )?;
            Err(OpError::InvalidState("abort".into()))
        });
        assert!(r.is_err());
        let n: i64 = store
            .read_blocking(|c| -> Result<_, StoreError> {
                Ok(c.query_row("SELECT COUNT(*) FROM zones", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(n, 0);
    }
}
