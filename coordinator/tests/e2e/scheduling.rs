//! Time and crashes: cron schedules with seconds, recovery after kill -9.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::sandbox::{Sandbox, read, state_of};

/// The fire times of `task` the standalone logged ("schedule of T fired at X for DAY").
fn fires(sb: &Sandbox, task: &str) -> Vec<String> {
    let needle = format!("schedule of {task} fired at ");
    sb.log()
        .lines()
        .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
        .map(|rest| rest.split(" for ").next().unwrap_or(rest).to_string())
        .collect()
}

/// A 6-field cron fires every 2 seconds, but all fires of one day are one etl_day instance:
/// it runs once.
#[test]
fn cron_with_seconds_fires_and_runs_one_instance_per_day() {
    // All fires must fall on one UTC day: do not start within a minute of midnight.
    let to_midnight = 86_400 - Utc::now().timestamp().rem_euclid(86_400);
    if to_midnight < 60 {
        std::thread::sleep(Duration::from_secs(to_midnight as u64 + 2));
    }
    let sb = Sandbox::start();
    let out = sb.work().join("cron.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: cron_tick
    command: "echo {{{{etl_day}}}} $GOFLOW_ATTEMPT_ID >> {}"
    schedule: "*/2 * * * * *"
    day_offset: 0
"#,
        out.display()
    ));
    let today = Utc::now().format("%Y%m%d").to_string();

    let tasks = sb.tasks_json();
    let task = tasks
        .iter()
        .find(|t| t["id"] == "cron_tick")
        .unwrap_or_else(|| panic!("tasks -o json lacks cron_tick: {tasks:#?}"));
    assert_eq!(task["schedule"], "*/2 * * * * *", "{task:#}");
    let next = task["next_fire_at"]
        .as_str()
        .unwrap_or_else(|| panic!("a scheduled task shows its next fire: {task:#}"));
    let next = chrono::DateTime::parse_from_rfc3339(next).expect("next_fire_at is RFC 3339");
    let lead = next.with_timezone(&Utc) - Utc::now();
    assert!(
        lead <= chrono::Duration::seconds(3) && lead >= chrono::Duration::seconds(-20),
        "the next fire of a 2-second schedule is {next}, now is {}",
        Utc::now()
    );

    // Three fires: the first creates the instance, the later ones must not run it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = fires(&sb, "cron_tick");
        let rows = sb.status_json(&today);
        if seen.len() >= 3 && state_of(&rows, "cron_tick") == Some("success") {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "after 30s: fires {seen:?}, status -d {today}: {rows:#?}\nstandalone log:\n{}",
                sb.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let seen = fires(&sb, "cron_tick");
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a fire time was recorded twice: {seen:?}"
    );
    assert!(distinct.len() >= 2, "distinct fire times expected: {seen:?}");
    // Let the last fire seen finish whatever it would do.
    std::thread::sleep(Duration::from_millis(1500));

    let rows = sb.status_json(&today);
    let r = sb.instance(&rows, "cron_tick");
    assert_eq!(r["etl_day"], today.as_str(), "day_offset 0: fire date: {r:#}");
    assert_eq!(r["state"], "success", "{r:#}");
    assert_eq!(r["try_number"], 1, "one run, not one per fire: {r:#}");
    let all = crate::sandbox::parse_array(&sb.ctl_ok(&["status", "-j", "cron_tick", "-o", "json"]));
    assert_eq!(all.len(), 1, "one instance for one day: {all:#?}");
    let text = read(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{} fires ran the command more than once:\n{text}",
        seen.len()
    );
    assert!(lines[0].starts_with(&format!("{today} ")), "{text}");
}

/// kill -9 while a try runs: after a restart on the same data, the try is dispatched again as a
/// new try and the rest of the DAG completes; finished work is not redone.
#[test]
fn kill9_mid_run_recovers_and_completes() {
    let mut sb = Sandbox::start();
    let trace = sb.work().join("trace.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: rec_first
    command: "echo first-{{{{try_number}}}} >> {t}"
  - id: rec_slow
    command: "echo slow-start-{{{{try_number}}}} >> {t}; echo slow-log-try{{{{try_number}}}}; sleep 8; echo slow-done-{{{{try_number}}}} >> {t}"
    depends_on: [rec_first]
  - id: rec_last
    command: "echo last-{{{{try_number}}}} >> {t}"
    depends_on: [rec_slow]
"#,
        t = trace.display()
    ));
    let day = "20260220";
    sb.ctl_ok(&["run", "-j", "rec_first", "-d", day, "--down"]);
    sb.wait_status(day, Duration::from_secs(30), "rec_slow running", |rows| {
        state_of(rows, "rec_slow") == Some("running")
    });
    // The log streams while the try runs, so it survives the crash.
    let deadline = Instant::now() + Duration::from_secs(4);
    while !sb
        .ctl_ok(&["logs", "-j", "rec_slow", "-d", day, "--try", "1"])
        .contains("slow-log-try1")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = sb.status_json(day);
    assert_eq!(state_of(&before, "rec_slow"), Some("running"), "{before:#?}");
    assert_eq!(state_of(&before, "rec_last"), Some("waiting"), "{before:#?}");

    sb.kill9();
    sb.restart();

    let rows = sb.wait_status(day, Duration::from_secs(60), "all three success", |rows| {
        ["rec_first", "rec_slow", "rec_last"]
            .iter()
            .all(|t| state_of(rows, t) == Some("success"))
    });
    let first = sb.instance(&rows, "rec_first");
    assert_eq!(first["try_number"], 1, "finished work is not redone: {first:#}");
    let slow = sb.instance(&rows, "rec_slow");
    assert_eq!(
        slow["try_number"], 2,
        "the lost try is re-dispatched as try 2: {slow:#}"
    );
    assert_eq!(slow["exit_code"], 0, "{slow:#}");
    let last = sb.instance(&rows, "rec_last");
    assert_eq!(last["try_number"], 1, "{last:#}");

    let text = read(&trace);
    let count = |word: &str| text.lines().filter(|l| *l == word).count();
    assert_eq!(count("first-1"), 1, "first ran once:\n{text}");
    assert_eq!(count("slow-start-1"), 1, "{text}");
    assert_eq!(count("slow-start-2"), 1, "slow ran again as try 2:\n{text}");
    assert_eq!(count("slow-done-2"), 1, "{text}");
    assert_eq!(count("last-1"), 1, "last ran once, after the restart:\n{text}");
    assert!(!text.contains("first-2") && !text.contains("last-2"), "{text}");

    let latest = sb.ctl_ok(&["logs", "-j", "rec_slow", "-d", day]);
    assert!(latest.contains("slow-log-try2"), "logs shows try 2:\n{latest}");
    let lost = sb.ctl_ok(&["logs", "-j", "rec_slow", "-d", day, "--try", "1"]);
    assert!(
        lost.contains("slow-log-try1"),
        "the lost try's log survives the crash:\n{lost}"
    );
    let last_log = sb.ctl(&["logs", "-j", "rec_last", "-d", day]);
    assert!(last_log.status.success(), "{}", sb.describe(&last_log));
}
