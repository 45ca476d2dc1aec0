//! `goflowctl explain -j TASK -d DAY [-o json]`: why an instance is where it is, followed
//! through the instances it waits for to the root causes (issue 19).

use std::io::Write;

use clap::Args;
use goflow_proto::{ExplainHop, ExplainInstanceRequest, ExplainInstanceResponse};
use serde_json::{Value, json};

use crate::{
    Client,
    day::parse_day,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The instance's task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// The instance's data date (yyyymmdd or yyyy-mm-dd; yyyymmddHH for an hourly task,
    /// yyyymm for a monthly one).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &ExplainArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let answer = client
        .explain_instance(ExplainInstanceRequest {
            task: args.task.clone(),
            etl_day: args.day.clone(),
        })
        .await?
        .into_inner();
    match args.output {
        Format::Json => output::write_json(out, &to_json(&answer))?,
        Format::Table => out.write_all(render(&answer).as_bytes())?,
    }
    Ok(())
}

/// `report@20261205: waiting`, then one line per root cause: the way to it.
pub fn render(answer: &ExplainInstanceResponse) -> String {
    let mut text = format!("{}: {}\n", answer.instance, answer.state);
    for line in &answer.lines {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn hop_json(hop: &ExplainHop) -> Value {
    json!({
        "task": hop.task,
        "period": hop.period,
        "state": hop.state,
        "reason": hop.reason,
    })
}

/// `{instance, state, root_causes: [{task, period, state, reason}], chain: [...]}`, plus the
/// count of root causes not listed, the lines as printed and the one-level wait reason.
pub fn to_json(answer: &ExplainInstanceResponse) -> Value {
    json!({
        "instance": answer.instance,
        "state": answer.state,
        "root_causes": answer.root_causes.iter().map(hop_json).collect::<Vec<_>>(),
        "chain": answer.chain.iter().map(hop_json).collect::<Vec<_>>(),
        "more_root_causes": answer.more_root_causes,
        "lines": answer.lines,
        "wait_reason": answer.wait_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(task: &str, state: &str, reason: &str) -> ExplainHop {
        ExplainHop {
            task: task.into(),
            period: "20261205".into(),
            state: state.into(),
            reason: reason.into(),
        }
    }

    fn sample() -> ExplainInstanceResponse {
        let root = hop("transform", "failed", "failed: exit code 3, try 2 of 2, at 05:12");
        ExplainInstanceResponse {
            instance: "report@20261205".into(),
            state: "waiting".into(),
            root_causes: vec![root.clone()],
            chain: vec![
                hop("report", "waiting", "waits for 1 upstream"),
                hop("load", "waiting", "waiting"),
                root,
            ],
            more_root_causes: 0,
            lines: vec![
                "waits for load@20261205 (waiting) <- waits for transform@20261205 (failed: exit code 3, try 2 of 2, at 05:12)"
                    .into(),
            ],
            wait_reason: "blocked: waits for load@20261205 (waiting behind a failed upstream)".into(),
        }
    }

    #[test]
    fn the_way_to_the_root_is_printed() {
        assert_eq!(
            render(&sample()),
            "report@20261205: waiting\n  waits for load@20261205 (waiting) <- waits for transform@20261205 (failed: exit code 3, try 2 of 2, at 05:12)\n"
        );
    }

    #[test]
    fn json_has_the_promised_fields() {
        let value = to_json(&sample());
        assert_eq!(value["instance"], "report@20261205");
        assert_eq!(value["state"], "waiting");
        assert_eq!(value["root_causes"][0]["task"], "transform");
        assert_eq!(value["root_causes"][0]["period"], "20261205");
        assert_eq!(value["root_causes"][0]["state"], "failed");
        assert_eq!(value["chain"].as_array().unwrap().len(), 3);
        assert_eq!(value["chain"][1]["reason"], "waiting");
    }
}
