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

#[cfg(test)]
mod proptests;

pub use dag::{Dag, DagError, Dependency, InstanceKey, TaskSpec};
pub use day::{DayError, EtlDay};
pub use deadline::Deadline;
pub use dispatch::{Dispatch, TryOutcome};
pub use role::Role;
pub use schedule::Schedule;
pub use state::{Event, InstanceState, transition};
