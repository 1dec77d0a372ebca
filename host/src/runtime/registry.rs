//! Which provider serves which zone ([`ZoneRegistry`]) and which providers are installed
//! ([`Catalog`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::engine::Runtime;
use super::error::LoadError;
use super::provider::Provider;

/// Zone → provider.
///
/// Swapping an entry is atomic: a call takes its own `Arc<Provider>` from [`ZoneRegistry::get`]
/// and finishes on it, however long it runs; calls that start after [`ZoneRegistry::set`]
/// get the new provider. The old provider is freed when its last call ends.
#[derive(Debug, Default)]
pub struct ZoneRegistry {
    zones: RwLock<HashMap<String, Arc<Provider>>>,
}

impl ZoneRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The provider serving `zone_uuid`, if any.
    pub fn get(&self, zone_uuid: &str) -> Option<Arc<Provider>> {
        self.zones.read().get(zone_uuid).cloned()
    }

    /// Makes `provider` serve `zone_uuid`; returns the provider it replaces.
    pub fn set(&self, zone_uuid: &str, provider: Arc<Provider>) -> Option<Arc<Provider>> {
        let old = self
            .zones
            .write()
            .insert(zone_uuid.to_owned(), provider.clone());
        tracing::info!(
            zone = zone_uuid,
            provider = provider.name(),
            version = provider.version(),
            replaced = old.as_ref().map(|p| p.name()),
            "zone provider set"
        );
        old
    }

    /// Stops serving `zone_uuid`; returns the provider that served it.
    pub fn remove(&self, zone_uuid: &str) -> Option<Arc<Provider>> {
        self.zones.write().remove(zone_uuid)
    }

    /// Every zone with its provider, sorted by zone.
    pub fn entries(&self) -> Vec<(String, Arc<Provider>)> {
        let mut entries: Vec<_> = self
            .zones
            .read()
            .iter()
            .map(|(zone, provider)| (zone.clone(), provider.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

/// Installed providers by name (what `backup.framework.provider.plugin` values refer to).
#[derive(Debug, Default)]
pub struct Catalog {
    providers: RwLock<BTreeMap<String, Arc<Provider>>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `*.wasm` file of `dir` (sorted by file name) and inserts the providers
    /// that load. Errors are returned per file, never fatal; a missing directory yields one
    /// `Io` error.
    pub fn load_dir(
        &self,
        rt: &Arc<Runtime>,
        dir: &Path,
    ) -> Vec<(PathBuf, Result<Arc<Provider>, LoadError>)> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                let err = std::io::Error::new(err.kind(), format!("{}: {err}", dir.display()));
                return vec![(dir.to_owned(), Err(LoadError::Io(err)))];
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let loaded = rt.load_file(&path);
                match &loaded {
                    Ok(provider) => {
                        if let Some(old) = self.insert(provider.clone()) {
                            tracing::warn!(
                                provider = provider.name(),
                                replaced_sha256 = old.sha256(),
                                path = %path.display(),
                                "a later file replaced an installed provider of the same name"
                            );
                        }
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "provider not loaded")
                    }
                }
                (path, loaded)
            })
            .collect()
    }

    /// Installs `provider` under its name; returns the provider it replaces.
    pub fn insert(&self, provider: Arc<Provider>) -> Option<Arc<Provider>> {
        self.providers
            .write()
            .insert(provider.name().to_owned(), provider)
    }

    /// The installed provider called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.providers.read().get(name).cloned()
    }

    /// Removes the provider called `name`.
    pub fn remove(&self, name: &str) -> Option<Arc<Provider>> {
        self.providers.write().remove(name)
    }

    /// Every installed provider, sorted by name.
    pub fn list(&self) -> Vec<Arc<Provider>> {
        self.providers.read().values().cloned().collect()
    }
}
