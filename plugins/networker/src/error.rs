//! The provider's error kinds; they map one to one onto the WIT `provider-error` cases.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    NotFound(String),
    InvalidConfig(String),
    Unauthorized(String),
    Unavailable(String),
    Rejected(String),
    Unsupported(String),
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, text) = match self {
            Error::NotFound(t) => ("not found", t),
            Error::InvalidConfig(t) => ("invalid configuration", t),
            Error::Unauthorized(t) => ("unauthorized", t),
            Error::Unavailable(t) => ("unavailable", t),
            Error::Rejected(t) => ("rejected", t),
            Error::Unsupported(t) => ("unsupported", t),
            Error::Internal(t) => ("internal", t),
        };
        write!(f, "{kind}: {text}")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
