//! One scheduler tick: reap the jobs of finished scheduled runs (moving each schedule to its
//! next slot), then start every due schedule exactly once.
//!
//! The tick takes the instant it runs at (`now`) instead of reading a clock, so tests drive
//! simulated days without sleeping and the loop ([`super::task`]) just passes the wall clock.
//!
//! Exactly once per slot: a due schedule's job row, its `BACKUP.CREATE` *Scheduled* event and
//! `async_job_id` are written in one transaction, and a schedule with a job in flight is never
//! due. Its next slot is computed only when the job is terminal (success or failure, including a
//! job failed because the process stopped), from the later of the start and the end of the run
//! (at the latest the tick time) — so slots missed while bnr was down run once, not once per
//! missed slot, and a slot passing between the end of a run and the next tick is kept.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::db::{Connection, OptionalExtension, Transaction, params};
use jiff::Timestamp;

use super::schedule::{IntervalType, Schedule};
use crate::config::{BACKUP_FRAMEWORK_ENABLED, Settings};
use crate::jobs::{JobFuture, JobManager, JobSpec, Owner};
use crate::store::events::{self, Level, NewEvent, State};
use crate::store::{OpError, Store};

/// Command name of the jobs the scheduler enqueues (CloudStack submits the same command).
pub const SCHEDULED_JOB_CMD: &str = "createBackup";

/// Fallback gap before retrying a schedule whose stored definition no longer parses (e.g. the
/// time-zone database dropped its zone): long enough not to spin, short enough to notice.
const UNPARSABLE_SCHEDULE_RETRY_SECS: i64 = 3600;

/// Everything the work of one scheduled run needs; handed to [`ScheduledWork::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    pub job_uuid: String,
    pub schedule_id: i64,
    pub schedule_uuid: String,
    pub interval: IntervalType,
    /// Retention: keep at most this many `BackedUp` backups of the schedule (0 = keep all).
    pub max_backups: i64,
    pub quiesce: Option<bool>,
    /// The slot this run is for.
    pub slot: i64,
    pub vm_id: i64,
    pub vm_uuid: String,
    pub zone_id: i64,
    /// The instance owner, on whose behalf the job runs.
    pub account_id: i64,
    pub domain_id: i64,
    pub user_id: i64,
}

/// The work of a scheduled createBackup job: take the backup through the normal create path,
/// then apply the schedule's retention. Implemented over the B&R service; tests and benchmarks
/// may plug in their own.
pub trait ScheduledWork: Send + Sync + 'static {
    fn run(&self, run: ScheduledRun) -> JobFuture;
}

/// Why a due schedule did not start this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    OfferingMissing,
    OfferingNotUserDriven,
    ZoneDisabled,
    OwnerDisabled,
    InstanceDestroyed,
    NoUser,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OfferingMissing => "the instance's backup offering no longer exists",
            SkipReason::OfferingNotUserDriven => {
                "the backup offering does not allow user-driven backups"
            }
            SkipReason::ZoneDisabled => "backup and recovery is disabled for the zone",
            SkipReason::OwnerDisabled => "the instance owner's account is disabled or removed",
            SkipReason::InstanceDestroyed => "the instance is destroyed",
            SkipReason::NoUser => "the instance owner has no user to run the job as",
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Schedules whose finished job was reaped and that moved to their next slot.
    pub reaped: usize,
    /// Jobs started (job uuids).
    pub started: Vec<String>,
    /// Schedules deleted because their instance is gone or no longer assigned to an offering.
    pub deleted: usize,
    /// Due schedules left due for now, with the reason.
    pub skipped: Vec<(String, SkipReason)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error(transparent)]
    Store(#[from] OpError),
}

impl From<crate::store::StoreError> for TickError {
    fn from(e: crate::store::StoreError) -> Self {
        TickError::Store(OpError::Store(e))
    }
}

impl From<crate::store::db::Error> for TickError {
    fn from(e: crate::store::db::Error) -> Self {
        TickError::Store(OpError::from(e))
    }
}

/// The tick: selection and bookkeeping over the store, the work through [`ScheduledWork`].
#[derive(Clone)]
pub struct Ticker {
    store: Store,
    settings: Settings,
    jobs: JobManager,
    work: Arc<dyn ScheduledWork>,
}

/// A due schedule as the selection query sees it.
#[derive(Debug)]
struct Due {
    id: i64,
    uuid: String,
    interval: String,
    max_backups: i64,
    quiesce: Option<bool>,
    next_run: i64,
    /// Owner recorded on the schedule (used when the instance row is gone).
    owner: (i64, i64),
    vm: Option<DueVm>,
}

#[derive(Debug)]
struct DueVm {
    id: i64,
    uuid: String,
    name: String,
    removed: bool,
    state: String,
    offering_id: Option<i64>,
    account_id: i64,
    domain_id: i64,
    zone_id: i64,
    offering: Option<(bool, bool)>, // (user_driven, removed)
    account_usable: bool,
}

enum Verdict {
    Start,
    Delete(&'static str),
    Skip(SkipReason),
}

impl Ticker {
    pub fn new(
        store: Store,
        settings: Settings,
        jobs: JobManager,
        work: Arc<dyn ScheduledWork>,
    ) -> Ticker {
        Ticker {
            store,
            settings,
            jobs,
            work,
        }
    }

    /// Runs one tick at `now`: reap, then start due schedules. Jobs start after the commit.
    pub async fn tick(&self, now: Timestamp) -> Result<TickReport, TickError> {
        let now_s = now.as_second();
        let reaped = self.store.write(move |tx| reap_finished(tx, now_s)).await?;
        let due = self.store.read(move |conn| select_due(conn, now_s)).await?;
        let mut report = TickReport {
            reaped,
            ..TickReport::default()
        };
        if due.is_empty() {
            return Ok(report);
        }
        let mut zone_enabled: HashMap<i64, bool> = HashMap::new();
        let global_enabled = self.settings.get_bool(BACKUP_FRAMEWORK_ENABLED, None);
        let mut verdicts = Vec::with_capacity(due.len());
        for d in due {
            let verdict = judge(&d, |zone| {
                *zone_enabled.entry(zone).or_insert_with(|| {
                    global_enabled && self.settings.get_bool(BACKUP_FRAMEWORK_ENABLED, Some(zone))
                })
            });
            if let Verdict::Skip(reason) = verdict {
                report.skipped.push((d.uuid.clone(), reason));
                continue;
            }
            verdicts.push((d, verdict));
        }
        if verdicts.is_empty() {
            return Ok(report);
        }
        let due_at: HashMap<String, i64> = verdicts
            .iter()
            .map(|(d, _)| (d.uuid.clone(), d.next_run))
            .collect();
        // A fenced replica starts nothing (its jobs could never record an outcome).
        let Ok(owner) = self.jobs.owner() else {
            return Ok(report);
        };
        let (started, deleted, no_user) = self
            .store
            .write(move |tx| apply_verdicts(tx, verdicts, now_s, owner))
            .await?;
        report.deleted = deleted;
        report.skipped.extend(no_user);
        for run in started {
            if let (Some(metrics), Some(due)) =
                (crate::metrics::get(), due_at.get(&run.schedule_uuid))
            {
                metrics.scheduler_lag(now_s - due);
            }
            report.started.push(run.job_uuid.clone());
            let uuid = run.job_uuid.clone();
            tracing::info!(job = %uuid, schedule = %run.schedule_uuid, vm = %run.vm_uuid,
                "starting scheduled backup");
            self.jobs.spawn(uuid, self.work.run(run), None);
        }
        Ok(report)
    }
}

fn judge(d: &Due, mut zone_enabled: impl FnMut(i64) -> bool) -> Verdict {
    let Some(vm) = &d.vm else {
        return Verdict::Delete("the instance no longer exists");
    };
    if vm.removed || vm.state == "Expunging" {
        return Verdict::Delete("the instance no longer exists");
    }
    if vm.offering_id.is_none() {
        return Verdict::Delete("the instance is no longer assigned to a backup offering");
    }
    if vm.state == "Destroyed" {
        return Verdict::Skip(SkipReason::InstanceDestroyed);
    }
    match vm.offering {
        None | Some((_, true)) => return Verdict::Skip(SkipReason::OfferingMissing),
        Some((false, false)) => return Verdict::Skip(SkipReason::OfferingNotUserDriven),
        Some((true, false)) => {}
    }
    if !zone_enabled(vm.zone_id) {
        return Verdict::Skip(SkipReason::ZoneDisabled);
    }
    if !vm.account_usable {
        return Verdict::Skip(SkipReason::OwnerDisabled);
    }
    Verdict::Start
}

/// Reaps schedules whose in-flight job is terminal: the next slot is the first one after the
/// later of the instant the run started (stored in `next_run` while in flight) and the moment
/// it ended (at the latest `now`), and the in-flight marker is cleared. Returns how many.
///
/// Using the end of the run rather than the tick time means a slot that passes between the end
/// of a run and the tick that reaps it still runs; a run that outlasts later slots (or one
/// covering slots missed while bnr was down) gives one run, then the next slot in the future.
/// The start bounds it from below, so a clock that disagrees with the jobs' timestamps (an
/// injected one in tests) still never plans a slot the run already covered.
fn reap_finished(tx: &Transaction<'_>, now: i64) -> Result<usize, TickError> {
    type Finished = (i64, i64, String, String, String, i64, Option<i64>);
    let finished: Vec<Finished> = {
        let mut st = tx.prepare_cached(
            "SELECT s.id, s.async_job_id, s.interval_type, s.schedule, s.timezone, s.next_run,
                    j.completed
             FROM backup_schedules s JOIN async_jobs j ON j.id = s.async_job_id
             WHERE s.async_job_id IS NOT NULL AND j.status != 0",
        )?;
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<crate::store::db::Result<_>>()?
    };
    // Conditional on the finished job still being the schedule's: a concurrent reaper (another
    // replica) may have moved it on and a tick started the next run already.
    let mut update = tx.prepare_cached(
        "UPDATE backup_schedules SET next_run = ?1, async_job_id = NULL
         WHERE id = ?2 AND async_job_id = ?3",
    )?;
    let mut reaped = 0;
    for (id, job_id, interval, text, tz, started, completed) in &finished {
        let ended = completed.map_or(now, |c| c.min(now));
        let next = next_slot(*id, interval, text, tz, ended.max(*started));
        reaped += update.execute(params![next, id, job_id])?;
    }
    Ok(reaped)
}

/// The next slot strictly after `after` (Unix seconds) of a stored schedule.
pub fn next_slot(id: i64, interval: &str, text: &str, tz: &str, after: i64) -> i64 {
    let parsed = interval
        .parse::<IntervalType>()
        .and_then(|interval| Schedule::parse(interval, text, tz));
    match (parsed, Timestamp::from_second(after)) {
        (Ok(schedule), Ok(at)) => schedule.next_run_after(at).as_second(),
        (Err(e), _) => {
            tracing::error!(schedule = id, error = %e, "stored backup schedule does not parse");
            after + UNPARSABLE_SCHEDULE_RETRY_SECS
        }
        (_, Err(_)) => after + UNPARSABLE_SCHEDULE_RETRY_SECS,
    }
}

fn select_due(conn: &Connection, now: i64) -> Result<Vec<Due>, TickError> {
    let mut st = conn.prepare_cached(
        "SELECT s.id, s.uuid, s.interval_type, s.max_backups, s.quiesce, s.next_run,
                v.id, v.uuid, v.name, v.removed IS NOT NULL, v.state, v.backup_offering_id,
                v.account_id, v.domain_id, v.zone_id,
                o.id, o.user_driven, o.removed IS NOT NULL,
                a.state = 'enabled' AND a.removed IS NULL,
                s.account_id, s.domain_id
         FROM backup_schedules s
         LEFT JOIN vms v ON v.id = s.vm_id
         LEFT JOIN backup_offerings o ON o.id = v.backup_offering_id
         LEFT JOIN accounts a ON a.id = v.account_id
         WHERE s.async_job_id IS NULL AND s.next_run <= ?1
         ORDER BY s.next_run, s.id",
    )?;
    let rows = st
        .query_map([now], |r| {
            let vm_id: Option<i64> = r.get(6)?;
            let vm = match vm_id {
                None => None,
                Some(id) => {
                    let offering_row: Option<i64> = r.get(15)?;
                    Some(DueVm {
                        id,
                        uuid: r.get(7)?,
                        name: r.get(8)?,
                        removed: r.get(9)?,
                        state: r.get(10)?,
                        offering_id: r.get(11)?,
                        account_id: r.get(12)?,
                        domain_id: r.get(13)?,
                        zone_id: r.get(14)?,
                        offering: match offering_row {
                            Some(_) => Some((r.get(16)?, r.get(17)?)),
                            None => None,
                        },
                        account_usable: r.get::<Option<bool>>(18)?.unwrap_or(false),
                    })
                }
            };
            Ok(Due {
                id: r.get(0)?,
                uuid: r.get(1)?,
                interval: r.get(2)?,
                max_backups: r.get(3)?,
                quiesce: r.get(4)?,
                next_run: r.get(5)?,
                owner: (r.get(19)?, r.get(20)?),
                vm,
            })
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

type Applied = (Vec<ScheduledRun>, usize, Vec<(String, SkipReason)>);

/// In one transaction: deletes the schedules of vanished/unassigned instances and, for each
/// startable one still idle and due, inserts the pending job, the Scheduled event and the
/// in-flight marker.
///
/// Every change is a conditional write that names the state the verdict was made on (idle and
/// due at `now`), never a read followed by a write: several tickers (replicas, or two leaders
/// during a hand-over) may run this at once, and only the one whose write matches a row acts on
/// it. On PostgreSQL the losing `UPDATE` waits for the winner's commit, then re-evaluates its
/// `WHERE` on the new row and matches nothing; on SQLite writers are serialised.
fn apply_verdicts(
    tx: &Transaction<'_>,
    verdicts: Vec<(Due, Verdict)>,
    now: i64,
    owner: Option<Owner>,
) -> Result<Applied, TickError> {
    let mut started = Vec::new();
    let mut deleted = 0;
    let mut no_user = Vec::new();
    let mut users: HashMap<i64, Option<i64>> = HashMap::new();
    for (d, verdict) in verdicts {
        match verdict {
            Verdict::Skip(_) => {}
            Verdict::Delete(why) => {
                if delete_schedule(tx, &d, why, now)? {
                    deleted += 1;
                }
            }
            Verdict::Start => {
                let Some(vm) = &d.vm else { continue };
                let user = *users
                    .entry(vm.account_id)
                    .or_insert(job_user(tx, vm.account_id)?);
                let Some(user_id) = user else {
                    no_user.push((d.uuid.clone(), SkipReason::NoUser));
                    continue;
                };
                let Ok(interval) = d.interval.parse::<IntervalType>() else {
                    continue;
                };
                // The claim: only the writer whose update matches the idle, due row goes on.
                // It holds the row (PostgreSQL: its lock; SQLite: the write lock) until commit.
                let Some(slot) = claim_slot(tx, d.id, now)? else {
                    continue;
                };
                let spec = JobSpec {
                    account_id: vm.account_id,
                    user_id,
                    cmd: SCHEDULED_JOB_CMD.to_string(),
                    instance_type: Some("VirtualMachine".to_string()),
                    instance_uuid: Some(vm.uuid.clone()),
                };
                let job_uuid = JobManager::insert_pending(tx, &spec, owner)?;
                let job_id: i64 = tx
                    .prepare_cached("SELECT id FROM async_jobs WHERE uuid = ?1")?
                    .query_row([&job_uuid], |r| r.get(0))?;
                let text = format!(
                    "Scheduled backup of instance {} ({} schedule {})",
                    vm.name, interval, d.uuid
                );
                events::record(
                    tx,
                    &NewEvent {
                        event_type: "BACKUP.CREATE",
                        level: Level::Info,
                        state: State::Scheduled,
                        description: &text,
                        account_id: vm.account_id,
                        domain_id: vm.domain_id,
                        user_id: Some(user_id),
                        resource_type: Some("VirtualMachine"),
                        resource_uuid: Some(&vm.uuid),
                    },
                )?;
                // While the run is in flight `next_run` holds the instant it started (no earlier
                // than its slot): its next slot is computed from there when it is reaped.
                tx.prepare_cached(
                    "UPDATE backup_schedules SET async_job_id = ?1,
                            next_run = CASE WHEN next_run > ?2 THEN next_run ELSE ?2 END
                     WHERE id = ?3",
                )?
                .execute(params![job_id, now, d.id])?;
                started.push(ScheduledRun {
                    job_uuid,
                    schedule_id: d.id,
                    schedule_uuid: d.uuid.clone(),
                    interval,
                    max_backups: d.max_backups,
                    quiesce: d.quiesce,
                    slot,
                    vm_id: vm.id,
                    vm_uuid: vm.uuid.clone(),
                    zone_id: vm.zone_id,
                    account_id: vm.account_id,
                    domain_id: vm.domain_id,
                    user_id,
                });
            }
        }
    }
    Ok((started, deleted, no_user))
}

/// Claims the slot of schedule `id` if it is still idle and due at `now`: a conditional update
/// (a no-op on the row's values) whose `RETURNING` names the slot; `None` when another ticker
/// got there first, or the schedule changed or went away since it was selected.
fn claim_slot(tx: &Transaction<'_>, id: i64, now: i64) -> Result<Option<i64>, TickError> {
    Ok(tx
        .prepare_cached(
            "UPDATE backup_schedules SET next_run = next_run
             WHERE id = ?1 AND async_job_id IS NULL AND next_run <= ?2
             RETURNING next_run",
        )?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?)
}

/// The user a scheduled job runs as: the owner account's first enabled user (CloudStack uses
/// its system user on behalf of the owner; bnr has none, and the job must name a user).
fn job_user(conn: &Connection, account_id: i64) -> Result<Option<i64>, TickError> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM users WHERE account_id = ?1 AND removed IS NULL AND state = 'enabled'
             ORDER BY id LIMIT 1",
        )?
        .query_row([account_id], |r| r.get(0))
        .optional()?)
}

/// Deletes the schedule if it is still idle and due (a conditional delete, like the claim);
/// `false` when another ticker or a user changed it first.
fn delete_schedule(tx: &Transaction<'_>, d: &Due, why: &str, now: i64) -> Result<bool, TickError> {
    let gone = tx
        .prepare_cached(
            "DELETE FROM backup_schedules WHERE id = ?1 AND async_job_id IS NULL AND next_run <= ?2
             RETURNING id",
        )?
        .query_row(params![d.id, now], |r| r.get::<i64>(0))
        .optional()?;
    if gone.is_none() {
        return Ok(false);
    }
    tracing::info!(schedule = %d.uuid, reason = why, "deleted backup schedule");
    let (account_id, domain_id) =
        d.vm.as_ref()
            .map_or(d.owner, |vm| (vm.account_id, vm.domain_id));
    let text = format!("Deleted {} backup schedule {}: {why}", d.interval, d.uuid);
    events::record(
        tx,
        &NewEvent {
            event_type: "BACKUP.SCHEDULE.DELETE",
            level: Level::Info,
            state: State::Completed,
            description: &text,
            account_id,
            domain_id,
            user_id: None,
            resource_type: Some("BackupSchedule"),
            resource_uuid: Some(&d.uuid),
        },
    )?;
    Ok(true)
}
