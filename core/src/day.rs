//! Data dates (`etl_day`): written `yyyymmdd`, read as `yyyymmdd` or `yyyy-mm-dd`.

use std::fmt;

use chrono::{Datelike, Days, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One data date. Ordered, copyable, always a real calendar day.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtlDay(NaiveDate);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date {input:?}: expected yyyymmdd or yyyy-mm-dd{detail}")]
pub struct DayError {
    input: String,
    detail: String,
}

impl EtlDay {
    pub fn from_date(date: NaiveDate) -> Self {
        Self(date)
    }

    /// Parses `yyyymmdd` or `yyyy-mm-dd`, nothing else (no spaces, no other separators).
    pub fn parse(input: &str) -> Result<Self, DayError> {
        let fail = |detail: &str| DayError {
            input: input.to_string(),
            detail: detail.to_string(),
        };
        let digits: String = match input.len() {
            8 => input.to_string(),
            10 if input.as_bytes()[4] == b'-' && input.as_bytes()[7] == b'-' => {
                format!("{}{}{}", &input[..4], &input[5..7], &input[8..])
            }
            _ => return Err(fail("")),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(""));
        }
        let year: i32 = digits[..4].parse().map_err(|_| fail(""))?;
        let month: u32 = digits[4..6].parse().map_err(|_| fail(""))?;
        let day: u32 = digits[6..].parse().map_err(|_| fail(""))?;
        if year < 1000 {
            return Err(fail(" (year before 1000)"));
        }
        NaiveDate::from_ymd_opt(year, month, day)
            .map(Self)
            .ok_or_else(|| fail(" (no such day in the calendar)"))
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }

    /// `yyyymmdd`, the stored and displayed form.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.0.year(), self.0.month(), self.0.day())
    }

    /// `yyyy-mm-dd`.
    pub fn dashed(self) -> String {
        format!("{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }

    /// The day `days` later (or earlier, when negative).
    pub fn offset(self, days: i32) -> Self {
        let magnitude = Days::new(days.unsigned_abs() as u64);
        let moved = if days >= 0 {
            self.0.checked_add_days(magnitude)
        } else {
            self.0.checked_sub_days(magnitude)
        };
        Self(moved.expect("etl_day offset stays within chrono's range"))
    }

    /// Every day from `from` to `to`, both included; empty when `from > to`.
    pub fn range(from: Self, to: Self) -> impl Iterator<Item = EtlDay> {
        let mut next = Some(from).filter(|d| *d <= to);
        std::iter::from_fn(move || {
            let day = next?;
            next = Some(day.offset(1)).filter(|d| *d <= to);
            Some(day)
        })
    }

    /// Number of days from `self` to `other` (positive when `other` is later).
    pub fn days_until(self, other: Self) -> i64 {
        (other.0 - self.0).num_days()
    }
}

impl fmt::Display for EtlDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.compact())
    }
}

impl fmt::Debug for EtlDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtlDay({})", self.compact())
    }
}

impl std::str::FromStr for EtlDay {
    type Err = DayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EtlDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.compact())
    }
}

impl<'de> Deserialize<'de> for EtlDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // YAML reads 20260101 as a number; accept both it and strings.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        EtlDay::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> EtlDay {
        EtlDay::parse(s).unwrap()
    }

    #[test]
    fn parses_both_forms_and_prints_compact() {
        assert_eq!(day("20260131").compact(), "20260131");
        assert_eq!(day("2026-01-31").compact(), "20260131");
        assert_eq!(day("2026-01-31").dashed(), "2026-01-31");
        assert_eq!(day("2024-02-29").to_string(), "20240229");
    }

    #[test]
    fn refuses_malformed_and_impossible_dates() {
        for bad in [
            "",
            "2026131",
            "202601311",
            "2026/01/31",
            "2026-1-31",
            "20260230",
            "20261301",
            "2026013a",
            " 20260131",
            "2026-01-3x",
            "00000101",
            "20250229",
            "+0260131",
        ] {
            let err = EtlDay::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid date"), "{bad}: {err}");
        }
        assert!(
            EtlDay::parse("20260230")
                .unwrap_err()
                .to_string()
                .contains("no such day")
        );
    }

    #[test]
    fn offsets_cross_months_years_and_leap_days() {
        assert_eq!(day("20260101").offset(-1), day("20251231"));
        assert_eq!(day("20240228").offset(1), day("20240229"));
        assert_eq!(day("20240301").offset(-1), day("20240229"));
        assert_eq!(day("20260131").offset(0), day("20260131"));
        assert_eq!(day("20260101").offset(365), day("20270101"));
        assert_eq!(day("20260101").days_until(day("20260201")), 31);
    }

    #[test]
    fn range_is_inclusive_and_empty_when_reversed() {
        let days: Vec<String> = EtlDay::range(day("20251230"), day("20260102"))
            .map(|d| d.compact())
            .collect();
        assert_eq!(days, ["20251230", "20251231", "20260101", "20260102"]);
        assert_eq!(EtlDay::range(day("20260102"), day("20260101")).count(), 0);
        assert_eq!(EtlDay::range(day("20260102"), day("20260102")).count(), 1);
    }

    #[test]
    fn deserializes_from_numbers_and_strings() {
        let from_number: EtlDay = serde_json::from_str("20260101").unwrap();
        let from_text: EtlDay = serde_json::from_str("\"2026-01-01\"").unwrap();
        assert_eq!(from_number, from_text);
        assert!(serde_json::from_str::<EtlDay>("\"2026-13-01\"").is_err());
    }
}
