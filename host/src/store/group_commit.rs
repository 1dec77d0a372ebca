//! Group commit for the SQLite writer: [`Store::write`](super::Store::write) calls that arrive
//! while the writer is busy are run together, each inside its own savepoint, in one
//! transaction with one `COMMIT`.
//!
//! A commit writes every page the transaction dirtied to the WAL, one `pwrite` per page, while
//! holding the only writer. Concurrent writes (sixteen clients taking backups) dirty mostly the
//! same pages (the same index leaves, the same counter rows), so committing them together writes
//! those pages once, and one hand-off to the blocking pool serves a whole batch.
//!
//! What a caller sees does not change: its closure runs alone against the database state the
//! writes before it left; an `Err` (or a panic) undoes exactly its own changes (`ROLLBACK TO`
//! its savepoint); its result is delivered only after the `COMMIT` that made its changes
//! durable, or with the error that prevented it. If SQLite aborts the whole transaction (disk
//! full, I/O error), every write of the batch that had succeeded gets that error, as each would
//! have alone.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use parking_lot::Mutex;

use super::db::{self, Backend, Connection, Transaction};
use super::{StoreError, begin, end, run_cached};

/// At most this many writes per transaction: bounds how long the first of a batch waits for
/// the last before its result is delivered.
const MAX_BATCH: usize = 64;

/// What a queued write does once its batch ended: deliver its result (`None`: committed) or the
/// error that ended the batch.
pub(super) type Delivery = Box<dyn FnOnce(Option<&str>) + Send>;

/// A queued write: runs the caller's closure on the transaction and says whether it succeeded
/// (its changes are kept) and how to deliver the result.
pub(super) type WriteJob = Box<dyn FnOnce(&Transaction<'_>) -> (bool, Delivery) + Send>;

#[derive(Default)]
pub(super) struct WriteQueue {
    state: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    jobs: VecDeque<WriteJob>,
    /// A blocking task is draining the queue; new jobs only need to be pushed.
    draining: bool,
}

impl WriteQueue {
    /// Queues `job`. Returns true when the caller must start a drainer (none is running).
    pub(super) fn push(&self, job: WriteJob) -> bool {
        let mut q = self.state.lock();
        q.jobs.push_back(job);
        !std::mem::replace(&mut q.draining, true)
    }

    /// The next batch, or `None` (and the drainer ends) when the queue is empty. Checked under
    /// the same lock `push` takes, so a job is never left without a drainer.
    pub(super) fn next_batch(&self) -> Option<Vec<WriteJob>> {
        let mut q = self.state.lock();
        if q.jobs.is_empty() {
            q.draining = false;
            return None;
        }
        let n = q.jobs.len().min(MAX_BATCH);
        Some(q.jobs.drain(..n).collect())
    }

    /// The drainer could not run (its task was dropped at runtime shutdown): the queued writes
    /// are dropped, so their callers get an error instead of waiting forever.
    pub(super) fn abandon(&self) {
        let dropped = {
            let mut q = self.state.lock();
            q.draining = false;
            std::mem::take(&mut q.jobs)
        };
        drop(dropped);
    }
}

/// Runs `jobs` on the writer connection in as few transactions as SQLite allows (one, unless it
/// aborts one) and delivers every result. `ended_hook` runs after each transaction ends and before
/// its results are delivered, so a caller that reads right after its write never finds the
/// store's change counters behind it. A job that never runs (its transaction could not begin)
/// is dropped: its caller gets an error.
pub(super) fn run_batch(conn: &Connection, jobs: Vec<WriteJob>, ended_hook: &dyn Fn()) {
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        if let Err(e) = begin(conn, "BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, writes = jobs.len(), "a write transaction could not begin");
            return;
        }
        let tx = Transaction::new(conn);
        // A batch of one needs no savepoint: the transaction is its own.
        let single = jobs.len() == 1;
        let mut kept: Vec<Delivery> = Vec::new();
        let mut aborted = None;
        for job in jobs.by_ref() {
            if !single && let Err(e) = statement(conn, "SAVEPOINT batched_write") {
                aborted = Some(e.to_string());
                break;
            }
            let (ok, deliver) = job(&tx);
            if ok {
                kept.push(deliver);
            } else {
                deliver(None);
            }
            if !single {
                let undone = if ok {
                    statement(conn, "RELEASE batched_write")
                } else {
                    statement(conn, "ROLLBACK TO batched_write")
                        .and_then(|()| statement(conn, "RELEASE batched_write"))
                };
                if let Err(e) = undone {
                    aborted = Some(e.to_string());
                    break;
                }
            }
            if in_autocommit(conn) {
                // SQLite rolled the whole transaction back (disk full, I/O error).
                aborted = Some("the database rolled the write transaction back".into());
                break;
            }
        }
        let outcome = match aborted {
            Some(text) => {
                let _ = end(conn, false);
                Err(text)
            }
            // Every write failed and undid its changes: nothing to commit.
            None if kept.is_empty() => {
                let _ = end(conn, false);
                Ok(())
            }
            None => end(conn, true).map_err(|e| e.to_string()),
        };
        ended_hook();
        match outcome {
            Ok(()) => kept.into_iter().for_each(|d| d(None)),
            Err(text) => kept.into_iter().for_each(|d| d(Some(&text))),
        }
    }
}

fn statement(conn: &Connection, sql: &str) -> Result<(), db::Error> {
    match &conn.0 {
        Backend::Sqlite(c) => run_cached(c, sql).map_err(Into::into),
        Backend::Postgres(_) => Err(db::Error::Other(
            "group commit runs only on the SQLite writer".into(),
        )),
    }
}

fn in_autocommit(conn: &Connection) -> bool {
    conn.as_sqlite()
        .is_some_and(rusqlite::Connection::is_autocommit)
}

/// Wraps a caller's closure as a [`WriteJob`] whose result goes to `reply`.
pub(super) fn job<T, E, F>(f: F, reply: tokio::sync::oneshot::Sender<Result<T, E>>) -> WriteJob
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    Box::new(
        move |tx| match std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))) {
            Ok(Ok(value)) => (
                true,
                Box::new(move |batch_error: Option<&str>| {
                    let result = match batch_error {
                        None => Ok(value),
                        Some(text) => Err(E::from(StoreError::Task(format!(
                            "the write was not committed: {text}"
                        )))),
                    };
                    let _ = reply.send(result);
                }),
            ),
            Ok(Err(e)) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(e));
                }),
            ),
            Err(_) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(E::from(StoreError::Task(
                        "a write panicked; its changes were undone".into(),
                    ))));
                }),
            ),
        },
    )
}
