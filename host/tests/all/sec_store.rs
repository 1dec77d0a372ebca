//! The store and the wire: file modes, secrets at rest, XML-safe envelopes, logins.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::http::Method;
use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use sha2::{Digest, Sha256};

use bnr::config::{Definition, Kind};

use crate::bnr_support::*;
use crate::sched_support::{exec, scalar};
use crate::support_api::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every byte the database keeps on disk: the main file, the WAL and the shared memory file.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["bnr.sqlite", "bnr.sqlite-wal", "bnr.sqlite-shm"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_data_dir_bnr_creates_is_private_and_so_are_its_files() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    let opts = bnr::inventory::bootstrap::BootstrapOptions {
        admin_password: Some(ADMIN_PASSWORD.into()),
        admin_keys: Some((ADMIN_API_KEY.into(), ADMIN_SECRET_KEY.into())),
    };
    let (state, _) = bnr::api::serve::prepare(&data, &opts)
        .await
        .expect("server start");
    assert_eq!(mode(&data), 0o700);
    for name in ["bnr.sqlite", "bnr.sqlite-wal", "bnr.sqlite-shm", "bnr.key"] {
        let path = data.join(name);
        assert!(path.exists(), "{name} exists");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    drop(state);
}

#[tokio::test]
async fn no_secret_is_found_by_a_byte_search_of_the_store() {
    let s = start(Installed::Dummy).await;
    s.state
        .settings()
        .register(
            Definition::new(
                "backup.plugin.vault.password",
                Kind::String,
                "",
                "vault password",
            )
            .zone_scoped()
            .secret(),
        )
        .expect("definition");
    let password = "vault-password-4f1c9e27d3";
    set_config(
        &s,
        "backup.plugin.vault.password",
        password,
        Some(&s.zone_id),
    )
    .await;
    let creds = s.create_user("sam", "User", None).await;
    let sam = s.client(creds.clone());
    sam.call("listZones", &[]).await.ok("listZones");
    // Bootstrap keys given by the operator are secrets too.
    for (what, secret) in [
        ("the setting", password),
        ("sam's secret key", creds.secret_key.as_str()),
        ("the admin's secret key", ADMIN_SECRET_KEY),
    ] {
        assert!(
            !contains(&store_bytes(s.dir.path()), secret),
            "{what} is stored in plain text"
        );
    }
    assert_eq!(
        s.state
            .settings()
            .get("backup.plugin.vault.password", None)
            .as_deref(),
        Some(""),
        "global default untouched"
    );
    let zone = scalar(
        &s,
        &format!("SELECT id FROM zones WHERE uuid = '{}'", s.zone_id),
    )
    .await;
    assert_eq!(
        s.state
            .settings()
            .get("backup.plugin.vault.password", Some(zone))
            .as_deref(),
        Some(password)
    );
    // After a restart the secret still reads back, and signed requests still verify.
    let s = crate::sched_support::restart(s, Installed::Dummy).await;
    s.state
        .settings()
        .register(
            Definition::new(
                "backup.plugin.vault.password",
                Kind::String,
                "",
                "vault password",
            )
            .zone_scoped()
            .secret(),
        )
        .expect("definition");
    assert_eq!(
        s.state
            .settings()
            .get("backup.plugin.vault.password", Some(zone))
            .as_deref(),
        Some(password)
    );
    s.client(creds).call("listZones", &[]).await.ok("listZones");
    assert!(!contains(&store_bytes(s.dir.path()), password));
}

async fn login(s: &TestServer, user: &str, password: &str) -> Resp {
    s.send(
        Method::POST,
        "/client/api",
        Some(format!(
            "command=login&username={user}&password={password}&domain=%2F&response=json"
        )),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id() {
    let s = TestServer::start().await;
    s.create_user("hana", "User", None).await;
    let hash: String = s
        .state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT password_hash FROM users WHERE username = 'hana'",
                [],
                |r| r.get(0),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    login(&s, "hana", "pw").await.ok("login");
}

#[tokio::test]
async fn no_live_session_key_or_cookie_is_found_by_a_byte_search_of_the_store() {
    let s = TestServer::start().await;
    s.create_user("hana", "User", None).await;
    let r = login(&s, "hana", "pw").await;
    let key = r.ok("login")["sessionkey"]
        .as_str()
        .expect("sessionkey")
        .to_string();
    let jsessionid = r
        .set_cookies
        .iter()
        .find_map(|c| c.strip_prefix("JSESSIONID="))
        .and_then(|c| c.split(';').next())
        .expect("JSESSIONID cookie")
        .to_string();
    let listed = s
        .send(
            Method::GET,
            &format!("/client/api?command=listZones&sessionkey={key}&response=json"),
            None,
            &[("cookie", &format!("JSESSIONID={jsessionid}"))],
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let bytes = store_bytes(s.dir.path());
    assert!(!contains(&bytes, &key), "the session key is stored");
    assert!(!contains(&bytes, &jsessionid), "the JSESSIONID is stored");
}

#[tokio::test]
async fn repeated_failed_logins_disable_the_user_as_cloudstack_does() {
    let s = TestServer::start().await;
    let creds = s.create_user("lou", "User", None).await;
    set_global(&s, "incorrect.login.attempts.allowed", "3").await;
    for _ in 0..2 {
        login(&s, "lou", "wrong").await.err("login", 531);
    }
    // A success in between resets the count.
    login(&s, "lou", "pw").await.ok("login");
    for _ in 0..3 {
        login(&s, "lou", "wrong").await.err("login", 531);
    }
    // Disabled now: the right password and the API keys no longer work.
    login(&s, "lou", "pw").await.err("login", 531);
    s.client(creds)
        .call("listZones", &[])
        .await
        .err("listZones", 401);
    let listed = s
        .admin()
        .call("listUsers", &[("username", "lou"), ("listall", "true")])
        .await;
    assert_eq!(listed.ok("listUsers")["user"][0]["state"], "disabled");
}

async fn set_global(s: &TestServer, name: &str, value: &str) {
    s.admin()
        .call("updateConfiguration", &[("name", name), ("value", value)])
        .await
        .ok("updateConfiguration");
}

#[tokio::test]
async fn a_legacy_sha256_password_is_upgraded_to_argon2id_on_the_next_login() {
    let s = TestServer::start().await;
    s.create_user("olga", "User", None).await;
    let salt = [7u8; 16];
    let rounds = 10_000;
    let mut digest = Sha256::new()
        .chain_update(salt)
        .chain_update(b"old-pw")
        .finalize();
    for _ in 1..rounds {
        digest = Sha256::new()
            .chain_update(salt)
            .chain_update(digest)
            .finalize();
    }
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let legacy = format!(
        "sha256${rounds}${}${}",
        b64.encode(salt),
        b64.encode(digest)
    );
    exec(
        &s,
        &format!("UPDATE users SET password_hash = '{legacy}' WHERE username = 'olga'"),
    )
    .await;
    login(&s, "olga", "wrong").await.err("login", 531);
    login(&s, "olga", "old-pw").await.ok("login");
    let upgraded = scalar(
        &s,
        "SELECT password_hash LIKE '$argon2id$%' FROM users WHERE username = 'olga'",
    )
    .await;
    assert_eq!(upgraded, 1);
    login(&s, "olga", "old-pw").await.ok("login");
}

/// Characters a stored string may hold, weighted towards the ones XML and JSON treat specially.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        1 => Just('\u{FFFF}'),
        1 => Just('\u{FFFE}'),
        1 => Just('\u{7F}'),
        1 => prop::sample::select(vec!['<', '>', '&', '"', '\'', ']', '\\', '\r']),
    ]
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..24).prop_map(|cs| cs.into_iter().collect())
}

/// Every list command a user and an admin run, in both renderings, over whatever text the
/// store holds.
const LISTS: &[&str] = &[
    "listVirtualMachines",
    "listVolumes",
    "listBackups",
    "listBackupOfferings",
    "listEvents",
    "listAccounts",
    "listUsers",
    "listDomains",
    "listBackupSchedule",
    "listAsyncJobs",
    "listZones",
];

/// XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn assert_parses(r: &Resp, what: &str, xml: bool) {
    if xml {
        if let Err(e) = roxmltree::Document::parse(&r.text) {
            panic!("{what}: XML does not parse ({e}): {:?}", r.text);
        }
        // The parser is lenient about a few characters XML 1.0 forbids (U+FFFE, U+FFFF).
        let forbidden = r.text.chars().find(|c| !is_xml_char(*c));
        assert!(
            forbidden.is_none(),
            "{what}: {forbidden:?} in XML: {:?}",
            r.text
        );
    } else {
        let parsed: Result<Value, _> = serde_json::from_str(&r.text);
        assert!(parsed.is_ok(), "{what}: JSON does not parse: {:?}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_over_arbitrary_stored_strings_parses_as_xml_and_json() {
    let s = start(Installed::Dummy).await;
    let gold = import(&s, "gold-policy", "Gold", true).await;
    let user = s.client(s.create_user("pia", "User", None).await);
    let v = vm(&s, &user, "pia-vm", true).await;
    assign(&user, &id(&v), &id(&gold)).await;
    backup(&user, &id(&v)).await;
    crate::sched_support::configure_schedule(&user, &id(&v), "DAILY", "00:01", &[]).await;
    // A backup named with U+FFFF through the API.
    let (named, done) = create_backup(&user, &id(&v), &[("name", "bad\u{FFFF}name\u{1}")]).await;
    job_ok(&done);
    let r = user
        .call("listBackups", &[("id", &named), ("response", "xml")])
        .await;
    assert_parses(&r, "listBackups with U+FFFF", true);

    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&nasty_string(), |text| {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let sql = [
                        "UPDATE vms SET name = ?1, display_name = ?1",
                        "UPDATE volumes SET name = ?1",
                        "UPDATE backups SET name = ?1, description = ?1",
                        "UPDATE backup_offerings SET name = ?1, description = ?1",
                        "UPDATE events SET description = ?1",
                        "UPDATE accounts SET name = ?1 WHERE role = 'user'",
                        "UPDATE users SET firstname = ?1, lastname = ?1, email = ?1",
                        "UPDATE domains SET name = ?1 WHERE path != '/'",
                        "UPDATE zones SET name = ?1",
                        "UPDATE async_jobs SET result = json_object('errortext', ?1)",
                    ];
                    let value = text.clone();
                    s.state
                        .store()
                        .write(move |tx| {
                            for statement in sql {
                                tx.execute(statement, [&value])?;
                            }
                            Ok::<_, bnr::store::StoreError>(())
                        })
                        .await
                        .expect("store update");
                    for command in LISTS {
                        for (client, who) in [(&user, "user"), (&s.admin(), "admin")] {
                            for format in ["xml", "json"] {
                                let r = client
                                    .call(command, &[("listall", "true"), ("response", format)])
                                    .await;
                                assert_parses(&r, &format!("{command} as {who}"), format == "xml");
                            }
                        }
                    }
                })
            });
            Ok(())
        })
        .expect("every response parses");
}
