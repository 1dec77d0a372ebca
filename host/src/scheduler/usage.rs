//! Time-weighted backup usage per instance and offering (`backup_usage`).
//!
//! A *period* is a row with the sizes that held from `start_date` until `end_date` (open while
//! `end_date` is NULL). For a pair (instance, offering) a period is open while the instance is
//! assigned to the offering or still has backups of it. [`refresh_pair`] / [`refresh_zone`]
//! reconcile the periods with the current state at a given instant: open one when the pair
//! becomes active, close the old and open a new one when the total sizes changed, close it when
//! the pair is no longer active. The sync pass calls [`refresh_zone`] every interval; the service
//! layer may call [`refresh_pair`] inside the transaction that assigns, removes, creates or
//! deletes, for periods exact to the second.
//!
//! [`records`] turns the periods into usage records for a time window: hours covered and
//! GiB-hours of physical and virtual size (each period's size times its overlap with the
//! window), per instance and offering.

use std::collections::HashMap;

use crate::store::db::{Connection, Dialect, Row, params};

use crate::identity::ListScope;
use crate::store::OpResult;
use crate::store::query::{Filter, Listed, Page};

/// Backup statuses whose sizes count as used storage (CloudStack's resource counting ignores
/// `Failed`, `Removed` and `Expunged`).
pub const COUNTED_STATUSES_SQL: &str = "status NOT IN ('Failed', 'Removed', 'Expunged')";

/// Sums of `size` and `protected_size` are taken in floating point (exact up to 2^53 bytes), as
/// the running totals of `backup_pair_totals` are: an integer `SUM` could fail with "integer
/// overflow" (and with it every later sync pass of the zone), and a pair's totals read either
/// way are the same, so the sync pass and [`refresh_pair`] never disagree about whether a period
/// changed. Capped below `i64::MAX`, like the SQL that reads the running totals.
const SIZE_CAP: f64 = 9.0e18;

fn capped(sum: f64) -> i64 {
    // In range after the clamp: the cast neither saturates nor wraps.
    sum.clamp(0.0, SIZE_CAP) as i64
}

const SECONDS_PER_HOUR: f64 = 3600.0;
const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;

/// Current totals of one (instance, offering) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    size: i64,
    protected_size: i64,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    account_id: i64,
    domain_id: i64,
    zone_id: i64,
}

#[derive(Debug, Clone, Copy)]
struct OpenPeriod {
    id: i64,
    totals: Totals,
    start: i64,
}

/// What a refresh changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageChanges {
    pub opened: usize,
    pub closed: usize,
}

impl std::ops::AddAssign for UsageChanges {
    fn add_assign(&mut self, other: Self) {
        self.opened += other.opened;
        self.closed += other.closed;
    }
}

/// Reconciles the usage periods of one (instance, offering) pair with the current state, at `at`
/// (Unix seconds). Call inside the transaction that changed the state.
pub fn refresh_pair(
    conn: &Connection,
    vm_id: i64,
    offering_id: i64,
    at: i64,
) -> OpResult<UsageChanges> {
    let assigned: Option<Owner> = conn
        .prepare_cached(
            "SELECT account_id, domain_id, zone_id FROM vms
             WHERE id = ?1 AND backup_offering_id = ?2 AND removed IS NULL",
        )?
        .query_row(params![vm_id, offering_id], owner_from_row)
        .ok();
    let current = match (pair_totals(conn, vm_id, offering_id)?, assigned) {
        (Some(totals), Some(owner)) => Some((totals, owner)),
        // No longer assigned but still holding backups (removed from the offering): the owner
        // comes from the backups themselves.
        (Some(totals), None) => Some((totals, backups_owner(conn, vm_id, offering_id)?)),
        (None, Some(owner)) => Some((
            Totals {
                size: 0,
                protected_size: 0,
            },
            owner,
        )),
        (None, None) => None,
    };
    let open = open_period(conn, vm_id, offering_id)?;
    apply(conn, vm_id, offering_id, current, open, at)
}

/// Reconciles every pair of a zone: instances assigned to an offering, instances with counted
/// backups, and pairs with an open period.
pub fn refresh_zone(conn: &Connection, zone_id: i64, at: i64) -> OpResult<UsageChanges> {
    let mut current: HashMap<(i64, i64), (Totals, Owner)> = HashMap::new();
    {
        // Summed here rather than with `GROUP BY`, which would sort every counted backup of the
        // zone first (in memory, on the writer): the rows stream from the zone's index and
        // only one sum per pair is held.
        let mut sums: HashMap<(i64, i64), (f64, f64, Owner)> = HashMap::new();
        let mut st = conn.prepare_cached(&format!(
            "SELECT vm_id, backup_offering_id, size, protected_size, account_id, domain_id
             FROM backups
             WHERE zone_id = ?1 AND removed IS NULL AND vm_id IS NOT NULL
               AND {COUNTED_STATUSES_SQL}"
        ))?;
        let mut rows = st.query([zone_id])?;
        while let Some(r) = rows.next()? {
            let (account_id, domain_id): (i64, i64) = (r.get(4)?, r.get(5)?);
            let sum = sums.entry((r.get(0)?, r.get(1)?)).or_insert((
                0.0,
                0.0,
                Owner {
                    account_id,
                    domain_id,
                    zone_id,
                },
            ));
            sum.0 += r.get::<Option<i64>>(2)?.unwrap_or(0) as f64;
            sum.1 += r.get::<Option<i64>>(3)?.unwrap_or(0) as f64;
            sum.2.account_id = sum.2.account_id.min(account_id);
            sum.2.domain_id = sum.2.domain_id.min(domain_id);
        }
        for (pair, (size, protected_size, owner)) in sums {
            let totals = Totals {
                size: capped(size),
                protected_size: capped(protected_size),
            };
            current.insert(pair, (totals, owner));
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT id, backup_offering_id, account_id, domain_id FROM vms
             WHERE zone_id = ?1 AND backup_offering_id IS NOT NULL AND removed IS NULL",
        )?;
        let mut rows = st.query([zone_id])?;
        while let Some(r) = rows.next()? {
            let owner = Owner {
                account_id: r.get(2)?,
                domain_id: r.get(3)?,
                zone_id,
            };
            current
                .entry((r.get(0)?, r.get(1)?))
                .and_modify(|(_, o)| *o = owner)
                .or_insert((
                    Totals {
                        size: 0,
                        protected_size: 0,
                    },
                    owner,
                ));
        }
    }
    let mut open: HashMap<(i64, i64), OpenPeriod> = HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT vm_id, backup_offering_id, id, size, protected_size, start_date
             FROM backup_usage WHERE zone_id = ?1 AND end_date IS NULL",
        )?;
        let mut rows = st.query([zone_id])?;
        while let Some(r) = rows.next()? {
            open.insert(
                (r.get(0)?, r.get(1)?),
                OpenPeriod {
                    id: r.get(2)?,
                    totals: Totals {
                        size: r.get(3)?,
                        protected_size: r.get(4)?,
                    },
                    start: r.get(5)?,
                },
            );
        }
    }
    let mut changes = UsageChanges::default();
    for (&(vm_id, offering_id), &(totals, owner)) in &current {
        let period = open.remove(&(vm_id, offering_id));
        changes += apply(conn, vm_id, offering_id, Some((totals, owner)), period, at)?;
    }
    for ((vm_id, offering_id), period) in open {
        changes += apply(conn, vm_id, offering_id, None, Some(period), at)?;
    }
    Ok(changes)
}

/// The pair's running totals from `backup_pair_totals` (kept by triggers on `backups`, migration
/// 0016): one primary-key read, however many backups the instance has. `None` when it has no
/// counted backup. Capped below `i64::MAX` like [`capped`].
fn pair_totals(conn: &Connection, vm_id: i64, offering_id: i64) -> OpResult<Option<Totals>> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => {
            "SELECT counted, CAST(MAX(MIN(size, 9.0e18), 0) AS INTEGER),
                    CAST(MAX(MIN(protected_size, 9.0e18), 0) AS INTEGER)
             FROM backup_pair_totals WHERE vm_id = ?1 AND backup_offering_id = ?2"
        }
        Dialect::Postgres => {
            "SELECT counted, CAST(GREATEST(LEAST(size, 9.0e18), 0) AS BIGINT),
                    CAST(GREATEST(LEAST(protected_size, 9.0e18), 0) AS BIGINT)
             FROM backup_pair_totals WHERE vm_id = ?1 AND backup_offering_id = ?2"
        }
    };
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query(params![vm_id, offering_id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let counted: i64 = r.get(0)?;
    if counted <= 0 {
        return Ok(None);
    }
    Ok(Some(Totals {
        size: r.get(1)?,
        protected_size: r.get(2)?,
    }))
}

/// Owner of a pair's counted backups, for a pair whose instance is no longer assigned.
fn backups_owner(conn: &Connection, vm_id: i64, offering_id: i64) -> OpResult<Owner> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT MIN(account_id), MIN(domain_id), MIN(zone_id) FROM backups
             WHERE vm_id = ?1 AND backup_offering_id = ?2 AND removed IS NULL
               AND {COUNTED_STATUSES_SQL}"
        ))?
        .query_row(params![vm_id, offering_id], owner_from_row)?)
}

fn owner_from_row(r: &Row<'_>) -> crate::store::db::Result<Owner> {
    Ok(Owner {
        account_id: r.get(0)?,
        domain_id: r.get(1)?,
        zone_id: r.get(2)?,
    })
}

fn open_period(conn: &Connection, vm_id: i64, offering_id: i64) -> OpResult<Option<OpenPeriod>> {
    let mut st = conn.prepare_cached(
        "SELECT id, size, protected_size, start_date FROM backup_usage
         WHERE vm_id = ?1 AND backup_offering_id = ?2 AND end_date IS NULL
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut rows = st.query(params![vm_id, offering_id])?;
    Ok(match rows.next()? {
        Some(r) => Some(OpenPeriod {
            id: r.get(0)?,
            totals: Totals {
                size: r.get(1)?,
                protected_size: r.get(2)?,
            },
            start: r.get(3)?,
        }),
        None => None,
    })
}

fn apply(
    conn: &Connection,
    vm_id: i64,
    offering_id: i64,
    current: Option<(Totals, Owner)>,
    open: Option<OpenPeriod>,
    at: i64,
) -> OpResult<UsageChanges> {
    let mut changes = UsageChanges::default();
    let mut opened_from = at;
    if let Some(period) = open {
        if current.is_some_and(|(totals, _)| totals == period.totals) {
            return Ok(changes);
        }
        // A period never ends before it began, even if callers' clocks disagree.
        let end = at.max(period.start);
        conn.prepare_cached("UPDATE backup_usage SET end_date = ?1 WHERE id = ?2")?
            .execute(params![end, period.id])?;
        changes.closed += 1;
        opened_from = end;
    }
    if let Some((totals, owner)) = current {
        conn.prepare_cached(
            "INSERT INTO backup_usage(vm_id, backup_offering_id, account_id, domain_id, zone_id,
                                      size, protected_size, start_date, end_date)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
        )?
        .execute(params![
            vm_id,
            offering_id,
            owner.account_id,
            owner.domain_id,
            owner.zone_id,
            totals.size,
            totals.protected_size,
            opened_from
        ])?;
        changes.opened += 1;
    }
    Ok(changes)
}

/// Which usage to report.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Window start and end, Unix seconds (end exclusive).
    pub start: i64,
    pub end: i64,
    pub zone_id: Option<i64>,
    pub vm_id: Option<i64>,
}

/// Usage of one (instance, offering) pair within a window.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub vm_uuid: String,
    pub vm_name: String,
    pub offering_uuid: String,
    pub offering_name: String,
    pub zone_uuid: String,
    pub account_uuid: String,
    pub account_name: String,
    pub domain_uuid: String,
    pub domain_name: String,
    /// Effective window of the record: first and last covered instant.
    pub start: i64,
    pub end: i64,
    /// Sizes of the latest period in the window, bytes.
    pub size: i64,
    pub protected_size: i64,
    /// Hours of the window covered by periods.
    pub hours: f64,
    /// Σ size × hours, in GiB-hours.
    pub size_gib_hours: f64,
    /// Σ protected size × hours, in GiB-hours.
    pub protected_gib_hours: f64,
}

/// Usage records of the pairs visible in `scope` for the window; open periods count up to
/// `now` (closed periods as recorded, even when their instants are later than `now`). One record per (instance, offering) with any overlap, ordered by instance and
/// offering, paged.
pub fn records(
    conn: &Connection,
    scope: &ListScope,
    q: &UsageQuery,
    now: i64,
    page: Page,
) -> OpResult<Listed<UsageRecord>> {
    let mut f = Filter::new();
    scope.apply(&mut f, "u.account_id", "u.domain_id");
    f.eq_opt("u.zone_id", q.zone_id);
    f.eq_opt("u.vm_id", q.vm_id);
    // Open periods count up to `now`; closed ones are facts whatever the clock says.
    let open_until = q.end.min(now);
    f.and(
        "u.start_date < ? AND (u.end_date IS NULL OR u.end_date > ?)",
        [q.end.into(), q.start.into()],
    );
    let where_sql = f.where_sql();
    let sql = format!(
        "SELECT u.vm_id, u.backup_offering_id, u.size, u.protected_size, u.start_date,
                u.end_date, v.uuid, v.name, o.uuid, o.name, z.uuid, a.uuid, a.name, d.uuid, d.name
         FROM backup_usage u
         JOIN vms v ON v.id = u.vm_id
         JOIN backup_offerings o ON o.id = u.backup_offering_id
         JOIN zones z ON z.id = u.zone_id
         JOIN accounts a ON a.id = u.account_id
         JOIN domains d ON d.id = u.domain_id
         {where_sql}
         ORDER BY u.vm_id, u.backup_offering_id, u.start_date, u.id"
    );
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query(crate::store::db::params_from_iter(f.values().iter()))?;
    let mut out: Vec<UsageRecord> = Vec::new();
    let mut last_key: Option<(i64, i64)> = None;
    while let Some(r) = rows.next()? {
        let key: (i64, i64) = (r.get(0)?, r.get(1)?);
        let size: i64 = r.get(2)?;
        let protected_size: i64 = r.get(3)?;
        let start: i64 = r.get(4)?;
        let end: Option<i64> = r.get(5)?;
        let from = start.max(q.start);
        let to = end.map_or(open_until, |e| e.min(q.end));
        if to <= from {
            continue;
        }
        let hours = (to - from) as f64 / SECONDS_PER_HOUR;
        if last_key != Some(key) {
            out.push(UsageRecord {
                vm_uuid: r.get(6)?,
                vm_name: r.get(7)?,
                offering_uuid: r.get(8)?,
                offering_name: r.get(9)?,
                zone_uuid: r.get(10)?,
                account_uuid: r.get(11)?,
                account_name: r.get(12)?,
                domain_uuid: r.get(13)?,
                domain_name: r.get(14)?,
                start: from,
                end: to,
                size: 0,
                protected_size: 0,
                hours: 0.0,
                size_gib_hours: 0.0,
                protected_gib_hours: 0.0,
            });
            last_key = Some(key);
        }
        if let Some(rec) = out.last_mut() {
            rec.start = rec.start.min(from);
            rec.end = rec.end.max(to);
            rec.size = size;
            rec.protected_size = protected_size;
            rec.hours += hours;
            rec.size_gib_hours += size as f64 / BYTES_PER_GIB * hours;
            rec.protected_gib_hours += protected_size as f64 / BYTES_PER_GIB * hours;
        }
    }
    let total = out.len() as u64;
    let items = match page.size {
        None => out,
        Some(size) => {
            let skip = page.page.saturating_sub(1).saturating_mul(size);
            out.into_iter()
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(usize::try_from(size).unwrap_or(usize::MAX))
                .collect()
        }
    };
    Ok(Listed { total, items })
}
