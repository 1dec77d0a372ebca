//! `cargo xtask bench NAME [ARGS]`: a benchmark of the `bnr` crate with the providers built and a
//! throw-away PostgreSQL server started for it (`BNR_TEST_POSTGRES_URL`), so that its PostgreSQL
//! rows run too (`store`, `replicas`).

use crate::postgres::TempPostgres;
use crate::{Result, plugins, workspace};

pub fn run(args: &[String]) -> Result<()> {
    let Some(name) = args.first() else {
        return Err("usage: cargo xtask bench NAME [ARGS passed to the bench]".into());
    };
    plugins::build_all()?;
    let postgres = TempPostgres::start()?;
    let mut cargo = workspace::cargo()?;
    cargo
        .args(["bench", "-p", "bnr", "--bench", name, "--"])
        .args(&args[1..])
        .env("BNR_TEST_POSTGRES_URL", postgres.url());
    workspace::run(cargo)
}
