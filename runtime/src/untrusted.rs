//! The boundary for everything a provider hands back: text and numbers from the sandbox are
//! untrusted input.
//!
//! - **Text** (error messages, panic text, stderr, `host.log` messages, progress messages,
//!   policy descriptions) goes through [`sanitize`]: the zone's secret setting values are
//!   redacted in every common form (raw, URL-encoded, base64), control characters (newlines,
//!   ESC, bidi overrides …) are replaced so a provider cannot forge log lines or break a
//!   header, and the length is bounded. Every path from a provider to the store, an event, a
//!   job result, an HTTP header or a log line passes here first, because the runtime applies
//!   it before a value or an error leaves [`super::Session`].
//! - **Identifiers** (external ids, handles, paths, policy ids) cannot be cut or rewritten
//!   without corrupting them: one that is too long or contains control characters fails the
//!   call ([`super::CallError::InvalidResult`]).
//! - **Numbers**: sizes must be at most [`MAX_REPORTED_BYTES`], times at most
//!   [`MAX_REPORTED_CLOCK_SKEW`] in the future, percentages at most 100; anything else fails
//!   that one call with a clear reason instead of reaching the store.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::limits::{
    MAX_REPORTED_BYTES, MAX_REPORTED_CLOCK_SKEW, PROVIDER_ID_MAX_BYTES, PROVIDER_TEXT_MAX_BYTES,
};
use super::types::{
    BackupTaken, Metric, OperationResult, Policy, PollStatus, Progress, ProviderError,
    ProviderInfo, RestorePoint, Started, StorageStats, VolumeRestored,
};

/// What replaces a redacted secret.
pub const REDACTED: &str = "***";

/// Secret values shorter than this are not redacted (they would mangle ordinary words).
pub const MIN_REDACTED_SECRET_LEN: usize = 4;

/// Redacts `secrets` (raw, URL-encoded, base64), replaces control characters and cuts the
/// result to at most `max` bytes (plus a closing `…`) on a character boundary.
pub fn sanitize(text: &str, max: usize, secrets: &[String]) -> String {
    let forms = secret_forms(secrets);
    // Redacting a 15 MiB message costs time for nothing: cut first, keeping enough slack
    // that a secret straddling the cut is still recognised whole.
    let slack = forms.iter().map(String::len).max().unwrap_or(0);
    let mut text = cut(text, max.saturating_add(slack)).to_owned();
    for form in &forms {
        if text.contains(form.as_str()) {
            text = text.replace(form.as_str(), REDACTED);
        }
    }
    let mut clean = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        if clean.len() + c.len_utf8() > max {
            clean.push('…');
            return clean;
        }
        clean.push(replacement(c));
    }
    clean
}

/// Every form in which a secret may show up in a provider's text, longest first (so a
/// longer encoding is replaced before a shorter one that is part of it).
fn secret_forms(secrets: &[String]) -> Vec<String> {
    let mut forms = Vec::new();
    for secret in secrets
        .iter()
        .filter(|s| s.len() >= MIN_REDACTED_SECRET_LEN)
    {
        let bytes = secret.as_bytes();
        forms.push(secret.clone());
        let form: String = form_urlencoded::byte_serialize(bytes).collect();
        forms.push(form.clone());
        forms.push(form.replace('+', "%20"));
        forms.push(percent_lower(&form));
        // base64 of the secret alone, and the part of it that is the same whatever bytes
        // precede it inside a longer encoded string (`Basic base64(user:password)`).
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            for encoded in [
                STANDARD_NO_PAD.encode(&shifted),
                URL_SAFE_NO_PAD.encode(&shifted),
            ] {
                let start = (8 * offset).div_ceil(6);
                let end = 8 * (offset + bytes.len()) / 6;
                if end > start && end - start >= MIN_REDACTED_SECRET_LEN {
                    forms.push(encoded[start..end].to_owned());
                }
            }
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

/// `%2F` → `%2f` (clients differ in the case of percent escapes).
fn percent_lower(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Control and format characters that could forge a log line, break a header or reorder
/// what a reader sees: whitespace ones become a space, the others U+FFFD.
fn replacement(c: char) -> char {
    match c {
        '\n' | '\r' | '\t' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => ' ',
        c if c.is_control() => '\u{fffd}',
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
        '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
        c => c,
    }
}

/// The first `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the boundary needs to know about the call: the secrets to redact and the time.
#[derive(Debug, Clone)]
pub(crate) struct Boundary<'a> {
    pub secrets: &'a [String],
    /// Unix seconds when the call returned.
    pub now: u64,
}

impl Boundary<'_> {
    /// Provider text in the form it may be stored, logged and shown.
    pub(crate) fn text(&self, text: &str) -> String {
        sanitize(text, PROVIDER_TEXT_MAX_BYTES, self.secrets)
    }

    fn clean(&self, text: &mut String) {
        let needs_work = text.len() > PROVIDER_TEXT_MAX_BYTES
            || text.chars().any(|c| replacement(c) != c)
            || !self.secrets.is_empty();
        if needs_work {
            *text = self.text(text);
        }
    }

    fn id(&self, what: &str, id: &str) -> Result<(), String> {
        if id.len() > PROVIDER_ID_MAX_BYTES {
            return Err(format!(
                "{what} is {} bytes long; at most {PROVIDER_ID_MAX_BYTES} are allowed",
                id.len()
            ));
        }
        if id.chars().any(|c| replacement(c) != c) {
            return Err(format!("{what} contains control characters"));
        }
        Ok(())
    }

    fn size(&self, what: &str, bytes: u64) -> Result<(), String> {
        if bytes > MAX_REPORTED_BYTES {
            return Err(format!(
                "{what} {bytes} is larger than the largest size bnr accepts \
                 ({MAX_REPORTED_BYTES} bytes)"
            ));
        }
        Ok(())
    }

    fn time(&self, what: &str, unix_seconds: u64) -> Result<(), String> {
        let latest = self.now.saturating_add(MAX_REPORTED_CLOCK_SKEW.as_secs());
        if unix_seconds > latest {
            return Err(format!(
                "{what} {unix_seconds} (Unix seconds) lies more than {} hours in the future",
                MAX_REPORTED_CLOCK_SKEW.as_secs() / 3600
            ));
        }
        Ok(())
    }
}

/// A value returned by a provider, checked and cleaned at the boundary. `Err` is the reason
/// the value cannot be accepted (the call then fails with `CallError::InvalidResult`).
pub(crate) trait Untrusted {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String>;
}

macro_rules! trusted_as_is {
    ($($ty:ty),* $(,)?) => {$(
        impl Untrusted for $ty {
            fn admit(&mut self, _: &Boundary) -> Result<(), String> {
                Ok(())
            }
        }
    )*};
}

// `describe()` answers are checked by `inspect::check_info` at load, which refuses rather
// than cleans them.
trusted_as_is!((), bool, ProviderInfo);

impl<T: Untrusted> Untrusted for Vec<T> {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        self.iter_mut().try_for_each(|item| item.admit(boundary))
    }
}

impl Untrusted for Option<String> {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            Some(reference) => boundary.id("the provider reference", reference),
            None => Ok(()),
        }
    }
}

impl<T: Untrusted> Untrusted for Result<T, ProviderError> {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            Ok(value) => value.admit(boundary),
            Err(error) => error.admit(boundary),
        }
    }
}

impl Untrusted for ProviderError {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            ProviderError::NotFound(m)
            | ProviderError::InvalidConfig(m)
            | ProviderError::Unauthorized(m)
            | ProviderError::Unavailable(m)
            | ProviderError::Rejected(m)
            | ProviderError::Unsupported(m)
            | ProviderError::Internal(m) => boundary.clean(m),
        }
        Ok(())
    }
}

impl Untrusted for Policy {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.id("a policy id", &self.external_id)?;
        boundary.id("a policy name", &self.name)?;
        boundary.clean(&mut self.description);
        Ok(())
    }
}

impl Untrusted for BackupTaken {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.id("the backup's external id", &self.external_id)?;
        boundary.id("the backup kind", &self.kind)?;
        boundary.size("the backup size", self.size)?;
        boundary.size("the backup's protected size", self.protected_size)?;
        if let Some(created) = self.created {
            boundary.time("the backup's creation time", created)?;
        }
        Ok(())
    }
}

impl Untrusted for VolumeRestored {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.id("the restored volume's path", &self.path)?;
        boundary.size("the restored volume's size", self.size)
    }
}

impl Untrusted for OperationResult {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            OperationResult::BackupTaken(taken) => taken.admit(boundary),
            OperationResult::VolumeRestored(restored) => restored.admit(boundary),
            OperationResult::Restored | OperationResult::Deleted => Ok(()),
        }
    }
}

impl Untrusted for Started {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            Started::Done(result) => result.admit(boundary),
            Started::Pending(handle) => boundary.id("the operation handle", handle),
        }
    }
}

impl Untrusted for Progress {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        if self.percent > 100 {
            return Err(format!("the progress {}% is more than 100%", self.percent));
        }
        boundary.clean(&mut self.message);
        Ok(())
    }
}

impl Untrusted for PollStatus {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        match self {
            PollStatus::Running(progress) => progress.admit(boundary),
            PollStatus::Finished(result) => result.admit(boundary),
            PollStatus::Failed(error) => error.admit(boundary),
        }
    }
}

impl Untrusted for RestorePoint {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.id("a restore point id", &self.id)?;
        boundary.id("a restore point kind", &self.kind)?;
        boundary.size("a restore point size", self.size)?;
        boundary.size("a restore point's protected size", self.protected_size)?;
        boundary.time("a restore point's creation time", self.created)
    }
}

impl Untrusted for Metric {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.id("a metric's instance uuid", &self.instance_uuid)?;
        boundary.size("a metric size", self.size)?;
        boundary.size("a metric's protected size", self.protected_size)
    }
}

impl Untrusted for StorageStats {
    fn admit(&mut self, boundary: &Boundary) -> Result<(), String> {
        boundary.size("the used storage", self.used_bytes)?;
        boundary.size("the total storage", self.total_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<String> {
        vec!["hunter2/secret+key".to_owned()]
    }

    #[test]
    fn secrets_are_redacted_raw_url_encoded_and_base64() {
        let secret = "hunter2/secret+key";
        let url: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let basic = STANDARD_NO_PAD.encode(format!("admin:{secret}"));
        let alone = base64::engine::general_purpose::STANDARD.encode(secret);
        for leak in [
            format!("login failed for {secret}"),
            format!("GET /api?password={url}"),
            format!("GET /api?password={}", percent_lower(&url)),
            format!("Authorization: Basic {basic}"),
            format!("token {alone}"),
        ] {
            let clean = sanitize(&leak, 4096, &secrets());
            assert!(clean.contains(REDACTED), "{leak} -> {clean}");
            assert!(!clean.contains(secret), "{clean}");
            assert!(!clean.contains(&url), "{clean}");
            assert!(!clean.contains(&alone[..alone.len() - 4]), "{clean}");
            assert!(!clean.contains(&basic[8..]), "{clean}");
        }
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR bnr: admin logged in\r\x1b[2J\u{2028}\u{202e}";
        let clean = sanitize(forged, 4096, &[]);
        assert!(!clean.chars().any(|c| c.is_control()), "{clean:?}");
        assert!(!clean.contains('\u{2028}') && !clean.contains('\u{202e}'));
        assert!(clean.starts_with("ok 2026-01-01"), "{clean:?}");
    }

    #[test]
    fn text_is_bounded_on_a_character_boundary() {
        let huge = "é".repeat(8 << 20);
        let clean = sanitize(&huge, 1000, &secrets());
        assert!(clean.len() <= 1000 + '…'.len_utf8());
        assert!(clean.ends_with('…'));
        let short = sanitize("fine", 1000, &[]);
        assert_eq!(short, "fine");
    }

    #[test]
    fn a_secret_straddling_the_cut_is_not_leaked_in_part() {
        let secret = "hunter2/secret+key";
        let text = format!("{}{secret}", "x".repeat(95));
        let clean = sanitize(&text, 100, &secrets());
        assert!(!clean.contains("hunter"), "{clean}");
    }

    fn boundary(secrets: &[String]) -> Boundary<'_> {
        Boundary {
            secrets,
            now: 1_800_000_000,
        }
    }

    #[test]
    fn absurd_numbers_fail_the_value_with_a_reason() {
        let secrets = secrets();
        let b = boundary(&secrets);
        let mut taken = Started::Done(OperationResult::BackupTaken(BackupTaken {
            external_id: "b-1".into(),
            kind: "FULL".into(),
            size: u64::MAX,
            protected_size: 1,
            created: None,
        }));
        let err = taken.admit(&b).unwrap_err();
        assert!(
            err.contains("the backup size 18446744073709551615"),
            "{err}"
        );

        let mut point = RestorePoint {
            id: "rp".into(),
            created: 1_800_000_000 + 10 * 86_400,
            kind: "FULL".into(),
            size: 10,
            protected_size: 10,
        };
        assert!(point.admit(&b).unwrap_err().contains("in the future"));
        point.created = 1_799_000_000;
        assert!(point.admit(&b).is_ok());
        point.size = MAX_REPORTED_BYTES + 1;
        assert!(point.admit(&b).is_err());

        let mut stats = StorageStats {
            used_bytes: MAX_REPORTED_BYTES,
            total_bytes: MAX_REPORTED_BYTES,
        };
        assert!(stats.admit(&b).is_ok());
        let mut progress = PollStatus::Running(Progress {
            percent: 101,
            message: String::new(),
        });
        assert!(progress.admit(&b).is_err());
    }

    #[test]
    fn ids_are_refused_rather_than_cut_and_messages_are_cleaned() {
        let secrets = secrets();
        let b = boundary(&secrets);
        let mut pending = Started::Pending("h\n1".into());
        assert!(
            pending
                .admit(&b)
                .unwrap_err()
                .contains("control characters")
        );
        let mut pending = Started::Pending("h".repeat(PROVIDER_ID_MAX_BYTES + 1));
        assert!(pending.admit(&b).is_err());

        let mut failed: Result<(), ProviderError> = Err(ProviderError::Internal(format!(
            "boom\x1b[31m hunter2/secret+key {}",
            "z".repeat(1 << 20)
        )));
        failed.admit(&b).unwrap();
        let Err(ProviderError::Internal(message)) = failed else {
            unreachable!()
        };
        assert!(message.len() <= PROVIDER_TEXT_MAX_BYTES + '…'.len_utf8());
        assert!(message.starts_with("boom\u{fffd}[31m *** z"), "{message}");
    }
}
