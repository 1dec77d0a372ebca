//! `bnr store copy`: an installation on SQLite moves to PostgreSQL and keeps working there.

use std::process::Command;
use std::sync::Arc;

use bnr::store::postgres::testing::TestDatabase;

use crate::bnr_support::*;
use crate::sched_support::protected_vm;
use crate::support_api::*;

fn copy(from: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bnr"))
        .arg("store")
        .arg("copy")
        .arg(format!("--from=sqlite:{}", from.display()))
        .arg(format!("--to={to}"))
        .output()
        .expect("run bnr")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_installation_copied_from_sqlite_serves_the_same_data_on_postgres() {
    let s = start(Installed::Dummy).await;
    assert!(
        s.database.is_none(),
        "the source of a copy is SQLite: run this test without BNR_TEST_DATABASE=postgres"
    );
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let (carol, vm) = protected_vm(&s, "carol", "web", &id(&gold)).await;
    let first = backup(&s.client(carol.clone()), &vm).await;
    let TestServer {
        dir, state, router, ..
    } = s;
    drop(router);
    drop(state);

    let database = Arc::new(TestDatabase::create());
    let copied = copy(&dir.path().join("bnr.sqlite"), database.url());
    let stdout = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(stdout.contains("backups: 1 rows"), "{stdout}");

    // A second copy into the now non-empty database is refused and changes nothing.
    let again = copy(&dir.path().join("bnr.sqlite"), database.url());
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    use_database(dir.path(), &database);
    let s = start_in(dir, Installed::Dummy).await;
    assert!(
        s.database.is_some(),
        "the restarted server runs on PostgreSQL"
    );
    // Carol's sealed secret key was copied sealed and opens under the same key file.
    let client = s.client(carol);
    assert_eq!(get_backup(&client, &id(&first)).await["id"], first["id"]);
    // New rows continue after the copied ids.
    let second = backup(&client, &vm).await;
    assert_ne!(second["id"], first["id"]);
    let listed = client
        .call("listBackups", &[("virtualmachineid", vm.as_str())])
        .await;
    assert_eq!(listed.ok("listBackups")["count"], 2);
}
