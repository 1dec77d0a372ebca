use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use bnr::api::serve::{self, ServeOptions};
use bnr::inventory::bootstrap::BootstrapOptions;

/// bnr: Backup & Recovery control plane speaking the CloudStack B&R API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve {
            listen,
            data_dir,
            providers_dir,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve::run(
                ServeOptions {
                    listen,
                    data_dir,
                    bootstrap: BootstrapOptions::from_env(),
                    providers_dir,
                },
                serve::shutdown_signal(),
            ))
        }
    }
}
