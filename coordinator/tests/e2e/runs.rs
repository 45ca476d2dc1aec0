//! Running DAGs: order and templating, retries and their logs, blocked downstream, timeouts.

use std::time::{Duration, Instant};

use crate::sandbox::{Sandbox, is_alive, read, time_of};

/// A diamond a -> {b, c} -> d runs in dependency order with every template variable filled.
#[test]
fn diamond_runs_in_order_with_templated_commands() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    let line = format!(
        "echo {{{{task_id}}}} {{{{etl_day}}}} {{{{etl_day_dash}}}} $GOFLOW_ATTEMPT_ID >> {}",
        order.display()
    );
    // b is slow: if d started after c alone, d's line would come before b's.
    sb.apply(&format!(
        r#"
tasks:
  - id: dia_a
    command: "{line}"
  - id: dia_b
    command: "sleep 1; {line}"
    depends_on: [dia_a]
  - id: dia_c
    command: "{line}"
    depends_on: [dia_a]
  - id: dia_d
    command: "{line}"
    depends_on: [dia_b, dia_c]
"#
    ));
    sb.ctl_ok(&["run", "-j", "dia_a", "-d", "2026-01-31", "--down", "--wait"]);

    let text = read(&order);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 4, "one line per task expected:\n{text}");
    let tasks: Vec<&str> = lines.iter().map(|l| l[0]).collect();
    assert_eq!(tasks[0], "dia_a", "a runs first:\n{text}");
    assert_eq!(tasks[3], "dia_d", "d runs last:\n{text}");
    let mut middle = vec![tasks[1], tasks[2]];
    middle.sort();
    assert_eq!(middle, ["dia_b", "dia_c"], "b and c run between:\n{text}");
    let mut attempts = vec![];
    for l in &lines {
        assert_eq!(l.len(), 4, "task_id etl_day etl_day_dash attempt_id:\n{text}");
        assert_eq!(l[1], "20260131", "etl_day of {}:\n{text}", l[0]);
        assert_eq!(l[2], "2026-01-31", "etl_day_dash of {}:\n{text}", l[0]);
        assert!(
            !l[3].is_empty() && !l[3].contains('$') && !l[3].contains('{'),
            "GOFLOW_ATTEMPT_ID of {} is {:?}:\n{text}",
            l[0],
            l[3]
        );
        attempts.push(l[3]);
    }
    attempts.sort();
    attempts.dedup();
    assert_eq!(attempts.len(), 4, "every try has its own attempt id:\n{text}");

    let rows = sb.status_json("20260131");
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for task in ["dia_a", "dia_b", "dia_c", "dia_d"] {
        let r = sb.instance(&rows, task);
        assert_eq!(r["state"], "success", "{r:#}");
        assert_eq!(r["etl_day"], "20260131", "{r:#}");
        assert_eq!(r["try_number"], 1, "{r:#}");
        assert_eq!(r["exit_code"], 0, "{r:#}");
        assert!(time_of(r, "started_at") <= time_of(r, "finished_at"), "{r:#}");
    }
    let (a, b, c, d) = (
        sb.instance(&rows, "dia_a"),
        sb.instance(&rows, "dia_b"),
        sb.instance(&rows, "dia_c"),
        sb.instance(&rows, "dia_d"),
    );
    for mid in [b, c] {
        assert!(
            time_of(mid, "started_at") >= time_of(a, "finished_at"),
            "{} started before dia_a finished:\n{rows:#?}",
            mid["task"]
        );
        assert!(
            time_of(d, "started_at") >= time_of(mid, "finished_at"),
            "dia_d started before {} finished:\n{rows:#?}",
            mid["task"]
        );
    }
}

/// A task that fails twice and succeeds on its third try: one log per try.
#[test]
fn flaky_task_succeeds_on_third_try_with_a_log_per_try() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: flaky
    command: "if [ {{try_number}} -eq 3 ]; then echo flaky-ok-stdout-try{{try_number}}; echo flaky-ok-stderr-try{{try_number}} >&2; else echo flaky-fail-stdout-try{{try_number}}; echo flaky-fail-stderr-try{{try_number}} >&2; exit 3; fi"
    retries: 2
    retry_delay: 1s
"#,
    );
    sb.ctl_ok(&["run", "-j", "flaky", "-d", "20260210", "--wait"]);

    let rows = sb.status_json("20260210");
    let r = sb.instance(&rows, "flaky");
    assert_eq!(r["state"], "success", "{r:#}");
    assert_eq!(r["try_number"], 3, "{r:#}");
    assert_eq!(r["max_tries"], 3, "retries: 2 means 3 tries: {r:#}");
    assert_eq!(r["exit_code"], 0, "{r:#}");

    let logs = |try_: Option<&str>| {
        let mut args = vec!["logs", "-j", "flaky", "-d", "20260210"];
        if let Some(t) = try_ {
            args.extend(["--try", t]);
        }
        sb.ctl_ok(&args)
    };
    for n in ["1", "2"] {
        let log = logs(Some(n));
        for want in [
            format!("flaky-fail-stdout-try{n}"),
            format!("flaky-fail-stderr-try{n}"),
        ] {
            assert!(log.contains(&want), "logs --try {n} lacks {want:?}:\n{log}");
        }
        for other in ["1", "2", "3"].into_iter().filter(|o| *o != n) {
            assert!(
                !log.contains(&format!("try{other}")),
                "logs --try {n} shows try {other}'s output:\n{log}"
            );
        }
        assert!(!log.contains("flaky-ok"), "logs --try {n}:\n{log}");
    }
    let third = logs(Some("3"));
    for want in ["flaky-ok-stdout-try3", "flaky-ok-stderr-try3"] {
        assert!(third.contains(want), "logs --try 3 lacks {want:?}:\n{third}");
    }
    assert!(!third.contains("flaky-fail"), "logs --try 3:\n{third}");
    let latest = logs(None);
    assert!(
        latest.contains("flaky-ok-stdout-try3") && !latest.contains("flaky-fail"),
        "logs without --try should be the latest try (3):\n{latest}"
    );
}

/// Retries exhausted: the task is failed, its downstream stays waiting and blocked, and
/// `run --down --wait` returns non-zero instead of waiting forever.
#[test]
fn exhausted_retries_block_downstream_and_wait_returns() {
    let sb = Sandbox::start();
    let marker = sb.work().join("downstream-ran.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: broken
    command: "echo broken-try{{{{try_number}}}}; exit 7"
    retries: 1
    retry_delay: 1s
  - id: after_broken
    command: "echo after_broken >> {m}"
    depends_on: [broken]
  - id: after_after
    command: "echo after_after >> {m}"
    depends_on: [after_broken]
"#,
        m = marker.display()
    ));
    let started = Instant::now();
    let out = sb.ctl_timeout(
        &["run", "-j", "broken", "-d", "20260211", "--down", "--wait"],
        Duration::from_secs(90),
    );
    assert!(
        !out.status.success(),
        "run --wait must fail when an instance failed (took {:?})\n{}",
        started.elapsed(),
        sb.describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken"),
        "the error names the failed task:\n{stderr}"
    );

    let rows = sb.status_json("20260211");
    let broken = sb.instance(&rows, "broken");
    assert_eq!(broken["state"], "failed", "{broken:#}");
    assert_eq!(broken["try_number"], 2, "retries: 1 means 2 tries: {broken:#}");
    assert_eq!(broken["exit_code"], 7, "{broken:#}");
    for task in ["after_broken", "after_after"] {
        let r = sb.instance(&rows, task);
        assert_eq!(r["state"], "waiting", "{r:#}");
        assert_eq!(r["blocked"], true, "{task} waits behind a failed upstream: {r:#}");
        assert!(r["started_at"].is_null(), "{task} never started: {r:#}");
    }
    assert!(
        !marker.exists(),
        "a downstream of a failed task ran:\n{}",
        read(&marker)
    );
    let log = sb.ctl_ok(&["logs", "-j", "broken", "-d", "20260211", "--try", "1"]);
    assert!(log.contains("broken-try1"), "{log}");
}

/// A timeout stops the whole process tree of the try, not just the shell.
#[test]
fn timeout_kills_the_whole_process_tree() {
    let sb = Sandbox::start();
    let pids = sb.work().join("pids");
    sb.apply(&format!(
        r#"
tasks:
  - id: sleepy_tree
    command: "sh -c 'echo $$ >> {p}; sleep 300 & echo $! >> {p}; sleep 300 & echo $! >> {p}; echo started-tree; wait'"
    timeout: 2s
    retries: 0
"#,
        p = pids.display()
    ));
    let out = sb.ctl_timeout(
        &["run", "-j", "sleepy_tree", "-d", "20260212", "--wait"],
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success(),
        "a timed-out try must make run --wait fail\n{}",
        sb.describe(&out)
    );
    let rows = sb.status_json("20260212");
    let r = sb.instance(&rows, "sleepy_tree");
    assert_eq!(r["state"], "failed", "{r:#}");
    assert_eq!(r["try_number"], 1, "{r:#}");
    let message = r["message"].as_str().unwrap_or_default().to_lowercase();
    let log = sb.ctl_ok(&["logs", "-j", "sleepy_tree", "-d", "20260212"]);
    assert!(log.contains("started-tree"), "the try's output is kept:\n{log}");
    assert!(
        message.contains("timed out")
            || message.contains("timeout")
            || log.to_lowercase().contains("timed out")
            || log.to_lowercase().contains("timeout"),
        "neither the message ({message:?}) nor the log mention the timeout:\n{log}"
    );

    let pid_list: Vec<u32> = read(&pids)
        .lines()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect();
    assert_eq!(pid_list.len(), 3, "the shell and its two sleeps: {pid_list:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = pid_list.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let stats: Vec<String> = alive
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect();
            // Do not leave them behind.
            for p in &alive {
                let _ = std::process::Command::new("kill")
                    .arg("-9")
                    .arg(p.to_string())
                    .status();
            }
            panic!("processes of the timed-out try still run 10s later: {stats:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
