//! `listConfigurations` and `updateConfiguration`.

use crate::api::registry::{ADMIN_ONLY, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiResult, Obj};
use crate::config::Effective;
use crate::inventory;
use crate::store::OpError;

/// What the API shows instead of a secret value.
pub const SECRET_MASK: &str = "*****";

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listConfigurations")
            .describe("Lists all configurations.")
            .since("1.0.0")
            .roles(ADMIN_ONLY)
            .object("configuration")
            .param(Param::string("name").desc("lists configuration by name (substring match)"))
            .param(Param::string("category").desc("lists configurations by category"))
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("the ID of the Zone to list the zone-scoped values of")
                    .related("listZones"),
            )
            .list_params()
            .field("name", "string", "the name of the configuration")
            .field("value", "string", "the value of the configuration")
            .field("category", "string", "the category of the configuration")
            .field(
                "description",
                "string",
                "the description of the configuration",
            )
            .field(
                "isdynamic",
                "boolean",
                "true if the configuration is dynamic",
            )
            .field(
                "scope",
                "string",
                "scope(zone/cluster/pool/account) of the parameter that needs to be updated",
            )
            .handler(|ctx| async move {
                let zone = zone_uuid(&ctx, ctx.id("zoneid")).await?;
                let all = ctx.state.settings().list(
                    ctx.str("name"),
                    ctx.str("category"),
                    ctx.keyword(),
                    ctx.id("zoneid"),
                );
                let total = all.len() as u64;
                let page = ctx.page();
                let items: Vec<Obj> = match page.size {
                    None => all.iter().map(|e| config_obj(e, zone.as_deref())).collect(),
                    Some(size) => all
                        .iter()
                        .skip(((page.page - 1) * size) as usize)
                        .take(size as usize)
                        .map(|e| config_obj(e, zone.as_deref()))
                        .collect(),
                };
                Ok(ApiResult::List { total, items })
            }),
    )?;
    r.register(
        Command::sync("updateConfiguration")
            .describe("Updates a configuration.")
            .since("1.0.0")
            .roles(ADMIN_ONLY)
            .object("configuration")
            .param(
                Param::string("name")
                    .required()
                    .desc("the name of the configuration"),
            )
            .param(
                Param::string("value")
                    .required()
                    .length(crate::config::MAX_VALUE_LEN)
                    .desc("the value of the configuration"),
            )
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("the ID of the Zone to update the parameter value for corresponding zone")
                    .related("listZones"),
            )
            .field("name", "string", "the name of the configuration")
            .field("value", "string", "the value of the configuration")
            .handler(|ctx| async move {
                let zone_id = ctx.id("zoneid");
                let zone = zone_uuid(&ctx, zone_id).await?;
                let effective = ctx
                    .state
                    .settings()
                    .set(
                        ctx.req_str("name")?,
                        ctx.str("value").unwrap_or(""),
                        zone_id,
                    )
                    .await?;
                Ok(ApiResult::Object(config_obj(&effective, zone.as_deref())))
            }),
    )
}

async fn zone_uuid(
    ctx: &crate::api::Ctx,
    zone_id: Option<i64>,
) -> Result<Option<String>, crate::api::ApiError> {
    let Some(id) = zone_id else { return Ok(None) };
    let zone = ctx
        .state
        .store()
        .read(move |c| inventory::get_zone(c, id))
        .await
        .map_err(|e: OpError| crate::api::ApiError::from(e))?;
    Ok(Some(zone.uuid))
}

/// A configuration entry; secret values are masked.
pub fn config_obj(e: &Effective, zone_uuid: Option<&str>) -> Obj {
    let d = &e.definition;
    // An unset secret shows empty, so an admin can tell it from a set one.
    let mask = |v: &str| {
        if v.is_empty() {
            String::new()
        } else {
            SECRET_MASK.to_string()
        }
    };
    let (value, default) = if d.secret {
        (mask(&e.value), mask(&d.default))
    } else {
        (e.value.clone(), d.default.clone())
    };
    Obj::new()
        .str("name", &d.name)
        .str("value", value)
        .str("defaultvalue", default)
        .str("category", &d.category)
        .str("description", &d.description)
        .bool("isdynamic", d.dynamic)
        .str("type", d.kind.as_str())
        .str(
            "scope",
            if zone_uuid.is_some() {
                "zone"
            } else {
                d.scope.as_str()
            },
        )
        .opt_str("id", zone_uuid)
}
