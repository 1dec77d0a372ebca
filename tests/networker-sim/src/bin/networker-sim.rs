//! `networker-sim --listen ADDR [--tls] [--admin-listen ADDR]`: a NetWorker REST server
//! simulator, running until interrupted. `kvmhost-sim` processes attach to its admin endpoint.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Dell EMC NetWorker REST API simulator")]
struct Args {
    /// Address of the REST API (`/nwrestapi/v3`), and of `/admin` unless `--admin-listen`.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate generated at start.
    #[arg(long)]
    tls: bool,
    /// A separate plain-HTTP address for `/admin` (needed by `kvmhost-sim` with `--tls`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    #[arg(long, default_value = "administrator")]
    username: String,
    /// API password (default: `$NETWORKER_SIM_PASSWORD`, else `password`).
    #[arg(long)]
    password: Option<String>,
    /// The server's host name, accepted by `save`/`recover -s`.
    #[arg(long, default_value = "networker.local")]
    server_name: String,
    /// More names accepted for the server (repeatable; default `localhost`, `127.0.0.1`).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// The server's UTC offset in seconds (times are rendered with it).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    tz_offset_secs: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = networker_sim::Config {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls: args.tls,
        server_name: args.server_name,
        username: args.username,
        password: args
            .password
            .or_else(|| std::env::var("NETWORKER_SIM_PASSWORD").ok())
            .unwrap_or_else(|| "password".into()),
        tz_offset_secs: args.tz_offset_secs,
        ..Default::default()
    };
    if !args.aliases.is_empty() {
        config.aliases = args.aliases;
    }
    let running = networker_sim::start(config).await?;
    println!("networker-sim: REST API at {}", running.rest_url);
    println!("networker-sim: admin at {}", running.admin_url);
    if let Some(fingerprint) = &running.cert_sha256 {
        println!("networker-sim: TLS certificate SHA-256 {fingerprint}");
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
