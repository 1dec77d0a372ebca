//! In-memory login sessions (cloudmonkey's username/password mode, wire-protocol §1.4).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::identity::random_key;

/// Idle time after which a session ends (CloudStack's default session timeout is 30 minutes).
pub const SESSION_IDLE_TIMEOUT_SECS: i64 = 1800;
/// Upper bound on live sessions; the oldest idle ones are dropped beyond it (memory bound).
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub jsessionid: String,
    pub last_used: i64,
}

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    /// Starts a session; returns (sessionkey, JSESSIONID).
    pub fn create(&self, user_id: i64, now: i64) -> (String, String) {
        let (key, jsessionid) = (random_key(), random_key());
        let mut map = self.inner.lock();
        map.retain(|_, s| now - s.last_used < SESSION_IDLE_TIMEOUT_SECS);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key.clone(),
            Session {
                user_id,
                jsessionid: jsessionid.clone(),
                last_used: now,
            },
        );
        (key, jsessionid)
    }

    /// The user of a live session, refreshing its idle timer. When the client sent a
    /// `JSESSIONID` cookie it must belong to the same session.
    pub fn touch(&self, key: &str, jsessionid: Option<&str>, now: i64) -> Option<i64> {
        let mut map = self.inner.lock();
        let s = map.get_mut(key)?;
        if now - s.last_used >= SESSION_IDLE_TIMEOUT_SECS {
            map.remove(key);
            return None;
        }
        if jsessionid.is_some_and(|j| j != s.jsessionid) {
            return None;
        }
        s.last_used = now;
        Some(s.user_id)
    }

    /// Ends every session of the given users (they were disabled or deleted): re-enabling a
    /// user does not bring an old session back.
    pub fn end_users(&self, user_ids: &[i64]) {
        self.inner
            .lock()
            .retain(|_, s| !user_ids.contains(&s.user_id));
    }

    pub fn remove(&self, key: &str) -> bool {
        self.inner.lock().remove(key).is_some()
    }
}
