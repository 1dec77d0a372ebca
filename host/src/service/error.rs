//! The one error type of the B&R service. The kinds follow the exceptions CloudStack's backup
//! manager raises, so the api layer can map each command's errors the way CloudStack's command
//! classes do (most wrap everything into 530; the offering admin commands keep 431).

use crate::store::{OpError, StoreError};
use bnr_runtime::CallError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A malformed parameter value (interval type, schedule, time zone, missing update fields):
    /// 431 from every command.
    #[error("{0}")]
    BadParameter(String),
    /// CloudStack's `InvalidParameterValueException` raised by the manager: 431 from the
    /// offering admin commands, wrapped into 530 by the others.
    #[error("{0}")]
    InvalidValue(String),
    /// A rule refused the operation (CloudStack's `CloudRuntimeException`): 530.
    #[error("{0}")]
    Refused(String),
    /// The caller may not act on the resource: 531 in general, wrapped into 530 by the B&R
    /// commands.
    #[error("{0}")]
    Denied(String),
    /// The provider failed or refused: 530 with the provider's message.
    #[error("{0}")]
    Provider(String),
    /// Infrastructure failure: 530 with a generic text (details are logged, not sent).
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type BackupResult<T> = Result<T, BackupError>;

impl BackupError {
    pub fn refused(text: impl Into<String>) -> Self {
        BackupError::Refused(text.into())
    }

    /// The same error, for answering from a borrowed one: every variant keeps its text; a store
    /// failure keeps its message (clients see a generic text for it either way).
    pub fn duplicate(&self) -> Self {
        match self {
            BackupError::BadParameter(t) => BackupError::BadParameter(t.clone()),
            BackupError::InvalidValue(t) => BackupError::InvalidValue(t.clone()),
            BackupError::Refused(t) => BackupError::Refused(t.clone()),
            BackupError::Denied(t) => BackupError::Denied(t.clone()),
            BackupError::Provider(t) => BackupError::Provider(t.clone()),
            BackupError::Store(e) => BackupError::Store(StoreError::Task(e.to_string())),
        }
    }

    /// `Backup provider <name> failed: <reason>` for a failed provider call.
    pub fn provider(provider: &str, err: &CallError) -> Self {
        BackupError::Provider(format!("Backup provider {provider} failed: {err}"))
    }
}

impl From<OpError> for BackupError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::InvalidParameter(t) => BackupError::InvalidValue(t),
            OpError::InvalidState(t) => BackupError::Refused(t),
            OpError::PermissionDenied(t) => BackupError::Denied(t),
            OpError::Store(e) => BackupError::Store(e),
        }
    }
}

impl From<crate::store::db::Error> for BackupError {
    fn from(e: crate::store::db::Error) -> Self {
        BackupError::Store(StoreError::Sql(e))
    }
}

/// Lets the inventory hook (which speaks `OpError`) report B&R refusals.
impl From<BackupError> for OpError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::BadParameter(t) | BackupError::InvalidValue(t) => {
                OpError::InvalidParameter(t)
            }
            BackupError::Refused(t) | BackupError::Provider(t) => OpError::InvalidState(t),
            BackupError::Denied(t) => OpError::PermissionDenied(t),
            BackupError::Store(e) => OpError::Store(e),
        }
    }
}
