//! The provider lifecycle's rules: install an uploaded component (verified, signed), switch a
//! provider name to another version after a health probe, roll back, delete, and the trust
//! list of signing keys. Every change is an admin event and a log line naming provider,
//! version, sha256 and zone.
//!
//! Switching is `Catalog::insert`: calls that start afterwards get the new version; a call or a
//! polled operation keeps the `Arc<Provider>` it started with and finishes on it.

use std::sync::Arc;

use crate::store::db::OptionalExtension;

use super::error::{BackupError, BackupResult};
use super::providers::{Providers, missing_grants, record_admin_event_as};
use crate::config::BACKUP_PROVIDER_PLUGIN;
use crate::plugins::{Component, MAX_UPLOAD_BYTES, Origin, signing};
use crate::store::events::Level;
use crate::store::{OpError, StoreError, now};
use bnr_runtime::{Grants, Provider, types};

/// Event types of the provider lifecycle (in `listEvents`, owned by the root admin account).
pub struct PluginEvent;

impl PluginEvent {
    pub const INSTALL: &'static str = "BACKUP.PROVIDER.INSTALL";
    pub const UPGRADE: &'static str = "BACKUP.PROVIDER.UPGRADE";
    pub const ROLLBACK: &'static str = "BACKUP.PROVIDER.ROLLBACK";
    pub const DELETE: &'static str = "BACKUP.PROVIDER.DELETE";
    pub const PROBE_REFUSED: &'static str = "BACKUP.PROVIDER.PROBE";
    pub const SIGNATURE_REFUSED: &'static str = "BACKUP.PROVIDER.SIGNATURE";
    pub const KEY_ADD: &'static str = "BACKUP.PROVIDER.KEY.ADD";
    pub const KEY_DELETE: &'static str = "BACKUP.PROVIDER.KEY.DELETE";
    pub const SWAP: &'static str = "BACKUP.PROVIDER.SWAP";
    pub const GRANT: &'static str = "BACKUP.PROVIDER.GRANT";
    /// A switch refused because a zone does not grant the version's needs.
    pub const NEEDS_REFUSED: &'static str = super::providers::NEEDS_REFUSED_EVENT;
}

/// An upload to install.
pub struct Upload {
    pub wasm: Vec<u8>,
    /// Base64 ed25519 signature (`bnr plugin sign`); `None`: unsigned.
    pub signature: Option<String>,
}

/// A loaded component as `listBackupProviderPlugins` shows it.
pub struct PluginView {
    pub provider: Arc<Provider>,
    pub origin: Origin,
    /// Serves new calls for its name.
    pub active: bool,
    /// Zones whose `backup.framework.provider.plugin` names it (only for the active version):
    /// (uuid, name, grants).
    pub zones: Vec<(String, String, Grants)>,
}

/// A trusted signing key.
pub struct SigningKeyView {
    pub uuid: String,
    pub name: String,
    pub public_key: String,
    pub created: i64,
}

impl Providers {
    fn event(&self, event_type: &str, level: Level, text: &str) {
        record_admin_event_as(&self.store_handle(), event_type, level, text);
    }

    async fn event_async(&self, event_type: &'static str, level: Level, text: String) {
        let store = self.store_handle();
        let _ = tokio::task::spawn_blocking(move || {
            record_admin_event_as(&store, event_type, level, &text)
        })
        .await;
    }

    /// Zones (id, uuid, name) whose plugin setting names `name`.
    async fn zones_using(&self, name: &str) -> BackupResult<Vec<(i64, String, String)>> {
        let zones: Vec<(i64, String, String)> = self
            .store_handle()
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT id, uuid, name FROM zones WHERE removed IS NULL ORDER BY id",
                )?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, OpError>(rows)
            })
            .await?;
        let settings = self.settings_handle();
        Ok(zones
            .into_iter()
            .filter(|(id, _, _)| {
                settings
                    .get(BACKUP_PROVIDER_PLUGIN, Some(*id))
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .collect())
    }

    /// Every loaded component, with its state and the zones it serves.
    pub async fn plugins(&self, name: Option<&str>) -> BackupResult<Vec<PluginView>> {
        let mut views = Vec::new();
        for component in self.components.list() {
            let provider = component.provider.clone();
            if name.is_some_and(|n| !n.eq_ignore_ascii_case(provider.name())) {
                continue;
            }
            let active = self
                .catalog()
                .get(provider.name())
                .is_some_and(|a| Arc::ptr_eq(&a, &provider));
            let zones = if active {
                self.zones_using(provider.name())
                    .await?
                    .into_iter()
                    .map(|(id, uuid, zone_name)| {
                        let grants = self.call_context(&provider, id, &uuid, None).grants;
                        (uuid, zone_name, grants)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            views.push(PluginView {
                provider,
                origin: component.origin,
                active,
                zones,
            });
        }
        Ok(views)
    }

    /// Installs an uploaded component: loaded and checked as at start-up, signature verified
    /// against the trust list, stored in the data directory and the database. A new provider
    /// name serves at once; a new version of an installed name waits for
    /// [`Providers::activate`]. Nothing is half-installed: every check runs before anything
    /// is written, and a failed write removes the file.
    pub async fn install(self: &Arc<Self>, upload: Upload) -> BackupResult<PluginView> {
        let _serial = self.lifecycle_lock.lock().await;
        if upload.wasm.len() > MAX_UPLOAD_BYTES {
            return Err(BackupError::InvalidValue(format!(
                "The component is {} bytes; the largest accepted is {MAX_UPLOAD_BYTES} bytes",
                upload.wasm.len()
            )));
        }
        let (Some(rt), Some(files)) = (self.runtime().cloned(), self.files.clone()) else {
            return Err(BackupError::refused(
                "Installing providers is not available on this server",
            ));
        };
        let wasm = Arc::new(upload.wasm);
        let to_load = wasm.clone();
        let provider = tokio::task::spawn_blocking(move || rt.load_bytes(&to_load))
            .await
            .map_err(|_| BackupError::refused("The component loader failed"))?
            .map_err(|e| {
                BackupError::InvalidValue(format!("The component cannot be installed: {e}"))
            })?;
        let (name, version, sha256) = (
            provider.name().to_string(),
            provider.version().to_string(),
            provider.sha256().to_string(),
        );
        if let Some(existing) = self.components.find(&name, &version) {
            return Err(BackupError::InvalidValue(format!(
                "Backup provider {name} {version} is already installed ({}, sha256 {})",
                existing.origin.kind(),
                existing.provider.sha256()
            )));
        }
        if let Some(existing) = self.components.get(&sha256) {
            return Err(BackupError::InvalidValue(format!(
                "This component is already installed as {} {}",
                existing.provider.name(),
                existing.provider.version()
            )));
        }
        let signer = self
            .check_signature(upload.signature.as_deref(), &name, &version, &sha256)
            .await?;

        let uuid = uuid::Uuid::new_v4().to_string();
        let created = now();
        let first_of_name = self.catalog().get(&name).is_none();
        let (write_files, write_sha, write_wasm) = (files.clone(), sha256.clone(), wasm.clone());
        tokio::task::spawn_blocking(move || write_files.write(&write_sha, &write_wasm))
            .await
            .map_err(|_| BackupError::refused("Writing the component failed"))?
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store an installed component");
                BackupError::refused("The component could not be stored in the data directory")
            })?;
        let row = (
            uuid.clone(),
            name.clone(),
            version.clone(),
            provider.wit_version().to_string(),
            sha256.clone(),
            wasm.len() as i64,
            signer.clone(),
            wasm.clone(),
        );
        let recorded = self
            .store_handle()
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO provider_plugins(uuid, name, version, wit_version, sha256, size,
                         signer, created, component) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    crate::store::db::params![
                        row.0, row.1, row.2, row.3, row.4, row.5, row.6, created, *row.7
                    ],
                )?;
                if first_of_name {
                    tx.execute(
                        "INSERT INTO provider_plugin_active(name, sha256, previous_sha256, changed)
                         VALUES (?1, ?2, NULL, ?3)
                         ON CONFLICT(name) DO UPDATE SET sha256 = ?2, previous_sha256 = NULL,
                         changed = ?3",
                        crate::store::db::params![row.1, row.4, created],
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
        if let Err(e) = recorded {
            files.remove(&sha256);
            return Err(e.into());
        }
        let origin = Origin::Installed {
            uuid,
            signer: signer.clone(),
            created,
        };
        self.components.insert(Component {
            provider: provider.clone(),
            origin: origin.clone(),
        });
        let _ = self.register_settings_of(&provider);
        if first_of_name {
            self.catalog().insert(provider.clone());
        }
        self.record_loaded_async().await;
        let signed_by = signer.as_deref().unwrap_or("unsigned");
        tracing::info!(
            provider = %name,
            version = %version,
            sha256 = %sha256,
            signer = signed_by,
            serving = first_of_name,
            "backup provider installed"
        );
        self.event_async(
            PluginEvent::INSTALL,
            Level::Info,
            format!(
                "Backup provider {name} {version} installed (sha256 {sha256}, signer {signed_by}){}",
                if first_of_name { "; it serves its name" } else { "" }
            ),
        )
        .await;
        Ok(PluginView {
            provider,
            origin,
            active: first_of_name,
            zones: Vec::new(),
        })
    }

    /// The trusted key that signed the statement, or why the upload is refused.
    async fn check_signature(
        &self,
        signature: Option<&str>,
        name: &str,
        version: &str,
        sha256: &str,
    ) -> BackupResult<Option<String>> {
        let refuse = |reason: String| {
            let text =
                format!("Backup provider {name} {version} (sha256 {sha256}) refused: {reason}");
            tracing::warn!(provider = name, version, sha256, %reason, "provider upload refused");
            self.event(PluginEvent::SIGNATURE_REFUSED, Level::Warn, &text);
            BackupError::InvalidValue(text)
        };
        let Some(signature) = signature.filter(|s| !s.trim().is_empty()) else {
            if self.allow_unsigned {
                return Ok(None);
            }
            return Err(refuse(
                "the upload is not signed; sign it with `bnr plugin sign` and a key in the trust \
                 list (addBackupProviderSigningKey)"
                    .to_string(),
            ));
        };
        let signature = signing::parse_signature(signature).map_err(refuse)?;
        let keys = self.signing_keys().await?;
        if keys.is_empty() {
            return Err(refuse(
                "the trust list is empty; add the vendor's key with addBackupProviderSigningKey"
                    .to_string(),
            ));
        }
        for key in keys {
            if let Ok(public) = signing::parse_public_key(&key.public_key)
                && signing::verify(&public, &signature, sha256, name, version)
            {
                return Ok(Some(key.name));
            }
        }
        Err(refuse(
            "the signature matches no trusted key for this component, name and version (signed \
             by an unknown key, or the component was changed after signing)"
                .to_string(),
        ))
    }

    /// Makes `name` serve new calls with `version`, after a health probe: `describe` plus a
    /// `list-policies` call in each zone using the name. A failed probe leaves the current
    /// version serving. `rollback`: the event says so.
    pub async fn activate(
        &self,
        name: &str,
        version: &str,
        rollback: bool,
    ) -> BackupResult<PluginView> {
        let _serial = self.lifecycle_lock.lock().await;
        self.activate_locked(name, version, rollback).await
    }

    async fn activate_locked(
        &self,
        name: &str,
        version: &str,
        rollback: bool,
    ) -> BackupResult<PluginView> {
        let name = name.trim().to_lowercase();
        let target = self.components.find(&name, version.trim()).ok_or_else(|| {
            BackupError::InvalidValue(format!(
                "Backup provider {name} has no installed version {version}"
            ))
        })?;
        let current = self.catalog().get(&name);
        let provider = target.provider.clone();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &provider)) {
            return Err(BackupError::InvalidValue(format!(
                "Backup provider {name} {version} is already the version in use"
            )));
        }
        let zones = self.zones_using(&name).await?;
        for (id, uuid, zone_name) in &zones {
            let Some(missing) =
                missing_grants(self.settings_handle(), &self.api_grants, *id, &provider)
            else {
                continue;
            };
            let text = format!(
                "Backup provider {name} {} (sha256 {}) needs {missing}, which zone {zone_name} ({uuid}) does not grant; grant it with updateBackupProviderGrants first. {} stays",
                provider.version(),
                provider.sha256(),
                current.as_ref().map_or("nothing".to_string(), |c| format!(
                    "{} {}",
                    c.name(),
                    c.version()
                ))
            );
            tracing::warn!(
                provider = %name,
                version = provider.version(),
                sha256 = provider.sha256(),
                zone = %uuid,
                %missing,
                "provider switch refused: needs not granted"
            );
            self.event_async(PluginEvent::NEEDS_REFUSED, Level::Warn, text.clone())
                .await;
            return Err(BackupError::refused(text));
        }
        let started = std::time::Instant::now();
        if let Err(reason) = self.probe(&provider, &zones).await {
            let text = format!(
                "Backup provider {name} {} (sha256 {}) failed its health probe and does not take traffic: {reason}; {} stays",
                provider.version(),
                provider.sha256(),
                current.as_ref().map_or("nothing".to_string(), |c| format!(
                    "{} {}",
                    c.name(),
                    c.version()
                ))
            );
            tracing::warn!(
                provider = %name,
                version = provider.version(),
                sha256 = provider.sha256(),
                %reason,
                "provider health probe failed; swap refused"
            );
            self.event_async(PluginEvent::PROBE_REFUSED, Level::Warn, text.clone())
                .await;
            return Err(BackupError::refused(text));
        }
        // Every replica must be able to serve it before any zone is switched to it.
        self.wait_until_ready(&provider).await?;
        let (new_sha, old_sha) = (
            provider.sha256().to_string(),
            current.as_ref().map(|c| c.sha256().to_string()),
        );
        let (row_name, row_sha, row_old) = (name.clone(), new_sha.clone(), old_sha.clone());
        self.store_handle()
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO provider_plugin_active(name, sha256, previous_sha256, changed)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET sha256 = ?2, previous_sha256 = ?3, changed = ?4",
                    crate::store::db::params![row_name, row_sha, row_old, now()],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        let _ = self.register_settings_of(&provider);
        self.catalog().insert(provider.clone());
        for (id, uuid, _) in &zones {
            // Point the zone registry at the new version now rather than at its next call.
            let _ = self.for_zone(*id, uuid);
        }
        let swap_micros = started.elapsed().as_micros() as u64;
        let zone_list: Vec<&str> = zones.iter().map(|(_, uuid, _)| uuid.as_str()).collect();
        let (event_type, verb) = if rollback {
            (PluginEvent::ROLLBACK, "rolled back")
        } else {
            (PluginEvent::UPGRADE, "switched")
        };
        tracing::info!(
            provider = %name,
            version = provider.version(),
            sha256 = %new_sha,
            previous_sha256 = old_sha.as_deref().unwrap_or(""),
            zones = %zone_list.join(","),
            swap_micros,
            "backup provider {verb}"
        );
        self.event_async(
            event_type,
            Level::Info,
            format!(
                "Backup provider {name} {verb} to {} (sha256 {new_sha}) from {} in zones [{}]",
                provider.version(),
                current.as_ref().map_or("nothing".to_string(), |c| format!(
                    "{} (sha256 {})",
                    c.version(),
                    c.sha256()
                )),
                zone_list.join(", ")
            ),
        )
        .await;
        Ok(PluginView {
            provider,
            origin: target.origin,
            active: true,
            zones: Vec::new(),
        })
    }

    /// Returns `name` to the version it used before its last switch.
    pub async fn rollback(&self, name: &str) -> BackupResult<PluginView> {
        let _serial = self.lifecycle_lock.lock().await;
        let name = name.trim().to_lowercase();
        let row_name = name.clone();
        let previous: Option<Option<String>> = self
            .store_handle()
            .read(move |c| {
                c.query_row(
                    "SELECT previous_sha256 FROM provider_plugin_active WHERE name = ?1",
                    [row_name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::from)
            })
            .await?;
        let previous = previous.flatten().ok_or_else(|| {
            BackupError::InvalidValue(format!(
                "Backup provider {name} has no earlier version to roll back to"
            ))
        })?;
        let component = self.components.get(&previous).ok_or_else(|| {
            BackupError::refused(format!(
                "The previous version of backup provider {name} (sha256 {previous}) is no longer installed"
            ))
        })?;
        let version = component.provider.version().to_string();
        self.activate_locked(&name, &version, true).await
    }

    /// `describe` again, then `list-policies` in each zone; the first failure.
    async fn probe(
        &self,
        provider: &Arc<Provider>,
        zones: &[(i64, String, String)],
    ) -> Result<(), String> {
        let ctx = bnr_runtime::CallContext::new(
            "",
            Default::default(),
            Grants::derive(provider.info(), &Default::default(), None, &[]),
        );
        let mut session = provider
            .session(&ctx)
            .await
            .map_err(|e| format!("describe: {e}"))?;
        let info = session
            .describe()
            .await
            .map_err(|e| format!("describe: {e}"))?;
        if info.name != provider.name() || info.version != provider.version() {
            return Err(format!(
                "describe now answers {} {}, not {} {}",
                info.name,
                info.version,
                provider.name(),
                provider.version()
            ));
        }
        for (id, uuid, zone_name) in zones {
            let ctx = self.call_context(provider, *id, uuid, None);
            let zone = types::Zone {
                uuid: uuid.clone(),
                name: zone_name.clone(),
            };
            provider
                .list_policies(&ctx, &zone)
                .await
                .map_err(|e| format!("list-policies in zone {zone_name} ({uuid}): {e}"))?;
        }
        Ok(())
    }

    /// Sets the grants `provider` has in zone `zone_id` beyond what its settings cover
    /// (`host[:port]`, URLs, `exec:HOST`, `remote-exec-on-instance-host`; none: it has none).
    /// Each entry must match a need that a loaded version of the provider declares (so a grant
    /// can precede the upgrade that needs it); one that does not refuses the whole change.
    /// Returns the zone's uuid and the entries as stored.
    pub async fn set_grants(
        &self,
        zone_id: i64,
        provider: &str,
        grants: &[String],
    ) -> BackupResult<(String, Vec<String>)> {
        let _serial = self.lifecycle_lock.lock().await;
        let name = provider.trim().to_lowercase();
        let provider = self.catalog().get(&name).ok_or_else(|| {
            BackupError::InvalidValue(format!("Backup provider {name} is not installed"))
        })?;
        let versions: Vec<Arc<Provider>> = self
            .components
            .list()
            .into_iter()
            .map(|c| c.provider)
            .filter(|p| p.name() == name)
            .collect();
        let mut normal = Vec::new();
        for entry in grants.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            // The serving version's answer first: its refusal is the one to show.
            let entry = std::iter::once(&provider)
                .chain(versions.iter())
                .map(|p| bnr_runtime::check_operator_extra(p.info(), entry))
                .reduce(|first, other| {
                    if first.is_ok() {
                        first
                    } else {
                        other.or(first)
                    }
                })
                .unwrap_or_else(|| Err(format!("`{entry}` matches no declared need")))
                .map_err(|reason| BackupError::InvalidValue(format!("Grant refused: {reason}")))?;
            if !normal.contains(&entry) {
                normal.push(entry);
            }
        }
        let (row_name, row_grants) = (name.clone(), normal.join(","));
        let zone_uuid: String = self
            .store_handle()
            .write(move |tx| {
                let uuid: Option<String> = tx
                    .query_row(
                        "SELECT uuid FROM zones WHERE id = ?1 AND removed IS NULL",
                        [zone_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(uuid) = uuid else {
                    return Err(OpError::InvalidParameter("Unable to find zone".into()));
                };
                if row_grants.is_empty() {
                    tx.execute(
                        "DELETE FROM provider_zone_grants WHERE zone_id = ?1 AND provider = ?2",
                        crate::store::db::params![zone_id, row_name],
                    )?;
                } else {
                    tx.execute(
                        "INSERT INTO provider_zone_grants(zone_id, provider, grants, changed)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(zone_id, provider) DO UPDATE SET grants = ?3, changed = ?4",
                        crate::store::db::params![zone_id, row_name, row_grants, now()],
                    )?;
                }
                Ok(uuid)
            })
            .await?;
        {
            let mut given = self.api_grants.write();
            if normal.is_empty() {
                given.remove(&(zone_id, name.clone()));
            } else {
                given.insert((zone_id, name.clone()), normal.clone());
            }
        }
        let shown = normal.join(", ");
        tracing::info!(
            provider = %name,
            version = provider.version(),
            sha256 = provider.sha256(),
            zone = %zone_uuid,
            grants = %shown,
            "backup provider grants changed"
        );
        self.event_async(
            PluginEvent::GRANT,
            Level::Info,
            format!(
                "Backup provider {name} {} (sha256 {}) in zone {zone_uuid} is granted [{shown}]",
                provider.version(),
                provider.sha256(),
            ),
        )
        .await;
        Ok((zone_uuid, normal))
    }

    /// Deletes an installed version. Refused for bundled and directory components, for the
    /// version serving a name some zone uses, and while operations of it are in flight.
    pub async fn delete_plugin(&self, name: &str, version: &str) -> BackupResult<()> {
        let _serial = self.lifecycle_lock.lock().await;
        let name = name.trim().to_lowercase();
        let component = self.components.find(&name, version.trim()).ok_or_else(|| {
            BackupError::InvalidValue(format!(
                "Backup provider {name} has no installed version {version}"
            ))
        })?;
        let Origin::Installed { uuid, .. } = &component.origin else {
            return Err(BackupError::refused(format!(
                "Backup provider {name} {version} is {} and cannot be deleted through the API",
                component.origin.kind()
            )));
        };
        let provider = component.provider.clone();
        let sha256 = provider.sha256().to_string();
        let active = self
            .catalog()
            .get(&name)
            .is_some_and(|a| Arc::ptr_eq(&a, &provider));
        if active {
            let zones = self.zones_using(&name).await?;
            if !zones.is_empty() {
                let names: Vec<&str> = zones.iter().map(|(_, _, n)| n.as_str()).collect();
                return Err(BackupError::refused(format!(
                    "Backup provider {name} {version} serves zones {}; switch them to another provider or version first",
                    names.join(", ")
                )));
            }
        }
        let (op_name, op_sha) = (name.clone(), sha256.clone());
        let pending: i64 = self
            .store_handle()
            .read(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM provider_operations
                     WHERE provider_sha256 = ?2 OR (provider_sha256 IS NULL AND provider = ?1 AND ?3)",
                    crate::store::db::params![op_name, op_sha, active],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)
            })
            .await?;
        // References the host holds itself: the components map and the two locals here, the
        // catalog when active, zone registry entries. Anything beyond is a call in flight.
        let held = 2
            + usize::from(active)
            + self
                .zone_registry()
                .entries()
                .iter()
                .filter(|(_, p)| Arc::ptr_eq(p, &provider))
                .count()
            + 1; // `provider` above
        let calls = Arc::strong_count(&provider).saturating_sub(held);
        // Pending operations may outlive this version only when the version now serving the
        // name declares that it adopts them (`for_operation` then hands them over).
        let successor = match self.catalog().get(&name) {
            Some(current) if !active && current.adopts_operations_of(&name, provider.version()) => {
                Some(current)
            }
            _ => None,
        };
        if (pending > 0 && successor.is_none()) || calls > 0 {
            let takeover = match self.catalog().get(&name) {
                Some(current) if pending > 0 && !active => format!(
                    ", and {name} {} does not take over its operations",
                    current.version()
                ),
                _ => String::new(),
            };
            return Err(BackupError::refused(format!(
                "Backup provider {name} {version} has work in flight ({pending} pending operations, {calls} running calls){takeover}; retry when it has finished"
            )));
        }
        let handed_over = match &successor {
            Some(next) if pending > 0 => format!(
                "; its {pending} pending operations are taken over by {name} {} (sha256 {})",
                next.version(),
                next.sha256()
            ),
            _ => String::new(),
        };
        let (row_uuid, row_name, row_sha) = (uuid.clone(), name.clone(), sha256.clone());
        self.store_handle()
            .write(move |tx| {
                tx.execute("DELETE FROM provider_plugins WHERE uuid = ?1", [&row_uuid])?;
                tx.execute(
                    "DELETE FROM provider_plugin_active WHERE name = ?1 AND sha256 = ?2",
                    [&row_name, &row_sha],
                )?;
                tx.execute(
                    "UPDATE provider_plugin_active SET previous_sha256 = NULL
                     WHERE name = ?1 AND previous_sha256 = ?2",
                    [&row_name, &row_sha],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        self.components.remove(&sha256);
        if active {
            match self.components.default_for(&name).or_else(|| {
                self.components
                    .list()
                    .into_iter()
                    .rfind(|c| c.provider.name() == name)
            }) {
                Some(next) => {
                    self.catalog().insert(next.provider);
                }
                None => {
                    self.catalog().remove(&name);
                }
            }
        }
        if let Some(files) = &self.files {
            files.remove(&sha256);
        }
        tracing::info!(
            provider = %name,
            version,
            sha256 = %sha256,
            pending_taken_over = if successor.is_some() { pending } else { 0 },
            "backup provider deleted"
        );
        self.event_async(
            PluginEvent::DELETE,
            Level::Info,
            format!("Backup provider {name} {version} (sha256 {sha256}) deleted{handed_over}"),
        )
        .await;
        Ok(())
    }

    /// The trust list.
    pub async fn signing_keys(&self) -> BackupResult<Vec<SigningKeyView>> {
        Ok(self
            .store_handle()
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT uuid, name, public_key, created FROM provider_signing_keys ORDER BY name",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok(SigningKeyView {
                            uuid: r.get(0)?,
                            name: r.get(1)?,
                            public_key: r.get(2)?,
                            created: r.get(3)?,
                        })
                    })?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, StoreError>(rows)
            })
            .await?)
    }

    /// Adds a key to the trust list.
    pub async fn add_signing_key(
        &self,
        name: &str,
        public_key: &str,
    ) -> BackupResult<SigningKeyView> {
        let name = name.trim().to_string();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(BackupError::InvalidValue(
                "A signing key name is 1 to 64 characters of letters, digits, '-', '_' and '.'"
                    .to_string(),
            ));
        }
        let key = signing::parse_public_key(public_key).map_err(BackupError::InvalidValue)?;
        let view = SigningKeyView {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: name.clone(),
            public_key: signing::public_key_text(&key),
            created: now(),
        };
        let row = (
            view.uuid.clone(),
            view.name.clone(),
            view.public_key.clone(),
            view.created,
        );
        self.store_handle()
            .write(move |tx| {
                let taken: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM provider_signing_keys WHERE name = ?1 OR public_key = ?2",
                    [&row.1, &row.2],
                    |r| r.get(0),
                )?;
                if taken > 0 {
                    return Err(BackupError::InvalidValue(
                        "A signing key with this name or public key is already trusted".to_string(),
                    ));
                }
                tx.execute(
                    "INSERT INTO provider_signing_keys(uuid, name, public_key, created)
                     VALUES (?1, ?2, ?3, ?4)",
                    crate::store::db::params![row.0, row.1, row.2, row.3],
                )?;
                Ok(())
            })
            .await?;
        tracing::info!(key = %view.name, "provider signing key trusted");
        self.event_async(
            PluginEvent::KEY_ADD,
            Level::Info,
            format!(
                "Provider signing key {} ({}) added to the trust list",
                view.name, view.public_key
            ),
        )
        .await;
        Ok(view)
    }

    /// Removes a key from the trust list (components it signed stay installed).
    pub async fn delete_signing_key(&self, name: &str) -> BackupResult<()> {
        let row_name = name.trim().to_string();
        let removed = self
            .store_handle()
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM provider_signing_keys WHERE name = ?1",
                    [&row_name],
                )
                .map_err(StoreError::from)
            })
            .await?;
        if removed == 0 {
            return Err(BackupError::InvalidValue(format!(
                "No trusted signing key is named {}",
                name.trim()
            )));
        }
        tracing::info!(key = name.trim(), "provider signing key removed");
        self.event_async(
            PluginEvent::KEY_DELETE,
            Level::Info,
            format!(
                "Provider signing key {} removed from the trust list",
                name.trim()
            ),
        )
        .await;
        Ok(())
    }

    /// The component that must finish an operation started on `sha256` of provider `name`:
    /// that exact component while it is loaded; otherwise the version serving `name` only if
    /// it declares that it adopts the operations of `version` (`adopts-operations-from`).
    pub fn for_operation(
        &self,
        name: &str,
        version: Option<&str>,
        sha256: Option<&str>,
    ) -> BackupResult<Arc<Provider>> {
        if let Some(component) = sha256.and_then(|sha| self.components.get(sha)) {
            return Ok(component.provider);
        }
        let current = self.named(name)?;
        match version {
            None => Ok(current),
            Some(started) if current.adopts_operations_of(name, started) => Ok(current),
            Some(started) => Err(BackupError::refused(format!(
                "The operation was started on backup provider {name} {started}, which is no longer installed, and {} {} does not take over its operations",
                current.name(),
                current.version()
            ))),
        }
    }

    /// Records that a zone switched provider (from the settings watcher).
    pub(super) fn record_swap(&self, zone_uuid: &str, old: Option<&Provider>, new: &Provider) {
        let text = format!(
            "Zone {zone_uuid} switched backup provider from {} to {} {} (sha256 {})",
            old.map_or("none".to_string(), |o| format!(
                "{} {} (sha256 {})",
                o.name(),
                o.version(),
                o.sha256()
            )),
            new.name(),
            new.version(),
            new.sha256()
        );
        tracing::info!(
            zone = zone_uuid,
            provider = new.name(),
            version = new.version(),
            sha256 = new.sha256(),
            "zone backup provider switched"
        );
        self.event(PluginEvent::SWAP, Level::Info, &text);
    }
}
