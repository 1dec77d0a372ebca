//! VMware datacenters (CloudStack's `addVmwareDc`): a zone with one is a VMware zone. Instances
//! deployed there run on VMware; their internal names (`i-<account>-<id>-VM`) are the names
//! vCenter and backup products look them up by, and the vCenter host name is what a backup
//! product's inventory root (Veeam's hierarchy root) is matched against.

use crate::store::db::{Connection, OptionalExtension, Row, params};

use crate::store::{OpError, OpResult, new_uuid, now};

/// The hypervisor name instances in a VMware zone carry.
pub const VMWARE: &str = "VMware";

#[derive(Debug, Clone)]
pub struct VmwareDc {
    pub id: i64,
    pub uuid: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    /// Datacenter name in vCenter.
    pub name: String,
    /// vCenter host name as registered.
    pub vcenter: String,
    pub username: String,
}

const COLUMNS: &str = "d.id, d.uuid, d.zone_id, z.uuid, d.name, d.vcenter, d.username";

fn from_row(r: &Row<'_>) -> crate::store::db::Result<VmwareDc> {
    Ok(VmwareDc {
        id: r.get(0)?,
        uuid: r.get(1)?,
        zone_id: r.get(2)?,
        zone_uuid: r.get(3)?,
        name: r.get(4)?,
        vcenter: r.get(5)?,
        username: r.get(6)?,
    })
}

/// A host name or address: letters, digits, `.`, `-`, `:` (IPv6), at most 253 characters.
fn check_vcenter(vcenter: &str) -> OpResult<()> {
    let ok = !vcenter.is_empty()
        && vcenter.len() <= 253
        && vcenter
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OpError::InvalidParameter(format!(
            "vcenter must be a host name or address, not '{vcenter}'"
        )))
    }
}

fn check_text(what: &str, value: &str) -> OpResult<()> {
    if value.trim().is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(OpError::InvalidParameter(format!(
            "{what} must be between 1 and 255 printable characters"
        )));
    }
    Ok(())
}

/// Associates a VMware datacenter with a zone (one per zone).
pub fn add(
    conn: &Connection,
    zone_id: i64,
    name: &str,
    vcenter: &str,
    username: &str,
) -> OpResult<VmwareDc> {
    check_text("name", name)?;
    check_vcenter(vcenter)?;
    check_text("username", username)?;
    if of_zone(conn, zone_id)?.is_some() {
        return Err(OpError::InvalidState(
            "The zone is already associated with a VMware datacenter".into(),
        ));
    }
    conn.prepare_cached(
        "INSERT INTO vmware_datacenters(uuid, zone_id, name, vcenter, username, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        new_uuid(),
        zone_id,
        name.trim(),
        vcenter,
        username,
        now()
    ])?;
    of_zone(conn, zone_id)?
        .ok_or_else(|| OpError::InvalidState("The datacenter was not recorded".into()))
}

/// The zone's VMware datacenter, if it has one.
pub fn of_zone(conn: &Connection, zone_id: i64) -> OpResult<Option<VmwareDc>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM vmware_datacenters d JOIN zones z ON z.id = d.zone_id WHERE d.zone_id = ?1"
        ))?
        .query_row([zone_id], from_row)
        .optional()?)
}

/// Dissociates the zone's datacenter; refused while VMware instances live in the zone.
pub fn remove(conn: &Connection, zone_id: i64) -> OpResult<()> {
    if of_zone(conn, zone_id)?.is_none() {
        return Err(OpError::InvalidParameter(
            "The zone is not associated with a VMware datacenter".into(),
        ));
    }
    let live: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM vms WHERE zone_id = ?1 AND hypervisor = ?2 AND removed IS NULL",
        )?
        .query_row(params![zone_id, VMWARE], |r| r.get(0))?;
    if live > 0 {
        return Err(OpError::InvalidState(format!(
            "The zone still has {live} VMware instances"
        )));
    }
    conn.prepare_cached("DELETE FROM vmware_datacenters WHERE zone_id = ?1")?
        .execute([zone_id])?;
    Ok(())
}
