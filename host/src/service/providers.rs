//! Provider plumbing: the process-wide runtime, the catalog of installed providers, the zone →
//! provider registry kept in sync with `backup.framework.provider.plugin`, the zone gate
//! (spec §3.1), provider-declared settings, and the per-call `CallContext`.
//!
//! Hot swap: a call takes its own `Arc<Provider>` and finishes on it; changing a zone's plugin
//! setting (or installing a new build of a provider) only affects calls that start afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use crate::store::db::OptionalExtension;
use anyhow::Context;

use super::error::{BackupError, BackupResult};
use super::plugin_replicas::{
    Member, installed_rows, load_installed_row, wait_until_loaded_everywhere,
};
use crate::config::{BACKUP_FRAMEWORK_ENABLED, BACKUP_PROVIDER_PLUGIN, Definition, Kind, Settings};
use crate::plugins::{Component, Components, Origin, PluginFiles, bundled};
use crate::store::events::{self, Level, NewEvent, State};
use crate::store::{OpError, Store, StoreError};
use bnr_runtime::types::SettingKind;
use bnr_runtime::{
    CallContext, Catalog, Grants, HypervisorHost, Provider, Runtime, RuntimeConfig, SshConnection,
    SshGrant, ZoneRegistry,
};
use bnr_runtime::{CallError, LoadError};

/// Event type of a backup provider component that was refused at start-up.
pub const PROVIDER_LOAD_EVENT: &str = "BACKUP.PROVIDER.LOAD";

/// Event type of a provider failure's operator detail (a guest's panic text).
pub const PROVIDER_FAILURE_EVENT: &str = "BACKUP.PROVIDER.FAILURE";

/// Records an event owned by the first root-admin account (what the operator sees in
/// `listEvents`); without such an account there is only the log line.
fn record_admin_event(store: &Store, level: Level, description: &str) {
    record_admin_event_as(store, PROVIDER_LOAD_EVENT, level, description)
}

pub(super) fn record_admin_event_as(
    store: &Store,
    event_type: &str,
    level: Level,
    description: &str,
) {
    let recorded = store.write_blocking(|tx| {
        let admin: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, domain_id FROM accounts WHERE role = 'admin' AND removed IS NULL
                 ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((account_id, domain_id)) = admin {
            events::record(
                tx,
                &NewEvent {
                    event_type,
                    level,
                    state: State::Completed,
                    description,
                    account_id,
                    domain_id,
                    user_id: None,
                    resource_type: None,
                    resource_uuid: None,
                },
            )?;
        }
        Ok::<_, OpError>(())
    });
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record a provider event");
    }
}

/// Zone setting: extra destinations the operator grants the zone's provider, comma-separated
/// (`host[:port]` or a URL for HTTP, `exec:HOST` for remote execution). Each only takes effect
/// for a kind of need the provider declared.
pub const BACKUP_PROVIDER_GRANTS: &str = "backup.framework.provider.grants";
/// Global setting: how long a provider operation left pending may run before bnr cancels it.
/// At its default, each kind of operation has its own deadline
/// ([`super::operations::OperationKind::default_deadline_secs`]); set to another value, it is
/// the deadline of every kind.
pub const BACKUP_OPERATION_TIMEOUT: &str = "backup.framework.operation.timeout";
/// Default of [`BACKUP_OPERATION_TIMEOUT`]: a day covers full backups of large instances.
pub const DEFAULT_OPERATION_TIMEOUT_SECS: i64 = 86_400;
/// Global setting: deadlines per provider and kind, which win over the others:
/// `provider:kind=seconds` or `provider:*=seconds`, comma-separated.
pub const BACKUP_OPERATION_TIMEOUTS: &str = "backup.framework.operation.timeouts";

/// The B&R settings the service adds to the core ones.
pub fn service_definitions() -> Vec<Definition> {
    vec![
        Definition::new(
            BACKUP_PROVIDER_GRANTS,
            Kind::String,
            "",
            "Extra destinations granted to the zone's backup provider, comma-separated: host[:port] or URL for HTTP, exec:HOST for remote execution. Only kinds the provider declared are granted.",
        )
        .zone_scoped(),
        Definition::new(
            BACKUP_OPERATION_TIMEOUT,
            Kind::Integer,
            &DEFAULT_OPERATION_TIMEOUT_SECS.to_string(),
            "Seconds a backup provider operation may stay pending before it is cancelled and failed. At the default each kind has its own deadline (backup and restore 86400, restore-volume 21600, delete 3600); another value applies to every kind.",
        ),
        Definition::new(
            BACKUP_OPERATION_TIMEOUTS,
            Kind::String,
            "",
            "Deadlines of pending provider operations per provider, comma-separated provider:kind=seconds (kind: backup, delete, restore, restore-volume, or * for every kind); they win over backup.framework.operation.timeout.",
        ),
    ]
}

/// Where the installed providers come from.
pub enum ProviderSource {
    /// The providers compiled into the binary, plus every `*.wasm` file of `providers_dir`
    /// (a missing directory adds none), on the process's runtime (created on first use, caching
    /// compiled code in `cache_dir`).
    Directory {
        providers_dir: PathBuf,
        cache_dir: PathBuf,
    },
    /// Providers already loaded (tests and benchmarks share one runtime across servers).
    Loaded {
        runtime: Option<Arc<Runtime>>,
        catalog: Arc<Catalog>,
    },
}

/// How components installed through the API are stored and admitted.
#[derive(Debug, Clone, Default)]
pub struct PluginPolicy {
    /// Data directory whose `plugins/` holds installed components; `None`: installing is off.
    pub data_dir: Option<PathBuf>,
    /// Accept unsigned uploads (`bnr serve --allow-unsigned-plugins`, development only).
    pub allow_unsigned: bool,
    /// Where `addBackupProviderPlugin file=…` reads components from.
    pub providers_dir: Option<PathBuf>,
}

pub struct Providers {
    runtime: Option<Arc<Runtime>>,
    /// Provider name → the component serving new calls.
    catalog: Arc<Catalog>,
    /// Every loaded component (all versions), by sha256.
    pub(super) components: Components,
    pub(super) files: Option<PluginFiles>,
    pub(super) allow_unsigned: bool,
    /// Where `addBackupProviderPlugin file=…` reads from (`--providers-dir`).
    providers_dir: Option<PathBuf>,
    /// Serialises install, upgrade, rollback and delete.
    pub(super) lifecycle_lock: tokio::sync::Mutex<()>,
    zones: ZoneRegistry,
    /// Grants given through `updateBackupProviderGrants`: (zone id, provider name) → entries in
    /// normal form. Mirrors `provider_zone_grants`; read on every call, so kept in memory.
    pub(super) api_grants: Arc<ApiGrants>,
    settings: Settings,
    store: Store,
    /// Set when this process is one replica of several: zone switches then wait for every
    /// live replica to have loaded the component (see `plugin_replicas`).
    pub(super) member: Arc<std::sync::OnceLock<Member>>,
    /// Installed components this replica refused to load (not retried at every change).
    pub(super) refused: parking_lot::Mutex<std::collections::HashSet<String>>,
}

type SharedRuntime = (Arc<Runtime>, Vec<Arc<Provider>>);

/// The process's runtime and its bundled providers, made once: `bnr serve` has one server per
/// process, and test processes that start many servers compile the bundled components once.
fn shared_runtime(cache_dir: PathBuf) -> anyhow::Result<SharedRuntime> {
    static SHARED: parking_lot::Mutex<Option<SharedRuntime>> = parking_lot::Mutex::new(None);
    let mut shared = SHARED.lock();
    if let Some((rt, loaded)) = shared.as_ref() {
        return Ok((rt.clone(), loaded.clone()));
    }
    let config = RuntimeConfig {
        observer: Some(Arc::new(crate::metrics::RuntimeHooks)),
        ..RuntimeConfig::new(cache_dir)
    };
    let rt = Runtime::new(config).context("starting the provider runtime")?;
    let mut loaded = Vec::new();
    for component in bundled::BUNDLED {
        match rt.load_bytes(component.wasm) {
            Ok(p) if p.sha256() == component.sha256 => loaded.push(p),
            Ok(p) => tracing::error!(
                file = component.file,
                sha256 = p.sha256(),
                expected = component.sha256,
                "bundled provider does not match the digest recorded at build time; not loaded"
            ),
            Err(e) => {
                tracing::error!(file = component.file, error = %e, "bundled provider not loaded")
            }
        }
    }
    *shared = Some((rt.clone(), loaded.clone()));
    Ok((rt, loaded))
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("installed", &self.names())
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// Loads the providers, registers their settings, installs the plugin-name check and fills
    /// the zone registry. Blocking (compiles components); call it off the async executor.
    pub fn load(
        store: Store,
        settings: Settings,
        source: ProviderSource,
        policy: PluginPolicy,
    ) -> anyhow::Result<Providers> {
        for def in service_definitions() {
            settings.register(def)?;
        }
        let components = Components::new();
        let (runtime, catalog) = match source {
            ProviderSource::Loaded { runtime, catalog } => {
                for provider in catalog.list() {
                    components.insert(Component {
                        provider,
                        origin: Origin::Directory(PathBuf::from("(preloaded)")),
                    });
                }
                (runtime, catalog)
            }
            ProviderSource::Directory {
                providers_dir,
                cache_dir,
            } => {
                let (rt, bundled) = shared_runtime(cache_dir)?;
                for provider in bundled {
                    tracing::info!(
                        provider = provider.name(),
                        version = provider.version(),
                        sha256 = provider.sha256(),
                        "bundled backup provider ready"
                    );
                    components.insert(Component {
                        provider,
                        origin: Origin::Bundled,
                    });
                }
                if providers_dir.is_dir() {
                    load_directory(&store, &rt, &providers_dir, &components);
                } else {
                    tracing::info!(
                        dir = %providers_dir.display(),
                        "no providers directory; serving the bundled providers"
                    );
                }
                (Some(rt), Arc::new(Catalog::new()))
            }
        };
        let files = policy.data_dir.as_deref().map(PluginFiles::new);
        if let (Some(rt), Some(files)) = (&runtime, &files) {
            load_installed(&store, rt, files, &components, policy.allow_unsigned)?;
        }
        choose_active(&store, &components, &catalog)?;
        let api_grants = load_api_grants(&store)?;
        let this = Providers {
            runtime,
            catalog,
            components,
            files,
            allow_unsigned: policy.allow_unsigned,
            providers_dir: policy.providers_dir,
            lifecycle_lock: tokio::sync::Mutex::new(()),
            zones: ZoneRegistry::new(),
            api_grants: Arc::new(parking_lot::RwLock::new(api_grants)),
            settings,
            store,
            member: Arc::new(std::sync::OnceLock::new()),
            refused: parking_lot::Mutex::new(Default::default()),
        };
        this.register_provider_settings();
        this.install_plugin_check();
        this.install_timeouts_check();
        this.sync_all_blocking()?;
        Ok(this)
    }

    /// Each provider's declared settings become zone-scoped settings (secret ones flagged). A
    /// provider whose setting clashes with an existing definition is uninstalled, with the reason.
    fn register_provider_settings(&self) {
        for provider in self.catalog.list() {
            if let Err((name, e)) = self.register_settings_of(&provider) {
                tracing::warn!(
                    provider = provider.name(),
                    setting = %name,
                    reason = %e,
                    "backup provider skipped: its setting clashes with an existing one"
                );
                self.catalog.remove(provider.name());
            }
        }
        // Other versions: a setting another version of the same provider defined already
        // keeps that definition (the active version's, registered first).
        for component in self.components.list() {
            let _ = self.register_settings_of(&component.provider);
        }
    }

    /// Registers `provider`'s declared settings as zone-scoped settings; the first clash.
    pub(super) fn register_settings_of(
        &self,
        provider: &Provider,
    ) -> Result<(), (String, OpError)> {
        let clash = provider
            .info()
            .settings
            .iter()
            .map(setting_definition)
            .filter_map(|def| {
                let name = def.name.clone();
                self.settings.register(def).err().map(|e| (name, e))
            })
            .next();
        clash.map_or(Ok(()), Err)
    }

    /// `updateConfiguration` of the per-provider deadlines must parse (431).
    fn install_timeouts_check(&self) {
        self.settings.add_validator(
            BACKUP_OPERATION_TIMEOUTS,
            Arc::new(|value, _zone| {
                super::operations::parse_timeouts(value)
                    .map(|_| ())
                    .map_err(|e| {
                        OpError::InvalidParameter(format!(
                            "Invalid value for {BACKUP_OPERATION_TIMEOUTS}: {e}"
                        ))
                    })
            }),
        );
    }

    /// `updateConfiguration` of the plugin setting must name an installed provider (431) whose
    /// needs that no setting covers every zone it would serve grants (530, with an event).
    fn install_plugin_check(&self) {
        let catalog = Arc::downgrade(&self.catalog);
        let settings = self.settings.downgrade();
        let api_grants = self.api_grants.clone();
        let store = self.store.clone();
        let member = self.member.clone();
        self.settings.add_validator(
            BACKUP_PROVIDER_PLUGIN,
            Arc::new(move |value, zone| {
                let catalog = catalog.upgrade();
                let installed: Vec<String> = catalog
                    .as_ref()
                    .map(|c| c.list().iter().map(|p| p.name().to_string()).collect())
                    .unwrap_or_default();
                let wanted = value.trim().to_lowercase();
                if let (Some(catalog), Some(settings)) = (&catalog, settings.upgrade())
                    && let Some(provider) = catalog.get(&wanted)
                {
                    check_zone_switch(&store, &settings, &api_grants, &provider, zone)?;
                    let what = format!("Backup provider {} {}", provider.name(), provider.version());
                    wait_until_loaded_everywhere(&store, member.get().copied(), &what, provider.sha256())
                        .map_err(OpError::InvalidState)
                } else if installed.contains(&wanted) {
                    Ok(())
                } else {
                    Err(OpError::InvalidParameter(format!(
                        "Invalid value for {BACKUP_PROVIDER_PLUGIN}: backup provider '{value}' is not installed (installed: {})",
                        if installed.is_empty() {
                            "none".to_string()
                        } else {
                            installed.join(", ")
                        }
                    )))
                }
            }),
        );
    }

    /// When a failed call carries detail users are not shown (a guest's panic text, already
    /// cleaned at the runtime's text boundary), records it in an admin-owned event.
    pub async fn record_failure_detail(&self, provider: &str, err: &CallError) {
        let detail = err.detail();
        if detail == err.to_string() {
            return;
        }
        let store = self.store.clone();
        let text = format!("Backup provider {provider} failed: {detail}");
        let recorded = tokio::task::spawn_blocking(move || {
            record_admin_event_as(&store, PROVIDER_FAILURE_EVENT, Level::Error, &text)
        })
        .await;
        if recorded.is_err() {
            tracing::warn!("cannot record a provider failure event");
        }
    }

    /// The providers directory (`--providers-dir`), if this server has one.
    pub fn providers_dir(&self) -> Option<&std::path::Path> {
        self.providers_dir.as_deref()
    }

    pub(super) fn store_handle(&self) -> Store {
        self.store.clone()
    }

    pub(super) fn settings_handle(&self) -> &Settings {
        &self.settings
    }

    pub fn runtime(&self) -> Option<&Arc<Runtime>> {
        self.runtime.as_ref()
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn zone_registry(&self) -> &ZoneRegistry {
        &self.zones
    }

    /// Names of the installed providers, sorted.
    pub fn names(&self) -> Vec<String> {
        self.catalog
            .list()
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    /// An installed provider by (case-insensitive) name (spec §1.8: offerings keep the name).
    pub fn named(&self, name: &str) -> BackupResult<Arc<Provider>> {
        let wanted = name.trim().to_lowercase();
        if wanted.is_empty() {
            return Err(BackupError::refused(
                "Invalid backup provider name provided",
            ));
        }
        self.catalog.get(&wanted).ok_or_else(|| {
            BackupError::refused(format!(
                "Failed to find backup provider by the name {wanted}"
            ))
        })
    }

    /// The zone's current provider (its `backup.framework.provider.plugin`). The registry entry
    /// is refreshed when the setting or the installed build changed since it was set.
    pub fn for_zone(&self, zone_id: i64, zone_uuid: &str) -> BackupResult<Arc<Provider>> {
        let name = self
            .settings
            .get(BACKUP_PROVIDER_PLUGIN, Some(zone_id))
            .unwrap_or_default();
        let installed = self.named(&name)?;
        match self.zones.get(zone_uuid) {
            Some(current) if Arc::ptr_eq(&current, &installed) => Ok(current),
            _ => {
                self.zones.set(zone_uuid, installed.clone());
                Ok(installed)
            }
        }
    }

    /// Spec §3.1: global AND zone `backup.framework.enabled`.
    pub fn zone_enabled(&self, zone_id: i64) -> bool {
        self.settings.get_bool(BACKUP_FRAMEWORK_ENABLED, None)
            && self
                .settings
                .get_bool(BACKUP_FRAMEWORK_ENABLED, Some(zone_id))
    }

    /// Fails with CloudStack's text when B&R is disabled for the zone.
    pub fn check_zone(&self, zone_id: i64) -> BackupResult<()> {
        if self.zone_enabled(zone_id) {
            Ok(())
        } else {
            Err(BackupError::refused(
                "Backup and Recovery feature is disabled for the zone",
            ))
        }
    }

    /// What one call may see and reach: the zone's values of the settings the provider declared
    /// (unset ones left out so the provider's own default applies) and the derived grants.
    pub fn call_context(
        &self,
        provider: &Provider,
        zone_id: i64,
        zone_uuid: &str,
        instance_host: Option<&str>,
    ) -> CallContext {
        let info = provider.info();
        let settings: HashMap<String, String> = info
            .settings
            .iter()
            .filter_map(|decl| {
                self.settings
                    .get(&decl.name, Some(zone_id))
                    .filter(|v| !v.is_empty())
                    .map(|v| (decl.name.clone(), v))
            })
            .collect();
        let extras = zone_extras(&self.settings, &self.api_grants, zone_id, provider.name());
        let mut grants = Grants::derive(info, &settings, instance_host, &extras);
        let host = instance_host.and_then(|address| self.host_login(address));
        let Some(login) = host else {
            return CallContext::new(zone_uuid, settings, grants);
        };
        // The host of bnr's inventory is reached with the credentials and pinned key bnr keeps
        // for it, and only when the provider declared remote exec on the instance's host.
        if grants.allows_exec(&login.host.address) {
            grants.ssh.retain(|g| g.target != login.host.address);
            grants.ssh.push(SshGrant {
                target: login.host.address.clone(),
                connection: Ok(SshConnection {
                    port: login.host.ssh_port,
                    username: login.username.clone(),
                    password: Some(login.password.clone()),
                    private_key: None,
                    host_keys: login.host.host_keys.clone(),
                    credential_source: format!(
                        "host {} in bnr's inventory (updateHost username/password/hostkeyfingerprint)",
                        login.host.name
                    ),
                }),
            });
        }
        CallContext::new(zone_uuid, settings, grants).with_host(HypervisorHost {
            name: login.host.name,
            address: login.host.address,
            cluster: login.host.cluster_name,
        })
    }

    /// The inventory's host at `address` with its credentials, if it is one of bnr's hosts.
    fn host_login(&self, address: &str) -> Option<crate::inventory::kvm::HostLogin> {
        let secrets = self.store.secrets().clone();
        let found = self
            .store
            .read_now(|c| crate::inventory::kvm::login_by_address(c, &secrets, address));
        match found {
            Ok(login) => login,
            Err(e) => {
                tracing::warn!(host = address, error = %e, "cannot read the host's record");
                None
            }
        }
    }

    /// Points every zone at its configured provider (zones whose provider is not installed are
    /// left out, with a warning).
    pub(super) fn sync_all_blocking(&self) -> Result<(), StoreError> {
        let zones: Vec<(i64, String)> = self.store.read_blocking(|c| {
            let mut st = c.prepare("SELECT id, uuid FROM zones WHERE removed IS NULL")?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<crate::store::db::Result<Vec<_>>>()?;
            Ok::<_, StoreError>(v)
        })?;
        for (id, uuid) in zones {
            self.sync_zone(id, &uuid);
        }
        Ok(())
    }

    fn sync_zone(&self, zone_id: i64, zone_uuid: &str) {
        let before = self.zones.get(zone_uuid);
        match self.for_zone(zone_id, zone_uuid) {
            Ok(now) => {
                if let Some(old) = before.filter(|old| !Arc::ptr_eq(old, &now)) {
                    self.record_swap(zone_uuid, Some(&old), &now);
                }
            }
            Err(e) => {
                if self.zones.remove(zone_uuid).is_some() || self.zone_enabled(zone_id) {
                    tracing::warn!(zone = zone_uuid, reason = %e, "zone has no usable backup provider");
                }
            }
        }
    }

    /// Keeps the zone registry in step with `updateConfiguration` of the plugin setting while
    /// the server runs. The task ends when the service is dropped.
    pub fn watch_settings(self: &Arc<Self>) {
        let mut changes = self.settings.subscribe();
        let this: Weak<Providers> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let change = changes.recv().await;
                let Some(providers) = this.upgrade() else {
                    return;
                };
                match change {
                    Ok(c) if c.name != BACKUP_PROVIDER_PLUGIN => continue,
                    // A zone value or the global default changed, or changes were missed:
                    // re-reading every zone is cheap and always right.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let result =
                    tokio::task::spawn_blocking(move || providers.sync_all_blocking()).await;
                if let Ok(Err(e)) = result {
                    tracing::warn!(error = %e, "cannot refresh the zone provider registry");
                }
            }
        });
    }
}

/// Refuses switching `zone` (or, `None`, every zone that follows the global value) to
/// `provider` when it declares a need no setting covers that such a zone does not grant.
/// Blocking (reads the zones); validators run off the executor.
fn check_zone_switch(
    store: &Store,
    settings: &Settings,
    api_grants: &ApiGrants,
    provider: &Provider,
    zone: Option<i64>,
) -> Result<(), OpError> {
    if bnr_runtime::ungranted_needs(provider.info(), &[]).is_empty() {
        return Ok(());
    }
    let zones: Vec<(i64, String, String)> = store.read_blocking(|c| {
        let mut st =
            c.prepare("SELECT id, uuid, name FROM zones WHERE removed IS NULL ORDER BY id")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<crate::store::db::Result<Vec<_>>>()?;
        Ok::<_, StoreError>(rows)
    })?;
    let affected = zones.into_iter().filter(|(id, _, _)| match zone {
        Some(z) => *id == z,
        None => settings.zone_value(BACKUP_PROVIDER_PLUGIN, *id).is_none(),
    });
    for (id, uuid, name) in affected {
        if let Some(missing) = missing_grants(settings, api_grants, id, provider) {
            let text = format!(
                "Backup provider {} {} (sha256 {}) needs {missing}, which zone {name} ({uuid}) does not grant; grant it with updateBackupProviderGrants first. The zone keeps its provider",
                provider.name(),
                provider.version(),
                provider.sha256()
            );
            tracing::warn!(
                provider = provider.name(),
                version = provider.version(),
                sha256 = provider.sha256(),
                zone = %uuid,
                missing = %missing,
                "zone switch refused: needs not granted"
            );
            record_admin_event_as(store, NEEDS_REFUSED_EVENT, Level::Warn, &text);
            return Err(OpError::InvalidState(text));
        }
    }
    Ok(())
}

/// Event of a switch refused because the zone does not grant the version's needs.
pub(super) const NEEDS_REFUSED_EVENT: &str = "BACKUP.PROVIDER.NEEDS";

/// Grants given through `updateBackupProviderGrants`, by (zone id, provider name).
pub(super) type ApiGrants = parking_lot::RwLock<HashMap<(i64, String), Vec<String>>>;

/// What a zone grants `provider` beyond its settings: the zone setting
/// `backup.framework.provider.grants` and the grants given through the API.
pub(super) fn zone_extras(
    settings: &Settings,
    api_grants: &ApiGrants,
    zone_id: i64,
    provider: &str,
) -> Vec<String> {
    let mut extras = split_grants(
        &settings
            .get(BACKUP_PROVIDER_GRANTS, Some(zone_id))
            .unwrap_or_default(),
    );
    if let Some(given) = api_grants.read().get(&(zone_id, provider.to_string())) {
        extras.extend(given.iter().cloned());
    }
    extras
}

/// Why `provider` may not serve zone `zone_id`: the needs it declares that no setting covers
/// and the zone does not grant (`None`: it may).
pub(super) fn missing_grants(
    settings: &Settings,
    api_grants: &ApiGrants,
    zone_id: i64,
    provider: &Provider,
) -> Option<String> {
    let extras = zone_extras(settings, api_grants, zone_id, provider.name());
    let missing = bnr_runtime::ungranted_needs(provider.info(), &extras);
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The grants given through the API, by (zone id, provider name).
fn load_api_grants(store: &Store) -> Result<HashMap<(i64, String), Vec<String>>, StoreError> {
    store.read_blocking(|c| {
        let mut st = c.prepare("SELECT zone_id, provider, grants FROM provider_zone_grants")?;
        let rows = st
            .query_map([], |r| {
                Ok(((r.get::<i64>(0)?, r.get::<String>(1)?), r.get::<String>(2)?))
            })?
            .collect::<crate::store::db::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|(key, grants)| (key, split_grants(&grants)))
            .collect())
    })
}

/// Comma-separated grant entries, trimmed, blanks left out.
pub(super) fn split_grants(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A provider's setting declaration as a zone-scoped setting definition.
fn setting_definition(decl: &bnr_runtime::types::SettingDecl) -> Definition {
    let default = decl.default_value.clone().unwrap_or_default();
    // Without a default the value starts empty, which only a text setting can hold.
    let kind = match (&decl.kind, decl.default_value.is_some()) {
        (SettingKind::Integer, true) => Kind::Integer,
        (SettingKind::Boolean, true) => Kind::Boolean,
        _ => Kind::String,
    };
    let mut def = Definition::new(&decl.name, kind, &default, &decl.description).zone_scoped();
    if decl.secret || decl.kind == SettingKind::Secret {
        def = def.secret();
    }
    def
}

/// Loads the components of `--providers-dir`. One that claims the name of a bundled provider
/// is refused unless it is the very same component (then it is simply the bundled one).
fn load_directory(
    store: &Store,
    rt: &Arc<Runtime>,
    dir: &std::path::Path,
    components: &Components,
) {
    let scratch = Catalog::new();
    for (path, loaded) in scratch.load_dir(rt, dir) {
        let refused = match loaded {
            Ok(p) => match components.default_for(p.name()) {
                Some(existing) if existing.provider.sha256() == p.sha256() => None,
                Some(existing) if existing.origin == Origin::Bundled => Some((
                    Level::Error,
                    LoadError::NameConflict {
                        name: p.name().to_string(),
                        files: vec![path.display().to_string()],
                        kept: Some(format!(
                            "the bundled {} {}",
                            p.name(),
                            existing.provider.version()
                        )),
                    }
                    .to_string(),
                )),
                _ => {
                    tracing::info!(
                        provider = p.name(),
                        version = p.version(),
                        sha256 = p.sha256(),
                        path = %path.display(),
                        from_cache = p.loaded_from_cache(),
                        "backup provider installed"
                    );
                    components.insert(Component {
                        provider: p,
                        origin: Origin::Directory(path.clone()),
                    });
                    None
                }
            },
            Err(e) => Some((
                match e {
                    LoadError::NameConflict { .. } => Level::Error,
                    _ => Level::Warn,
                },
                e.to_string(),
            )),
        };
        if let Some((level, reason)) = refused {
            tracing::warn!(path = %path.display(), %reason, "backup provider skipped");
            let text = format!(
                "Backup provider component {} was not loaded: {reason}",
                path.display()
            );
            record_admin_event(store, level, &text);
        }
    }
}

/// Loads the components installed through the API (one this data directory lacks is written
/// from the database's copy). One that is missing or changed, or that no longer loads, is
/// skipped with an event; its row stays for the admin to delete.
fn load_installed(
    store: &Store,
    rt: &Arc<Runtime>,
    files: &PluginFiles,
    components: &Components,
    allow_unsigned: bool,
) -> anyhow::Result<()> {
    for row in installed_rows(store)? {
        match load_installed_row(store, rt, files, &row, allow_unsigned) {
            Ok(component) => {
                components.insert(component);
            }
            Err(reason) => {
                let (name, version, sha256) = (&row.name, &row.version, &row.sha256);
                tracing::error!(provider = %name, version = %version, sha256 = %sha256, %reason, "installed backup provider not loaded");
                record_admin_event(
                    store,
                    Level::Error,
                    &format!(
                        "Installed backup provider {name} {version} (sha256 {sha256}) was not loaded: {reason}"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Fills `catalog` with the component serving each provider name: the recorded choice when it
/// is loaded, else the bundled one, else the providers directory's.
fn choose_active(store: &Store, components: &Components, catalog: &Catalog) -> anyhow::Result<()> {
    let chosen: Vec<(String, String)> = store.read_blocking(|c| {
        let mut st = c.prepare("SELECT name, sha256 FROM provider_plugin_active")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<crate::store::db::Result<Vec<_>>>()?;
        Ok::<_, StoreError>(rows)
    })?;
    let mut names: Vec<String> = components
        .list()
        .iter()
        .map(|c| c.provider.name().to_string())
        .collect();
    names.dedup();
    for name in names {
        let recorded = chosen
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, sha)| components.get(sha));
        let active = recorded
            .or_else(|| components.default_for(&name))
            .or_else(|| {
                components
                    .list()
                    .into_iter()
                    .rfind(|c| c.provider.name() == name)
            });
        if let Some(component) = active {
            catalog.insert(component.provider);
        }
    }
    Ok(())
}
