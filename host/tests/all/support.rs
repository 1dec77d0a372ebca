//! Shared test helpers: locating the built components, one runtime per test process, temporary
//! directories, sample WIT values.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bnr_runtime::{
    CallContext, Grants, PoolConfig, Provider, Runtime, RuntimeConfig, SandboxLimits, types,
};

/// File stems of the components `cargo xtask plugins` builds.
pub const DUMMY: &str = "bnr_dummy";
pub const HOSTILE: &str = "bnr_fixture_hostile";
pub const SCRIPTED: &str = "bnr_fixture_scripted";
pub const WRONG_WORLD: &str = "bnr_fixture_wrong_world";
pub const FUTURE_VERSION: &str = "bnr_fixture_future_version";
pub const THIEF: &str = "bnr_fixture_thief";
pub const IMPOSTOR: &str = "bnr_fixture_impostor";
pub const SLOW_DESCRIBE: &str = "bnr_fixture_slow_describe";
pub const EXEC_PROBE: &str = "bnr_fixture_exec_probe";
pub const WIT_1_0: &str = "bnr_fixture_wit_1_0";
pub const WIT_1_1: &str = "bnr_fixture_wit_1_1";

/// The cargo target directory this test binary was built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
        };
    }
    // <target>/debug/deps/all-<hash>
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Path of a built component. Fails the test (never skips it) when the component is missing.
pub fn component_path(stem: &str) -> PathBuf {
    let target = target_dir();
    let candidates = [
        target
            .join("wasm32-wasip2/plugin")
            .join(format!("{stem}.wasm")),
        target.join("fixtures").join(format!("{stem}.wasm")),
        target.join("providers").join(format!("{stem}.wasm")),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "component `{stem}.wasm` not found (looked in {candidates:?}); build the \
                 components first with `cargo xtask plugins`"
            )
        })
}

pub fn component_bytes(stem: &str) -> Vec<u8> {
    std::fs::read(component_path(stem)).expect("reading a built component")
}

/// Limits short enough that limit tests finish quickly, long enough for a debug build.
pub fn test_limits() -> SandboxLimits {
    SandboxLimits {
        cpu_budget: Duration::from_millis(300),
        call_timeout: Duration::from_secs(3),
        admission_wait: Duration::from_secs(5),
        http_timeout: Duration::from_secs(2),
        ..SandboxLimits::default()
    }
}

/// A modest pool: tests run few calls at once, and each runtime reserves address space.
pub fn test_pool() -> PoolConfig {
    PoolConfig {
        max_instances: 24,
        // Every test of the process shares this runtime and mostly the same two providers;
        // the per-provider share is tested with runtimes of its own.
        max_instances_per_provider: 24,
        ..PoolConfig::default()
    }
}

/// The runtime shared by every test of this process (compiling components in a debug build is
/// slow; this compiles each at most once per process).
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<(Arc<Runtime>, TempDir)> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cache = TempDir::for_process("shared-cache");
            let config = RuntimeConfig {
                cache_dir: cache.path().to_owned(),
                // As `bnr serve` has it: call metrics (when enabled) and job context.
                observer: Some(Arc::new(bnr::metrics::RuntimeHooks)),
                limits: test_limits(),
                pool: test_pool(),
            };
            (Runtime::new(config).expect("runtime starts"), cache)
        })
        .0
        .clone()
}

/// The provider in component `stem`, loaded once per process into [`runtime`].
pub fn provider(stem: &str) -> Arc<Provider> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Provider>>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    // Held while loading so concurrent tests do not compile the same component twice.
    let mut loaded = loaded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loaded
        .entry(stem.to_owned())
        .or_insert_with(|| {
            runtime()
                .load_file(&component_path(stem))
                .unwrap_or_else(|err| panic!("loading {stem}: {err}"))
        })
        .clone()
}

/// A call context for `provider` with these zone settings, grants derived as the service
/// layer would (declared ∩ granted).
pub fn ctx(provider: &Provider, settings: &[(&str, &str)]) -> CallContext {
    let settings: HashMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let grants = Grants::derive(provider.info(), &settings, None, &[]);
    CallContext::new("zone-1", settings, grants)
}

pub fn zone() -> types::Zone {
    types::Zone {
        uuid: "zone-1".into(),
        name: "Zone One".into(),
    }
}

pub fn volume(uuid: &str, kind: types::VolumeKind, size: u64, device_id: u32) -> types::Volume {
    types::Volume {
        uuid: uuid.into(),
        name: format!("{uuid}-name"),
        kind,
        size,
        path: format!("/pool/{uuid}"),
        device_id,
        disk_offering_id: None,
    }
}

pub fn instance(uuid: &str) -> types::Instance {
    types::Instance {
        uuid: uuid.into(),
        name: format!("{uuid}-vm"),
        internal_name: "i-2-10-VM".into(),
        hypervisor: "KVM".into(),
        host_address: Some("kvm1.lan".into()),
        state: "Running".into(),
        volumes: vec![
            volume("root-1", types::VolumeKind::Root, 8 << 30, 0),
            volume("data-1", types::VolumeKind::Datadisk, 2 << 30, 1),
        ],
        provider_ref: None,
    }
}

pub fn backup_ref(vm: &types::Instance) -> types::BackupRef {
    types::BackupRef {
        external_id: "dummy-backup-1".into(),
        offering_external_id: "gold-policy".into(),
        instance_uuid: vm.uuid.clone(),
        volumes: vm.volumes.clone(),
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "bnr-test-{label}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self(path)
    }

    /// A directory for the whole test process, held by a static, which is never dropped: the
    /// next process sweeps it instead, removing this label's directories of processes gone.
    pub fn for_process(label: &str) -> Self {
        let prefix = format!("bnr-test-{label}-");
        for entry in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Self::new(label)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
