//! Restoring backups in place, restoring one volume onto an instance, and creating a new
//! instance from a backup (spec §3.7, §3.11).

use std::sync::Arc;

use crate::store::db::{Connection, OptionalExtension, params};

use super::error::{BackupError, BackupResult};
use super::model::{
    Backup, Offering, VolumeInfo, detail, get_backup, get_offering, status, vm_backup_fields,
};
use super::operations::{Operation, OperationKind};
use super::{
    BackupService, Pending, backup_ref, check_backup_access, check_backup_target, check_vm_access,
    instance_of, live_vm, record_event, restorable, rules,
};
use crate::config::BACKUP_ATTACH_DETACH_VOLUMES;
use crate::identity::Caller;
use crate::inventory::vm::{self, DeployRequest, Vm, VmEvent, VmState};
use crate::inventory::vmware;
use crate::jobs;
use crate::store::events::Level;
use crate::store::{OpError, OpResult, new_uuid, now};
use bnr_runtime::types::{self, OperationResult, RestoreTarget};

/// What createVMFromBackup asks for; ids resolved by the api layer.
#[derive(Debug, Clone)]
pub struct VmFromBackup {
    pub backup_id: i64,
    pub zone_id: i64,
    pub service_offering_id: Option<i64>,
    pub template_id: Option<i64>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// (account id, domain id) when an admin acts for another account.
    pub owner: Option<(i64, i64)>,
    pub start: bool,
}

fn usable_backup(c: &Connection, backup_id: i64) -> BackupResult<Backup> {
    let b = get_backup(c, backup_id)?
        .filter(|b| b.removed.is_none())
        .ok_or_else(|| BackupError::refused(format!("Backup {backup_id} does not exist")))?;
    if b.status != status::BACKED_UP {
        return Err(BackupError::refused("Backup should be in BackedUp state"));
    }
    Ok(b)
}

fn offering_of(c: &Connection, b: &Backup) -> BackupResult<Offering> {
    get_offering(c, b.offering_id)?
        .ok_or_else(|| BackupError::refused("Failed to find backup offering of the VM backup."))
}

impl BackupService {
    /// restoreBackup: VM → Restoring (volumes too) now; the job restores and leaves the VM
    /// Stopped with Ready volumes whatever the outcome.
    pub async fn restore(
        self: &Arc<Self>,
        caller: &Caller,
        backup_id: i64,
    ) -> BackupResult<Pending<()>> {
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let (backup, vm, backup_ref, instance, provider) = self
            .store
            .write(move |tx| {
                let b = usable_backup(tx, backup_id)?;
                providers.check_zone(b.zone_id)?;
                let missing = || {
                    BackupError::refused(
                        "The Instance from which the backup was taken could not be found.",
                    )
                };
                let vm_id = b.vm_id.ok_or_else(missing)?;
                let mut vm = vm::get_vm(tx, vm_id).map_err(|_| missing())?;
                let fields = vm_backup_fields(tx, vm_id)?;
                // An expunged VMware instance comes back from the backup, as CloudStack's VMware
                // guru re-imports it; any other expunged or expunging instance is gone.
                let expunged = fields.removed.is_some();
                let vmware = vm.hypervisor.eq_ignore_ascii_case(vmware::VMWARE);
                if (vm.state == VmState::Expunging && !expunged) || (expunged && !vmware) {
                    return Err(missing());
                }
                check_backup_access(tx, &c2, &b)?;
                check_vm_access(tx, &c2, &vm)?;
                if !expunged && !restorable(vm.state) {
                    return Err(BackupError::refused(
                        "Existing VM should be stopped before being restored from backup",
                    ));
                }
                let mut infos = b.volume_infos();
                if infos.is_empty() {
                    // Backups taken before volumes were recorded per backup: the VM's list.
                    infos = VolumeInfo::parse_list(fields.volumes.as_deref().unwrap_or("[]"));
                }
                if expunged {
                    if infos.is_empty() {
                        return Err(BackupError::refused(
                            "The backup records no volumes to bring the expunged instance back with",
                        ));
                    }
                    vm = revive_from_backup(tx, &vm, &infos)?;
                } else {
                    let live = vm::volumes_of_vm(tx, vm_id)?.len();
                    if infos.len() != live {
                        return Err(BackupError::refused(
                            "Unable to restore VM with the current backup as the backup has different number of disks as the VM",
                        ));
                    }
                }
                pick_restore_host(tx, &mut vm)?;
                let offering = offering_of(tx, &b)?;
                let provider = providers.named(&offering.provider)?;
                let backup_ref = backup_ref(tx, &b, &offering.external_id)?;
                let instance = instance_of(tx, &vm)?;
                let changed = tx
                    .prepare_cached("UPDATE vms SET state = 'Restoring' WHERE id = ?1 AND state = ?2")?
                    .execute(params![vm_id, vm.state.as_str()])?;
                if changed != 1 {
                    return Err(BackupError::refused(format!(
                        "VM {} changed state concurrently",
                        vm.name
                    )));
                }
                tx.prepare_cached(
                    "UPDATE volumes SET state = 'Restoring' WHERE vm_id = ?1 AND removed IS NULL",
                )?
                .execute([vm_id])?;
                Ok::<_, BackupError>((b, vm, backup_ref, instance, provider))
            })
            .await?;
        let this = self.clone();
        let caller = caller.clone();
        let uuid = backup.uuid.clone();
        Ok(Pending::new(async move {
            let target = RestoreTarget::InPlace(instance);
            let payload = serde_json::json!({ "backup": backup.uuid, "vm": vm.uuid });
            let (on_vm, of_backup) = (vm.clone(), backup.clone());
            this.restore_instance(
                provider,
                &on_vm,
                &of_backup,
                backup_ref,
                target,
                payload,
                move |tx, outcome| {
                    tx.prepare_cached(
                        "UPDATE volumes SET state = 'Ready' WHERE vm_id = ?1 AND removed IS NULL",
                    )?
                    .execute([vm.id])?;
                    tx.prepare_cached("UPDATE vms SET state = 'Stopped' WHERE id = ?1")?
                        .execute([vm.id])?;
                    match restore_failure(outcome) {
                        None => {
                            let text =
                                format!("Restored VM {} from backup {}", vm.name, backup.uuid);
                            record_event(
                                tx,
                                &caller,
                                vm.account_id,
                                vm.domain_id,
                                "BACKUP.RESTORE",
                                Level::Info,
                                &text,
                                Some(("Backup", &backup.uuid)),
                            )?;
                            Ok(Ok(()))
                        }
                        Some(reason) => {
                            let text = format!(
                                "Error restoring VM from backup [{}]: {reason}",
                                backup.uuid
                            );
                            record_event(
                                tx,
                                &caller,
                                vm.account_id,
                                vm.domain_id,
                                "BACKUP.RESTORE",
                                Level::Error,
                                &text,
                                Some(("Backup", &backup.uuid)),
                            )?;
                            Ok(Err(BackupError::Provider(text)))
                        }
                    }
                },
            )
            .await
        })
        .on("Backup", &uuid))
    }

    /// restoreVolumeFromBackupAndAttachToVM: the provider recreates one backed-up volume; bnr
    /// records it as DATADISK `RestoredVol-<name>` attached to the target VM.
    pub async fn restore_volume(
        self: &Arc<Self>,
        caller: &Caller,
        backup_id: i64,
        volume_uuid: &str,
        vm_id: i64,
    ) -> BackupResult<Pending<()>> {
        if volume_uuid.trim().is_empty() {
            return Err(BackupError::InvalidValue(
                "Invalid volume ID passed: it must not be empty".into(),
            ));
        }
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let settings = self.settings.clone();
        let volume_uuid = volume_uuid.trim().to_string();
        let (backup, vm, info, request, provider) = self
            .store
            .read(move |c| {
                let b = usable_backup(c, backup_id)?;
                providers.check_zone(b.zone_id)?;
                check_backup_access(c, &c2, &b)?;
                let mut vm = live_vm(c, vm_id)?;
                check_vm_access(c, &c2, &vm)?;
                check_backup_target(&b, vm.account_id)?;
                pick_restore_host(c, &mut vm)?;
                if vm_backup_fields(c, vm_id)?.offering_id.is_some()
                    && !settings.get_bool(BACKUP_ATTACH_DETACH_VOLUMES, None)
                {
                    return Err(BackupError::refused(
                        "The selected VM has backups, cannot restore and attach volume to the VM.",
                    ));
                }
                if b.zone_id != vm.zone_id {
                    return Err(BackupError::refused(
                        "Cross zone backup restoration of volume is not allowed",
                    ));
                }
                if !matches!(vm.state, VmState::Running | VmState::Stopped) {
                    return Err(BackupError::refused(format!(
                        "Cannot attach a restored volume to VM {} in state {}",
                        vm.name,
                        vm.state.as_str()
                    )));
                }
                let info = b
                    .volume_infos()
                    .into_iter()
                    .find(|v| v.uuid == volume_uuid)
                    .ok_or_else(|| {
                        BackupError::refused(format!(
                            "Failed to find volume with Id {volume_uuid} in the backed-up volumes metadata"
                        ))
                    })?;
                let offering = offering_of(c, &b)?;
                let provider = providers.named(&offering.provider)?;
                rules::check_volume_restore(provider.name(), &provider.info().capabilities)?;
                let original: Option<String> = c
                    .prepare_cached("SELECT name FROM volumes WHERE uuid = ?1")?
                    .query_row([&info.uuid], |r| r.get(0))
                    .optional()?;
                let original = original.unwrap_or_else(|| info.uuid.clone());
                let r = backup_ref(c, &b, &offering.external_id)?;
                let request = types::VolumeRestoreRequest {
                    volume: info.to_wit(&original),
                    backup: r,
                    attach_to: instance_of(c, &vm)?,
                    new_volume_name: format!("RestoredVol-{original}"),
                };
                Ok::<_, BackupError>((b, vm, info, request, provider))
            })
            .await?;
        let this = self.clone();
        let caller = caller.clone();
        let uuid = backup.uuid.clone();
        Ok(Pending::new(async move {
            let ctx = this
                .providers
                .call_context(
                    &provider,
                    vm.zone_id,
                    &vm.zone_uuid,
                    vm.host_address.as_deref(),
                )
                .for_backup(&backup.uuid);
            let started = provider.start_restore_volume(&ctx, &request).await;
            let op = Operation {
                provider,
                ctx,
                zone_id: vm.zone_id,
                kind: OperationKind::RestoreVolume,
                backup_id: Some(backup.id),
                payload: serde_json::json!({
                    "backup": backup.uuid, "volume": info.uuid, "vm": vm.uuid
                }),
            };
            let name = request.new_volume_name.clone();
            // The work's last step: the job's outcome commits with the attached volume.
            let last = jobs::outcome_seal();
            this.complete_operation(op, started, last, move |tx, outcome| {
                let restored = match outcome {
                    Ok(OperationResult::VolumeRestored(v)) => v,
                    other => {
                        let reason = match other {
                            Ok(o) => format!(
                                "the provider answered with {}",
                                super::backups::result_name(&o)
                            ),
                            Err(e) => e.to_string(),
                        };
                        let text = format!(
                            "Error restoring volume {} from backup {}: {reason}",
                            info.uuid, backup.uuid
                        );
                        record_event(
                            tx,
                            &caller,
                            vm.account_id,
                            vm.domain_id,
                            "BACKUP.RESTORE.VOLUME.TO.VM",
                            Level::Error,
                            &text,
                            Some(("Backup", &backup.uuid)),
                        )?;
                        return Ok(Err(BackupError::Provider(text)));
                    }
                };
                let size = i64::try_from(restored.size)
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or(info.size);
                let volume = insert_volume(
                    tx,
                    &vm,
                    &name,
                    "DATADISK",
                    size,
                    &restored.path,
                    info.disk_offering_id.as_deref(),
                    None,
                )?;
                for event in ["BACKUP.RESTORE.VOLUME.TO.VM", "BACKUP.RESTORE"] {
                    let text = format!(
                        "Restored volume {} of backup {} as {name} ({volume}) attached to VM {}",
                        info.uuid, backup.uuid, vm.name
                    );
                    record_event(
                        tx,
                        &caller,
                        vm.account_id,
                        vm.domain_id,
                        event,
                        Level::Info,
                        &text,
                        Some(("Backup", &backup.uuid)),
                    )?;
                }
                Ok(Ok(()))
            })
            .await
        })
        .on("Backup", &uuid))
    }

    /// createVMFromBackup: the instance is allocated now (its uuid is the command's `id`) in
    /// state Restoring with the backup's disks; the job restores into it, then starts it
    /// unless `start` is false. On failure the half-created instance is expunged.
    pub async fn create_vm_from_backup(
        self: &Arc<Self>,
        caller: &Caller,
        req: VmFromBackup,
    ) -> BackupResult<Pending<Vm>> {
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let (backup, vm, backup_ref, instance, provider) = self
            .store
            .write(move |tx| {
                let b = get_backup(tx, req.backup_id)?
                    .filter(|b| b.removed.is_none())
                    .ok_or_else(|| {
                        BackupError::BadParameter(format!(
                            "Backup {} does not exist",
                            req.backup_id
                        ))
                    })?;
                providers.check_zone(b.zone_id)?;
                check_backup_access(tx, &c2, &b)?;
                if let Some((account_id, _)) = req.owner {
                    check_backup_target(&b, account_id)?;
                }
                let offering = offering_of(tx, &b)?;
                let provider = providers.named(&offering.provider)?;
                rules::check_instance_from_backup(
                    &provider.info().capabilities,
                    req.zone_id != b.zone_id,
                )?;
                if b.status != status::BACKED_UP {
                    return Err(BackupError::refused("Backup should be in BackedUp state"));
                }
                let details = super::model::backup_details(tx, b.id)?;
                let service_offering_id = match req.service_offering_id {
                    Some(id) => id,
                    None => id_by_uuid(tx, "service_offerings", details.get(detail::SERVICE_OFFERING_ID))?
                        .ok_or_else(|| BackupError::refused(
                            "The service offering recorded in the backup no longer exists; please specify serviceofferingid",
                        ))?,
                };
                let template_id = match req.template_id {
                    Some(id) => id,
                    None => id_by_uuid(tx, "templates", details.get(detail::TEMPLATE_ID))?
                        .ok_or_else(|| BackupError::refused(
                            "The template recorded in the backup no longer exists; please specify templateid",
                        ))?,
                };
                let infos = b.volume_infos();
                let root = infos.iter().find(|v| v.kind.eq_ignore_ascii_case("ROOT"));
                let (account_id, domain_id) = req.owner.unwrap_or((c2.account_id, c2.domain_id));
                let deployed = vm::deploy(
                    tx,
                    &c2,
                    &DeployRequest {
                        name: req.name.clone(),
                        display_name: req.display_name.clone(),
                        account_id,
                        domain_id,
                        zone_id: req.zone_id,
                        service_offering_id,
                        template_id,
                        disk_offering_id: None,
                        start: false,
                    },
                )?;
                if let Some(root) = root {
                    tx.prepare_cached(
                        "UPDATE volumes SET size_bytes = CASE WHEN size_bytes > ?1 THEN size_bytes ELSE ?1 END
                         WHERE vm_id = ?2 AND type = 'ROOT' AND removed IS NULL",
                    )?
                    .execute(params![root.size, deployed.id])?;
                }
                for data in infos.iter().filter(|v| !v.kind.eq_ignore_ascii_case("ROOT")) {
                    let path = new_uuid();
                    let name = format!("DATA-{}-{}", deployed.id, data.device_id);
                    insert_volume(
                        tx,
                        &deployed,
                        &name,
                        "DATADISK",
                        data.size,
                        &path,
                        data.disk_offering_id.as_deref(),
                        Some(data.device_id),
                    )?;
                }
                tx.prepare_cached("UPDATE vms SET state = 'Restoring' WHERE id = ?1")?
                    .execute([deployed.id])?;
                let vm = vm::get_vm(tx, deployed.id)?;
                let instance = instance_of(tx, &vm)?;
                let backup_ref = backup_ref(tx, &b, &offering.external_id)?;
                Ok::<_, BackupError>((b, vm, backup_ref, instance, provider))
            })
            .await?;
        let this = self.clone();
        let caller = caller.clone();
        let start = req.start;
        let vm_uuid = vm.uuid.clone();
        Ok(Pending::new(async move {
            let target = RestoreTarget::NewInstance(instance);
            let payload = serde_json::json!({ "backup": backup.uuid, "newvm": vm.uuid });
            let (on_vm, of_backup) = (vm.clone(), backup.clone());
            this.restore_instance(
                provider,
                &on_vm,
                &of_backup,
                backup_ref,
                target,
                payload,
                move |tx, outcome| finish_vm_from_backup(tx, &caller, &vm, &backup, start, outcome),
            )
            .await
        })
        .created("VirtualMachine", &vm_uuid))
    }
}

fn finish_vm_from_backup(
    tx: &Connection,
    caller: &Caller,
    vm: &Vm,
    backup: &Backup,
    start: bool,
    outcome: BackupResult<OperationResult>,
) -> OpResult<BackupResult<Vm>> {
    if let Some(reason) = restore_failure(outcome) {
        // Nothing half-created stays: expunge the instance allocated for the restore.
        let ts = now();
        tx.prepare_cached("UPDATE vms SET state = 'Expunging', removed = ?2 WHERE id = ?1")?
            .execute(params![vm.id, ts])?;
        tx.prepare_cached(
            "UPDATE volumes SET state = 'Expunged', removed = ?2 WHERE vm_id = ?1 AND removed IS NULL",
        )?
        .execute(params![vm.id, ts])?;
        let text = format!(
            "Failed to create Instance {} from backup {}: {reason}",
            vm.name, backup.uuid
        );
        record_event(
            tx,
            caller,
            vm.account_id,
            vm.domain_id,
            "VM.CREATE.FROM.BACKUP",
            Level::Error,
            &text,
            Some(("VirtualMachine", &vm.uuid)),
        )?;
        return Ok(Err(BackupError::Provider(text)));
    }
    tx.prepare_cached("UPDATE vms SET state = 'Stopped' WHERE id = ?1")?
        .execute([vm.id])?;
    let text = format!("Created Instance {} from backup {}", vm.name, backup.uuid);
    record_event(
        tx,
        caller,
        vm.account_id,
        vm.domain_id,
        "VM.CREATE.FROM.BACKUP",
        Level::Info,
        &text,
        Some(("VirtualMachine", &vm.uuid)),
    )?;
    if start {
        vm::transition(tx, vm.id, VmEvent::StartRequested)?;
        vm::transition(tx, vm.id, VmEvent::OperationSucceeded)?;
        let text = format!("Successfully started VM {}", vm.name);
        record_event(
            tx,
            caller,
            vm.account_id,
            vm.domain_id,
            "VM.START",
            Level::Info,
            &text,
            Some(("VirtualMachine", &vm.uuid)),
        )?;
    }
    Ok(Ok(vm::get_vm(tx, vm.id)?))
}

/// Brings an expunged instance's row back (`Stopped`) with fresh Ready volumes shaped like the
/// backup's; the restore then fills them. It comes back without NICs (bnr records none; a
/// VMware re-import has no network to attach to), as upstream's VMware import does.
fn revive_from_backup(tx: &Connection, vm: &Vm, infos: &[VolumeInfo]) -> BackupResult<Vm> {
    tx.prepare_cached("UPDATE vms SET removed = NULL, state = 'Stopped' WHERE id = ?1")?
        .execute([vm.id])?;
    let revived = vm::get_vm(tx, vm.id)?;
    let mut ordered: Vec<&VolumeInfo> = infos.iter().collect();
    ordered.sort_by_key(|i| (!i.kind.eq_ignore_ascii_case("ROOT"), i.device_id));
    for (n, info) in ordered.into_iter().enumerate() {
        let root = info.kind.eq_ignore_ascii_case("ROOT");
        let name = if root {
            format!("ROOT-{}", vm.id)
        } else {
            format!("DATA-{}-{n}", vm.id)
        };
        let kind = if root { "ROOT" } else { "DATADISK" };
        insert_volume(
            tx,
            &revived,
            &name,
            kind,
            info.size,
            &info.path,
            info.disk_offering_id.as_deref(),
            Some(info.device_id),
        )?;
    }
    Ok(revived)
}

/// The live row of `table` with `uuid` (`table` is a constant from code).
fn id_by_uuid(c: &Connection, table: &'static str, uuid: Option<&String>) -> OpResult<Option<i64>> {
    let Some(uuid) = uuid else { return Ok(None) };
    Ok(c.prepare_cached(&format!(
        "SELECT id FROM {table} WHERE uuid = ?1 AND removed IS NULL"
    ))?
    .query_row([uuid], |r| r.get(0))
    .optional()?)
}

/// Adds a Ready volume to `vm` (detached when the VM was expunged meanwhile) at `device_id`,
/// or the next free device. Returns its uuid.
#[allow(clippy::too_many_arguments)]
fn insert_volume(
    tx: &Connection,
    vm: &Vm,
    name: &str,
    kind: &str,
    size: i64,
    path: &str,
    disk_offering_uuid: Option<&str>,
    device_id: Option<i64>,
) -> OpResult<String> {
    let live = vm_backup_fields(tx, vm.id)?.removed.is_none();
    let device = match (live, device_id) {
        (false, _) => None,
        (true, Some(d)) => Some(d),
        (true, None) => Some(
            tx.prepare_cached(
                "SELECT coalesce(max(device_id), 0) + 1 FROM volumes WHERE vm_id = ?1 AND removed IS NULL",
            )?
            .query_row([vm.id], |r| r.get::<i64>(0))?,
        ),
    };
    let disk_offering: Option<i64> = match disk_offering_uuid {
        Some(u) => tx
            .prepare_cached("SELECT id FROM disk_offerings WHERE uuid = ?1")?
            .query_row([u], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let uuid = new_uuid();
    tx.prepare_cached(
        "INSERT INTO volumes(uuid, name, vm_id, account_id, domain_id, zone_id, type, size_bytes, path,
                             device_id, disk_offering_id, state, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'Ready', ?12)",
    )?
    .execute(params![
        uuid,
        name,
        live.then_some(vm.id),
        vm.account_id,
        vm.domain_id,
        vm.zone_id,
        kind,
        size,
        path,
        device,
        disk_offering,
        now()
    ])
    .map_err(OpError::from)?;
    Ok(uuid)
}

/// A restore of a KVM instance runs on the host CloudStack's rule picks (its last host if up,
/// else an up host of its cluster, else of its zone): the provider is given that host and may
/// reach only it. Other instances keep their recorded host.
fn pick_restore_host(conn: &Connection, vm: &mut Vm) -> BackupResult<()> {
    if vm.hypervisor == crate::inventory::kvm::KVM
        && crate::inventory::kvm::is_kvm_zone(conn, vm.zone_id)?
    {
        let host = crate::inventory::kvm::restore_host(conn, vm)?;
        vm.host_address = Some(host.address);
    }
    Ok(())
}

/// Why an instance restore failed, or `None` when the provider restored it.
fn restore_failure(outcome: BackupResult<OperationResult>) -> Option<String> {
    match outcome {
        Ok(OperationResult::Restored) => None,
        Ok(other) => Some(format!(
            "the provider answered with {}",
            super::backups::result_name(&other)
        )),
        Err(e) => Some(e.to_string()),
    }
}

impl BackupService {
    /// Starts restoring `backup_ref` onto `target` (in place or a new instance) on `vm`'s zone
    /// and drives the operation to its end; `finish` records the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn restore_instance<T, F>(
        &self,
        provider: Arc<bnr_runtime::Provider>,
        vm: &Vm,
        backup: &Backup,
        backup_ref: types::BackupRef,
        target: RestoreTarget,
        payload: serde_json::Value,
        finish: F,
    ) -> BackupResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, BackupResult<OperationResult>) -> OpResult<BackupResult<T>>
            + Send
            + 'static,
    {
        let ctx = self
            .providers
            .call_context(
                &provider,
                vm.zone_id,
                &vm.zone_uuid,
                vm.host_address.as_deref(),
            )
            .for_backup(&backup.uuid);
        let started = provider.start_restore(&ctx, &backup_ref, &target).await;
        let op = Operation {
            provider,
            ctx,
            zone_id: vm.zone_id,
            kind: OperationKind::Restore,
            backup_id: Some(backup.id),
            payload,
        };
        self.complete_operation(op, started, None, finish).await
    }
}
