//! `goflowctl pools [-o json]`: each pool's slots, how many are in use and by which running
//! tries, and how many instances of its tasks wait. `goflowctl pools delete ID`: remove a pool
//! no task names.

use std::io::Write;

use clap::{Args, Subcommand};
use goflow_proto::{DeletePoolRequest, ListPoolsRequest, Pool};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct PoolsArgs {
    #[command(subcommand)]
    pub command: Option<PoolsCommand>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// Delete a pool. Refused while a task names it (change or delete those tasks first).
    Delete {
        /// The pool to delete.
        #[arg(value_name = "ID")]
        id: String,
    },
}

pub async fn run(client: &mut Client, args: &PoolsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if let Some(PoolsCommand::Delete { id }) = &args.command {
        client.delete_pool(DeletePoolRequest { id: id.clone() }).await?;
        writeln!(out, "deleted pool {id}")?;
        return Ok(());
    }
    let pools = client.list_pools(ListPoolsRequest {}).await?.into_inner().pools;
    match args.output {
        Format::Json => output::write_json_array(out, pools.iter().map(to_json).collect())?,
        Format::Table if pools.is_empty() => writeln!(out, "no pools")?,
        Format::Table => out.write_all(render_table(&pools).as_bytes())?,
    }
    Ok(())
}

pub fn render_table(pools: &[Pool]) -> String {
    let rows = pools
        .iter()
        .map(|p| {
            let running: Vec<String> = p
                .holders
                .iter()
                .map(|h| format!("{} {} ({})", h.task, h.etl_day, h.attempt_id))
                .collect();
            vec![
                p.id.clone(),
                p.slots.to_string(),
                p.used.to_string(),
                p.waiting.to_string(),
                p.tasks.join(","),
                running.join(", "),
            ]
        })
        .collect();
    output::table(["POOL", "SLOTS", "USED", "WAITING", "TASKS", "RUNNING"], rows)
}

pub fn to_json(p: &Pool) -> Value {
    json!({
        "id": p.id,
        "slots": p.slots,
        "used": p.used,
        "waiting": p.waiting,
        "tasks": p.tasks,
        "running": p.holders.iter().map(|h| json!({
            "attempt_id": h.attempt_id,
            "task": h.task,
            "etl_day": h.etl_day,
            "agent": h.agent,
            "started_at": output::json_time(h.started_at),
        })).collect::<Vec<_>>(),
        "updated_at": output::json_time(p.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use goflow_proto::PoolHolder;

    use super::*;

    fn pools() -> Vec<Pool> {
        vec![Pool {
            id: "warehouse".into(),
            slots: 3,
            used: 1,
            waiting: 4,
            tasks: vec!["load_a".into(), "load_b".into()],
            holders: vec![PoolHolder {
                attempt_id: "7-1".into(),
                task: "load_a".into(),
                etl_day: "20260110".into(),
                agent: "a1".into(),
                started_at: 1_700_000_000_000,
            }],
            updated_at: 1_700_000_000_000,
        }]
    }

    #[test]
    fn the_table_shows_slots_in_use_and_who_holds_them() {
        let table = render_table(&pools());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("POOL"), "{table}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            &row[..5],
            ["warehouse", "3", "1", "4", "load_a,load_b"],
            "{table}"
        );
        assert!(lines[1].contains("load_a 20260110 (7-1)"), "{table}");
    }

    #[test]
    fn json_names_every_field() {
        let value = to_json(&pools()[0]);
        assert_eq!(value["id"], "warehouse");
        assert_eq!(
            (value["slots"].as_i64(), value["used"].as_i64()),
            (Some(3), Some(1))
        );
        assert_eq!(value["waiting"], 4);
        assert_eq!(value["running"][0]["attempt_id"], "7-1");
        assert_eq!(value["running"][0]["task"], "load_a");
    }
}
