//! Where an instance's time went (issue 19), in `status -o json`: `timings`, milliseconds per
//! phase and per try, and nothing but durations.

use goflow_proto::InstanceTimings;
use serde_json::{Value, json};

/// `timings` of one instance; null when it was created before timings were kept.
pub fn to_json(timings: Option<&InstanceTimings>) -> Value {
    let Some(t) = timings else {
        return Value::Null;
    };
    json!({
        "waiting_upstreams": t.waiting_upstreams,
        "waiting_slots": t.waiting_slots,
        "queued": t.queued,
        "claimed_to_started": t.claimed_to_started,
        "running": t.running,
        "retry_delays": t.retry_delays,
        "tries": t.tries.iter().map(|r| json!({"try": r.try_number, "running": r.running})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use goflow_proto::TryTiming;

    use super::*;

    #[test]
    fn timings_are_durations_by_phase_and_try() {
        let t = InstanceTimings {
            waiting_upstreams: 1,
            waiting_slots: 2,
            queued: 3,
            claimed_to_started: 0,
            running: 9,
            retry_delays: 5,
            tries: vec![
                TryTiming {
                    try_number: 1,
                    running: 4,
                },
                TryTiming {
                    try_number: 2,
                    running: 5,
                },
            ],
            phase: "done".into(),
            run_started_at: 1_700_000_000_000,
        };
        assert_eq!(
            to_json(Some(&t)),
            json!({"waiting_upstreams": 1, "waiting_slots": 2, "queued": 3, "claimed_to_started": 0,
                   "running": 9, "retry_delays": 5,
                   "tries": [{"try": 1, "running": 4}, {"try": 2, "running": 5}]})
        );
        assert_eq!(to_json(None), Value::Null);
    }
}
