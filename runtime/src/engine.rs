//! The process-wide [`Runtime`]: one wasmtime `Engine`, its epoch ticker, the compiled-component
//! cache and the linkers, plus loading components into [`Provider`]s.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{self, ProviderPre, WitVersion};
use super::cache::{CacheOutcome, CompileFailed, CompiledCache};
use super::error::{CallError, LoadError};
use super::grants::CallContext;
use super::inspect::{self, Inspection};
use super::limits::{
    EPOCH_TICK, MAX_COMPONENT_BYTES, PoolConfig, SandboxLimits, TABLE_ELEMENTS_MAX,
};
use super::observer::{NoObserver, RuntimeObserver};
use super::provider::{Admission, Provider, Session};
use super::state::{CallScope, Declared, HostState};
use super::types::ProviderInfo;

/// How the process-wide runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Compiled-component cache (host-private; created with mode 0700). Never point this at a
    /// directory a provider author can write: its files are loaded as native code.
    pub cache_dir: PathBuf,
    /// Bounds of every provider call.
    pub limits: SandboxLimits,
    /// Sizing of the pooling instance allocator.
    pub pool: PoolConfig,
    /// Told about every call and load (metrics, job context); `None` = nobody listens.
    pub observer: Option<Arc<dyn RuntimeObserver>>,
}

impl RuntimeConfig {
    /// Default limits and pool, with the cache in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            limits: SandboxLimits::default(),
            pool: PoolConfig::default(),
            observer: None,
        }
    }
}

/// What every provider and call shares. Owned jointly by the `Runtime` and every `Provider`,
/// so the epoch ticker runs as long as anything can still call a provider.
pub(crate) struct RuntimeShared {
    pub engine: Engine,
    pub limits: SandboxLimits,
    pub observer: Arc<dyn RuntimeObserver>,
    admission: Arc<Semaphore>,
    /// Permits `admission` started with.
    pool_slots: usize,
    /// Slots one provider may hold at once (`PoolConfig::max_instances_per_provider`).
    per_provider: usize,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeShared {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl RuntimeShared {
    /// Size of each provider's share of the instance slots.
    pub(crate) fn instances_per_provider(&self) -> usize {
        self.per_provider
    }

    /// A slot for one live instance: first one of the provider's own share (when given),
    /// then one of the shared pool; each at once if free, else after waiting (both waits
    /// together at most `limits.admission_wait`), else `Busy`. Waiting for the share first
    /// means a provider whose share is full queues on its own semaphore without taking
    /// slots other providers need.
    pub(crate) async fn admit(
        &self,
        share: Option<&Arc<Semaphore>>,
    ) -> Result<Admission, CallError> {
        let deadline = tokio::time::Instant::now() + self.limits.admission_wait;
        let share = match share {
            Some(share) => Some(acquire(share, deadline).await?),
            None => None,
        };
        let pool = acquire(&self.admission, deadline).await?;
        Ok(Admission {
            _share: share,
            _pool: pool,
        })
    }
}

async fn acquire(
    semaphore: &Arc<Semaphore>,
    deadline: tokio::time::Instant,
) -> Result<OwnedSemaphorePermit, CallError> {
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Ok(permit);
    }
    match tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) | Err(_) => Err(CallError::Busy),
    }
}

/// One per process: the engine (cranelift, epoch interruption, pooling allocator), the
/// epoch ticker thread, the compiled-component cache and the linkers.
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    cache: CompiledCache,
    /// WASI 0.2 (deny-by-default context) + `bnr:provider/host`.
    linker: Linker<HostState>,
    /// The same plus `wasi:http`, for providers that declare an HTTP need.
    linker_http: Linker<HostState>,
    pooling: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache.dir())
            .field("limits", &self.shared.limits)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (falling back to on-demand allocation with a warning if the pool
    /// cannot reserve its address space), starts the epoch ticker and opens the cache.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let limits = config.limits.clone();
        let (engine, pooling) = build_engine(&config)?;
        let cache = CompiledCache::open(&config.cache_dir, &engine)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| wasm_context(e, "linking WASI"))?;
        bindings::add_to_linker(&mut linker)
            .map_err(|e| wasm_context(e, "linking the host interface"))?;
        let mut linker_http = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker_http)
            .map_err(|e| wasm_context(e, "linking wasi:http"))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_epoch_ticker(engine.clone(), ticker_stop.clone())?;

        let permits = usize::try_from(config.pool.max_instances.max(1)).unwrap_or(usize::MAX);
        let per_provider = usize::try_from(config.pool.max_instances_per_provider.max(1))
            .unwrap_or(usize::MAX)
            .min(permits);
        Ok(Arc::new(Runtime {
            shared: Arc::new(RuntimeShared {
                engine,
                limits,
                observer: config
                    .observer
                    .clone()
                    .unwrap_or_else(|| Arc::new(NoObserver)),
                admission: Arc::new(Semaphore::new(permits)),
                pool_slots: permits,
                per_provider,
                ticker_stop,
            }),
            cache,
            linker,
            linker_http,
            pooling,
        }))
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.shared.limits
    }

    /// Instance slots held right now by calls and sessions (of every provider).
    pub fn instances_in_use(&self) -> usize {
        self.shared.pool_slots - self.shared.admission.available_permits()
    }

    /// Whether the pooling allocator is in use (`false` after the on-demand fallback).
    pub fn pooling_enabled(&self) -> bool {
        self.pooling
    }

    /// Directory of the compiled-component cache.
    pub fn cache_dir(&self) -> &Path {
        self.cache.dir()
    }

    /// Path of the compiled artifact the cache keeps for the component with this sha256.
    pub fn cache_entry_path(&self, wasm_sha256: &str) -> PathBuf {
        self.cache.artifact_path(wasm_sha256)
    }

    /// Reads and loads a component file (see [`Runtime::load_bytes`]).
    pub fn load_file(self: &Arc<Self>, path: &Path) -> Result<Arc<Provider>, LoadError> {
        let wasm = read_component_file(path)?;
        self.load_bytes(&wasm)
    }

    /// Inspects the component (world, WIT version, imports), compiles it or loads it from
    /// the compiled cache, pre-instantiates it, calls `describe()` and checks the answer.
    ///
    /// CPU-bound (compilation takes tens to hundreds of milliseconds; a cached load well under
    /// one): from async code, call it inside `tokio::task::spawn_blocking`. It does not need a
    /// tokio runtime itself.
    pub fn load_bytes(self: &Arc<Self>, wasm: &[u8]) -> Result<Arc<Provider>, LoadError> {
        let started = Instant::now();
        let shape = inspect::check_shape(wasm)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        let (component, cache) = self
            .cache
            .load_or_compile(&self.shared.engine, wasm, &sha256)
            .map_err(|CompileFailed(message)| LoadError::Compile(message))?;

        // The describe() call and all later calls share one pre-instantiation: wasi:http is
        // linked only for components that import it, and such a component is refused below
        // unless it declares an HTTP need.
        let linker = if shape.imports_http {
            &self.linker_http
        } else {
            &self.linker
        };
        let pre = pre_instantiate(linker, &component, shape.version)?;
        let info = describe_on_own_thread(&self.shared, &pre)?;
        inspect::check_info(&info)?;
        let declared = Declared::from_info(&info);

        if shape.imports_http && !declared.http {
            // wasi:http is a capability: linked only for providers that declare an HTTP need.
            // Refusing here tells the vendor at install time instead of failing at run time.
            return Err(LoadError::Invalid(
                "the component imports wasi:http but declares no `http-to-setting` or \
                 `https-to-setting` need; outbound HTTP is only available to providers that \
                 declare it"
                    .to_owned(),
            ));
        }

        let stats = LoadStats {
            cache,
            duration: started.elapsed(),
        };
        tracing::info!(
            provider = %info.name,
            version = %info.version,
            sha256 = %sha256,
            from_cache = stats.loaded_from_cache(),
            micros = stats.duration.as_micros() as u64,
            "provider loaded"
        );
        self.shared
            .observer
            .component_loaded(stats.loaded_from_cache());
        Ok(Arc::new(Provider::new(
            info,
            sha256,
            shape.wit_version,
            shape.imports_http,
            wasm.len(),
            stats,
            pre,
            Arc::new(declared),
            self.shared.clone(),
        )))
    }
}

/// How a load went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStats {
    /// Whether the compiled code came from the cache, was compiled, or was recompiled after a
    /// bad cache entry was discarded.
    pub cache: CacheOutcome,
    /// Wall-clock time of the whole load (inspect, compile or cache, describe).
    pub duration: Duration,
}

impl LoadStats {
    /// Whether the compiled code came from a verified cache entry.
    pub fn loaded_from_cache(&self) -> bool {
        self.cache == CacheOutcome::Hit
    }
}

/// `bnr plugin inspect FILE.wasm`: what a component declares, or why it cannot be loaded.
pub fn inspect(rt: &Arc<Runtime>, path: &Path) -> Result<Inspection, LoadError> {
    let provider = rt.load_file(path)?;
    Ok(provider.inspection())
}

fn read_component_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let with_path = |err: std::io::Error| {
        LoadError::Io(std::io::Error::new(
            err.kind(),
            format!("{}: {err}", path.display()),
        ))
    };
    let file = fs::File::open(path).map_err(with_path)?;
    let size = file.metadata().map_err(with_path)?.len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::Invalid(format!(
            "{} is {size} bytes; components are limited to {MAX_COMPONENT_BYTES} bytes",
            path.display()
        )));
    }
    let mut wasm = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut wasm)
        .map_err(with_path)?;
    Ok(wasm)
}

fn pre_instantiate(
    linker: &Linker<HostState>,
    component: &wasmtime::component::Component,
    version: WitVersion,
) -> Result<ProviderPre, LoadError> {
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        LoadError::Invalid(format!(
            "the component's imports do not match what this host provides: {e:#}"
        ))
    })?;
    ProviderPre::new(version, instance_pre).map_err(|e| {
        LoadError::WrongWorld(format!(
            "the component's exports do not match `bnr:provider/provider`: {e:#}"
        ))
    })
}

/// Calls `describe()` on a thread of its own with a private current-thread tokio runtime, so
/// loading works the same from sync code and from inside an async task.
fn describe_on_own_thread(
    shared: &Arc<RuntimeShared>,
    pre: &ProviderPre,
) -> Result<ProviderInfo, LoadError> {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(LoadError::Io)?;
            rt.block_on(async {
                let declared = Arc::new(Declared::nothing("(loading)"));
                let scope = Arc::new(CallScope::new(&declared, &CallContext::default()));
                let permit = shared.admit(None).await.map_err(LoadError::Describe)?;
                let mut session =
                    Session::new(shared.clone(), pre.clone(), declared, scope, permit);
                session.describe().await.map_err(LoadError::Describe)
            })
        });
        worker.join().unwrap_or_else(|_| {
            Err(LoadError::Describe(CallError::Instantiate(
                "the describe worker thread panicked".to_owned(),
            )))
        })
    })
}

/// `wasmtime::Error` → `anyhow::Error` with context (G2: the two are distinct types in 48).
fn wasm_context(err: wasmtime::Error, what: &'static str) -> anyhow::Error {
    anyhow::Error::from(err).context(what)
}

/// Bytes of each pooled table reset with `memset` when an instance is dropped; beyond them, the
/// pages are given back with `madvise`. A table slot keeps at most this much resident.
const TABLE_KEPT_RESIDENT: usize = 64 << 10;

fn build_engine(config: &RuntimeConfig) -> anyhow::Result<(Engine, bool)> {
    let mut cfg = Config::new();
    cfg.strategy(wasmtime::Strategy::Cranelift)
        .epoch_interruption(true)
        .consume_fuel(false)
        .wasm_component_model(true)
        .parallel_compilation(true);
    if config.pool.enabled {
        let pool = &config.pool;
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(pool.max_instances)
            .total_core_instances(
                pool.max_instances
                    .saturating_mul(pool.core_instances_per_instance),
            )
            .total_memories(
                pool.max_instances
                    .saturating_mul(pool.memories_per_instance),
            )
            .total_tables(pool.max_instances.saturating_mul(pool.tables_per_instance))
            .total_stacks(pool.max_instances)
            .max_core_instances_per_component(pool.core_instances_per_instance)
            .max_memories_per_component(pool.memories_per_instance)
            .max_tables_per_component(pool.tables_per_instance)
            .max_memory_size(config.limits.memory_bytes)
            .table_elements(TABLE_ELEMENTS_MAX)
            // A provider call instantiates and drops a component. Zeroing its table with
            // `memset` instead of `madvise` spares the page-table work and the TLB shootdown
            // of every other core that each drop cost (zeroed either way). Linear memories
            // stay on `madvise`: zeroing a whole megabyte by hand cost more than it saved.
            .table_keep_resident(TABLE_KEPT_RESIDENT);
        let mut pooled = cfg.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        match Engine::new(&pooled) {
            Ok(engine) => return Ok((engine, true)),
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                max_instances = pool.max_instances,
                "the pooling allocator could not reserve its address space; falling back to \
                 on-demand allocation (slower instantiation)"
            ),
        }
    }
    let engine = Engine::new(&cfg).map_err(|e| wasm_context(e, "creating the engine"))?;
    Ok((engine, false))
}

fn start_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bnr-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .context("starting the epoch ticker thread")?;
    Ok(())
}
