//! Which provider serves which zone ([`ZoneRegistry`]) and which providers are installed
//! ([`Catalog`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::engine::Runtime;
use super::error::LoadError;
use super::limits::LOAD_PARALLELISM;
use super::provider::Provider;

/// The providers bnr ships, each as `bnr_<name>.wasm` in the providers directory. On a name
/// conflict the built-in component is kept and the other refused.
pub const BUILTIN_PROVIDERS: &[&str] = &["dummy"];

/// Whether the component at `path` is the built-in provider `name`.
fn is_builtin(name: &str, path: &Path) -> bool {
    BUILTIN_PROVIDERS.contains(&name)
        && path
            .file_name()
            .is_some_and(|file| *file == *format!("bnr_{name}.wasm"))
}

/// The outcome of loading one component.
type Loaded = Result<Arc<Provider>, LoadError>;

/// Loads `paths` on up to [`LOAD_PARALLELISM`] threads; results in the order of `paths`.
fn load_parallel(rt: &Arc<Runtime>, paths: &[PathBuf]) -> Vec<Loaded> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<parking_lot::Mutex<Option<Loaded>>> = paths
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..LOAD_PARALLELISM.min(paths.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(index) else {
                        return;
                    };
                    *results[index].lock() = Some(rt.load_file(path));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner().unwrap_or_else(|| {
                Err(LoadError::Io(std::io::Error::other(
                    "the loader thread ended before loading this component",
                )))
            })
        })
        .collect()
}

/// Replaces every loaded provider whose name another loaded component also claims with a
/// `NameConflict` error, keeping a built-in one if there is one.
fn refuse_name_conflicts(loaded: &mut [(PathBuf, Result<Arc<Provider>, LoadError>)]) {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, (_, result)) in loaded.iter().enumerate() {
        if let Ok(provider) = result {
            by_name
                .entry(provider.name().to_owned())
                .or_default()
                .push(index);
        }
    }
    for (name, claimants) in by_name.into_iter().filter(|(_, c)| c.len() > 1) {
        let kept = claimants
            .iter()
            .copied()
            .find(|&index| is_builtin(&name, &loaded[index].0));
        let files: Vec<String> = claimants
            .iter()
            .map(|&index| loaded[index].0.display().to_string())
            .collect();
        for &index in &claimants {
            if Some(index) == kept {
                continue;
            }
            loaded[index].1 = Err(LoadError::NameConflict {
                name: name.clone(),
                files: files.clone(),
                kept: kept.map(|index| loaded[index].0.display().to_string()),
            });
        }
    }
}

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

    /// Loads every `*.wasm` file of `dir` (sorted by file name; up to [`LOAD_PARALLELISM`] at
    /// once, so start-up waits for the slowest component, not for the sum of all) and inserts
    /// the providers that load. Errors are returned per file, never fatal; a missing
    /// directory yields one `Io` error.
    ///
    /// Two components that call themselves by the same name are both refused
    /// ([`LoadError::NameConflict`], logged as an error), except that a built-in provider
    /// ([`BUILTIN_PROVIDERS`], shipped as `bnr_<name>.wasm`) is kept and the other refused:
    /// a component dropped into the directory can never replace another one silently.
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
        let mut loaded: Vec<_> = paths
            .iter()
            .cloned()
            .zip(load_parallel(rt, &paths))
            .collect();
        refuse_name_conflicts(&mut loaded);
        for (path, result) in &loaded {
            match result {
                Ok(provider) => {
                    self.insert(provider.clone());
                }
                Err(err @ LoadError::NameConflict { .. }) => {
                    tracing::error!(path = %path.display(), error = %err, "provider not loaded")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "provider not loaded")
                }
            }
        }
        loaded
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
