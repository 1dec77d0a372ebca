//! The provider lifecycle over the HTTP API: bundled providers on a bare server, signed
//! installs, switching versions under load with a health probe, rollback, refusals, restart.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use bnr::api::serve::default_providers;
use bnr::plugins::signing;

use crate::bnr_support::*;
use crate::support::component_bytes;
use crate::support_api::*;

const NEXT: &str = "bnr_fixture_dummy_next";

/// A signing key pair: (secret, public), base64.
pub(crate) fn key() -> (String, String) {
    signing::generate_key()
}

pub(crate) fn sign(secret: &str, wasm: &[u8], name: &str, version: &str) -> String {
    let key = signing::parse_secret_key(secret).expect("secret key");
    signing::sign(&key, &hex::encode(Sha256::digest(wasm)), name, version)
}

/// addBackupProviderPlugin with the component as the request body; (status, JSON).
pub(crate) async fn upload(s: &TestServer, wasm: Vec<u8>, params: &[(&str, &str)]) -> (u16, Value) {
    let q = query_string(&signed_params(
        &Creds {
            api_key: ADMIN_API_KEY.into(),
            secret_key: ADMIN_SECRET_KEY.into(),
        },
        "addBackupProviderPlugin",
        params,
    ));
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/client/api?{q}"))
        .header("content-type", "application/wasm")
        .body(Body::from(wasm))
        .expect("request");
    let resp = s.router.clone().oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub(crate) fn error_text(v: &Value) -> String {
    v.as_object()
        .and_then(|o| o.values().next())
        .and_then(|inner| inner["errortext"].as_str())
        .unwrap_or_default()
        .to_string()
}

pub(crate) async fn trust(s: &TestServer, name: &str, public: &str) {
    s.admin()
        .call(
            "addBackupProviderSigningKey",
            &[("name", name), ("publickey", public)],
        )
        .await
        .ok("addBackupProviderSigningKey");
}

/// Installs dummy 1.1.0 signed by a freshly trusted key.
pub(crate) async fn install_next(s: &TestServer) -> Value {
    let (secret, public) = key();
    trust(s, "vendor", &public).await;
    let wasm = component_bytes(NEXT);
    let signature = sign(&secret, &wasm, "dummy", "1.1.0");
    let (status, body) = upload(s, wasm, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 200, "{body}");
    body["addbackupproviderpluginresponse"]["backupproviderplugin"].clone()
}

pub(crate) async fn plugins(s: &TestServer) -> Vec<Value> {
    let r = s
        .admin()
        .call("listBackupProviderPlugins", &[("name", "dummy")])
        .await;
    items(r.ok("listBackupProviderPlugins"), "backupproviderplugin")
        .into_iter()
        .cloned()
        .collect()
}

pub(crate) fn state_of(list: &[Value], version: &str) -> String {
    list.iter()
        .find(|p| p["version"] == version)
        .map(|p| p["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("version {version} not listed in {list:?}"))
}

pub(crate) async fn event_types(s: &TestServer) -> Vec<(String, String)> {
    let r = s
        .admin()
        .call("listEvents", &[("listall", "true"), ("pagesize", "500")])
        .await;
    items(r.ok("listEvents"), "event")
        .into_iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["description"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_bare_server_serves_dummy_backups_from_the_bundled_provider() {
    let s = TestServer::start().await;
    let r = s.admin().call("listBackupProviders", &[]).await;
    let names: Vec<&str> = items(r.ok("listBackupProviders"), "providers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"dummy"), "{names:?}");
    let listed = plugins(&s).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["source"], "bundled");
    assert_eq!(listed[0]["state"], "Active");
    assert_eq!(listed[0]["zones"][0]["zoneid"], s.zone_id.as_str());

    let offering = import(&s, "gold-policy", "gold", true).await;
    let admin = s.admin();
    let vm = vm(&s, &admin, "bare-vm", false).await;
    assign(&admin, &id(&vm), &id(&offering)).await;
    let taken = backup(&admin, &id(&vm)).await;
    assert_eq!(taken["status"], "BackedUp", "{taken}");

    // Switching the zone to the other bundled provider is an event naming both and the zone.
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "veeam",
        Some(&s.zone_id),
    )
    .await;
    let mut swapped = None;
    for _ in 0..100 {
        swapped = event_types(&s)
            .await
            .into_iter()
            .find(|(t, _)| t == "BACKUP.PROVIDER.SWAP");
        if swapped.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, description) = swapped.expect("a swap event within 5 s");
    assert!(description.contains(&s.zone_id), "{description}");
    assert!(
        description.contains("dummy") && description.contains("veeam"),
        "{description}"
    );
}

#[tokio::test]
async fn a_signed_version_swaps_in_under_load_finishes_its_operations_and_rolls_back() {
    let s = TestServer::start().await;
    let installed = install_next(&s).await;
    assert_eq!(installed["state"], "Installed", "{installed}");
    assert_eq!(installed["signer"], "vendor");
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.0.0"), "Active");
    assert_eq!(state_of(&listed, "1.1.0"), "Installed");

    let offering = import(&s, "gold-policy", "gold", true).await;
    let admin = s.admin();
    let mut vms = Vec::new();
    for i in 0..3 {
        let vm = vm(&s, &admin, &format!("swap-vm-{i}"), false).await;
        assign(&admin, &id(&vm), &id(&offering)).await;
        vms.push(id(&vm));
    }
    set_config(
        &s,
        "backup.plugin.dummy.backup-seconds",
        "1",
        Some(&s.zone_id),
    )
    .await;

    // Continuous signed requests while the version switches twice.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failed < 2_000 {
            for command in ["listBackupProviders", "listBackupOfferings", "listZones"] {
                let r = admin.call(command, &[]).await;
                if r.status == 200 {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            tokio::task::yield_now().await;
        }
        (ok, failed)
    };
    let swaps = async {
        let r = admin
            .call(
                "updateBackupProviderPlugin",
                &[("name", "dummy"), ("version", "1.1.0")],
            )
            .await;
        assert_eq!(
            r.ok("updateBackupProviderPlugin")["backupproviderplugin"]["state"],
            "Active"
        );
        // Backups start on 1.1.0 and stay pending for a second …
        let mut jobs = Vec::new();
        for vm in &vms {
            let r = admin
                .call("createBackup", &[("virtualmachineid", vm)])
                .await;
            jobs.push(r.ok("createBackup")["jobid"].as_str().unwrap().to_string());
        }
        // … while 1.0.0 (which knows nothing of pending backups) takes new calls.
        let r = admin
            .call(
                "updateBackupProviderPlugin",
                &[("name", "dummy"), ("rollback", "true")],
            )
            .await;
        assert_eq!(
            r.ok("updateBackupProviderPlugin")["backupproviderplugin"]["version"],
            "1.0.0"
        );
        for job in &jobs {
            s.wait_job(job).await;
            let done = admin
                .call("queryAsyncJobResult", &[("jobid", job)])
                .await
                .ok("queryAsyncJobResult")
                .clone();
            job_ok(&done);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let ((ok, failed), ()) = tokio::join!(load, swaps);
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the swaps",
        ok + failed
    );
    assert!(ok > 0);
    for vm in &vms {
        let r = admin
            .call(
                "listBackups",
                &[("virtualmachineid", vm), ("listall", "true")],
            )
            .await;
        let backups = items(r.ok("listBackups"), "backup");
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert_eq!(backups[0]["status"], "BackedUp");
    }
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.0.0"), "Active");
    assert_eq!(state_of(&listed, "1.1.0"), "Installed");

    let events = event_types(&s).await;
    for wanted in [
        "BACKUP.PROVIDER.INSTALL",
        "BACKUP.PROVIDER.UPGRADE",
        "BACKUP.PROVIDER.ROLLBACK",
        "BACKUP.PROVIDER.KEY.ADD",
    ] {
        let found = events.iter().find(|(t, _)| t == wanted);
        let (_, description) = found.unwrap_or_else(|| panic!("no {wanted} event in {events:?}"));
        assert!(
            description.contains("sha256") || wanted.contains("KEY"),
            "{description}"
        );
    }
}

#[tokio::test]
async fn unsigned_tampered_and_unknown_key_uploads_are_refused_and_nothing_is_installed() {
    let s = TestServer::start().await;
    let wasm = component_bytes(NEXT);

    let (status, body) = upload(&s, wasm.clone(), &[]).await;
    assert_eq!(status, 431, "{body}");
    assert!(error_text(&body).contains("not signed"), "{body}");

    let (secret, public) = key();
    trust(&s, "vendor", &public).await;
    // Valid component, but not the bytes that were signed: a custom section appended.
    let signature = sign(&secret, &wasm, "dummy", "1.1.0");
    let mut tampered = wasm.clone();
    tampered.extend_from_slice(&[0x00, 0x06, 0x05, b'e', b'x', b't', b'r', b'a']);
    let (status, body) = upload(&s, tampered, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 431, "{body}");
    assert!(
        error_text(&body).contains("matches no trusted key"),
        "{body}"
    );

    let (stranger, _) = key();
    let foreign = sign(&stranger, &wasm, "dummy", "1.1.0");
    let (status, body) = upload(&s, wasm.clone(), &[("pluginsignature", &foreign)]).await;
    assert_eq!(status, 431, "{body}");
    assert!(
        error_text(&body).contains("matches no trusted key"),
        "{body}"
    );

    // A signature over another version does not carry over.
    let other_version = sign(&secret, &wasm, "dummy", "1.2.0");
    let (status, _) = upload(&s, wasm.clone(), &[("pluginsignature", &other_version)]).await;
    assert_eq!(status, 431);

    assert_eq!(plugins(&s).await.len(), 1, "only the bundled dummy");
    let stored = std::fs::read_dir(s.dir.path().join("plugins"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stored, 0, "nothing written to the plugins directory");
    let refusals = event_types(&s)
        .await
        .into_iter()
        .filter(|(t, _)| t == "BACKUP.PROVIDER.SIGNATURE")
        .count();
    assert_eq!(refusals, 4);
}

#[tokio::test]
async fn bad_components_are_refused_with_the_reason() {
    let s = TestServer::start().await;
    let (secret, public) = key();
    trust(&s, "vendor", &public).await;
    let wasm = component_bytes(NEXT);
    let signature = sign(&secret, &wasm, "dummy", "1.1.0");

    let truncated = wasm[..wasm.len() / 2].to_vec();
    let (status, body) = upload(&s, truncated, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 431);
    assert!(error_text(&body).contains("truncated"), "{body}");

    let wrong_world = component_bytes("bnr_fixture_wrong_world");
    let (status, body) = upload(&s, wrong_world, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 431);
    assert!(error_text(&body).contains("cannot be installed"), "{body}");

    let future = component_bytes("bnr_fixture_future_version");
    let (status, body) = upload(&s, future, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 431);
    assert!(error_text(&body).contains("version"), "{body}");

    // The bundled dummy 1.0.0 again: a duplicate name and version.
    let bundled = bnr::plugins::bundled::BUNDLED
        .iter()
        .find(|b| b.file == "bnr_dummy.wasm")
        .expect("dummy is bundled");
    let again = sign(&secret, bundled.wasm, "dummy", "1.0.0");
    let (status, body) = upload(&s, bundled.wasm.to_vec(), &[("pluginsignature", &again)]).await;
    assert_eq!(status, 431);
    assert!(error_text(&body).contains("already installed"), "{body}");

    let huge = vec![0u8; bnr::plugins::MAX_UPLOAD_BYTES + 1];
    let (status, body) = upload(&s, huge, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("larger than"), "{body}");
    // Only an upload may be that large: any other body stops at 1 MiB.
    let form = format!(
        "command=listZones&padding={}",
        "x".repeat(bnr::api::MAX_BODY_BYTES)
    );
    let r = s
        .send(
            Method::POST,
            "/client/api",
            Some(form),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);

    let r = s
        .admin()
        .call("addBackupProviderPlugin", &[("file", "../etc/passwd")])
        .await;
    assert_eq!(r.status, 431);
    assert_eq!(plugins(&s).await.len(), 1);
}

#[tokio::test]
async fn a_failing_health_probe_keeps_the_old_version() {
    let s = TestServer::start().await;
    install_next(&s).await;
    set_config(
        &s,
        "backup.plugin.dummy.refuse-policies",
        "true",
        Some(&s.zone_id),
    )
    .await;
    let r = s
        .admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await;
    assert_eq!(r.status, 530, "{}", r.text);
    assert!(r.text.contains("health probe"), "{}", r.text);
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.0.0"), "Active");
    assert_eq!(state_of(&listed, "1.1.0"), "Installed");
    assert!(
        event_types(&s)
            .await
            .iter()
            .any(|(t, d)| t == "BACKUP.PROVIDER.PROBE" && d.contains("1.1.0"))
    );
    // The old version still serves.
    import(&s, "gold-policy", "gold", true).await;
}

#[tokio::test]
async fn installed_versions_survive_a_restart_and_delete_is_guarded() {
    let s = TestServer::start().await;
    install_next(&s).await;
    s.admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await
        .ok("updateBackupProviderPlugin");
    let r = s
        .admin()
        .call(
            "deleteBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await;
    assert_eq!(r.status, 530, "{}", r.text);
    assert!(r.text.contains("serves zones"), "{}", r.text);
    let r = s
        .admin()
        .call(
            "deleteBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.0.0")],
        )
        .await;
    assert!(r.text.contains("bundled"), "{}", r.text);

    let dir = std::mem::replace(&mut { s }.dir, tempfile::tempdir().unwrap());
    let source = default_providers(dir.path());
    let s = start_from(dir, source).await;
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.1.0"), "Active", "{listed:?}");
    assert_eq!(state_of(&listed, "1.0.0"), "Installed");

    // Back to the bundled version, then the installed one can go.
    s.admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("rollback", "true")],
        )
        .await
        .ok("updateBackupProviderPlugin");
    s.admin()
        .call(
            "deleteBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await
        .ok("deleteBackupProviderPlugin");
    assert_eq!(plugins(&s).await.len(), 1);
    assert!(
        event_types(&s)
            .await
            .iter()
            .any(|(t, _)| t == "BACKUP.PROVIDER.DELETE")
    );
}

#[tokio::test]
async fn the_development_switch_accepts_an_unsigned_upload_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let opts = bnr::inventory::bootstrap::BootstrapOptions {
        admin_password: Some(ADMIN_PASSWORD.into()),
        admin_keys: Some((ADMIN_API_KEY.into(), ADMIN_SECRET_KEY.into())),
    };
    let (state, boot) = bnr::api::serve::prepare_with_policy(
        dir.path(),
        &opts,
        default_providers(dir.path()),
        true,
    )
    .await
    .expect("server start");
    let s = TestServer {
        router: bnr::api::router(state.clone()),
        state,
        zone_id: boot.expect("fresh").zone_uuid,
        dir,
        database: None,
    };
    let (status, body) = upload(&s, component_bytes(NEXT), &[]).await;
    assert_eq!(status, 200, "{body}");
    let plugin = &body["addbackupproviderpluginresponse"]["backupproviderplugin"];
    assert_eq!(plugin["signer"], "unsigned");
    assert_eq!(plugin["version"], "1.1.0");
}
