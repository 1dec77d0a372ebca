//! Running a provider `start-*` call to completion, in one place.
//!
//! `Done` → the result at once. `Pending(handle)` → a `provider_operations` row (job, handle,
//! kind, backup, deadline) is written, the handle is polled with backoff until it finishes, fails
//! or passes its deadline (then it is cancelled), and the row is deleted in the same transaction
//! that records the outcome. A restart finds unfinished operations in that table.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::BackupService;
use super::error::{BackupError, BackupResult};
use super::providers::{BACKUP_OPERATION_TIMEOUT, DEFAULT_OPERATION_TIMEOUT_SECS};
use crate::jobs;
use crate::runtime::wit::{OperationResult, PollStatus, Started};
use crate::runtime::{CallContext, CallError, Provider};
use crate::store::{OpResult, now};

/// First wait before polling a pending operation: quick operations finish without much delay.
pub const POLL_INITIAL_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between two polls: bounds how late a finished operation is noticed while
/// keeping provider (and vendor) load low for operations that run for hours.
pub const POLL_MAX_DELAY: Duration = Duration::from_secs(10);

/// What a pending operation does (the `provider_operations.kind` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Backup,
    Delete,
    Restore,
    RestoreVolume,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Backup => "backup",
            OperationKind::Delete => "delete",
            OperationKind::Restore => "restore",
            OperationKind::RestoreVolume => "restore-volume",
        }
    }
}

/// A provider operation and everything needed to poll and record it.
pub struct Operation {
    pub provider: Arc<Provider>,
    pub ctx: CallContext,
    pub zone_id: i64,
    pub kind: OperationKind,
    pub backup_id: Option<i64>,
    /// What finishing the operation needs after a restart (JSON).
    pub payload: serde_json::Value,
}

impl BackupService {
    /// Seconds a pending operation may run ([`BACKUP_OPERATION_TIMEOUT`], at least 1).
    pub(super) fn operation_timeout(&self) -> i64 {
        self.settings
            .get_i64(BACKUP_OPERATION_TIMEOUT, None)
            .unwrap_or(DEFAULT_OPERATION_TIMEOUT_SECS)
            .max(1)
    }

    /// Drives `started` (the answer of a `start-*` call) to its end, then runs `finish` with
    /// the outcome in one transaction (which also forgets the pending operation). `finish`
    /// returns the command's outcome; its own `Err` rolls the transaction back.
    pub(crate) async fn complete_operation<T, F>(
        &self,
        op: Operation,
        started: Result<Started, CallError>,
        finish: F,
    ) -> BackupResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, BackupResult<OperationResult>) -> OpResult<BackupResult<T>>
            + Send
            + 'static,
    {
        let name = op.provider.name().to_string();
        let (result, row) = match started {
            Err(e) => {
                self.providers.record_failure_detail(&name, &e).await;
                (Err(BackupError::provider(&name, &e)), None)
            }
            Ok(Started::Done(r)) => (Ok(r), None),
            Ok(Started::Pending(handle)) => {
                let timeout = self.operation_timeout();
                let deadline = now().saturating_add(timeout);
                let row = match self.persist(&op, &handle, deadline).await {
                    Ok(row) => row,
                    Err(e) => {
                        // Nobody could ever finish it: stop it on the provider side.
                        cancel(&op, &handle).await;
                        return Err(e);
                    }
                };
                (poll(&op, &handle, deadline, timeout).await, Some(row))
            }
        };
        self.store
            .write(move |tx| {
                if let Some(id) = row {
                    tx.prepare_cached("DELETE FROM provider_operations WHERE id = ?1")?
                        .execute([id])?;
                }
                finish(tx, result).map_err(BackupError::from)
            })
            .await?
    }

    async fn persist(&self, op: &Operation, handle: &str, deadline: i64) -> BackupResult<i64> {
        let job_uuid = jobs::current_job_uuid();
        let (zone_id, provider, kind, backup_id) = (
            op.zone_id,
            op.provider.name().to_string(),
            op.kind.as_str(),
            op.backup_id,
        );
        let (handle, payload) = (handle.to_string(), op.payload.to_string());
        self.store
            .write(move |tx| {
                let job_id: Option<i64> = match &job_uuid {
                    Some(u) => tx
                        .prepare_cached("SELECT id FROM async_jobs WHERE uuid = ?1")?
                        .query_row([u], |r| r.get(0))
                        .optional()?,
                    None => None,
                };
                tx.prepare_cached(
                    "INSERT INTO provider_operations(job_id, zone_id, provider, handle, kind, backup_id,
                                                     payload, deadline, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    job_id, zone_id, provider, handle, kind, backup_id, payload, deadline,
                    now()
                ])?;
                Ok::<_, BackupError>(tx.last_insert_rowid())
            })
            .await
    }
}

/// Polls until the operation finishes, fails, or passes `deadline` (then cancels it).
pub(super) async fn poll(
    op: &Operation,
    handle: &str,
    deadline: i64,
    timeout: i64,
) -> BackupResult<OperationResult> {
    let name = op.provider.name();
    let mut delay = POLL_INITIAL_DELAY;
    loop {
        let remaining = Duration::from_secs(u64::try_from(deadline - now()).unwrap_or(0));
        tokio::time::sleep(delay.min(remaining.max(Duration::from_millis(1)))).await;
        match op.provider.poll_operation(&op.ctx, handle).await {
            Ok(PollStatus::Finished(result)) => return Ok(result),
            Ok(PollStatus::Failed(e)) => {
                return Err(BackupError::provider(name, &CallError::Provider(e)));
            }
            Ok(PollStatus::Running(progress)) => tracing::debug!(
                provider = name,
                kind = op.kind.as_str(),
                percent = progress.percent,
                message = %progress.message,
                "provider operation running"
            ),
            Err(e) if e.is_retryable() => tracing::warn!(
                provider = name,
                kind = op.kind.as_str(),
                error = %e,
                "polling a provider operation failed; retrying"
            ),
            Err(e) => return Err(BackupError::provider(name, &e)),
        }
        if now() >= deadline {
            cancel(op, handle).await;
            return Err(BackupError::Provider(format!(
                "Backup provider {name} did not finish the {} operation within {timeout} seconds; it was cancelled",
                op.kind.as_str()
            )));
        }
        delay = (delay * 2).min(POLL_MAX_DELAY);
    }
}

/// Best effort: a failed cancel is logged, the operation is failed either way.
async fn cancel(op: &Operation, handle: &str) {
    if let Err(e) = op.provider.cancel_operation(&op.ctx, handle).await {
        tracing::warn!(
            provider = op.provider.name(),
            kind = op.kind.as_str(),
            error = %e,
            "cancelling a provider operation failed"
        );
    }
}
