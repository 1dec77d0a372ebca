//! The provider template (`sdk/template`, built by `cargo xtask plugins`) against its example
//! appliance, through `bnr plugin check` as a vendor runs it.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support;

const TEMPLATE: &str = "acme_bnr_provider";
const KEY: &str = "template-check-key";

fn appliance() -> (tokio::runtime::Runtime, example_appliance::Running) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = example_appliance::Config::new(KEY);
    // Long enough that the check sees the job running and polls it.
    config.job_duration = Duration::from_millis(1200);
    let running = rt.block_on(example_appliance::start(config)).unwrap();
    (rt, running)
}

fn check(url: &str, key: &str) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bnr"))
        .args(["plugin", "check"])
        .arg(support::component_path(TEMPLATE))
        .arg("--setting")
        .arg(format!("backup.plugin.acme.url={url}"))
        .arg("--setting")
        .arg("backup.plugin.acme.user=bnr")
        .arg("--setting")
        .arg(format!("backup.plugin.acme.key={key}"))
        .output()
        .expect("running bnr");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[test]
fn the_template_passes_every_clause_against_the_example_appliance() {
    let (_rt, appliance) = appliance();
    let (out, stdout) = check(&appliance.url, KEY);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    assert!(verdicts.iter().all(|l| l.starts_with("PASS")), "{stdout}");
    for clause in [
        "describe is valid",
        "policies list: gold, silver",
        "refused credentials name their settings: the vendor refused the credentials (HTTP 401)",
        "validate agrees with the list",
        "assign",
        "back up and poll to the end: bk-",
        "list restore points: 1 points",
        "restore",
        "delete",
        "remove",
        "errors are typed",
        "no call outlives its bound",
    ] {
        assert!(
            stdout.contains(&format!("PASS  {clause}")),
            "{clause}:\n{stdout}"
        );
    }
}

#[test]
fn a_wrong_key_fails_the_check_as_unauthorized_naming_the_settings() {
    let (_rt, appliance) = appliance();
    let (out, stdout) = check(&appliance.url, "not-the-key");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  policies list"))
        .unwrap_or_else(|| panic!("policies list should fail:\n{stdout}"));
    assert!(line.contains("unauthorized"), "{line}");
    assert!(
        line.contains("backup.plugin.acme.user, backup.plugin.acme.key"),
        "{line}"
    );
    assert!(
        !stdout.contains("not-the-key"),
        "the secret is not printed:\n{stdout}"
    );
    assert!(stdout.contains("PASS  describe is valid"), "{stdout}");
}
