//! Prometheus metrics of a coordinator process (issue 11), served as text at `GET /metrics` on
//! its HTTP listener. One [`Metrics`] per process: the engine of each term of leadership, the
//! gRPC router and the leadership loop share it.
//!
//! Names start with `goflow_`, carry their unit (`_seconds`) and `_total` for counters.
//! Labels stay few: task, queue, state, outcome, method, code, transport, agent; never a data
//! date, an instance or a try.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{self, Store, now_ms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Agents' calls refused, by reason. Process-wide: refusals happen in the router and in the
/// services before any engine (whose [`Metrics`] come and go with leadership) sees the call;
/// every [`Metrics`] of the process registers this one family.
static AGENT_REFUSALS: std::sync::LazyLock<Family<ReasonLabel, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Counts a refused agent call: `no_credential`, `no_client_certificate`, `unknown_token`
/// (unknown or revoked) or `not_its_own` (another agent's name, try or queue).
pub fn agent_refused(reason: &str) {
    AGENT_REFUSALS
        .get_or_create(&ReasonLabel {
            reason: reason.to_string(),
        })
        .inc();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
    /// [`OVER_GRPC`] or [`IN_PROCESS`].
    pub transport: String,
}

/// A call that came over the network (or loopback).
pub const OVER_GRPC: &str = "grpc";
/// A call of the embedded agent, answered without gRPC (ReportStart, ReportFinish).
pub const IN_PROCESS: &str = "in_process";

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 5 ms to about 3 h (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 22))
}

/// gRPC calls: 1 ms to about 65 s.
fn grpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub instances: Family<StateLabel, Gauge>,
    pub tries_started: Family<QueueLabel, Counter>,
    pub tries_finished: Family<OutcomeLabel, Counter>,
    pub cron_fires: Family<TaskLabel, Counter>,
    pub cron_skipped_fires: Family<TaskLabel, Counter>,
    pub queue_depth: Family<QueueLabel, Gauge>,
    pub queue_oldest_age: Family<QueueLabel, F64Gauge>,
    pub dispatch_latency: HistogramFamily<QueueLabel>,
    pub release_to_start: HistogramFamily<QueueLabel>,
    pub agent_slots: Family<AgentLabel, Gauge>,
    pub agent_slots_used: Family<AgentLabel, Gauge>,
    pub agent_heartbeat_age: Family<AgentLabel, F64Gauge>,
    pub leader_changes: Counter,
    pub leader: Gauge,
    pub log_bytes: Counter,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_duration: HistogramFamily<GrpcLabels>,
    pub writes_per_commit: Histogram,
    pub handoffs: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            registry: Registry::default(),
            instances: Family::default(),
            tries_started: Family::default(),
            tries_finished: Family::default(),
            cron_fires: Family::default(),
            cron_skipped_fires: Family::default(),
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            dispatch_latency: Family::new_with_constructor(latency_histogram),
            release_to_start: Family::new_with_constructor(latency_histogram),
            agent_slots: Family::default(),
            agent_slots_used: Family::default(),
            agent_heartbeat_age: Family::default(),
            leader_changes: Counter::default(),
            leader: Gauge::default(),
            log_bytes: Counter::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(grpc_histogram),
            // 1 to 512 (doubling).
            writes_per_commit: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            handoffs: Counter::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "goflow_instances",
            "Task instances by state (refreshed on the leader)",
            m.instances.clone(),
        );
        r.register(
            "goflow_tries_started",
            "Tries claimed by an agent, by queue",
            m.tries_started.clone(),
        );
        r.register(
            "goflow_handoffs",
            "Tries claimed for the reporting agent in its finish's transaction (issue 21)",
            m.handoffs.clone(),
        );
        r.register(
            "goflow_tries_finished",
            "Tries whose end was reported, by outcome (success, failed, timed_out, killed)",
            m.tries_finished.clone(),
        );
        r.register(
            "goflow_cron_fires",
            "Cron schedule fires, by task",
            m.cron_fires.clone(),
        );
        r.register(
            "goflow_cron_skipped_fires",
            "Cron fires missed and not run (downtime; only the latest runs), by task",
            m.cron_skipped_fires.clone(),
        );
        r.register(
            "goflow_queue_depth",
            "Queued instances waiting for an agent, by queue",
            m.queue_depth.clone(),
        );
        r.register(
            "goflow_queue_oldest_age_seconds",
            "Age of the oldest queued instance, by queue",
            m.queue_oldest_age.clone(),
        );
        r.register(
            "goflow_dispatch_latency_seconds",
            "From queued to claimed by an agent, every try",
            m.dispatch_latency.clone(),
        );
        r.register(
            "goflow_release_to_start_seconds",
            "First tries of tasks with upstreams: from the release (the last upstream's success \
             queues it) to the claim",
            m.release_to_start.clone(),
        );
        r.register(
            "goflow_agent_slots",
            "Slots an alive agent registered with",
            m.agent_slots.clone(),
        );
        r.register(
            "goflow_agent_slots_used",
            "Tries running on an alive agent",
            m.agent_slots_used.clone(),
        );
        r.register(
            "goflow_agent_heartbeat_age_seconds",
            "Time since an alive agent's last heartbeat",
            m.agent_heartbeat_age.clone(),
        );
        r.register(
            "goflow_leader_changes",
            "Times this coordinator started or stopped leading",
            m.leader_changes.clone(),
        );
        r.register(
            "goflow_leader",
            "1 while this coordinator leads",
            m.leader.clone(),
        );
        r.register(
            "goflow_writes_per_commit",
            "Claims and finish reports written per transaction (group commit: those that \
             arrive while the writer is busy share the next one)",
            m.writes_per_commit.clone(),
        );
        r.register(
            "goflow_log_bytes_ingested",
            "Bytes of try output stored",
            m.log_bytes.clone(),
        );
        r.register(
            "goflow_agent_refusals",
            "Agents' calls refused, by reason: no_credential, no_client_certificate, unknown_token \
             (unknown or revoked), not_its_own (another agent's name, try or queue)",
            AGENT_REFUSALS.clone(),
        );
        r.register(
            "goflow_grpc_requests",
            "Calls of the goflow services, by method, status code and transport (grpc, or in_process for the embedded agent's claims and finish reports)",
            m.grpc_requests.clone(),
        );
        r.register(
            "goflow_grpc_request_duration_seconds",
            "Calls of the goflow services, until the response ends (streams: while open), by method, status code and transport",
            m.grpc_duration.clone(),
        );
        Self { registry, ..metrics }
    }

    /// The Prometheus (OpenMetrics) text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// Reads instances by state and the queues' depth and oldest age from the store.
    pub async fn refresh_from_store(&self, store: &Store) -> anyhow::Result<()> {
        let mut conn = store.read().await?;
        let states = store::count_instances_by_state(&mut conn).await?;
        let queues = store::queued_by_queue(&mut conn).await?;
        drop(conn);
        self.instances.clear();
        for state in goflow_core::state::ALL_STATES {
            self.instances
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(0);
        }
        for (state, count) in states {
            self.instances.get_or_create(&StateLabel { state }).set(count);
        }
        let now = now_ms();
        self.queue_depth.clear();
        self.queue_oldest_age.clear();
        for (queue, depth, oldest) in queues {
            let label = QueueLabel { queue };
            self.queue_depth.get_or_create(&label).set(depth);
            let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            self.queue_oldest_age.get_or_create(&label).set(age);
        }
        Ok(())
    }

    /// Agents' slots, used slots and heartbeat ages: `(agent, slots, used, last heartbeat ms)`.
    pub fn set_agents(&self, agents: &[(String, i64, i64, i64)]) {
        self.agent_slots.clear();
        self.agent_slots_used.clear();
        self.agent_heartbeat_age.clear();
        let now = now_ms();
        for (agent, slots, used, seen) in agents {
            let label = AgentLabel { agent: agent.clone() };
            self.agent_slots.get_or_create(&label).set(*slots);
            self.agent_slots_used.get_or_create(&label).set(*used);
            self.agent_heartbeat_age
                .get_or_create(&label)
                .set((now - seen).max(0) as f64 / 1000.0);
        }
    }

    /// This coordinator stopped or started leading.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(leading as i64);
        self.leader_changes.inc();
    }

    /// No longer leading: the store-derived gauges are another coordinator's to report.
    pub fn clear_leader_gauges(&self) {
        self.instances.clear();
        self.queue_depth.clear();
        self.queue_oldest_age.clear();
        self.agent_slots.clear();
        self.agent_slots_used.clear();
        self.agent_heartbeat_age.clear();
    }

    /// One call of the goflow services ended; `transport`: [`OVER_GRPC`] or [`IN_PROCESS`].
    pub fn grpc_call(&self, method: &str, code: &str, transport: &str, elapsed: Duration) {
        let labels = GrpcLabels {
            method: method.into(),
            code: code.into(),
            transport: transport.into(),
        };
        self.grpc_requests.get_or_create(&labels).inc();
        self.grpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// The metrics of `goflow webui`, which has no state of its own: `goflow_build_info`.
pub fn webui_metrics() -> impl Fn() -> String + Send + Sync + 'static {
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Build {
        version: String,
    }
    let mut registry = Registry::default();
    let info: Family<Build, Gauge> = Family::default();
    info.get_or_create(&Build {
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .set(1);
    registry.register(
        "goflow_build_info",
        "1, labelled with this goflow's version",
        info,
    );
    move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
        text
    }
}

/// The canonical name of a gRPC status code (`grpc-status` header value).
pub fn grpc_code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// How often the leader reads the store-derived gauges.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(15);

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_goflow_and_counters_end_in_total() {
        let metrics = Metrics::new();
        metrics
            .tries_finished
            .get_or_create(&OutcomeLabel {
                outcome: "success".into(),
            })
            .inc();
        metrics.grpc_call("Heartbeat", "OK", OVER_GRPC, Duration::from_millis(3));
        let text = metrics.encode();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.starts_with("goflow_"), "{line}");
        }
        assert!(
            text.contains("goflow_tries_finished_total{outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "goflow_grpc_requests_total{method=\"Heartbeat\",code=\"OK\",transport=\"grpc\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn grpc_codes_have_their_names() {
        assert_eq!(grpc_code_name("0"), "OK");
        assert_eq!(grpc_code_name("14"), "UNAVAILABLE");
        assert_eq!(grpc_code_name("x"), "UNKNOWN");
    }
}
