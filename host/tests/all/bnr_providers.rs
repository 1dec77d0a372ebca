//! Providers, the zone gate, provider settings and the plugin setting (spec §2.0, §3.1).

use crate::bnr_support::*;
use crate::support_api::*;

#[tokio::test]
async fn list_backup_providers_shows_the_installed_components() {
    let s = start(Installed::DummyAndScripted).await;
    let r = s.admin().call("listBackupProviders", &[]).await;
    let inner = r.ok("listBackupProviders");
    assert_eq!(inner["count"], 2);
    let names: Vec<&str> = items(inner, "providers")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dummy", "scripted"]);
    assert_eq!(inner["providers"][0]["description"], "Dummy Backup Plugin");

    let only = s
        .admin()
        .call("listBackupProviders", &[("name", "dummy")])
        .await;
    assert_eq!(only.ok("listBackupProviders")["count"], 1);
    let none = s
        .admin()
        .call("listBackupProviders", &[("name", "veeam")])
        .await;
    assert_eq!(*none.ok("listBackupProviders"), serde_json::json!({}));
}

#[tokio::test]
async fn list_backup_providers_shows_what_an_operator_judges_a_provider_by() {
    use sha2::{Digest, Sha256};
    let s = start(Installed::DummyAndScripted).await;
    let r = s.admin().call("listBackupProviders", &[]).await;
    let inner = r.ok("listBackupProviders");
    let dummy = &inner["providers"][0];
    let wasm = std::fs::read(dummy_wasm()).unwrap();
    assert_eq!(dummy["sha256"], hex::encode(Sha256::digest(&wasm)));
    assert_eq!(dummy["version"], "1.0.0");
    assert_eq!(dummy["witversion"], "1.3.0");
    assert_eq!(dummy["deletegranularity"], "restore-point");
    let capabilities = dummy["capabilities"].as_array().unwrap();
    assert!(capabilities.contains(&"instance-from-backup".into()));
    assert!(!capabilities.contains(&"storage-stats".into()));
    assert_eq!(dummy["needs"], serde_json::json!([]));
    // Only the zones a provider serves are listed, each with its (here empty) grants.
    assert_eq!(dummy["zones"][0]["zoneid"], s.zone_id.as_str());
    assert_eq!(dummy["zones"][0]["httpgrants"], serde_json::json!([]));
    let scripted = &inner["providers"][1];
    assert_eq!(scripted["zones"], serde_json::json!([]));
    let settings: Vec<&str> = scripted["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!settings.is_empty(), "{scripted}");
    assert!(scripted["settings"][0]["secret"].is_boolean());

    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let r = s.admin().call("listBackupProviders", &[]).await;
    let inner = r.ok("listBackupProviders");
    assert_eq!(inner["providers"][0]["zones"], serde_json::json!([]));
    assert_eq!(
        inner["providers"][1]["zones"][0]["zoneid"],
        s.zone_id.as_str()
    );
}

#[tokio::test]
async fn provider_administration_is_root_admin_only() {
    let s = start(Installed::Dummy).await;
    let user = s.client(s.create_user("bob", "User", None).await);
    for cmd in [
        "listBackupProviders",
        "listBackupProviderOfferings",
        "importBackupOffering",
    ] {
        let text = user
            .call(cmd, &[("zoneid", &s.zone_id)])
            .await
            .err(cmd, 401);
        assert!(text.contains(cmd), "{text}");
    }
}

#[tokio::test]
async fn provider_offerings_are_the_zone_providers_policies() {
    let s = start(Installed::Dummy).await;
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    let inner = r.ok("listBackupProviderOfferings");
    assert_eq!(inner["count"], 2);
    let gold = &inner["backupoffering"][0];
    assert_eq!(gold["externalid"], "gold-policy");
    assert_eq!(gold["name"], "Golden Policy");
    assert_eq!(gold["description"], "Gold description");
    assert_eq!(gold["zoneid"], s.zone_id.as_str());
    assert_eq!(gold["zonename"], "zone1");
    assert_eq!(gold["provider"], "dummy");
    assert_eq!(gold["crosszoneinstancecreation"], true);
    assert!(gold["id"].is_string());
    assert_eq!(inner["backupoffering"][1]["externalid"], "silver-policy");
}

#[tokio::test]
async fn a_zone_with_the_framework_disabled_refuses_backup_operations() {
    let s = start(Installed::Dummy).await;
    set_config(&s, "backup.framework.enabled", "false", Some(&s.zone_id)).await;
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    let text = r.err("listBackupProviderOfferings", 530);
    assert_eq!(text, "Backup and Recovery feature is disabled for the zone");
    let user = s.client(s.create_user("carol", "User", None).await);
    let vm = vm(&s, &user, "gated", false).await;
    let r = user
        .call(
            "createBackupSchedule",
            &[
                ("virtualmachineid", &id(&vm)),
                ("intervaltype", "DAILY"),
                ("schedule", "00:01"),
                ("timezone", "UTC"),
            ],
        )
        .await;
    assert_eq!(
        r.err("createBackupSchedule", 530),
        "Backup and Recovery feature is disabled for the zone"
    );
    // Listing offerings and providers is not gated.
    s.admin()
        .call("listBackupOfferings", &[])
        .await
        .ok("listBackupOfferings");
    s.admin()
        .call("listBackupProviders", &[])
        .await
        .ok("listBackupProviders");

    set_config(&s, "backup.framework.enabled", "true", Some(&s.zone_id)).await;
    s.admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await
        .ok("listBackupProviderOfferings");
}

#[tokio::test]
async fn the_b_and_r_commands_exist_only_when_the_framework_was_enabled_at_start() {
    let s = start(Installed::Dummy).await;
    set_config(&s, "backup.framework.enabled", "false", None).await;
    // The zone value is still true, but the global one gates every zone.
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    assert_eq!(
        r.err("listBackupProviderOfferings", 530),
        "Backup and Recovery feature is disabled for the zone"
    );
    let TestServer { dir, .. } = s;
    let restarted = start_in(dir, Installed::Dummy).await;
    let r = restarted.admin().call("listBackups", &[]).await;
    assert_eq!(r.status, 432, "{}", r.text);
    assert_eq!(r.json["errorresponse"]["errorcode"], 432);
    let apis = restarted
        .admin()
        .call("listApis", &[("name", "listBackups")])
        .await;
    assert_ne!(
        apis.status, 200,
        "listApis must not know listBackups: {}",
        apis.text
    );
}

#[tokio::test]
async fn the_plugin_setting_only_accepts_installed_providers() {
    let s = start(Installed::DummyAndScripted).await;
    let r = s
        .admin()
        .call(
            "updateConfiguration",
            &[
                ("name", "backup.framework.provider.plugin"),
                ("value", "veeam"),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    let text = r.err("updateConfiguration", 431);
    assert!(text.contains("'veeam' is not installed"), "{text}");
    assert!(text.contains("dummy, scripted"), "{text}");
    let r = s
        .admin()
        .call(
            "updateConfiguration",
            &[("name", "backup.framework.provider.plugin"), ("value", "")],
        )
        .await;
    r.err("updateConfiguration", 431);

    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    assert_eq!(
        r.ok("listBackupProviderOfferings")["backupoffering"][0]["provider"],
        "scripted"
    );
}

#[tokio::test]
async fn provider_settings_are_zone_scoped_configurations() {
    let s = start(Installed::DummyAndScripted).await;
    let r = s
        .admin()
        .call(
            "listConfigurations",
            &[("name", "scripted."), ("zoneid", &s.zone_id)],
        )
        .await;
    let inner = r.ok("listConfigurations");
    let names: Vec<&str> = items(inner, "configuration")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for declared in [
        "backup.plugin.scripted.mode",
        "backup.plugin.scripted.op-seconds",
        "backup.plugin.scripted.restore-points",
    ] {
        assert!(
            names.contains(&declared),
            "{declared} missing from {names:?}"
        );
    }
    let mode = items(inner, "configuration")[0];
    assert_eq!(mode["value"], "ok");
    assert_eq!(mode["scope"], "zone");
    set_config(
        &s,
        "backup.plugin.scripted.op-seconds",
        "7",
        Some(&s.zone_id),
    )
    .await;
    let r = s
        .admin()
        .call(
            "updateConfiguration",
            &[
                ("name", "backup.plugin.scripted.op-seconds"),
                ("value", "soon"),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    r.err("updateConfiguration", 431);
}

#[tokio::test]
async fn a_zone_without_an_installed_provider_says_so() {
    let s = start(Installed::Nothing).await;
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    assert_eq!(
        r.err("listBackupProviderOfferings", 530),
        "Failed to find backup provider by the name dummy"
    );
    let r = s.admin().call("listBackupProviders", &[]).await;
    assert_eq!(*r.ok("listBackupProviders"), serde_json::json!({}));
}

#[tokio::test]
async fn the_providers_directory_is_loaded_and_bad_files_are_skipped() {
    let data = tempfile::tempdir().unwrap();
    let providers = data.path().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::copy(dummy_wasm(), providers.join("bnr_dummy.wasm")).unwrap();
    std::fs::copy(scripted_wasm(), providers.join("scripted.wasm")).unwrap();
    std::fs::copy(
        target_dir()
            .join("fixtures")
            .join("bnr_fixture_wrong_world.wasm"),
        providers.join("wrong-world.wasm"),
    )
    .unwrap();
    std::fs::write(providers.join("junk.wasm"), b"not a component").unwrap();
    std::fs::write(providers.join("notes.txt"), b"ignored").unwrap();
    let opts = bnr::inventory::bootstrap::BootstrapOptions {
        admin_password: Some(ADMIN_PASSWORD.into()),
        admin_keys: Some((ADMIN_API_KEY.into(), ADMIN_SECRET_KEY.into())),
    };
    let (state, boot) = bnr::api::serve::prepare_with(
        data.path(),
        &opts,
        bnr::api::serve::default_providers(data.path()),
    )
    .await
    .expect("a bad provider file does not stop the server");
    let s = TestServer {
        router: bnr::api::router(state.clone()),
        state,
        zone_id: boot.unwrap().zone_uuid,
        dir: data,
        database: None,
    };
    let r = s.admin().call("listBackupProviders", &[]).await;
    let names: Vec<&str> = items(r.ok("listBackupProviders"), "providers")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // The bundled providers, plus scripted from the directory (its bnr_dummy.wasm is the
    // bundled one).
    assert_eq!(names, ["dummy", "networker", "scripted", "veeam"]);
    // The dummy answers through the real component loaded from the directory.
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    assert_eq!(r.ok("listBackupProviderOfferings")["count"], 2);
}
