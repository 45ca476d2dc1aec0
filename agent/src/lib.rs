//! goflow agent: takes dispatches from the queue when it has a free slot, claims them from the
//! coordinator over gRPC (in-process when embedded in one), runs each command in its own
//! process group, streams its output and reports the outcome. It knows nothing about DAGs.

mod agent;
pub mod cli;
mod drain;
pub mod failover;
mod logs;
pub mod metrics;
mod plumbing;
pub mod queue;
pub mod redis_queue;
pub mod runner;
mod spool;

pub use agent::{AgentConfig, CoordinatorClient, LocalCoordinator, run_agent, run_agent_until};
pub use drain::{DEFAULT_DRAIN_TIMEOUT, Stop};
pub use failover::ClientTls;
pub use metrics::AgentMetrics;
pub use queue::{DispatchQueue, MemoryQueue};
pub use redis_queue::RedisQueue;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod handoff_tests;
