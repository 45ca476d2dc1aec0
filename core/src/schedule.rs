//! Cron schedules: next fire times in a timezone, the etl_day of a fire, catch-up after downtime.
//!
//! croner, not the `cron` crate: measured on DST days, `cron` skips a 02:30 job on the
//! spring-forward day and runs it twice on the fall-back day, and refuses 5-field crontab
//! lines; croner runs it once each day (at 03:00 on spring-forward) and takes 5 or 6 fields,
//! which is what "like crontab" promises.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::{EtlDay, Period, PeriodKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("bad cron expression {expr:?}: {reason} (use 5 fields, or 6 with seconds first)")]
    BadCron { expr: String, reason: String },
    #[error("unknown timezone {0:?} (use an IANA name such as UTC or Asia/Shanghai)")]
    BadTimezone(String),
}

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    timezone: Tz,
    day_offset: i32,
}

/// What a schedule must do now, given when it last fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The one fire to run now, if any is due (the latest one, when several were missed).
    pub due: Option<DateTime<Utc>>,
    /// Fires that were missed and are not run, because only the latest is caught up.
    pub skipped: u32,
    /// The first fire after `now`.
    pub next: Option<DateTime<Utc>>,
}

pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::BadTimezone(name.to_string()))
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str, day_offset: i32) -> Result<Self, ScheduleError> {
        let bad = |reason: String| ScheduleError::BadCron {
            expr: expr.to_string(),
            reason,
        };
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(bad(format!("{fields} fields")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            cron,
            timezone: parse_timezone(timezone)?,
            day_offset,
        })
    }

    /// The first fire strictly after `after`.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// etl_day of a fire: its date on the schedule's wall clock, plus the day offset.
    pub fn etl_day_of(&self, fire: DateTime<Utc>) -> EtlDay {
        EtlDay::from_date(fire.with_timezone(&self.timezone).date_naive()).offset(self.day_offset)
    }

    /// The period of `kind` a fire creates: the one it fires in on the schedule's wall clock,
    /// plus the offset in periods of that kind (the hour before, for an hourly task's -1). The
    /// repeated hour of a fall-back day is one period, whichever of its two fires made it.
    pub fn period_of(&self, fire: DateTime<Utc>, kind: PeriodKind) -> Period {
        let local = fire.with_timezone(&self.timezone).naive_local();
        Period::of_local(local, kind).offset(self.day_offset, self.timezone)
    }

    /// Fires due in `(last_fire, now]`: the latest runs, the earlier ones are counted as
    /// skipped (caught up once, not once per missed tick). Without a `last_fire` (a new
    /// schedule) nothing is due: a schedule starts at its next time.
    pub fn plan(&self, last_fire: Option<DateTime<Utc>>, now: DateTime<Utc>) -> FirePlan {
        let next_after_now = self.next_fire_after(now);
        let Some(last) = last_fire else {
            return FirePlan {
                due: None,
                skipped: 0,
                next: next_after_now,
            };
        };
        let mut due = None;
        let mut skipped = 0u32;
        let mut cursor = last;
        // Bounded walk: a schedule every second down for a year would be 31M steps, so stop
        // counting early and jump to the latest fire before now.
        const MAX_COUNTED: u32 = 10_000;
        while let Some(fire) = self.next_fire_after(cursor) {
            if fire > now {
                break;
            }
            if due.is_some() {
                skipped += 1;
            }
            due = Some(fire);
            cursor = fire;
            if skipped >= MAX_COUNTED {
                let latest = self.latest_fire_at_or_before(now);
                if latest > due {
                    due = latest;
                }
                break;
            }
        }
        FirePlan {
            due,
            skipped,
            next: next_after_now,
        }
    }

    /// Fires in `(last_fire, now]`, oldest first, at most `limit`; true when more follow (a long
    /// downtime is worked through in batches, so one pass stays small).
    pub fn due_fires(
        &self,
        last_fire: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut due = vec![];
        let mut cursor = last_fire;
        while let Some(fire) = self.next_fire_after(cursor) {
            if fire > now {
                return (due, false);
            }
            if due.len() == limit {
                return (due, true);
            }
            due.push(fire);
            cursor = fire;
        }
        (due, false)
    }

    fn latest_fire_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_parse_others_do_not() {
        assert!(Schedule::parse("30 2 * * *", "UTC", -1).is_ok());
        assert!(Schedule::parse("*/5 30 2 * * *", "UTC", -1).is_ok());
        assert!(Schedule::parse("@daily", "UTC", -1).is_ok());
        for bad in ["", "* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "a b c d e"] {
            let err = Schedule::parse(bad, "UTC", 0).unwrap_err();
            assert!(err.to_string().contains("bad cron expression"), "{bad}: {err}");
        }
        let err = Schedule::parse("0 2 * * *", "Mars/Olympus", 0).unwrap_err();
        assert_eq!(err, ScheduleError::BadTimezone("Mars/Olympus".into()));
    }

    #[test]
    fn fires_in_its_timezone_and_computes_etl_day() {
        let s = Schedule::parse("30 2 * * *", "Asia/Shanghai", -1).unwrap();
        // 2026-03-01 02:30 in Shanghai is 2026-02-28 18:30 UTC.
        let fire = s.next_fire_after(utc("2026-02-28T12:00:00Z")).unwrap();
        assert_eq!(fire, utc("2026-02-28T18:30:00Z"));
        assert_eq!(
            s.etl_day_of(fire).compact(),
            "20260228",
            "fire date 03-01 in Shanghai, -1"
        );
    }

    #[test]
    fn dst_days_fire_once() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin", 0).unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // Spring forward 2026-03-29: 02:30 does not exist; it must still fire that day.
        let spring = s.next_fire_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            spring.with_timezone(&berlin).date_naive().to_string(),
            "2026-03-29"
        );
        // Fall back 2026-10-25: 02:30 happens twice; one fire that day, the next is the 26th.
        let first = s.next_fire_after(utc("2026-10-24T12:00:00Z")).unwrap();
        let second = s.next_fire_after(first).unwrap();
        assert_eq!(
            first.with_timezone(&berlin).date_naive().to_string(),
            "2026-10-25"
        );
        assert_eq!(
            second.with_timezone(&berlin).date_naive().to_string(),
            "2026-10-26"
        );
    }

    #[test]
    fn catch_up_runs_only_the_latest_missed_fire() {
        let s = Schedule::parse("0 * * * *", "UTC", 0).unwrap();
        let plan = s.plan(Some(utc("2026-01-01T00:00:00Z")), utc("2026-01-01T05:30:00Z"));
        assert_eq!(plan.due, Some(utc("2026-01-01T05:00:00Z")));
        assert_eq!(plan.skipped, 4);
        assert_eq!(plan.next, Some(utc("2026-01-01T06:00:00Z")));

        let on_time = s.plan(Some(utc("2026-01-01T05:00:00Z")), utc("2026-01-01T05:30:00Z"));
        assert_eq!(on_time.due, None);
        let new = s.plan(None, utc("2026-01-01T05:30:00Z"));
        assert_eq!((new.due, new.skipped), (None, 0));
    }

    #[test]
    fn due_fires_come_oldest_first_in_batches() {
        let s = Schedule::parse("0 * * * *", "UTC", 0).unwrap();
        let last = utc("2026-01-01T00:00:00Z");
        let now = utc("2026-01-01T05:30:00Z");
        let (all, more) = s.due_fires(last, now, 10);
        assert_eq!(all.len(), 5);
        assert!(!more);
        assert_eq!(
            (all[0], all[4]),
            (utc("2026-01-01T01:00:00Z"), utc("2026-01-01T05:00:00Z"))
        );
        let (batch, more) = s.due_fires(last, now, 2);
        assert_eq!(batch, all[..2]);
        assert!(more);
        let (exact, more) = s.due_fires(last, now, 5);
        assert_eq!((exact.len(), more), (5, false));
        assert_eq!(s.due_fires(now, now, 10), (vec![], false));
    }

    #[test]
    fn long_downtime_of_a_per_second_schedule_is_bounded() {
        let s = Schedule::parse("* * * * * *", "UTC", 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        let plan = s.plan(Some(now - chrono::Duration::days(1)), now);
        assert_eq!(plan.due, Some(now));
        assert!(plan.skipped >= 10_000);
    }
}
