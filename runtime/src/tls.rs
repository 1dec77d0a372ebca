//! Per-zone TLS trust for a provider's outbound HTTPS.
//!
//! A destination granted through an `https-to-setting` need carries a [`TlsTrust`] taken from
//! the zone's settings; it applies to that one authority and nothing else:
//!
//! - [`TlsTrust::Pinned`]: the server's leaf certificate must have one of the pinned SHA-256
//!   fingerprints. Chain, name and dates are not checked (a pin is an exact statement about
//!   one certificate, which is what a vendor appliance's self-signed certificate needs); the
//!   handshake signature is.
//! - [`TlsTrust::Ca`]: the chain must lead to one of the given CA certificates (instead of the
//!   system roots) and the name must match.
//! - [`TlsTrust::AnyCertificate`]: `validate=false` without a pin or CA: any certificate from
//!   this authority is accepted, with a warning per connection. Other authorities are not
//!   affected.
//! - [`TlsTrust::SystemRoots`]: the default (wasmtime-wasi-http's own sender).
//!
//! Requests to a destination with a `TlsTrust` must use `https`: plain `http` to it is denied.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::https_pool::{Checkin, Connection, MAX_AGE, PoolKey, PooledBody, pool};
use super::state::PROVIDER_LOG_TARGET;

/// How one granted HTTPS authority's certificates are checked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TlsTrust {
    /// The system (webpki) roots, as for any other destination.
    SystemRoots,
    /// Exactly the certificates with these SHA-256 fingerprints (DER).
    Pinned(Vec<[u8; 32]>),
    /// Chains leading to these CA certificates (DER), with name checking.
    Ca(Vec<Vec<u8>>),
    /// Any certificate (`validate=false`), for this authority only.
    AnyCertificate,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsTrust::SystemRoots => f.write_str("SystemRoots"),
            TlsTrust::Pinned(pins) => {
                let shown: Vec<String> = pins.iter().map(|pin| colon_hex(pin)).collect();
                f.debug_tuple("Pinned").field(&shown).finish()
            }
            TlsTrust::Ca(certs) => write!(f, "Ca({} certificates)", certs.len()),
            TlsTrust::AnyCertificate => f.write_str("AnyCertificate"),
        }
    }
}

impl TlsTrust {
    /// The trust the settings' values give: a pin wins over a CA, a CA over `validate=false`.
    /// `Err` names the malformed setting.
    pub fn from_values(
        pinned: Option<(&str, &str)>,
        ca_pem: Option<(&str, &str)>,
        validate: Option<&str>,
    ) -> Result<TlsTrust, String> {
        if let Some((setting, value)) = pinned.filter(|(_, v)| !v.trim().is_empty()) {
            let pins = value
                .split([',', ' ', '\n', '\t', ';'])
                .filter(|part| !part.is_empty())
                .map(parse_fingerprint)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!(
                        "setting `{setting}` must hold SHA-256 certificate fingerprints (64 hex \
                         digits, colons allowed)"
                    )
                })?;
            return Ok(TlsTrust::Pinned(pins));
        }
        if let Some((setting, value)) = ca_pem.filter(|(_, v)| !v.trim().is_empty()) {
            let certs = CertificateDer::pem_slice_iter(value.as_bytes())
                .map(|cert| cert.map(|c| c.as_ref().to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("setting `{setting}` is not PEM: {err}"))?;
            if certs.is_empty() {
                return Err(format!(
                    "setting `{setting}` holds no `BEGIN CERTIFICATE` block"
                ));
            }
            return Ok(TlsTrust::Ca(certs));
        }
        if validate.is_some_and(|v| v.trim().eq_ignore_ascii_case("false")) {
            return Ok(TlsTrust::AnyCertificate);
        }
        Ok(TlsTrust::SystemRoots)
    }

    /// A client configuration enforcing this trust (`None` for the system roots, which the
    /// default sender handles).
    fn client_config(
        &self,
        authority: &str,
        origin: &Origin,
    ) -> Result<Option<Arc<ClientConfig>>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?;
        let config = match self {
            TlsTrust::SystemRoots => return Ok(None),
            TlsTrust::Ca(certs) => {
                let mut roots = RootCertStore::empty();
                for cert in certs {
                    roots
                        .add(CertificateDer::from(cert.clone()))
                        .map_err(|err| format!("a CA certificate is unusable: {err}"))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            TlsTrust::Pinned(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedVerifier {
                    pins: Some(pins.clone()),
                    authority: authority.to_owned(),
                    origin: origin.clone(),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            TlsTrust::AnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedVerifier {
                    pins: None,
                    authority: authority.to_owned(),
                    origin: origin.clone(),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// `AB:CD:…` or `abcd…` (64 hex digits) → bytes.
fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(digits).ok()?;
    bytes.try_into().ok()
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints it.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts the pinned leaf certificates (or, without pins, any certificate), still verifying
/// the handshake signature with the presented key.
#[derive(Debug)]
struct FixedVerifier {
    pins: Option<Vec<[u8; 32]>>,
    authority: String,
    origin: Origin,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The provider and zone a connection is made for: named in the runtime's own warnings about
/// it (they run outside the provider's code, possibly outside its call span), and part of the
/// key a pooled connection is reused under.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub provider: Arc<str>,
    pub zone: String,
}

impl ServerCertVerifier for FixedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        match &self.pins {
            Some(pins) if pins.contains(&digest) => Ok(ServerCertVerified::assertion()),
            Some(_) => {
                let presented = colon_hex(&digest);
                tracing::warn!(
                    target: PROVIDER_LOG_TARGET,
                    provider = %self.origin.provider,
                    zone = %self.origin.zone,
                    authority = %self.authority,
                    presented = %presented,
                    "TLS certificate does not match the pinned fingerprint"
                );
                Err(rustls::Error::General(format!(
                    "certificate {presented} of {} does not match the pinned fingerprint",
                    self.authority
                )))
            }
            None => {
                tracing::warn!(
                    target: PROVIDER_LOG_TARGET,
                    provider = %self.origin.provider,
                    zone = %self.origin.zone,
                    authority = %self.authority,
                    presented = %colon_hex(&digest),
                    "TLS certificate accepted without validation (validate=false for this \
                     destination)"
                );
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The response and connection-driver pair a `send_request` hook returns.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
pub(crate) type Sent = (http::Response<WasiBody>, IoFuture);

/// Client configurations kept per (trust, authority, provider, zone): building one (and its
/// root store) per request costs more than the lookup, and a kept configuration also keeps its
/// TLS session cache. The provider and zone are part of the key because the verifier names
/// them in its warnings. Bounded: cleared when full.
type ClientConfigs = HashMap<(TlsTrust, String, Arc<str>, String), Arc<ClientConfig>>;
static CLIENT_CONFIGS: LazyLock<Mutex<ClientConfigs>> = LazyLock::new(Default::default);
const CLIENT_CONFIGS_MAX: usize = 256;

fn cached_client_config(
    trust: &TlsTrust,
    authority: &str,
    origin: &Origin,
) -> Result<Option<Arc<ClientConfig>>, String> {
    if *trust == TlsTrust::SystemRoots {
        return Ok(None);
    }
    let key = (
        trust.clone(),
        authority.to_owned(),
        origin.provider.clone(),
        origin.zone.clone(),
    );
    if let Some(config) = CLIENT_CONFIGS.lock().get(&key) {
        return Ok(Some(config.clone()));
    }
    let Some(config) = trust.client_config(authority, origin)? else {
        return Ok(None);
    };
    let mut configs = CLIENT_CONFIGS.lock();
    if configs.len() >= CLIENT_CONFIGS_MAX {
        configs.clear();
    }
    configs.insert(key, config.clone());
    Ok(Some(config))
}

/// Sends `request` over TLS checked by `trust` (HTTP/1.1), on an idle keep-alive connection
/// for exactly this requester, authority and trust if there is one, else on a new one. The
/// caller has already checked the grant and clamped the timeouts.
pub(crate) async fn send_with_trust(
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
    trust: &TlsTrust,
    authority: &str,
    origin: Origin,
) -> Result<Sent, HttpError> {
    let config = cached_client_config(trust, authority, &origin).map_err(|message| {
        tracing::warn!(
            target: PROVIDER_LOG_TARGET,
            provider = %origin.provider,
            zone = %origin.zone,
            authority,
            %message,
            "TLS setup failed"
        );
        HttpError::TlsCertificateError
    })?;
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(20));
    let first_byte_timeout = options
        .first_byte_timeout
        .unwrap_or(Duration::from_secs(20));
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(Duration::from_secs(20))
        .max(Duration::from_millis(1));

    let Some(config) = config else {
        let (response, io) =
            wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
        return Ok((response.map(BodyExt::boxed_unsync), Box::new(io)));
    };

    // The request line carries only the path: scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let key = PoolKey {
        provider: origin.provider,
        zone: origin.zone,
        authority: authority.to_owned(),
        trust: trust.clone(),
    };
    if let Some(mut connection) = pool().take(&key) {
        match tokio::time::timeout(
            first_byte_timeout,
            connection.sender.try_send_request(request),
        )
        .await
        {
            Err(_) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Ok(response)) => {
                return Ok(pooled_response(
                    response,
                    between_bytes_timeout,
                    key,
                    connection,
                ));
            }
            // The server closed the idle connection before the request was written: send it
            // on a new one. Once written, it is not sent twice.
            Ok(Err(mut failed)) => match failed.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(HttpError::from(failed.into_error())),
            },
        }
    }

    let mut connection = connect(config, authority, connect_timeout).await?;
    let response =
        tokio::time::timeout(first_byte_timeout, connection.sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(HttpError::from)?;
    Ok(pooled_response(
        response,
        between_bytes_timeout,
        key,
        connection,
    ))
}

/// A new TCP + TLS + HTTP/1.1 connection, its driver running as its own task (bounded by
/// [`MAX_AGE`] plus a margin, so a connection never outlives the pool's rules by much).
async fn connect(
    config: Arc<ClientConfig>,
    authority: &str,
    connect_timeout: Duration,
) -> Result<Connection, HttpError> {
    let opened = Instant::now();
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let name = server_name(authority).ok_or(HttpError::HttpRequestUriInvalid)?;
    let stream = tokio::time::timeout(
        connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(HttpError::Tls)?;
    let (sender, driver) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    tokio::spawn(async move {
        // Ends when the connection closes: on error, on `Connection: close`, or when its
        // sender is dropped (not pooled, evicted, expired).
        let _ = tokio::time::timeout(MAX_AGE + Duration::from_secs(60), driver).await;
    });
    Ok(Connection { sender, opened })
}

fn pooled_response(
    response: http::Response<hyper::body::Incoming>,
    between_bytes_timeout: Duration,
    key: PoolKey,
    connection: Connection,
) -> Sent {
    let response = response.map(|incoming| {
        PooledBody::new(incoming, between_bytes_timeout, Checkin { key, connection }).boxed_unsync()
    });
    // The connection is driven by its own task; nothing is left for the caller to drive.
    let io: IoFuture = Box::new(async { Ok(()) });
    (response, io)
}

/// The rustls server name of `host:port` (IP literals included, `[v6]:port` too).
fn server_name(authority: &str) -> Option<ServerName<'static>> {
    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        return Some(ServerName::from(addr.ip()));
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    ServerName::try_from(host.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons_and_malformed_ones_name_the_setting() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let both = format!("{hex}, {colons}");
        let trust = TlsTrust::from_values(Some(("x.pin", both.as_str())), None, None).unwrap();
        assert_eq!(trust, TlsTrust::Pinned(vec![[0xab; 32], [0xab; 32]]));
        let err = TlsTrust::from_values(Some(("x.pin", "abcd")), None, None).unwrap_err();
        assert!(err.contains("`x.pin`"), "{err}");
    }

    #[test]
    fn a_pin_wins_over_a_ca_and_validate_false_only_applies_without_either() {
        let pin = "00".repeat(32);
        let trust = TlsTrust::from_values(
            Some(("p", pin.as_str())),
            Some(("c", "junk")),
            Some("false"),
        )
        .unwrap();
        assert!(matches!(trust, TlsTrust::Pinned(_)));
        assert_eq!(
            TlsTrust::from_values(None, None, Some("FALSE")).unwrap(),
            TlsTrust::AnyCertificate
        );
        assert_eq!(
            TlsTrust::from_values(None, None, Some("true")).unwrap(),
            TlsTrust::SystemRoots
        );
        assert_eq!(
            TlsTrust::from_values(Some(("p", " ")), None, None).unwrap(),
            TlsTrust::SystemRoots
        );
        let err = TlsTrust::from_values(None, Some(("c", "not pem")), None).unwrap_err();
        assert!(err.contains("`c`"), "{err}");
    }
}
