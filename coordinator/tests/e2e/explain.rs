//! Explain (issue 19): `goflowctl explain` follows the chain of waits to its root causes: a
//! failed upstream two hops up (with its exit code and try n of m), a paused upstream, a full
//! pool and the try holding it, a queue no live agent serves, and a missing instance with the
//! run that would create it; `-o json` has the promised shape.

use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Launch, Sandbox, state_of};

const SETTLE: Duration = Duration::from_secs(120);
const DAY: &str = "20260301";

fn explain_json(sb: &Sandbox, task: &str, day: &str) -> Value {
    let text = sb.ctl_ok(&["explain", "-j", task, "-d", day, "-o", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("explain -o json: {e}\n{text}"))
}

/// `{task, period, state, reason}`, each a string.
fn assert_hop(hop: &Value) {
    for field in ["task", "period", "state", "reason"] {
        assert!(hop[field].is_string(), "{field} of {hop:#}");
    }
}

fn tasks_of(hops: &Value) -> Vec<&str> {
    hops.as_array()
        .unwrap_or_else(|| panic!("not an array: {hops:#}"))
        .iter()
        .map(|h| h["task"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn explain_names_a_failed_root_two_hops_up_a_paused_upstream_and_a_missing_instance() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
calendars:
  - id: ex_weekdays
    weekdays: [mon, tue, wed, thu, fri]
tasks:
  - id: ex_weekly
    command: "true"
    calendar: ex_weekdays
  - id: ex_r
    command: "exit 1"
    retries: 1
    retry_delay: 1h
  - id: ex_a
    command: "echo boom >&2; exit 3"
    retries: 1
    retry_delay: 1s
  - id: ex_b
    command: "true"
    depends_on: [ex_a]
  - id: ex_c
    command: "true"
    depends_on: [ex_b]
  - id: ex_p
    command: "true"
  - id: ex_q
    command: "true"
    depends_on: [ex_p]
"#,
    );
    sb.ctl(&["run", "-j", "ex_a", "-d", DAY, "--down"]);
    sb.wait_status(DAY, SETTLE, "ex_a failed after its two tries", |rows| {
        state_of(rows, "ex_a") == Some("failed")
    });

    // A fails -> B waits -> C waits: explain C names A, two hops up.
    let answer = explain_json(&sb, "ex_c", DAY);
    assert_eq!(answer["instance"], format!("ex_c@{DAY}"), "{answer:#}");
    assert_eq!(answer["state"], "waiting", "{answer:#}");
    let roots = answer["root_causes"].as_array().expect("root_causes");
    assert_eq!(roots.len(), 1, "{answer:#}");
    for hop in roots.iter().chain(answer["chain"].as_array().expect("chain")) {
        assert_hop(hop);
    }
    let root = &roots[0];
    assert_eq!(root["task"], "ex_a", "{answer:#}");
    assert_eq!(root["period"], DAY, "{answer:#}");
    assert_eq!(root["state"], "failed", "{answer:#}");
    let reason = root["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("failed: exit code 3, try 2 of 2, at "),
        "{answer:#}"
    );
    assert_eq!(tasks_of(&answer["chain"]), ["ex_c", "ex_b", "ex_a"], "{answer:#}");
    assert_eq!(answer["chain"][1]["state"], "waiting", "{answer:#}");

    let table = sb.ctl_ok(&["explain", "-j", "ex_c", "-d", "2026-03-01"]);
    let expected = format!(
        "ex_c@{DAY}: waiting\n  waits for ex_b@{DAY} (waiting) <- waits for ex_a@{DAY} (failed: exit code 3, try 2 of 2, at "
    );
    assert!(table.starts_with(&expected), "{table}");

    // A paused upstream: Q waits for P, whose task is paused.
    sb.ctl_ok(&["pause", "-j", "ex_p"]);
    sb.ctl_ok(&["run", "-j", "ex_p", "-d", DAY, "--down"]);
    let answer = explain_json(&sb, "ex_q", DAY);
    assert_eq!(answer["state"], "waiting", "{answer:#}");
    let root = &answer["root_causes"][0];
    assert_eq!(root["task"], "ex_p", "{answer:#}");
    assert_eq!(root["state"], "waiting", "{answer:#}");
    assert_eq!(root["reason"], "task is paused", "{answer:#}");
    // The paused instance itself is its own root cause.
    let answer = explain_json(&sb, "ex_p", DAY);
    assert_eq!(tasks_of(&answer["root_causes"]), ["ex_p"], "{answer:#}");

    // No instance on another day, and no schedule to make one: the run that would.
    let answer = explain_json(&sb, "ex_b", "20260302");
    assert_eq!(answer["state"], "none", "{answer:#}");
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`goflowctl run -j ex_b -d 20260302`"),
        "{answer:#}"
    );

    // A retry due at a given time.
    sb.ctl(&["run", "-j", "ex_r", "-d", DAY]);
    sb.wait_status(DAY, SETTLE, "ex_r up for retry", |rows| {
        state_of(rows, "ex_r") == Some("up_for_retry")
    });
    let answer = explain_json(&sb, "ex_r", DAY);
    assert_eq!(answer["state"], "up_for_retry", "{answer:#}");
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("up_for_retry: try 2 of 2 due at "),
        "{answer:#}"
    );

    // 2026-03-01 is a Sunday: outside the calendar.
    let answer = explain_json(&sb, "ex_weekly", DAY);
    assert_eq!(answer["state"], "none", "{answer:#}");
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no instance: 20260301 is not a day of calendar \"ex_weekdays\""),
        "{answer:#}"
    );

    // Bad input is named.
    let err = sb.ctl_err(&["explain", "-j", "ex_nope", "-d", DAY]);
    assert!(err.contains("unknown task \"ex_nope\""), "{err}");
}

#[test]
fn explain_names_a_full_pool_with_its_holder_and_a_queue_no_agent_serves() {
    // The embedded agent serves queue `default` only (by default it serves every queue).
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: vec![("GOFLOW_QUEUES".into(), "default".into())],
        ..Launch::default()
    });
    sb.apply(
        r#"
pools:
  - id: ex_pool
    slots: 1
tasks:
  - id: ex_hold
    command: "sleep 60"
    pool: ex_pool
  - id: ex_wait
    command: "true"
    pool: ex_pool
  - id: ex_gpu
    command: "true"
    queue: ex_gpu_queue
"#,
    );
    sb.ctl_ok(&["run", "-j", "ex_hold", "-d", DAY]);
    sb.wait_status(DAY, SETTLE, "ex_hold running", |rows| {
        state_of(rows, "ex_hold") == Some("running")
    });
    sb.ctl_ok(&["run", "-j", "ex_wait", "-d", DAY]);
    sb.ctl_ok(&["run", "-j", "ex_gpu", "-d", DAY]);
    sb.wait_status(DAY, SETTLE, "ex_wait held back by its pool", |rows| {
        rows.iter().any(|r| {
            r["task"] == "ex_wait"
                && r["state"] == "queued"
                && r["wait_reason"].as_str().is_some_and(|w| w.contains("pool"))
        })
    });

    let answer = explain_json(&sb, "ex_wait", DAY);
    assert_eq!(answer["state"], "queued", "{answer:#}");
    let root = &answer["root_causes"][0];
    assert_eq!(root["task"], "ex_wait", "{answer:#}");
    let reason = root["reason"].as_str().unwrap();
    assert!(reason.contains("waiting for pool ex_pool ("), "{answer:#}");
    assert!(reason.contains("held by "), "{answer:#}");
    assert!(
        reason.contains(&format!("(ex_hold@{DAY} on agent ")),
        "{answer:#}"
    );

    let answer = explain_json(&sb, "ex_gpu", DAY);
    assert_eq!(answer["state"], "queued", "{answer:#}");
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("queued, and no live agent serves queue ex_gpu_queue"),
        "{answer:#}"
    );

    // The running holder: on which agent, since when.
    let answer = explain_json(&sb, "ex_hold", DAY);
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("running on agent "), "{answer:#}");
    assert!(reason.contains(", try 1 of "), "{answer:#}");
    sb.ctl_ok(&["kill", "-j", "ex_hold", "-d", DAY]);
}

/// Asked of a coordinator that does not lead, explain is answered (by the leader, as every
/// ControlService call is forwarded there).
#[test]
fn a_follower_explains_through_the_leader() {
    use crate::ha::{Ha, Options};
    let ha = Ha::start(Options {
        coordinators: 2,
        agents: 1,
        slots: 2,
        worker_timeout: 10,
        etcd: false,
    });
    let leader = ha.wait_for(SETTLE, "one leader", || {
        ha.leader_indexes().filter(|l| l.len() == 1).map(|l| l[0])
    });
    let follower = &ha.coordinators[1 - leader];
    ha.run_dag(
        "tasks:\n  - id: fx_a\n    command: \"exit 3\"\n    retries: 0\n  - id: fx_b\n    command: \"true\"\n    depends_on: [fx_a]\n",
        "fx_a",
        DAY,
    );
    let answer = ha.wait_for(SETTLE, "the follower to explain fx_b by fx_a's failure", || {
        let out = follower.ctl_timeout(
            &["explain", "-j", "fx_b", "-d", DAY, "-o", "json"],
            Duration::from_secs(30),
        );
        let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
        (answer["root_causes"][0]["state"] == "failed").then_some(answer)
    });
    assert_eq!(answer["root_causes"][0]["task"], "fx_a", "{answer:#}");
    let reason = answer["root_causes"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("failed: exit code 3, try 1 of 1, at "),
        "{answer:#}"
    );
    assert_eq!(tasks_of(&answer["chain"]), ["fx_b", "fx_a"], "{answer:#}");
}
