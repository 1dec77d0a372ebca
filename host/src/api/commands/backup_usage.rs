//! Admin commands over what the scheduler's background work collects (bnr additions, not in
//! CloudStack's B&R API): `listBackupUsageRecords` (time-weighted usage per instance and
//! offering) and `listBackupStorageStats` (latest provider storage numbers per zone).

use std::sync::Arc;

use crate::api::registry::{ADMIN_ONLY, ADMINS, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult, Obj};
use crate::identity::{ListScope, ScopeParams};
use crate::scheduler::sync::Syncer;
use crate::scheduler::usage::{self, UsageQuery, UsageRecord};
use crate::store::query::Listed;
use crate::store::{OpError, now};

/// CloudStack's usage type of backup records (`BACKUP` = 28).
pub const BACKUP_USAGE_TYPE: i64 = 28;
const SECONDS_PER_DAY: i64 = 86_400;
/// A bare `yyyy-MM-dd` is 10 characters: as an end date it means "through that day".
const BARE_DATE_LEN: usize = 10;

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listBackupUsageRecords")
            .describe("Lists time-weighted backup usage per instance and backup offering within a time window (usage type 28, BACKUP).")
            .since("bnr")
            .roles(ADMINS)
            .object("backupusagerecord")
            .param(Param::date("startdate").required().desc("start of the window (\"yyyy-MM-dd\", \"yyyy-MM-dd HH:mm:ss\" or ISO with offset); inclusive"))
            .param(Param::date("enddate").required().desc("end of the window; a bare date means the end of that day; exclusive"))
            .param(Param::uuid("zoneid", Entity::ZONE).desc("only usage in this zone").related("listZones"))
            .param(Param::uuid("virtualmachineid", Entity::VM).desc("only usage of this instance").related("listVirtualMachines"))
            .param(Param::string("account").desc("only usage of this account (with domainid)"))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("only usage in this domain (and below with isrecursive)").related("listDomains"))
            .param(Param::boolean("isrecursive").desc("with domainid: include sub-domains"))
            .param(Param::integer("page"))
            .param(Param::integer("pagesize"))
            .field("virtualmachineid", "string", "the instance")
            .field("virtualmachinename", "string", "the instance name")
            .field("backupofferingid", "string", "the backup offering")
            .field("backupofferingname", "string", "the backup offering name")
            .field("zoneid", "string", "the zone")
            .field("accountid", "string", "the owner account")
            .field("account", "string", "the owner account name")
            .field("domainid", "string", "the owner domain")
            .field("domain", "string", "the owner domain name")
            .field("usagetype", "integer", "28 (BACKUP)")
            .field("description", "string", "what the record covers")
            .field("startdate", "date", "first covered instant in the window")
            .field("enddate", "date", "last covered instant in the window")
            .field("usage", "string", "covered hours, e.g. \"1.5 Hrs\"")
            .field("rawusage", "string", "covered hours")
            .field("size", "long", "backup size in bytes at the end of the covered time")
            .field("virtualsize", "long", "protected (virtual) size in bytes at the end of the covered time")
            .field("sizegibhours", "double", "time-weighted physical size, GiB-hours")
            .field("virtualsizegibhours", "double", "time-weighted protected size, GiB-hours")
            .handler(|ctx| async move {
                let start = ctx
                    .date("startdate")
                    .ok_or_else(|| ApiError::missing_param("listBackupUsageRecords", "startdate"))?;
                let mut end = ctx
                    .date("enddate")
                    .ok_or_else(|| ApiError::missing_param("listBackupUsageRecords", "enddate"))?;
                if ctx.str("enddate").is_some_and(|s| s.trim().len() == BARE_DATE_LEN) {
                    end += SECONDS_PER_DAY;
                }
                if end <= start {
                    return Err(ApiError::param("The end date must be after the start date"));
                }
                let query = UsageQuery {
                    start,
                    end,
                    zone_id: ctx.id("zoneid"),
                    vm_id: ctx.id("virtualmachineid"),
                };
                // An admin command: without account/domainid it covers everything the caller
                // administers.
                let scope_params = ScopeParams {
                    listall: true,
                    ..ctx.scope_params()
                };
                let (caller, page, at) = (ctx.caller.clone(), ctx.page(), now());
                let listed: Listed<UsageRecord> = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = ListScope::resolve(c, &caller, &scope_params)?;
                        usage::records(c, &scope, &query, at, page)
                    })
                    .await
                    .map_err(|e: OpError| ApiError::from(e))?;
                Ok(ApiResult::list(listed.map(|r| usage_obj(&r))))
            }),
    )?;
    r.register(
        Command::sync("listBackupStorageStats")
            .describe("Lists the latest backup storage numbers each zone's provider reported to the background sync task (providers whose capabilities include storage-stats).")
            .since("bnr")
            .roles(ADMIN_ONLY)
            .object("backupstoragestats")
            .param(Param::uuid("zoneid", Entity::ZONE).desc("only this zone").related("listZones"))
            .field("zoneid", "string", "the zone")
            .field("zonename", "string", "the zone name")
            .field("provider", "string", "the provider that reported them")
            .field("usedbytes", "long", "used backup storage, bytes")
            .field("totalbytes", "long", "total backup storage, bytes")
            .field("collected", "date", "when the numbers were collected")
            .handler(|ctx| async move {
                let zone = ctx.id("zoneid");
                let stats = ctx
                    .state
                    .ext::<Arc<Syncer>>()
                    .map(|s| s.storage_stats())
                    .unwrap_or_default();
                let items: Vec<Obj> = stats
                    .iter()
                    .filter(|s| zone.is_none_or(|z| z == s.zone_id))
                    .map(|s| {
                        Obj::new()
                            .str("zoneid", &s.zone_uuid)
                            .str("zonename", &s.zone_name)
                            .str("provider", &s.provider)
                            .int("usedbytes", i64::try_from(s.used_bytes).unwrap_or(i64::MAX))
                            .int("totalbytes", i64::try_from(s.total_bytes).unwrap_or(i64::MAX))
                            .date("collected", s.collected)
                    })
                    .collect();
                Ok(ApiResult::list(Listed {
                    total: items.len() as u64,
                    items,
                }))
            }),
    )?;
    r.register(
        Command::sync("listBackupSyncStatus")
            .describe("Lists the outcome of the latest background sync pass over each zone (since the management server started).")
            .since("bnr")
            .roles(ADMIN_ONLY)
            .object("backupsyncstatus")
            .param(Param::uuid("zoneid", Entity::ZONE).desc("only this zone").related("listZones"))
            .field("zoneid", "string", "the zone")
            .field("zonename", "string", "the zone name")
            .field("provider", "string", "the provider asked during the pass (absent where B&R is off)")
            .field("lastsync", "date", "when the latest pass ended")
            .field("durationms", "long", "how long it took, milliseconds")
            .field("result", "string", "ok or failed")
            .field("error", "string", "why it failed")
            .field("failuresinarow", "integer", "passes of the zone that failed in a row")
            .handler(|ctx| async move {
                let zone = ctx.id("zoneid");
                let passes = ctx
                    .state
                    .ext::<Arc<Syncer>>()
                    .map(|s| s.last_passes())
                    .unwrap_or_default();
                let items: Vec<Obj> = passes
                    .iter()
                    .filter(|p| zone.is_none_or(|z| z == p.zone_id))
                    .map(|p| {
                        Obj::new()
                            .str("zoneid", &p.zone_uuid)
                            .str("zonename", &p.zone_name)
                            .opt_str("provider", p.provider.clone())
                            .date("lastsync", p.finished)
                            .int("durationms", i64::try_from(p.duration_ms).unwrap_or(i64::MAX))
                            .str("result", if p.error.is_none() { "ok" } else { "failed" })
                            .opt_str("error", p.error.clone())
                            .int("failuresinarow", i64::from(p.failures_in_a_row))
                    })
                    .collect();
                Ok(ApiResult::list(Listed {
                    total: items.len() as u64,
                    items,
                }))
            }),
    )
}

fn usage_obj(r: &UsageRecord) -> Obj {
    let hours = format_hours(r.hours);
    Obj::new()
        .str("virtualmachineid", &r.vm_uuid)
        .str("virtualmachinename", &r.vm_name)
        .str("backupofferingid", &r.offering_uuid)
        .str("backupofferingname", &r.offering_name)
        .str("zoneid", &r.zone_uuid)
        .str("accountid", &r.account_uuid)
        .str("account", &r.account_name)
        .str("domainid", &r.domain_uuid)
        .str("domain", &r.domain_name)
        .int("usagetype", BACKUP_USAGE_TYPE)
        .str(
            "description",
            format!(
                "Backup usage VM ID: {}, backup offering: {}",
                r.vm_uuid, r.offering_uuid
            ),
        )
        .date("startdate", r.start)
        .date("enddate", r.end)
        .str("usage", format!("{hours} Hrs"))
        .str("rawusage", hours)
        .int("size", r.size)
        .int("virtualsize", r.protected_size)
        .value("sizegibhours", serde_json::json!(round6(r.size_gib_hours)))
        .value(
            "virtualsizegibhours",
            serde_json::json!(round6(r.protected_gib_hours)),
        )
}

/// Six decimals, like CloudStack's raw usage.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn format_hours(h: f64) -> String {
    let s = format!("{:.6}", round6(h));
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::format_hours;

    #[test]
    fn hours_are_printed_without_trailing_zeros() {
        assert_eq!(format_hours(5.0), "5");
        assert_eq!(format_hours(1.5), "1.5");
        assert_eq!(format_hours(1.0 / 3.0), "0.333333");
    }
}
