//! Backfills (issue 19): their states and what an operator may do in each, the priority their
//! dispatches travel at, and their progress (counts, bar, throughput, ETA). Pure: counts and
//! times are passed in.

use std::collections::BTreeMap;

use crate::InstanceState;

/// What a backfill is doing. `Done` is reached on its own (nothing left to run); the rest is
/// what an operator asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillState {
    Running,
    Paused,
    Cancelled,
    Done,
}

/// An operator's verb on a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillAction {
    Pause,
    Resume,
    Cancel,
}

impl BackfillAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }
}

impl BackfillState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Paused, Self::Cancelled, Self::Done]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// The state `action` leads to, or why it cannot be done now (naming the backfill's state).
    pub fn apply(self, action: BackfillAction) -> Result<Self, String> {
        use BackfillAction::*;
        use BackfillState::*;
        match (self, action) {
            (Running, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(Running),
            (Running | Paused, Cancel) => Ok(Cancelled),
            (state, action) => Err(format!(
                "it is {}: only {} backfill can be {}",
                state.as_str(),
                match action {
                    Pause => "a running",
                    Resume => "a paused",
                    Cancel => "a running or paused",
                },
                match action {
                    Pause => "paused",
                    Resume => "resumed",
                    Cancel => "cancelled",
                }
            )),
        }
    }
}

/// The lowest priority a dispatch can have on every queue (Redis clamps scores to ±900).
const BACKFILL_BAND: i32 = -850;

/// The priority a backfill's dispatch travels at: below every scheduled run's (a task's
/// priority from -799 up), so with slots scarce cron fires and their downstreams go first.
/// Within the band, the task's own priority still orders backfills among themselves.
pub fn backfill_priority(task_priority: i32) -> i32 {
    BACKFILL_BAND + task_priority.clamp(-50, 50)
}

/// A backfill's instances by state, and what follows from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub by_state: BTreeMap<String, i64>,
}

impl Progress {
    pub fn count(&self, state: InstanceState) -> i64 {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.by_state.values().sum()
    }

    /// Ended: succeeded, failed or killed.
    pub fn finished(&self) -> i64 {
        [
            InstanceState::Success,
            InstanceState::Failed,
            InstanceState::Killed,
        ]
        .into_iter()
        .map(|s| self.count(s))
        .sum()
    }

    /// Waiting, queued, running or up for retry.
    pub fn unfinished(&self) -> i64 {
        self.total() - self.finished()
    }

    /// Finished share, 0..=1 (an empty backfill is complete).
    pub fn fraction(&self) -> f64 {
        match self.total() {
            0 => 1.0,
            total => self.finished() as f64 / total as f64,
        }
    }

    /// `[#####-----]  50% (5/10)`, `width` cells wide.
    pub fn bar(&self, width: usize) -> String {
        let fraction = self.fraction();
        let filled = ((fraction * width as f64).floor() as usize).min(width);
        format!(
            "[{}{}] {:>3}% ({}/{})",
            "#".repeat(filled),
            "-".repeat(width - filled),
            (fraction * 100.0).floor() as i64,
            self.finished(),
            self.total()
        )
    }
}

/// Instances finished per minute, from `finished` of them ending within the last `window_ms`
/// (or since the backfill started, if that is shorter). None before any time has passed.
pub fn throughput_per_minute(finished: i64, window_ms: i64) -> Option<f64> {
    (window_ms > 0).then(|| finished as f64 * 60_000.0 / window_ms as f64)
}

/// When the rest will be done at this throughput: None when nothing finishes (no estimate),
/// `now` when nothing is left.
pub fn eta_ms(unfinished: i64, per_minute: Option<f64>, now_ms: i64) -> Option<i64> {
    if unfinished <= 0 {
        return Some(now_ms);
    }
    let rate = per_minute.filter(|r| *r > 0.0)?;
    Some(now_ms + (unfinished as f64 / rate * 60_000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(pairs: &[(&str, i64)]) -> Progress {
        Progress {
            by_state: pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn actions_follow_the_states() {
        use BackfillAction::*;
        use BackfillState::*;
        assert_eq!(Running.apply(Pause), Ok(Paused));
        assert_eq!(Paused.apply(Resume), Ok(Running));
        assert_eq!(Paused.apply(Cancel), Ok(Cancelled));
        assert_eq!(Running.apply(Cancel), Ok(Cancelled));
        assert_eq!(
            Running.apply(Resume).unwrap_err(),
            "it is running: only a paused backfill can be resumed"
        );
        assert_eq!(
            Done.apply(Cancel).unwrap_err(),
            "it is done: only a running or paused backfill can be cancelled"
        );
        assert!(Cancelled.apply(Pause).is_err());
        for s in [Running, Paused, Cancelled, Done] {
            assert_eq!(BackfillState::parse(s.as_str()), Some(s));
        }
        assert_eq!(BackfillState::parse("finished"), None);
    }

    #[test]
    fn backfill_dispatches_travel_below_every_usual_priority() {
        assert!(backfill_priority(1_000_000) < -799);
        assert!(
            backfill_priority(i32::MIN) >= -900,
            "inside what Redis keeps apart"
        );
        assert!(
            backfill_priority(5) > backfill_priority(0),
            "the task's priority still orders"
        );
    }

    #[test]
    fn progress_counts_bar_and_eta() {
        let p = progress(&[("success", 4), ("failed", 1), ("running", 2), ("waiting", 3)]);
        assert_eq!((p.total(), p.finished(), p.unfinished()), (10, 5, 5));
        assert_eq!(p.bar(10), "[#####-----]  50% (5/10)");
        assert_eq!(Progress::default().bar(4), "[####] 100% (0/0)");
        let rate = throughput_per_minute(5, 120_000);
        assert_eq!(rate, Some(2.5));
        assert_eq!(eta_ms(5, rate, 1_000), Some(1_000 + 120_000));
        assert_eq!(eta_ms(0, None, 7), Some(7));
        assert_eq!(eta_ms(3, Some(0.0), 7), None, "nothing finishes: no estimate");
        assert_eq!(throughput_per_minute(3, 0), None);
    }
}
