//! `goflowctl eta -d DAY [-o json]`: when each unfinished instance of a data date is predicted
//! to start and finish, the day's finish, and the critical path that decides it (issue 19).

use std::io::Write;

use clap::Args;
use goflow_proto::{PredictDayRequest, PredictDayResponse};
use serde_json::{Value, json};

use crate::{
    Client,
    day::parse_day,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct EtaArgs {
    /// The data date (yyyymmdd or yyyy-mm-dd); its hourly instances are included.
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &EtaArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let answer = client
        .predict_day(PredictDayRequest {
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

pub fn to_json(eta: &PredictDayResponse) -> Value {
    json!({
        "day": eta.etl_day,
        "finish_at": output::json_time(eta.finish_at),
        "critical_path": eta.critical_path,
        "critical_path_periods": eta.critical_path_periods,
        "predicted_at": output::json_time(eta.now),
        "finished": eta.finished,
        "instances": eta.instances.iter().map(|i| json!({
            "task": i.task,
            "period": i.period,
            "state": i.state,
            "start_at": output::json_time(i.start_at),
            "finish_at": output::json_time(i.finish_at),
            "duration_ms": i.duration_ms,
            "basis": i.basis,
            "critical": i.critical,
            "note": if i.note.is_empty() { Value::Null } else { Value::from(i.note.clone()) },
        })).collect::<Vec<_>>(),
    })
}

pub fn render(eta: &PredictDayResponse) -> String {
    let mut text = String::new();
    let unknown = eta.instances.iter().filter(|i| i.finish_at == 0).count();
    if eta.instances.is_empty() {
        text.push_str(&format!(
            "{}: nothing left to run ({} finished)\n",
            eta.etl_day,
            output::count(eta.finished as usize, "instance")
        ));
        return text;
    }
    if eta.finish_at > 0 {
        text.push_str(&format!(
            "{}: expected to finish at {} (in {})\n",
            eta.etl_day,
            output::local_time_zoned(eta.finish_at),
            output::duration((eta.finish_at - eta.now).max(0))
        ));
    } else {
        text.push_str(&format!(
            "{}: the finish cannot be predicted ({} cannot be, see NOTE)\n",
            eta.etl_day,
            output::count(unknown, "instance")
        ));
    }
    if !eta.critical_path.is_empty() {
        let path: Vec<String> = eta
            .critical_path
            .iter()
            .zip(&eta.critical_path_periods)
            .map(|(t, p)| format!("{t}@{p}"))
            .collect();
        text.push_str(&format!("critical path: {}\n", path.join(" -> ")));
    }
    text.push('\n');
    let rows = eta
        .instances
        .iter()
        .map(|i| {
            vec![
                format!("{}{}", i.task, if i.critical { " *" } else { "" }),
                i.period.clone(),
                i.state.clone(),
                output::local_time(i.start_at),
                output::local_time(i.finish_at),
                i.basis.clone(),
                i.note.clone(),
            ]
        })
        .collect();
    text.push_str(&output::table(
        ["TASK", "PERIOD", "STATE", "START", "FINISH", "BASIS", "NOTE"],
        rows,
    ));
    text
}

#[cfg(test)]
mod tests {
    use goflow_proto::PredictedInstance;

    use super::*;

    fn eta() -> PredictDayResponse {
        PredictDayResponse {
            etl_day: "20261205".into(),
            now: 1_700_000_000_000,
            finish_at: 1_700_000_600_000,
            critical_path: vec!["extract".into(), "load".into()],
            critical_path_periods: vec!["20261205".into(), "20261205".into()],
            finished: 1,
            instances: vec![
                PredictedInstance {
                    task: "load".into(),
                    period: "20261205".into(),
                    state: "waiting".into(),
                    start_at: 1_700_000_300_000,
                    finish_at: 1_700_000_600_000,
                    duration_ms: 300_000,
                    basis: "median of 5 tries".into(),
                    note: String::new(),
                    critical: true,
                },
                PredictedInstance {
                    task: "orphan".into(),
                    period: "20261205".into(),
                    state: "waiting".into(),
                    note: "waits for x@20261205 (failed)".into(),
                    basis: "expected_duration".into(),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn json_has_the_promised_fields() {
        let value = to_json(&eta());
        assert_eq!(value["day"], "20261205");
        assert_eq!(value["finish_at"], "2023-11-14T22:23:20.000Z");
        assert_eq!(value["critical_path"], json!(["extract", "load"]));
        let first = &value["instances"][0];
        assert_eq!(first["task"], "load");
        assert_eq!(first["period"], "20261205");
        assert_eq!(first["start_at"], "2023-11-14T22:18:20.000Z");
        assert_eq!(first["basis"], "median of 5 tries");
        assert_eq!(value["instances"][1]["finish_at"], Value::Null);
        assert_eq!(value["instances"][1]["note"], "waits for x@20261205 (failed)");
    }

    #[test]
    fn the_table_names_the_finish_and_the_critical_path() {
        let text = render(&eta());
        assert!(text.contains("expected to finish at"), "{text}");
        assert!(
            text.contains("critical path: extract@20261205 -> load@20261205"),
            "{text}"
        );
        assert!(text.contains("load *"), "{text}");
        assert!(text.contains("waits for x@20261205 (failed)"), "{text}");
    }
}
