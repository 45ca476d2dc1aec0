//! End-to-end tests: the real `goflow standalone` binary, driven by the real `goflowctl` and by
//! a gRPC client. Build the binaries first: `cargo build --workspace --bins`.

#[path = "e2e/sandbox.rs"]
mod sandbox;

#[path = "e2e/agent_identity.rs"]
mod agent_identity;
#[path = "e2e/alerts.rs"]
mod alerts;
#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/backfill.rs"]
mod backfill;
#[path = "e2e/catchup.rs"]
mod catchup;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/drain.rs"]
mod drain;
#[path = "e2e/eta.rs"]
mod eta;
#[path = "e2e/explain.rs"]
mod explain;
#[path = "e2e/frozen_agent.rs"]
mod frozen_agent;
#[path = "e2e/grpc_api.rs"]
mod grpc_api;
#[path = "e2e/ha.rs"]
mod ha;
#[path = "e2e/ha_logs.rs"]
mod ha_logs;
#[path = "e2e/handoff.rs"]
mod handoff;
#[path = "e2e/observability.rs"]
mod observability;
#[path = "e2e/operations.rs"]
mod operations;
#[path = "e2e/output.rs"]
mod output;
#[path = "e2e/periods.rs"]
mod periods;
#[path = "e2e/pools.rs"]
mod pools;
#[path = "e2e/probe.rs"]
mod probe;
#[path = "e2e/retention.rs"]
mod retention;
#[path = "e2e/runs.rs"]
mod runs;
#[path = "e2e/scheduling.rs"]
mod scheduling;
#[path = "e2e/secrets.rs"]
mod secrets;
#[path = "e2e/seed_cli.rs"]
mod seed_cli;
#[path = "e2e/seed_conf.rs"]
mod seed_conf;
#[path = "e2e/terms.rs"]
mod terms;
#[path = "e2e/timings.rs"]
mod timings;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/tls_stores.rs"]
mod tls_stores;
#[path = "e2e/traces.rs"]
mod traces;
#[path = "e2e/validation.rs"]
mod validation;
#[path = "e2e/versions.rs"]
mod versions;
#[path = "e2e/watch.rs"]
mod watch;
#[path = "e2e/webui_logins.rs"]
mod webui_logins;
