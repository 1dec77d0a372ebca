//! Backup schedules (spec §3.5): at most one per (VM, interval type); create = update.

use std::str::FromStr;

use crate::store::db::{OptionalExtension, params};

use super::error::{BackupError, BackupResult};
use super::model::{
    SCHEDULE_COLUMNS, SCHEDULE_FROM, Schedule, get_offering, schedule_from_row, vm_backup_fields,
};
use super::{BackupService, check_vm_access, live_vm, record_event, rules};
use crate::identity::{Caller, ListScope, ScopeParams};
use crate::inventory::vm;
use crate::scheduler::schedule::{IntervalType, Schedule as ScheduleMath};
use crate::store::events::Level;
use crate::store::query::{Filter, Page};
use crate::store::{new_uuid, now};

#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub vm_id: i64,
    pub interval_type: String,
    pub schedule: String,
    pub timezone: String,
    pub max_backups: Option<i64>,
    pub quiesce: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct ScheduleQuery {
    pub vm_id: Option<i64>,
    pub id: Option<i64>,
    pub keyword: Option<String>,
    pub scope: ScopeParams,
}

impl BackupService {
    /// createBackupSchedule / updateBackupSchedule (the same operation: an upsert).
    pub async fn configure_schedule(
        &self,
        caller: &Caller,
        req: ScheduleRequest,
    ) -> BackupResult<Schedule> {
        let interval = IntervalType::from_str(req.interval_type.trim())
            .map_err(|e| BackupError::BadParameter(e.to_string()))?;
        let caller = caller.clone();
        let providers = self.providers.clone();
        self.store
            .write(move |tx| {
                let vm = live_vm(tx, req.vm_id)?;
                providers.check_zone(vm.zone_id)?;
                check_vm_access(tx, &caller, &vm)?;
                let offering = vm_backup_fields(tx, vm.id)?
                    .offering_id
                    .map(|id| get_offering(tx, id))
                    .transpose()?
                    .flatten()
                    .ok_or_else(|| {
                        BackupError::refused(
                            "Cannot configure backup schedule for the VM without having any backup offering",
                        )
                    })?;
                if !offering.user_driven {
                    return Err(BackupError::refused(
                        "The selected backup offering does not allow user-defined backup schedule",
                    ));
                }
                let provider = providers.named(&offering.provider)?;
                let caps = &provider.info().capabilities;
                rules::check_max_backups(provider.name(), caps, req.max_backups)?;
                rules::check_quiesce(provider.name(), caps, req.quiesce)?;
                let schedule = ScheduleMath::parse(interval, req.schedule.trim(), req.timezone.trim())
                    .map_err(|e| BackupError::BadParameter(e.to_string()))?;
                let next_run = schedule
                    .next_run_after(jiff::Timestamp::now())
                    .as_second();
                tx.prepare_cached(
                    "INSERT INTO backup_schedules(uuid, vm_id, interval_type, schedule, timezone, next_run,
                                                  max_backups, quiesce, account_id, domain_id, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(vm_id, interval_type) DO UPDATE SET
                         schedule = excluded.schedule, timezone = excluded.timezone,
                         next_run = excluded.next_run, max_backups = excluded.max_backups,
                         quiesce = excluded.quiesce, account_id = excluded.account_id,
                         domain_id = excluded.domain_id",
                )?
                .execute(params![
                    new_uuid(),
                    vm.id,
                    interval.as_str(),
                    schedule.text(),
                    schedule.time_zone_name(),
                    next_run,
                    req.max_backups.unwrap_or(0),
                    req.quiesce,
                    vm.account_id,
                    vm.domain_id,
                    now()
                ])?;
                let saved = tx
                    .prepare_cached(&format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.vm_id = ?1 AND s.interval_type = ?2"
                    ))?
                    .query_row(params![vm.id, interval.as_str()], schedule_from_row)?;
                let text = format!(
                    "Configured {} backup schedule {} ({}) for VM {}",
                    interval,
                    saved.schedule,
                    saved.timezone,
                    vm.name
                );
                record_event(
                    tx,
                    &caller,
                    vm.account_id,
                    vm.domain_id,
                    "BACKUP.SCHEDULE.CONFIGURE",
                    Level::Info,
                    &text,
                    Some(("VirtualMachine", &vm.uuid)),
                )?;
                Ok(saved)
            })
            .await
    }

    /// listBackupSchedule: by VM (access and zone checked) or ACL-scoped; not paginated.
    pub async fn list_schedules(
        &self,
        caller: &Caller,
        q: ScheduleQuery,
    ) -> BackupResult<Vec<Schedule>> {
        // One VM's schedules are an index lookup: run in place. An account- or domain-wide
        // list is not paginated and goes to the blocking pool.
        let in_place = q.vm_id.is_some() && q.keyword.is_none();
        let caller = caller.clone();
        let providers = self.providers.clone();
        let query = move |c: &crate::store::db::Connection| {
            let mut f = Filter::new();
            if let Some(vm_id) = q.vm_id {
                let vm = live_vm(c, vm_id)?;
                providers.check_zone(vm.zone_id)?;
                check_vm_access(c, &caller, &vm)?;
                f.and("s.vm_id = ?", [vm_id.into()]);
            } else {
                let scope = ListScope::resolve(c, &caller, &q.scope)?;
                scope.apply(&mut f, "s.account_id", "s.domain_id");
            }
            f.eq_opt("s.id", q.id);
            f.keyword(&["v.name"], q.keyword.as_deref());
            let listed = f.list(
                c,
                SCHEDULE_COLUMNS,
                SCHEDULE_FROM,
                "s.id",
                Page::ALL,
                schedule_from_row,
            )?;
            Ok(listed.items)
        };
        if in_place {
            self.store.read_now(query)
        } else {
            self.store.read(query).await
        }
    }

    /// deleteBackupSchedule: one schedule by id (precedence) or every schedule of a VM.
    pub async fn delete_schedules(
        &self,
        caller: &Caller,
        id: Option<i64>,
        vm_id: Option<i64>,
    ) -> BackupResult<()> {
        let caller = caller.clone();
        let providers = self.providers.clone();
        self.store
            .write(move |tx| {
                let (vm_id, only) = match (id, vm_id) {
                    (Some(id), _) => {
                        let vm_id: i64 = tx
                            .prepare_cached("SELECT vm_id FROM backup_schedules WHERE id = ?1")?
                            .query_row([id], |r| r.get(0))
                            .optional()?
                            .ok_or_else(|| {
                                BackupError::refused(
                                    "Could not find the requested backup schedule.",
                                )
                            })?;
                        (vm_id, Some(id))
                    }
                    (None, Some(vm_id)) => (vm_id, None),
                    (None, None) => {
                        return Err(BackupError::refused(
                            "Either instance ID or ID of backup schedule needs to be specified.",
                        ));
                    }
                };
                let vm = vm::get_vm(tx, vm_id)?;
                providers.check_zone(vm.zone_id)?;
                check_vm_access(tx, &caller, &vm)?;
                let deleted = match only {
                    Some(id) => tx
                        .prepare_cached("DELETE FROM backup_schedules WHERE id = ?1")?
                        .execute([id])?,
                    None => tx
                        .prepare_cached("DELETE FROM backup_schedules WHERE vm_id = ?1")?
                        .execute([vm_id])?,
                };
                if deleted == 0 {
                    return Err(BackupError::refused(
                        "Could not find the requested backup schedule.",
                    ));
                }
                let text = format!("Deleted {deleted} backup schedule(s) of VM {}", vm.name);
                record_event(
                    tx,
                    &caller,
                    vm.account_id,
                    vm.domain_id,
                    "BACKUP.SCHEDULE.DELETE",
                    Level::Info,
                    &text,
                    Some(("VirtualMachine", &vm.uuid)),
                )?;
                Ok(())
            })
            .await
    }
}
