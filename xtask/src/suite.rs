//! `cargo xtask test` and `cargo xtask serve`: the two commands a newcomer needs.

use crate::postgres::TempPostgres;
use crate::{Result, layering, plugins, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Python packages the client-compatibility and console suites run with (the real `cs` client,
/// as users have it, and Selenium driving Debian's chromium through chromedriver).
const COMPAT_PACKAGES: &[&str] = &["cs==5.2.0", "pytest==8.3.5", "selenium==4.40.0"];
/// The pytest suites, each in its own run (each starts its own server).
const PYTHON_SUITES: &[&str] = &["tests/compat", "tests/console"];

/// Integration-test groups that run a second time with their servers on PostgreSQL: backups end
/// to end, schedules and ticks, provider operations and their resumption after a restart,
/// credentials and their cache, jobs, and the inventory.
const POSTGRES_API_GROUPS: &[&str] = &[
    "bnr_backups::",
    "bnr_schedules::",
    "bnr_operations::",
    "sched_recovery::",
    "sched_ticks::",
    "server_auth::",
    "server_credentials::",
    "server_jobs::",
    "server_inventory::",
];

/// `cargo xtask test`: the layering check, components, the Rust test suite (store tests on SQLite and on a
/// PostgreSQL server started for the run; the main API groups again on PostgreSQL), then the
/// `cs` compatibility suite and the console suite in a headless browser.
pub fn test(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        return Err(format!("`test` takes no arguments (got `{extra}`)").into());
    }
    layering::check_runtime_dependencies()?;
    plugins::build_all()?;
    let postgres = TempPostgres::start()?;

    // The default members are the host crates and the Veeam provider's native tests; the other
    // component crates only build for wasm32-wasip2.
    let mut cargo = workspace::cargo()?;
    cargo
        .arg("test")
        .env("BNR_TEST_POSTGRES_URL", postgres.url());
    workspace::run(cargo)?;

    // The same package selection as the run above (no `-p`), so it reuses that build; see
    // `workspace::build_bnr`.
    let mut on_postgres = workspace::cargo()?;
    on_postgres
        .args(["test", "--test", "all", "--"])
        .args(POSTGRES_API_GROUPS)
        .env("BNR_TEST_POSTGRES_URL", postgres.url())
        .env("BNR_TEST_DATABASE", "postgres");
    workspace::run(on_postgres)?;
    drop(postgres);

    // `cargo test` has built target/debug/bnr for the integration tests; the suite runs that one.
    compat_suite()
}

fn compat_suite() -> Result<()> {
    let target = workspace::target_dir()?;
    let venv = target.join("compat-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        workspace::run(command("python3", &["-m", "venv"], &[&venv]))?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip.args(COMPAT_PACKAGES);
    workspace::run(pip)?;

    for suite in PYTHON_SUITES {
        let mut pytest = Command::new(&python);
        pytest
            .current_dir(workspace::root())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
            .env("BNR_BIN", workspace::bnr_binary()?)
            .env("BNR_PROVIDERS_DIR", target.join("providers"));
        workspace::run(pytest)?;
    }
    Ok(())
}

/// `cargo xtask serve [bnr serve args]`: build the dummy provider and bnr, then run
/// `bnr serve` on the embedded SQLite default with the built-in providers.
pub fn serve(args: &[String]) -> Result<()> {
    plugins::build_all()?;
    let mut bnr = Command::new(workspace::build_bnr()?);
    let target = workspace::target_dir()?;
    bnr.arg("serve")
        .arg("--providers-dir")
        .arg(target.join("providers"))
        .args(args);
    workspace::run(bnr)
}

fn command(program: &str, args: &[&str], paths: &[&Path]) -> Command {
    let mut command = Command::new(program);
    command.args(args).args(paths.iter().map(PathBuf::from));
    command
}
