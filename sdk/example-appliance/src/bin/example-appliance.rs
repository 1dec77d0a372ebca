//! `example-appliance [--listen ADDR] [--user USER] [--job-seconds N]`, the API key from
//! `--key KEY` or `$EXAMPLE_APPLIANCE_KEY`: the stand-in vendor appliance, running until
//! interrupted. Prints its API URL.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

const USAGE: &str = "usage: example-appliance [--listen 127.0.0.1:PORT] [--user USER] \
                     [--key KEY | $EXAMPLE_APPLIANCE_KEY] [--job-seconds N]";

fn parse_args() -> anyhow::Result<example_appliance::Config> {
    let mut config = example_appliance::Config::new("");
    config.listen = SocketAddr::from(([127, 0, 0, 1], 8480));
    config.job_duration = Duration::from_secs(3);
    config.key = std::env::var("EXAMPLE_APPLIANCE_KEY").unwrap_or_default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => {
                config.listen = value
                    .parse()
                    .with_context(|| format!("--listen {value}: not an IP:PORT address"))?
            }
            "--user" => config.user = value,
            "--key" => config.key = value,
            "--job-seconds" => {
                let seconds: u64 = value
                    .parse()
                    .ok()
                    .filter(|s| (0..=3600).contains(s))
                    .with_context(|| format!("--job-seconds {value}: not 0 to 3600"))?;
                config.job_duration = Duration::from_secs(seconds);
            }
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    if config.key.is_empty() {
        bail!("no API key: give --key KEY or set EXAMPLE_APPLIANCE_KEY\n{USAGE}");
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = parse_args()?;
    let user = config.user.clone();
    let running = example_appliance::start(config).await?;
    println!("{}", running.url);
    eprintln!(
        "example-appliance: API at {} (user {user}); Ctrl-C stops it",
        running.url
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
