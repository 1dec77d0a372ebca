//! Destroy, recover and expunge of instances (CloudStack's `UserVmManagerImpl` rules, simulated:
//! every step completes inside the caller's transaction).
//!
//! * destroy: a Running VM is stopped first; DATADISK volumes are detached (they survive the VM,
//!   as in CloudStack), the ROOT volume goes to `Destroy`; the VM becomes `Destroyed`.
//! * recover: `Destroyed` → `Stopped`, the ROOT volume back to `Ready`.
//! * expunge: `Destroyed`/`Error` → `Expunging` and the row is soft-deleted (`removed`); the ROOT
//!   volume becomes `Expunged` and is soft-deleted; any volume still attached is detached.
//!
//! The B&R expunge guard ([`super::ExpungeGuard`]) is async and runs before these, in the API
//! layer's job; these functions only apply the state machine.

use crate::store::db::{Connection, params};

use super::vm::{self, Vm, VmEvent, VmState};
use crate::identity::Caller;
use crate::store::events::{self, NewEvent};
use crate::store::{OpError, OpResult, now};

/// 431 for a VM that was expunged: CloudStack treats removed rows as missing.
fn not_found(vm: &Vm) -> OpError {
    OpError::InvalidParameter(format!(
        "Unable to find a virtual machine with id {}",
        vm.uuid
    ))
}

/// Records a completed event owned by the VM's account.
pub(crate) fn record_vm_event(
    conn: &Connection,
    caller: &Caller,
    vm: &Vm,
    event_type: &str,
    description: &str,
) -> OpResult<()> {
    events::record(
        conn,
        &NewEvent {
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            ..NewEvent::completed(caller, event_type, description)
        }
        .resource("VirtualMachine", &vm.uuid),
    )?;
    Ok(())
}

/// What [`destroy`] would do with the VM in its current state, without changing anything.
/// `Ok(false)`: nothing to do (already Destroyed or Expunging).
pub fn check_destroy(vm: &Vm) -> OpResult<bool> {
    if vm.removed.is_some() {
        return Err(not_found(vm));
    }
    match vm.state {
        VmState::Running | VmState::Stopped | VmState::Error => Ok(true),
        VmState::Destroyed | VmState::Expunging => Ok(false),
        VmState::Starting | VmState::Stopping | VmState::Restoring => {
            Err(OpError::InvalidState(format!(
                "Unable to destroy VM {} in state {}",
                vm.name,
                vm.state.as_str()
            )))
        }
    }
}

/// Destroys the VM (see the module docs) and records `VM.DESTROY` (plus `VOLUME.DETACH` per
/// detached data disk). A VM already Destroyed or Expunging is returned unchanged.
pub fn destroy(conn: &Connection, caller: &Caller, vm_id: i64) -> OpResult<Vm> {
    let vm = vm::get_vm(conn, vm_id)?;
    if !check_destroy(&vm)? {
        return Ok(vm);
    }
    if vm.state == VmState::Running {
        vm::transition(conn, vm_id, VmEvent::StopRequested)?;
        vm::transition(conn, vm_id, VmEvent::OperationSucceeded)?;
    }
    super::volume::detach_all_data_disks(conn, caller, &vm)?;
    conn.prepare_cached(
        "UPDATE volumes SET state = 'Destroy'
         WHERE vm_id = ?1 AND type = 'ROOT' AND removed IS NULL AND state IN ('Allocated', 'Ready')",
    )?
    .execute([vm_id])?;
    let vm = vm::transition(conn, vm_id, VmEvent::DestroyRequested)?;
    record_vm_event(
        conn,
        caller,
        &vm,
        "VM.DESTROY",
        &format!("Successfully destroyed VM {}", vm.name),
    )?;
    Ok(vm)
}

/// Brings a Destroyed VM back as Stopped with its ROOT volume Ready; records `VM.RECOVER`.
pub fn recover(conn: &Connection, caller: &Caller, vm_id: i64) -> OpResult<Vm> {
    let vm = vm::get_vm(conn, vm_id)?;
    if vm.removed.is_some() {
        return Err(OpError::InvalidParameter(format!(
            "Unable to find vm by id {}",
            vm.uuid
        )));
    }
    if vm.state != VmState::Destroyed {
        return Err(OpError::InvalidParameter(format!(
            "Vm with id {} is not in the right state",
            vm.uuid
        )));
    }
    conn.prepare_cached(
        "UPDATE volumes SET state = 'Ready'
         WHERE vm_id = ?1 AND type = 'ROOT' AND removed IS NULL AND state = 'Destroy'",
    )?
    .execute([vm_id])?;
    let vm = vm::transition(conn, vm_id, VmEvent::RecoveryRequested)?;
    record_vm_event(
        conn,
        caller,
        &vm,
        "VM.RECOVER",
        &format!("Successfully recovered VM {}", vm.name),
    )?;
    Ok(vm)
}

/// Whether [`expunge`] may run on the VM now, without changing anything.
/// `Ok(false)`: already expunged (nothing to do, as CloudStack answers success).
pub fn check_expunge(vm: &Vm) -> OpResult<bool> {
    if vm.removed.is_some() {
        return Ok(false);
    }
    match vm.state {
        VmState::Destroyed | VmState::Expunging | VmState::Error => Ok(true),
        _ => Err(OpError::InvalidState(
            "Please destroy vm with specified vmId before expunge".into(),
        )),
    }
}

/// Expunges the VM (see the module docs) and records `VM.EXPUNGE`. An already expunged VM is
/// returned unchanged.
pub fn expunge(conn: &Connection, caller: &Caller, vm_id: i64) -> OpResult<Vm> {
    let vm = vm::get_vm(conn, vm_id)?;
    if !check_expunge(&vm)? {
        return Ok(vm);
    }
    vm::transition(conn, vm_id, VmEvent::ExpungeOperation)?;
    super::volume::detach_all_data_disks(conn, caller, &vm)?;
    let ts = now();
    conn.prepare_cached(
        "UPDATE volumes SET state = 'Expunged', removed = ?2
         WHERE vm_id = ?1 AND type = 'ROOT' AND removed IS NULL",
    )?
    .execute(params![vm_id, ts])?;
    conn.prepare_cached("UPDATE vms SET removed = ?2 WHERE id = ?1 AND removed IS NULL")?
        .execute(params![vm_id, ts])?;
    let vm = vm::get_vm(conn, vm_id)?;
    record_vm_event(
        conn,
        caller,
        &vm,
        "VM.EXPUNGE",
        &format!("Successfully expunged VM {}", vm.name),
    )?;
    Ok(vm)
}
