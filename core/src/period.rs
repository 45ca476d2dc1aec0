//! Periods: what one instance of a task covers. A daily task's period is a data date
//! (`yyyymmdd`), an hourly task's an hour of its timezone's wall clock (`yyyymmddHH`), a monthly
//! task's a month (`yyyymm`). A key's length tells its kind, so a stored key reads back alone.
//!
//! Hours are wall-clock hours in the task's timezone. On a spring-forward day the skipped hour
//! does not exist (America/New_York's 2026-03-08 has 23 hours: 02 is missing); on a fall-back
//! day the repeated hour is one period (2026-11-01's `01` covers both 01:00 EDT and 01:00 EST,
//! two real hours). Moving by hours steps over a missing hour, so the hour before 03 on a
//! spring-forward day is 01.

use std::fmt;

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::EtlDay;

/// How long a task's period is. Ordered from finer to coarser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    Hour,
    #[default]
    Day,
    Month,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 3] = [PeriodKind::Hour, PeriodKind::Day, PeriodKind::Month];

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| format!("period {text:?} is not one of hour, day, month"))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Hour => "hour",
            PeriodKind::Day => "day",
            PeriodKind::Month => "month",
        }
    }

    /// `hourly`, `daily`, `monthly`.
    pub fn adjective(self) -> &'static str {
        match self {
            PeriodKind::Hour => "hourly",
            PeriodKind::Day => "daily",
            PeriodKind::Month => "monthly",
        }
    }

    /// How a key of this kind is written, with an example.
    pub fn key_format(self) -> &'static str {
        match self {
            PeriodKind::Hour => "yyyymmddHH (e.g. 2026112013)",
            PeriodKind::Day => "yyyymmdd (e.g. 20261120)",
            PeriodKind::Month => "yyyymm (e.g. 202611)",
        }
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hour, day or month. Hours are wall-clock hours (0..=23) of some timezone.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Hour(NaiveDate, u8),
    Day(NaiveDate),
    /// Held as the month's first day.
    Month(NaiveDate),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "invalid period {input:?}: expected a day (yyyymmdd or yyyy-mm-dd), an hour (yyyymmddHH) or a month (yyyymm){detail}"
    )]
    Malformed { input: String, detail: String },
    #[error("{input:?} is {article} {found}, but {task} is {expected_adjective}: give {}", expected.key_format())]
    WrongKind {
        input: String,
        task: String,
        found: PeriodKind,
        article: &'static str,
        expected: PeriodKind,
        expected_adjective: &'static str,
    },
}

impl Period {
    /// Reads a key of any kind: `yyyymm`, `yyyymmdd` (or `yyyy-mm-dd`), `yyyymmddHH`.
    pub fn parse(input: &str) -> Result<Self, PeriodError> {
        let fail = |detail: &str| PeriodError::Malformed {
            input: input.to_string(),
            detail: detail.to_string(),
        };
        let dashed_day = input.len() == 10 && input.as_bytes()[4] == b'-';
        if dashed_day || input.len() == 8 {
            return EtlDay::parse(input)
                .map(|d| Period::Day(d.date()))
                .map_err(|_| fail(if dashed_day { " (no such day)" } else { "" }));
        }
        if !matches!(input.len(), 6 | 10) || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(""));
        }
        let year: i32 = input[..4].parse().map_err(|_| fail(""))?;
        let month: u32 = input[4..6].parse().map_err(|_| fail(""))?;
        if year < 1000 {
            return Err(fail(" (year before 1000)"));
        }
        if input.len() == 6 {
            return NaiveDate::from_ymd_opt(year, month, 1)
                .map(Period::Month)
                .ok_or_else(|| fail(" (no such month)"));
        }
        let day = EtlDay::parse(&input[..8]).map_err(|_| fail(" (no such day)"))?;
        let hour: u8 = input[8..].parse().map_err(|_| fail(""))?;
        if hour > 23 {
            return Err(fail(" (hours run from 00 to 23)"));
        }
        Ok(Period::Hour(day.date(), hour))
    }

    /// Reads a key that must be of `kind`, the period of `task` (named in the error).
    pub fn parse_for(input: &str, kind: PeriodKind, task: &str) -> Result<Self, PeriodError> {
        let period = Self::parse(input)?;
        if period.kind() != kind {
            return Err(PeriodError::WrongKind {
                input: input.to_string(),
                task: format!("task {task:?}"),
                found: period.kind(),
                article: if period.kind() == PeriodKind::Hour {
                    "an"
                } else {
                    "a"
                },
                expected: kind,
                expected_adjective: kind.adjective(),
            });
        }
        Ok(period)
    }

    pub fn day(day: EtlDay) -> Self {
        Period::Day(day.date())
    }

    pub fn kind(self) -> PeriodKind {
        match self {
            Period::Hour(..) => PeriodKind::Hour,
            Period::Day(_) => PeriodKind::Day,
            Period::Month(_) => PeriodKind::Month,
        }
    }

    /// The data date the period falls in: its day, an hour's day, a month's first day.
    pub fn etl_day(self) -> EtlDay {
        EtlDay::from_date(self.first_day())
    }

    fn first_day(self) -> NaiveDate {
        match self {
            Period::Hour(d, _) | Period::Day(d) | Period::Month(d) => d,
        }
    }

    /// The last day the period touches.
    pub fn last_day(self) -> NaiveDate {
        match self {
            Period::Hour(d, _) | Period::Day(d) => d,
            Period::Month(d) => d + Months::new(1) - Duration::days(1),
        }
    }

    /// `yyyymmddHH`, `yyyymmdd` or `yyyymm`: the stored and displayed form.
    pub fn key(self) -> String {
        match self {
            Period::Hour(d, h) => format!("{}{h:02}", EtlDay::from_date(d).compact()),
            Period::Day(d) => EtlDay::from_date(d).compact(),
            Period::Month(d) => format!("{:04}{:02}", d.year(), d.month()),
        }
    }

    /// The hour key the period starts with (`yyyymmddHH`).
    pub fn hour_key(self) -> String {
        match self {
            Period::Hour(..) => self.key(),
            _ => format!("{}00", EtlDay::from_date(self.first_day()).compact()),
        }
    }

    /// The month key the period falls in (`yyyymm`).
    pub fn month_key(self) -> String {
        self.containing(PeriodKind::Month).key()
    }

    /// Wall-clock start and end (exclusive), for overlap tests across kinds.
    pub fn span(self) -> (NaiveDateTime, NaiveDateTime) {
        match self {
            Period::Hour(d, h) => {
                let start = d.and_time(NaiveTime::from_hms_opt(h.into(), 0, 0).unwrap());
                (start, start + Duration::hours(1))
            }
            Period::Day(d) => (
                d.and_time(NaiveTime::MIN),
                (d + Duration::days(1)).and_time(NaiveTime::MIN),
            ),
            Period::Month(d) => (
                d.and_time(NaiveTime::MIN),
                (d + Months::new(1)).and_time(NaiveTime::MIN),
            ),
        }
    }

    /// Whether the two periods share any wall-clock time.
    pub fn overlaps(self, other: Period) -> bool {
        let ((a0, a1), (b0, b1)) = (self.span(), other.span());
        a0 < b1 && b0 < a1
    }

    /// The period of `kind` this one falls in; itself when `kind` is its own or finer.
    pub fn containing(self, kind: PeriodKind) -> Period {
        if kind <= self.kind() {
            return self;
        }
        let d = self.first_day();
        match kind {
            PeriodKind::Day => Period::Day(d),
            PeriodKind::Month => Period::Month(d.with_day(1).unwrap()),
            PeriodKind::Hour => unreachable!("hour is the finest kind"),
        }
    }

    /// The periods of `kind` (finer than this one) that make it up, in order. Hours are those
    /// that exist on `tz`'s wall clock: 23 on a spring-forward day, 24 (one of them two real
    /// hours long) on a fall-back day.
    pub fn parts(self, kind: PeriodKind, tz: Tz) -> Vec<Period> {
        if kind >= self.kind() {
            return vec![self.containing(kind)];
        }
        let days = || {
            let (first, last) = (self.first_day(), self.last_day());
            first.iter_days().take_while(move |d| *d <= last)
        };
        match kind {
            PeriodKind::Day => days().map(Period::Day).collect(),
            PeriodKind::Hour => days()
                .flat_map(|d| (0..24u8).map(move |h| (d, h)))
                .filter(|(d, h)| hour_exists(*d, *h, tz))
                .map(|(d, h)| Period::Hour(d, h))
                .collect(),
            PeriodKind::Month => unreachable!("only a finer kind has parts"),
        }
    }

    /// The period `n` periods later (earlier when negative). Hours step over those that do not
    /// exist on `tz`'s wall clock.
    pub fn offset(self, n: i32, tz: Tz) -> Period {
        match self {
            Period::Day(d) => Period::Day(EtlDay::from_date(d).offset(n).date()),
            Period::Month(d) => Period::Month(if n >= 0 {
                d + Months::new(n.unsigned_abs())
            } else {
                d - Months::new(n.unsigned_abs())
            }),
            Period::Hour(..) => {
                let mut period = self;
                for _ in 0..n.unsigned_abs() {
                    period = period.step_hour(n.signum(), tz);
                }
                period
            }
        }
    }

    fn step_hour(self, direction: i32, tz: Tz) -> Period {
        let Period::Hour(mut d, mut h) = self else {
            unreachable!("only hours step by hours")
        };
        // At most one hour of a day is missing, so this loop turns at most twice.
        loop {
            if direction > 0 {
                if h == 23 {
                    (d, h) = (d + Duration::days(1), 0);
                } else {
                    h += 1;
                }
            } else if h == 0 {
                (d, h) = (d - Duration::days(1), 23);
            } else {
                h -= 1;
            }
            if hour_exists(d, h, tz) {
                return Period::Hour(d, h);
            }
        }
    }

    /// Every period of `from`'s kind from `from` to `to`, both included; empty when reversed.
    pub fn range(from: Period, to: Period, tz: Tz) -> Vec<Period> {
        let mut periods = vec![];
        let mut next = from;
        while next <= to && next.kind() == to.kind() {
            periods.push(next);
            next = next.offset(1, tz);
        }
        periods
    }

    /// The period of `kind` holding the wall-clock time `at` (on `tz`'s clock already).
    pub fn of_local(at: NaiveDateTime, kind: PeriodKind) -> Period {
        let day = at.date();
        match kind {
            PeriodKind::Hour => Period::Hour(day, chrono::Timelike::hour(&at) as u8),
            PeriodKind::Day => Period::Day(day),
            PeriodKind::Month => Period::Month(day.with_day(1).unwrap()),
        }
    }
}

/// Whether the hour `h` of day `d` happens on `tz`'s wall clock (some minute of it exists).
pub fn hour_exists(d: NaiveDate, h: u8, tz: Tz) -> bool {
    [0, 30, 59].into_iter().any(|minute| {
        let at = d.and_time(NaiveTime::from_hms_opt(h.into(), minute, 0).unwrap());
        tz.from_local_datetime(&at).earliest().is_some()
    })
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Period({})", self.key())
    }
}

impl std::str::FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<EtlDay> for Period {
    fn from(day: EtlDay) -> Self {
        Period::day(day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(periods: &[Period]) -> Vec<String> {
        periods.iter().map(|p| p.key()).collect()
    }

    const NEW_YORK: Tz = chrono_tz::America::New_York;

    #[test]
    fn keys_read_back_by_their_length() {
        assert_eq!(p("202611").kind(), PeriodKind::Month);
        assert_eq!(p("20261120").kind(), PeriodKind::Day);
        assert_eq!(p("2026-11-20"), p("20261120"));
        assert_eq!(p("2026112013").kind(), PeriodKind::Hour);
        for key in ["202611", "20261120", "2026112013", "2026112000", "2026112023"] {
            assert_eq!(p(key).key(), key);
        }
        assert_eq!(p("2026112013").etl_day().compact(), "20261120");
        assert_eq!(p("202611").etl_day().compact(), "20261101");
        assert_eq!(p("20261120").hour_key(), "2026112000");
        assert_eq!(p("2026112013").month_key(), "202611");
    }

    #[test]
    fn refuses_malformed_keys_and_names_the_forms() {
        for bad in [
            "",
            "2026",
            "202613",
            "2026112024",
            "20261131",
            "2026113100",
            "2026-11-2x",
            "20261120 ",
            "20261120130",
        ] {
            let err = Period::parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains("yyyymmddHH") && err.contains("yyyymm)"),
                "{bad}: {err}"
            );
        }
        let err = Period::parse_for("20261120", PeriodKind::Hour, "h")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "\"20261120\" is a day, but task \"h\" is hourly: give yyyymmddHH (e.g. 2026112013)"
        );
        let err = Period::parse_for("2026112013", PeriodKind::Month, "m")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is an hour, but task \"m\" is monthly: give yyyymm"),
            "{err}"
        );
    }

    #[test]
    fn containing_and_parts_roll_up_and_down() {
        assert_eq!(p("2026112013").containing(PeriodKind::Day), p("20261120"));
        assert_eq!(p("2026112013").containing(PeriodKind::Month), p("202611"));
        assert_eq!(p("20261120").containing(PeriodKind::Month), p("202611"));
        assert_eq!(p("20261120").containing(PeriodKind::Hour), p("20261120"));
        let hours = p("20261120").parts(PeriodKind::Hour, chrono_tz::UTC);
        assert_eq!(hours.len(), 24);
        assert_eq!(
            (hours[0].key(), hours[23].key()),
            ("2026112000".into(), "2026112023".into())
        );
        assert_eq!(p("202611").parts(PeriodKind::Day, chrono_tz::UTC).len(), 30);
        assert_eq!(p("202402").parts(PeriodKind::Day, chrono_tz::UTC).len(), 29);
        assert_eq!(p("202611").parts(PeriodKind::Hour, chrono_tz::UTC).len(), 720);
        assert_eq!(
            p("20261120").parts(PeriodKind::Month, chrono_tz::UTC),
            [p("202611")]
        );
    }

    #[test]
    fn daylight_saving_days_have_23_and_24_hour_periods() {
        // Spring forward: 02:00 never happens in New York on 2026-03-08.
        let spring = p("20260308").parts(PeriodKind::Hour, NEW_YORK);
        assert_eq!(spring.len(), 23);
        assert!(!keys(&spring).contains(&"2026030802".to_string()));
        // Fall back: 01:00 happens twice on 2026-11-01, and is one period.
        let fall = p("20261101").parts(PeriodKind::Hour, NEW_YORK);
        assert_eq!(fall.len(), 24);
        assert_eq!(keys(&fall).iter().filter(|k| *k == "2026110101").count(), 1);
        // Stepping over the missing hour, both ways.
        assert_eq!(p("2026030803").offset(-1, NEW_YORK), p("2026030801"));
        assert_eq!(p("2026030801").offset(1, NEW_YORK), p("2026030803"));
        assert_eq!(p("2026030801").offset(1, chrono_tz::UTC), p("2026030802"));
        assert_eq!(Period::range(p("2026030800"), p("2026030805"), NEW_YORK).len(), 5);
    }

    #[test]
    fn offsets_cross_days_months_and_years() {
        let utc = chrono_tz::UTC;
        assert_eq!(p("2026010100").offset(-1, utc), p("2025123123"));
        assert_eq!(p("2025123123").offset(1, utc), p("2026010100"));
        assert_eq!(p("2026112013").offset(-25, utc), p("2026111912"));
        assert_eq!(p("20260101").offset(-1, utc), p("20251231"));
        assert_eq!(p("202601").offset(-1, utc), p("202512"));
        assert_eq!(p("202601").offset(13, utc), p("202702"));
        assert_eq!(
            keys(&Period::range(p("202611"), p("202702"), utc)),
            ["202611", "202612", "202701", "202702"]
        );
        assert!(Period::range(p("20261102"), p("20261101"), utc).is_empty());
    }

    #[test]
    fn overlaps_across_kinds() {
        assert!(p("202611").overlaps(p("20261130")));
        assert!(!p("202611").overlaps(p("20261201")));
        assert!(p("20261120").overlaps(p("2026112023")));
        assert!(!p("20261120").overlaps(p("2026112100")));
    }

    #[test]
    fn period_kinds_parse_and_order_fine_to_coarse() {
        assert_eq!(PeriodKind::parse("hour"), Ok(PeriodKind::Hour));
        assert!(
            PeriodKind::parse("week")
                .unwrap_err()
                .contains("not one of hour, day, month")
        );
        assert!(PeriodKind::Hour < PeriodKind::Day && PeriodKind::Day < PeriodKind::Month);
    }
}
