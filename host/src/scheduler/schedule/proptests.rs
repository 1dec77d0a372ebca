//! Property tests: the next run agrees with a brute-force minute-by-minute oracle written straight
//! from the documented rules, and runs keep the promised spacing and per-day counts.

use proptest::prelude::*;

use super::*;

/// Zones with a variety of transitions since 1971, all with whole-minute offsets (which the
/// minute-stepping oracle relies on): whole-hour DST in both hemispheres, negative DST (Dublin),
/// half-hour DST (Lord Howe), DST at midnight (Santiago), repeated suspensions (Casablanca),
/// odd offsets (Kolkata, Kathmandu, Chatham, St John's) and a skipped day (Apia, 2011-12-30).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
    "Pacific/Apia",
];

/// Zones whose offsets have changed only by whole hours since 1990.
const WHOLE_HOUR_ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Europe/Dublin",
    "America/Santiago",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
    "Pacific/Apia",
];

const SECONDS_1971: i64 = 31_536_000;
const SECONDS_1990: i64 = 631_152_000;
const SECONDS_2100: i64 = 4_102_444_800;
const MINUTE: i64 = 60;
const DAY: i64 = 86_400;

fn instant_between(from: i64, to: i64) -> impl Strategy<Value = Timestamp> {
    (from..to, 0..1_000_000_000_i32).prop_map(|(second, nanosecond)| {
        Timestamp::new(second, nanosecond).expect("in range by construction")
    })
}

fn zone(zones: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(zones)
}

fn schedule_text() -> impl Strategy<Value = (IntervalType, String)> {
    prop_oneof![
        (0..60_u8).prop_map(|minute| (IntervalType::Hourly, minute.to_string())),
        (0..60_u8, 0..24_u8)
            .prop_map(|(minute, hour)| (IntervalType::Daily, format!("{minute}:{hour}"))),
        (0..60_u8, 0..24_u8, 1..=7_u8).prop_map(|(minute, hour, day)| (
            IntervalType::Weekly,
            format!("{minute}:{hour}:{day}")
        )),
        (0..60_u8, 0..24_u8, 1..=28_u8).prop_map(|(minute, hour, day)| (
            IntervalType::Monthly,
            format!("{minute}:{hour}:{day}")
        )),
    ]
}

fn timestamp(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("in range")
}

fn floor_to_minute(instant: Timestamp) -> i64 {
    instant.as_second().div_euclid(MINUTE) * MINUTE
}

/// The first run after `after`, found by stepping through whole minutes and applying the
/// documented rules literally: hourly runs whenever the wall clock shows the minute; any other
/// slot runs at the first instant at which the wall clock reads the slot time or later, i.e. when
/// the highest wall-clock time seen so far first reaches it.
fn oracle_next_run(schedule: &Schedule, after: Timestamp) -> Timestamp {
    let tz = schedule.time_zone();
    if let Slot::Hourly { minute } = schedule.slot() {
        let mut at = floor_to_minute(after) + MINUTE;
        loop {
            let wall = tz.to_datetime(timestamp(at));
            if wall.minute() == minute && wall.second() == 0 {
                return timestamp(at);
            }
            at += MINUTE;
        }
    }
    let (time, is_slot_date): (Time, Box<dyn Fn(Date) -> bool>) = match schedule.slot() {
        Slot::Daily { time } => (time, Box::new(|_| true)),
        Slot::Weekly { time, weekday } => {
            (time, Box::new(move |date: Date| date.weekday() == weekday))
        }
        Slot::Monthly { time, day } => (time, Box::new(move |date: Date| date.day() == day)),
        Slot::Hourly { .. } => unreachable!("handled above"),
    };
    // No zone in ZONES turns its clock back by a day, so a day of history gives the highest
    // wall-clock time seen before `after`.
    let mut at = floor_to_minute(after) - DAY;
    let mut highest_seen = tz.to_datetime(timestamp(at));
    loop {
        at += MINUTE;
        let wall = tz.to_datetime(timestamp(at));
        if wall > highest_seen {
            let today = wall.date();
            let yesterday = today.yesterday().expect("in range");
            let reached = [yesterday, today].into_iter().any(|date| {
                let slot = date.to_datetime(time);
                is_slot_date(date) && highest_seen < slot && slot <= wall
            });
            if reached && timestamp(at) > after {
                return timestamp(at);
            }
            highest_seen = wall;
        }
    }
}

/// Whether the wall-clock time `local` never occurs in `tz`.
fn is_skipped(tz: &TimeZone, local: DateTime) -> bool {
    matches!(
        tz.to_ambiguous_timestamp(local).offset(),
        AmbiguousOffset::Gap { .. }
    )
}

/// `count` consecutive runs after `from`.
fn successive_runs(schedule: &Schedule, from: Timestamp, count: usize) -> Vec<Timestamp> {
    let mut at = from;
    (0..count)
        .map(|_| {
            at = schedule.next_run_after(at);
            at
        })
        .collect()
}

/// A schedule and an instant close before (or just after) a time-zone transition, with the slot
/// often placed on the transition's own date and hour, so that gaps and repeats get exercised:
/// uniformly random instants would hit them only about once in a few thousand cases.
#[derive(Debug, Clone)]
struct NearTransition {
    zone: &'static str,
    base: Timestamp,
    seconds_from_transition: i64,
    interval: IntervalType,
    minute: u8,
    /// 0–23 an explicit hour; 24 the wall-clock time halfway through the transition's jump (a
    /// skipped or repeated time); 25 the wall-clock time the clock leaves at the transition; 26
    /// the wall-clock time it jumps to. 24–26 override the minute too.
    hour_choice: u8,
    on_transition_date: bool,
    weekday: u8,
    day: u8,
}

fn near_transition() -> impl Strategy<Value = NearTransition> {
    (
        zone(ZONES),
        instant_between(SECONDS_1971, SECONDS_2100),
        prop_oneof![-2 * DAY..3600, -3 * 3600..3600_i64],
        prop::sample::select(&IntervalType::ALL[..]),
        0..60_u8,
        prop_oneof![0..24_u8, Just(24), Just(24), Just(24), Just(25), Just(26)],
        any::<bool>(),
        (1..=7_u8, 1..=28_u8),
    )
        .prop_map(
            |(
                zone,
                base,
                seconds_from_transition,
                interval,
                minute,
                hour_choice,
                on_transition_date,
                (weekday, day),
            )| {
                NearTransition {
                    zone,
                    base,
                    seconds_from_transition,
                    interval,
                    minute,
                    hour_choice,
                    on_transition_date,
                    weekday,
                    day,
                }
            },
        )
}

impl NearTransition {
    fn build(&self) -> (Schedule, Timestamp) {
        let tz = time_zone_database().get(self.zone).expect("known zone");
        let Some(transition) = tz.following(self.base).next() else {
            let schedule =
                Schedule::parse(IntervalType::Hourly, &self.minute.to_string(), self.zone)
                    .expect("valid by construction");
            return (schedule, self.base);
        };
        let at = transition.timestamp();
        let before = tz.to_datetime(at - 1.nanosecond());
        let after = tz.to_datetime(at);
        let halfway = {
            let (earlier, later) = if before < after {
                (before, after)
            } else {
                (after, before)
            };
            earlier
                .checked_add(earlier.duration_until(later) / 2)
                .expect("in range")
        };
        let (minute, hour) = match self.hour_choice {
            24 => (halfway.minute(), halfway.hour()),
            25 => {
                let left = before.checked_add(1.nanosecond()).expect("in range");
                (left.minute(), left.hour())
            }
            26 => (after.minute(), after.hour()),
            explicit => (
                i8::try_from(self.minute).expect("small"),
                i8::try_from(explicit).expect("small"),
            ),
        };
        let (weekday, day) = if self.on_transition_date {
            let date = before.date();
            let day = if date.day() <= 28 {
                date.day()
            } else {
                i8::try_from(self.day).expect("small")
            };
            (date.weekday().to_sunday_one_offset(), day)
        } else {
            (
                i8::try_from(self.weekday).expect("small"),
                i8::try_from(self.day).expect("small"),
            )
        };
        let text = match self.interval {
            IntervalType::Hourly => minute.to_string(),
            IntervalType::Daily => format!("{minute}:{hour}"),
            IntervalType::Weekly => format!("{minute}:{hour}:{weekday}"),
            IntervalType::Monthly => format!("{minute}:{hour}:{day}"),
        };
        let schedule =
            Schedule::parse(self.interval, &text, self.zone).expect("valid by construction");
        (schedule, at + self.seconds_from_transition.seconds())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn the_next_run_agrees_with_the_brute_force_oracle(
        (interval, text) in schedule_text(),
        zone in zone(ZONES),
        after in instant_between(SECONDS_1971, SECONDS_2100),
    ) {
        let schedule = Schedule::parse(interval, &text, zone).expect("valid by construction");
        prop_assert_eq!(schedule.next_run_after(after), oracle_next_run(&schedule, after));
    }

    #[test]
    fn the_next_run_agrees_with_the_brute_force_oracle_around_transitions(case in near_transition()) {
        let (schedule, after) = case.build();
        prop_assert_eq!(schedule.next_run_after(after), oracle_next_run(&schedule, after));
    }

    #[test]
    fn the_next_run_after_a_run_agrees_with_the_oracle_around_transitions(case in near_transition()) {
        let (schedule, after) = case.build();
        let first = schedule.next_run_after(after);
        prop_assert_eq!(schedule.next_run_after(first), oracle_next_run(&schedule, first));
    }

    #[test]
    fn the_next_run_is_in_the_future_and_stays_the_same_until_it_happens(
        (interval, text) in schedule_text(),
        zone in zone(ZONES),
        after in instant_between(SECONDS_1971, SECONDS_2100),
        fraction in 0.0..1.0_f64,
    ) {
        let schedule = Schedule::parse(interval, &text, zone).expect("valid by construction");
        let next = schedule.next_run_after(after);
        prop_assert!(next > after);
        prop_assert_eq!(schedule.next_run_after(next - 1.nanosecond()), next);
        let wait = next.as_second() - after.as_second();
        // Truncation is fine: any instant between `after` and `next` will do.
        let later = after + (((wait as f64) * fraction) as i64).seconds();
        if later < next {
            prop_assert_eq!(schedule.next_run_after(later), next);
        }
    }

    #[test]
    fn a_run_shows_the_requested_wall_clock_time_unless_that_time_was_skipped(
        (interval, text) in schedule_text(),
        zone in zone(ZONES),
        after in instant_between(SECONDS_1971, SECONDS_2100),
    ) {
        let schedule = Schedule::parse(interval, &text, zone).expect("valid by construction");
        let tz = schedule.time_zone();
        let run = schedule.next_run_after(after);
        let wall = tz.to_datetime(run);
        prop_assert_eq!(wall.second(), 0);
        prop_assert_eq!(wall.subsec_nanosecond(), 0);
        let (time, date_matches): (Time, Box<dyn Fn(Date) -> bool>) = match schedule.slot() {
            Slot::Hourly { minute } => {
                prop_assert_eq!(wall.minute(), minute);
                return Ok(());
            }
            Slot::Daily { time } => (time, Box::new(|_| true)),
            Slot::Weekly { time, weekday } => (time, Box::new(move |date: Date| date.weekday() == weekday)),
            Slot::Monthly { time, day } => (time, Box::new(move |date: Date| date.day() == day)),
        };
        if wall.time() != time || !date_matches(wall.date()) {
            // Only a skipped slot runs at another wall-clock time: at the end of the gap, which
            // is on the slot's date or at most a day (Apia) later.
            let date = wall.date();
            let candidates = [date, date.yesterday().expect("in range")];
            let skipped_slot = candidates.into_iter().any(|date| {
                date_matches(date)
                    && is_skipped(tz, date.to_datetime(time))
                    && date.to_datetime(time) < wall
            });
            prop_assert!(skipped_slot, "{} ran at {}", text, wall);
            prop_assert!(is_skipped(tz, wall.saturating_sub(1.nanosecond())));
        }
    }

    #[test]
    fn hourly_runs_are_exactly_an_hour_apart_where_offsets_change_by_whole_hours(
        minute in 0..60_u8,
        zone in zone(WHOLE_HOUR_ZONES),
        after in instant_between(SECONDS_1990, SECONDS_2100),
    ) {
        let schedule = Schedule::parse(IntervalType::Hourly, &minute.to_string(), zone)
            .expect("valid by construction");
        let runs = successive_runs(&schedule, after, 72);
        for pair in runs.windows(2) {
            prop_assert_eq!(pair[1].as_second() - pair[0].as_second(), 3600);
        }
    }

    /// Lord Howe's half-hour shifts are where hourly runs depend on which offset applies.
    #[test]
    fn hourly_runs_in_lord_howe_agree_with_the_oracle_around_transitions(
        minute in prop_oneof![0..60_u8, Just(0), Just(30)],
        base in instant_between(SECONDS_1990, SECONDS_2100),
        seconds_before_transition in 0..7200_i64,
    ) {
        let schedule = Schedule::parse(IntervalType::Hourly, &minute.to_string(), "Australia/Lord_Howe")
            .expect("valid by construction");
        let transition = schedule.time_zone().following(base).next().expect("Lord Howe has DST");
        let after = transition.timestamp() - seconds_before_transition.seconds();
        prop_assert_eq!(schedule.next_run_after(after), oracle_next_run(&schedule, after));
    }

    #[test]
    fn hourly_runs_in_lord_howe_are_half_an_hour_to_an_hour_and_a_half_apart(
        minute in 0..60_u8,
        base in instant_between(SECONDS_1990, SECONDS_2100),
        seconds_before_transition in 0..DAY,
    ) {
        let schedule = Schedule::parse(IntervalType::Hourly, &minute.to_string(), "Australia/Lord_Howe")
            .expect("valid by construction");
        let transition = schedule.time_zone().following(base).next().expect("Lord Howe has DST");
        let after = transition.timestamp() - seconds_before_transition.seconds();
        let runs = successive_runs(&schedule, after, 48);
        for pair in runs.windows(2) {
            let gap = pair[1].as_second() - pair[0].as_second();
            prop_assert!([1800, 3600, 5400].contains(&gap), "{gap} s between runs");
        }
    }

    #[test]
    fn a_local_day_holds_one_hourly_run_per_real_hour_where_offsets_change_by_whole_hours(
        minute in 0..60_u8,
        zone in zone(WHOLE_HOUR_ZONES),
        day in instant_between(SECONDS_1990, SECONDS_2100),
    ) {
        let schedule = Schedule::parse(IntervalType::Hourly, &minute.to_string(), zone)
            .expect("valid by construction");
        let tz = schedule.time_zone();
        let date = tz.to_datetime(day).date();
        let start = first_instant_at_or_after(tz, date.to_datetime(Time::midnight())).expect("in range");
        let end = first_instant_at_or_after(tz, date.tomorrow().expect("in range").to_datetime(Time::midnight()))
            .expect("in range");
        let mut count = 0;
        let mut at = start - 1.nanosecond();
        loop {
            at = schedule.next_run_after(at);
            if at >= end {
                break;
            }
            count += 1;
        }
        prop_assert_eq!(count, (end.as_second() - start.as_second()) / 3600);
        prop_assert!((23..=25).contains(&count), "{count} runs on {date}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every local date gets exactly one daily run (Apia is left out: it skipped a whole date).
    #[test]
    fn a_daily_schedule_runs_once_on_every_local_date(
        minute in 0..60_u8,
        hour in 0..24_u8,
        zone in zone(&ZONES[..ZONES.len() - 1]),
        from in instant_between(SECONDS_1971, SECONDS_2100),
    ) {
        let schedule = Schedule::parse(IntervalType::Daily, &format!("{minute}:{hour}"), zone)
            .expect("valid by construction");
        let tz = schedule.time_zone();
        let first_date = tz.to_datetime(from).date().tomorrow().expect("in range");
        let start = first_instant_at_or_after(tz, first_date.to_datetime(Time::midnight()))
            .expect("in range");
        let runs = successive_runs(&schedule, start - 1.nanosecond(), 60);
        let mut expected_date = first_date;
        for run in runs {
            prop_assert_eq!(tz.to_datetime(run).date(), expected_date);
            expected_date = expected_date.tomorrow().expect("in range");
        }
    }

    #[test]
    fn weekly_and_monthly_schedules_run_once_per_period_in_order(
        minute in 0..60_u8,
        hour in 0..24_u8,
        weekday in 1..=7_u8,
        day in 1..=28_u8,
        zone in zone(&ZONES[..ZONES.len() - 1]),
        from in instant_between(SECONDS_1971, SECONDS_2100),
    ) {
        let weekly = Schedule::parse(IntervalType::Weekly, &format!("{minute}:{hour}:{weekday}"), zone)
            .expect("valid by construction");
        let runs = successive_runs(&weekly, from, 20);
        for pair in runs.windows(2) {
            let days_apart = (pair[1].as_second() - pair[0].as_second()) as f64 / DAY as f64;
            prop_assert!((6.9..=7.1).contains(&days_apart), "{days_apart} days between weekly runs");
        }

        let monthly = Schedule::parse(IntervalType::Monthly, &format!("{minute}:{hour}:{day}"), zone)
            .expect("valid by construction");
        let tz = monthly.time_zone();
        let runs = successive_runs(&monthly, from, 14);
        for pair in runs.windows(2) {
            let (earlier, later) = (tz.to_datetime(pair[0]).date(), tz.to_datetime(pair[1]).date());
            prop_assert!(pair[0] < pair[1]);
            let months_apart = (i32::from(later.year()) * 12 + i32::from(later.month()))
                - (i32::from(earlier.year()) * 12 + i32::from(earlier.month()));
            prop_assert_eq!(months_apart, 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_fields_always_parse_into_the_requested_slot(
        minute in 0..60_i8,
        hour in 0..24_i8,
        day in 1..=28_i8,
        zone in zone(ZONES),
        padded in any::<bool>(),
    ) {
        let text = if padded {
            format!("{minute:02}:{hour:02}:{day:02}")
        } else {
            format!("{minute}:{hour}:{day}")
        };
        let monthly = Schedule::parse(IntervalType::Monthly, &text, zone).expect("valid");
        prop_assert_eq!(
            monthly.slot(),
            Slot::Monthly { time: Time::new(hour, minute, 0, 0).expect("valid"), day }
        );
        prop_assert_eq!(monthly.text(), text.as_str());
        prop_assert_eq!(monthly.time_zone_name(), zone);
    }

    #[test]
    fn out_of_range_fields_are_always_rejected(
        minute in 60..1000_u32,
        hour in 24..1000_u32,
        weekday in prop_oneof![Just(0_u32), 8..1000_u32],
        day in prop_oneof![Just(0_u32), 29..1000_u32],
    ) {
        let out_of_range = |interval, text: String, expected: Field| {
            match Schedule::parse(interval, &text, "UTC") {
                Err(ScheduleError::OutOfRange { field, .. }) => field == expected,
                _ => false,
            }
        };
        let cases = [
            (IntervalType::Hourly, minute.to_string(), Field::Minute),
            (IntervalType::Daily, format!("0:{hour}"), Field::Hour),
            (IntervalType::Weekly, format!("0:0:{weekday}"), Field::DayOfWeek),
            (IntervalType::Monthly, format!("0:0:{day}"), Field::DayOfMonth),
        ];
        for (interval, text, field) in cases {
            prop_assert!(out_of_range(interval, text.clone(), field), "{}", text);
        }
    }

    #[test]
    fn arbitrary_input_is_accepted_or_rejected_but_never_panics(
        interval in any::<String>(),
        text in "[0-9:+ a-z\\-]{0,12}|\\PC{0,40}",
        zone in "[A-Za-z/_+\\-0-9]{0,30}|\\PC{0,70}",
    ) {
        let _ = interval.parse::<IntervalType>();
        for interval in IntervalType::ALL {
            if let Ok(schedule) = Schedule::parse(interval, &text, &zone) {
                prop_assert!(text.bytes().all(|byte| byte.is_ascii_digit() || byte == b':'));
                prop_assert_eq!(schedule.interval(), interval);
            }
        }
        let _ = parse_cloudstack_date(&text);
        let _ = parse_cloudstack_date(&zone);
    }

    #[test]
    fn formatted_dates_parse_back_to_the_same_second(
        at in instant_between(-62_135_596_800, 253_402_000_000),
    ) {
        let text = format_cloudstack_date(at);
        prop_assert_eq!(text.len(), "yyyy-MM-ddTHH:mm:ss+0000".len());
        let whole_second = at.as_second() - i64::from(at.subsec_nanosecond() < 0);
        prop_assert_eq!(parse_cloudstack_date(&text), Ok(timestamp(whole_second)));
    }
}
