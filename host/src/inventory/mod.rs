//! The simulated cloud the B&R features act on: zones, offerings, templates, instances (VMs) and
//! volumes, with real state machines. There is no hypervisor: transitions complete immediately
//! inside the async job that drives them.

pub mod bootstrap;
pub mod guard;
pub mod kvm;
pub mod lifecycle;
pub mod vm;
pub mod vmware;
pub mod volume;

use crate::store::db::{Connection, OptionalExtension, Row, params};

use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpError, OpResult, new_uuid, now};

pub use guard::{ExpungeGuard, GuardFuture};
pub use vm::{DeployRequest, Vm, VmFilter, VmState, Volume, VolumeFilter};

#[derive(Debug, Clone)]
pub struct Zone {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub created: i64,
}

fn zone_from_row(r: &Row<'_>) -> crate::store::db::Result<Zone> {
    Ok(Zone {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        created: r.get(3)?,
    })
}

/// Longest name accepted for zones, offerings and templates.
pub const MAX_NAME_LEN: usize = 255;

fn check_name(what: &str, name: &str) -> OpResult<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN {
        return Err(OpError::InvalidParameter(format!(
            "{what} name must be between 1 and {MAX_NAME_LEN} characters"
        )));
    }
    Ok(())
}

pub fn create_zone(conn: &Connection, name: &str) -> OpResult<Zone> {
    check_name("Zone", name)?;
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM zones WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(OpError::InvalidState(format!(
            "A zone with name {name} already exists"
        )));
    }
    let inserted_id = conn.insert(
        "INSERT INTO zones(uuid, name, created) VALUES (?1, ?2, ?3)",
        params![new_uuid(), name, now()],
    )?;
    get_zone(conn, inserted_id)
}

pub fn get_zone(conn: &Connection, id: i64) -> OpResult<Zone> {
    Ok(conn
        .prepare_cached("SELECT id, uuid, name, created FROM zones WHERE id = ?1")?
        .query_row([id], zone_from_row)?)
}

pub fn zone_by_name(conn: &Connection, name: &str) -> OpResult<Option<Zone>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, uuid, name, created FROM zones WHERE name = ?1 AND removed IS NULL",
        )?
        .query_row([name], zone_from_row)
        .optional()?)
}

pub fn list_zones(
    conn: &Connection,
    id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<Zone>> {
    let mut f = Filter::new();
    f.and("removed IS NULL", []);
    f.eq_opt("id", id);
    f.eq_opt("name", name);
    f.keyword(&["name"], keyword);
    Ok(f.list(
        conn,
        "id, uuid, name, created",
        "zones",
        "id",
        page,
        zone_from_row,
    )?)
}

#[derive(Debug, Clone)]
pub struct ServiceOffering {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub display_text: String,
    pub cpu_number: i64,
    pub cpu_speed_mhz: i64,
    pub memory_mb: i64,
    pub created: i64,
}

pub fn create_service_offering(
    conn: &Connection,
    name: &str,
    display_text: &str,
    cpu_number: i64,
    cpu_speed_mhz: i64,
    memory_mb: i64,
) -> OpResult<ServiceOffering> {
    check_name("Service offering", name)?;
    let inserted_id = conn.insert(
        "INSERT INTO service_offerings(uuid, name, display_text, cpu_number, cpu_speed_mhz, memory_mb, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![new_uuid(), name, display_text, cpu_number, cpu_speed_mhz, memory_mb, now()],
    )?;
    Ok(
        list_service_offerings(conn, Some(inserted_id), None, None, Page::ALL)?
            .items
            .remove(0),
    )
}

pub fn list_service_offerings(
    conn: &Connection,
    id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<ServiceOffering>> {
    let mut f = Filter::new();
    f.and("removed IS NULL", []);
    f.eq_opt("id", id);
    f.eq_opt("name", name);
    f.keyword(&["name"], keyword);
    Ok(f.list(
        conn,
        "id, uuid, name, display_text, cpu_number, cpu_speed_mhz, memory_mb, created",
        "service_offerings",
        "id",
        page,
        |r| {
            Ok(ServiceOffering {
                id: r.get(0)?,
                uuid: r.get(1)?,
                name: r.get(2)?,
                display_text: r.get(3)?,
                cpu_number: r.get(4)?,
                cpu_speed_mhz: r.get(5)?,
                memory_mb: r.get(6)?,
                created: r.get(7)?,
            })
        },
    )?)
}

#[derive(Debug, Clone)]
pub struct DiskOffering {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub display_text: String,
    pub disk_size_bytes: i64,
    pub created: i64,
}

pub fn create_disk_offering(
    conn: &Connection,
    name: &str,
    display_text: &str,
    disk_size_bytes: i64,
) -> OpResult<DiskOffering> {
    check_name("Disk offering", name)?;
    let inserted_id = conn.insert(
        "INSERT INTO disk_offerings(uuid, name, display_text, disk_size_bytes, created)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new_uuid(), name, display_text, disk_size_bytes, now()],
    )?;
    Ok(
        list_disk_offerings(conn, Some(inserted_id), None, None, Page::ALL)?
            .items
            .remove(0),
    )
}

pub fn list_disk_offerings(
    conn: &Connection,
    id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<DiskOffering>> {
    let mut f = Filter::new();
    f.and("removed IS NULL", []);
    f.eq_opt("id", id);
    f.eq_opt("name", name);
    f.keyword(&["name"], keyword);
    Ok(f.list(
        conn,
        "id, uuid, name, display_text, disk_size_bytes, created",
        "disk_offerings",
        "id",
        page,
        |r| {
            Ok(DiskOffering {
                id: r.get(0)?,
                uuid: r.get(1)?,
                name: r.get(2)?,
                display_text: r.get(3)?,
                disk_size_bytes: r.get(4)?,
                created: r.get(5)?,
            })
        },
    )?)
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub display_text: String,
    pub zone: Option<(String, String)>,
    pub zone_id: Option<i64>,
    pub os_type_name: String,
    pub hypervisor: String,
    pub size_bytes: i64,
    pub created: i64,
}

pub struct NewTemplate<'a> {
    pub name: &'a str,
    pub display_text: &'a str,
    pub zone_id: Option<i64>,
    pub os_type_name: &'a str,
    pub hypervisor: &'a str,
    pub size_bytes: i64,
}

pub fn create_template(conn: &Connection, t: &NewTemplate<'_>) -> OpResult<Template> {
    check_name("Template", t.name)?;
    let inserted_id = conn.insert(
        "INSERT INTO templates(uuid, name, display_text, zone_id, os_type_name, hypervisor, size_bytes, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![new_uuid(), t.name, t.display_text, t.zone_id, t.os_type_name, t.hypervisor, t.size_bytes, now()],
    )?;
    Ok(
        list_templates(conn, Some(inserted_id), None, None, None, Page::ALL)?
            .items
            .remove(0),
    )
}

pub fn list_templates(
    conn: &Connection,
    id: Option<i64>,
    zone_id: Option<i64>,
    name: Option<&str>,
    keyword: Option<&str>,
    page: Page,
) -> OpResult<Listed<Template>> {
    let mut f = Filter::new();
    f.and("t.removed IS NULL", []);
    f.eq_opt("t.id", id);
    if let Some(z) = zone_id {
        f.and("(t.zone_id IS NULL OR t.zone_id = ?)", [z.into()]);
    }
    f.eq_opt("t.name", name);
    f.keyword(&["t.name"], keyword);
    Ok(f.list(
        conn,
        "t.id, t.uuid, t.name, t.display_text, z.uuid, z.name, t.os_type_name, t.hypervisor, t.size_bytes, t.created, t.zone_id",
        "templates t LEFT JOIN zones z ON z.id = t.zone_id",
        "t.id",
        page,
        |r| {
            let zone_uuid: Option<String> = r.get(4)?;
            let zone_name: Option<String> = r.get(5)?;
            Ok(Template {
                id: r.get(0)?,
                uuid: r.get(1)?,
                name: r.get(2)?,
                display_text: r.get(3)?,
                zone: zone_uuid.zip(zone_name),
                os_type_name: r.get(6)?,
                hypervisor: r.get(7)?,
                size_bytes: r.get(8)?,
                created: r.get(9)?,
                zone_id: r.get(10)?,
            })
        },
    )?)
}
