//! The NetWorker REST side over real HTTP(S), with a plain HTTP client sending requests the way
//! clients do (raw CloudStack-style queries and properly encoded ones).

use std::time::Duration;

use base64::Engine;
use networker_sim::http::{Response, request};
use networker_sim::{Config, Domain, HostConfig, NextBackup, PolicyQuery, Running};
use serde_json::{Value, json};

const UUID: &str = "5f1c3b7e-9a8d-4c2b-8e1f-0a1b2c3d4e5f";
const VM: &str = "i-2-15-VM";

async fn start(tls: bool, tz_offset_secs: i32) -> Running {
    let mut host = HostConfig::new("kvm1", "cluster1");
    host.domains = vec![Domain::with_root_disk(VM, UUID)];
    networker_sim::start(Config {
        tls,
        tz_offset_secs,
        hosts: vec![host],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn get_as(sim: &Running, path_and_query: &str, auth: &str) -> Response {
    let url = format!("{}{path_and_query}", sim.rest_url);
    request(
        "GET",
        &url,
        &[("Authorization", auth), ("Accept", "application/json")],
        None,
        sim.cert_der.as_deref(),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

async fn get(sim: &Running, path_and_query: &str) -> Response {
    get_as(sim, path_and_query, &basic("administrator", "password")).await
}

async fn get_json(sim: &Running, path_and_query: &str) -> Value {
    let r = get(sim, path_and_query).await;
    assert_eq!(r.status, 200, "{path_and_query}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json().unwrap()
}

async fn admin(sim: &Running, method: &str, path: &str, body: Value) -> Response {
    let body = body.to_string();
    request(
        method,
        &format!("{}{path}", sim.admin_url),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        sim.cert_der.as_deref(),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

/// Runs CloudStack's backup command line on kvm1 through the admin endpoint; returns the
/// save time it printed.
async fn backup(sim: &Running, retention: &str) -> i64 {
    let command = format!(
        "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm/nsrkvmbackup.sh -s 127.0.0.1 -R '{retention}' -P Default -c cluster1 -u {UUID} -t {VM}"
    );
    let r = admin(
        sim,
        "POST",
        "/hosts/kvm1/exec",
        json!({ "command": command }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let outcome = r.json().unwrap();
    assert_eq!(outcome["exit"], 0, "{outcome}");
    let stdout = outcome["stdout"].as_str().unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("savetime="))
        .unwrap_or_else(|| panic!("no savetime in {stdout}"));
    line.parse().unwrap()
}

fn naive_local(epoch: i64, tz_offset_secs: i32) -> String {
    let tz = jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(tz_offset_secs).unwrap());
    jiff::Timestamp::from_second(epoch)
        .unwrap()
        .to_zoned(tz)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[tokio::test]
async fn the_probe_needs_basic_auth_over_tls() {
    let sim = start(true, 0).await;
    assert!(sim.rest_url.starts_with("https://127.0.0.1:"));
    assert!(
        sim.cert_pem
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let ok = get_json(&sim, "").await;
    assert!(
        ok["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/nwrestapi/v3/global")
    );
    for auth in [
        basic("administrator", "wrong"),
        basic("root", "password"),
        "Bearer x".into(),
    ] {
        let r = get_as(&sim, "/global/backups", &auth).await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        assert_eq!(r.json().unwrap()["status"]["code"], 401);
    }
    let counters = sim.admin.counters();
    assert_eq!(counters.unauthorized, 3);
    assert_eq!(counters.requests["GET /"], 1);
    assert_eq!(counters.requests["GET /global/backups"], 3);
}

#[tokio::test]
async fn policies_marked_for_cloudstack_are_found_by_comment() {
    let sim = start(false, 0).await;
    let raw = get_json(&sim, "/global/protectionpolicies/?q=comment:-CSBKP-").await;
    let names: Vec<&str> = raw["protectionPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["CSBRONZE", "CSSILVER", "CSGOLD", "Platinum-CSBKP-"]);
    assert_eq!(raw["count"], 4);
    let bronze = &raw["protectionPolicies"][0];
    assert_eq!(bronze["policyProtectionPeriod"], "1 Days");
    assert_eq!(bronze["policyProtectionEnable"], true);
    let id = bronze["resourceId"]["id"].as_str().unwrap();
    assert_eq!(id.split('.').count(), 16, "{id}");
    assert!(id.split('.').all(|b| b.parse::<u8>().is_ok()));
    assert_eq!(
        bronze["workflows"][0]["actions"][0]["actionSpecificData"]["backup"]["backupSpecificData"]
            ["traditional"]["retentionPeriod"],
        "1 Days"
    );
    let encoded = get_json(&sim, "/global/protectionpolicies?q=comment%3A%22-CSBKP-%22").await;
    assert_eq!(encoded["count"], 4);
    let one = get_json(
        &sim,
        "/global/protectionpolicies/CSGOLD?fl=name,policyProtectionPeriod",
    )
    .await;
    assert_eq!(
        one,
        json!({"name": "CSGOLD", "policyProtectionPeriod": "1 Months"})
    );

    sim.admin
        .faults(|f| f.policy_query = PolicyQuery::LeadingDashNegates);
    let none = get_json(&sim, "/global/protectionpolicies/?q=comment:-CSBKP-").await;
    assert_eq!(none, json!({"count": 0}));
    let quoted = get_json(&sim, "/global/protectionpolicies/?q=comment:'-CSBKP-'").await;
    assert_eq!(quoted["count"], 4);
    sim.admin
        .faults(|f| f.policy_query = PolicyQuery::IgnoreQuery);
    assert_eq!(
        get_json(&sim, "/global/protectionpolicies/?q=comment:-CSBKP-").await["count"],
        5
    );
    sim.admin.faults(|f| f.policy_query = PolicyQuery::Empty);
    assert_eq!(
        get_json(&sim, "/global/protectionpolicies/?q=comment:-CSBKP-").await["count"],
        0
    );

    let added = admin(
        &sim,
        "POST",
        "/policies",
        json!({"name": "CSWEEKLY", "comment": "-CSBKP-", "protection_period": "14 Days"}),
    )
    .await;
    assert_eq!(added.status, 204);
    sim.admin.faults(|f| f.policy_query = PolicyQuery::Normal);
    let all = get_json(
        &sim,
        "/global/protectionpolicies/?q=comment:-CSBKP-+and+name:CSWEEKLY",
    )
    .await;
    assert_eq!(
        all["protectionPolicies"][0]["policyProtectionPeriod"],
        "14 Days"
    );
}

#[tokio::test]
async fn a_save_set_is_found_by_name_and_exact_save_time_in_the_servers_zone() {
    let tz = 3 * 3600;
    let sim = start(false, tz).await;
    let save_time = backup(&sim, "7 Days").await;
    let local = naive_local(save_time, tz);

    // CloudStack's form: sent raw, `+` for spaces, naive local time.
    let raw = get_json(
        &sim,
        &format!("/global/backups/?q=name:{VM}+and+saveTime:'{local}'"),
    )
    .await;
    assert_eq!(raw["count"], 1, "{raw}");
    let b = &raw["backups"][0];
    assert_eq!(b["name"], VM);
    assert_eq!(b["clientHostname"], "cluster1");
    assert_eq!(b["level"], "Manual");
    assert_eq!(b["type"], "File");
    assert_eq!(b["size"], json!({"unit": "Byte", "value": 1u64 << 30}));
    assert_eq!(b["saveTime"], format!("{local}+03:00"));
    assert_eq!(b["creationTime"], b["saveTime"]);
    assert!(b["completionTime"].as_str().unwrap().ends_with("+03:00"));
    assert_eq!(b["instances"][0]["id"], save_time.to_string());
    assert_eq!(b["instances"][0]["status"], "Browsable");
    let ssid: u32 = b["shortId"].as_str().unwrap().parse().unwrap();
    assert_eq!(ssid & 0xff_ffff, save_time as u32 & 0xff_ffff);
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(id.split('-').count(), 6);
    let retention = jiff::Timestamp::from_second(save_time + 7 * 86_400).unwrap();
    let expected_retention = retention
        .to_zoned(jiff::tz::TimeZone::fixed(
            jiff::tz::Offset::from_seconds(tz).unwrap(),
        ))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    assert_eq!(b["retentionTime"], expected_retention);

    // Encoded, with an offset, as a range, by id, by client.
    let utc = jiff::Timestamp::from_second(save_time).unwrap().to_string();
    let q = format!("name:{VM} and saveTime:'{utc}'");
    let encoded: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    assert_eq!(
        get_json(&sim, &format!("/global/backups?q={encoded}")).await["count"],
        1
    );
    let before = naive_local(save_time - 60, tz);
    let after = naive_local(save_time + 60, tz);
    let range = get_json(
        &sim,
        &format!("/global/backups/?q=name:{VM}+and+saveTime:['{before}'+TO+'{after}']"),
    )
    .await;
    assert_eq!(range["count"], 1);
    let missed = get_json(
        &sim,
        &format!("/global/backups/?q=name:{VM}+and+saveTime:['{after}'+TO+'{after}']"),
    )
    .await;
    assert_eq!(missed, json!({"count": 0}));
    let by_id = get_json(&sim, &format!("/global/backups/?q=id:{id}")).await;
    assert_eq!(by_id["backups"][0]["shortId"], ssid.to_string());
    assert_eq!(
        get_json(&sim, "/global/backups?q=clientHostname:cluster1").await["count"],
        1
    );
    assert_eq!(
        get_json(&sim, "/global/backups?q=client:cluster1").await["count"],
        1
    );
    assert_eq!(
        get_json(&sim, "/global/backups?q=client:cluster2").await["count"],
        0
    );
    let single = get_json(&sim, &format!("/global/backups/{id}")).await;
    assert_eq!(single["id"], id);

    let clients = get_json(&sim, "/global/clients?q=hostname:cluster1").await;
    assert_eq!(clients["count"], 1);
    let client_id = clients["clients"][0]["resourceId"]["id"].as_str().unwrap();
    let of_client = get_json(&sim, &format!("/global/clients/{client_id}/backups")).await;
    assert_eq!(of_client["count"], 1);
}

#[tokio::test]
async fn delete_removes_a_save_set_once() {
    let sim = start(false, 0).await;
    backup(&sim, "1 Days").await;
    let list = get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    let id = list["backups"][0]["id"].as_str().unwrap().to_string();
    let url = format!("{}/global/backups/{id}", sim.rest_url);
    let auth = basic("administrator", "password");
    let headers = [("Authorization", auth.as_str())];
    let delete = || {
        request(
            "DELETE",
            &url,
            &headers,
            None,
            None,
            Duration::from_secs(30),
        )
    };
    assert_eq!(delete().await.unwrap().status, 204);
    let again = delete().await.unwrap();
    assert_eq!(again.status, 404);
    assert_eq!(again.json().unwrap()["status"]["code"], 404);
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await,
        json!({"count": 0})
    );
    sim.admin
        .faults(|f| f.empty_list = networker_sim::EmptyList::EmptyArray);
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await,
        json!({"backups": [], "count": 0})
    );
    assert_eq!(
        sim.admin.counters().requests["DELETE /global/backups/{id}"],
        2
    );
}

#[tokio::test]
async fn expired_save_sets_stay_listed_as_recyclable_until_purged() {
    let sim = start(false, 0).await;
    let save_time = backup(&sim, "1 Days").await;
    let clock = admin(&sim, "POST", "/clock", json!({"advance_secs": 2 * 86_400})).await;
    assert_eq!(clock.status, 200);
    let list = get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["backups"][0]["instances"][0]["status"], "Recyclable");
    let retention: jiff::Timestamp = list["backups"][0]["retentionTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retention.as_second(), save_time + 86_400);
    let purged = admin(&sim, "POST", "/purge", json!({}))
        .await
        .json()
        .unwrap();
    assert_eq!(purged["purged"], 1);
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await["count"],
        0
    );

    // The other behaviour: expired save sets vanish at once.
    sim.admin.faults(|f| f.purge_on_expiry = true);
    backup(&sim, "1 Days").await;
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await["count"],
        1
    );
    sim.admin.advance_clock(86_401);
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await["count"],
        0
    );
}

#[tokio::test]
async fn zero_or_two_save_sets_can_match_the_next_backup() {
    let sim = start(false, 0).await;
    sim.admin
        .faults(|f| f.next_backup = NextBackup::TwoSaveSets);
    let save_time = backup(&sim, "1 Days").await;
    let local = naive_local(save_time, 0);
    let q = format!("/global/backups/?q=name:{VM}+and+saveTime:'{local}'");
    let two = get_json(&sim, &q).await;
    assert_eq!(two["count"], 2);
    assert_ne!(two["backups"][0]["id"], two["backups"][1]["id"]);
    // One-shot: the next backup is normal again; a later save time matches nothing.
    sim.admin.faults(|f| f.next_backup = NextBackup::NoSaveSet);
    sim.admin.advance_clock(10);
    let later = backup(&sim, "1 Days").await;
    assert!(later > save_time);
    let q = format!(
        "/global/backups/?q=name:{VM}+and+saveTime:'{}'",
        naive_local(later, 0)
    );
    assert_eq!(get_json(&sim, &q).await, json!({"count": 0}));
    assert_eq!(
        sim.admin.with_state(|s| s.faults.next_backup),
        NextBackup::Normal
    );
    assert_eq!(
        get_json(&sim, &format!("/global/backups/?q=name:{VM}")).await["count"],
        2
    );
}

#[tokio::test]
async fn injected_status_codes_and_slow_answers_then_recovery() {
    let sim = start(false, 0).await;
    let fault = admin(
        &sim,
        "POST",
        "/faults/rest",
        json!({"endpoint": "GET /global/backups", "status": 503, "times": 1}),
    )
    .await;
    assert_eq!(fault.status, 204);
    let r = get(&sim, "/global/backups").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap()["status"]["codeClass"], "Server Error");
    assert_eq!(get(&sim, "/global/backups").await.status, 200);

    admin(
        &sim,
        "POST",
        "/faults/rest",
        json!({"status": 401, "times": 2}),
    )
    .await;
    assert_eq!(get(&sim, "").await.status, 401);
    assert_eq!(get(&sim, "/global/protectionpolicies").await.status, 401);
    assert_eq!(get(&sim, "").await.status, 200);

    admin(
        &sim,
        "POST",
        "/faults/rest",
        json!({"endpoint": "GET /", "delay_ms": 5000, "times": 1}),
    )
    .await;
    let slow = request(
        "GET",
        &sim.rest_url,
        &[("Authorization", &basic("administrator", "password"))],
        None,
        None,
        Duration::from_millis(200),
    )
    .await;
    assert!(slow.unwrap_err().to_string().contains("timed out"));

    admin(
        &sim,
        "POST",
        "/faults/rest",
        json!({"endpoint": "GET /global/backups", "empty": true}),
    )
    .await;
    backup(&sim, "1 Days").await;
    assert_eq!(get_json(&sim, "/global/backups").await, json!({"count": 0}));
    admin(&sim, "PUT", "/faults", json!({"malformed_dates": true})).await;
    let odd = get_json(&sim, "/global/backups").await;
    let odd_time = odd["backups"][0]["saveTime"].as_str().unwrap();
    assert!(odd_time.parse::<jiff::Timestamp>().is_err(), "{odd_time}");
    assert_eq!(
        admin(&sim, "DELETE", "/faults", json!({})).await.status,
        204
    );
    assert_eq!(get_json(&sim, "/global/backups").await["count"], 1);

    let bad = admin(&sim, "POST", "/faults/rest", json!({"status": 200})).await;
    assert_eq!(bad.status, 400);
    let counters = admin(&sim, "GET", "/counters", json!({}))
        .await
        .json()
        .unwrap();
    assert_eq!(counters["requests"]["GET /global/backups"], 5);
    assert_eq!(counters["requests"]["GET /"], 3);
}

#[tokio::test]
async fn bad_queries_unknown_paths_and_wrong_methods_are_clear_errors() {
    let sim = start(false, 0).await;
    for q in ["name:'open", "name:a+or+name:b", "saveTime:['a'+'b']", "+"] {
        let r = get(&sim, &format!("/global/backups?q={q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json().unwrap()["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid query")
        );
    }
    assert_eq!(get(&sim, "/global/nothing").await.status, 404);
    assert_eq!(get(&sim, "/global/backups/no-such-id").await.status, 404);
    assert_eq!(
        get(&sim, "/global/protectionpolicies/NOPE").await.status,
        404
    );
    let post = request(
        "POST",
        &format!("{}/global/backups", sim.rest_url),
        &[("Authorization", &basic("administrator", "password"))],
        Some(b"{}"),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(post.status, 405);
    let unknown_admin = admin(&sim, "POST", "/nothing", json!({})).await;
    assert_eq!(unknown_admin.status, 404);
    let bad_json = request(
        "POST",
        &format!("{}/policies", sim.admin_url),
        &[],
        Some(b"{not json"),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(bad_json.status, 400);
}

#[tokio::test]
async fn a_separate_admin_listener_takes_admin_off_the_api_port() {
    let sim = networker_sim::start(Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_ne!(sim.admin_url, format!("http://{}/admin", sim.rest_addr));
    let on_api = request(
        "GET",
        &format!("http://{}/admin/state", sim.rest_addr),
        &[],
        None,
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(on_api.status, 404);
    let state = admin(&sim, "GET", "/state", json!({})).await;
    assert_eq!(state.status, 200);
    assert_eq!(state.json().unwrap()["server"]["name"], "networker.local");
}
