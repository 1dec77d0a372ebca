//! NetWorker timestamps and retention periods.
//!
//! NetWorker renders times with their offset (`2022-07-12T05:02:03+03:00`); they are read as
//! instants, never in a local zone. Queries are written in UTC with an explicit `+00:00`, so
//! bnr, the NetWorker server and the KVM hosts need not share a time zone.

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

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to Unix seconds. A time without an offset
/// is refused: NetWorker always sends one, and guessing a zone is what broke CloudStack's
/// plugin across time zones.
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() < 20 {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let mut parts = date.split('-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    let rest = rest.strip_prefix(['T', ' '])?;
    if rest.len() < 8 {
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
        "" => return None,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = zone[1..].replace(':', "");
            if hm.len() != 4 {
                return None;
            }
            sign * (number(&hm[..2])? * 3600 + number(&hm[2..])? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
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

/// A policy's protection period as NetWorker writes it (`1 Days`, `7 Days`, `1 Months`,
/// `2 Weeks`, `1 Years`, singular or plural): checked, and returned in the form `save -e`
/// takes. `None` for anything else.
pub fn retention(period: &str) -> Option<String> {
    let mut words = period.split_whitespace();
    let count = number(words.next()?)?;
    let unit = words.next()?.to_ascii_lowercase();
    if words.next().is_some() || !(1..=100_000).contains(&count) {
        return None;
    }
    let unit = match unit.trim_end_matches('s') {
        "day" => "Days",
        "week" => "Weeks",
        "month" => "Months",
        "year" => "Years",
        _ => return None,
    };
    Some(format!("{count} {unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_honoured() {
        assert_eq!(parse("2022-07-12T05:02:03+03:00"), Some(1_657_591_323));
        assert_eq!(parse("2022-07-12T02:02:03Z"), Some(1_657_591_323));
        assert_eq!(parse("2022-07-11T21:02:03.5-05:00"), Some(1_657_591_323));
    }

    #[test]
    fn a_time_without_offset_or_malformed_is_refused() {
        for bad in [
            "",
            "2022-07-12T05:02:03",
            "2022-13-12T05:02:03Z",
            "yesterday",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for epoch in [0, 1_657_591_323, 951_782_400, 4_102_444_799] {
            assert_eq!(parse(&format_utc(epoch)), Some(epoch));
        }
        assert_eq!(format_utc(1_657_591_323), "2022-07-12T02:02:03+00:00");
    }

    #[test]
    fn retention_periods_are_normalised_or_refused() {
        assert_eq!(retention("1 Days").as_deref(), Some("1 Days"));
        assert_eq!(retention("1 day").as_deref(), Some("1 Days"));
        assert_eq!(retention("1 Months").as_deref(), Some("1 Months"));
        for bad in [
            "",
            "Days",
            "0 Days",
            "1 Fortnight",
            "1 Days; rm -rf /",
            "-1 Days",
        ] {
            assert_eq!(retention(bad), None, "{bad}");
        }
    }
}
