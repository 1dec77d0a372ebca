//! `bnr plugin keygen | sign | check`, run as a vendor would: the built binary.

use std::process::{Command, Output};

use crate::support::{self, DUMMY, TempDir};

fn bnr(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnr"))
        .arg("plugin")
        .args(args)
        .output()
        .expect("running bnr")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The clause lines of a check's output, as (PASS|FAIL, clause name).
fn clauses(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (verdict, rest) = line.split_once("  ")?;
            matches!(verdict, "PASS" | "FAIL").then(|| {
                let name = rest.split(':').next().unwrap_or(rest).to_string();
                (verdict.to_string(), name)
            })
        })
        .collect()
}

#[test]
fn plugin_check_passes_the_dummy() {
    let out = bnr(&["check".as_ref(), support::component_path(DUMMY).as_os_str()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let clauses = clauses(&stdout);
    assert!(clauses.len() >= 10, "{stdout}");
    assert!(clauses.iter().all(|(v, _)| v == "PASS"), "{stdout}");
}

#[test]
fn plugin_check_fails_a_broken_provider_on_the_clauses_it_breaks() {
    let out = bnr(&[
        "check".as_ref(),
        support::component_path("bnr_fixture_broken_contract").as_os_str(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let failed: Vec<String> = clauses(&stdout)
        .into_iter()
        .filter(|(v, _)| v == "FAIL")
        .map(|(_, name)| name)
        .collect();
    assert_eq!(
        failed,
        [
            "validate agrees with the list",
            "restore",
            "delete",
            "errors are typed",
            "no call outlives its bound"
        ],
        "{stdout}"
    );
    for passed in [
        "describe is valid",
        "policies list",
        "assign",
        "back up and poll to the end",
        "remove",
    ] {
        assert!(
            stdout.contains(&format!("PASS  {passed}")),
            "{passed} should pass:\n{stdout}"
        );
    }
}

#[test]
fn plugin_check_refuses_settings_the_provider_does_not_declare() {
    let out = bnr(&[
        "check".as_ref(),
        support::component_path(DUMMY).as_os_str(),
        "--setting".as_ref(),
        "backup.plugin.other.url=http://x".as_ref(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  settings given are declared"),
        "{stdout}"
    );
}

#[test]
fn keygen_and_sign_produce_a_signature_the_server_verifies() {
    let dir = TempDir::new("sign");
    let prefix = dir.path().join("vendor");
    let out = bnr(&["keygen".as_ref(), "--out".as_ref(), prefix.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret_path = prefix.with_extension("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret key is private");
    }
    let public = std::fs::read_to_string(prefix.with_extension("pub")).unwrap();

    let wasm = dir.path().join("dummy.wasm");
    std::fs::copy(support::component_path(DUMMY), &wasm).unwrap();
    let out = bnr(&[
        "sign".as_ref(),
        wasm.as_os_str(),
        "--key".as_ref(),
        secret_path.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let signature = std::fs::read_to_string(dir.path().join("dummy.wasm.sig")).unwrap();

    use bnr::plugins::signing;
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&wasm).unwrap()));
    let public = signing::parse_public_key(&public).unwrap();
    let signature = signing::parse_signature(&signature).unwrap();
    assert!(signing::verify(
        &public, &signature, &sha256, "dummy", "1.0.0"
    ));
    assert!(!signing::verify(
        &public, &signature, &sha256, "dummy", "1.0.1"
    ));
}

#[test]
fn plugin_check_fails_the_clauses_a_failed_step_kept_from_running() {
    let out = bnr(&[
        "check".as_ref(),
        support::component_path("bnr_fixture_dummy_next").as_os_str(),
        "--setting".as_ref(),
        "backup.plugin.dummy.refuse-policies=true".as_ref(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  policies list: list-policies: provider error (unavailable)"),
        "{stdout}"
    );
    let not_run = stdout.lines().filter(|l| l.contains("not run")).count();
    assert_eq!(not_run, 9, "{stdout}");
    assert!(stdout.contains("PASS  describe is valid"), "{stdout}");
}
