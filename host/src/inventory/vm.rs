//! Instances and their volumes, with the VM state machine.

use crate::store::db::{Connection, OptionalExtension, Row, params};

use crate::identity::{Caller, ListScope};
use crate::store::events::{self, NewEvent};
use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpError, OpResult, new_uuid, now};

/// Simulated hypervisor hosts per installation; VMs are placed round-robin on `10.0.0.1..=N`.
const SIMULATED_HOSTS: i64 = 8;
/// Longest VM host name (DNS label).
const MAX_HOSTNAME_LEN: usize = 63;
/// Longest display name.
const MAX_DISPLAY_NAME_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Destroyed,
    Expunging,
    Restoring,
    Error,
}

/// What happens to a VM; [`VmState::on`] gives the next state or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEvent {
    StartRequested,
    StopRequested,
    OperationSucceeded,
    OperationFailed,
    /// destroyVirtualMachine on a Stopped (or Error) VM; a Running VM is stopped first.
    DestroyRequested,
    /// recoverVirtualMachine.
    RecoveryRequested,
    /// expungeVirtualMachine / destroy with `expunge=true`.
    ExpungeOperation,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Starting => "Starting",
            VmState::Running => "Running",
            VmState::Stopping => "Stopping",
            VmState::Stopped => "Stopped",
            VmState::Destroyed => "Destroyed",
            VmState::Expunging => "Expunging",
            VmState::Restoring => "Restoring",
            VmState::Error => "Error",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        Some(match s {
            "Starting" => VmState::Starting,
            "Running" => VmState::Running,
            "Stopping" => VmState::Stopping,
            "Stopped" => VmState::Stopped,
            "Destroyed" => VmState::Destroyed,
            "Expunging" => VmState::Expunging,
            "Restoring" => VmState::Restoring,
            "Error" => VmState::Error,
            _ => return None,
        })
    }

    /// The transition table. `None` = the event is not allowed in this state.
    pub fn on(self, event: VmEvent) -> Option<VmState> {
        use VmEvent::*;
        use VmState::*;
        match (self, event) {
            (Stopped, StartRequested) => Some(Starting),
            (Starting, OperationSucceeded) => Some(Running),
            (Starting, OperationFailed) => Some(Stopped),
            (Running, StopRequested) => Some(Stopping),
            (Stopping, OperationSucceeded) => Some(Stopped),
            (Stopping, OperationFailed) => Some(Running),
            (Stopped | Error, DestroyRequested) => Some(Destroyed),
            (Destroyed, RecoveryRequested) => Some(Stopped),
            (Destroyed | Error | Expunging, ExpungeOperation) => Some(Expunging),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub display_name: String,
    pub internal_name: String,
    pub account_id: i64,
    pub account_name: String,
    pub account_uuid: String,
    pub domain_id: i64,
    pub domain_uuid: String,
    pub domain_name: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    pub service_offering_uuid: String,
    pub service_offering_name: String,
    pub cpu_number: i64,
    pub cpu_speed_mhz: i64,
    pub memory_mb: i64,
    pub template_uuid: String,
    pub template_name: String,
    pub hypervisor: String,
    pub host_address: Option<String>,
    /// The KVM host the instance runs on (set while it runs).
    pub host_id: Option<i64>,
    /// The KVM host it last ran on.
    pub last_host_id: Option<i64>,
    pub state: VmState,
    pub backup_offering_id: Option<i64>,
    /// (uuid, name) of the assigned backup offering, when the B&R tables exist and it is set.
    pub backup_offering: Option<(String, String)>,
    pub created: i64,
    /// Set when the VM was expunged (soft delete); such a VM is never listed.
    pub removed: Option<i64>,
}

const VM_COLUMNS: &str = "v.id, v.uuid, v.name, v.display_name, v.internal_name, a.id, a.name, a.uuid, \
     d.id, d.uuid, d.name, z.id, z.uuid, z.name, so.uuid, so.name, so.cpu_number, so.cpu_speed_mhz, \
     so.memory_mb, t.uuid, t.name, v.hypervisor, v.host_address, v.state, v.backup_offering_id, v.created, v.removed, v.host_id, v.last_host_id";
const VM_FROM: &str = "vms v JOIN accounts a ON a.id = v.account_id JOIN domains d ON d.id = v.domain_id \
     JOIN zones z ON z.id = v.zone_id JOIN service_offerings so ON so.id = v.service_offering_id \
     JOIN templates t ON t.id = v.template_id";

fn vm_from_row(r: &Row<'_>) -> crate::store::db::Result<Vm> {
    let state: String = r.get(23)?;
    Ok(Vm {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        display_name: r.get(3)?,
        internal_name: r.get(4)?,
        account_id: r.get(5)?,
        account_name: r.get(6)?,
        account_uuid: r.get(7)?,
        domain_id: r.get(8)?,
        domain_uuid: r.get(9)?,
        domain_name: r.get(10)?,
        zone_id: r.get(11)?,
        zone_uuid: r.get(12)?,
        zone_name: r.get(13)?,
        service_offering_uuid: r.get(14)?,
        service_offering_name: r.get(15)?,
        cpu_number: r.get(16)?,
        cpu_speed_mhz: r.get(17)?,
        memory_mb: r.get(18)?,
        template_uuid: r.get(19)?,
        template_name: r.get(20)?,
        hypervisor: r.get(21)?,
        host_address: r.get(22)?,
        state: VmState::parse(&state).unwrap_or(VmState::Error),
        backup_offering_id: r.get(24)?,
        backup_offering: None,
        created: r.get(25)?,
        removed: r.get(26)?,
        host_id: r.get(27)?,
        last_host_id: r.get(28)?,
    })
}

/// Fills `backup_offering` names when the B&R migration's `backup_offerings(id, uuid, name)`
/// table exists (it is added by a later migration; inventory must work without it).
fn decorate_backup_offerings(conn: &Connection, vms: &mut [Vm]) -> OpResult<()> {
    if vms.iter().all(|v| v.backup_offering_id.is_none()) {
        return Ok(());
    }
    let has_table: bool = conn
        .prepare_cached(match conn.dialect() {
            crate::store::Dialect::Sqlite => {
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'backup_offerings')"
            }
            crate::store::Dialect::Postgres => {
                "SELECT to_regclass('backup_offerings') IS NOT NULL"
            }
        })?
        .query_row([], |r| r.get(0))?;
    if !has_table {
        return Ok(());
    }
    let mut st = conn.prepare_cached("SELECT uuid, name FROM backup_offerings WHERE id = ?1")?;
    for vm in vms.iter_mut() {
        if let Some(id) = vm.backup_offering_id {
            vm.backup_offering = st
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
        }
    }
    Ok(())
}

pub fn get_vm(conn: &Connection, id: i64) -> OpResult<Vm> {
    let mut vm = conn
        .prepare_cached(&format!(
            "SELECT {VM_COLUMNS} FROM {VM_FROM} WHERE v.id = ?1"
        ))?
        .query_row([id], vm_from_row)
        .optional()?
        .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find VM with id {id}")))?;
    decorate_backup_offerings(conn, std::slice::from_mut(&mut vm))?;
    Ok(vm)
}

#[derive(Debug, Clone, Default)]
pub struct VmFilter {
    pub id: Option<i64>,
    pub zone_id: Option<i64>,
    pub name: Option<String>,
    /// A state name (any case), or `Present` for every state but Destroyed/Expunging.
    pub state: Option<String>,
    pub keyword: Option<String>,
    /// Leave Destroyed/Expunging VMs out (CloudStack hides them from end users unless
    /// `allow.user.view.destroyed.vm`).
    pub hide_destroyed: bool,
}

pub fn list_vms(
    conn: &Connection,
    scope: &ListScope,
    q: &VmFilter,
    page: Page,
) -> OpResult<Listed<Vm>> {
    let mut f = Filter::new();
    f.and("v.removed IS NULL", []);
    scope.apply(&mut f, "v.account_id", "v.domain_id");
    f.eq_opt("v.id", q.id);
    f.eq_opt("v.zone_id", q.zone_id);
    f.eq_opt("v.name", q.name.clone());
    match &q.state {
        Some(state) if state.eq_ignore_ascii_case("present") => {
            f.and("v.state NOT IN ('Destroyed', 'Expunging')", []);
        }
        Some(state) => {
            f.and("lower(v.state) = lower(?)", [state.clone().into()]);
        }
        None => {}
    }
    if q.hide_destroyed {
        f.and("v.state NOT IN ('Destroyed', 'Expunging')", []);
    }
    f.keyword(&["v.name", "v.display_name"], q.keyword.as_deref());
    let mut listed = f.list(conn, VM_COLUMNS, VM_FROM, "v.id", page, vm_from_row)?;
    decorate_backup_offerings(conn, &mut listed.items)?;
    Ok(listed)
}

/// What `deployVirtualMachine` asks for (ids already resolved and access-checked by the caller).
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub account_id: i64,
    pub domain_id: i64,
    pub zone_id: i64,
    pub service_offering_id: i64,
    pub template_id: i64,
    pub disk_offering_id: Option<i64>,
    pub start: bool,
}

/// A host name CloudStack accepts: 1–63 of `[a-zA-Z0-9-]`, not starting with a digit or `-`,
/// not ending with `-`.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Creates the VM (state `Starting` if it is to be started, else `Stopped`) with a Ready ROOT
/// volume sized from the template and an optional DATADISK, and records `VM.CREATE`.
pub fn deploy(conn: &Connection, caller: &Caller, req: &DeployRequest) -> OpResult<Vm> {
    let (template_zone, template_size, template_hypervisor): (Option<i64>, i64, String) = conn
        .prepare_cached(
            "SELECT zone_id, size_bytes, hypervisor FROM templates WHERE id = ?1 AND removed IS NULL",
        )?
        .query_row([req.template_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(|| OpError::InvalidParameter("Unable to use template: it was removed".into()))?;
    if template_zone.is_some_and(|z| z != req.zone_id) {
        return Err(OpError::InvalidParameter(
            "The template is not available in the specified zone".into(),
        ));
    }
    let data_size: Option<i64> = match req.disk_offering_id {
        None => None,
        Some(id) => Some(
            conn.prepare_cached(
                "SELECT disk_size_bytes FROM disk_offerings WHERE id = ?1 AND removed IS NULL",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| {
                OpError::InvalidParameter("Unable to use disk offering: it was removed".into())
            })?,
        ),
    };
    let uuid = new_uuid();
    let name = match &req.name {
        Some(n) => {
            if !is_valid_hostname(n) {
                return Err(OpError::InvalidParameter(
                    "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', \
                     and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" \
                     and can't start with digit"
                        .into(),
                ));
            }
            n.clone()
        }
        None => format!("VM-{uuid}"),
    };
    let display_name = req.display_name.clone().unwrap_or_else(|| name.clone());
    if display_name.len() > MAX_DISPLAY_NAME_LEN {
        return Err(OpError::InvalidParameter(format!(
            "Display name must be at most {MAX_DISPLAY_NAME_LEN} characters"
        )));
    }
    let taken: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM vms WHERE name = ?1 AND zone_id = ?2 AND account_id = ?3 AND removed IS NULL)",
        )?
        .query_row(params![name, req.zone_id, req.account_id], |r| r.get(0))?;
    if taken {
        return Err(OpError::InvalidState(format!(
            "The vm with hostname {name} already exists in the network domain of this account"
        )));
    }
    let state = if req.start {
        VmState::Starting
    } else {
        VmState::Stopped
    };
    // In a VMware zone the instance runs on VMware whatever the template says (bnr's templates
    // are hypervisor-neutral images).
    // In a KVM zone (one with a KVM cluster) it runs on KVM, on an up host when it starts.
    let kvm_zone = super::kvm::is_kvm_zone(conn, req.zone_id)?;
    let hypervisor = match super::vmware::of_zone(conn, req.zone_id)? {
        Some(_) => super::vmware::VMWARE.to_string(),
        None if kvm_zone => super::kvm::KVM.to_string(),
        None => template_hypervisor,
    };
    let kvm_host = if kvm_zone && req.start {
        Some(super::kvm::place(conn, req.zone_id)?.ok_or_else(|| {
            OpError::InvalidState(
                "Unable to create a deployment for the VM: no KVM host of the zone is Up".into(),
            )
        })?)
    } else {
        None
    };
    let ts = now();
    let inserted_id = conn.insert(
        "INSERT INTO vms(uuid, name, display_name, internal_name, account_id, domain_id, zone_id,
                         service_offering_id, template_id, hypervisor, state, created)
         VALUES (?1, ?2, ?3, '', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            uuid,
            name,
            display_name,
            req.account_id,
            req.domain_id,
            req.zone_id,
            req.service_offering_id,
            req.template_id,
            hypervisor,
            state.as_str(),
            ts
        ],
    )?;
    let id = inserted_id;
    let host = format!("10.0.0.{}", (id - 1).rem_euclid(SIMULATED_HOSTS) + 1);
    conn.prepare_cached("UPDATE vms SET internal_name = ?1, host_address = ?2 WHERE id = ?3")?
        .execute(params![format!("i-{}-{id}-VM", req.account_id), host, id])?;
    if kvm_zone {
        // A KVM instance has the address of its host, or none before it first starts.
        conn.prepare_cached("UPDATE vms SET host_address = NULL WHERE id = ?1")?
            .execute([id])?;
    }
    if let Some(kvm_host) = &kvm_host {
        super::kvm::assign_vm(conn, id, kvm_host)?;
    }
    insert_volume(
        conn,
        id,
        req,
        "ROOT",
        &format!("ROOT-{id}"),
        template_size,
        0,
        None,
        ts,
    )?;
    if let (Some(size), Some(offering)) = (data_size, req.disk_offering_id) {
        insert_volume(
            conn,
            id,
            req,
            "DATADISK",
            &format!("DATA-{id}"),
            size,
            1,
            Some(offering),
            ts,
        )?;
    }
    let description = format!("Successfully created VM {name}");
    events::record(
        conn,
        &NewEvent {
            account_id: req.account_id,
            domain_id: req.domain_id,
            ..NewEvent::completed(caller, "VM.CREATE", &description)
        }
        .resource("VirtualMachine", &uuid),
    )?;
    get_vm(conn, id)
}

#[allow(clippy::too_many_arguments)]
fn insert_volume(
    conn: &Connection,
    vm_id: i64,
    req: &DeployRequest,
    kind: &str,
    name: &str,
    size: i64,
    device_id: i64,
    disk_offering_id: Option<i64>,
    ts: i64,
) -> OpResult<()> {
    let uuid = new_uuid();
    conn.prepare_cached(
        "INSERT INTO volumes(uuid, name, vm_id, account_id, domain_id, zone_id, type, size_bytes, path,
                             device_id, disk_offering_id, state, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'Ready', ?12)",
    )?
    .execute(params![
        uuid,
        name,
        vm_id,
        req.account_id,
        req.domain_id,
        req.zone_id,
        kind,
        size,
        uuid,
        device_id,
        disk_offering_id,
        ts
    ])?;
    Ok(())
}

/// Applies `event` to the VM's current state; refuses a transition the table does not allow.
/// Returns the VM after the change.
pub fn transition(conn: &Connection, vm_id: i64, event: VmEvent) -> OpResult<Vm> {
    let vm = get_vm(conn, vm_id)?;
    let next = vm.state.on(event).ok_or_else(|| {
        OpError::InvalidState(format!(
            "Unable to {} VM {} in state {}",
            match event {
                VmEvent::StartRequested => "start",
                VmEvent::StopRequested => "stop",
                VmEvent::DestroyRequested => "destroy",
                VmEvent::RecoveryRequested => "recover",
                VmEvent::ExpungeOperation => "expunge",
                VmEvent::OperationSucceeded | VmEvent::OperationFailed => "complete operation on",
            },
            vm.name,
            vm.state.as_str()
        ))
    })?;
    if vm.hypervisor == super::kvm::KVM {
        place_kvm(conn, &vm, next)?;
    }
    let changed = conn
        .prepare_cached("UPDATE vms SET state = ?1 WHERE id = ?2 AND state = ?3")?
        .execute(params![next.as_str(), vm_id, vm.state.as_str()])?;
    if changed != 1 {
        return Err(OpError::InvalidState(format!(
            "VM {} changed state concurrently",
            vm.name
        )));
    }
    get_vm(conn, vm_id)
}

/// A KVM instance that starts goes to its last host if that is up, else to the least loaded
/// up host of the zone; one that stops or is destroyed leaves its host (keeping it as last host).
fn place_kvm(conn: &Connection, vm: &Vm, next: VmState) -> OpResult<()> {
    use super::kvm;
    match next {
        VmState::Starting if vm.host_id.is_none() => {
            let last = match vm.last_host_id {
                Some(id) => kvm::get_host(conn, id)
                    .ok()
                    .filter(|h| h.state == kvm::HostState::Up),
                None => None,
            };
            let host = match last {
                Some(host) => host,
                None => kvm::place(conn, vm.zone_id)?.ok_or_else(|| {
                    OpError::InvalidState(format!(
                        "Unable to start VM {}: no KVM host of the zone is Up",
                        vm.name
                    ))
                })?,
            };
            kvm::assign_vm(conn, vm.id, &host)
        }
        VmState::Stopped | VmState::Destroyed | VmState::Expunging | VmState::Error => {
            kvm::release_vm(conn, vm.id)
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub size_bytes: i64,
    pub path: String,
    pub device_id: Option<i64>,
    pub state: String,
    pub vm: Option<VolumeVm>,
    pub account_id: i64,
    pub account_name: String,
    pub domain_uuid: String,
    pub domain_name: String,
    pub zone_uuid: String,
    pub zone_name: String,
    pub disk_offering: Option<(String, String)>,
    pub created: i64,
    pub vm_id: Option<i64>,
    pub domain_id: i64,
    pub zone_id: i64,
    /// Set when the volume was expunged or deleted (soft delete); such a volume is never listed.
    pub removed: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct VolumeVm {
    pub uuid: String,
    pub name: String,
    pub display_name: String,
    pub state: String,
}

#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    pub id: Option<i64>,
    pub vm_id: Option<i64>,
    pub kind: Option<String>,
    pub zone_id: Option<i64>,
    pub keyword: Option<String>,
}

pub(crate) const VOLUME_COLUMNS: &str = "vol.id, vol.uuid, vol.name, vol.type, vol.size_bytes, vol.path, vol.device_id, \
     vol.state, v.uuid, v.name, v.display_name, v.state, a.id, a.name, d.uuid, d.name, z.uuid, z.name, \
     dof.uuid, dof.name, vol.created, vol.vm_id, vol.domain_id, vol.zone_id, vol.removed";
pub(crate) const VOLUME_FROM: &str = "volumes vol LEFT JOIN vms v ON v.id = vol.vm_id \
     JOIN accounts a ON a.id = vol.account_id JOIN domains d ON d.id = vol.domain_id \
     JOIN zones z ON z.id = vol.zone_id LEFT JOIN disk_offerings dof ON dof.id = vol.disk_offering_id";

pub(crate) fn volume_from_row(r: &Row<'_>) -> crate::store::db::Result<Volume> {
    let vm_uuid: Option<String> = r.get(8)?;
    let vm = match vm_uuid {
        Some(uuid) => Some(VolumeVm {
            uuid,
            name: r.get(9)?,
            display_name: r.get(10)?,
            state: r.get(11)?,
        }),
        None => None,
    };
    let dof_uuid: Option<String> = r.get(18)?;
    let dof_name: Option<String> = r.get(19)?;
    Ok(Volume {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        size_bytes: r.get(4)?,
        path: r.get(5)?,
        device_id: r.get(6)?,
        state: r.get(7)?,
        vm,
        account_id: r.get(12)?,
        account_name: r.get(13)?,
        domain_uuid: r.get(14)?,
        domain_name: r.get(15)?,
        zone_uuid: r.get(16)?,
        zone_name: r.get(17)?,
        disk_offering: dof_uuid.zip(dof_name),
        created: r.get(20)?,
        vm_id: r.get(21)?,
        domain_id: r.get(22)?,
        zone_id: r.get(23)?,
        removed: r.get(24)?,
    })
}

pub fn list_volumes(
    conn: &Connection,
    scope: &ListScope,
    q: &VolumeFilter,
    page: Page,
) -> OpResult<Listed<Volume>> {
    let mut f = Filter::new();
    f.and("vol.removed IS NULL", []);
    scope.apply(&mut f, "vol.account_id", "vol.domain_id");
    f.eq_opt("vol.id", q.id);
    f.eq_opt("vol.vm_id", q.vm_id);
    f.eq_opt("vol.zone_id", q.zone_id);
    if let Some(kind) = &q.kind {
        f.and("vol.type = upper(?)", [kind.clone().into()]);
    }
    f.keyword(&["vol.name"], q.keyword.as_deref());
    Ok(f.list(
        conn,
        VOLUME_COLUMNS,
        VOLUME_FROM,
        "vol.id",
        page,
        volume_from_row,
    )?)
}

/// The VM's live volumes ordered by device id (ROOT first).
pub fn volumes_of_vm(conn: &Connection, vm_id: i64) -> OpResult<Vec<Volume>> {
    let q = VolumeFilter {
        vm_id: Some(vm_id),
        ..Default::default()
    };
    let mut v = list_volumes(conn, &ListScope::All, &q, Page::ALL)?.items;
    v.sort_by_key(|vol| vol.device_id.unwrap_or(i64::MAX));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_stop_follow_the_state_table() {
        use VmEvent::*;
        use VmState::*;
        assert_eq!(Stopped.on(StartRequested), Some(Starting));
        assert_eq!(Starting.on(OperationSucceeded), Some(Running));
        assert_eq!(Running.on(StopRequested), Some(Stopping));
        assert_eq!(Stopping.on(OperationSucceeded), Some(Stopped));
        assert_eq!(Running.on(StartRequested), None);
        assert_eq!(Destroyed.on(StartRequested), None);
        assert_eq!(Stopped.on(StopRequested), None);
    }

    #[test]
    fn destroy_recover_and_expunge_follow_the_state_table() {
        use VmEvent::*;
        use VmState::*;
        assert_eq!(Stopped.on(DestroyRequested), Some(Destroyed));
        assert_eq!(Error.on(DestroyRequested), Some(Destroyed));
        assert_eq!(Running.on(DestroyRequested), None, "stopped first");
        assert_eq!(Destroyed.on(RecoveryRequested), Some(Stopped));
        assert_eq!(Stopped.on(RecoveryRequested), None);
        assert_eq!(Destroyed.on(ExpungeOperation), Some(Expunging));
        assert_eq!(Error.on(ExpungeOperation), Some(Expunging));
        assert_eq!(Stopped.on(ExpungeOperation), None);
        assert_eq!(Running.on(ExpungeOperation), None);
        assert_eq!(Expunging.on(RecoveryRequested), None);
    }

    #[test]
    fn hostnames_are_validated_like_cloudstack() {
        assert!(is_valid_hostname("web-01"));
        assert!(!is_valid_hostname("1web"));
        assert!(!is_valid_hostname("-web"));
        assert!(!is_valid_hostname("web-"));
        assert!(!is_valid_hostname("web_01"));
        assert!(!is_valid_hostname(&"a".repeat(64)));
    }
}
