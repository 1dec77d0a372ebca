//! After a restart: B&R work whose job did not survive is ended cleanly, so no backup stays
//! `BackingUp` and no instance stays `Restoring` forever. Runs after the job manager offered
//! interrupted jobs to the resume hooks, so anything a hook resumed (its job still pending) is
//! left alone.

use crate::store::db::params;

use super::BackupService;
use super::error::BackupResult;
use super::model::status;
use crate::store::now;

/// Why work was ended at start.
pub const INTERRUPTED_REASON: &str =
    "Interrupted because the management server stopped before the operation finished";

/// What [`BackupService::recover_interrupted`] ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    pub backups_failed: usize,
    pub instances_expunged: usize,
    pub instances_stopped: usize,
    pub operations_dropped: usize,
}

impl BackupService {
    pub async fn recover_interrupted(&self) -> BackupResult<Recovered> {
        self.store
            .write(|tx| {
                let ts = now();
                let backups_failed = tx.execute(
                    "UPDATE backups SET status = ?1, status_reason = ?2
                     WHERE status = ?3 AND removed IS NULL AND NOT EXISTS (
                         SELECT 1 FROM async_jobs j WHERE j.instance_uuid = backups.uuid AND j.status = 0)",
                    params![status::ERROR, INTERRUPTED_REASON, status::BACKING_UP],
                )?;
                // Instances allocated by an interrupted createVMFromBackup hold no data: expunge.
                let orphans = "SELECT v.id FROM vms v WHERE v.state = 'Restoring' AND v.removed IS NULL
                     AND EXISTS (SELECT 1 FROM async_jobs j WHERE j.instance_uuid = v.uuid
                                 AND j.cmd = 'createVMFromBackup' AND j.status <> 0)";
                tx.execute(
                    &format!(
                        "UPDATE volumes SET state = 'Expunged', removed = ?1
                         WHERE removed IS NULL AND vm_id IN ({orphans})"
                    ),
                    [ts],
                )?;
                let instances_expunged = tx.execute(
                    &format!("UPDATE vms SET state = 'Expunging', removed = ?1 WHERE id IN ({orphans})"),
                    [ts],
                )?;
                // In-place restores that no pending job drives any more: back to Stopped. Per
                // instance: a restore still pending for one instance keeps only that one.
                let driven = |vm_id: &str| {
                    format!(
                        "EXISTS (SELECT 1 FROM async_jobs j WHERE j.status = 0 AND (
                             (j.cmd = 'restoreBackup' AND j.instance_uuid IN
                                 (SELECT b.uuid FROM backups b WHERE b.vm_id = {vm_id}))
                             OR (j.cmd = 'createVMFromBackup' AND j.instance_uuid =
                                 (SELECT v.uuid FROM vms v WHERE v.id = {vm_id}))))"
                    )
                };
                tx.execute(
                    &format!(
                        "UPDATE volumes SET state = 'Ready' WHERE state = 'Restoring' AND removed IS NULL
                         AND NOT {}",
                        driven("volumes.vm_id")
                    ),
                    [],
                )?;
                let instances_stopped = tx.execute(
                    &format!(
                        "UPDATE vms SET state = 'Stopped' WHERE state = 'Restoring' AND removed IS NULL
                         AND NOT {}",
                        driven("vms.id")
                    ),
                    [],
                )?;
                let operations_dropped = tx.execute(
                    "DELETE FROM provider_operations WHERE job_id IS NULL OR NOT EXISTS (
                         SELECT 1 FROM async_jobs j WHERE j.id = provider_operations.job_id AND j.status = 0)",
                    [],
                )?;
                Ok(Recovered {
                    backups_failed,
                    instances_expunged,
                    instances_stopped,
                    operations_dropped,
                })
            })
            .await
    }
}
