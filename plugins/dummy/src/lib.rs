//! The `dummy` backup provider: bnr's port of CloudStack's `DummyBackupProvider`.
//!
//! It talks to nothing. Every operation succeeds at once (no operation is ever left pending),
//! sizes come from the instance's volumes, and it needs no settings or grants. Useful for
//! trying bnr out and for end-to-end tests of the B&R API.

use bnr_sdk::prelude::*;

/// The provider; see the crate docs.
pub struct Dummy;

const GOLD_POLICY: &str = "gold-policy";
const SILVER_POLICY: &str = "silver-policy";

/// Upstream's dummy sets every assigned instance's backup external id to this constant.
const ASSIGNED_INSTANCE_REF: &str = "dummy-external-backup-id";

impl Provider for Dummy {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            name: "dummy".into(),
            description: "Dummy Backup Plugin".into(),
            version: "1.0.0".into(),
            settings: Vec::new(),
            needs: Vec::new(),
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: true,
                single_volume_restore: true,
                delete_granularity: DeleteGranularity::RestorePoint,
                deletes_backups_on_offering_removal: false,
                reconciliation: false,
                provider_owned_retention: false,
                cross_zone_instance_creation: true,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
        Ok(vec![
            Policy {
                external_id: GOLD_POLICY.into(),
                name: "Golden Policy".into(),
                description: "Gold description".into(),
            },
            Policy {
                external_id: SILVER_POLICY.into(),
                name: "Silver Policy".into(),
                description: "Silver description".into(),
            },
        ])
    }

    /// Only the two listed policies are valid. Upstream's dummy answers `true` for any id;
    /// bnr deviates on purpose so importing an offering with a made-up external id fails the
    /// same way it would with a real provider.
    fn validate_policy(_zone: Zone, external_id: String) -> Result<bool> {
        Ok(external_id == GOLD_POLICY || external_id == SILVER_POLICY)
    }

    fn assign_instance(_instance: Instance, _policy: String) -> Result<Option<String>> {
        Ok(Some(ASSIGNED_INSTANCE_REF.into()))
    }

    fn remove_instance(_instance: Instance, _policy: String) -> Result<()> {
        Ok(())
    }

    /// Upstream uses the constant `dummy-external-id`; bnr needs external ids to be unique per
    /// backup (they identify restore points), so a random suffix is added.
    fn start_backup(
        instance: Instance,
        _policy: String,
        _options: BackupOptions,
    ) -> Result<Started> {
        let size = instance.total_volume_size();
        Ok(Started::Done(OperationResult::BackupTaken(BackupTaken {
            external_id: format!("dummy-{}-{}", instance.uuid, random::hex(8)),
            kind: "FULL".into(),
            size,
            protected_size: size,
            created: None,
        })))
    }

    fn start_delete(_backup: BackupRef, _forced: bool) -> Result<Started> {
        Ok(Started::Done(OperationResult::Deleted))
    }

    fn start_restore(_backup: BackupRef, _target: RestoreTarget) -> Result<Started> {
        Ok(Started::Done(OperationResult::Restored))
    }

    fn start_restore_volume(request: VolumeRestoreRequest) -> Result<Started> {
        Ok(Started::Done(OperationResult::VolumeRestored(
            VolumeRestored {
                path: random::uuid(),
                size: request.volume.size,
            },
        )))
    }

    fn metrics(_zone: Zone, instances: Vec<Instance>) -> Result<Vec<Metric>> {
        Ok(instances
            .iter()
            .map(|instance| {
                let size = instance.total_volume_size();
                Metric {
                    instance_uuid: instance.uuid.clone(),
                    size,
                    protected_size: size,
                }
            })
            .collect())
    }

    fn storage_stats(_zone: Zone) -> Result<StorageStats> {
        Ok(StorageStats {
            used_bytes: 0,
            total_bytes: 0,
        })
    }
}

bnr_sdk::export_provider!(Dummy);
