//! The provider lifecycle's building blocks: the providers compiled into the binary
//! ([`bundled`]), signatures and keys ([`signing`]), every loaded component by sha256
//! ([`Components`]) and the data directory's store of installed components ([`PluginFiles`]).
//! The rules (install, upgrade with a health probe, rollback, delete) are in
//! `service/plugins.rs`.

pub mod bundled;
pub mod check;
pub mod signing;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use bnr_runtime::Provider;

/// Directory (under the data directory) of the components installed through the API, each
/// stored as `<sha256>.wasm`.
pub const PLUGINS_DIR: &str = "plugins";

/// Largest component `addBackupProviderPlugin` accepts (documented in docs/api.md). Real
/// providers are well under 1 MiB; the runtime's own file cap is larger.
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;

/// How a component came to be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the `bnr` binary; trusted by the sha256 recorded at build time.
    Bundled,
    /// A file of `--providers-dir` (the operator put it there).
    Directory(PathBuf),
    /// Installed through the API.
    Installed {
        uuid: String,
        /// Name of the trusted key that signed it; `None`: installed unsigned.
        signer: Option<String>,
        created: i64,
    },
}

impl Origin {
    /// `bundled`, `directory` or `installed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Bundled => "bundled",
            Origin::Directory(_) => "directory",
            Origin::Installed { .. } => "installed",
        }
    }

    /// Who vouches for the component: the signing key, or how it was trusted otherwise.
    pub fn signer(&self) -> String {
        match self {
            Origin::Bundled => "bnr (bundled)".to_string(),
            Origin::Directory(_) => "operator (providers directory)".to_string(),
            Origin::Installed {
                signer: Some(key), ..
            } => key.clone(),
            Origin::Installed { signer: None, .. } => "unsigned".to_string(),
        }
    }
}

/// A loaded component and where it came from.
#[derive(Debug, Clone)]
pub struct Component {
    pub provider: Arc<Provider>,
    pub origin: Origin,
}

/// Every loaded component, by sha256: all versions of a provider stay loaded, so work started
/// on one version finishes on it after another took over new calls.
#[derive(Debug, Default)]
pub struct Components {
    by_sha: RwLock<BTreeMap<String, Component>>,
}

impl Components {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `component` (keyed by its sha256); false if that exact component is there already.
    pub fn insert(&self, component: Component) -> bool {
        let mut map = self.by_sha.write();
        let sha = component.provider.sha256().to_string();
        if map.contains_key(&sha) {
            return false;
        }
        map.insert(sha, component);
        true
    }

    pub fn get(&self, sha256: &str) -> Option<Component> {
        self.by_sha.read().get(sha256).cloned()
    }

    pub fn remove(&self, sha256: &str) -> Option<Component> {
        self.by_sha.write().remove(sha256)
    }

    /// The component of provider `name` at `version`.
    pub fn find(&self, name: &str, version: &str) -> Option<Component> {
        self.by_sha
            .read()
            .values()
            .find(|c| c.provider.name() == name && c.provider.version() == version)
            .cloned()
    }

    /// Every component, sorted by name, then origin (bundled first), then version.
    pub fn list(&self) -> Vec<Component> {
        let mut all: Vec<Component> = self.by_sha.read().values().cloned().collect();
        all.sort_by(|a, b| {
            (
                a.provider.name(),
                origin_rank(&a.origin),
                a.provider.version(),
            )
                .cmp(&(
                    b.provider.name(),
                    origin_rank(&b.origin),
                    b.provider.version(),
                ))
        });
        all
    }

    /// The component a provider name defaults to when no version was chosen: bundled, then
    /// the providers directory's.
    pub fn default_for(&self, name: &str) -> Option<Component> {
        self.list()
            .into_iter()
            .filter(|c| c.provider.name() == name && !matches!(c.origin, Origin::Installed { .. }))
            .min_by_key(|c| origin_rank(&c.origin))
    }
}

fn origin_rank(origin: &Origin) -> u8 {
    match origin {
        Origin::Bundled => 0,
        Origin::Directory(_) => 1,
        Origin::Installed { .. } => 2,
    }
}

/// The installed components of a data directory: `plugins/<sha256>.wasm`, `0600` in a `0700`
/// directory, written whole or not at all.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    dir: PathBuf,
}

impl PluginFiles {
    pub fn new(data_dir: &Path) -> Self {
        PluginFiles {
            dir: data_dir.join(PLUGINS_DIR),
        }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Writes the component through a temporary file, fsynced, then renamed into place.
    pub fn write(&self, sha256: &str, wasm: &[u8]) -> std::io::Result<PathBuf> {
        crate::store::create_private_dir(&self.dir)?;
        let path = self.path(sha256);
        let temporary = self.dir.join(format!(".{sha256}.wasm.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        file.write_all(wasm)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &path)?;
        Ok(path)
    }

    /// Reads an installed component back and checks it is still the one recorded.
    pub fn read(&self, sha256: &str) -> Result<Vec<u8>, String> {
        use sha2::{Digest, Sha256};
        let path = self.path(sha256);
        let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let actual = hex::encode(Sha256::digest(&wasm));
        if actual != sha256 {
            return Err(format!(
                "{} was changed after it was installed (sha256 {actual}, installed as {sha256})",
                path.display()
            ));
        }
        Ok(wasm)
    }

    pub fn remove(&self, sha256: &str) {
        let path = self.path(sha256);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an installed component");
        }
    }
}
