//! Per-zone grants over the HTTP API, switches refused for needs a zone does not grant, the
//! deadline sweep cancelling on the version that started an operation, and a component of the
//! oldest WIT version serving a zone next to the newest dummy.

use serde_json::Value;

use bnr::api::serve::default_providers;

use crate::bnr_support::*;
use crate::lifecycle_plugins::{
    error_text, event_types, install_next, key, plugins, sign, state_of, trust, upload,
};
use crate::sched_support::{scalar, sync};
use crate::support::{WIT_1_0, component_bytes};
use crate::support_api::*;

const HOSTS: &str = "bnr_fixture_dummy_hosts";
const NEED: &str = "remote-exec-on-instance-host";

async fn create_zone(s: &TestServer, name: &str) -> String {
    let r = s.admin().call("createZone", &[("name", name)]).await;
    id(&r.ok("createZone")["zone"])
}

async fn grant(s: &TestServer, zone: &str, provider: &str, grants: Option<&str>) -> Resp {
    let mut p = vec![("zoneid", zone), ("provider", provider)];
    if let Some(g) = grants {
        p.push(("grants", g));
    }
    s.admin().call("updateBackupProviderGrants", &p).await
}

/// The `zones` entry of `zone` in the listing of the active version of `provider`.
async fn zone_entry(s: &TestServer, provider: &str, zone: &str) -> Option<Value> {
    let r = s
        .admin()
        .call("listBackupProviderPlugins", &[("name", provider)])
        .await;
    items(r.ok("listBackupProviderPlugins"), "backupproviderplugin")
        .into_iter()
        .filter(|p| p["state"] == "Active")
        .flat_map(|p| p["zones"].as_array().cloned().unwrap_or_default())
        .find(|z| z["zoneid"] == zone)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn plugin_setting(s: &TestServer, zone: &str) -> String {
    let r = s
        .admin()
        .call(
            "listConfigurations",
            &[
                ("name", "backup.framework.provider.plugin"),
                ("zoneid", zone),
            ],
        )
        .await;
    items(r.ok("listConfigurations"), "configuration")
        .into_iter()
        .find(|c| c["name"] == "backup.framework.provider.plugin")
        .and_then(|c| c["value"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn grants_are_checked_against_declared_needs_listed_evented_and_kept_across_a_restart() {
    let s = TestServer::start().await;
    let zone2 = create_zone(&s, "zone2").await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "veeam",
        Some(&zone2),
    )
    .await;

    let r = grant(
        &s,
        &zone2,
        "veeam",
        Some(" Mirror.LAN:8443 , exec:Proxy.lan"),
    )
    .await;
    let answer = r.ok("updateBackupProviderGrants")["backupprovidergrants"].clone();
    assert_eq!(answer["zoneid"], zone2.as_str());
    assert_eq!(
        strings(&answer["grants"]),
        vec!["mirror.lan:8443", "exec:proxy.lan"]
    );
    let entry = zone_entry(&s, "veeam", &zone2).await.expect("zone2 listed");
    assert!(
        strings(&entry["httpgrants"]).contains(&"mirror.lan:8443".to_string()),
        "{entry}"
    );
    assert!(
        strings(&entry["execgrants"]).contains(&"proxy.lan".to_string()),
        "{entry}"
    );

    // Refusals name the entry and the reason, and change nothing.
    let zone1 = s.zone_id.clone();
    let cases = [
        (
            zone1.as_str(),
            "dummy",
            "mirror.lan",
            "declares no HTTP need",
        ),
        (
            zone1.as_str(),
            "dummy",
            "exec:kvm1.lan",
            "declares no remote-exec need",
        ),
        (zone2.as_str(), "veeam", NEED, "does not declare that need"),
        (
            zone2.as_str(),
            "veeam",
            "ftp://files.lan",
            "not an HTTP destination",
        ),
        (zone2.as_str(), "veeam", "exec:", "does not name a host"),
        (zone2.as_str(), "nosuch", "mirror.lan", "not installed"),
    ];
    for (zone, provider, grants, reason) in cases {
        let r = grant(&s, zone, provider, Some(grants)).await;
        let text = r.err("updateBackupProviderGrants", 431);
        assert!(text.contains(reason), "{grants}: {text}");
    }
    let entry = zone_entry(&s, "veeam", &zone2).await.expect("zone2 listed");
    assert!(strings(&entry["httpgrants"]).contains(&"mirror.lan:8443".to_string()));

    let events = event_types(&s).await;
    let granted: Vec<&String> = events
        .iter()
        .filter(|(t, _)| t == "BACKUP.PROVIDER.GRANT")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(granted.len(), 1, "{events:?}");
    assert!(
        granted[0].contains("veeam")
            && granted[0].contains("sha256")
            && granted[0].contains(&zone2)
            && granted[0].contains("mirror.lan:8443"),
        "{}",
        granted[0]
    );

    // Kept across a restart, then withdrawn.
    let dir = std::mem::replace(&mut { s }.dir, tempfile::tempdir().unwrap());
    let source = default_providers(dir.path());
    let s = start_from(dir, source).await;
    let entry = zone_entry(&s, "veeam", &zone2).await.expect("zone2 listed");
    assert!(
        strings(&entry["httpgrants"]).contains(&"mirror.lan:8443".to_string()),
        "{entry}"
    );
    let r = grant(&s, &zone2, "veeam", None).await;
    assert!(
        strings(&r.ok("updateBackupProviderGrants")["backupprovidergrants"]["grants"]).is_empty()
    );
    // What its settings name stays granted; the withdrawn extras do not.
    let entry = zone_entry(&s, "veeam", &zone2).await.expect("zone2 listed");
    assert!(
        !strings(&entry["httpgrants"]).contains(&"mirror.lan:8443".to_string()),
        "{entry}"
    );
    assert!(
        !strings(&entry["execgrants"]).contains(&"proxy.lan".to_string()),
        "{entry}"
    );
}

#[tokio::test]
async fn a_version_whose_needs_a_zone_does_not_grant_is_refused_and_the_old_one_stays() {
    let s = TestServer::start().await;
    let zone1 = s.zone_id.clone();
    let zone2 = create_zone(&s, "zone2").await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "veeam",
        Some(&zone2),
    )
    .await;
    let (secret, public) = key();
    trust(&s, "vendor", &public).await;
    let wasm = component_bytes(HOSTS);
    let signature = sign(&secret, &wasm, "dummy", "1.2.0");
    let (status, body) = upload(&s, wasm, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 200, "{body}");
    let sha256 = body["addbackupproviderpluginresponse"]["backupproviderplugin"]["sha256"]
        .as_str()
        .expect("sha256")
        .to_string();

    // Upgrade: zone1 uses dummy and does not grant the need.
    let r = s
        .admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.2.0")],
        )
        .await;
    let text = r.err("updateBackupProviderPlugin", 530);
    assert!(
        text.contains(NEED) && text.contains(&zone1) && text.contains("dummy 1.0.0 stays"),
        "{text}"
    );
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.0.0"), "Active");
    assert_eq!(state_of(&listed, "1.2.0"), "Installed");
    // The old version keeps serving zone1.
    let offering = import(&s, "gold-policy", "gold", true).await;
    assert_eq!(offering["provider"], "dummy", "{offering}");

    // Granted (before the version that needs it serves), the upgrade goes through.
    grant(&s, &zone1, "dummy", Some(NEED))
        .await
        .ok("updateBackupProviderGrants");
    s.admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.2.0")],
        )
        .await
        .ok("updateBackupProviderPlugin");
    assert_eq!(state_of(&plugins(&s).await, "1.2.0"), "Active");

    // Zone switch: zone2 does not grant the need, so it stays on veeam.
    let r = s
        .admin()
        .call(
            "updateConfiguration",
            &[
                ("name", "backup.framework.provider.plugin"),
                ("value", "dummy"),
                ("zoneid", &zone2),
            ],
        )
        .await;
    assert_ne!(r.status, 200, "{}", r.text);
    let text = error_text(&r.json);
    assert!(
        text.contains(NEED) && text.contains(&zone2) && text.contains("keeps its provider"),
        "{text}"
    );
    assert_eq!(plugin_setting(&s, &zone2).await, "veeam");
    let refused: Vec<String> = event_types(&s)
        .await
        .into_iter()
        .filter(|(t, _)| t == "BACKUP.PROVIDER.NEEDS")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|d| d.contains(&sha256)), "{refused:?}");

    grant(&s, &zone2, "dummy", Some(NEED))
        .await
        .ok("updateBackupProviderGrants");
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "dummy",
        Some(&zone2),
    )
    .await;
    assert_eq!(plugin_setting(&s, &zone2).await, "dummy");
}

#[tokio::test]
async fn an_expired_operation_is_cancelled_on_the_version_that_started_it() {
    let s = TestServer::start().await;
    let next = install_next(&s).await;
    let next_sha = next["sha256"].as_str().expect("sha256").to_string();
    let admin = s.admin();
    admin
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await
        .ok("updateBackupProviderPlugin");
    set_config(
        &s,
        "backup.plugin.dummy.backup-seconds",
        "3600",
        Some(&s.zone_id),
    )
    .await;
    set_config(&s, "backup.framework.operation.timeout", "60", None).await;
    let offering = import(&s, "gold-policy", "gold", true).await;
    let vm = vm(&s, &admin, "expiring", false).await;
    assign(&admin, &id(&vm), &id(&offering)).await;
    let r = admin
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let job = r.ok("createBackup")["jobid"]
        .as_str()
        .expect("jobid")
        .to_string();
    let mut persisted = false;
    for _ in 0..300 {
        if scalar(&s, "SELECT COUNT(*) FROM provider_operations").await == 1 {
            persisted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(persisted, "the backup operation is persisted within 30 s");

    // 1.0.0 (which knows no pending backups: its cancel answers "no operation") serves again.
    admin
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("rollback", "true")],
        )
        .await
        .ok("updateBackupProviderPlugin");
    assert_eq!(state_of(&plugins(&s).await, "1.0.0"), "Active");

    let deadline = scalar(&s, "SELECT deadline FROM provider_operations").await;
    let interval = 300; // backup.framework.sync.interval
    let report = sync(&s, deadline + interval + 1).await;
    let zone = report.zone(&s.zone_id).expect("zone");
    assert_eq!(zone.expired_operations, 1, "{zone:?}");
    assert_eq!(zone.cancelled.len(), 1, "{zone:?}");
    let cancelled = &zone.cancelled[0];
    assert_eq!(cancelled.origin.sha256.as_deref(), Some(next_sha.as_str()));
    assert_eq!(cancelled.origin.version.as_deref(), Some("1.1.0"));
    assert_eq!(cancelled.asked_sha256.as_deref(), Some(next_sha.as_str()));
    assert_eq!(cancelled.error, None, "{cancelled:?}");

    s.wait_job(&job).await;
    let done = admin
        .call("queryAsyncJobResult", &[("jobid", &job)])
        .await
        .ok("queryAsyncJobResult")
        .clone();
    let (_, text) = job_error(&done);
    assert!(text.contains("did not finish by its deadline"), "{text}");
}

#[tokio::test]
async fn a_wit_1_0_component_installed_through_the_api_backs_up_next_to_the_newest_dummy() {
    let s = TestServer::start().await;
    let (secret, public) = key();
    trust(&s, "legacy-vendor", &public).await;
    let wasm = component_bytes(WIT_1_0);
    let signature = sign(&secret, &wasm, "legacy", "1.0.0");
    let (status, body) = upload(&s, wasm, &[("pluginsignature", &signature)]).await;
    assert_eq!(status, 200, "{body}");
    let installed = &body["addbackupproviderpluginresponse"]["backupproviderplugin"];
    assert_eq!(installed["witversion"], "1.0.0", "{installed}");
    assert_eq!(installed["state"], "Active", "{installed}");
    assert_eq!(installed["signer"], "legacy-vendor");
    let newest = install_next(&s).await;
    let admin = s.admin();
    admin
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", "1.1.0")],
        )
        .await
        .ok("updateBackupProviderPlugin");

    let zone2 = create_zone(&s, "zone2").await;
    set_config(&s, "backup.framework.enabled", "true", Some(&zone2)).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "legacy",
        Some(&zone2),
    )
    .await;
    let offerings = admin
        .call("listBackupProviderOfferings", &[("zoneid", &zone2)])
        .await;
    let policies = items(
        offerings.ok("listBackupProviderOfferings"),
        "backupoffering",
    );
    assert!(
        policies.iter().any(|p| p["externalid"] == "legacy-daily"),
        "{policies:?}"
    );
    let done = admin
        .call_async(
            "importBackupOffering",
            &[
                ("zoneid", &zone2),
                ("externalid", "legacy-daily"),
                ("name", "Legacy daily"),
                ("description", "from a 1.0.0 component"),
                ("allowuserdrivenbackups", "true"),
            ],
        )
        .await;
    let legacy_offering = job_ok(&done)["backupoffering"].clone();
    let dummy_offering = import(&s, "gold-policy", "gold", true).await;

    let (so, _, template) = s.catalog().await;
    let deployed = admin
        .call_async(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &template),
                ("zoneid", &zone2),
                ("name", "old-wit"),
            ],
        )
        .await;
    let far = job_ok(&deployed)["virtualmachine"].clone();
    let near = vm(&s, &admin, "new-wit", false).await;
    let mut backups = Vec::new();
    for (vm, offering) in [(&far, &legacy_offering), (&near, &dummy_offering)] {
        assign(&admin, &id(vm), &id(offering)).await;
        let done = admin
            .call_async("createBackup", &[("virtualmachineid", &id(vm))])
            .await;
        job_ok(&done);
        let r = admin
            .call(
                "listBackups",
                &[("virtualmachineid", &id(vm)), ("listall", "true")],
            )
            .await;
        let listed: Vec<Value> = items(r.ok("listBackups"), "backup")
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["status"], "BackedUp", "{listed:?}");
        backups.push(listed[0].clone());
    }
    assert_eq!(backups[0]["zoneid"], zone2.as_str());
    assert!(
        backups[0]["externalid"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("legacy-{}", id(&far)))),
        "{}",
        backups[0]
    );
    assert_eq!(backups[1]["zoneid"], s.zone_id.as_str());
    let listed = plugins(&s).await;
    assert_eq!(state_of(&listed, "1.1.0"), "Active", "{listed:?}");
    // The newest dummy is built through the SDK, against the newest supported WIT version.
    let newest_wit = bnr_runtime::SUPPORTED_WIT_VERSIONS
        .rsplit(", ")
        .next()
        .and_then(|v| v.strip_suffix(".x"))
        .expect("a supported version");
    assert!(
        newest["witversion"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{newest_wit}."))),
        "{newest}"
    );
}
