//! Logs across a failover (issue 15): a try's output reaches the store through whichever
//! coordinator answers, resent from the last acknowledged offset, so a SIGKILL of the leader
//! the agent talks to loses no line and duplicates none.

use std::time::{Duration, Instant};

use crate::ha::{Ha, Options, SETTLE};

/// Lines the task prints, one every 100 ms.
const LINES: usize = 80;

/// The numbers of the `n=K` lines of a log, in order; panics on any other line (a drop marker,
/// a cut line, a line spliced from two).
fn numbered_lines(log: &str) -> Vec<usize> {
    log.lines()
        .map(|line| {
            line.split_once(" out| n=")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or_else(|| panic!("not a numbered output line: {line:?}\n{log}"))
        })
        .collect()
}

/// A task printing a numbered line every 100 ms; the leader, which the agent sends its output
/// to, is SIGKILLed while it runs. `goflowctl logs` then shows every line once and in order,
/// the instance succeeded on its first try, and nothing is left queued.
#[test]
fn ha_sigkill_of_the_leader_loses_no_log_line() {
    let mut ha = Ha::start(Options {
        coordinators: 3,
        agents: 1,
        slots: 1,
        worker_timeout: 20,
        etcd: true,
    });
    // The agent lists c1, the leader, first: its output goes there until c1 dies.
    let dag = format!(
        "tasks:\n  - id: printer\n    command: \"for i in $(seq 1 {LINES}); do echo n=$i; sleep 0.1; done\"\n    retries: 0\n"
    );
    let day = "20260510";
    ha.run_dag(&dag, "printer", day);
    let logs = |ha: &Ha| -> Option<String> {
        let out = ha
            .via()
            .ctl_timeout(&["logs", "-j", "printer", "-d", day], Duration::from_secs(30));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // A quarter of the output is stored: kill the leader mid-stream.
    ha.wait_for(SETTLE, "the first 20 lines in the log", || {
        logs(&ha).filter(|log| log.contains(" out| n=20\n")).map(|_| ())
    });
    ha.coordinators[0].kill9();
    let killed_at = Instant::now();
    ha.wait_for(Duration::from_secs(60), "a new leader", || {
        matches!(ha.leader_indexes()?.as_slice(), [one] if *one != 0).then_some(())
    });
    println!(
        "a new leader {:.2} s after the SIGKILL",
        killed_at.elapsed().as_secs_f64()
    );

    let rows = ha.wait_dag_done(day, 1, SETTLE);
    assert_eq!(rows[0]["try_number"], 1, "one try: {:#}\n{}", rows[0], ha.logs());
    let log = logs(&ha).unwrap_or_else(|| panic!("goflowctl logs failed\n{}", ha.logs()));
    let expected: Vec<usize> = (1..=LINES).collect();
    assert_eq!(
        numbered_lines(&log),
        expected,
        "every line once, in order\n{}",
        ha.logs()
    );

    // Nothing is left queued or running.
    let all = ha.ctl_json(&["status", "-d", day, "-o", "json"]).expect("status");
    assert!(all.iter().all(|r| r["state"] == "success"), "{all:#?}");
}
