//! The SQL seam: one connection, statement, row and value API over both store engines.
//!
//! Call sites write SQL once, with SQLite's `?N` / `?` placeholders; on PostgreSQL each statement
//! is rewritten to `$N` once and cached prepared per connection. The shape follows rusqlite's
//! (`execute`, `query_row`, `prepare_cached`, `query_map`, `row.get(i)`, `optional()`,
//! `params![…]`) so the service layer stays synchronous and reads the same on either engine.
//! Values cross the seam as SQLite's five storage classes ([`ValueRef`]): integers (booleans
//! included, stored as `0`/`1` on both engines), reals, text, blobs and NULL.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::postgres::PgConn;

/// Which engine a connection talks to, for the few statements that must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("query returned no rows")]
    QueryReturnedNoRows,
    #[error("column {index}: {message}")]
    Conversion { index: usize, message: String },
    #[error("{0}")]
    Other(String),
}

/// tokio-postgres prints only "db error" for a server error; the server's message and detail are
/// what an operator needs.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.code().code(), db.message()),
            None => format!("{}: {}", db.code().code(), db.message()),
        },
        None => e.to_string(),
    }
}

impl Error {
    /// A UNIQUE or PRIMARY KEY constraint refused the row.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        f.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    )
            }
            Error::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }

    /// Any constraint (unique, foreign key, check, not null) refused the statement.
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            // Class 23: integrity constraint violation.
            Error::Postgres(e) => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! value_from {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v.into())
            }
        }
    )*};
}
value_from!(i64 => Integer, i32 => Integer, u32 => Integer, bool => Integer, f64 => Real,
    String => Text, &str => Text, Vec<u8> => Blob);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// A borrowed SQL value (SQLite's storage classes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// An owned SQL value, for parameter lists built at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ValueRef<'_> {
    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Integer(_) => "integer",
            ValueRef::Real(_) => "real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "blob",
        }
    }

    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(s) => Value::Text(s.to_string()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl<'a> From<rusqlite::types::ValueRef<'a>> for ValueRef<'a> {
    fn from(v: rusqlite::types::ValueRef<'a>) -> ValueRef<'a> {
        match v {
            rusqlite::types::ValueRef::Null => ValueRef::Null,
            rusqlite::types::ValueRef::Integer(i) => ValueRef::Integer(i),
            rusqlite::types::ValueRef::Real(f) => ValueRef::Real(f),
            // SQLite text is UTF-8 in this database (every write goes through &str).
            rusqlite::types::ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => ValueRef::Text(s),
                Err(_) => ValueRef::Blob(t),
            },
            rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// A value that can be bound to a statement parameter.
pub trait ToSql {
    fn to_sql(&self) -> Result<ValueRef<'_>>;
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        (**self).to_sql()
    }
}

impl<T: ToSql + ?Sized> ToSql for Box<T> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        (**self).to_sql()
    }
}

impl<T: ToSql + ?Sized> ToSql for Arc<T> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        match self {
            Some(v) => v.to_sql(),
            None => Ok(ValueRef::Null),
        }
    }
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Result<ValueRef<'_>> {
                i64::try_from(*self)
                    .map(ValueRef::Integer)
                    .map_err(|_| Error::Other(format!("integer {} out of range", self)))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl ToSql for bool {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Integer(i64::from(*self)))
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Real(*self))
    }
}

impl ToSql for f32 {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Real(f64::from(*self)))
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Text(self))
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Text(self))
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Blob(self))
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Blob(self))
    }
}

impl<const N: usize> ToSql for [u8; N] {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Blob(self))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s),
            Value::Blob(b) => ValueRef::Blob(b),
        })
    }
}

impl ToSql for ValueRef<'_> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(*self)
    }
}

/// A value read from a column.
pub trait FromSql: Sized {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String>;
}

fn wrong_type<T>(value: ValueRef<'_>, wanted: &str) -> Result<T, String> {
    Err(format!("expected {wanted}, found {}", value.kind()))
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
                match value {
                    ValueRef::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| format!("integer {i} out of range for {}", stringify!($t))),
                    other => wrong_type(other, "integer"),
                }
            }
        }
    )*};
}
int_from_sql!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl FromSql for bool {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Integer(i) => Ok(i != 0),
            other => wrong_type(other, "integer"),
        }
    }
}

impl FromSql for f64 {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            other => wrong_type(other, "real"),
        }
    }
}

impl FromSql for String {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(s) => Ok(s.to_string()),
            other => wrong_type(other, "text"),
        }
    }
}

impl FromSql for Vec<u8> {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(s) => Ok(s.as_bytes().to_vec()),
            other => wrong_type(other, "blob"),
        }
    }
}

impl FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(value.to_owned())
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn column_result(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::column_result(other).map(Some),
        }
    }
}

/// A statement's parameters: `params![…]`, an array of one type, `[]`, or [`params_from_iter`].
pub trait Params {
    fn count(&self) -> usize;
    fn param(&self, index: usize) -> &dyn ToSql;
}

impl Params for &[&dyn ToSql] {
    fn count(&self) -> usize {
        self.len()
    }
    fn param(&self, index: usize) -> &dyn ToSql {
        self[index]
    }
}

impl Params for [&dyn ToSql; 0] {
    fn count(&self) -> usize {
        0
    }
    fn param(&self, _: usize) -> &dyn ToSql {
        unreachable!("no parameters")
    }
}

impl Params for () {
    fn count(&self) -> usize {
        0
    }
    fn param(&self, _: usize) -> &dyn ToSql {
        unreachable!("no parameters")
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn count(&self) -> usize {
                $n
            }
            fn param(&self, index: usize) -> &dyn ToSql {
                &self[index]
            }
        }
        impl<T: ToSql> Params for &[T; $n] {
            fn count(&self) -> usize {
                $n
            }
            fn param(&self, index: usize) -> &dyn ToSql {
                &self[index]
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Parameters from an iterator of one type (run-time lists).
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I::Item>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: ToSql> Params for ParamsFromIter<T> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn param(&self, index: usize) -> &dyn ToSql {
        &self.0[index]
    }
}

/// `params![a, b, …]`: parameters of mixed types.
#[macro_export]
macro_rules! sql_params {
    () => {
        &[] as &[&dyn $crate::store::db::ToSql]
    };
    ($($param:expr),+ $(,)?) => {
        &[$(&$param as &dyn $crate::store::db::ToSql),+] as &[&dyn $crate::store::db::ToSql]
    };
}
pub use crate::sql_params as params;

/// Turns "no rows" into `None` for queries that may legitimately find nothing.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One result row.
pub struct Row<'a>(RowInner<'a>);

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl<'a> Row<'a> {
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T> {
        let value = self.get_ref(index)?;
        T::column_result(value).map_err(|message| Error::Conversion { index, message })
    }

    pub fn get_ref(&self, index: usize) -> Result<ValueRef<'_>> {
        match &self.0 {
            RowInner::Sqlite(r) => Ok(r.get_ref(index)?.into()),
            RowInner::Postgres(r) => super::postgres::column_value(r, index),
        }
    }

    pub fn column_count(&self) -> usize {
        match &self.0 {
            RowInner::Sqlite(r) => r.as_ref().column_count(),
            RowInner::Postgres(r) => r.len(),
        }
    }
}

/// A connection of either engine. Not shared between threads: the store hands one to a closure.
pub struct Connection(pub(crate) Backend);

pub(crate) enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(PgConn),
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.dialect() {
            Dialect::Sqlite => "Connection(sqlite)",
            Dialect::Postgres => "Connection(postgres)",
        })
    }
}

/// A write transaction: a connection on which the store has begun a transaction that it commits
/// when the closure returns `Ok`.
pub struct Transaction<'a> {
    conn: &'a Connection,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(conn: &'a Connection) -> Transaction<'a> {
        Transaction { conn }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Connection {
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect() == Dialect::Postgres
    }

    /// The SQLite connection under this one, for SQLite-only maintenance (pragmas, backups).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs an `INSERT` into a table with an `id` key and returns the new row's id (SQLite's
    /// rowid; `RETURNING id` on PostgreSQL).
    pub fn insert<P: Params>(&self, sql: &str, params: P) -> Result<i64> {
        match &self.0 {
            Backend::Sqlite(c) => {
                self.prepare_cached(sql)?.execute(params)?;
                Ok(c.last_insert_rowid())
            }
            Backend::Postgres(_) => {
                let returning = format!("{} RETURNING id", sql.trim_end().trim_end_matches(';'));
                self.prepare_cached(&returning)?
                    .query_row(params, |r| r.get(0))
            }
        }
    }

    /// Runs several `;`-separated statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(c) => c.batch_execute(sql),
        }
    }

    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Prepares a statement kept in the connection's statement cache.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement(match &self.0 {
            Backend::Sqlite(c) => StatementInner::SqliteCached(c.prepare_cached(sql)?),
            Backend::Postgres(c) => StatementInner::Postgres(c, c.prepare(sql)?),
        }))
    }

    /// Prepares a statement (on PostgreSQL, cached as well: preparing is a round trip).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement(match &self.0 {
            Backend::Sqlite(c) => StatementInner::Sqlite(c.prepare(sql)?),
            Backend::Postgres(c) => StatementInner::Postgres(c, c.prepare(sql)?),
        }))
    }
}

pub struct Statement<'c>(StatementInner<'c>);

enum StatementInner<'c> {
    Sqlite(rusqlite::Statement<'c>),
    SqliteCached(rusqlite::CachedStatement<'c>),
    Postgres(&'c PgConn, tokio_postgres::Statement),
}

/// Binds SQLite parameters by position without collecting them (the hot path).
struct SqliteParam<'a>(ValueRef<'a>);

impl rusqlite::ToSql for SqliteParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            ValueRef::Null => V::Null,
            ValueRef::Integer(i) => V::Integer(i),
            ValueRef::Real(f) => V::Real(f),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

fn bind_sqlite<P: Params>(stmt: &mut rusqlite::Statement<'_>, params: &P) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected != params.count() {
        return Err(Error::Sqlite(rusqlite::Error::InvalidParameterCount(
            params.count(),
            expected,
        )));
    }
    for i in 0..expected {
        stmt.raw_bind_parameter(i + 1, SqliteParam(params.param(i).to_sql()?))?;
    }
    Ok(())
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.0 {
            StatementInner::Sqlite(s) => Some(s),
            StatementInner::SqliteCached(s) => Some(&mut **s),
            StatementInner::Postgres(..) => None,
        }
    }

    pub fn column_count(&self) -> usize {
        match &self.0 {
            StatementInner::Sqlite(s) => s.column_count(),
            StatementInner::SqliteCached(s) => s.column_count(),
            StatementInner::Postgres(_, s) => s.columns().len(),
        }
    }

    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        if let StatementInner::Postgres(c, s) = &self.0 {
            return c.execute(s, &params);
        }
        let stmt = self.sqlite().expect("sqlite statement");
        bind_sqlite(stmt, &params)?;
        Ok(stmt.raw_execute()?)
    }

    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => f(&row.row()),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        let mut rows = self.query(params)?;
        Ok(rows.next()?.is_some())
    }

    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        if let StatementInner::Postgres(c, s) = &self.0 {
            return Ok(Rows(RowsInner::Postgres(c.query(s, &params)?.into_iter())));
        }
        let stmt = self.sqlite().expect("sqlite statement");
        bind_sqlite(stmt, &params)?;
        Ok(Rows(RowsInner::Sqlite(stmt.raw_query())))
    }

    pub fn query_map<T, P, F>(&mut self, params: P, f: F) -> Result<MappedRows<'_, F>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        Ok(MappedRows {
            rows: self.query(params)?,
            map: f,
        })
    }
}

/// Rows of a query, read one at a time.
pub struct Rows<'s>(RowsInner<'s>);

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(std::vec::IntoIter<tokio_postgres::Row>),
}

/// A row owned by [`Rows`] for the time it is looked at.
pub enum NextRow<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(tokio_postgres::Row),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<OwnedRow<'_>>> {
        match &mut self.0 {
            RowsInner::Sqlite(rows) => Ok(rows.next()?.map(|r| OwnedRow(NextRow::Sqlite(r)))),
            RowsInner::Postgres(rows) => Ok(rows.next().map(|r| OwnedRow(NextRow::Postgres(r)))),
        }
    }
}

/// The current row of [`Rows::next`]; use it as a [`Row`] (`row.get(0)`, or `&row` where a
/// `&Row` is wanted through [`OwnedRow::row`]).
pub struct OwnedRow<'r>(NextRow<'r>);

impl OwnedRow<'_> {
    pub fn row(&self) -> Row<'_> {
        match &self.0 {
            NextRow::Sqlite(r) => Row(RowInner::Sqlite(r)),
            NextRow::Postgres(r) => Row(RowInner::Postgres(r)),
        }
    }

    pub fn get<T: FromSql>(&self, index: usize) -> Result<T> {
        self.row().get(index)
    }
}

/// Rows mapped by a closure (`query_map`).
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    map: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> Result<T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.rows.next() {
            Ok(Some(row)) => Some((self.map)(&row.row())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Rewrites SQLite placeholders (`?N`, and `?` numbered after the largest so far, as SQLite
/// does) to PostgreSQL's `$N`, leaving string literals, quoted names and comments alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                let end = sql[i + 1..]
                    .find(c as char)
                    .map_or(bytes.len(), |e| i + 1 + e + 1);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(bytes.len(), |e| i + e);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'?' => {
                let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
                let number = if digits > 0 {
                    let n: u32 = sql[i + 1..i + 1 + digits].parse().unwrap_or(0);
                    largest = largest.max(n);
                    n
                } else {
                    largest += 1;
                    largest
                };
                out.push('$');
                out.push_str(&number.to_string());
                i += 1 + digits;
            }
            _ => {
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// Statements prepared on one PostgreSQL connection, by their SQLite-form text.
#[derive(Default)]
pub(crate) struct StatementCache {
    statements: RefCell<HashMap<Box<str>, (tokio_postgres::Statement, bool)>>,
}

/// Prepared statements kept per PostgreSQL connection; beyond this the cache starts over (SQL
/// built at run time from filters can produce many shapes).
const POSTGRES_STATEMENT_CACHE_CAPACITY: usize = 512;

impl StatementCache {
    pub(crate) fn get(&self, sql: &str) -> Option<(tokio_postgres::Statement, bool)> {
        self.statements.borrow().get(sql).cloned()
    }

    pub(crate) fn insert(&self, sql: &str, statement: (tokio_postgres::Statement, bool)) {
        let mut statements = self.statements.borrow_mut();
        if statements.len() >= POSTGRES_STATEMENT_CACHE_CAPACITY {
            statements.clear();
        }
        statements.insert(sql.into(), statement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_like_sqlite() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?2 OR d = ?1"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 OR d = $1"
        );
        assert_eq!(
            postgres_placeholders("INSERT INTO t VALUES (?, ?, ?)"),
            "INSERT INTO t VALUES ($1, $2, $3)"
        );
        assert_eq!(
            postgres_placeholders("x = ?2 AND y = ?"),
            "x = $2 AND y = $3"
        );
        assert_eq!(
            postgres_placeholders("SELECT '?', \"a?\" -- why?\nFROM t WHERE x = ?"),
            "SELECT '?', \"a?\" -- why?\nFROM t WHERE x = $1"
        );
        assert_eq!(
            postgres_placeholders("WHERE p LIKE ? ESCAPE '\\' AND n = 'é?'"),
            "WHERE p LIKE $1 ESCAPE '\\' AND n = 'é?'"
        );
    }
}
