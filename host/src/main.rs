//! The `bnr` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use std::net::SocketAddr;

use bnr::api::serve::{self, ServeOptions};
use bnr::inventory::bootstrap::BootstrapOptions;
use bnr::logging::LogFormat;
use bnr_runtime::{PoolConfig, Runtime, RuntimeConfig};
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
        /// The store: `postgres://…`, `postgresql://…` or `host=/path/to/socket dbname=…`
        /// [default: SQLite in DATA_DIR/bnr.sqlite].
        #[arg(long, env = "BNR_DATABASE_URL", value_parser = bnr::store::Database::parse, hide_env_values = true)]
        database: Option<bnr::store::Database>,
        /// Directory of backup provider components (`*.wasm`) [default: DATA_DIR/providers].
        #[arg(long)]
        providers_dir: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Seconds a shutdown (SIGTERM, SIGINT) waits for running commands and jobs.
        #[arg(long, default_value_t = serve::DEFAULT_SHUTDOWN_GRACE.as_secs())]
        shutdown_grace_secs: u64,
        /// Accept provider uploads that carry no valid signature from a trusted key
        /// (development only: anyone with a root-admin key can then run any code as a provider).
        #[arg(long)]
        allow_unsigned_plugins: bool,
        /// Run as one of several replicas sharing the database: heartbeats, a leader-elected
        /// scheduler, takeover of a dead replica's jobs (see docs/operations.md).
        #[arg(long)]
        cluster: bool,
        /// Seconds a replica (or the scheduler leader) may miss renewing before another takes
        /// over its work (with --cluster; at least 2).
        #[arg(long, default_value_t = bnr::cluster::DEFAULT_LEASE.as_secs())]
        replica_lease_secs: u64,
        /// Answer every read from the store instead of keeping the rendered answers of
        /// read commands between writes (see docs/operations.md).
        #[arg(long)]
        no_kept_answers: bool,
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
    /// Work with the store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy an installation from SQLite into an empty PostgreSQL database (stop the server
    /// first). The PostgreSQL-backed server must use the same key (the SQLite data directory's
    /// bnr.key, or BNR_ENCRYPTION_KEY).
    Copy {
        /// The SQLite database: sqlite:PATH (e.g. sqlite:./data/bnr.sqlite).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database: postgres://…, postgresql://… or host=… dbname=….
        #[arg(long, value_name = "URL", value_parser = bnr::store::Database::parse)]
        to: bnr::store::Database,
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
    /// Make a signing key pair for provider components: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub (what admins add with addBackupProviderSigningKey).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "bnr-signing")]
        out: PathBuf,
    },
    /// Sign a component (its sha256, name and version) with a secret key; writes FILE.wasm.sig
    /// and prints the signature (the `pluginsignature` parameter of addBackupProviderPlugin).
    Sign {
        /// The component, a `.wasm` file.
        file: PathBuf,
        /// The secret key file written by `bnr plugin keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Run the provider contract against a component and its vendor endpoint; prints PASS or
    /// FAIL per clause and exits 1 when any clause fails.
    Check {
        /// The component, a `.wasm` file.
        file: PathBuf,
        /// A zone setting the provider reads, `name=value` (repeatable).
        #[arg(long = "setting", value_name = "NAME=VALUE")]
        settings: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does to stdout; one-shot commands only report errors, on stderr.
    let (default_filter, to_stderr, format) = match cli.command {
        Command::Serve { log_format, .. } => ("info", false, log_format),
        Command::Plugin(_) | Command::RotateKey { .. } | Command::Store(_) => {
            ("error", true, LogFormat::Text)
        }
    };
    bnr::logging::init(format, default_filter, to_stderr);
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            database,
            providers_dir,
            metrics_listen,
            log_format: _,
            shutdown_grace_secs,
            allow_unsigned_plugins,
            cluster,
            replica_lease_secs,
            no_kept_answers,
        } => run_server(ServeOptions {
            listen,
            data_dir,
            database,
            bootstrap: BootstrapOptions::from_env(),
            providers_dir,
            metrics_listen,
            shutdown_grace: std::time::Duration::from_secs(shutdown_grace_secs),
            allow_unsigned_plugins,
            cluster: cluster.then(|| {
                bnr::cluster::ClusterOptions::new(
                    format!("{listen} pid {}", std::process::id()),
                    std::time::Duration::from_secs(replica_lease_secs),
                )
            }),
            keep_answers: !no_kept_answers,
        }),
        Command::Plugin(PluginCommand::Inspect { file, cache_dir }) => {
            plugin_inspect(file, cache_dir)
        }
        Command::Plugin(PluginCommand::Keygen { out }) => plugin_keygen(out),
        Command::Plugin(PluginCommand::Sign { file, key }) => plugin_sign(file, key),
        Command::Plugin(PluginCommand::Check { file, settings }) => plugin_check(file, settings),
        Command::Store(StoreCommand::Copy { from, to }) => store_copy(&from, &to),
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

fn store_copy(from: &str, to: &bnr::store::Database) -> ExitCode {
    use bnr::store::Database;
    let (Ok(Database::Sqlite(from)), Database::Postgres(url)) = (Database::parse(from), to) else {
        eprintln!("error: copy goes --from sqlite:PATH --to postgres://…");
        return ExitCode::FAILURE;
    };
    match bnr::store::copy::sqlite_to_postgres(&from, url) {
        Ok(report) => {
            for (table, rows) in &report.tables {
                println!("{table}: {rows} rows");
            }
            println!("copied {} to {to}", from.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(opts: ServeOptions) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(serve::run(opts, serve::shutdown_signal())));
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
            bnr_runtime::inspect(&rt, &file)
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

/// A runtime for one-shot commands: no pool, a private cache directory removed afterwards.
fn scratch_runtime() -> Result<(std::sync::Arc<Runtime>, PathBuf), String> {
    let dir = std::env::temp_dir().join(format!(
        "bnr-plugin-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let config = RuntimeConfig {
        pool: PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::new(dir.clone())
    };
    Runtime::new(config)
        .map(|rt| (rt, dir))
        .map_err(|err| format!("cannot start the runtime: {err:#}"))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn plugin_keygen(out: PathBuf) -> ExitCode {
    let (secret, public) = bnr::plugins::signing::generate_key();
    let secret_path = out.with_extension("key");
    let public_path = out.with_extension("pub");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&secret_path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{secret}\n").as_bytes()))
        .and_then(|()| std::fs::write(&public_path, format!("{public}\n")));
    match written {
        Ok(()) => {
            println!(
                "secret key: {} (keep it private)\npublic key: {} ({public})",
                secret_path.display(),
                public_path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!(
            "cannot write {} / {}: {e}",
            secret_path.display(),
            public_path.display()
        )),
    }
}

fn plugin_sign(file: PathBuf, key: PathBuf) -> ExitCode {
    let secret = match std::fs::read_to_string(&key) {
        Ok(text) => text,
        Err(e) => return fail(format!("cannot read {}: {e}", key.display())),
    };
    let key = match bnr::plugins::signing::parse_secret_key(&secret) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let (rt, scratch) = match scratch_runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let loaded = rt.load_file(&file);
    let _ = std::fs::remove_dir_all(scratch);
    let provider = match loaded {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot load {}: {e}", file.display())),
    };
    let signature =
        bnr::plugins::signing::sign(&key, provider.sha256(), provider.name(), provider.version());
    let mut sig_path = file.clone().into_os_string();
    sig_path.push(".sig");
    let sig_path = PathBuf::from(sig_path);
    if let Err(e) = std::fs::write(&sig_path, format!("{signature}\n")) {
        return fail(format!("cannot write {}: {e}", sig_path.display()));
    }
    println!(
        "signed {} {} (sha256 {}): {signature}\nwritten to {}",
        provider.name(),
        provider.version(),
        provider.sha256(),
        sig_path.display()
    );
    ExitCode::SUCCESS
}

fn plugin_check(file: PathBuf, settings: Vec<String>) -> ExitCode {
    let mut pairs = Vec::new();
    for setting in settings {
        match setting.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                pairs.push((name.trim().to_string(), value.to_string()))
            }
            _ => return fail(format!("--setting {setting:?} is not NAME=VALUE")),
        }
    }
    let wasm = match std::fs::read(&file) {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
    };
    let (rt, scratch) = match scratch_runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let clauses = tokio::runtime::Runtime::new()
        .map(|tokio| tokio.block_on(bnr::plugins::check::run(&rt, wasm, &pairs)));
    let _ = std::fs::remove_dir_all(scratch);
    let clauses = match clauses {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start tokio: {e}")),
    };
    for clause in &clauses {
        println!("{clause}");
    }
    let failed = clauses.iter().filter(|c| !c.passed()).count();
    println!(
        "{}: {} of {} clauses passed",
        file.display(),
        clauses.len() - failed,
        clauses.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
