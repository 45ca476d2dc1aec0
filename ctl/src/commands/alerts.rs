//! `goflowctl alerts [-j TASK] [--limit N] [-o json]`: alerts raised (final failures, retries,
//! long runs, missed deadlines) and their delivery to each channel, newest first.

use std::io::Write;

use clap::Args;
use goflow_proto::{Alert, ListAlertsRequest};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this task's alerts.
    #[arg(short = 'j', long = "job", value_name = "TASK")]
    pub task: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: i32,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &AlertsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let alerts = client
        .list_alerts(ListAlertsRequest {
            limit: args.limit,
            task: args.task.clone().unwrap_or_default(),
        })
        .await?
        .into_inner()
        .alerts;
    match args.output {
        Format::Json => output::write_json_array(out, alerts.iter().map(to_json).collect())?,
        Format::Table if alerts.is_empty() => writeln!(out, "no alerts")?,
        Format::Table => out.write_all(render_table(&alerts).as_bytes())?,
    }
    Ok(())
}

/// `sent`, `pending (2 attempts)`, `failed (10 attempts)`.
fn delivery(a: &Alert) -> String {
    match (a.delivery.as_str(), a.attempts) {
        ("sent", _) => "sent".into(),
        (state, 0) => state.into(),
        (state, 1) => format!("{state} (1 attempt)"),
        (state, n) => format!("{state} ({n} attempts)"),
    }
}

pub fn render_table(alerts: &[Alert]) -> String {
    let rows = alerts
        .iter()
        .map(|a| {
            vec![
                output::local_time(a.created_at),
                a.task.clone(),
                a.etl_day.clone(),
                a.kind.clone(),
                if a.try_number == 0 {
                    String::new()
                } else {
                    a.try_number.to_string()
                },
                a.channel.clone(),
                delivery(a),
                if a.delivery == "sent" {
                    String::new()
                } else {
                    a.last_error.clone()
                },
            ]
        })
        .collect();
    output::table(
        [
            "TIME",
            "TASK",
            "ETL_DAY",
            "KIND",
            "TRY",
            "CHANNEL",
            "DELIVERY",
            "LAST_ERROR",
        ],
        rows,
    )
}

pub fn to_json(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "created_at": output::json_time(a.created_at),
        "task": a.task,
        "etl_day": a.etl_day,
        "kind": a.kind,
        "try_number": a.try_number,
        "channel": a.channel,
        "instance_state": a.instance_state,
        "message": a.message,
        "delivery": a.delivery,
        "attempts": a.attempts,
        "last_error": a.last_error,
        "sent_at": output::json_time(a.sent_at),
        "next_attempt_at": if a.delivery == "pending" { output::json_time(a.next_attempt_at) } else { Value::Null },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Vec<Alert> {
        vec![
            Alert {
                id: 2,
                task: "report".into(),
                etl_day: "20260110".into(),
                kind: "deadline".into(),
                channel: "oncall".into(),
                instance_state: "waiting".into(),
                delivery: "pending".into(),
                attempts: 2,
                last_error: "hooks.example answered 500".into(),
                created_at: 1_767_225_600_000,
                next_attempt_at: 1_767_225_660_000,
                ..Default::default()
            },
            Alert {
                id: 1,
                task: "extract".into(),
                etl_day: "20260110".into(),
                kind: "failed".into(),
                try_number: 2,
                channel: "webhook".into(),
                instance_state: "failed".into(),
                message: "try 2 of 2 failed with exit code 3".into(),
                delivery: "sent".into(),
                attempts: 1,
                created_at: 1_767_225_000_000,
                sent_at: 1_767_225_001_000,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn table_and_json() {
        let table = render_table(&alerts());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{table}");
        assert!(lines[0].contains("DELIVERY"), "{table}");
        assert!(
            lines[1].contains("report") && lines[1].contains("deadline"),
            "{table}"
        );
        assert!(
            lines[1].contains("pending (2 attempts)") && lines[1].contains("answered 500"),
            "{table}"
        );
        assert!(
            lines[2].contains("extract") && lines[2].contains(" sent"),
            "{table}"
        );
        let json = to_json(&alerts()[1]);
        assert_eq!(json["task"], "extract");
        assert_eq!(json["try_number"], 2);
        assert_eq!(json["delivery"], "sent");
        assert_eq!(json["next_attempt_at"], Value::Null);
        assert!(json["sent_at"].is_string(), "{json}");
        assert!(to_json(&alerts()[0])["next_attempt_at"].is_string());
    }
}
