//! The SSH front end: Windows OpenSSH on the Veeam server, password authentication with the
//! same account as the API, one exec request per channel answered by [`crate::powershell`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Server, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use crate::Sim;
use crate::powershell::{self, Output, Wait};

/// Binds `addr`; returns the bound address, the host key's `SHA256:` fingerprint and the task.
pub async fn start(
    sim: Arc<Sim>,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, String, tokio::task::JoinHandle<()>)> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    let config = russh::server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        inactivity_timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut server = SshServer { sim };
    let task = tokio::spawn(async move {
        let _ = server.run_on_socket(Arc::new(config), &listener).await;
    });
    Ok((bound, fingerprint, task))
}

struct SshServer {
    sim: Arc<Sim>,
}

impl Server for SshServer {
    type Handler = Connection;
    fn new_client(&mut self, _peer: Option<SocketAddr>) -> Connection {
        Connection {
            sim: self.sim.clone(),
            authenticated: false,
            pending: HashMap::new(),
        }
    }
}

pub struct Connection {
    sim: Arc<Sim>,
    authenticated: bool,
    /// Exec requests that read their script from stdin, waiting for EOF.
    pending: HashMap<ChannelId, (String, Vec<u8>)>,
}

/// Scripts read from stdin are bounded; a Veeam script is a few kilobytes.
const MAX_STDIN: usize = 1 << 20;

impl Connection {
    fn run(&self, channel: ChannelId, command: String, stdin: Vec<u8>, session: &mut Session) {
        let sim = self.sim.clone();
        let handle = session.handle();
        tokio::spawn(async move {
            let received = Instant::now();
            let stdin = String::from_utf8_lossy(&stdin).into_owned();
            let wait = {
                let mut state = sim.state.lock().unwrap();
                powershell::exec(&mut state, sim.shell, &command, &stdin, Instant::now())
            };
            let output = match wait {
                Wait::Now(output) => output,
                Wait::RestoreSession { session, then } => loop {
                    {
                        let state = sim.state.lock().unwrap();
                        let done = state
                            .restore_sessions
                            .get(&session)
                            .map(|s| state.restore_state(s, Instant::now()).1 != "None")
                            .unwrap_or(true);
                        if done {
                            break then(&state);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
            };
            let Output {
                exit,
                stdout,
                stderr,
            } = output;
            if !stdout.is_empty() {
                let _ = handle.data(channel, stdout.into_bytes()).await;
            }
            if !stderr.is_empty() {
                let _ = handle.extended_data(channel, 1, stderr.into_bytes()).await;
            }
            sim.state.lock().unwrap().counters.ssh_answer_micros +=
                received.elapsed().as_micros() as u64;
            let _ = handle.exit_status_request(channel, exit).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let state = self.sim.state.lock().unwrap();
        // Windows accepts `DOMAIN\user` and `user@domain` spellings of the same account.
        let bare = user.rsplit('\\').next().unwrap_or(user);
        if bare.eq_ignore_ascii_case(&state.username) && password == state.password {
            self.authenticated = true;
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
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
        let command = String::from_utf8_lossy(data).into_owned();
        session.channel_success(channel)?;
        if command.trim_end().ends_with("-Command -") || command.trim_end().ends_with("-command -")
        {
            self.pending.insert(channel, (command, Vec::new()));
        } else {
            self.run(channel, command, Vec::new(), session);
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((_, stdin)) = self.pending.get_mut(&channel)
            && stdin.len() + data.len() <= MAX_STDIN
        {
            stdin.extend_from_slice(data);
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((command, stdin)) = self.pending.remove(&channel) {
            self.run(channel, command, stdin, session);
        }
        Ok(())
    }
}
