//! Volumes on their own: create, attach, detach, delete (CloudStack's `VolumeApiServiceImpl`
//! rules and texts), plus the B&R attach/detach guard (spec §3.9).
//!
//! Volume states used: `Allocated` (created, not yet on primary storage) → `Ready` (on first
//! attach; a ROOT volume is created Ready) → `Destroy` (ROOT of a destroyed VM) → `Expunged`
//! (soft-deleted with `removed`).

use crate::store::db::{Connection, OptionalExtension, params};

use super::vm::{self, VOLUME_COLUMNS, VOLUME_FROM, Vm, VmState, Volume, volume_from_row};
use crate::config::BACKUP_ATTACH_DETACH_VOLUMES;
use crate::identity::Caller;
use crate::store::events::{self, NewEvent};
use crate::store::{OpError, OpResult, new_uuid, now};

/// Data disks a VM may have: CloudStack's default `max_data_volumes_limit` for a hypervisor.
pub const MAX_DATA_VOLUMES: i64 = 6;
/// Highest device id: data disks + ROOT (0) + the CD-ROM slot (3) - 1, as CloudStack counts.
pub const MAX_DEVICE_ID: i64 = MAX_DATA_VOLUMES + 1;
/// Device id CloudStack keeps for the CD-ROM; never given to a volume.
const CDROM_DEVICE_ID: i64 = 3;
/// Sizes accepted for a volume created without an offering, in GiB (CloudStack's
/// `custom.diskoffering.size.min` / `custom.diskoffering.size.max` defaults).
pub const MIN_CUSTOM_SIZE_GB: i64 = 1;
pub const MAX_CUSTOM_SIZE_GB: i64 = 1024;
/// Longest volume name.
pub const MAX_VOLUME_NAME_LEN: usize = 255;

/// The volume with `id`, including a soft-deleted one (check `removed`).
pub fn get_volume(conn: &Connection, id: i64) -> OpResult<Volume> {
    conn.prepare_cached(&format!(
        "SELECT {VOLUME_COLUMNS} FROM {VOLUME_FROM} WHERE vol.id = ?1"
    ))?
    .query_row([id], volume_from_row)
    .optional()?
    .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find volume with ID: {id}")))
}

/// The live volume at `device_id` of the VM, if any.
pub fn volume_at_device(conn: &Connection, vm_id: i64, device_id: i64) -> OpResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM volumes WHERE vm_id = ?1 AND device_id = ?2 AND removed IS NULL",
        )?
        .query_row([vm_id, device_id], |r| r.get(0))
        .optional()?)
}

fn live(vol: Volume) -> OpResult<Volume> {
    if vol.removed.is_some() {
        return Err(OpError::InvalidParameter(format!(
            "Unable to find volume with ID: {}",
            vol.uuid
        )));
    }
    Ok(vol)
}

fn record_volume_event(
    conn: &Connection,
    caller: &Caller,
    vol: &Volume,
    event_type: &str,
    description: &str,
) -> OpResult<()> {
    events::record(
        conn,
        &NewEvent {
            account_id: vol.account_id,
            domain_id: vol.domain_id,
            ..NewEvent::completed(caller, event_type, description)
        }
        .resource("Volume", &vol.uuid),
    )?;
    Ok(())
}

/// What `createVolume` asks for (ids resolved, owner decided and access-checked by the caller).
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub name: Option<String>,
    pub account_id: i64,
    pub domain_id: i64,
    pub zone_id: i64,
    pub disk_offering_id: Option<i64>,
    /// Size in GiB when no disk offering is given.
    pub size_gb: Option<i64>,
}

/// Creates an `Allocated` DATADISK attached to nothing; records `VOLUME.CREATE`.
pub fn create(conn: &Connection, caller: &Caller, req: &NewVolume) -> OpResult<Volume> {
    let zone_live: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM zones WHERE id = ?1 AND removed IS NULL)")?
        .query_row([req.zone_id], |r| r.get(0))?;
    if !zone_live {
        return Err(OpError::InvalidParameter(
            "Unable to create volume: the zone was removed".into(),
        ));
    }
    let size_bytes = match (req.disk_offering_id, req.size_gb) {
        (Some(offering), _) => conn
            .prepare_cached(
                "SELECT disk_size_bytes FROM disk_offerings WHERE id = ?1 AND removed IS NULL",
            )?
            .query_row([offering], |r| r.get::<i64>(0))
            .optional()?
            .ok_or_else(|| {
                OpError::InvalidParameter("Unable to use disk offering: it was removed".into())
            })?,
        (None, Some(gb)) => {
            if !(MIN_CUSTOM_SIZE_GB..=MAX_CUSTOM_SIZE_GB).contains(&gb) {
                return Err(OpError::InvalidParameter(format!(
                    "Invalid size for custom volume creation: {gb}, the size must be between \
                     {MIN_CUSTOM_SIZE_GB} and {MAX_CUSTOM_SIZE_GB} GB"
                )));
            }
            gb << 30
        }
        (None, None) => {
            return Err(OpError::InvalidParameter(
                "At least one of disk Offering ID or size must be passed whilst creating volume"
                    .into(),
            ));
        }
    };
    if let Some(name) = &req.name
        && (name.trim().is_empty() || name.len() > MAX_VOLUME_NAME_LEN)
    {
        return Err(OpError::InvalidParameter(format!(
            "Volume name must be between 1 and {MAX_VOLUME_NAME_LEN} characters"
        )));
    }
    let uuid = new_uuid();
    let inserted_id = conn.insert(
        "INSERT INTO volumes(uuid, name, vm_id, account_id, domain_id, zone_id, type, size_bytes, path,
                             device_id, disk_offering_id, state, created)
         VALUES (?1, ?2, NULL, ?3, ?4, ?5, 'DATADISK', ?6, '', NULL, ?7, 'Allocated', ?8)", params![
        uuid,
        req.name.as_deref().unwrap_or(""),
        req.account_id,
        req.domain_id,
        req.zone_id,
        size_bytes,
        req.disk_offering_id,
        now()
    ])?;
    let id = inserted_id;
    if req.name.is_none() {
        conn.prepare_cached("UPDATE volumes SET name = ?1 WHERE id = ?2")?
            .execute(params![format!("DATA-{id}"), id])?;
    }
    let vol = get_volume(conn, id)?;
    record_volume_event(
        conn,
        caller,
        &vol,
        "VOLUME.CREATE",
        &format!("Successfully created volume {}", vol.name),
    )?;
    Ok(vol)
}

/// Whether the VM "has backups" for the attach/detach guard: a backup offering and a non-empty
/// recorded volume list (`vms.backup_volumes`). An unreadable list counts as non-empty (deny).
pub fn vm_has_backup_volumes(conn: &Connection, vm_id: i64) -> OpResult<bool> {
    let (offering, volumes): (Option<i64>, Option<String>) = conn
        .prepare_cached("SELECT backup_offering_id, backup_volumes FROM vms WHERE id = ?1")?
        .query_row([vm_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if offering.is_none() {
        return Ok(false);
    }
    let Some(volumes) = volumes else {
        return Ok(false);
    };
    if volumes.trim().is_empty() {
        return Ok(false);
    }
    Ok(
        match serde_json::from_str::<Vec<serde_json::Value>>(&volumes) {
            Ok(list) => !list.is_empty(),
            Err(_) => true,
        },
    )
}

/// The spec §3.9 guard; `attach_detach_allowed` is `backup.enable.attach.detach.of.volumes`.
fn check_backup_guard(
    conn: &Connection,
    vm_id: i64,
    attach: bool,
    attach_detach_allowed: bool,
) -> OpResult<()> {
    if attach_detach_allowed || !vm_has_backup_volumes(conn, vm_id)? {
        return Ok(());
    }
    Err(OpError::InvalidParameter(if attach {
        format!(
            "Unable to attach volume, please specify a VM that does not have any backups or set \
             the global configuration '{BACKUP_ATTACH_DETACH_VOLUMES}' to true."
        )
    } else {
        format!(
            "Unable to detach volume, cannot detach volume from a VM that has backups. First \
             remove the VM from the backup offering or set the global configuration \
             '{BACKUP_ATTACH_DETACH_VOLUMES}' to true."
        )
    }))
}

/// The device id a new data disk gets: `requested` after checks, else the lowest free one.
fn pick_device_id(conn: &Connection, vm: &Vm, requested: Option<i64>) -> OpResult<i64> {
    let used: Vec<i64> = conn
        .prepare_cached(
            "SELECT device_id FROM volumes
             WHERE vm_id = ?1 AND removed IS NULL AND device_id IS NOT NULL",
        )?
        .query_map([vm.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    match requested {
        Some(0) => Err(OpError::InvalidParameter(
            "Vm already has root volume attached to it".into(),
        )),
        Some(d) if !(0..=MAX_DEVICE_ID).contains(&d) || d == CDROM_DEVICE_ID => Err(
            OpError::InvalidState(format!("deviceId should be 1,2,4-{MAX_DEVICE_ID}")),
        ),
        Some(d) if used.contains(&d) => Err(OpError::InvalidState(format!(
            "deviceId {d} is used by vm {}",
            vm.uuid
        ))),
        Some(d) => Ok(d),
        None => (1..=MAX_DEVICE_ID)
            .find(|d| *d != CDROM_DEVICE_ID && !used.contains(d))
            .ok_or_else(|| {
                OpError::InvalidState(format!("All device Ids are used by vm {}", vm.uuid))
            }),
    }
}

/// Attaches a DATADISK to a Running or Stopped VM of the same zone; an `Allocated` volume
/// becomes `Ready`. Records `VOLUME.ATTACH`. Access to both is checked by the caller.
pub fn attach(
    conn: &Connection,
    caller: &Caller,
    volume_id: i64,
    vm_id: i64,
    device_id: Option<i64>,
    attach_detach_allowed: bool,
) -> OpResult<Volume> {
    let vol = live(get_volume(conn, volume_id)?)?;
    if vol.kind != "DATADISK" {
        return Err(OpError::InvalidParameter(
            "Please specify a volume with the valid type: DATADISK".into(),
        ));
    }
    if vol.vm_id.is_some() {
        return Err(OpError::InvalidParameter(
            "Please specify a volume that is not attached to any VM.".into(),
        ));
    }
    if vol.state == "Destroy" {
        return Err(OpError::InvalidParameter(
            "Please specify a volume that is not destroyed.".into(),
        ));
    }
    if vol.state != "Allocated" && vol.state != "Ready" {
        return Err(OpError::InvalidParameter(
            "Volume state must be in Allocated, Ready or in Uploaded state".into(),
        ));
    }
    let vm = vm::get_vm(conn, vm_id)?;
    if vm.removed.is_some() {
        return Err(OpError::InvalidParameter(
            "Please specify a valid User VM.".into(),
        ));
    }
    if vm.state != VmState::Running && vm.state != VmState::Stopped {
        return Err(OpError::InvalidParameter(
            "Please specify a VM that is either running or stopped.".into(),
        ));
    }
    crate::identity::check_same_owner(
        ("the volume", vol.account_id),
        ("the virtual machine", vm.account_id),
    )?;
    if vm.zone_id != vol.zone_id {
        return Err(OpError::InvalidParameter(
            "Please specify a VM that is in the same zone as the volume.".into(),
        ));
    }
    if device_id != Some(0) {
        let data_disks: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM volumes WHERE vm_id = ?1 AND type = 'DATADISK' AND removed IS NULL",
            )?
            .query_row([vm_id], |r| r.get(0))?;
        if data_disks >= MAX_DATA_VOLUMES {
            return Err(OpError::InvalidParameter(format!(
                "The specified VM already has the maximum number of data disks \
                 ({MAX_DATA_VOLUMES}) attached. Please specify another VM."
            )));
        }
    }
    check_backup_guard(conn, vm_id, true, attach_detach_allowed)?;
    let device = pick_device_id(conn, &vm, device_id)?;
    let changed = conn
        .prepare_cached(
            "UPDATE volumes SET vm_id = ?1, device_id = ?2, state = 'Ready',
                    path = CASE WHEN path = '' THEN uuid ELSE path END
             WHERE id = ?3 AND vm_id IS NULL AND removed IS NULL",
        )?
        .execute(params![vm_id, device, volume_id])?;
    if changed != 1 {
        return Err(OpError::InvalidState(format!(
            "Volume {} changed concurrently",
            vol.name
        )));
    }
    let vol = get_volume(conn, volume_id)?;
    record_volume_event(
        conn,
        caller,
        &vol,
        "VOLUME.ATTACH",
        &format!(
            "Successfully attached volume {} to VM {}",
            vol.name, vm.name
        ),
    )?;
    Ok(vol)
}

/// Detaches a DATADISK from its (Running, Stopped or Destroyed) VM; records `VOLUME.DETACH`.
/// Access to the volume is checked by the caller.
pub fn detach(
    conn: &Connection,
    caller: &Caller,
    volume_id: i64,
    attach_detach_allowed: bool,
) -> OpResult<Volume> {
    let vol = live(get_volume(conn, volume_id)?)?;
    let Some(vm_id) = vol.vm_id else {
        return Err(OpError::InvalidParameter(
            "The specified volume is not attached to a VM.".into(),
        ));
    };
    let vm = vm::get_vm(conn, vm_id)?;
    if !matches!(
        vm.state,
        VmState::Running | VmState::Stopped | VmState::Destroyed
    ) {
        return Err(OpError::InvalidParameter(
            "Please specify a VM that is either running or stopped.".into(),
        ));
    }
    if vol.kind != "DATADISK" {
        return Err(OpError::InvalidParameter(
            "Please specify volume of type DATADISK; detaching the ROOT volume is not supported"
                .into(),
        ));
    }
    check_backup_guard(conn, vm_id, false, attach_detach_allowed)?;
    detach_row(conn, caller, &vol, &vm)
}

fn detach_row(conn: &Connection, caller: &Caller, vol: &Volume, vm: &Vm) -> OpResult<Volume> {
    let changed = conn
        .prepare_cached(
            "UPDATE volumes SET vm_id = NULL, device_id = NULL
             WHERE id = ?1 AND vm_id = ?2 AND removed IS NULL",
        )?
        .execute(params![vol.id, vm.id])?;
    if changed != 1 {
        return Err(OpError::InvalidState(format!(
            "Volume {} changed concurrently",
            vol.name
        )));
    }
    let detached = get_volume(conn, vol.id)?;
    record_volume_event(
        conn,
        caller,
        &detached,
        "VOLUME.DETACH",
        &format!(
            "Successfully detached volume {} from VM {}",
            vol.name, vm.name
        ),
    )?;
    Ok(detached)
}

/// Detaches every DATADISK of the VM without the B&R guard (CloudStack does this while
/// destroying or expunging a VM).
pub(crate) fn detach_all_data_disks(conn: &Connection, caller: &Caller, vm: &Vm) -> OpResult<()> {
    for vol in vm::volumes_of_vm(conn, vm.id)? {
        if vol.kind == "DATADISK" {
            detach_row(conn, caller, &vol, vm)?;
        }
    }
    Ok(())
}

/// Deletes a volume attached to nothing (`Allocated`, `Ready` or `Destroy`): it becomes
/// `Expunged` and soft-deleted. Records `VOLUME.DELETE`. Access is checked by the caller.
pub fn delete(conn: &Connection, caller: &Caller, volume_id: i64) -> OpResult<()> {
    let vol = live(get_volume(conn, volume_id)?)?;
    if vol.vm_id.is_some() {
        return Err(OpError::InvalidParameter(
            "Please specify a volume that is not attached to any VM.".into(),
        ));
    }
    if !matches!(vol.state.as_str(), "Allocated" | "Ready" | "Destroy") {
        return Err(OpError::InvalidState(format!(
            "Unable to delete volume {} in state {}",
            vol.name, vol.state
        )));
    }
    conn.prepare_cached(
        "UPDATE volumes SET state = 'Expunged', removed = ?2 WHERE id = ?1 AND removed IS NULL",
    )?
    .execute(params![volume_id, now()])?;
    record_volume_event(
        conn,
        caller,
        &vol,
        "VOLUME.DELETE",
        &format!("Successfully deleted volume {}", vol.name),
    )?;
    Ok(())
}
