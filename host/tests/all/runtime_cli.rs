//! `bnr plugin inspect FILE.wasm`, run as a user would: the built binary.

use std::process::{Command, Output};

use crate::support::{self, DUMMY, HOSTILE, TempDir, WRONG_WORLD};

fn inspect(file: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnr"))
        .args(["plugin", "inspect"])
        .arg(file)
        .output()
        .expect("running bnr")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plugin_inspect_prints_what_the_dummy_declares() {
    let out = inspect(&support::component_path(DUMMY));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for expected in [
        "name:         dummy",
        "version:      1.0.0",
        "wit version:  bnr:provider@1.3.0",
        "settings:\n  (none)",
        "needs:\n  (none)",
        "single-volume-restore: yes",
        "reconciliation: no",
        "delete-granularity: restore-point",
        "adopts operations from: (none)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn plugin_inspect_lists_settings_and_needs() {
    let out = inspect(&support::component_path(HOSTILE));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("name:         hostile"), "{stdout}");
    assert!(
        stdout.contains("backup.plugin.hostile.mode (text) (default: ok)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("backup.plugin.hostile.url (url)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("http-to-setting(backup.plugin.hostile.url)"),
        "{stdout}"
    );
}

#[test]
fn plugin_inspect_fails_with_a_reason_for_files_that_cannot_load() {
    let out = inspect(&support::component_path(WRONG_WORLD));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("wrong world"), "{stderr}");
    assert!(out.stdout.is_empty());

    let dir = TempDir::new("cli");
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "just text").unwrap();
    let out = inspect(&not_wasm);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a WebAssembly file"),
        "{}",
        text(&out.stderr)
    );

    let out = inspect(&dir.path().join("missing.wasm"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.wasm"),
        "{}",
        text(&out.stderr)
    );
}
