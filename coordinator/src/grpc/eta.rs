//! ETA and deadlines over ControlService (issue 19): a day's prediction as the wire says it.

use goflow_proto as pb;

use crate::engine::DayEta;

pub(super) fn day_eta_pb(eta: DayEta) -> pb::PredictDayResponse {
    let critical: std::collections::HashSet<_> = eta.critical_path.iter().cloned().collect();
    pb::PredictDayResponse {
        etl_day: eta.day.compact(),
        now: eta.now,
        finish_at: eta.finish_at.unwrap_or(0),
        critical_path: eta.critical_path.iter().map(|k| k.task.clone()).collect(),
        critical_path_periods: eta.critical_path.iter().map(|k| k.period.key()).collect(),
        finished: eta.finished as i64,
        instances: eta
            .instances
            .into_iter()
            .map(|i| pb::PredictedInstance {
                critical: critical.contains(&i.key),
                task: i.key.task,
                period: i.key.period.key(),
                state: i.state,
                start_at: i.start_at.unwrap_or(0),
                finish_at: i.finish_at.unwrap_or(0),
                duration_ms: i.duration_ms,
                basis: i.basis,
                note: i.note.unwrap_or_default(),
            })
            .collect(),
    }
}
