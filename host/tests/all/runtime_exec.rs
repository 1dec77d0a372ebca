//! The SSH transport and per-zone TLS trust, driven through the `exec-probe` component
//! (`bnr:provider@1.1.0`) against real peers: OpenSSH's sshd and a rustls HTTPS server.
//! Also: a `bnr:provider@1.0.0` component loads and runs next to it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bnr_runtime::{
    CallContext, CallError, Grants, Provider, Runtime, RuntimeConfig, SshConnection, SshGrant,
    types::{Policy, ProviderError},
};

use crate::support::{self, EXEC_PROBE, TempDir, WIT_1_0, WIT_1_1, zone};
use crate::support_peers::{
    Sshd, TLS_BODY, counting_listener, ssh_keygen, tls_server_keep_alive, tls_server_self_signed,
    tls_server_with_ca,
};

/// A runtime of its own with a generous call timeout: key exchange in a debug build on a
/// loaded machine takes a while, and these tests are about the transport's own bounds.
fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<(Arc<Runtime>, TempDir)> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cache = TempDir::for_process("exec-cache");
            let config = RuntimeConfig {
                cache_dir: cache.path().to_owned(),
                observer: None,
                limits: bnr_runtime::SandboxLimits {
                    call_timeout: Duration::from_secs(30),
                    http_timeout: Duration::from_secs(20),
                    ..support::test_limits()
                },
                pool: support::test_pool(),
            };
            (Runtime::new(config).expect("runtime starts"), cache)
        })
        .0
        .clone()
}

fn load(stem: &str) -> Arc<Provider> {
    static LOADED: OnceLock<std::sync::Mutex<HashMap<String, Arc<Provider>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loaded
        .entry(stem.to_owned())
        .or_insert_with(|| {
            runtime()
                .load_file(&support::component_path(stem))
                .unwrap_or_else(|err| panic!("loading {stem}: {err}"))
        })
        .clone()
}

fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Settings that reach `sshd` as root with its authorised key and pinned host key, then
/// `overrides` (an empty value unsets a setting).
fn ssh_settings(sshd: &Sshd, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let port = sshd.port.to_string();
    let mut map = settings(&[
        ("backup.plugin.exec-probe.mode", "exec"),
        ("backup.plugin.exec-probe.ssh.host", "127.0.0.1"),
        ("backup.plugin.exec-probe.ssh.port", &port),
        ("backup.plugin.exec-probe.ssh.user", "root"),
        (
            "backup.plugin.exec-probe.ssh.key",
            &sshd.user_key.private_pem,
        ),
        (
            "backup.plugin.exec-probe.ssh.host-key",
            &sshd.host_key.fingerprint,
        ),
        ("backup.plugin.exec-probe.timeout-ms", "20000"),
    ]);
    map.extend(settings(overrides));
    map
}

/// Runs the probe with grants derived from `settings`, as the service layer does.
async fn probe(settings: HashMap<String, String>) -> Result<Vec<Policy>, CallError> {
    let provider = load(EXEC_PROBE);
    let grants = Grants::derive(provider.info(), &settings, None, &[]);
    let ctx = CallContext::new("zone-1", settings, grants);
    provider.list_policies(&ctx, &zone()).await
}

/// The error text the probe reports (`Debug` form of the exec error without its type name,
/// e.g. `Timeout`, or the HTTP error's text).
fn rejected(result: Result<Vec<Policy>, CallError>) -> String {
    match result {
        Err(CallError::Provider(ProviderError::Rejected(message))) => message
            .strip_prefix("ExecError::")
            .map(str::to_owned)
            .unwrap_or(message),
        other => panic!("expected a rejected call, got {other:?}"),
    }
}

#[tokio::test]
async fn a_granted_target_runs_the_command_with_stdin_and_returns_exit_code_and_output() {
    let sshd = Sshd::start();
    // Quotes and `$` travel through stdin untouched: no shell quoting needed.
    let script = "line one\nit's $HOME \"quoted\"";
    let policies = probe(ssh_settings(
        &sshd,
        &[
            (
                "backup.plugin.exec-probe.command",
                "cat; echo to-stderr >&2; exit 3",
            ),
            ("backup.plugin.exec-probe.stdin", script),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].external_id, "exit:3");
    assert_eq!(policies[0].name, escaped(script));
    assert_eq!(policies[0].description, escaped("to-stderr\n"));
}

#[tokio::test]
async fn an_ungranted_target_is_denied_and_nothing_is_sent() {
    let listener = counting_listener().await;
    let port = listener.port.to_string();
    for target in ["localhost", "127.0.0.2", "10.1.2.3"] {
        let message = rejected(
            probe(settings(&[
                ("backup.plugin.exec-probe.ssh.host", "127.0.0.1"),
                ("backup.plugin.exec-probe.ssh.port", &port),
                ("backup.plugin.exec-probe.ssh.user", "root"),
                ("backup.plugin.exec-probe.ssh.password", "secret"),
                ("backup.plugin.exec-probe.ssh.host-key", "SHA256:AAAA"),
                ("backup.plugin.exec-probe.target", target),
                ("backup.plugin.exec-probe.command", "true"),
            ]))
            .await,
        );
        assert!(message.starts_with("Denied("), "{target}: {message}");
    }
    assert_eq!(listener.connections.load(Ordering::SeqCst), 0);

    // The granted target itself is contacted (the listener is no SSH server).
    let message = rejected(
        probe(settings(&[
            ("backup.plugin.exec-probe.ssh.host", "127.0.0.1"),
            ("backup.plugin.exec-probe.ssh.port", &port),
            ("backup.plugin.exec-probe.ssh.user", "root"),
            ("backup.plugin.exec-probe.ssh.password", "secret"),
            ("backup.plugin.exec-probe.ssh.host-key", "SHA256:AAAA"),
            ("backup.plugin.exec-probe.command", "true"),
        ]))
        .await,
    );
    assert!(message.starts_with("Unreachable("), "{message}");
    assert_eq!(listener.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start();
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.ssh.host-key", ""),
                ("backup.plugin.exec-probe.command", "touch /tmp/x"),
            ],
        ))
        .await,
    );
    assert_eq!(
        message,
        format!("HostKeyUnknown({:?})", sshd.host_key.fingerprint)
    );
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused() {
    let sshd = Sshd::start();
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                (
                    "backup.plugin.exec-probe.ssh.host-key",
                    &sshd.user_key.fingerprint,
                ),
                ("backup.plugin.exec-probe.command", "true"),
            ],
        ))
        .await,
    );
    assert_eq!(
        message,
        format!("HostKeyMismatch({:?})", sshd.host_key.fingerprint)
    );

    // Any of several pins (key rotation) is enough.
    let pins = format!(
        "{}, {}",
        sshd.user_key.fingerprint, sshd.host_key.fingerprint
    );
    let policies = probe(ssh_settings(
        &sshd,
        &[
            ("backup.plugin.exec-probe.ssh.host-key", &pins),
            ("backup.plugin.exec-probe.command", "echo ok"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].name, escaped("ok\n"));
}

#[tokio::test]
async fn wrong_credentials_fail_as_auth_failed() {
    let sshd = Sshd::start();
    let stranger = ssh_keygen(&sshd.dir(), "stranger");
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.ssh.key", &stranger.private_pem),
                ("backup.plugin.exec-probe.command", "true"),
            ],
        ))
        .await,
    );
    assert!(message.starts_with("AuthFailed("), "{message}");
    assert!(
        message.contains("backup.plugin.exec-probe.ssh.key"),
        "names the setting: {message}"
    );

    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.ssh.key", ""),
                ("backup.plugin.exec-probe.ssh.password", "not-the-password"),
                ("backup.plugin.exec-probe.command", "true"),
            ],
        ))
        .await,
    );
    assert!(message.starts_with("AuthFailed("), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
}

#[tokio::test]
async fn malformed_connection_settings_are_named_before_connecting() {
    let sshd = Sshd::start();
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.ssh.port", "twenty-two"),
                ("backup.plugin.exec-probe.command", "true"),
            ],
        ))
        .await,
    );
    assert!(
        message.starts_with("InvalidConfig(")
            && message.contains("backup.plugin.exec-probe.ssh.port"),
        "{message}"
    );
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.ssh.host-key", "MD5:aa:bb"),
                ("backup.plugin.exec-probe.command", "true"),
            ],
        ))
        .await,
    );
    assert!(message.starts_with("InvalidConfig("), "{message}");
}

#[tokio::test]
async fn a_command_that_runs_too_long_ends_with_timeout() {
    let sshd = Sshd::start();
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                ("backup.plugin.exec-probe.command", "sleep 60"),
                ("backup.plugin.exec-probe.timeout-ms", "2000"),
            ],
        ))
        .await,
    );
    assert_eq!(message, "Timeout");
}

#[tokio::test]
async fn output_past_the_bound_ends_the_command() {
    let sshd = Sshd::start();
    let message = rejected(
        probe(ssh_settings(
            &sshd,
            &[
                (
                    "backup.plugin.exec-probe.command",
                    "head -c 200000 /dev/zero | tr '\\0' x",
                ),
                ("backup.plugin.exec-probe.max-output", "1000"),
            ],
        ))
        .await,
    );
    assert_eq!(message, "OutputTooLarge(1000)");
    // Within the bound the same command succeeds.
    let policies = probe(ssh_settings(
        &sshd,
        &[
            (
                "backup.plugin.exec-probe.command",
                "head -c 1000 /dev/zero | tr '\\0' x",
            ),
            ("backup.plugin.exec-probe.max-output", "1000"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].name, "x".repeat(1000));
}

fn https_settings(url: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map = settings(&[
        ("backup.plugin.exec-probe.mode", "https"),
        ("backup.plugin.exec-probe.url", url),
    ]);
    map.extend(settings(overrides));
    map
}

#[tokio::test]
async fn https_to_a_pinned_self_signed_certificate_works_and_a_different_pin_fails() {
    let server = tls_server_self_signed().await;
    let url = format!("https://127.0.0.1:{}/api", server.port);

    let policies = probe(https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.pin", &server.fingerprint)],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].external_id, "status:200");
    assert_eq!(policies[0].name, TLS_BODY);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Lower case without colons is the same pin.
    let plain = server.fingerprint.replace(':', "").to_lowercase();
    probe(https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.pin", &plain)],
    ))
    .await
    .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // Another pin, or no trust setting at all (system roots): the handshake fails, no request.
    let other_pin = "00".repeat(32);
    for overrides in [
        vec![("backup.plugin.exec-probe.tls.pin", other_pin.as_str())],
        vec![],
    ] {
        let message = rejected(probe(https_settings(&url, &overrides)).await);
        assert!(
            message.to_lowercase().contains("tls"),
            "{overrides:?}: {message}"
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn https_trusts_a_ca_from_the_settings_for_that_destination_only() {
    let server = tls_server_with_ca().await;
    let url = format!("https://localhost:{}/api", server.port);
    let policies = probe(https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.ca", &server.trust_pem)],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].name, TLS_BODY);

    // The CA does not vouch for another server's self-signed certificate.
    let other = tls_server_self_signed().await;
    let other_url = format!("https://localhost:{}/api", other.port);
    let message = rejected(
        probe(https_settings(
            &other_url,
            &[("backup.plugin.exec-probe.tls.ca", &server.trust_pem)],
        ))
        .await,
    );
    assert!(message.to_lowercase().contains("tls"), "{message}");
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn validate_false_accepts_any_certificate_but_only_from_the_granted_destination() {
    let server = tls_server_self_signed().await;
    let url = format!("https://127.0.0.1:{}/api", server.port);
    let policies = probe(https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.validate", "false")],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].name, TLS_BODY);

    // Granted for one destination, the request goes to another: denied, nothing sent.
    let other = tls_server_self_signed().await;
    let provider = load(EXEC_PROBE);
    let granted = https_settings(&url, &[("backup.plugin.exec-probe.tls.validate", "false")]);
    let grants = Grants::derive(provider.info(), &granted, None, &[]);
    let other_url = format!("https://127.0.0.1:{}/api", other.port);
    let ctx = CallContext::new(
        "zone-1",
        https_settings(
            &other_url,
            &[("backup.plugin.exec-probe.tls.validate", "false")],
        ),
        grants,
    );
    let message = rejected(provider.list_policies(&ctx, &zone()).await);
    assert!(message.to_lowercase().contains("denied"), "{message}");
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn plain_http_to_a_destination_granted_for_https_is_denied() {
    let server = tls_server_self_signed().await;
    let provider = load(EXEC_PROBE);
    let https_url = format!("https://127.0.0.1:{}/api", server.port);
    let granted = https_settings(
        &https_url,
        &[("backup.plugin.exec-probe.tls.pin", &server.fingerprint)],
    );
    let grants = Grants::derive(provider.info(), &granted, None, &[]);
    let http_url = format!("http://127.0.0.1:{}/api", server.port);
    let ctx = CallContext::new(
        "zone-1",
        https_settings(
            &http_url,
            &[("backup.plugin.exec-probe.tls.pin", &server.fingerprint)],
        ),
        grants,
    );
    let message = rejected(provider.list_policies(&ctx, &zone()).await);
    assert!(message.to_lowercase().contains("denied"), "{message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

/// Runs the probe in `zone` with grants derived from `settings`.
async fn probe_in(
    zone_uuid: &str,
    settings: HashMap<String, String>,
) -> Result<Vec<Policy>, CallError> {
    let provider = load(EXEC_PROBE);
    let grants = Grants::derive(provider.info(), &settings, None, &[]);
    let ctx = CallContext::new(zone_uuid, settings, grants);
    provider.list_policies(&ctx, &zone()).await
}

/// Waits (bounded) until the probe keeps `count` idle HTTPS connections for `zone_uuid`: a
/// connection goes back to the pool once hyper has finished with its response.
async fn wait_for_idle(zone_uuid: &str, count: usize) {
    let provider = load(EXEC_PROBE).info().name.clone();
    for _ in 0..500 {
        if bnr_runtime::idle_https_connections(&provider, zone_uuid) == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{zone_uuid}: {} idle connections, expected {count}",
        bnr_runtime::idle_https_connections(&provider, zone_uuid)
    );
}

#[tokio::test]
async fn https_reuses_a_connection_only_for_the_same_zone_and_trust() {
    let server = tls_server_keep_alive().await;
    let url = format!("https://127.0.0.1:{}/api", server.port);
    let pinned = https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.pin", &server.fingerprint)],
    );
    let accepted = || server.connections.load(Ordering::SeqCst);

    let policies = probe_in("zone-pool-a", pinned.clone()).await.unwrap();
    assert_eq!(policies[0].name, TLS_BODY);
    wait_for_idle("zone-pool-a", 1).await;
    probe_in("zone-pool-a", pinned.clone()).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        accepted(),
        1,
        "the second call reuses the first call's connection"
    );
    wait_for_idle("zone-pool-a", 1).await;

    // Another zone with the same settings never gets zone A's idle connection.
    probe_in("zone-pool-b", pinned.clone()).await.unwrap();
    assert_eq!(accepted(), 2);
    wait_for_idle("zone-pool-b", 1).await;
    wait_for_idle("zone-pool-a", 1).await;

    // A changed pin (still matching the server) is another trust: a new connection, and the
    // old one is not used for it.
    let rotated = format!("{}, {}", "00".repeat(32), server.fingerprint);
    let repinned = https_settings(&url, &[("backup.plugin.exec-probe.tls.pin", &rotated)]);
    probe_in("zone-pool-a", repinned.clone()).await.unwrap();
    assert_eq!(accepted(), 3);
    wait_for_idle("zone-pool-a", 2).await;
    probe_in("zone-pool-a", repinned).await.unwrap();
    assert_eq!(accepted(), 3);

    // A pin the server does not match: the handshake of a new connection fails; no idle
    // connection made under the earlier pins is used for it.
    let other = https_settings(
        &url,
        &[("backup.plugin.exec-probe.tls.pin", &"00".repeat(32))],
    );
    let hits = server.hits.load(Ordering::SeqCst);
    let message = rejected(probe_in("zone-pool-a", other).await);
    assert!(message.to_lowercase().contains("tls"), "{message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), hits);
    assert_eq!(accepted(), 4);
}

#[tokio::test]
async fn a_connection_whose_response_failed_is_not_reused() {
    let server = tls_server_keep_alive().await;
    let pin = [(
        "backup.plugin.exec-probe.tls.pin",
        server.fingerprint.as_str(),
    )];
    let good = https_settings(&format!("https://127.0.0.1:{}/api", server.port), &pin);
    let broken = https_settings(&format!("https://127.0.0.1:{}/broken", server.port), &pin);
    let accepted = || server.connections.load(Ordering::SeqCst);

    probe_in("zone-pool-c", good.clone()).await.unwrap();
    wait_for_idle("zone-pool-c", 1).await;
    // The broken response arrives on the pooled connection; that connection is dropped.
    rejected(probe_in("zone-pool-c", broken).await);
    assert_eq!(accepted(), 1);
    wait_for_idle("zone-pool-c", 0).await;
    probe_in("zone-pool-c", good).await.unwrap();
    assert_eq!(accepted(), 2);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn components_of_1_0_0_and_1_1_0_load_and_run_next_to_a_1_3_0_one() {
    let legacy = load(WIT_1_0);
    let legacy11 = load(WIT_1_1);
    let probe_provider = load(EXEC_PROBE);
    assert_eq!(legacy.wit_version(), "1.0.0");
    assert_eq!(legacy11.wit_version(), "1.1.0");
    assert_eq!(probe_provider.wit_version(), "1.3.0");
    assert_eq!(legacy.name(), "legacy");

    let policies = legacy11
        .list_policies(&CallContext::default(), &zone())
        .await
        .unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].external_id, "legacy11-daily");

    let policies = legacy
        .list_policies(&CallContext::default(), &zone())
        .await
        .unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].external_id, "legacy-daily");

    // 1.0.0's remote-exec goes through the same transport. Without a connection configured
    // by the operator the host key cannot be pinned, and the error shows its fingerprint.
    let sshd = Sshd::start();
    let port = sshd.port.to_string();
    let zone_settings = settings(&[
        ("backup.plugin.legacy.host", "127.0.0.1"),
        ("backup.plugin.legacy.port", &port),
    ]);
    let grants = Grants::derive(legacy.info(), &zone_settings, None, &[]);
    let ctx = CallContext::new("zone-1", zone_settings.clone(), grants.clone());
    let message = rejected(legacy.list_policies(&ctx, &zone()).await);
    assert!(message.starts_with("Unreachable("), "{message}");
    assert!(message.contains(&sshd.host_key.fingerprint), "{message}");

    // With the operator's connection for that host (as the service adds for a host record),
    // the command runs.
    let mut grants = grants;
    grants.ssh.push(SshGrant {
        target: "127.0.0.1".into(),
        connection: Ok(SshConnection {
            port: sshd.port,
            username: "root".into(),
            password: None,
            private_key: Some(sshd.user_key.private_pem.clone()),
            host_keys: vec![sshd.host_key.fingerprint.clone()],
            credential_source: "the test's host record".into(),
        }),
    });
    let ctx = CallContext::new("zone-1", zone_settings, grants);
    let policies = legacy.list_policies(&ctx, &zone()).await.unwrap();
    assert_eq!(policies[1].external_id, "exit:0");
    assert_eq!(policies[1].name, escaped("legacy\n"));

    // The 1.3.0 component keeps working in the same runtime.
    let policies = probe(ssh_settings(
        &sshd,
        &[("backup.plugin.exec-probe.command", "echo new")],
    ))
    .await
    .unwrap();
    assert_eq!(policies[0].name, escaped("new\n"));
}

/// How the probe components report command output (policy names cannot carry control characters).
fn escaped(text: &str) -> String {
    text.escape_default().to_string()
}
