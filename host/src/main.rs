//! The `bnr` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use std::net::SocketAddr;

use bnr::api::serve::{self, ServeOptions};
use bnr::inventory::bootstrap::BootstrapOptions;
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
    /// Serve the CloudStack-compatible API.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory holding the database and generated credentials.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Directory of backup provider components (`*.wasm`) [default: DATA_DIR/providers].
        #[arg(long)]
        providers_dir: Option<PathBuf>,
    },
    /// Work with provider components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Re-encrypt every stored secret under a new key and make it the data directory's key
    /// (stop the server first). With BNR_ENCRYPTION_KEY set, the new key is read from
    /// BNR_NEW_ENCRYPTION_KEY and no key file is written.
    RotateKey {
        /// Directory holding the database and its key.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
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
    let cli = Cli::parse();
    // The server logs what it does to stdout; one-shot commands only report errors, on stderr.
    let (default_filter, to_stderr) = match cli.command {
        Command::Serve { .. } => ("info", false),
        Command::Plugin(_) | Command::RotateKey { .. } => ("error", true),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(move || -> Box<dyn std::io::Write> {
            if to_stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        })
        .init();
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            providers_dir,
        } => run_server(listen, data_dir, providers_dir),
        Command::Plugin(PluginCommand::Inspect { file, cache_dir }) => {
            plugin_inspect(file, cache_dir)
        }
        Command::RotateKey { data_dir } => match bnr::store::secrets::rotate_key(&data_dir) {
            Ok(()) => {
                println!("secrets re-encrypted under a new key");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_server(listen: SocketAddr, data_dir: PathBuf, providers_dir: Option<PathBuf>) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(serve::run(
                ServeOptions {
                    listen,
                    data_dir,
                    bootstrap: BootstrapOptions::from_env(),
                    providers_dir,
                },
                serve::shutdown_signal(),
            ))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
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
