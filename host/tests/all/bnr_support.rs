//! B&R test support: servers with the real `dummy` provider and the `scripted` fixture
//! installed (one runtime per test process, components compiled once), and helpers for the
//! common B&R steps, all over signed HTTP.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use bnr::api::router;
use bnr::api::serve::prepare_on;
use bnr::inventory::bootstrap::BootstrapOptions;
use bnr::service::ProviderSource;
use bnr_runtime::{Catalog, Provider, Runtime, RuntimeConfig};

use crate::support_api::*;

struct Components {
    runtime: Arc<Runtime>,
    dummy: Arc<Provider>,
    scripted: Arc<Provider>,
    hostile: Arc<Provider>,
    _cache: tempfile::TempDir,
}

/// `$CARGO_TARGET_DIR` (or the workspace `target/`), where `cargo xtask plugins` puts the
/// components.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

pub fn dummy_wasm() -> PathBuf {
    target_dir().join("providers").join("bnr_dummy.wasm")
}

pub fn scripted_wasm() -> PathBuf {
    target_dir()
        .join("fixtures")
        .join("bnr_fixture_scripted.wasm")
}

pub fn veeam_wasm() -> PathBuf {
    target_dir().join("providers").join("bnr_veeam.wasm")
}

pub fn networker_wasm() -> PathBuf {
    target_dir().join("providers").join("bnr_networker.wasm")
}

pub fn hostile_wasm() -> PathBuf {
    target_dir()
        .join("fixtures")
        .join("bnr_fixture_hostile.wasm")
}

fn components() -> &'static Components {
    static C: OnceLock<Components> = OnceLock::new();
    C.get_or_init(|| {
        let cache = tempfile::tempdir().expect("cache dir");
        // Many test servers share this runtime at once: give each provider the whole pool
        // (the per-provider share is tested in `bnr_hostile` with a runtime of its own).
        let mut config = RuntimeConfig::new(cache.path());
        config.pool.max_instances_per_provider = config.pool.max_instances;
        // As `bnr serve` has it: call metrics (when enabled) and job context.
        config.observer = Some(std::sync::Arc::new(bnr::metrics::RuntimeHooks));
        let runtime = Runtime::new(config).expect("runtime");
        let load = |p: PathBuf| {
            runtime.load_file(&p).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build the components with `cargo xtask plugins`)",
                    p.display()
                )
            })
        };
        Components {
            dummy: load(dummy_wasm()),
            scripted: load(scripted_wasm()),
            hostile: load(hostile_wasm()),
            runtime: runtime.clone(),
            _cache: cache,
        }
    })
}

/// A provider compiled into the shared runtime once, by the first test that needs it.
fn load_once(
    cell: &'static OnceLock<Arc<Provider>>,
    c: &Components,
    path: PathBuf,
) -> Arc<Provider> {
    cell.get_or_init(|| {
        c.runtime.load_file(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build the components with `cargo xtask plugins`)",
                path.display()
            )
        })
    })
    .clone()
}

fn veeam(c: &Components) -> Arc<Provider> {
    static VEEAM: OnceLock<Arc<Provider>> = OnceLock::new();
    load_once(&VEEAM, c, veeam_wasm())
}

fn networker(c: &Components) -> Arc<Provider> {
    static NETWORKER: OnceLock<Arc<Provider>> = OnceLock::new();
    load_once(&NETWORKER, c, networker_wasm())
}

/// Which providers a test server has installed.
#[derive(Clone, Copy)]
pub enum Installed {
    /// `dummy` only (what `cargo xtask serve` installs).
    Dummy,
    /// `dummy` and the `scripted` fixture.
    DummyAndScripted,
    /// `dummy` and the `hostile` fixture (a provider without capabilities in mode `ok`).
    DummyAndHostile,
    /// `dummy` and the real `veeam` provider.
    DummyAndVeeam,
    /// `dummy` and the real `veeam` and `networker` providers.
    DummyVeeamAndNetworker,
    /// None at all.
    Nothing,
}

/// A bootstrapped server (zone1 on `dummy`) with the providers of `installed`.
pub async fn start(installed: Installed) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(dir, installed).await
}

/// A server on an existing data directory (a restart when it was used before).
pub async fn start_in(dir: tempfile::TempDir, installed: Installed) -> TestServer {
    let (runtime, providers) = match installed {
        Installed::Nothing => (None, Vec::new()),
        Installed::Dummy
        | Installed::DummyAndScripted
        | Installed::DummyAndHostile
        | Installed::DummyAndVeeam
        | Installed::DummyVeeamAndNetworker => {
            let c = tokio::task::spawn_blocking(components)
                .await
                .expect("components");
            let mut providers = vec![c.dummy.clone()];
            match installed {
                Installed::DummyAndScripted => providers.push(c.scripted.clone()),
                Installed::DummyAndHostile => providers.push(c.hostile.clone()),
                Installed::DummyAndVeeam => providers.push(
                    tokio::task::spawn_blocking(|| veeam(components()))
                        .await
                        .expect("veeam provider"),
                ),
                Installed::DummyVeeamAndNetworker => {
                    let (veeam, networker) = tokio::task::spawn_blocking(|| {
                        (veeam(components()), networker(components()))
                    })
                    .await
                    .expect("veeam and networker providers");
                    providers.extend([veeam, networker]);
                }
                _ => {}
            }
            (Some(c.runtime.clone()), providers)
        }
    };
    start_loaded(dir, runtime, &providers).await
}

/// A server on `dir` with these providers (loaded into `runtime`) installed.
pub async fn start_loaded(
    dir: tempfile::TempDir,
    runtime: Option<Arc<Runtime>>,
    providers: &[Arc<Provider>],
) -> TestServer {
    let catalog = Arc::new(Catalog::new());
    for provider in providers {
        catalog.insert(provider.clone());
    }
    start_from(dir, ProviderSource::Loaded { runtime, catalog }).await
}

/// A server on `dir` with the providers of `source`.
pub async fn start_from(dir: tempfile::TempDir, source: ProviderSource) -> TestServer {
    let opts = BootstrapOptions {
        admin_password: Some(ADMIN_PASSWORD.into()),
        admin_keys: Some((ADMIN_API_KEY.into(), ADMIN_SECRET_KEY.into())),
    };
    let database = crate::support_api::test_database(dir.path());
    let (state, boot) = prepare_on(
        crate::support_api::database_option(&database).as_ref(),
        dir.path(),
        &opts,
        source,
        false,
    )
    .await
    .expect("server start");
    let zone_id = match boot {
        Some(b) => b.zone_uuid,
        None => state
            .store()
            .read(|c| {
                c.query_row("SELECT uuid FROM zones WHERE name = 'zone1'", [], |r| {
                    r.get(0)
                })
                .map_err(bnr::store::StoreError::from)
            })
            .await
            .expect("zone1"),
    };
    TestServer {
        router: router(state.clone()),
        state,
        dir,
        zone_id,
        database,
    }
}

/// `(errorcode, errortext)` of a failed job result (panics on success).
pub fn job_error(done: &Value) -> (i64, String) {
    assert_eq!(done["jobstatus"], 2, "job should have failed: {done}");
    (
        done["jobresultcode"].as_i64().expect("code"),
        done["jobresult"]["errortext"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Asserts the job succeeded; returns its `jobresult`.
pub fn job_ok(done: &Value) -> &Value {
    assert_eq!(done["jobstatus"], 1, "job failed: {done}");
    &done["jobresult"]
}

/// Sets a setting (global when `zone` is None) as admin; asserts success.
pub async fn set_config(s: &TestServer, name: &str, value: &str, zone: Option<&str>) {
    let mut p = vec![("name", name), ("value", value)];
    if let Some(z) = zone {
        p.push(("zoneid", z));
    }
    s.admin()
        .call("updateConfiguration", &p)
        .await
        .ok("updateConfiguration");
}

/// The zone provider's policy `external_id` imported as an offering named `name`.
pub async fn import(s: &TestServer, external_id: &str, name: &str, user_driven: bool) -> Value {
    let done = s
        .admin()
        .call_async(
            "importBackupOffering",
            &[
                ("zoneid", &s.zone_id),
                ("externalid", external_id),
                ("name", name),
                ("description", &format!("{name} description")),
                (
                    "allowuserdrivenbackups",
                    if user_driven { "true" } else { "false" },
                ),
            ],
        )
        .await;
    job_ok(&done)["backupoffering"].clone()
}

/// A Stopped-or-Running VM of `client` with ROOT (+ DATADISK when `data_disk`).
pub async fn vm(s: &TestServer, client: &Client<'_>, name: &str, data_disk: bool) -> Value {
    let (_, dof, _) = s.catalog().await;
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if data_disk {
        extra.push(("diskofferingid", &dof));
    }
    s.deploy(client, name, &extra).await
}

/// An instance's internal name (`i-2-5-VM`), as root admins see it.
pub async fn instance_name(s: &TestServer, vm: &str) -> String {
    let r = s
        .admin()
        .call("listVirtualMachines", &[("id", vm), ("listall", "true")])
        .await;
    r.ok("listVirtualMachines")["virtualmachine"][0]["instancename"]
        .as_str()
        .expect("root admins see the internal name")
        .to_string()
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

pub async fn assign(client: &Client<'_>, vm: &str, offering: &str) {
    let done = client
        .call_async(
            "assignVirtualMachineToBackupOffering",
            &[("virtualmachineid", vm), ("backupofferingid", offering)],
        )
        .await;
    job_ok(&done);
}

/// createBackup to completion; returns (backup id from the first answer, final job result).
pub async fn create_backup(
    client: &Client<'_>,
    vm: &str,
    extra: &[(&str, &str)],
) -> (String, Value) {
    let mut p = vec![("virtualmachineid", vm)];
    p.extend_from_slice(extra);
    let r = client.call("createBackup", &p).await;
    let first = r.ok("createBackup");
    let backup = first["id"]
        .as_str()
        .expect("create-style answer has id")
        .to_string();
    let jobid = first["jobid"].as_str().expect("jobid").to_string();
    client.server.wait_job(&jobid).await;
    let done = client
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await
        .ok("queryAsyncJobResult")
        .clone();
    (backup, done)
}

/// A successful backup of `vm`; returns its listBackups item.
pub async fn backup(client: &Client<'_>, vm: &str) -> Value {
    let (id, done) = create_backup(client, vm, &[]).await;
    job_ok(&done);
    get_backup(client, &id).await
}

pub async fn get_backup(client: &Client<'_>, id: &str) -> Value {
    let r = client
        .call("listBackups", &[("id", id), ("listall", "true")])
        .await;
    r.ok("listBackups")["backup"][0].clone()
}

/// Items of a list answer (empty when the answer is `{}`).
pub fn items<'a>(inner: &'a Value, key: &str) -> Vec<&'a Value> {
    inner[key]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub async fn stop(client: &Client<'_>, vm: &str) {
    job_ok(&client.call_async("stopVirtualMachine", &[("id", vm)]).await);
}

/// Runs SQL returning one integer (test inspection of the store).
pub async fn count(s: &TestServer, sql: &'static str) -> i64 {
    s.state
        .store()
        .read(move |c| {
            c.query_row(sql, [], |r| r.get(0))
                .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("query")
}
