//! What the B&R service reads and returns: offerings, backups, schedules, VolumeInfo, and the
//! queries that load them (including soft-deleted rows where CloudStack does).

use std::collections::BTreeMap;

use crate::store::db::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::inventory::Volume;
use crate::store::OpResult;
use bnr_runtime::types;

/// Backup status values (spec §1.3) bnr writes.
pub mod status {
    pub const BACKING_UP: &str = "BackingUp";
    pub const BACKED_UP: &str = "BackedUp";
    pub const ERROR: &str = "Error";
}

/// Detail keys of `backup_details` (CloudStack's ApiConstants names).
pub mod detail {
    pub const SERVICE_OFFERING_ID: &str = "serviceofferingid";
    pub const TEMPLATE_ID: &str = "templateid";
    pub const HYPERVISOR: &str = "hypervisor";
    pub const OS_NAME: &str = "osname";
}

/// One backed-up volume (spec §1.4); the JSON keys are CloudStack's Gson names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: i64,
    pub path: String,
    #[serde(rename = "deviceId")]
    pub device_id: i64,
    #[serde(
        rename = "diskOfferingId",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub disk_offering_id: Option<String>,
    #[serde(rename = "minIops", skip_serializing_if = "Option::is_none", default)]
    pub min_iops: Option<i64>,
    #[serde(rename = "maxIops", skip_serializing_if = "Option::is_none", default)]
    pub max_iops: Option<i64>,
}

impl VolumeInfo {
    pub fn of(v: &Volume) -> VolumeInfo {
        VolumeInfo {
            uuid: v.uuid.clone(),
            kind: v.kind.clone(),
            size: v.size_bytes,
            path: v.path.clone(),
            device_id: v.device_id.unwrap_or(0),
            disk_offering_id: v.disk_offering.as_ref().map(|d| d.0.clone()),
            min_iops: None,
            max_iops: None,
        }
    }

    /// The JSON array CloudStack stores and returns (sorted by device id).
    pub fn to_json(list: &[VolumeInfo]) -> String {
        let mut sorted = list.to_vec();
        sorted.sort_by_key(|v| v.device_id);
        serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into())
    }

    /// Parses a stored list; a malformed one reads as empty (it was written by bnr).
    pub fn parse_list(json: &str) -> Vec<VolumeInfo> {
        serde_json::from_str(json).unwrap_or_default()
    }

    pub fn to_wit(&self, name: &str) -> types::Volume {
        types::Volume {
            uuid: self.uuid.clone(),
            name: name.to_string(),
            kind: if self.kind.eq_ignore_ascii_case("ROOT") {
                types::VolumeKind::Root
            } else {
                types::VolumeKind::Datadisk
            },
            size: u64::try_from(self.size).unwrap_or(0),
            path: self.path.clone(),
            device_id: u32::try_from(self.device_id).unwrap_or(0),
            disk_offering_id: self.disk_offering_id.clone(),
        }
    }
}

/// A backup offering (spec §1.1) with its zone.
#[derive(Debug, Clone)]
pub struct Offering {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub external_id: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    pub provider: String,
    pub user_driven: bool,
    pub created: i64,
    pub removed: Option<i64>,
    /// The provider's answer for this offering (not stored): cross-zone instance creation.
    pub cross_zone: bool,
}

pub(crate) const OFFERING_COLUMNS: &str = "o.id, o.uuid, o.name, o.description, o.external_id, \
     o.zone_id, z.uuid, z.name, o.provider, o.user_driven, o.created, o.removed";
pub(crate) const OFFERING_FROM: &str = "backup_offerings o JOIN zones z ON z.id = o.zone_id";

pub(crate) fn offering_from_row(r: &Row<'_>) -> crate::store::db::Result<Offering> {
    Ok(Offering {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        external_id: r.get(4)?,
        zone_id: r.get(5)?,
        zone_uuid: r.get(6)?,
        zone_name: r.get(7)?,
        provider: r.get(8)?,
        user_driven: r.get(9)?,
        created: r.get(10)?,
        removed: r.get(11)?,
        cross_zone: false,
    })
}

/// An offering by internal id, including removed ones.
pub(crate) fn get_offering(conn: &Connection, id: i64) -> OpResult<Option<Offering>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {OFFERING_COLUMNS} FROM {OFFERING_FROM} WHERE o.id = ?1"
        ))?
        .query_row([id], offering_from_row)
        .optional()?)
}

/// A backup as listed (spec §2.2 backup response fields).
#[derive(Debug, Clone)]
pub struct Backup {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub vm_id: Option<i64>,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub external_id: Option<String>,
    pub kind: String,
    pub date: i64,
    pub size: i64,
    pub protected_size: i64,
    pub status: String,
    pub status_reason: Option<String>,
    pub offering_id: i64,
    pub offering_uuid: String,
    pub offering_name: String,
    pub account_id: i64,
    pub account_uuid: String,
    pub account_name: String,
    pub domain_id: i64,
    pub domain_uuid: String,
    pub domain_name: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    /// VolumeInfo JSON, returned verbatim as the string field `volumes`.
    pub volumes: String,
    /// `MANUAL` or the producing schedule's interval type.
    pub interval_type: String,
    pub schedule_id: Option<i64>,
    /// The VM has no offering now, or another one.
    pub vm_offering_removed: bool,
    /// The VM row is gone, expunged or Expunging.
    pub vm_expunged: bool,
    pub removed: Option<i64>,
    /// `backup_details` with names resolved (only when asked for).
    pub details: Option<BTreeMap<String, String>>,
    /// Percent and message of the provider operation working on the backup, while one is
    /// pending and has reported progress (filled by listBackups).
    pub progress: Option<(i64, String)>,
}

impl Backup {
    pub fn volume_infos(&self) -> Vec<VolumeInfo> {
        VolumeInfo::parse_list(&self.volumes)
    }
}

pub(crate) const BACKUP_COLUMNS: &str = "b.id, b.uuid, b.name, b.description, b.vm_id, v.uuid, \
     v.name, b.external_id, b.type, b.date, b.size, b.protected_size, b.status, b.status_reason, \
     b.backup_offering_id, o.uuid, o.name, b.account_id, a.uuid, a.name, b.domain_id, d.uuid, \
     d.name, b.zone_id, z.uuid, z.name, b.backed_volumes, b.interval_type, b.backup_schedule_id, \
     v.backup_offering_id, v.state, v.removed, b.removed";
pub(crate) const BACKUP_FROM: &str = "backups b LEFT JOIN vms v ON v.id = b.vm_id \
     JOIN backup_offerings o ON o.id = b.backup_offering_id \
     JOIN accounts a ON a.id = b.account_id JOIN domains d ON d.id = b.domain_id \
     JOIN zones z ON z.id = b.zone_id";

pub(crate) fn backup_from_row(r: &Row<'_>) -> crate::store::db::Result<Backup> {
    let vm_id: Option<i64> = r.get(4)?;
    let offering_id: i64 = r.get(14)?;
    let vm_offering: Option<i64> = r.get(29)?;
    let vm_state: Option<String> = r.get(30)?;
    let vm_removed: Option<i64> = r.get(31)?;
    let vm_uuid: Option<String> = r.get(5)?;
    Ok(Backup {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        vm_id,
        vm_name: r.get(6)?,
        external_id: r.get(7)?,
        kind: r.get(8)?,
        date: r.get(9)?,
        size: r.get(10)?,
        protected_size: r.get(11)?,
        status: r.get(12)?,
        status_reason: r.get(13)?,
        offering_id,
        offering_uuid: r.get(15)?,
        offering_name: r.get(16)?,
        account_id: r.get(17)?,
        account_uuid: r.get(18)?,
        account_name: r.get(19)?,
        domain_id: r.get(20)?,
        domain_uuid: r.get(21)?,
        domain_name: r.get(22)?,
        zone_id: r.get(23)?,
        zone_uuid: r.get(24)?,
        zone_name: r.get(25)?,
        volumes: r.get(26)?,
        interval_type: r
            .get::<Option<String>>(27)?
            .unwrap_or_else(|| "MANUAL".into()),
        schedule_id: r.get(28)?,
        vm_offering_removed: vm_offering != Some(offering_id),
        vm_expunged: vm_uuid.is_none()
            || vm_removed.is_some()
            || vm_state.as_deref() == Some("Expunging"),
        vm_uuid,
        removed: r.get(32)?,
        details: None,
        progress: None,
    })
}

/// A backup by internal id, including removed ones.
pub(crate) fn get_backup(conn: &Connection, id: i64) -> OpResult<Option<Backup>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {BACKUP_COLUMNS} FROM {BACKUP_FROM} WHERE b.id = ?1"
        ))?
        .query_row([id], backup_from_row)
        .optional()?)
}

/// `backup_details` of one backup, with the names of the offering and template they point to
/// (what `listvmdetails=true` shows).
pub(crate) fn backup_details(
    conn: &Connection,
    backup_id: i64,
) -> OpResult<BTreeMap<String, String>> {
    let mut st =
        conn.prepare_cached("SELECT name, value FROM backup_details WHERE backup_id = ?1")?;
    let mut map: BTreeMap<String, String> = st
        .query_map([backup_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::store::db::Result<_>>()?;
    if let Some(so) = map.get(detail::SERVICE_OFFERING_ID).cloned()
        && let Some(name) = conn
            .prepare_cached("SELECT name FROM service_offerings WHERE uuid = ?1")?
            .query_row([so], |r| r.get::<String>(0))
            .optional()?
    {
        map.insert("serviceofferingname".into(), name);
    }
    if let Some(t) = map.get(detail::TEMPLATE_ID).cloned()
        && let Some(name) = conn
            .prepare_cached("SELECT name FROM templates WHERE uuid = ?1")?
            .query_row([t], |r| r.get::<String>(0))
            .optional()?
    {
        map.insert("templatename".into(), name);
        map.insert("isiso".into(), "false".into());
    }
    Ok(map)
}

/// A backup schedule (spec §1.5).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: i64,
    pub uuid: String,
    pub vm_id: i64,
    pub vm_uuid: String,
    pub vm_name: String,
    pub interval_type: String,
    pub schedule: String,
    pub timezone: String,
    pub next_run: i64,
    pub max_backups: i64,
    pub quiesce: Option<bool>,
    pub account_id: i64,
    pub domain_id: i64,
}

pub(crate) const SCHEDULE_COLUMNS: &str = "s.id, s.uuid, s.vm_id, v.uuid, v.name, s.interval_type, \
     s.schedule, s.timezone, s.next_run, s.max_backups, s.quiesce, s.account_id, s.domain_id";
pub(crate) const SCHEDULE_FROM: &str = "backup_schedules s JOIN vms v ON v.id = s.vm_id";

pub(crate) fn schedule_from_row(r: &Row<'_>) -> crate::store::db::Result<Schedule> {
    Ok(Schedule {
        id: r.get(0)?,
        uuid: r.get(1)?,
        vm_id: r.get(2)?,
        vm_uuid: r.get(3)?,
        vm_name: r.get(4)?,
        interval_type: r.get(5)?,
        schedule: r.get(6)?,
        timezone: r.get(7)?,
        next_run: r.get(8)?,
        max_backups: r.get(9)?,
        quiesce: r.get(10)?,
        account_id: r.get(11)?,
        domain_id: r.get(12)?,
    })
}

/// The B&R columns of a VM that the inventory's `Vm` does not carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct VmBackupFields {
    pub removed: Option<i64>,
    pub offering_id: Option<i64>,
    pub external_id: Option<String>,
    pub volumes: Option<String>,
}

pub(crate) fn vm_backup_fields(conn: &Connection, vm_id: i64) -> OpResult<VmBackupFields> {
    Ok(conn
        .prepare_cached(
            "SELECT removed, backup_offering_id, backup_external_id, backup_volumes FROM vms WHERE id = ?1",
        )?
        .query_row([vm_id], |r| {
            Ok(VmBackupFields {
                removed: r.get(0)?,
                offering_id: r.get(1)?,
                external_id: r.get(2)?,
                volumes: r.get(3)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}
