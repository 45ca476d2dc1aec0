//! goflow agent: takes dispatches from the queue when it has a free slot, claims them from the
//! coordinator over gRPC, runs each command in its own process group, streams its output and
//! reports the outcome. It knows nothing about DAGs.

pub mod queue;
