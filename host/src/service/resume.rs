//! Resuming a provider operation a stopped process left pending, from its persisted
//! `provider_operations` row: poll the handle again (until it finishes, fails or passes its
//! deadline) and record the outcome exactly as the original job would have. The scheduler's job
//! resume hook (`scheduler::service`) calls this at start.
//!
//! Backup and delete operations are resumable: everything finishing them needs is in the store.
//! Restores are not (their finishing steps live in the interrupted job); those jobs are failed
//! and [`BackupService::recover_interrupted`] puts their instances back.

use std::sync::Arc;

use crate::store::db::Connection;

use super::backups::{NewBackup, finish_backup, finish_delete};
use super::error::{BackupError, BackupResult};
use super::model::{get_backup, get_offering};
use super::operations::{Operation, OperationKind, forget_operation, poll};
use super::{BackupService, instance_of};
use crate::identity::Caller;
use crate::inventory::vm;
use crate::store::OpResult;
use bnr_runtime::types::DeleteGranularity;

/// A `provider_operations` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedOperation {
    pub id: i64,
    pub job_id: Option<i64>,
    pub zone_id: i64,
    pub provider: String,
    pub handle: String,
    pub kind: String,
    pub backup_id: Option<i64>,
    pub payload: String,
    pub deadline: i64,
    /// The provider version and component it was started on (`None` for rows written before
    /// they were recorded).
    pub provider_version: Option<String>,
    pub provider_sha256: Option<String>,
}

impl PersistedOperation {
    /// The operations a job left pending, oldest first.
    pub fn of_job(conn: &Connection, job_id: i64) -> OpResult<Vec<PersistedOperation>> {
        let mut st = conn.prepare_cached(
            "SELECT id, job_id, zone_id, provider, handle, kind, backup_id, payload, deadline,
                    provider_version, provider_sha256
             FROM provider_operations WHERE job_id = ?1 ORDER BY id",
        )?;
        let ops = st
            .query_map([job_id], |r| {
                Ok(PersistedOperation {
                    id: r.get(0)?,
                    job_id: r.get(1)?,
                    zone_id: r.get(2)?,
                    provider: r.get(3)?,
                    handle: r.get(4)?,
                    kind: r.get(5)?,
                    backup_id: r.get(6)?,
                    payload: r.get(7)?,
                    deadline: r.get(8)?,
                    provider_version: r.get(9)?,
                    provider_sha256: r.get(10)?,
                })
            })?
            .collect::<crate::store::db::Result<Vec<_>>>()?;
        Ok(ops)
    }

    fn kind(&self) -> Option<OperationKind> {
        match self.kind.as_str() {
            "backup" => Some(OperationKind::Backup),
            "delete" => Some(OperationKind::Delete),
            _ => None,
        }
    }
}

impl BackupService {
    /// The component that finishes `op`: the one it started on, or a compatible successor.
    fn provider_of(&self, op: &PersistedOperation) -> BackupResult<Arc<bnr_runtime::Provider>> {
        self.providers.for_operation(
            &op.provider,
            op.provider_version.as_deref(),
            op.provider_sha256.as_deref(),
        )
    }

    /// Why `op` cannot be resumed by this process, or `None` when it can.
    pub fn resume_obstacle(&self, op: &PersistedOperation) -> Option<String> {
        if op.kind().is_none() {
            return Some(format!(
                "a {} operation cannot be resumed after a restart",
                op.kind
            ));
        }
        if op.backup_id.is_none() {
            return Some("the operation names no backup".to_string());
        }
        self.provider_of(op).err().map(|e| e.to_string())
    }

    /// Polls `op` to its end and records the outcome as its job would have, on behalf of
    /// `caller` (the job's user). The row is deleted in the transaction recording the outcome.
    pub async fn resume_operation(
        self: &Arc<Self>,
        caller: Caller,
        op: PersistedOperation,
    ) -> BackupResult<()> {
        if let Some(obstacle) = self.resume_obstacle(&op) {
            return Err(BackupError::refused(obstacle));
        }
        let kind = op
            .kind()
            .ok_or_else(|| BackupError::refused("unknown operation"))?;
        let backup_id = op
            .backup_id
            .ok_or_else(|| BackupError::refused("the operation names no backup"))?;
        let provider = self.provider_of(&op)?;
        let (backup, offering, vm) = self
            .store
            .read(move |c| {
                let backup = get_backup(c, backup_id)?.ok_or_else(|| {
                    BackupError::refused(format!("Backup {backup_id} no longer exists"))
                })?;
                let offering = get_offering(c, backup.offering_id)?.ok_or_else(|| {
                    BackupError::refused("Backup offering of the backup not found")
                })?;
                let vm = match backup.vm_id {
                    Some(id) => {
                        let vm = vm::get_vm(c, id)?;
                        let instance = instance_of(c, &vm)?;
                        Some((vm, instance))
                    }
                    None => None,
                };
                Ok::<_, BackupError>((backup, offering, vm))
            })
            .await?;
        let host = vm.as_ref().and_then(|(v, _)| v.host_address.clone());
        let ctx = self
            .providers
            .call_context(
                &provider,
                backup.zone_id,
                &backup.zone_uuid,
                host.as_deref(),
            )
            .for_backup(&backup.uuid);
        let name = provider.name().to_string();
        let chain = provider.info().capabilities.delete_granularity == DeleteGranularity::Chain;
        let timeout = self.operation_timeout(&name, kind);
        // Moved into the poll, which holds it only between calls (a successor may take over).
        let operation = Operation {
            provider,
            ctx,
            zone_id: op.zone_id,
            kind,
            backup_id: Some(backup_id),
            payload: serde_json::from_str(&op.payload).unwrap_or_default(),
        };
        tracing::info!(provider = %op.provider, kind = %op.kind, backup = %backup.uuid,
            "resuming a provider operation after a restart");
        let outcome = poll(
            &self.store,
            &self.providers,
            op.id,
            operation,
            &op.handle,
            op.deadline,
            timeout,
        )
        .await;
        let op_id = op.id;
        let owner = crate::jobs::current_owner();
        self.store
            .write(move |tx| {
                if !forget_operation(tx, op_id, owner)? {
                    return Err(BackupError::refused(
                        "the operation was taken over by another management server",
                    ));
                }
                let recorded = match kind {
                    OperationKind::Backup => {
                        let (vm, instance) = vm.ok_or_else(|| {
                            BackupError::refused("The Instance of the backup no longer exists")
                        })?;
                        let new = NewBackup {
                            backup_id,
                            uuid: backup.uuid.clone(),
                            vm,
                            offering,
                            instance,
                        };
                        finish_backup(tx, &caller, &new, &name, outcome)?.map(|_| ())
                    }
                    _ => finish_delete(tx, &caller, &backup, &offering, chain, outcome)?,
                };
                Ok::<_, BackupError>(recorded)
            })
            .await?
    }
}
