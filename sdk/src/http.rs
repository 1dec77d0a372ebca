//! A small blocking HTTP client over `wasi:http` (raw WASI 0.2 bindings).
//!
//! ```no_run
//! # fn run(password: &str) -> bnr_sdk::Result<()> {
//! use bnr_sdk::http::Request;
//! use std::time::Duration;
//!
//! let response = Request::get("https://veeam.example:9419/api/v1/jobs?limit=10")
//!     .header("accept", "application/json")
//!     .basic_auth("admin", password)
//!     .timeout(Duration::from_secs(20))
//!     .send()?                // HttpError → ProviderError with `?`
//!     .error_for_status()?;   // 401/403 → Unauthorized, 404 → NotFound, 5xx → Unavailable, ...
//! let text = response.text()?;
//! # let _ = text;
//! # Ok(())
//! # }
//! ```
//!
//! The host only lets requests through to authorities the provider declared with
//! [`Need::HttpToSetting`](crate::Need) or [`Need::HttpsToSetting`](crate::Need) and the
//! operator granted; anything else fails immediately with [`HttpError::Denied`] and no packet
//! is sent. The host also clamps timeouts.
//!
//! TLS is the host's business: an `https://` request to a destination declared with
//! [`Need::HttpsToSetting`](crate::Need) is checked against the pinned certificate or CA the
//! zone's settings give (for instance a vendor appliance's self-signed certificate), other
//! HTTPS against the system roots. The provider's code is the same either way; a certificate
//! the host does not trust fails the request with a TLS error.
//!
//! Redirects are not followed; the caller sees the 3xx response.

use crate::{HttpsAccess, ProviderError};
use std::fmt;
use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method as WasiMethod, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll;
use wasip2::io::streams::StreamError;

/// Default deadline for a whole request (connect, send, response head and body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a response body; bigger bodies fail with [`HttpError::BodyTooLarge`] instead of
/// exhausting the provider's memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest chunk handed to the output stream at once (`blocking-write-and-flush` accepts ≤ 4096).
const WRITE_CHUNK_BYTES: usize = 4096;
/// Largest chunk read from the input stream at once.
const READ_CHUNK_BYTES: u64 = 64 * 1024;
/// How much of an error response body [`HttpError::Status`] keeps.
const STATUS_BODY_EXCERPT_BYTES: usize = 512;

/// HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl Method {
    fn to_wasi(self) -> WasiMethod {
        match self {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
            Method::Options => WasiMethod::Options,
        }
    }

    /// The method named `name` (`"GET"`, `"delete"`, ...), for code that carries it as text
    /// (a provider's own transport trait, tested natively).
    pub fn from_name(name: &str) -> Option<Method> {
        const METHODS: [(&str, Method); 7] = [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("PATCH", Method::Patch),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
        ];
        METHODS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, method)| *method)
    }

    /// Every method but GET and HEAD may carry a body, so its length is always declared.
    fn may_send_body(self) -> bool {
        !matches!(self, Method::Get | Method::Head)
    }
}

/// Why a request failed. Converts into [`ProviderError`] with `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not `http(s)://authority[/path][?query]`.
    InvalidUrl(String),
    /// A header name or value was rejected (syntax, or forbidden by the host).
    InvalidHeader(String),
    /// The host refused the request: the authority is not granted to this provider.
    Denied {
        /// `host[:port]` that was refused.
        authority: String,
    },
    /// No complete answer within the deadline (connect, first byte, between bytes or overall).
    Timeout {
        /// `host[:port]` of the request.
        authority: String,
    },
    /// The server could not be reached (DNS, refused, reset, ...).
    Connect {
        /// `host[:port]` of the request.
        authority: String,
        /// What went wrong.
        detail: String,
    },
    /// TLS handshake or certificate failure.
    Tls {
        /// `host[:port]` of the request.
        authority: String,
        /// What went wrong.
        detail: String,
    },
    /// The server answered with a non-success status (from [`Response::error_for_status`]).
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The response body exceeded the limit set with [`Request::max_response_bytes`].
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not valid UTF-8 (from [`Response::text`]) or not the expected JSON.
    Decode(String),
    /// Any other protocol-level failure.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::InvalidHeader(m) => write!(f, "invalid header: {m}"),
            HttpError::Denied { authority } => write!(
                f,
                "HTTP request to `{authority}` denied by the host: outbound HTTP to it is not granted"
            ),
            HttpError::Timeout { authority } => {
                write!(f, "HTTP request to `{authority}` timed out")
            }
            HttpError::Connect { authority, detail } => {
                write!(f, "cannot connect to `{authority}`: {detail}")
            }
            HttpError::Tls { authority, detail } => {
                write!(f, "TLS failure with `{authority}`: {detail}")
            }
            HttpError::Status { status, body } if body.is_empty() => {
                write!(f, "HTTP status {status}")
            }
            HttpError::Status { status, body } => write!(f, "HTTP status {status}: {body}"),
            HttpError::BodyTooLarge { limit } => {
                write!(f, "HTTP response body larger than {limit} bytes")
            }
            HttpError::Decode(m) => write!(f, "cannot decode HTTP response: {m}"),
            HttpError::Protocol(m) => write!(f, "HTTP protocol error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// This error as a [`ProviderError`], naming the settings that hold the credentials when
    /// the vendor refused them (HTTP 401 or 403), so the operator knows what to check:
    ///
    /// ```ignore
    /// http::get(&url)?.error_for_status().map_err(|e| e.naming_credentials(&[USER, PASSWORD]))?;
    /// ```
    ///
    /// Any other error converts as with `?`.
    pub fn naming_credentials(self, settings: &[&str]) -> ProviderError {
        match &self {
            HttpError::Status {
                status: status @ (401 | 403),
                ..
            } => ProviderError::Unauthorized(format!(
                "the vendor refused the credentials (HTTP {status}); check the zone settings {}",
                settings.join(", ")
            )),
            _ => ProviderError::from(self),
        }
    }
}

impl HttpError {
    /// This failure of a request to the vendor endpoint of `access` (the one
    /// [`Need::HttpsToSetting`](crate::Need) declares), as a [`ProviderError`] that says what the
    /// operator can fix: an unreachable endpoint names its URL setting, a certificate the host
    /// does not trust names the pin, CA and validation settings. `vendor` names the product
    /// (`"NetWorker"`). Any other error converts as with `?`.
    pub fn naming_endpoint(self, vendor: &str, access: &HttpsAccess) -> ProviderError {
        match &self {
            HttpError::Tls { .. } => {
                let mut fixes = Vec::new();
                if let Some(pin) = &access.pinned_cert_setting {
                    fixes.push(format!("pin {vendor}'s certificate in {pin}"));
                }
                if let Some(ca) = &access.ca_pem_setting {
                    fixes.push(format!("give its CA in {ca}"));
                }
                if let Some(validate) = &access.validate_setting {
                    fixes.push(format!("set {validate} to false"));
                }
                ProviderError::Unavailable(if fixes.is_empty() {
                    self.to_string()
                } else {
                    format!("{self}; {}", fixes.join(", or "))
                })
            }
            HttpError::Timeout { .. } | HttpError::Connect { .. } => ProviderError::Unavailable(
                format!("{vendor} at {} is unreachable: {self}", access.url_setting),
            ),
            _ => ProviderError::from(self),
        }
    }
}

impl From<HttpError> for ProviderError {
    fn from(error: HttpError) -> Self {
        let message = error.to_string();
        match error {
            HttpError::InvalidUrl(_) | HttpError::InvalidHeader(_) | HttpError::Denied { .. } => {
                ProviderError::InvalidConfig(message)
            }
            HttpError::Timeout { .. } | HttpError::Connect { .. } | HttpError::Tls { .. } => {
                ProviderError::Unavailable(message)
            }
            HttpError::Status { status, .. } => match status {
                401 | 403 => ProviderError::Unauthorized(message),
                404 | 410 => ProviderError::NotFound(message),
                408 | 429 | 500..=599 => ProviderError::Unavailable(message),
                _ => ProviderError::Rejected(message),
            },
            HttpError::BodyTooLarge { .. } | HttpError::Decode(_) | HttpError::Protocol(_) => {
                ProviderError::Internal(message)
            }
        }
    }
}

/// A request being built. Finish with [`send`](Request::send).
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Duration,
    max_response_bytes: usize,
    /// An error found while building (e.g. JSON serialisation), reported by `send`.
    deferred_error: Option<HttpError>,
}

impl Request {
    /// A request with `method` to `url` (`http://` or `https://`).
    pub fn new(method: Method, url: &str) -> Self {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            deferred_error: None,
        }
    }

    /// GET `url`.
    pub fn get(url: &str) -> Self {
        Self::new(Method::Get, url)
    }

    /// POST to `url`.
    pub fn post(url: &str) -> Self {
        Self::new(Method::Post, url)
    }

    /// PUT to `url`.
    pub fn put(url: &str) -> Self {
        Self::new(Method::Put, url)
    }

    /// DELETE `url`.
    pub fn delete(url: &str) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Add a header (repeatable; names are case-insensitive).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Every header of `headers`, in order.
    pub fn headers<N: AsRef<str>, V: AsRef<str>>(
        mut self,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        for (name, value) in headers {
            self = self.header(name.as_ref(), value.as_ref());
        }
        self
    }

    /// `Authorization: Basic …`.
    pub fn basic_auth(self, username: &str, password: &str) -> Self {
        self.header("authorization", &basic_auth_value(username, password))
    }

    /// `Authorization: Bearer …`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `value` as a JSON body with `content-type: application/json`.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body;
                self.header("content-type", "application/json")
            }
            Err(error) => {
                self.deferred_error = Some(HttpError::Decode(format!(
                    "cannot serialise request body: {error}"
                )));
                self
            }
        }
    }

    /// Deadline for the whole exchange (default [`DEFAULT_TIMEOUT`]); also passed to the host as
    /// connect, first-byte and between-bytes timeout. The host may clamp it further.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Largest accepted response body (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Send the request and read the whole response. Any status counts as success here; use
    /// [`Response::error_for_status`] to turn 4xx/5xx into errors.
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(error) = self.deferred_error {
            return Err(error);
        }
        let target = Target::parse(&self.url)?;
        let timeout_ns = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        // One timer for the whole exchange: the response head and every body read race it.
        let deadline = monotonic_clock::subscribe_duration(timeout_ns);

        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value)
                .map_err(|error| header_error(name, error))?;
        }
        // An explicit length, 0 too: without one a DELETE goes out with a chunked body whose
        // end arrives after the server may already have answered and closed, and the answer
        // is lost to a reset connection.
        if !self.body.is_empty() || self.method.may_send_body() {
            let length = self.body.len().to_string();
            headers
                .set("content-length", &[length.into_bytes()])
                .map_err(|error| header_error("content-length", error))?;
        }

        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} rejected by the host"));
        request
            .set_method(&self.method.to_wasi())
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&target.path_with_query))
            .map_err(|()| invalid("path"))?;

        let options = RequestOptions::new();
        // The host may not support some timeouts or may clamp them; either way it stays bounded.
        let _ = options.set_connect_timeout(Some(timeout_ns));
        let _ = options.set_first_byte_timeout(Some(timeout_ns));
        let _ = options.set_between_bytes_timeout(Some(timeout_ns));

        let outgoing_body = request
            .body()
            .map_err(|()| HttpError::Protocol("request body already taken".into()))?;
        let future_response =
            outgoing_handler::handle(request, Some(options)).map_err(|code| target.error(code))?;

        // Write after `handle` so a large body streams instead of filling a buffer nobody reads.
        let body_result = write_body(outgoing_body, &self.body);

        let response = {
            let ready = future_response.subscribe();
            loop {
                if let Some(result) = future_response.get() {
                    break result;
                }
                let woke = poll::poll(&[&ready, &deadline]);
                if !woke.contains(&0) {
                    return Err(HttpError::Timeout {
                        authority: target.authority.clone(),
                    });
                }
            }
        };
        let response = match response {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(target.error(code)),
            Err(()) => return Err(HttpError::Protocol("response already taken".into())),
        };
        // The exchange failed while writing but the server still answered: report the write error.
        body_result.map_err(|error| match error {
            BodyError::Code(code) => target.error(code),
            BodyError::Other(detail) => HttpError::Protocol(detail),
        })?;

        let status = response.status();
        let response_headers = response.headers().entries();
        let incoming_body = response
            .consume()
            .map_err(|()| HttpError::Protocol("response body already taken".into()))?;
        let body = read_body(&incoming_body, &deadline, self.max_response_bytes, &target);
        drop(IncomingBody::finish(incoming_body));
        Ok(Response {
            status,
            headers: response_headers,
            body: body?,
        })
    }
}

/// GET `url` with default settings.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

enum BodyError {
    Code(ErrorCode),
    Other(String),
}

fn write_body(outgoing_body: OutgoingBody, body: &[u8]) -> Result<(), BodyError> {
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| BodyError::Other("request body stream already taken".into()))?;
        for chunk in body.chunks(WRITE_CHUNK_BYTES) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
        // The stream is a child of the body and must be dropped before `finish`.
    }
    OutgoingBody::finish(outgoing_body, None).map_err(BodyError::Code)
}

fn stream_error(error: StreamError) -> BodyError {
    match error {
        StreamError::Closed => BodyError::Other("connection closed while sending".into()),
        StreamError::LastOperationFailed(error) => {
            match wasip2::http::types::http_error_code(&error) {
                Some(code) => BodyError::Code(code),
                None => BodyError::Other(error.to_debug_string()),
            }
        }
    }
}

fn read_body(
    incoming_body: &IncomingBody,
    deadline: &poll::Pollable,
    limit: usize,
    target: &Target,
) -> Result<Vec<u8>, HttpError> {
    let stream = incoming_body
        .stream()
        .map_err(|()| HttpError::Protocol("response body stream already taken".into()))?;
    let ready = stream.subscribe();
    let mut body = Vec::new();
    loop {
        match stream.read(READ_CHUNK_BYTES) {
            Ok(chunk) if chunk.is_empty() => {
                let woke = poll::poll(&[&ready, deadline]);
                if !woke.contains(&0) {
                    return Err(HttpError::Timeout {
                        authority: target.authority.clone(),
                    });
                }
            }
            Ok(chunk) => {
                if body.len() + chunk.len() > limit {
                    return Err(HttpError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(match wasip2::http::types::http_error_code(&error) {
                    Some(code) => target.error(code),
                    None => HttpError::Protocol(error.to_debug_string()),
                });
            }
        }
    }
}

fn header_error(name: &str, error: HeaderError) -> HttpError {
    HttpError::InvalidHeader(match error {
        HeaderError::InvalidSyntax => format!("`{name}` has invalid syntax"),
        HeaderError::Forbidden => format!("`{name}` is forbidden by the host"),
        HeaderError::Immutable => format!("`{name}` cannot be changed"),
    })
}

/// A response with its whole body read.
#[derive(Clone, Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// All headers, in the order received (names lower-case).
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, consuming the response.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body)
            .map_err(|error| HttpError::Decode(format!("body is not UTF-8: {error}")))
    }

    /// The body parsed as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| HttpError::Decode(format!("body is not the expected JSON: {error}")))
    }

    /// `Ok(self)` for 1xx–3xx, [`HttpError::Status`] (with the start of the body) otherwise.
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body);
        let mut end = text.len().min(STATUS_BODY_EXCERPT_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Err(HttpError::Status {
            status: self.status,
            body: text[..end].trim().to_owned(),
        })
    }
}

/// The parts of a URL `wasi:http` wants.
#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, HttpError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| HttpError::InvalidUrl(format!("`{url}` has no scheme")))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(HttpError::InvalidUrl(format!(
                    "scheme `{other}` is not supported (use http or https)"
                )));
            }
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(HttpError::InvalidUrl("the URL has no host".into()));
        }
        if authority.contains('@') {
            // Credentials in URLs end up in logs; make callers use basic_auth instead.
            return Err(HttpError::InvalidUrl(
                "credentials in the URL are not supported; use basic_auth".into(),
            ));
        }
        if authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(HttpError::InvalidUrl("the host contains whitespace".into()));
        }
        let path = path.split('#').next().unwrap_or_default();
        let path_with_query = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        Ok(Target {
            scheme,
            authority: authority.to_ascii_lowercase(),
            path_with_query,
        })
    }

    fn error(&self, code: ErrorCode) -> HttpError {
        let authority = self.authority.clone();
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied { authority },
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout { authority },
            ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionLimitReached => HttpError::Connect {
                authority,
                detail: describe_code(&code),
            },
            ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => HttpError::Tls {
                authority,
                detail: describe_code(&code),
            },
            ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestUriTooLong => HttpError::InvalidUrl(describe_code(&code)),
            ErrorCode::HttpRequestHeaderSectionSize(_) | ErrorCode::HttpRequestHeaderSize(_) => {
                HttpError::InvalidHeader(describe_code(&code))
            }
            other => HttpError::Protocol(describe_code(&other)),
        }
    }
}

/// `ErrorCode::ConnectionRefused` → "connection refused".
fn describe_code(code: &ErrorCode) -> String {
    let debug = format!("{code:?}");
    let name = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
    let (variant, payload) = match name.find('(') {
        Some(index) => name.split_at(index),
        None => (name, ""),
    };
    let mut words = String::with_capacity(variant.len() + 4);
    for (index, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words + payload
}

/// The `Authorization` header value of HTTP Basic authentication, `Basic base64(user:password)`,
/// for code that builds its requests itself (a transport tested natively).
pub fn basic_auth_value(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{username}:{password}").as_bytes())
    )
}

/// The host of an `http(s)://` URL (the scheme may be missing): no port, user or brackets
/// (`https://[::1]:9398/api` → `::1`). `None` when there is no host.
pub fn url_host(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (position, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if position <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ];
        for (input, expected) in cases {
            assert_eq!(base64_encode(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn methods_by_name() {
        assert_eq!(Method::from_name("DELETE"), Some(Method::Delete));
        assert_eq!(Method::from_name("post"), Some(Method::Post));
        assert_eq!(Method::from_name("TRACE"), None);
    }

    #[test]
    fn basic_auth_and_url_hosts() {
        assert_eq!(
            basic_auth_value("administrator", "password"),
            "Basic YWRtaW5pc3RyYXRvcjpwYXNzd29yZA=="
        );
        assert_eq!(
            url_host("https://em.example:9398/api/").as_deref(),
            Some("em.example")
        );
        assert_eq!(url_host("https://[::1]:9398/api/").as_deref(), Some("::1"));
        assert_eq!(url_host("nw.lan:9090/nwrestapi").as_deref(), Some("nw.lan"));
        assert_eq!(url_host("https://u@nw.lan/x").as_deref(), Some("nw.lan"));
        assert_eq!(url_host("https:///api"), None);
    }

    #[test]
    fn endpoint_failures_name_the_settings_to_fix() {
        let access = HttpsAccess::new("backup.plugin.acme.url")
            .pinned_cert("backup.plugin.acme.tls.pin")
            .validate("backup.plugin.acme.validate");
        let tls = HttpError::Tls {
            authority: "acme:443".into(),
            detail: "unknown issuer".into(),
        };
        let ProviderError::Unavailable(message) = tls.naming_endpoint("ACME", &access) else {
            panic!("TLS trouble is unavailable");
        };
        assert!(
            message.contains("pin ACME's certificate in backup.plugin.acme.tls.pin"),
            "{message}"
        );
        assert!(
            message.contains("set backup.plugin.acme.validate to false"),
            "{message}"
        );
        let refused = HttpError::Connect {
            authority: "acme:443".into(),
            detail: "connection refused".into(),
        };
        let ProviderError::Unavailable(message) = refused.naming_endpoint("ACME", &access) else {
            panic!("a refused connection is unavailable");
        };
        assert!(
            message.starts_with("ACME at backup.plugin.acme.url is unreachable"),
            "{message}"
        );
        let denied = HttpError::Denied {
            authority: "other:1".into(),
        };
        assert!(matches!(
            denied.naming_endpoint("ACME", &access),
            ProviderError::InvalidConfig(_)
        ));
    }

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let target = Target::parse("https://Veeam.example:9419/api/v1/jobs?limit=10#frag").unwrap();
        assert!(matches!(target.scheme, Scheme::Https));
        assert_eq!(target.authority, "veeam.example:9419");
        assert_eq!(target.path_with_query, "/api/v1/jobs?limit=10");

        let bare = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(bare.authority, "127.0.0.1:8080");
        assert_eq!(bare.path_with_query, "/");

        let query_only = Target::parse("http://h?x=1").unwrap();
        assert_eq!(query_only.path_with_query, "/?x=1");
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for url in [
            "veeam.example/api",
            "ftp://h/x",
            "http:///x",
            "http://u:p@h/x",
            "http://a b/",
        ] {
            assert!(
                matches!(Target::parse(url), Err(HttpError::InvalidUrl(_))),
                "{url} should be rejected"
            );
        }
    }

    #[test]
    fn error_codes_map_to_typed_errors_and_provider_errors() {
        let target = Target::parse("http://127.0.0.1:9/").unwrap();
        let denied = target.error(ErrorCode::HttpRequestDenied);
        assert_eq!(
            denied,
            HttpError::Denied {
                authority: "127.0.0.1:9".into()
            }
        );
        assert!(matches!(
            ProviderError::from(denied),
            ProviderError::InvalidConfig(_)
        ));

        let refused = target.error(ErrorCode::ConnectionRefused);
        assert_eq!(
            refused.to_string(),
            "cannot connect to `127.0.0.1:9`: connection refused"
        );
        assert!(matches!(
            ProviderError::from(refused),
            ProviderError::Unavailable(_)
        ));

        let timeout = target.error(ErrorCode::ConnectionReadTimeout);
        assert!(matches!(timeout, HttpError::Timeout { .. }));
    }

    #[test]
    fn statuses_map_to_provider_errors() {
        let response = |status| Response {
            status,
            headers: vec![],
            body: b"nope".to_vec(),
        };
        assert!(response(204).error_for_status().is_ok());
        let cases = [
            (401, "unauthorized"),
            (404, "not-found"),
            (409, "rejected"),
            (429, "unavailable"),
            (503, "unavailable"),
        ];
        for (status, expected) in cases {
            let error = ProviderError::from(response(status).error_for_status().unwrap_err());
            let kind = match &error {
                ProviderError::Unauthorized(_) => "unauthorized",
                ProviderError::NotFound(_) => "not-found",
                ProviderError::Rejected(_) => "rejected",
                ProviderError::Unavailable(_) => "unavailable",
                _ => "other",
            };
            assert_eq!(kind, expected, "status {status} gave {error:?}");
            assert!(error.message().contains("nope"));
        }
    }
}
