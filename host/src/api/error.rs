//! The one API error type and its mapping from lower layers' errors.

use axum::response::{IntoResponse, Response};

use crate::store::{OpError, StoreError};

/// CloudStack `ApiErrorCode` values used here (HTTP status = error code).
pub mod code {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const MALFORMED_PARAMETER: u16 = 430;
    pub const PARAM_ERROR: u16 = 431;
    pub const UNSUPPORTED_ACTION: u16 = 432;
    pub const INTERNAL_ERROR: u16 = 530;
    pub const ACCOUNT_ERROR: u16 = 531;
    pub const RESOURCE_UNAVAILABLE: u16 = 534;
    pub const RESOURCE_IN_USE: u16 = 536;
}

/// CloudStack's internal exception codes (`cserrorcode`); clients ignore them but expect an int.
pub mod cs_code {
    pub const SERVER_API_EXCEPTION: i64 = 9999;
    pub const CLOUD_RUNTIME_EXCEPTION: i64 = 4250;
    pub const PERMISSION_DENIED_EXCEPTION: i64 = 4365;
    pub const INVALID_PARAMETER_VALUE_EXCEPTION: i64 = 4350;
}

pub const CREDENTIALS_TEXT: &str = "unable to verify user credentials and/or request signature";

/// An API error: HTTP status and `errorcode` are `code`; `cs_code` is `cserrorcode` (omitted when
/// `None`, as for a failed signature check); `text` is `errortext` and the `X-Description` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct ApiError {
    pub code: u16,
    pub cs_code: Option<i64>,
    pub text: String,
}

impl ApiError {
    pub fn new(code: u16, cs_code: Option<i64>, text: impl Into<String>) -> Self {
        ApiError {
            code,
            cs_code,
            text: text.into(),
        }
    }

    /// 401 for bad/missing credentials, signature or expiry.
    pub fn credentials() -> Self {
        Self::new(code::UNAUTHORIZED, None, CREDENTIALS_TEXT)
    }

    /// 401 when the caller's role may not run `command`.
    pub fn not_available(command: &str) -> Self {
        Self::new(
            code::UNAUTHORIZED,
            Some(cs_code::SERVER_API_EXCEPTION),
            format!(
                "The given command '{command}' either does not exist, is not available for user."
            ),
        )
    }

    /// 431 with a free text.
    pub fn param(text: impl Into<String>) -> Self {
        Self::new(
            code::PARAM_ERROR,
            Some(cs_code::INVALID_PARAMETER_VALUE_EXCEPTION),
            text,
        )
    }

    /// 431 `Unable to execute API command <cmd> due to missing parameter <name>`.
    pub fn missing_param(command: &str, name: &str) -> Self {
        Self::new(
            code::PARAM_ERROR,
            Some(cs_code::SERVER_API_EXCEPTION),
            format!(
                "Unable to execute API command {} due to missing parameter {name}",
                command.to_lowercase()
            ),
        )
    }

    /// 431 with CloudStack's canonical "invalid value … entity does not exist" text.
    pub fn invalid_value(command: &str, name: &str, value: &str) -> Self {
        Self::new(
            code::PARAM_ERROR,
            Some(cs_code::SERVER_API_EXCEPTION),
            format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter {name} value={value} \
                 due to incorrect long value format, or entity does not exist or due to incorrect parameter \
                 annotation for the field in api cmd class.",
                command.to_lowercase()
            ),
        )
    }

    /// 530 with the operation's message (CloudStack's usual for business-rule failures).
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(
            code::INTERNAL_ERROR,
            Some(cs_code::CLOUD_RUNTIME_EXCEPTION),
            text,
        )
    }

    /// 531 permission problem.
    pub fn permission(text: impl Into<String>) -> Self {
        Self::new(
            code::ACCOUNT_ERROR,
            Some(cs_code::PERMISSION_DENIED_EXCEPTION),
            text,
        )
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::InvalidParameter(t) => ApiError::param(t),
            OpError::InvalidState(t) => ApiError::internal(t),
            OpError::PermissionDenied(t) => ApiError::permission(t),
            OpError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // Details go to the log, not to the client.
        tracing::error!(error = %e, "store failure");
        ApiError::internal(
            "Internal error executing command, please contact your system administrator",
        )
    }
}

impl From<crate::store::db::Error> for ApiError {
    fn from(e: crate::store::db::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// Without request context an error renders as JSON under `errorresponse`; the request pipeline
/// renders with the command's response name and requested format via the same function.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::render::error_response(&self, "errorresponse", super::render::Format::Json)
    }
}
