//! The compiled-component cache: a second load comes from it; a damaged or foreign entry is
//! detected, discarded and recompiled, never trusted.

use std::sync::Arc;

use bnr_runtime::{CacheOutcome, PoolConfig, Provider, Runtime, RuntimeConfig};

use crate::support::{self, DUMMY, HOSTILE, TempDir, zone};

/// A runtime of its own on `cache` (the pool is off: these tests only load).
fn runtime_on(cache: &TempDir) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        observer: None,
        limits: support::test_limits(),
        pool: PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        },
    })
    .unwrap()
}

fn load(rt: &Arc<Runtime>, stem: &str) -> Arc<Provider> {
    rt.load_file(&support::component_path(stem)).unwrap()
}

async fn assert_dummy_works(dummy: &Provider) {
    assert_eq!(dummy.name(), "dummy");
    let policies = dummy
        .list_policies(&support::ctx(dummy, &[]), &zone())
        .await
        .unwrap();
    assert_eq!(policies[0].external_id, "gold-policy");
}

#[tokio::test]
async fn the_second_load_comes_from_the_compiled_cache_also_after_a_restart() {
    let cache = TempDir::new("cache-hit");
    let rt = runtime_on(&cache);
    let first = load(&rt, DUMMY);
    assert_eq!(first.load_stats().cache, CacheOutcome::Compiled);
    assert!(!first.loaded_from_cache());
    assert!(rt.cache_entry_path(first.sha256()).is_file());

    let second = load(&rt, DUMMY);
    assert!(second.loaded_from_cache());
    assert_eq!(second.sha256(), first.sha256());
    assert_dummy_works(&second).await;

    drop(rt);
    let restarted = runtime_on(&cache);
    let third = load(&restarted, DUMMY);
    assert!(third.loaded_from_cache());
    assert_dummy_works(&third).await;
}

fn assert_recompiled(provider: &Provider, reason_contains: &str) {
    match &provider.load_stats().cache {
        CacheOutcome::Recompiled { reason } => {
            assert!(reason.contains(reason_contains), "reason: {reason}")
        }
        other => panic!("expected a recompile, got {other:?}"),
    }
}

#[tokio::test]
async fn a_corrupted_cache_entry_is_recompiled() {
    let cache = TempDir::new("cache-corrupt");
    let rt = runtime_on(&cache);
    let sha = load(&rt, DUMMY).sha256().to_owned();
    let artifact = rt.cache_entry_path(&sha);

    // Same size, a few bytes flipped in the middle (e.g. a bad disk sector).
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&artifact, &bytes).unwrap();
    let dummy = load(&rt, DUMMY);
    assert_recompiled(&dummy, "checksum");
    assert_dummy_works(&dummy).await;
    assert!(
        load(&rt, DUMMY).loaded_from_cache(),
        "the entry was rewritten"
    );

    // Truncated (an interrupted copy).
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::write(&artifact, &bytes[..bytes.len() / 3]).unwrap();
    let dummy = load(&rt, DUMMY);
    assert_recompiled(&dummy, "bytes");
    assert_dummy_works(&dummy).await;

    // An artifact whose header is gone.
    let header = artifact.with_extension("meta");
    std::fs::remove_file(&header).unwrap();
    let dummy = load(&rt, DUMMY);
    assert_recompiled(&dummy, "header");
    assert!(header.is_file());
    assert!(load(&rt, DUMMY).loaded_from_cache());
}

#[tokio::test]
async fn a_foreign_cache_entry_is_recompiled_not_run() {
    let cache = TempDir::new("cache-foreign");
    let rt = runtime_on(&cache);
    let dummy_sha = load(&rt, DUMMY).sha256().to_owned();
    let hostile_sha = load(&rt, HOSTILE).sha256().to_owned();
    let dummy_artifact = rt.cache_entry_path(&dummy_sha);
    let hostile_artifact = rt.cache_entry_path(&hostile_sha);

    // Another component's artifact under the dummy's name: valid code, wrong component.
    std::fs::copy(&hostile_artifact, &dummy_artifact).unwrap();
    let dummy = load(&rt, DUMMY);
    assert_recompiled(&dummy, "");
    assert_dummy_works(&dummy).await;

    // Artifact and header both copied from the other component.
    std::fs::copy(&hostile_artifact, &dummy_artifact).unwrap();
    std::fs::copy(
        hostile_artifact.with_extension("meta"),
        dummy_artifact.with_extension("meta"),
    )
    .unwrap();
    let dummy = load(&rt, DUMMY);
    assert_recompiled(&dummy, "another component");
    assert_dummy_works(&dummy).await;

    // Not an artifact at all (the raw wasm) with a header claiming it is.
    std::fs::write(&dummy_artifact, support::component_bytes(DUMMY)).unwrap();
    let dummy = load(&rt, DUMMY);
    assert!(matches!(
        dummy.load_stats().cache,
        CacheOutcome::Recompiled { .. }
    ));
    assert_dummy_works(&dummy).await;
}
