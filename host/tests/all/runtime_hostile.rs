//! Misbehaving providers are stopped with a typed error, and nothing else notices: other calls
//! run meanwhile and the next call on the same provider works.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bnr::runtime::{CallContext, CallError, Grants, LoadError, PoolConfig, Runtime, RuntimeConfig};

use crate::support::{self, DUMMY, FUTURE_VERSION, HOSTILE, TempDir, WRONG_WORLD, zone};

fn hostile_ctx(mode: &str) -> CallContext {
    support::ctx(&support::provider(HOSTILE), &[("hostile.mode", mode)])
}

/// The hostile provider in `ok` mode, and the dummy, both still answer.
async fn assert_runtime_still_serves() {
    let hostile = support::provider(HOSTILE);
    let policies = hostile
        .list_policies(&hostile_ctx("ok"), &zone())
        .await
        .unwrap();
    assert_eq!(policies[0].external_id, "fine");
    let dummy = support::provider(DUMMY);
    let policies = dummy
        .list_policies(&support::ctx(&dummy, &[]), &zone())
        .await
        .unwrap();
    assert_eq!(policies.len(), 2);
}

/// Runs `misbehaving` while the dummy answers calls on the same (single-threaded) executor.
async fn while_dummy_keeps_answering<T>(misbehaving: impl Future<Output = T>) -> T {
    let dummy = support::provider(DUMMY);
    let ctx = support::ctx(&dummy, &[]);
    let others = async {
        for _ in 0..5 {
            assert!(
                dummy
                    .validate_policy(&ctx, &zone(), "gold-policy")
                    .await
                    .unwrap()
            );
            tokio::task::yield_now().await;
        }
    };
    let (result, ()) = tokio::join!(misbehaving, others);
    result
}

#[tokio::test]
async fn an_infinite_loop_is_interrupted_with_cpu_limit() {
    let hostile = support::provider(HOSTILE);
    let err = while_dummy_keeps_answering(hostile.list_policies(&hostile_ctx("loop"), &zone()))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::CpuLimit), "{err:?}");
    assert!(!err.is_retryable());
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_with_memory_limit() {
    let hostile = support::provider(HOSTILE);
    let err =
        while_dummy_keeps_answering(hostile.validate_policy(&hostile_ctx("bomb"), &zone(), "fine"))
            .await
            .unwrap_err();
    assert!(matches!(err, CallError::MemoryLimit), "{err:?}");
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn a_panic_becomes_a_trap_carrying_the_panic_message() {
    let hostile = support::provider(HOSTILE);
    let err = hostile
        .assign_instance(&hostile_ctx("panic"), &support::instance("vm-1"), "fine")
        .await
        .unwrap_err();
    let CallError::Trap {
        message,
        guest_panic,
    } = &err
    else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(message.contains("unreachable"), "{message}");
    let guest_panic = guest_panic.as_deref().unwrap_or_default();
    assert!(
        guest_panic.contains("hostile fixture panicked on purpose"),
        "{guest_panic:?}"
    );
    assert!(
        err.to_string()
            .contains("hostile fixture panicked on purpose")
    );
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn a_provider_that_sleeps_forever_times_out() {
    let hostile = support::provider(HOSTILE);
    let err = while_dummy_keeps_answering(hostile.metrics(&hostile_ctx("sleep"), &zone(), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn a_huge_result_is_refused_as_result_too_large() {
    let hostile = support::provider(HOSTILE);
    let err = hostile
        .list_policies(&hostile_ctx("huge"), &zone())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::ResultTooLarge), "{err:?}");
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn a_failed_call_in_a_session_does_not_poison_the_next_one() {
    let hostile = support::provider(HOSTILE);
    let mut session = hostile.session(&hostile_ctx("panic")).await.unwrap();
    for _ in 0..2 {
        let err = session.list_policies(&zone()).await.unwrap_err();
        assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    }
    let mut session = hostile.session(&hostile_ctx("ok")).await.unwrap();
    assert_eq!(session.list_policies(&zone()).await.unwrap().len(), 1);
    assert_eq!(session.list_policies(&zone()).await.unwrap().len(), 1);
}

/// A loopback HTTP server counting the requests it receives.
struct CountingServer {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn counting_server() -> CountingServer {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "hello from the loopback server"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    CountingServer { port, hits }
}

/// Asks the hostile provider to GET `url` with these grants; returns what the guest saw.
async fn guest_get(url: &str, grants: Grants) -> String {
    let hostile = support::provider(HOSTILE);
    let mut ctx = support::ctx(&hostile, &[("hostile.mode", "http"), ("hostile.url", url)]);
    ctx.grants = grants;
    let policies = hostile.list_policies(&ctx, &zone()).await.unwrap();
    policies[0].name.clone()
}

#[tokio::test]
async fn http_to_an_ungranted_host_is_denied_without_sending_anything() {
    let server = counting_server().await;
    let url = format!("http://127.0.0.1:{}/probe", server.port);
    let info = support::provider(HOSTILE).info().clone();
    let grant_for = |value: &str| {
        let settings = [("hostile.url".to_owned(), value.to_owned())].into();
        Grants::derive(&info, &settings, None, &[])
    };

    let ungranted = [
        Grants::default(),
        grant_for(&format!("http://127.0.0.1:{}/", server.port + 1)),
        grant_for(&format!("http://localhost:{}/", server.port)),
        grant_for("http://127.0.0.2/"),
    ];
    for grants in ungranted {
        let seen = guest_get(&url, grants.clone()).await;
        assert!(
            seen.contains("denied"),
            "grants {grants:?}: guest saw {seen:?}"
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "a denied request reached the server"
    );

    let seen = guest_get(&url, grant_for(&url)).await;
    assert_eq!(seen, "200");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_component_of_another_world_is_refused_as_wrong_world() {
    let err = support::runtime()
        .load_file(&support::component_path(WRONG_WORLD))
        .unwrap_err();
    let LoadError::WrongWorld(message) = &err else {
        panic!("expected WrongWorld, got {err:?}");
    };
    assert!(message.contains("bnr:provider/provider"), "{message}");
}

#[tokio::test]
async fn a_component_built_for_a_future_interface_version_is_refused() {
    let err = support::runtime()
        .load_file(&support::component_path(FUTURE_VERSION))
        .unwrap_err();
    let LoadError::UnsupportedVersion { found, supported } = &err else {
        panic!("expected UnsupportedVersion, got {err:?}");
    };
    assert_ne!(found, "1.0.0");
    assert_eq!(supported, "1.0.x, 1.1.x");
    assert!(err.to_string().contains(found.as_str()), "{err}");
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused_with_a_clear_reason() {
    let rt = support::runtime();
    let err = rt.load_bytes(b"#!/bin/sh\necho not wasm\n").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm), "{err:?}");
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");

    let err = rt.load_bytes(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent), "{err:?}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");

    let dummy = support::component_bytes(DUMMY);
    for cut in [6, 100, dummy.len() / 2, dummy.len() - 1] {
        let err = rt.load_bytes(&dummy[..cut]).unwrap_err();
        assert!(
            matches!(&err, LoadError::Invalid(m) if m.contains("truncated")),
            "cut at {cut}: {err:?}"
        );
    }

    let missing = support::target_dir().join("no-such-provider.wasm");
    let err = rt.load_file(&missing).unwrap_err();
    assert!(matches!(err, LoadError::Io(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-provider.wasm"), "{err}");
}

#[tokio::test]
async fn calls_beyond_the_pool_wait_then_fail_busy_and_succeed_once_a_slot_frees() {
    let cache = TempDir::new("busy-cache");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        limits: bnr::runtime::SandboxLimits {
            admission_wait: Duration::from_millis(50),
            ..support::test_limits()
        },
        pool: PoolConfig {
            max_instances: 2,
            ..PoolConfig::default()
        },
    })
    .unwrap();
    let dummy = rt.load_file(&support::component_path(DUMMY)).unwrap();
    let ctx = support::ctx(&dummy, &[]);
    let first = dummy.session(&ctx).await.unwrap();
    let _second = dummy.session(&ctx).await.unwrap();

    let err = dummy.list_policies(&ctx, &zone()).await.unwrap_err();
    assert!(matches!(err, CallError::Busy), "{err:?}");
    assert!(err.is_retryable());

    drop(first);
    assert_eq!(dummy.list_policies(&ctx, &zone()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn providers_stay_bounded_after_the_runtime_handle_is_dropped() {
    let cache = TempDir::new("dropped-runtime");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        limits: support::test_limits(),
        pool: PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        },
    })
    .unwrap();
    let hostile = rt.load_file(&support::component_path(HOSTILE)).unwrap();
    drop(rt);
    let err = hostile
        .list_policies(&hostile_ctx("loop"), &zone())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::CpuLimit), "{err:?}");
}
