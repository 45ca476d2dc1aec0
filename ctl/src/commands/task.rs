//! `goflowctl task delete ID... [--dry-run]`, `task history ID [-o json]`,
//! `task diff ID [V1] [V2]`, `task show ID [--version N] [-o yaml|json]`

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use goflow_proto::{
    DeleteTasksRequest, DiffTaskVersionsRequest, DiffTaskVersionsResponse, GetTaskVersionRequest,
    ListTaskVersionsRequest, TaskVersion,
};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Delete task definitions; their instances and logs stay readable. Refused while another
    /// task depends on one of them, unless it is deleted in the same command.
    Delete(DeleteArgs),
    /// List the versions of a task's definition: number, when, who, what changed.
    History(HistoryArgs),
    /// Print the fields that changed between two versions (default: the last two; one
    /// version given: from it to the current one).
    Diff(DiffArgs),
    /// Print a task's definition, the current one or an older version.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The task.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The task.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The older version.
    #[arg(value_name = "V1", value_parser = clap::value_parser!(i64).range(1..))]
    pub from: Option<i64>,
    /// The newer version (default: the current one).
    #[arg(value_name = "V2", value_parser = clap::value_parser!(i64).range(1..))]
    pub to: Option<i64>,
}

/// `--version N` is the version to show here, not goflowctl's own version.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct ShowArgs {
    /// The task.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The version to show (default: the current one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub version: Option<i64>,
    /// Output format: the definition with who applied it, the definition alone as YAML
    /// (a DAG file's task), or JSON.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: ShowFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// The version's facts, then its definition.
    #[default]
    Text,
    /// The definition alone, as YAML.
    Yaml,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The tasks to delete.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Check whether they could be deleted, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(client: &mut Client, args: &TaskArgs, out: &mut impl Write) -> anyhow::Result<()> {
    match &args.command {
        TaskCommand::Delete(delete) => {
            let response = client
                .delete_tasks(DeleteTasksRequest {
                    ids: delete.ids.clone(),
                    dry_run: delete.dry_run,
                })
                .await?
                .into_inner();
            writeln!(out, "{}", response.message)?;
            Ok(())
        }
        TaskCommand::History(history) => {
            let versions = client
                .list_task_versions(ListTaskVersionsRequest {
                    task: history.id.clone(),
                })
                .await?
                .into_inner()
                .versions;
            match history.output {
                Format::Json => output::write_json_array(out, versions.iter().map(version_json).collect())?,
                Format::Table => out.write_all(render_history(&versions).as_bytes())?,
            }
            Ok(())
        }
        TaskCommand::Diff(diff) => {
            let response = client
                .diff_task_versions(DiffTaskVersionsRequest {
                    task: diff.id.clone(),
                    from_version: diff.from.unwrap_or(0),
                    to_version: diff.to.unwrap_or(0),
                })
                .await?
                .into_inner();
            out.write_all(render_diff(&response).as_bytes())?;
            Ok(())
        }
        TaskCommand::Show(show) => {
            let version = client
                .get_task_version(GetTaskVersionRequest {
                    task: show.id.clone(),
                    version: show.version.unwrap_or(0),
                })
                .await?
                .into_inner();
            match show.output {
                ShowFormat::Yaml => out.write_all(version.definition.as_bytes())?,
                ShowFormat::Json => output::write_json(out, &version_json(&version))?,
                ShowFormat::Text => out.write_all(render_show(&version).as_bytes())?,
            }
            Ok(())
        }
    }
}

fn changes_list(changes: &str) -> Vec<&str> {
    changes
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// What changed, for people: `created` for a first version.
fn changes_text(v: &TaskVersion) -> String {
    if v.changes.is_empty() {
        if v.version == 1 {
            "created".into()
        } else {
            "recorded".into()
        }
    } else {
        v.changes.clone()
    }
}

fn version_json(v: &TaskVersion) -> Value {
    json!({
        "task": v.task,
        "version": v.version,
        "created_at": output::json_time(v.created_at),
        "actor": v.actor,
        "client": v.client,
        "source": v.source,
        "changes": changes_list(&v.changes),
        "current": v.current,
        "definition": v.definition,
    })
}

pub fn render_history(versions: &[TaskVersion]) -> String {
    let rows = versions
        .iter()
        .map(|v| {
            vec![
                format!("{}{}", v.version, if v.current { " *" } else { "" }),
                output::local_time(v.created_at),
                v.actor.clone(),
                v.source.clone(),
                changes_text(v),
            ]
        })
        .collect();
    let mut text = output::table(["VERSION", "APPLIED", "BY", "SOURCE", "CHANGED"], rows);
    if !versions.iter().any(|v| v.current) {
        text.push_str("(the task is deleted: no version is current)\n");
    }
    text
}

pub fn render_diff(diff: &DiffTaskVersionsResponse) -> String {
    let mut text = format!(
        "task {}: version {} -> version {}\n",
        diff.task, diff.from_version, diff.to_version
    );
    if diff.changes.is_empty() {
        text.push_str("  no changes\n");
    }
    for c in &diff.changes {
        text.push_str(&format!(
            "  {}: {:?} -> {:?}\n",
            c.field, c.old_value, c.new_value
        ));
    }
    text
}

pub fn render_show(v: &TaskVersion) -> String {
    format!(
        "# task {} version {}{}\n# applied {} by {} from {}; {}\n{}",
        v.task,
        v.version,
        if v.current { " (current)" } else { "" },
        output::local_time(v.created_at),
        v.actor,
        v.source,
        changes_text(v),
        v.definition
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: i64, changes: &str, current: bool) -> TaskVersion {
        TaskVersion {
            task: "load".into(),
            version: n,
            created_at: 0,
            actor: "alice".into(),
            client: "goflowctl".into(),
            source: "dag.yaml".into(),
            changes: changes.into(),
            definition: format!("id: load\ncommand: v{n}.sh\n"),
            current,
        }
    }

    #[test]
    fn history_marks_the_current_version_and_says_what_changed() {
        let text = render_history(&[version(1, "", false), version(2, "command, timeout", true)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VERSION"), "{text}");
        assert!(
            lines[1].starts_with("1 ") && lines[1].ends_with("created"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("2 *") && lines[2].ends_with("command, timeout"),
            "{text}"
        );
        let gone = render_history(&[version(1, "", false)]);
        assert!(gone.ends_with("no version is current)\n"), "{gone}");
        let json = version_json(&version(2, "command, timeout", true));
        assert_eq!(json["changes"], json!(["command", "timeout"]));
        assert_eq!(json["version"], 2);
    }

    #[test]
    fn diff_and_show_render() {
        let diff = DiffTaskVersionsResponse {
            task: "load".into(),
            from_version: 1,
            to_version: 2,
            changes: vec![goflow_proto::FieldChange {
                task: "load".into(),
                field: "command".into(),
                old_value: "v1.sh".into(),
                new_value: "v2.sh".into(),
            }],
        };
        assert_eq!(
            render_diff(&diff),
            "task load: version 1 -> version 2\n  command: \"v1.sh\" -> \"v2.sh\"\n"
        );
        let same = DiffTaskVersionsResponse {
            changes: vec![],
            ..diff
        };
        assert!(render_diff(&same).ends_with("  no changes\n"));
        let shown = render_show(&version(2, "command", true));
        assert!(shown.starts_with("# task load version 2 (current)\n"), "{shown}");
        assert!(shown.ends_with("id: load\ncommand: v2.sh\n"), "{shown}");
    }

    #[test]
    fn parses_history_diff_and_show() {
        let cli = crate::tests::parse(&["task", "diff", "load", "1", "3"]).unwrap();
        let crate::Command::Task(args) = cli.command else {
            panic!()
        };
        let TaskCommand::Diff(diff) = args.command else {
            panic!()
        };
        assert_eq!((diff.from, diff.to), (Some(1), Some(3)));
        assert!(crate::tests::parse(&["task", "diff", "load", "0"]).is_err());
        let cli = crate::tests::parse(&["task", "show", "load", "--version", "2", "-o", "yaml"]).unwrap();
        let crate::Command::Task(args) = cli.command else {
            panic!()
        };
        let TaskCommand::Show(show) = args.command else {
            panic!()
        };
        assert_eq!((show.version, show.output), (Some(2), ShowFormat::Yaml));
        assert!(crate::tests::parse(&["task", "history", "load", "-o", "json"]).is_ok());
    }
    #[test]
    fn parses_one_or_more_ids() {
        let cli = crate::tests::parse(&["task", "delete", "a", "b", "--dry-run"]).unwrap();
        let crate::Command::Task(args) = cli.command else {
            panic!("not a task command")
        };
        let super::TaskCommand::Delete(delete) = args.command else {
            panic!("not delete")
        };
        assert_eq!(delete.ids, ["a", "b"]);
        assert!(delete.dry_run);
        assert!(crate::tests::parse(&["task", "delete"]).is_err());
    }
}
