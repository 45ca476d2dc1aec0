//! goflow coordinator: owns the state (the store), decides what runs (the engine), and serves
//! the gRPC API that agents, goflowctl and the web UI use.

pub mod agent_identity;
pub mod alerts;
pub mod archive;
pub mod auth;
pub mod clock;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod health;
pub mod in_process;
pub mod leadership;
pub mod metrics;
mod metrics_body;
pub mod node;
pub mod routing;
pub mod seed_verbs;
pub mod server;
pub mod store;
pub mod testing;
pub mod tls;
