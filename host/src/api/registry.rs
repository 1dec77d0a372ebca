//! The command registry: the extension point of the API layer.
//!
//! A command declares its name, metadata, allowed roles, response object name, parameters and a
//! handler. The pipeline authenticates, checks the role, binds and validates every declared
//! parameter (431 before the handler runs or a job exists), then calls the handler with a
//! [`Ctx`]. See `docs/api.md` for a walk-through.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::ApiState;
use super::error::ApiError;
use super::render::{ApiResult, Obj};
use crate::identity::{Caller, Role, ScopeParams};
use crate::jobs::JobTicket;
use crate::store::query::Page;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub type SyncHandler = Arc<dyn Fn(Ctx) -> BoxFuture<Result<ApiResult, ApiError>> + Send + Sync>;
pub type AsyncHandler = Arc<dyn Fn(Ctx) -> BoxFuture<Result<AsyncStart, ApiError>> + Send + Sync>;

/// CloudStack's default page size (`default.page.size`).
pub const DEFAULT_PAGE_SIZE: u64 = 500;
/// Largest page size accepted (bounds the work of one request).
pub const MAX_PAGE_SIZE: u64 = 10_000;
/// Longest parameter value accepted when a parameter declares no length.
pub const DEFAULT_PARAM_LENGTH: usize = 255;
/// Longest value for `map` / `list` parameters (they carry several values).
pub const COLLECTION_PARAM_LENGTH: usize = 65_535;
/// Most entries accepted in one `map` parameter.
pub const MAX_MAP_ENTRIES: usize = 100;

pub const ALL_ROLES: &[Role] = &[Role::Admin, Role::DomainAdmin, Role::User];
pub const ADMIN_ONLY: &[Role] = &[Role::Admin];
pub const ADMINS: &[Role] = &[Role::Admin, Role::DomainAdmin];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A UUID that must name a row of `Entity::table` (→ `Ctx::id`).
    Uuid(Entity),
    String,
    Boolean,
    Integer,
    Long,
    /// `yyyy-MM-dd`, `yyyy-MM-dd HH:mm:ss`, or ISO with offset (→ Unix seconds).
    Date,
    /// `name[i].field=value` (→ one map per index, ordered by index).
    Map,
    /// Comma-separated values.
    List,
}

impl ParamType {
    /// The `type` string listApis reports.
    pub fn api_name(&self) -> &'static str {
        match self {
            ParamType::Uuid(_) => "uuid",
            ParamType::String => "string",
            ParamType::Boolean => "boolean",
            ParamType::Integer => "integer",
            ParamType::Long => "long",
            ParamType::Date => "date",
            ParamType::Map => "map",
            ParamType::List => "list",
        }
    }
}

/// The table a UUID parameter must exist in. Existence is checked including soft-deleted rows
/// (CloudStack's `findByUuidIncludingRemoved`); handlers decide what removed means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    /// Table name with `id` and `uuid` columns; a `&'static str` from code, never user input.
    pub table: &'static str,
}

impl Entity {
    pub const fn table(table: &'static str) -> Entity {
        Entity { table }
    }
    pub const ZONE: Entity = Entity::table("zones");
    pub const DOMAIN: Entity = Entity::table("domains");
    pub const ACCOUNT: Entity = Entity::table("accounts");
    pub const USER: Entity = Entity::table("users");
    pub const VM: Entity = Entity::table("vms");
    pub const VOLUME: Entity = Entity::table("volumes");
    pub const SERVICE_OFFERING: Entity = Entity::table("service_offerings");
    pub const DISK_OFFERING: Entity = Entity::table("disk_offerings");
    pub const TEMPLATE: Entity = Entity::table("templates");
    pub const JOB: Entity = Entity::table("async_jobs");
    pub const EVENT: Entity = Entity::table("events");
}

#[derive(Debug, Clone)]
pub struct Param {
    /// Lower-case name.
    pub name: String,
    pub ty: ParamType,
    pub required: bool,
    pub length: usize,
    pub description: String,
    /// Comma-separated command names that produce this value (listApis `related`).
    pub related: String,
    pub since: Option<String>,
}

impl Param {
    pub fn new(name: &str, ty: ParamType) -> Param {
        Param {
            name: name.to_lowercase(),
            ty,
            required: false,
            length: match ty {
                ParamType::Map | ParamType::List => COLLECTION_PARAM_LENGTH,
                _ => DEFAULT_PARAM_LENGTH,
            },
            description: String::new(),
            related: String::new(),
            since: None,
        }
    }
    pub fn uuid(name: &str, entity: Entity) -> Param {
        Param::new(name, ParamType::Uuid(entity))
    }
    pub fn string(name: &str) -> Param {
        Param::new(name, ParamType::String)
    }
    pub fn boolean(name: &str) -> Param {
        Param::new(name, ParamType::Boolean)
    }
    pub fn integer(name: &str) -> Param {
        Param::new(name, ParamType::Integer)
    }
    pub fn long(name: &str) -> Param {
        Param::new(name, ParamType::Long)
    }
    pub fn date(name: &str) -> Param {
        Param::new(name, ParamType::Date)
    }
    pub fn map(name: &str) -> Param {
        Param::new(name, ParamType::Map)
    }
    pub fn list(name: &str) -> Param {
        Param::new(name, ParamType::List)
    }
    pub fn required(mut self) -> Param {
        self.required = true;
        self
    }
    pub fn desc(mut self, d: &str) -> Param {
        self.description = d.to_string();
        self
    }
    pub fn related(mut self, r: &str) -> Param {
        self.related = r.to_string();
        self
    }
    pub fn length(mut self, n: usize) -> Param {
        self.length = n;
        self
    }
    pub fn since(mut self, v: &str) -> Param {
        self.since = Some(v.to_string());
        self
    }
}

/// A response field, for listApis only.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync,
    Async,
    /// Async and the first answer carries the new entity's `id` with the `jobid`.
    AsyncCreate,
}

#[derive(Clone)]
pub enum Handler {
    Sync(SyncHandler),
    Async(AsyncHandler),
}

/// What an async handler returns after its synchronous phase (validation, access checks and, for
/// create-style commands, creating the entity): the work the job runs.
pub struct AsyncStart {
    /// Create-style commands: uuid of the entity created before the job (answered as `id`).
    pub id: Option<String>,
    /// CloudStack instance type shown as `jobinstancetype` (e.g. `VirtualMachine`).
    pub instance_type: Option<String>,
    pub instance_uuid: Option<String>,
    /// The job, when the synchronous phase recorded it with its own change ([`Ctx::job`]).
    pub job_uuid: Option<String>,
    pub work: BoxFuture<Result<ApiResult, ApiError>>,
    /// What `work` answers for a result its last write holds (see [`crate::jobs::OutcomeSeal`]).
    pub outcome_of: Option<AnswerOf>,
}

/// An async command's answer from its work's result, given as `&dyn Any` (`None`: another type).
pub type AnswerOf = Arc<dyn Fn(&dyn Any) -> Option<Result<ApiResult, ApiError>> + Send + Sync>;

impl AsyncStart {
    pub fn new(work: impl Future<Output = Result<ApiResult, ApiError>> + Send + 'static) -> Self {
        AsyncStart {
            id: None,
            instance_type: None,
            instance_uuid: None,
            job_uuid: None,
            work: Box::pin(work),
            outcome_of: None,
        }
    }
    /// Names the instance the job acts on (`jobinstancetype`/`jobinstanceid`).
    pub fn instance(mut self, instance_type: &str, uuid: &str) -> Self {
        self.instance_type = Some(instance_type.to_string());
        self.instance_uuid = Some(uuid.to_string());
        self
    }
    /// For create-style commands: the new entity's uuid (also the job instance).
    pub fn created(mut self, instance_type: &str, uuid: &str) -> Self {
        self.id = Some(uuid.to_string());
        self.instance(instance_type, uuid)
    }
}

#[derive(Clone)]
pub struct Command {
    pub name: String,
    pub description: String,
    pub since: String,
    pub kind: Kind,
    pub roles: &'static [Role],
    /// Object name of a single result and item key of a list (`virtualmachine`, `zone`, …).
    pub object_name: String,
    pub related: String,
    pub params: Vec<Param>,
    pub fields: Vec<Field>,
    pub handler: Option<Handler>,
    /// The answer depends only on the caller, the parameters and the store's rows, so it may be
    /// served again while no row changed (see [`super::answers`]).
    pub answers_from_store: bool,
    /// `<command lower-cased>response`, the envelope's name.
    pub response_name: String,
    /// Its request counter for status 200 (metrics on), resolved on first use: the hot path
    /// counts without building and hashing a label set.
    pub answered_ok: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

impl Command {
    fn base(name: &str, kind: Kind) -> Command {
        Command {
            name: name.to_string(),
            description: String::new(),
            since: String::new(),
            kind,
            roles: ADMIN_ONLY,
            object_name: String::new(),
            related: String::new(),
            params: Vec::new(),
            fields: Vec::new(),
            handler: None,
            answers_from_store: false,
            response_name: super::render::response_name(name),
            answered_ok: std::sync::OnceLock::new(),
        }
    }
    /// A synchronous command. Defaults: root admin only (deny by default), no params.
    pub fn sync(name: &str) -> Command {
        Command::base(name, Kind::Sync)
    }
    /// An asynchronous command (answers `{jobid}`).
    pub fn asynchronous(name: &str) -> Command {
        Command::base(name, Kind::Async)
    }
    /// An asynchronous create-style command (answers `{jobid, id}`).
    pub fn async_create(name: &str) -> Command {
        Command::base(name, Kind::AsyncCreate)
    }
    pub fn describe(mut self, d: &str) -> Self {
        self.description = d.to_string();
        self
    }
    pub fn since(mut self, v: &str) -> Self {
        self.since = v.to_string();
        self
    }
    pub fn roles(mut self, roles: &'static [Role]) -> Self {
        self.roles = roles;
        self
    }
    pub fn object(mut self, name: &str) -> Self {
        self.object_name = name.to_string();
        self
    }
    pub fn related(mut self, r: &str) -> Self {
        self.related = r.to_string();
        self
    }
    pub fn param(mut self, p: Param) -> Self {
        self.params.push(p);
        self
    }
    /// Adds `keyword`, `page`, `pagesize`.
    pub fn list_params(self) -> Self {
        self.param(Param::string("keyword").desc("List by keyword"))
            .param(Param::integer("page").desc("The page number"))
            .param(Param::integer("pagesize").desc("The number of entries per page; -1 for all"))
    }
    /// Adds `account`, `domainid`, `listall`, `isrecursive`, `projectid` (account-scoped lists).
    pub fn scope_params(self) -> Self {
        self.param(Param::string("account").desc("List resources by account. Must be used with the domainId parameter."))
            .param(Param::uuid("domainid", Entity::DOMAIN).desc("List only resources belonging to the domain specified").related("listDomains"))
            .param(Param::boolean("listall").desc("If set to false, list only resources belonging to the command's caller; if set to true - list resources that the caller is authorized to see. Default value is false"))
            .param(Param::boolean("isrecursive").desc("Defaults to false, but if true, lists all resources from the parent specified by the domainId till leaves."))
            .param(Param::string("projectid").desc("List objects by project; accepted and ignored (no projects)"))
    }
    /// Declares a response field (listApis `response`).
    pub fn field(mut self, name: &str, ty: &str, description: &str) -> Self {
        self.fields.push(Field {
            name: name.to_string(),
            ty: ty.to_string(),
            description: description.to_string(),
        });
        self
    }
    /// Declares that the answer of this read-only command depends only on the caller, its
    /// parameters and the rows of the store (nothing in memory, no clock, no provider), so a
    /// rendered answer may be served again while no row has changed (see [`super::answers`]).
    pub fn answers_from_store(mut self) -> Self {
        self.answers_from_store = true;
        self
    }
    /// Sets the handler of a sync command.
    pub fn handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResult, ApiError>> + Send + 'static,
    {
        self.handler = Some(Handler::Sync(Arc::new(move |ctx| Box::pin(f(ctx)))));
        self
    }
    /// Sets the handler of an async command: it runs the synchronous phase and returns the work.
    pub fn async_handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AsyncStart, ApiError>> + Send + 'static,
    {
        self.handler = Some(Handler::Async(Arc::new(move |ctx| Box::pin(f(ctx)))));
        self
    }

    pub fn is_async(&self) -> bool {
        self.kind != Kind::Sync
    }
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
    pub fn param_named(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("command {0} is registered twice")]
    Duplicate(String),
    #[error("command {0} has no handler")]
    NoHandler(String),
    #[error("command {0}: handler kind does not match the command kind")]
    HandlerKind(String),
    #[error("command {0} declares parameter {1} twice")]
    DuplicateParam(String, String),
    #[error("command {0} has no response object name")]
    NoObjectName(String),
}

/// All commands, looked up by exact name (CloudStack command names are case-sensitive).
#[derive(Clone, Default)]
pub struct Registry {
    commands: HashMap<String, Arc<Command>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a command after checking it is complete and consistent.
    pub fn register(&mut self, c: Command) -> Result<(), RegistryError> {
        match (&c.handler, c.kind) {
            (None, _) => return Err(RegistryError::NoHandler(c.name)),
            (Some(Handler::Sync(_)), Kind::Async | Kind::AsyncCreate)
            | (Some(Handler::Async(_)), Kind::Sync) => {
                return Err(RegistryError::HandlerKind(c.name));
            }
            _ => {}
        }
        if c.object_name.is_empty() {
            return Err(RegistryError::NoObjectName(c.name));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &c.params {
            if !seen.insert(p.name.as_str()) {
                return Err(RegistryError::DuplicateParam(
                    c.name.clone(),
                    p.name.clone(),
                ));
            }
        }
        if self.commands.contains_key(&c.name) {
            return Err(RegistryError::Duplicate(c.name));
        }
        self.commands.insert(c.name.clone(), Arc::new(c));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Command>> {
        self.commands.get(name)
    }

    /// Commands sorted by name.
    pub fn all(&self) -> Vec<&Arc<Command>> {
        let mut v: Vec<_> = self.commands.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// A bound parameter value (validated against its declaration).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    /// The uuid as given and the internal id of the row it names.
    Uuid {
        uuid: String,
        id: i64,
    },
    Date(i64),
    Map(Vec<BTreeMap<String, String>>),
    List(Vec<String>),
}

/// Everything a handler gets: the shared state, the authenticated caller, and the bound params.
#[derive(Clone)]
pub struct Ctx {
    pub state: ApiState,
    pub caller: Caller,
    pub command: Arc<Command>,
    pub(crate) values: HashMap<String, Value>,
    /// A raw request body sent as `application/wasm` or `application/octet-stream` (a
    /// provider component upload); parameters then come from the query string.
    pub upload: Option<bytes::Bytes>,
    /// Async commands: the job, for a synchronous phase that writes to record it in the same
    /// transaction ([`AsyncStart::job_uuid`]). Otherwise the pipeline records it afterwards.
    pub job: Option<JobTicket>,
}

impl Ctx {
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name)? {
            Value::Str(s) => Some(s),
            Value::Uuid { uuid, .. } => Some(uuid),
            _ => None,
        }
    }
    /// A required string parameter (present after binding; this avoids unwraps in handlers).
    pub fn req_str(&self, name: &str) -> Result<&str, ApiError> {
        self.str(name)
            .ok_or_else(|| ApiError::missing_param(&self.command.name, name))
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        self.bool(name).unwrap_or(default)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// Internal id of the row a uuid parameter names.
    pub fn id(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            Value::Uuid { id, .. } => Some(*id),
            _ => None,
        }
    }
    pub fn req_id(&self, name: &str) -> Result<i64, ApiError> {
        self.id(name)
            .ok_or_else(|| ApiError::missing_param(&self.command.name, name))
    }
    pub fn uuid(&self, name: &str) -> Option<&str> {
        match self.values.get(name)? {
            Value::Uuid { uuid, .. } => Some(uuid),
            _ => None,
        }
    }
    pub fn date(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            Value::Date(d) => Some(*d),
            _ => None,
        }
    }
    pub fn map(&self, name: &str) -> Option<&[BTreeMap<String, String>]> {
        match self.values.get(name)? {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn list(&self, name: &str) -> Option<&[String]> {
        match self.values.get(name)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// `page` / `pagesize` (validated while binding: page ≥ 1, pagesize ≥ 1 or -1).
    pub fn page(&self) -> Page {
        let size = match self.int("pagesize") {
            Some(-1) => None,
            Some(n) => Some(n as u64),
            None => Some(DEFAULT_PAGE_SIZE),
        };
        Page {
            page: self.int("page").map(|p| p as u64).unwrap_or(1),
            size,
        }
    }
    pub fn keyword(&self) -> Option<&str> {
        self.str("keyword")
    }
    /// `listall` / `account` / `domainid` / `isrecursive` for `ListScope::resolve`.
    pub fn scope_params(&self) -> ScopeParams {
        ScopeParams {
            listall: self.bool_or("listall", false),
            account: self.str("account").map(str::to_string),
            domain_id: self.id("domainid"),
            isrecursive: self.bool_or("isrecursive", false),
        }
    }
    /// Renders one object (sync `Object` result).
    pub fn object(&self, o: Obj) -> ApiResult {
        ApiResult::Object(o)
    }
}
