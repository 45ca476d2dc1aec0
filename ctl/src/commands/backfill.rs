//! `goflowctl backfill start -j TASK --from P --to P [--down] [--parallelism N] [--yes]`: runs a
//! range as a backfill and prints only its id on stdout (`ID=$(goflowctl backfill start ...)`).
//! `goflowctl backfill list|show ID [--watch]|pause ID|resume ID|cancel ID [-o json]`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use goflow_proto::{
    Backfill, CancelBackfillRequest, GetBackfillRequest, ListBackfillsRequest, PauseBackfillRequest,
    ResumeBackfillRequest, StartBackfillRequest,
};
use serde_json::{Value, json};

use crate::day::parse_day;
use crate::{
    Client,
    output::{self, Format},
};

/// How often `show --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Cells of the progress bar.
const BAR_WIDTH: usize = 30;

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(subcommand)]
    pub command: BackfillCommand,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t, global = true)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Run a task over a range of periods as a backfill; prints only its id.
    Start(StartArgs),
    /// The newest backfills with their progress.
    List,
    /// A backfill's counts by state, progress, throughput and ETA.
    Show {
        #[arg(value_name = "ID")]
        id: i64,
        /// Redraw every second until it is done or cancelled.
        #[arg(long)]
        watch: bool,
    },
    /// Start none of its instances any more; running tries run on.
    Pause {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Let a paused backfill's instances start again.
    Resume {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Kill its running tries and end every instance of it not started yet as killed.
    Cancel {
        #[arg(value_name = "ID")]
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The task to backfill.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    /// The first period (yyyymmdd or yyyy-mm-dd; yyyymmddHH or yyyymm for hourly or monthly tasks).
    #[arg(long, value_name = "P", value_parser = parse_day)]
    pub from: String,
    /// The last period (inclusive).
    #[arg(long, value_name = "P", value_parser = parse_day)]
    pub to: String,
    /// Also run everything downstream, within the range.
    #[arg(long)]
    pub down: bool,
    /// At most N of its instances queued or running at once (default: as free slots allow).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub parallelism: Option<i64>,
    /// Start without asking, however many instances it covers.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(
    client: &mut Client,
    args: &BackfillArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let format = args.output;
    match &args.command {
        BackfillCommand::Start(start) => self::start(client, start, format, out, err).await,
        BackfillCommand::List => {
            let backfills = client
                .list_backfills(ListBackfillsRequest { limit: 100 })
                .await?
                .into_inner()
                .backfills;
            match format {
                Format::Json => output::write_json_array(out, backfills.iter().map(to_json).collect())?,
                Format::Table if backfills.is_empty() => writeln!(out, "no backfills")?,
                Format::Table => out.write_all(render_list(&backfills).as_bytes())?,
            }
            Ok(())
        }
        BackfillCommand::Show { id, watch } => show(client, *id, *watch, format, out).await,
        BackfillCommand::Pause { id } => {
            let b = client
                .pause_backfill(PauseBackfillRequest { id: *id })
                .await?
                .into_inner();
            write_one(out, &b, format)
        }
        BackfillCommand::Resume { id } => {
            let b = client
                .resume_backfill(ResumeBackfillRequest { id: *id })
                .await?
                .into_inner();
            write_one(out, &b, format)
        }
        BackfillCommand::Cancel { id } => {
            let answer = client
                .cancel_backfill(CancelBackfillRequest { id: *id })
                .await?
                .into_inner();
            match format {
                Format::Json => {
                    let mut value = answer.backfill.as_ref().map(to_json).unwrap_or(Value::Null);
                    value["killed_running"] = answer
                        .killed_running
                        .iter()
                        .map(|r| json!({"task": r.task, "period": r.period}))
                        .collect();
                    value["killed_not_started"] = answer
                        .killed_unstarted
                        .iter()
                        .map(|c| (c.state.clone(), json!(c.count)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                    output::write_json(out, &value)?;
                }
                Format::Table => {
                    writeln!(out, "{}", answer.message)?;
                    for r in &answer.killed_running {
                        writeln!(out, "  killed running: {}@{}", r.task, r.period)?;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn start(
    client: &mut Client,
    args: &StartArgs,
    format: Format,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    if args.from > args.to {
        bail!("--from {} is after --to {}", args.from, args.to);
    }
    let request = StartBackfillRequest {
        task: args.task.clone(),
        from_day: args.from.clone(),
        to_day: args.to.clone(),
        down: args.down,
        parallelism: args.parallelism.unwrap_or(0),
        dry_run: false,
    };
    if !args.yes {
        let preview = client
            .start_backfill(StartBackfillRequest {
                dry_run: true,
                ..request.clone()
            })
            .await?
            .into_inner();
        let count = preview.instances as usize;
        if count > super::run::CONFIRM_ABOVE && !confirm(count, err)? {
            bail!(
                "not started: it would run {} (--yes starts it without asking)",
                output::count(count, "instance")
            );
        }
    }
    let b = client.start_backfill(request).await?.into_inner();
    match format {
        Format::Json => output::write_json(out, &to_json(&b))?,
        Format::Table => {
            // Only the id on stdout: `ID=$(goflowctl backfill start ...)`.
            writeln!(out, "{}", b.id)?;
            out.flush()?;
            writeln!(err, "{}; goflowctl backfill show {} --watch", b.message, b.id)?;
        }
    }
    Ok(())
}

/// Asks on the terminal; without one (a script), the answer is no.
fn confirm(count: usize, err: &mut impl Write) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    write!(
        err,
        "start a backfill of {}? [y/N] ",
        output::count(count, "instance")
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn show(
    client: &mut Client,
    id: i64,
    watch: bool,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal() && format == Format::Table;
    let mut drawn_lines = 0;
    loop {
        let b = client.get_backfill(GetBackfillRequest { id }).await?.into_inner();
        if format == Format::Json {
            output::write_json(out, &to_json(&b))?;
        } else {
            let text = render_show(&b, terminal, output::now_ms());
            if watch && terminal && drawn_lines > 0 {
                // Back to the top of the last drawing, and clear it.
                write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
            }
            out.write_all(text.as_bytes())?;
            drawn_lines = text.lines().count();
        }
        out.flush()?;
        if !watch || matches!(b.state.as_str(), "done" | "cancelled") {
            return Ok(());
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

fn write_one(out: &mut impl Write, b: &Backfill, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => output::write_json(out, &to_json(b))?,
        Format::Table => writeln!(out, "{}", b.message)?,
    }
    Ok(())
}

fn range(b: &Backfill) -> String {
    format!(
        "{}..{}{}",
        b.from_day,
        b.to_day,
        if b.down { " --down" } else { "" }
    )
}

fn progress_of(b: &Backfill) -> goflow_core::backfill::Progress {
    goflow_core::backfill::Progress {
        by_state: b.counts.iter().map(|c| (c.state.clone(), c.count)).collect(),
    }
}

pub fn render_list(backfills: &[Backfill]) -> String {
    let rows = backfills
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.task.clone(),
                range(b),
                b.state.clone(),
                progress_of(b).bar(20),
                if b.parallelism > 0 {
                    b.parallelism.to_string()
                } else {
                    "-".into()
                },
                b.created_by.clone(),
                output::local_time(b.created_at),
            ]
        })
        .collect();
    output::table(
        [
            "ID",
            "TASK",
            "RANGE",
            "STATE",
            "PROGRESS",
            "PARALLELISM",
            "BY",
            "CREATED",
        ],
        rows,
    )
}

/// `show`: the bar on a terminal; counts, throughput and ETA always.
pub fn render_show(b: &Backfill, terminal: bool, now: i64) -> String {
    let progress = progress_of(b);
    let mut text = format!("backfill {} of {} {}: {}\n", b.id, b.task, range(b), b.state);
    if terminal {
        text.push_str(&format!("{}\n", progress.bar(BAR_WIDTH)));
    } else {
        text.push_str(&format!(
            "{} of {} finished\n",
            progress.finished(),
            progress.total()
        ));
    }
    let counts: Vec<String> = b
        .counts
        .iter()
        .map(|c| format!("{} {}", c.state, c.count))
        .collect();
    text.push_str(&format!(
        "instances: {}\n",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    ));
    if b.parallelism > 0 {
        text.push_str(&format!("parallelism: {}\n", b.parallelism));
    }
    text.push_str(&format!(
        "throughput: {}\n",
        if b.has_per_minute {
            format!("{:.1} instances/min", b.per_minute)
        } else {
            "unknown yet".into()
        }
    ));
    text.push_str(&format!(
        "eta: {}\n",
        match (b.state.as_str(), b.eta_at) {
            ("done", _) => "done".to_string(),
            ("paused" | "cancelled", _) => format!("none ({})", b.state),
            (_, 0) => "unknown (nothing finished lately)".to_string(),
            (_, at) => format!(
                "{} (in {})",
                output::local_time(at),
                output::duration((at - now).max(0))
            ),
        }
    ));
    text.push_str(&format!(
        "started by {} at {}\n",
        b.created_by,
        output::local_time(b.created_at)
    ));
    text
}

pub fn to_json(b: &Backfill) -> Value {
    json!({
        "id": b.id,
        "task": b.task,
        "from": b.from_day,
        "to": b.to_day,
        "down": b.down,
        "parallelism": if b.parallelism > 0 { json!(b.parallelism) } else { Value::Null },
        "state": b.state,
        "created_by": b.created_by,
        "created_at": output::json_time(b.created_at),
        "instances": b.instances,
        "counts": b.counts.iter().map(|c| (c.state.clone(), json!(c.count))).collect::<serde_json::Map<_, _>>(),
        "finished": b.finished,
        "total": b.total,
        "per_minute": if b.has_per_minute { json!(b.per_minute) } else { Value::Null },
        "eta_at": if b.eta_at > 0 { output::json_time(b.eta_at) } else { Value::Null },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_proto::BackfillStateCount;

    fn backfill() -> Backfill {
        Backfill {
            id: 3,
            task: "load".into(),
            from_day: "20260101".into(),
            to_day: "20260110".into(),
            down: true,
            parallelism: 2,
            state: "running".into(),
            created_by: "alice".into(),
            counts: vec![
                BackfillStateCount {
                    state: "success".into(),
                    count: 5,
                },
                BackfillStateCount {
                    state: "waiting".into(),
                    count: 5,
                },
            ],
            finished: 5,
            total: 10,
            has_per_minute: true,
            per_minute: 2.5,
            eta_at: 120_000,
            ..Default::default()
        }
    }

    #[test]
    fn show_draws_a_bar_on_a_terminal_and_counts_otherwise() {
        let b = backfill();
        let on_terminal = render_show(&b, true, 0);
        assert!(
            on_terminal.contains("[###############---------------]  50% (5/10)"),
            "{on_terminal}"
        );
        assert!(
            on_terminal.contains("throughput: 2.5 instances/min"),
            "{on_terminal}"
        );
        assert!(on_terminal.contains("(in 2m"), "{on_terminal}");
        let piped = render_show(&b, false, 0);
        assert!(piped.contains("5 of 10 finished"), "{piped}");
        assert!(piped.contains("instances: success 5, waiting 5"), "{piped}");
        assert!(!piped.contains('#'), "{piped}");
    }

    #[test]
    fn json_names_every_field() {
        let v = to_json(&backfill());
        assert_eq!(v["id"], 3);
        assert_eq!(v["state"], "running");
        assert_eq!(v["counts"]["waiting"], 5);
        assert_eq!(v["parallelism"], 2);
        assert_eq!(v["per_minute"], 2.5);
        let unbounded = to_json(&Backfill {
            parallelism: 0,
            eta_at: 0,
            ..backfill()
        });
        assert!(unbounded["parallelism"].is_null() && unbounded["eta_at"].is_null());
    }
}
