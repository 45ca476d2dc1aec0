//! `goflowctl status [-d DAY] [-j TASK] [-o json]`

use crate::day::key_of;
use std::io::Write;

use clap::Args;
use goflow_proto::{Instance, ListInstancesRequest};
use serde_json::{Value, json};

use crate::{
    Client,
    day::parse_day,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only instances of this data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day)]
    pub day: Option<String>,
    /// Only instances of this task.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: Option<String>,
    /// At most this many instances (the coordinator's default: a whole day, or the latest
    /// 1,000 of every day).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &StatusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = ListInstancesRequest {
        etl_day: args.day.clone().unwrap_or_default(),
        task: args.task.clone().unwrap_or_default(),
        limit: args.limit.map_or(0, |n| n.min(i32::MAX as u32) as i32),
        ..Default::default()
    };
    let answer = client.list_instances(request).await?.into_inner();
    write(out, &answer.instances, args.output)?;
    // Never cut a listing silently; on stderr, so that `-o json` stays one document.
    if answer.total > answer.instances.len() as i64 {
        eprintln!(
            "showing {} of {} instances (--limit N, -d DAY or -j TASK to see others)",
            thousands(answer.instances.len() as i64),
            thousands(answer.total)
        );
    }
    Ok(())
}

/// 182500 -> "182,500".
fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Writes instances as a table (or `no instances`) or as one JSON array.
pub fn write(out: &mut impl Write, instances: &[Instance], format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => output::write_json_array(out, instances.iter().map(to_json).collect()),
        Format::Table if instances.is_empty() => writeln!(out, "no instances"),
        Format::Table => out.write_all(render_table(instances).as_bytes()),
    }
}

/// `success (marked by local:alice)` for force-passed instances, the state otherwise.
pub fn state_label(i: &Instance) -> String {
    if i.forced && i.state == "success" {
        match i.marked_by.as_str() {
            "" => "success (marked)".to_string(),
            by => format!("success (marked by {by})"),
        }
    } else {
        i.state.clone()
    }
}

/// What a person wants to know beyond the state: what it waits for, why it ended.
pub fn info(i: &Instance) -> String {
    let mut parts: Vec<String> = Vec::new();
    match (i.blocked, i.wait_reason.is_empty()) {
        (true, true) => parts.push("blocked".into()),
        (true, false) if !i.wait_reason.contains("block") => {
            parts.push(format!("blocked: {}", i.wait_reason))
        }
        (_, false) => parts.push(i.wait_reason.clone()),
        (false, true) => {}
    }
    // A marked instance's message ("marked success by ...") is in its state label already.
    let marked = i.forced && i.state == "success" && !i.marked_by.is_empty();
    if !i.message.is_empty() && i.message != i.wait_reason && !marked {
        parts.push(i.message.clone());
    }
    if i.state == "up_for_retry" && i.next_try_at != 0 {
        parts.push(format!("next try at {}", output::local_time(i.next_try_at)));
    }
    parts.join("; ")
}

fn finished(i: &Instance) -> String {
    let at = output::local_time(i.finished_at);
    if i.finished_at != 0 && i.started_at != 0 {
        format!("{at} ({})", output::duration(i.finished_at - i.started_at))
    } else {
        at
    }
}

fn try_label(i: &Instance) -> String {
    if i.max_tries > 0 {
        format!("{}/{}", i.try_number, i.max_tries)
    } else {
        i.try_number.to_string()
    }
}

pub fn render_table(instances: &[Instance]) -> String {
    let rows = instances
        .iter()
        .map(|i| {
            vec![
                i.task.clone(),
                key_of(&i.period, &i.etl_day).to_string(),
                state_label(i),
                try_label(i),
                output::local_time(i.started_at),
                finished(i),
                if i.has_exit_code {
                    i.exit_code.to_string()
                } else {
                    String::new()
                },
                info(i),
            ]
        })
        .collect();
    output::table(
        [
            "TASK", "ETL_DAY", "STATE", "TRY", "STARTED", "FINISHED", "EXIT", "INFO",
        ],
        rows,
    )
}

pub fn to_json(i: &Instance) -> Value {
    json!({
        "id": i.id,
        "task": i.task,
        "etl_day": i.etl_day,
        "period": key_of(&i.period, &i.etl_day),
        "state": i.state,
        "try_number": i.try_number,
        "max_tries": i.max_tries,
        "agent": i.agent,
        "queue": i.queue,
        "priority": i.priority,
        "created_at": output::json_time(i.created_at),
        "queued_at": output::json_time(i.queued_at),
        "started_at": output::json_time(i.started_at),
        "finished_at": output::json_time(i.finished_at),
        "next_try_at": output::json_time(i.next_try_at),
        "exit_code": if i.has_exit_code { Value::from(i.exit_code) } else { Value::Null },
        "forced": i.forced,
        "marked_by": if i.forced && !i.marked_by.is_empty() { Value::from(i.marked_by.as_str()) } else { Value::Null },
        "wait_reason": i.wait_reason,
        "blocked": i.blocked,
        "message": i.message,
        // The task's version it was created with (null: created before versions were kept),
        // and the version its tries run when `run --as-then` pinned one.
        "definition_version": if i.definition_version > 0 { Value::from(i.definition_version) } else { Value::Null },
        "run_version": if i.run_version > 0 { Value::from(i.run_version) } else { Value::Null },
        // When the run its timings describe began: created_at, or the last redo (issue 19).
        "run_started_at": i.timings.as_ref().map_or(Value::Null, |t| output::json_time(t.run_started_at)),
        "timings": crate::commands::timings::to_json(i.timings.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(182_500), "182,500");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn done() -> Instance {
        Instance {
            id: 3,
            task: "load".into(),
            etl_day: "20260101".into(),
            state: "failed".into(),
            try_number: 2,
            max_tries: 3,
            started_at: 1_767_225_600_000,
            finished_at: 1_767_225_665_000,
            has_exit_code: true,
            exit_code: 0,
            message: "timed out after 10s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_object_fields() {
        let v = to_json(&done());
        assert_eq!(v["task"], "load");
        assert_eq!(v["etl_day"], "20260101");
        assert_eq!(v["state"], "failed");
        assert_eq!(v["try_number"], 2);
        assert_eq!(v["max_tries"], 3);
        assert_eq!(v["started_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["finished_at"], "2026-01-01T00:01:05.000Z");
        assert_eq!(v["queued_at"], Value::Null);
        assert_eq!(v["exit_code"], 0, "exit code 0 is a number when has_exit_code");
        for key in ["id", "agent", "forced", "wait_reason", "blocked", "message"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        let waiting = Instance {
            state: "waiting".into(),
            ..Default::default()
        };
        let v = to_json(&waiting);
        assert_eq!(v["exit_code"], Value::Null);
        assert_eq!(v["started_at"], Value::Null);

        let mut out = Vec::new();
        write(&mut out, &[done(), waiting], Format::Json).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 2);
    }

    #[test]
    fn table_columns_and_cells() {
        let forced = Instance {
            task: "extract".into(),
            etl_day: "20260101".into(),
            state: "success".into(),
            forced: true,
            marked_by: "local:alice".into(),
            ..Default::default()
        };
        assert_eq!(to_json(&forced)["marked_by"], "local:alice");
        assert_eq!(to_json(&done())["marked_by"], Value::Null);
        let text = render_table(&[done(), forced]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "TASK", "ETL_DAY", "STATE", "TRY", "STARTED", "FINISHED", "EXIT", "INFO"
            ]
        );
        assert!(lines[1].contains("failed"), "{}", lines[1]);
        assert!(lines[1].contains("2/3"), "{}", lines[1]);
        assert!(lines[1].contains("(1m05s)"), "{}", lines[1]);
        assert!(lines[1].ends_with("0      timed out after 10s"), "{}", lines[1]);
        assert!(
            lines[2].contains("success (marked by local:alice)"),
            "{}",
            lines[2]
        );

        let mut out = Vec::new();
        write(&mut out, &[], Format::Table).unwrap();
        assert_eq!(out, b"no instances\n");
    }

    #[test]
    fn info_cell() {
        let blocked = Instance {
            state: "waiting".into(),
            blocked: true,
            wait_reason: "upstream extract 20260101 failed".into(),
            ..Default::default()
        };
        assert_eq!(info(&blocked), "blocked: upstream extract 20260101 failed");
        let waiting = Instance {
            state: "waiting".into(),
            wait_reason: "waiting for extract 20260101".into(),
            ..Default::default()
        };
        assert_eq!(info(&waiting), "waiting for extract 20260101");
        let bare_blocked = Instance {
            blocked: true,
            ..Default::default()
        };
        assert_eq!(info(&bare_blocked), "blocked");
        assert_eq!(info(&Instance::default()), "");
    }

    #[test]
    fn parses() {
        let cli = crate::tests::parse(&["status", "--day", "2026-01-02"]).unwrap();
        let crate::Command::Status(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.day.as_deref(), Some("20260102"));
        assert_eq!(args.task, None);
        assert_eq!(args.output, Format::Table);
        assert!(crate::tests::parse(&["status", "-o", "yaml"]).is_err());
    }
}
