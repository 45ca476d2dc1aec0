//! Backfills as objects (issue 19): `backfill start` prints only the id; `--parallelism 2`
//! never runs 3 at once (the commands record their own start and end, so the check is what
//! ran, whatever the coordinator believes); pause stops new starts and resume goes on; cancel
//! leaves none of its instances queued or waiting; a cron fire during a backfill starts before
//! the backfill's queued instances; every operation is in history with its principal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Launch, Sandbox, parse_array, read, wait_for};

const LIMIT: Duration = Duration::from_secs(180);

fn standalone(slots: usize, clock: Option<&str>) -> (Sandbox, Option<PathBuf>) {
    let mut clock_path = None;
    let sb = Sandbox::start_with(|root| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "standalone".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--slots".into(),
            slots.to_string().into(),
        ];
        if let Some(time) = clock {
            let path = root.join("clock");
            std::fs::write(&path, time).unwrap();
            args.push("--test-clock".into());
            args.push(path.clone().into());
            clock_path = Some(path);
        }
        Launch {
            args,
            ..Launch::default()
        }
    });
    (sb, clock_path)
}

/// A command that appends `start NANOS DAY` and, `secs` later, `end NANOS DAY` to `file`.
fn stamping(file: &Path, secs: f64) -> String {
    let f = file.display();
    format!(
        "echo start $(date +%s%N) $GOFLOW_ETL_DAY >> {f}; sleep {secs}; echo end $(date +%s%N) $GOFLOW_ETL_DAY >> {f}"
    )
}

/// The most commands running at once, from their stamps (an end before a start at the same
/// nanosecond: touching is not overlapping), and how many started.
fn most_at_once(stamps: &str) -> (usize, usize) {
    let mut events: Vec<(u128, i32)> = stamps
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let kind = parts.next()?;
            let at: u128 = parts.next()?.parse().ok()?;
            Some((at, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    events.sort();
    let (mut now, mut most, mut starts) = (0i32, 0i32, 0);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
        if delta > 0 {
            starts += 1;
        }
    }
    (most as usize, starts)
}

fn start(sb: &Sandbox, args: &[&str]) -> i64 {
    let mut all = vec!["backfill", "start"];
    all.extend_from_slice(args);
    let out = sb.ctl(&all);
    assert!(out.status.success(), "{}", sb.describe(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the id on stdout: {stdout:?}");
    stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an id: {stdout:?}"))
}

fn show(sb: &Sandbox, id: i64) -> Value {
    serde_json::from_str(&sb.ctl_ok(&["backfill", "show", &id.to_string(), "-o", "json"])).unwrap()
}

fn count(b: &Value, state: &str) -> i64 {
    b["counts"][state].as_i64().unwrap_or(0)
}

fn wait_show(sb: &Sandbox, id: i64, what: &str, mut ok: impl FnMut(&Value) -> bool) -> Value {
    wait_for(
        LIMIT,
        what,
        || sb.log_tail(40),
        || Some(show(sb, id)).filter(|b| ok(b)),
    )
}

fn history(sb: &Sandbox, task: &str) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["history", "-j", task, "-o", "json"]))
}

#[test]
fn a_backfill_with_parallelism_2_never_runs_3_at_once() {
    let (sb, _) = standalone(6, None);
    let stamps = sb.work().join("stamps.txt");
    sb.apply(&format!(
        "tasks:\n  - id: bf\n    command: \"{}\"\n",
        stamping(&stamps, 0.6)
    ));
    let id = start(
        &sb,
        &[
            "-j",
            "bf",
            "--from",
            "20260101",
            "--to",
            "20260108",
            "--parallelism",
            "2",
            "--yes",
        ],
    );
    let done = wait_show(&sb, id, "the backfill done", |b| b["state"] == "done");
    assert_eq!(count(&done, "success"), 8, "{done:#}");
    assert_eq!(
        (done["total"].as_i64(), done["parallelism"].as_i64()),
        (Some(8), Some(2))
    );
    let (most, starts) = most_at_once(&read(&stamps));
    assert_eq!(starts, 8, "{}", read(&stamps));
    assert!(most <= 2, "{most} ran at once:\n{}", read(&stamps));

    let list = parse_array(&sb.ctl_ok(&["backfill", "list", "-o", "json"]));
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["id"].as_i64(), list[0]["state"].as_str()),
        (Some(id), Some("done"))
    );
    let table = sb.ctl_ok(&["backfill", "list"]);
    assert!(table.contains("(8/8)"), "{table}");
    // Recorded with the principal (the local user without authentication).
    let started: Vec<Value> = history(&sb, "bf")
        .into_iter()
        .filter(|op| op["action"] == "backfill start")
        .collect();
    assert_eq!(started.len(), 1, "{started:#?}");
    let detail = started[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("backfill {id}:")), "{detail}");
    assert!(
        detail.contains("--parallelism 2") && detail.contains("8 instances"),
        "{detail}"
    );
    assert!(!started[0]["actor"].as_str().unwrap().is_empty());

    // `run --from --to` is a backfill too, and says which.
    let out = sb.ctl_ok(&[
        "run", "-j", "bf", "--from", "20260109", "--to", "20260110", "--yes",
    ]);
    assert!(out.contains(&format!("(backfill {})", id + 1)), "{out}");
}

#[test]
fn pause_stops_new_starts_resume_goes_on_and_cancel_leaves_nothing_queued_or_waiting() {
    let (sb, _) = standalone(4, None);
    let stamps = sb.work().join("stamps.txt");
    sb.apply(&format!(
        "tasks:\n  - id: slow\n    command: \"{}\"\n  - id: after\n    command: \"true\"\n    depends_on: [slow]\n",
        stamping(&stamps, 2.0)
    ));
    let id = start(
        &sb,
        &[
            "-j",
            "slow",
            "--from",
            "20260201",
            "--to",
            "20260210",
            "--down",
            "--parallelism",
            "1",
            "--yes",
        ],
    );
    wait_show(&sb, id, "one running", |b| count(b, "running") == 1);
    let paused = sb.ctl_ok(&["backfill", "pause", &id.to_string()]);
    assert!(paused.contains("paused"), "{paused}");
    assert_eq!(show(&sb, id)["state"], "paused");
    // The running try runs on to its end ...
    let b = wait_show(&sb, id, "the running try finished", |b| {
        count(b, "running") == 0 && count(b, "success") >= 1
    });
    let finished = count(&b, "success");
    // ... and nothing more starts while paused (a dispatch takes milliseconds; 3 s is ample).
    std::thread::sleep(Duration::from_secs(3));
    let b = show(&sb, id);
    assert_eq!(
        (count(&b, "running"), count(&b, "success")),
        (0, finished),
        "{b:#}"
    );
    let starts_when_paused = most_at_once(&read(&stamps)).1;

    sb.ctl_ok(&["backfill", "resume", &id.to_string()]);
    wait_show(&sb, id, "starts again after resume", |b| {
        b["state"] == "running" && (count(b, "running") == 1 || count(b, "success") > finished)
    });
    wait_for(
        LIMIT,
        "a new start",
        || sb.log_tail(40),
        || (most_at_once(&read(&stamps)).1 > starts_when_paused).then_some(()),
    );

    let out = sb.ctl_ok(&["backfill", "cancel", &id.to_string()]);
    assert!(out.contains(&format!("backfill {id} cancelled: killed")), "{out}");
    assert!(out.contains("not started"), "{out}");
    let b = show(&sb, id);
    assert_eq!(b["state"], "cancelled");
    for state in ["waiting", "queued", "running", "up_for_retry"] {
        assert_eq!(count(&b, state), 0, "{state} left after cancel: {b:#}");
    }
    assert!(count(&b, "killed") > 0, "{b:#}");
    assert_eq!(b["total"].as_i64(), Some(20), "slow and after, 10 days: {b:#}");
    // Refused now, naming the state.
    let err = sb.ctl_err(&["backfill", "resume", &id.to_string()]);
    assert!(err.contains("it is cancelled"), "{err}");
    let actions: Vec<String> = history(&sb, "slow")
        .iter()
        .map(|op| op["action"].as_str().unwrap().to_string())
        .collect();
    for action in [
        "backfill start",
        "backfill pause",
        "backfill resume",
        "backfill cancel",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} not in {actions:?}");
    }
    let err = sb.ctl_err(&["backfill", "show", "999"]);
    assert!(err.contains("no backfill 999"), "{err}");
}

#[test]
fn a_cron_fire_during_a_backfill_starts_before_its_queued_instances() {
    let (sb, clock) = standalone(1, Some("2026-03-10T12:00:00Z"));
    let order = sb.work().join("order.txt");
    let o = order.display();
    sb.apply(&format!(
        r#"
tasks:
  - id: nightly
    command: "echo cron $(date +%s%N) >> {o}"
    schedule: "0 2 * * *"
    day_offset: 0
  - id: history_load
    command: "echo backfill $(date +%s%N) >> {o}; sleep 1"
"#
    ));
    let id = start(
        &sb,
        &[
            "-j",
            "history_load",
            "--from",
            "20260101",
            "--to",
            "20260112",
            "--yes",
        ],
    );
    wait_show(&sb, id, "the first backfill try", |b| count(b, "success") >= 1);
    let before = read(&order).lines().count();
    std::fs::write(clock.unwrap(), "2026-03-11T02:00:30Z").unwrap();
    wait_for(
        LIMIT,
        "the cron fire's run",
        || sb.log_tail(40),
        || read(&order).contains("cron").then_some(()),
    );
    let lines: Vec<String> = read(&order).lines().map(str::to_string).collect();
    let cron_at = lines.iter().position(|l| l.starts_with("cron")).unwrap();
    // One slot: at most the try running when the fire came, and one claimed meanwhile, start
    // before it; the backfill's other queued instances wait behind it.
    assert!(
        cron_at <= before + 2,
        "the cron run started {cron_at}th of:\n{}",
        lines.join("\n")
    );
    let b = wait_show(&sb, id, "the backfill done", |b| b["state"] == "done");
    assert_eq!(count(&b, "success"), 12);
    let after = read(&order)
        .lines()
        .skip(cron_at + 1)
        .filter(|l| l.starts_with("backfill"))
        .count();
    assert!(
        after > 0,
        "backfill instances were still queued when the fire came"
    );
}

#[test]
fn bad_backfill_requests_are_refused_naming_the_problem() {
    let (sb, _) = standalone(1, None);
    sb.apply("tasks:\n  - id: t\n    command: \"true\"\n");
    let err = sb.ctl_err(&[
        "backfill", "start", "-j", "t", "--from", "20260105", "--to", "20260101", "--yes",
    ]);
    assert!(err.contains("--from 20260105 is after --to 20260101"), "{err}");
    let err = sb.ctl_err(&[
        "backfill",
        "start",
        "-j",
        "t",
        "--from",
        "20260101",
        "--to",
        "20260102",
        "--parallelism",
        "0",
    ]);
    assert!(err.contains("parallelism") || err.contains("0"), "{err}");
    let err = sb.ctl_err(&[
        "backfill", "start", "-j", "nope", "--from", "20260101", "--to", "20260102", "--yes",
    ]);
    assert!(err.contains("unknown task \"nope\""), "{err}");
    let list = sb.ctl_ok(&["backfill", "list"]);
    assert_eq!(list.trim(), "no backfills", "a refused start records nothing");
}
