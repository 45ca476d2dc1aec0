//! Prometheus metrics of an agent process (issue 11), served by `goflow agent --http-listen`
//! at `GET /metrics`. Names start with `goflow_agent_`; the only label is a try's outcome.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct AgentMetrics {
    registry: Registry,
    pub slots: Gauge,
    pub tries_running: Gauge,
    pub tries_started: Counter,
    pub tries_finished: Family<OutcomeLabel, Counter>,
    /// Whether the last call to a coordinator (register or heartbeat) was answered (readiness).
    coordinator_answers: AtomicBool,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            registry: Registry::default(),
            slots: Gauge::default(),
            tries_running: Gauge::default(),
            tries_started: Counter::default(),
            tries_finished: Family::default(),
            coordinator_answers: AtomicBool::new(false),
        };
        registry.register(
            "goflow_agent_slots_configured",
            "Tries this agent runs at once",
            metrics.slots.clone(),
        );
        registry.register(
            "goflow_agent_tries_running",
            "Tries running on this agent",
            metrics.tries_running.clone(),
        );
        registry.register(
            "goflow_agent_tries_started",
            "Tries this agent claimed and started",
            metrics.tries_started.clone(),
        );
        registry.register(
            "goflow_agent_tries_finished",
            "Tries this agent ran to an end, by outcome (success, failed, timed_out, killed)",
            metrics.tries_finished.clone(),
        );
        Self { registry, ..metrics }
    }

    /// The Prometheus (OpenMetrics) text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    pub fn set_coordinator_answers(&self, answers: bool) {
        self.coordinator_answers.store(answers, Ordering::Relaxed);
    }

    /// Whether the last register or heartbeat was answered by a coordinator.
    pub fn coordinator_answers(&self) -> bool {
        self.coordinator_answers.load(Ordering::Relaxed)
    }
}
