//! `networker-sim` and `kvmhost-sim`: simulators of a Dell EMC NetWorker server's REST API and
//! of KVM hosts that run CloudStack's `nsrkvmbackup.sh`/`nsrkvmrestore.sh` over SSH, over one
//! shared state, for tests and local runs.
//!
//! # Use from Rust tests
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use networker_sim::{Config, HostConfig};
//! let sim = networker_sim::start(Config {
//!     tls: true,
//!     hosts: vec![HostConfig::new("kvm1", "cluster1")],
//!     ..Default::default()
//! })
//! .await?;
//! // sim.rest_url: https://127.0.0.1:PORT/nwrestapi/v3 (the provider's `url` setting)
//! // sim.cert_pem / sim.cert_der: the self-signed certificate to trust
//! // sim.ssh_addr / sim.host_key_fingerprint: the first host's SSH endpoint and key (`SHA256:…`)
//! // sim.hosts: every host; sim.admin_url: the JSON admin endpoint
//! sim.admin.add_domain("kvm1", networker_sim::Domain::with_root_disk("i-2-3-VM", "b1f5…"))?;
//! sim.admin.host_faults("kvm1", |f| f.backup_exit = Some(7))?;
//! let counters = sim.admin.counters();
//! # let _ = counters; Ok(()) }
//! ```
//!
//! The REST listener serves `/nwrestapi/v3/...` (Basic auth) and, unless a separate admin
//! listener is configured, `/admin/...` (JSON control, no authentication: loopback only).
//! Every listener stops when [`Running`] is dropped. `docs/networker.md` describes the protocol
//! and the admin endpoint.

pub mod admin;
pub mod http;
pub mod query;
pub mod rest;
pub mod script;
pub mod ssh;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::Digest;

pub use script::Outcome;
pub use state::{
    Counters, Disk, Domain, EmptyList, Faults, HostCounters, HostFaults, NextBackup, Policy,
    PolicyQuery, RestFault, SavetimeLine, State,
};

/// The simulators' shared state.
pub struct Sim {
    pub state: Mutex<State>,
}

/// One simulated KVM host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The host's name (its NetWorker client name).
    pub name: String,
    /// The CloudStack cluster, registered as a NetWorker client.
    pub cluster: String,
    pub listen: SocketAddr,
    pub username: String,
    /// `None`: only public-key authentication.
    pub password: Option<String>,
    pub authorized_keys: Vec<russh::keys::PublicKey>,
    /// Generated when `None`.
    pub host_key: Option<russh::keys::PrivateKey>,
    pub domains: Vec<Domain>,
    /// Any domain name/uuid pair is taken as running on this host.
    pub any_domain: bool,
}

impl HostConfig {
    /// A host on `127.0.0.1:0` with account `root`/`password`.
    pub fn new(name: &str, cluster: &str) -> HostConfig {
        HostConfig {
            name: name.into(),
            cluster: cluster.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "root".into(),
            password: Some("password".into()),
            authorized_keys: Vec::new(),
            host_key: None,
            domains: Vec::new(),
            any_domain: false,
        }
    }
}

/// How to start the simulators.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// A separate plain-HTTP listener for `/admin`; when set, the REST listener does not serve it.
    pub admin_listen: Option<SocketAddr>,
    pub tls: bool,
    /// The NetWorker server's name; `save`/`recover` accept it and `aliases` as `-s`.
    pub server_name: String,
    pub aliases: Vec<String>,
    pub username: String,
    pub password: String,
    /// The server's UTC offset in seconds.
    pub tz_offset_secs: i32,
    pub hosts: Vec<HostConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            tls: false,
            server_name: "networker.local".into(),
            aliases: vec!["localhost".into(), "127.0.0.1".into()],
            username: "administrator".into(),
            password: "password".into(),
            tz_offset_secs: 0,
            hosts: Vec::new(),
        }
    }
}

/// A started host.
#[derive(Clone, Debug)]
pub struct RunningHost {
    pub name: String,
    pub ssh_addr: SocketAddr,
    /// OpenSSH-style `SHA256:<base64>` of the host key.
    pub host_key_fingerprint: String,
}

/// Control of the running simulators from Rust.
#[derive(Clone)]
pub struct Admin {
    pub sim: Arc<Sim>,
}

impl Admin {
    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.sim.state.lock().unwrap())
    }
    pub fn counters(&self) -> Counters {
        self.with_state(|s| s.counters.clone())
    }
    pub fn host_counters(&self, host: &str) -> Option<HostCounters> {
        self.with_state(|s| s.hosts.get(host).map(|h| h.counters.clone()))
    }
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        self.with_state(|s| f(&mut s.faults))
    }
    pub fn host_faults(&self, host: &str, f: impl FnOnce(&mut HostFaults)) -> anyhow::Result<()> {
        self.with_state(|s| {
            let h = s.hosts.get_mut(host).context("no such host")?;
            f(&mut h.faults);
            Ok(())
        })
    }
    pub fn add_domain(&self, host: &str, domain: Domain) -> anyhow::Result<()> {
        self.with_state(|s| {
            let h = s.hosts.get_mut(host).context("no such host")?;
            state::add_domain(h, domain);
            Ok(())
        })
    }
    /// Moves every clock forward (or back) by `secs`.
    pub fn advance_clock(&self, secs: i64) {
        self.with_state(|s| s.advance_secs += secs)
    }
    /// Removes expired save sets, as NetWorker's recycling does; returns how many.
    pub fn purge(&self) -> usize {
        self.with_state(|s| s.purge_expired())
    }
}

/// Started simulators; every listener stops when this is dropped.
pub struct Running {
    pub admin: Admin,
    pub rest_addr: SocketAddr,
    /// `<scheme>://<addr>/nwrestapi/v3`: the provider's URL setting.
    pub rest_url: String,
    /// `http://<addr>/admin` (or on the REST listener's scheme when it serves admin).
    pub admin_url: String,
    pub scheme: &'static str,
    pub cert_pem: Option<String>,
    pub cert_der: Option<Vec<u8>>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub cert_sha256: Option<String>,
    pub hosts: Vec<RunningHost>,
    /// The first host's SSH address and host key fingerprint.
    pub ssh_addr: Option<SocketAddr>,
    pub host_key_fingerprint: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn host(&self, name: &str) -> Option<&RunningHost> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the listeners and serves until the returned handle is dropped.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let mut state = State::new(state::Server {
        name: config.server_name.clone(),
        aliases: config.aliases.clone(),
        username: config.username.clone(),
        password: config.password.clone(),
        tz_offset_secs: config.tz_offset_secs,
        clock_skew_secs: 0,
    });
    for host in &config.hosts {
        state.add_host(
            &host.name,
            &host.cluster,
            host.domains.clone(),
            host.any_domain,
        );
    }
    let sim = Arc::new(Sim {
        state: Mutex::new(state),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let rest_addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let admin_on_rest = config.admin_listen.is_none();
    let (scheme, tls) = if config.tls {
        ("https", Some(self_signed(rest_addr)?))
    } else {
        ("http", None)
    };
    let app = rest::router(rest::Listener {
        sim: sim.clone(),
        scheme,
        rest: true,
        admin: admin_on_rest,
    });
    let (cert_pem, cert_der, cert_sha256) = match tls {
        Some((acceptor, pem, der)) => {
            let fingerprint: String = sha2::Sha256::digest(&der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            tasks.push(tokio::spawn(serve_tls(listener, acceptor, app)));
            (Some(pem), Some(der), Some(fingerprint))
        }
        None => {
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            (None, None, None)
        }
    };
    let admin_url = match config.admin_listen {
        Some(addr) => {
            let admin_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let bound = admin_listener.local_addr()?;
            let app = rest::router(rest::Listener {
                sim: sim.clone(),
                scheme: "http",
                rest: false,
                admin: true,
            });
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(admin_listener, app).await;
            }));
            format!("http://{bound}/admin")
        }
        None => format!("{scheme}://{rest_addr}/admin"),
    };
    let mut hosts = Vec::new();
    for host in config.hosts {
        let key = match host.host_key {
            Some(key) => key,
            None => ssh::generate_host_key()?,
        };
        let access = ssh::Access {
            username: host.username,
            password: host.password,
            authorized_keys: host.authorized_keys,
        };
        let (ssh_addr, fingerprint, task) = ssh::start(
            ssh::Backend::Local(sim.clone()),
            host.name.clone(),
            access,
            key,
            host.listen,
        )
        .await?;
        tasks.push(task);
        hosts.push(RunningHost {
            name: host.name,
            ssh_addr,
            host_key_fingerprint: fingerprint,
        });
    }
    Ok(Running {
        admin: Admin { sim },
        rest_addr,
        rest_url: format!("{scheme}://{rest_addr}{}", rest::BASE),
        admin_url,
        scheme,
        cert_pem,
        cert_der,
        cert_sha256,
        ssh_addr: hosts.first().map(|h| h.ssh_addr),
        host_key_fingerprint: hosts.first().map(|h| h.host_key_fingerprint.clone()),
        hosts,
        tasks,
    })
}

type Acceptor = tokio_rustls::TlsAcceptor;

/// A self-signed certificate for `localhost` and the bound IP: (acceptor, PEM, DER).
fn self_signed(addr: SocketAddr) -> anyhow::Result<(Acceptor, String, Vec<u8>)> {
    let names = vec!["localhost".to_string(), addr.ip().to_string()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let der = certified.cert.der().to_vec();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(
        certified.signing_key.serialize_der(),
    )
    .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)?;
    Ok((Acceptor::from(Arc::new(tls)), certified.cert.pem(), der))
}

async fn serve_tls(listener: tokio::net::TcpListener, acceptor: Acceptor, app: axum::Router) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
