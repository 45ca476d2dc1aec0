//! Graceful agent stop (issue 15): SIGTERM lets the running tries finish on their first try
//! and the agent exits after them; a second SIGTERM kills them; standalone drains its embedded
//! agent the same way before its coordinator stops.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Agent, Launch, Redis, Sandbox, is_alive, parse_array, wait_for};

pub(crate) const SECRET: &str = "e2e-drain-secret-0123456789";
/// Generous: short shell commands on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(90);

/// Redis and `goflow coordinator` dispatching through it (3 s WorkerTimeOut, 1 s heartbeats).
fn cluster() -> (Sandbox, Redis) {
    cluster_with_worker_timeout(3)
}

/// Redis and `goflow coordinator` dispatching through it, with 1 s heartbeats.
pub(crate) fn cluster_with_worker_timeout(seconds: u64) -> (Sandbox, Redis) {
    let redis = Redis::start();
    let broker = redis.url();
    let sb = Sandbox::start_with(|root| Launch {
        args: vec![
            "coordinator".into(),
            "--data-dir".into(),
            root.join("data").into(),
        ],
        env: vec![
            ("GOFLOW_BROKER".into(), broker.into()),
            ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
            ("GOFLOW_WORKER_TIMEOUT".into(), seconds.to_string().into()),
            ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
        ],
        log_file: None,
        own_database: false,
    });
    (sb, redis)
}

fn start_agent(sb: &Sandbox, redis: &Redis, id: &str, extra: &[&str]) -> Agent {
    let broker = redis.url();
    let env = [
        ("GOFLOW_BROKER", broker.as_str()),
        ("GOFLOW_AGENT_SECRET", SECRET),
    ];
    let log = sb.root().join(format!("agent-{id}.log"));
    Agent::start(&sb.server_url(), id, 2, extra, &env, &sb.work(), &log)
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

pub(crate) fn row<'a>(rows: &'a [Value], task: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["task"] == task)
}

/// Every instance of the day has ended: nothing queued, running or waiting.
pub(crate) fn assert_all_final(sb: &Sandbox, day: &str) {
    for r in sb.status_json(day) {
        let state = r["state"].as_str().unwrap_or("");
        assert!(
            matches!(state, "success" | "failed" | "killed" | "timed_out"),
            "left {state}: {r:#}"
        );
    }
}

/// The lines of `goflowctl logs`, without their time and stream prefix (`... out| `).
pub(crate) fn output_lines(log: &str) -> Vec<&str> {
    log.lines()
        .map(|line| line.split_once("| ").map_or(line, |(_, text)| text))
        .collect()
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGTERM of an agent mid-try: the try runs to its end on its first try, its whole log is
/// stored, the agent takes no new work meanwhile and exits after; another agent then runs
/// what was queued during the drain.
#[test]
fn sigterm_lets_the_running_try_finish_then_the_agent_exits() {
    let (sb, redis) = cluster();
    let mut a1 = start_agent(&sb, &redis, "a1", &["--drain-timeout", "5m"]);
    let logs = || format!("coordinator:\n{}\n\n{}", sb.log_tail(40), a1_log_tail(&sb, "a1"));
    sb.apply(
        r#"
tasks:
  - id: long_t
    command: "echo start-{{try_number}}; sleep 6; echo middle; sleep 2; echo done-{{try_number}}"
    retries: 0
  - id: later_t
    command: "echo later-ran"
    retries: 0
"#,
    );
    let day = "20260401";
    sb.ctl_ok(&["run", "-j", "long_t", "-d", day]);
    wait_for(SETTLE, "long_t's first line", logs, || {
        sb.ctl_ok(&["logs", "-j", "long_t", "-d", day, "--try", "1"])
            .contains("start-1")
            .then_some(())
    });
    sigterm(a1.pid().expect("a1 runs"));
    wait_for(SETTLE, "a1 to announce its drain", logs, || {
        a1.log()
            .contains("draining 1 running tries (up to 5m); send SIGTERM again to kill them")
            .then_some(())
    });
    // Listed as draining (from its next heartbeat).
    wait_for(SETTLE, "goflowctl agents to show a1 draining", logs, || {
        let agents = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
        agents
            .iter()
            .any(|a| a["id"] == "a1" && a["state"] == "alive" && a["draining"] == true)
            .then_some(())
    });
    // Queued while a1 drains: a1 must not take it.
    sb.ctl_ok(&["run", "-j", "later_t", "-d", day]);

    let status = a1
        .wait_exit(SETTLE)
        .unwrap_or_else(|| panic!("a1 did not exit after its try\n{}", logs()));
    assert!(
        status.success(),
        "a1 exits cleanly after draining: {status}\n{}",
        logs()
    );
    let rows = sb.status_json(day);
    let long = row(&rows, "long_t").expect("long_t");
    assert_eq!(
        long["state"],
        "success",
        "finished before a1 exited: {long:#}\n{}",
        logs()
    );
    assert_eq!(long["try_number"], 1, "not run again: {long:#}");
    assert_eq!(long["agent"], "a1", "{long:#}");
    let later = row(&rows, "later_t").expect("later_t");
    assert_eq!(
        later["state"],
        "queued",
        "a draining agent takes no new work: {later:#}\n{}",
        logs()
    );
    let log = sb.ctl_ok(&["logs", "-j", "long_t", "-d", day, "--try", "1"]);
    assert_eq!(
        output_lines(&log),
        ["start-1", "middle", "done-1"],
        "the whole log, in order"
    );
    assert!(
        a1.log().contains("drained: every running try finished"),
        "{}",
        logs()
    );
    assert!(!a1.log().contains("killing"), "nothing was killed: {}", logs());

    // Another agent takes what waited, on its first try.
    let _a2 = start_agent(&sb, &redis, "a2", &[]);
    let rows = sb.wait_status(day, SETTLE, "later_t to run on a2", |rows| {
        row(rows, "later_t").is_some_and(|r| r["state"] == "success")
    });
    let later = row(&rows, "later_t").unwrap();
    assert_eq!(later["try_number"], 1, "{later:#}");
    assert_eq!(later["agent"], "a2", "{later:#}");
    let long = row(&rows, "long_t").unwrap();
    assert_eq!(long["try_number"], 1, "still one try: {long:#}");
    assert_all_final(&sb, day);
}

/// While an agent drains, `goflowctl kill` still kills one of its tries; a second SIGTERM kills
/// the others' process groups and the agent exits; the coordinator runs those again elsewhere,
/// as after any agent that went away.
#[test]
fn a_second_sigterm_kills_the_running_tries() {
    let (sb, redis) = cluster();
    let mut a1 = start_agent(&sb, &redis, "a1", &["--drain-timeout", "10m"]);
    let logs = || format!("coordinator:\n{}\n\n{}", sb.log_tail(40), a1_log_tail(&sb, "a1"));
    let pid_file = sb.root().join("try1.pid");
    sb.apply(&format!(
        r#"
tasks:
  - id: stuck_t
    command: "if [ {{{{try_number}}}} = 1 ]; then echo $$ > {}; echo stuck; sleep 300; fi; echo ran-{{{{try_number}}}}"
    retries: 0
  - id: doomed_t
    command: "echo doomed; sleep 300"
    retries: 0
"#,
        pid_file.display()
    ));
    let day = "20260402";
    sb.ctl_ok(&["run", "-j", "stuck_t", "-d", day]);
    sb.ctl_ok(&["run", "-j", "doomed_t", "-d", day]);
    wait_for(SETTLE, "doomed_t to start", logs, || {
        sb.ctl_ok(&["logs", "-j", "doomed_t", "-d", day])
            .contains("doomed")
            .then_some(())
    });
    let pid = wait_for(SETTLE, "try 1 to start", logs, || {
        let log = sb.ctl_ok(&["logs", "-j", "stuck_t", "-d", day, "--try", "1"]);
        if log.contains("stuck") {
            read_pid(&pid_file)
        } else {
            None
        }
    });
    let agent_pid = a1.pid().expect("a1 runs");
    sigterm(agent_pid);
    wait_for(SETTLE, "a1 to announce its drain", logs, || {
        a1.log().contains("draining 2 running tries").then_some(())
    });
    sb.ctl_ok(&["kill", "-j", "doomed_t", "-d", day]);
    sb.wait_status(day, SETTLE, "doomed_t to be killed while a1 drains", |rows| {
        row(rows, "doomed_t").is_some_and(|r| r["state"] == "killed")
    });
    assert!(is_alive(pid), "the first SIGTERM leaves the try running");
    assert!(a1.try_exit().is_none(), "a1 waits for its try\n{}", logs());
    sigterm(agent_pid);
    let status = a1
        .wait_exit(SETTLE)
        .unwrap_or_else(|| panic!("a1 did not exit after the second SIGTERM\n{}", logs()));
    assert!(status.success(), "{status}\n{}", logs());
    assert!(a1.log().contains("killing 1 running tries"), "{}", logs());
    assert!(!is_alive(pid), "the try's process was killed");

    // a1 is gone with its try unreported: declared dead, the try runs again on a2.
    let _a2 = start_agent(&sb, &redis, "a2", &[]);
    let rows = sb.wait_status(day, SETTLE, "stuck_t to run again on a2", |rows| {
        row(rows, "stuck_t").is_some_and(|r| r["state"] == "success")
    });
    let doomed = row(&rows, "doomed_t").unwrap();
    assert_eq!(doomed["state"], "killed", "not run again: {doomed:#}");
    assert_eq!(doomed["try_number"], 1, "{doomed:#}");
    let r = row(&rows, "stuck_t").unwrap();
    assert_eq!(r["try_number"], 2, "{r:#}\n{}", logs());
    assert_eq!(r["agent"], "a2", "{r:#}");
    let log = sb.ctl_ok(&["logs", "-j", "stuck_t", "-d", day, "--try", "2"]);
    assert_eq!(output_lines(&log), ["ran-2"]);
    let log = sb.ctl_ok(&["logs", "-j", "stuck_t", "-d", day, "--try", "1"]);
    assert_eq!(
        output_lines(&log),
        ["stuck", "[goflow: killed on request]"],
        "try 1's log is kept, and says it was killed"
    );
    assert_all_final(&sb, day);
}

/// `goflow standalone` drains its embedded agent on SIGTERM while its coordinator serves, so
/// the finish is recorded; then the process exits. A new start finds the try succeeded.
#[test]
fn standalone_drains_its_embedded_agent_on_sigterm() {
    let mut sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: long_t
    command: "echo start; sleep 5; echo done"
    retries: 0
"#,
    );
    let day = "20260403";
    sb.ctl_ok(&["run", "-j", "long_t", "-d", day]);
    sb.wait_status(day, SETTLE, "long_t to run", |rows| {
        row(rows, "long_t").is_some_and(|r| r["state"] == "running")
    });
    wait_for(
        SETTLE,
        "long_t's first line",
        || sb.log_tail(40),
        || {
            sb.ctl_ok(&["logs", "-j", "long_t", "-d", day])
                .contains("start")
                .then_some(())
        },
    );
    let pid = sb.pid().expect("standalone runs");
    sigterm(pid);
    // The coordinator still answers while its agent drains.
    let rows = sb.status_json(day);
    assert_eq!(row(&rows, "long_t").unwrap()["state"], "running", "{rows:#?}");
    wait_for(
        SETTLE,
        "standalone to exit",
        || sb.log_tail(40),
        || (!is_alive(pid)).then_some(()),
    );
    let log = sb.log();
    assert!(
        log.contains("draining 1 running tries (up to 10m); send SIGTERM again to kill them"),
        "{}",
        sb.log_tail(40)
    );
    assert!(
        log.contains("drained: every running try finished"),
        "{}",
        sb.log_tail(40)
    );

    sb.restart();
    let rows = sb.status_json(day);
    let r = row(&rows, "long_t").expect("long_t");
    assert_eq!(
        r["state"],
        "success",
        "recorded before the exit: {r:#}\n{}",
        sb.log_tail(40)
    );
    assert_eq!(r["try_number"], 1, "{r:#}");
    let log = sb.ctl_ok(&["logs", "-j", "long_t", "-d", day]);
    assert_eq!(output_lines(&log), ["start", "done"]);
    assert_all_final(&sb, day);
}

pub(crate) fn a1_log_tail(sb: &Sandbox, id: &str) -> String {
    let log = std::fs::read_to_string(sb.root().join(format!("agent-{id}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "agent {id} log (tail):\n{}",
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}
