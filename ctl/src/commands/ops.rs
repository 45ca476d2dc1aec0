//! Operations on instances and tasks: `mark-success`, `kill`, `delete`, `pause`, `unpause`,
//! `do-all-job`, and the operations log, `history`.

use std::io::Write;

use clap::Args;
use goflow_proto::{
    DeleteInstanceRequest, DoAllJobRequest, KillRequest, ListOperationsRequest, MarkSuccessRequest,
    Operation, SetPausedRequest,
};
use serde_json::{Value, json};

use crate::{
    Client,
    day::parse_day,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct MarkSuccessArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// The data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
    /// Also mark everything downstream.
    #[arg(long)]
    pub down: bool,
}

/// One instance: a task and a data date.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// The data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
}

#[derive(Debug, Args)]
pub struct DayArgs {
    /// The data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only operations on this task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: Option<String>,
    /// At most this many operations, newest first (0: the server's default).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub limit: i32,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn mark_success(
    client: &mut Client,
    args: &MarkSuccessArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = MarkSuccessRequest {
        task: args.task.clone(),
        etl_day: args.day.clone(),
        down: args.down,
    };
    let r = client.mark_success(request).await?.into_inner();
    super::write_refs(out, &r.message, &r.instances)?;
    Ok(())
}

/// `kill -j TASK -d DAY`, or a whole backfill: `kill -j TASK --from DAY --to DAY [--down]`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    #[command(flatten)]
    pub days: super::run::DaysArgs,
    /// Also kill every unfinished instance downstream (within the days).
    #[arg(long)]
    pub down: bool,
}

pub async fn kill(client: &mut Client, args: &KillArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let (etl_day, from_day, to_day) = args.days.fields()?;
    let request = KillRequest {
        task: args.task.clone(),
        etl_day,
        from_day,
        to_day,
        down: args.down,
    };
    let r = client.kill(request).await?.into_inner();
    super::write_refs(out, &r.message, &r.instances)?;
    Ok(())
}

pub async fn delete(client: &mut Client, args: &InstanceArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = DeleteInstanceRequest {
        task: args.task.clone(),
        etl_day: args.day.clone(),
    };
    let r = client.delete_instance(request).await?.into_inner();
    super::write_refs(out, &r.message, &r.instances)?;
    Ok(())
}

pub async fn set_paused(
    client: &mut Client,
    args: &TaskArgs,
    paused: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let task = client
        .set_paused(SetPausedRequest {
            task: args.task.clone(),
            paused,
        })
        .await?
        .into_inner();
    let word = if task.paused { "paused" } else { "unpaused" };
    writeln!(out, "task {} {word}", task.id)?;
    Ok(())
}

pub async fn do_all_job(client: &mut Client, args: &DayArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let r = client
        .do_all_job(DoAllJobRequest {
            etl_day: args.day.clone(),
        })
        .await?
        .into_inner();
    super::write_refs(out, &r.message, &r.instances)?;
    Ok(())
}

pub async fn history(client: &mut Client, args: &HistoryArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = ListOperationsRequest {
        limit: args.limit,
        task: args.task.clone().unwrap_or_default(),
    };
    let ops = client.list_operations(request).await?.into_inner().operations;
    match args.output {
        Format::Json => output::write_json_array(out, ops.iter().map(operation_json).collect())?,
        Format::Table if ops.is_empty() => writeln!(out, "no operations")?,
        Format::Table => out.write_all(render_history(&ops).as_bytes())?,
    }
    Ok(())
}

pub fn render_history(ops: &[Operation]) -> String {
    let rows = ops
        .iter()
        .map(|o| {
            vec![
                output::local_time(o.at),
                o.actor.clone(),
                o.client.clone(),
                o.action.clone(),
                o.target.clone(),
                o.detail.clone(),
            ]
        })
        .collect();
    output::table(["AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "DETAIL"], rows)
}

pub fn operation_json(o: &Operation) -> Value {
    json!({
        "id": o.id,
        "at": output::json_time(o.at),
        "actor": o.actor,
        "client": o.client,
        "action": o.action,
        "target": o.target,
        "detail": o.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, tests::parse};

    #[test]
    fn parses() {
        let Command::MarkSuccess(a) = parse(&["mark-success", "-j", "a", "-d", "2026-01-02", "--down"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!((a.task.as_str(), a.day.as_str(), a.down), ("a", "20260102", true));
        assert!(parse(&["kill", "-j", "a"]).is_err(), "kill needs a day");
        assert!(
            parse(&["delete", "-d", "20260101"]).is_err(),
            "delete needs a task"
        );
        assert!(parse(&["pause"]).is_err());
        assert!(parse(&["do-all-job", "-d", "20261301"]).is_err());
        let Command::History(h) = parse(&["history"]).unwrap().command else {
            panic!()
        };
        assert_eq!((h.task, h.limit, h.output), (None, 0, Format::Table));
    }

    #[test]
    fn history_table_and_json() {
        let op = Operation {
            id: 1,
            at: 1_767_225_600_000,
            actor: "alice".into(),
            client: "goflowctl/0.1.0".into(),
            action: "run".into(),
            target: "load 20260101".into(),
            detail: "--down".into(),
        };
        let text = render_history(std::slice::from_ref(&op));
        assert_eq!(
            text.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "DETAIL"]
        );
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("alice   goflowctl/0.1.0   run")
        );
        let v = operation_json(&op);
        assert_eq!(v["at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["actor"], "alice");
    }
}
