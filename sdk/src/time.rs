//! Clocks (`wasi:clocks`), and vendor timestamps to and from Unix seconds.
//!
//! Vendor APIs write instants as `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. They are read as
//! instants, never in the local zone of whoever runs the code: guessing a zone is what breaks
//! backup plugins across time zones. [`parse_rfc3339`] refuses a time without an offset;
//! [`parse_utc`] is for APIs documented to send UTC and sometimes leaving the `Z` out.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Block the calling provider for `duration` without using CPU (the host still bounds the call's
/// wall-clock time).
pub fn sleep(duration: std::time::Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wasip2::clocks::monotonic_clock::subscribe_duration(nanos).block();
}

/// `2022-07-12T05:02:03+03:00` (or with `Z`, a fraction, a space for `T`) to Unix seconds;
/// `None` for anything else, a time without an offset included.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    parse(text, false)
}

/// Like [`parse_rfc3339`], but a time without an offset is taken as UTC.
pub fn parse_utc(text: &str) -> Option<i64> {
    parse(text, true)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS+00:00`.
pub fn format_utc(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn parse(text: &str, missing_offset_is_utc: bool) -> Option<i64> {
    let text = text.trim();
    if text.len() < 19 || !text.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let mut parts = date.split('-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return None;
    }
    let (clock, mut zone) = rest.split_at(8);
    let mut fields = clock.split(':');
    let (hour, minute, second) = (
        number(fields.next()?)?,
        number(fields.next()?)?,
        number(fields.next()?)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    if let Some(fraction) = zone.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        zone = &fraction[digits..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        "" if missing_offset_is_utc => 0,
        "" => return None,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = zone[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            sign * (number(&hm[..2])? * 3600 + number(&hm[2..])? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_fractions_are_honoured() {
        assert_eq!(
            parse_rfc3339("2022-07-12T05:02:03+03:00"),
            Some(1_657_591_323)
        );
        assert_eq!(parse_rfc3339("2022-07-12T02:02:03Z"), Some(1_657_591_323));
        assert_eq!(
            parse_rfc3339("2022-07-11T21:02:03.5-05:00"),
            Some(1_657_591_323)
        );
        assert_eq!(
            parse_rfc3339("2023-11-03T16:26:12.209913Z"),
            Some(1_699_028_772)
        );
        assert_eq!(parse_rfc3339("2024-02-29 00:00:00Z"), Some(1_709_164_800));
    }

    #[test]
    fn a_missing_offset_is_refused_or_utc_as_asked() {
        assert_eq!(parse_rfc3339("2023-11-03T16:26:12"), None);
        assert_eq!(parse_utc("2023-11-03T16:26:12"), Some(1_699_028_772));
        assert_eq!(parse_utc("2023-11-03T18:26:12+02:00"), Some(1_699_028_772));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-03T16:26:12+2",
            "2023-11-03X16:26:12",
            "2023-11-03T16:26:1éZ",
            "2023-11-0éT16:26:12Z",
            "2023-11-03T16:26:12+1é1",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for epoch in [0, 1_657_591_323, 951_782_400, 4_102_444_799, -86_400] {
            assert_eq!(parse_rfc3339(&format_utc(epoch)), Some(epoch));
        }
        assert_eq!(format_utc(1_657_591_323), "2022-07-12T02:02:03+00:00");
    }
}
