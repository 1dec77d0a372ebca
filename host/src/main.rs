//! The `bnr` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bnr::runtime::{PoolConfig, Runtime, RuntimeConfig};
use clap::{Parser, Subcommand};

/// bnr: Backup & Recovery control plane speaking the CloudStack B&R API.
#[derive(Debug, Parser)]
#[command(name = "bnr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with provider components.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show what a provider component declares (name, version, WIT version, settings, needs,
    /// capabilities), or why it cannot be loaded.
    Inspect {
        /// The component, a `.wasm` file.
        file: PathBuf,
        /// Compiled-component cache to use (default: a private temporary directory, removed
        /// afterwards).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Plugin(PluginCommand::Inspect { file, cache_dir }) => {
            plugin_inspect(file, cache_dir)
        }
    }
}

fn plugin_inspect(file: PathBuf, cache_dir: Option<PathBuf>) -> ExitCode {
    let scratch = cache_dir.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "bnr-inspect-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    });
    let Some(cache_dir) = cache_dir.or_else(|| scratch.clone()) else {
        return ExitCode::FAILURE;
    };
    let config = RuntimeConfig {
        // One component, one call: no need to reserve a pool.
        pool: PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::new(cache_dir)
    };
    let result = Runtime::new(config)
        .map_err(|err| format!("cannot start the runtime: {err:#}"))
        .and_then(|rt| {
            bnr::runtime::inspect(&rt, &file)
                .map_err(|err| format!("cannot load {}: {err}", file.display()))
        });
    if let Some(scratch) = scratch {
        let _ = std::fs::remove_dir_all(scratch);
    }
    match result {
        Ok(inspection) => {
            println!("{inspection}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
