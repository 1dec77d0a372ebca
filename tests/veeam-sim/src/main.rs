//! `veeam-sim --listen ADDR --ssh-listen ADDR [--tls]`: runs the simulator until interrupted.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Veeam Backup Enterprise Manager + PowerShell-over-SSH simulator")]
struct Args {
    /// Address of the Enterprise Manager API (and of `/admin`).
    #[arg(long, default_value = "127.0.0.1:9398")]
    listen: SocketAddr,
    /// Address of the SSH (PowerShell) side.
    #[arg(long)]
    ssh_listen: Option<SocketAddr>,
    /// Serve HTTPS with a self-signed certificate generated at start.
    #[arg(long)]
    tls: bool,
    /// Version profile: 11, 12 or 12.3.
    #[arg(long, default_value = "12")]
    profile: String,
    #[arg(long, default_value = "administrator")]
    username: String,
    /// Password for the API and SSH (default: `$VEEAM_SIM_PASSWORD`, else `P@ssword123`).
    #[arg(long)]
    password: Option<String>,
    /// Name of the vCenter hierarchy root.
    #[arg(long, default_value = "vcenter.local")]
    vcenter: String,
    /// VMs present in vCenter at start (repeatable).
    #[arg(long = "vm")]
    vms: Vec<String>,
    /// ESXi hosts in vCenter, restore targets (repeatable or comma-separated; default
    /// 10.0.0.1 and 10.0.0.2).
    #[arg(long = "esxi-host", value_delimiter = ',')]
    esxi_hosts: Vec<String>,
    /// Answer SSH commands as if OpenSSH's default shell were PowerShell.
    #[arg(long)]
    powershell_default_shell: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = veeam_sim::Profile::parse(&args.profile)
        .ok_or_else(|| anyhow::anyhow!("--profile must be 11, 12 or 12.3"))?;
    let config = veeam_sim::Config {
        listen: args.listen,
        ssh_listen: args.ssh_listen,
        tls: args.tls,
        profile,
        username: args.username,
        password: args
            .password
            .or_else(|| std::env::var("VEEAM_SIM_PASSWORD").ok())
            .unwrap_or_else(|| "P@ssword123".into()),
        vcenter: args.vcenter,
        shell: if args.powershell_default_shell {
            veeam_sim::powershell::DefaultShell::PowerShell
        } else {
            veeam_sim::powershell::DefaultShell::Cmd
        },
        ..Default::default()
    };
    let running = veeam_sim::start(config).await?;
    running.with_state(|state| {
        for vm in &args.vms {
            state.add_vm(vm);
        }
        if !args.esxi_hosts.is_empty() {
            state.esxi_hosts = args.esxi_hosts.clone();
        }
    });
    println!("veeam-sim: Enterprise Manager at {}", running.url());
    println!("veeam-sim: admin at {}", running.admin_url());
    if let Some(fingerprint) = &running.cert_sha256 {
        println!("veeam-sim: TLS certificate SHA-256 {fingerprint}");
    }
    if let Some(ssh) = running.ssh {
        println!(
            "veeam-sim: SSH at {ssh}, host key {}",
            running.ssh_host_key_fingerprint.as_deref().unwrap_or("")
        );
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
