//! Assigning instances to backup offerings and removing them (spec §3.3, §3.4).

use std::sync::Arc;

use crate::store::db::{Connection, params};

use super::error::{BackupError, BackupResult};
use super::model::{Offering, VolumeInfo, get_offering, vm_backup_fields};
use super::{BackupService, Pending, check_vm_access, instance_of, live_vm, record_event, rules};
use crate::identity::Caller;
use crate::inventory::vm::{self, Vm, VmState};
use crate::store::events::Level;
use crate::store::now;
use bnr_runtime::Provider;
use bnr_runtime::types;

impl BackupService {
    /// assignVirtualMachineToBackupOffering. The provider is asked in the job; the VM is only
    /// marked assigned when it agreed (and told to forget the VM again if recording fails).
    pub async fn assign(
        self: &Arc<Self>,
        caller: &Caller,
        vm_id: i64,
        offering_id: i64,
    ) -> BackupResult<Pending<()>> {
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let (vm, offering, instance) = self
            .store
            .read(move |c| {
                let vm = live_vm(c, vm_id)?;
                if !matches!(vm.state, VmState::Running | VmState::Stopped) {
                    return Err(BackupError::refused("VM is not in running or stopped state"));
                }
                providers.check_zone(vm.zone_id)?;
                check_vm_access(c, &c2, &vm)?;
                if vm_backup_fields(c, vm_id)?.offering_id.is_some() {
                    return Err(BackupError::refused(
                        "VM already is assigned to a backup offering, please remove the VM from its previous offering",
                    ));
                }
                let offering = get_offering(c, offering_id)?
                    .filter(|o| o.removed.is_none())
                    .ok_or_else(|| BackupError::refused("Provided backup offering does not exist"))?;
                if offering.zone_id != vm.zone_id {
                    return Err(BackupError::refused(format!(
                        "Backup offering {} belongs to zone {}, not to the zone of the VM ({})",
                        offering.name, offering.zone_name, vm.zone_name
                    )));
                }
                let instance = instance_of(c, &vm)?;
                Ok((vm, offering, instance))
            })
            .await?;
        let provider = self.providers.named(&offering.provider)?;
        let this = self.clone();
        let caller = caller.clone();
        let vm_uuid = vm.uuid.clone();
        Ok(Pending::new(async move {
            let ctx = this.providers.call_context(
                &provider,
                vm.zone_id,
                &vm.zone_uuid,
                vm.host_address.as_deref(),
            );
            let reference = provider
                .assign_instance(&ctx, &instance, &offering.external_id)
                .await
                .map_err(|e| {
                    BackupError::Provider(format!(
                        "Failed to add Instance to backup offering: {}",
                        BackupError::provider(provider.name(), &e)
                    ))
                })?;
            let (vm2, off2) = (vm.clone(), offering.clone());
            let recorded = this
                .store
                .write(move |tx| {
                    let volumes = vm::volumes_of_vm(tx, vm2.id)?;
                    let infos: Vec<VolumeInfo> = volumes.iter().map(VolumeInfo::of).collect();
                    let changed = tx
                        .prepare_cached(
                            "UPDATE vms SET backup_offering_id = ?1, backup_external_id = ?2, backup_volumes = ?3
                             WHERE id = ?4 AND backup_offering_id IS NULL AND removed IS NULL",
                        )?
                        .execute(params![off2.id, reference, VolumeInfo::to_json(&infos), vm2.id])?;
                    if changed != 1 {
                        return Err(BackupError::refused(
                            "VM already is assigned to a backup offering, please remove the VM from its previous offering",
                        ));
                    }
                    let text = format!(
                        "Assigned VM {} to backup offering {}",
                        vm2.name, off2.name
                    );
                    record_event(
                        tx,
                        &caller,
                        vm2.account_id,
                        vm2.domain_id,
                        "BACKUP.OFFERING.ASSIGN",
                        Level::Info,
                        &text,
                        Some(("VirtualMachine", &vm2.uuid)),
                    )?;
                    // The usage period of (VM, offering) opens now.
                    crate::scheduler::usage::refresh_pair(tx, vm2.id, off2.id, now())?;
                    Ok(())
                })
                .await;
            if let Err(e) = recorded {
                // The provider registered the VM but bnr did not: undo it on the provider.
                if let Err(undo) = provider
                    .remove_instance(&ctx, &instance, &offering.external_id)
                    .await
                {
                    tracing::warn!(provider = provider.name(), vm = %vm.uuid, error = %undo,
                        "could not undo a provider assignment after a failed assign");
                }
                return Err(match e {
                    BackupError::Store(s) => {
                        tracing::error!(error = %s, "recording an assignment failed");
                        BackupError::refused("Failed to add Instance to backup offering")
                    }
                    other => other,
                });
            }
            Ok(())
        })
        .on("VirtualMachine", &vm_uuid))
    }

    /// removeVirtualMachineFromBackupOffering (spec §3.4).
    pub async fn remove_from_offering(
        self: &Arc<Self>,
        caller: &Caller,
        vm_id: i64,
        forced: bool,
    ) -> BackupResult<Pending<()>> {
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let (vm, offering) = self
            .store
            .read(move |c| {
                // Including expunged VMs (CloudStack looks them up with removed rows).
                let vm = vm::get_vm(c, vm_id)?;
                providers.check_zone(vm.zone_id)?;
                check_vm_access(c, &c2, &vm)?;
                let offering_id = vm_backup_fields(c, vm_id)?.offering_id.ok_or_else(|| {
                    BackupError::refused(
                        "No previously configured backup offering found for the VM",
                    )
                })?;
                let offering = get_offering(c, offering_id)?.ok_or_else(|| {
                    BackupError::refused(
                        "No previously configured backup offering found for the VM",
                    )
                })?;
                Ok::<_, BackupError>((vm, offering))
            })
            .await?;
        let provider = self.providers.named(&offering.provider)?;
        rules::check_removal(provider.name(), &provider.info().capabilities, forced)?;
        let this = self.clone();
        let caller = caller.clone();
        let vm_uuid = vm.uuid.clone();
        Ok(Pending::new(async move {
            this.detach_from_offering(&caller, &vm, &offering, Some(provider), forced)
                .await
        })
        .on("VirtualMachine", &vm_uuid))
    }

    /// Removes the VM from `offering`: tells the provider (when given), clears the VM's B&R
    /// fields, deletes its schedules, and its backups if the provider deleted them. With
    /// `forced`, a provider failure does not stop the removal.
    pub(crate) async fn detach_from_offering(
        &self,
        caller: &Caller,
        vm: &Vm,
        offering: &Offering,
        provider: Option<Arc<Provider>>,
        forced: bool,
    ) -> BackupResult<()> {
        let mut provider_deleted_backups = false;
        if let Some(provider) = &provider {
            let ctx = self.providers.call_context(
                provider,
                vm.zone_id,
                &vm.zone_uuid,
                vm.host_address.as_deref(),
            );
            let vm2 = vm.clone();
            let instance: types::Instance = self.store.read(move |c| instance_of(c, &vm2)).await?;
            match provider
                .remove_instance(&ctx, &instance, &offering.external_id)
                .await
            {
                Ok(()) => {
                    provider_deleted_backups = provider
                        .info()
                        .capabilities
                        .deletes_backups_on_offering_removal;
                }
                Err(e) if forced => tracing::warn!(
                    provider = provider.name(),
                    vm = %vm.uuid,
                    error = %e,
                    "provider failed to remove the VM from its offering; removing it anyway (forced)"
                ),
                Err(e) => {
                    return Err(BackupError::Provider(format!(
                        "Failed to remove Instance from backup offering: {}",
                        BackupError::provider(provider.name(), &e)
                    )));
                }
            }
        }
        let (caller, vm, offering) = (caller.clone(), vm.clone(), offering.clone());
        self.store
            .write(move |tx| {
                clear_assignment(tx, &caller, &vm, &offering, provider_deleted_backups)
            })
            .await
    }
}

fn clear_assignment(
    tx: &Connection,
    caller: &Caller,
    vm: &Vm,
    offering: &Offering,
    delete_backups: bool,
) -> BackupResult<()> {
    tx.prepare_cached(
        "UPDATE vms SET backup_offering_id = NULL, backup_external_id = NULL, backup_volumes = NULL
         WHERE id = ?1",
    )?
    .execute([vm.id])?;
    if delete_backups {
        tx.prepare_cached("UPDATE backups SET removed = ?1 WHERE vm_id = ?2 AND removed IS NULL")?
            .execute(params![now(), vm.id])?;
    }
    tx.prepare_cached("DELETE FROM backup_schedules WHERE vm_id = ?1")?
        .execute([vm.id])?;
    // The usage period closes now unless backups of the offering remain.
    crate::scheduler::usage::refresh_pair(tx, vm.id, offering.id, now())?;
    let text = format!(
        "Removed VM {} from backup offering {}",
        vm.name, offering.name
    );
    record_event(
        tx,
        caller,
        vm.account_id,
        vm.domain_id,
        "BACKUP.OFFERING.REMOVE",
        Level::Info,
        &text,
        Some(("VirtualMachine", &vm.uuid)),
    )?;
    let remaining: bool = tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM backups WHERE vm_id = ?1 AND removed IS NULL)",
        )?
        .query_row([vm.id], |r| r.get(0))?;
    if !remaining {
        let text = format!(
            "No backups left of VM {} in offering {}",
            vm.name, offering.name
        );
        record_event(
            tx,
            caller,
            vm.account_id,
            vm.domain_id,
            "BACKUP.OFFERING.BACKUPS.DEL",
            Level::Info,
            &text,
            Some(("VirtualMachine", &vm.uuid)),
        )?;
    }
    Ok(())
}
