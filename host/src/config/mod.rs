//! Settings ("configurations"): definitions live in code, values in the `configurations` table.
//!
//! Any layer registers its definitions at start-up ([`Settings::register`]; providers declare
//! theirs), reads typed values with zone → global → default fallback, and subscribes to changes
//! ([`Settings::subscribe`]). Values are cached in memory (write-through): change them only via
//! [`Settings::set`] so the cache and the subscribers stay right.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::store::db::{Connection, params};
use parking_lot::RwLock;
use tokio::sync::broadcast;

use crate::store::{OpError, OpResult, Store};

/// Changes buffered per subscriber before a slow one starts missing them (it then re-reads).
const CHANGE_CHANNEL_CAPACITY: usize = 256;
/// Longest value accepted for a setting.
pub const MAX_VALUE_LEN: usize = 4096;

pub const BACKUP_FRAMEWORK_ENABLED: &str = "backup.framework.enabled";
pub const BACKUP_PROVIDER_PLUGIN: &str = "backup.framework.provider.plugin";
pub const BACKUP_SYNC_INTERVAL: &str = "backup.framework.sync.interval";
pub const BACKUP_ATTACH_DETACH_VOLUMES: &str = "backup.enable.attach.detach.of.volumes";
/// Failed logins in a row after which a user is disabled (CloudStack's name and default).
pub const INCORRECT_LOGIN_ATTEMPTS_ALLOWED: &str = "incorrect.login.attempts.allowed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One value for the whole installation.
    Global,
    /// A global value plus optional per-zone overrides.
    Zone,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Zone => "zone",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Integer,
    String,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "Boolean",
            Kind::Integer => "Long",
            Kind::String => "String",
        }
    }
}

/// A setting's definition. Build with [`Definition::new`] and the chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub kind: Kind,
    pub default: String,
    pub description: String,
    pub category: String,
    pub scope: Scope,
    pub dynamic: bool,
    /// Secret values are never returned by the API (shown as `*****`) and never logged.
    pub secret: bool,
}

impl Definition {
    /// Defaults: category `Advanced`, scope global, dynamic, not secret.
    pub fn new(name: &str, kind: Kind, default: &str, description: &str) -> Self {
        Definition {
            name: name.to_string(),
            kind,
            default: default.to_string(),
            description: description.to_string(),
            category: "Advanced".to_string(),
            scope: Scope::Global,
            dynamic: true,
            secret: false,
        }
    }
    pub fn category(mut self, c: &str) -> Self {
        self.category = c.to_string();
        self
    }
    pub fn zone_scoped(mut self) -> Self {
        self.scope = Scope::Zone;
        self
    }
    pub fn non_dynamic(mut self) -> Self {
        self.dynamic = false;
        self
    }
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Checks that `value` fits the definition's type; returns the normalised text.
    pub fn validate(&self, value: &str) -> OpResult<String> {
        if value.len() > MAX_VALUE_LEN {
            return Err(OpError::InvalidParameter(format!(
                "Value of {} is longer than {MAX_VALUE_LEN} characters",
                self.name
            )));
        }
        match self.kind {
            Kind::Boolean => match value.to_ascii_lowercase().as_str() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(OpError::InvalidParameter(format!(
                    "Configuration {} must be true or false",
                    self.name
                ))),
            },
            Kind::Integer => value
                .trim()
                .parse::<i64>()
                .map(|v| v.to_string())
                .map_err(|_| {
                    OpError::InvalidParameter(format!(
                        "Configuration {} must be an integer",
                        self.name
                    ))
                }),
            Kind::String => Ok(value.to_string()),
        }
    }
}

/// The definitions bnr itself needs.
pub fn core_definitions() -> Vec<Definition> {
    vec![
        Definition::new(
            BACKUP_FRAMEWORK_ENABLED,
            Kind::Boolean,
            "false",
            "Is backup and recovery framework enabled.",
        )
        .category("Advanced")
        .zone_scoped()
        .non_dynamic(),
        Definition::new(
            BACKUP_PROVIDER_PLUGIN,
            Kind::String,
            "dummy",
            "The backup and recovery provider plugin.",
        )
        .zone_scoped(),
        Definition::new(
            BACKUP_SYNC_INTERVAL,
            Kind::Integer,
            "300",
            "The backup and recovery background sync task polling interval in seconds.",
        ),
        Definition::new(
            BACKUP_ATTACH_DETACH_VOLUMES,
            Kind::Boolean,
            "false",
            "Enable volume attach/detach operations for VMs that are assigned to Backup Offerings.",
        ),
        Definition::new(
            INCORRECT_LOGIN_ATTEMPTS_ALLOWED,
            Kind::Integer,
            "5",
            "Incorrect login attempts allowed before the user is disabled (0 or less: never).",
        )
        .category("Authentication"),
    ]
}

/// Checks a value before [`Settings::set`] stores it (after the type check): e.g. that a provider
/// name is installed. Arguments: the normalised value and the zone (`None` = global). An error
/// refuses the change; use `OpError::InvalidParameter` for a 431 answer.
pub type Validator = Arc<dyn Fn(&str, Option<i64>) -> OpResult<()> + Send + Sync>;

/// A value changed: `zone_id` is `None` for the global value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub zone_id: Option<i64>,
}

/// A definition with its effective value at one scope (for listConfigurations).
#[derive(Debug, Clone)]
pub struct Effective {
    pub definition: Definition,
    pub value: String,
    pub zone_id: Option<i64>,
}

#[derive(Clone)]
pub struct Settings {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    definitions: RwLock<BTreeMap<String, Definition>>,
    /// (name, zone id or 0 for global) → stored value.
    values: RwLock<HashMap<(String, i64), String>>,
    changes: broadcast::Sender<Change>,
    validators: RwLock<HashMap<String, Vec<Validator>>>,
}

/// A handle on the settings that does not keep them alive: for validators that read other
/// settings (a validator holding [`Settings`] would keep its own registry alive forever).
#[derive(Clone)]
pub struct WeakSettings(std::sync::Weak<Inner>);

impl WeakSettings {
    pub fn upgrade(&self) -> Option<Settings> {
        self.0.upgrade().map(|inner| Settings { inner })
    }
}

impl Settings {
    pub fn downgrade(&self) -> WeakSettings {
        WeakSettings(Arc::downgrade(&self.inner))
    }

    /// The value set for the zone itself (`None`: it follows the global value).
    pub fn zone_value(&self, name: &str, zone_id: i64) -> Option<String> {
        self.inner
            .values
            .read()
            .get(&(name.to_string(), zone_id))
            .cloned()
    }

    /// Re-reads every stored value (a change made by another process sharing the database)
    /// and announces each one that differs from memory as a [`Change`], exactly as if it had been
    /// set here: the provider registry's hot swap and the scheduler follow it. Returns how many
    /// values changed.
    pub fn reload(&self) -> OpResult<usize> {
        let stored = Self::read_values(&self.inner.store)?;
        let changed: Vec<(String, i64)> = {
            let mut values = self.inner.values.write();
            let mut changed: Vec<(String, i64)> = stored
                .iter()
                .filter(|(k, v)| values.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            changed.extend(values.keys().filter(|k| !stored.contains_key(*k)).cloned());
            *values = stored;
            changed
        };
        for (name, scope_id) in &changed {
            tracing::info!(name = %name, zone_id = ?(*scope_id != 0).then_some(*scope_id),
                "setting changed by another replica");
            let _ = self.inner.changes.send(Change {
                name: name.clone(),
                zone_id: (*scope_id != 0).then_some(*scope_id),
            });
        }
        Ok(changed.len())
    }

    /// Every stored value, secrets opened: (name, zone id or 0) → value.
    fn read_values(store: &Store) -> OpResult<HashMap<(String, i64), String>> {
        let rows: Vec<(String, String, i64, String, bool)> =
            store.read_blocking(|c: &Connection| {
                let mut st = c.prepare(
                    "SELECT name, scope, scope_id, value, encrypted FROM configurations",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, OpError>(rows)
            })?;
        let secrets = store.secrets();
        rows.into_iter()
            .map(|(name, scope, scope_id, value, encrypted)| {
                let value = if encrypted {
                    secrets
                        .open(&value)
                        .map_err(|e| OpError::InvalidState(format!("setting {name}: {e}")))?
                } else {
                    value
                };
                Ok(((name, if scope == "zone" { scope_id } else { 0 }), value))
            })
            .collect()
    }

    /// Loads every stored value and registers the core definitions.
    pub fn load(store: Store) -> OpResult<Settings> {
        let values = Self::read_values(&store)?;
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let settings = Settings {
            inner: Arc::new(Inner {
                store,
                definitions: RwLock::new(BTreeMap::new()),
                values: RwLock::new(values),
                changes,
                validators: RwLock::new(HashMap::new()),
            }),
        };
        for d in core_definitions() {
            settings.register(d)?;
        }
        Ok(settings)
    }

    /// Registers a definition. Re-registering an identical definition is a no-op; a different
    /// one under the same name is an error (two owners of one setting).
    pub fn register(&self, def: Definition) -> OpResult<()> {
        def.validate(&def.default)?;
        let mut defs = self.inner.definitions.write();
        match defs.get(&def.name) {
            Some(existing) if *existing == def => Ok(()),
            Some(_) => Err(OpError::InvalidState(format!(
                "setting {} is already defined differently",
                def.name
            ))),
            None => {
                if def.secret {
                    self.seal_stored(&def.name)?;
                }
                defs.insert(def.name.clone(), def);
                Ok(())
            }
        }
    }

    /// Seals the stored values of a secret setting an older bnr kept in plain text.
    fn seal_stored(&self, name: &str) -> OpResult<()> {
        let secrets = self.inner.store.secrets().clone();
        let sealed = self.inner.store.write_blocking(|tx| {
            let plain: Vec<(String, i64, String)> = tx
                .prepare_cached(
                    "SELECT scope, scope_id, value FROM configurations
                     WHERE name = ?1 AND encrypted = 0",
                )?
                .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<crate::store::db::Result<_>>()?;
            for (scope, scope_id, value) in &plain {
                let value = secrets.seal(value).map_err(|e| OpError::Store(e.into()))?;
                tx.execute(
                    "UPDATE configurations SET value = ?1, encrypted = 1
                     WHERE name = ?2 AND scope = ?3 AND scope_id = ?4",
                    params![value, name, scope, scope_id],
                )?;
            }
            Ok::<_, OpError>(plain.len())
        })?;
        if sealed > 0 {
            tracing::info!(
                name,
                sealed,
                "encrypted secret setting values stored in plain text"
            );
        }
        Ok(())
    }

    pub fn definition(&self, name: &str) -> Option<Definition> {
        self.inner.definitions.read().get(name).cloned()
    }

    /// The effective raw value: zone override (zone-scoped settings) → global → default.
    /// Unknown names give `None`.
    pub fn get(&self, name: &str, zone_id: Option<i64>) -> Option<String> {
        let def = self.definition(name)?;
        let values = self.inner.values.read();
        if def.scope == Scope::Zone
            && let Some(z) = zone_id
            && let Some(v) = values.get(&(name.to_string(), z))
        {
            return Some(v.clone());
        }
        Some(
            values
                .get(&(name.to_string(), 0))
                .cloned()
                .unwrap_or(def.default),
        )
    }

    pub fn get_bool(&self, name: &str, zone_id: Option<i64>) -> bool {
        self.get(name, zone_id)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    pub fn get_i64(&self, name: &str, zone_id: Option<i64>) -> Option<i64> {
        self.get(name, zone_id)?.trim().parse().ok()
    }

    pub fn get_string(&self, name: &str, zone_id: Option<i64>) -> Option<String> {
        self.get(name, zone_id)
    }

    /// Validates and stores a value (global when `zone_id` is `None`), then notifies subscribers.
    pub async fn set(&self, name: &str, value: &str, zone_id: Option<i64>) -> OpResult<Effective> {
        let this = self.clone();
        let (name, value) = (name.to_string(), value.to_string());
        tokio::task::spawn_blocking(move || this.set_blocking(&name, &value, zone_id))
            .await
            .map_err(|e| OpError::Store(crate::store::StoreError::Task(e.to_string())))?
    }

    /// Blocking form of [`Settings::set`].
    pub fn set_blocking(
        &self,
        name: &str,
        value: &str,
        zone_id: Option<i64>,
    ) -> OpResult<Effective> {
        let def = self.definition(name).ok_or_else(|| {
            OpError::InvalidParameter(format!("Configuration {name} does not exist"))
        })?;
        if zone_id.is_some() && def.scope != Scope::Zone {
            return Err(OpError::InvalidParameter(format!(
                "Configuration {name} cannot be set at zone scope; its scope is {}",
                def.scope.as_str()
            )));
        }
        let value = def.validate(value)?;
        let validators = self.inner.validators.read().get(name).cloned();
        for validator in validators.iter().flatten() {
            validator(&value, zone_id)?;
        }
        let (scope, scope_id) = match zone_id {
            Some(z) => ("zone", z),
            None => ("global", 0),
        };
        // Secret values are stored sealed (see `store::secrets`); the cache keeps plain text.
        let stored = if def.secret {
            self.inner
                .store
                .secrets()
                .seal(&value)
                .map_err(|e| OpError::Store(e.into()))?
        } else {
            value.clone()
        };
        self.inner.store.write_blocking(|tx| {
            tx.execute(
                "INSERT INTO configurations(name, scope, scope_id, value, encrypted)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name, scope, scope_id)
                 DO UPDATE SET value = excluded.value, encrypted = excluded.encrypted",
                params![name, scope, scope_id, stored, def.secret],
            )?;
            Ok::<_, OpError>(())
        })?;
        self.inner
            .values
            .write()
            .insert((name.to_string(), scope_id), value.clone());
        // No subscribers is fine.
        let _ = self.inner.changes.send(Change {
            name: name.to_string(),
            zone_id,
        });
        if def.secret {
            tracing::info!(name, ?zone_id, "setting updated");
        } else {
            tracing::info!(name, ?zone_id, value = %value, "setting updated");
        }
        Ok(Effective {
            definition: def,
            value,
            zone_id,
        })
    }

    /// Adds a check every later [`Settings::set`] of `name` must pass.
    pub fn add_validator(&self, name: &str, validator: Validator) {
        self.inner
            .validators
            .write()
            .entry(name.to_string())
            .or_default()
            .push(validator);
    }

    /// Receives every change made through [`Settings::set`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Definitions with their effective values, filtered (for listConfigurations). With a
    /// `zone_id`, only zone-scoped definitions are listed, with that zone's effective values.
    pub fn list(
        &self,
        name: Option<&str>,
        category: Option<&str>,
        keyword: Option<&str>,
        zone_id: Option<i64>,
    ) -> Vec<Effective> {
        let defs = self.inner.definitions.read();
        let name = name.map(str::to_lowercase);
        let keyword = keyword.map(str::to_lowercase);
        defs.values()
            .filter(|d| zone_id.is_none() || d.scope == Scope::Zone)
            .filter(|d| {
                name.as_ref()
                    .is_none_or(|n| d.name.to_lowercase().contains(n))
            })
            .filter(|d| category.is_none_or(|c| d.category.eq_ignore_ascii_case(c)))
            .filter(|d| {
                keyword.as_ref().is_none_or(|k| {
                    d.name.to_lowercase().contains(k) || d.description.to_lowercase().contains(k)
                })
            })
            .map(|d| Effective {
                value: self.get(&d.name, zone_id).unwrap_or_default(),
                definition: d.clone(),
                zone_id,
            })
            .collect()
    }
}
