//! An agent frozen (SIGSTOP) past the worker timeout: the coordinator declares it dead and runs
//! its try again on another agent. The frozen agent cannot stop its try itself, so its try
//! supervisor does, when the lease the agent renews at each answered heartbeat runs out: the
//! first try is dead before the second starts, and the agent, woken, carries on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::drain::{SECRET, assert_all_final, output_lines, row};
use crate::sandbox::{Agent, Redis, Sandbox, is_alive, parse_array, wait_for};

/// Generous: a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(90);
/// Lines of output of the long task, one every 0.2 s.
const LINES: usize = 30;

/// Redis and `goflow coordinator` dispatching through it (4 s WorkerTimeOut, 1 s heartbeats).
fn cluster() -> (Sandbox, Redis) {
    crate::drain::cluster_with_worker_timeout(4)
}

/// One slot: a frozen agent with a free slot would sit on a dispatch popped from Redis.
fn start_agent(sb: &Sandbox, redis: &Redis, id: &str) -> Agent {
    let broker = redis.url();
    let env = [
        ("GOFLOW_BROKER", broker.as_str()),
        ("GOFLOW_AGENT_SECRET", SECRET),
    ];
    let log = sb.root().join(format!("agent-{id}.log"));
    Agent::start(&sb.server_url(), id, 1, &[], &env, &sb.work(), &log)
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A line of the tries' record: (try, what, shell pid, nanoseconds).
fn records(path: &Path) -> Vec<(u32, String, u32, u128)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [number, what, pid, at] = fields[..] else {
                panic!("a torn record {line:?} in:\n{text}");
            };
            (
                number.parse().unwrap(),
                what.to_string(),
                pid.parse().unwrap(),
                at.parse().unwrap(),
            )
        })
        .collect()
}

/// SIGSTOP of the agent running a long try, past WorkerTimeOut: the try is dispatched again
/// to the other agent, the first try's processes were dead before the second started, and
/// once the frozen agent is woken the instance ends with the second try's complete output.
#[test]
fn a_frozen_agents_try_is_stopped_before_it_runs_again_elsewhere() {
    let (sb, redis) = cluster();
    let a1 = start_agent(&sb, &redis, "a1");
    let record = sb.work().join("tries.txt");
    let r = record.display();
    sb.apply(&format!(
        r#"
tasks:
  - id: long_t
    retries: 0
    command: |
      echo "{{{{try_number}}}} start $$ $(date +%s%N)" >> {r}
      echo start-{{{{try_number}}}}
      for i in $(seq 1 {LINES}); do
        echo "{{{{try_number}}}} beat $$ $(date +%s%N)" >> {r}
        echo line-$i
        sleep 0.2
      done
      echo "{{{{try_number}}}} end $$ $(date +%s%N)" >> {r}
      echo done-{{{{try_number}}}}
"#
    ));
    let day = "20260501";
    sb.ctl_ok(&["run", "-j", "long_t", "-d", day]);
    let logs = || {
        format!(
            "coordinator:\n{}\n\nrecord:\n{}\n\n{}\n\n{}",
            sb.log_tail(40),
            std::fs::read_to_string(&record).unwrap_or_default(),
            crate::drain::a1_log_tail(&sb, "a1"),
            crate::drain::a1_log_tail(&sb, "a2")
        )
    };
    wait_for(SETTLE, "try 1 to beat", logs, || {
        records(&record)
            .iter()
            .any(|(number, what, _, _)| *number == 1 && what == "beat")
            .then_some(())
    });
    // The other agent, idle, takes the try once a1 is declared dead.
    let a2 = start_agent(&sb, &redis, "a2");
    let a1_pid = a1.pid().expect("a1 runs");
    signal(a1_pid, "-STOP");
    let second_start = wait_for(SETTLE, "try 2 to start", logs, || {
        records(&record)
            .iter()
            .find(|(number, what, _, _)| *number == 2 && what == "start")
            .map(|&(_, _, _, at)| at)
    });
    signal(a1_pid, "-CONT");

    let rows = sb.wait_status(day, SETTLE, "long_t to succeed", |rows| {
        row(rows, "long_t").is_some_and(|r| r["state"] == "success")
    });
    let long = row(&rows, "long_t").unwrap();
    assert_eq!(long["try_number"], 2, "{long:#}\n{}", logs());
    assert_eq!(long["agent"], "a2", "{long:#}\n{}", logs());

    // Try 1 beat every 0.2 s while alive: none after try 2 started, no end, and its shell is
    // gone.
    let all = records(&record);
    let first: Vec<_> = all.iter().filter(|(number, ..)| *number == 1).collect();
    assert!(
        first
            .iter()
            .all(|&&(_, ref what, _, at)| what != "end" && at < second_start),
        "try 1 ran on after try 2 started:\n{}",
        logs()
    );
    assert!(!is_alive(first[0].2), "try 1's shell is gone");
    assert!(
        a1.log().contains("lease ran out"),
        "the supervisor said why:\n{}",
        logs()
    );
    let second: Vec<&str> = all
        .iter()
        .filter(|(number, ..)| *number == 2)
        .map(|(_, what, _, _)| what.as_str())
        .collect();
    assert_eq!(second.first(), Some(&"start"));
    assert_eq!(second.last(), Some(&"end"));

    let log = sb.ctl_ok(&["logs", "-j", "long_t", "-d", day, "--try", "2"]);
    let mut expected = vec!["start-2".to_string()];
    expected.extend((1..=LINES).map(|i| format!("line-{i}")));
    expected.push("done-2".into());
    assert_eq!(output_lines(&log), expected, "try 2's whole log, in order");

    // The woken agent did not crash: it is back, alive and idle.
    wait_for(SETTLE, "a1 to be alive again", logs, || {
        let agents = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
        agents
            .iter()
            .any(|a| a["id"] == "a1" && a["state"] == "alive")
            .then_some(())
    });
    assert!(is_alive(a1_pid), "a1 runs on\n{}", logs());
    assert!(!a1.log().contains("panicked"), "{}", logs());
    assert_all_final(&sb, day);
    drop(a2);
}
