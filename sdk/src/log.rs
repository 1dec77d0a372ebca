//! Logging through the host (`host.log`), tagged by the host with the provider and zone.
//!
//! Use the macros, which take `format!` arguments:
//!
//! ```no_run
//! # let (job, instance_name, err) = (7, "web-1", "timeout");
//! bnr_sdk::log::info!("backup {job} of {instance_name} started");
//! bnr_sdk::warn!("retrying after {err}"); // also exported at the crate root
//! ```
//!
//! Never log secrets. Do not log from `describe` (it must not call the host).

pub use crate::types::LogLevel;
pub use crate::{debug, error, info, trace, warn};

use crate::bindings::bnr::provider::host;

/// The longest message sent to the host, in bytes; longer ones are cut (on a character boundary)
/// so a runaway message cannot flood the host log. The host keeps at most 4 KiB of a message
/// (`docs/runtime.md`), so this is the same bound.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// Send `message` to the host log at `level`.
pub fn write(level: LogLevel, message: &str) {
    if message.len() <= MAX_MESSAGE_BYTES {
        host::log(level, message);
    } else {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        host::log(level, &format!("{}… (truncated)", &message[..end]));
    }
}

/// Log at trace level: `trace!("{x}")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::write($crate::log::LogLevel::Trace, &::std::format!($($arg)+)) };
}

/// Log at debug level: `debug!("{x}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::write($crate::log::LogLevel::Debug, &::std::format!($($arg)+)) };
}

/// Log at info level: `info!("{x}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::write($crate::log::LogLevel::Info, &::std::format!($($arg)+)) };
}

/// Log at warn level: `warn!("{x}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::write($crate::log::LogLevel::Warn, &::std::format!($($arg)+)) };
}

/// Log at error level: `error!("{x}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::write($crate::log::LogLevel::Error, &::std::format!($($arg)+)) };
}
