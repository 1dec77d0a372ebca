//! The VM expunge guard (spec §3.10), plugged into the inventory's expunge.

use super::BackupService;
use super::error::BackupError;
use super::model::{get_offering, vm_backup_fields};
use crate::identity::Caller;
use crate::inventory::vm;
use crate::inventory::{ExpungeGuard, GuardFuture};

impl ExpungeGuard for BackupService {
    /// A VM with an offering and backups of it may not be expunged; one with an offering and no
    /// backups is first removed from the offering (forced). Without an offering nothing happens:
    /// backups of an earlier offering become orphans, still usable by createVMFromBackup.
    fn before_expunge<'a>(&'a self, caller: &'a Caller, vm_id: i64) -> GuardFuture<'a> {
        Box::pin(async move {
            let found = self
                .store
                .read(move |c| {
                    let Some(offering_id) = vm_backup_fields(c, vm_id)?.offering_id else {
                        return Ok::<_, BackupError>(None);
                    };
                    let vm = vm::get_vm(c, vm_id)?;
                    let offering = get_offering(c, offering_id)?;
                    let backups: i64 = c
                        .prepare_cached(
                            "SELECT COUNT(*) FROM backups WHERE zone_id = ?1 AND vm_id = ?2
                             AND backup_offering_id = ?3 AND removed IS NULL",
                        )?
                        .query_row(
                            crate::store::db::params![vm.zone_id, vm_id, offering_id],
                            |r| r.get(0),
                        )?;
                    Ok(Some((vm, offering, offering_id, backups)))
                })
                .await?;
            let Some((vm, offering, offering_id, backups)) = found else {
                return Ok(());
            };
            let Some(offering) = offering else {
                tracing::warn!(vm = %vm.uuid, offering_id, "VM points at a missing backup offering");
                return Ok(());
            };
            if backups > 0 {
                return Err(BackupError::refused(format!(
                    "This VM [uuid: {}, name: {}] has a Backup Offering [id: {}, external id: {}] with {backups} backups. \
                     Please, remove the backup offering before proceeding to VM exclusion!",
                    vm.uuid, vm.name, offering.uuid, offering.external_id
                ))
                .into());
            }
            // The provider is told when it can be; the VM is detached either way (forced).
            let provider = if self.providers.zone_enabled(vm.zone_id) {
                self.providers.named(&offering.provider).ok()
            } else {
                None
            };
            self.detach_from_offering(caller, &vm, &offering, provider, true)
                .await
                .map_err(Into::into)
        })
    }
}
