//! The scheduler's work done through the B&R service: scheduled backups and their retention
//! ([`ServiceWork`]), zone providers for the sync pass ([`ZoneProviders`]), and the job resume
//! hook that picks up provider operations after a restart ([`ResumeOperations`]).
//!
//! Nothing here re-implements a B&R rule: backups are taken and deleted through the same
//! service calls the API uses, on behalf of the instance owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::db::params;
use jiff::Timestamp;
use serde_json::json;

use super::sync::{OperationOrigin, ProviderResolver, SyncReport, Syncer, ZoneProvider};
use super::task::Background;
use super::tick::{ScheduledRun, ScheduledWork, TickError, TickReport, Ticker};
use crate::config::Settings;
use crate::identity::{self, Caller};
use crate::jobs::{INTERNAL_ERROR_CODE, Job, JobFailure, JobFuture, JobManager, ResumeHook};
use crate::service::{BackupError, BackupService, CreateBackup, PersistedOperation, Providers};
use crate::store::events::{self, Level, NewEvent, State};
use crate::store::{OpError, Store};

/// The result of a scheduled createBackup job that succeeded (the same as a manual one).
fn success() -> serde_json::Value {
    json!({"success": true})
}

/// A job failure from a service error; store details are logged, not shown.
fn failure(e: BackupError) -> JobFailure {
    let text = match &e {
        BackupError::Store(inner) => {
            tracing::error!(error = %inner, "scheduled backup failed on the store");
            "Internal error executing the scheduled backup".to_string()
        }
        other => other.to_string(),
    };
    JobFailure {
        code: INTERNAL_ERROR_CODE,
        text,
    }
}

/// The job's user as a caller. A run acts for its owner only while the owner (user and
/// account) is enabled: one queued before the owner was disabled, or resumed after a restart,
/// takes no backup and acts for nobody else.
async fn caller_of(store: &Store, user_id: i64) -> Result<Caller, BackupError> {
    let user = store.read(move |c| identity::get_user(c, user_id)).await?;
    if !user.is_enabled() {
        return Err(BackupError::Denied(format!(
            "The scheduled backup was not taken: account {} or its user {} is disabled",
            user.account.name, user.username
        )));
    }
    Ok(user.caller())
}

/// Scheduled runs through [`BackupService::create_backup`] (with the schedule id, so the backup
/// records it and its interval type), then retention through
/// [`BackupService::delete_backup`].
pub struct ServiceWork {
    service: Arc<BackupService>,
}

impl ServiceWork {
    pub fn new(service: Arc<BackupService>) -> ServiceWork {
        ServiceWork { service }
    }
}

impl ScheduledWork for ServiceWork {
    fn run(&self, run: ScheduledRun) -> JobFuture {
        let service = self.service.clone();
        Box::pin(async move {
            let store = service.store().clone();
            let caller = caller_of(&store, run.user_id).await.map_err(failure)?;
            let pending = service
                .create_backup(
                    &caller,
                    CreateBackup {
                        vm_id: run.vm_id,
                        quiesce: run.quiesce,
                        schedule_id: Some(run.schedule_id),
                        ..CreateBackup::default()
                    },
                )
                .await
                .map_err(failure)?;
            let created = pending.created.clone().unwrap_or_default();
            if let Some(backup_uuid) = pending.created.clone() {
                // Like a manual createBackup job, the job is about the backup it creates (the
                // service's restart recovery looks jobs up by it).
                let job = run.job_uuid.clone();
                store
                    .write(move |tx| {
                        tx.prepare_cached(
                            "UPDATE async_jobs SET instance_type = 'Backup', instance_uuid = ?1
                             WHERE uuid = ?2",
                        )?
                        .execute(params![backup_uuid, job])?;
                        Ok::<_, OpError>(())
                    })
                    .await
                    .map_err(|e| failure(e.into()))?;
            }
            pending.work.await.map_err(failure)?;
            tracing::info!(backup = %created, schedule = %run.schedule_uuid,
                "scheduled backup taken");
            apply_retention(&service, &caller, &run).await;
            Ok(success())
        })
    }
}

/// Retention (spec §4.4): if the schedule still exists with `max_backups > 0`, deletes its
/// oldest `BackedUp` backups beyond that number through the normal delete path. Manual backups
/// never count. A failed delete is logged (and recorded by the delete path); the run stays a
/// success because its backup was taken.
async fn apply_retention(service: &Arc<BackupService>, caller: &Caller, run: &ScheduledRun) {
    let schedule_id = run.schedule_id;
    let excess = service
        .store()
        .read(move |c| {
            let max: Option<i64> = c
                .prepare_cached("SELECT max_backups FROM backup_schedules WHERE id = ?1")?
                .query_row([schedule_id], |r| r.get(0))
                .ok();
            let Some(max) = max.filter(|m| *m > 0) else {
                return Ok::<_, OpError>(Vec::new());
            };
            let ids: Vec<i64> = c
                .prepare_cached(
                    "SELECT id FROM backups
                     WHERE backup_schedule_id = ?1 AND status = 'BackedUp' AND removed IS NULL
                     ORDER BY date, id",
                )?
                .query_map([schedule_id], |r| r.get(0))?
                .collect::<crate::store::db::Result<_>>()?;
            let excess = ids
                .len()
                .saturating_sub(usize::try_from(max).unwrap_or(usize::MAX));
            Ok(ids.into_iter().take(excess).collect())
        })
        .await;
    let excess = match excess {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(schedule = %run.schedule_uuid, error = %e, "retention: cannot list backups");
            return;
        }
    };
    for backup_id in excess {
        let outcome = match service.delete_backup(caller, backup_id, false).await {
            Ok(pending) => pending.work.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => tracing::info!(schedule = %run.schedule_uuid, backup_id,
                "retention deleted a backup"),
            Err(e) => tracing::warn!(schedule = %run.schedule_uuid, backup_id, error = %e,
                "retention could not delete a backup"),
        }
    }
}

/// Zone providers for the sync pass: the zone's configured provider and its call context.
pub struct ZoneProviders {
    providers: Arc<Providers>,
}

impl ZoneProviders {
    pub fn new(providers: Arc<Providers>) -> ZoneProviders {
        ZoneProviders { providers }
    }
}

impl ProviderResolver for ZoneProviders {
    fn zone_provider(&self, zone_id: i64, zone_uuid: &str) -> Option<ZoneProvider> {
        let provider = self.providers.for_zone(zone_id, zone_uuid).ok()?;
        let ctx = self
            .providers
            .call_context(&provider, zone_id, zone_uuid, None);
        Some(ZoneProvider { provider, ctx })
    }

    fn operation_provider(
        &self,
        zone_id: i64,
        zone_uuid: &str,
        origin: &OperationOrigin,
    ) -> Option<ZoneProvider> {
        let provider = self
            .providers
            .for_operation(
                &origin.provider,
                origin.version.as_deref(),
                origin.sha256.as_deref(),
            )
            .ok()?;
        let ctx = self
            .providers
            .call_context(&provider, zone_id, zone_uuid, None);
        Some(ZoneProvider { provider, ctx })
    }
}

/// The B&R commands whose jobs this hook answers for after a restart, with their event type.
const BNR_JOB_EVENTS: &[(&str, &str)] = &[
    ("createBackup", "BACKUP.CREATE"),
    ("deleteBackup", "BACKUP.DELETE"),
    ("restoreBackup", "BACKUP.RESTORE"),
    (
        "restoreVolumeFromBackupAndAttachToVM",
        "BACKUP.RESTORE.VOLUME.TO.VM",
    ),
    ("createVMFromBackup", "VM.CREATE"),
    (
        "assignVirtualMachineToBackupOffering",
        "BACKUP.OFFERING.ASSIGN",
    ),
    (
        "removeVirtualMachineFromBackupOffering",
        "BACKUP.OFFERING.REMOVE",
    ),
    ("importBackupOffering", "BACKUP.IMPORT.OFFERING"),
];

/// At start, for each B&R job a stopped process left pending: resume polling its provider
/// operation by the persisted handle when it can be resumed, otherwise record why not (an ERROR
/// event for the job's owner) and let the job manager fail it (530). Register it with
/// [`JobManager::add_resume_hook`] before `recover_interrupted`.
pub struct ResumeOperations {
    service: Arc<BackupService>,
}

impl ResumeOperations {
    pub fn new(service: Arc<BackupService>) -> ResumeOperations {
        ResumeOperations { service }
    }

    fn fail_with_event(&self, job: &Job, event_type: &str, why: &str) {
        let text = format!(
            "{} job {} was interrupted by a restart and cannot be resumed: {why}",
            job.cmd, job.uuid
        );
        let (account_id, domain_id, user_id) = (job.account_id, job.domain_id, job.user_id);
        let resource = job.instance_type.clone().zip(job.instance_uuid.clone());
        let event_type = event_type.to_string();
        // The backup of a createBackup job ends with the job: a replica that adopted the job
        // cannot wait for the start-up recovery, which only a process running alone does. The
        // job names its backup once the row exists; a scheduled run killed before that is found
        // through its schedule, whose in-flight job it still is.
        let backup = (job.cmd == "createBackup").then(|| match &resource {
            Some((kind, uuid)) if kind == "Backup" => uuid.clone(),
            _ => String::new(),
        });
        let job_id = job.id;
        // Start-up, before serving: a short blocking write is fine here (the hook is sync).
        let recorded = self.service.store().write_blocking(|tx| {
            if let Some(uuid) = &backup {
                tx.execute(
                    "UPDATE backups SET status = ?1, status_reason = ?2
                     WHERE status = ?4 AND removed IS NULL
                       AND (uuid = ?3 OR backup_schedule_id IN
                            (SELECT id FROM backup_schedules WHERE async_job_id = ?5))
                       AND NOT EXISTS (SELECT 1 FROM provider_operations p
                                       WHERE p.backup_id = backups.id)",
                    params![
                        crate::service::status::ERROR,
                        crate::service::INTERRUPTED_REASON,
                        uuid,
                        crate::service::status::BACKING_UP,
                        job_id
                    ],
                )?;
            }
            events::record(
                tx,
                &NewEvent {
                    event_type: &event_type,
                    level: Level::Error,
                    state: State::Completed,
                    description: &text,
                    account_id,
                    domain_id,
                    user_id: Some(user_id),
                    resource_type: resource.as_ref().map(|(t, _)| t.as_str()),
                    resource_uuid: resource.as_ref().map(|(_, u)| u.as_str()),
                },
            )
        });
        if let Err(e) = recorded {
            tracing::error!(job = %job.uuid, error = %e, "cannot record the interruption event");
        }
        tracing::warn!(job = %job.uuid, cmd = %job.cmd, reason = why, "interrupted job not resumable");
    }
}

impl ResumeHook for ResumeOperations {
    fn resume(&self, job: &Job) -> Option<JobFuture> {
        let (_, event_type) = BNR_JOB_EVENTS.iter().find(|(cmd, _)| *cmd == job.cmd)?;
        let job_id = job.id;
        let ops = self
            .service
            .store()
            .read_blocking(move |c| PersistedOperation::of_job(c, job_id));
        let ops = match ops {
            Ok(ops) => ops,
            Err(e) => {
                self.fail_with_event(job, event_type, &format!("cannot read its operations: {e}"));
                return None;
            }
        };
        // A job has at most one operation in flight (start-* calls are sequential).
        let Some(op) = ops.into_iter().next_back() else {
            self.fail_with_event(job, event_type, "no provider operation was in progress");
            return None;
        };
        if let Some(obstacle) = self.service.resume_obstacle(&op) {
            self.fail_with_event(job, event_type, &obstacle);
            return None;
        }
        let service = self.service.clone();
        let user_id = job.user_id;
        Some(Box::pin(async move {
            let caller = caller_of(service.store(), user_id).await.map_err(failure)?;
            service
                .resume_operation(caller, op)
                .await
                .map_err(failure)?;
            Ok(success())
        }))
    }
}

/// The scheduler as `bnr serve` runs it: the tick, the sync pass, and the loop running both.
/// Shared as an extension (`Arc<Scheduler>`); tests drive [`Scheduler::tick`] and
/// [`Scheduler::sync`] with their own clock.
pub struct Scheduler {
    ticker: Ticker,
    syncer: Arc<Syncer>,
    settings: Settings,
    heartbeat: Arc<AtomicI64>,
}

impl Scheduler {
    pub fn new(
        store: Store,
        settings: Settings,
        jobs: JobManager,
        service: Arc<BackupService>,
    ) -> Scheduler {
        let ticker = Ticker::new(
            store.clone(),
            settings.clone(),
            jobs.clone(),
            Arc::new(ServiceWork::new(service.clone())),
        );
        let resolver = Arc::new(ZoneProviders::new(service.providers().clone()));
        let syncer = Arc::new(Syncer::new(store, settings.clone(), jobs, resolver));
        Scheduler {
            ticker,
            syncer,
            settings,
            heartbeat: Arc::new(AtomicI64::new(0)),
        }
    }

    pub async fn tick(&self, now: Timestamp) -> Result<TickReport, TickError> {
        self.ticker.tick(now).await
    }

    pub async fn sync(&self, now: Timestamp) -> SyncReport {
        self.syncer.pass(now).await
    }

    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    /// Starts the background loop (every `backup.framework.sync.interval` seconds).
    pub fn spawn_loop(&self) -> tokio::task::JoinHandle<()> {
        self.spawn_loop_led(None)
    }

    /// [`Scheduler::spawn_loop`] on a replica of a cluster: ticks and syncs only while
    /// `leader` says this replica holds the scheduler lease, and at once when it gains it.
    pub fn spawn_loop_led(
        &self,
        leader: Option<tokio::sync::watch::Receiver<Option<i64>>>,
    ) -> tokio::task::JoinHandle<()> {
        Background {
            ticker: self.ticker.clone(),
            syncer: Some(self.syncer.clone()),
            settings: self.settings.clone(),
            heartbeat: self.heartbeat.clone(),
            leader,
        }
        .spawn()
    }

    /// Whether the background loop has ticked (or started) within two intervals plus a
    /// minute of `now`: `false` when it was never started or is stuck.
    pub fn ticked_recently(&self, now: i64) -> bool {
        let last = self.heartbeat.load(Ordering::Acquire);
        let interval = crate::scheduler::task::interval_from_setting(
            self.settings
                .get_i64(crate::config::BACKUP_SYNC_INTERVAL, None),
        );
        let allowed = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX / 4) * 2 + 60;
        last > 0 && now.saturating_sub(last) <= allowed
    }
}
