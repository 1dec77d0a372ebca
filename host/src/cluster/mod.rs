//! Several `bnr serve` replicas on one database: membership with heartbeats, fencing by epoch,
//! the scheduler's leader lease, and the takeover of a dead replica's work.
//!
//! - **Membership.** A replica is a `replicas` row. Its heartbeat is written with the
//!   database's clock (never the replica's own) by a dedicated thread on its own connection, so
//!   a busy writer, a long request or a stalled async runtime never delays it.
//! - **Fencing.** Jobs and pending provider operations carry `(owner, owner_epoch)`. Every
//!   outcome write matches them (`… WHERE owner = ?me AND owner_epoch = ?epoch`). A replica
//!   whose heartbeat is older than the lease is declared dead by any live replica, which bumps
//!   its epoch and adopts its work in one transaction: from then on none of the dead replica's
//!   writes match. A replica that cannot renew within two thirds of the lease (on its own
//!   monotonic clock) fences itself first: its running jobs are dropped, it stops leading, then
//!   re-joins under a new epoch.
//! - **Leader.** A `leases` row (`scheduler`) with a term. The holder runs the tick, the sync
//!   pass, deadlines and usage. Renewal matches (name, holder, term); any error or a renewal
//!   that matches nothing gives leadership up at once. Exactly-once never depends on it: every
//!   claim is a conditional write (see `scheduler::tick`), so two leaders still never start a
//!   slot twice.
//! - **Takeover.** Every live replica runs a takeover pass at each heartbeat; the conditional
//!   update decides who adopts what. Adopted jobs are resumed by the job resume hooks from their
//!   persisted provider handles, not failed.
//!
//! Bounds, with lease `L` (default 15 s): heartbeat every `L/3`; self-fencing after `2L/3`
//! without a renewal; a dead replica's work is adopted at most `L + L/3` after its last
//! heartbeat; a dead leader is replaced at most `L + L/3` after its last renewal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::db::{self, Connection, Dialect, OptionalExtension, params};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::Settings;
use crate::jobs::{Job, JobManager, Owner};
use crate::store::{Store, StoreError};

/// Default lease: how long a replica (or the leader) may go without renewing before another
/// replica takes its work (or leadership).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Shortest lease accepted: below it a loaded machine's scheduling jitter fences healthy
/// replicas.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
/// How often a replica polls the change epochs: settings and identity changes made through
/// another replica take effect here within this (plus one reload), well inside 2 s.
pub const CHANGE_POLL: Duration = Duration::from_millis(250);
/// First and longest wait before the change listener reconnects.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(250);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);
/// The scheduler's lease row.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// The database clock in milliseconds since the Unix epoch, as an SQL expression. Every
/// heartbeat, lease expiry and liveness check is computed from it so that replicas' clocks
/// never meet. `clock_timestamp()`, not `now()`: the latter is the start of the transaction.
pub fn db_now_ms(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// How a replica joins.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// See [`DEFAULT_LEASE`].
    pub lease: Duration,
    /// Shown to operators (`host:pid`, the listen address).
    pub name: String,
    /// Listen for change notices on PostgreSQL (on by default); off, changes made through
    /// other replicas are seen by the epoch poll alone.
    pub change_notices: bool,
}

impl ClusterOptions {
    pub fn new(name: impl Into<String>, lease: Duration) -> ClusterOptions {
        ClusterOptions {
            lease: lease.max(MIN_LEASE),
            name: name.into(),
            change_notices: true,
        }
    }
}

/// This process as a member of the cluster.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    id: i64,
    lease: Duration,
    /// `Some(owner)` while the replica may act; `None` while it is fenced.
    owner: watch::Sender<Option<Owner>>,
    /// `Some(term)` while this replica holds the scheduler lease.
    leader: watch::Sender<Option<i64>>,
    stopping: AtomicBool,
    change_notices: bool,
    /// Change notices received (each wakes the change follower).
    notices: std::sync::atomic::AtomicU64,
    jobs: Mutex<Option<JobManager>>,
    heartbeat_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Wakes the heartbeat thread early (shutdown).
    wake: (std::sync::Mutex<bool>, std::sync::Condvar),
}

/// What one takeover pass did.
#[derive(Debug, Default, Clone)]
pub struct Takeover {
    /// Replicas declared dead (their epoch was bumped).
    pub fenced_replicas: usize,
    /// Jobs adopted by this replica.
    pub jobs: Vec<Job>,
    /// Pending provider operations adopted by this replica.
    pub operations: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Db(#[from] db::Error),
}

impl Replica {
    /// Registers this process as a replica (a new row, epoch 1). Start its heartbeat with
    /// [`Replica::start`].
    pub fn join(store: &Store, opts: &ClusterOptions) -> Result<Replica, ClusterError> {
        // Other replicas write to this database: nothing may be kept on the strength of
        // this process having seen every write.
        store.mark_shared();
        let conn = store.dedicated_connection()?;
        let now = db_now_ms(conn.dialect());
        let uuid = crate::store::new_uuid();
        let (id, epoch): (i64, i64) = conn.query_row(
            &format!(
                "INSERT INTO replicas(uuid, name, epoch, started, heartbeat)
                 VALUES (?1, ?2, 1, {now}, {now}) RETURNING id, epoch"
            ),
            params![uuid, opts.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tracing::info!(replica = id, name = %opts.name, lease_ms = opts.lease.as_millis() as u64,
            "joined the cluster");
        let (owner, _) = watch::channel(Some(Owner { replica: id, epoch }));
        let (leader, _) = watch::channel(None);
        Ok(Replica {
            inner: Arc::new(Inner {
                store: store.clone(),
                id,
                lease: opts.lease,
                owner,
                leader,
                stopping: AtomicBool::new(false),
                change_notices: opts.change_notices,
                notices: std::sync::atomic::AtomicU64::new(0),
                jobs: Mutex::new(None),
                heartbeat_thread: Mutex::new(None),
                wake: (std::sync::Mutex::new(false), std::sync::Condvar::new()),
            }),
        })
    }

    pub fn id(&self) -> i64 {
        self.inner.id
    }

    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// `Some` while this replica may act (not fenced).
    pub fn owner(&self) -> Option<Owner> {
        *self.inner.owner.borrow()
    }

    /// Follows [`Replica::owner`]; the job manager drops running work when it changes.
    pub fn watch_owner(&self) -> watch::Receiver<Option<Owner>> {
        self.inner.owner.subscribe()
    }

    /// `Some(term)` while this replica leads the scheduler.
    pub fn watch_leader(&self) -> watch::Receiver<Option<i64>> {
        self.inner.leader.subscribe()
    }

    /// How many change notices this replica has received.
    pub fn notices_received(&self) -> u64 {
        self.inner.notices.load(Ordering::Relaxed)
    }

    pub fn is_leader(&self) -> bool {
        self.inner.leader.borrow().is_some()
    }

    /// Starts the heartbeat thread (membership and the leader lease) and the takeover of dead
    /// replicas' jobs, which `jobs` resumes through its resume hooks. Needs a tokio runtime.
    pub fn start(&self, jobs: JobManager) -> Result<(), ClusterError> {
        jobs.attach_owner(self.watch_owner());
        *self.inner.jobs.lock() = Some(jobs);
        let conn = self.inner.store.dedicated_connection()?;
        let replica = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("bnr-heartbeat-{}", self.inner.id))
            .spawn(move || replica.heartbeat_loop(conn, runtime))
            .map_err(|e| StoreError::Task(format!("cannot start the heartbeat thread: {e}")))?;
        *self.inner.heartbeat_thread.lock() = Some(thread);
        Ok(())
    }

    /// Follows changes other replicas make to what this one keeps in memory: settings (a
    /// zone's provider swap included: it goes through the same change notices as a local
    /// update), identities (the credential cache is dropped, so a user disabled on another
    /// replica is refused here at once), and installed providers (`on_plugins` runs, off the
    /// executor). On PostgreSQL a notice (`LISTEN bnr_changes`) wakes it at once; the epochs are
    /// also polled every [`CHANGE_POLL`], for engines without notices and while the listening
    /// connection is down.
    pub fn follow_changes(
        &self,
        settings: Settings,
        on_plugins: Arc<dyn Fn() + Send + Sync>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let wake = Arc::new(tokio::sync::Notify::new());
        if let Some(listener) = store
            .change_listener()
            .filter(|_| self.inner.change_notices)
        {
            let (replica, wake) = (self.clone(), wake.clone());
            tokio::spawn(async move { replica.listen_for_changes(listener, wake).await });
        }
        let replica = self.clone();
        tokio::spawn(async move {
            let mut seen: Option<ChangeEpochs> = None;
            let mut tick = tokio::time::interval(CHANGE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wake.notified() => {}
                }
                if replica.inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                let epochs = store.read(change_epochs).await;
                let now = match epochs {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the change epochs");
                        continue;
                    }
                };
                // The first read is only a baseline: a change another replica made between the
                // caller loading its state and this read would go unseen, so everything is
                // reloaded once after it.
                let moved = |epoch: fn(&ChangeEpochs) -> i64| {
                    seen.as_ref()
                        .is_none_or(|before| epoch(before) != epoch(&now))
                };
                if moved(|e| e.identity) {
                    store.note_identity_change();
                }
                if moved(|e| e.settings) {
                    let settings = settings.clone();
                    match tokio::task::spawn_blocking(move || settings.reload()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "reloading settings failed"),
                        Err(e) => tracing::warn!(error = %e, "reloading settings failed"),
                    }
                }
                if moved(|e| e.plugins) {
                    let on_plugins = on_plugins.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || on_plugins()).await {
                        tracing::warn!(error = %e, "following provider changes failed");
                    }
                }
                seen = Some(now);
            }
        })
    }

    /// Keeps a listening connection up (reconnecting with backoff; never gives up while the
    /// replica runs) and wakes the change follower on each notice.
    async fn listen_for_changes(
        &self,
        listener: crate::store::postgres::ChangeListener,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let mut backoff = LISTEN_RETRY_MIN;
        loop {
            if self.inner.stopping.load(Ordering::Acquire) {
                return;
            }
            let connected = std::sync::atomic::AtomicBool::new(false);
            let ended = listener
                .listen(
                    || {
                        connected.store(true, Ordering::Relaxed);
                        tracing::debug!("listening for change notices");
                        // Whatever changed while no connection listened is read now.
                        wake.notify_one();
                    },
                    |_| {
                        self.inner.notices.fetch_add(1, Ordering::Relaxed);
                        wake.notify_one()
                    },
                )
                .await;
            if connected.load(Ordering::Relaxed) {
                backoff = LISTEN_RETRY_MIN;
            }
            if let Err(e) = ended {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64,
                    "change notices unavailable; following changes by polling until reconnected");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_RETRY_MAX);
        }
    }

    /// Clean shutdown: gives up leadership and marks the replica stopped, so its remaining work
    /// (jobs waiting on persisted provider operations) is adopted by another replica at once.
    pub fn stop(&self) {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.halt_heartbeat();
        let term = *self.inner.leader.borrow();
        self.inner.leader.send_replace(None);
        let result = self.inner.store.dedicated_connection().and_then(|conn| {
            if let Some(term) = term {
                release_lease(&conn, self.inner.id, term)?;
            }
            let now = db_now_ms(conn.dialect());
            conn.execute(
                &format!("UPDATE replicas SET stopped = {now} WHERE id = ?1"),
                [self.inner.id],
            )?;
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record this replica's stop");
        }
    }

    /// Stops the heartbeat thread and nothing else: to the others the replica then looks like
    /// a process that died (tests; `stop` for a clean shutdown).
    fn halt_heartbeat(&self) {
        {
            let (lock, cvar) = &self.inner.wake;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cvar.notify_all();
        }
        if let Some(thread) = self.inner.heartbeat_thread.lock().take() {
            let _ = thread.join();
        }
    }

    fn heartbeat_loop(self, conn: Connection, runtime: tokio::runtime::Handle) {
        let period = self.inner.lease / 3;
        // Past this without a renewal others may already consider us dead: stop acting first.
        let fence_after = self.inner.lease * 2 / 3;
        let mut last_renewed = Instant::now();
        let mut takeover_running: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if self.inner.stopping.load(Ordering::Acquire) {
                return;
            }
            let owner = self.owner();
            if owner.is_some() && last_renewed.elapsed() > fence_after {
                self.fence("no heartbeat renewal within the lease");
            }
            match self.owner() {
                Some(me) => match renew_heartbeat(&conn, me) {
                    Ok(true) => last_renewed = Instant::now(),
                    Ok(false) => self.fence("the replica was declared dead by another replica"),
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat renewal failed");
                    }
                },
                None => match rejoin(&conn, self.inner.id) {
                    Ok(epoch) => {
                        last_renewed = Instant::now();
                        tracing::warn!(replica = self.inner.id, epoch, "re-joined the cluster");
                        self.inner.owner.send_replace(Some(Owner {
                            replica: self.inner.id,
                            epoch,
                        }));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot re-join the cluster"),
                },
            }
            if let Some(me) = self.owner() {
                self.lead(&conn, me);
                if takeover_running.as_ref().is_none_or(|t| t.is_finished()) {
                    let replica = self.clone();
                    takeover_running = Some(runtime.spawn(async move {
                        if let Err(e) = replica.take_over_and_resume().await {
                            tracing::warn!(error = %e, "takeover pass failed");
                        }
                    }));
                }
            }
            let (lock, cvar) = &self.inner.wake;
            let woken = lock.lock().unwrap_or_else(|e| e.into_inner());
            if *woken {
                return;
            }
            let _ = cvar.wait_timeout(woken, period);
        }
    }

    /// Acquires or renews the scheduler lease; any failure gives leadership up at once.
    fn lead(&self, conn: &Connection, me: Owner) {
        let lease_ms = self.inner.lease.as_millis() as i64;
        let term = *self.inner.leader.borrow();
        match term {
            Some(term) => match renew_lease(conn, me.replica, term, lease_ms) {
                Ok(true) => {}
                Ok(false) => self.step_down(term, "the lease was taken over"),
                Err(e) => {
                    self.step_down(term, "renewing the lease failed");
                    tracing::warn!(error = %e, "renewing the scheduler lease failed");
                }
            },
            None => match acquire_lease(conn, me.replica, lease_ms) {
                Ok(Some(term)) => {
                    tracing::info!(replica = me.replica, term, "became the scheduler leader");
                    self.inner.leader.send_replace(Some(term));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "acquiring the scheduler lease failed"),
            },
        }
    }

    fn step_down(&self, term: i64, why: &str) {
        tracing::warn!(
            replica = self.inner.id,
            term,
            reason = why,
            "gave up scheduler leadership"
        );
        self.inner.leader.send_replace(None);
    }

    /// Stops acting at once: leadership given up, running jobs dropped (their outcome writes
    /// would not match any more), new work refused until the heartbeat thread re-joins.
    fn fence(&self, why: &str) {
        let term = *self.inner.leader.borrow();
        if let Some(term) = term {
            self.step_down(term, why);
        }
        if self.inner.owner.send_replace(None).is_some() {
            tracing::error!(
                replica = self.inner.id,
                reason = why,
                "replica fenced itself"
            );
        }
    }

    /// One takeover pass: declares replicas without a heartbeat for the lease dead, adopts
    /// their pending jobs and operations, and resumes the jobs here.
    pub async fn take_over_and_resume(&self) -> Result<Takeover, ClusterError> {
        let Some(me) = self.owner() else {
            return Ok(Takeover::default());
        };
        let lease_ms = self.inner.lease.as_millis() as i64;
        let taken = self
            .inner
            .store
            .write(move |tx| take_over(tx, me, lease_ms))
            .await?;
        if taken.fenced_replicas > 0 || !taken.jobs.is_empty() {
            tracing::warn!(
                fenced = taken.fenced_replicas,
                jobs = taken.jobs.len(),
                operations = taken.operations,
                "took over the work of dead replicas"
            );
        }
        let jobs = self.inner.jobs.lock().clone();
        if let Some(jobs) = jobs
            && !taken.jobs.is_empty()
            && let Err(e) = jobs.adopt(taken.jobs.clone()).await
        {
            tracing::error!(error = %e, "resuming adopted jobs failed");
        }
        Ok(taken)
    }
}

/// The counters raised by triggers: identity rows, `configurations`, installed providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChangeEpochs {
    identity: i64,
    settings: i64,
    plugins: i64,
}

fn change_epochs(conn: &Connection) -> Result<ChangeEpochs, StoreError> {
    let identity = crate::store::identity_epoch(conn)?;
    let mut epochs = ChangeEpochs {
        identity,
        settings: 0,
        plugins: 0,
    };
    let mut st = conn.prepare_cached("SELECT name, epoch FROM change_epochs")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let (name, epoch): (String, i64) = (r.get(0)?, r.get(1)?);
        match name.as_str() {
            "settings" => epochs.settings = epoch,
            "plugins" => epochs.plugins = epoch,
            _ => {}
        }
    }
    Ok(epochs)
}

fn renew_heartbeat(conn: &Connection, me: Owner) -> db::Result<bool> {
    let now = db_now_ms(conn.dialect());
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE replicas SET heartbeat = {now}
             WHERE id = ?1 AND epoch = ?2 AND stopped IS NULL RETURNING id"
        ))?
        .query_row(params![me.replica, me.epoch], |r| r.get::<i64>(0))
        .optional()?
        .is_some())
}

/// A fenced replica comes back under a new epoch: whatever it owned under the old one is
/// adopted by a takeover pass (possibly its own).
fn rejoin(conn: &Connection, id: i64) -> db::Result<i64> {
    let now = db_now_ms(conn.dialect());
    conn.query_row(
        &format!(
            "UPDATE replicas SET epoch = epoch + 1, heartbeat = {now}, stopped = NULL
             WHERE id = ?1 RETURNING epoch"
        ),
        [id],
        |r| r.get(0),
    )
}

/// Takes the lease if nobody holds it, it expired, or its holder stopped. A new term each time.
fn acquire_lease(conn: &Connection, me: i64, lease_ms: i64) -> db::Result<Option<i64>> {
    let now = db_now_ms(conn.dialect());
    conn.prepare_cached(&format!(
        "UPDATE leases SET holder = ?1, term = term + 1, expires = {now} + ?2
         WHERE name = ?3 AND (holder IS NULL OR expires < {now}
               OR holder IN (SELECT id FROM replicas WHERE stopped IS NOT NULL))
         RETURNING term"
    ))?
    .query_row(params![me, lease_ms, SCHEDULER_LEASE], |r| r.get(0))
    .optional()
}

/// Renews only the lease this replica holds in this term (Oban's duplicate cron runs came from
/// renewing by name only).
fn renew_lease(conn: &Connection, me: i64, term: i64, lease_ms: i64) -> db::Result<bool> {
    let now = db_now_ms(conn.dialect());
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE leases SET expires = {now} + ?1
             WHERE name = ?2 AND holder = ?3 AND term = ?4 AND expires >= {now}
             RETURNING term"
        ))?
        .query_row(params![lease_ms, SCHEDULER_LEASE, me, term], |r| {
            r.get::<i64>(0)
        })
        .optional()?
        .is_some())
}

fn release_lease(conn: &Connection, me: i64, term: i64) -> db::Result<()> {
    conn.execute(
        "UPDATE leases SET expires = 0 WHERE name = ?1 AND holder = ?2 AND term = ?3",
        params![SCHEDULER_LEASE, me, term],
    )?;
    Ok(())
}

/// Live replicas other than `me`: heartbeat within the lease and not stopped.
pub fn other_live_replicas(conn: &Connection, me: i64, lease_ms: i64) -> db::Result<i64> {
    let now = db_now_ms(conn.dialect());
    conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM replicas
             WHERE id <> ?1 AND stopped IS NULL AND heartbeat >= {now} - ?2"
        ),
        params![me, lease_ms],
        |r| r.get(0),
    )
}

/// In one transaction: declares dead every replica whose heartbeat is older than the lease
/// (bumping its epoch, so none of its writes match any more), then adopts for `me` every
/// pending job and provider operation whose owner is not a live replica under the epoch it was
/// written with. Conditional updates: concurrent passes on other replicas adopt each row once.
fn take_over(tx: &Connection, me: Owner, lease_ms: i64) -> Result<Takeover, ClusterError> {
    let now = db_now_ms(tx.dialect());
    // Only a replica that is itself live under its epoch adopts anything.
    let alive: bool = tx
        .prepare_cached(&format!(
            "SELECT EXISTS(SELECT 1 FROM replicas WHERE id = ?1 AND epoch = ?2
                           AND stopped IS NULL AND heartbeat >= {now} - ?3)"
        ))?
        .query_row(params![me.replica, me.epoch, lease_ms], |r| r.get(0))?;
    if !alive {
        return Ok(Takeover::default());
    }
    let fenced_replicas = tx
        .prepare_cached(&format!(
            "UPDATE replicas SET epoch = epoch + 1, stopped = {now}
             WHERE id <> ?1 AND stopped IS NULL AND heartbeat < {now} - ?2"
        ))?
        .execute(params![me.replica, lease_ms])?;
    let orphaned = |table: &str| {
        format!(
            "{table}.owner IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM replicas r WHERE r.id = {table}.owner
                                              AND r.epoch = {table}.owner_epoch
                                              AND r.stopped IS NULL)"
        )
    };
    let adopted: Vec<i64> = tx
        .prepare_cached(&format!(
            "UPDATE async_jobs SET owner = ?1, owner_epoch = ?2
             WHERE status = 0 AND {} RETURNING id",
            orphaned("async_jobs")
        ))?
        .query_map(params![me.replica, me.epoch], |r| r.get(0))?
        .collect::<db::Result<_>>()?;
    let operations = tx
        .prepare_cached(&format!(
            "UPDATE provider_operations SET owner = ?1, owner_epoch = ?2 WHERE {}",
            orphaned("provider_operations")
        ))?
        .execute(params![me.replica, me.epoch])?;
    let mut jobs = Vec::with_capacity(adopted.len());
    for id in adopted {
        if let Some(job) = crate::jobs::get_job_by_id(tx, id).map_err(|e| match e {
            crate::store::OpError::Store(s) => ClusterError::Store(s),
            other => ClusterError::Store(StoreError::Task(other.to_string())),
        })? {
            jobs.push(job);
        }
    }
    Ok(Takeover {
        fenced_replicas,
        jobs,
        operations,
    })
}

#[cfg(test)]
mod propagation_tests;
#[cfg(test)]
mod tests;
