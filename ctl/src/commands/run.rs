//! `goflowctl run -j TASK -d DAY [--force] [--down] [--up] [--as-then] [--wait]`
//! `goflowctl run -j TASK --from DAY --to DAY [--down] [--wait]`

use crate::day::key_of;
use std::{collections::HashMap, io::Write, time::Duration};

use anyhow::bail;
use clap::{ArgGroup, Args};
use goflow_proto::{Instance, ListInstancesRequest, RunRequest};

use crate::{Client, day::parse_day, output::Format};

/// How often `--wait` asks for the instances' states of a server without a change stream.
const POLL_EVERY: Duration = Duration::from_millis(150);
/// At most this many ids per ListInstances call.
const IDS_PER_CALL: usize = 500;

/// One data date (`-d`), or a range (`--from`/`--to`): exactly one of the two.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").required(true).args(["day", "from"])))]
pub struct DaysArgs {
    /// The data date (yyyymmdd or yyyy-mm-dd).
    #[arg(short = 'd', long = "day", value_name = "DAY", value_parser = parse_day,
          conflicts_with_all = ["from", "to"])]
    pub day: Option<String>,
    /// The first data date of a range (a backfill).
    #[arg(long, value_name = "DAY", value_parser = parse_day, requires = "to")]
    pub from: Option<String>,
    /// The last data date of the range (inclusive).
    #[arg(long, value_name = "DAY", value_parser = parse_day, requires = "from")]
    pub to: Option<String>,
}

impl DaysArgs {
    /// (etl_day, from_day, to_day) for a request, days already normalized by clap.
    pub fn fields(&self) -> anyhow::Result<(String, String, String)> {
        if let (Some(from), Some(to)) = (&self.from, &self.to)
            && from > to
        {
            bail!("--from {from} is after --to {to}");
        }
        Ok((
            self.day.clone().unwrap_or_default(),
            self.from.clone().unwrap_or_default(),
            self.to.clone().unwrap_or_default(),
        ))
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task to run.
    #[arg(short = 'j', long = "task", value_name = "TASK")]
    pub task: String,
    #[command(flatten)]
    pub days: DaysArgs,
    /// Run now even if upstream instances have not succeeded.
    #[arg(long)]
    pub force: bool,
    /// Also rerun everything downstream.
    #[arg(long)]
    pub down: bool,
    /// Also rerun everything upstream.
    #[arg(long)]
    pub up: bool,
    /// Wait until every touched instance has finished; exit 1 unless all succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Print the instances the run would cover, and change nothing.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// Run without asking, however many instances it covers.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Run each instance with the task version its first try ran, not the current
    /// definition (refused for an instance that never ran).
    #[arg(long)]
    pub as_then: bool,
}

/// A run over more instances than this asks for confirmation (or `--yes`).
pub const CONFIRM_ABOVE: usize = 300;

/// The RunRequest for these arguments (days already normalized to yyyymmdd by clap).
pub fn request(args: &RunArgs) -> anyhow::Result<RunRequest> {
    let (etl_day, from_day, to_day) = args.days.fields()?;
    Ok(RunRequest {
        task: args.task.clone(),
        etl_day,
        from_day,
        to_day,
        down: args.down,
        up: args.up,
        force: args.force,
        dry_run: args.dry_run,
        as_then: args.as_then,
    })
}

pub async fn run(client: &mut Client, args: &RunArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = request(args)?;
    if args.dry_run {
        let preview = client.run(request).await?.into_inner();
        return super::write_refs(out, &preview.message, &preview.instances).map_err(Into::into);
    }
    // A backfill (or a run with --down/--up) may cover many instances: count them first.
    let may_be_big = !request.from_day.is_empty() || args.down || args.up;
    if may_be_big && !args.yes {
        let preview = client
            .run(RunRequest {
                dry_run: true,
                ..request.clone()
            })
            .await?
            .into_inner();
        let count = preview.instances.len();
        if count > CONFIRM_ABOVE && !confirm(count, out)? {
            bail!(
                "not run: it would run {} (see --dry-run; --yes runs without asking)",
                count_of(count)
            );
        }
    }
    let response = client.run(request).await?.into_inner();
    super::write_refs(out, &response.message, &response.instances)?;
    if !args.wait || response.instances.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = response.instances.iter().map(|r| r.id).collect();
    wait(client, &ids, out).await
}

/// Follows the instances until [`verdict`] says they are done (on the server's change stream;
/// by polling a server from before it), prints their final status, and fails (exit 1) unless
/// every one succeeded.
pub async fn wait(client: &mut Client, ids: &[i64], out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "waiting for {} to finish...", count_of(ids.len()))?;
    out.flush()?;
    let instances = match super::watch::until_done(client, ids).await? {
        Some(instances) => instances,
        None => poll(client, ids).await?,
    };
    super::status::write(out, &instances, Format::Table)?;
    match verdict(ids, &instances) {
        Verdict::Done { problems } if problems.is_empty() => Ok(()),
        Verdict::Done { problems } => bail!("{}", summary(&problems, ids.len())),
        Verdict::Pending => unreachable!("answered once done"),
    }
}

/// Asks for the instances every [`POLL_EVERY`] until [`verdict`] says they are done.
async fn poll(client: &mut Client, ids: &[i64]) -> anyhow::Result<Vec<Instance>> {
    loop {
        let mut instances = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            let request = ListInstancesRequest {
                ids: chunk.to_vec(),
                limit: chunk.len() as i32,
                ..Default::default()
            };
            instances.extend(client.list_instances(request).await?.into_inner().instances);
        }
        if let Verdict::Done { .. } = verdict(ids, &instances) {
            return Ok(instances);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Asks on the terminal; without one (a script), the answer is no.
fn confirm(count: usize, out: &mut impl Write) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    write!(out, "run {}? [y/N] ", count_of(count))?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn count_of(n: usize) -> String {
    crate::output::count(n, "instance")
}

/// Problems named one by one in a failed wait's error; the rest are counted.
const PROBLEMS_NAMED: usize = 3;

/// One line for a failed wait, however many instances: counts by state, the first few, and
/// where to read the rest.
/// `12 of 90 instances did not succeed (10 failed, 2 blocked): a 20260101 failed; ...; and 9
/// more (goflowctl status -d 20260101 shows them)`
pub fn summary(problems: &[Problem], total: usize) -> String {
    let mut by_state: Vec<(&str, usize)> = Vec::new();
    for p in problems {
        match by_state.iter_mut().find(|(s, _)| *s == p.state) {
            Some((_, n)) => *n += 1,
            None => by_state.push((p.state, 1)),
        }
    }
    let counts: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let named: Vec<&str> = problems
        .iter()
        .take(PROBLEMS_NAMED)
        .map(|p| p.text.as_str())
        .collect();
    let mut line = format!(
        "{} of {} did not succeed ({}): {}",
        problems.len(),
        count_of(total),
        counts.join(", "),
        named.join("; ")
    );
    if problems.len() > PROBLEMS_NAMED {
        line.push_str(&format!("; and {} more", problems.len() - PROBLEMS_NAMED));
    }
    if let Some(day) = problems.iter().find_map(|p| p.etl_day.as_deref()) {
        line.push_str(&format!(" (goflowctl status -d {day} shows "));
        line.push_str(if problems.len() > 1 { "them)" } else { "it)" });
    }
    line
}

/// An instance of a `--wait` that did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// failed, killed, timed_out, blocked, or gone (deleted meanwhile).
    pub state: &'static str,
    /// Its data date (none when gone).
    pub etl_day: Option<String>,
    /// `extract 20260101 failed`, `load 20260101 blocked (upstream ... failed)`.
    pub text: String,
}

impl Problem {
    fn of(i: &Instance, state: &'static str, text: String) -> Self {
        Self {
            state,
            etl_day: Some(key_of(&i.period, &i.etl_day).to_string()),
            text,
        }
    }
}

/// Where a `--wait` stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some instance can still change.
    Pending,
    /// Nothing will change any more; `problems` names every instance that did not succeed.
    Done { problems: Vec<Problem> },
}

/// Done when every instance is finished (success, failed, killed) or waits behind a failed one
/// (`blocked`). An id the server no longer returns (deleted meanwhile) counts as finished and
/// not successful, so the wait cannot hang on it.
pub fn verdict(ids: &[i64], instances: &[Instance]) -> Verdict {
    let by_id: HashMap<i64, &Instance> = instances.iter().map(|i| (i.id, i)).collect();
    let mut problems = Vec::new();
    for id in ids {
        let Some(i) = by_id.get(id) else {
            problems.push(Problem {
                state: "gone",
                etl_day: None,
                text: format!("instance {id} is gone (deleted?)"),
            });
            continue;
        };
        match i.state.as_str() {
            "success" => {}
            state @ ("failed" | "killed" | "timed_out") => {
                let state = match state {
                    "failed" => "failed",
                    "killed" => "killed",
                    _ => "timed_out",
                };
                problems.push(Problem::of(
                    i,
                    state,
                    format!("{} {} {state}", i.task, key_of(&i.period, &i.etl_day)),
                ))
            }
            "waiting" if i.blocked => {
                let why = if i.wait_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", i.wait_reason)
                };
                problems.push(Problem::of(
                    i,
                    "blocked",
                    format!("{} {} blocked{why}", i.task, key_of(&i.period, &i.etl_day)),
                ))
            }
            _ => return Verdict::Pending,
        }
    }
    Verdict::Done { problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        crate::tests::parse(&all).map(|cli| match cli.command {
            crate::Command::Run(args) => args,
            other => panic!("{other:?}"),
        })
    }

    fn inst(id: i64, state: &str, blocked: bool) -> Instance {
        Instance {
            id,
            task: format!("t{id}"),
            etl_day: "20260101".into(),
            state: state.into(),
            blocked,
            ..Default::default()
        }
    }

    #[test]
    fn single_day() {
        let args = parse(&[
            "-j",
            "load",
            "-d",
            "2026-01-02",
            "--force",
            "--down",
            "--up",
            "--wait",
        ])
        .unwrap();
        let req = request(&args).unwrap();
        assert_eq!(req.task, "load");
        assert_eq!(req.etl_day, "20260102");
        assert!(req.from_day.is_empty() && req.to_day.is_empty());
        assert!(req.force && req.down && req.up);
        assert!(args.wait);
    }

    #[test]
    fn backfill_range() {
        let args = parse(&[
            "--task",
            "load",
            "--from",
            "20260101",
            "--to",
            "2026-01-31",
            "--down",
        ])
        .unwrap();
        let req = request(&args).unwrap();
        assert_eq!(
            (req.from_day.as_str(), req.to_day.as_str()),
            ("20260101", "20260131")
        );
        assert!(req.etl_day.is_empty());
        assert!(req.down && !req.up && !req.force);

        let args = parse(&["-j", "a", "--from", "20260105", "--to", "20260101"]).unwrap();
        assert_eq!(
            request(&args).unwrap_err().to_string(),
            "--from 20260105 is after --to 20260101"
        );
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["-j", "a"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["-d", "20260101"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["-j", "a", "--from", "20260101"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["-j", "a", "--to", "20260101"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "-j", "a", "-d", "20260101", "--from", "20260101", "--to", "20260102"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["-j", "a", "--from", "2026-02-30", "--to", "20260301"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn wait_is_pending_while_anything_can_change() {
        for state in ["waiting", "queued", "running", "up_for_retry", "something_new"] {
            let all = [inst(1, "success", false), inst(2, state, false)];
            assert_eq!(verdict(&[1, 2], &all), Verdict::Pending, "{state}");
        }
    }

    #[test]
    fn wait_done_when_all_succeeded() {
        let all = [inst(1, "success", false), inst(2, "success", false)];
        assert_eq!(verdict(&[1, 2], &all), Verdict::Done { problems: vec![] });
    }

    #[test]
    fn wait_done_with_failures_and_blocked() {
        let mut blocked = inst(3, "waiting", true);
        blocked.wait_reason = "upstream t2 20260101 failed".into();
        let all = [
            inst(1, "success", false),
            inst(2, "failed", false),
            blocked,
            inst(4, "killed", false),
        ];
        let Verdict::Done { problems } = verdict(&[1, 2, 3, 4], &all) else {
            panic!("done")
        };
        let texts: Vec<&str> = problems.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "t2 20260101 failed",
                "t3 20260101 blocked (upstream t2 20260101 failed)",
                "t4 20260101 killed",
            ]
        );
        let states: Vec<&str> = problems.iter().map(|p| p.state).collect();
        assert_eq!(states, ["failed", "blocked", "killed"]);
        assert_eq!(
            summary(&problems, 4),
            "3 of 4 instances did not succeed (1 failed, 1 blocked, 1 killed): t2 20260101 failed; \
             t3 20260101 blocked (upstream t2 20260101 failed); t4 20260101 killed \
             (goflowctl status -d 20260101 shows them)"
        );
    }

    #[test]
    fn wait_counts_a_vanished_instance_as_done_and_unsuccessful() {
        let all = [inst(1, "success", false)];
        let Verdict::Done { problems } = verdict(&[1, 9], &all) else {
            panic!("done")
        };
        assert_eq!(
            summary(&problems, 2),
            "1 of 2 instances did not succeed (1 gone): instance 9 is gone (deleted?)"
        );
    }

    /// A failed backfill of 90 instances: one short line, not every instance.
    #[test]
    fn a_big_failed_wait_is_summed_up_by_state() {
        let mut all = vec![];
        for n in 0..90 {
            let mut i = inst(n, if n < 30 { "failed" } else { "waiting" }, n >= 30);
            i.etl_day = format!("2026{:02}{:02}", 1 + n / 28, 1 + n % 28);
            i.wait_reason = "upstream extract 20260101 failed; a long reason".into();
            all.push(i);
        }
        let ids: Vec<i64> = (0..90).collect();
        let Verdict::Done { problems } = verdict(&ids, &all) else {
            panic!("done")
        };
        let line = summary(&problems, 90);
        assert!(
            line.starts_with("90 of 90 instances did not succeed (30 failed, 60 blocked): t0 20260101 failed; t1 20260102 failed; t2 20260103 failed; and 87 more (goflowctl status -d 20260101 shows them)"),
            "{line}"
        );
        assert!(line.len() < 300, "{} characters: {line}", line.len());
        let one = [inst(5, "timed_out", false)];
        let Verdict::Done { problems } = verdict(&[5], &one) else {
            panic!("done")
        };
        assert_eq!(
            summary(&problems, 1),
            "1 of 1 instance did not succeed (1 timed_out): t5 20260101 timed_out (goflowctl status -d 20260101 shows it)"
        );
    }

    #[test]
    fn wait_failure_does_not_hide_a_pending_one() {
        let all = [inst(1, "failed", false), inst(2, "running", false)];
        assert_eq!(verdict(&[1, 2], &all), Verdict::Pending);
    }
}
