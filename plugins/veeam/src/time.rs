//! Enterprise Manager timestamps to Unix seconds.
//!
//! `CreationTimeUTC` is UTC (`2023-11-03T16:26:12.209913Z`); an explicit offset is honoured and a
//! value without any zone is taken as UTC, never as the local zone.

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

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (a space instead of `T` too).
pub fn parse_utc(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.len() < 19 {
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
    let (clock, mut zone) = rest.split_at(8.min(rest.len()));
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
        "" | "Z" | "z" => 0,
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
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn utc_with_microseconds() {
        assert_eq!(
            parse_utc("2023-11-03T16:26:12.209913Z"),
            Some(1_699_028_772)
        );
    }

    #[test]
    fn an_offset_is_honoured_and_no_zone_means_utc() {
        assert_eq!(parse_utc("2023-11-03T18:26:12+02:00"), Some(1_699_028_772));
        assert_eq!(parse_utc("2023-11-03T16:26:12"), Some(1_699_028_772));
        assert_eq!(parse_utc("2024-02-29 00:00:00Z"), Some(1_709_164_800));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-03T16:26:12+2",
            "2023-11-03X16:26:12",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
