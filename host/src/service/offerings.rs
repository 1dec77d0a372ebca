//! Providers and backup offerings (spec §3.2).

use std::sync::Arc;

use crate::store::db::{OptionalExtension, params};

use super::error::{BackupError, BackupResult};
use super::model::{OFFERING_COLUMNS, OFFERING_FROM, Offering, get_offering, offering_from_row};
use super::{BackupService, Pending, record_event};
use crate::config::BACKUP_PROVIDER_PLUGIN;
use crate::identity::{Caller, Role};
use crate::inventory;
use crate::store::events::Level;
use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpError, new_uuid, now};
use bnr_runtime::{Grants, Provider, types};

/// Longest offering description (CloudStack's column is 255 wide; names use the param default).
pub const MAX_OFFERING_DESCRIPTION_LEN: usize = 255;

#[derive(Debug, Clone)]
pub struct ImportOffering {
    pub name: String,
    pub description: String,
    pub external_id: String,
    pub zone_id: i64,
    pub user_driven: bool,
}

#[derive(Debug, Clone, Default)]
pub struct OfferingQuery {
    pub id: Option<i64>,
    pub zone_id: Option<i64>,
    pub keyword: Option<String>,
    pub page: Option<Page>,
}

#[derive(Debug, Clone)]
pub struct UpdateOffering {
    pub id: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub user_driven: Option<bool>,
}

fn unique_violation(e: &OpError) -> bool {
    e.is_unique_violation()
}

impl BackupService {
    /// Installed providers (`name`, `description`), optionally only the one called `name`.
    pub fn list_providers(&self, name: Option<&str>) -> Vec<Arc<Provider>> {
        self.providers
            .catalog()
            .list()
            .into_iter()
            .filter(|p| name.is_none_or(|n| p.name() == n))
            .collect()
    }

    /// The zones `provider` serves (by `backup.framework.provider.plugin`), each with what a
    /// call there is granted (without an instance's hypervisor host).
    pub async fn provider_zones(
        &self,
        provider: &Provider,
    ) -> BackupResult<Vec<(String, String, Grants)>> {
        let zones: Vec<(i64, String, String)> = self
            .store
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
        Ok(zones
            .into_iter()
            .filter(|(id, _, _)| {
                self.settings
                    .get(BACKUP_PROVIDER_PLUGIN, Some(*id))
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(provider.name()))
            })
            .map(|(id, uuid, name)| {
                let grants = self
                    .providers
                    .call_context(provider, id, &uuid, None)
                    .grants;
                (uuid, name, grants)
            })
            .collect())
    }

    /// Whether the provider of `offering` allows instances from its backups in other zones.
    fn with_cross_zone(&self, mut o: Offering) -> Offering {
        o.cross_zone = self
            .providers
            .named(&o.provider)
            .is_ok_and(|p| p.info().capabilities.cross_zone_instance_creation);
        o
    }

    /// The zone provider's policies, shaped as (not persisted) offerings.
    pub async fn list_provider_offerings(
        &self,
        caller: &Caller,
        zone_id: i64,
    ) -> BackupResult<Vec<Offering>> {
        if !caller.is_root_admin() {
            return Err(BackupError::Denied(
                "Parameter external can only be specified by a Root Admin, permission denied"
                    .into(),
            ));
        }
        self.providers.check_zone(zone_id)?;
        let zone = self
            .store
            .read(move |c| inventory::get_zone(c, zone_id))
            .await?;
        let provider = self.providers.for_zone(zone.id, &zone.uuid)?;
        let ctx = self
            .providers
            .call_context(&provider, zone.id, &zone.uuid, None);
        let wit_zone = types::Zone {
            uuid: zone.uuid.clone(),
            name: zone.name.clone(),
        };
        let policies = provider
            .list_policies(&ctx, &wit_zone)
            .await
            .map_err(|e| BackupError::provider(provider.name(), &e))?;
        let cross_zone = provider.info().capabilities.cross_zone_instance_creation;
        let created = now();
        Ok(policies
            .into_iter()
            .map(|p| Offering {
                id: 0,
                uuid: new_uuid(),
                name: p.name,
                description: p.description,
                external_id: p.external_id,
                zone_id: zone.id,
                zone_uuid: zone.uuid.clone(),
                zone_name: zone.name.clone(),
                provider: provider.name().to_string(),
                user_driven: true,
                created,
                removed: None,
                cross_zone,
            })
            .collect())
    }

    /// importBackupOffering: checks now, provider validation and the insert in the job.
    pub async fn import_offering(
        self: &Arc<Self>,
        caller: &Caller,
        req: ImportOffering,
    ) -> BackupResult<Pending<Offering>> {
        if req.description.len() > MAX_OFFERING_DESCRIPTION_LEN {
            return Err(BackupError::BadParameter(format!(
                "Description of a backup offering is longer than {MAX_OFFERING_DESCRIPTION_LEN} characters"
            )));
        }
        if req.name.trim().is_empty() || req.external_id.trim().is_empty() {
            return Err(BackupError::BadParameter(
                "Name and external id of a backup offering must not be empty".into(),
            ));
        }
        self.providers.check_zone(req.zone_id)?;
        let r = req.clone();
        let zone = self
            .store
            .read(move |c| {
                check_import_duplicates(c, &r)?;
                Ok::<_, BackupError>(inventory::get_zone(c, r.zone_id)?)
            })
            .await?;
        let provider = self.providers.for_zone(zone.id, &zone.uuid)?;
        let this = self.clone();
        let caller = caller.clone();
        Ok(Pending::new(async move {
            let ctx = this
                .providers
                .call_context(&provider, zone.id, &zone.uuid, None);
            let wit_zone = types::Zone {
                uuid: zone.uuid.clone(),
                name: zone.name.clone(),
            };
            let valid = provider
                .validate_policy(&ctx, &wit_zone, &req.external_id)
                .await
                .map_err(|e| BackupError::provider(provider.name(), &e))?;
            if !valid {
                return Err(BackupError::refused(format!(
                    "Backup offering '{}' does not exist on provider {} on zone {}",
                    req.external_id,
                    provider.name(),
                    zone.uuid
                )));
            }
            let provider_name = provider.name().to_string();
            let offering = this
                .store
                .write(move |tx| {
                    check_import_duplicates(tx, &req)?;
                    let uuid = new_uuid();
                    let inserted_id = tx.insert(
                        "INSERT INTO backup_offerings(uuid, name, description, external_id, zone_id,
                                                      provider, user_driven, created)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", params![
                        uuid,
                        req.name,
                        req.description,
                        req.external_id,
                        req.zone_id,
                        provider_name,
                        req.user_driven,
                        now()
                    ])?;
                    let offering = get_offering(tx, inserted_id)?
                        .ok_or_else(|| BackupError::refused("offering vanished"))?;
                    let text = format!("Backup offering {} imported", offering.name);
                    record_event(
                        tx,
                        &caller,
                        caller.account_id,
                        caller.domain_id,
                        "BACKUP.IMPORT.OFFERING",
                        Level::Info,
                        &text,
                        Some(("BackupOffering", &offering.uuid)),
                    )?;
                    Ok::<_, BackupError>(offering)
                })
                .await?;
            Ok(this.with_cross_zone(offering))
        }))
    }

    /// listBackupOfferings: normal users only see user-driven offerings; `keyword` is a name
    /// substring (CloudStack's equality-with-wildcards never matches; see docs/backup.md).
    pub async fn list_offerings(
        &self,
        caller: &Caller,
        q: OfferingQuery,
    ) -> BackupResult<Listed<Offering>> {
        let user = caller.role == Role::User;
        let in_place = q.keyword.is_none() && q.page.unwrap_or(Page::ALL).is_near();
        let query = move |c: &crate::store::db::Connection| {
            if let Some(id) = q.id {
                let o = get_offering(c, id)?
                    .filter(|o| o.removed.is_none())
                    .ok_or_else(|| {
                        BackupError::InvalidValue(format!("Offering ID {id} does not exist"))
                    })?;
                return Ok(Listed {
                    total: 1,
                    items: vec![o],
                });
            }
            let mut f = Filter::new();
            f.and("o.removed IS NULL", []);
            f.eq_opt("o.zone_id", q.zone_id);
            if user {
                f.and("o.user_driven = 1", []);
            }
            f.keyword(&["o.name"], q.keyword.as_deref());
            Ok::<_, BackupError>(f.list(
                c,
                OFFERING_COLUMNS,
                OFFERING_FROM,
                "o.id",
                q.page.unwrap_or(Page::ALL),
                offering_from_row,
            )?)
        };
        // Offerings are few and indexed by zone: a near page without keyword runs in place.
        let listed = if in_place {
            self.store.read_now(query)?
        } else {
            self.store.read(query).await?
        };
        Ok(listed.map(|o| self.with_cross_zone(o)))
    }

    /// updateBackupOffering: only the given fields change.
    pub async fn update_offering(
        &self,
        caller: &Caller,
        req: UpdateOffering,
    ) -> BackupResult<Offering> {
        if req.name.is_none() && req.description.is_none() && req.user_driven.is_none() {
            return Err(BackupError::BadParameter(
                "Can't update Backup Offering. Missing one of the following parameters: name, description, allowuserdrivenbackups".into(),
            ));
        }
        if req.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(BackupError::BadParameter(
                "Name of a backup offering must not be empty".into(),
            ));
        }
        if req
            .description
            .as_deref()
            .is_some_and(|d| d.len() > MAX_OFFERING_DESCRIPTION_LEN)
        {
            return Err(BackupError::BadParameter(format!(
                "Description of a backup offering is longer than {MAX_OFFERING_DESCRIPTION_LEN} characters"
            )));
        }
        let caller = caller.clone();
        let offering = self
            .store
            .write(move |tx| {
                let o = get_offering(tx, req.id)?
                    .filter(|o| o.removed.is_none())
                    .ok_or_else(|| {
                        BackupError::InvalidValue(format!(
                            "Unable to find Backup Offering with id: {}",
                            req.id
                        ))
                    })?;
                let updated = tx
                    .prepare_cached(
                        "UPDATE backup_offerings SET name = coalesce(?1, name),
                             description = coalesce(?2, description),
                             user_driven = coalesce(?3, user_driven)
                         WHERE id = ?4",
                    )?
                    .execute(params![req.name, req.description, req.user_driven, req.id])
                    .map_err(OpError::from);
                match updated {
                    Err(e) if unique_violation(&e) => {
                        return Err(BackupError::InvalidValue(
                            "A backup offering with the same name already exists in this zone"
                                .into(),
                        ));
                    }
                    other => other?,
                };
                let text = format!("Backup offering {} updated", o.name);
                record_event(
                    tx,
                    &caller,
                    caller.account_id,
                    caller.domain_id,
                    "BACKUP.OFFERING.EDIT",
                    Level::Info,
                    &text,
                    Some(("BackupOffering", &o.uuid)),
                )?;
                get_offering(tx, req.id)?.ok_or_else(|| BackupError::refused("offering vanished"))
            })
            .await?;
        Ok(self.with_cross_zone(offering))
    }

    /// deleteBackupOffering: refused while backups or assigned VMs reference it; soft delete.
    pub async fn delete_offering(&self, id: i64) -> BackupResult<()> {
        let providers = self.providers.clone();
        self.store
            .write(move |tx| {
                let o = get_offering(tx, id)?
                    .filter(|o| o.removed.is_none())
                    .ok_or_else(|| {
                        BackupError::refused(format!(
                            "Could not find a backup offering with id: {id}"
                        ))
                    })?;
                let has_backups: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS(SELECT 1 FROM backups WHERE backup_offering_id = ?1 AND removed IS NULL)",
                    )?
                    .query_row([id], |r| r.get(0))?;
                if has_backups {
                    return Err(BackupError::refused(
                        "Backup Offering cannot be removed as it has backups associated with it.",
                    ));
                }
                let assigned: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS(SELECT 1 FROM vms WHERE backup_offering_id = ?1 AND zone_id = ?2
                                       AND removed IS NULL)",
                    )?
                    .query_row(params![id, o.zone_id], |r| r.get(0))?;
                if assigned {
                    return Err(BackupError::refused(
                        "Backup offering is assigned to VMs, remove the assignment(s) in order to remove the offering.",
                    ));
                }
                providers.check_zone(o.zone_id)?;
                tx.prepare_cached("UPDATE backup_offerings SET removed = ?1 WHERE id = ?2")?
                    .execute(params![now(), id])?;
                Ok(())
            })
            .await
    }
}

/// Import rules: no live offering with the same external id, nor with the same name, in the zone.
fn check_import_duplicates(
    c: &crate::store::db::Connection,
    r: &ImportOffering,
) -> BackupResult<()> {
    let by_external: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM backup_offerings WHERE zone_id = ?1 AND external_id = ?2 AND removed IS NULL",
        )?
        .query_row(params![r.zone_id, r.external_id], |row| row.get(0))
        .optional()?;
    if by_external.is_some() {
        return Err(BackupError::refused(format!(
            "A backup offering with external ID {} already exists",
            r.external_id
        )));
    }
    let by_name: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM backup_offerings WHERE zone_id = ?1 AND name = ?2 AND removed IS NULL",
        )?
        .query_row(params![r.zone_id, r.name], |row| row.get(0))
        .optional()?;
    if by_name.is_some() {
        return Err(BackupError::refused(
            "A backup offering with the same name already exists in this zone",
        ));
    }
    Ok(())
}
