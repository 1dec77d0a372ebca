//! The `events` table: a writer any layer calls inside its own transaction, and the list query.

use crate::store::db::{Connection, Row, params};

use crate::identity::{Caller, ListScope};
use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpResult, new_uuid, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Scheduled,
    Started,
    Completed,
    Created,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "Scheduled",
            State::Started => "Started",
            State::Completed => "Completed",
            State::Created => "Created",
        }
    }
}

/// An event to record. `event_type` uses CloudStack's names (`VM.CREATE`, `BACKUP.CREATE`, …).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub event_type: &'a str,
    pub level: Level,
    pub state: State,
    pub description: &'a str,
    pub account_id: i64,
    pub domain_id: i64,
    pub user_id: Option<i64>,
    pub resource_type: Option<&'a str>,
    pub resource_uuid: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    /// A completed INFO event on behalf of `caller`.
    pub fn completed(caller: &Caller, event_type: &'a str, description: &'a str) -> Self {
        NewEvent {
            event_type,
            level: Level::Info,
            state: State::Completed,
            description,
            account_id: caller.account_id,
            domain_id: caller.domain_id,
            user_id: Some(caller.user_id),
            resource_type: None,
            resource_uuid: None,
        }
    }

    pub fn resource(mut self, resource_type: &'a str, resource_uuid: &'a str) -> Self {
        self.resource_type = Some(resource_type);
        self.resource_uuid = Some(resource_uuid);
        self
    }

    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

/// Appends an event; call it inside the transaction that makes the change it describes.
pub fn record(conn: &Connection, e: &NewEvent<'_>) -> OpResult<String> {
    insert(conn, e, None)
}

/// [`record`] for an event about work of backup provider `provider` (its failures are grouped
/// by provider).
pub fn record_for_provider(
    conn: &Connection,
    e: &NewEvent<'_>,
    provider: &str,
) -> OpResult<String> {
    insert(conn, e, Some(provider))
}

fn insert(conn: &Connection, e: &NewEvent<'_>, provider: Option<&str>) -> OpResult<String> {
    let uuid = new_uuid();
    conn.prepare_cached(
        "INSERT INTO events(uuid, type, level, state, description, account_id, domain_id, user_id,
                            resource_type, resource_uuid, created, provider)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        uuid,
        e.event_type,
        e.level.as_str(),
        e.state.as_str(),
        e.description,
        e.account_id,
        e.domain_id,
        e.user_id,
        e.resource_type,
        e.resource_uuid,
        now(),
        provider
    ])?;
    Ok(uuid)
}

#[derive(Debug, Clone)]
pub struct Event {
    pub uuid: String,
    pub event_type: String,
    pub level: String,
    pub state: String,
    pub description: String,
    pub account_name: String,
    pub domain_uuid: String,
    pub domain_name: String,
    pub username: Option<String>,
    pub resource_type: Option<String>,
    pub resource_uuid: Option<String>,
    pub created: i64,
    /// The backup provider whose work the event reports, if any.
    pub provider: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub id: Option<i64>,
    pub event_type: Option<String>,
    pub level: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub keyword: Option<String>,
}

pub fn list(
    conn: &Connection,
    scope: &ListScope,
    q: &EventFilter,
    page: Page,
) -> OpResult<Listed<Event>> {
    let mut f = Filter::new();
    scope.apply(&mut f, "e.account_id", "e.domain_id");
    f.eq_opt("e.id", q.id);
    f.eq_opt("e.type", q.event_type.clone());
    f.eq_opt("e.level", q.level.clone());
    if let Some(start) = q.start {
        f.and("e.created >= ?", [start.into()]);
    }
    if let Some(end) = q.end {
        f.and("e.created <= ?", [end.into()]);
    }
    f.keyword(&["e.type", "e.description"], q.keyword.as_deref());
    Ok(f.list(
        conn,
        "e.uuid, e.type, e.level, e.state, e.description, a.name, d.uuid, d.name, u.username, \
         e.resource_type, e.resource_uuid, e.created, e.provider",
        "events e JOIN accounts a ON a.id = e.account_id JOIN domains d ON d.id = e.domain_id \
         LEFT JOIN users u ON u.id = e.user_id",
        "e.id DESC",
        page,
        event_from_row,
    )?)
}

fn event_from_row(r: &Row<'_>) -> crate::store::db::Result<Event> {
    Ok(Event {
        uuid: r.get(0)?,
        event_type: r.get(1)?,
        level: r.get(2)?,
        state: r.get(3)?,
        description: r.get(4)?,
        account_name: r.get(5)?,
        domain_uuid: r.get(6)?,
        domain_name: r.get(7)?,
        username: r.get(8)?,
        resource_type: r.get(9)?,
        resource_uuid: r.get(10)?,
        created: r.get(11)?,
        provider: r.get(12)?,
    })
}
