//! Login sessions (cloudmonkey's username/password mode and the console, wire-protocol §1.4),
//! kept in the database (`login_sessions`) so that every replica sharing it knows every
//! session: a session made through one replica works on the others, and logout, or a user
//! disabled or deleted, ends it everywhere with the transaction that says so.
//!
//! Only sha256 digests of the session key and of the `JSESSIONID` are stored: a copy of the
//! database holds no usable session. A session request costs one point read on the primary
//! key; `last_used` is written only when it is older than [`TOUCH_INTERVAL_SECS`].

use sha2::{Digest, Sha256};

use crate::identity::random_key;
use crate::store::db::{self, Connection, OptionalExtension, params};
use crate::store::{Store, StoreError};

/// Idle time after which a session ends (CloudStack's default session timeout is 30 minutes).
pub const SESSION_IDLE_TIMEOUT_SECS: i64 = 1800;
/// Upper bound on stored sessions; the least recently used are dropped beyond it.
pub const MAX_SESSIONS: i64 = 10_000;
/// A session's `last_used` is rewritten only when it is at least this old: a busy console costs
/// one write a minute, not one per request. The idle timeout is therefore exact to within this.
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// The stored form of a session key or `JSESSIONID`.
fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The live sessions, in the store.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions { store }
    }

    /// Starts a session for `user_id`; returns (sessionkey, JSESSIONID). Expired sessions are
    /// deleted first, then the least recently used beyond [`MAX_SESSIONS`].
    pub async fn create(&self, user_id: i64, now: i64) -> Result<(String, String), StoreError> {
        let (key, jsessionid) = (random_key(), random_key());
        let (key_digest, jsessionid_digest) = (digest(&key), digest(&jsessionid));
        self.store
            .write(move |tx| -> Result<(), StoreError> {
                insert(tx, &key_digest, &jsessionid_digest, user_id, now)?;
                Ok(())
            })
            .await?;
        Ok((key, jsessionid))
    }

    /// The user of a live session, refreshing its idle timer. When the client sent a
    /// `JSESSIONID` cookie it must belong to the same session.
    pub async fn touch(
        &self,
        key: &str,
        jsessionid: Option<&str>,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let key_digest = digest(key);
        let lookup = key_digest.clone();
        let found: Option<(String, i64, i64)> = self.store.read_now(|c| find(c, &lookup))?;
        let Some((jsessionid_digest, user_id, last_used)) = found else {
            return Ok(None);
        };
        if now - last_used >= SESSION_IDLE_TIMEOUT_SECS {
            self.remove(key).await?;
            return Ok(None);
        }
        if jsessionid.is_some_and(|j| digest(j) != jsessionid_digest) {
            return Ok(None);
        }
        if now - last_used >= TOUCH_INTERVAL_SECS {
            self.store
                .write(move |tx| -> Result<(), StoreError> {
                    tx.execute(
                        "UPDATE login_sessions SET last_used = ?1
                         WHERE key_sha256 = ?2 AND last_used < ?1",
                        params![now, key_digest],
                    )?;
                    Ok(())
                })
                .await?;
        }
        Ok(Some(user_id))
    }

    /// Ends the session; false when there was none.
    pub async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let key_digest = digest(key);
        self.store
            .write(move |tx| -> Result<bool, StoreError> {
                Ok(tx.execute(
                    "DELETE FROM login_sessions WHERE key_sha256 = ?1",
                    [key_digest],
                )? > 0)
            })
            .await
    }
}

fn find(c: &Connection, key_digest: &str) -> Result<Option<(String, i64, i64)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT jsessionid_sha256, user_id, last_used FROM login_sessions WHERE key_sha256 = ?1",
    )?
    .query_row([key_digest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()?)
}

fn insert(
    tx: &Connection,
    key_digest: &str,
    jsessionid_digest: &str,
    user_id: i64,
    now: i64,
) -> db::Result<()> {
    delete_expired(tx, now)?;
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM login_sessions", [], |r| r.get(0))?;
    if count >= MAX_SESSIONS {
        tx.execute(
            "DELETE FROM login_sessions WHERE key_sha256 IN (
                 SELECT key_sha256 FROM login_sessions ORDER BY last_used, created LIMIT ?1)",
            [count - MAX_SESSIONS + 1],
        )?;
    }
    tx.execute(
        "INSERT INTO login_sessions(key_sha256, jsessionid_sha256, user_id, created, last_used)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![key_digest, jsessionid_digest, user_id, now],
    )?;
    Ok(())
}

/// Ends every session of the given users, in the caller's transaction (they were disabled or
/// deleted): re-enabling a user does not bring an old session back.
pub fn end_user_sessions(tx: &Connection, user_ids: &[i64]) -> db::Result<()> {
    let mut st = tx.prepare_cached("DELETE FROM login_sessions WHERE user_id = ?1")?;
    for id in user_ids {
        st.execute([id])?;
    }
    Ok(())
}

/// Deletes sessions idle past the timeout (at each login, so abandoned ones do not pile up).
pub fn delete_expired(tx: &Connection, now: i64) -> db::Result<usize> {
    tx.execute(
        "DELETE FROM login_sessions WHERE last_used <= ?1",
        [now - SESSION_IDLE_TIMEOUT_SECS],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing::TestDatabase;

    /// Runs `test` on a fresh SQLite store, then on a fresh PostgreSQL one.
    fn each_engine(test: impl Fn(&Store)) {
        let dir = tempfile::tempdir().unwrap();
        test(&Store::open(dir.path().join("db.sqlite")).unwrap());
        let database = TestDatabase::create();
        let store =
            Store::open_postgres(database.url(), dir.path(), crate::store::MIGRATIONS).unwrap();
        test(&store);
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn rows(store: &Store) -> Vec<(String, String, i64)> {
        store
            .read_blocking(|c| -> Result<_, StoreError> {
                let mut st = c.prepare(
                    "SELECT key_sha256, jsessionid_sha256, last_used FROM login_sessions",
                )?;
                Ok(st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<db::Result<Vec<_>>>()?)
            })
            .unwrap()
    }

    #[test]
    fn only_digests_of_the_key_and_cookie_are_stored() {
        each_engine(|store| {
            let sessions = Sessions::new(store.clone());
            let (key, jsessionid) = block(sessions.create(7, 1_000)).unwrap();
            let stored = rows(store);
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].0, digest(&key));
            assert_eq!(stored[0].1, digest(&jsessionid));
            assert_ne!(stored[0].0, key);
            assert_eq!(block(sessions.touch(&key, None, 1_001)).unwrap(), Some(7));
            assert_eq!(
                block(sessions.touch(&key, Some(&jsessionid), 1_001)).unwrap(),
                Some(7)
            );
            assert_eq!(
                block(sessions.touch(&key, Some("another"), 1_001)).unwrap(),
                None
            );
            assert_eq!(
                block(sessions.touch(&digest(&key), None, 1_001)).unwrap(),
                None
            );
            assert!(block(sessions.remove(&key)).unwrap());
            assert_eq!(block(sessions.touch(&key, None, 1_002)).unwrap(), None);
            assert!(rows(store).is_empty());
        });
    }

    #[test]
    fn an_idle_session_ends_and_use_is_written_at_most_once_a_minute() {
        each_engine(|store| {
            let sessions = Sessions::new(store.clone());
            let (key, _) = block(sessions.create(7, 1_000)).unwrap();
            assert_eq!(block(sessions.touch(&key, None, 1_030)).unwrap(), Some(7));
            assert_eq!(rows(store)[0].2, 1_000, "refreshed within the interval");
            assert_eq!(block(sessions.touch(&key, None, 1_100)).unwrap(), Some(7));
            assert_eq!(rows(store)[0].2, 1_100);
            let last = 1_100 + SESSION_IDLE_TIMEOUT_SECS - 1;
            assert_eq!(block(sessions.touch(&key, None, last)).unwrap(), Some(7));
            let expired = last + SESSION_IDLE_TIMEOUT_SECS;
            assert_eq!(block(sessions.touch(&key, None, expired)).unwrap(), None);
            assert!(rows(store).is_empty(), "an expired session is deleted");
        });
    }

    #[test]
    fn sessions_of_disabled_users_end_and_expired_ones_are_swept() {
        each_engine(|store| {
            let sessions = Sessions::new(store.clone());
            let (a, _) = block(sessions.create(1, 1_000)).unwrap();
            let (b, _) = block(sessions.create(2, 2_000)).unwrap();
            store
                .write_blocking(|tx| end_user_sessions(tx, &[1]).map_err(StoreError::from))
                .unwrap();
            assert_eq!(block(sessions.touch(&a, None, 2_001)).unwrap(), None);
            assert_eq!(block(sessions.touch(&b, None, 2_001)).unwrap(), Some(2));
            let swept = store
                .write_blocking(|tx| {
                    delete_expired(tx, 2_000 + SESSION_IDLE_TIMEOUT_SECS).map_err(StoreError::from)
                })
                .unwrap();
            assert_eq!(swept, 1);
            assert!(rows(store).is_empty());
        });
    }

    #[test]
    fn beyond_the_bound_the_least_recently_used_session_is_dropped() {
        each_engine(|store| {
            // Fill to the bound in one transaction (the bound is the production one).
            store
                .write_blocking(|tx| -> Result<(), StoreError> {
                    let mut st = tx.prepare(
                        "INSERT INTO login_sessions(key_sha256, jsessionid_sha256, user_id,
                             created, last_used) VALUES (?1, 'j', 1, ?2, ?2)",
                    )?;
                    for i in 0..MAX_SESSIONS {
                        st.execute(params![format!("k{i}"), 5_000 + i])?;
                    }
                    Ok(())
                })
                .unwrap();
            let (key, _) = block(Sessions::new(store.clone()).create(9, 6_000)).unwrap();
            let stored = rows(store);
            assert_eq!(stored.len() as i64, MAX_SESSIONS);
            assert!(!stored.iter().any(|r| r.0 == "k0"), "the oldest went");
            assert!(stored.iter().any(|r| r.0 == "k1"));
            assert!(stored.iter().any(|r| r.0 == digest(&key)));
        });
    }
}
