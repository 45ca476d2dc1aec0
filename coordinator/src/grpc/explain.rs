//! Explain (issue 19) over ControlService: the engine's answer as the API gives it.

use goflow_core::explain::Hop;
use goflow_proto as pb;

use crate::engine::InstanceExplanation;

fn hop_pb(hop: Hop) -> pb::ExplainHop {
    pb::ExplainHop {
        task: hop.task,
        period: hop.period,
        state: hop.state,
        reason: hop.reason,
    }
}

pub(super) fn response(answer: InstanceExplanation) -> pb::ExplainInstanceResponse {
    let e = answer.explanation;
    pb::ExplainInstanceResponse {
        instance: answer.instance,
        state: answer.state,
        root_causes: e.root_causes.into_iter().map(hop_pb).collect(),
        chain: e.chain.into_iter().map(hop_pb).collect(),
        more_root_causes: e.more as i64,
        lines: e.lines,
        wait_reason: answer.wait_reason,
    }
}
