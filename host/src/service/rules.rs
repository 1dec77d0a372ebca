//! Rules that depend only on what a provider declared (its capabilities), kept pure so every
//! branch is tested here, including capabilities no installed component has.

use super::error::{BackupError, BackupResult};
use bnr_runtime::types::{Capabilities, DeleteGranularity};

/// `quiescevm` given at all (even `false`) needs a provider that can quiesce (spec §3.5: upstream
/// checks the provider name `nas`; bnr checks the declared capability).
pub fn check_quiesce(provider: &str, caps: &Capabilities, given: Option<bool>) -> BackupResult<()> {
    if given.is_some() && !caps.quiesce {
        return Err(BackupError::refused(format!(
            "Quiesce VM option is supported only by backup providers that can quiesce instances; {provider} cannot"
        )));
    }
    Ok(())
}

/// `maxbackups`: refused by providers that own retention (upstream: Veeam), else non-negative.
pub fn check_max_backups(
    provider: &str,
    caps: &Capabilities,
    given: Option<i64>,
) -> BackupResult<()> {
    let Some(max) = given else { return Ok(()) };
    if caps.provider_owned_retention {
        return Err(BackupError::refused(format!(
            "The backup provider {provider} enforces retention through its own policy; maxbackups is not supported"
        )));
    }
    if max < 0 {
        return Err(BackupError::refused(
            "maxbackups should be a non-negative integer",
        ));
    }
    Ok(())
}

/// Removing an Instance from its offering when the provider then deletes its backups needs
/// `forced=true`.
pub fn check_removal(provider: &str, caps: &Capabilities, forced: bool) -> BackupResult<()> {
    if !forced && caps.deletes_backups_on_offering_removal {
        return Err(BackupError::refused(format!(
            "The backup provider {provider} deletes the backups of an Instance removed from its offering; \
             pass forced=true to remove the Instance anyway, or delete its backups first"
        )));
    }
    Ok(())
}

/// A provider that can only delete whole chains needs `forced=true` (it then deletes all the
/// Instance's backups). Returns whether the whole chain goes.
pub fn check_delete(provider: &str, caps: &Capabilities, forced: bool) -> BackupResult<bool> {
    let chain = caps.delete_granularity == DeleteGranularity::Chain;
    if chain && !forced {
        return Err(BackupError::refused(format!(
            "Backup provider {provider} can only delete whole backup chains; pass forced=true to delete all backups of the Instance"
        )));
    }
    Ok(chain)
}

/// createVMFromBackup needs the capability, and another zone needs cross-zone creation.
pub fn check_instance_from_backup(caps: &Capabilities, cross_zone: bool) -> BackupResult<()> {
    if !caps.instance_from_backup {
        return Err(BackupError::refused(
            "Create instance from backup is not supported for this provider.",
        ));
    }
    if cross_zone && !caps.cross_zone_instance_creation {
        return Err(BackupError::refused(
            "Create Instance from Backup on another Zone is not supported by this provider or the Backup Repository.",
        ));
    }
    Ok(())
}

/// restoreVolumeFromBackupAndAttachToVM needs single-volume restore.
pub fn check_volume_restore(provider: &str, caps: &Capabilities) -> BackupResult<()> {
    if !caps.single_volume_restore {
        return Err(BackupError::refused(format!(
            "Backup provider {provider} does not support restoring a single volume"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Capabilities {
        Capabilities {
            instance_from_backup: false,
            single_volume_restore: false,
            delete_granularity: DeleteGranularity::RestorePoint,
            deletes_backups_on_offering_removal: false,
            reconciliation: false,
            provider_owned_retention: false,
            cross_zone_instance_creation: false,
            quiesce: false,
            storage_stats: false,
        }
    }

    fn refused(r: BackupResult<impl std::fmt::Debug>) -> String {
        match r {
            Err(BackupError::Refused(t)) => t,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn quiesce_needs_the_capability_even_when_false_is_given() {
        assert!(check_quiesce("p", &none(), None).is_ok());
        assert!(refused(check_quiesce("p", &none(), Some(false))).contains("p cannot"));
        let caps = Capabilities {
            quiesce: true,
            ..none()
        };
        assert!(check_quiesce("p", &caps, Some(true)).is_ok());
        assert!(check_quiesce("p", &caps, Some(false)).is_ok());
    }

    #[test]
    fn max_backups_is_non_negative_and_refused_when_the_provider_owns_retention() {
        assert!(check_max_backups("p", &none(), None).is_ok());
        assert!(check_max_backups("p", &none(), Some(0)).is_ok());
        assert!(check_max_backups("p", &none(), Some(7)).is_ok());
        assert_eq!(
            refused(check_max_backups("p", &none(), Some(-1))),
            "maxbackups should be a non-negative integer"
        );
        let caps = Capabilities {
            provider_owned_retention: true,
            ..none()
        };
        assert!(check_max_backups("veeam", &caps, None).is_ok());
        assert!(
            refused(check_max_backups("veeam", &caps, Some(0)))
                .contains("veeam enforces retention")
        );
    }

    #[test]
    fn removal_needs_forced_when_the_provider_deletes_backups() {
        assert!(check_removal("p", &none(), false).is_ok());
        let caps = Capabilities {
            deletes_backups_on_offering_removal: true,
            ..none()
        };
        assert!(refused(check_removal("veeam", &caps, false)).contains("pass forced=true"));
        assert!(check_removal("veeam", &caps, true).is_ok());
    }

    #[test]
    fn chain_providers_only_delete_with_forced() {
        assert_eq!(check_delete("p", &none(), false).ok(), Some(false));
        assert_eq!(check_delete("p", &none(), true).ok(), Some(false));
        let caps = Capabilities {
            delete_granularity: DeleteGranularity::Chain,
            ..none()
        };
        assert!(refused(check_delete("veeam", &caps, false)).contains("whole backup chains"));
        assert_eq!(check_delete("veeam", &caps, true).ok(), Some(true));
    }

    #[test]
    fn instances_from_backups_need_the_capabilities() {
        assert_eq!(
            refused(check_instance_from_backup(&none(), false)),
            "Create instance from backup is not supported for this provider."
        );
        let same_zone = Capabilities {
            instance_from_backup: true,
            ..none()
        };
        assert!(check_instance_from_backup(&same_zone, false).is_ok());
        assert!(refused(check_instance_from_backup(&same_zone, true)).contains("another Zone"));
        let any_zone = Capabilities {
            cross_zone_instance_creation: true,
            ..same_zone
        };
        assert!(check_instance_from_backup(&any_zone, true).is_ok());
    }

    #[test]
    fn single_volume_restore_needs_the_capability() {
        assert!(refused(check_volume_restore("p", &none())).contains("single volume"));
        let caps = Capabilities {
            single_volume_restore: true,
            ..none()
        };
        assert!(check_volume_restore("p", &caps).is_ok());
    }
}
