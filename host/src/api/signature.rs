//! CloudStack request signatures (wire-protocol §1.2) and `expires` parsing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// `java.net.URLEncoder.encode(v, "UTF-8")` with `+` replaced by `%20`: bytes `A-Z a-z 0-9 . - * _`
/// stay, every other UTF-8 byte becomes `%XX` (upper-case hex).
pub fn java_url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    push_java_url_encoded(&mut out, value);
    out
}

/// Appends [`java_url_encode`]`(value)` to `out`.
fn push_java_url_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'_') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The string CloudStack signs: every parameter except `signature` (any case), sorted by raw
/// name (byte order), `name=enc(value)` joined by `&`, all lower-cased.
pub fn unsigned_string<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .collect();
    // Java String order compares UTF-16 code units; for names (ASCII in practice) byte order is
    // identical, and for non-ASCII names the difference cannot make a valid signature invalid
    // for a client that sorted the same way.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    // Built in one buffer: this runs on every signed request.
    let capacity = pairs.iter().map(|(k, v)| k.len() + v.len() * 3 + 2).sum();
    let mut out = String::with_capacity(capacity);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        push_java_url_encoded(&mut out, v);
    }
    if out.is_ascii() {
        out.make_ascii_lowercase();
        out
    } else {
        out.to_lowercase()
    }
}

/// base64(HMAC-SHA1(secret, unsigned)).
pub fn sign(secret: &str, unsigned: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for Hmac<Sha1>.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(unsigned.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs a parameter list the way clients do (for tests and tools).
pub fn sign_params<'a>(
    secret: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    sign(secret, &unsigned_string(params))
}

/// Constant-time check of `provided` against the signature of `params`. Also accepts the
/// variants produced by clients that leave `~` (cs, libcloud) or `[` `]` (libcloud) unescaped,
/// which real CloudStack rejects; accepting them weakens nothing (same secret, same content).
pub fn verify<'a>(
    secret: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    provided: &str,
) -> bool {
    let unsigned = unsigned_string(params);
    let eq = |candidate: &str| -> bool {
        sign(secret, candidate)
            .as_bytes()
            .ct_eq(provided.as_bytes())
            .into()
    };
    if eq(&unsigned) {
        return true;
    }
    let lenient = unsigned
        .replace("%7e", "~")
        .replace("%5b", "[")
        .replace("%5d", "]");
    if lenient != unsigned && eq(&lenient) {
        return true;
    }
    let tilde_only = unsigned.replace("%7e", "~");
    tilde_only != unsigned && tilde_only != lenient && eq(&tilde_only)
}

/// Parses `expires` in every form CloudStack accepts: `2024-05-01T10:20:30+0000`, `+00:00`,
/// `Z`, optional fractional seconds, and the legacy `…Z+0000`. Returns Unix seconds.
pub fn parse_expires(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s
        .strip_suffix("Z+0000")
        .map(|p| format!("{p}Z"))
        .unwrap_or_else(|| s.to_string());
    let bytes = s.as_bytes();
    if bytes.len() < 19 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let body = rest[1..].replace(':', "");
            if body.len() != 4 && body.len() != 2 {
                return None;
            }
            if !body.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i64 = body[0..2].parse().ok()?;
            let m: i64 = if body.len() == 4 {
                body[2..4].parse().ok()?
            } else {
                0
            };
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    if rest.is_empty() {
        // An offset is required: a bare local time is ambiguous.
        return None;
    }
    let ts = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        0,
    )
    .ok()?
    .to_zoned(jiff::tz::TimeZone::UTC)
    .ok()?
    .timestamp();
    Some(ts.as_second() - offset_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg";
    const SECRET: &str =
        "VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ";

    #[test]
    fn cloudstack_docs_worked_example() {
        let params = [
            ("command", "listUsers"),
            ("response", "json"),
            ("apikey", KEY),
        ];
        assert_eq!(
            unsigned_string(params),
            "apikey=plgwjfzk4gys3momtvmjuvg-x-jlwlnfauj9gabbbf9edm-kaymmailqzzq1elzlyq_u38zcm0bewzgudp66mg&command=listusers&response=json"
        );
        assert_eq!(sign_params(SECRET, params), "TTpdDq/7j/J58XCRHomKoQXEQds=");
        assert!(verify(SECRET, params, "TTpdDq/7j/J58XCRHomKoQXEQds="));
        assert!(!verify(SECRET, params, "TTpdDq/7j/J58XCRHomKoQXEQds"));
    }

    #[test]
    fn java_encoding_escapes_everything_but_the_safe_set() {
        assert_eq!(java_url_encode("a b+c~*._-"), "a%20b%2Bc%7E*._-");
        assert_eq!(java_url_encode("é"), "%C3%A9");
        assert_eq!(java_url_encode("maxschedules[0]"), "maxschedules%5B0%5D");
    }

    #[test]
    fn signature_param_is_excluded_in_any_case() {
        let a = unsigned_string([("command", "x"), ("Signature", "zzz")]);
        assert_eq!(a, "command=x");
    }

    #[test]
    fn expires_accepts_every_documented_form() {
        let want = 1_714_558_830;
        for s in [
            "2024-05-01T10:20:30+0000",
            "2024-05-01T10:20:30+00:00",
            "2024-05-01T10:20:30Z",
            "2024-05-01T10:20:30.123Z",
            "2024-05-01T10:20:30.5+0000",
            "2024-05-01T10:20:30Z+0000",
            "2024-05-01T12:20:30+0200",
        ] {
            assert_eq!(parse_expires(s), Some(want), "{s}");
        }
        for s in [
            "",
            "2024-05-01",
            "2024-13-01T10:20:30Z",
            "2024-05-01T10:20:30",
            "x024-05-01T10:20:30Z",
            "2024-05-01T10:20:30+99",
        ] {
            assert_eq!(parse_expires(s), None, "{s}");
        }
    }
}
