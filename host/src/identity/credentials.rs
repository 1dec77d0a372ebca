//! The API-key credentials of signed requests, kept in memory between requests.
//!
//! Every signed request needs its user, account state and secret key. Loading them is an indexed
//! join; keeping them saves that on the hot path without weakening any check: the caller still
//! verifies the signature, the expiry and that user and account are enabled on every request,
//! against a copy that is never older than the last change to `users`, `accounts` or `domains`
//! (see [`Store::identity_generation`]). The copy lives in memory only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::{User, user_by_api_key};
use crate::store::{OpResult, Store};

/// Credentials kept at most; past it the whole map is dropped and refilled on demand (only keys
/// that verified as existing are kept, so the bound is about real users, not guessed keys).
const MAX_ENTRIES: usize = 4096;
/// A copy is reloaded after this long even when nothing changed through this process, so a
/// change made to the database by another process is seen within it.
const MAX_AGE: Duration = Duration::from_secs(30);

/// The live user owning an API key, and that key's secret.
pub struct Credential {
    pub user: User,
    secret: String,
}

impl Credential {
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

struct Cached {
    generation: u64,
    loaded: Instant,
    credential: Arc<Credential>,
}

/// API key → credential, valid while [`Store::identity_generation`] has not moved.
pub struct CredentialCache {
    store: Store,
    entries: RwLock<HashMap<String, Cached>>,
}

impl CredentialCache {
    pub fn new(store: Store) -> CredentialCache {
        CredentialCache {
            store,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The credential of `api_key` (`None`: no live user has it), from memory when no
    /// identity row changed since it was loaded.
    pub fn lookup(&self, api_key: &str) -> OpResult<Option<Arc<Credential>>> {
        // Read before loading: a change that lands while loading makes the new copy stale.
        let generation = self.store.identity_generation();
        if let Some(hit) = self.entries.read().get(api_key)
            && hit.generation == generation
            && hit.loaded.elapsed() < MAX_AGE
        {
            return Ok(Some(hit.credential.clone()));
        }
        // One indexed lookup: run it in place (see `Store::read_now`).
        let secrets = self.store.secrets();
        let found = self
            .store
            .read_now(|c| user_by_api_key(c, secrets, api_key))?;
        let mut entries = self.entries.write();
        let Some((user, secret)) = found else {
            entries.remove(api_key);
            return Ok(None);
        };
        let credential = Arc::new(Credential { user, secret });
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            api_key.to_string(),
            Cached {
                generation,
                loaded: Instant::now(),
                credential: credential.clone(),
            },
        );
        Ok(Some(credential))
    }

    /// Number of credentials held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
