use super::*;

fn schedule(interval: IntervalType, text: &str, time_zone: &str) -> Schedule {
    Schedule::parse(interval, text, time_zone).expect("test schedules are valid")
}

fn rejection(interval: IntervalType, text: &str, time_zone: &str) -> ScheduleError {
    Schedule::parse(interval, text, time_zone).expect_err("test input is invalid")
}

/// Parses `2025-03-30T01:00:00+01:00` style instants.
fn instant(text: &str) -> Timestamp {
    text.parse().expect("test instants are valid")
}

/// A run shown in the schedule's time zone, e.g. `2025-03-30T03:00+02:00`.
fn local(schedule: &Schedule, run: Timestamp) -> String {
    run.to_zoned(schedule.time_zone().clone())
        .strftime("%Y-%m-%dT%H:%M%:z")
        .to_string()
}

/// The first `count` runs strictly after `from`, shown in the schedule's time zone.
fn runs(schedule: &Schedule, from: &str, count: usize) -> Vec<String> {
    let mut at = instant(from);
    (0..count)
        .map(|_| {
            at = schedule.next_run_after(at);
            local(schedule, at)
        })
        .collect()
}

/// How many runs fall on the local calendar date `date` (`yyyy-mm-dd`).
fn runs_on_local_date(schedule: &Schedule, date: &str) -> usize {
    let date: Date = date.parse().expect("test dates are valid");
    let tz = schedule.time_zone();
    let start = date
        .to_zoned(tz.clone())
        .expect("start of day exists")
        .timestamp();
    let end = date
        .tomorrow()
        .expect("tomorrow exists")
        .to_zoned(tz.clone())
        .expect("start of day exists")
        .timestamp();
    let mut count = 0;
    let mut at = start - 1.nanosecond();
    loop {
        at = schedule.next_run_after(at);
        if at >= end {
            return count;
        }
        count += 1;
    }
}

// ---- interval types ----

#[test]
fn interval_types_parse_case_insensitively() {
    assert_eq!("hourly".parse(), Ok(IntervalType::Hourly));
    assert_eq!("Daily".parse(), Ok(IntervalType::Daily));
    assert_eq!("WEEKLY".parse(), Ok(IntervalType::Weekly));
    assert_eq!("mOnThLy".parse(), Ok(IntervalType::Monthly));
}

#[test]
fn an_unknown_interval_type_is_rejected_with_the_valid_values() {
    let error = "yearly"
        .parse::<IntervalType>()
        .expect_err("not an interval");
    assert_eq!(
        error.to_string(),
        "invalid interval type \"yearly\": expected one of HOURLY, DAILY, WEEKLY, MONTHLY"
    );
    assert!(" daily".parse::<IntervalType>().is_err());
    assert!("".parse::<IntervalType>().is_err());
}

#[test]
fn interval_types_round_trip_through_cloudstack_ordinals_and_names() {
    for interval in IntervalType::ALL {
        assert_eq!(
            IntervalType::from_ordinal(interval.ordinal()),
            Some(interval)
        );
        assert_eq!(interval.to_string().parse(), Ok(interval));
    }
    assert_eq!(IntervalType::Hourly.ordinal(), 0);
    assert_eq!(IntervalType::Monthly.ordinal(), 3);
    assert_eq!(IntervalType::from_ordinal(4), None);
}

// ---- accepted schedules ----

#[test]
fn each_interval_accepts_its_documented_format() {
    let hourly = schedule(IntervalType::Hourly, "5", "UTC");
    assert_eq!(hourly.slot(), Slot::Hourly { minute: 5 });
    assert_eq!(hourly.interval(), IntervalType::Hourly);

    let daily = schedule(IntervalType::Daily, "30:02", "UTC");
    assert_eq!(
        daily.slot(),
        Slot::Daily {
            time: Time::new(2, 30, 0, 0).expect("valid")
        }
    );

    let sunday = schedule(IntervalType::Weekly, "0:12:1", "UTC");
    let saturday = schedule(IntervalType::Weekly, "59:23:7", "UTC");
    assert!(matches!(
        sunday.slot(),
        Slot::Weekly {
            weekday: Weekday::Sunday,
            ..
        }
    ));
    assert!(matches!(
        saturday.slot(),
        Slot::Weekly {
            weekday: Weekday::Saturday,
            ..
        }
    ));

    let monthly = schedule(IntervalType::Monthly, "15:23:28", "UTC");
    assert_eq!(
        monthly.slot(),
        Slot::Monthly {
            time: Time::new(23, 15, 0, 0).expect("valid"),
            day: 28
        }
    );
    assert_eq!(monthly.text(), "15:23:28");
}

#[test]
fn time_zones_are_looked_up_case_insensitively_and_stored_as_spelled_in_the_database() {
    let schedule = schedule(IntervalType::Hourly, "0", "america/NEW_YORK");
    assert_eq!(schedule.time_zone_name(), "America/New_York");
    // Links keep their own name, as Java's TimeZone.getID() does.
    let link = Schedule::parse(IntervalType::Hourly, "0", "us/eastern").expect("valid");
    assert_eq!(link.time_zone_name(), "US/Eastern");
    // Backward-compatible links and the plain UTC/GMT ids CloudStack users send are accepted.
    for name in ["US/Eastern", "Asia/Calcutta", "UTC", "GMT", "Etc/GMT+5"] {
        assert!(
            Schedule::parse(IntervalType::Hourly, "0", name).is_ok(),
            "{name}"
        );
    }
}

// ---- rejected schedules ----

#[test]
fn a_wrong_number_of_parts_is_rejected_with_the_expected_format() {
    assert_eq!(
        rejection(IntervalType::Daily, "30", "UTC").to_string(),
        "invalid DAILY schedule \"30\": expected MM:HH (minute:hour) but found 1 part"
    );
    assert_eq!(
        rejection(IntervalType::Hourly, "30:2", "UTC").to_string(),
        "invalid HOURLY schedule \"30:2\": expected MM (minute) but found 2 parts"
    );
    assert_eq!(
        rejection(IntervalType::Weekly, "0:1:2:3", "UTC"),
        ScheduleError::WrongPartCount {
            interval: IntervalType::Weekly,
            text: "0:1:2:3".into(),
            found: 4
        }
    );
    assert!(matches!(
        rejection(IntervalType::Monthly, "0:1", "UTC"),
        ScheduleError::WrongPartCount { found: 2, .. }
    ));
}

#[test]
fn an_empty_field_is_reported_as_missing() {
    assert_eq!(
        rejection(IntervalType::Daily, "30:", "UTC").to_string(),
        "invalid DAILY schedule \"30:\": the hour is missing (expected MM:HH (minute:hour))"
    );
    assert!(matches!(
        rejection(IntervalType::Hourly, "", "UTC"),
        ScheduleError::MissingField {
            field: Field::Minute,
            ..
        }
    ));
}

#[test]
fn non_numeric_fields_are_rejected_naming_the_field() {
    assert_eq!(
        rejection(IntervalType::Daily, "3a:2", "UTC").to_string(),
        "invalid DAILY schedule \"3a:2\": minute \"3a\" is not a number"
    );
    for text in ["+5", "-1", " 5", "5 ", "1.5", "٣"] {
        assert!(
            matches!(
                rejection(IntervalType::Hourly, text, "UTC"),
                ScheduleError::NotANumber {
                    field: Field::Minute,
                    ..
                }
            ),
            "{text:?}"
        );
    }
    assert!(matches!(
        rejection(IntervalType::Weekly, "0:0:Sun", "UTC"),
        ScheduleError::NotANumber {
            field: Field::DayOfWeek,
            ..
        }
    ));
}

#[test]
fn out_of_range_fields_are_rejected_with_the_valid_range() {
    assert_eq!(
        rejection(IntervalType::Hourly, "60", "UTC").to_string(),
        "invalid HOURLY schedule \"60\": minute 60 is out of range (0-59)"
    );
    assert_eq!(
        rejection(IntervalType::Daily, "0:24", "UTC").to_string(),
        "invalid DAILY schedule \"0:24\": hour 24 is out of range (0-23)"
    );
    assert_eq!(
        rejection(IntervalType::Weekly, "0:0:8", "UTC").to_string(),
        "invalid WEEKLY schedule \"0:0:8\": day of week 8 is out of range (1-7, where 1 = Sunday and 7 = Saturday)"
    );
    assert!(matches!(
        rejection(IntervalType::Weekly, "0:0:0", "UTC"),
        ScheduleError::OutOfRange {
            field: Field::DayOfWeek,
            ..
        }
    ));
    assert_eq!(
        rejection(IntervalType::Monthly, "0:0:29", "UTC").to_string(),
        "invalid MONTHLY schedule \"0:0:29\": day of month 29 is out of range (1-28)"
    );
    assert!(matches!(
        rejection(IntervalType::Monthly, "0:0:0", "UTC"),
        ScheduleError::OutOfRange {
            field: Field::DayOfMonth,
            ..
        }
    ));
    // Too large for any integer type: still just out of range.
    assert!(matches!(
        rejection(IntervalType::Hourly, "99999999999999999999999", "UTC"),
        ScheduleError::OutOfRange {
            field: Field::Minute,
            ..
        }
    ));
}

#[test]
fn an_overlong_schedule_is_rejected_without_quoting_it() {
    let text = "0".repeat(MAX_SCHEDULE_TEXT_LEN + 1);
    let error = rejection(IntervalType::Hourly, &text, "UTC");
    assert_eq!(
        error.to_string(),
        "invalid HOURLY schedule: 33 characters is longer than the maximum of 32"
    );
}

#[test]
fn an_unknown_time_zone_is_rejected_instead_of_falling_back_to_gmt() {
    assert_eq!(
        rejection(IntervalType::Hourly, "0", "Mars/Olympus_Mons").to_string(),
        "unknown time zone \"Mars/Olympus_Mons\": expected an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
    );
    for name in [
        "",
        "Etc/Unknown",
        "+05:30",
        "../../etc/passwd",
        "Europe/Berlin ",
    ] {
        assert!(
            matches!(
                rejection(IntervalType::Hourly, "0", name),
                ScheduleError::UnknownTimeZone { .. }
            ),
            "{name:?}"
        );
    }
}

#[test]
fn rejected_input_is_quoted_shortened_and_escaped() {
    let long = format!("Europe/{}", "x".repeat(100));
    let ScheduleError::UnknownTimeZone { given } = rejection(IntervalType::Hourly, "0", &long)
    else {
        panic!("expected an unknown time zone");
    };
    assert_eq!(given, format!("\"Europe/{}\"…", "x".repeat(33)));

    let error = "daily\n\u{1b}[31m"
        .parse::<IntervalType>()
        .expect_err("invalid");
    assert!(
        error.to_string().contains(r#""daily\n\u{1b}[31m""#),
        "{error}"
    );
}

#[test]
fn the_schedule_is_validated_before_the_time_zone() {
    assert!(matches!(
        rejection(IntervalType::Daily, "0:99", "Nowhere/Land"),
        ScheduleError::OutOfRange {
            field: Field::Hour,
            ..
        }
    ));
}

// ---- hourly runs ----

#[test]
fn an_hourly_schedule_runs_at_the_next_matching_minute_strictly_after_the_instant() {
    let hourly = schedule(IntervalType::Hourly, "15", "Europe/Berlin");
    assert_eq!(
        runs(&hourly, "2025-06-01T10:20:00+02:00", 2),
        ["2025-06-01T11:15+02:00", "2025-06-01T12:15+02:00"]
    );
    assert_eq!(
        runs(&hourly, "2025-06-01T10:14:59.999999999+02:00", 1),
        ["2025-06-01T10:15+02:00"]
    );
    assert_eq!(
        runs(&hourly, "2025-06-01T10:15:00+02:00", 1),
        ["2025-06-01T11:15+02:00"]
    );
}

#[test]
fn an_hourly_schedule_neither_skips_nor_doubles_across_berlin_transitions() {
    let hourly = schedule(IntervalType::Hourly, "30", "Europe/Berlin");
    // Spring forward 02:00 → 03:00: the 02:30 that never happens is no lost real hour.
    assert_eq!(
        runs(&hourly, "2025-03-30T00:45:00+01:00", 3),
        [
            "2025-03-30T01:30+01:00",
            "2025-03-30T03:30+02:00",
            "2025-03-30T04:30+02:00"
        ]
    );
    // Fall back 03:00 → 02:00: both 02:30s are real hours apart, so both run.
    assert_eq!(
        runs(&hourly, "2025-10-26T00:45:00+02:00", 4),
        [
            "2025-10-26T01:30+02:00",
            "2025-10-26T02:30+02:00",
            "2025-10-26T02:30+01:00",
            "2025-10-26T03:30+01:00"
        ]
    );
}

#[test]
fn hourly_runs_per_local_day_follow_the_day_length_in_new_york_and_berlin() {
    for (zone, spring, fall) in [
        ("America/New_York", "2025-03-09", "2025-11-02"),
        ("Europe/Berlin", "2025-03-30", "2025-10-26"),
    ] {
        let hourly = schedule(IntervalType::Hourly, "0", zone);
        assert_eq!(runs_on_local_date(&hourly, "2025-06-15"), 24, "{zone}");
        assert_eq!(runs_on_local_date(&hourly, spring), 23, "{zone}");
        assert_eq!(runs_on_local_date(&hourly, fall), 25, "{zone}");
    }
}

#[test]
fn an_hourly_schedule_honours_the_local_minute_in_a_half_hour_zone() {
    let hourly = schedule(IntervalType::Hourly, "0", "Asia/Kolkata");
    let next = hourly.next_run_after(instant("2025-01-01T00:00:00Z"));
    assert_eq!(next, instant("2025-01-01T00:30:00Z"));
    assert_eq!(local(&hourly, next), "2025-01-01T06:00+05:30");
}

#[test]
fn lord_howe_half_hour_transitions_stretch_or_shrink_one_hourly_interval() {
    // Spring forward 2025-10-05 02:00 +10:30 → 02:30 +11:00.
    let quarter_past = schedule(IntervalType::Hourly, "15", "Australia/Lord_Howe");
    assert_eq!(
        runs(&quarter_past, "2025-10-05T01:00:00+10:30", 2),
        ["2025-10-05T01:15+10:30", "2025-10-05T03:15+11:00"]
    );
    let quarter_to = schedule(IntervalType::Hourly, "45", "Australia/Lord_Howe");
    assert_eq!(
        runs(&quarter_to, "2025-10-05T01:00:00+10:30", 2),
        ["2025-10-05T01:45+10:30", "2025-10-05T02:45+11:00"]
    );
    // At the transition instant itself the clock reads 02:30, not 02:00.
    let on_the_hour = schedule(IntervalType::Hourly, "0", "Australia/Lord_Howe");
    assert_eq!(
        runs(&on_the_hour, "2025-10-05T01:30:00+10:30", 1),
        ["2025-10-05T03:00+11:00"]
    );
    let half_past = schedule(IntervalType::Hourly, "30", "Australia/Lord_Howe");
    assert_eq!(
        runs(&half_past, "2025-10-05T01:45:00+10:30", 1),
        ["2025-10-05T02:30+11:00"]
    );
    assert_eq!(runs_on_local_date(&quarter_past, "2025-10-05"), 23);
    assert_eq!(runs_on_local_date(&quarter_to, "2025-10-05"), 24);
    // Fall back 2025-04-06 02:00 +11:00 → 01:30 +10:30: 01:30–01:59 happens twice.
    assert_eq!(
        runs(&quarter_to, "2025-04-06T01:00:00+11:00", 2),
        ["2025-04-06T01:45+11:00", "2025-04-06T01:45+10:30"]
    );
    assert_eq!(runs_on_local_date(&quarter_past, "2025-04-06"), 24);
    assert_eq!(runs_on_local_date(&quarter_to, "2025-04-06"), 25);
}

// ---- daily runs ----

#[test]
fn a_daily_schedule_runs_once_a_day_strictly_after_the_instant() {
    let daily = schedule(IntervalType::Daily, "30:14", "UTC");
    assert_eq!(
        runs(&daily, "2025-06-01T14:30:00Z", 2),
        ["2025-06-02T14:30+00:00", "2025-06-03T14:30+00:00"]
    );
    assert_eq!(
        runs(&daily, "2025-06-01T14:29:59Z", 1),
        ["2025-06-01T14:30+00:00"]
    );
    let midnight = schedule(IntervalType::Daily, "0:0", "UTC");
    assert_eq!(
        runs(&midnight, "2025-12-31T23:59:59Z", 1),
        ["2026-01-01T00:00+00:00"]
    );
}

#[test]
fn a_daily_slot_in_the_spring_forward_gap_runs_once_at_the_end_of_the_gap() {
    let berlin = schedule(IntervalType::Daily, "30:2", "Europe/Berlin");
    assert_eq!(
        runs(&berlin, "2025-03-29T12:00:00+01:00", 3),
        [
            "2025-03-30T03:00+02:00",
            "2025-03-31T02:30+02:00",
            "2025-04-01T02:30+02:00"
        ]
    );
    let new_york = schedule(IntervalType::Daily, "30:2", "America/New_York");
    assert_eq!(
        runs(&new_york, "2025-03-08T12:00:00-05:00", 2),
        ["2025-03-09T03:00-04:00", "2025-03-10T02:30-04:00"]
    );
    // Lord Howe's gap is 30 minutes long: 02:00 → 02:30.
    let lord_howe = schedule(IntervalType::Daily, "15:2", "Australia/Lord_Howe");
    assert_eq!(
        runs(&lord_howe, "2025-10-04T12:00:00+10:30", 2),
        ["2025-10-05T02:30+11:00", "2025-10-06T02:15+11:00"]
    );
}

#[test]
fn a_daily_slot_in_the_fall_back_overlap_runs_once_at_its_earlier_occurrence() {
    let berlin = schedule(IntervalType::Daily, "30:2", "Europe/Berlin");
    assert_eq!(
        runs(&berlin, "2025-10-25T12:00:00+02:00", 2),
        ["2025-10-26T02:30+02:00", "2025-10-27T02:30+01:00"]
    );
    // Asked again from inside the repeated hour, after the first 02:30: no second run that day.
    assert_eq!(
        runs(&berlin, "2025-10-26T02:15:00+01:00", 1),
        ["2025-10-27T02:30+01:00"]
    );
    let new_york = schedule(IntervalType::Daily, "30:1", "America/New_York");
    assert_eq!(
        runs(&new_york, "2025-11-01T12:00:00-04:00", 2),
        ["2025-11-02T01:30-04:00", "2025-11-03T01:30-05:00"]
    );
    assert_eq!(runs_on_local_date(&new_york, "2025-11-02"), 1);
}

#[test]
fn a_daily_slot_on_a_day_the_zone_skipped_runs_at_the_start_of_the_next_day() {
    // Samoa moved across the date line: 2011-12-29 23:59:59 -10:00 was followed by
    // 2011-12-31 00:00:00 +14:00.
    let apia = schedule(IntervalType::Daily, "0:10", "Pacific/Apia");
    assert_eq!(
        runs(&apia, "2011-12-29T00:00:00-10:00", 3),
        [
            "2011-12-29T10:00-10:00",
            "2011-12-31T00:00+14:00",
            "2011-12-31T10:00+14:00"
        ]
    );
}

#[test]
fn a_daily_slot_in_a_midnight_gap_runs_when_the_day_begins() {
    // Chile springs forward at 24:00: 2025-09-06 23:59:59 -04:00 → 2025-09-07 01:00 -03:00.
    let santiago = schedule(IntervalType::Daily, "30:0", "America/Santiago");
    assert_eq!(
        runs(&santiago, "2025-09-06T12:00:00-04:00", 2),
        ["2025-09-07T01:00-03:00", "2025-09-08T00:30-03:00"]
    );
}

// ---- weekly runs ----

#[test]
fn a_weekly_schedule_runs_on_its_weekday_with_one_as_sunday() {
    // 2025-06-04 is a Wednesday.
    let saturday = schedule(IntervalType::Weekly, "0:9:7", "UTC");
    assert_eq!(
        runs(&saturday, "2025-06-04T12:00:00Z", 2),
        ["2025-06-07T09:00+00:00", "2025-06-14T09:00+00:00"]
    );
    let wednesday = schedule(IntervalType::Weekly, "0:9:4", "UTC");
    assert_eq!(
        runs(&wednesday, "2025-06-04T08:00:00Z", 2),
        ["2025-06-04T09:00+00:00", "2025-06-11T09:00+00:00"]
    );
    assert_eq!(
        runs(&wednesday, "2025-06-04T09:00:00Z", 1),
        ["2025-06-11T09:00+00:00"]
    );
}

#[test]
fn a_weekly_schedule_runs_once_across_sunday_transitions() {
    let berlin = schedule(IntervalType::Weekly, "30:2:1", "Europe/Berlin");
    assert_eq!(
        runs(&berlin, "2025-03-24T00:00:00+01:00", 2),
        ["2025-03-30T03:00+02:00", "2025-04-06T02:30+02:00"]
    );
    assert_eq!(
        runs(&berlin, "2025-10-20T00:00:00+02:00", 2),
        ["2025-10-26T02:30+02:00", "2025-11-02T02:30+01:00"]
    );
    let new_york = schedule(IntervalType::Weekly, "30:1:1", "America/New_York");
    assert_eq!(
        runs(&new_york, "2025-10-27T00:00:00-04:00", 2),
        ["2025-11-02T01:30-04:00", "2025-11-09T01:30-05:00"]
    );
}

// ---- monthly runs ----

#[test]
fn a_monthly_schedule_runs_on_its_day_every_month() {
    let first = schedule(IntervalType::Monthly, "0:0:1", "UTC");
    assert_eq!(
        runs(&first, "2025-01-31T12:00:00Z", 3),
        [
            "2025-02-01T00:00+00:00",
            "2025-03-01T00:00+00:00",
            "2025-04-01T00:00+00:00"
        ]
    );
    let late = schedule(IntervalType::Monthly, "59:23:28", "UTC");
    assert_eq!(
        runs(&late, "2024-02-28T23:59:00Z", 2),
        ["2024-03-28T23:59+00:00", "2024-04-28T23:59+00:00"]
    );
}

#[test]
fn a_monthly_schedule_runs_once_across_transitions() {
    // The last Sunday of March 2027 is the 28th; of October 2026 the 25th.
    let spring = schedule(IntervalType::Monthly, "30:2:28", "Europe/Berlin");
    assert_eq!(
        runs(&spring, "2027-03-01T00:00:00+01:00", 2),
        ["2027-03-28T03:00+02:00", "2027-04-28T02:30+02:00"]
    );
    let fall = schedule(IntervalType::Monthly, "30:2:25", "Europe/Berlin");
    assert_eq!(
        runs(&fall, "2026-10-01T00:00:00+02:00", 2),
        ["2026-10-25T02:30+02:00", "2026-11-25T02:30+01:00"]
    );
    let new_york = schedule(IntervalType::Monthly, "30:2:8", "America/New_York");
    assert_eq!(
        runs(&new_york, "2026-03-01T00:00:00-05:00", 2),
        ["2026-03-08T03:00-04:00", "2026-04-08T02:30-04:00"]
    );
}

// ---- edges ----

#[test]
fn the_next_run_saturates_at_the_end_of_time_instead_of_panicking() {
    let daily = schedule(IntervalType::Daily, "0:0", "Europe/Berlin");
    assert_eq!(daily.next_run_after(Timestamp::MAX), Timestamp::MAX);
    assert_eq!(daily.checked_next_run_after(Timestamp::MAX), None);
    let hourly = schedule(IntervalType::Hourly, "0", "UTC");
    assert_eq!(hourly.checked_next_run_after(Timestamp::MAX), None);
}

#[test]
fn instants_before_1970_with_fractions_are_handled() {
    let hourly = schedule(IntervalType::Hourly, "0", "UTC");
    let just_before_epoch = Timestamp::new(0, -500_000_000).expect("valid");
    assert_eq!(
        hourly.next_run_after(just_before_epoch),
        Timestamp::UNIX_EPOCH
    );
    assert_eq!(
        hourly.next_run_after(Timestamp::UNIX_EPOCH),
        instant("1970-01-01T01:00:00Z")
    );
}

// ---- CloudStack dates ----

#[test]
fn dates_are_formatted_in_utc_the_way_cloudstack_does() {
    assert_eq!(
        format_cloudstack_date(instant("2025-01-31T11:00:05.999+01:00")),
        "2025-01-31T10:00:05+0000"
    );
    assert_eq!(
        format_cloudstack_date(Timestamp::UNIX_EPOCH),
        "1970-01-01T00:00:00+0000"
    );
}

#[test]
fn every_date_form_cloudstack_accepts_is_parsed() {
    let expected = instant("2024-05-01T10:20:30Z");
    for text in [
        "2024-05-01T10:20:30+0000",
        "2024-05-01T10:20:30+00:00",
        "2024-05-01T10:20:30Z",
        "2024-05-01T10:20:30Z+0000",
        "2024-05-01T12:20:30+0200",
        "2024-05-01T05:20:30-05:00",
    ] {
        assert_eq!(parse_cloudstack_date(text), Ok(expected), "{text}");
    }
    assert_eq!(
        parse_cloudstack_date("2024-05-01T10:20:30.25Z"),
        Ok(expected + 250.milliseconds())
    );
    assert_eq!(
        parse_cloudstack_date("2024-05-01T10:20:30.000000001+0000"),
        Ok(expected + 1.nanosecond())
    );
}

#[test]
fn formatted_dates_parse_back() {
    let at = instant("2031-07-04T23:59:59Z");
    assert_eq!(parse_cloudstack_date(&format_cloudstack_date(at)), Ok(at));
}

#[test]
fn malformed_dates_are_rejected_with_the_reason() {
    let problem = |text: &str| {
        parse_cloudstack_date(text)
            .expect_err("malformed date")
            .problem
    };
    assert_eq!(
        parse_cloudstack_date("2024-02-30T10:20:30+0000")
            .expect_err("no such day")
            .to_string(),
        "invalid date \"2024-02-30T10:20:30+0000\": no such calendar date or time (expected yyyy-MM-dd'T'HH:mm:ss with an optional fraction, then +0000, +00:00 or Z)"
    );
    assert_eq!(
        problem("2024-05-01T10:20:30"),
        "the UTC offset is missing or not of the form +0000, +00:00 or Z"
    );
    assert_eq!(
        problem("2024-05-01 10:20:30+0000"),
        "the date and time are not in the form yyyy-MM-ddTHH:mm:ss"
    );
    assert_eq!(
        problem("2024-05-01T1a:20:30+0000"),
        "the date and time are not in the form yyyy-MM-ddTHH:mm:ss"
    );
    assert_eq!(
        problem("2024-05-01T10:20:30.Z"),
        "fractional seconds must have 1 to 9 digits"
    );
    assert_eq!(
        problem("2024-05-01T10:20:30.1234567890Z"),
        "fractional seconds must have 1 to 9 digits"
    );
    assert_eq!(
        problem("2024-05-01T10:20:30+2400"),
        "the UTC offset is missing or not of the form +0000, +00:00 or Z"
    );
    assert_eq!(
        problem("2024-05-01T10:20:30+00:0"),
        "the UTC offset is missing or not of the form +0000, +00:00 or Z"
    );
    assert_eq!(
        problem("2024-05-01T25:20:30Z"),
        "no such calendar date or time"
    );
    assert_eq!(problem("2024"), "too short");
    assert_eq!(problem(&"9".repeat(MAX_DATE_TEXT_LEN + 1)), "too long");
    assert_eq!(
        problem("2024-05-01T10:20:3é+0000"),
        "the date and time are not in the form yyyy-MM-ddTHH:mm:ss"
    );
    assert_eq!(
        problem("ééééééééééééééééééééé"),
        "the date and time are not in the form yyyy-MM-ddTHH:mm:ss"
    );
}
