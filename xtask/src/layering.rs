//! Architecture checks `cargo xtask test` runs before the test suite: the provider runtime
//! (`bnr-runtime`) must not be able to reach the database, so no SQLite crate may appear in its
//! normal dependency tree.

use crate::{Result, workspace};

/// The runtime crate whose dependency tree is checked.
const RUNTIME_PACKAGE: &str = "bnr-runtime";
/// Crates that would give provider code a way to the database.
const FORBIDDEN: &[&str] = &["rusqlite", "libsqlite3-sys", "bnr"];

/// Fails when `bnr-runtime` depends, directly or not, on a crate of [`FORBIDDEN`].
pub fn check_runtime_dependencies() -> Result<()> {
    let mut cargo = workspace::cargo()?;
    cargo.args([
        "tree",
        "-p",
        RUNTIME_PACKAGE,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    let output = cargo
        .output()
        .map_err(|error| format!("cannot run cargo tree: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo tree -p {RUNTIME_PACKAGE} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let found = forbidden_in(&tree);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{RUNTIME_PACKAGE} must not depend on {}: provider code never touches the database",
            found.join(", ")
        )
        .into())
    }
}

/// The forbidden crate names among the packages of a `cargo tree --prefix none --format {p}`
/// listing (`name vX.Y.Z [(path)] [(*)]` per line).
fn forbidden_in(tree: &str) -> Vec<&'static str> {
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    FORBIDDEN
        .iter()
        .copied()
        .filter(|forbidden| names.contains(forbidden))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::forbidden_in;

    #[test]
    fn a_sqlite_crate_or_the_host_in_the_tree_is_found() {
        let tree = "bnr-runtime v0.1.0 (/w/runtime)\nwasmtime v48.0.8\nrusqlite v0.43.0\n\
                    libsqlite3-sys v0.35.0 (*)\n";
        assert_eq!(forbidden_in(tree), ["rusqlite", "libsqlite3-sys"]);
        assert_eq!(forbidden_in("bnr v0.1.0 (/w/host)\n"), ["bnr"]);
    }

    #[test]
    fn similar_names_are_not_mistaken_for_forbidden_ones() {
        let tree = "bnr-runtime v0.1.0 (/w/runtime)\nbnr-sdk v0.1.0\nrusqlite-helper v1.0.0\n";
        assert!(forbidden_in(tree).is_empty());
    }
}
