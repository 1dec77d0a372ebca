//! Domains, accounts, users and API keys.

use crate::api::registry::{
    ADMINS, ALL_ROLES, AsyncStart, Command, Ctx, Entity, Param, Registry, RegistryError,
};
use crate::api::session::end_user_sessions;
use crate::api::{ApiError, ApiResult, Obj};
use crate::identity::{
    self, Account, Caller, Domain, LifecycleState, ListScope, NewAccount, Role, User,
};
use crate::store::events::{self, NewEvent};
use crate::store::{OpError, format_date};

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("createAccount")
            .describe("Creates an account")
            .since("1.0.0")
            .roles(ADMINS)
            .object("account")
            .param(Param::string("username").required().desc("Unique username."))
            .param(Param::string("password").required().length(crate::identity::MAX_PASSWORD_LEN).desc("Clear text password (Default hashed to SHA256SALT)."))
            .param(Param::string("email").required().desc("email"))
            .param(Param::string("firstname").required().desc("firstname"))
            .param(Param::string("lastname").required().desc("lastname"))
            .param(Param::integer("accounttype").desc("Type of the account. 0 for user, 1 for root admin, 2 for domain admin"))
            .param(Param::string("roletype").desc("Role type of the account: Admin, DomainAdmin or User (bnr accepts this in place of roleid)"))
            .param(Param::string("account").desc("Name of the account to be created. The user will be added to this newly created account. If no account is specified, the username will be used as the account name."))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("Creates the user under the specified domain.").related("listDomains"))
            .param(Param::string("timezone").desc("Accepted and ignored"))
            .field("id", "string", "the id of the account")
            .field("name", "string", "the name of the account")
            .field("user", "list", "the list of users associated with account")
            .handler(|ctx| async move {
                let role = match (ctx.int("accounttype"), ctx.str("roletype")) {
                    (Some(t), _) => Role::from_account_type(t)
                        .ok_or_else(|| ApiError::param(format!("Invalid account type {t}")))?,
                    (None, Some(rt)) => Role::from_role_type(rt)
                        .ok_or_else(|| ApiError::param(format!("Invalid role type {rt}")))?,
                    (None, None) => Role::User,
                };
                let caller = ctx.caller.clone();
                let domain_id = ctx.id("domainid").unwrap_or(caller.domain_id);
                let username = ctx.req_str("username")?.to_string();
                let new = NewAccount {
                    account_name: ctx.str("account").unwrap_or(&username).to_string(),
                    domain_id,
                    role,
                    username,
                    password: ctx.req_str("password")?.to_string(),
                    email: ctx.str("email").map(str::to_string),
                    firstname: ctx.str("firstname").map(str::to_string),
                    lastname: ctx.str("lastname").map(str::to_string),
                };
                let (account, users) = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let path = identity::domain_path(tx, new.domain_id)?;
                        if !caller.is_root_admin()
                            && (role == Role::Admin || !path.starts_with(&caller.domain_path))
                        {
                            return Err(OpError::PermissionDenied(format!(
                                "Account '{}' does not have permission to create this account",
                                caller.account_name
                            )));
                        }
                        let user = identity::create_account(tx, &new)?;
                        let text = format!("Successfully created account {}", user.account.name);
                        events::record(tx, &NewEvent::completed(&caller, "ACCOUNT.CREATE", &text).resource("Account", &user.account.uuid))?;
                        Ok::<_, OpError>((user.account.clone(), vec![user]))
                    })
                    .await?;
                Ok(ApiResult::Object(account_obj(&account, &users)))
            }),
    )?;
    r.register(
        Command::sync("listAccounts")
            .describe(
                "Lists accounts and provides detailed account information for listed accounts",
            )
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("account")
            .param(
                Param::uuid("id", Entity::ACCOUNT)
                    .desc("list account by account ID")
                    .related("listAccounts"),
            )
            .param(Param::string("name").desc("list account by account name"))
            .list_params()
            .scope_params()
            .field("id", "string", "the id of the account")
            .field("name", "string", "the name of the account")
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let (id, name, kw) = (
                    ctx.id("id"),
                    ctx.str("name").map(str::to_string),
                    ctx.keyword().map(str::to_string),
                );
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = account_list_scope(c, &caller, &sp)?;
                        let listed = identity::list_accounts(
                            c,
                            &scope,
                            id,
                            name.as_deref(),
                            kw.as_deref(),
                            page,
                        )?;
                        let mut items = Vec::with_capacity(listed.items.len());
                        for a in listed.items {
                            let users = identity::users_of_account(c, a.id)?;
                            items.push(account_obj(&a, &users));
                        }
                        Ok::<_, OpError>(crate::store::query::Listed {
                            total: listed.total,
                            items,
                        })
                    })
                    .await?;
                Ok(ApiResult::list(listed))
            }),
    )?;
    r.register(
        Command::sync("listUsers")
            .describe("Lists user accounts")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("user")
            .param(
                Param::uuid("id", Entity::USER)
                    .desc("List user by ID.")
                    .related("listUsers"),
            )
            .param(Param::string("username").desc("List user by the username"))
            .list_params()
            .scope_params()
            .field("id", "string", "the user ID")
            .field("username", "string", "the user name")
            .field("apikey", "string", "the api key of the user")
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let (id, username, kw) = (
                    ctx.id("id"),
                    ctx.str("username").map(str::to_string),
                    ctx.keyword().map(str::to_string),
                );
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = account_list_scope(c, &caller, &sp)?;
                        identity::list_users(
                            c,
                            &scope,
                            id,
                            username.as_deref(),
                            kw.as_deref(),
                            page,
                        )
                    })
                    .await?;
                Ok(ApiResult::list(listed.map(|u| user_obj(&u))))
            }),
    )?;
    r.register(
        Command::sync("registerUserKeys")
            .describe("This command allows a user to register for the developer API, returning a secret key and an API key. This request is made through the integration API port, so it is a privileged command and must be made on behalf of a user. It is up to the implementer just how the username and password are entered, and then how that translates to an integration API request. Both secret key and API key should be returned to the user")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("userkeys")
            .param(Param::uuid("id", Entity::USER).required().desc("User id").related("listUsers"))
            .field("apikey", "string", "the api key of the registered user")
            .field("secretkey", "string", "the secret key of the registered user")
            .handler(|ctx| async move {
                let user_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                let secrets = ctx.state.store().secrets().clone();
                let (api_key, secret_key) = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let user = identity::get_user(tx, user_id)?;
                        caller.check_access(tx, user.account.id, user.account.domain_id, "the user")?;
                        if caller.role != Role::Admin && user.account.role == Role::Admin {
                            return Err(OpError::PermissionDenied("Only a root admin can register keys of a root admin".into()));
                        }
                        let keys = identity::register_user_keys(tx, &secrets, user_id)?;
                        let text = format!("Registered API keys of user {}", user.username);
                        events::record(tx, &NewEvent::completed(&caller, "REGISTER.USER.KEY", &text).resource("User", &user.uuid))?;
                        Ok::<_, OpError>(keys)
                    })
                    .await?;
                Ok(ApiResult::Object(Obj::new().str("apikey", api_key).str("secretkey", secret_key)))
            }),
    )?;
    for (name, state) in [
        ("disableUser", LifecycleState::Disabled),
        ("enableUser", LifecycleState::Enabled),
    ] {
        let verb = if state == LifecycleState::Enabled {
            "Enables"
        } else {
            "Disables"
        };
        r.register(
            Command::sync(name)
                .describe(&format!("{verb} a user account"))
                .since("1.0.0")
                .roles(ADMINS)
                .object("user")
                .param(
                    Param::uuid("id", Entity::USER)
                        .required()
                        .desc("User ID.")
                        .related("listUsers"),
                )
                .field("id", "string", "the user ID")
                .field("state", "string", "the user state")
                .handler(move |ctx| async move {
                    let user_id = ctx.req_id("id")?;
                    let caller = ctx.caller.clone();
                    let user = ctx
                        .state
                        .store()
                        .write(move |tx| {
                            let user = identity::get_live_user(tx, user_id)?;
                            check_user_change(tx, &caller, &user)?;
                            let user = identity::set_user_state(tx, user_id, state)?;
                            if state != LifecycleState::Enabled {
                                end_user_sessions(tx, &[user_id])?;
                            }
                            let (kind, done) = match state {
                                LifecycleState::Enabled => ("USER.ENABLE", "enabled"),
                                _ => ("USER.DISABLE", "disabled"),
                            };
                            let text = format!("User {} {done}", user.username);
                            events::record(
                                tx,
                                &NewEvent::completed(&caller, kind, &text)
                                    .resource("User", &user.uuid),
                            )?;
                            Ok::<_, OpError>(user)
                        })
                        .await?;
                    Ok(ApiResult::Object(user_obj(&user)))
                }),
        )?;
    }
    r.register(
        Command::sync("deleteUser")
            .describe("Deletes a user for an account")
            .since("1.0.0")
            .roles(ADMINS)
            .object("success")
            .param(
                Param::uuid("id", Entity::USER)
                    .required()
                    .desc("id of the user to be deleted")
                    .related("listUsers"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .handler(|ctx| async move {
                let user_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                ctx.state
                    .store()
                    .write(move |tx| {
                        let user = identity::get_live_user(tx, user_id)?;
                        check_user_change(tx, &caller, &user)?;
                        identity::remove_user(tx, user_id)?;
                        end_user_sessions(tx, &[user_id])?;
                        let text = format!("Deleted user {}", user.username);
                        events::record(
                            tx,
                            &NewEvent::completed(&caller, "USER.DELETE", &text)
                                .resource("User", &user.uuid),
                        )?;
                        Ok::<_, OpError>(())
                    })
                    .await?;
                Ok(ApiResult::success())
            }),
    )?;
    r.register(
        Command::asynchronous("disableAccount")
            .describe("Disables an account")
            .since("1.0.0")
            .roles(ADMINS)
            .object("account")
            .param(
                Param::uuid("id", Entity::ACCOUNT)
                    .desc("Account id")
                    .related("listAccounts"),
            )
            .param(Param::string("account").desc("Disables specified account."))
            .param(
                Param::uuid("domainid", Entity::DOMAIN)
                    .desc("Disables specified account in this domain.")
                    .related("listDomains"),
            )
            .param(
                Param::boolean("lock")
                    .required()
                    .desc("If true, only lock the account; else disable the account"),
            )
            .field("id", "string", "the id of the account")
            .field("state", "string", "the state of the account")
            .async_handler(|ctx| async move {
                let state = if ctx.bool_or("lock", false) {
                    LifecycleState::Locked
                } else {
                    LifecycleState::Disabled
                };
                account_state_job(ctx, state, "ACCOUNT.DISABLE").await
            }),
    )?;
    r.register(
        Command::sync("enableAccount")
            .describe("Enables an account")
            .since("1.0.0")
            .roles(ADMINS)
            .object("account")
            .param(
                Param::uuid("id", Entity::ACCOUNT)
                    .desc("Account id")
                    .related("listAccounts"),
            )
            .param(Param::string("account").desc("Enables specified account."))
            .param(
                Param::uuid("domainid", Entity::DOMAIN)
                    .desc("Enables specified account in this domain.")
                    .related("listDomains"),
            )
            .field("id", "string", "the id of the account")
            .field("state", "string", "the state of the account")
            .handler(|ctx| async move {
                let account_id = target_account(&ctx).await?;
                let caller = ctx.caller.clone();
                let (account, users) = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        set_account_state(
                            tx,
                            &caller,
                            account_id,
                            LifecycleState::Enabled,
                            "ACCOUNT.ENABLE",
                        )
                    })
                    .await?;
                Ok(ApiResult::Object(account_obj(&account, &users)))
            }),
    )?;
    r.register(
        Command::asynchronous("deleteAccount")
            .describe("Deletes an account and all the users associated with it")
            .since("1.0.0")
            .roles(ADMINS)
            .object("success")
            .param(
                Param::uuid("id", Entity::ACCOUNT)
                    .required()
                    .desc("Account id")
                    .related("listAccounts"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .async_handler(|ctx| async move {
                let account_id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                let store = ctx.state.store().clone();
                let c2 = caller.clone();
                // Refuse before a job exists; the job checks again in its own transaction.
                let account = store
                    .read(move |c| changeable_account(c, &c2, account_id))
                    .await?;
                let uuid = account.uuid.clone();
                Ok(AsyncStart::new(async move {
                    store
                        .write(move |tx| {
                            let account = changeable_account(tx, &caller, account_id)?;
                            let users = identity::users_of_account(tx, account_id)?;
                            identity::remove_account(tx, account_id)?;
                            end_user_sessions(tx, &user_ids(&users))?;
                            let text = format!("Deleted account {}", account.name);
                            events::record(
                                tx,
                                &NewEvent::completed(&caller, "ACCOUNT.DELETE", &text)
                                    .resource("Account", &account.uuid),
                            )?;
                            Ok::<_, OpError>(())
                        })
                        .await?;
                    Ok(ApiResult::success())
                })
                .instance("Account", &uuid))
            }),
    )?;
    r.register(
        Command::sync("listDomains")
            .describe("Lists domains and provides detailed information for listed domains")
            .since("1.0.0")
            .roles(ALL_ROLES)
            .object("domain")
            .param(Param::uuid("id", Entity::DOMAIN).desc("List domain by domain ID.").related("listDomains"))
            .param(Param::string("name").desc("List domain by domain name."))
            .param(Param::boolean("listall").desc("If set to false, list only resources belonging to the command's caller; if set to true - list resources that the caller is authorized to see. Default value is false"))
            .list_params()
            .field("id", "string", "the ID of the domain")
            .field("name", "string", "the name of the domain")
            .field("path", "string", "the path of the domain")
            .handler(|ctx| async move {
                let (caller, page) = (ctx.caller.clone(), ctx.page());
                let (id, name, kw) = (ctx.id("id"), ctx.str("name").map(str::to_string), ctx.keyword().map(str::to_string));
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| identity::list_domains(c, &caller, id, name.as_deref(), kw.as_deref(), page))
                    .await?;
                Ok(ApiResult::list(listed.map(|d| domain_obj(&d))))
            }),
    )?;
    r.register(
        Command::sync("createDomain")
            .describe("Creates a domain")
            .since("1.0.0")
            .roles(ADMINS)
            .object("domain")
            .param(Param::string("name").required().desc("creates domain with this name"))
            .param(Param::uuid("parentdomainid", Entity::DOMAIN).desc("assigns new domain a parent domain by domain ID of the parent.  If no parent domain is specified, the ROOT domain is assumed.").related("listDomains"))
            .field("id", "string", "the ID of the domain")
            .handler(|ctx| async move {
                let caller = ctx.caller.clone();
                let name = ctx.req_str("name")?.to_string();
                let parent = ctx.id("parentdomainid").unwrap_or(caller.domain_id);
                let domain = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let path = identity::domain_path(tx, parent)?;
                        if !caller.is_root_admin() && !path.starts_with(&caller.domain_path) {
                            return Err(OpError::PermissionDenied(format!(
                                "Account '{}' does not have permission to create a domain there",
                                caller.account_name
                            )));
                        }
                        let d = identity::create_domain(tx, &name, Some(parent))?;
                        let text = format!("Successfully created domain {name}");
                        events::record(tx, &NewEvent::completed(&caller, "DOMAIN.CREATE", &text).resource("Domain", &d.uuid))?;
                        Ok::<_, OpError>(d)
                    })
                    .await?;
                Ok(ApiResult::Object(domain_obj(&domain)))
            }),
    )
}

/// The account a lifecycle command names: `id`, or `account` with `domainid` (CloudStack's pair).
async fn target_account(ctx: &Ctx) -> Result<i64, ApiError> {
    if let Some(id) = ctx.id("id") {
        return Ok(id);
    }
    let (Some(name), Some(domain_id)) = (ctx.str("account"), ctx.id("domainid")) else {
        return Err(ApiError::param(
            "Either id or account and domainid must be specified",
        ));
    };
    let name = name.to_string();
    let found = ctx
        .state
        .store()
        .read(move |c| identity::account_id_by_name(c, domain_id, &name))
        .await?;
    found.ok_or_else(|| ApiError::param("Unable to find the account by name in the domain"))
}

/// The default root admin account (`admin` in ROOT), which no command may disable or delete.
fn is_default_admin(a: &Account) -> bool {
    a.name == "admin" && a.domain_path == "/"
}

/// Who may disable, enable or delete an account: the root admin, or a domain admin for
/// accounts in its domain subtree that are not root admins; never the caller's own account
/// nor the default root admin account.
fn check_account_change(
    c: &crate::store::db::Connection,
    caller: &Caller,
    account: &Account,
) -> Result<(), OpError> {
    caller.check_access(c, account.id, account.domain_id, "the account")?;
    if account.id == caller.account_id {
        return Err(OpError::PermissionDenied(
            "The caller cannot change or delete its own account".into(),
        ));
    }
    if is_default_admin(account) || (account.role == Role::Admin && !caller.is_root_admin()) {
        return Err(OpError::PermissionDenied(format!(
            "Account '{}' does not have permission to change the root admin account",
            caller.account_name
        )));
    }
    Ok(())
}

/// [`check_account_change`] for one user; the caller may not change itself either.
fn check_user_change(
    c: &crate::store::db::Connection,
    caller: &Caller,
    user: &User,
) -> Result<(), OpError> {
    if user.id == caller.user_id {
        return Err(OpError::PermissionDenied(
            "The caller cannot change or delete its own user".into(),
        ));
    }
    caller.check_access(c, user.account.id, user.account.domain_id, "the user")?;
    if is_default_admin(&user.account)
        || (user.account.role == Role::Admin && !caller.is_root_admin())
    {
        return Err(OpError::PermissionDenied(format!(
            "Account '{}' does not have permission to change a root admin user",
            caller.account_name
        )));
    }
    Ok(())
}

fn set_account_state(
    tx: &crate::store::db::Connection,
    caller: &Caller,
    account_id: i64,
    state: LifecycleState,
    event: &str,
) -> Result<(Account, Vec<User>), OpError> {
    changeable_account(tx, caller, account_id)?;
    let account = identity::set_account_state(tx, account_id, state)?;
    let text = format!("Account {} {}", account.name, state.as_db());
    events::record(
        tx,
        &NewEvent::completed(caller, event, &text).resource("Account", &account.uuid),
    )?;
    let users = identity::users_of_account(tx, account_id)?;
    end_user_sessions(tx, &user_ids(&users))?;
    Ok((account, users))
}

/// The live account `account_id`, if `caller` may change it.
fn changeable_account(
    c: &crate::store::db::Connection,
    caller: &Caller,
    account_id: i64,
) -> Result<Account, OpError> {
    let account = identity::get_live_account(c, account_id)?;
    check_account_change(c, caller, &account)?;
    Ok(account)
}

fn user_ids(users: &[User]) -> Vec<i64> {
    users.iter().map(|u| u.id).collect()
}

/// `disableAccount`: checked before the job exists, the change made in the job (as CloudStack).
async fn account_state_job(
    ctx: Ctx,
    state: LifecycleState,
    event: &'static str,
) -> Result<AsyncStart, ApiError> {
    let account_id = target_account(&ctx).await?;
    let caller = ctx.caller.clone();
    let store = ctx.state.store().clone();
    let c2 = caller.clone();
    let account = store
        .read(move |c| changeable_account(c, &c2, account_id))
        .await?;
    let uuid = account.uuid.clone();
    Ok(AsyncStart::new(async move {
        let (account, users) = store
            .write(move |tx| set_account_state(tx, &caller, account_id, state, event))
            .await?;
        Ok(ApiResult::Object(account_obj(&account, &users)))
    })
    .instance("Account", &uuid))
}

/// Accounts and users are listed over the caller's whole visible scope by default (CloudStack
/// does so for admins listing accounts), narrowed by `account`/`domainid`.
fn account_list_scope(
    c: &crate::store::db::Connection,
    caller: &identity::Caller,
    sp: &identity::ScopeParams,
) -> Result<ListScope, OpError> {
    let mut sp = sp.clone();
    if caller.role != Role::User {
        sp.listall = true;
    }
    ListScope::resolve(c, caller, &sp)
}

pub fn domain_obj(d: &Domain) -> Obj {
    Obj::new()
        .str("id", &d.uuid)
        .str("name", &d.name)
        .int("level", d.level() as i64)
        .opt_str("parentdomainid", d.parent_uuid.clone())
        .opt_str("parentdomainname", d.parent_name.clone())
        .bool("haschild", d.has_child)
        .str("path", d.display_path())
        .str("state", "Active")
}

fn domain_display_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        "ROOT".to_string()
    } else {
        format!("ROOT/{trimmed}")
    }
}

pub fn account_obj(a: &Account, users: &[User]) -> Obj {
    Obj::new()
        .str("id", &a.uuid)
        .str("name", &a.name)
        .int("accounttype", a.role.account_type())
        .str("roletype", a.role.role_type())
        .str("rolename", a.role.role_type())
        .str("domainid", &a.domain_uuid)
        .str("domain", &a.domain_name)
        .str("domainpath", domain_display_path(&a.domain_path))
        .str("state", a.state.clone())
        .str("created", format_date(a.created))
        .bool("isdefault", a.name == "admin" && a.domain_path == "/")
        .objs("user", users.iter().map(user_obj).collect())
}

pub fn user_obj(u: &User) -> Obj {
    Obj::new()
        .str("id", &u.uuid)
        .str("username", &u.username)
        .opt_str("firstname", u.firstname.clone())
        .opt_str("lastname", u.lastname.clone())
        .opt_str("email", u.email.clone())
        .str("accountid", &u.account.uuid)
        .str("account", &u.account.name)
        .int("accounttype", u.account.role.account_type())
        .str("roletype", u.account.role.role_type())
        .str("domainid", &u.account.domain_uuid)
        .str("domain", &u.account.domain_name)
        .str("state", u.state.clone())
        .date("created", u.created)
        .opt_str("apikey", u.api_key.clone())
}
