//! The store: SQLite by default, PostgreSQL when `bnr serve --database postgres://…` says so.
//!
//! Both engines sit behind one synchronous closure API and the SQL seam of [`db`]:
//!
//! ```text
//! let vm = store.write(|tx| inventory::vm::insert(tx, &new_vm)).await?;
//! let page = store.read(|conn| inventory::vm::list(conn, &filter)).await?;
//! ```
//!
//! Every call runs on tokio's blocking pool (`spawn_blocking`) so async handlers never block a
//! runtime worker on the database.
//!
//! - **SQLite**: one writer connection behind a mutex, a small pool of reader connections, WAL,
//!   foreign keys on. Writes are serialised through the single writer (SQLite allows one writer
//!   at a time anyway; a mutex is cheaper than `SQLITE_BUSY` retries); readers run concurrently.
//!   [`Store::write`] calls that queue up while the writer is busy are committed together, each
//!   in its own savepoint ([`group_commit`]).
//! - **PostgreSQL**: a pool of connections. A read is one `REPEATABLE READ READ ONLY`
//!   transaction (one snapshot, like SQLite's). A write is a `READ COMMITTED` transaction that
//!   first takes the store's write lock (`LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE
//!   MODE`, which conflicts with itself): writers of every process are serialised as SQLite's
//!   are, so code written as "read, decide, write" in one closure stays correct with several
//!   replicas, and a closure never has to be re-run after a serialization failure. Work that
//!   must not wait on other writers (heartbeats, lease renewals) uses
//!   [`Store::write_unlocked`], whose statements must each be a conditional claim.
//!
//! Migrations exist once per dialect with the same versions (`migrations/sqlite`,
//! `migrations/postgres`); see [`MIGRATIONS`].

pub mod copy;
pub mod db;
pub mod events;
mod group_commit;
pub mod postgres;
pub mod query;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::OpenFlags;

pub use db::{Connection, Dialect, Transaction};
pub use secrets::Secrets;

use db::Backend;
use postgres::PgConnector;

macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("migrations/sqlite/", $file)),
            postgres: include_str!(concat!("migrations/postgres/", $file)),
        }
    };
}

/// Ordered, embedded migrations, one SQL text per dialect. Each applies in one transaction and
/// is recorded in `schema_migrations(version)`.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "core", "0001_core.sql"),
    migration!(2, "backup", "0002_backup.sql"),
    migration!(3, "security", "0003_security.sql"),
    migration!(5, "vmware", "0005_vmware.sql"),
    migration!(7, "health", "0007_health.sql"),
    migration!(8, "kvm_hosts", "0008_kvm_hosts.sql"),
    migration!(9, "plugins", "0009_plugins.sql"),
    migration!(10, "operations", "0010_operations.sql"),
    migration!(12, "provider_grants", "0012_provider_grants.sql"),
    migration!(13, "cluster", "0013_cluster.sql"),
    migration!(14, "identity_epoch", "0014_identity_epoch.sql"),
    migration!(15, "sessions_plugins", "0015_sessions_plugins.sql"),
    migration!(16, "backup_pair_totals", "0016_backup_pair_totals.sql"),
];

/// How long a connection waits on a lock held by another process before failing. Inside this
/// process writes are serialised by the writer mutex, so this only matters for outside tools.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages after which a commit checkpoints (see `Store::open_with`).
const WAL_CHECKPOINT_PAGES: i64 = 4_000;
/// Reader connections opened at start.
const READER_POOL_SIZE: usize = 4;
/// Reader connections kept for reuse once opened under load. Opening one costs far more than a
/// query (file open, pragmas, and its prepared statements are lost on close), so connections
/// opened for a burst stay up to this bound (about one per concurrent request a small host
/// serves); beyond it they are closed after use.
const MAX_IDLE_READERS: usize = 32;
/// Prepared statements cached per connection (list queries are few but hot).
const STATEMENT_CACHE_CAPACITY: usize = 128;
/// PostgreSQL connections one process opens at most (PostgreSQL's default `max_connections` is
/// 100, shared by every replica). A caller beyond it waits for a connection to come back.
const MAX_POSTGRES_CONNECTIONS: usize = 16;
/// PostgreSQL connections opened at start.
const POSTGRES_INITIAL_CONNECTIONS: usize = 2;
/// How long a caller waits for a free PostgreSQL connection before failing.
const POSTGRES_POOL_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    pub fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] db::Error),
    #[error("database task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: db::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this bnr knows ({known}): upgrade bnr"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PostgreSQL connection became free in {0:?}")]
    PoolTimeout(Duration),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.into())
    }
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

impl From<db::Error> for OpError {
    fn from(e: db::Error) -> Self {
        OpError::Store(StoreError::Sql(e))
    }
}

impl OpError {
    /// A UNIQUE constraint refused the write (a name taken by a concurrent request).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, OpError::Store(StoreError::Sql(e)) if e.is_unique_violation())
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Where the data lives: a SQLite file (the default) or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` / `postgresql://` URL or a `host=… dbname=…` connection string.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown in logs and errors: never the password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Database::Postgres(url) => f.write_str(&postgres::redact_url(url)),
        }
    }
}

impl Database {
    /// Parses `--database`: `postgres://…`, `postgresql://…`, a `host=…` connection string, or
    /// `sqlite:PATH`.
    pub fn parse(text: &str) -> Result<Database, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a file path (sqlite:/var/lib/bnr/bnr.sqlite)".into());
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let is_key_value = text.split_whitespace().any(|p| {
            p.split_once('=')
                .is_some_and(|(k, _)| matches!(k, "host" | "hostaddr" | "dbname" | "user" | "port"))
        });
        if !is_url && !is_key_value {
            return Err(format!(
                "unsupported database {:?}: use postgres://…, postgresql://…, host=… dbname=…, \
                 or sqlite:PATH",
                postgres::redact_url(text)
            ));
        }
        text.parse::<tokio_postgres::Config>()
            .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", postgres::redact_url(text)))?;
        Ok(Database::Postgres(text.to_string()))
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    secrets: Secrets,
    identity_changes: Arc<IdentityChanges>,
}

enum Engine {
    Sqlite {
        path: PathBuf,
        writer: Mutex<Connection>,
        /// [`Store::write`] calls waiting for the writer, committed together.
        queue: group_commit::WriteQueue,
        readers: Mutex<Vec<Connection>>,
    },
    Postgres(PgPool),
}

/// Tables whose rows decide who a credential belongs to and whether it may be used.
const IDENTITY_TABLES: [&str; 3] = ["users", "accounts", "domains"];

/// Tables no command answer shows: their writes (a session used, a component loaded) leave kept
/// answers valid.
const UNANSWERED_TABLES: [&str; 2] = ["login_sessions", "replica_plugins"];

/// Counts writes to [`IDENTITY_TABLES`], and writes to any table, so an in-memory copy of
/// credentials or of a read answer knows when it is stale. On SQLite, the update hook sees every
/// row change made through the writer, whatever code path made it; on PostgreSQL, the write path
/// notes statements that change those tables, and every committed write transaction.
#[derive(Default)]
struct IdentityChanges {
    generation: AtomicU64,
    /// A change was seen in the transaction now running on the writer.
    in_transaction: AtomicBool,
    /// Like `generation`, for a change to any row of any table.
    data_generation: AtomicU64,
    data_in_transaction: AtomicBool,
    /// Other processes write to the same database (a cluster replica): `data_generation` does
    /// not see their writes.
    shared: AtomicBool,
}

impl IdentityChanges {
    fn row_changed(&self, table: &str) {
        if UNANSWERED_TABLES.contains(&table) {
            return;
        }
        self.data_in_transaction.store(true, Ordering::Release);
        self.data_generation.fetch_add(1, Ordering::AcqRel);
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
        if self.data_in_transaction.swap(false, Ordering::AcqRel) {
            self.data_generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Whether a statement changes a row of [`IDENTITY_TABLES`] (PostgreSQL has no update hook).
pub(crate) fn changes_identity(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let mut words = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return false;
    };
    let target = match first {
        "insert" => words.skip_while(|w| *w != "into").nth(1),
        "update" => words.next(),
        "delete" => words.skip_while(|w| *w != "from").nth(1),
        // A statement with a common table expression: any mention counts.
        "with" => return words.any(|w| IDENTITY_TABLES.contains(&w)),
        _ => None,
    };
    target.is_some_and(|t| IDENTITY_TABLES.contains(&t))
}

/// The PostgreSQL connections of one process.
struct PgPool {
    connector: PgConnector,
    display: String,
    idle: Mutex<Vec<Connection>>,
    /// Connections open (idle or lent).
    open: Mutex<usize>,
    returned: Condvar,
}

impl PgPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(conn);
        }
        let mut open = self.open.lock();
        loop {
            if let Some(conn) = self.idle.lock().pop() {
                return Ok(conn);
            }
            if *open < MAX_POSTGRES_CONNECTIONS {
                *open += 1;
                drop(open);
                return match self.connector.connect() {
                    Ok(c) => Ok(Connection(Backend::Postgres(c))),
                    Err(e) => {
                        *self.open.lock() -= 1;
                        Err(e.into())
                    }
                };
            }
            if self
                .returned
                .wait_for(&mut open, POSTGRES_POOL_WAIT)
                .timed_out()
                && self.idle.lock().is_empty()
                && *open >= MAX_POSTGRES_CONNECTIONS
            {
                return Err(StoreError::PoolTimeout(POSTGRES_POOL_WAIT));
            }
        }
    }

    /// Returns a connection; one that broke, or is left inside a transaction, is closed.
    fn give_back(&self, conn: Connection, healthy: bool) {
        let closed = match &conn.0 {
            Backend::Postgres(c) => c.is_closed(),
            Backend::Sqlite(_) => true,
        };
        // Under `open`, which a waiting `take` holds while it looks at `idle`: no wake-up is lost.
        let mut open = self.open.lock();
        if healthy && !closed {
            self.idle.lock().push(conn);
        } else {
            drop(conn);
            *open -= 1;
        }
        drop(open);
        self.returned.notify_one();
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
    /// Opens (creating if needed) the SQLite database file and applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_with(path, MIGRATIONS)
    }

    /// Opens `database`; `data_dir` holds the key that seals secrets (and, by default, the
    /// SQLite file).
    pub fn open_database(database: &Database, data_dir: &Path) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(path) => Self::open(path),
            Database::Postgres(url) => Self::open_postgres(url, data_dir, MIGRATIONS),
        }
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
        // Checkpoints run inside the COMMIT that crosses this many WAL pages. Hot pages (index
        // leaves, counter rows) are rewritten by nearly every write, and a checkpoint copies
        // each page once however often it changed: a longer WAL (≤ 16 MiB here, against
        // SQLite's 4 MiB) copies far fewer pages per write.
        writer.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        apply_sqlite_migrations(&mut writer, migrations)?;
        // Every write of a group-commit batch runs in a savepoint, whose undo copies of the
        // pages it changes go to a statement journal. SQLite spills that journal to a temporary
        // file past 64 KiB, one `pwrite` per page: a third of the writer's time in a busy batch.
        // In memory it is a copy per page, sized by what one write changes. Sorts and
        // temporary b-trees of the writer's statements stay in memory too, so writes do not
        // sort whole tables (the sync pass sums its zone's backups per pair as they stream).
        // Set after the migrations, whose bulk statements may change whole tables.
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        let identity_changes = Arc::new(IdentityChanges::default());
        let changes = identity_changes.clone();
        writer.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                changes.row_changed(table)
            },
        ))?;
        let writer = Connection(Backend::Sqlite(writer));
        seal_plaintext_secrets(&writer, &secrets)?;
        identity_changes.transaction_ended();
        for file in database_files(&path) {
            restrict_file(&file);
        }
        let readers = (0..READER_POOL_SIZE)
            .map(|_| open_connection(&path).map(|c| Connection(Backend::Sqlite(c))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store {
            inner: Arc::new(Inner {
                engine: Engine::Sqlite {
                    path,
                    writer: Mutex::new(writer),
                    queue: group_commit::WriteQueue::default(),
                    readers: Mutex::new(readers),
                },
                secrets,
                identity_changes,
            }),
        })
    }

    /// Opens a PostgreSQL database and applies pending migrations (under a table lock, so
    /// replicas starting together migrate once).
    pub fn open_postgres(
        url: &str,
        data_dir: &Path,
        migrations: &[Migration],
    ) -> Result<Store, StoreError> {
        create_private_dir(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let secrets = Secrets::load(data_dir)?;
        let connector = PgConnector::new(url)?;
        let first = Connection(Backend::Postgres(connector.connect()?));
        apply_postgres_migrations(&first, migrations)?;
        let store = Store {
            inner: Arc::new(Inner {
                engine: Engine::Postgres(PgPool {
                    connector,
                    display: postgres::redact_url(url),
                    idle: Mutex::new(vec![first]),
                    open: Mutex::new(1),
                    returned: Condvar::new(),
                }),
                secrets,
                identity_changes: Arc::new(IdentityChanges::default()),
            }),
        };
        let mut warm = Vec::new();
        if let Engine::Postgres(pool) = &store.inner.engine {
            for _ in 1..POSTGRES_INITIAL_CONNECTIONS {
                warm.push(pool.take()?);
            }
            for conn in warm {
                pool.give_back(conn, true);
            }
        }
        let secrets = store.secrets().clone();
        store.write_blocking(|tx| -> Result<(), StoreError> {
            let sealed = secrets::seal_plaintext(tx, &secrets)?;
            if sealed > 0 {
                tracing::info!(sealed, "encrypted secret keys stored in plain text");
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.engine {
            Engine::Sqlite { path, .. } => Some(path),
            Engine::Postgres(_) => None,
        }
    }

    /// Where the data lives, for logs (never with a password).
    pub fn describe(&self) -> String {
        match &self.inner.engine {
            Engine::Sqlite { path, .. } => format!("sqlite:{}", path.display()),
            Engine::Postgres(pool) => pool.display.clone(),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match &self.inner.engine {
            Engine::Sqlite { .. } => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A connection of its own, outside the writer and the reader pool: for work that must
    /// never queue behind them (a replica's heartbeat and lease renewals). Autocommit.
    pub fn dedicated_connection(&self) -> Result<Connection, StoreError> {
        Ok(match &self.inner.engine {
            Engine::Sqlite { path, .. } => Connection(Backend::Sqlite(open_connection(path)?)),
            Engine::Postgres(pool) => Connection(Backend::Postgres(pool.connector.connect()?)),
        })
    }

    /// A listener for the change notices the epoch triggers send; `None` on SQLite, which has
    /// no notices (replicas there rely on the epoch poll).
    pub fn change_listener(&self) -> Option<postgres::ChangeListener> {
        match &self.inner.engine {
            Engine::Sqlite { .. } => None,
            Engine::Postgres(pool) => Some(pool.connector.change_listener()),
        }
    }

    /// The keys that seal this database's secrets (see [`secrets`]).
    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    /// A number that grows whenever a row of `users`, `accounts` or `domains` changes (key
    /// regeneration, disable, removal, ...). Read it before loading credentials; a copy loaded
    /// under an older number is stale. Writes made by another process are not seen here: they
    /// show in the `identity_epoch` row (see [`identity_epoch`]), and whoever watches it calls
    /// [`Store::note_identity_change`].
    pub fn identity_generation(&self) -> u64 {
        self.inner
            .identity_changes
            .generation
            .load(Ordering::Acquire)
    }

    /// A number that grows whenever any row of any table changes through this store. Read it
    /// before reading what is to be kept; a copy made under an older number is stale. Writes
    /// made by another process are not seen.
    pub fn data_generation(&self) -> u64 {
        self.inner
            .identity_changes
            .data_generation
            .load(Ordering::Acquire)
    }

    /// Marks the database as written by other processes too (this process is one replica of
    /// several), so copies kept under [`Store::data_generation`] must not be trusted.
    pub fn mark_shared(&self) {
        self.inner
            .identity_changes
            .shared
            .store(true, Ordering::Release);
    }

    /// Whether [`Store::data_generation`] sees every write to the database.
    pub fn sees_every_write(&self) -> bool {
        !self.inner.identity_changes.shared.load(Ordering::Acquire)
    }

    /// Makes every credential copy loaded so far stale (an identity row changed elsewhere).
    pub fn note_identity_change(&self) {
        self.inner
            .identity_changes
            .generation
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Runs `f` inside one write transaction; commits on `Ok`, rolls back on `Err`.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if let Engine::Sqlite { queue, .. } = &self.inner.engine {
            let (reply, result) = tokio::sync::oneshot::channel();
            if queue.push(group_commit::job(f, reply)) {
                let drainer = WriteDrainer(Some(self.clone()));
                tokio::task::spawn_blocking(move || drainer.drain());
            }
            return result.await.unwrap_or_else(|_| {
                Err(E::from(StoreError::Task(
                    "the write was not run: its transaction could not begin, or the server is \
                     stopping"
                        .into(),
                )))
            });
        }
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
        self.write_with(WriteLock::Take, f)
    }

    /// A write transaction that does not take the store's write lock (PostgreSQL; on SQLite
    /// it is [`Store::write_blocking`]): for heartbeats and lease renewals, which must never
    /// wait behind other writers. Each statement must be a conditional claim on its own
    /// (`UPDATE … WHERE holder = ? AND term = ? RETURNING …`), never a read then a write.
    pub fn write_unlocked<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<StoreError>,
    {
        self.write_with(WriteLock::Skip, f)
    }

    fn write_with<T, E, F>(&self, lock: WriteLock, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<StoreError>,
    {
        observed_write(|| match &self.inner.engine {
            Engine::Sqlite { writer, .. } => {
                let conn = writer.lock();
                let result = in_transaction(&conn, "BEGIN IMMEDIATE", f);
                self.inner.identity_changes.transaction_ended();
                result
            }
            Engine::Postgres(pool) => {
                let conn = pool.take().map_err(E::from)?;
                let begin = match lock {
                    WriteLock::Take => {
                        "BEGIN ISOLATION LEVEL READ COMMITTED; \
                         LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE"
                    }
                    WriteLock::Skip => "BEGIN ISOLATION LEVEL READ COMMITTED",
                };
                let result = in_transaction(&conn, begin, f);
                let (healthy, changed_identity) = match &conn.0 {
                    Backend::Postgres(c) => (c.ended_cleanly(), c.take_identity_changed()),
                    Backend::Sqlite(_) => (true, false),
                };
                if changed_identity {
                    self.note_identity_change();
                }
                // No update hook here: any write transaction makes kept read answers stale.
                self.inner
                    .identity_changes
                    .data_generation
                    .fetch_add(1, Ordering::AcqRel);
                pool.give_back(conn, healthy);
                result
            }
        })
    }

    /// Blocking form of [`Store::read`].
    pub fn read_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E>,
        E: From<StoreError>,
    {
        match &self.inner.engine {
            Engine::Sqlite { path, readers, .. } => {
                let pooled = readers.lock().pop();
                let conn = match pooled {
                    Some(c) => c,
                    None => Connection(Backend::Sqlite(open_connection(path).map_err(E::from)?)),
                };
                let result = read_snapshot(&conn, "BEGIN DEFERRED", f);
                let mut readers = readers.lock();
                if readers.len() < MAX_IDLE_READERS {
                    readers.push(conn);
                }
                result
            }
            Engine::Postgres(pool) => {
                let conn = pool.take().map_err(E::from)?;
                let result =
                    read_snapshot(&conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f);
                let healthy = match &conn.0 {
                    Backend::Postgres(c) => c.ended_cleanly(),
                    Backend::Sqlite(_) => true,
                };
                pool.give_back(conn, healthy);
                result
            }
        }
    }
}

/// Runs `write` (one write transaction) and observes its duration when metrics are on.
fn observed_write<R>(write: impl FnOnce() -> R) -> R {
    let started = crate::metrics::get().map(|m| (m, std::time::Instant::now()));
    let result = write();
    if let Some((metrics, started)) = started {
        metrics.store_write(started.elapsed());
    }
    result
}

/// Runs the queued [`Store::write`] calls of a SQLite store, a batch per transaction, until the
/// queue is empty. Dropped without running (its task cancelled at runtime shutdown) or by a
/// panic, it drops what is queued, so no caller waits forever and the next write starts a new
/// drainer.
struct WriteDrainer(Option<Store>);

impl WriteDrainer {
    fn drain(mut self) {
        let Some(store) = self.0.clone() else { return };
        let Engine::Sqlite { writer, queue, .. } = &store.inner.engine else {
            return;
        };
        while let Some(batch) = queue.next_batch() {
            observed_write(|| {
                let conn = writer.lock();
                let changes = &store.inner.identity_changes;
                group_commit::run_batch(&conn, batch, &|| changes.transaction_ended());
            });
        }
        // Drained: nothing is left to abandon.
        self.0 = None;
    }
}

impl Drop for WriteDrainer {
    fn drop(&mut self) {
        if let Some(store) = self.0.take()
            && let Engine::Sqlite { queue, .. } = &store.inner.engine
        {
            queue.abandon();
        }
    }
}

#[derive(Clone, Copy)]
enum WriteLock {
    Take,
    Skip,
}

/// Runs a transaction-control statement (`BEGIN`, `COMMIT`, `SAVEPOINT` …) on SQLite from the
/// statement cache: preparing them anew (as `Connection::transaction` does) was a measurable
/// share of a short read.
fn run_cached(c: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
}

fn begin(conn: &Connection, begin: &str) -> Result<(), db::Error> {
    match &conn.0 {
        Backend::Sqlite(c) => run_cached(c, begin).map_err(Into::into),
        Backend::Postgres(c) if begin.ends_with("READ ONLY") => {
            c.begin_read_only(begin);
            Ok(())
        }
        Backend::Postgres(c) => c.begin(begin),
    }
}

fn end(conn: &Connection, commit: bool) -> Result<(), db::Error> {
    let sql = if commit { "COMMIT" } else { "ROLLBACK" };
    match &conn.0 {
        Backend::Sqlite(c) => {
            let ended = run_cached(c, sql);
            if ended.is_err() && !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            Ok(ended?)
        }
        Backend::Postgres(c) => c.end(commit),
    }
}

/// Runs `f` in a write transaction begun with `begin_sql`; commits on `Ok`.
fn in_transaction<T, E, F>(conn: &Connection, begin_sql: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E>,
    E: From<StoreError>,
{
    let store_err = |e: db::Error| E::from(StoreError::from(e));
    begin(conn, begin_sql).map_err(store_err)?;
    match f(&Transaction::new(conn)) {
        Ok(value) => {
            end(conn, true).map_err(store_err)?;
            Ok(value)
        }
        Err(e) => {
            let _ = end(conn, false);
            Err(e)
        }
    }
}

/// Runs `f` in one read transaction (one consistent snapshot for all its statements).
fn read_snapshot<T, E, F>(conn: &Connection, begin_sql: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
    E: From<StoreError>,
{
    let store_err = |e: db::Error| E::from(StoreError::from(e));
    begin(conn, begin_sql).map_err(store_err)?;
    let value = f(conn);
    // Read-only: ending the snapshot; nothing to commit. Ended whatever `f` returned, so the
    // connection goes back to the pool outside any transaction.
    let ended = end(conn, true);
    let value = value?;
    ended.map_err(store_err)?;
    Ok(value)
}

fn seal_plaintext_secrets(writer: &Connection, secrets: &Secrets) -> Result<(), StoreError> {
    let sealed = in_transaction(writer, "BEGIN IMMEDIATE", |tx| {
        secrets::seal_plaintext(tx, secrets)
    })?;
    if sealed > 0 {
        if let Some(sqlite) = writer.as_sqlite() {
            sqlite.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        }
        tracing::info!(sealed, "encrypted secret keys stored in plain text");
    }
    Ok(())
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

fn open_connection(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
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

/// Refuses a database migrated by a newer bnr: its schema may mean things this one does not know.
fn refuse_newer_schema(
    applied_max: Option<i64>,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    match applied_max {
        Some(found) if found > known => Err(StoreError::NewerSchema { found, known }),
        _ => Ok(()),
    }
}

fn apply_sqlite_migrations(
    conn: &mut rusqlite::Connection,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied INTEGER NOT NULL)",
    )?;
    let applied_max: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })?;
    refuse_newer_schema(applied_max, migrations)?;
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
        let fail = |source: rusqlite::Error| StoreError::Migration {
            version: m.version,
            name: m.name,
            source: source.into(),
        };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(m.sqlite).map_err(fail)?;
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

/// Applies pending migrations in one transaction holding `schema_migrations` exclusively: a
/// replica starting at the same time waits, then sees them applied. A table lock rather than
/// an advisory lock, so it also works behind poolers and on engines without advisory locks.
fn apply_postgres_migrations(
    conn: &Connection,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
         version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied BIGINT NOT NULL)";
    // Two replicas creating the table at once: one of them fails on the catalog's unique key;
    // the table exists afterwards either way.
    if let Err(e) = conn.execute_batch(CREATE) {
        if !e.is_unique_violation() {
            return Err(e.into());
        }
        conn.execute_batch(CREATE)?;
    }
    let result = (|| -> Result<(), StoreError> {
        conn.execute_batch(
            "BEGIN ISOLATION LEVEL READ COMMITTED; \
             LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE",
        )?;
        let applied: Vec<i64> = conn
            .prepare("SELECT version FROM schema_migrations")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        refuse_newer_schema(applied.iter().copied().max(), migrations)?;
        let mut ordered: Vec<&Migration> = migrations.iter().collect();
        ordered.sort_by_key(|m| m.version);
        for m in ordered
            .into_iter()
            .filter(|m| !applied.contains(&m.version))
        {
            let fail = |source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            };
            conn.execute_batch(m.postgres).map_err(fail)?;
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied) VALUES (?1, ?2, ?3)",
                db::params![m.version, m.name, now()],
            )
            .map_err(fail)?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// The identity epoch: a counter in the database that triggers raise on every change to
/// `users`, `accounts` or `domains`, whichever process made it. Replicas compare it with the
/// value they last saw to learn of identity changes made elsewhere.
pub fn identity_epoch(conn: &Connection) -> Result<i64, db::Error> {
    conn.query_row("SELECT epoch FROM identity_epoch WHERE id = 1", [], |r| {
        r.get(0)
    })
}

/// Current time, Unix seconds UTC (the stored timestamp unit).
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A fresh public id: lower-case canonical UUID v7. Time-ordered, so the unique index on a
/// table's `uuid` grows at its end like the row ids do, instead of dirtying a random page per
/// insert. Ids are names, not secrets: every access to what they name is checked, and keys and
/// session ids come from `identity::random_key`.
pub fn new_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::db::OptionalExtension;

    #[test]
    fn dates_are_formatted_like_cloudstack() {
        assert_eq!(format_date(1_714_558_830), "2024-05-01T10:20:30+0000");
    }

    use crate::store::postgres::testing::TestDatabase;

    /// A store of each engine, with what keeps its data alive for the test.
    pub(crate) struct TestStore {
        pub store: Store,
        _dir: tempfile::TempDir,
        _database: Option<TestDatabase>,
    }

    pub(crate) fn sqlite_store() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite")).unwrap();
        TestStore {
            store,
            _dir: dir,
            _database: None,
        }
    }

    pub(crate) fn postgres_store() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create();
        let store = Store::open_postgres(database.url(), dir.path(), MIGRATIONS).unwrap();
        TestStore {
            store,
            _dir: dir,
            _database: Some(database),
        }
    }

    pub(crate) fn both_engines() -> [TestStore; 2] {
        [sqlite_store(), postgres_store()]
    }

    fn applied_versions(store: &Store) -> Vec<i64> {
        store
            .read_blocking(|c| -> Result<_, StoreError> {
                let mut st = c.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
                let v = st
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok(v)
            })
            .unwrap()
    }

    #[test]
    fn migrations_are_recorded_and_not_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let expected: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(applied_versions(&store), expected);

        let database = TestDatabase::create();
        drop(Store::open_postgres(database.url(), dir.path(), MIGRATIONS).unwrap());
        let store = Store::open_postgres(database.url(), dir.path(), MIGRATIONS).unwrap();
        assert_eq!(applied_versions(&store), expected);
    }

    #[test]
    fn a_store_refuses_a_schema_newer_than_it_knows() {
        for test in both_engines() {
            test.store
                .write_blocking(|tx| -> Result<_, StoreError> {
                    tx.execute(
                        "INSERT INTO schema_migrations(version, name, applied) VALUES (?1, ?2, ?3)",
                        db::params![9999i64, "from_the_future", now()],
                    )?;
                    Ok(())
                })
                .unwrap();
            let reopened = match test.store.dialect() {
                Dialect::Sqlite => Store::open(test.store.path().unwrap()),
                Dialect::Postgres => Store::open_postgres(
                    test._database.as_ref().unwrap().url(),
                    test._dir.path(),
                    MIGRATIONS,
                ),
            };
            match reopened {
                Err(StoreError::NewerSchema { found, .. }) => assert_eq!(found, 9999),
                Err(other) => panic!("{:?}: wrong error {other}", test.store.dialect()),
                Ok(_) => panic!("{:?}: opened a newer schema", test.store.dialect()),
            }
        }
    }

    /// `backup_pair_totals` (migration 0016) next to the sums it stands for, on one engine:
    /// (vm, offering, counted, size, protected size) of every pair with a counted backup.
    fn pair_totals_and_sums(store: &Store) -> (Vec<[i64; 5]>, Vec<[i64; 5]>) {
        let rows = |c: &Connection, sql: &str| -> Result<Vec<[i64; 5]>, StoreError> {
            Ok(c.prepare(sql)?
                .query_map([], |r| {
                    Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
                })?
                .collect::<Result<_, _>>()?)
        };
        store
            .read_blocking(move |c| {
                let kept = rows(
                    c,
                    "SELECT vm_id, backup_offering_id, counted, CAST(size AS BIGINT),
                            CAST(protected_size AS BIGINT)
                     FROM backup_pair_totals WHERE counted <> 0 ORDER BY 1, 2",
                )?;
                let summed = rows(
                    c,
                    "SELECT vm_id, backup_offering_id, COUNT(*), CAST(SUM(size) AS BIGINT),
                            CAST(SUM(protected_size) AS BIGINT)
                     FROM backups
                     WHERE vm_id IS NOT NULL AND removed IS NULL
                       AND status NOT IN ('Failed', 'Removed', 'Expunged')
                     GROUP BY vm_id, backup_offering_id ORDER BY 1, 2",
                )?;
                Ok::<_, StoreError>((kept, summed))
            })
            .unwrap()
    }

    #[test]
    fn backup_pair_totals_are_filled_by_the_migration_and_follow_every_change() {
        use crate::inventory::bootstrap::{BootstrapOptions, bootstrap_if_empty};
        let before_totals = &MIGRATIONS[..MIGRATIONS.len() - 1];
        assert_eq!(MIGRATIONS.last().unwrap().name, "backup_pair_totals");
        for engine in [Dialect::Sqlite, Dialect::Postgres] {
            let dir = tempfile::tempdir().unwrap();
            let database = (engine == Dialect::Postgres).then(TestDatabase::create);
            let open = |migrations: &[Migration]| match &database {
                None => Store::open_with(dir.path().join("db.sqlite"), migrations).unwrap(),
                Some(db) => Store::open_postgres(db.url(), dir.path(), migrations).unwrap(),
            };
            let store = open(before_totals);
            let settings = crate::config::Settings::load(store.clone()).unwrap();
            let zone = bootstrap_if_empty(
                &store,
                &settings,
                dir.path(),
                &BootstrapOptions {
                    admin_password: Some("pw".into()),
                    admin_keys: Some(("k".into(), "s".into())),
                },
            )
            .unwrap()
            .unwrap()
            .zone_id;
            let sql = |store: &Store, sql: String| {
                store
                    .write_blocking(move |tx| tx.execute_batch(&sql).map_err(StoreError::from))
                    .unwrap()
            };
            // Two offerings, two instances, and backups of every kind: counted, not yet sized,
            // failed, removed, orphaned.
            let mut fixture = String::new();
            for o in 1..=2 {
                fixture += &format!(
                    "INSERT INTO backup_offerings(id, uuid, name, description, external_id,
                                                  zone_id, provider, user_driven, created)
                     VALUES ({o}, 'off-{o}', 'o{o}', 'o', 'p{o}', {zone}, 'dummy', 1, 0);
                     INSERT INTO vms(id, uuid, name, display_name, internal_name, account_id,
                                     domain_id, zone_id, service_offering_id, template_id, state,
                                     backup_offering_id, created)
                     VALUES ({o}, 'vm-{o}', 'v{o}', 'v{o}', 'v{o}', 1, 1, {zone}, 1, 1,
                             'Running', 1, 0);"
                );
            }
            let backups = [
                // (id, vm, offering, size, protected, status, removed)
                (1, "1", 1, 0, 0, "BackingUp", "NULL"),
                (2, "1", 1, 100, 200, "BackedUp", "NULL"),
                (3, "2", 1, 5, 6, "Error", "NULL"),
                (4, "1", 2, 7, 8, "BackedUp", "NULL"),
                (5, "NULL", 1, 11, 12, "BackedUp", "NULL"),
                (6, "2", 1, 13, 14, "BackedUp", "1"),
                (7, "2", 2, 17, 18, "Failed", "NULL"),
            ];
            for (id, vm, offering, size, protected, status, removed) in backups {
                fixture += &format!(
                    "INSERT INTO backups(id, uuid, name, vm_id, date, size, protected_size,
                                         status, backup_offering_id, account_id, domain_id,
                                         zone_id, removed)
                     VALUES ({id}, 'b-{id}', 'b', {vm}, 0, {size}, {protected}, '{status}',
                             {offering}, 1, 1, {zone}, {removed});"
                );
            }
            sql(&store, fixture);
            drop(store);

            let store = open(MIGRATIONS);
            let (kept, summed) = pair_totals_and_sums(&store);
            assert_eq!(kept, summed, "{engine:?}: filled by the migration");
            assert_eq!(kept.len(), 3, "{engine:?}: {kept:?}");
            let changes: [&str; 12] = [
                "UPDATE backups SET status = 'BackedUp', size = 50, protected_size = 60 WHERE id = 1",
                "UPDATE backups SET status = 'Failed' WHERE id = 2",
                "UPDATE backups SET status = 'BackedUp', size = 9 WHERE id = 3",
                "UPDATE backups SET backup_offering_id = 1 WHERE id = 4",
                "UPDATE backups SET vm_id = NULL WHERE id = 1",
                "UPDATE backups SET vm_id = 2 WHERE id = 5",
                "UPDATE backups SET removed = 1, status = 'Removed' WHERE id = 2",
                "UPDATE backups SET status = 'BackedUp' WHERE id = 7",
                "UPDATE backups SET vm_id = 1, backup_offering_id = 2, size = 1, removed = NULL
                 WHERE id = 6",
                "DELETE FROM backups WHERE id = 3",
                "UPDATE backups SET removed = 2 WHERE vm_id = 2 AND backup_offering_id = 1",
                &format!(
                    "INSERT INTO backups(id, uuid, name, vm_id, date, size, status,
                                         backup_offering_id, account_id, domain_id, zone_id)
                     VALUES (8, 'b-8', 'b', 2, 0, 3, 'Queued', 1, 1, 1, {zone})"
                ),
            ];
            for change in changes {
                sql(&store, change.to_string());
                let (kept, summed) = pair_totals_and_sums(&store);
                assert_eq!(kept, summed, "{engine:?}: after {change}");
            }

            // A provider's absurd sizes neither fail the write nor overflow the usage period.
            sql(
                &store,
                format!(
                    "UPDATE backups SET size = {max}, protected_size = {max} WHERE id = 8;
                     INSERT INTO backups(id, uuid, name, vm_id, date, size, protected_size,
                                         status, backup_offering_id, account_id, domain_id,
                                         zone_id)
                     VALUES (9, 'b-9', 'b', 2, 0, {max}, {max}, 'BackedUp', 1, 1, 1, {zone});",
                    max = i64::MAX
                ),
            );
            let period: (i64, i64) = store
                .write_blocking(|tx| {
                    crate::scheduler::usage::refresh_pair(tx, 2, 1, 10)?;
                    Ok::<_, crate::store::OpError>(tx.query_row(
                        "SELECT size, protected_size FROM backup_usage
                         WHERE vm_id = 2 AND backup_offering_id = 1 AND end_date IS NULL",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap();
            assert_eq!(
                period,
                (9_000_000_000_000_000_000, 9_000_000_000_000_000_000)
            );
        }
    }

    /// Writes queued together share one transaction: each sees the writes before it, an error
    /// or a panic undoes only its own changes, and every caller gets its own result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_committed_together_keep_their_own_outcome() {
        let test = sqlite_store();
        let store = test.store.clone();
        store
            .write_blocking(|tx| {
                tx.execute_batch("CREATE TABLE grouped (n INTEGER PRIMARY KEY, v TEXT NOT NULL)")
                    .map_err(StoreError::from)
            })
            .unwrap();
        // Hold the writer so that every write below queues, then let them all go at once.
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .write_blocking(|_| {
                        held_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        Ok::<_, StoreError>(())
                    })
                    .unwrap()
            })
        };
        held_rx.recv().unwrap();
        let mut writes = Vec::new();
        for n in 0..40i64 {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                store
                    .write(move |tx| -> Result<i64, StoreError> {
                        tx.execute(
                            "INSERT INTO grouped(n, v) VALUES (?1, 'kept')",
                            db::params![n],
                        )?;
                        match n % 4 {
                            // A failing statement after a successful one: both undone.
                            1 => {
                                tx.execute(
                                    "INSERT INTO grouped(n, v) VALUES (?1, NULL)",
                                    db::params![n + 1000],
                                )?;
                                unreachable!("NOT NULL refused the row")
                            }
                            2 => return Err(StoreError::Task(format!("refused {n}"))),
                            3 if n == 7 => panic!("write {n} panicked"),
                            _ => {}
                        }
                        // Sees the rows committed or queued before it, its own included.
                        Ok(tx.query_row("SELECT COUNT(*) FROM grouped", [], |r| r.get(0))?)
                    })
                    .await
            }));
        }
        // Let every write reach the queue before the writer is free.
        tokio::time::sleep(Duration::from_millis(200)).await;
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let mut kept = Vec::new();
        for (n, write) in writes.into_iter().enumerate() {
            let n = n as i64;
            let outcome = write.await.unwrap();
            match (n % 4, outcome) {
                (1, Err(StoreError::Sql(_))) => {}
                (2, Err(StoreError::Task(text))) => assert_eq!(text, format!("refused {n}")),
                (3, Err(StoreError::Task(text))) if n == 7 => {
                    assert!(text.contains("panicked"), "{text}")
                }
                (_, Ok(seen)) => {
                    assert!(seen >= 1, "write {n} saw {seen} rows");
                    kept.push(n);
                }
                (_, other) => panic!("write {n}: {other:?}"),
            }
        }
        let stored: Vec<i64> = store
            .read_blocking(|c| -> Result<_, StoreError> {
                Ok(c.prepare("SELECT n FROM grouped ORDER BY n")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(stored, kept, "exactly the successful writes are stored");
        assert_eq!(kept.len(), 19);

        // A caller resumes only after the change counters moved: a read it makes next never
        // takes a kept answer from before its own write.
        for _ in 0..50 {
            let before = store.data_generation();
            store
                .write(|tx| {
                    tx.execute("UPDATE grouped SET v = 'again' WHERE n = 0", [])
                        .map_err(StoreError::from)
                })
                .await
                .unwrap();
            assert!(store.data_generation() > before);
        }
    }

    #[test]
    fn failed_write_rolls_back() {
        for test in both_engines() {
            let store = &test.store;
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
            assert_eq!(n, 0, "{:?}", store.dialect());
        }
    }

    #[test]
    fn values_round_trip_and_inserts_return_ids() {
        for test in both_engines() {
            let store = &test.store;
            let (first, second) = store
                .write_blocking(|tx| -> Result<_, StoreError> {
                    let a = tx.insert(
                        "INSERT INTO zones(uuid, name, created) VALUES (?1, ?2, ?3)",
                        db::params!["u1", "zone one", i64::MAX],
                    )?;
                    let b = tx.insert(
                        "INSERT INTO zones(uuid, name, created) VALUES (?, ?, ?)",
                        db::params!["u2", "zone 'two' ?", -1i64],
                    )?;
                    Ok((a, b))
                })
                .unwrap();
            assert!(second > first);
            let rows: Vec<(i64, String, i64, Option<i64>, bool)> = store
                .read_blocking(|c| -> Result<_, StoreError> {
                    Ok(c.prepare_cached(
                        "SELECT id, name, created, removed, removed IS NULL FROM zones
                         WHERE name LIKE ?1 ORDER BY id",
                    )?
                    .query_map(["zone%"], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect::<Result<_, _>>()?)
                })
                .unwrap();
            assert_eq!(
                rows,
                vec![
                    (first, "zone one".into(), i64::MAX, None, true),
                    (second, "zone 'two' ?".into(), -1, None, true),
                ],
                "{:?}",
                store.dialect()
            );
            let missing = store
                .read_blocking(|c| -> Result<_, StoreError> {
                    Ok(
                        c.query_row("SELECT id FROM zones WHERE uuid = ?1", ["none"], |r| {
                            r.get::<i64>(0)
                        })
                        .optional()?,
                    )
                })
                .unwrap();
            assert_eq!(missing, None);
        }
    }

    #[test]
    fn identity_writes_make_cached_credentials_stale_on_both_engines() {
        for test in both_engines() {
            let store = &test.store;
            let epoch_before = store
                .read_blocking(|c| -> Result<_, StoreError> { Ok(identity_epoch(c)?) })
                .unwrap();
            let before = store.identity_generation();
            store
                .write_blocking(|tx| -> Result<_, StoreError> {
                    tx.execute(
                        "INSERT INTO domains(uuid, name, path, created) VALUES ('d', 'ROOT', '/', 0)",
                        [],
                    )?;
                    Ok(())
                })
                .unwrap();
            assert!(
                store.identity_generation() > before,
                "{:?}",
                store.dialect()
            );
            let epoch_after = store
                .read_blocking(|c| -> Result<_, StoreError> { Ok(identity_epoch(c)?) })
                .unwrap();
            assert!(epoch_after > epoch_before, "{:?}", store.dialect());
            let unrelated = store.identity_generation();
            store
                .write_blocking(|tx| -> Result<_, StoreError> {
                    tx.execute("UPDATE zones SET name = name", [])?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(store.identity_generation(), unrelated);
        }
    }

    /// A schema in engine-neutral terms: columns (type class, nullability), primary keys, and
    /// indexes by (table, columns, unique, partial) — names of automatic indexes differ.
    #[derive(Debug, PartialEq, Eq, Default)]
    struct Schema {
        columns: std::collections::BTreeSet<(String, String, String, bool)>,
        primary_keys: std::collections::BTreeSet<(String, String)>,
        indexes: std::collections::BTreeSet<(String, String, bool, bool)>,
    }

    fn type_class(declared: &str) -> String {
        match declared.to_ascii_lowercase().as_str() {
            "integer" | "bigint" => "integer",
            "text" => "text",
            "blob" | "bytea" => "blob",
            "real" | "double precision" => "real",
            other => return format!("unmapped {other}"),
        }
        .to_string()
    }

    fn sqlite_schema(c: &Connection) -> Result<Schema, StoreError> {
        let mut schema = Schema::default();
        let mut pk: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        let mut st = c.prepare(
            "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk
             FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (table, column, ty): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let position: i64 = r.get(4)?;
            let not_null = r.get::<bool>(3)? || position > 0;
            if position > 0 {
                pk.entry(table.clone())
                    .or_default()
                    .push((position, column.clone()));
            }
            schema
                .columns
                .insert((table, column, type_class(&ty), not_null));
        }
        for (table, mut columns) in pk {
            columns.sort();
            let names: Vec<String> = columns.into_iter().map(|(_, c)| c).collect();
            schema.primary_keys.insert((table, names.join(",")));
        }
        let mut st = c.prepare(
            "SELECT m.name, il.name, il.\"unique\", il.partial
             FROM sqlite_master m, pragma_index_list(m.name) il
             WHERE m.type = 'table' AND il.origin <> 'pk'",
        )?;
        let indexes: Vec<(String, String, bool, bool)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (table, index, unique, partial) in indexes {
            let columns: Vec<String> = c
                .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
                .query_map([&index], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            schema
                .indexes
                .insert((table, columns.join(","), unique, partial));
        }
        Ok(schema)
    }

    fn postgres_schema(c: &Connection) -> Result<Schema, StoreError> {
        let mut schema = Schema::default();
        let columns: Vec<(String, String, String, String)> = c
            .prepare(
                "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (table, column, ty, nullable) in columns {
            schema
                .columns
                .insert((table, column, type_class(&ty), nullable == "NO"));
        }
        let indexes: Vec<(String, bool, bool, bool, String)> = c
            .prepare(
                "SELECT t.relname::text, i.indisprimary, i.indisunique, i.indpred IS NOT NULL,
                        array_to_string(ARRAY(
                            SELECT a.attname::text
                            FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                            ORDER BY k.ord), ',')
                 FROM pg_index i
                 JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 WHERE n.nspname = current_schema()",
            )?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        for (table, primary, unique, partial, columns) in indexes {
            if primary {
                schema.primary_keys.insert((table, columns));
            } else {
                schema.indexes.insert((table, columns, unique, partial));
            }
        }
        Ok(schema)
    }

    #[test]
    fn both_dialects_migrate_to_the_same_schema() {
        let sqlite = sqlite_store();
        let postgres = postgres_store();
        let a = sqlite.store.read_blocking(sqlite_schema).unwrap();
        let b = postgres.store.read_blocking(postgres_schema).unwrap();
        assert!(!a.columns.is_empty() && !a.indexes.is_empty());
        fn only<T: Ord + Clone>(
            x: &std::collections::BTreeSet<T>,
            y: &std::collections::BTreeSet<T>,
        ) -> Vec<T> {
            x.difference(y).cloned().collect()
        }
        assert!(
            a == b,
            "columns only on SQLite {:?}\ncolumns only on PostgreSQL {:?}\n\
             keys only on SQLite {:?}\nkeys only on PostgreSQL {:?}\n\
             indexes only on SQLite {:?}\nindexes only on PostgreSQL {:?}",
            only(&a.columns, &b.columns),
            only(&b.columns, &a.columns),
            only(&a.primary_keys, &b.primary_keys),
            only(&b.primary_keys, &a.primary_keys),
            only(&a.indexes, &b.indexes),
            only(&b.indexes, &a.indexes),
        );
    }

    #[test]
    fn statements_that_change_identity_rows_are_recognised() {
        assert!(changes_identity(
            "UPDATE users SET state = ?1 WHERE id = ?2"
        ));
        assert!(changes_identity("insert into accounts(uuid) values (?)"));
        assert!(changes_identity("DELETE FROM domains WHERE id = 1"));
        assert!(!changes_identity("SELECT * FROM users"));
        assert!(!changes_identity(
            "UPDATE backups SET account_id = 1 FROM users"
        ));
        assert!(!changes_identity(
            "INSERT INTO events(account_id) SELECT id FROM accounts"
        ));
    }
}
