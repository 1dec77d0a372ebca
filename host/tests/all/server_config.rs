//! Settings over the API, and events.

use crate::support_api::*;
use bnr::config::{BACKUP_FRAMEWORK_ENABLED, Definition, Kind};

#[tokio::test]
async fn update_configuration_at_zone_scope_leaves_the_global_value_and_notifies() {
    let s = TestServer::start().await;
    let a = s.admin();
    let mut changes = s.state.settings().subscribe();
    let r = a
        .call(
            "updateConfiguration",
            &[
                ("name", BACKUP_FRAMEWORK_ENABLED),
                ("value", "false"),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    let c = &r.ok("updateConfiguration")["configuration"];
    assert_eq!(c["value"], "false");
    assert_eq!(c["scope"], "zone");
    assert_eq!(c["isdynamic"], false);
    let change = changes.recv().await.expect("change notice");
    assert_eq!(change.name, BACKUP_FRAMEWORK_ENABLED);
    assert!(change.zone_id.is_some());

    let zone = a
        .call(
            "listConfigurations",
            &[("name", BACKUP_FRAMEWORK_ENABLED), ("zoneid", &s.zone_id)],
        )
        .await;
    assert_eq!(
        zone.ok("listConfigurations")["configuration"][0]["value"],
        "false"
    );
    let global = a
        .call("listConfigurations", &[("name", BACKUP_FRAMEWORK_ENABLED)])
        .await;
    assert_eq!(
        global.ok("listConfigurations")["configuration"][0]["value"],
        "true"
    );
    let zone_id = change.zone_id;
    assert!(
        !s.state
            .settings()
            .get_bool(BACKUP_FRAMEWORK_ENABLED, zone_id)
    );
    assert!(s.state.settings().get_bool(BACKUP_FRAMEWORK_ENABLED, None));
}

#[tokio::test]
async fn zone_values_fall_back_to_global_then_default() {
    let s = TestServer::start().await;
    let settings = s.state.settings();
    assert_eq!(
        settings.get_i64("backup.framework.sync.interval", Some(1)),
        Some(300)
    );
    s.admin()
        .call(
            "updateConfiguration",
            &[("name", "backup.framework.sync.interval"), ("value", "60")],
        )
        .await
        .ok("updateConfiguration");
    assert_eq!(
        settings.get_i64("backup.framework.sync.interval", Some(1)),
        Some(60)
    );
}

#[tokio::test]
async fn invalid_updates_are_431() {
    let s = TestServer::start().await;
    let a = s.admin();
    a.call(
        "updateConfiguration",
        &[("name", "no.such.setting"), ("value", "1")],
    )
    .await
    .err("updateConfiguration", 431);
    a.call(
        "updateConfiguration",
        &[("name", BACKUP_FRAMEWORK_ENABLED), ("value", "yes")],
    )
    .await
    .err("updateConfiguration", 431);
    a.call(
        "updateConfiguration",
        &[
            ("name", "backup.framework.sync.interval"),
            ("value", "soon"),
        ],
    )
    .await
    .err("updateConfiguration", 431);
    a.call(
        "updateConfiguration",
        &[
            ("name", "backup.framework.sync.interval"),
            ("value", "5"),
            ("zoneid", &s.zone_id),
        ],
    )
    .await
    .err("updateConfiguration", 431);
}

#[tokio::test]
async fn secret_settings_registered_by_a_provider_are_masked() {
    let s = TestServer::start().await;
    s.state
        .settings()
        .register(
            Definition::new(
                "backup.plugin.test.password",
                Kind::String,
                "",
                "vendor password",
            )
            .zone_scoped()
            .secret(),
        )
        .expect("register");
    let a = s.admin();
    let r = a
        .call(
            "updateConfiguration",
            &[
                ("name", "backup.plugin.test.password"),
                ("value", "hunter2"),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    assert_eq!(
        r.ok("updateConfiguration")["configuration"]["value"],
        "*****"
    );
    assert!(!r.text.contains("hunter2"));
    let listed = a
        .call("listConfigurations", &[("name", "backup.plugin.test")])
        .await;
    assert!(!listed.text.contains("hunter2"));
    // Unset (globally), the secret shows empty rather than like a set one.
    let global = a
        .call(
            "listConfigurations",
            &[("name", "backup.plugin.test.password")],
        )
        .await;
    assert_eq!(
        global.ok("listConfigurations")["configuration"][0]["value"],
        ""
    );
    assert_eq!(
        s.state
            .settings()
            .get_string(
                "backup.plugin.test.password",
                s.state
                    .store()
                    .read_blocking(|c| bnr::inventory::zone_by_name(c, "zone1"))
                    .unwrap()
                    .map(|z| z.id)
            )
            .as_deref(),
        Some("hunter2")
    );
}

#[tokio::test]
async fn events_are_recorded_and_scoped_to_their_account() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice", "User", None).await;
    let bob = s.create_user("bob", "User", None).await;
    let alice_client = s.client(alice);
    s.deploy(&alice_client, "web1", &[]).await;
    let r = alice_client
        .call("listEvents", &[("type", "VM.CREATE")])
        .await;
    let events = r.ok("listEvents");
    assert_eq!(events["count"], 1);
    assert_eq!(events["event"][0]["account"], "alice");
    let r = s
        .client(bob)
        .call("listEvents", &[("type", "VM.CREATE")])
        .await;
    assert_eq!(r.json, serde_json::json!({"listeventsresponse": {}}));
    let r = s
        .admin()
        .call("listEvents", &[("listall", "true"), ("keyword", "web1")])
        .await;
    assert!(
        r.ok("listEvents")["count"].as_u64().unwrap() >= 2,
        "create + start: {}",
        r.text
    );
}
