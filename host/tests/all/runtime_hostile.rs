//! Misbehaving providers are stopped with a typed error, and nothing else notices: other calls
//! run meanwhile and the next call on the same provider works.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bnr_runtime::{CallContext, CallError, Grants, LoadError, PoolConfig, Runtime, RuntimeConfig};

use crate::support::{
    self, DUMMY, FUTURE_VERSION, HOSTILE, IMPOSTOR, SLOW_DESCRIBE, THIEF, TempDir, WRONG_WORLD,
    zone,
};

fn hostile_ctx(mode: &str) -> CallContext {
    support::ctx(
        &support::provider(HOSTILE),
        &[("backup.plugin.hostile.mode", mode)],
    )
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
    // The panic text is detail for operators, not part of what users are shown.
    assert!(
        !err.to_string()
            .contains("hostile fixture panicked on purpose")
    );
    assert!(err.detail().contains("hostile fixture panicked on purpose"));
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
    let mut ctx = support::ctx(
        &hostile,
        &[
            ("backup.plugin.hostile.mode", "http"),
            ("backup.plugin.hostile.url", url),
        ],
    );
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
        let settings = [("backup.plugin.hostile.url".to_owned(), value.to_owned())].into();
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
    assert_eq!(supported, "1.0.x, 1.1.x, 1.2.x, 1.3.x");
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
async fn a_component_declaring_another_providers_setting_is_refused_with_the_reason() {
    let err = support::runtime()
        .load_file(&support::component_path(THIEF))
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::Invalid(m)
            if m.contains("backup.plugin.hostile.password") && m.contains("not owned by provider `thief`")),
        "{err}"
    );
}

#[tokio::test]
async fn a_describe_that_never_returns_is_cut_off_at_the_describe_bound() {
    let err = support::runtime()
        .load_file(&support::component_path(SLOW_DESCRIBE))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::Describe(CallError::Timeout | CallError::CpuLimit)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_second_component_with_a_built_in_name_is_refused_and_the_built_in_kept() {
    let dir = TempDir::new("impostor-dir");
    std::fs::copy(
        support::component_path(IMPOSTOR),
        dir.path().join("a_impostor.wasm"),
    )
    .unwrap();
    std::fs::copy(
        support::component_path(DUMMY),
        dir.path().join("bnr_dummy.wasm"),
    )
    .unwrap();
    let catalog = bnr_runtime::Catalog::new();
    let results = catalog.load_dir(&support::runtime(), dir.path());
    assert_eq!(results.len(), 2);
    let (_, impostor) = &results[0];
    assert!(
        matches!(impostor, Err(LoadError::NameConflict { name, kept: Some(kept), .. })
            if name == "dummy" && kept.ends_with("bnr_dummy.wasm")),
        "{impostor:?}"
    );
    let dummy = catalog.get("dummy").expect("the built-in is installed");
    assert_ne!(dummy.version(), "9.9.9");

    // Two components of the same name, neither built in: neither is loaded.
    let dir = TempDir::new("twins-dir");
    for name in ["one.wasm", "two.wasm"] {
        std::fs::copy(support::component_path(HOSTILE), dir.path().join(name)).unwrap();
    }
    let catalog = bnr_runtime::Catalog::new();
    let results = catalog.load_dir(&support::runtime(), dir.path());
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, Err(LoadError::NameConflict { kept: None, .. }))),
        "{results:?}"
    );
    assert!(catalog.list().is_empty());
}

#[tokio::test]
async fn an_https_grant_does_not_let_plain_http_through_to_the_same_port() {
    let server = counting_server().await;
    let info = support::provider(HOSTILE).info().clone();
    let settings = [(
        "backup.plugin.hostile.url".to_owned(),
        format!("https://127.0.0.1:{}/", server.port),
    )]
    .into();
    let https_only = Grants::derive(&info, &settings, None, &[]);
    let seen = guest_get(
        &format!("http://127.0.0.1:{}/probe", server.port),
        https_only,
    )
    .await;
    assert!(seen.contains("denied"), "guest saw {seen:?}");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "plain HTTP got through"
    );
}

#[tokio::test]
async fn results_aliasing_one_buffer_are_refused_before_the_host_copies_them() {
    let hostile = support::provider(HOSTILE);
    let err = while_dummy_keeps_answering(hostile.list_policies(&hostile_ctx("alias"), &zone()))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::ResultTooLarge), "{err:?}");
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn absurd_numbers_fail_the_call_with_the_reason() {
    let hostile = support::provider(HOSTILE);
    let vm = support::instance("vm-1");
    let err = while_dummy_keeps_answering(hostile.metrics(
        &hostile_ctx("bignum"),
        &zone(),
        std::slice::from_ref(&vm),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidResult(why) if why.contains("18446744073709551615")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let err = hostile
        .storage_stats(&hostile_ctx("bignum"), &zone())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidResult(_)), "{err:?}");
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn provider_errors_and_panics_are_bounded_one_line_and_redacted() {
    let secret = "s3cr3t/pa ss+word";
    let hostile = support::provider(HOSTILE);
    for mode in ["noisy", "noisy-panic"] {
        let ctx = support::ctx(
            &hostile,
            &[
                ("backup.plugin.hostile.mode", mode),
                ("backup.plugin.hostile.password", secret),
            ],
        );
        let err = while_dummy_keeps_answering(hostile.validate_policy(&ctx, &zone(), "fine"))
            .await
            .unwrap_err();
        let detail = err.detail();
        assert!(detail.len() < 8 << 10, "{} bytes", detail.len());
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
        assert!(!detail.contains(secret), "{detail}");
        assert!(!detail.contains("s3cr3t%2Fpa"), "{detail}");
        assert!(detail.contains("***"), "{mode}: {detail}");
    }
    assert_runtime_still_serves().await;
}

#[tokio::test]
async fn one_provider_cannot_take_more_than_its_share_of_the_pool() {
    let cache = TempDir::new("share-cache");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        observer: None,
        limits: bnr_runtime::SandboxLimits {
            admission_wait: Duration::from_millis(50),
            ..support::test_limits()
        },
        pool: PoolConfig {
            max_instances: 4,
            max_instances_per_provider: 2,
            ..PoolConfig::default()
        },
    })
    .unwrap();
    let hostile = rt.load_file(&support::component_path(HOSTILE)).unwrap();
    let dummy = rt.load_file(&support::component_path(DUMMY)).unwrap();
    let ctx = hostile_ctx("ok");
    let _held = [
        hostile.session(&ctx).await.unwrap(),
        hostile.session(&ctx).await.unwrap(),
    ];
    let err = hostile.list_policies(&ctx, &zone()).await.unwrap_err();
    assert!(matches!(err, CallError::Busy), "{err:?}");
    assert_eq!(rt.instances_in_use(), 2);
    let dctx = support::ctx(&dummy, &[]);
    let _dummy_sessions = [
        dummy.session(&dctx).await.unwrap(),
        dummy.session(&dctx).await.unwrap(),
    ];
    assert_eq!(rt.instances_in_use(), 4);
}

#[tokio::test]
async fn calls_beyond_the_pool_wait_then_fail_busy_and_succeed_once_a_slot_frees() {
    let cache = TempDir::new("busy-cache");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        observer: None,
        limits: bnr_runtime::SandboxLimits {
            admission_wait: Duration::from_millis(50),
            ..support::test_limits()
        },
        pool: PoolConfig {
            max_instances: 2,
            max_instances_per_provider: 2,
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
        observer: None,
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
