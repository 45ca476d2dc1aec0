//! Operations parity with the seed: run/redo with --up/--down/--force, backfill, mark-success,
//! kill, delete, pause/unpause, dep, do-all-job, and the operations history. (The seed's
//! `goflow_conf.json` with the `init_db`/`scheduler`/`executer` names is in seed_conf.rs.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sandbox::{Sandbox, is_alive, parse_array, read, state_of, time_of};

/// Generous: a few short shell commands on a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// The lines a file holds so far.
fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_string).collect()
}

/// `status -o json` of every day.
fn all_rows(sb: &Sandbox) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["status", "-o", "json"]))
}

/// Polls `probe` until it returns Some, for at most `limit`; `what` and `sb`'s log explain a
/// timeout.
fn wait_for<T>(sb: &Sandbox, limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "waited {limit:?} for {what}\nstandalone log:\n{}",
                sb.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pids_in(path: &Path) -> Vec<u32> {
    lines(path)
        .iter()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect()
}

/// Kills (SIGKILL) every pid listed in a file when dropped, so a failing test leaves no
/// `sleep 300` behind.
struct KillListedPids(PathBuf);

impl Drop for KillListedPids {
    fn drop(&mut self) {
        for pid in lines(&self.0).iter().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if is_alive(pid) {
                let _ = std::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

/// The stderr of a failed goflowctl call, lowercased, for message checks.
fn err_lower(sb: &Sandbox, args: &[&str]) -> String {
    sb.ctl_err(args).to_lowercase()
}

// ---------------------------------------------------------------------------------------------
// run: plain, --force, --up, --down
// ---------------------------------------------------------------------------------------------

/// `run` without flags leaves an instance waiting while its upstream has not succeeded;
/// `--force` runs it anyway; once the upstream succeeded, a plain `run` redoes it.
#[test]
fn plain_run_waits_for_dependencies_and_force_runs_now() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: rf_a
    command: "echo rf_a >> {o}"
  - id: rf_b
    command: "echo rf_b >> {o}"
    depends_on: [rf_a]
"#,
        o = order.display()
    ));
    let day = "20260105";
    sb.ctl_ok(&["run", "-j", "rf_b", "-d", day]);
    // Nothing can release it: give a wrong dispatch time to show up.
    std::thread::sleep(Duration::from_secs(2));
    let rows = sb.status_json(day);
    assert_eq!(rows.len(), 1, "only rf_b has an instance: {rows:#?}");
    let b = sb.instance(&rows, "rf_b");
    assert_eq!(b["state"], "waiting", "{b:#}");
    assert_eq!(b["try_number"], 0, "{b:#}");
    assert_eq!(
        b["blocked"], false,
        "an upstream without instance is not a failure: {b:#}"
    );
    let reason = b["wait_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("rf_a") && reason.contains("no instance"),
        "wait_reason should name rf_a and that it has no instance: {b:#}"
    );
    assert!(lines(&order).is_empty(), "{:?}", lines(&order));

    sb.ctl_ok(&["run", "-j", "rf_b", "-d", day, "--force", "--wait"]);
    let rows = sb.status_json(day);
    assert_eq!(rows.len(), 1, "--force does not run the upstream: {rows:#?}");
    let b = sb.instance(&rows, "rf_b");
    assert_eq!(b["state"], "success", "{b:#}");
    assert_eq!(b["try_number"], 1, "{b:#}");
    assert_eq!(lines(&order), ["rf_b"]);

    sb.ctl_ok(&["run", "-j", "rf_a", "-d", day, "--wait"]);
    sb.ctl_ok(&["run", "-j", "rf_b", "-d", day, "--wait"]);
    let rows = sb.status_json(day);
    assert_eq!(sb.instance(&rows, "rf_a")["try_number"], 1, "{rows:#?}");
    let b = sb.instance(&rows, "rf_b");
    assert_eq!(
        (b["state"].as_str(), b["try_number"].as_i64()),
        (Some("success"), Some(2)),
        "{b:#}"
    );
    assert_eq!(lines(&order), ["rf_b", "rf_a", "rf_b"]);
}

/// `run -j c --up --wait` on a chain a -> b -> c that ran once reruns all three, upstream first.
#[test]
fn up_reruns_the_whole_chain_upstream_first() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    // a and b are slow: if b or c were queued before their upstream finished, their lines
    // would come first.
    sb.apply(&format!(
        r#"
tasks:
  - id: up_a
    command: "sleep 1; echo up_a >> {o}"
  - id: up_b
    command: "sleep 1; echo up_b >> {o}"
    depends_on: [up_a]
  - id: up_c
    command: "echo up_c >> {o}"
    depends_on: [up_b]
"#,
        o = order.display()
    ));
    let day = "20260301";
    sb.ctl_ok(&["run", "-j", "up_a", "-d", day, "--down", "--wait"]);
    assert_eq!(lines(&order), ["up_a", "up_b", "up_c"]);

    let out = sb.ctl_ok(&["run", "-j", "up_c", "-d", day, "--up", "--wait"]);
    assert!(out.contains("3 instances"), "--up touches a, b and c:\n{out}");
    assert_eq!(
        lines(&order),
        ["up_a", "up_b", "up_c", "up_a", "up_b", "up_c"],
        "the second run appends a, b, c in order"
    );
    let rows = sb.status_json(day);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for task in ["up_a", "up_b", "up_c"] {
        let r = sb.instance(&rows, task);
        assert_eq!(r["state"], "success", "{r:#}");
        assert_eq!(r["try_number"], 2, "{r:#}");
        assert_eq!(r["forced"], false, "{r:#}");
    }
    let (a, b, c) = (
        sb.instance(&rows, "up_a"),
        sb.instance(&rows, "up_b"),
        sb.instance(&rows, "up_c"),
    );
    assert!(time_of(b, "started_at") >= time_of(a, "finished_at"), "{rows:#?}");
    assert!(time_of(c, "started_at") >= time_of(b, "finished_at"), "{rows:#?}");
}

/// `run -j b --down --wait` in the middle of a DAG reruns exactly b and what is below it.
#[test]
fn down_from_the_middle_reruns_exactly_the_downstream_closure() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    let line = |id: &str| format!("echo {id} >> {}", order.display());
    // b is slow: d or e queued with b would write first.
    sb.apply(&format!(
        r#"
tasks:
  - id: dn_a
    command: "{a}"
  - id: dn_b
    command: "sleep 1; {b}"
    depends_on: [dn_a]
  - id: dn_c
    command: "{c}"
    depends_on: [dn_a]
  - id: dn_d
    command: "{d}"
    depends_on: [dn_b]
  - id: dn_e
    command: "{e}"
    depends_on: [dn_b]
  - id: dn_f
    command: "{f}"
    depends_on: [dn_c]
"#,
        a = line("dn_a"),
        b = line("dn_b"),
        c = line("dn_c"),
        d = line("dn_d"),
        e = line("dn_e"),
        f = line("dn_f"),
    ));
    let day = "20260302";
    sb.ctl_ok(&["run", "-j", "dn_a", "-d", day, "--down", "--wait"]);
    let first = lines(&order);
    assert_eq!(first.len(), 6, "{first:?}");

    let out = sb.ctl_ok(&["run", "-j", "dn_b", "-d", day, "--down", "--wait"]);
    assert!(out.contains("3 instances"), "b, d and e:\n{out}");
    let all = lines(&order);
    let again = &all[6..];
    assert_eq!(again.len(), 3, "exactly three reruns: {all:?}");
    assert_eq!(again[0], "dn_b", "b reruns first: {all:?}");
    let mut rest = again[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["dn_d", "dn_e"], "{all:?}");

    let rows = sb.status_json(day);
    assert_eq!(rows.len(), 6, "{rows:#?}");
    for (task, tries) in [
        ("dn_a", 1),
        ("dn_b", 2),
        ("dn_c", 1),
        ("dn_d", 2),
        ("dn_e", 2),
        ("dn_f", 1),
    ] {
        let r = sb.instance(&rows, task);
        assert_eq!(r["state"], "success", "{r:#}");
        assert_eq!(r["try_number"], tries, "{r:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// backfill
// ---------------------------------------------------------------------------------------------

/// A backfill over three days runs the day-offset self-dependency in day order.
#[test]
fn backfill_respects_day_offset_dependencies_across_days() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    // load waits for its own previous day; it is slow, so three loads run at once would
    // overlap. load@20260101 would wait for load@20251231, which start_day rules out.
    sb.apply(&format!(
        r#"
tasks:
  - id: bf_extract
    command: "echo bf_extract {{{{etl_day}}}} >> {o}"
  - id: bf_load
    command: "sleep 1; echo bf_load {{{{etl_day}}}} >> {o}"
    start_day: 20260101
    depends_on: [bf_extract, {{task: bf_load, day_offset: -1}}]
"#,
        o = order.display()
    ));
    let out = sb.ctl_timeout(
        &[
            "run",
            "-j",
            "bf_extract",
            "--from",
            "20260101",
            "--to",
            "20260103",
            "--down",
            "--wait",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "backfill failed\n{}", sb.describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("6 instances"), "{stdout}");

    let days = ["20260101", "20260102", "20260103"];
    let mut loads = vec![];
    for day in days {
        let rows = sb.status_json(day);
        assert_eq!(rows.len(), 2, "extract and load on {day}: {rows:#?}");
        for task in ["bf_extract", "bf_load"] {
            let r = sb.instance(&rows, task);
            assert_eq!(r["state"], "success", "{r:#}");
            assert_eq!(r["try_number"], 1, "{r:#}");
        }
        let (extract, load) = (sb.instance(&rows, "bf_extract"), sb.instance(&rows, "bf_load"));
        assert!(
            time_of(load, "started_at") >= time_of(extract, "finished_at"),
            "load@{day} started before extract@{day} finished: {rows:#?}"
        );
        loads.push(load.clone());
    }
    for pair in loads.windows(2) {
        assert!(
            time_of(&pair[0], "finished_at") <= time_of(&pair[1], "started_at"),
            "load@{} started before load@{} finished:\n{:#}\n{:#}",
            pair[1]["etl_day"],
            pair[0]["etl_day"],
            pair[0],
            pair[1]
        );
    }
    let load_lines: Vec<String> = lines(&order)
        .into_iter()
        .filter(|l| l.starts_with("bf_load "))
        .collect();
    assert_eq!(
        load_lines,
        ["bf_load 20260101", "bf_load 20260102", "bf_load 20260103"]
    );
    assert!(
        sb.status_json("20251231").is_empty(),
        "nothing before start_day or the range"
    );
}

// ---------------------------------------------------------------------------------------------
// mark-success
// ---------------------------------------------------------------------------------------------

/// mark-success on a failed upstream makes it a forced success and releases its downstream;
/// `--down` on a fresh day marks the whole closure without running anything.
#[test]
fn mark_success_releases_downstream_and_down_marks_the_closure() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: ms_up
    command: "echo ms_up >> {o}; exit 1"
    retries: 0
  - id: ms_down
    command: "echo ms_down >> {o}"
    depends_on: [ms_up]
"#,
        o = order.display()
    ));
    let day = "20260310";
    let out = sb.ctl(&["run", "-j", "ms_up", "-d", day, "--down", "--wait"]);
    assert!(!out.status.success(), "ms_up fails\n{}", sb.describe(&out));
    let rows = sb.status_json(day);
    let up = sb.instance(&rows, "ms_up");
    assert_eq!(
        (up["state"].as_str(), up["exit_code"].as_i64()),
        (Some("failed"), Some(1)),
        "{up:#}"
    );
    let down = sb.instance(&rows, "ms_down");
    assert_eq!(down["state"], "waiting", "{down:#}");
    assert_eq!(down["blocked"], true, "{down:#}");

    sb.ctl_ok(&["mark-success", "-j", "ms_up", "-d", day]);
    let rows = sb.wait_status(day, SETTLE, "ms_down to succeed after mark-success", |rows| {
        state_of(rows, "ms_down") == Some("success")
    });
    let up = sb.instance(&rows, "ms_up");
    assert_eq!(up["state"], "success", "{up:#}");
    assert_eq!(up["forced"], true, "{up:#}");
    assert_eq!(up["try_number"], 1, "mark-success does not run it: {up:#}");
    let down = sb.instance(&rows, "ms_down");
    assert_eq!(down["forced"], false, "ms_down really ran: {down:#}");
    assert_eq!(down["try_number"], 1, "{down:#}");
    assert_eq!(lines(&order), ["ms_up", "ms_down"]);
    let table = sb.ctl_ok(&["status", "-d", day]);
    assert!(table.contains("success (marked by local:"), "{table}");

    // A fresh day: the closure is marked, nothing runs.
    let fresh = "20260311";
    let out = sb.ctl_ok(&["mark-success", "-j", "ms_up", "-d", fresh, "--down"]);
    assert!(out.contains("2 instances"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    let rows = sb.status_json(fresh);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for task in ["ms_up", "ms_down"] {
        let r = sb.instance(&rows, task);
        assert_eq!(r["state"], "success", "{r:#}");
        assert_eq!(r["forced"], true, "{r:#}");
        assert_eq!(r["try_number"], 0, "never ran: {r:#}");
        assert!(r["started_at"].is_null(), "never ran: {r:#}");
    }
    assert_eq!(
        lines(&order),
        ["ms_up", "ms_down"],
        "mark-success --down ran something"
    );
}

// ---------------------------------------------------------------------------------------------
// kill, delete
// ---------------------------------------------------------------------------------------------

/// kill stops the whole process group of a running try, records `killed` and does not retry;
/// a redo of a running instance is refused; after the kill, a redo is accepted.
#[test]
fn kill_stops_the_process_group_without_retry_and_redo_is_refused_while_running() {
    let sb = Sandbox::start();
    let pids = sb.work().join("pids");
    let _cleanup = KillListedPids(pids.clone());
    // Try 1 runs two sleeps in a subshell; any later try succeeds at once, so a retry after
    // the kill would show as success.
    sb.apply(&format!(
        r#"
tasks:
  - id: op_kill
    command: "if [ {{{{try_number}}}} -eq 1 ]; then sh -c 'sleep 300 & echo $! >> {p}; sleep 300 & echo $! >> {p}; wait'; else echo second-try-ran; fi"
    retries: 3
    retry_delay: 1s
"#,
        p = pids.display()
    ));
    let day = "20260320";
    sb.ctl_ok(&["run", "-j", "op_kill", "-d", day]);
    wait_for(&sb, SETTLE, "op_kill running with both sleeps started", || {
        let rows = sb.status_json(day);
        (state_of(&rows, "op_kill") == Some("running") && pids_in(&pids).len() == 2).then_some(())
    });
    let pid_list = pids_in(&pids);
    assert!(pid_list.iter().all(|p| is_alive(*p)), "{pid_list:?}");

    for args in [
        &["run", "-j", "op_kill", "-d", day][..],
        &["run", "-j", "op_kill", "-d", day, "--force"][..],
    ] {
        let err = sb.ctl_err(args);
        assert!(
            err.contains("kill it first"),
            "`goflowctl {}` of a running instance: {err}",
            args.join(" ")
        );
    }
    let rows = sb.status_json(day);
    let r = sb.instance(&rows, "op_kill");
    assert_eq!(
        (r["state"].as_str(), r["try_number"].as_i64()),
        (Some("running"), Some(1)),
        "the refused runs changed it: {r:#}"
    );

    let out = sb.ctl_ok(&["kill", "-j", "op_kill", "-d", day]);
    assert!(out.contains("killed"), "{out}");
    let rows = sb.status_json(day);
    assert_eq!(state_of(&rows, "op_kill"), Some("killed"), "{rows:#?}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<u32> = pid_list.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleeps of the killed try still run 15s after the kill: {alive:?}\nstandalone log:\n{}",
            sb.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // retry_delay is 1s: a retry would have happened by now.
    std::thread::sleep(Duration::from_secs(4));
    let rows = sb.status_json(day);
    let r = sb.instance(&rows, "op_kill");
    assert_eq!(r["state"], "killed", "a killed instance is not retried: {r:#}");
    assert_eq!(r["try_number"], 1, "{r:#}");
    let log = sb.ctl_ok(&["logs", "-j", "op_kill", "-d", day]);
    assert!(!log.contains("second-try-ran"), "{log}");

    sb.ctl_ok(&["run", "-j", "op_kill", "-d", day, "--wait"]);
    let rows = sb.status_json(day);
    let r = sb.instance(&rows, "op_kill");
    assert_eq!(
        (r["state"].as_str(), r["try_number"].as_i64()),
        (Some("success"), Some(2)),
        "{r:#}"
    );
    let log = sb.ctl_ok(&["logs", "-j", "op_kill", "-d", day]);
    assert!(log.contains("second-try-ran"), "{log}");
}

/// delete removes an instance with its tries and logs; not while it runs.
/// A backfill is stopped like a run: `kill --from --to --down` kills every unfinished
/// instance of it (running tries lose their whole process group) and leaves finished ones.
#[test]
fn kill_of_a_range_with_down_stops_a_whole_backfill() {
    let sb = Sandbox::start();
    let pids = sb.work().join("pids");
    let _cleanup = KillListedPids(pids.clone());
    sb.apply(&format!(
        r#"
tasks:
  - id: bf_quick
    command: "true"
  - id: bf_long
    command: "sh -c 'sleep 300 & echo $! >> {p}; wait'"
    depends_on: [bf_quick]
  - id: bf_after
    command: "true"
    depends_on: [bf_long]
  - id: bf_other
    command: "true"
"#,
        p = pids.display()
    ));
    sb.ctl_ok(&[
        "run", "-j", "bf_quick", "--from", "20260401", "--to", "20260403", "--down",
    ]);
    wait_for(&sb, SETTLE, "three bf_long tries running", || {
        let running = all_rows(&sb)
            .iter()
            .filter(|r| r["task"] == "bf_long" && r["state"] == "running")
            .count();
        (running == 3 && pids_in(&pids).len() == 3).then_some(())
    });
    sb.ctl_ok(&["run", "-j", "bf_other", "-d", "20260402"]);

    let out = sb.ctl_ok(&[
        "kill", "-j", "bf_quick", "--from", "20260401", "--to", "20260403", "--down",
    ]);
    assert!(
        out.contains("6 instances killed"),
        "3 bf_long running + 3 bf_after waiting:\n{out}"
    );
    let rows = all_rows(&sb);
    for day in ["20260401", "20260402", "20260403"] {
        let on = |task: &str| {
            rows.iter()
                .find(|r| r["task"] == task && r["etl_day"] == day)
                .and_then(|r| r["state"].as_str())
                .map(str::to_string)
        };
        assert_eq!(
            on("bf_quick").as_deref(),
            Some("success"),
            "finished ones stay: {day}"
        );
        assert_eq!(on("bf_long").as_deref(), Some("killed"), "{day}");
        assert_eq!(on("bf_after").as_deref(), Some("killed"), "{day}");
    }
    wait_for(&sb, SETTLE, "every sleep of the backfill gone", || {
        pids_in(&pids).iter().all(|p| !is_alive(*p)).then_some(())
    });
    let other = all_rows(&sb);
    assert_eq!(
        state_of(&other, "bf_other"),
        Some("success"),
        "outside the closure: untouched"
    );
    let err = err_lower(
        &sb,
        &[
            "kill", "-j", "bf_quick", "--from", "20260401", "--to", "20260403", "--down",
        ],
    );
    assert!(err.contains("nothing to kill"), "{err}");
    let history = sb.ctl_ok(&["history", "-j", "bf_quick"]);
    assert!(
        history.contains("20260401..20260403 --down 6 instances"),
        "{history}"
    );
}

#[test]
fn delete_removes_the_instance_with_its_tries_and_logs_but_not_while_running() {
    let sb = Sandbox::start();
    let counter = sb.work().join("counter");
    sb.apply(&format!(
        r#"
tasks:
  - id: op_del
    command: "touch {c}; n=$(cat {c} | wc -l); echo del-run-$n; echo x >> {c}"
  - id: op_del_slow
    command: "sleep 120"
"#,
        c = counter.display()
    ));
    let day = "20260321";
    sb.ctl_ok(&["run", "-j", "op_del", "-d", day, "--wait"]);
    let log = sb.ctl_ok(&["logs", "-j", "op_del", "-d", day]);
    assert!(log.contains("del-run-0"), "{log}");

    let out = sb.ctl_ok(&["delete", "-j", "op_del", "-d", day]);
    assert!(out.contains("deleted"), "{out}");
    let rows = all_rows(&sb);
    assert!(
        rows.iter().all(|r| r["task"] != "op_del"),
        "status still lists the deleted instance: {rows:#?}"
    );
    let err = err_lower(&sb, &["logs", "-j", "op_del", "-d", day]);
    assert!(err.contains("not found"), "logs of a deleted instance: {err}");
    let err = err_lower(&sb, &["delete", "-j", "op_del", "-d", day]);
    assert!(err.contains("not found"), "a second delete: {err}");

    // Run again: a new instance, its first try, its own log only.
    sb.ctl_ok(&["run", "-j", "op_del", "-d", day, "--wait"]);
    let rows = sb.status_json(day);
    let r = sb.instance(&rows, "op_del");
    assert_eq!(
        (r["state"].as_str(), r["try_number"].as_i64()),
        (Some("success"), Some(1)),
        "{r:#}"
    );
    let log = sb.ctl_ok(&["logs", "-j", "op_del", "-d", day]);
    assert!(log.contains("del-run-1") && !log.contains("del-run-0"), "{log}");
    sb.ctl_err(&["logs", "-j", "op_del", "-d", day, "--try", "2"]);

    // A running one is refused and left as it is.
    sb.ctl_ok(&["run", "-j", "op_del_slow", "-d", day]);
    sb.wait_status(day, SETTLE, "op_del_slow to run", |rows| {
        state_of(rows, "op_del_slow") == Some("running")
    });
    let err = sb.ctl_err(&["delete", "-j", "op_del_slow", "-d", day]);
    assert!(err.contains("kill it first"), "{err}");
    let rows = sb.status_json(day);
    assert_eq!(state_of(&rows, "op_del_slow"), Some("running"), "{rows:#?}");
    sb.ctl_ok(&["kill", "-j", "op_del_slow", "-d", day]);
    sb.ctl_ok(&["delete", "-j", "op_del_slow", "-d", day]);
    let rows = sb.status_json(day);
    assert!(state_of(&rows, "op_del_slow").is_none(), "{rows:#?}");
    let ops = parse_array(&sb.ctl_ok(&["history", "-o", "json"]));
    let deletes: Vec<(&str, &str)> = ops
        .iter()
        .filter(|o| o["action"] == "delete")
        .map(|o| (o["target"].as_str().unwrap(), o["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        deletes,
        [("op_del_slow@20260321", "killed"), ("op_del@20260321", "success")],
        "newest first, with the state deleted: {ops:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// pause, dep, do-all-job
// ---------------------------------------------------------------------------------------------

/// A paused task is not queued when its upstream succeeds; unpausing queues it.
#[test]
fn pause_holds_a_task_and_unpause_releases_it() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: pz_a
    command: "echo pz_a >> {o}"
  - id: pz_b
    command: "echo pz_b >> {o}"
    depends_on: [pz_a]
"#,
        o = order.display()
    ));
    let day = "20260330";
    let out = sb.ctl_ok(&["pause", "-j", "pz_b"]);
    assert_eq!(out.trim(), "task pz_b paused");
    let paused = |id: &str| {
        let tasks = sb.tasks_json();
        tasks
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {tasks:#?}"))["paused"]
            .clone()
    };
    assert_eq!(paused("pz_b"), true);
    assert_eq!(paused("pz_a"), false);

    sb.ctl_ok(&["run", "-j", "pz_a", "-d", day, "--down"]);
    sb.wait_status(day, SETTLE, "pz_a to succeed", |rows| {
        state_of(rows, "pz_a") == Some("success")
    });
    std::thread::sleep(Duration::from_secs(2));
    let rows = sb.status_json(day);
    let b = sb.instance(&rows, "pz_b");
    assert_eq!(b["state"], "waiting", "{b:#}");
    assert_eq!(b["try_number"], 0, "{b:#}");
    assert_eq!(b["blocked"], false, "{b:#}");
    assert!(
        b["wait_reason"].as_str().unwrap_or_default().contains("paused"),
        "{b:#}"
    );
    assert_eq!(lines(&order), ["pz_a"]);

    let out = sb.ctl_ok(&["unpause", "-j", "pz_b"]);
    assert_eq!(out.trim(), "task pz_b unpaused");
    assert_eq!(paused("pz_b"), false);
    let rows = sb.wait_status(day, SETTLE, "pz_b to succeed after unpause", |rows| {
        state_of(rows, "pz_b") == Some("success")
    });
    assert_eq!(sb.instance(&rows, "pz_b")["try_number"], 1);
    assert_eq!(lines(&order), ["pz_a", "pz_b"]);
    let err = err_lower(&sb, &["pause", "-j", "pz_nope"]);
    assert!(err.contains("pz_nope"), "{err}");
    let ops = parse_array(&sb.ctl_ok(&["history", "-j", "pz_b", "-o", "json"]));
    let got: Vec<(&str, &str)> = ops
        .iter()
        .map(|o| (o["action"].as_str().unwrap(), o["target"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("unpause", "pz_b"), ("pause", "pz_b")], "{ops:#?}");
}

/// `dep -o json|dot` with `--up`, `--down` and `--depth`.
#[test]
fn dep_shows_trees_edges_and_depth() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: dep_a
    command: "true"
  - id: dep_b
    command: "true"
    depends_on: [dep_a]
  - id: dep_c
    command: "true"
  - id: dep_x
    command: "true"
    depends_on: [dep_b, {task: dep_c, day_offset: -1}]
  - id: dep_y
    command: "true"
    depends_on: [dep_x]
  - id: dep_z
    command: "true"
    depends_on: [dep_y]
"#,
    );
    /// `x[b[a],c(-1)]`, children sorted.
    fn canon(node: &Value) -> String {
        let mut text = node["task"].as_str().expect("a task").to_string();
        let offset = node["day_offset"].as_i64().expect("a day_offset");
        if offset != 0 {
            text.push_str(&format!("({offset:+})"));
        }
        let mut children: Vec<String> = node["children"]
            .as_array()
            .expect("children")
            .iter()
            .map(canon)
            .collect();
        if !children.is_empty() {
            children.sort();
            text.push_str(&format!("[{}]", children.join(",")));
        }
        text
    }
    let edges = |v: &Value| -> BTreeSet<String> {
        v["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| {
                format!(
                    "{}->{}{:+}",
                    e["upstream"],
                    e["downstream"],
                    e["day_offset"].as_i64().unwrap()
                )
            })
            .map(|s| s.replace('"', ""))
            .collect()
    };
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["dep", "-j", "dep_x", "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&sb.ctl_ok(&all)).expect("dep -o json is JSON")
    };

    let v = json(&[]);
    assert_eq!(canon(&v["upstream"]), "dep_x[dep_b[dep_a],dep_c(-1)]", "{v:#}");
    assert_eq!(canon(&v["downstream"]), "dep_x[dep_y[dep_z]]", "{v:#}");
    assert_eq!(
        edges(&v),
        BTreeSet::from(
            [
                "dep_a->dep_b+0",
                "dep_b->dep_x+0",
                "dep_c->dep_x-1",
                "dep_x->dep_y+0",
                "dep_y->dep_z+0",
            ]
            .map(String::from)
        ),
        "{v:#}"
    );

    let v = json(&["--depth", "1"]);
    assert_eq!(canon(&v["upstream"]), "dep_x[dep_b,dep_c(-1)]", "{v:#}");
    assert_eq!(canon(&v["downstream"]), "dep_x[dep_y]", "{v:#}");
    assert_eq!(edges(&v).len(), 3, "{v:#}");

    let v = json(&["--up"]);
    assert_eq!(canon(&v["upstream"]), "dep_x[dep_b[dep_a],dep_c(-1)]", "{v:#}");
    assert!(v["downstream"].is_null(), "--up only: {v:#}");
    let v = json(&["--down", "--depth", "1"]);
    assert!(v["upstream"].is_null(), "--down only: {v:#}");
    assert_eq!(canon(&v["downstream"]), "dep_x[dep_y]", "{v:#}");

    let dot = sb.ctl_ok(&["dep", "-j", "dep_x", "-o", "dot"]);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    for edge in [
        r#""dep_a" -> "dep_b";"#,
        r#""dep_b" -> "dep_x";"#,
        r#""dep_c" -> "dep_x" [label="-1"];"#,
        r#""dep_x" -> "dep_y";"#,
        r#""dep_y" -> "dep_z";"#,
    ] {
        assert!(dot.contains(edge), "dot lacks {edge}:\n{dot}");
    }
    let dot = sb.ctl_ok(&["dep", "-j", "dep_x", "-o", "dot", "--depth", "1"]);
    assert!(
        !dot.contains("dep_a") && !dot.contains("dep_z"),
        "--depth 1:\n{dot}"
    );

    let tree = sb.ctl_ok(&["dep", "-j", "dep_x"]);
    for want in [
        "upstream of dep_x:",
        "downstream of dep_x:",
        "dep_c (-1 day)",
        "dep_z",
    ] {
        assert!(tree.contains(want), "tree lacks {want:?}:\n{tree}");
    }

    let err = sb.ctl_err(&["dep", "-j", "dep_nope"]);
    assert!(err.contains("dep_nope"), "{err}");
}

/// do-all-job runs every scheduled root of a day and its downstream, not unscheduled roots.
#[test]
fn do_all_job_runs_scheduled_roots_and_their_downstream_only() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    let line = |id: &str| format!("echo {id} >> {}", order.display());
    // Schedules far away: the cron loop must not create anything itself.
    sb.apply(&format!(
        r#"
tasks:
  - id: daj_a
    command: "{a}"
    schedule: "0 0 1 1 *"
  - id: daj_a_down
    command: "{ad}"
    depends_on: [daj_a]
  - id: daj_b
    command: "{b}"
    schedule: "0 0 1 1 *"
  - id: daj_b_down
    command: "{bd}"
    depends_on: [daj_b]
  - id: daj_free
    command: "{f}"
  - id: daj_free_down
    command: "{fd}"
    depends_on: [daj_free]
"#,
        a = line("daj_a"),
        ad = line("daj_a_down"),
        b = line("daj_b"),
        bd = line("daj_b_down"),
        f = line("daj_free"),
        fd = line("daj_free_down"),
    ));
    let day = "20250610";
    let out = sb.ctl_ok(&["do-all-job", "-d", day]);
    assert!(out.contains("4 instances"), "{out}");
    let rows = sb.wait_status(day, SETTLE, "the four instances to succeed", |rows| {
        rows.len() >= 4 && rows.iter().all(|r| r["state"] == "success")
    });
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(
        tasks,
        BTreeSet::from(["daj_a", "daj_a_down", "daj_b", "daj_b_down"]),
        "{rows:#?}"
    );
    let all = all_rows(&sb);
    assert_eq!(all.len(), 4, "no instance of another day: {all:#?}");
    let ran = lines(&order);
    let pos = |id: &str| {
        ran.iter()
            .position(|l| l == id)
            .unwrap_or_else(|| panic!("{id} did not run: {ran:?}"))
    };
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert!(pos("daj_a") < pos("daj_a_down"), "{ran:?}");
    assert!(pos("daj_b") < pos("daj_b_down"), "{ran:?}");
    let ops = parse_array(&sb.ctl_ok(&["history", "--limit", "1", "-o", "json"]));
    assert_eq!(
        (&ops[0]["action"], &ops[0]["target"]),
        (&Value::from("do-all-job"), &Value::from(day)),
        "{ops:#?}"
    );
}

/// A task whose only upstream is its upstream's previous day (`b` after `a` of the day before)
/// is part of a day's run: `do-all-job -d D` creates b@D, which runs once a@D-1 has succeeded
/// and otherwise waits, saying for a@D-1 (released when a@D-1 succeeds later). `run --down`
/// stays within the days asked for: it never creates b@D+1.
#[test]
fn do_all_job_creates_the_day_s_offset_only_downstream() {
    let sb = Sandbox::start();
    let order = sb.work().join("order.txt");
    // A schedule far away: the cron loop must not create anything itself.
    sb.apply(&format!(
        r#"
tasks:
  - id: off_a
    command: "echo off_a {{{{etl_day}}}} >> {o}"
    schedule: "0 0 1 1 *"
  - id: off_b
    command: "echo off_b {{{{etl_day}}}} >> {o}"
    depends_on: [{{task: off_a, day_offset: -1}}]
"#,
        o = order.display()
    ));
    let days = |rows: &[Value]| -> BTreeSet<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{}@{}",
                    r["task"].as_str().unwrap(),
                    r["etl_day"].as_str().unwrap()
                )
            })
            .collect()
    };

    // a@D-1 succeeded first: do-all-job -d D runs a@D and b@D.
    sb.ctl_ok(&["run", "-j", "off_a", "-d", "20260409", "--wait"]);
    assert_eq!(
        days(&all_rows(&sb)),
        BTreeSet::from(["off_a@20260409".to_string()]),
        "a plain run of a@D-1 creates nothing else"
    );
    let out = sb.ctl_ok(&["do-all-job", "-d", "20260410"]);
    assert!(out.contains("2 instances"), "a@D and b@D: {out}");
    let rows = sb.wait_status("20260410", SETTLE, "a@D and b@D to succeed", |rows| {
        rows.len() >= 2 && rows.iter().all(|r| r["state"] == "success")
    });
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for task in ["off_a", "off_b"] {
        assert_eq!(sb.instance(&rows, task)["try_number"], 1, "{rows:#?}");
    }
    // a@D and b@D run in either order: b@D only waits for a@D-1.
    let mut ran = lines(&order);
    ran.sort();
    assert_eq!(
        ran,
        ["off_a 20260409", "off_a 20260410", "off_b 20260410"],
        "each once"
    );

    // a@E-1 absent: do-all-job -d E creates b@E, which waits for a@E-1 and says so.
    let out = sb.ctl_ok(&["do-all-job", "-d", "20260420"]);
    assert!(out.contains("2 instances"), "a@E and b@E: {out}");
    let rows = sb.wait_status("20260420", SETTLE, "a@E to succeed", |rows| {
        state_of(rows, "off_a") == Some("success")
    });
    let b = sb.instance(&rows, "off_b");
    assert_eq!(b["state"], "waiting", "{b:#}");
    assert_eq!(b["try_number"], 0, "{b:#}");
    assert_eq!(b["blocked"], false, "an absent upstream is not a failure: {b:#}");
    let reason = b["wait_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("off_a@20260419") && reason.contains("no instance"),
        "the wait reason names a@E-1 and that it has no instance: {b:#}"
    );
    assert!(
        sb.status_json("20260419").is_empty(),
        "do-all-job -d E creates nothing on E-1"
    );

    // run --down of a@E stays on E: b@E+1 (after a@E) is not created.
    let out = sb.ctl_ok(&["run", "-j", "off_a", "-d", "20260420", "--down", "--wait"]);
    assert!(
        out.contains("waiting for 1 instance to finish"),
        "only a@E: {out}"
    );
    let rows = sb.status_json("20260420");
    assert_eq!(state_of(&rows, "off_a"), Some("success"), "{rows:#?}");
    assert_eq!(sb.instance(&rows, "off_a")["try_number"], 2, "{rows:#?}");
    assert_eq!(state_of(&rows, "off_b"), Some("waiting"), "{rows:#?}");
    assert!(
        sb.status_json("20260421").is_empty(),
        "run --down of a@E created an instance on E+1: {:#?}",
        sb.status_json("20260421")
    );

    // a@E-1 succeeding releases the waiting b@E (and a plain run creates no b@E-1).
    sb.ctl_ok(&["run", "-j", "off_a", "-d", "20260419", "--wait"]);
    sb.wait_status("20260420", SETTLE, "b@E released by a@E-1", |rows| {
        state_of(rows, "off_b") == Some("success")
    });
    assert_eq!(
        days(&all_rows(&sb)),
        [
            "off_a@20260409",
            "off_a@20260410",
            "off_b@20260410",
            "off_a@20260419",
            "off_a@20260420",
            "off_b@20260420",
        ]
        .map(String::from)
        .into_iter()
        .collect::<BTreeSet<_>>(),
    );
    let ran = lines(&order);
    assert_eq!(
        ran.iter().filter(|l| l.starts_with("off_b")).count(),
        2,
        "b@D and b@E, once each: {ran:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------------------------

/// Every operation is recorded with who, when, what and from which client.
#[test]
fn history_lists_every_operation_with_actor_and_client() {
    let sb = Sandbox::start();
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);
    let user = [("USER", "e2e-alice")];
    let ok = |args: &[&str]| {
        let out = sb.ctl_env(args, &user);
        assert!(
            out.status.success(),
            "`goflowctl {}` failed\n{}",
            args.join(" "),
            sb.describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dag = sb.write(
        "history-dag.yaml",
        r#"
tasks:
  - id: hist_gate
    command: "true"
  - id: hist_a
    command: "true"
  - id: hist_b
    command: "true"
    depends_on: [hist_gate]
"#,
    );
    ok(&["apply", "-f", dag.to_str().unwrap()]);
    let day = "20260401";
    ok(&["run", "-j", "hist_b", "-d", day]); // waits: hist_gate has no instance
    ok(&["kill", "-j", "hist_b", "-d", day]);
    ok(&["mark-success", "-j", "hist_gate", "-d", day]);
    ok(&["run", "-j", "hist_a", "-d", day, "--down", "--wait"]);

    let ops = parse_array(&ok(&["history", "-o", "json"]));
    let got: Vec<(String, String)> = ops
        .iter()
        .rev()
        .map(|o| {
            (
                o["action"].as_str().unwrap_or_default().to_string(),
                o["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("apply", "history-dag.yaml"),
        ("run", "hist_b@20260401"),
        ("kill", "hist_b@20260401"),
        ("mark-success", "hist_gate@20260401"),
        ("run", "hist_a@20260401"),
    ]
    .iter()
    .map(|(a, t)| (a.to_string(), t.to_string()))
    .collect();
    assert_eq!(got, want, "oldest first: {ops:#?}");
    let now = chrono::Utc::now() + chrono::Duration::seconds(5);
    for o in &ops {
        assert_eq!(o["actor"], "local:e2e-alice", "{o:#}");
        let client = o["client"].as_str().unwrap_or_default();
        assert!(
            client.starts_with("goflowctl/") && client.contains(" from 127.0.0.1:"),
            "client: {o:#}"
        );
        let at = time_of(o, "at");
        assert!(
            at >= started && at <= now,
            "at {at} is not during the test: {o:#}"
        );
    }
    let detail = |i: usize| {
        ops[ops.len() - 1 - i]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        detail(0).contains("hist_gate") && detail(0).contains("hist_a") && detail(0).contains("hist_b"),
        "apply's detail names the created tasks: {ops:#?}"
    );
    assert_eq!(detail(2), "waiting", "kill records what it stopped: {ops:#?}");
    assert_eq!(detail(4), "--down", "{ops:#?}");

    let of_b = parse_array(&ok(&["history", "-j", "hist_b", "-o", "json"]));
    let actions: Vec<&str> = of_b.iter().map(|o| o["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["kill", "run"], "newest first, hist_b only: {of_b:#?}");
    let last_two = parse_array(&ok(&["history", "--limit", "2", "-o", "json"]));
    let actions: Vec<&str> = last_two.iter().map(|o| o["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run", "mark-success"], "{last_two:#?}");

    let table = ok(&["history"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "DETAIL"],
        "{table}"
    );
    assert_eq!(table.lines().count(), 6, "a header and five operations:\n{table}");
    assert!(
        table.contains("mark-success") && table.contains("hist_gate@20260401") && table.contains("e2e-alice"),
        "{table}"
    );
}

/// A redo right after a kill waits until the killed try's processes are gone (a command that
/// ignores SIGTERM gets the grace period, then SIGKILL): old and new tries never overlap.
#[test]
fn redo_after_kill_waits_until_the_old_processes_are_gone() {
    let sb = Sandbox::start();
    let pids = sb.work().join("pids");
    let _cleanup = KillListedPids(pids.clone());
    sb.apply(&format!(
        r#"
tasks:
  - id: stubborn
    command: "if [ {{{{try_number}}}} -eq 1 ]; then echo $$ >> {p}; trap '' TERM; while true; do sleep 0.2; done; fi"
"#,
        p = pids.display()
    ));
    let day = "20260801";
    sb.ctl_ok(&["run", "-j", "stubborn", "-d", day]);
    let shell = wait_for(&sb, SETTLE, "the first try's shell", || {
        pids_in(&pids).first().copied()
    });
    sb.ctl_ok(&["kill", "-j", "stubborn", "-d", day]);
    let refused = sb.ctl(&["run", "-j", "stubborn", "-d", day]);
    if is_alive(shell) {
        assert!(
            !refused.status.success(),
            "a redo while the killed shell still runs was accepted"
        );
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("still stopping"), "{err}");
        // Accepted once the group is gone: the agent reports the kill after SIGKILL.
        wait_for(&sb, SETTLE, "the redo to be accepted", || {
            sb.ctl(&["run", "-j", "stubborn", "-d", day])
                .status
                .success()
                .then_some(())
        });
    }
    assert!(
        !is_alive(shell),
        "the redo was accepted while the killed try's shell ran"
    );
    let rows = sb.wait_status(day, SETTLE, "the redo succeeded", |rows| {
        state_of(rows, "stubborn") == Some("success")
    });
    assert_eq!(sb.instance(&rows, "stubborn")["try_number"], 2);
}
