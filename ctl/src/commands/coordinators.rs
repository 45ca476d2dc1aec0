//! `goflowctl coordinators [-o json]`

use std::io::Write;

use clap::Args;
use goflow_proto::{Coordinator, ListCoordinatorsRequest};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct CoordinatorsArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &CoordinatorsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let coordinators = client
        .list_coordinators(ListCoordinatorsRequest {})
        .await?
        .into_inner()
        .coordinators;
    match args.output {
        Format::Json => output::write_json_array(out, coordinators.iter().map(to_json).collect())?,
        Format::Table if coordinators.is_empty() => writeln!(out, "no coordinators")?,
        Format::Table => out.write_all(render_table(&coordinators, output::now_ms()).as_bytes())?,
    }
    Ok(())
}

/// `3s ago`, empty when never.
fn age(at: i64, now_ms: i64) -> String {
    if at == 0 {
        return String::new();
    }
    format!("{} ago", output::duration(now_ms - at))
}

pub fn render_table(coordinators: &[Coordinator], now_ms: i64) -> String {
    let rows = coordinators
        .iter()
        .map(|c| {
            vec![
                c.address.clone(),
                output::yes(c.leader),
                if c.token == 0 {
                    String::new()
                } else {
                    c.token.to_string()
                },
                age(c.last_seen_at, now_ms),
                c.id.clone(),
                c.version.clone(),
            ]
        })
        .collect();
    output::table(["ADDRESS", "LEADER", "TOKEN", "LAST_SEEN", "ID", "VERSION"], rows)
}

pub fn to_json(c: &Coordinator) -> Value {
    json!({
        "address": c.address,
        "leader": c.leader,
        "token": c.token,
        "last_seen_at": output::json_time(c.last_seen_at),
        "started_at": output::json_time(c.started_at),
        "id": c.id,
        "version": c.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let leader = Coordinator {
            id: "box-a:41".into(),
            address: "http://10.0.0.1:7070".into(),
            leader: true,
            token: 17,
            last_seen_at: 1_767_225_600_000,
            started_at: 1_767_225_000_000,
            version: "0.1.0".into(),
        };
        let follower = Coordinator {
            id: "box-b:42".into(),
            address: "http://10.0.0.2:7070".into(),
            last_seen_at: 1_767_225_602_000,
            version: "0.1.0".into(),
            ..Default::default()
        };
        let text = render_table(&[leader.clone(), follower], 1_767_225_605_000);
        assert_eq!(
            text,
            "ADDRESS                LEADER   TOKEN   LAST_SEEN   ID         VERSION\n\
             http://10.0.0.1:7070   yes      17      5s ago      box-a:41   0.1.0\n\
             http://10.0.0.2:7070                    3s ago      box-b:42   0.1.0\n"
        );
        let v = to_json(&leader);
        assert_eq!(v["address"], "http://10.0.0.1:7070");
        assert_eq!(v["leader"], true);
        assert_eq!(v["token"], 17);
        assert_eq!(v["last_seen_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["started_at"], "2025-12-31T23:50:00.000Z");
        assert_eq!(v["id"], "box-a:41");
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(to_json(&Coordinator::default())["leader"], false);
    }
}
