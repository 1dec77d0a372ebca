//! The provider's error kinds: the SDK's, which map one to one onto the WIT `provider-error`
//! cases and convert with `?`.

pub use bnr_sdk::errors::{Error, Result};
