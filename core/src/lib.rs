//! goflow's domain, pure and synchronous: data dates, command templating, the DAG and its
//! closures, cron schedules, and the instance state machine. No I/O; time is passed in.

pub mod dag;
pub mod dagfile;
pub mod day;
pub mod deadline;
pub mod dispatch;
pub mod role;
pub mod schedule;
pub mod state;
pub mod template;
pub mod text;

#[cfg(test)]
mod proptests;

pub use dag::{Dag, DagError, Dependency, InstanceKey, TaskSpec};
pub use day::{DayError, EtlDay};
pub use deadline::Deadline;
pub use dispatch::{Dispatch, TryOutcome};
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
