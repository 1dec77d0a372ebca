//! Backup schedules (spec §2.2, §3.5).

use crate::api::registry::{ALL_ROLES, Command, Ctx, Entity, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult};
use crate::service::{ScheduleQuery, ScheduleRequest};

use super::backup::{BACKUP_SCHEDULES, schedule_obj, service, wrapped};

trait ScheduleFields {
    fn schedule_params(self) -> Self;
    fn schedule_fields(self) -> Self;
}

impl ScheduleFields for Command {
    fn schedule_params(self) -> Self {
        self.param(Param::uuid("virtualmachineid", Entity::VM).required().desc("ID of the VM for which schedule is to be defined").related("listVirtualMachines"))
            .param(Param::string("intervaltype").required().desc("valid values are HOURLY, DAILY, WEEKLY, and MONTHLY"))
            .param(Param::string("schedule").required().desc("custom backup schedule, the format is: for HOURLY MM*, for DAILY MM:HH*, for WEEKLY MM:HH:DD (1-7)*, for MONTHLY MM:HH:DD (1-28)"))
            .param(Param::string("timezone").required().desc("Specifies a timezone for this command, an IANA time zone name such as Europe/Berlin"))
            .param(Param::integer("maxbackups").desc("maximum number of backups to retain (0 = keep all)").since("4.21.0"))
            .param(Param::boolean("quiescevm").desc("Quiesce the instance before checkpointing the disks for backup (only for providers that can quiesce)").since("4.21.0"))
    }

    fn schedule_fields(self) -> Self {
        self.field("id", "string", "ID of the backup schedule")
            .field("virtualmachineid", "string", "ID of the VM")
            .field("virtualmachinename", "string", "name of the VM")
            .field(
                "schedule",
                "string",
                "time the backup is scheduled to be taken",
            )
            .field(
                "intervaltype",
                "string",
                "the interval type of the backup schedule",
            )
            .field("timezone", "string", "the time zone of the backup schedule")
            .field(
                "maxbackups",
                "integer",
                "maximum number of backups retained",
            )
            .field(
                "quiescevm",
                "boolean",
                "quiesce the instance before checkpointing the disks for backup",
            )
            .field("nextrun", "date", "when the schedule runs next")
    }
}

async fn configure(ctx: Ctx) -> Result<ApiResult, ApiError> {
    let svc = service(&ctx)?;
    let req = ScheduleRequest {
        vm_id: ctx.req_id("virtualmachineid")?,
        interval_type: ctx.req_str("intervaltype")?.to_string(),
        schedule: ctx.req_str("schedule")?.to_string(),
        timezone: ctx.req_str("timezone")?.to_string(),
        max_backups: ctx.int("maxbackups"),
        quiesce: ctx.bool("quiescevm"),
    };
    let s = svc
        .configure_schedule(&ctx.caller, req)
        .await
        .map_err(wrapped)?;
    Ok(ApiResult::Object(schedule_obj(&s)))
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("createBackupSchedule")
            .describe("Creates a user-defined VM backup schedule (updates the VM's schedule of the same interval type if there is one)")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("backupschedule")
            .schedule_params()
            .schedule_fields()
            .handler(configure),
    )?;
    r.register(
        Command::sync("updateBackupSchedule")
            .describe("Updates a user-defined VM backup schedule")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("backupschedule")
            .schedule_params()
            .schedule_fields()
            .handler(configure),
    )?;
    r.register(
        Command::sync("listBackupSchedule")
            .describe("List backup schedule of a VM")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("backupschedule")
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .desc("ID of the VM")
                    .related("listVirtualMachines"),
            )
            .param(
                Param::uuid("id", BACKUP_SCHEDULES)
                    .desc("ID of the backup schedule")
                    .since("4.22.0"),
            )
            .list_params()
            .scope_params()
            .schedule_fields()
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let q = ScheduleQuery {
                    vm_id: ctx.id("virtualmachineid"),
                    id: ctx.id("id"),
                    keyword: ctx.keyword().map(str::to_string),
                    scope: ctx.scope_params(),
                };
                let items: Vec<_> = svc
                    .list_schedules(&ctx.caller, q)
                    .await
                    .map_err(wrapped)?
                    .iter()
                    .map(schedule_obj)
                    .collect();
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::sync("deleteBackupSchedule")
            .describe("Deletes the backup schedule of a VM")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .desc("ID of the VM (deletes all its schedules)")
                    .related("listVirtualMachines"),
            )
            .param(
                Param::uuid("id", BACKUP_SCHEDULES)
                    .desc("ID of the schedule")
                    .since("4.20.1"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                svc.delete_schedules(&ctx.caller, ctx.id("id"), ctx.id("virtualmachineid"))
                    .await
                    .map_err(wrapped)?;
                Ok(ApiResult::success())
            }),
    )
}
