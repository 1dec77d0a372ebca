//! NetWorker retention periods. Timestamps are the SDK's (`bnr_sdk::time`): read with their
//! offset, written in UTC with an explicit `+00:00`, so bnr, the NetWorker server and the KVM
//! hosts need not share a time zone.

pub use bnr_sdk::time::{format_utc, parse_rfc3339 as parse};

/// A policy's protection period as NetWorker writes it (`1 Days`, `7 Days`, `1 Months`,
/// `2 Weeks`, `1 Years`, singular or plural): checked, and returned in the form `save -e`
/// takes. `None` for anything else.
pub fn retention(period: &str) -> Option<String> {
    let mut words = period.split_whitespace();
    let count: u32 = words
        .next()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()?;
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
            "+1 Days",
        ] {
            assert_eq!(retention(bad), None, "{bad}");
        }
    }
}
