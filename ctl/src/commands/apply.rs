//! `goflowctl apply -f dag.yaml [--prune] [--dry-run]`

use std::{
    io::{Read, Write},
    path::PathBuf,
};

use anyhow::Context;
use clap::Args;
use goflow_proto::{ApplyTasksRequest, ApplyTasksResponse};

use crate::Client;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The DAG document (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Check the document and show what would change, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the tasks of the file's DAG (its top-level `dag: NAME`) that it no longer
    /// lists, with the rules of `task delete`. Tasks of other DAGs, or of none, stay.
    #[arg(long)]
    pub prune: bool,
}

pub async fn run(client: &mut Client, args: &ApplyArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let (document, source_name) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        (text, "<stdin>".to_string())
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        let name = args.file.file_name().unwrap_or(args.file.as_os_str());
        (text, name.to_string_lossy().into_owned())
    };
    anyhow::ensure!(
        document.len() <= goflow_proto::MAX_DOCUMENT_BYTES,
        "the DAG file is {}; the limit is {} (split it into several files)",
        goflow_proto::megabytes(document.len()),
        goflow_proto::megabytes(goflow_proto::MAX_DOCUMENT_BYTES)
    );
    let request = ApplyTasksRequest {
        document,
        source_name: source_name.clone(),
        dry_run: args.dry_run,
        prune: args.prune,
    };
    let response = client.apply_tasks(request).await?.into_inner();
    out.write_all(render(&response, args.dry_run, &source_name).as_bytes())?;
    Ok(())
}

/// One line per task: `extract created (version 1)`, `load unchanged`, `old deleted`, marked
/// when nothing was written.
pub fn render(response: &ApplyTasksResponse, dry_run: bool, source_name: &str) -> String {
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut text = String::new();
    for (ids, verb) in [
        (&response.created, "created"),
        (&response.updated, "updated"),
        (&response.unchanged, "unchanged"),
        (&response.deleted, "deleted"),
    ] {
        for id in ids {
            let version = match response.versions.get(id) {
                Some(v) => format!(" (version {v})"),
                None => String::new(),
            };
            text.push_str(&format!("{id} {verb}{version}{suffix}\n"));
            // An update lists each changed field: `  command: "a.sh" -> "b.sh"`.
            for change in response.changes.iter().filter(|c| &c.task == id) {
                text.push_str(&format!(
                    "  {}: {:?} -> {:?}\n",
                    change.field, change.old_value, change.new_value
                ));
            }
        }
    }
    for id in &response.calendars {
        text.push_str(&format!("calendar {id} applied{suffix}\n"));
    }
    for pool in &response.pools {
        text.push_str(&format!("pool {pool} applied{suffix}\n"));
    }
    if text.is_empty() {
        text = format!("no tasks in {source_name}\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_created_updated_unchanged() {
        let response = ApplyTasksResponse {
            pools: vec![],
            created: vec!["a".into()],
            updated: vec!["b".into()],
            unchanged: vec!["c".into(), "d".into()],
            calendars: vec![],
            deleted: vec!["e".into()],
            versions: [("a".to_string(), 1), ("b".to_string(), 4)].into(),
            dag: "shop".into(),
            changes: vec![goflow_proto::FieldChange {
                task: "b".into(),
                field: "command".into(),
                old_value: "b.sh".into(),
                new_value: "b.sh --all".into(),
            }],
        };
        assert_eq!(
            render(&response, false, "dag.yaml"),
            "a created (version 1)\nb updated (version 4)\n  command: \"b.sh\" -> \"b.sh --all\"\nc unchanged\nd unchanged\ne deleted\n"
        );
        assert_eq!(
            render(&response, true, "dag.yaml").lines().next(),
            Some("a created (version 1) (dry run)")
        );
        assert_eq!(
            render(&ApplyTasksResponse::default(), false, "x.yaml"),
            "no tasks in x.yaml\n"
        );
    }

    #[test]
    fn parses() {
        let cli = crate::tests::parse(&["apply", "-f", "-"]).unwrap();
        let crate::Command::Apply(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.file, PathBuf::from("-"));
        assert!(!args.dry_run);
        assert!(crate::tests::parse(&["apply"]).is_err());
    }
}
