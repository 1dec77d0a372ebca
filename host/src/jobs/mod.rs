//! Persistent async jobs (`async_jobs`): the row is written when a command is accepted, the work
//! runs on tokio, and its outcome (status, result code, result JSON) is persisted when it ends.
//!
//! Invariant: every job reaches a terminal state. A job's future that panics fails the job (530);
//! jobs left pending by a previous process are handed to the registered [`ResumeHook`]s at start
//! ([`JobManager::recover_interrupted`]) and, if none takes them, failed with a clear reason.
//!
//! The jobs layer stores whatever JSON the submitter produced as the success result; it does not
//! know CloudStack's response shapes (the api layer renders them before submitting).
//!
//! A job and the change it is about commit together where the code allows it: a command that
//! writes when it is accepted records its job in that transaction ([`JobTicket`]), and work whose
//! last step is a write records the job's outcome in that transaction ([`OutcomeSeal`]). A crash
//! can then never leave a backup taken with its job pending, or a job without its backup row.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::store::db::{Connection, OptionalExtension, Row, params};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};
use tracing::Instrument;

use crate::identity::ListScope;
use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpError, OpResult, Store, StoreError, new_uuid, now};

tokio::task_local! {
    /// The job whose work runs on the current task (set by [`JobManager::spawn`]).
    static CURRENT_JOB: CurrentJob;
}

struct CurrentJob {
    uuid: String,
    manager: JobManager,
    owner: Option<Owner>,
    /// How the submitter turns the work's result into the job's outcome, when it can do so
    /// inside a transaction (see [`OutcomeSeal`]).
    outcome_of: Option<OutcomeOf>,
    /// Set once a transaction of the work itself committed the job's outcome.
    sealed: Arc<AtomicBool>,
}

/// The replica (and its epoch) a job or a pending provider operation belongs to: outcome writes
/// match it, so a replica whose work was taken over cannot overwrite anything (see `cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub replica: i64,
    pub epoch: i64,
}

/// The owner the current job's work runs under (`None` outside a job, or when this process runs
/// alone and owns everything).
pub fn current_owner() -> Option<Owner> {
    CURRENT_JOB.try_with(|j| j.owner).ok().flatten()
}

/// The condition an outcome write on a row with `owner`/`owner_epoch` columns adds: none when
/// running alone, else the row must still be this owner's. Parameters `?{n}` and `?{n+1}`.
pub fn owner_fence(owner: Option<Owner>, first_param: usize) -> String {
    match owner {
        None => String::new(),
        Some(_) => format!(
            " AND owner = ?{first_param} AND owner_epoch = ?{}",
            first_param + 1
        ),
    }
}

/// The uuid of the job whose work is running on the current task, if any. Lets lower layers
/// attach what they persist (e.g. a provider operation handle) to the job that owns it.
pub fn current_job_uuid() -> Option<String> {
    CURRENT_JOB.try_with(|j| j.uuid.clone()).ok()
}

/// Marks the current job, while the guard lives, as only waiting on a provider operation that is
/// persisted and resumes by its handle after a restart: a shutdown need not wait for it
/// ([`JobManager::wait_settled`]). `None` outside a job.
pub fn waiting_on_persisted_operation() -> Option<WaitingGuard> {
    let manager = CURRENT_JOB.try_with(|j| j.manager.clone()).ok()?;
    manager.inner.waiting.fetch_add(1, Ordering::AcqRel);
    manager.inner.idle.notify_waiters();
    Some(WaitingGuard { manager })
}

/// See [`waiting_on_persisted_operation`].
pub struct WaitingGuard {
    manager: JobManager,
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.manager.inner.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completion notices buffered per waiter; a lagging waiter re-reads the row, so nothing is lost.
const COMPLETION_CHANNEL_CAPACITY: usize = 1024;
/// Result code of a job that failed for an internal reason (panic, interrupted by restart).
pub const INTERNAL_ERROR_CODE: i64 = 530;
/// The reason given to jobs failed at start because the previous process stopped mid-way.
/// How often a replica's [`JobManager::wait`] re-reads a job another replica may complete.
const REPLICA_WAIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);
/// Why a fenced replica accepts no new job.
pub const FENCED_TEXT: &str =
    "This management server lost its membership of the cluster; retry (another one answers)";
pub const INTERRUPTED_TEXT: &str =
    "Job was interrupted because the management server stopped before it finished";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending = 0,
    Succeeded = 1,
    Failed = 2,
}

impl JobStatus {
    fn from_i64(v: i64) -> JobStatus {
        match v {
            1 => JobStatus::Succeeded,
            2 => JobStatus::Failed,
            _ => JobStatus::Pending,
        }
    }
}

/// What a job is about, recorded when it is accepted.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub account_id: i64,
    pub user_id: i64,
    /// Command name, e.g. `createBackup`.
    pub cmd: String,
    /// CloudStack instance type, e.g. `VirtualMachine`, `Backup`.
    pub instance_type: Option<String>,
    pub instance_uuid: Option<String>,
}

/// Why a job failed: becomes `jobstatus` 2, `jobresultcode` = `code`, and the result
/// `{"errorcode": code, "errortext": text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub code: i64,
    pub text: String,
}

pub type JobOutcome = Result<Value, JobFailure>;

pub type JobFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send + 'static>>;

/// The job's outcome from its work's result, given as `&dyn Any`: `None` when the result is not
/// of the type the submitter's work returns (that write is not the work's last, and records
/// nothing). It must give what the work's future itself returns for the same result.
pub type OutcomeOf = Arc<dyn Fn(&dyn Any) -> Option<JobOutcome> + Send + Sync>;

/// A job its command records in the same transaction as the change that accepts it (the backup
/// row of createBackup): the job exists exactly when that change commits. Made by
/// [`JobManager::ticket`]; the uuid [`JobTicket::record`] returns goes to [`JobManager::spawn`].
#[derive(Debug, Clone)]
pub struct JobTicket {
    spec: JobSpec,
    owner: Option<Owner>,
}

impl JobTicket {
    /// Inserts the pending job, acting on `instance_type`/`instance_uuid`; returns its uuid.
    pub fn record(
        &self,
        conn: &Connection,
        instance_type: &str,
        instance_uuid: &str,
    ) -> crate::store::db::Result<String> {
        let spec = JobSpec {
            instance_type: Some(instance_type.to_string()),
            instance_uuid: Some(instance_uuid.to_string()),
            ..self.spec.clone()
        };
        JobManager::insert_pending(conn, &spec, self.owner)
    }

    /// The same job, about `instance_type`/`instance_uuid`.
    pub fn acting_on(
        mut self,
        instance_type: Option<String>,
        instance_uuid: Option<String>,
    ) -> Self {
        self.spec.instance_type = instance_type;
        self.spec.instance_uuid = instance_uuid;
        self
    }
}

/// Lets the last write of a job's work record the job's outcome in the same transaction, so the
/// outcome and the change it reports commit together and a waiter learns both at once. Taken on
/// the job's task with [`outcome_seal`]; used in the write with [`OutcomeSeal::record`]; confirmed
/// after the commit with [`OutcomeSeal::committed`].
pub struct OutcomeSeal {
    job_uuid: String,
    owner: Option<Owner>,
    outcome_of: OutcomeOf,
    sealed: Arc<AtomicBool>,
}

/// The current job's [`OutcomeSeal`]: `None` outside a job, or when its submitter renders the
/// outcome only after the work ends. Only code whose write is the work's very last step may
/// take it.
pub fn outcome_seal() -> Option<OutcomeSeal> {
    CURRENT_JOB
        .try_with(|j| {
            j.outcome_of.clone().map(|outcome_of| OutcomeSeal {
                job_uuid: j.uuid.clone(),
                owner: j.owner,
                outcome_of,
                sealed: j.sealed.clone(),
            })
        })
        .ok()
        .flatten()
}

impl OutcomeSeal {
    /// Writes the outcome `result` stands for into the job row, in `conn`'s transaction. Returns
    /// whether it did: not when `result` is not the work's result type, or the job is no longer
    /// pending and this owner's.
    pub fn record<R: Any>(&self, conn: &Connection, result: &R) -> crate::store::db::Result<bool> {
        match (self.outcome_of)(result) {
            Some(outcome) => write_outcome(conn, &self.job_uuid, &outcome, self.owner),
            None => Ok(false),
        }
    }

    /// Call after the transaction in which [`OutcomeSeal::record`] returned `true` committed: the
    /// job manager then only announces the job's end.
    pub fn committed(self) {
        self.sealed.store(true, Ordering::Release);
    }
}

/// The terminal update of a pending job, fenced by `owner`; `true` if it was written.
fn write_outcome(
    conn: &Connection,
    job_uuid: &str,
    outcome: &JobOutcome,
    owner: Option<Owner>,
) -> crate::store::db::Result<bool> {
    let (status, code, result) = match outcome {
        Ok(v) => (JobStatus::Succeeded, 0, v.to_string()),
        Err(f) => (
            JobStatus::Failed,
            f.code,
            json!({"errorcode": f.code, "errortext": f.text}).to_string(),
        ),
    };
    let sql = format!(
        "UPDATE async_jobs SET status = ?1, result_code = ?2, result = ?3, completed = ?4
         WHERE uuid = ?5 AND status = 0{}",
        owner_fence(owner, 6)
    );
    let mut st = conn.prepare_cached(&sql)?;
    let n = match owner {
        None => st.execute(params![status as i64, code, result, now(), job_uuid])?,
        Some(o) => st.execute(params![
            status as i64,
            code,
            result,
            now(),
            job_uuid,
            o.replica,
            o.epoch
        ])?,
    };
    Ok(n > 0)
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub uuid: String,
    pub account_id: i64,
    pub account_uuid: String,
    pub user_id: i64,
    pub user_uuid: String,
    pub domain_id: i64,
    pub cmd: String,
    pub status: JobStatus,
    pub result_code: i64,
    pub result: Option<Value>,
    pub instance_type: Option<String>,
    pub instance_uuid: Option<String>,
    pub created: i64,
    pub completed: Option<i64>,
    /// Percent done reported by the provider while pending (CloudStack's `jobprocstatus`).
    pub proc_status: i64,
}

/// Gets the first chance at a job found pending at start. Return `Some(work)` to resume it (the
/// job then completes with that future's outcome), `None` to let the manager fail it.
/// The B&R layer registers one to resume long provider operations by their persisted handle.
pub trait ResumeHook: Send + Sync {
    fn resume(&self, job: &Job) -> Option<JobFuture>;
}

#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    completed: broadcast::Sender<String>,
    hooks: RwLock<Vec<Arc<dyn ResumeHook>>>,
    /// Jobs whose work runs in this process (for a shutdown that waits for them).
    running: AtomicUsize,
    /// Of those, the ones only polling a persisted provider operation.
    waiting: AtomicUsize,
    /// Notified whenever a job ends or starts waiting on a persisted operation.
    idle: Notify,
    /// The replica this process is, when it runs as one of several (`None` inside: fenced).
    owner: RwLock<Option<watch::Receiver<Option<Owner>>>>,
}

const JOB_COLUMNS: &str = "j.id, j.uuid, j.account_id, a.uuid, j.user_id, u.uuid, a.domain_id, j.cmd, \
     j.status, j.result_code, j.result, j.instance_type, j.instance_uuid, j.created, j.completed, \
     j.proc_status";
const JOB_FROM: &str =
    "async_jobs j JOIN accounts a ON a.id = j.account_id JOIN users u ON u.id = j.user_id";

fn job_from_row(r: &Row<'_>) -> crate::store::db::Result<Job> {
    let result: Option<String> = r.get(10)?;
    Ok(Job {
        id: r.get(0)?,
        uuid: r.get(1)?,
        account_id: r.get(2)?,
        account_uuid: r.get(3)?,
        user_id: r.get(4)?,
        user_uuid: r.get(5)?,
        domain_id: r.get(6)?,
        cmd: r.get(7)?,
        status: JobStatus::from_i64(r.get(8)?),
        result_code: r.get(9)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
        instance_type: r.get(11)?,
        instance_uuid: r.get(12)?,
        created: r.get(13)?,
        completed: r.get(14)?,
        proc_status: r.get(15)?,
    })
}

impl JobManager {
    pub fn new(store: Store) -> JobManager {
        let (completed, _) = broadcast::channel(COMPLETION_CHANNEL_CAPACITY);
        JobManager {
            inner: Arc::new(Inner {
                store,
                completed,
                hooks: RwLock::new(Vec::new()),
                running: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                idle: Notify::new(),
                owner: RwLock::new(None),
            }),
        }
    }

    /// Makes this manager's jobs belong to a replica: new jobs are written with its owner and
    /// epoch, outcomes are written only while they still match, and running work is dropped
    /// when the replica fences itself (see `cluster`).
    pub fn attach_owner(&self, owner: watch::Receiver<Option<Owner>>) {
        *self.inner.owner.write() = Some(owner);
    }

    /// Whether jobs here belong to a replica.
    pub fn is_replica(&self) -> bool {
        self.inner.owner.read().is_some()
    }

    /// The owner new jobs get: `Ok(None)` when running alone; an error while fenced (a fenced
    /// replica starts nothing).
    pub fn owner(&self) -> Result<Option<Owner>, JobFailure> {
        match &*self.inner.owner.read() {
            None => Ok(None),
            Some(rx) => match *rx.borrow() {
                Some(owner) => Ok(Some(owner)),
                None => Err(JobFailure {
                    code: INTERNAL_ERROR_CODE,
                    text: FENCED_TEXT.to_string(),
                }),
            },
        }
    }

    /// Inserts the pending job row inside the caller's transaction (so the job exists exactly
    /// when the change that accepted it commits), owned by `owner`; returns the job uuid. Start
    /// it with [`JobManager::spawn`] after the commit.
    pub fn insert_pending(
        conn: &Connection,
        spec: &JobSpec,
        owner: Option<Owner>,
    ) -> crate::store::db::Result<String> {
        let uuid = new_uuid();
        conn.prepare_cached(
            "INSERT INTO async_jobs(uuid, account_id, user_id, cmd, status, result_code,
                                    instance_type, instance_uuid, created, owner, owner_epoch)
             VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            uuid,
            spec.account_id,
            spec.user_id,
            spec.cmd,
            spec.instance_type,
            spec.instance_uuid,
            now(),
            owner.map(|o| o.replica),
            owner.map(|o| o.epoch),
        ])?;
        Ok(uuid)
    }

    /// A job to record in the transaction of the change that accepts it (see [`JobTicket`]).
    /// Fails while fenced: a fenced replica accepts nothing.
    pub fn ticket(&self, spec: JobSpec) -> Result<JobTicket, StoreError> {
        let owner = self
            .owner()
            .map_err(|f| StoreError::Task(f.text.to_string()))?;
        Ok(JobTicket { spec, owner })
    }

    /// Records a pending job and starts `work` on tokio; returns the job uuid.
    pub async fn submit(
        &self,
        spec: JobSpec,
        work: JobFuture,
        outcome_of: Option<OutcomeOf>,
    ) -> Result<String, StoreError> {
        let ticket = self.ticket(spec)?;
        self.submit_ticket(ticket, work, outcome_of).await
    }

    /// [`JobManager::submit`] for a job whose ticket was taken already.
    pub async fn submit_ticket(
        &self,
        ticket: JobTicket,
        work: JobFuture,
        outcome_of: Option<OutcomeOf>,
    ) -> Result<String, StoreError> {
        let uuid = self
            .inner
            .store
            .write(move |tx| {
                Ok::<_, StoreError>(JobManager::insert_pending(tx, &ticket.spec, ticket.owner)?)
            })
            .await?;
        self.spawn(uuid.clone(), work, outcome_of);
        Ok(uuid)
    }

    /// Runs `work` for an already-recorded pending job and persists its outcome, unless the
    /// work's last write did so through `outcome_of` ([`OutcomeSeal`]). On a replica the work
    /// runs under the owner the replica has now; if the replica fences itself, the work is
    /// dropped without writing anything (another replica adopts the job).
    pub fn spawn(&self, job_uuid: String, work: JobFuture, outcome_of: Option<OutcomeOf>) {
        let this = self.clone();
        let owner_rx = self.inner.owner.read().clone();
        let owner = owner_rx.as_ref().and_then(|rx| *rx.borrow());
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        // The job's span is a child of the current one (the request that accepted the job).
        let parent = tracing::Span::current();
        tokio::spawn(async move {
            // Run the work in its own task so a panic is caught as a JoinError, not lost.
            let span = tracing::info_span!(parent: &parent, "job", job = %job_uuid);
            let sealed = Arc::new(AtomicBool::new(false));
            let current = CurrentJob {
                uuid: job_uuid.clone(),
                manager: this.clone(),
                owner,
                outcome_of,
                sealed: sealed.clone(),
            };
            let work = CURRENT_JOB.scope(current, work).instrument(span);
            let mut task = tokio::spawn(work);
            let fenced = async {
                match owner_rx {
                    Some(mut rx) => {
                        let _ = rx.wait_for(|now| *now != owner).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let outcome = tokio::select! {
                joined = &mut task => Some(joined),
                () = fenced => None,
            };
            match outcome {
                None => {
                    task.abort();
                    tracing::warn!(job = %job_uuid,
                        "replica fenced: job dropped here, another replica adopts it");
                }
                Some(Ok(_)) if sealed.load(Ordering::Acquire) => this.announce_end(&job_uuid),
                Some(joined) => {
                    let outcome = joined.unwrap_or_else(|e| {
                        tracing::error!(job = %job_uuid, error = %e, "job task panicked");
                        Err(JobFailure {
                            code: INTERNAL_ERROR_CODE,
                            text: "Internal error executing the job".to_string(),
                        })
                    });
                    if let Err(e) = this.complete_as(&job_uuid, outcome, owner).await {
                        tracing::error!(job = %job_uuid, error = %e, "cannot persist job outcome");
                    }
                }
            }
            this.inner.running.fetch_sub(1, Ordering::AcqRel);
            this.inner.idle.notify_waiters();
        });
    }

    /// Jobs whose work is running in this process.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Running jobs that are only polling a persisted provider operation.
    pub fn waiting_on_operations(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Completes when no job runs in this process.
    pub async fn wait_idle(&self) {
        self.wait_until(|running, _| running == 0).await;
    }

    /// Completes when every job still running is only polling a persisted provider operation
    /// (which resumes by its handle after a restart), so stopping loses nothing.
    pub async fn wait_settled(&self) {
        self.wait_until(|running, waiting| running <= waiting).await;
    }

    async fn wait_until(&self, done: impl Fn(usize, usize) -> bool) {
        loop {
            let notified = self.inner.idle.notified();
            if done(self.running(), self.waiting_on_operations()) {
                return;
            }
            notified.await;
        }
    }

    /// Persists a terminal outcome (only a pending job changes) and wakes waiters. On a
    /// replica, only a job it still owns under its current epoch.
    pub async fn complete(
        &self,
        job_uuid: &str,
        outcome: Result<Value, JobFailure>,
    ) -> Result<(), StoreError> {
        let owner = match self.owner() {
            Ok(owner) => owner,
            Err(_) => return Ok(()),
        };
        self.complete_as(job_uuid, outcome, owner).await.map(|_| ())
    }

    /// [`JobManager::complete`] fenced by `owner`: `false` when the job is not pending or no
    /// longer this owner's (nothing is written then).
    pub(crate) async fn complete_as(
        &self,
        job_uuid: &str,
        outcome: JobOutcome,
        owner: Option<Owner>,
    ) -> Result<bool, StoreError> {
        let uuid = job_uuid.to_string();
        let written = self
            .inner
            .store
            .write(move |tx| Ok::<_, StoreError>(write_outcome(tx, &uuid, &outcome, owner)?))
            .await?;
        if !written && owner.is_some() {
            tracing::warn!(job = %job_uuid, "job outcome not written: the job is no longer this replica's");
        }
        self.announce_end(job_uuid);
        Ok(written)
    }

    /// Wakes the waiters of a job whose outcome is committed.
    fn announce_end(&self, job_uuid: &str) {
        let _ = self.inner.completed.send(job_uuid.to_string());
    }

    pub async fn get(&self, job_uuid: &str) -> OpResult<Option<Job>> {
        let uuid = job_uuid.to_string();
        self.inner.store.read(move |c| get_job(c, &uuid)).await
    }

    /// Waits until the job is terminal and returns it (`None` if it does not exist).
    pub async fn wait(&self, job_uuid: &str) -> OpResult<Option<Job>> {
        let mut rx = self.inner.completed.subscribe();
        loop {
            match self.get(job_uuid).await? {
                None => return Ok(None),
                Some(job) if job.status != JobStatus::Pending => return Ok(Some(job)),
                Some(_) => {}
            }
            // On a replica the job may be adopted and completed by another process, whose
            // notice never reaches this one: the row is re-read now and then.
            let recheck = tokio::time::sleep(if self.is_replica() {
                REPLICA_WAIT_RECHECK
            } else {
                std::time::Duration::from_secs(365 * 86_400)
            });
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    notice = rx.recv() => match notice {
                        Ok(done) if done == job_uuid => break,
                        Ok(_) => continue,
                        // Missed notices or closed channel: re-read the row.
                        Err(_) => break,
                    },
                    () = &mut recheck => break,
                }
            }
        }
    }

    pub fn add_resume_hook(&self, hook: Arc<dyn ResumeHook>) {
        self.inner.hooks.write().push(hook);
    }

    /// At start of a process that runs alone: offers each job left pending by a previous
    /// process to the resume hooks, fails the rest with [`INTERRUPTED_TEXT`]. Returns (resumed,
    /// failed). Replicas of a cluster adopt only the work of dead replicas (`cluster`).
    pub async fn recover_interrupted(&self) -> OpResult<(usize, usize)> {
        let pending: Vec<Job> = self
            .inner
            .store
            .read(|c| {
                let mut st = c.prepare(&format!(
                    "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.status = 0 ORDER BY j.id"
                ))?;
                let v = st
                    .query_map([], job_from_row)?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, OpError>(v)
            })
            .await?;
        self.adopt(pending).await
    }

    /// Resumes `jobs` (pending, and now this process's) through the resume hooks; fails those
    /// no hook takes with [`INTERRUPTED_TEXT`]. Returns (resumed, failed).
    pub async fn adopt(&self, jobs: Vec<Job>) -> OpResult<(usize, usize)> {
        let (mut resumed, mut failed) = (0, 0);
        for job in jobs {
            let hooks = self.inner.hooks.read().clone();
            if let Some(work) = hooks.iter().find_map(|h| h.resume(&job)) {
                tracing::info!(job = %job.uuid, cmd = %job.cmd, "resuming interrupted job");
                self.spawn(job.uuid.clone(), work, None);
                resumed += 1;
            } else {
                tracing::warn!(job = %job.uuid, cmd = %job.cmd, "failing interrupted job");
                self.complete(
                    &job.uuid,
                    Err(JobFailure {
                        code: INTERNAL_ERROR_CODE,
                        text: INTERRUPTED_TEXT.to_string(),
                    }),
                )
                .await?;
                failed += 1;
            }
        }
        Ok((resumed, failed))
    }
}

pub fn get_job(conn: &Connection, job_uuid: &str) -> OpResult<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.uuid = ?1"
        ))?
        .query_row([job_uuid], job_from_row)
        .optional()?)
}

pub fn get_job_by_id(conn: &Connection, id: i64) -> OpResult<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.id = ?1"
        ))?
        .query_row([id], job_from_row)
        .optional()?)
}

/// Jobs visible in `scope`, newest first; `start` filters on creation time.
pub fn list(
    conn: &Connection,
    scope: &ListScope,
    start: Option<i64>,
    page: Page,
) -> OpResult<Listed<Job>> {
    let mut f = Filter::new();
    scope.apply(&mut f, "j.account_id", "a.domain_id");
    if let Some(s) = start {
        f.and("j.created >= ?", [s.into()]);
    }
    Ok(f.list(conn, JOB_COLUMNS, JOB_FROM, "j.id DESC", page, job_from_row)?)
}
