//! Running a provider `start-*` call to completion, in one place.
//!
//! `Done` → the result at once. `Pending(handle)` → a `provider_operations` row (job, handle,
//! kind, backup, deadline) is written, the handle is polled with backoff until it finishes, fails
//! or passes its deadline (then it is cancelled), and the row is deleted in the same transaction
//! that records the outcome. A restart finds unfinished operations in that table.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::store::db::{Connection, OptionalExtension, params};

use super::BackupService;
use super::error::{BackupError, BackupResult};
use super::providers::{
    BACKUP_OPERATION_TIMEOUT, BACKUP_OPERATION_TIMEOUTS, DEFAULT_OPERATION_TIMEOUT_SECS, Providers,
};
use crate::jobs::{self, OutcomeSeal};
use crate::store::events::{self, Level, NewEvent, State};
use crate::store::{OpResult, Store, now};
use bnr_runtime::types::{OperationResult, PollStatus, Started};
use bnr_runtime::{CallContext, CallError, Provider};

/// First wait before polling a pending operation: quick operations finish without much delay.
pub const POLL_INITIAL_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between two polls: bounds how late a finished operation is noticed while
/// keeping provider (and vendor) load low for operations that run for hours.
pub const POLL_MAX_DELAY: Duration = Duration::from_secs(10);

/// Retryable poll failures in a row after which a WARN event tells the owner the operation is
/// in trouble (polling goes on until the deadline).
pub const POLL_FAILURES_BEFORE_EVENT: u32 = 5;
/// Longest progress message kept from a provider.
const PROGRESS_MESSAGE_MAX_CHARS: usize = 256;

/// What a pending operation does (the `provider_operations.kind` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Backup,
    Delete,
    Restore,
    RestoreVolume,
}

impl OperationKind {
    pub const ALL: [OperationKind; 4] = [
        OperationKind::Backup,
        OperationKind::Delete,
        OperationKind::Restore,
        OperationKind::RestoreVolume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Backup => "backup",
            OperationKind::Delete => "delete",
            OperationKind::Restore => "restore",
            OperationKind::RestoreVolume => "restore-volume",
        }
    }

    /// How long an operation of this kind may stay pending by default: a full backup or a
    /// restore of a large instance can take most of a day; one volume is smaller; a delete is
    /// bookkeeping on the vendor side.
    pub fn default_deadline_secs(self) -> i64 {
        match self {
            OperationKind::Backup | OperationKind::Restore => 86_400,
            OperationKind::RestoreVolume => 21_600,
            OperationKind::Delete => 3_600,
        }
    }
}

/// One entry of [`BACKUP_OPERATION_TIMEOUTS`]: `provider:kind=seconds`, `kind` `None` for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutEntry {
    pub provider: String,
    pub kind: Option<OperationKind>,
    pub seconds: i64,
}

/// Parses [`BACKUP_OPERATION_TIMEOUTS`] (empty: no entry).
pub fn parse_timeouts(text: &str) -> Result<Vec<TimeoutEntry>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || format!("`{entry}` is not provider:kind=seconds");
            let (target, seconds) = entry.split_once('=').ok_or_else(bad)?;
            let (provider, kind) = target.trim().split_once(':').ok_or_else(bad)?;
            let provider = provider.trim().to_lowercase();
            if provider.is_empty() {
                return Err(bad());
            }
            let kind = match kind.trim() {
                "*" => None,
                k => Some(
                    OperationKind::ALL
                        .into_iter()
                        .find(|o| o.as_str() == k)
                        .ok_or_else(|| {
                            format!(
                                "unknown kind `{k}` (backup, delete, restore, restore-volume or *)"
                            )
                        })?,
                ),
            };
            let seconds: i64 =
                seconds
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        format!("`{}` is not a positive number of seconds", seconds.trim())
                    })?;
            Ok(TimeoutEntry {
                provider,
                kind,
                seconds,
            })
        })
        .collect()
}

/// The deadline of an operation: the provider's entry for the kind, then its `*` entry, then
/// [`BACKUP_OPERATION_TIMEOUT`] when set to other than its default, then the kind's default.
pub fn deadline_secs(
    entries: &[TimeoutEntry],
    global: Option<i64>,
    provider: &str,
    kind: OperationKind,
) -> i64 {
    let of_provider = |k: Option<OperationKind>| {
        entries
            .iter()
            .find(|e| e.provider.eq_ignore_ascii_case(provider) && e.kind == k)
            .map(|e| e.seconds)
    };
    of_provider(Some(kind))
        .or_else(|| of_provider(None))
        .or(global.filter(|g| *g != DEFAULT_OPERATION_TIMEOUT_SECS))
        .unwrap_or_else(|| kind.default_deadline_secs())
        .max(1)
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
    /// Seconds a pending operation of `provider` may run (see [`deadline_secs`]).
    pub(super) fn operation_timeout(&self, provider: &str, kind: OperationKind) -> i64 {
        // The setting is validated on update, so a parse failure can only be a value written
        // before the check existed: the other rules apply then.
        let entries = self
            .settings
            .get(BACKUP_OPERATION_TIMEOUTS, None)
            .and_then(|text| parse_timeouts(&text).ok())
            .unwrap_or_default();
        deadline_secs(
            &entries,
            self.settings.get_i64(BACKUP_OPERATION_TIMEOUT, None),
            provider,
            kind,
        )
    }

    /// Drives `started` (the answer of a `start-*` call) to its end, then runs `finish` with
    /// the outcome in one transaction (which also forgets the pending operation). `finish`
    /// returns the command's outcome; its own `Err` rolls the transaction back. `last`: the
    /// job's seal when this is the work's last step, to record the job's outcome in the same
    /// transaction.
    pub(crate) async fn complete_operation<T, F>(
        &self,
        op: Operation,
        started: Result<Started, CallError>,
        last: Option<OutcomeSeal>,
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
                let timeout = self.operation_timeout(&name, op.kind);
                let deadline = now().saturating_add(timeout);
                let row = match self.persist(&op, &handle, deadline).await {
                    Ok(row) => row,
                    Err(e) => {
                        // Nobody could ever finish it: stop it on the provider side.
                        cancel(&op.provider, &op.ctx, op.kind, &handle).await;
                        return Err(e);
                    }
                };
                (
                    poll(
                        &self.store,
                        &self.providers,
                        row,
                        op,
                        &handle,
                        deadline,
                        timeout,
                    )
                    .await,
                    Some(row),
                )
            }
        };
        let owner = jobs::current_owner();
        let (result, sealed) = self
            .store
            .write(move |tx| {
                if let Some(id) = row
                    && !forget_operation(tx, id, owner)?
                {
                    // Another replica adopted the operation (this one was declared dead): its
                    // outcome is theirs to record; nothing is written here.
                    return Err(BackupError::refused(
                        "the operation was taken over by another management server",
                    ));
                }
                let result = finish(tx, result)?;
                let sealed = match last {
                    Some(seal) if seal.record(tx, &result)? => Some(seal),
                    _ => None,
                };
                Ok((result, sealed))
            })
            .await?;
        if let Some(seal) = sealed {
            seal.committed();
        }
        result
    }

    async fn persist(&self, op: &Operation, handle: &str, deadline: i64) -> BackupResult<i64> {
        let job_uuid = jobs::current_job_uuid();
        let (zone_id, provider, kind, backup_id) = (
            op.zone_id,
            op.provider.name().to_string(),
            op.kind.as_str(),
            op.backup_id,
        );
        let (version, sha256) = (
            op.provider.version().to_string(),
            op.provider.sha256().to_string(),
        );
        let (handle, payload) = (handle.to_string(), op.payload.to_string());
        let owner = jobs::current_owner();
        self.store
            .write(move |tx| {
                let job_id: Option<i64> = match &job_uuid {
                    Some(u) => tx
                        .prepare_cached("SELECT id FROM async_jobs WHERE uuid = ?1")?
                        .query_row([u], |r| r.get(0))
                        .optional()?,
                    None => None,
                };
                let inserted_id = tx.insert(
                    "INSERT INTO provider_operations(job_id, zone_id, provider, handle, kind, backup_id,
                                                     payload, deadline, created, provider_version,
                                                     provider_sha256, owner, owner_epoch)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        job_id,
                        zone_id,
                        provider,
                        handle,
                        kind,
                        backup_id,
                        payload,
                        deadline,
                        now(),
                        version,
                        sha256,
                        owner.map(|o| o.replica),
                        owner.map(|o| o.epoch),
                    ],
                )?;
                Ok::<_, BackupError>(inserted_id)
            })
            .await
    }
}

/// Deletes the finished operation's row if it is still this owner's (always when running
/// alone); `false` when another replica adopted it.
pub(super) fn forget_operation(
    tx: &Connection,
    id: i64,
    owner: Option<jobs::Owner>,
) -> OpResult<bool> {
    let sql = format!(
        "DELETE FROM provider_operations WHERE id = ?1{}",
        jobs::owner_fence(owner, 2)
    );
    let mut st = tx.prepare_cached(&sql)?;
    let n = match owner {
        None => st.execute([id])?,
        Some(o) => st.execute(params![id, o.replica, o.epoch])?,
    };
    if n == 0 && owner.is_none() {
        // Running alone, a missing row only means it was already forgotten.
        return Ok(true);
    }
    Ok(n > 0)
}

/// The component polling an operation, resolved again before every poll: between polls the
/// operation holds its starting version only weakly, so that version can be deleted when the
/// version serving its name adopts its operations (then that one polls on).
struct Poller<'a> {
    providers: &'a Providers,
    started_on: Weak<Provider>,
    name: String,
    version: String,
    /// The successor that took the operation over, with the call context for it.
    successor: Option<(Arc<Provider>, CallContext)>,
}

impl Poller<'_> {
    /// The component and context for the next call, or why none can make it.
    fn current(&mut self, op: &OperationState) -> BackupResult<(Arc<Provider>, CallContext)> {
        if let Some(provider) = self.started_on.upgrade() {
            return Ok((provider, op.ctx.clone()));
        }
        if let Some((provider, ctx)) = &self.successor {
            return Ok((provider.clone(), ctx.clone()));
        }
        let next = self
            .providers
            .for_operation(&self.name, Some(&self.version), None)?;
        let host = op.ctx.host.as_ref().map(|h| h.address.clone());
        let mut ctx =
            self.providers
                .call_context(&next, op.zone_id, &op.ctx.zone_uuid, host.as_deref());
        ctx.backup_uuid = op.ctx.backup_uuid.clone();
        tracing::info!(
            provider = %self.name,
            from_version = %self.version,
            version = next.version(),
            sha256 = next.sha256(),
            kind = op.kind.as_str(),
            "a later version takes over a pending provider operation"
        );
        self.successor = Some((next.clone(), ctx.clone()));
        Ok((next, ctx))
    }
}

/// What polling keeps of an [`Operation`]: everything but the strong hold on its provider.
struct OperationState {
    ctx: CallContext,
    zone_id: i64,
    kind: OperationKind,
}

/// Polls until the operation finishes, fails, or passes `deadline` (then cancels it). `row` is
/// its `provider_operations` row: progress is recorded there (and on its job), and a run of
/// failed polls raises an event.
pub(super) async fn poll(
    store: &Store,
    providers: &Providers,
    row: i64,
    op: Operation,
    handle: &str,
    deadline: i64,
    timeout: i64,
) -> BackupResult<OperationResult> {
    let Operation {
        provider,
        ctx,
        zone_id,
        kind,
        ..
    } = op;
    let mut poller = Poller {
        providers,
        started_on: Arc::downgrade(&provider),
        name: provider.name().to_string(),
        version: provider.version().to_string(),
        successor: None,
    };
    // From here on the starting version is held only during a call.
    drop(provider);
    let op = OperationState { ctx, zone_id, kind };
    let name = poller.name.clone();
    let name = name.as_str();
    // The operation is persisted: a shutdown need not wait for it (it resumes after a restart).
    let _waiting = jobs::waiting_on_persisted_operation();
    let mut delay = POLL_INITIAL_DELAY;
    let mut failures_in_a_row = 0u32;
    let mut last_progress = None;
    loop {
        let remaining = Duration::from_secs(u64::try_from(deadline - now()).unwrap_or(0));
        tokio::time::sleep(delay.min(remaining.max(Duration::from_millis(1)))).await;
        let (provider, ctx) = poller.current(&op)?;
        let answer = provider.poll_operation(&ctx, handle).await;
        drop(provider);
        match answer {
            Ok(PollStatus::Finished(result)) => return Ok(result),
            Ok(PollStatus::Failed(e)) => {
                return Err(BackupError::provider(name, &CallError::Provider(e)));
            }
            Ok(PollStatus::Running(progress)) => {
                failures_in_a_row = 0;
                tracing::debug!(
                    provider = name,
                    kind = op.kind.as_str(),
                    percent = progress.percent,
                    message = %progress.message,
                    "provider operation running"
                );
                let percent = progress.percent.min(100);
                let message: String = progress
                    .message
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(PROGRESS_MESSAGE_MAX_CHARS)
                    .collect();
                // Only a change is written: a long operation polled every few seconds with the
                // same answer costs no writes.
                if last_progress.as_ref() != Some(&(percent, message.clone())) {
                    if let Err(e) = record_progress(store, row, percent, &message).await {
                        tracing::warn!(error = %e, "cannot record a provider operation's progress");
                    }
                    last_progress = Some((percent, message));
                }
            }
            Err(e) if e.is_retryable() => {
                failures_in_a_row += 1;
                tracing::warn!(
                    provider = name,
                    kind = op.kind.as_str(),
                    zone = %op.ctx.zone_uuid,
                    error = %e,
                    failures_in_a_row,
                    "polling a provider operation failed; retrying"
                );
                if failures_in_a_row == POLL_FAILURES_BEFORE_EVENT {
                    let text = format!(
                        "Backup provider {name} did not answer {failures_in_a_row} polls in a row for a {} operation (last error: {e}); retrying until its deadline",
                        op.kind.as_str()
                    );
                    if let Err(e) = record_poll_trouble(store, row, &text).await {
                        tracing::warn!(error = %e, "cannot record a provider operation's trouble");
                    }
                }
            }
            Err(e) => return Err(BackupError::provider(name, &e)),
        }
        if now() >= deadline {
            if let Ok((provider, ctx)) = poller.current(&op) {
                cancel(&provider, &ctx, op.kind, handle).await;
            }
            return Err(BackupError::Provider(format!(
                "Backup provider {name} did not finish the {} operation within {timeout} seconds; it was cancelled",
                op.kind.as_str()
            )));
        }
        delay = (delay * 2).min(POLL_MAX_DELAY);
    }
}

/// Stores the operation's progress, and its percent as its job's `jobprocstatus`.
async fn record_progress(store: &Store, row: i64, percent: u8, message: &str) -> OpResult<()> {
    let message = message.to_string();
    store
        .write(move |tx| {
            tx.prepare_cached(
                "UPDATE provider_operations SET percent = ?1, message = ?2 WHERE id = ?3",
            )?
            .execute(params![percent, message, row])?;
            tx.prepare_cached(
                "UPDATE async_jobs SET proc_status = ?1 WHERE status = 0 AND id = \
                 (SELECT job_id FROM provider_operations WHERE id = ?2)",
            )?
            .execute(params![percent, row])?;
            Ok(())
        })
        .await
}

/// A WARN event on the backup the operation works on, for its owner to see in `listEvents`.
async fn record_poll_trouble(store: &Store, row: i64, text: &str) -> OpResult<()> {
    let text = text.to_string();
    store
        .write(move |tx| {
            let owner: Option<(i64, i64, String, String)> = tx
                .prepare_cached(
                    "SELECT b.account_id, b.domain_id, b.uuid, o.provider FROM provider_operations o \
                     JOIN backups b ON b.id = o.backup_id WHERE o.id = ?1",
                )?
                .query_row([row], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let Some((account_id, domain_id, backup_uuid, provider)) = owner else {
                return Ok(());
            };
            events::record_for_provider(
                tx,
                &NewEvent {
                    event_type: "BACKUP.OPERATION.STALLED",
                    level: Level::Warn,
                    state: State::Completed,
                    description: &text,
                    account_id,
                    domain_id,
                    user_id: None,
                    resource_type: Some("Backup"),
                    resource_uuid: Some(&backup_uuid),
                },
                &provider,
            )?;
            Ok(())
        })
        .await
}

/// Best effort: a failed cancel is logged, the operation is failed either way.
async fn cancel(provider: &Provider, ctx: &CallContext, kind: OperationKind, handle: &str) {
    if let Err(e) = provider.cancel_operation(ctx, handle).await {
        tracing::warn!(
            provider = provider.name(),
            kind = kind.as_str(),
            error = %e,
            "cancelling a provider operation failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_default_deadline() {
        let d = |kind| deadline_secs(&[], Some(DEFAULT_OPERATION_TIMEOUT_SECS), "dummy", kind);
        assert_eq!(d(OperationKind::Backup), 86_400);
        assert_eq!(d(OperationKind::Restore), 86_400);
        assert_eq!(d(OperationKind::RestoreVolume), 21_600);
        assert_eq!(d(OperationKind::Delete), 3_600);
    }

    #[test]
    fn a_changed_global_timeout_applies_to_every_kind() {
        for kind in OperationKind::ALL {
            assert_eq!(deadline_secs(&[], Some(60), "dummy", kind), 60);
        }
    }

    #[test]
    fn a_provider_entry_wins_by_kind_then_by_star() {
        let entries = parse_timeouts("veeam:backup=172800, veeam:*=7200,dummy:delete=10").unwrap();
        assert_eq!(
            deadline_secs(&entries, Some(60), "veeam", OperationKind::Backup),
            172_800
        );
        assert_eq!(
            deadline_secs(&entries, Some(60), "Veeam", OperationKind::Delete),
            7_200
        );
        assert_eq!(
            deadline_secs(&entries, None, "dummy", OperationKind::Delete),
            10
        );
        assert_eq!(
            deadline_secs(&entries, None, "dummy", OperationKind::Backup),
            86_400
        );
    }

    #[test]
    fn malformed_timeouts_are_refused_with_the_reason() {
        assert_eq!(parse_timeouts("").unwrap(), vec![]);
        for bad in [
            "veeam",
            "veeam=5",
            ":backup=5",
            "veeam:copy=5",
            "veeam:backup=0",
            "veeam:*=x",
        ] {
            assert!(parse_timeouts(bad).is_err(), "{bad}");
        }
    }
}
