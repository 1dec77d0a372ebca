//! An error type for a provider's own modules.
//!
//! [`ProviderError`] is the WIT type the host receives; its generated `Display` is the `Debug`
//! form. Protocol code that also runs natively (tested against a vendor simulator with
//! `cargo test`) uses [`Error`] instead: the same seven kinds, a readable `Display`
//! (`unauthorized: …`), and `?` converts it to [`ProviderError`] at the export boundary:
//!
//! ```no_run
//! use bnr_sdk::errors::{Error, Result};
//!
//! fn parse_job(text: &str) -> Result<u64> {
//!     text.parse()
//!         .map_err(|_| Error::Internal(format!("the vendor sent job id `{text}`")))
//! }
//!
//! fn poll(text: &str) -> bnr_sdk::Result<u64> {
//!     Ok(parse_job(text)?) // errors::Error → ProviderError
//! }
//! ```

use std::fmt;

use crate::ProviderError;
use crate::exec::ExecError;
use crate::http::HttpError;

/// What went wrong, in the kinds the host tells apart (one to one with [`ProviderError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The object (policy, backup, job, handle) does not exist at the vendor.
    NotFound(String),
    /// A setting is missing or wrong: name the setting.
    InvalidConfig(String),
    /// The vendor refused the credentials: name the settings that hold them.
    Unauthorized(String),
    /// The vendor cannot be reached or is busy; the host keeps polling pending operations.
    Unavailable(String),
    /// The vendor refused the request.
    Rejected(String),
    /// The operation is not supported by this provider or this vendor.
    Unsupported(String),
    /// Anything else: a bug, an answer that makes no sense.
    Internal(String),
}

impl Error {
    /// The message carried by any variant.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::InvalidConfig(m)
            | Error::Unauthorized(m)
            | Error::Unavailable(m)
            | Error::Rejected(m)
            | Error::Unsupported(m)
            | Error::Internal(m) => m,
        }
    }

    /// The kind as words: `not found`, `invalid configuration`, `unauthorized`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not found",
            Error::InvalidConfig(_) => "invalid configuration",
            Error::Unauthorized(_) => "unauthorized",
            Error::Unavailable(_) => "unavailable",
            Error::Rejected(_) => "rejected",
            Error::Unsupported(_) => "unsupported",
            Error::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl From<Error> for ProviderError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(m) => ProviderError::NotFound(m),
            Error::InvalidConfig(m) => ProviderError::InvalidConfig(m),
            Error::Unauthorized(m) => ProviderError::Unauthorized(m),
            Error::Unavailable(m) => ProviderError::Unavailable(m),
            Error::Rejected(m) => ProviderError::Rejected(m),
            Error::Unsupported(m) => ProviderError::Unsupported(m),
            Error::Internal(m) => ProviderError::Internal(m),
        }
    }
}

impl From<ProviderError> for Error {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::NotFound(m) => Error::NotFound(m),
            ProviderError::InvalidConfig(m) => Error::InvalidConfig(m),
            ProviderError::Unauthorized(m) => Error::Unauthorized(m),
            ProviderError::Unavailable(m) => Error::Unavailable(m),
            ProviderError::Rejected(m) => Error::Rejected(m),
            ProviderError::Unsupported(m) => Error::Unsupported(m),
            ProviderError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        ProviderError::from(error).into()
    }
}

impl From<ExecError> for Error {
    fn from(error: ExecError) -> Self {
        ProviderError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_round_trip_and_read_well() {
        let errors = [
            Error::NotFound("a".into()),
            Error::InvalidConfig("b".into()),
            Error::Unauthorized("c".into()),
            Error::Unavailable("d".into()),
            Error::Rejected("e".into()),
            Error::Unsupported("f".into()),
            Error::Internal("g".into()),
        ];
        for error in errors {
            let back = Error::from(ProviderError::from(error.clone()));
            assert_eq!(back, error);
        }
        assert_eq!(
            Error::Unauthorized("check backup.plugin.acme.key".into()).to_string(),
            "unauthorized: check backup.plugin.acme.key"
        );
    }

    #[test]
    fn http_failures_keep_their_kind() {
        let error = Error::from(HttpError::Status {
            status: 503,
            body: String::new(),
        });
        assert!(matches!(error, Error::Unavailable(_)), "{error}");
        let error = Error::from(HttpError::Denied {
            authority: "x:1".into(),
        });
        assert!(matches!(error, Error::InvalidConfig(_)), "{error}");
    }
}
