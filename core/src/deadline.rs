//! A task's deadline (SLA): "the instance of data date D must succeed by HH:MM in a timezone
//! on D + day_offset". In the DAG file:
//!
//! ```yaml
//! deadline: {time: "08:00", timezone: Asia/Shanghai, day_offset: 1}
//! deadline: "08:00 Asia/Shanghai +1"     # the same, as one string
//! deadline: "08:00"                      # the task's timezone, D+1
//! ```
//!
//! `timezone` defaults to the task's timezone and `day_offset` to 1 (the morning after the data
//! date). Stored and shown as the one-string form `HH:MM TZ +N`.

use chrono::{NaiveTime, TimeZone};

use crate::EtlDay;
use crate::schedule::parse_timezone;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Hour and minute of the day, in `timezone`.
    pub hour: u32,
    pub minute: u32,
    /// Seconds are allowed (`HH:MM:SS`) but rarely useful; shown only when not zero.
    pub second: u32,
    pub timezone: String,
    /// Days after the data date (0..=366).
    pub day_offset: i32,
}

impl Deadline {
    /// Checks every part: `time` as `HH:MM` (24-hour), a known IANA timezone, an offset of
    /// 0..=366 days.
    pub fn new(time: &str, timezone: &str, day_offset: i32) -> Result<Self, String> {
        let parsed = NaiveTime::parse_from_str(time.trim(), "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(time.trim(), "%H:%M:%S"))
            .map_err(|_| format!("time {time:?} is not HH:MM (24-hour, e.g. \"08:00\")"))?;
        use chrono::Timelike;
        parse_timezone(timezone).map_err(|e| format!("timezone: {e}"))?;
        if !(0..=366).contains(&day_offset) {
            return Err(format!(
                "day_offset {day_offset} is out of range (0..=366 days after the data date)"
            ));
        }
        Ok(Self {
            hour: parsed.hour(),
            minute: parsed.minute(),
            second: parsed.second(),
            timezone: timezone.to_string(),
            day_offset,
        })
    }

    /// `HH:MM[ TZ][ +N]`; the timezone defaults to `default_timezone`, N to 1.
    pub fn parse(text: &str, default_timezone: &str) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let time = parts
            .next()
            .ok_or_else(|| "is empty (write e.g. \"08:00 Asia/Shanghai +1\")".to_string())?;
        let mut timezone = default_timezone.to_string();
        let mut day_offset = 1;
        for part in parts {
            if let Some(n) = part.strip_prefix('+') {
                day_offset = n
                    .parse()
                    .map_err(|_| format!("{part:?} is not a day offset (write +0, +1, ...)"))?;
            } else {
                timezone = part.to_string();
            }
        }
        Self::new(time, &timezone, day_offset)
    }

    /// When the instance of `etl_day` must have succeeded, in epoch milliseconds. A local time
    /// that does not exist (a DST gap) moves to the next one that does; an ambiguous one takes
    /// the earlier.
    pub fn due_at(&self, etl_day: EtlDay) -> i64 {
        let tz = parse_timezone(&self.timezone).unwrap_or(chrono_tz::UTC);
        let date = etl_day.offset(self.day_offset).date();
        let mut local = date
            .and_hms_opt(self.hour, self.minute, self.second)
            .expect("validated time");
        for _ in 0..4 {
            if let Some(at) = tz.from_local_datetime(&local).earliest() {
                return at.timestamp_millis();
            }
            local += chrono::Duration::minutes(30);
        }
        chrono::Utc.from_utc_datetime(&local).timestamp_millis()
    }

    /// The latest data date whose deadline has passed at `now_ms`, if any date's has.
    pub fn latest_due_day(&self, now_ms: i64) -> EtlDay {
        let tz = parse_timezone(&self.timezone).unwrap_or(chrono_tz::UTC);
        let now = chrono::Utc
            .timestamp_millis_opt(now_ms)
            .single()
            .unwrap_or_default()
            .with_timezone(&tz);
        let mut day = EtlDay::from_date(now.date_naive()).offset(-self.day_offset);
        // At most two steps: today's deadline may not have come yet.
        while self.due_at(day) > now_ms {
            day = day.offset(-1);
        }
        day
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)?;
        if self.second != 0 {
            write!(f, ":{:02}", self.second)?;
        }
        write!(f, " {} +{}", self.timezone, self.day_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> EtlDay {
        EtlDay::parse(s).unwrap()
    }

    fn utc_ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn due_at_is_the_local_time_on_the_offset_day() {
        let d = Deadline::new("08:00", "Asia/Shanghai", 1).unwrap();
        // 08:00 in Shanghai (UTC+8) on 2024-03-02 is 00:00 UTC.
        assert_eq!(d.due_at(day("20240301")), utc_ms("2024-03-02T00:00:00Z"));
        let same_day = Deadline::new("23:30", "UTC", 0).unwrap();
        assert_eq!(same_day.due_at(day("20241231")), utc_ms("2024-12-31T23:30:00Z"));
        let later = Deadline::new("06:15", "UTC", 2).unwrap();
        assert_eq!(later.due_at(day("20241231")), utc_ms("2025-01-02T06:15:00Z"));
    }

    #[test]
    fn due_at_follows_daylight_saving() {
        let d = Deadline::new("08:00", "Europe/Berlin", 1).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(d.due_at(day("20240115")), utc_ms("2024-01-16T07:00:00Z"));
        assert_eq!(d.due_at(day("20240715")), utc_ms("2024-07-16T06:00:00Z"));
        // 02:30 does not exist on 2024-03-31 in Berlin: it moves to 03:00 (UTC+2) = 01:00 UTC.
        let gap = Deadline::new("02:30", "Europe/Berlin", 1).unwrap();
        assert_eq!(gap.due_at(day("20240330")), utc_ms("2024-03-31T01:00:00Z"));
    }

    #[test]
    fn latest_due_day_is_the_last_date_whose_deadline_passed() {
        let d = Deadline::new("08:00", "Asia/Shanghai", 1).unwrap();
        // 07:59 Shanghai on 03-02: the deadline of 03-01 has not passed, that of 02-29 has.
        assert_eq!(d.latest_due_day(utc_ms("2024-03-01T23:59:00Z")), day("20240229"));
        assert_eq!(d.latest_due_day(utc_ms("2024-03-02T00:00:00Z")), day("20240301"));
        let same_day = Deadline::new("18:00", "UTC", 0).unwrap();
        assert_eq!(
            same_day.latest_due_day(utc_ms("2024-03-02T17:00:00Z")),
            day("20240301")
        );
        assert_eq!(
            same_day.latest_due_day(utc_ms("2024-03-02T18:00:00Z")),
            day("20240302")
        );
    }

    #[test]
    fn text_form_round_trips_and_defaults() {
        let d = Deadline::parse("08:00 Asia/Shanghai +1", "UTC").unwrap();
        assert_eq!(d, Deadline::new("08:00", "Asia/Shanghai", 1).unwrap());
        assert_eq!(d.to_string(), "08:00 Asia/Shanghai +1");
        assert_eq!(Deadline::parse(&d.to_string(), "UTC").unwrap(), d);
        let short = Deadline::parse("7:05", "Europe/Paris").unwrap();
        assert_eq!(short.to_string(), "07:05 Europe/Paris +1");
        let seconds = Deadline::parse("07:05:09 UTC +0", "UTC").unwrap();
        assert_eq!(seconds.to_string(), "07:05:09 UTC +0");
        assert_eq!(
            seconds.due_at(EtlDay::parse("20240101").unwrap()),
            utc_ms("2024-01-01T07:05:09Z")
        );
    }

    #[test]
    fn bad_parts_are_named() {
        assert!(Deadline::new("25:00", "UTC", 1).unwrap_err().contains("HH:MM"));
        assert!(Deadline::new("8am", "UTC", 1).unwrap_err().contains("HH:MM"));
        assert!(
            Deadline::new("08:00", "Mars/Olympus", 1)
                .unwrap_err()
                .contains("timezone")
        );
        assert!(
            Deadline::new("08:00", "UTC", -1)
                .unwrap_err()
                .contains("day_offset")
        );
        assert!(Deadline::parse("08:00 UTC +x", "UTC").unwrap_err().contains("+x"));
    }
}
