//! Traces of dispatches (issue 11): when spans are exported, every pushed dispatch gets a
//! `dispatch` span, a child of whatever queued it (a `goflowctl run`'s call, an upstream's
//! finish report, or nothing: a cron fire or a retry starts its own trace), and its context is
//! kept here until an agent claims the try. The claim's answer hands it to the agent, whose
//! spans for the try (claim, run) continue the trace.
//!
//! Kept in memory only, on the leader that pushed: a dispatch re-pushed after a restart or a
//! change of leader starts a new trace. A dispatch's queue message stays (instance, try, epoch).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goflow_core::Dispatch;
use tracing::Span;

/// Contexts kept at most; past it, those older than [`KEEP`] go (dispatches never claimed:
/// killed or deleted while queued).
const MAX_KEPT: usize = 20_000;
const KEEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
pub(super) struct DispatchTraces {
    /// (instance, try) -> the dispatch span's traceparent, and when it was pushed.
    kept: Mutex<HashMap<(i64, i64), (String, Instant)>>,
}

impl DispatchTraces {
    /// A `dispatch` span per dispatch (none when spans are not exported), children of the
    /// current span; their contexts are kept for the claims. Drop them once pushed.
    pub(super) fn start(&self, dispatches: &[Dispatch]) -> Vec<Span> {
        if !goflow_telemetry::enabled() {
            return vec![];
        }
        let mut spans = Vec::with_capacity(dispatches.len());
        let mut kept = self.kept.lock().unwrap();
        if kept.len() + dispatches.len() > MAX_KEPT {
            let now = Instant::now();
            kept.retain(|_, (_, at)| now.duration_since(*at) < KEEP);
        }
        for d in dispatches {
            let span = tracing::info_span!(
                "dispatch",
                otel.kind = "producer",
                goflow.instance_id = d.instance_id,
                goflow.try_number = d.try_number,
                goflow.queue = d.queue.as_str(),
            );
            let traceparent = goflow_telemetry::traceparent(&span);
            if !traceparent.is_empty() && kept.len() < MAX_KEPT {
                kept.insert((d.instance_id, d.try_number), (traceparent, Instant::now()));
            }
            spans.push(span);
        }
        spans
    }

    /// The traceparent of the dispatch of this try ("" when none was kept), forgotten.
    pub(super) fn take(&self, instance_id: i64, try_number: i64) -> String {
        self.kept
            .lock()
            .unwrap()
            .remove(&(instance_id, try_number))
            .map(|(traceparent, _)| traceparent)
            .unwrap_or_default()
    }

    /// Keeps it again (the claim failed before an answer: the agent asks again).
    pub(super) fn put_back(&self, instance_id: i64, try_number: i64, traceparent: String) {
        if !traceparent.is_empty() {
            self.kept
                .lock()
                .unwrap()
                .insert((instance_id, try_number), (traceparent, Instant::now()));
        }
    }
}
