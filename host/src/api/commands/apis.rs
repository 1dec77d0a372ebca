//! `listApis` (API discovery), generated from the registry and filtered by the caller's role.

use crate::api::registry::{ALL_ROLES, Command, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult, Obj};

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listApis")
            .describe(
                "lists all available apis on the server, provided by the Api Discovery plugin",
            )
            .since("4.1.0")
            .roles(ALL_ROLES)
            .object("api")
            .param(Param::string("name").desc("API name"))
            .field("name", "string", "the name of the api command")
            .field("description", "string", "description of the api")
            .field(
                "since",
                "string",
                "version of CloudStack the api was introduced in",
            )
            .field("isasync", "boolean", "true if api is asynchronous")
            .field("related", "string", "comma separated related apis")
            .field("params", "list", "the list params the api accepts")
            .field("response", "list", "api response fields")
            .handler(|ctx| async move {
                let wanted = ctx.str("name").map(str::to_string);
                let items: Vec<Obj> = ctx
                    .state
                    .registry
                    .all()
                    .into_iter()
                    .filter(|c| c.allows(ctx.caller.role))
                    .filter(|c| wanted.as_deref().is_none_or(|w| c.name == w))
                    .map(|c| describe(c))
                    .collect();
                if wanted.is_some() && items.is_empty() {
                    return Err(ApiError::param(format!(
                        "The API {} does not exist or is not available for this account.",
                        wanted.unwrap_or_default()
                    )));
                }
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )
}

/// One listApis entry; shapes follow cloudmonkey's hard requirements (wire-protocol §3.1):
/// `params` always a list, integer `length`, boolean `required`, `related` a string.
fn describe(c: &Command) -> Obj {
    let params: Vec<Obj> = c
        .params
        .iter()
        .map(|p| {
            Obj::new()
                .str("name", &p.name)
                .str("description", &p.description)
                .str("type", p.ty.api_name())
                .int("length", p.length as i64)
                .bool("required", p.required)
                .str("related", &p.related)
                .opt_str("since", p.since.clone())
        })
        .collect();
    let response: Vec<Obj> = c
        .fields
        .iter()
        .map(|f| {
            Obj::new()
                .str("name", &f.name)
                .str("description", &f.description)
                .str("type", &f.ty)
        })
        .collect();
    Obj::new()
        .str("name", &c.name)
        .str("description", &c.description)
        .str("since", &c.since)
        .bool("isasync", c.is_async())
        .str("related", &c.related)
        .objs("params", params)
        .objs("response", response)
}
