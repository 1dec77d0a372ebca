//! Real network peers for the transport tests: OpenSSH's `sshd` on a free loopback port with
//! throw-away keys, and a TLS server with a self-signed (or CA-signed) certificate.
//!
//! The SSH tests need `/usr/sbin/sshd` and `ssh-keygen` (Debian `openssh-server`,
//! `openssh-client`) and root (sshd refuses to run otherwise); they fail, never skip, when
//! either is missing.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TempDir;

const SSHD: &str = "/usr/sbin/sshd";

/// A key pair made by `ssh-keygen`, with its fingerprint as `ssh-keygen -lf` prints it.
pub struct SshKey {
    pub private_pem: String,
    pub public_line: String,
    pub fingerprint: String,
}

/// `ssh-keygen -t ed25519` into `dir/name`.
pub fn ssh_keygen(dir: &Path, name: &str) -> SshKey {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .unwrap_or_else(|err| {
            panic!("ssh-keygen is required (Debian package openssh-client): {err}")
        });
    assert!(status.success(), "ssh-keygen failed");
    let listing = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()
        .expect("ssh-keygen -lf runs");
    let listing = String::from_utf8(listing.stdout).unwrap();
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -lf prints `bits fingerprint comment (type)`")
        .to_owned();
    SshKey {
        private_pem: std::fs::read_to_string(&path).unwrap(),
        public_line: std::fs::read_to_string(path.with_extension("pub")).unwrap(),
        fingerprint,
    }
}

/// A running `sshd -D` on 127.0.0.1 that accepts `root` with [`Sshd::user_key`] (and root's
/// password, which the tests never know: password attempts fail). Killed on drop.
pub struct Sshd {
    pub port: u16,
    pub host_key: SshKey,
    pub user_key: SshKey,
    child: Child,
    dir: TempDir,
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is required for the SSH tests (Debian package openssh-server)"
        );
        let dir = TempDir::new("sshd");
        let host_key = ssh_keygen(dir.path(), "host_key");
        let user_key = ssh_keygen(dir.path(), "user_key");
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, &user_key.public_line).unwrap();
        // sshd's privilege-separation directory; Debian creates it only when the service starts.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (run the tests as root)");
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {host}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin yes\n\
                 MaxStartups 100\n\
                 LogLevel ERROR\n",
                host = dir.path().join("host_key").display(),
                pid = dir.path().join("sshd.pid").display(),
                authorized = authorized.display(),
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .arg("-E")
            .arg(dir.path().join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {SSHD}: {err}"));
        let sshd = Sshd {
            port,
            host_key,
            user_key,
            child,
            dir,
        };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP listener on 127.0.0.1 that counts connections and closes them at once.
pub struct CountingListener {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

pub async fn counting_listener() -> CountingListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    CountingListener { port, connections }
}

/// An HTTPS server on 127.0.0.1 answering every request with `200 hello over tls`.
pub struct TlsServer {
    pub port: u16,
    /// SHA-256 of the server certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// The certificate (self-signed) or its CA, PEM.
    pub trust_pem: String,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
}

pub const TLS_BODY: &str = "hello over tls";

/// A server with a self-signed certificate for `localhost` / `127.0.0.1`.
pub async fn tls_server_self_signed() -> TlsServer {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let der = certified.cert.der().clone();
    let key = certified.signing_key.serialize_der();
    let pem = certified.cert.pem();
    serve_tls(der, key, pem, false).await
}

/// Like [`tls_server_self_signed`], but keeping connections open for further requests
/// (HTTP/1.1 keep-alive). A request for a path ending in `/broken` gets a malformed chunked
/// body on a connection the server keeps open.
pub async fn tls_server_keep_alive() -> TlsServer {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let der = certified.cert.der().clone();
    let key = certified.signing_key.serialize_der();
    let pem = certified.cert.pem();
    serve_tls(der, key, pem, true).await
}

/// A server whose certificate for `localhost` / `127.0.0.1` is signed by a fresh CA; the
/// returned `trust_pem` is the CA's.
pub async fn tls_server_with_ca() -> TlsServer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bnr test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    serve_tls(
        leaf.der().clone(),
        leaf_key.serialize_der(),
        ca.pem(),
        false,
    )
    .await
}

async fn serve_tls(
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    trust_pem: String,
    keep_alive: bool,
) -> TlsServer {
    let fingerprint = sha256_colon_hex(cert.as_ref());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (counter, accepted) = (hits.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                // Requests without bodies: read each head (bounded), then answer.
                let mut pending = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        if pending.len() >= 64 * 1024 {
                            return;
                        }
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head: Vec<u8> = pending.drain(..end).collect();
                    let request_line = String::from_utf8_lossy(&head);
                    let path = request_line.split(' ').nth(1).unwrap_or("");
                    counter.fetch_add(1, Ordering::SeqCst);
                    let response = if keep_alive && path.ends_with("/broken") {
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_owned()
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                             connection: {}\r\n\r\n{TLS_BODY}",
                            TLS_BODY.len(),
                            if keep_alive { "keep-alive" } else { "close" },
                        )
                    };
                    if tls.write_all(response.as_bytes()).await.is_err()
                        || tls.flush().await.is_err()
                    {
                        return;
                    }
                    if !keep_alive {
                        let _ = tls.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    TlsServer {
        port,
        fingerprint,
        trust_pem,
        hits,
        connections,
    }
}

fn sha256_colon_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
