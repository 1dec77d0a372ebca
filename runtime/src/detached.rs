//! Remote commands that outlive the provider call that started them (1.2.0's
//! `remote-exec-start`, `remote-exec-poll`, `remote-exec-cancel`).
//!
//! A backup script may run for an hour; a provider call lasts seconds. The host runs such a
//! command on its own task over the same SSH transport and keeps its outcome under a random
//! id that the provider puts in its operation handle; later calls (bnr's operation polls) ask
//! for the outcome or cancel it. An id is only visible to the provider and zone that started
//! it. Bounded: at most [`MAX_RUNNING`] commands at once, each for at most
//! [`DETACHED_TIMEOUT_MAX`], and an outcome nobody collects is dropped after [`KEEP_FINISHED`].
//! The commands live in this process: after a restart their ids are unknown, which a provider
//! reports as a failed operation (the operation ends, nothing stays transitional).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore;

use super::ssh::{self, ExecCall, ExecFailure, ExecOutcome, SshConnection};

/// Commands running (or finished and not yet collected) at once, over all providers.
pub const MAX_RUNNING: usize = 256;
/// Upper bound of one detached command, whatever the request asks.
pub const DETACHED_TIMEOUT_MAX: Duration = Duration::from_secs(12 * 60 * 60);
/// How long a finished outcome is kept for its provider to collect.
pub const KEEP_FINISHED: Duration = Duration::from_secs(60 * 60);

/// Where a detached command is: running, or its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DetachedState {
    Running,
    Finished(Result<ExecOutcome, ExecFailure>),
    /// No command with this id for this provider and zone (never started, collected, dropped,
    /// or started before a restart).
    Unknown,
}

/// A finished command's outcome and when it finished.
type Finished = (Result<ExecOutcome, ExecFailure>, Instant);

struct Entry {
    owner: (String, String),
    outcome: Arc<Mutex<Option<Finished>>>,
    task: tokio::task::JoinHandle<()>,
}

static COMMANDS: LazyLock<Mutex<HashMap<String, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Starts `call` on `host`; the id to poll it by, or why it was not started.
pub(crate) fn start(
    owner: (String, String),
    host: String,
    connection: SshConnection,
    mut call: ExecCall,
) -> Result<String, ExecFailure> {
    let mut commands = COMMANDS.lock();
    let now = Instant::now();
    commands.retain(|_, entry| {
        let expired = entry
            .outcome
            .lock()
            .as_ref()
            .is_some_and(|(_, finished)| now.duration_since(*finished) > KEEP_FINISHED);
        !expired
    });
    if commands.len() >= MAX_RUNNING {
        return Err(ExecFailure::InvalidRequest(format!(
            "{MAX_RUNNING} detached commands are already running on this bnr; retry later"
        )));
    }
    call.timeout = call.timeout.min(DETACHED_TIMEOUT_MAX);
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let id = hex::encode(bytes);
    let outcome = Arc::new(Mutex::new(None));
    let slot = outcome.clone();
    let task = tokio::spawn(async move {
        let result = ssh::run(&host, &connection, &call).await;
        *slot.lock() = Some((result, Instant::now()));
    });
    commands.insert(
        id.clone(),
        Entry {
            owner,
            outcome,
            task,
        },
    );
    Ok(id)
}

/// The state of command `id`; a finished outcome is handed out once.
pub(crate) fn poll(owner: &(String, String), id: &str) -> DetachedState {
    let mut commands = COMMANDS.lock();
    let Some(entry) = commands.get(id).filter(|e| &e.owner == owner) else {
        return DetachedState::Unknown;
    };
    let finished = entry.outcome.lock().take();
    match finished {
        None => DetachedState::Running,
        Some((result, _)) => {
            commands.remove(id);
            DetachedState::Finished(result)
        }
    }
}

/// Stops command `id` (the SSH session is closed); whether there was one.
pub(crate) fn cancel(owner: &(String, String), id: &str) -> bool {
    let mut commands = COMMANDS.lock();
    match commands.get(id) {
        Some(entry) if &entry.owner == owner => {
            entry.task.abort();
            commands.remove(id);
            true
        }
        _ => false,
    }
}
