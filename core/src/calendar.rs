//! Business calendars: which data dates count. A calendar is a set of weekdays, minus holidays
//! (`exclude`), plus make-up workdays (`include`, the weekend days that Chinese holidays move
//! work to, 调休). A task with a calendar has instances only on its days; a dependency may count
//! its offset in a calendar's days ("the previous business day").

use std::collections::BTreeSet;

use chrono::{Datelike, Weekday};
use serde::{Deserialize, Serialize};

use crate::EtlDay;
use crate::dag::is_valid_task_id;

/// How far a calendar search looks before giving up: a calendar with no day in ten years has
/// no "previous business day" to wait for.
pub const SEARCH_LIMIT_DAYS: i32 = 3660;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub id: String,
    /// Monday first, each once.
    pub weekdays: Vec<Weekday>,
    pub exclude: BTreeSet<EtlDay>,
    pub include: BTreeSet<EtlDay>,
    pub description: String,
}

/// A calendar as a DAG file writes it (and as the store keeps it, in JSON).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalendar {
    pub id: String,
    #[serde(default)]
    pub weekdays: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<EtlDay>,
    #[serde(default)]
    pub include: Vec<EtlDay>,
    #[serde(default)]
    pub description: String,
}

/// Why a day is in or out of a calendar, for `goflowctl calendars show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayVerdict {
    /// One of the calendar's weekdays, not excluded.
    Weekday,
    /// Listed in `include`: a make-up workday.
    Included,
    /// Listed in `exclude`: a holiday.
    Excluded,
    /// Not one of its weekdays.
    OffDay,
}

impl DayVerdict {
    pub fn is_in(self) -> bool {
        matches!(self, DayVerdict::Weekday | DayVerdict::Included)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DayVerdict::Weekday => "weekday",
            DayVerdict::Included => "included",
            DayVerdict::Excluded => "excluded",
            DayVerdict::OffDay => "off",
        }
    }
}

pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    let lower = text.trim().to_ascii_lowercase();
    let names = [
        ("mon", "monday", Weekday::Mon),
        ("tue", "tuesday", Weekday::Tue),
        ("wed", "wednesday", Weekday::Wed),
        ("thu", "thursday", Weekday::Thu),
        ("fri", "friday", Weekday::Fri),
        ("sat", "saturday", Weekday::Sat),
        ("sun", "sunday", Weekday::Sun),
    ];
    names
        .iter()
        .find(|(short, long, _)| lower == *short || lower == *long)
        .map(|(_, _, day)| *day)
        .ok_or_else(|| format!("weekday {text:?} is not one of mon, tue, wed, thu, fri, sat, sun"))
}

pub fn weekday_name(day: Weekday) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day.num_days_from_monday() as usize]
}

impl Calendar {
    /// Validates a calendar as written: a valid id, known weekdays, no date both excluded and
    /// included, and at least one day.
    pub fn from_raw(raw: RawCalendar) -> Result<Self, String> {
        if !is_valid_task_id(&raw.id) || raw.id == "." || raw.id == ".." {
            return Err(format!(
                "calendar id {:?} must match [A-Za-z0-9_.-]+ (at most 128 bytes)",
                raw.id
            ));
        }
        let mut weekdays = raw
            .weekdays
            .iter()
            .map(|w| parse_weekday(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("calendar {:?}: {e}", raw.id))?;
        weekdays.sort_by_key(|d| d.num_days_from_monday());
        weekdays.dedup();
        let exclude: BTreeSet<EtlDay> = raw.exclude.into_iter().collect();
        let include: BTreeSet<EtlDay> = raw.include.into_iter().collect();
        if let Some(both) = exclude.intersection(&include).next() {
            return Err(format!(
                "calendar {:?}: {both} is in both exclude and include (a day is either a holiday or a make-up workday)",
                raw.id
            ));
        }
        if weekdays.is_empty() && include.is_empty() {
            return Err(format!(
                "calendar {:?} is empty: give weekdays (e.g. [mon, tue, wed, thu, fri]) or include dates",
                raw.id
            ));
        }
        Ok(Self {
            id: raw.id,
            weekdays,
            exclude,
            include,
            description: raw.description,
        })
    }

    /// The calendar as written, for storing and exporting.
    pub fn to_raw(&self) -> RawCalendar {
        RawCalendar {
            id: self.id.clone(),
            weekdays: self
                .weekdays
                .iter()
                .map(|d| weekday_name(*d).to_string())
                .collect(),
            exclude: self.exclude.iter().copied().collect(),
            include: self.include.iter().copied().collect(),
            description: self.description.clone(),
        }
    }

    pub fn verdict(&self, day: EtlDay) -> DayVerdict {
        if self.include.contains(&day) {
            DayVerdict::Included
        } else if self.exclude.contains(&day) {
            DayVerdict::Excluded
        } else if self.weekdays.contains(&day.date().weekday()) {
            DayVerdict::Weekday
        } else {
            DayVerdict::OffDay
        }
    }

    pub fn contains(&self, day: EtlDay) -> bool {
        self.verdict(day).is_in()
    }

    /// The latest calendar day at or before `day`, if one is within the search limit.
    pub fn at_or_before(&self, day: EtlDay) -> Option<EtlDay> {
        (0..=SEARCH_LIMIT_DAYS)
            .map(|back| day.offset(-back))
            .find(|d| self.contains(*d))
    }

    /// The earliest calendar day at or after `day`, if one is within the search limit.
    pub fn at_or_after(&self, day: EtlDay) -> Option<EtlDay> {
        (0..=SEARCH_LIMIT_DAYS)
            .map(|ahead| day.offset(ahead))
            .find(|d| self.contains(*d))
    }

    /// `offset` calendar days from `day` (offsets are 0 or negative): 0 is `day` itself when it
    /// is in the calendar, else the calendar day before it; -1 is the calendar day before `day`
    /// ("the previous business day", whether or not `day` is one), and so on.
    pub fn offset(&self, day: EtlDay, offset: i32) -> Option<EtlDay> {
        let mut found = self.at_or_before(day)?;
        let mut steps = offset.unsigned_abs();
        if offset < 0 && found == day {
            // `day` itself is in the calendar; the offset counts from it.
        } else if offset < 0 {
            // `day` is out: the day found is already the first one before it.
            steps -= 1;
        }
        for _ in 0..steps {
            found = self.at_or_before(found.offset(-1))?;
        }
        Some(found)
    }

    /// Every day of `year` with its verdict.
    pub fn year(&self, year: i32) -> Vec<(EtlDay, DayVerdict)> {
        let Some(first) = chrono::NaiveDate::from_ymd_opt(year, 1, 1) else {
            return vec![];
        };
        first
            .iter_days()
            .take_while(|d| d.year() == year)
            .map(|d| (EtlDay::from_date(d), self.verdict(EtlDay::from_date(d))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> EtlDay {
        EtlDay::parse(s).unwrap()
    }

    fn raw(id: &str, weekdays: &[&str], exclude: &[&str], include: &[&str]) -> RawCalendar {
        RawCalendar {
            id: id.into(),
            weekdays: weekdays.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| day(s)).collect(),
            include: include.iter().map(|s| day(s)).collect(),
            description: String::new(),
        }
    }

    /// China's 2026 National Day week as the issue gives it.
    pub(crate) fn cn_workday() -> Calendar {
        Calendar::from_raw(raw(
            "cn_workday",
            &["mon", "tue", "wed", "thu", "fri"],
            &["20261001", "20261002", "20261005", "20261006", "20261007"],
            &["20260927", "20261010"],
        ))
        .unwrap()
    }

    #[test]
    fn weekdays_holidays_and_make_up_days() {
        let cal = cn_workday();
        assert!(cal.contains(day("20260930")), "a Wednesday");
        assert!(!cal.contains(day("20261001")), "a holiday");
        assert!(cal.contains(day("20260927")), "a make-up Sunday");
        assert!(cal.contains(day("20261010")), "a make-up Saturday");
        assert!(!cal.contains(day("20261011")), "a Sunday");
        assert_eq!(cal.verdict(day("20261005")), DayVerdict::Excluded);
        assert_eq!(cal.verdict(day("20261004")), DayVerdict::OffDay);
        assert_eq!(cal.verdict(day("20261010")), DayVerdict::Included);
    }

    #[test]
    fn previous_business_day_skips_the_holiday_week() {
        let cal = cn_workday();
        assert_eq!(cal.offset(day("20261008"), -1), Some(day("20260930")));
        assert_eq!(cal.offset(day("20261008"), 0), Some(day("20261008")));
        assert_eq!(cal.offset(day("20261012"), -1), Some(day("20261010")));
        assert_eq!(cal.offset(day("20261012"), -2), Some(day("20261009")));
        // From a day outside the calendar, -1 is the last calendar day before it.
        assert_eq!(cal.offset(day("20261003"), -1), Some(day("20260930")));
        assert_eq!(cal.offset(day("20261003"), 0), Some(day("20260930")));
        assert_eq!(cal.offset(day("20261003"), -2), Some(day("20260929")));
        assert_eq!(cal.at_or_after(day("20261001")), Some(day("20261008")));
    }

    #[test]
    fn a_calendar_of_only_included_days_ends() {
        let cal = Calendar::from_raw(raw("closes", &[], &[], &["20260105"])).unwrap();
        assert_eq!(cal.offset(day("20260110"), -1), Some(day("20260105")));
        assert_eq!(cal.offset(day("20260110"), -2), None);
        assert_eq!(cal.at_or_before(day("20260101")), None);
    }

    #[test]
    fn bad_calendars_are_refused_with_the_reason() {
        let err = Calendar::from_raw(raw("c", &["mon"], &["20261001"], &["20261001"])).unwrap_err();
        assert!(err.contains("20261001 is in both exclude and include"), "{err}");
        let err = Calendar::from_raw(raw("c", &[], &["20261001"], &[])).unwrap_err();
        assert!(err.contains("calendar \"c\" is empty"), "{err}");
        let err = Calendar::from_raw(raw("c", &["mon", "funday"], &[], &[])).unwrap_err();
        assert!(err.contains("\"funday\" is not one of mon"), "{err}");
        let err = Calendar::from_raw(raw("..", &["mon"], &[], &[])).unwrap_err();
        assert!(err.contains("calendar id"), "{err}");
        let full = Calendar::from_raw(raw("c", &["Monday", "sun", "mon"], &[], &[])).unwrap();
        assert_eq!(full.weekdays, [Weekday::Mon, Weekday::Sun]);
    }

    #[test]
    fn a_year_lists_every_day() {
        let year = cn_workday().year(2026);
        assert_eq!(year.len(), 365);
        let in_days = year.iter().filter(|(_, v)| v.is_in()).count();
        // 261 weekdays in 2026, minus 5 holidays, plus 2 make-up days.
        assert_eq!(in_days, 261 - 5 + 2);
    }
}
