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

/// A cron fire for day D creates the day's run with the task whose only upstream is the
/// previous day's (`b` after `a` of the day before): b@D is created and waits for a@D-1,
/// saying so; a@D-1 succeeding releases it. (Each fire of the day after the first creates
/// nothing more.)
#[test]
fn cron_fire_creates_the_day_s_offset_only_downstream() {
    // Every fire must fall on one UTC day: do not start within a minute of midnight.
    let to_midnight = 86_400 - Utc::now().timestamp().rem_euclid(86_400);
    if to_midnight < 60 {
        std::thread::sleep(Duration::from_secs(to_midnight as u64 + 2));
    }
    let sb = Sandbox::start();
    let out = sb.work().join("cron.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: offc_a
    command: "echo offc_a {{{{etl_day}}}} >> {o}"
    schedule: "* * * * * *"
    day_offset: 0
  - id: offc_b
    command: "echo offc_b {{{{etl_day}}}} >> {o}"
    depends_on: [{{task: offc_a, day_offset: -1}}]
"#,
        o = out.display()
    ));
    let today = Utc::now().date_naive();
    let yesterday = (today - chrono::Days::new(1)).format("%Y%m%d").to_string();
    let today = today.format("%Y%m%d").to_string();
    let rows = sb.wait_status(&today, Duration::from_secs(30), "a fire to run a@D", |rows| {
        state_of(rows, "offc_a") == Some("success")
    });
    assert!(!fires(&sb, "offc_a").is_empty(), "{}", sb.log_tail(20));
    let b = sb.instance(&rows, "offc_b");
    assert_eq!(b["state"], "waiting", "the fire created b@D, waiting: {b:#}");
    let reason = b["wait_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("offc_a@{yesterday}")) && reason.contains("no instance"),
        "the wait reason names a@D-1 and that it has no instance: {b:#}"
    );
    assert!(
        sb.status_json(&yesterday).is_empty(),
        "a fire for D creates nothing on D-1"
    );

    sb.ctl_ok(&["run", "-j", "offc_a", "-d", &yesterday, "--wait"]);
    let rows = sb.wait_status(&today, Duration::from_secs(30), "b@D released by a@D-1", |rows| {
        state_of(rows, "offc_b") == Some("success")
    });
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for task in ["offc_a", "offc_b"] {
        assert_eq!(
            sb.instance(&rows, task)["try_number"],
            1,
            "one run for the day's fires: {rows:#?}"
        );
    }
    let mut ran: Vec<String> = read(&out).lines().map(str::to_string).collect();
    ran.sort();
    let mut want = [
        format!("offc_a {yesterday}"),
        format!("offc_a {today}"),
        format!("offc_b {today}"),
    ];
    want.sort();
    assert_eq!(ran, want, "each once");
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

/// A schedule whose fires were missed while goflow was down fires once on restart, and the
/// log says what was missed.
#[test]
fn missed_fires_are_caught_up_once_after_downtime() {
    let mut sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: catchup_tick
    command: "true"
    schedule: "* * * * * *"
    day_offset: 0
"#,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while fires(&sb, "catchup_tick").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no fire within 20s:\n{}",
            sb.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sb.kill9();
    let log_before = sb.log();
    // Down for four seconds: three or four fires of a per-second schedule are missed.
    std::thread::sleep(Duration::from_secs(4));
    sb.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let catch_up = loop {
        let log = sb.log();
        let fresh = log.strip_prefix(log_before.as_str()).unwrap_or(&log).to_string();
        if let Some(line) = fresh
            .lines()
            .find(|l| l.contains("schedule of catchup_tick missed"))
        {
            break (line.to_string(), fresh);
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up logged after restart:\n{fresh}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (line, fresh) = catch_up;
    assert!(line.contains("catching it up once"), "{line}");
    let skipped: u32 = line
        .split(" (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the catch-up line counts the fires not run: {line}"));
    assert!(
        (1..=6).contains(&skipped),
        "about four seconds of fires were missed: {line}"
    );
    // One catch-up, not one per missed tick.
    assert_eq!(
        fresh
            .lines()
            .filter(|l| l.contains("schedule of catchup_tick missed") && l.contains("while goflow was down"))
            .count(),
        1,
        "{fresh}"
    );
}

/// `goflowctl logs -f` shows output while the command still runs, and ends when it ends.
#[test]
fn logs_follow_streams_output_while_the_try_runs() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: follow_me
    command: "for i in 1 2 3; do echo tick-$i; sleep 1; done"
"#,
    );
    sb.ctl_ok(&["run", "-j", "follow_me", "-d", "20260301"]);
    sb.wait_status("20260301", Duration::from_secs(20), "follow_me running", |rows| {
        state_of(rows, "follow_me") == Some("running")
    });
    let ctl = crate::sandbox::goflow_bin().with_file_name("goflowctl");
    let mut follower = crate::sandbox::clean_env(&mut Command::new(&ctl))
        .args([
            "--server",
            &sb.server_url(),
            "logs",
            "-j",
            "follow_me",
            "-d",
            "20260301",
            "-f",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start goflowctl logs -f");
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").expect("readable");
    assert!(first.contains("out| tick-"), "{first}");
    let state_when_first_seen = state_of(&sb.status_json("20260301"), "follow_me").map(str::to_string);
    let rest: Vec<String> = lines.map(|l| l.expect("readable")).collect();
    let status = follower.wait().expect("goflowctl logs -f ends");
    assert!(status.success(), "logs -f exits 0 when the try ends");
    assert_eq!(
        state_when_first_seen.as_deref(),
        Some("running"),
        "output arrived while the command ran (first line: {first})"
    );
    let all = std::iter::once(first).chain(rest).collect::<Vec<_>>().join("\n");
    for tick in ["tick-1", "tick-2", "tick-3"] {
        assert_eq!(all.matches(tick).count(), 1, "{tick} exactly once in:\n{all}");
    }
    assert_eq!(
        state_of(&sb.status_json("20260301"), "follow_me"),
        Some("success")
    );
}

/// kill -9 of goflow takes the commands it ran with it (through goflow-shim), so the try that
/// is dispatched again after the restart is the only live run.
#[test]
fn kill9_of_goflow_leaves_no_command_running() {
    let mut sb = Sandbox::start();
    let pids = sb.work().join("pids");
    sb.apply(&format!(
        r#"
tasks:
  - id: orphan_check
    command: "if [ {{{{try_number}}}} -eq 1 ]; then sleep 300 & echo $! >> {p}; wait; fi"
"#,
        p = pids.display()
    ));
    sb.ctl_ok(&["run", "-j", "orphan_check", "-d", "20260501"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pids)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the command never started:\n{}",
            sb.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        crate::sandbox::is_alive(pid),
        "the background sleep runs before the kill"
    );
    sb.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::sandbox::is_alive(pid) {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("sleep {pid} outlived the killed goflow by 10s: two live runs after a restart");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sb.restart();
    sb.wait_status(
        "20260501",
        Duration::from_secs(60),
        "orphan_check redone as try 2",
        |rows| state_of(rows, "orphan_check") == Some("success"),
    );
}
