//! Backup providers and offerings, and (un)assigning instances (spec §2.2, §3.2–§3.4).

use crate::api::registry::{
    ADMIN_ONLY, ALL_ROLES, Command, Entity, Param, Registry, RegistryError,
};
use crate::api::{ApiError, ApiResult, Obj};
use serde_json::Value;

use crate::service::{BackupError, ImportOffering, OfferingQuery, UpdateOffering};
use bnr_runtime::{Grants, Provider, capability_flags, delete_granularity_name, describe_need};

use super::backup::{BACKUP_OFFERINGS, async_start, offering_obj, service, wrapped};

/// importBackupOffering, updateBackupOffering, listBackupOfferings and
/// listBackupProviderOfferings answer the manager's invalid-parameter errors with 431.
fn offering_error(e: BackupError) -> ApiError {
    match e {
        BackupError::BadParameter(t) | BackupError::InvalidValue(t) => ApiError::param(t),
        other => wrapped(other),
    }
}

trait OfferingFields {
    fn offering_fields(self) -> Self;
}

impl OfferingFields for Command {
    fn offering_fields(self) -> Self {
        self.field("id", "string", "ID of the backup offering")
            .field("name", "string", "name for the backup offering")
            .field(
                "description",
                "string",
                "description for the backup offering",
            )
            .field("externalid", "string", "external ID on the provider side")
            .field("provider", "string", "provider name")
            .field(
                "allowuserdrivenbackups",
                "boolean",
                "whether offering allows user driven ad-hoc/scheduled backups",
            )
            .field("zoneid", "string", "zone ID")
            .field("zonename", "string", "zone name")
            .field(
                "crosszoneinstancecreation",
                "boolean",
                "the backups with this offering can be used to create Instances on all Zones",
            )
            .field(
                "created",
                "date",
                "the date this backup offering was created",
            )
    }
}

/// A provider as listBackupProviders shows it: CloudStack's name and description, then what an
/// operator needs to judge it (version, interface, digest, declarations, grants per zone).
pub(crate) fn provider_obj(p: &Provider, zones: Vec<(String, String, Grants)>) -> Obj {
    let info = p.info();
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let capabilities = capability_flags(&info.capabilities)
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_string())
        .collect();
    let settings = info
        .settings
        .iter()
        .map(|s| {
            Obj::new()
                .str("name", &s.name)
                .str("description", &s.description)
                .bool("secret", s.secret)
        })
        .collect();
    let zones = zones
        .into_iter()
        .map(|(uuid, name, grants)| {
            Obj::new()
                .str("zoneid", uuid)
                .str("zonename", name)
                .value("httpgrants", strings(grants.http_authorities))
                .value("execgrants", strings(grants.exec_targets))
        })
        .collect();
    Obj::new()
        .str("name", p.name())
        .str("description", &info.description)
        .str("version", p.version())
        .str("witversion", p.wit_version())
        .str("sha256", p.sha256())
        .value("capabilities", strings(capabilities))
        .str(
            "deletegranularity",
            delete_granularity_name(info.capabilities.delete_granularity),
        )
        .value(
            "needs",
            strings(info.needs.iter().map(describe_need).collect()),
        )
        .objs("settings", settings)
        .objs("zones", zones)
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listBackupProviders")
            .describe("Lists Backup and Recovery providers")
            .since("4.14.0")
            .roles(ADMIN_ONLY)
            .object("providers")
            .param(Param::string("name").desc("List Backup and Recovery provider by name"))
            .field("name", "string", "the CA service provider name")
            .field("description", "string", "the description of the provider")
            .field(
                "version",
                "string",
                "the provider's own version (bnr addition)",
            )
            .field(
                "witversion",
                "string",
                "the provider interface version it was built against (bnr addition)",
            )
            .field(
                "sha256",
                "string",
                "hex sha256 of the component (bnr addition)",
            )
            .field(
                "capabilities",
                "list",
                "the capabilities the provider declares (bnr addition)",
            )
            .field(
                "deletegranularity",
                "string",
                "restore-point or chain (bnr addition)",
            )
            .field(
                "needs",
                "list",
                "what the provider asks to reach (bnr addition)",
            )
            .field(
                "settings",
                "list",
                "the provider's settings: name, description, secret (bnr addition)",
            )
            .field(
                "zones",
                "list",
                "the zones it serves, each with its grants (bnr addition)",
            )
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let mut items = Vec::new();
                for p in svc.list_providers(ctx.str("name")) {
                    let zones = svc.provider_zones(&p).await.map_err(wrapped)?;
                    items.push(provider_obj(&p, zones));
                }
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::sync("listBackupProviderOfferings")
            .describe("Lists external backup offerings of the provider")
            .since("4.14.0")
            .roles(ADMIN_ONLY)
            .object("backupoffering")
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("The zone ID")
                    .related("listZones"),
            )
            .list_params()
            .offering_fields()
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let offerings = svc
                    .list_provider_offerings(&ctx.caller, ctx.req_id("zoneid")?)
                    .await
                    .map_err(offering_error)?;
                let items: Vec<Obj> = offerings.iter().map(offering_obj).collect();
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::asynchronous("importBackupOffering")
            .describe("Imports a backup offering using a backup provider")
            .since("4.14.0")
            .roles(ADMIN_ONLY)
            .object("backupoffering")
            .param(
                Param::string("name")
                    .required()
                    .desc("the name of the backup offering"),
            )
            .param(
                Param::string("description")
                    .required()
                    .desc("the description of the backup offering"),
            )
            .param(
                Param::string("externalid")
                    .required()
                    .desc("The backup offering ID (from backup provider side)"),
            )
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("The zone ID")
                    .related("listZones"),
            )
            .param(
                Param::boolean("allowuserdrivenbackups")
                    .required()
                    .desc("Whether users are allowed to create adhoc backups and backup schedules"),
            )
            .offering_fields()
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let req = ImportOffering {
                    name: ctx.req_str("name")?.to_string(),
                    description: ctx.req_str("description")?.to_string(),
                    external_id: ctx.req_str("externalid")?.to_string(),
                    zone_id: ctx.req_id("zoneid")?,
                    user_driven: ctx.bool_or("allowuserdrivenbackups", false),
                };
                let pending = svc
                    .import_offering(&ctx.caller, req)
                    .await
                    .map_err(offering_error)?;
                Ok(async_start(
                    pending,
                    |o| ApiResult::Object(offering_obj(o)),
                    offering_error,
                ))
            }),
    )?;
    r.register(
        Command::sync("listBackupOfferings")
            .describe("Lists backup offerings")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("backupoffering")
            .param(
                Param::uuid("id", BACKUP_OFFERINGS)
                    .desc("The backup offering ID")
                    .related("listBackupOfferings"),
            )
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("The zone ID")
                    .related("listZones"),
            )
            .list_params()
            .offering_fields()
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let q = OfferingQuery {
                    id: ctx.id("id"),
                    zone_id: ctx.id("zoneid"),
                    keyword: ctx.keyword().map(str::to_string),
                    page: Some(ctx.page()),
                };
                let listed = svc
                    .list_offerings(&ctx.caller, q)
                    .await
                    .map_err(offering_error)?;
                Ok(ApiResult::list(listed.map(|o| offering_obj(&o))))
            }),
    )?;
    r.register(
        Command::sync("updateBackupOffering")
            .describe("Updates a backup offering.")
            .since("4.16.0")
            .roles(ADMIN_ONLY)
            .object("backupoffering")
            .param(
                Param::uuid("id", BACKUP_OFFERINGS)
                    .required()
                    .desc("The ID of the Backup Offering to be updated")
                    .related("listBackupOfferings"),
            )
            .param(Param::string("name").desc("The name of the Backup Offering to be updated"))
            .param(
                Param::string("description")
                    .desc("The description of the Backup Offering to be updated"),
            )
            .param(
                Param::boolean("allowuserdrivenbackups")
                    .desc("Whether to allow user driven backups or not"),
            )
            .offering_fields()
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let req = UpdateOffering {
                    id: ctx.req_id("id")?,
                    name: ctx.str("name").map(str::to_string),
                    description: ctx.str("description").map(str::to_string),
                    user_driven: ctx.bool("allowuserdrivenbackups"),
                };
                let o = svc
                    .update_offering(&ctx.caller, req)
                    .await
                    .map_err(offering_error)?;
                Ok(ApiResult::Object(offering_obj(&o)))
            }),
    )?;
    r.register(
        Command::sync("deleteBackupOffering")
            .describe("Deletes a backup offering")
            .since("4.14.0")
            .roles(ADMIN_ONLY)
            .object("success")
            .param(
                Param::uuid("id", BACKUP_OFFERINGS)
                    .required()
                    .desc("ID of the backup offering")
                    .related("listBackupOfferings"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                svc.delete_offering(ctx.req_id("id")?)
                    .await
                    .map_err(wrapped)?;
                Ok(ApiResult::success())
            }),
    )?;
    r.register(
        Command::asynchronous("assignVirtualMachineToBackupOffering")
            .describe("Assigns a VM to a backup offering")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .required()
                    .desc("ID of the virtual machine")
                    .related("listVirtualMachines"),
            )
            .param(
                Param::uuid("backupofferingid", BACKUP_OFFERINGS)
                    .required()
                    .desc("ID of the backup offering")
                    .related("listBackupOfferings"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let pending = svc
                    .assign(
                        &ctx.caller,
                        ctx.req_id("virtualmachineid")?,
                        ctx.req_id("backupofferingid")?,
                    )
                    .await
                    .map_err(wrapped)?;
                Ok(async_start(pending, |()| ApiResult::success(), wrapped))
            }),
    )?;
    r.register(
        Command::asynchronous("removeVirtualMachineFromBackupOffering")
            .describe("Removes a VM from any existing backup offering")
            .since("4.14.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(Param::uuid("virtualmachineid", Entity::VM).required().desc("ID of the virtual machine").related("listVirtualMachines"))
            .param(Param::boolean("forced").desc("Whether to force remove VM from the backup offering that may also delete VM backups."))
            .field("success", "boolean", "true if operation is executed successfully")
            .async_handler(|ctx| async move {
                let svc = service(&ctx)?;
                let pending = svc
                    .remove_from_offering(
                        &ctx.caller,
                        ctx.req_id("virtualmachineid")?,
                        ctx.bool_or("forced", false),
                    )
                    .await
                    .map_err(wrapped)?;
                Ok(async_start(pending, |()| ApiResult::success(), wrapped))
            }),
    )
}
