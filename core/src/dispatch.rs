//! What travels through the dispatch queue, and what a try's end reports: plain values, the
//! same in every queue (in-process or Redis) and on every wire.

use std::fmt;

/// "Run this try": it names an instance, a try and the coordinator epoch that queued it,
/// never a command. The agent claims it over gRPC and receives the command there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dispatch {
    pub instance_id: i64,
    pub try_number: i64,
    pub epoch: i64,
    pub queue: String,
    pub priority: i32,
}

/// How a try ended, as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    Success,
    Failed,
    TimedOut,
    Killed,
}

impl TryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TryOutcome::Success => "success",
            TryOutcome::Failed => "failed",
            TryOutcome::TimedOut => "timed_out",
            TryOutcome::Killed => "killed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Success, Self::Failed, Self::TimedOut, Self::Killed]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

impl fmt::Display for TryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_unknown_is_refused() {
        for o in [
            TryOutcome::Success,
            TryOutcome::Failed,
            TryOutcome::TimedOut,
            TryOutcome::Killed,
        ] {
            assert_eq!(TryOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(TryOutcome::parse("exploded"), None);
    }
}
