//! The clock schedules run on: the system clock, or, for end-to-end tests only, a file whose
//! content is the current time (RFC 3339), so a test can move time by hours or days without
//! sleeping. Only the hidden `--test-clock FILE` flag selects the file: no config key or
//! environment variable can, so a production coordinator cannot pick it up by accident.
//!
//! The file clock drives cron fires and the start of a schedule (an apply); everything else
//! (heartbeats, leases, retries, timeouts) keeps the system clock.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ScheduleClock {
    #[default]
    System,
    /// Reads the time from this file at every look.
    File(PathBuf),
}

impl ScheduleClock {
    pub fn now(&self) -> anyhow::Result<DateTime<Utc>> {
        match self {
            ScheduleClock::System => Ok(Utc::now()),
            ScheduleClock::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("test clock {}", path.display()))?;
                parse(&text).with_context(|| format!("test clock {}", path.display()))
            }
        }
    }

    /// How often the cron loop looks at the clock when it has nothing due: a file clock can
    /// jump at any moment, the system clock does not.
    pub fn poll(&self) -> Option<Duration> {
        match self {
            ScheduleClock::System => None,
            ScheduleClock::File(_) => Some(Duration::from_millis(200)),
        }
    }

    pub fn is_test(&self) -> bool {
        matches!(self, ScheduleClock::File(_))
    }
}

fn parse(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{text:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_clock_reads_the_time_each_look() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock");
        let clock = ScheduleClock::File(path.clone());
        let err = clock.now().unwrap_err();
        assert!(format!("{err:#}").contains("test clock"), "{err:#}");
        std::fs::write(&path, "2026-01-01T05:00:00+08:00\n").unwrap();
        assert_eq!(clock.now().unwrap().to_rfc3339(), "2025-12-31T21:00:00+00:00");
        std::fs::write(&path, "2026-01-02T00:00:00Z").unwrap();
        assert_eq!(clock.now().unwrap().to_rfc3339(), "2026-01-02T00:00:00+00:00");
        std::fs::write(&path, "tomorrow").unwrap();
        let err = format!("{:#}", clock.now().unwrap_err());
        assert!(err.contains("\"tomorrow\" is not an RFC 3339 time"), "{err}");
        assert!(clock.is_test() && clock.poll().is_some());
        assert!(!ScheduleClock::System.is_test());
    }
}
