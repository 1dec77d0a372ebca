//! Hook the Backup & Recovery layer uses to veto or prepare a VM expunge (spec §3.10).
//!
//! Inventory sits below the B&R service, so it only defines the hook; the service implements it
//! and the server registers it as `Arc<dyn ExpungeGuard>` in the API state's extensions
//! (`ApiState::with_extensions`). `expungeVirtualMachine` and `destroyVirtualMachine` with
//! `expunge=true` call it inside their async job, after the access and state checks and before
//! the VM leaves `Destroyed`; without a registered guard the VM is expunged directly.

use std::future::Future;
use std::pin::Pin;

use crate::identity::Caller;
use crate::store::OpResult;

/// The future returned by [`ExpungeGuard::before_expunge`]; it may borrow the guard and caller.
pub type GuardFuture<'a> = Pin<Box<dyn Future<Output = OpResult<()>> + Send + 'a>>;

/// Runs before a VM is expunged.
///
/// * `Ok(())`: expunge may proceed. The guard may already have changed state of its own (e.g.
///   removed the VM from its backup offering with `forced=true`, committed in its own
///   transaction); expunge does not undo that if it fails later.
/// * `Err(e)`: expunge is refused, the VM stays `Destroyed` (or, for `destroyVirtualMachine`
///   with `expunge=true`, in the state it was in — destroy is not started). The error reaches
///   the client as the job's result: `OpError::InvalidState(text)` → 530 with `text` (CloudStack
///   answers the "…has a Backup Offering … with N backups…" refusal that way),
///   `PermissionDenied` → 531, `InvalidParameter` → 431.
///
/// The VM row (`vms.id = vm_id`) still exists and is not soft-deleted when this is called; read
/// it with `inventory::vm::get_vm`. `caller` is the user who asked for the expunge.
pub trait ExpungeGuard: Send + Sync {
    fn before_expunge<'a>(&'a self, caller: &'a Caller, vm_id: i64) -> GuardFuture<'a>;
}
