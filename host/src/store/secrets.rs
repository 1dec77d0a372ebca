//! Secrets at rest: users' secret keys and secret settings are stored sealed with
//! ChaCha20-Poly1305 (AEAD) under a 256-bit key, like CloudStack's database encryption key.
//!
//! The key comes from `BNR_ENCRYPTION_KEY` (base64, 32 bytes) when set, otherwise from the
//! `bnr.key` file in the data directory, created `0600` with a random key on first start.
//! A sealed value is `sealed:v1:<key id>:<base64(nonce ‖ ciphertext)>`; the key id (first bytes
//! of the key's SHA-256) lets a rotation interrupted half-way still read every value.
//!
//! Rotation ([`rotate_key`], `bnr rotate-key`) writes the new key to `bnr.key.next`, re-seals
//! every value in one transaction, then renames `bnr.key.next` over `bnr.key`. Stopped in
//! between, the next start reads values under either key, and running the rotation again
//! finishes it with the same new key.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::db::{Connection, params};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::StoreError;

/// The key file in the data directory.
pub const KEY_FILE: &str = "bnr.key";
/// A new key during a rotation.
pub const NEXT_KEY_FILE: &str = "bnr.key.next";
/// Environment variable holding the key (base64 of 32 bytes); wins over the file.
pub const KEY_ENV: &str = "BNR_ENCRYPTION_KEY";
/// Environment variable holding the new key for a rotation when the key comes from the
/// environment.
pub const NEW_KEY_ENV: &str = "BNR_NEW_ENCRYPTION_KEY";

const SEALED_PREFIX: &str = "sealed:v1:";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("encryption key: {0}")]
    Key(String),
    #[error("a stored secret cannot be decrypted with the configured encryption key")]
    Open,
    #[error("cannot encrypt a secret")]
    Seal,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct SealingKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl SealingKey {
    fn new(bytes: &[u8; KEY_BYTES]) -> SealingKey {
        let digest = Sha256::digest(bytes);
        SealingKey {
            id: hex::encode(&digest[..4]),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The keys of one data directory: the one values are sealed with, and any other a value may
/// still be sealed with (during a rotation). Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    keys: Arc<Vec<SealingKey>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// The keys of `data_dir` (see the module docs), creating the key file if there is none.
    pub fn load(data_dir: &Path) -> Result<Secrets, SecretError> {
        Ok(Secrets {
            keys: Arc::new(load_keys(data_dir)?),
        })
    }

    fn with_key(bytes: &[u8; KEY_BYTES]) -> Secrets {
        Secrets {
            keys: Arc::new(vec![SealingKey::new(bytes)]),
        }
    }

    /// `plaintext` sealed under the current key, with a fresh random nonce.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| SecretError::Seal)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            key.id,
            STANDARD.encode(blob)
        ))
    }

    /// The plaintext of a value [`Secrets::seal`] produced under any known key.
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        let (id, blob) = stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or(SecretError::Open)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(SecretError::Open)?;
        let blob = STANDARD.decode(blob).map_err(|_| SecretError::Open)?;
        if blob.len() < NONCE_BYTES {
            return Err(SecretError::Open);
        }
        let (nonce, sealed) = blob.split_at(NONCE_BYTES);
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }
}

fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], SecretError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| SecretError::Key("not base64".into()))?;
    bytes
        .try_into()
        .map_err(|_| SecretError::Key(format!("must be {KEY_BYTES} bytes")))
}

fn read_key_file(path: &Path) -> Result<Option<[u8; KEY_BYTES]>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(&text)
            .map(Some)
            .map_err(|e| SecretError::Key(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn random_key() -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Writes a key file `0600` (created new; replaced atomically when `path` exists).
fn write_key_file(path: &Path, key: &[u8; KEY_BYTES]) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    // The mode above is masked by the umask; make it exact.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(format!("{}\n", STANDARD.encode(key)).as_bytes())
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The current key first, then the key of a rotation under way.
fn load_keys(data_dir: &Path) -> Result<Vec<SealingKey>, SecretError> {
    let mut keys = vec![SealingKey::new(&current_key(data_dir)?)];
    if let Some(next) = read_key_file(&data_dir.join(NEXT_KEY_FILE))? {
        keys.push(SealingKey::new(&next));
    }
    Ok(keys)
}

/// The key values are sealed with: the environment's, else the file's (created when missing).
fn current_key(data_dir: &Path) -> Result<[u8; KEY_BYTES], SecretError> {
    if let Ok(text) = std::env::var(KEY_ENV) {
        return decode_key(&text).map_err(|e| SecretError::Key(format!("{KEY_ENV}: {e}")));
    }
    let path = data_dir.join(KEY_FILE);
    if let Some(key) = read_key_file(&path)? {
        super::restrict_file(&path);
        return Ok(key);
    }
    let key = random_key();
    write_key_file(&path, &key)?;
    tracing::info!(file = %path.display(), "created the encryption key for secrets at rest");
    Ok(key)
}

/// Re-seals every stored secret of the database in `data_dir` under a new key and makes it the
/// key (see the module docs). The server must be stopped. With the key in the environment, the
/// new key is taken from `BNR_NEW_ENCRYPTION_KEY` and no file is written: start the server with
/// it as `BNR_ENCRYPTION_KEY` afterwards.
pub fn rotate_key(data_dir: &Path) -> Result<(), StoreError> {
    let from_env = std::env::var(KEY_ENV).is_ok();
    let next_path = data_dir.join(NEXT_KEY_FILE);
    let new_key = if from_env {
        let text = std::env::var(NEW_KEY_ENV).map_err(|_| {
            SecretError::Key(format!(
                "{KEY_ENV} is set: give the new key in {NEW_KEY_ENV}"
            ))
        })?;
        decode_key(&text).map_err(|e| SecretError::Key(format!("{NEW_KEY_ENV}: {e}")))?
    } else {
        match read_key_file(&next_path)? {
            // A rotation stopped half-way: finish it with the same key.
            Some(key) => key,
            None => {
                let key = random_key();
                write_key_file(&next_path, &key)?;
                key
            }
        }
    };
    let mut keys = load_keys(data_dir)?;
    // Values already re-sealed by an interrupted run open under the new key.
    keys.push(SealingKey::new(&new_key));
    let old = Secrets {
        keys: Arc::new(keys),
    };
    let new = Secrets::with_key(&new_key);
    // The key of a SQLite data directory; a PostgreSQL store keeps its key in the data
    // directory too, but its rows are re-sealed by `bnr store copy` into a fresh database.
    let raw = rusqlite::Connection::open(data_dir.join(crate::api::DATABASE_FILE))?;
    raw.pragma_update(None, "secure_delete", "ON")?;
    let conn = Connection(super::db::Backend::Sqlite(raw));
    conn.execute_batch("BEGIN IMMEDIATE")?;
    if let Err(e) = reseal(&conn, &old, &new) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    conn.execute_batch("COMMIT")?;
    if let Some(raw) = conn.as_sqlite() {
        raw.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    }
    drop(conn);
    if !from_env {
        std::fs::rename(&next_path, data_dir.join(KEY_FILE)).map_err(|source| SecretError::Io {
            path: next_path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Every sealed value re-sealed from `old` to `new`.
fn reseal(conn: &Connection, old: &Secrets, new: &Secrets) -> Result<(), StoreError> {
    let users: Vec<(i64, String)> = conn
        .prepare("SELECT id, secret_key FROM users WHERE secret_key IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::store::db::Result<_>>()?;
    for (id, stored) in users {
        let plain = open_or_plain(old, &stored)?;
        conn.execute(
            "UPDATE users SET secret_key = ?1 WHERE id = ?2",
            params![new.seal(&plain)?, id],
        )?;
    }
    // A data directory last served before migration 0008 has no hosts yet.
    let has_hosts: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hosts')",
        [],
        |r| r.get(0),
    )?;
    let hosts: Vec<(i64, String)> = if !has_hosts {
        Vec::new()
    } else {
        conn.prepare("SELECT id, password FROM hosts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<crate::store::db::Result<_>>()?
    };
    for (id, stored) in hosts {
        let plain = old.open(&stored)?;
        conn.execute(
            "UPDATE hosts SET password = ?1 WHERE id = ?2",
            params![new.seal(&plain)?, id],
        )?;
    }
    let settings: Vec<(String, String, i64, String)> = conn
        .prepare("SELECT name, scope, scope_id, value FROM configurations WHERE encrypted = 1")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<crate::store::db::Result<_>>()?;
    for (name, scope, scope_id, stored) in settings {
        let plain = old.open(&stored)?;
        conn.execute(
            "UPDATE configurations SET value = ?1 WHERE name = ?2 AND scope = ?3 AND scope_id = ?4",
            params![new.seal(&plain)?, name, scope, scope_id],
        )?;
    }
    Ok(())
}

fn open_or_plain(secrets: &Secrets, stored: &str) -> Result<String, SecretError> {
    if Secrets::is_sealed(stored) {
        secrets.open(stored)
    } else {
        Ok(stored.to_string())
    }
}

/// Seals what an older bnr stored in plain text (users' secret keys). Secret settings are
/// sealed when their definition is registered (`config::Settings::register`).
pub(super) fn seal_plaintext(conn: &Connection, secrets: &Secrets) -> Result<usize, StoreError> {
    let plain: Vec<(i64, String)> = conn
        .prepare(
            "SELECT id, secret_key FROM users
             WHERE secret_key IS NOT NULL AND secret_key NOT LIKE 'sealed:%'",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::store::db::Result<_>>()?;
    for (id, key) in &plain {
        conn.execute(
            "UPDATE users SET secret_key = ?1 WHERE id = ?2",
            params![secrets.seal(key)?, id],
        )?;
    }
    Ok(plain.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_hides_the_plaintext() {
        let a = Secrets::with_key(&[1; KEY_BYTES]);
        let b = Secrets::with_key(&[2; KEY_BYTES]);
        let sealed = a.seal("top secret").unwrap();
        assert!(!sealed.contains("top secret"));
        assert_ne!(a.seal("top secret").unwrap(), sealed, "fresh nonce");
        assert_eq!(a.open(&sealed).unwrap(), "top secret");
        assert!(b.open(&sealed).is_err());
        let (head, blob) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(blob).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = format!("{head}:{}", STANDARD.encode(bytes));
        assert!(a.open(&tampered).is_err());
        assert!(a.open("plain").is_err());
    }
}
