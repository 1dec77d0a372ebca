//! The PostgreSQL engine under the SQL seam ([`super::db`]).
//!
//! The store's closures are synchronous. Each PostgreSQL connection's I/O task runs on a small
//! runtime the store owns; a closure's thread sends a request to it and parks until the answer
//! comes (tokio-postgres's client futures only talk to that task over channels, so they can be
//! waited on from any thread — an async worker in `read_now`, the blocking pool, a plain
//! thread — with no "runtime inside a runtime" and no dependence on the caller's runtime having
//! a free worker). The cost per statement is one round trip plus two thread wake-ups.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};

use super::db::{Error, Params, Result, StatementCache, ValueRef, postgres_placeholders};

/// How long one statement may run before the server cancels it: no provider call or request
/// waits forever on a lock or a runaway query.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for `fut` on the calling thread, parking it between polls.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Sends a request without waiting for its answer: tokio-postgres queues the request on the first
/// poll; the connection reads and drops the answer of a request nobody waits for.
fn send_only<F: Future>(fut: F) {
    let mut fut = std::pin::pin!(fut);
    let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
}

/// The runtime that drives the connections' I/O. Shut down in the background when the store
/// goes, so dropping a store is fine from async code too.
pub(crate) struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    pub(crate) fn new() -> std::io::Result<IoRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bnr-postgres")
            .enable_all()
            .build()?;
        Ok(IoRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
    }

    /// Runs `fut` on the I/O runtime and waits for it from the calling thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let task = self.handle().spawn(fut);
        match block_on(task) {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A parsed connection URL plus the runtime to use it on.
pub(crate) struct PgConnector {
    config: tokio_postgres::Config,
    runtime: Arc<IoRuntime>,
}

impl PgConnector {
    pub(crate) fn new(url: &str) -> Result<PgConnector> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Other(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("bnr");
        }
        let runtime = IoRuntime::new()
            .map_err(|e| Error::Other(format!("cannot start the PostgreSQL I/O runtime: {e}")))?;
        Ok(PgConnector {
            config,
            runtime: Arc::new(runtime),
        })
    }

    pub(crate) fn connect(&self) -> Result<PgConn> {
        let config = self.config.clone();
        let client = self.runtime.run(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        })?;
        let conn = PgConn {
            client,
            statements: StatementCache::default(),
            in_transaction: Cell::new(false),
            read_only: Cell::new(false),
            identity_changed: Cell::new(false),
        };
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'",
            STATEMENT_TIMEOUT.as_millis()
        ))?;
        Ok(conn)
    }
}

/// The channel the change-epoch triggers notify (payload: the epoch's name).
pub const CHANGES_CHANNEL: &str = "bnr_changes";

/// Listens for change notices on a connection of its own (a pooled connection would lose
/// them when handed to another caller).
#[derive(Clone)]
pub struct ChangeListener {
    config: tokio_postgres::Config,
}

impl ChangeListener {
    /// Connects, LISTENs, and calls `on_notice` with each payload until the connection fails;
    /// `on_listening` runs once the LISTEN is in place (changes made before it are not
    /// announced: the caller re-reads then). Runs on the caller's runtime.
    pub async fn listen(&self, on_listening: impl Fn(), on_notice: impl Fn(&str)) -> Result<()> {
        let (client, mut connection) = self.config.connect(tokio_postgres::NoTls).await?;
        let listen_sql = format!("LISTEN {CHANGES_CHANNEL}");
        let mut listen = std::pin::pin!(client.batch_execute(&listen_sql));
        let mut listening = false;
        loop {
            tokio::select! {
                done = &mut listen, if !listening => {
                    done?;
                    listening = true;
                    on_listening();
                }
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        on_notice(n.payload())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Error::Other("the listening connection closed".into())),
                },
            }
        }
    }
}

impl PgConnector {
    pub(crate) fn change_listener(&self) -> ChangeListener {
        ChangeListener {
            config: self.config.clone(),
        }
    }
}

pub(crate) struct PgConn {
    client: tokio_postgres::Client,
    statements: StatementCache,
    /// A transaction begun by the store is open.
    in_transaction: Cell<bool>,
    /// The open transaction is a read-only snapshot.
    read_only: Cell<bool>,
    /// A statement prepared since the last look changes an identity table.
    identity_changed: Cell<bool>,
}

impl PgConn {
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(crate) fn begin(&self, sql: &str) -> Result<()> {
        self.batch_execute(sql)?;
        self.in_transaction.set(true);
        self.read_only.set(false);
        Ok(())
    }

    /// Begins a read-only snapshot without waiting for the answer: the server handles requests
    /// in order, so the first query, sent right behind, runs inside it (one round trip saved
    /// per read; a read-only `BEGIN` on a pooled connection, which is outside any transaction,
    /// does not fail short of a broken connection, which fails the query too).
    pub(crate) fn begin_read_only(&self, sql: &str) {
        send_only(self.client.batch_execute(sql));
        self.in_transaction.set(true);
        self.read_only.set(true);
    }

    /// Commits or rolls back; a failed commit is rolled back by the server. Ending a read-only
    /// snapshot is sent without waiting (it has nothing to make durable; the next user's
    /// requests queue behind it on the connection).
    pub(crate) fn end(&self, commit: bool) -> Result<()> {
        if self.read_only.get() {
            send_only(self.client.batch_execute("COMMIT"));
            self.in_transaction.set(false);
            return Ok(());
        }
        let result = self.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" });
        if result.is_ok() {
            self.in_transaction.set(false);
        }
        result
    }

    /// Whether the connection is outside any transaction and still up (fit for the pool).
    pub(crate) fn ended_cleanly(&self) -> bool {
        !self.in_transaction.get() && !self.client.is_closed()
    }

    pub(crate) fn take_identity_changed(&self) -> bool {
        self.identity_changed.replace(false)
    }

    pub(crate) fn batch_execute(&self, sql: &str) -> Result<()> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }

    pub(crate) fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        let (statement, changes_identity) = match self.statements.get(sql) {
            Some(cached) => cached,
            None => {
                let statement = block_on(self.client.prepare(&postgres_placeholders(sql)))?;
                let changes_identity = super::changes_identity(sql);
                self.statements
                    .insert(sql, (statement.clone(), changes_identity));
                (statement, changes_identity)
            }
        };
        if changes_identity {
            self.identity_changed.set(true);
        }
        Ok(statement)
    }

    pub(crate) fn execute<P: Params>(
        &self,
        statement: &tokio_postgres::Statement,
        params: &P,
    ) -> Result<usize> {
        let values = values(params)?;
        let refs = param_refs(&values);
        Ok(block_on(self.client.execute(statement, &refs))? as usize)
    }

    pub(crate) fn query<P: Params>(
        &self,
        statement: &tokio_postgres::Statement,
        params: &P,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let values = values(params)?;
        let refs = param_refs(&values);
        Ok(block_on(self.client.query(statement, &refs))?)
    }
}

fn values<P: Params>(params: &P) -> Result<Vec<PgParam<'_>>> {
    (0..params.count())
        .map(|i| params.param(i).to_sql().map(PgParam))
        .collect()
}

fn param_refs<'a>(values: &'a [PgParam<'a>]) -> Vec<&'a (dyn PgToSql + Sync)> {
    values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
}

/// A seam value sent as whatever type the server inferred for the parameter: integers stand
/// for booleans and may fill a narrower integer column; text fills any text-like type.
#[derive(Debug)]
struct PgParam<'a>(ValueRef<'a>);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl PgToSql for PgParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch =
            || -> BoxError { format!("cannot send {:?} as PostgreSQL type {ty}", self.0).into() };
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(mismatch()),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            ValueRef::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column as a seam value: integer types and booleans as integers, text types as text.
pub(crate) fn column_value(row: &tokio_postgres::Row, index: usize) -> Result<ValueRef<'_>> {
    let column = row.columns().get(index).ok_or_else(|| Error::Conversion {
        index,
        message: format!("no such column (the row has {})", row.len()),
    })?;
    let ty = column.type_().clone();
    let conversion = |e: tokio_postgres::Error| Error::Conversion {
        index,
        message: e.to_string(),
    };
    let value = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, ValueRef::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, |v| ValueRef::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, |v| ValueRef::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, |v| ValueRef::Integer(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, ValueRef::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, |v| ValueRef::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
            .try_get::<_, Option<&str>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, ValueRef::Text),
        Type::BYTEA => row
            .try_get::<_, Option<&[u8]>>(index)
            .map_err(conversion)?
            .map_or(ValueRef::Null, ValueRef::Blob),
        other => {
            return Err(Error::Conversion {
                index,
                message: format!(
                    "PostgreSQL type {other} is not read by the store (cast it in the query)"
                ),
            });
        }
    };
    Ok(value)
}

/// The URL with its password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    // URL form: scheme://user:password@host/...
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = redact_query_password(tail);
        return format!("{scheme}://{authority}{tail}");
    }
    // Key-value form: host=/run/postgresql user=bnr password=secret dbname=bnr
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_a_redacted_url() {
        assert_eq!(
            redact_url("postgres://bnr:s3cret@db.example:5432/bnr"),
            "postgres://bnr:***@db.example:5432/bnr"
        );
        assert_eq!(
            redact_url("postgresql://bnr@/bnr?host=/run/postgresql&password=s3cret"),
            "postgresql://bnr@/bnr?host=/run/postgresql&password=***"
        );
        assert_eq!(
            redact_url("host=/tmp user=bnr password=s3cret dbname=bnr"),
            "host=/tmp user=bnr password=*** dbname=bnr"
        );
        assert!(!redact_url("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }
}

/// Throw-away PostgreSQL databases for tests: each test gets its own database on the server
/// named by `BNR_TEST_POSTGRES_URL` (`cargo xtask test` starts one), dropped afterwards.
pub mod testing {
    use super::PgConnector;

    /// The server the test run started.
    pub const URL_VARIABLE: &str = "BNR_TEST_POSTGRES_URL";

    /// A database created for one test; dropped (connections and all) when this goes.
    pub struct TestDatabase {
        admin: PgConnector,
        name: String,
        url: String,
    }

    impl TestDatabase {
        /// A fresh empty database. Panics with how to get a server when there is none: tests on
        /// PostgreSQL never skip.
        pub fn create() -> TestDatabase {
            let base = std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
                panic!(
                    "{URL_VARIABLE} is not set: run the tests with `cargo xtask test`, which \
                     starts a PostgreSQL server, or point it at one (postgresql:///postgres?host=/path)"
                )
            });
            let admin = PgConnector::new(&base).expect("BNR_TEST_POSTGRES_URL parses");
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let conn = admin
                .connect()
                .expect("connect to the test PostgreSQL server");
            conn.batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create a test database");
            let url = with_dbname(&base, &name);
            TestDatabase { admin, name, url }
        }

        /// The URL of this database.
        pub fn url(&self) -> &str {
            &self.url
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if let Ok(conn) = self.admin.connect() {
                let _ = conn.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    /// `base` (a URL or a key-value string) pointed at database `name`.
    fn with_dbname(base: &str, name: &str) -> String {
        if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            let (head, query) = match base.split_once('?') {
                Some((h, q)) => (h, Some(q)),
                None => (base, None),
            };
            let scheme_end = head.find("://").map_or(0, |i| i + 3);
            let path_start = head[scheme_end..]
                .find('/')
                .map_or(head.len(), |i| scheme_end + i);
            let mut url = format!("{}/{name}", &head[..path_start]);
            if let Some(q) = query {
                url.push('?');
                url.push_str(q);
            }
            url
        } else {
            let mut parts: Vec<String> = base
                .split_whitespace()
                .filter(|p| !p.starts_with("dbname="))
                .map(str::to_string)
                .collect();
            parts.push(format!("dbname={name}"));
            parts.join(" ")
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn database_names_replace_the_url_path() {
            assert_eq!(
                super::with_dbname("postgresql:///postgres?host=/tmp/pg", "t_1"),
                "postgresql:///t_1?host=/tmp/pg"
            );
            assert_eq!(
                super::with_dbname("postgres://u:p@h:5432/db", "t_1"),
                "postgres://u:p@h:5432/t_1"
            );
            assert_eq!(
                super::with_dbname("host=/tmp/pg dbname=postgres user=x", "t_1"),
                "host=/tmp/pg user=x dbname=t_1"
            );
        }
    }
}
