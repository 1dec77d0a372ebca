//! Response envelopes, lists, paging, parameter errors, XML, listApis.

use axum::http::Method;
use serde_json::json;

use crate::support_api::*;

#[tokio::test]
async fn a_single_object_is_nested_under_its_object_name() {
    let s = TestServer::start().await;
    let r = s.admin().call("createZone", &[("name", "zone2")]).await;
    let zone = &r.ok("createZone")["zone"];
    assert_eq!(zone["name"], "zone2");
    assert!(uuid::Uuid::parse_str(zone["id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn list_count_is_the_total_across_pages() {
    let s = TestServer::start().await;
    let a = s.admin();
    for name in ["zone2", "zone3", "zone4"] {
        a.call("createZone", &[("name", name)])
            .await
            .ok("createZone");
    }
    let page2 = a
        .call("listZones", &[("page", "2"), ("pagesize", "3")])
        .await;
    let inner = page2.ok("listZones");
    assert_eq!(inner["count"], 4);
    assert_eq!(inner["zone"].as_array().unwrap().len(), 1);
    assert_eq!(inner["zone"][0]["name"], "zone4");
    let all = a.call("listZones", &[("pagesize", "-1")]).await;
    assert_eq!(all.ok("listZones")["zone"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn an_empty_list_is_an_empty_object() {
    let s = TestServer::start().await;
    let r = s.admin().call("listVirtualMachines", &[]).await;
    assert_eq!(r.json, json!({"listvirtualmachinesresponse": {}}));
}

#[tokio::test]
async fn keyword_is_a_case_insensitive_substring_and_names_are_case_insensitive() {
    let s = TestServer::start().await;
    let a = s.admin();
    a.call("createZone", &[("name", "Berlin-Zone")])
        .await
        .ok("createZone");
    let r = a.call("listZones", &[("keyword", "berLIN")]).await;
    assert_eq!(r.ok("listZones")["count"], 1);
    let r = a.call("listZones", &[("Keyword", "ZONE1")]).await;
    assert_eq!(r.ok("listZones")["zone"][0]["name"], "zone1");
}

#[tokio::test]
async fn xml_is_the_default_rendering() {
    let s = TestServer::start().await;
    let mut p = signed_params(&s.admin().creds, "listZones", &[]);
    p.retain(|(k, _)| k != "response" && k != "signature");
    let sig = cs_signature(ADMIN_SECRET_KEY, &p);
    p.push(("signature".into(), sig));
    let r = s
        .send(
            Method::GET,
            &format!("/client/api?{}", query_string(&p)),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/xml"), "{}", r.content_type);
    assert!(
        r.text.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><listzonesresponse cloud-stack-version="
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains("<count>1</count><zone>"), "{}", r.text);
    assert!(r.text.contains("<name>zone1</name>"), "{}", r.text);
}

#[tokio::test]
async fn a_missing_required_parameter_is_431_with_the_canonical_text() {
    let s = TestServer::start().await;
    let r = s.admin().call("createZone", &[]).await;
    let text = r.err("createZone", 431);
    assert_eq!(
        text,
        "Unable to execute API command createzone due to missing parameter name"
    );
    assert_eq!(r.x_description.as_deref(), Some(text.as_str()));
    let inner = r.inner("createZone");
    assert_eq!(inner["uuidList"], json!([]));
    assert!(inner["cserrorcode"].is_i64());
}

#[tokio::test]
async fn an_unknown_or_malformed_uuid_is_431_before_the_command_runs() {
    let s = TestServer::start().await;
    let a = s.admin();
    let missing = uuid::Uuid::new_v4().to_string();
    let r = a.call("listVirtualMachines", &[("id", &missing)]).await;
    assert_eq!(
        r.err("listVirtualMachines", 431),
        format!(
            "Unable to execute API command listvirtualmachines due to invalid value. Invalid parameter id value={missing} \
             due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the \
             field in api cmd class."
        )
    );
    let r = a.call("listVirtualMachines", &[("id", "42")]).await;
    r.err("listVirtualMachines", 431);
    // An async command with a bad uuid is refused synchronously: no job is created.
    let (so, _, t) = s.catalog().await;
    let r = a
        .call(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &t),
                ("zoneid", &missing),
            ],
        )
        .await;
    r.err("deployVirtualMachine", 431);
    let jobs = a.call("listAsyncJobs", &[]).await;
    assert_eq!(jobs.json, json!({"listasyncjobsresponse": {}}));
}

#[tokio::test]
async fn bad_integer_boolean_and_page_values_are_431() {
    let s = TestServer::start().await;
    let a = s.admin();
    a.call("listZones", &[("page", "x")])
        .await
        .err("listZones", 431);
    a.call("listZones", &[("page", "0")])
        .await
        .err("listZones", 431);
    a.call("listZones", &[("pagesize", "501")])
        .await
        .err("listZones", 431);
    a.call("listVirtualMachines", &[("listall", "maybe")])
        .await
        .err("listVirtualMachines", 431);
}

#[tokio::test]
async fn list_apis_has_the_shape_cloudmonkey_sync_needs_and_is_filtered_by_role() {
    let s = TestServer::start().await;
    let r = s.admin().call("listApis", &[]).await;
    let inner = r.ok("listApis");
    let apis = inner["api"].as_array().expect("api list");
    assert_eq!(inner["count"].as_u64(), Some(apis.len() as u64));
    for api in apis {
        assert!(
            api["name"].is_string() && api["isasync"].is_boolean(),
            "{api}"
        );
        assert!(
            api["related"].is_string() || api.get("related").is_none(),
            "{api}"
        );
        assert!(api["response"].is_array(), "{api}");
        for p in api["params"].as_array().expect("params list") {
            assert!(p["length"].is_i64(), "{p}");
            assert!(p["required"].is_boolean(), "{p}");
            assert!(p["name"].is_string() && p["type"].is_string(), "{p}");
        }
    }
    let deploy = apis
        .iter()
        .find(|a| a["name"] == "deployVirtualMachine")
        .expect("deploy listed");
    assert_eq!(deploy["isasync"], true);
    let zoneid = deploy["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "zoneid")
        .unwrap();
    assert_eq!(zoneid["required"], true);
    assert_eq!(zoneid["type"], "uuid");
    let names: Vec<&str> = apis.iter().filter_map(|a| a["name"].as_str()).collect();
    assert!(names.contains(&"createZone") && names.contains(&"queryAsyncJobResult"));

    let user = s.create_user("bob", "User", None).await;
    let r = s.client(user).call("listApis", &[]).await;
    let user_names: Vec<String> = r.ok("listApis")["api"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        !user_names
            .iter()
            .any(|n| n == "createZone" || n == "updateConfiguration")
    );
    assert!(user_names.iter().any(|n| n == "deployVirtualMachine"));
}

/// A panicking handler answers 530 (never a dropped connection or a 500), whether the command
/// runs in the request's task (`list*`) or in a task of its own, and the server keeps serving.
#[tokio::test]
async fn a_panicking_handler_becomes_a_530_answer() {
    use axum::body::Body;
    use axum::http::Request;
    use bnr::api::registry::ALL_ROLES;
    use bnr::api::{ApiState, Command, Registry, router};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let s = TestServer::start().await;
    let mut registry = Registry::new();
    for name in ["listPanics", "panicNow"] {
        registry
            .register(
                Command::sync(name)
                    .roles(ALL_ROLES)
                    .object("panic")
                    .handler(|_ctx| async move { panic!("handler panicked on purpose") }),
            )
            .expect("register");
    }
    let app = router(ApiState::new(s.state.core.clone(), registry));
    let creds = Creds {
        api_key: ADMIN_API_KEY.into(),
        secret_key: ADMIN_SECRET_KEY.into(),
    };
    for name in ["listPanics", "panicNow", "listPanics"] {
        let uri = format!(
            "/client/api?{}",
            query_string(&signed_params(&creds, name, &[]))
        );
        let req = Request::get(uri).body(Body::empty()).expect("request");
        let resp = app
            .clone()
            .oneshot(req)
            .await
            .expect("router is infallible");
        assert_eq!(resp.status().as_u16(), 530, "{name}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["errorresponse"]["errorcode"], 530, "{name}: {v}");
    }
}
