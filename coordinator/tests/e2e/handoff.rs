//! The hand-off (issue 21): each finish in a chain claims the next task for the agent that
//! reported it, in the finish's own commit. Every try still runs once, with its own log.

use crate::observability::{scrape, sum, web_url};
use crate::sandbox::{Sandbox, read};

#[test]
fn a_chains_tries_are_handed_off_and_each_runs_once_with_its_log() {
    let sb = Sandbox::start();
    let web = web_url(&sb);
    let ran = sb.work().join("ran.txt");
    let mut dag = String::from("tasks:\n");
    for i in 0..5 {
        dag.push_str(&format!(
            "  - id: hand{i}\n    command: \"echo hand{i}-output; echo hand{i} $GOFLOW_ATTEMPT_ID >> {}\"\n",
            ran.display()
        ));
        if i > 0 {
            dag.push_str(&format!("    depends_on: [hand{}]\n", i - 1));
        }
    }
    sb.apply(&dag);
    let before = scrape(&web);
    let claims = |s: &prometheus_parse::Scrape| {
        sum(
            s,
            "goflow_grpc_requests_total",
            &[("method", "ReportStart"), ("code", "OK")],
        )
    };

    sb.ctl_ok(&["run", "-j", "hand0", "-d", "2026-04-01", "--down", "--wait"]);

    let after = scrape(&web);
    let moved = |metric: &str| sum(&after, metric, &[]) - sum(&before, metric, &[]);
    assert_eq!(moved("goflow_handoffs_total"), 4.0, "each downstream handed off");
    assert_eq!(
        moved("goflow_tries_started_total"),
        5.0,
        "one try started per task"
    );
    assert_eq!(
        claims(&after) - claims(&before),
        1.0,
        "only the first task is claimed on its own"
    );

    // Each command ran once, in the chain's order, each try with its own attempt id.
    let text = read(&ran);
    let lines: Vec<&str> = text.lines().collect();
    let tasks: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(tasks, ["hand0", "hand1", "hand2", "hand3", "hand4"], "{text}");
    let mut attempts: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    attempts.sort();
    attempts.dedup();
    assert_eq!(attempts.len(), 5, "{text}");

    let rows = sb.status_json("20260401");
    for i in 0..5 {
        let task = format!("hand{i}");
        let r = sb.instance(&rows, &task);
        assert_eq!(r["state"], "success", "{r:#}");
        assert_eq!(r["try_number"], 1, "{r:#}");
        let log = sb.ctl_ok(&["logs", "-j", &task, "-d", "20260401"]);
        assert!(log.contains(&format!("{task}-output")), "{task}'s log:\n{log}");
    }
    // Nothing left queued or running.
    assert!(
        rows.iter()
            .all(|r| r["state"] != "queued" && r["state"] != "running"),
        "{rows:#?}"
    );
    assert!(
        !sb.log().contains("dispatched again"),
        "no try lost or left unstarted:\n{}",
        sb.log_tail(40)
    );
}
