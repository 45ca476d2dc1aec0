//! The instance state machine. The store applies each transition as a compare-and-set on the
//! state it expects, so two actors never both win; this module says which moves are legal.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstanceState {
    /// Dependencies not met yet (or paused, or behind a failed upstream).
    Waiting,
    /// Ready; a dispatch is on its way to an agent.
    Queued,
    Running,
    /// A try failed and another will be queued after the retry delay.
    UpForRetry,
    Success,
    Failed,
    Killed,
}

pub const ALL_STATES: [InstanceState; 7] = [
    InstanceState::Waiting,
    InstanceState::Queued,
    InstanceState::Running,
    InstanceState::UpForRetry,
    InstanceState::Success,
    InstanceState::Failed,
    InstanceState::Killed,
];

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::UpForRetry => "up_for_retry",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        ALL_STATES.into_iter().find(|s| s.as_str() == name)
    }

    /// Nothing more will happen without an operator.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Killed)
    }

    /// A try is live or about to be: redoing it now would make two runs.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every upstream succeeded (and the task is not paused).
    DependenciesMet,
    /// An agent claimed the queued try.
    Claimed,
    Succeeded,
    /// The try failed (exit code, timeout); `retry` when tries are left.
    TryFailed {
        retry: bool,
    },
    /// The retry delay is over.
    RetryDue,
    /// The agent running the try was declared dead; `requeue` while re-dispatches are left.
    AgentLost {
        requeue: bool,
    },
    /// An operator killed it.
    Kill,
    /// An operator set it to success without running it.
    MarkSuccess,
    /// An operator asked for it to run again; `ready` when its dependencies are met (or forced).
    Redo {
        ready: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} an instance that is {from}")]
pub struct TransitionError {
    pub from: InstanceState,
    pub event: &'static str,
}

impl Event {
    fn verb(self) -> &'static str {
        match self {
            Self::DependenciesMet => "queue",
            Self::Claimed => "start",
            Self::Succeeded => "succeed",
            Self::TryFailed { .. } => "fail",
            Self::RetryDue => "retry",
            Self::AgentLost { .. } => "recover",
            Self::Kill => "kill",
            Self::MarkSuccess => "mark success",
            Self::Redo { .. } => "redo",
        }
    }
}

/// The state after `event`, or why the event does not apply.
pub fn transition(from: InstanceState, event: Event) -> Result<InstanceState, TransitionError> {
    use Event::*;
    use InstanceState::*;
    let to = match (from, event) {
        (Waiting, DependenciesMet) => Queued,
        (Queued, Claimed) => Running,
        (Running, Succeeded) => Success,
        (Running, TryFailed { retry: true }) => UpForRetry,
        (Running, TryFailed { retry: false }) => Failed,
        (UpForRetry, RetryDue) => Queued,
        (Running, AgentLost { requeue: true }) => Queued,
        (Running, AgentLost { requeue: false }) => Failed,
        (Waiting | Queued | Running | UpForRetry, Kill) => Killed,
        (Waiting | Queued | UpForRetry | Failed | Killed | Success, MarkSuccess) => Success,
        (Waiting | UpForRetry | Success | Failed | Killed, Redo { ready }) => {
            if ready {
                Queued
            } else {
                Waiting
            }
        }
        _ => {
            return Err(TransitionError {
                from,
                event: event.verb(),
            });
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::Event::*;
    use super::InstanceState::*;
    use super::*;

    const EVENTS: [Event; 13] = [
        DependenciesMet,
        Claimed,
        Succeeded,
        TryFailed { retry: true },
        TryFailed { retry: false },
        RetryDue,
        AgentLost { requeue: true },
        AgentLost { requeue: false },
        Kill,
        MarkSuccess,
        Redo { ready: true },
        Redo { ready: false },
        Claimed,
    ];

    #[test]
    fn names_round_trip() {
        for state in ALL_STATES {
            assert_eq!(InstanceState::parse(state.as_str()), Some(state));
        }
        assert_eq!(InstanceState::parse("timed_out"), None);
    }

    #[test]
    fn a_run_goes_through_its_states() {
        let mut s = Waiting;
        for (event, expected) in [
            (DependenciesMet, Queued),
            (Claimed, Running),
            (TryFailed { retry: true }, UpForRetry),
            (RetryDue, Queued),
            (Claimed, Running),
            (Succeeded, Success),
        ] {
            s = transition(s, event).unwrap();
            assert_eq!(s, expected);
        }
    }

    #[test]
    fn finished_states_only_leave_through_an_operator() {
        for from in [Success, Failed, Killed] {
            for event in EVENTS {
                let allowed = matches!(event, MarkSuccess | Redo { .. });
                assert_eq!(transition(from, event).is_ok(), allowed, "{from} {event:?}");
            }
        }
    }

    #[test]
    fn a_running_try_cannot_be_redone_or_forced() {
        let err = transition(Running, Redo { ready: true }).unwrap_err();
        assert_eq!(err.to_string(), "cannot redo an instance that is running");
        assert!(transition(Running, MarkSuccess).is_err());
        assert!(transition(Queued, Redo { ready: true }).is_err());
        assert_eq!(transition(Running, Kill), Ok(Killed));
    }

    #[test]
    fn only_a_running_try_reports() {
        for from in ALL_STATES {
            for event in [Succeeded, TryFailed { retry: true }, AgentLost { requeue: true }] {
                assert_eq!(
                    transition(from, event).is_ok(),
                    from == Running,
                    "{from} {event:?}"
                );
            }
        }
        assert!(
            transition(Killed, Succeeded).is_err(),
            "a late success never overwrites a kill"
        );
    }

    #[test]
    fn retries_exhausted_fail() {
        assert_eq!(transition(Running, TryFailed { retry: false }), Ok(Failed));
        assert_eq!(transition(Running, AgentLost { requeue: false }), Ok(Failed));
    }
}
