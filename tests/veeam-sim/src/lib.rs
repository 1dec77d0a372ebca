//! `veeam-sim`: a simulator of Veeam Backup Enterprise Manager's XML REST API and of the Veeam
//! server's PowerShell-over-SSH side, over one shared state, for tests and local runs.
//!
//! The HTTP listener serves `/api/...` (EM) and `/admin/...` (JSON control: faults, timing,
//! version profile, live session count, request counters). See the README for running it.

pub mod api;
pub mod powershell;
pub mod query;
pub mod ssh;
pub mod state;
pub mod xml;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::Digest;

pub use state::{Faults, Profile, RestoreResult, TaskOutcome, Timing};

/// The simulator's shared state.
pub struct Sim {
    pub state: Mutex<state::State>,
    pub shell: powershell::DefaultShell,
}

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub ssh_listen: Option<SocketAddr>,
    pub tls: bool,
    pub profile: Profile,
    pub username: String,
    pub password: String,
    /// The vCenter name the hierarchy root carries.
    pub vcenter: String,
    pub timing: Timing,
    pub max_sessions: usize,
    pub shell: powershell::DefaultShell,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ssh_listen: None,
            tls: false,
            profile: Profile::V12,
            username: "administrator".into(),
            password: "P@ssword123".into(),
            vcenter: "vcenter.local".into(),
            timing: Timing::default(),
            max_sessions: 10,
            shell: powershell::DefaultShell::Cmd,
        }
    }
}

/// A started simulator; its listeners stop when this is dropped.
pub struct Running {
    pub sim: Arc<Sim>,
    pub http: SocketAddr,
    pub ssh: Option<SocketAddr>,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The self-signed certificate (PEM) when TLS is on.
    pub cert_pem: Option<String>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub cert_sha256: Option<String>,
    /// OpenSSH-style fingerprint (`SHA256:<base64>`) of the SSH host key.
    pub ssh_host_key_fingerprint: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `<scheme>://<addr>/api/`, the value of `backup.plugin.veeam.url`.
    pub fn url(&self) -> String {
        format!("{}://{}/api/", self.scheme, self.http)
    }
    pub fn admin_url(&self) -> String {
        format!("{}://{}/admin", self.scheme, self.http)
    }
    pub fn live_sessions(&self) -> usize {
        self.sim
            .state
            .lock()
            .unwrap()
            .live_sessions(std::time::Instant::now())
    }
    pub fn with_state<T>(&self, f: impl FnOnce(&mut state::State) -> T) -> T {
        f(&mut self.sim.state.lock().unwrap())
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
    let mut state = state::State::new(
        config.profile,
        &config.username,
        &config.password,
        &config.vcenter,
    );
    state.timing = config.timing;
    state.max_sessions = config.max_sessions;
    let sim = Arc::new(Sim {
        state: Mutex::new(state),
        shell: config.shell,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let http = listener.local_addr()?;
    let mut tasks = Vec::new();
    let (scheme, cert_pem, cert_sha256) = if config.tls {
        let ip = http.ip().to_string();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), ip])?;
        let der = certified.cert.der().clone();
        let fingerprint: String = sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(
            certified.signing_key.serialize_der(),
        )
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![der], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let app = api::router(sim.clone(), "https");
        tasks.push(tokio::spawn(async move {
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
        }));
        ("https", Some(certified.cert.pem()), Some(fingerprint))
    } else {
        let app = api::router(sim.clone(), "http");
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        ("http", None, None)
    };
    let (ssh, ssh_host_key_fingerprint) = match config.ssh_listen {
        Some(addr) => {
            let (addr, fingerprint, task) = ssh::start(sim.clone(), addr).await?;
            tasks.push(task);
            (Some(addr), Some(fingerprint))
        }
        None => (None, None),
    };
    Ok(Running {
        sim,
        http,
        ssh,
        scheme,
        cert_pem,
        cert_sha256,
        ssh_host_key_fingerprint,
        tasks,
    })
}
