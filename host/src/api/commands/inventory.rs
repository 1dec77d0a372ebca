//! Zones, offerings, templates, instances and volumes of the simulated cloud.

use std::sync::Arc;

use crate::api::registry::{
    ADMIN_ONLY, ADMINS, ALL_ROLES, AsyncStart, Command, Ctx, Entity, Param, Registry, RegistryError,
};
use crate::api::{ApiError, ApiResult, Obj};
use crate::config::BACKUP_ATTACH_DETACH_VOLUMES;
use crate::identity::{self, Caller, ListScope, Role};
use crate::inventory::vm::{self, VmEvent};
use crate::inventory::volume::{self, NewVolume};
use crate::inventory::{
    self, DeployRequest, ExpungeGuard, Vm, VmFilter, VmState, Volume, VolumeFilter, lifecycle,
};
use crate::store::events::{self, NewEvent};
use crate::store::{OpError, Store};

/// `templatefilter` values CloudStack accepts.
const TEMPLATE_FILTERS: &[&str] = &[
    "featured",
    "self",
    "selfexecutable",
    "sharedexecutable",
    "executable",
    "community",
    "all",
];

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listZones")
            .describe("Lists zones")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("zone")
            .param(Param::uuid("id", Entity::ZONE).desc("the ID of the zone").related("listZones"))
            .param(Param::string("name").desc("the name of the zone"))
            .param(Param::boolean("available").desc("true if you want to retrieve all available Zones. False if you only want to return the Zones from which you have at least one VM. Default is false."))
            .list_params()
            .field("id", "string", "Zone id")
            .field("name", "string", "Zone name")
            .handler(|ctx| async move {
                let (id, name, kw, page) = (ctx.id("id"), ctx.str("name").map(str::to_string), ctx.keyword().map(str::to_string), ctx.page());
                // A handful of rows: run in place (see `Store::read_now`).
                let listed = ctx
                    .state
                    .store()
                    .read_now(|c| inventory::list_zones(c, id, name.as_deref(), kw.as_deref(), page))?;
                Ok(ApiResult::list(listed.map(|z| zone_obj(&z))))
            }),
    )?;
    r.register(
        Command::sync("createZone")
            .describe("Creates a Zone.")
            .since("1.0.0")
            .roles(ADMIN_ONLY)
            .object("zone")
            .param(
                Param::string("name")
                    .required()
                    .desc("the name of the Zone"),
            )
            .param(
                Param::string("networktype").desc(
                    "network type of the zone, can be Basic or Advanced; accepted and ignored",
                ),
            )
            .param(Param::string("dns1").desc("the first DNS for the Zone; accepted and ignored"))
            .param(
                Param::string("internaldns1")
                    .desc("the first internal DNS for the Zone; accepted and ignored"),
            )
            .field("id", "string", "Zone id")
            .handler(|ctx| async move {
                let name = ctx.req_str("name")?.to_string();
                let caller = ctx.caller.clone();
                let zone = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let z = inventory::create_zone(tx, &name)?;
                        let text = format!("Successfully created zone {name}");
                        events::record(
                            tx,
                            &NewEvent::completed(&caller, "ZONE.CREATE", &text)
                                .resource("Zone", &z.uuid),
                        )?;
                        Ok::<_, OpError>(z)
                    })
                    .await?;
                Ok(ApiResult::Object(zone_obj(&zone)))
            }),
    )?;
    r.register(
        Command::sync("listServiceOfferings")
            .describe("Lists all available service offerings.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("serviceoffering")
            .param(
                Param::uuid("id", Entity::SERVICE_OFFERING)
                    .desc("ID of the service offering")
                    .related("listServiceOfferings"),
            )
            .param(Param::string("name").desc("name of the service offering"))
            .list_params()
            .field("id", "string", "the id of the service offering")
            .handler(|ctx| async move {
                let (id, name, kw, page) = (
                    ctx.id("id"),
                    ctx.str("name").map(str::to_string),
                    ctx.keyword().map(str::to_string),
                    ctx.page(),
                );
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        inventory::list_service_offerings(
                            c,
                            id,
                            name.as_deref(),
                            kw.as_deref(),
                            page,
                        )
                    })
                    .await?;
                Ok(ApiResult::list(listed.map(|o| {
                    Obj::new()
                        .str("id", &o.uuid)
                        .str("name", &o.name)
                        .str("displaytext", &o.display_text)
                        .int("cpunumber", o.cpu_number)
                        .int("cpuspeed", o.cpu_speed_mhz)
                        .int("memory", o.memory_mb)
                        .str("storagetype", "shared")
                        .date("created", o.created)
                })))
            }),
    )?;
    r.register(
        Command::sync("listDiskOfferings")
            .describe("Lists all available disk offerings.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("diskoffering")
            .param(
                Param::uuid("id", Entity::DISK_OFFERING)
                    .desc("ID of the disk offering")
                    .related("listDiskOfferings"),
            )
            .param(Param::string("name").desc("name of the disk offering"))
            .list_params()
            .field("id", "string", "unique ID of the disk offering")
            .handler(|ctx| async move {
                let (id, name, kw, page) = (
                    ctx.id("id"),
                    ctx.str("name").map(str::to_string),
                    ctx.keyword().map(str::to_string),
                    ctx.page(),
                );
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        inventory::list_disk_offerings(c, id, name.as_deref(), kw.as_deref(), page)
                    })
                    .await?;
                Ok(ApiResult::list(listed.map(|o| {
                    Obj::new()
                        .str("id", &o.uuid)
                        .str("name", &o.name)
                        .str("displaytext", &o.display_text)
                        .int("disksize", o.disk_size_bytes >> 30)
                        .bool("iscustomized", false)
                        .str("storagetype", "shared")
                        .date("created", o.created)
                })))
            }),
    )?;
    r.register(
        Command::sync("listTemplates")
            .describe("List all public, private, and privileged templates.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("template")
            .param(Param::string("templatefilter").required().desc("possible values are \"featured\", \"self\", \"selfexecutable\",\"sharedexecutable\",\"executable\", and \"community\"; bnr lists every template for each"))
            .param(Param::uuid("id", Entity::TEMPLATE).desc("the template ID").related("listTemplates"))
            .param(Param::string("name").desc("the template name"))
            .param(Param::uuid("zoneid", Entity::ZONE).desc("list templates by zoneId").related("listZones"))
            .list_params()
            .scope_params()
            .field("id", "string", "the template ID")
            .handler(|ctx| async move {
                let filter = ctx.req_str("templatefilter")?.to_lowercase();
                if !TEMPLATE_FILTERS.contains(&filter.as_str()) {
                    return Err(ApiError::param(format!("Invalid template filter {filter}")));
                }
                let (id, zone, name, kw, page) = (ctx.id("id"), ctx.id("zoneid"), ctx.str("name").map(str::to_string), ctx.keyword().map(str::to_string), ctx.page());
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| inventory::list_templates(c, id, zone, name.as_deref(), kw.as_deref(), page))
                    .await?;
                Ok(ApiResult::list(listed.map(|t| {
                    Obj::new()
                        .str("id", &t.uuid)
                        .str("name", &t.name)
                        .str("displaytext", &t.display_text)
                        .opt_str("zoneid", t.zone.as_ref().map(|z| z.0.clone()))
                        .opt_str("zonename", t.zone.as_ref().map(|z| z.1.clone()))
                        .str("ostypename", &t.os_type_name)
                        .str("hypervisor", &t.hypervisor)
                        .int("size", t.size_bytes)
                        .bool("isready", true)
                        .bool("ispublic", true)
                        .bool("isfeatured", true)
                        .str("templatetype", "BUILTIN")
                        .str("format", "VHD")
                        .date("created", t.created)
                })))
            }),
    )?;
    r.register(
        Command::async_create("deployVirtualMachine")
            .describe("Creates and automatically starts a virtual machine based on a service offering, disk offering, and template.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("virtualmachine")
            .param(Param::uuid("serviceofferingid", Entity::SERVICE_OFFERING).required().desc("the ID of the service offering for the virtual machine").related("listServiceOfferings"))
            .param(Param::uuid("templateid", Entity::TEMPLATE).required().desc("the ID of the template for the virtual machine").related("listTemplates"))
            .param(Param::uuid("zoneid", Entity::ZONE).required().desc("availability zone for the virtual machine").related("listZones"))
            .param(Param::uuid("diskofferingid", Entity::DISK_OFFERING).desc("the ID of the disk offering for the virtual machine; adds a DATADISK volume").related("listDiskOfferings"))
            .param(Param::string("name").desc("host name for the virtual machine"))
            .param(Param::string("displayname").desc("an optional user generated name for the virtual machine"))
            .param(Param::string("account").desc("an optional account for the virtual machine. Must be used with domainId."))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("an optional domainId for the virtual machine. If the account parameter is used, domainId must also be used.").related("listDomains"))
            .param(Param::boolean("startvm").desc("true if start vm after creating; defaulted to true if not specified"))
            .param(Param::string("hypervisor").desc("the hypervisor on which to deploy the virtual machine; accepted and ignored (the template decides)"))
            .vm_fields()
            .async_handler(|ctx| async move {
                let caller = ctx.caller.clone();
                let account = ctx.str("account").map(str::to_string);
                let domain_id = ctx.id("domainid");
                let mut req = DeployRequest {
                    name: ctx.str("name").map(str::to_string),
                    display_name: ctx.str("displayname").map(str::to_string),
                    account_id: caller.account_id,
                    domain_id: caller.domain_id,
                    zone_id: ctx.req_id("zoneid")?,
                    service_offering_id: ctx.req_id("serviceofferingid")?,
                    template_id: ctx.req_id("templateid")?,
                    disk_offering_id: ctx.id("diskofferingid"),
                    start: ctx.bool_or("startvm", true),
                };
                let store = ctx.state.store().clone();
                let vm = store
                    .write(move |tx| {
                        if let Some((account_id, domain_id)) = owner_on_behalf(tx, &caller, account.as_deref(), domain_id)? {
                            req.account_id = account_id;
                            req.domain_id = domain_id;
                        }
                        vm::deploy(tx, &caller, &req)
                    })
                    .await?;
                let (uuid, vm_id, start) = (vm.uuid.clone(), vm.id, vm.state == VmState::Starting);
                let caller = ctx.caller.clone();
                Ok(AsyncStart::new(async move {
                    let vm = if start {
                        finish(&store, &caller, vm_id, "VM.START", "Successfully started VM").await?
                    } else {
                        store.read(move |c| vm::get_vm(c, vm_id)).await?
                    };
                    Ok(ApiResult::Object(vm_obj(&vm, &caller)))
                })
                .created("VirtualMachine", &uuid))
            }),
    )?;
    r.register(
        Command::asynchronous("startVirtualMachine")
            .describe("Starts a virtual machine.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("virtualmachine")
            .param(
                Param::uuid("id", Entity::VM)
                    .required()
                    .desc("The ID of the virtual machine")
                    .related("listVirtualMachines"),
            )
            .vm_fields()
            .async_handler(|ctx| power(ctx, VmEvent::StartRequested)),
    )?;
    r.register(
        Command::asynchronous("stopVirtualMachine")
            .describe("Stops a virtual machine.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("virtualmachine")
            .param(Param::uuid("id", Entity::VM).required().desc("The ID of the virtual machine").related("listVirtualMachines"))
            .param(Param::boolean("forced").desc("Force stop the VM (vm is marked as Stopped even when command fails to be send to the backend, otherwise a force poweroff is attempted). The caller knows the VM is stopped."))
            .vm_fields()
            .async_handler(|ctx| power(ctx, VmEvent::StopRequested)),
    )?;
    r.register(
        Command::sync("listVirtualMachines")
            .describe("List the virtual machines owned by the account.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("virtualmachine")
            .param(Param::uuid("id", Entity::VM).desc("the ID of the virtual machine").related("listVirtualMachines"))
            .param(Param::uuid("zoneid", Entity::ZONE).desc("the availability zone ID").related("listZones"))
            .param(Param::string("name").desc("name of the virtual machine (a substring match is not done)"))
            .param(Param::string("state").desc("state of the virtual machine. Possible values are: Running, Stopped, Present, Destroyed, Expunged. Present is used for the state equal not destroyed."))
            .param(Param::string("details").desc("comma separated list of vm details requested; accepted and ignored"))
            .list_params()
            .scope_params()
            .vm_fields()
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let filter = VmFilter {
                    hide_destroyed: caller.role == Role::User,
                    id: ctx.id("id"),
                    zone_id: ctx.id("zoneid"),
                    name: ctx.str("name").map(str::to_string),
                    state: ctx.str("state").map(str::to_string),
                    keyword: ctx.keyword().map(str::to_string),
                };
                // A near page walked by index runs in place; a keyword or state filter may
                // scan, so it goes to the blocking pool.
                let in_place = filter.keyword.is_none() && filter.state.is_none() && page.is_near();
                let c2 = caller.clone();
                let query = move |c: &crate::store::db::Connection| {
                    let scope = ListScope::resolve(c, &c2, &sp)?;
                    vm::list_vms(c, &scope, &filter, page)
                };
                let store = ctx.state.store();
                let listed = if in_place {
                    store.read_now(query)?
                } else {
                    store.read(query).await?
                };
                Ok(ApiResult::list(listed.map(|v| vm_obj(&v, &caller))))
            }),
    )?;
    r.register(
        Command::sync("listVolumes")
            .describe("Lists all volumes.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("volume")
            .param(
                Param::uuid("id", Entity::VOLUME)
                    .desc("the ID of the disk volume")
                    .related("listVolumes"),
            )
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .desc("the ID of the virtual machine")
                    .related("listVirtualMachines"),
            )
            .param(Param::string("type").desc("the type of disk volume (ROOT or DATADISK)"))
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("the ID of the availability zone")
                    .related("listZones"),
            )
            .list_params()
            .scope_params()
            .volume_fields()
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let filter = VolumeFilter {
                    id: ctx.id("id"),
                    vm_id: ctx.id("virtualmachineid"),
                    kind: ctx.str("type").map(str::to_string),
                    zone_id: ctx.id("zoneid"),
                    keyword: ctx.keyword().map(str::to_string),
                };
                let c2 = caller.clone();
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = ListScope::resolve(c, &c2, &sp)?;
                        vm::list_volumes(c, &scope, &filter, page)
                    })
                    .await?;
                Ok(ApiResult::list(listed.map(|v| volume_obj(&v, &caller))))
            }),
    )?;
    register_vm_lifecycle(r)?;
    register_volume_commands(r)
}

trait VmFields {
    fn vm_fields(self) -> Self;
}

impl VmFields for Command {
    fn vm_fields(self) -> Self {
        self.field("id", "string", "the ID of the virtual machine")
            .field("name", "string", "the name of the virtual machine")
            .field("displayname", "string", "user generated name. The name of the virtual machine is returned if no displayname exists.")
            .field("state", "string", "the state of the virtual machine")
            .field("zoneid", "string", "the ID of the availability zone for the virtual machine")
            .field("backupofferingid", "string", "the ID of the backup offering of the virtual machine")
            .field("backupofferingname", "string", "the name of the backup offering of the virtual machine")
    }
}

/// For admins acting on behalf of another account (`account` + `domainid`): the owner's
/// (account id, domain id) after access checks. `None` = the caller owns the new resource.
pub fn owner_on_behalf(
    conn: &crate::store::db::Connection,
    caller: &Caller,
    account: Option<&str>,
    domain_id: Option<i64>,
) -> Result<Option<(i64, i64)>, OpError> {
    let Some(name) = account else {
        if domain_id.is_some_and(|d| d != caller.domain_id) && caller.role == Role::User {
            return Err(OpError::PermissionDenied(format!(
                "Account '{}' does not have permission to deploy in the specified domain",
                caller.account_name
            )));
        }
        return Ok(None);
    };
    let domain_id = domain_id.ok_or_else(|| {
        OpError::InvalidParameter("Account must be used with domainid parameter".into())
    })?;
    let account_id = identity::account_id_by_name(conn, domain_id, name)?.ok_or_else(|| {
        OpError::InvalidParameter(format!("Unable to find account {name} in domain"))
    })?;
    if account_id == caller.account_id {
        return Ok(None);
    }
    let account = identity::get_account(conn, account_id)?;
    if caller.role == Role::User || !caller.can_access(account_id, &account.domain_path) {
        return Err(OpError::PermissionDenied(format!(
            "Account '{}' does not have permission to act on behalf of account {name}",
            caller.account_name
        )));
    }
    if account.state != "enabled" {
        return Err(OpError::InvalidState(format!(
            "Account {name} is not enabled"
        )));
    }
    Ok(Some((account_id, domain_id)))
}

/// Completes a Starting/Stopping VM (the simulated hypervisor always succeeds) and records the event.
async fn finish(
    store: &Store,
    caller: &Caller,
    vm_id: i64,
    event_type: &'static str,
    text: &'static str,
) -> Result<Vm, ApiError> {
    let caller = caller.clone();
    Ok(store
        .write(move |tx| {
            let vm = vm::transition(tx, vm_id, VmEvent::OperationSucceeded)?;
            let description = format!("{text} {}", vm.name);
            events::record(
                tx,
                &NewEvent {
                    account_id: vm.account_id,
                    domain_id: vm.domain_id,
                    ..NewEvent::completed(&caller, event_type, &description)
                }
                .resource("VirtualMachine", &vm.uuid),
            )?;
            Ok::<_, OpError>(vm)
        })
        .await?)
}

/// start/stop: access is checked before the job; the job moves the VM through the state table
/// (a VM already in the wanted state is left alone, as CloudStack does).
async fn power(ctx: Ctx, event: VmEvent) -> Result<AsyncStart, ApiError> {
    let vm_id = ctx.req_id("id")?;
    let caller = ctx.caller.clone();
    let store = ctx.state.store().clone();
    let c2 = caller.clone();
    let vm = store
        .read(move |c| {
            let vm = vm::get_vm(c, vm_id)?;
            c2.check_access(c, vm.account_id, vm.domain_id, "the virtual machine")?;
            Ok::<_, OpError>(vm)
        })
        .await?;
    if vm.removed.is_some() {
        return Err(vm_not_found(&vm));
    }
    let uuid = vm.uuid.clone();
    let (already, event_type, text) = match event {
        VmEvent::StartRequested => (VmState::Running, "VM.START", "Successfully started VM"),
        _ => (VmState::Stopped, "VM.STOP", "Successfully stopped VM"),
    };
    Ok(AsyncStart::new(async move {
        let current = store
            .write(move |tx| {
                let vm = vm::get_vm(tx, vm_id)?;
                if vm.state == already {
                    return Ok::<_, OpError>(Some(vm));
                }
                vm::transition(tx, vm_id, event)?;
                Ok(None)
            })
            .await?;
        let vm = match current {
            Some(vm) => vm,
            None => finish(&store, &caller, vm_id, event_type, text).await?,
        };
        Ok(ApiResult::Object(vm_obj(&vm, &caller)))
    })
    .instance("VirtualMachine", &uuid))
}

pub fn zone_obj(z: &inventory::Zone) -> Obj {
    Obj::new()
        .str("id", &z.uuid)
        .str("name", &z.name)
        .str("allocationstate", "Enabled")
        .str("networktype", "Advanced")
        .bool("securitygroupsenabled", false)
        .bool("localstorageenabled", false)
}

/// UserVmResponse fields clients use; `instancename` and `hostname` only for root admins.
pub fn vm_obj(v: &Vm, caller: &Caller) -> Obj {
    let mut o = Obj::new()
        .str("id", &v.uuid)
        .str("name", &v.name)
        .str("displayname", &v.display_name)
        .str("account", &v.account_name)
        .str("domainid", &v.domain_uuid)
        .str("domain", &v.domain_name)
        .str("zoneid", &v.zone_uuid)
        .str("zonename", &v.zone_name)
        .str("state", v.state.as_str())
        .str("serviceofferingid", &v.service_offering_uuid)
        .str("serviceofferingname", &v.service_offering_name)
        .str("templateid", &v.template_uuid)
        .str("templatename", &v.template_name)
        .str("hypervisor", &v.hypervisor)
        .date("created", v.created)
        .int("cpunumber", v.cpu_number)
        .int("cpuspeed", v.cpu_speed_mhz)
        .int("memory", v.memory_mb)
        .bool("haenable", false)
        .bool("passwordenabled", false)
        .opt_str(
            "backupofferingid",
            v.backup_offering.as_ref().map(|b| b.0.clone()),
        )
        .opt_str(
            "backupofferingname",
            v.backup_offering.as_ref().map(|b| b.1.clone()),
        );
    if caller.is_root_admin() {
        o = o
            .str("instancename", &v.internal_name)
            .opt_str("hostname", v.host_address.clone());
    }
    o
}

pub fn volume_obj(v: &Volume, caller: &Caller) -> Obj {
    let mut o = Obj::new()
        .str("id", &v.uuid)
        .str("name", &v.name)
        .str("zoneid", &v.zone_uuid)
        .str("zonename", &v.zone_name)
        .str("type", &v.kind)
        .opt_int("deviceid", v.device_id)
        .int("size", v.size_bytes)
        .str("state", &v.state)
        .str("account", &v.account_name)
        .str("domainid", &v.domain_uuid)
        .str("domain", &v.domain_name)
        .str("storagetype", "shared")
        .bool("destroyed", v.state == "Destroy" || v.state == "Expunged")
        .opt_str(
            "diskofferingid",
            v.disk_offering.as_ref().map(|d| d.0.clone()),
        )
        .opt_str(
            "diskofferingname",
            v.disk_offering.as_ref().map(|d| d.1.clone()),
        )
        .date("created", v.created);
    if let Some(vm) = &v.vm {
        o = o
            .str("virtualmachineid", &vm.uuid)
            .str("vmname", &vm.name)
            .str("vmdisplayname", &vm.display_name)
            .str("vmstate", &vm.state);
    }
    if caller.is_root_admin() && !v.path.is_empty() {
        o = o.str("path", &v.path);
    }
    o
}

/// Text of CloudStack's "no such VM" for an expunged (soft-deleted) VM.
fn vm_not_found(vm: &Vm) -> ApiError {
    ApiError::param(format!(
        "Unable to find a virtual machine with id {}",
        vm.uuid
    ))
}

/// The VM a uuid parameter names, after the caller's access check (531); 431 when expunged.
async fn accessible_vm(ctx: &Ctx, param: &str) -> Result<Vm, ApiError> {
    let vm_id = ctx.req_id(param)?;
    let caller = ctx.caller.clone();
    let vm = ctx
        .state
        .store()
        .read(move |c| {
            let vm = vm::get_vm(c, vm_id)?;
            caller.check_access(c, vm.account_id, vm.domain_id, "the virtual machine")?;
            Ok::<_, OpError>(vm)
        })
        .await?;
    if vm.removed.is_some() {
        return Err(vm_not_found(&vm));
    }
    Ok(vm)
}

/// The volume with internal id `volume_id`, after the caller's access check (531); 431 when
/// deleted.
async fn accessible_volume(ctx: &Ctx, volume_id: i64) -> Result<Volume, ApiError> {
    let caller = ctx.caller.clone();
    let vol = ctx
        .state
        .store()
        .read(move |c| {
            let vol = volume::get_volume(c, volume_id)?;
            caller.check_access(c, vol.account_id, vol.domain_id, "the volume")?;
            Ok::<_, OpError>(vol)
        })
        .await?;
    if vol.removed.is_some() {
        return Err(ApiError::param(format!(
            "Unable to find volume with ID: {}",
            vol.uuid
        )));
    }
    Ok(vol)
}

/// Runs the registered B&R expunge guard, if any (spec §3.10).
async fn run_expunge_guard(
    guard: Option<Arc<dyn ExpungeGuard>>,
    caller: &Caller,
    vm_id: i64,
) -> Result<(), ApiError> {
    if let Some(guard) = guard {
        guard.before_expunge(caller, vm_id).await?;
    }
    Ok(())
}

fn register_vm_lifecycle(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::asynchronous("destroyVirtualMachine")
            .describe("Destroys a virtual machine. Once destroyed, only the administrator can recover it.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("virtualmachine")
            .param(Param::uuid("id", Entity::VM).required().desc("The ID of the virtual machine").related("listVirtualMachines"))
            .param(Param::boolean("expunge").desc("If true is passed, the vm is expunged immediately. False by default.").since("4.2.1"))
            .vm_fields()
            .async_handler(|ctx| async move {
                let expunge = ctx.bool_or("expunge", false);
                if expunge && ctx.caller.role == Role::User {
                    return Err(ApiError::permission(
                        "Parameter expunge can be passed by Admin only. Or when the allow.user.expunge.recover.vm key is set.",
                    ));
                }
                let vm = accessible_vm(&ctx, "id").await?;
                let (vm_id, uuid) = (vm.id, vm.uuid.clone());
                let guard = ctx.state.ext::<Arc<dyn ExpungeGuard>>().cloned();
                let store = ctx.state.store().clone();
                let caller = ctx.caller.clone();
                Ok(AsyncStart::new(async move {
                    if expunge {
                        // Refuse a VM in a transitional state before the guard changes anything.
                        let current = store.read(move |c| vm::get_vm(c, vm_id)).await?;
                        lifecycle::check_destroy(&current)?;
                        run_expunge_guard(guard, &caller, vm_id).await?;
                    }
                    let c2 = caller.clone();
                    let vm = store
                        .write(move |tx| {
                            let vm = lifecycle::destroy(tx, &c2, vm_id)?;
                            if expunge {
                                lifecycle::expunge(tx, &c2, vm_id)
                            } else {
                                Ok(vm)
                            }
                        })
                        .await?;
                    Ok(ApiResult::Object(vm_obj(&vm, &caller)))
                })
                .instance("VirtualMachine", &uuid))
            }),
    )?;
    r.register(
        Command::sync("recoverVirtualMachine")
            .describe("Recovers a virtual machine.")
            .since("1.0.0")
            .roles(ADMINS)
            .object("virtualmachine")
            .param(
                Param::uuid("id", Entity::VM)
                    .required()
                    .desc("The ID of the virtual machine")
                    .related("listVirtualMachines"),
            )
            .vm_fields()
            .handler(|ctx| async move {
                let vm_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                let c2 = caller.clone();
                let vm = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let vm = vm::get_vm(tx, vm_id)?;
                        c2.check_access(tx, vm.account_id, vm.domain_id, "the virtual machine")?;
                        lifecycle::recover(tx, &c2, vm_id)
                    })
                    .await?;
                Ok(ApiResult::Object(vm_obj(&vm, &caller)))
            }),
    )?;
    r.register(
        Command::asynchronous("expungeVirtualMachine")
            .describe("Expunge a virtual machine. Once expunged, it cannot be recovered.")
            .since("4.2.0")
            .roles(ADMINS)
            .object("success")
            .param(
                Param::uuid("id", Entity::VM)
                    .required()
                    .desc("The ID of the virtual machine")
                    .related("listVirtualMachines"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .field(
                "displaytext",
                "string",
                "any text associated with the success or failure",
            )
            .async_handler(|ctx| async move {
                let vm_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                let c2 = caller.clone();
                // An already expunged VM is a no-op success, as in CloudStack.
                let vm = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let vm = vm::get_vm(c, vm_id)?;
                        c2.check_access(c, vm.account_id, vm.domain_id, "the virtual machine")?;
                        Ok::<_, OpError>(vm)
                    })
                    .await?;
                let uuid = vm.uuid.clone();
                let guard = ctx.state.ext::<Arc<dyn ExpungeGuard>>().cloned();
                let store = ctx.state.store().clone();
                Ok(AsyncStart::new(async move {
                    let current = store.read(move |c| vm::get_vm(c, vm_id)).await?;
                    if !lifecycle::check_expunge(&current)? {
                        return Ok(ApiResult::success());
                    }
                    run_expunge_guard(guard, &caller, vm_id).await?;
                    store
                        .write(move |tx| lifecycle::expunge(tx, &caller, vm_id))
                        .await?;
                    Ok(ApiResult::success())
                })
                .instance("VirtualMachine", &uuid))
            }),
    )
}

trait VolumeFields {
    fn volume_fields(self) -> Self;
}

impl VolumeFields for Command {
    fn volume_fields(self) -> Self {
        self.field("id", "string", "ID of the disk volume")
            .field("name", "string", "name of the disk volume")
            .field("type", "string", "type of the disk volume (ROOT or DATADISK)")
            .field("size", "long", "size of the disk volume")
            .field("state", "string", "the state of the disk volume")
            .field("virtualmachineid", "string", "id of the virtual machine")
            .field("vmname", "string", "name of the virtual machine")
            .field("deviceid", "long", "the ID of the device on user vm the volume is attached to. This tag is not returned when the volume is detached.")
            .field("zoneid", "string", "ID of the availability zone")
            .field("zonename", "string", "name of the availability zone")
            .field("diskofferingid", "string", "ID of the disk offering")
            .field("account", "string", "the account associated with the disk volume")
            .field("domainid", "string", "the ID of the domain associated with the disk volume")
            .field("domain", "string", "the domain associated with the disk volume")
            .field("created", "date", "the date the disk volume was created")
            .field("path", "string", "the path of the volume (root admins only)")
    }
}

fn register_volume_commands(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::async_create("createVolume")
            .describe("Creates a disk volume from a disk offering. This disk volume must still be attached to a virtual machine to make use of it.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("volume")
            .param(Param::string("name").desc("the name of the disk volume"))
            .param(Param::uuid("diskofferingid", Entity::DISK_OFFERING).desc("the ID of the disk offering. Either diskOfferingId or size must be passed in.").related("listDiskOfferings"))
            .param(Param::long("size").desc("Arbitrary volume size in GB, used when no disk offering is given"))
            .param(Param::uuid("zoneid", Entity::ZONE).required().desc("the ID of the availability zone").related("listZones"))
            .param(Param::string("account").desc("the account associated with the disk volume. Must be used with the domainId parameter."))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("the domain ID associated with the disk offering. If used with the account parameter returns the disk volume associated with the account for the specified domain.").related("listDomains"))
            .volume_fields()
            .async_handler(|ctx| async move {
                let caller = ctx.caller.clone();
                let account = ctx.str("account").map(str::to_string);
                let domain_id = ctx.id("domainid");
                let mut req = NewVolume {
                    name: ctx.str("name").map(str::to_string),
                    account_id: caller.account_id,
                    domain_id: caller.domain_id,
                    zone_id: ctx.req_id("zoneid")?,
                    disk_offering_id: ctx.id("diskofferingid"),
                    size_gb: ctx.int("size"),
                };
                let store = ctx.state.store().clone();
                let c2 = caller.clone();
                let vol = store
                    .write(move |tx| {
                        if let Some((account_id, domain_id)) = owner_on_behalf(tx, &c2, account.as_deref(), domain_id)? {
                            req.account_id = account_id;
                            req.domain_id = domain_id;
                        }
                        volume::create(tx, &c2, &req)
                    })
                    .await?;
                let (uuid, volume_id) = (vol.uuid.clone(), vol.id);
                Ok(AsyncStart::new(async move {
                    let vol = store.read(move |c| volume::get_volume(c, volume_id)).await?;
                    Ok(ApiResult::Object(volume_obj(&vol, &caller)))
                })
                .created("Volume", &uuid))
            }),
    )?;
    r.register(
        Command::asynchronous("attachVolume")
            .describe("Attaches a disk volume to a virtual machine.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("volume")
            .param(Param::uuid("id", Entity::VOLUME).required().desc("the ID of the disk volume").related("listVolumes"))
            .param(Param::uuid("virtualmachineid", Entity::VM).required().desc("the ID of the virtual machine").related("listVirtualMachines"))
            .param(Param::long("deviceid").desc("The ID of the device to map the volume to the guest OS. If no deviceID is informed, the next available deviceID will be chosen. Device 0 is the ROOT volume and 3 the CD-ROM."))
            .volume_fields()
            .async_handler(|ctx| async move {
                let vol = accessible_volume(&ctx, ctx.req_id("id")?).await?;
                let vm = accessible_vm(&ctx, "virtualmachineid").await?;
                // Refused before a job exists; `volume::attach` checks again in its transaction.
                identity::check_same_owner(
                    ("the volume", vol.account_id),
                    ("the virtual machine", vm.account_id),
                )?;
                let device_id = ctx.int("deviceid");
                let (volume_id, vm_id, uuid) = (vol.id, vm.id, vol.uuid.clone());
                let store = ctx.state.store().clone();
                let settings = ctx.state.settings().clone();
                let caller = ctx.caller.clone();
                Ok(AsyncStart::new(async move {
                    let allowed = settings.get_bool(BACKUP_ATTACH_DETACH_VOLUMES, None);
                    let c2 = caller.clone();
                    let vol = store
                        .write(move |tx| volume::attach(tx, &c2, volume_id, vm_id, device_id, allowed))
                        .await?;
                    Ok(ApiResult::Object(volume_obj(&vol, &caller)))
                })
                .instance("Volume", &uuid))
            }),
    )?;
    r.register(
        Command::asynchronous("detachVolume")
            .describe("Detaches a disk volume from a virtual machine.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("volume")
            .param(
                Param::uuid("id", Entity::VOLUME)
                    .desc("the ID of the disk volume")
                    .related("listVolumes"),
            )
            .param(
                Param::uuid("virtualmachineid", Entity::VM)
                    .desc("the ID of the virtual machine where the volume is detached from")
                    .related("listVirtualMachines"),
            )
            .param(
                Param::long("deviceid")
                    .desc("the device ID on the virtual machine where volume is detached from"),
            )
            .volume_fields()
            .async_handler(|ctx| async move {
                let by_device = (ctx.id("virtualmachineid"), ctx.int("deviceid"));
                let volume_id = match (ctx.id("id"), by_device) {
                    (Some(id), (None, None)) => id,
                    (None, (Some(vm_id), Some(device_id))) => {
                        let vm = accessible_vm(&ctx, "virtualmachineid").await?;
                        ctx.state
                            .store()
                            .read(move |c| volume::volume_at_device(c, vm_id, device_id))
                            .await?
                            .ok_or_else(|| {
                                ApiError::param(format!(
                                    "Unable to find volume with device id {device_id} on VM {}",
                                    vm.uuid
                                ))
                            })?
                    }
                    _ => {
                        return Err(ApiError::param(
                            "Please provide either a volume id, or a tuple(device id, instance id)",
                        ));
                    }
                };
                let vol = accessible_volume(&ctx, volume_id).await?;
                let uuid = vol.uuid.clone();
                let store = ctx.state.store().clone();
                let settings = ctx.state.settings().clone();
                let caller = ctx.caller.clone();
                Ok(AsyncStart::new(async move {
                    let allowed = settings.get_bool(BACKUP_ATTACH_DETACH_VOLUMES, None);
                    let c2 = caller.clone();
                    let vol = store
                        .write(move |tx| volume::detach(tx, &c2, volume_id, allowed))
                        .await?;
                    Ok(ApiResult::Object(volume_obj(&vol, &caller)))
                })
                .instance("Volume", &uuid))
            }),
    )?;
    r.register(
        Command::sync("deleteVolume")
            .describe("Deletes a detached disk volume.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("success")
            .param(
                Param::uuid("id", Entity::VOLUME)
                    .required()
                    .desc("The ID of the disk volume")
                    .related("listVolumes"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .field(
                "displaytext",
                "string",
                "any text associated with the success or failure",
            )
            .handler(|ctx| async move {
                let volume_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                ctx.state
                    .store()
                    .write(move |tx| {
                        let vol = volume::get_volume(tx, volume_id)?;
                        caller.check_access(tx, vol.account_id, vol.domain_id, "the volume")?;
                        volume::delete(tx, &caller, volume_id)
                    })
                    .await?;
                Ok(ApiResult::success())
            }),
    )
}
