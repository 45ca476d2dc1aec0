//! Where an instance's time went (issue 19): the phases of its life and the milliseconds it
//! spent in each.
//!
//! An instance is always in one phase, entered at a known time. A transition leaves that
//! phase: the time since it was entered is added to the phase's total, and the next phase
//! starts now. So the totals of a finished run add up exactly to the time from the run's
//! start to its finish, and an unfinished one's current phase counts up to now.
//!
//! The store applies [`Timings::leave`] inside the UPDATE that changes the state (one SQL
//! expression per phase, built from [`RECORDED`]), so no transition costs an extra statement;
//! this module is the rule it follows, and what the readers use to count up to now.

use std::fmt;

use serde::Serialize;

use crate::InstanceState;

/// A phase of an instance's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting: its upstreams have not all succeeded (or its task is paused).
    WaitingUpstreams,
    /// Queued, but held back because its pool or its task's `max_active` is full.
    WaitingSlots,
    /// Queued with a dispatch on its way: no agent has claimed it yet.
    Queued,
    /// Claimed by an agent, command not started yet. goflow's claim hands the agent the
    /// command and the agent starts it at once, so today no instance stays here.
    Claimed,
    /// A try runs.
    Running,
    /// A try failed; the next one waits for the task's retry delay.
    RetryDelay,
    /// The run ended (success, failed, killed, or marked success): time stops.
    Done,
}

/// The phases that have a total, in the order they are shown.
pub const RECORDED: [Phase; 6] = [
    Phase::WaitingUpstreams,
    Phase::WaitingSlots,
    Phase::Queued,
    Phase::Claimed,
    Phase::Running,
    Phase::RetryDelay,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingUpstreams => "waiting_upstreams",
            Self::WaitingSlots => "waiting_slots",
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Running => "running",
            Self::RetryDelay => "retry_delay",
            Self::Done => "done",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        RECORDED
            .into_iter()
            .chain([Self::Done])
            .find(|p| p.as_str() == name)
    }

    /// The store's column that holds this phase's total (None for `Done`).
    pub fn column(self) -> Option<&'static str> {
        Some(match self {
            Self::WaitingUpstreams => "ms_waiting_upstreams",
            Self::WaitingSlots => "ms_waiting_slots",
            Self::Queued => "ms_queued",
            Self::Claimed => "ms_claimed",
            Self::Running => "ms_running",
            Self::RetryDelay => "ms_retry_delays",
            Self::Done => return None,
        })
    }

    /// The phase an instance in `state` is in; `held`: a queued one is held back by its pool
    /// or `max_active`.
    pub fn of(state: InstanceState, held: bool) -> Self {
        match state {
            InstanceState::Waiting => Self::WaitingUpstreams,
            InstanceState::Queued if held => Self::WaitingSlots,
            InstanceState::Queued => Self::Queued,
            InstanceState::Running => Self::Running,
            InstanceState::UpForRetry => Self::RetryDelay,
            InstanceState::Success | InstanceState::Failed | InstanceState::Killed => Self::Done,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Milliseconds spent in each phase during the current run. Only durations: the JSON of
/// `status -o json` and the API carry exactly these names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    pub waiting_upstreams: i64,
    pub waiting_slots: i64,
    pub queued: i64,
    pub claimed_to_started: i64,
    pub running: i64,
    pub retry_delays: i64,
}

impl Timings {
    /// The total of `phase` (None for `Done`, which has none).
    pub fn get(&self, phase: Phase) -> Option<i64> {
        let mut copy = *self;
        copy.slot(phase).map(|ms| *ms)
    }

    fn slot(&mut self, phase: Phase) -> Option<&mut i64> {
        Some(match phase {
            Phase::WaitingUpstreams => &mut self.waiting_upstreams,
            Phase::WaitingSlots => &mut self.waiting_slots,
            Phase::Queued => &mut self.queued,
            Phase::Claimed => &mut self.claimed_to_started,
            Phase::Running => &mut self.running,
            Phase::RetryDelay => &mut self.retry_delays,
            Phase::Done => return None,
        })
    }

    /// The totals after leaving `phase`, entered at `since`, at `now`. A clock that went
    /// backwards (another coordinator's) adds nothing rather than a negative time.
    pub fn leave(mut self, phase: Phase, since: i64, now: i64) -> Self {
        if let Some(ms) = self.slot(phase) {
            *ms += (now - since).max(0);
        }
        self
    }

    /// The totals as of `now` for an instance still in `phase` since `since`: the current
    /// phase counts up to now. A finished one (`Done`) is as stored.
    pub fn as_of(self, phase: Phase, since: i64, now: i64) -> Self {
        self.leave(phase, since, now)
    }

    /// Every phase's time added up: the run's elapsed time.
    pub fn total(&self) -> i64 {
        RECORDED.iter().filter_map(|p| self.get(*p)).sum()
    }

    /// `self` plus `other`, phase by phase (a day's sum).
    pub fn plus(mut self, other: &Timings) -> Self {
        for phase in RECORDED {
            let theirs = other.get(phase).unwrap_or(0);
            if let Some(ms) = self.slot(phase) {
                *ms += theirs;
            }
        }
        self
    }
}

/// An instance's recorded timings: the phase it is in, since when, when its current run
/// began, and the totals of the phases it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTimings {
    pub phase: Phase,
    pub since: i64,
    pub run_started_at: i64,
    pub totals: Timings,
}

impl RunTimings {
    /// The totals as of `now`: the current phase counts up to now (a finished run's do not
    /// change).
    pub fn as_of(&self, now: i64) -> Timings {
        self.totals.as_of(self.phase, self.since, now)
    }
}

/// How long one try ran: from its claim to its end, or to `now` while it runs.
pub fn try_running(started_at: i64, finished_at: Option<i64>, now: i64) -> i64 {
    (finished_at.unwrap_or(now) - started_at).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a life through phases at the given times; returns the totals at the end.
    fn walk(start: i64, steps: &[(Phase, i64)]) -> Timings {
        let mut timings = Timings::default();
        let (mut phase, mut since) = (Phase::WaitingUpstreams, start);
        for &(next, at) in steps {
            timings = timings.leave(phase, since, at);
            (phase, since) = (next, at);
        }
        timings
    }

    #[test]
    fn leaving_a_phase_adds_its_time_to_that_phase_only() {
        let t = Timings::default().leave(Phase::Queued, 1_000, 1_250);
        assert_eq!(t.queued, 250);
        assert_eq!(t.total(), 250);
        assert_eq!(
            Timings::default()
                .leave(Phase::Running, 0, 10)
                .leave(Phase::Running, 20, 25)
                .running,
            15
        );
    }

    #[test]
    fn a_finished_life_adds_up_to_its_elapsed_time() {
        // Created at 100, upstreams met at 400, held by its pool until 900, claimed at 950,
        // try 1 fails at 2_950, retried at 3_950, claimed at 4_000, succeeds at 5_000.
        let t = walk(
            100,
            &[
                (Phase::Queued, 400),
                (Phase::WaitingSlots, 410),
                (Phase::Queued, 900),
                (Phase::Running, 950),
                (Phase::RetryDelay, 2_950),
                (Phase::Queued, 3_950),
                (Phase::Running, 4_000),
                (Phase::Done, 5_000),
            ],
        );
        assert_eq!(
            t,
            Timings {
                waiting_upstreams: 300,
                waiting_slots: 490,
                queued: 10 + 50 + 50,
                claimed_to_started: 0,
                running: 2_000 + 1_000,
                retry_delays: 1_000,
            }
        );
        assert_eq!(t.total(), 5_000 - 100);
    }

    #[test]
    fn done_stops_the_clock() {
        let t = walk(0, &[(Phase::Running, 10), (Phase::Done, 30)]);
        assert_eq!(t.leave(Phase::Done, 30, 1_000_000), t);
        assert_eq!(t.as_of(Phase::Done, 30, 1_000_000).total(), 30);
    }

    #[test]
    fn an_unfinished_phase_counts_up_to_now() {
        let t = walk(0, &[(Phase::Running, 10)]);
        let now = t.as_of(Phase::Running, 10, 70);
        assert_eq!(now.running, 60);
        assert_eq!(now.total(), 70);
    }

    #[test]
    fn a_clock_that_went_back_adds_nothing() {
        assert_eq!(
            Timings::default().leave(Phase::Queued, 500, 400),
            Timings::default()
        );
        assert_eq!(try_running(500, Some(400), 0), 0);
    }

    #[test]
    fn phases_follow_the_state_and_round_trip_by_name() {
        assert_eq!(Phase::of(InstanceState::Waiting, false), Phase::WaitingUpstreams);
        assert_eq!(Phase::of(InstanceState::Queued, true), Phase::WaitingSlots);
        assert_eq!(Phase::of(InstanceState::Queued, false), Phase::Queued);
        assert_eq!(Phase::of(InstanceState::UpForRetry, false), Phase::RetryDelay);
        assert_eq!(Phase::of(InstanceState::Killed, false), Phase::Done);
        for phase in RECORDED.into_iter().chain([Phase::Done]) {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("sleeping"), None);
        assert!(RECORDED.iter().all(|p| p.column().is_some()));
        assert_eq!(Phase::Done.column(), None);
    }

    #[test]
    fn days_sum_phase_by_phase() {
        let a = walk(0, &[(Phase::Running, 10), (Phase::Done, 30)]);
        let b = walk(0, &[(Phase::WaitingSlots, 5), (Phase::Done, 8)]);
        let sum = a.plus(&b);
        assert_eq!(sum.waiting_upstreams, 15);
        assert_eq!(sum.running, 20);
        assert_eq!(sum.waiting_slots, 3);
        assert_eq!(sum.total(), a.total() + b.total());
    }

    #[test]
    fn a_run_counts_its_current_phase_up_to_now() {
        let run = RunTimings {
            phase: Phase::RetryDelay,
            since: 1_000,
            run_started_at: 0,
            totals: walk(0, &[(Phase::Running, 200), (Phase::RetryDelay, 1_000)]),
        };
        let now = run.as_of(1_500);
        assert_eq!(now.retry_delays, 500);
        assert_eq!(now.total(), 1_500 - run.run_started_at);
    }

    #[test]
    fn a_try_runs_until_its_end_or_now() {
        assert_eq!(try_running(100, Some(350), 9_999), 250);
        assert_eq!(try_running(100, None, 400), 300);
    }
}
