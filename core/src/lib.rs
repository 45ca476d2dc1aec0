//! goflow's domain, pure and synchronous: data dates and periods, calendars, command
//! templating, the DAG and its closures, cron schedules, and the instance state machine. No I/O; time is passed in.

pub mod backfill;
pub mod calendar;
pub mod catchup;
pub mod dag;
pub mod dagfile;
pub mod day;
pub mod deadline;
pub mod dispatch;
pub mod eta;
pub mod explain;
pub mod period;
pub mod pools;
pub mod redact;
pub mod retention;
pub mod role;
pub mod schedule;
pub mod state;
pub mod template;
pub mod text;
pub mod timings;
pub mod versions;

#[cfg(test)]
mod proptests;

pub use calendar::Calendar;
pub use catchup::CatchUp;
pub use dag::{Dag, DagError, Dependency, InstanceKey, TaskSpec};
pub use day::{DayError, EtlDay};
pub use deadline::Deadline;
pub use dispatch::{Dispatch, TryOutcome};
pub use period::{Period, PeriodError, PeriodKind};
pub use pools::{PoolSpec, PoolUsage};
pub use redact::redact_url;
pub use role::Role;
pub use schedule::Schedule;
pub use state::{Event, InstanceState, transition};

/// A count and its English noun: `1 instance`, `2 instances`, `0 days`.
pub fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn plural() {
        assert_eq!(super::plural(0, "instance"), "0 instances");
        assert_eq!(super::plural(1, "instance"), "1 instance");
        assert_eq!(super::plural(87, "day"), "87 days");
    }
}
