//! Health probes, draining for shutdown, and the metrics endpoint.

use std::sync::Arc;

use axum::http::Method;
use bnr::scheduler::service::Scheduler;
use tower::ServiceExt;

use crate::bnr_support::*;
use crate::support_api::*;

#[tokio::test]
async fn healthz_is_unauthenticated_and_says_only_ok() {
    let s = TestServer::start().await;
    let r = s.send(Method::GET, "/healthz", None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_reports_a_stalled_scheduler_then_ok_once_the_loop_runs() {
    let s = start(Installed::Dummy).await;
    let r = s.send(Method::GET, "/readyz", None, &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json,
        serde_json::json!({"status": "not-ok", "reason": "scheduler_stalled"})
    );
    let scheduler = s.state.ext::<Arc<Scheduler>>().expect("scheduler").clone();
    let task = scheduler.spawn_loop();
    let mut ready = None;
    for _ in 0..100 {
        let r = s.send(Method::GET, "/readyz", None, &[]).await;
        if r.status == 200 {
            ready = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    task.abort();
    let r = ready.expect("ready once the scheduler loop started");
    assert_eq!(r.json, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_reports_a_zone_whose_provider_is_not_loaded() {
    // zone1 is on `dummy`, which this server does not have.
    let s = start(Installed::Nothing).await;
    let scheduler = s.state.ext::<Arc<Scheduler>>().expect("scheduler").clone();
    let task = scheduler.spawn_loop();
    let mut last = None;
    for _ in 0..100 {
        let r = s.send(Method::GET, "/readyz", None, &[]).await;
        if r.json["reason"] == "provider_not_loaded" {
            last = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    task.abort();
    let r = last.expect("provider_not_loaded reported");
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn a_draining_server_refuses_new_requests_with_503_and_is_not_ready() {
    let s = TestServer::start().await;
    s.admin().call("listZones", &[]).await.ok("listZones");
    s.state.lifecycle.start_draining();
    for command in ["listZones", "createDomain"] {
        let r = s.admin().call(command, &[("name", "late")]).await;
        assert_eq!(r.status, 503, "{command}: {}", r.text);
        assert!(r.text.contains("shutting down"), "{}", r.text);
    }
    let r = s.send(Method::GET, "/readyz", None, &[]).await;
    assert_eq!(r.json["reason"], "draining");
    let r = s.send(Method::GET, "/healthz", None, &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn metrics_count_requests_provider_calls_and_backups_by_state() {
    bnr::metrics::enable();
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let creds = s.create_user("metered", "User", None).await;
    let client = s.client(creds);
    let vm = vm(&s, &client, "metered-vm", false).await;
    assign(&client, &id(&vm), &id(&gold)).await;
    backup(&client, &id(&vm)).await;
    client.call("listBackups", &[]).await.ok("listBackups");

    let app = bnr::api::serve::metrics_router(s.state.clone());
    let resp = app
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let zone = &s.zone_id;
    let has = |needle: &str| {
        assert!(
            text.lines()
                .any(|l| l.starts_with(needle) || l.contains(needle)),
            "missing {needle} in\n{text}"
        )
    };
    has("bnr_http_requests_total{command=\"listBackups\",status=\"200\"}");
    has(&format!(
        "bnr_provider_calls_total{{provider=\"dummy\",version=\"1.0.0\",function=\"start_backup\",zone=\"{zone}\",outcome=\"ok\"}}"
    ));
    has(&format!(
        "bnr_provider_call_duration_seconds_count{{provider=\"dummy\",version=\"1.0.0\",function=\"start_backup\",zone=\"{zone}\"}}"
    ));
    has("bnr_backups{state=\"BackedUp\"}");
    has("bnr_backups{state=\"Error\"}");
    has("bnr_operations_in_flight ");
    has("bnr_jobs{state=\"running\"}");
    has("bnr_store_write_duration_seconds_count ");
}
