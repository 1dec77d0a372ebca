//! Installed providers on several replicas, each with its own data directory.
//!
//! The component's bytes are kept in `provider_plugins.component`, so a replica that does not
//! have `plugins/<sha256>.wasm` writes it from the database, after checking the bytes against
//! the row's sha256, and loads it. Each replica records the components it has loaded in
//! `replica_plugins`; a zone is switched to a component (`updateConfiguration` of the plugin
//! setting, or an activation or rollback) only once every live replica reports it there,
//! waiting at most [`READY_WAIT`] for them.
//!
//! Replicas follow installs, deletions and activations made elsewhere when the `plugins`
//! change epoch moves (a notice on PostgreSQL, the epoch poll otherwise):
//! [`Providers::follow_installed_blocking`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::{BackupError, BackupResult};
use super::providers::Providers;
use crate::plugins::{Component, Components, Origin, PluginFiles};
use crate::store::db::{self, params};
use crate::store::events::Level;
use crate::store::{Store, StoreError};
use bnr_runtime::Runtime;

/// How long a zone switch waits for every live replica to have loaded the component before it
/// is refused (replicas are notified at once; loading a component takes well under this).
pub const READY_WAIT: Duration = Duration::from_secs(10);
/// How often the readiness of the other replicas is read while waiting.
const READY_POLL: Duration = Duration::from_millis(50);

/// This process as a replica: its id and the lease that decides who is live.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub replica: i64,
    pub lease_ms: i64,
}

/// A `provider_plugins` row.
pub(super) struct InstalledRow {
    pub uuid: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub signer: Option<String>,
    pub created: i64,
    /// The database keeps the component's bytes.
    pub stored: bool,
}

pub(super) fn installed_rows(store: &Store) -> Result<Vec<InstalledRow>, StoreError> {
    store.read_blocking(|c| {
        let mut st = c.prepare(
            "SELECT uuid, name, version, sha256, signer, created, component IS NOT NULL
             FROM provider_plugins ORDER BY id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(InstalledRow {
                    uuid: r.get(0)?,
                    name: r.get(1)?,
                    version: r.get(2)?,
                    sha256: r.get(3)?,
                    signer: r.get(4)?,
                    created: r.get(5)?,
                    stored: r.get(6)?,
                })
            })?
            .collect::<db::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// The bytes of an installed component: the data directory's file, else the database's copy
/// (then written to the data directory). Either must hash to the row's sha256; a component
/// only the database has is taken unsigned only when `allow_unsigned`.
fn component_bytes(
    store: &Store,
    files: &PluginFiles,
    row: &InstalledRow,
    allow_unsigned: bool,
) -> Result<Vec<u8>, String> {
    if files.path(&row.sha256).is_file() {
        let wasm = files.read(&row.sha256)?;
        if row.stored {
            return Ok(wasm);
        }
        // Installed before the database kept components: give the other replicas a copy.
        let sha = row.sha256.clone();
        let copy = wasm.clone();
        let stored = store.write_blocking(move |tx| {
            tx.execute(
                "UPDATE provider_plugins SET component = ?1 WHERE sha256 = ?2 AND component IS NULL",
                params![copy, sha],
            )
            .map_err(StoreError::from)
        });
        if let Err(e) = stored {
            tracing::warn!(sha256 = %row.sha256, error = %e, "cannot copy an installed component into the database");
        }
        return Ok(wasm);
    }
    if row.signer.is_none() && !allow_unsigned {
        return Err(
            "it was installed unsigned, and this replica does not accept unsigned components \
             (--allow-unsigned-plugins)"
                .to_string(),
        );
    }
    let sha = row.sha256.clone();
    let stored: Option<Vec<u8>> = store
        .read_blocking(move |c| {
            c.query_row(
                "SELECT component FROM provider_plugins WHERE sha256 = ?1",
                [sha],
                |r| r.get::<Option<Vec<u8>>>(0),
            )
            .map_err(StoreError::from)
        })
        .map_err(|e| format!("cannot read the component from the database: {e}"))?;
    let wasm = stored.ok_or_else(|| {
        format!(
            "{} is missing and the database has no copy (installed through a replica before \
             components were kept in the database; start that replica once to copy it)",
            files.path(&row.sha256).display()
        )
    })?;
    let actual = hex::encode(Sha256::digest(&wasm));
    if actual != row.sha256 {
        return Err(format!(
            "the database's copy has sha256 {actual}, not the {} it was installed as",
            row.sha256
        ));
    }
    files
        .write(&row.sha256, &wasm)
        .map_err(|e| format!("cannot write {}: {e}", files.path(&row.sha256).display()))?;
    Ok(wasm)
}

/// Loads one installed component; it must still call itself what it was installed as.
pub(super) fn load_installed_row(
    store: &Store,
    rt: &Arc<Runtime>,
    files: &PluginFiles,
    row: &InstalledRow,
    allow_unsigned: bool,
) -> Result<Component, String> {
    let wasm = component_bytes(store, files, row, allow_unsigned)?;
    let provider = rt.load_bytes(&wasm).map_err(|e| e.to_string())?;
    if provider.sha256() != row.sha256 {
        return Err(format!(
            "it loads with sha256 {}, not {}",
            provider.sha256(),
            row.sha256
        ));
    }
    if provider.name() != row.name || provider.version() != row.version {
        return Err(format!(
            "it now calls itself {} {}, not {} {}",
            provider.name(),
            provider.version(),
            row.name,
            row.version
        ));
    }
    Ok(Component {
        provider,
        origin: Origin::Installed {
            uuid: row.uuid.clone(),
            signer: row.signer.clone(),
            created: row.created,
        },
    })
}

/// Replaces this replica's `replica_plugins` rows with the components it has loaded.
pub(super) fn record_loaded(
    store: &Store,
    member: Member,
    components: &Components,
) -> Result<(), StoreError> {
    let loaded: Vec<String> = components
        .list()
        .iter()
        .map(|c| c.provider.sha256().to_string())
        .collect();
    store.write_blocking(move |tx| {
        tx.execute(
            "DELETE FROM replica_plugins WHERE replica_id = ?1",
            [member.replica],
        )?;
        let mut st = tx.prepare_cached(
            "INSERT INTO replica_plugins(replica_id, sha256, loaded) VALUES (?1, ?2, ?3)",
        )?;
        for sha in loaded {
            st.execute(params![member.replica, sha, crate::store::now()])?;
        }
        Ok(())
    })
}

/// Names of the live replicas (heartbeat within the lease, not stopped) that have not loaded
/// `sha256`.
fn replicas_without(store: &Store, lease_ms: i64, sha256: &str) -> Result<Vec<String>, StoreError> {
    let sha = sha256.to_string();
    store.read_blocking(move |c| {
        let now = crate::cluster::db_now_ms(c.dialect());
        let mut st = c.prepare_cached(&format!(
            "SELECT r.name FROM replicas r
             WHERE r.stopped IS NULL AND r.heartbeat >= {now} - ?1
               AND NOT EXISTS (SELECT 1 FROM replica_plugins p
                               WHERE p.replica_id = r.id AND p.sha256 = ?2)
             ORDER BY r.id"
        ))?;
        let names = st
            .query_map(params![lease_ms, sha], |r| r.get(0))?
            .collect::<db::Result<Vec<String>>>()?;
        Ok(names)
    })
}

/// Waits (at most [`READY_WAIT`]) until every live replica has loaded `sha256`; the refusal
/// names the replicas that have not. Blocking. A process that is not a replica passes at once.
pub(super) fn wait_until_loaded_everywhere(
    store: &Store,
    member: Option<Member>,
    what: &str,
    sha256: &str,
) -> Result<(), String> {
    let Some(member) = member else {
        return Ok(());
    };
    let started = Instant::now();
    loop {
        let missing = replicas_without(store, member.lease_ms, sha256)
            .map_err(|e| format!("cannot read which replicas loaded {what}: {e}"))?;
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= READY_WAIT {
            tracing::warn!(component = what, sha256, replicas = %missing.join(", "),
                "provider switch refused: not loaded by every replica");
            return Err(format!(
                "{what} (sha256 {sha256}) is not loaded yet by replica{} {} after {} s; \
                 the switch was not made (see those replicas' logs)",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                READY_WAIT.as_secs()
            ));
        }
        std::thread::sleep(READY_POLL);
    }
}

impl Providers {
    /// Makes this process a replica for the provider lifecycle: records what it has loaded and
    /// from then on gates zone switches on every live replica having loaded the component.
    /// Blocking.
    pub fn join_cluster(&self, member: Member) -> Result<(), StoreError> {
        let _ = self.member.set(member);
        self.follow_installed_blocking()
    }

    /// The replica this process is, if any.
    pub(super) fn member(&self) -> Option<Member> {
        self.member.get().copied()
    }

    /// Records what this replica has loaded (after an install through it); logged on failure:
    /// the next change notice records it again.
    pub(super) async fn record_loaded_async(self: &Arc<Self>) {
        let Some(member) = self.member() else {
            return;
        };
        let this = self.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            record_loaded(&this.store_handle(), member, &this.components)
        })
        .await;
        if !matches!(recorded, Ok(Ok(()))) {
            tracing::warn!("cannot record the components this replica has loaded");
        }
    }

    /// Refuses (530) a switch to `provider` until every live replica has loaded it.
    pub(super) async fn wait_until_ready(
        &self,
        provider: &Arc<bnr_runtime::Provider>,
    ) -> BackupResult<()> {
        let (store, member) = (self.store_handle(), self.member());
        let what = format!("Backup provider {} {}", provider.name(), provider.version());
        let sha = provider.sha256().to_string();
        tokio::task::spawn_blocking(move || {
            wait_until_loaded_everywhere(&store, member, &what, &sha)
        })
        .await
        .map_err(|_| BackupError::refused("The readiness check failed"))?
        .map_err(BackupError::refused)
    }

    /// Follows what other replicas changed: loads components installed elsewhere (written from
    /// the database into this data directory), forgets deleted ones, points each provider name
    /// at the component its `provider_plugin_active` row names, and records what is loaded.
    /// Blocking; serialised with install, upgrade, rollback and delete.
    pub fn follow_installed_blocking(&self) -> Result<(), StoreError> {
        let Some(member) = self.member() else {
            return Ok(());
        };
        let _serial = self.lifecycle_lock.blocking_lock();
        let rows = installed_rows(&self.store_handle())?;
        if let (Some(rt), Some(files)) = (self.runtime().cloned(), self.files.clone()) {
            for row in &rows {
                if self.components.get(&row.sha256).is_some()
                    || self.refused.lock().contains(&row.sha256)
                {
                    continue;
                }
                match load_installed_row(
                    &self.store_handle(),
                    &rt,
                    &files,
                    row,
                    self.allow_unsigned,
                ) {
                    Ok(component) => {
                        tracing::info!(provider = %row.name, version = %row.version,
                            sha256 = %row.sha256, "loaded a backup provider installed through another replica");
                        let provider = component.provider.clone();
                        self.components.insert(component);
                        let _ = self.register_settings_of(&provider);
                    }
                    Err(reason) => {
                        self.refused.lock().insert(row.sha256.clone());
                        tracing::error!(provider = %row.name, version = %row.version,
                            sha256 = %row.sha256, %reason, "installed backup provider not loaded");
                        super::providers::record_admin_event_as(
                            &self.store_handle(),
                            super::providers::PROVIDER_LOAD_EVENT,
                            Level::Error,
                            &format!(
                                "Installed backup provider {} {} (sha256 {}) was not loaded on replica {}: {reason}",
                                row.name, row.version, row.sha256, member.replica
                            ),
                        );
                    }
                }
            }
            // Deleted through another replica: new calls no longer find it.
            let installed: HashSet<&str> = rows.iter().map(|r| r.sha256.as_str()).collect();
            for component in self.components.list() {
                let sha = component.provider.sha256();
                if matches!(component.origin, Origin::Installed { .. })
                    && !installed.contains(sha)
                    && self
                        .catalog()
                        .get(component.provider.name())
                        .is_none_or(|active| !Arc::ptr_eq(&active, &component.provider))
                {
                    self.components.remove(sha);
                    files.remove(sha);
                }
            }
        }
        self.follow_active()?;
        record_loaded(&self.store_handle(), member, &self.components)
    }

    /// Points each provider name at the component its `provider_plugin_active` row names, when
    /// that component is loaded here.
    fn follow_active(&self) -> Result<(), StoreError> {
        let chosen: Vec<(String, String)> = self.store_handle().read_blocking(|c| {
            let mut st = c.prepare("SELECT name, sha256 FROM provider_plugin_active")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<db::Result<Vec<_>>>()?;
            Ok::<_, StoreError>(rows)
        })?;
        let mut moved = BTreeSet::new();
        for (name, sha) in chosen {
            let Some(component) = self.components.get(&sha) else {
                continue;
            };
            let current = self.catalog().get(&name);
            if current.is_none_or(|c| !Arc::ptr_eq(&c, &component.provider)) {
                let _ = self.register_settings_of(&component.provider);
                self.catalog().insert(component.provider.clone());
                tracing::info!(provider = %name, version = component.provider.version(),
                    sha256 = %sha, "backup provider switched through another replica");
                moved.insert(name);
            }
        }
        if !moved.is_empty() {
            self.sync_all_blocking()?;
        }
        Ok(())
    }
}
