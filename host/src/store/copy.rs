//! `bnr store copy --from sqlite:PATH --to postgres://…`: moves an installation from SQLite to
//! PostgreSQL.
//!
//! The target is migrated to this bnr's schema, must hold no data, and receives every table in
//! foreign-key order inside one transaction (all or nothing). Identity sequences then continue
//! after the largest copied id, and every table's row count is compared with the source before
//! the transaction commits. Sealed secrets are copied sealed: the PostgreSQL server must run
//! with the same key (`bnr.key` of the SQLite data directory, or `BNR_ENCRYPTION_KEY`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::OpenFlags;

use super::db::{self, Backend, Connection, Value};
use super::{MIGRATIONS, Store, StoreError};

/// Tables the migrations fill: not copied row by row (nor are the [`DERIVED`] ones).
const NOT_COPIED: &[&str] = &[
    "schema_migrations",
    "identity_epoch",
    "change_epochs",
    "leases",
];
/// Tables the triggers keep, with the rows that must match the source after a copy: the
/// triggers of the target build them from the copied backups, and a source row whose count went
/// back to zero has no counterpart there.
const DERIVED: &[(&str, &str)] = &[
    ("backup_counts", "live <> 0"),
    ("backup_pair_totals", "counted <> 0"),
];
/// Rows per `INSERT` (and at most this many parameters per statement; PostgreSQL's limit is
/// 65535).
const ROWS_PER_INSERT: usize = 200;
const MAX_PARAMETERS: usize = 30_000;

/// What was copied: rows per table, in copy order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}

impl From<db::Error> for CopyError {
    fn from(e: db::Error) -> Self {
        CopyError::Store(StoreError::Sql(e))
    }
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// Copies the SQLite database at `from` into the PostgreSQL database `to` (a URL). The
/// SQLite file is only read; its directory holds the key that seals its secrets.
pub fn sqlite_to_postgres(from: &Path, to: &str) -> Result<CopyReport, CopyError> {
    if !from.is_file() {
        return Err(CopyError::Refused(format!(
            "{} is not a SQLite database file",
            from.display()
        )));
    }
    let source = Connection(Backend::Sqlite(rusqlite::Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?));
    check_source_schema(&source)?;
    let data_dir = from
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let target = Store::open_postgres(to, data_dir, MIGRATIONS)?;
    // One read snapshot of the source for the whole copy.
    source.execute_batch("BEGIN DEFERRED")?;
    let result = target.write_blocking(|tx| copy_tables(&source, tx));
    let _ = source.execute_batch("COMMIT");
    result
}

/// The source must be at exactly this bnr's schema: an older one is migrated by starting this
/// bnr on it first, a newer one is not understood.
fn check_source_schema(source: &Connection) -> Result<(), CopyError> {
    let applied: BTreeSet<i64> = source
        .prepare("SELECT version FROM schema_migrations")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let known: BTreeSet<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    if applied != known {
        return Err(CopyError::Refused(format!(
            "the SQLite database has schema versions {applied:?}, this bnr has {known:?}: \
             start this bnr once on the SQLite database (it migrates it), then copy"
        )));
    }
    Ok(())
}

fn copy_tables(source: &Connection, target: &Connection) -> Result<CopyReport, CopyError> {
    let tables = tables_in_dependency_order(source)?;
    for table in &tables {
        let has_rows: bool =
            target.query_row(&format!("SELECT EXISTS(SELECT 1 FROM {table})"), [], |r| {
                r.get(0)
            })?;
        if has_rows {
            return Err(CopyError::Refused(format!(
                "the target database is not empty (table {table} has rows): copy into a new database"
            )));
        }
    }
    let mut report = CopyReport::default();
    for table in &tables {
        let copied = copy_table(source, target, table)?;
        report.tables.push((table.clone(), copied));
    }
    for table in &tables {
        reset_identity(target, table)?;
    }
    // Every table, derived ones included, must now hold what the source holds.
    let derived = DERIVED.iter().copied();
    for (table, rows) in tables.iter().map(|t| (t.as_str(), "1 = 1")).chain(derived) {
        let count = |c: &Connection| -> Result<i64, db::Error> {
            c.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {rows}"),
                [],
                |r| r.get(0),
            )
        };
        let (expected, found) = (count(source)?, count(target)?);
        if expected != found {
            return Err(CopyError::Refused(format!(
                "table {table}: {expected} rows in the source, {found} copied; nothing was kept"
            )));
        }
    }
    Ok(report)
}

/// User tables, each after the tables its foreign keys point to.
fn tables_in_dependency_order(source: &Connection) -> Result<Vec<String>, CopyError> {
    let names: Vec<String> = source
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut depends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let copied = |name: &str| {
        !NOT_COPIED.contains(&name) && !DERIVED.iter().any(|&(derived, _)| derived == name)
    };
    for name in names.iter().filter(|n| copied(n)) {
        let parents: BTreeSet<String> = source
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?
            .query_map([name], |r| r.get(0))?
            .collect::<Result<BTreeSet<String>, _>>()?
            .into_iter()
            .filter(|p| p != name)
            .collect();
        depends.insert(name.clone(), parents);
    }
    let mut ordered = Vec::new();
    while !depends.is_empty() {
        let ready: Vec<String> = depends
            .iter()
            .filter(|(_, parents)| parents.iter().all(|p| !depends.contains_key(p)))
            .map(|(name, _)| name.clone())
            .collect();
        if ready.is_empty() {
            return Err(CopyError::Refused(format!(
                "foreign keys form a cycle among {:?}",
                depends.keys().collect::<Vec<_>>()
            )));
        }
        for name in ready {
            depends.remove(&name);
            ordered.push(name);
        }
    }
    Ok(ordered)
}

fn copy_table(source: &Connection, target: &Connection, table: &str) -> Result<u64, CopyError> {
    let columns: Vec<String> = source
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let column_list = columns.join(", ");
    // Parents before children within a table too (domains.parent_id): rows in rowid order.
    let mut select =
        source.prepare(&format!("SELECT {column_list} FROM {table} ORDER BY rowid"))?;
    let mut rows = select.query([])?;
    let batch_rows = ROWS_PER_INSERT
        .min(MAX_PARAMETERS / columns.len().max(1))
        .max(1);
    let mut batch: Vec<Value> = Vec::with_capacity(batch_rows * columns.len());
    let mut copied = 0u64;
    while let Some(row) = rows.next()? {
        for i in 0..columns.len() {
            batch.push(row.row().get_ref(i)?.to_owned());
        }
        if batch.len() == batch_rows * columns.len() {
            copied += insert_rows(target, table, &column_list, columns.len(), &mut batch)?;
        }
    }
    if !batch.is_empty() {
        copied += insert_rows(target, table, &column_list, columns.len(), &mut batch)?;
    }
    Ok(copied)
}

fn insert_rows(
    target: &Connection,
    table: &str,
    column_list: &str,
    width: usize,
    values: &mut Vec<Value>,
) -> Result<u64, CopyError> {
    let rows = values.len() / width;
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let placeholders: Vec<String> =
                (1..=width).map(|c| format!("?{}", r * width + c)).collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table}({column_list}) VALUES {}",
        tuples.join(", ")
    );
    let inserted = target.execute(&sql, db::params_from_iter(values.drain(..)))?;
    Ok(inserted as u64)
}

/// Makes the table's identity continue after the largest copied id.
fn reset_identity(target: &Connection, table: &str) -> Result<(), CopyError> {
    let has_identity: bool = target.query_row(
        "SELECT EXISTS(SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = ?1
                         AND column_name = 'id' AND is_identity = 'YES')",
        [table],
        |r| r.get(0),
    )?;
    if has_identity {
        target.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ),
            [],
            |_| Ok(()),
        )?;
    }
    Ok(())
}
