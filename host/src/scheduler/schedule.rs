//! Pure schedule math: parsing CloudStack backup-schedule strings and computing when a schedule
//! runs next, in the schedule's own time zone. No I/O, no clock: callers pass the instant to
//! compute from, so the tick loop and tests can use a fake clock.
//!
//! # Accepted input
//!
//! [`IntervalType`] is parsed case-insensitively from `HOURLY`, `DAILY`, `WEEKLY` or `MONTHLY`.
//!
//! | interval  | schedule   | fields                                                             |
//! |-----------|------------|--------------------------------------------------------------------|
//! | `HOURLY`  | `MM`       | minute 0–59                                                        |
//! | `DAILY`   | `MM:HH`    | minute 0–59, hour 0–23                                             |
//! | `WEEKLY`  | `MM:HH:D`  | minute, hour, day of week 1–7 where 1 = Sunday … 7 = Saturday      |
//! | `MONTHLY` | `MM:HH:DD` | minute, hour, day of month 1–28                                    |
//!
//! Each field is one or more ASCII digits (leading zeros allowed, so `5` and `05` are the same).
//! The time zone is an IANA name such as `Europe/Berlin`, `UTC` or a backward-compatible link such
//! as `US/Eastern`, looked up case-insensitively; the schedule keeps the name as spelled in the time
//! zone database ([`Schedule::time_zone_name`]). Names come from the database bundled into the
//! binary ([`time_zone_database`]), so every replica computes the same runs whatever the host's
//! `/usr/share/zoneinfo` holds.
//!
//! # When a schedule runs
//!
//! [`Schedule::next_run_after`] returns the first run strictly after the given instant.
//!
//! **Daily, weekly and monthly** schedules name a local wall-clock time (a *slot*) on certain local
//! dates. A slot runs at *the first instant at which the local wall clock reads the slot time or
//! later*. That single rule settles every time-zone transition:
//!
//! * A slot that falls in a skipped interval (spring forward: 02:30 in Europe/Berlin on the last
//!   Sunday of March) runs once, at the end of the gap (03:00 local, the transition instant). The
//!   same holds for Lord Howe's 30-minute gap and for whole skipped days (Pacific/Apia skipped
//!   2011-12-30: that day's slot runs at 2011-12-31 00:00 local, the next day's slot runs as usual).
//! * A slot that falls in a repeated interval (fall back: 02:30 in Europe/Berlin on the last Sunday
//!   of October) runs once, at its earlier occurrence; the repeated wall-clock time does not run
//!   again.
//!
//! **Hourly** schedules run at *every instant at which the local wall clock shows minute `MM`* (at
//! second 0). This honours the local minute in zones with non-whole-hour offsets (Asia/Kolkata
//! +05:30, Asia/Kathmandu +05:45), and it means consecutive runs are always exactly one real hour
//! apart wherever offsets change by whole hours, which covers every zone today except
//! Australia/Lord_Howe: in a skipped hour there is no run (no real hour was lost) and a repeated hour
//! runs twice (two real hours passed). So a local day has 23 runs on a spring-forward day and 25 on a
//! fall-back day, and any 24 real hours hold exactly 24 runs. Lord Howe shifts by 30 minutes, so the
//! one interval that spans its transition is 30 or 90 minutes long, depending on `MM`.
//!
//! # Differences from CloudStack (deliberate; each rejection becomes a 431 error upstream)
//!
//! * CloudStack ignores extra `:`-separated parts; bnr rejects any part count other than the one
//!   the interval needs.
//! * CloudStack accepts out-of-range fields (minute 75, hour 24, weekday 9) and silently rolls the
//!   calendar over; bnr rejects them and names the field and its valid range. Java's
//!   `Integer.parseInt` also accepts a leading `+` or `-`; bnr accepts digits only.
//! * CloudStack silently replaces an unknown time zone with `GMT`; bnr rejects it.
//! * CloudStack (via `java.util.Calendar`) resolves a slot inside a DST gap by shifting it forward
//!   by the gap length (02:30 → 03:30); bnr runs it at the end of the gap (03:00), the earliest real
//!   instant at or after the requested wall-clock time. Both run a repeated slot once, at the
//!   earlier occurrence.
//! * CloudStack also re-checks the result against its own wall clock ("before now → add a
//!   period"); here the caller passes the instant to compute from (for the scheduler: the later of
//!   the tick time and the previous due time), which keeps this module free of a clock.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, ToSpan};

/// Longest schedule string accepted. The longest meaningful one (`MM:HH:DD`) is 8 characters;
/// the limit leaves room for leading zeros while keeping error messages, which quote the input,
/// short.
pub const MAX_SCHEDULE_TEXT_LEN: usize = 32;

/// Longest time-zone name accepted. The longest IANA name is 32 characters
/// (`America/Argentina/ComodRivadavia`); anything much longer is not a time zone.
pub const MAX_TIME_ZONE_NAME_LEN: usize = 64;

/// Longest date string [`parse_cloudstack_date`] accepts: the longest legal form
/// (`yyyy-MM-ddTHH:mm:ss.nnnnnnnnnZ+00:00`) is 35 characters.
pub const MAX_DATE_TEXT_LEN: usize = 64;

/// How much of a rejected input an error message quotes, so that hostile input cannot blow up
/// logs or responses.
const MAX_QUOTED_INPUT_LEN: usize = 40;

/// How many candidate slots [`Schedule::next_run_after`] examines. Two suffice unless a zone
/// turns its clock back by a day or more (Pacific/Apia repeated a day in 1892); the bound only
/// exists so that the search provably terminates.
const MAX_SLOTS_EXAMINED: usize = 8;

/// How many time-zone transitions an hourly search steps over. At most a couple occur within any
/// hour; the bound only exists so that the search provably terminates.
const MAX_TRANSITIONS_CROSSED: usize = 64;

const SECONDS_PER_HOUR: i64 = 3600;

static TIME_ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// The time-zone database schedules are resolved against: the copy bundled into the binary, so
/// that results do not depend on the host's zoneinfo files.
pub fn time_zone_database() -> &'static TimeZoneDatabase {
    &TIME_ZONES
}

/// How often a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntervalType {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl IntervalType {
    /// All interval types, in CloudStack's ordinal order.
    pub const ALL: [IntervalType; 4] = [
        IntervalType::Hourly,
        IntervalType::Daily,
        IntervalType::Weekly,
        IntervalType::Monthly,
    ];

    /// The name CloudStack uses on the wire: `HOURLY`, `DAILY`, `WEEKLY` or `MONTHLY`.
    pub const fn as_str(self) -> &'static str {
        match self {
            IntervalType::Hourly => "HOURLY",
            IntervalType::Daily => "DAILY",
            IntervalType::Weekly => "WEEKLY",
            IntervalType::Monthly => "MONTHLY",
        }
    }

    /// CloudStack's stored ordinal (`backup_schedule.schedule_type`): HOURLY = 0 … MONTHLY = 3.
    pub const fn ordinal(self) -> u8 {
        match self {
            IntervalType::Hourly => 0,
            IntervalType::Daily => 1,
            IntervalType::Weekly => 2,
            IntervalType::Monthly => 3,
        }
    }

    /// The inverse of [`IntervalType::ordinal`].
    pub fn from_ordinal(ordinal: u8) -> Option<IntervalType> {
        IntervalType::ALL.get(usize::from(ordinal)).copied()
    }

    /// The schedule format this interval expects, as shown in error messages.
    pub const fn expected_format(self) -> &'static str {
        match self {
            IntervalType::Hourly => "MM (minute)",
            IntervalType::Daily => "MM:HH (minute:hour)",
            IntervalType::Weekly => "MM:HH:D (minute:hour:day of week)",
            IntervalType::Monthly => "MM:HH:DD (minute:hour:day of month)",
        }
    }
}

impl fmt::Display for IntervalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntervalType {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        IntervalType::ALL
            .into_iter()
            .find(|interval| interval.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| ScheduleError::UnknownIntervalType {
                given: quote_limited(text),
            })
    }
}

/// One numeric field of a schedule string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Minute,
    Hour,
    DayOfWeek,
    DayOfMonth,
}

impl Field {
    /// Inclusive range of accepted values.
    pub const fn range(self) -> (i8, i8) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfWeek => (1, 7),
            Field::DayOfMonth => (1, 28),
        }
    }

    /// The accepted range as shown in error messages.
    pub const fn range_description(self) -> &'static str {
        match self {
            Field::Minute => "0-59",
            Field::Hour => "0-23",
            Field::DayOfWeek => "1-7, where 1 = Sunday and 7 = Saturday",
            Field::DayOfMonth => "1-28",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfWeek => "day of week",
            Field::DayOfMonth => "day of month",
        })
    }
}

/// Why an interval type, schedule string or time zone was rejected. Every message names the
/// offending input and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid interval type {given}: expected one of HOURLY, DAILY, WEEKLY, MONTHLY")]
    UnknownIntervalType {
        /// The rejected input, quoted and shortened.
        given: String,
    },
    #[error(
        "invalid {interval} schedule: {len} characters is longer than the maximum of {max}",
        max = MAX_SCHEDULE_TEXT_LEN
    )]
    ScheduleTooLong { interval: IntervalType, len: usize },
    #[error(
        "invalid {interval} schedule {text:?}: expected {expected} but found {found} {parts}",
        expected = .interval.expected_format(),
        parts = if *.found == 1 { "part" } else { "parts" }
    )]
    WrongPartCount {
        interval: IntervalType,
        text: String,
        found: usize,
    },
    #[error(
        "invalid {interval} schedule {text:?}: the {field} is missing (expected {expected})",
        expected = .interval.expected_format()
    )]
    MissingField {
        interval: IntervalType,
        text: String,
        field: Field,
    },
    #[error("invalid {interval} schedule {text:?}: {field} {value:?} is not a number")]
    NotANumber {
        interval: IntervalType,
        text: String,
        field: Field,
        value: String,
    },
    #[error(
        "invalid {interval} schedule {text:?}: {field} {value} is out of range ({range})",
        range = .field.range_description()
    )]
    OutOfRange {
        interval: IntervalType,
        text: String,
        field: Field,
        value: String,
    },
    #[error(
        "unknown time zone {given}: expected an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
    )]
    UnknownTimeZone {
        /// The rejected input, quoted and shortened.
        given: String,
    },
}

/// When, within its period, a schedule runs. Values are validated: minutes 0–59, hours 0–23,
/// days of month 1–28.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Hourly { minute: i8 },
    Daily { time: Time },
    Weekly { time: Time, weekday: Weekday },
    Monthly { time: Time, day: i8 },
}

/// A validated backup schedule: interval, slot and time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    slot: Slot,
    text: String,
    time_zone: TimeZone,
    time_zone_name: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot
            && self.text == other.text
            && self.time_zone_name == other.time_zone_name
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Validates a schedule string for `interval` and resolves `time_zone` (see the module docs for
    /// the accepted formats).
    pub fn parse(
        interval: IntervalType,
        text: &str,
        time_zone: &str,
    ) -> Result<Schedule, ScheduleError> {
        let slot = parse_slot(interval, text)?;
        let (time_zone, time_zone_name) = resolve_time_zone(time_zone)?;
        Ok(Schedule {
            slot,
            text: text.to_owned(),
            time_zone,
            time_zone_name,
        })
    }

    pub fn interval(&self) -> IntervalType {
        match self.slot {
            Slot::Hourly { .. } => IntervalType::Hourly,
            Slot::Daily { .. } => IntervalType::Daily,
            Slot::Weekly { .. } => IntervalType::Weekly,
            Slot::Monthly { .. } => IntervalType::Monthly,
        }
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The schedule string exactly as given (CloudStack echoes it back unchanged).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    /// The time-zone name as spelled in the database (`america/new_york` → `America/New_York`).
    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// The first run strictly after `instant` (see the module docs for the rules).
    ///
    /// Saturates at [`Timestamp::MAX`] if no run exists before the end of the representable range
    /// (the year 9999); use [`Schedule::checked_next_run_after`] to tell that case apart.
    pub fn next_run_after(&self, instant: Timestamp) -> Timestamp {
        self.checked_next_run_after(instant)
            .unwrap_or(Timestamp::MAX)
    }

    /// The first run strictly after `instant`, or `None` if there is none before the end of the
    /// representable range.
    pub fn checked_next_run_after(&self, instant: Timestamp) -> Option<Timestamp> {
        let tz = &self.time_zone;
        match self.slot {
            Slot::Hourly { minute } => next_hourly_run(tz, minute, instant),
            Slot::Daily { time } => {
                let first = tz.to_datetime(instant).date();
                first_slot_after(tz, instant, time, first, 1.day())
            }
            Slot::Weekly { time, weekday } => {
                let today = tz.to_datetime(instant).date();
                let days_ahead = weekday.since(today.weekday());
                let first = today.checked_add(i64::from(days_ahead).days()).ok()?;
                first_slot_after(tz, instant, time, first, 1.week())
            }
            Slot::Monthly { time, day } => {
                let today = tz.to_datetime(instant).date();
                let first = Date::new(today.year(), today.month(), day).ok()?;
                first_slot_after(tz, instant, time, first, 1.month())
            }
        }
    }
}

fn parse_slot(interval: IntervalType, text: &str) -> Result<Slot, ScheduleError> {
    if text.len() > MAX_SCHEDULE_TEXT_LEN {
        return Err(ScheduleError::ScheduleTooLong {
            interval,
            len: text.len(),
        });
    }
    let field = |field: Field, value: &str| parse_field(interval, text, field, value);
    let time = |minute: i8, hour: i8| {
        // Both values were range-checked by `parse_field`, so this cannot fail; map it anyway
        // rather than unwrap.
        Time::new(hour, minute, 0, 0).map_err(|_| ScheduleError::OutOfRange {
            interval,
            text: text.to_owned(),
            field: Field::Hour,
            value: hour.to_string(),
        })
    };
    let parts: Vec<&str> = text.split(':').collect();
    match (interval, parts.as_slice()) {
        (IntervalType::Hourly, [minute]) => Ok(Slot::Hourly {
            minute: field(Field::Minute, minute)?,
        }),
        (IntervalType::Daily, [minute, hour]) => Ok(Slot::Daily {
            time: time(field(Field::Minute, minute)?, field(Field::Hour, hour)?)?,
        }),
        (IntervalType::Weekly, [minute, hour, day]) => {
            let time = time(field(Field::Minute, minute)?, field(Field::Hour, hour)?)?;
            let day = field(Field::DayOfWeek, day)?;
            let weekday =
                Weekday::from_sunday_one_offset(day).map_err(|_| ScheduleError::OutOfRange {
                    interval,
                    text: text.to_owned(),
                    field: Field::DayOfWeek,
                    value: day.to_string(),
                })?;
            Ok(Slot::Weekly { time, weekday })
        }
        (IntervalType::Monthly, [minute, hour, day]) => Ok(Slot::Monthly {
            time: time(field(Field::Minute, minute)?, field(Field::Hour, hour)?)?,
            day: field(Field::DayOfMonth, day)?,
        }),
        _ => Err(ScheduleError::WrongPartCount {
            interval,
            text: text.to_owned(),
            found: parts.len(),
        }),
    }
}

fn parse_field(
    interval: IntervalType,
    text: &str,
    field: Field,
    value: &str,
) -> Result<i8, ScheduleError> {
    if value.is_empty() {
        return Err(ScheduleError::MissingField {
            interval,
            text: text.to_owned(),
            field,
        });
    }
    if !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ScheduleError::NotANumber {
            interval,
            text: text.to_owned(),
            field,
            value: value.to_owned(),
        });
    }
    let out_of_range = || ScheduleError::OutOfRange {
        interval,
        text: text.to_owned(),
        field,
        value: value.to_owned(),
    };
    // Digits only, so the one parse failure left is overflow, which is out of range too.
    let number: i8 = value.parse().map_err(|_| out_of_range())?;
    let (min, max) = field.range();
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(out_of_range())
    }
}

fn resolve_time_zone(name: &str) -> Result<(TimeZone, String), ScheduleError> {
    let unknown = || ScheduleError::UnknownTimeZone {
        given: quote_limited(name),
    };
    if name.len() > MAX_TIME_ZONE_NAME_LEN {
        return Err(unknown());
    }
    let time_zone = time_zone_database().get(name).map_err(|_| unknown())?;
    // `Etc/Unknown` is jiff's marker for "no time zone", not a place; it has no name otherwise.
    match time_zone.iana_name() {
        Some(canonical) if !time_zone.is_unknown() => {
            let canonical = canonical.to_owned();
            Ok((time_zone, canonical))
        }
        _ => Err(unknown()),
    }
}

/// The first instant after `instant` at which the local wall clock shows `minute` (second 0).
///
/// Within a stretch of constant UTC offset those instants are the seconds `x` with
/// `(x + offset) mod 3600 == minute * 60`; the search walks from one stretch to the next.
fn next_hourly_run(tz: &TimeZone, minute: i8, instant: Timestamp) -> Option<Timestamp> {
    let target = i64::from(minute) * 60;
    // Candidates are whole seconds, so "strictly after `instant`" is "strictly after the whole
    // second at or before it".
    let mut from = instant.as_second() - i64::from(instant.subsec_nanosecond() < 0);
    let mut include_from = false;
    for _ in 0..MAX_TRANSITIONS_CROSSED {
        let from_timestamp = Timestamp::from_second(from).ok()?;
        let offset = i64::from(tz.to_offset(from_timestamp).seconds());
        let first = if include_from { from } else { from + 1 };
        let candidate = first + (target - (first + offset)).rem_euclid(SECONDS_PER_HOUR);
        match tz.following(from_timestamp).next() {
            // The offset changes at or before the candidate: continue from the transition, where
            // the new offset applies.
            Some(transition) if transition.timestamp().as_second() <= candidate => {
                from = transition.timestamp().as_second();
                include_from = true;
            }
            _ => return Timestamp::from_second(candidate).ok(),
        }
    }
    None
}

/// The first slot (`time` on `first`, `first + step`, `first + 2 * step`, …) that runs strictly
/// after `instant`. `first` must not be later than the local date of `instant`'s first possible
/// slot; slots run in date order because [`first_instant_at_or_after`] is monotonic.
fn first_slot_after(
    tz: &TimeZone,
    instant: Timestamp,
    time: Time,
    first: Date,
    step: jiff::Span,
) -> Option<Timestamp> {
    let mut date = first;
    for _ in 0..MAX_SLOTS_EXAMINED {
        let run = first_instant_at_or_after(tz, date.to_datetime(time))?;
        if run > instant {
            return Some(run);
        }
        date = date.checked_add(step).ok()?;
    }
    None
}

/// The first instant at which the wall clock of `tz` reads `local` or later: `local` itself when
/// it occurs once, its earlier occurrence when the clock repeats it, the end of the gap when the
/// clock skips it.
fn first_instant_at_or_after(tz: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset, `local` names an instant just before the gap opens;
            // the next transition after it is the instant the clock jumps past `local`.
            let before_gap = after.to_timestamp(local).ok()?;
            match tz.following(before_gap).next() {
                Some(transition) if transition.offset() == after => Some(transition.timestamp()),
                // Not reachable with tzdb data; fall back to shifting by the gap length.
                _ => before.to_timestamp(local).ok(),
            }
        }
    }
}

/// Formats an instant the way CloudStack's API does (`yyyy-MM-dd'T'HH:mm:ss+0000`, in UTC,
/// sub-seconds dropped), e.g. for a schedule's next run.
pub fn format_cloudstack_date(instant: Timestamp) -> String {
    let utc = Offset::UTC.to_datetime(instant);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// Why [`parse_cloudstack_date`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid date {input}: {problem} (expected yyyy-MM-dd'T'HH:mm:ss with an optional fraction, then +0000, +00:00 or Z)"
)]
pub struct DateParseError {
    /// The rejected input, quoted and shortened.
    pub input: String,
    pub problem: &'static str,
}

/// Parses the date forms CloudStack accepts: `2024-05-01T10:20:30+0000` (what CloudStack emits),
/// an ISO offset `+00:00` or `-05:30`, `Z`, optional fractional seconds (`.123`), and the legacy
/// `2024-05-01T10:20:30Z+0000`.
pub fn parse_cloudstack_date(text: &str) -> Result<Timestamp, DateParseError> {
    let fail = |problem| DateParseError {
        input: quote_limited(text),
        problem,
    };
    if text.len() > MAX_DATE_TEXT_LEN {
        return Err(fail("too long"));
    }
    let bytes = text.as_bytes();
    const DATE_TIME_LEN: usize = "yyyy-MM-ddTHH:mm:ss".len();
    let Some((date_time, rest)) = bytes.split_at_checked(DATE_TIME_LEN) else {
        return Err(fail("too short"));
    };
    let separators_ok = date_time[4] == b'-'
        && date_time[7] == b'-'
        && date_time[10] == b'T'
        && date_time[13] == b':'
        && date_time[16] == b':';
    if !separators_ok {
        return Err(fail(
            "the date and time are not in the form yyyy-MM-ddTHH:mm:ss",
        ));
    }
    let number = |range: std::ops::Range<usize>| -> Result<i16, DateParseError> {
        digits_value(&date_time[range])
            .and_then(|value| i16::try_from(value).ok())
            .ok_or_else(|| fail("the date and time are not in the form yyyy-MM-ddTHH:mm:ss"))
    };
    let year = number(0..4)?;
    let narrow = |value: i16| i8::try_from(value).map_err(|_| fail("a field is out of range"));
    let month = narrow(number(5..7)?)?;
    let day = narrow(number(8..10)?)?;
    let hour = narrow(number(11..13)?)?;
    let minute = narrow(number(14..16)?)?;
    let second = narrow(number(17..19)?)?;

    let (nanosecond, rest) = match rest.split_first() {
        Some((b'.', fraction_and_rest)) => {
            let digits = fraction_and_rest
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            if !(1..=9).contains(&digits) {
                return Err(fail("fractional seconds must have 1 to 9 digits"));
            }
            let (fraction, rest) = fraction_and_rest.split_at(digits);
            let value = digits_value(fraction)
                .ok_or_else(|| fail("fractional seconds must have 1 to 9 digits"))?;
            let scale = 10_i64.pow(u32::try_from(9 - digits).unwrap_or(0));
            let nanosecond = i32::try_from(value * scale)
                .map_err(|_| fail("fractional seconds must have 1 to 9 digits"))?;
            (nanosecond, rest)
        }
        _ => (0, rest),
    };

    let offset_text = match rest {
        // Legacy form: a literal `Z` followed by the real offset.
        [b'Z', offset @ ..] if !offset.is_empty() => offset,
        [b'Z'] => b"+0000".as_slice(),
        other => other,
    };
    let offset = parse_utc_offset(offset_text)
        .ok_or_else(|| fail("the UTC offset is missing or not of the form +0000, +00:00 or Z"))?;

    let local = DateTime::new(year, month, day, hour, minute, second, nanosecond)
        .map_err(|_| fail("no such calendar date or time"))?;
    offset
        .to_timestamp(local)
        .map_err(|_| fail("outside the supported range"))
}

/// `+HHMM`, `-HHMM`, `+HH:MM` or `-HH:MM` with hours 0–23 and minutes 0–59.
fn parse_utc_offset(text: &[u8]) -> Option<Offset> {
    let (sign, digits) = match text.split_first()? {
        (b'+', rest) => (1, rest),
        (b'-', rest) => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = match digits {
        [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => {
            (digits_value(&[*h1, *h2])?, digits_value(&[*m1, *m2])?)
        }
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    let seconds = i32::try_from(sign * (hours * 3600 + minutes * 60)).ok()?;
    Offset::from_seconds(seconds).ok()
}

/// The value of a non-empty run of at most 18 ASCII digits.
fn digits_value(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')),
    )
}

/// `text` in double quotes with escapes, shortened to [`MAX_QUOTED_INPUT_LEN`] characters.
fn quote_limited(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_INPUT_LEN) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
