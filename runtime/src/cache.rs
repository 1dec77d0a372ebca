//! On-disk cache of compiled components.
//!
//! Layout (one pair of files per component and engine configuration, in a host-private
//! directory created with mode 0700):
//!
//! ```text
//! <cache_dir>/<wasm sha256>-<engine key>.cwasm   native code from Engine::precompile_component
//! <cache_dir>/<wasm sha256>-<engine key>.meta    header: format, wasm sha256, engine key,
//!                                                size and sha256 of the .cwasm
//! ```
//!
//! The engine key is a sha256 over wasmtime's `precompile_compatibility_hash` (which covers
//! the wasmtime version and every code-generation setting) and this cache's format version.
//! Both files are written to a temporary name and renamed into place, so readers never see a
//! half-written entry. A `.cwasm` is only deserialised after its size and sha256 match the
//! header: a truncated, corrupted or foreign file is deleted and the component recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped whenever the layout or the header format changes.
const CACHE_FORMAT: &str = "bnr-cwasm-1";

/// Where a component came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a verified cache entry.
    Hit,
    /// No usable entry: compiled and stored.
    Compiled,
    /// An entry existed but failed verification; it was deleted and the component recompiled.
    Recompiled {
        /// Why the entry was discarded.
        reason: String,
    },
}

pub(crate) struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the component cache {}", dir.display()))?;
        restrict_to_owner(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CACHE_FORMAT.hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the compiled artifact for a component with this sha256.
    pub(crate) fn artifact_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", self.engine_key))
    }

    fn meta_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.meta", self.engine_key))
    }

    /// The compiled component: from a verified cache entry, or compiled now and stored.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<(Component, CacheOutcome), CompileFailed> {
        let discarded = match self.load(engine, wasm_sha256) {
            Ok(Some(component)) => return Ok((component, CacheOutcome::Hit)),
            Ok(None) => None,
            Err(err) => {
                let reason = format!("{err:#}");
                tracing::warn!(
                    wasm_sha256,
                    reason = %reason,
                    "discarding an unusable compiled-component cache entry"
                );
                self.remove(wasm_sha256);
                Some(reason)
            }
        };
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| CompileFailed(format!("{e:#}")))?;
        if let Err(err) = self.store(wasm_sha256, &compiled) {
            // A read-only or full disk only costs the next start a compile.
            tracing::warn!(wasm_sha256, error = %format!("{err:#}"), "could not write the compiled-component cache");
        }
        // SAFETY: the bytes were produced by `precompile_component` of this very engine a
        // moment ago and never left this process.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| CompileFailed(format!("{e:#}")))?;
        let outcome = match discarded {
            Some(reason) => CacheOutcome::Recompiled { reason },
            None => CacheOutcome::Compiled,
        };
        Ok((component, outcome))
    }

    /// `Ok(None)`: no entry. `Err`: an entry that must not be trusted.
    fn load(&self, engine: &Engine, wasm_sha256: &str) -> anyhow::Result<Option<Component>> {
        let meta_path = self.meta_path(wasm_sha256);
        let artifact_path = self.artifact_path(wasm_sha256);
        let meta = match fs::read_to_string(&meta_path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if artifact_path.exists() {
                    bail!("compiled artifact without a header");
                }
                return Ok(None);
            }
            Err(err) => return Err(err).context("reading the cache header"),
        };
        let header = Header::parse(&meta).context("malformed cache header")?;
        if header.format != CACHE_FORMAT
            || header.wasm_sha256 != wasm_sha256
            || header.engine_key != self.engine_key
        {
            bail!("cache header belongs to another component or engine");
        }
        let artifact = fs::read(&artifact_path).context("reading the compiled artifact")?;
        if artifact.len() as u64 != header.artifact_size {
            bail!(
                "compiled artifact is {} bytes, header says {}",
                artifact.len(),
                header.artifact_size
            );
        }
        if hex::encode(Sha256::digest(&artifact)) != header.artifact_sha256 {
            bail!("compiled artifact does not match its checksum");
        }
        drop(artifact);
        // SAFETY: the file is in the host-private cache directory, was written by
        // `precompile_component` of an engine with the same compatibility hash (header), and
        // its content matches the checksum recorded when it was written. wasmtime still
        // checks the artifact's own header and refuses a mismatch cleanly.
        let component = unsafe { Component::deserialize_file(engine, &artifact_path) }
            .map_err(|e| anyhow::anyhow!("deserialising the compiled artifact: {e:#}"))?;
        Ok(Some(component))
    }

    fn store(&self, wasm_sha256: &str, artifact: &[u8]) -> anyhow::Result<()> {
        let header = Header {
            format: CACHE_FORMAT.to_owned(),
            wasm_sha256: wasm_sha256.to_owned(),
            engine_key: self.engine_key.clone(),
            artifact_size: artifact.len() as u64,
            artifact_sha256: hex::encode(Sha256::digest(artifact)),
        };
        // Artifact first: a header only ever points at a complete artifact.
        write_atomically(&self.artifact_path(wasm_sha256), artifact)?;
        write_atomically(&self.meta_path(wasm_sha256), header.render().as_bytes())
    }

    fn remove(&self, wasm_sha256: &str) {
        for path in [self.meta_path(wasm_sha256), self.artifact_path(wasm_sha256)] {
            if let Err(err) = fs::remove_file(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %err, "could not delete a cache entry");
            }
        }
    }
}

/// The compiler refused the component.
#[derive(Debug)]
pub(crate) struct CompileFailed(pub String);

struct Header {
    format: String,
    wasm_sha256: String,
    engine_key: String,
    artifact_size: u64,
    artifact_sha256: String,
}

impl Header {
    fn render(&self) -> String {
        format!(
            "format={}\nwasm_sha256={}\nengine={}\ncwasm_size={}\ncwasm_sha256={}\n",
            self.format,
            self.wasm_sha256,
            self.engine_key,
            self.artifact_size,
            self.artifact_sha256
        )
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let field = |key: &str| -> anyhow::Result<String> {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("missing `{key}`"))
        };
        Ok(Self {
            format: field("format")?,
            wasm_sha256: field("wasm_sha256")?,
            engine_key: field("engine")?,
            artifact_size: field("cwasm_size")?.parse().context("bad `cwasm_size`")?,
            artifact_sha256: field("cwasm_sha256")?,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(unix)]
fn restrict_to_owner(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", dir.display()))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Feeds `Hash` output into sha256 so the key is stable across processes (unlike
/// `DefaultHasher`, whose algorithm is unspecified).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `finalize` on the inner digest is used.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
