//! `listEvents`.

use crate::api::registry::{ALL_ROLES, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiResult, Obj};
use crate::identity::ListScope;
use crate::store::OpError;
use crate::store::events::{self, Event, EventFilter};

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("listEvents")
            .describe("A command to list events.")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("event")
            .param(Param::uuid("id", Entity::EVENT).desc("the ID of the event").related("listEvents"))
            .param(Param::string("type").desc("the event type (see event types)"))
            .param(Param::string("level").desc("the event level (INFO, WARN, ERROR)"))
            .param(Param::date("startdate").desc("the start date range of the list you want to retrieve (use format \"yyyy-MM-dd\" or the new format \"yyyy-MM-dd HH:mm:ss\")"))
            .param(Param::date("enddate").desc("the end date range of the list you want to retrieve (use format \"yyyy-MM-dd\" or the new format \"yyyy-MM-dd HH:mm:ss\")"))
            .list_params()
            .scope_params()
            .field("id", "string", "the ID of the event")
            .field("type", "string", "the type of the event (see event types)")
            .field("level", "string", "the event level (INFO, WARN, ERROR)")
            .field("description", "string", "a brief description of the event")
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let filter = EventFilter {
                    id: ctx.id("id"),
                    event_type: ctx.str("type").map(str::to_string),
                    level: ctx.str("level").map(str::to_uppercase),
                    start: ctx.date("startdate"),
                    // A bare end date means "through that day".
                    end: ctx.date("enddate").map(|e| {
                        if ctx.str("enddate").is_some_and(|s| s.trim().len() == 10) { e + 86_399 } else { e }
                    }),
                    keyword: ctx.keyword().map(str::to_string),
                };
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = ListScope::resolve(c, &caller, &sp)?;
                        events::list(c, &scope, &filter, page)
                    })
                    .await
                    .map_err(|e: OpError| crate::api::ApiError::from(e))?;
                Ok(ApiResult::list(listed.map(|e| event_obj(&e))))
            }),
    )
}

pub fn event_obj(e: &Event) -> Obj {
    Obj::new()
        .str("id", &e.uuid)
        .str("type", &e.event_type)
        .str("level", &e.level)
        .str("state", &e.state)
        .str("description", &e.description)
        .str("account", &e.account_name)
        .str("domainid", &e.domain_uuid)
        .str("domain", &e.domain_name)
        .opt_str("username", e.username.clone())
        .opt_str("resourcetype", e.resource_type.clone())
        .opt_str("resourceid", e.resource_uuid.clone())
        .opt_str("provider", e.provider.clone())
        .date("created", e.created)
}
