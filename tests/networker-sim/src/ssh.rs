//! The KVM host's SSH front end: password and public-key authentication with the host's
//! account, one exec request per channel, answered by [`crate::script`] either in process or
//! through `networker-sim`'s admin endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Server, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{mpsc, watch};

use crate::Sim;
use crate::script::{self, Outcome};

/// The longest a hanging script keeps its channel open (CloudStack waits an hour for output).
const HANG_LIMIT: Duration = Duration::from_secs(3600);

/// Where commands run and events are recorded.
#[derive(Clone)]
pub enum Backend {
    /// The state in this process.
    Local(Arc<Sim>),
    /// `networker-sim`'s admin endpoint, e.g. `http://127.0.0.1:9091/admin`.
    Remote(String),
}

impl Backend {
    async fn exec(&self, host: &str, command: &str) -> Outcome {
        match self {
            Backend::Local(sim) => {
                let mut state = sim.state.lock().unwrap();
                script::exec(&mut state, host, command)
            }
            Backend::Remote(admin) => {
                let body = serde_json::json!({ "command": command }).to_string();
                let answer = admin_call(admin, &format!("/hosts/{host}/exec"), &body).await;
                match answer.and_then(|r| {
                    serde_json::from_slice::<Outcome>(&r.body).context("bad exec answer")
                }) {
                    Ok(outcome) => outcome,
                    Err(e) => Outcome {
                        exit: 1,
                        stderr: format!("kvmhost-sim: networker-sim unreachable: {e:#}\n"),
                        ..Default::default()
                    },
                }
            }
        }
    }

    /// Where SSH events go: recorded at once in process, or sent in order to the admin endpoint.
    fn events(&self, host: &str) -> Events {
        match self {
            Backend::Local(sim) => Events::Local(sim.clone(), host.to_string()),
            Backend::Remote(admin) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
                let (admin, host) = (admin.clone(), host.to_string());
                tokio::spawn(async move {
                    while let Some(event) = rx.recv().await {
                        let body = serde_json::json!({ "event": event }).to_string();
                        let _ =
                            admin_call(&admin, &format!("/hosts/{host}/ssh-event"), &body).await;
                    }
                });
                Events::Remote(tx)
            }
        }
    }
}

/// Records `open`, `close` and `auth_failure` of one host's sessions, in order.
#[derive(Clone)]
enum Events {
    Local(Arc<Sim>, String),
    Remote(mpsc::UnboundedSender<&'static str>),
}

impl Events {
    fn send(&self, event: &'static str) {
        match self {
            Events::Local(sim, host) => {
                let _ = sim.state.lock().unwrap().ssh_event(host, event);
            }
            Events::Remote(tx) => {
                let _ = tx.send(event);
            }
        }
    }
}

/// POSTs JSON to the admin endpoint; errors on a non-2xx answer.
pub async fn admin_call(
    admin: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<crate::http::Response> {
    let response = crate::http::request(
        "POST",
        &format!("{}{path}", admin.trim_end_matches('/')),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        None,
        Duration::from_secs(30),
    )
    .await?;
    if !(200..300).contains(&response.status) {
        anyhow::bail!("admin {path}: {} {}", response.status, response.text());
    }
    Ok(response)
}

/// The account and keys of one host's SSH server.
#[derive(Clone, Debug)]
pub struct Access {
    pub username: String,
    /// `None`: password authentication is refused.
    pub password: Option<String>,
    pub authorized_keys: Vec<PublicKey>,
}

/// A new Ed25519 host key.
pub fn generate_host_key() -> anyhow::Result<PrivateKey> {
    Ok(PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?)
}

/// Reads an OpenSSH private key, or creates one there (mode 0600) when the file is missing, so
/// a restarted host keeps its fingerprint.
pub fn load_or_create_host_key(path: &std::path::Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return PrivateKey::from_openssh(text.as_bytes())
            .with_context(|| format!("{} is not an OpenSSH private key", path.display()));
    }
    let key = generate_host_key()?;
    let text = key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// Reads `authorized_keys`-style lines (`ssh-ed25519 AAAA... comment`).
pub fn parse_authorized_keys(text: &str) -> anyhow::Result<Vec<PublicKey>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PublicKey::from_openssh(l).with_context(|| format!("bad public key line '{l}'")))
        .collect()
}

/// Binds `addr` for host `host`; returns the bound address, the host key's `SHA256:`
/// fingerprint and the serving task.
pub async fn start(
    backend: Backend,
    host: String,
    access: Access,
    key: PrivateKey,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, String, tokio::task::JoinHandle<()>)> {
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    let config = russh::server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        inactivity_timeout: Some(Duration::from_secs(3700)),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let mut server = SshServer {
        events: backend.events(&host),
        backend,
        host: Arc::new(host),
        access: Arc::new(access),
    };
    let task = tokio::spawn(async move {
        let _ = server.run_on_socket(Arc::new(config), &listener).await;
    });
    Ok((bound, fingerprint, task))
}

struct SshServer {
    backend: Backend,
    events: Events,
    host: Arc<String>,
    access: Arc<Access>,
}

impl Server for SshServer {
    type Handler = Connection;
    fn new_client(&mut self, _peer: Option<SocketAddr>) -> Connection {
        self.events.send("open");
        let (closed, _) = watch::channel(());
        Connection {
            backend: self.backend.clone(),
            events: self.events.clone(),
            host: self.host.clone(),
            access: self.access.clone(),
            authenticated: false,
            closed,
            channels: HashMap::new(),
        }
    }
}

pub struct Connection {
    backend: Backend,
    events: Events,
    host: Arc<String>,
    access: Arc<Access>,
    authenticated: bool,
    /// Dropped with the connection: wakes commands still running on it.
    closed: watch::Sender<()>,
    /// Per channel, dropped when the client closes it: wakes its command.
    channels: HashMap<ChannelId, watch::Sender<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.events.send("close");
    }
}

impl Connection {
    fn reject(&self) -> Result<Auth, russh::Error> {
        self.events.send("auth_failure");
        Ok(Auth::reject())
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let ok = user == self.access.username
            && self
                .access
                .password
                .as_deref()
                .is_some_and(|p| p.as_bytes() == password.as_bytes());
        if ok {
            self.authenticated = true;
            Ok(Auth::Accept)
        } else {
            self.reject()
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let ok = user == self.access.username
            && self
                .access
                .authorized_keys
                .iter()
                .any(|k| k.key_data() == key.public_key.key_data());
        if ok {
            self.authenticated = true;
            Ok(Auth::Accept)
        } else {
            self.reject()
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.authenticated {
            reply.accept().await;
        } else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let command = String::from_utf8_lossy(data).into_owned();
        let backend = self.backend.clone();
        let host = self.host.clone();
        let handle = session.handle();
        let mut closed = self.closed.subscribe();
        let (channel_closed, mut channel_gone) = watch::channel(());
        self.channels.insert(channel, channel_closed);
        tokio::spawn(async move {
            let outcome = backend.exec(&host, &command).await;
            // A hanging script shows what it printed so far; others print when they end.
            let wait = if outcome.hang {
                HANG_LIMIT
            } else {
                Duration::from_millis(outcome.delay_ms).min(HANG_LIMIT)
            };
            if !outcome.hang && !wait.is_zero() {
                tokio::select! {
                    _ = closed.changed() => return,
                    _ = channel_gone.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if !outcome.stdout.is_empty() {
                let _ = handle.data(channel, outcome.stdout.into_bytes()).await;
            }
            if !outcome.stderr.is_empty() {
                let _ = handle
                    .extended_data(channel, 1, outcome.stderr.into_bytes())
                    .await;
            }
            if outcome.hang {
                tokio::select! {
                    _ = closed.changed() => return,
                    _ = channel_gone.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            } else {
                let _ = handle.exit_status_request(channel, outcome.exit).await;
            }
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
