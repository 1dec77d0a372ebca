//! `kvmhost-sim --listen ADDR --networker URL [--host-key FILE]`: one KVM host's SSH endpoint
//! running CloudStack's NetWorker scripts against a running `networker-sim`, until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use networker_sim::ssh;

#[derive(Parser)]
#[command(about = "KVM host simulator: nsrkvmbackup.sh and nsrkvmrestore.sh over SSH")]
struct Args {
    /// SSH address.
    #[arg(long, default_value = "127.0.0.1:2222")]
    listen: SocketAddr,
    /// networker-sim's admin URL (`http://HOST:PORT/admin`) or its base URL.
    #[arg(long)]
    networker: String,
    /// OpenSSH private host key; created there when missing. Default: a new key per run.
    #[arg(long)]
    host_key: Option<PathBuf>,
    /// The host's name (its NetWorker client name).
    #[arg(long, default_value = "kvm1")]
    name: String,
    /// The CloudStack cluster the host is in (registered as a NetWorker client).
    #[arg(long, default_value = "cluster1")]
    cluster: String,
    #[arg(long, default_value = "root")]
    username: String,
    /// SSH password (default: `$KVMHOST_SIM_PASSWORD`, else `password`).
    #[arg(long)]
    password: Option<String>,
    /// Refuse password authentication.
    #[arg(long)]
    no_password: bool,
    /// File of `authorized_keys` lines accepted for public-key authentication.
    #[arg(long)]
    authorized_keys: Option<PathBuf>,
    /// A running domain `NAME=UUID` with one 1 GiB root disk (repeatable).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Take any domain name/uuid pair as running here.
    #[arg(long)]
    any_domain: bool,
}

/// `http://h:p`, `http://h:p/nwrestapi/v3` or `http://h:p/admin` → `http://h:p/admin`.
fn admin_url(networker: &str) -> anyhow::Result<String> {
    let url = networker.trim_end_matches('/');
    if !url.starts_with("http://") {
        anyhow::bail!(
            "--networker must be an http:// URL (use networker-sim --admin-listen with --tls)"
        );
    }
    if url.ends_with("/admin") {
        return Ok(url.to_string());
    }
    let base = url.strip_suffix("/nwrestapi/v3").unwrap_or(url);
    Ok(format!("{base}/admin"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = admin_url(&args.networker)?;
    let domains: Vec<networker_sim::Domain> = args
        .domains
        .iter()
        .map(|d| {
            let (name, uuid) = d
                .split_once('=')
                .with_context(|| format!("--domain {d}: expected NAME=UUID"))?;
            Ok(networker_sim::Domain::with_root_disk(name, uuid))
        })
        .collect::<anyhow::Result<_>>()?;
    let body = serde_json::json!({
        "name": args.name,
        "cluster": args.cluster,
        "domains": domains,
        "any_domain": args.any_domain,
    });
    ssh::admin_call(&admin, "/hosts", &body.to_string())
        .await
        .context("registering the host with networker-sim")?;
    let key = match &args.host_key {
        Some(path) => ssh::load_or_create_host_key(path)?,
        None => ssh::generate_host_key()?,
    };
    let authorized_keys = match &args.authorized_keys {
        Some(path) => ssh::parse_authorized_keys(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => Vec::new(),
    };
    let password = if args.no_password {
        None
    } else {
        Some(
            args.password
                .or_else(|| std::env::var("KVMHOST_SIM_PASSWORD").ok())
                .unwrap_or_else(|| "password".into()),
        )
    };
    let access = ssh::Access {
        username: args.username,
        password,
        authorized_keys,
    };
    let (addr, fingerprint, _task) = ssh::start(
        ssh::Backend::Remote(admin.clone()),
        args.name.clone(),
        access,
        key,
        args.listen,
    )
    .await?;
    println!(
        "kvmhost-sim: host {} (cluster {}) SSH at {addr}, host key {fingerprint}, state at {admin}",
        args.name, args.cluster
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
