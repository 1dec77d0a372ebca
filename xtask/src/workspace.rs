//! Where things are: the workspace root, the target directory, the cargo binary.

use crate::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    // `cargo run` passes the manifest dir at run time; prefer it to the compile-time value so a
    // binary shared through one target dir by several checkouts works on the one that ran it.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative to the current directory, as cargo
/// reads it) or `<root>/target`.
pub fn target_dir() -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => Ok(std::env::current_dir()?.join(dir)),
        _ => Ok(root().join("target")),
    }
}

/// A `cargo` command run from the workspace root with the resolved target directory, using the
/// same cargo (and thus toolchain) that runs xtask.
pub fn cargo() -> Result<Command> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir()?);
    Ok(command)
}

/// The debug `bnr` binary, which `cargo test` builds for the integration tests.
pub fn bnr_binary() -> Result<PathBuf> {
    Ok(target_dir()?.join("debug").join("bnr"))
}

/// Build [`bnr_binary`] with the workspace's package selection, as `cargo test` does: cargo
/// unifies features over the selected packages, so `-p bnr` would build wasmtime and the host a
/// second time.
pub fn build_bnr() -> Result<PathBuf> {
    let mut build = cargo()?;
    build.args(["build", "--bin", "bnr"]);
    run(build)?;
    bnr_binary()
}

/// Run `command`, failing with its rendering when it does not exit successfully.
pub fn run(mut command: Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})").into())
    }
}
