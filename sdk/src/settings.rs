//! Typed access to the zone's settings (`host.setting`).
//!
//! Only settings the provider declared in [`ProviderInfo::settings`](crate::ProviderInfo) are
//! visible; undeclared or unset ones read as `None`. Errors are
//! [`ProviderError::InvalidConfig`] naming the setting, never its value (it may be a secret).
//!
//! A `default_value` declared with [`SettingDecl::with_default`](crate::SettingDecl::with_default)
//! is what operators see and what the host reports for an unset setting; providers that must not
//! depend on it use [`parse_or`] or `get(..).unwrap_or(..)` with the same default.

use crate::bindings::bnr::provider::host;
use crate::{ProviderError, Result};
use core::fmt::Display;
use core::ops::RangeInclusive;
use core::str::FromStr;

/// The raw value of `name`, or `None` when it is unset (or not declared). Surrounding
/// whitespace is trimmed; a blank value counts as unset.
pub fn get(name: &str) -> Option<String> {
    let value = host::setting(name)?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == value.len() {
        Some(value)
    } else {
        Some(trimmed.to_owned())
    }
}

/// The value of `name`, or `default` when it is unset.
pub fn get_or(name: &str, default: &str) -> String {
    get(name).unwrap_or_else(|| default.to_owned())
}

/// The raw value of `name`, or [`ProviderError::InvalidConfig`] when it is unset.
pub fn require(name: &str) -> Result<String> {
    get(name).ok_or_else(|| ProviderError::InvalidConfig(format!("setting `{name}` is not set")))
}

/// The value of `name` parsed as `T`, `None` when unset, [`ProviderError::InvalidConfig`] when it
/// does not parse (`bool` accepts `true`/`false`, numbers the usual decimal forms).
pub fn parse<T: FromStr>(name: &str) -> Result<Option<T>> {
    get(name)
        .map(|value| {
            value.parse::<T>().map_err(|_| {
                ProviderError::InvalidConfig(format!(
                    "setting `{name}` is not a valid {}",
                    short_type_name::<T>()
                ))
            })
        })
        .transpose()
}

/// Like [`parse`], but an unset setting is an error too.
pub fn require_parsed<T: FromStr>(name: &str) -> Result<T> {
    parse(name)?.ok_or_else(|| ProviderError::InvalidConfig(format!("setting `{name}` is not set")))
}

/// Like [`parse`], with `default` for an unset setting.
pub fn parse_or<T: FromStr>(name: &str, default: T) -> Result<T> {
    Ok(parse(name)?.unwrap_or(default))
}

/// Like [`parse_or`], and the value must lie in `range` (a timeout, a count):
/// [`ProviderError::InvalidConfig`] naming the setting and the range otherwise.
pub fn parse_within<T: FromStr + PartialOrd + Display>(
    name: &str,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T> {
    let value = parse_or(name, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ProviderError::InvalidConfig(format!(
            "setting `{name}` must be between {} and {}, not {value}",
            range.start(),
            range.end()
        )))
    }
}

/// `u64` → "u64", `alloc::string::String` → "String": readable in error messages.
fn short_type_name<T>() -> &'static str {
    let full = core::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
