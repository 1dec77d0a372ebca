//! VMware datacenters of zones: CloudStack's `addVmwareDc`, `listVmwareDcs`, `removeVmwareDc`.

use crate::api::registry::{ADMIN_ONLY, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiResult, Obj};
use crate::inventory::vmware::{self, VmwareDc};
use crate::store::OpError;
use crate::store::events::{self, NewEvent};

fn dc_obj(dc: &VmwareDc) -> Obj {
    Obj::new()
        .str("id", &dc.uuid)
        .str("name", &dc.name)
        .str("vcenter", &dc.vcenter)
        .str("zoneid", &dc.zone_uuid)
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("addVmwareDc")
            .describe("Adds a VMware datacenter to specified zone")
            .since("4.3.0")
            .roles(ADMIN_ONLY)
            .object("vmwaredc")
            .param(Param::uuid("zoneid", Entity::ZONE).required().desc("The Zone ID.").related("listZones"))
            .param(Param::string("name").required().desc("Name of VMware datacenter to be added to specified zone."))
            .param(Param::string("vcenter").required().desc("The name/ip of vCenter. Make sure it is IP address or full qualified domain name for host running vCenter server."))
            .param(Param::string("username").desc("The Username required to connect to resource."))
            .param(Param::string("password").desc("The password for specified username; accepted and not kept"))
            .field("id", "string", "The VMware Datacenter ID")
            .field("name", "string", "The VMware Datacenter name")
            .field("vcenter", "string", "The VMware vCenter name/ip")
            .field("zoneid", "string", "the Zone ID associated with this VMware Datacenter")
            .handler(|ctx| async move {
                let zone_id = ctx.req_id("zoneid")?;
                let name = ctx.req_str("name")?.to_string();
                let vcenter = ctx.req_str("vcenter")?.trim().to_string();
                let username = ctx.str("username").unwrap_or("administrator").to_string();
                let caller = ctx.caller.clone();
                let dc = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let dc = vmware::add(tx, zone_id, &name, &vcenter, &username)?;
                        let text = format!("Added VMware datacenter {} of vCenter {}", dc.name, dc.vcenter);
                        events::record(
                            tx,
                            &NewEvent::completed(&caller, "VMWARE.DC.ADD", &text).resource("Zone", &dc.zone_uuid),
                        )?;
                        Ok::<_, OpError>(dc)
                    })
                    .await?;
                Ok(ApiResult::Object(dc_obj(&dc)))
            }),
    )?;
    r.register(
        Command::sync("listVmwareDcs")
            .describe("Retrieves VMware DC(s) associated with a zone.")
            .since("4.3.0")
            .roles(ADMIN_ONLY)
            .object("vmwaredc")
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("Id of the CloudStack zone.")
                    .related("listZones"),
            )
            .list_params()
            .field("id", "string", "The VMware Datacenter ID")
            .field("name", "string", "The VMware Datacenter name")
            .field("vcenter", "string", "The VMware vCenter name/ip")
            .field(
                "zoneid",
                "string",
                "the Zone ID associated with this VMware Datacenter",
            )
            .handler(|ctx| async move {
                let zone_id = ctx.req_id("zoneid")?;
                let dc = ctx
                    .state
                    .store()
                    .read(move |c| vmware::of_zone(c, zone_id))
                    .await?;
                let items: Vec<Obj> = dc.iter().map(dc_obj).collect();
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::sync("removeVmwareDc")
            .describe("Remove a VMware datacenter from a zone.")
            .since("4.3.0")
            .roles(ADMIN_ONLY)
            .object("success")
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("The id of Zone from which VMware datacenter has to be removed.")
                    .related("listZones"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .handler(|ctx| async move {
                let zone_id = ctx.req_id("zoneid")?;
                ctx.state
                    .store()
                    .write(move |tx| vmware::remove(tx, zone_id))
                    .await?;
                Ok(ApiResult::success())
            }),
    )?;
    Ok(())
}
