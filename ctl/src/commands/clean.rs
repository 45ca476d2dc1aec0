//! `goflowctl clean --before DAY [--dry-run] [--yes]` (admin): deletes instances, tries, logs
//! and operations older than DAY, keeping unfinished instances and what they still depend on.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use goflow_proto::{CleanHistoryRequest, CleanHistoryResponse};
use serde_json::json;

use crate::{
    Client,
    day::parse_day,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// The first day to keep (yyyymmdd or yyyy-mm-dd): instances of earlier days go, with
    /// their tries and logs, and so do operations recorded before it (UTC).
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    pub before: String,
    /// Count what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete without asking (needed without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &CleanArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = |dry_run| CleanHistoryRequest {
        before: args.before.clone(),
        dry_run,
    };
    if !args.dry_run && !args.yes {
        // Say what would go, then ask; a script must say --yes.
        let preview = client.clean_history(request(true)).await?.into_inner();
        write_report(out, &preview, Format::Table)?;
        if preview.instances == 0 && preview.operations == 0 {
            return Ok(());
        }
        if !confirm(out)? {
            bail!("nothing deleted: answer y on a terminal, or pass --yes");
        }
    }
    let report = client.clean_history(request(args.dry_run)).await?.into_inner();
    write_report(out, &report, args.output)
}

fn write_report(out: &mut impl Write, r: &CleanHistoryResponse, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => output::write_json(
            out,
            &json!({
                "before": r.before,
                "dry_run": r.dry_run,
                "instances": r.instances,
                "tries": r.tries,
                "log_chunks": r.log_chunks,
                "log_bytes": r.log_bytes,
                "log_objects": r.log_objects,
                "operations": r.operations,
                "kept": r.kept,
                "kept_examples": r.kept_examples,
                "message": r.message,
            }),
        )?,
        Format::Table => {
            writeln!(out, "{}", r.message)?;
            for example in &r.kept_examples {
                writeln!(out, "  kept {example}")?;
            }
            if r.kept > r.kept_examples.len() as i64 {
                writeln!(out, "  and {} more kept", r.kept - r.kept_examples.len() as i64)?;
            }
        }
    }
    Ok(())
}

/// Asks on the terminal; without one (a script), the answer is no.
fn confirm(out: &mut impl Write) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    write!(out, "delete them? [y/N] ")?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_before_dry_run_and_yes() {
        let cli = crate::tests::parse(&["clean", "--before", "2026-01-31", "--dry-run", "--yes"]).unwrap();
        let crate::Command::Clean(args) = cli.command else {
            panic!("not clean")
        };
        assert_eq!(args.before, "20260131");
        assert!(args.dry_run && args.yes);
        assert!(crate::tests::parse(&["clean"]).is_err(), "--before is required");
        assert!(crate::tests::parse(&["clean", "--before", "2026-02-30"]).is_err());
    }
}
