//! A newer version of a provider takes over an older one's pending operations only when it
//! declares that it can (`adopts-operations-from`), over the HTTP API: without the
//! declaration the operation stays on its version and that version cannot be deleted; with
//! it, the old version can go and the new one finishes the operation.

use serde_json::Value;

use crate::bnr_support::*;
use crate::lifecycle_plugins::{event_types, key, plugins, sign, state_of, trust, upload};
use crate::support::component_bytes;
use crate::support_api::*;

/// dummy 1.1.0, adopting `>=1.0.0, <2.0.0`.
const NEXT: (&str, &str) = ("bnr_fixture_dummy_next", "1.1.0");
/// dummy 1.2.0, adopting nothing.
const PLAIN: (&str, &str) = ("bnr_fixture_dummy_next_plain", "1.2.0");
/// dummy 1.3.0, adopting `>=1.1.0, <2.0.0`.
const ADOPTER: (&str, &str) = ("bnr_fixture_dummy_next_adopter", "1.3.0");

/// Installs the given dummy versions, signed by one freshly trusted key.
async fn install(s: &TestServer, components: &[(&str, &str)]) {
    let (secret, public) = key();
    trust(s, "vendor", &public).await;
    for (artifact, version) in components {
        let wasm = component_bytes(artifact);
        let signature = sign(&secret, &wasm, "dummy", version);
        let (status, body) = upload(s, wasm, &[("pluginsignature", &signature)]).await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn activate(s: &TestServer, version: &str) {
    let r = s
        .admin()
        .call(
            "updateBackupProviderPlugin",
            &[("name", "dummy"), ("version", version)],
        )
        .await;
    assert_eq!(
        r.ok("updateBackupProviderPlugin")["backupproviderplugin"]["state"],
        "Active"
    );
}

/// Starts a backup on the active version that stays pending for a few seconds, and returns
/// its job id once the operation is persisted and being polled (the job reports progress).
async fn pending_backup(s: &TestServer) -> (String, String) {
    let offering = import(s, "gold-policy", "gold", true).await;
    let admin = s.admin();
    let vm = vm(s, &admin, "takeover-vm", false).await;
    assign(&admin, &id(&vm), &id(&offering)).await;
    set_config(
        s,
        "backup.plugin.dummy.backup-seconds",
        "6",
        Some(&s.zone_id),
    )
    .await;
    let r = admin
        .call("createBackup", &[("virtualmachineid", &id(&vm))])
        .await;
    let job = r.ok("createBackup")["jobid"].as_str().unwrap().to_string();
    let mut progress = Value::Null;
    for _ in 0..400 {
        progress = admin
            .call("queryAsyncJobResult", &[("jobid", &job)])
            .await
            .ok("queryAsyncJobResult")["jobprocstatus"]
            .clone();
        if progress == 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(progress, 50, "the backup never reported progress");
    (job, id(&vm))
}

/// deleteBackupProviderPlugin, retried (bounded) while a poll of the operation is the only
/// running call, as the refusal tells an admin to do.
async fn delete(s: &TestServer, version: &str) -> Resp {
    let mut r = None;
    for _ in 0..40 {
        let answer = s
            .admin()
            .call(
                "deleteBackupProviderPlugin",
                &[("name", "dummy"), ("version", version)],
            )
            .await;
        let busy = answer.status != 200 && !answer.text.contains(" 0 running calls");
        r = Some(answer);
        if !busy {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    r.expect("one answer")
}

async fn finished_backup(s: &TestServer, job: &str, vm: &str) {
    s.wait_job(job).await;
    let admin = s.admin();
    let done = admin
        .call("queryAsyncJobResult", &[("jobid", job)])
        .await
        .ok("queryAsyncJobResult")
        .clone();
    job_ok(&done);
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

#[tokio::test]
async fn an_operation_stays_on_its_version_when_the_newer_one_does_not_adopt_it() {
    let s = TestServer::start().await;
    install(&s, &[NEXT, PLAIN]).await;
    let listed = plugins(&s).await;
    let declared = |version: &str| {
        listed
            .iter()
            .find(|p| p["version"] == version)
            .map(|p| p["adoptsoperationsfrom"].clone())
    };
    assert_eq!(declared("1.1.0"), Some(Value::from(">=1.0.0, <2.0.0")));
    assert_eq!(declared("1.2.0"), Some(Value::Null), "{listed:?}");

    activate(&s, NEXT.1).await;
    let (job, vm) = pending_backup(&s).await;
    activate(&s, PLAIN.1).await;

    let r = delete(&s, NEXT.1).await;
    assert_eq!(r.status, 530, "{}", r.text);
    assert!(r.text.contains("1 pending operations"), "{}", r.text);
    assert!(
        r.text
            .contains("dummy 1.2.0 does not take over its operations"),
        "{}",
        r.text
    );
    assert_eq!(state_of(&plugins(&s).await, "1.1.0"), "Installed");

    // It finishes on 1.1.0, which can go afterwards.
    finished_backup(&s, &job, &vm).await;
    let r = delete(&s, NEXT.1).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_newer_version_that_adopts_the_operations_lets_the_old_one_go_and_finishes_them() {
    let s = TestServer::start().await;
    install(&s, &[NEXT, ADOPTER]).await;
    activate(&s, NEXT.1).await;
    let (job, vm) = pending_backup(&s).await;
    activate(&s, ADOPTER.1).await;

    let r = delete(&s, NEXT.1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = plugins(&s).await;
    assert!(
        !listed.iter().any(|p| p["version"] == "1.1.0"),
        "{listed:?}"
    );
    let events = event_types(&s).await;
    let deleted = events
        .iter()
        .find(|(t, _)| t == "BACKUP.PROVIDER.DELETE")
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    assert!(
        deleted.contains("1 pending operations are taken over by dummy 1.3.0"),
        "{events:?}"
    );

    // Only 1.3.0 is left to poll the operation started on 1.1.0.
    finished_backup(&s, &job, &vm).await;
}
