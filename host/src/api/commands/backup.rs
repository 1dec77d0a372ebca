//! The Backup & Recovery commands (cloudstack-bnr-spec.md §2, wire-protocol §5). Registered only
//! when the global `backup.framework.enabled` is true at start (spec §2.0). Rules live in
//! `crate::service`; this module declares parameters, maps errors the way CloudStack's command
//! classes do, and renders the response objects.

use std::any::Any;
use std::sync::Arc;

use crate::api::registry::{
    ALL_ROLES, AsyncStart, Command, Ctx, Entity, Param, Registry, RegistryError,
};
use crate::api::{ApiError, ApiResult, Obj};
use crate::service::{
    Backup, BackupError, BackupQuery, BackupResult, BackupService, CreateBackup, Offering, Pending,
    Schedule, VmFromBackup,
};

use super::backup_offering;
use super::backup_schedule;
use super::inventory::{owner_on_behalf, vm_obj};

pub const BACKUPS: Entity = Entity::table("backups");
pub const BACKUP_OFFERINGS: Entity = Entity::table("backup_offerings");
pub const BACKUP_SCHEDULES: Entity = Entity::table("backup_schedules");

/// Adds every B&R command.
pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    backup_offering::register(r)?;
    backup_schedule::register(r)?;
    super::plugins::register(r)?;
    register_backups(r)
}

/// The service, registered by `api::serve` as an extension.
pub(crate) fn service(ctx: &Ctx) -> Result<Arc<BackupService>, ApiError> {
    ctx.state
        .ext::<Arc<BackupService>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("The backup and recovery service is not available"))
}

/// Most B&R commands catch every exception of the manager and answer 530 with its message
/// (spec §2.0); malformed values stay 431.
pub(crate) fn wrapped(e: BackupError) -> ApiError {
    match e {
        BackupError::BadParameter(t) => ApiError::param(t),
        BackupError::InvalidValue(t)
        | BackupError::Refused(t)
        | BackupError::Denied(t)
        | BackupError::Provider(t) => ApiError::internal(t),
        BackupError::Store(s) => s.into(),
    }
}

/// Turns the service's job part into the pipeline's, rendering the result with `render` and
/// errors with `map_err`. The same rendering also serves the work's last write, when it records
/// the job's outcome itself ([`crate::jobs::OutcomeSeal`]).
pub(crate) fn async_start<T: Send + 'static>(
    p: Pending<T>,
    render: impl Fn(&T) -> ApiResult + Send + Sync + 'static,
    map_err: fn(BackupError) -> ApiError,
) -> AsyncStart {
    let answer = Arc::new(move |result: &BackupResult<T>| match result {
        Ok(value) => Ok(render(value)),
        Err(e) => Err(map_err(e.duplicate())),
    });
    let answer_of = answer.clone();
    let work = p.work;
    let mut start = AsyncStart::new(async move { answer(&work.await) });
    start.outcome_of = Some(Arc::new(move |result: &dyn Any| {
        result
            .downcast_ref::<BackupResult<T>>()
            .map(|r| answer_of(r))
    }));
    start.job_uuid = p.job;
    match (p.created, p.instance) {
        (Some(id), Some((kind, _))) => start.created(kind, &id),
        (_, Some((kind, uuid))) => start.instance(kind, &uuid),
        _ => start,
    }
}

pub fn offering_obj(o: &Offering) -> Obj {
    let mut obj = Obj::new()
        .str("id", &o.uuid)
        .str("name", &o.name)
        .str("description", &o.description)
        .str("externalid", &o.external_id)
        .str("provider", &o.provider)
        .bool("allowuserdrivenbackups", o.user_driven)
        .str("zoneid", &o.zone_uuid)
        .str("zonename", &o.zone_name);
    if o.cross_zone {
        obj = obj.bool("crosszoneinstancecreation", true);
    }
    obj.date("created", o.created)
}

pub fn backup_obj(b: &Backup) -> Obj {
    let mut o = Obj::new()
        .str("id", &b.uuid)
        .str("name", &b.name)
        .opt_str("description", b.description.clone())
        .opt_str("virtualmachineid", b.vm_uuid.clone())
        .opt_str("virtualmachinename", b.vm_name.clone())
        .opt_str("externalid", b.external_id.clone())
        .str("type", &b.kind)
        .date("created", b.date)
        .int("size", b.size)
        .int("virtualsize", b.protected_size)
        .str("status", &b.status)
        .opt_str(
            "statusreason",
            b.status_reason
                .clone()
                .filter(|_| matches!(b.status.as_str(), "Error" | "Failed")),
        )
        .str("volumes", &b.volumes)
        .str("backupofferingid", &b.offering_uuid)
        .str("backupofferingname", &b.offering_name)
        .str("accountid", &b.account_uuid)
        .str("account", &b.account_name)
        .str("domainid", &b.domain_uuid)
        .str("domain", &b.domain_name)
        .str("zoneid", &b.zone_uuid)
        .str("zone", &b.zone_name)
        .str("intervaltype", &b.interval_type)
        .bool("vmbackupofferingremoved", b.vm_offering_removed)
        .bool("isbackupvmexpunged", b.vm_expunged);
    if let Some((percent, message)) = &b.progress {
        o = o.int("progress", *percent).opt_str(
            "progressmessage",
            Some(message).filter(|m| !m.is_empty()).cloned(),
        );
    }
    if let Some(details) = &b.details {
        let map = details
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        o = o.value("vmdetails", serde_json::Value::Object(map));
    }
    o
}

pub fn schedule_obj(s: &Schedule) -> Obj {
    let next_run = jiff::Timestamp::from_second(s.next_run)
        .map(crate::scheduler::schedule::format_cloudstack_date)
        .ok();
    let mut o = Obj::new()
        .str("id", &s.uuid)
        .str("virtualmachineid", &s.vm_uuid)
        .str("virtualmachinename", &s.vm_name)
        .str("schedule", &s.schedule)
        .str("intervaltype", &s.interval_type)
        .str("timezone", &s.timezone)
        .int("maxbackups", s.max_backups)
        .opt_str("nextrun", next_run);
    if let Some(q) = s.quiesce {
        o = o.bool("quiescevm", q);
    }
    o
}

trait BackupFields {
    fn backup_fields(self) -> Self;
}

impl BackupFields for Command {
    fn backup_fields(self) -> Self {
        self.field("id", "string", "ID of the VM backup")
            .field("name", "string", "name of the backup")
            .field("description", "string", "description for the backup")
            .field("virtualmachineid", "string", "ID of the VM")
            .field("virtualmachinename", "string", "name of the VM")
            .field("externalid", "string", "external backup id")
            .field("type", "string", "backup type")
            .field("created", "date", "backup date")
            .field("size", "long", "backup size in bytes")
            .field(
                "virtualsize",
                "long",
                "backup protected (virtual) size in bytes",
            )
            .field("status", "status", "backup status")
            .field(
                "statusreason",
                "string",
                "why the backup is in Error or Failed (bnr; absent otherwise)",
            )
            .field("volumes", "string", "backed up volumes (JSON)")
            .field("backupofferingid", "string", "backup offering id")
            .field("backupofferingname", "string", "backup offering name")
            .field("accountid", "string", "account id")
            .field("account", "string", "account name")
            .field("domainid", "string", "domain id")
            .field("domain", "string", "domain name")
            .field("zoneid", "string", "zone id")
            .field("zone", "string", "zone name")
            .field(
                "intervaltype",
                "string",
                "Interval type of the backup (MANUAL or the schedule's)",
            )
            .field(
                "vmbackupofferingremoved",
                "boolean",
                "Whether the VM is no longer assigned to the backup's offering",
            )
            .field(
                "isbackupvmexpunged",
                "boolean",
                "Whether the VM from which the backup was taken is expunged",
            )
            .field(
                "vmdetails",
                "map",
                "Lists the vm specific details for the backup",
            )
    }
}

fn register_backups(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::async_create("createBackup")
            .describe("Create VM backup")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("backup")
            .param(Param::uuid("virtualmachineid", Entity::VM).required().desc("ID of the VM").related("listVirtualMachines"))
            .param(Param::string("name").desc("the name of the backup").since("4.21.0"))
            .param(Param::string("description").length(1024).desc("the description for the backup").since("4.21.0"))
            .param(Param::boolean("quiescevm").desc("Quiesce the instance before checkpointing the disks for backup (only for providers that can quiesce)").since("4.21.0"))
            .field("success", "boolean", "true if operation is executed successfully")
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let req = CreateBackup {
                    vm_id: ctx.req_id("virtualmachineid")?,
                    name: ctx.str("name").map(str::to_string),
                    description: ctx.str("description").map(str::to_string),
                    quiesce: ctx.bool("quiescevm"),
                    schedule_id: None,
                    job: ctx.job.clone(),
                };
                let pending = svc.create_backup(&ctx.caller, req).await.map_err(wrapped)?;
                Ok(async_start(pending, |_| ApiResult::success(), wrapped))
            }),
    )?;
    r.register(
        Command::asynchronous("deleteBackup")
            .describe("Delete VM backup")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(Param::uuid("id", BACKUPS).required().desc("id of the VM backup").related("listBackups"))
            .param(Param::boolean("forced").desc("force the deletion of backup which removes the entire backup chain but keep VM in Backup Offering").since("4.18.0.0"))
            .field("success", "boolean", "true if operation is executed successfully")
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let pending = svc
                    .delete_backup(&ctx.caller, ctx.req_id("id")?, ctx.bool_or("forced", false))
                    .await
                    .map_err(wrapped)?;
                Ok(async_start(pending, |()| ApiResult::success(), wrapped))
            }),
    )?;
    r.register(
        Command::sync("listBackups")
            .describe("Lists VM backups")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("backup")
            .param(
                Param::uuid("id", BACKUPS)
                    .desc("id of the backup")
                    .related("listBackups"),
            )
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .desc("id of the VM")
                    .related("listVirtualMachines"),
            )
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("list backups by zone id")
                    .related("listZones"),
            )
            .param(
                Param::string("name")
                    .desc("list backups by name")
                    .since("4.21.0"),
            )
            .param(
                Param::uuid("backupofferingid", BACKUP_OFFERINGS)
                    .desc("list backups by backup offering")
                    .related("listBackupOfferings")
                    .since("4.21.0"),
            )
            .param(
                Param::boolean("listvmdetails")
                    .desc("list backups with VM details")
                    .since("4.21.0"),
            )
            .list_params()
            .scope_params()
            .backup_fields()
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let q = BackupQuery {
                    id: ctx.id("id"),
                    vm_id: ctx.id("virtualmachineid"),
                    zone_id: ctx.id("zoneid"),
                    name: ctx.str("name").map(str::to_string),
                    offering_id: ctx.id("backupofferingid"),
                    keyword: ctx.keyword().map(str::to_string),
                    scope: ctx.scope_params(),
                    page: Some(ctx.page()),
                    with_details: ctx.bool_or("listvmdetails", false),
                };
                let listed = svc.list_backups(&ctx.caller, q).await.map_err(wrapped)?;
                Ok(ApiResult::list(listed.map(|b| backup_obj(&b))))
            }),
    )?;
    r.register(
        Command::asynchronous("restoreBackup")
            .describe("Restores an existing stopped or deleted VM using a VM backup")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(
                Param::uuid("id", BACKUPS)
                    .required()
                    .desc("ID of the backup")
                    .related("listBackups"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let pending = svc
                    .restore(&ctx.caller, ctx.req_id("id")?)
                    .await
                    .map_err(wrapped)?;
                Ok(async_start(pending, |()| ApiResult::success(), wrapped))
            }),
    )?;
    r.register(
        Command::asynchronous("restoreVolumeFromBackupAndAttachToVM")
            .describe("Restore and attach a backed up volume to VM")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(
                Param::uuid("backupid", BACKUPS)
                    .required()
                    .desc("ID of the VM backup")
                    .related("listBackups"),
            )
            .param(
                Param::string("volumeid")
                    .required()
                    .desc("ID of the volume backed up (the uuid inside the backup's volumes)"),
            )
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .required()
                    .desc("id of the VM where to attach the restored volume")
                    .related("listVirtualMachines"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let pending = svc
                    .restore_volume(
                        &ctx.caller,
                        ctx.req_id("backupid")?,
                        ctx.req_str("volumeid")?,
                        ctx.req_id("virtualmachineid")?,
                    )
                    .await
                    .map_err(wrapped)?;
                Ok(async_start(pending, |()| ApiResult::success(), wrapped))
            }),
    )?;
    r.register(
        Command::async_create("createVMFromBackup")
            .describe("Creates and automatically starts a VM from a backup.")
            .since("4.21.0")
            .roles(ALL_ROLES)
            .object("virtualmachine")
            .param(Param::uuid("backupid", BACKUPS).required().desc("backup ID to create the Instance from").related("listBackups"))
            .param(Param::uuid("zoneid", Entity::ZONE).required().desc("availability zone for the virtual machine").related("listZones"))
            .param(Param::uuid("serviceofferingid", Entity::SERVICE_OFFERING).desc("the ID of the service offering for the virtual machine; defaults to the one recorded in the backup").related("listServiceOfferings"))
            .param(Param::uuid("templateid", Entity::TEMPLATE).desc("the ID of the template for the virtual machine; defaults to the one recorded in the backup").related("listTemplates"))
            .param(Param::string("name").desc("host name for the virtual machine"))
            .param(Param::string("displayname").desc("an optional user generated name for the virtual machine"))
            .param(Param::string("account").desc("an optional account for the virtual machine. Must be used with domainId."))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("an optional domainId for the virtual machine. If the account parameter is used, domainId must also be used.").related("listDomains"))
            .param(Param::boolean("startvm").desc("true if start vm after creating; defaulted to true if not specified"))
            .param(Param::boolean("preserveip").desc("Use the same IP/MAC addresses as stored in the backup metadata; accepted, bnr has no networks"))
            .param(Param::uuid("diskofferingid", Entity::DISK_OFFERING).desc("only for ISO-based instances, which bnr does not have"))
            .param(Param::string("hypervisor").desc("accepted and ignored (the backup decides)"))
            .field("id", "string", "the ID of the virtual machine")
            .field("name", "string", "the name of the virtual machine")
            .field("state", "string", "the state of the virtual machine")
            .field("serviceofferingid", "string", "the ID of the service offering of the virtual machine")
            .field("zoneid", "string", "the ID of the availability zone for the virtual machine")
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                if ctx.has("diskofferingid") {
                    return Err(ApiError::internal(
                        "diskofferingid is only allowed for ISO-based instances; the backup's disks are used",
                    ));
                }
                let caller = ctx.caller.clone();
                let (account, domain_id) = (ctx.str("account").map(str::to_string), ctx.id("domainid"));
                let c2 = caller.clone();
                let owner = ctx
                    .state
                    .store()
                    .read(move |c| owner_on_behalf(c, &c2, account.as_deref(), domain_id))
                    .await
                    .map_err(|e| wrapped(e.into()))?;
                let req = VmFromBackup {
                    backup_id: ctx.req_id("backupid")?,
                    zone_id: ctx.req_id("zoneid")?,
                    service_offering_id: ctx.id("serviceofferingid"),
                    template_id: ctx.id("templateid"),
                    name: ctx.str("name").map(str::to_string),
                    display_name: ctx.str("displayname").map(str::to_string),
                    owner,
                    start: ctx.bool_or("startvm", true),
                };
                let pending = svc.create_vm_from_backup(&caller, req).await.map_err(wrapped)?;
                Ok(async_start(pending, move |vm| ApiResult::Object(vm_obj(vm, &caller)), wrapped))
            }),
    )
}
