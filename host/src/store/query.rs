//! A tiny WHERE-clause builder and the paged-list helper every list command uses.
//!
//! Clauses are static SQL fragments written in code; values are always bound parameters.

use crate::store::db::Value;
use crate::store::db::{Connection, Row};

/// Page window for a list (`page` is 1-based; `size == None` means everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u64,
    pub size: Option<u64>,
}

/// Rows a page may skip and still be read on the request's task (an index walk over this many
/// entries takes well under a millisecond).
const INLINE_MAX_SKIPPED: u64 = 10_000;

impl Page {
    pub const ALL: Page = Page {
        page: 1,
        size: None,
    };

    /// A bounded page near the start of an index walk: short enough to read in place
    /// (`Store::read_now`) instead of handing it to the blocking pool. A filter that scans
    /// (keyword) makes any page long; the caller checks that.
    pub fn is_near(&self) -> bool {
        self.size.is_some_and(|size| {
            self.page.saturating_sub(1).saturating_mul(size) <= INLINE_MAX_SKIPPED
        })
    }

    fn limit_offset(&self) -> (i64, i64) {
        match self.size {
            // No limit: the largest one (both engines; PostgreSQL refuses -1).
            None => (i64::MAX, 0),
            Some(size) => {
                let size = size.min(i64::MAX as u64) as i64;
                let offset = (self.page.saturating_sub(1) as i64).saturating_mul(size);
                (size, offset)
            }
        }
    }
}

/// One page of a list plus the total number of matches (CloudStack's `count`).
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub total: u64,
    pub items: Vec<T>,
}

impl<T> Listed<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Listed<U> {
        Listed {
            total: self.total,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}

/// Conjunction of SQL conditions with their bound values.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Filter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `clause` (using `?` placeholders) with its values, in order.
    pub fn and(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.clauses.push(format!("({clause})"));
        self.values.extend(values);
        self
    }

    /// `column = value` when `value` is set.
    pub fn eq_opt(&mut self, column: &str, value: Option<impl IntoSql>) -> &mut Self {
        if let Some(v) = value {
            self.and(&format!("{column} = ?"), [v.into_sql()]);
        }
        self
    }

    /// Case-insensitive substring match of `value` on any of `columns` (CloudStack `keyword`).
    pub fn keyword(&mut self, columns: &[&str], value: Option<&str>) -> &mut Self {
        if let Some(kw) = value.filter(|k| !k.is_empty()) {
            let pattern = format!("%{}%", escape_like(&kw.to_lowercase()));
            let clause = columns
                .iter()
                .map(|c| format!("lower({c}) LIKE ? ESCAPE '\\'"))
                .collect::<Vec<_>>()
                .join(" OR ");
            self.and(
                &clause,
                columns.iter().map(|_| Value::Text(pattern.clone())),
            );
        }
        self
    }

    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Runs `SELECT COUNT(*) FROM {from}{where}` and `SELECT {columns} FROM {from}{where} ORDER BY
    /// {order} LIMIT ? OFFSET ?`, mapping rows with `map`. `from` may contain joins.
    pub fn list<T>(
        &self,
        conn: &Connection,
        columns: &str,
        from: &str,
        order: &str,
        page: Page,
        map: impl FnMut(&Row<'_>) -> crate::store::db::Result<T>,
    ) -> crate::store::db::Result<Listed<T>> {
        let where_sql = self.where_sql();
        let total: i64 = conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM {from}{where_sql}"))?
            .query_row(
                crate::store::db::params_from_iter(self.values.iter()),
                |r| r.get(0),
            )?;
        if total == 0 {
            return Ok(Listed {
                total: 0,
                items: Vec::new(),
            });
        }
        let (limit, offset) = page.limit_offset();
        let sql =
            format!("SELECT {columns} FROM {from}{where_sql} ORDER BY {order} LIMIT ? OFFSET ?");
        let mut stmt = conn.prepare_cached(&sql)?;
        let values = self
            .values
            .iter()
            .cloned()
            .chain([Value::Integer(limit), Value::Integer(offset)]);
        let items = stmt
            .query_map(crate::store::db::params_from_iter(values), map)?
            .collect::<crate::store::db::Result<Vec<T>>>()?;
        Ok(Listed {
            total: total as u64,
            items,
        })
    }
}

/// Values usable in [`Filter::eq_opt`].
pub trait IntoSql {
    fn into_sql(self) -> Value;
}

impl IntoSql for i64 {
    fn into_sql(self) -> Value {
        Value::Integer(self)
    }
}

impl IntoSql for String {
    fn into_sql(self) -> Value {
        Value::Text(self)
    }
}

impl IntoSql for &str {
    fn into_sql(self) -> Value {
        Value::Text(self.to_string())
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern used with `ESCAPE '\'`.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
