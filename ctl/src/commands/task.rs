//! `goflowctl task delete ID... [--dry-run]`

use std::io::Write;

use clap::{Args, Subcommand};
use goflow_proto::DeleteTasksRequest;

use crate::Client;

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
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_one_or_more_ids() {
        let cli = crate::tests::parse(&["task", "delete", "a", "b", "--dry-run"]).unwrap();
        let crate::Command::Task(args) = cli.command else {
            panic!("not a task command")
        };
        let super::TaskCommand::Delete(delete) = args.command;
        assert_eq!(delete.ids, ["a", "b"]);
        assert!(delete.dry_run);
        assert!(crate::tests::parse(&["task", "delete"]).is_err());
    }
}
