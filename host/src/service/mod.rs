//! The Backup & Recovery rules (cloudstack-bnr-spec.md §3) as typed operations over the store
//! and the provider runtime. This layer owns the transactions; it knows no HTTP and no
//! CloudStack JSON (the api layer renders what it returns and maps [`BackupError`] kinds to
//! error codes).
//!
//! Async commands are split like CloudStack's: a synchronous phase (validation, access checks,
//! and for create-style commands the new row) returns a [`Pending`] whose `work` is what the
//! async job runs. Nothing half-written survives a failure: each phase is one transaction, and
//! a provider failure after a row was written marks it `Error` (backups) or removes it (new
//! instances), as CloudStack does.
//!
//! Entry points: [`BackupService::new`] (with [`Providers::load`]), then the operations in
//! `offerings`, `assignment`, `schedules`, `backups`, `restore`; [`BackupService`] also
//! implements the inventory's [`crate::inventory::ExpungeGuard`] (spec §3.10).

mod assignment;
mod backups;
mod error;
mod guard;
mod model;
mod offerings;
mod operations;
pub mod plugin_replicas;
mod plugins;
pub mod providers;
mod recovery;
mod restore;
mod resume;
pub mod rules;
mod schedules;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::store::db::{Connection, OptionalExtension};

pub use backups::{BackupQuery, CreateBackup};
pub use error::{BackupError, BackupResult};
pub use model::{Backup, Offering, Schedule, VolumeInfo, detail, status};
pub use offerings::{ImportOffering, OfferingQuery, UpdateOffering};
pub use operations::{OperationKind, POLL_INITIAL_DELAY, POLL_MAX_DELAY};
pub use plugins::{PluginEvent, PluginView, SigningKeyView, Upload};
pub use providers::{PluginPolicy, ProviderSource, Providers};
pub use recovery::{INTERRUPTED_REASON, Recovered};
pub use restore::VmFromBackup;
pub use resume::PersistedOperation;
pub use schedules::{ScheduleQuery, ScheduleRequest};

use crate::config::Settings;
use crate::identity::Caller;
use crate::inventory::vm::{self, Vm, VmState};
use crate::store::events::{self, Level, NewEvent};
use crate::store::{OpResult, Store};
use bnr_runtime::types;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The job part of an async operation, after its synchronous phase succeeded.
pub struct Pending<T> {
    /// Create-style commands: uuid of the entity the synchronous phase created.
    pub created: Option<String>,
    /// CloudStack instance type and uuid the job acts on (`Backup`, `VirtualMachine`), if any.
    pub instance: Option<(&'static str, String)>,
    /// The job, when the synchronous phase recorded it with its change ([`crate::jobs::JobTicket`]).
    pub job: Option<String>,
    pub work: BoxFuture<BackupResult<T>>,
}

impl<T> Pending<T> {
    fn new(work: impl Future<Output = BackupResult<T>> + Send + 'static) -> Self {
        Pending {
            created: None,
            instance: None,
            job: None,
            work: Box::pin(work),
        }
    }

    fn on(mut self, instance_type: &'static str, uuid: &str) -> Self {
        self.instance = Some((instance_type, uuid.to_string()));
        self
    }

    fn created(mut self, instance_type: &'static str, uuid: &str) -> Self {
        self.created = Some(uuid.to_string());
        self.on(instance_type, uuid)
    }

    fn recorded_as(mut self, job_uuid: Option<String>) -> Self {
        self.job = job_uuid;
        self
    }
}

/// The B&R service. One per server, shared as `Arc<BackupService>`.
pub struct BackupService {
    store: Store,
    settings: Settings,
    providers: Arc<Providers>,
}

impl BackupService {
    pub fn new(store: Store, settings: Settings, providers: Arc<Providers>) -> Arc<BackupService> {
        Arc::new(BackupService {
            store,
            settings,
            providers,
        })
    }

    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A VM by id that has not been expunged (CloudStack's `findById`).
fn live_vm(conn: &Connection, vm_id: i64) -> Result<Vm, BackupError> {
    let fields = model::vm_backup_fields(conn, vm_id)?;
    if fields.removed.is_some() {
        return Err(BackupError::refused(
            "Did not find VM by provided ID; it was expunged",
        ));
    }
    Ok(vm::get_vm(conn, vm_id)?)
}

/// Access to a VM-owned resource: CloudStack's entity check against the VM owner.
fn check_vm_access(conn: &Connection, caller: &Caller, vm: &Vm) -> Result<(), BackupError> {
    caller.check_access(conn, vm.account_id, vm.domain_id, "the virtual machine")?;
    Ok(())
}

/// Access to a backup, the one check every command that reads or changes a backup makes: the
/// caller must reach the backup's owner, and the instance it was taken of while that exists.
fn check_backup_access(conn: &Connection, caller: &Caller, b: &Backup) -> Result<(), BackupError> {
    caller.check_access(conn, b.account_id, b.domain_id, "the backup")?;
    if let Some(vm) = b.vm_id.and_then(|id| vm::get_vm(conn, id).ok()) {
        check_vm_access(conn, caller, &vm)?;
    }
    Ok(())
}

/// Backup data may only land in an instance of the backup's own account (CloudStack's
/// same-owner rule); an admin's reach over both accounts does not merge them.
fn check_backup_target(b: &Backup, target_account_id: i64) -> Result<(), BackupError> {
    crate::identity::check_same_owner(
        ("the backup", b.account_id),
        ("the target virtual machine", target_account_id),
    )?;
    Ok(())
}

/// The instance as a provider sees it: identity, host, state, live volumes, provider reference.
fn instance_of(conn: &Connection, vm: &Vm) -> OpResult<types::Instance> {
    let fields = model::vm_backup_fields(conn, vm.id)?;
    let volumes = vm::volumes_of_vm(conn, vm.id)?;
    Ok(instance_with(vm, &volumes, fields.external_id))
}

/// [`instance_of`] from rows already loaded.
fn instance_with(
    vm: &Vm,
    volumes: &[crate::inventory::Volume],
    provider_ref: Option<String>,
) -> types::Instance {
    types::Instance {
        uuid: vm.uuid.clone(),
        name: vm.name.clone(),
        internal_name: vm.internal_name.clone(),
        hypervisor: vm.hypervisor.clone(),
        host_address: vm.host_address.clone(),
        state: vm.state.as_str().to_string(),
        volumes: volumes
            .iter()
            .map(|v| VolumeInfo::of(v).to_wit(&v.name))
            .collect(),
        provider_ref,
    }
}

/// What a provider needs to know about a backup; volume names come from the volume rows when
/// they still exist.
fn backup_ref(
    conn: &Connection,
    b: &Backup,
    offering_external_id: &str,
) -> OpResult<types::BackupRef> {
    let mut name_of = conn.prepare_cached("SELECT name FROM volumes WHERE uuid = ?1")?;
    let mut volumes = Vec::new();
    for info in b.volume_infos() {
        let name: Option<String> = name_of.query_row([&info.uuid], |r| r.get(0)).optional()?;
        volumes.push(info.to_wit(name.as_deref().unwrap_or(&info.uuid)));
    }
    Ok(types::BackupRef {
        external_id: b.external_id.clone().unwrap_or_default(),
        offering_external_id: offering_external_id.to_string(),
        instance_uuid: b.vm_uuid.clone().unwrap_or_default(),
        volumes,
    })
}

/// Records a B&R event owned by (`account_id`, `domain_id`) on behalf of `caller`.
#[allow(clippy::too_many_arguments)]
fn record_event(
    conn: &Connection,
    caller: &Caller,
    account_id: i64,
    domain_id: i64,
    event_type: &str,
    level: Level,
    description: &str,
    resource: Option<(&str, &str)>,
) -> OpResult<()> {
    let mut e = NewEvent {
        account_id,
        domain_id,
        ..NewEvent::completed(caller, event_type, description)
    }
    .level(level);
    if let Some((kind, uuid)) = resource {
        e = e.resource(kind, uuid);
    }
    // A failure on a backup is a failure of its offering's provider: say which.
    let provider = match resource {
        Some(("Backup", uuid)) if level == Level::Error => conn
            .prepare_cached(
                "SELECT o.provider FROM backups b \
                 JOIN backup_offerings o ON o.id = b.backup_offering_id WHERE b.uuid = ?1",
            )?
            .query_row([uuid], |r| r.get::<String>(0))
            .optional()?,
        _ => None,
    };
    match provider {
        Some(provider) => events::record_for_provider(conn, &e, &provider)?,
        None => events::record(conn, &e)?,
    };
    Ok(())
}

/// States in which a VM may be restored in place (spec §3.7).
fn restorable(state: VmState) -> bool {
    matches!(state, VmState::Stopped | VmState::Destroyed)
}
