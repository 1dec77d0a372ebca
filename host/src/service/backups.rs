//! Taking, deleting and listing backups (spec §3.6, §3.8, listBackups).

use std::sync::Arc;

use crate::store::db::Value;
use crate::store::db::{Connection, OptionalExtension, params};

use super::error::{BackupError, BackupResult};
use super::model::{
    BACKUP_COLUMNS, BACKUP_FROM, Backup, Offering, VolumeInfo, backup_details, backup_from_row,
    detail, get_backup, get_offering, status, vm_backup_fields,
};
use super::operations::{Operation, OperationKind};
use super::{
    BackupService, Pending, backup_ref, check_backup_access, check_vm_access, instance_with,
    live_vm, record_event, rules,
};
use crate::identity::{Caller, ListScope, ScopeParams};
use crate::inventory::vm::{self, Vm};
use crate::jobs::{self, JobTicket};
use crate::store::events::Level;
use crate::store::query::{Filter, Listed, Page};
use crate::store::{OpResult, format_date, new_uuid, now};
use bnr_runtime::types::{self, OperationResult};

/// Longest backup description (CloudStack's column is 1024 wide).
pub const MAX_BACKUP_DESCRIPTION_LEN: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct CreateBackup {
    pub vm_id: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Present = the caller passed `quiescevm` (even `false`).
    pub quiesce: Option<bool>,
    /// Set by the scheduler: the backup belongs to this schedule (spec §4.3).
    pub schedule_id: Option<i64>,
    /// Set by the API: the job is recorded with the backup row.
    pub job: Option<JobTicket>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupQuery {
    pub id: Option<i64>,
    pub vm_id: Option<i64>,
    pub zone_id: Option<i64>,
    pub name: Option<String>,
    pub offering_id: Option<i64>,
    pub keyword: Option<String>,
    pub scope: ScopeParams,
    pub page: Option<Page>,
    pub with_details: bool,
}

/// What the synchronous phase of createBackup settled.
pub(super) struct NewBackup {
    pub(super) backup_id: i64,
    pub(super) uuid: String,
    pub(super) vm: Vm,
    pub(super) offering: Offering,
    pub(super) instance: types::Instance,
}

impl BackupService {
    /// createBackup: the row is inserted `BackingUp` now (its uuid is the command's `id`); the
    /// job takes the backup and moves it to `BackedUp`, or `Error` with the reason.
    pub async fn create_backup(
        self: &Arc<Self>,
        caller: &Caller,
        req: CreateBackup,
    ) -> BackupResult<Pending<()>> {
        if req
            .description
            .as_deref()
            .is_some_and(|d| d.len() > MAX_BACKUP_DESCRIPTION_LEN)
        {
            return Err(BackupError::BadParameter(format!(
                "Description of a backup is longer than {MAX_BACKUP_DESCRIPTION_LEN} characters"
            )));
        }
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let new = self
            .store
            .write(move |tx| {
                let vm = live_vm(tx, req.vm_id)?;
                providers.check_zone(vm.zone_id)?;
                check_vm_access(tx, &c2, &vm)?;
                let fields = vm_backup_fields(tx, vm.id)?;
                let offering_id = fields.offering_id.ok_or_else(|| {
                    BackupError::refused(
                        "VM has not backup offering configured, cannot create backup before assigning it to a backup offering",
                    )
                })?;
                let offering = get_offering(tx, offering_id)?
                    .ok_or_else(|| BackupError::refused("VM backup offering not found"))?;
                let provider = providers.named(&offering.provider)?;
                // SLA offerings: backups follow the provider's policy; only root admins may
                // take one by hand, and the scheduler never does.
                if !offering.user_driven && (req.schedule_id.is_some() || !c2.is_root_admin()) {
                    return Err(BackupError::refused(
                        "The assigned backup offering does not allow ad-hoc user backup",
                    ));
                }
                rules::check_quiesce(provider.name(), &provider.info().capabilities, req.quiesce)?;
                let interval: Option<String> = match req.schedule_id {
                    Some(id) => tx
                        .prepare_cached("SELECT interval_type FROM backup_schedules WHERE id = ?1")?
                        .query_row([id], |r| r.get(0))
                        .optional()?,
                    None => None,
                };
                let ts = now();
                let name = req
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", vm.name, format_date(ts)));
                let volumes = vm::volumes_of_vm(tx, vm.id)?;
                let infos: Vec<VolumeInfo> = volumes.iter().map(VolumeInfo::of).collect();
                let uuid = new_uuid();
                let inserted_id = tx.insert(
                    "INSERT INTO backups(uuid, name, description, vm_id, type, date, status,
                                         backup_offering_id, account_id, domain_id, zone_id,
                                         backed_volumes, backup_schedule_id, interval_type)
                     VALUES (?1, ?2, ?3, ?4, 'FULL', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)", params![
                    uuid,
                    name,
                    req.description,
                    vm.id,
                    ts,
                    status::BACKING_UP,
                    offering.id,
                    vm.account_id,
                    vm.domain_id,
                    vm.zone_id,
                    VolumeInfo::to_json(&infos),
                    req.schedule_id,
                    interval
                ])?;
                let backup_id = inserted_id;
                let os_name: Option<String> = tx
                    .prepare_cached("SELECT os_type_name FROM templates WHERE uuid = ?1")?
                    .query_row([&vm.template_uuid], |r| r.get(0))
                    .optional()?;
                let mut insert_detail = tx.prepare_cached(
                    "INSERT INTO backup_details(backup_id, name, value) VALUES (?1, ?2, ?3)",
                )?;
                for (k, v) in [
                    (detail::SERVICE_OFFERING_ID, Some(vm.service_offering_uuid.clone())),
                    (detail::TEMPLATE_ID, Some(vm.template_uuid.clone())),
                    (detail::HYPERVISOR, Some(vm.hypervisor.clone())),
                    (detail::OS_NAME, os_name),
                ] {
                    if let Some(v) = v {
                        insert_detail.execute(params![backup_id, k, v])?;
                    }
                }
                let job_uuid = match &req.job {
                    Some(ticket) => Some(ticket.record(tx, "Backup", &uuid)?),
                    None => None,
                };
                let instance = instance_with(&vm, &volumes, fields.external_id);
                Ok::<_, BackupError>((
                    NewBackup {
                        backup_id,
                        uuid,
                        vm,
                        offering,
                        instance,
                    },
                    provider,
                    job_uuid,
                ))
            })
            .await?;
        let (new, provider, job_uuid) = new;
        let this = self.clone();
        let caller = caller.clone();
        let quiesce = req.quiesce.unwrap_or(false);
        let uuid = new.uuid.clone();
        Ok(Pending::new(async move {
            let ctx = this
                .providers
                .call_context(
                    &provider,
                    new.vm.zone_id,
                    &new.vm.zone_uuid,
                    new.vm.host_address.as_deref(),
                )
                .for_backup(&new.uuid);
            let started = provider
                .start_backup(
                    &ctx,
                    &new.instance,
                    &new.offering.external_id,
                    types::BackupOptions { quiesce },
                )
                .await;
            let provider_name = provider.name().to_string();
            // Moved: polling holds the provider only during calls (a successor may take over).
            let op = Operation {
                provider,
                ctx,
                zone_id: new.vm.zone_id,
                kind: OperationKind::Backup,
                backup_id: Some(new.backup_id),
                payload: serde_json::json!({ "backup": new.uuid }),
            };
            let last = jobs::outcome_seal();
            this.complete_operation(op, started, last, move |tx, outcome| {
                finish_backup(tx, &caller, &new, &provider_name, outcome)
            })
            .await
        })
        .created("Backup", &uuid)
        .recorded_as(job_uuid))
    }

    /// deleteBackup (spec §3.8): uses the zone's *current* provider.
    pub async fn delete_backup(
        self: &Arc<Self>,
        caller: &Caller,
        backup_id: i64,
        forced: bool,
    ) -> BackupResult<Pending<()>> {
        let c2 = caller.clone();
        let providers = self.providers.clone();
        let (backup, offering, backup_ref) = self
            .store
            .read(move |c| {
                let b = get_backup(c, backup_id)?
                    .filter(|b| b.removed.is_none())
                    .ok_or_else(|| {
                        BackupError::refused(format!("Backup {backup_id} does not exist"))
                    })?;
                if b.status == status::BACKING_UP {
                    return Err(BackupError::refused(format!(
                        "Backup {} is still being taken; delete it once it has finished",
                        b.uuid
                    )));
                }
                providers.check_zone(b.zone_id)?;
                check_backup_access(c, &c2, &b)?;
                let offering = get_offering(c, b.offering_id)?.ok_or_else(|| {
                    BackupError::refused("Backup offering of the backup not found")
                })?;
                let r = backup_ref(c, &b, &offering.external_id)?;
                Ok((b, offering, r))
            })
            .await?;
        let provider = self.providers.for_zone(backup.zone_id, &backup.zone_uuid)?;
        let chain = rules::check_delete(provider.name(), &provider.info().capabilities, forced)?;
        let this = self.clone();
        let caller = caller.clone();
        let uuid = backup.uuid.clone();
        Ok(Pending::new(async move {
            // A backup that failed before the provider kept anything has nothing to delete there.
            let started = if backup.external_id.is_none() {
                Ok(types::Started::Done(OperationResult::Deleted))
            } else {
                let ctx = this
                    .providers
                    .call_context(&provider, backup.zone_id, &backup.zone_uuid, None)
                    .for_backup(&backup.uuid);
                provider.start_delete(&ctx, &backup_ref, forced).await
            };
            let ctx = this
                .providers
                .call_context(&provider, backup.zone_id, &backup.zone_uuid, None)
                .for_backup(&backup.uuid);
            let op = Operation {
                provider,
                ctx,
                zone_id: backup.zone_id,
                kind: OperationKind::Delete,
                backup_id: Some(backup.id),
                payload: serde_json::json!({ "backup": backup.uuid, "forced": forced }),
            };
            let last = jobs::outcome_seal();
            this.complete_operation(op, started, last, move |tx, outcome| {
                finish_delete(tx, &caller, &backup, &offering, chain, outcome)
            })
            .await
        })
        .on("Backup", &uuid))
    }

    /// listBackups with every filter of spec §2.2. `count` is exact: from `backup_counts` when
    /// only owner/zone/offering filters apply, else counted with the filter.
    pub async fn list_backups(
        &self,
        caller: &Caller,
        q: BackupQuery,
    ) -> BackupResult<Listed<Backup>> {
        // An index walk to a near page runs in place; a keyword (LIKE) scan or a far page walks
        // many rows and goes to the blocking pool instead of holding up the async workers.
        if q.keyword.is_none() && q.page.unwrap_or(Page::ALL).is_near() {
            return self.store.read_now(|c| list_backups(c, caller, &q));
        }
        let caller = caller.clone();
        self.store.read(move |c| list_backups(c, &caller, &q)).await
    }

    /// One backup by internal id, with its details (for job results and tests).
    pub async fn get_backup(&self, id: i64) -> BackupResult<Option<Backup>> {
        Ok(self.store.read(move |c| get_backup(c, id)).await?)
    }
}

/// Records the outcome of a backup: `BackedUp` with the provider's numbers, or `Error` with the
/// reason (the failure is still the job's result).
pub(super) fn finish_backup(
    tx: &Connection,
    caller: &Caller,
    new: &NewBackup,
    provider: &str,
    outcome: BackupResult<OperationResult>,
) -> OpResult<BackupResult<()>> {
    let vm = &new.vm;
    let taken = match outcome {
        Ok(OperationResult::BackupTaken(t)) => Ok(t),
        Ok(other) => Err(BackupError::Provider(format!(
            "Backup provider {provider} answered a backup with {}",
            result_name(&other)
        ))),
        Err(e) => Err(e),
    };
    match taken {
        Ok(t) => {
            tx.prepare_cached(
                "UPDATE backups SET status = ?1, external_id = ?2, type = ?3, size = ?4,
                                    protected_size = ?5, date = coalesce(?6, date), status_reason = NULL
                 WHERE id = ?7",
            )?
            .execute(params![
                status::BACKED_UP,
                t.external_id,
                t.kind,
                i64::try_from(t.size).unwrap_or(i64::MAX),
                i64::try_from(t.protected_size).unwrap_or(i64::MAX),
                t.created.and_then(|c| i64::try_from(c).ok()),
                new.backup_id
            ])?;
            crate::scheduler::usage::refresh_pair(tx, vm.id, new.offering.id, now())?;
            let text = format!("Backup {} of VM {} taken", new.uuid, vm.name);
            record_event(
                tx,
                caller,
                vm.account_id,
                vm.domain_id,
                "BACKUP.CREATE",
                Level::Info,
                &text,
                Some(("Backup", &new.uuid)),
            )?;
            Ok(Ok(()))
        }
        Err(e) => {
            let reason = e.to_string();
            tx.prepare_cached("UPDATE backups SET status = ?1, status_reason = ?2 WHERE id = ?3")?
                .execute(params![status::ERROR, reason, new.backup_id])?;
            let text = format!("Backup {} of VM {} failed: {reason}", new.uuid, vm.name);
            record_event(
                tx,
                caller,
                vm.account_id,
                vm.domain_id,
                "BACKUP.CREATE",
                Level::Error,
                &text,
                Some(("Backup", &new.uuid)),
            )?;
            Ok(Err(e))
        }
    }
}

pub(super) fn finish_delete(
    tx: &Connection,
    caller: &Caller,
    b: &Backup,
    offering: &Offering,
    chain: bool,
    outcome: BackupResult<OperationResult>,
) -> OpResult<BackupResult<()>> {
    match outcome {
        Ok(OperationResult::Deleted) => {}
        Ok(other) => {
            return Ok(Err(BackupError::Provider(format!(
                "Failed to delete the backup: the provider answered with {}",
                result_name(&other)
            ))));
        }
        Err(e) => {
            return Ok(Err(BackupError::Provider(format!(
                "Failed to delete the backup: {e}"
            ))));
        }
    }
    let ts = now();
    tx.prepare_cached("UPDATE backups SET removed = ?1 WHERE id = ?2 AND removed IS NULL")?
        .execute(params![ts, b.id])?;
    if chain && let Some(vm_id) = b.vm_id {
        // The provider dropped the whole chain: the Instance's other backups are gone too.
        tx.prepare_cached(
            "UPDATE backups SET removed = ?1
             WHERE vm_id = ?2 AND backup_offering_id = ?3 AND removed IS NULL",
        )?
        .execute(params![ts, vm_id, b.offering_id])?;
    }
    if let Some(vm_id) = b.vm_id {
        crate::scheduler::usage::refresh_pair(tx, vm_id, b.offering_id, ts)?;
    }
    let text = format!("Backup {} deleted", b.uuid);
    record_event(
        tx,
        caller,
        b.account_id,
        b.domain_id,
        "BACKUP.DELETE",
        Level::Info,
        &text,
        Some(("Backup", &b.uuid)),
    )?;
    if let Some(vm_id) = b.vm_id {
        let still_assigned = vm_backup_fields(tx, vm_id)?.offering_id == Some(b.offering_id);
        let remaining: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM backups WHERE vm_id = ?1 AND backup_offering_id = ?2
                               AND removed IS NULL)",
            )?
            .query_row(params![vm_id, b.offering_id], |r| r.get(0))?;
        if !still_assigned && !remaining {
            let text = format!(
                "No backups left of VM {} in offering {}",
                b.vm_name.as_deref().unwrap_or_default(),
                offering.name
            );
            record_event(
                tx,
                caller,
                b.account_id,
                b.domain_id,
                "BACKUP.OFFERING.BACKUPS.DEL",
                Level::Info,
                &text,
                b.vm_uuid.as_deref().map(|u| ("VirtualMachine", u)),
            )?;
        }
    }
    Ok(Ok(()))
}

pub(crate) fn result_name(r: &OperationResult) -> &'static str {
    match r {
        OperationResult::BackupTaken(_) => "a backup",
        OperationResult::Restored => "a restore",
        OperationResult::VolumeRestored(_) => "a restored volume",
        OperationResult::Deleted => "a deletion",
    }
}

fn list_backups(c: &Connection, caller: &Caller, q: &BackupQuery) -> BackupResult<Listed<Backup>> {
    if let Some(vm_id) = q.vm_id {
        // The VM may be expunged; access is still checked against its owner.
        let vm = vm::get_vm(c, vm_id)?;
        check_vm_access(c, caller, &vm)?;
    }
    let scope = ListScope::resolve(c, caller, &q.scope)?;
    let mut f = Filter::new();
    f.and("b.removed IS NULL", []);
    scope.apply(&mut f, "b.account_id", "b.domain_id");
    f.eq_opt("b.zone_id", q.zone_id);
    f.eq_opt("b.backup_offering_id", q.offering_id);
    let countable = f.clone();
    f.eq_opt("b.id", q.id);
    f.eq_opt("b.vm_id", q.vm_id);
    f.eq_opt("b.name", q.name.clone());
    f.keyword(&["b.name", "v.name"], q.keyword.as_deref());
    let simple = q.id.is_none() && q.vm_id.is_none() && q.name.is_none() && q.keyword.is_none();
    let total = if simple {
        count_from_counters(c, &scope, q.zone_id, q.offering_id)?
    } else {
        let from = if q.keyword.is_some() {
            "backups b LEFT JOIN vms v ON v.id = b.vm_id"
        } else {
            "backups b"
        };
        let n: i64 = c
            .prepare_cached(&format!("SELECT COUNT(*) FROM {from}{}", f.where_sql()))?
            .query_row(crate::store::db::params_from_iter(f.values().iter()), |r| {
                r.get(0)
            })?;
        u64::try_from(n).unwrap_or(0)
    };
    drop(countable);
    if total == 0 {
        return Ok(Listed {
            total: 0,
            items: Vec::new(),
        });
    }
    let page = q.page.unwrap_or(Page::ALL);
    let (limit, offset) = match page.size {
        None => (-1i64, 0i64),
        Some(size) => {
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            let offset = i64::try_from(page.page.saturating_sub(1))
                .unwrap_or(i64::MAX)
                .saturating_mul(size);
            (size, offset)
        }
    };
    // Page on the bare table (an index walk), then join only the rows of the page.
    let ids_from = if q.keyword.is_some() {
        "backups b LEFT JOIN vms v ON v.id = b.vm_id"
    } else {
        "backups b"
    };
    let sql = format!(
        "SELECT {BACKUP_COLUMNS} FROM {BACKUP_FROM} WHERE b.id IN \
         (SELECT b.id FROM {ids_from}{} ORDER BY b.id LIMIT ? OFFSET ?) ORDER BY b.id",
        f.where_sql()
    );
    let values = f
        .values()
        .iter()
        .cloned()
        .chain([Value::Integer(limit), Value::Integer(offset)]);
    let mut items = c
        .prepare_cached(&sql)?
        .query_map(crate::store::db::params_from_iter(values), backup_from_row)?
        .collect::<crate::store::db::Result<Vec<Backup>>>()?;
    if q.with_details {
        for b in &mut items {
            b.details = Some(backup_details(c, b.id)?);
        }
    }
    // Only backups being worked on can have a pending operation: settled pages cost nothing.
    for b in items
        .iter_mut()
        .filter(|b| matches!(b.status.as_str(), "BackingUp" | "Restoring"))
    {
        b.progress = operation_progress(c, b.id)?;
    }
    Ok(Listed { total, items })
}

/// Percent and message last reported for the pending operation on a backup.
fn operation_progress(c: &Connection, backup_id: i64) -> OpResult<Option<(i64, String)>> {
    Ok(c.prepare_cached(
        "SELECT percent, coalesce(message, '') FROM provider_operations \
             WHERE backup_id = ?1 AND percent IS NOT NULL ORDER BY id DESC LIMIT 1",
    )?
    .query_row([backup_id], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?)
}

/// Live backups in scope from the per-(account, zone, offering) counters.
fn count_from_counters(
    c: &Connection,
    scope: &ListScope,
    zone_id: Option<i64>,
    offering_id: Option<i64>,
) -> BackupResult<u64> {
    let mut f = Filter::new();
    scope.apply(&mut f, "k.account_id", "a.domain_id");
    f.eq_opt("k.zone_id", zone_id);
    f.eq_opt("k.backup_offering_id", offering_id);
    let from = match scope {
        ListScope::Domain { .. } => "backup_counts k JOIN accounts a ON a.id = k.account_id",
        _ => "backup_counts k",
    };
    let n: i64 = c
        .prepare_cached(&format!(
            "SELECT CAST(coalesce(sum(k.live), 0) AS BIGINT) FROM {from}{}",
            f.where_sql()
        ))?
        .query_row(crate::store::db::params_from_iter(f.values().iter()), |r| {
            r.get(0)
        })?;
    Ok(u64::try_from(n).unwrap_or(0))
}
