//! Hot swap: replacing a zone's provider under load fails no call; calls that already hold
//! the old provider finish on it, calls that start afterwards use the new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bnr_runtime::{CallContext, Provider, ZoneRegistry, types};

use crate::support::{self, DUMMY, SCRIPTED, instance};

const ZONE: &str = "zone-1";

/// Starts a backup and returns the name of the provider that took it (from its external id:
/// the dummy's start with `dummy-`, the scripted fixture's with `scripted-`).
async fn backup_taken_by(provider: &Provider) -> String {
    let started = provider
        .start_backup(
            &CallContext::default(),
            &instance("vm-1"),
            "gold-policy",
            types::BackupOptions { quiesce: false },
        )
        .await
        .unwrap_or_else(|err| panic!("a call failed during the swap: {err}"));
    let types::Started::Done(types::OperationResult::BackupTaken(taken)) = started else {
        panic!("unexpected answer {started:?}");
    };
    taken.external_id.split('-').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_a_zone_provider_under_load_fails_no_call() {
    let dummy = support::provider(DUMMY);
    let scripted = support::provider(SCRIPTED);
    let registry = Arc::new(ZoneRegistry::new());
    assert!(registry.set(ZONE, dummy.clone()).is_none());

    // Calls that took the old provider before the swap and run after it.
    const HELD: usize = 16;
    let held_taken = Arc::new(tokio::sync::Barrier::new(HELD + 1));
    let swap_done = Arc::new(tokio::sync::Barrier::new(HELD + 1));
    let mut held = Vec::new();
    for _ in 0..HELD {
        let (registry, held_taken, swap_done) =
            (registry.clone(), held_taken.clone(), swap_done.clone());
        held.push(tokio::spawn(async move {
            let provider = registry.get(ZONE).unwrap();
            held_taken.wait().await;
            swap_done.wait().await;
            backup_taken_by(&provider).await
        }));
    }

    // Continuous load across the swap.
    const LOADERS: usize = 8;
    let swapped = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (registry, swapped) = (registry.clone(), swapped.clone());
        loaders.push(tokio::spawn(async move {
            let mut calls_after_swap = 0;
            let mut calls = 0;
            while calls_after_swap < 20 {
                let started_after_swap = swapped.load(Ordering::SeqCst);
                let provider = registry.get(ZONE).unwrap();
                let taken_by = backup_taken_by(&provider).await;
                assert_eq!(
                    taken_by,
                    provider.name(),
                    "answered by the provider it called"
                );
                if started_after_swap {
                    assert_eq!(taken_by, "scripted", "a call that started after the swap");
                    calls_after_swap += 1;
                }
                calls += 1;
            }
            calls
        }));
    }

    held_taken.wait().await;
    // Let the loaders get going before swapping (they run on other worker threads).
    for _ in 0..20 {
        assert_eq!(backup_taken_by(&registry.get(ZONE).unwrap()).await, "dummy");
    }
    let old = registry.set(ZONE, scripted.clone()).unwrap();
    swapped.store(true, Ordering::SeqCst);
    assert!(Arc::ptr_eq(&old, &dummy));
    swap_done.wait().await;

    for call in held {
        assert_eq!(
            call.await.unwrap(),
            "dummy",
            "in-flight calls finish on the old provider"
        );
    }
    let mut total = 0;
    for loader in loaders {
        total += loader.await.unwrap();
    }
    assert!(total >= LOADERS * 20);
    assert_eq!(
        backup_taken_by(&registry.get(ZONE).unwrap()).await,
        "scripted"
    );
    assert!(Arc::ptr_eq(&registry.remove(ZONE).unwrap(), &scripted));
    assert!(registry.get(ZONE).is_none());
}
