//! `goflowctl agents [-o json]`

use std::io::Write;

use clap::Args;
use goflow_proto::{Agent, ListAgentsRequest};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &AgentsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let agents = client
        .list_agents(ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    match args.output {
        Format::Json => output::write_json_array(out, agents.iter().map(to_json).collect())?,
        Format::Table if agents.is_empty() => writeln!(out, "no agents")?,
        Format::Table => out.write_all(render_table(&agents, output::now_ms()).as_bytes())?,
    }
    Ok(())
}

/// `2026-01-01 10:00:00 (3s ago)`, empty when never.
fn heartbeat(at: i64, now_ms: i64) -> String {
    if at == 0 {
        return String::new();
    }
    format!(
        "{} ({} ago)",
        output::local_time(at),
        output::duration(now_ms - at)
    )
}

pub fn render_table(agents: &[Agent], now_ms: i64) -> String {
    let rows = agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.host.clone(),
                if a.draining {
                    format!("{} (draining)", a.state)
                } else {
                    a.state.clone()
                },
                a.slots.to_string(),
                a.running.to_string(),
                a.queues.join(", "),
                heartbeat(a.last_heartbeat_at, now_ms),
            ]
        })
        .collect();
    output::table(
        [
            "ID",
            "HOST",
            "STATE",
            "SLOTS",
            "RUNNING",
            "QUEUES",
            "LAST_HEARTBEAT",
        ],
        rows,
    )
}

pub fn to_json(a: &Agent) -> Value {
    json!({
        "id": a.id,
        "host": a.host,
        "state": a.state,
        "draining": a.draining,
        "slots": a.slots,
        "running": a.running,
        "queues": a.queues,
        "version": a.version,
        "registered_at": output::json_time(a.registered_at),
        "last_heartbeat_at": output::json_time(a.last_heartbeat_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let agent = Agent {
            id: "agent-1".into(),
            host: "box".into(),
            slots: 4,
            running: 1,
            queues: vec!["default".into(), "gpu".into()],
            state: "alive".into(),
            last_heartbeat_at: 1_767_225_600_000,
            ..Default::default()
        };
        let text = render_table(std::slice::from_ref(&agent), 1_767_225_603_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID",
                "HOST",
                "STATE",
                "SLOTS",
                "RUNNING",
                "QUEUES",
                "LAST_HEARTBEAT"
            ]
        );
        assert!(
            lines[1].starts_with("agent-1   box    alive   4       1         default, gpu   "),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(" (3s ago)"), "{}", lines[1]);
        let v = to_json(&agent);
        assert_eq!(v["queues"], json!(["default", "gpu"]));
        assert_eq!(v["registered_at"], Value::Null);
        assert_eq!(v["last_heartbeat_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["draining"], false);

        let draining = Agent {
            draining: true,
            ..agent
        };
        let text = render_table(std::slice::from_ref(&draining), 1_767_225_603_000);
        assert!(text.contains(" alive (draining) "), "{text}");
        assert_eq!(to_json(&draining)["draining"], true);
    }
}
