//! Build orchestration for the bnr workspace: `cargo xtask <command>` (alias in
//! `.cargo/config.toml`). Standard library only, so it builds in seconds.

mod bench;
mod ha;
mod layering;
mod plugins;
mod postgres;
mod suite;
mod workspace;

use std::process::ExitCode;

/// Any failure of a task; printed as `error: …`.
type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A subcommand: name, one-line help, entry point taking the remaining arguments.
struct Task {
    name: &'static str,
    help: &'static str,
    run: fn(&[String]) -> Result<()>,
}

const TASKS: &[Task] = &[
    Task {
        name: "serve",
        help: "build the providers and bnr, then run `bnr serve` (extra args are passed on)",
        run: suite::serve,
    },
    Task {
        name: "test",
        help: "build the components, run the Rust test suite and the `cs` client compatibility suite",
        run: suite::test,
    },
    Task {
        name: "ha",
        help: "PostgreSQL (Debian's packages, Unix socket in a temporary directory) and three \
               `bnr serve --cluster` replicas on loopback until Ctrl-C (`--replicas N`)",
        run: ha::run,
    },
    Task {
        name: "bench",
        help: "build the components, start a throw-away PostgreSQL server and run \
               `cargo bench -p bnr --bench NAME` with it (the PostgreSQL rows of `store`, `replicas`)",
        run: bench::run,
    },
    Task {
        name: "plugins",
        help: "build every provider component (wasm32-wasip2, profile `plugin`) and copy them to \
               target/providers (built-in providers) and target/fixtures (test components)",
        run: plugins::run,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        print_usage();
        return ExitCode::FAILURE;
    };
    if matches!(name.as_str(), "help" | "-h" | "--help") {
        print_usage();
        return ExitCode::SUCCESS;
    }
    let Some(task) = TASKS.iter().find(|task| task.name == name) else {
        eprintln!("error: unknown command `{name}`\n");
        print_usage();
        return ExitCode::FAILURE;
    };
    match (task.run)(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_usage() {
    eprintln!("usage: cargo xtask <command> [args]\n\ncommands:");
    for task in TASKS {
        eprintln!("  {:<10} {}", task.name, task.help);
    }
}
