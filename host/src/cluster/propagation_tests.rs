//! How a settings change made through one replica reaches another on PostgreSQL: woken by a
//! change notice, and by the epoch poll alone. Prints p50 and max over [`CHANGES`] changes
//! (`cargo test -p bnr --lib propagation -- --nocapture`; docs/benchmarks.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::INCORRECT_LOGIN_ATTEMPTS_ALLOWED as SETTING;

/// Changes measured per mode.
const CHANGES: i64 = 12;
/// Longer than any propagation could take on a loaded machine: past it the change was lost.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_reaches_another_replica_by_notice_and_by_the_poll_alone() {
    let dir = tempfile::tempdir().unwrap();
    let database = crate::store::postgres::testing::TestDatabase::create();
    let open =
        || Store::open_postgres(database.url(), dir.path(), crate::store::MIGRATIONS).unwrap();
    let (store_a, store_b) = (open(), open());
    let settings_a = Settings::load(store_a.clone()).unwrap();
    let settings_b = Settings::load(store_b.clone()).unwrap();
    let mut value = 100;
    for notices in [true, false] {
        let mut options = ClusterOptions::new(format!("b notices={notices}"), MIN_LEASE);
        options.change_notices = notices;
        let replica = Replica::join(&store_b, &options).unwrap();
        let follower = replica.follow_changes(settings_b.clone(), Arc::new(|| {}));
        let mut took = Vec::new();
        // The first change only shows the follower is running (and listening); not counted.
        for i in 0..=CHANGES {
            value += 1;
            let (settings, v) = (settings_a.clone(), value.to_string());
            tokio::task::spawn_blocking(move || settings.set_blocking(SETTING, &v, None))
                .await
                .unwrap()
                .unwrap();
            let changed = Instant::now();
            while settings_b.get_i64(SETTING, None) != Some(value) {
                assert!(
                    changed.elapsed() < PATIENCE,
                    "change {i} (notices {notices}) never reached the other replica"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if i > 0 {
                took.push(changed.elapsed());
            }
        }
        replica.stop();
        follower.abort();
        took.sort();
        eprintln!(
            "settings propagation on PostgreSQL, {}: {} changes, p50 {:?}, max {:?}",
            if notices {
                "change notices and poll"
            } else {
                "poll alone"
            },
            took.len(),
            took[took.len() / 2],
            took[took.len() - 1]
        );
        if notices {
            assert!(replica.notices_received() > 0, "no change notice arrived");
        } else {
            assert_eq!(replica.notices_received(), 0);
        }
    }
}
