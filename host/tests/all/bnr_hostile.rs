//! Hostile providers against bnr, over HTTP: zone1 runs the `hostile` fixture in one attack
//! mode at a time, zone2 runs the built-in `dummy`. Each attack must be contained within its
//! documented bound, and zone2's dummy must keep answering throughout.
//!
//! The runtime here has short limits (3 s per call) so the slow attacks finish quickly.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::bnr_support::*;
use crate::sched_support::{events_of, exec, sync};
use crate::support_api::*;
use bnr::service::ProviderSource;
use bnr_runtime::limits::{DEFAULT_INSTANCES_PER_PROVIDER, PROVIDER_TEXT_MAX_BYTES};
use bnr_runtime::{PoolConfig, Provider, Runtime, RuntimeConfig, SandboxLimits};

/// The secret the `noisy` modes try to leak (URL-unsafe characters on purpose).
const SECRET: &str = "s3cr3t/pa ss+word";

struct Loaded {
    runtime: Arc<Runtime>,
    dummy: Arc<Provider>,
    hostile: Arc<Provider>,
    scripted: Arc<Provider>,
    _cache: tempfile::TempDir,
}

fn fixture(name: &str) -> PathBuf {
    target_dir().join("fixtures").join(name)
}

/// One runtime for this module: default pool, short call limits.
fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let cache = tempfile::tempdir().expect("cache dir");
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: cache.path().to_owned(),
            observer: None,
            limits: SandboxLimits {
                cpu_budget: Duration::from_millis(500),
                call_timeout: Duration::from_secs(3),
                admission_wait: Duration::from_secs(1),
                ..SandboxLimits::default()
            },
            pool: PoolConfig::default(),
        })
        .expect("runtime");
        let load = |path: PathBuf| {
            runtime.load_file(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build the components with `cargo xtask plugins`)",
                    path.display()
                )
            })
        };
        Loaded {
            dummy: load(dummy_wasm()),
            hostile: load(hostile_wasm()),
            scripted: load(scripted_wasm()),
            runtime: runtime.clone(),
            _cache: cache,
        }
    })
}

/// A server with zone1 on `hostile` (in `mode`, with the secret set) and zone2 on `dummy`;
/// returns the server and zone2's id.
async fn attacked(mode: &str) -> (Arc<TestServer>, String) {
    let l = tokio::task::spawn_blocking(loaded).await.expect("loaded");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_loaded(
        dir,
        Some(l.runtime.clone()),
        &[l.dummy.clone(), l.hostile.clone(), l.scripted.clone()],
    )
    .await;
    let z2 = s.admin().call("createZone", &[("name", "zone2")]).await;
    let zone2 = id(&z2.ok("createZone")["zone"]);
    set_config(&s, "backup.framework.enabled", "true", Some(&zone2)).await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "dummy",
        Some(&zone2),
    )
    .await;
    let zone1 = s.zone_id.clone();
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "hostile",
        Some(&zone1),
    )
    .await;
    set_config(&s, "backup.plugin.hostile.password", SECRET, Some(&zone1)).await;
    set_config(&s, "backup.plugin.hostile.mode", mode, Some(&zone1)).await;
    (Arc::new(s), zone2)
}

/// zone2's dummy answers with its own policies.
async fn dummy_answers(s: &TestServer, zone2: &str) {
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", zone2)])
        .await;
    let offerings = items(r.ok("listBackupProviderOfferings"), "backupoffering");
    assert!(
        offerings.iter().any(|o| o["externalid"] == "gold-policy"),
        "zone2's dummy should answer: {}",
        r.text
    );
}

/// Every form of the secret the attack tries to leak.
fn leaks(text: &str) -> bool {
    use base64::Engine as _;
    let url: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{SECRET}"));
    text.contains(SECRET)
        || text.contains(&url)
        || text.contains(&url.replace('+', "%20"))
        || text.contains(&basic[8..basic.len() - 4])
}

/// Text that reached a user, an event or a header: bounded, one line, nothing of the secret.
fn assert_contained(what: &str, text: &str) {
    assert!(
        text.len() <= PROVIDER_TEXT_MAX_BYTES + 200,
        "{what} is {} bytes",
        text.len()
    );
    assert_clean(what, text);
}

/// One line, nothing of the secret.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "{what} has control characters: {text:?}"
    );
    assert!(!leaks(text), "{what} leaks the secret: {text}");
}

/// A user's VM in zone1 assigned to the hostile provider's `fine` policy.
async fn protected_hostile_vm(s: &TestServer) -> (Creds, String) {
    let fine = import(s, "fine", "Fine", true).await;
    let creds = s.create_user("mallory", "User", None).await;
    let client = s.client(creds.clone());
    let v = vm(s, &client, "victim", false).await;
    assign(&client, &id(&v), &id(&fine)).await;
    (creds, id(&v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_four_slow_calls_to_one_zone_leave_the_other_zone_answering() {
    // The requests run concurrently on this thread (the test server is not `Send`).
    tokio::task::LocalSet::new()
        .run_until(thirty_four_slow_calls())
        .await;
}

async fn thirty_four_slow_calls() {
    let (s, zone2) = attacked("sleep").await;
    let rt = loaded().runtime.clone();
    let zone1 = s.zone_id.clone();
    let slow: Vec<_> = (0..34)
        .map(|_| {
            let (s, zone1) = (s.clone(), zone1.clone());
            tokio::task::spawn_local(async move {
                s.admin()
                    .call("listBackupProviderOfferings", &[("zoneid", &zone1)])
                    .await
            })
        })
        .collect();
    // Wait (bounded) until the hostile provider holds its whole share of the pool.
    for _ in 0..500 {
        if rt.instances_in_use() >= DEFAULT_INSTANCES_PER_PROVIDER as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rt.instances_in_use() >= DEFAULT_INSTANCES_PER_PROVIDER as usize);
    for _ in 0..3 {
        dummy_answers(&s, &zone2).await;
    }
    for call in slow {
        let r = call.await.expect("request task");
        let text = r.err("listBackupProviderOfferings", 530);
        assert!(
            text.contains("timed out") || text.contains("busy"),
            "{text}"
        );
    }
    dummy_answers(&s, &zone2).await;
}

#[tokio::test]
async fn an_absurd_backup_size_fails_that_backup_and_nothing_else() {
    let (s, zone2) = attacked("ok").await;
    let (creds, vm) = protected_hostile_vm(&s).await;
    let user = s.client(creds);
    set_config(&s, "backup.plugin.hostile.mode", "bignum", Some(&s.zone_id)).await;
    let (backup, done) = create_backup(&user, &vm, &[]).await;
    let (_, text) = job_error(&done);
    assert!(
        text.contains("invalid result") && text.contains("larger than the largest size"),
        "{text}"
    );
    let b = get_backup(&user, &backup).await;
    assert_ne!(b["status"], "BackingUp", "{b}");
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM backups WHERE size > 9007199254740992"
        )
        .await,
        0
    );
    dummy_answers(&s, &zone2).await;
    // The zone is not wedged: its sync pass runs, and the instance can leave the offering.
    let report = sync(&s, jiff::Timestamp::now().as_second() + 60).await;
    let zone = report.zone(&s.zone_id).expect("zone synced");
    assert_eq!(zone.error, None, "{zone:?}");
    set_config(&s, "backup.plugin.hostile.mode", "ok", Some(&s.zone_id)).await;
    let done = user
        .call_async(
            "removeVirtualMachineFromBackupOffering",
            &[("virtualmachineid", &vm), ("forced", "true")],
        )
        .await;
    job_ok(&done);
}

#[tokio::test]
async fn restore_points_of_absurd_size_are_refused_and_the_next_sync_pass_is_clean() {
    let (s, zone2) = attacked("ok").await;
    set_config(
        &s,
        "backup.framework.provider.plugin",
        "scripted",
        Some(&s.zone_id),
    )
    .await;
    let silver = import(&s, "silver-policy", "Silver", true).await;
    let creds = s.create_user("vera", "User", None).await;
    let client = s.client(creds);
    let v = vm(&s, &client, "tracked", false).await;
    assign(&client, &id(&v), &id(&silver)).await;
    let max = u64::MAX;
    set_config(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!(
            "rp-1,1700000000,FULL,{max},{max},{vm}; rp-2,1700003600,FULL,{max},{max},{vm}",
            vm = id(&v)
        ),
        Some(&s.zone_id),
    )
    .await;
    let t = jiff::Timestamp::now().as_second() + 60;
    let report = sync(&s, t).await;
    let zone = report.zone(&s.zone_id).expect("zone synced");
    assert_eq!(zone.error, None, "{zone:?}");
    let r = zone.reconciled.as_ref().expect("reconciliation ran");
    assert_eq!((r.adopted, r.updated), (0, 0), "{r:?}");
    assert!(
        r.failed
            .iter()
            .any(|(_, why)| why.contains("invalid result")),
        "{r:?}"
    );
    dummy_answers(&s, &zone2).await;

    set_config(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!("rp-1,1700000000,FULL,1024,2048,{}", id(&v)),
        Some(&s.zone_id),
    )
    .await;
    let report = sync(&s, t + 300).await;
    let zone = report.zone(&s.zone_id).expect("zone synced");
    assert_eq!(zone.error, None, "{zone:?}");
    assert_eq!(zone.reconciled.as_ref().map(|r| r.adopted), Some(1));

    // Sizes that reached the store before these checks cannot wedge the zone either: sums
    // of them do not overflow.
    set_config(
        &s,
        "backup.plugin.scripted.restore-points",
        &format!(
            "rp-1,1700000000,FULL,1024,2048,{vm}; rp-2,1700003600,FULL,1,1,{vm}",
            vm = id(&v)
        ),
        Some(&s.zone_id),
    )
    .await;
    sync(&s, t + 600).await;
    exec(
        &s,
        "UPDATE backups SET size = 9223372036854775807, protected_size = 9223372036854775807",
    )
    .await;
    set_config(
        &s,
        "backup.plugin.scripted.mode",
        "outage",
        Some(&s.zone_id),
    )
    .await;
    for pass in 1..=2 {
        let report = sync(&s, t + 600 + pass * 300).await;
        let zone = report.zone(&s.zone_id).expect("zone synced");
        assert_eq!(zone.error, None, "pass {pass}: {zone:?}");
    }
    dummy_answers(&s, &zone2).await;
}

#[tokio::test]
async fn provider_text_is_bounded_sanitised_and_redacted_everywhere_it_goes() {
    let (s, zone2) = attacked("ok").await;
    let (creds, vm) = protected_hostile_vm(&s).await;
    let user = s.client(creds);

    for mode in ["noisy", "noisy-panic"] {
        set_config(&s, "backup.plugin.hostile.mode", mode, Some(&s.zone_id)).await;
        // A synchronous command: errortext and the X-Description header.
        let r = s
            .admin()
            .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
            .await;
        let text = r.err("listBackupProviderOfferings", 530);
        assert_contained("errortext", &text);
        assert_contained(
            "X-Description",
            r.x_description.as_deref().unwrap_or_default(),
        );
        // An async one: the job result, the backup's reason, and the events.
        let (backup, done) = create_backup(&user, &vm, &[]).await;
        let (_, text) = job_error(&done);
        assert_contained("the job result", &text);
        if mode == "noisy-panic" {
            assert!(
                !text.contains("admin password is"),
                "guest panic text must not reach users: {text}"
            );
        }
        let b = get_backup(&user, &backup).await;
        for (field, value) in b.as_object().into_iter().flatten() {
            assert_clean(field, value.as_str().unwrap_or_default());
        }
        dummy_answers(&s, &zone2).await;
    }
    for event in events_of(&s, "BACKUP.CREATE").await {
        assert_contained(
            "an event",
            event["description"].as_str().unwrap_or_default(),
        );
    }
    // The admin sees the panic text, cleaned the same way, in an event of their own.
    let details = events_of(&s, "BACKUP.PROVIDER.FAILURE").await;
    assert!(
        details.iter().any(|e| e["description"]
            .as_str()
            .is_some_and(|d| d.contains("admin password is ***"))),
        "{details:?}"
    );
    for event in &details {
        assert_clean(
            "an admin event",
            event["description"].as_str().unwrap_or_default(),
        );
        assert_ne!(event["account"], "mallory", "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_alias_one_buffer_are_stopped_at_the_copy_bound() {
    tokio::task::LocalSet::new()
        .run_until(aliased_results())
        .await;
}

async fn aliased_results() {
    let (s, zone2) = attacked("alias").await;
    let zone1 = s.zone_id.clone();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (s, zone1) = (s.clone(), zone1.clone());
            tokio::task::spawn_local(async move {
                s.admin()
                    .call("listBackupProviderOfferings", &[("zoneid", &zone1)])
                    .await
            })
        })
        .collect();
    dummy_answers(&s, &zone2).await;
    for call in calls {
        let r = call.await.expect("request task");
        let text = r.err("listBackupProviderOfferings", 530);
        assert!(text.contains("larger than the allowed size"), "{text}");
    }
    dummy_answers(&s, &zone2).await;
}

/// Copies the components into a providers directory as an operator would install them.
fn providers_dir(files: &[(PathBuf, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("providers dir");
    for (source, name) in files {
        std::fs::copy(source, dir.path().join(name)).expect("copy component");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thieves_impostors_and_hanging_describes_are_refused_at_start_with_the_reason() {
    let providers = providers_dir(&[
        (dummy_wasm(), "bnr_dummy.wasm"),
        (hostile_wasm(), "bnr_fixture_hostile.wasm"),
        (fixture("bnr_fixture_thief.wasm"), "bnr_fixture_thief.wasm"),
        // Sorts before the built-in: order must not decide who wins.
        (fixture("bnr_fixture_impostor.wasm"), "a_dummy.wasm"),
        (
            fixture("bnr_fixture_slow_describe.wasm"),
            "bnr_fixture_slow_describe.wasm",
        ),
    ]);
    let cache = tempfile::tempdir().expect("cache");
    let s = start_from(
        tempfile::tempdir().expect("data dir"),
        ProviderSource::Directory {
            providers_dir: providers.path().to_owned(),
            cache_dir: cache.path().to_owned(),
        },
    )
    .await;

    let r = s.admin().call("listBackupProviders", &[]).await;
    let mut names: Vec<String> = items(r.ok("listBackupProviders"), "providers")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    // The bundled providers (dummy, networker, veeam) plus the directory's hostile one.
    assert_eq!(
        names,
        ["dummy", "hostile", "networker", "veeam"],
        "{}",
        r.text
    );

    // The built-in dummy serves zone1, not the impostor.
    let r = s
        .admin()
        .call("listBackupProviderOfferings", &[("zoneid", &s.zone_id)])
        .await;
    let offerings = items(r.ok("listBackupProviderOfferings"), "backupoffering");
    assert!(
        offerings.iter().all(|o| o["externalid"] != "impostor"),
        "{}",
        r.text
    );
    assert!(
        offerings.iter().any(|o| o["externalid"] == "gold-policy"),
        "{}",
        r.text
    );

    // The thief cannot read hostile's secret: it was never loaded, and said why.
    let events = events_of(&s, "BACKUP.PROVIDER.LOAD").await;
    let described: Vec<String> = events
        .iter()
        .map(|e| e["description"].as_str().unwrap_or_default().to_owned())
        .collect();
    let about = |file: &str| {
        described
            .iter()
            .find(|d| d.contains(file))
            .unwrap_or_else(|| panic!("no event about {file}: {described:?}"))
            .clone()
    };
    assert!(
        about("bnr_fixture_thief.wasm").contains("not owned by provider `thief`"),
        "{described:?}"
    );
    let conflict = about("a_dummy.wasm");
    assert!(
        conflict.contains("provider name `dummy`") && conflict.contains("built-in"),
        "{conflict}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "ERROR" && e["description"].as_str() == Some(&conflict)),
        "{events:?}"
    );
    assert!(
        about("bnr_fixture_slow_describe.wasm").contains("describe() failed"),
        "{described:?}"
    );
    // A thief's stolen setting name never became a setting of its own.
    let r = s
        .admin()
        .call(
            "listConfigurations",
            &[("name", "backup.plugin.thief.mode")],
        )
        .await;
    assert!(
        items(r.ok("listConfigurations"), "configuration").is_empty(),
        "{}",
        r.text
    );
}
