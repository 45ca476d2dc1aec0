//! Pools and max_active (issue 16): a pool of 2 with 8 ready tasks never runs 3 at once, on
//! one standalone and on two coordinators whose leader is killed mid-way; max_active bounds a
//! task's tries across data dates; bad definitions are refused and change nothing.
//!
//! Each try's command drops a file named after its attempt in a folder, counts the folder,
//! records the count, sleeps, and removes its file: a count of 3 means three ran at once,
//! whatever the coordinator believes.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::ha::{Ha, Options};
use crate::sandbox::{Launch, Sandbox, parse_array, read, wait_for};

const SETTLE: Duration = Duration::from_secs(120);

/// A command that counts the tries running at once in `dir` (see the module's comment).
fn counting_command(work: &Path, dir: &str, secs: f64) -> String {
    let d = work.join(dir);
    let d = d.display();
    format!(
        "mkdir -p {d}; touch {d}/$GOFLOW_ATTEMPT_ID; echo $(ls {d} | wc -l) >> {d}.counts; \
         sleep {secs}; rm -f {d}/$GOFLOW_ATTEMPT_ID"
    )
}

/// The highest number of tries seen running at once, and how many tries counted.
fn max_seen(work: &Path, dir: &str) -> (usize, usize) {
    let text = read(&work.join(format!("{dir}.counts")));
    let counts: Vec<usize> = text
        .lines()
        .map(|l| l.trim().parse().unwrap_or_else(|_| panic!("count {l:?}")))
        .collect();
    (counts.iter().copied().max().unwrap_or(0), counts.len())
}

/// A root task and 8 tasks after it in pool `warehouse` of 2 slots, plus one outside it.
fn pool_dag(work: &Path, prefix: &str) -> String {
    let mut yaml = format!(
        "pools:\n  - id: warehouse\n    slots: 2\ntasks:\n  - id: {prefix}_root\n    command: \"true\"\n"
    );
    let command = counting_command(work, "warehouse", 1.5);
    for i in 1..=8 {
        yaml.push_str(&format!(
            "  - id: {prefix}_load{i}\n    command: \"{command}\"\n    pool: warehouse\n    depends_on: [{prefix}_root]\n"
        ));
    }
    yaml
}

fn standalone(slots: &str) -> Sandbox {
    let slots = slots.to_string();
    Sandbox::start_with(move |root| Launch {
        args: vec![
            "standalone".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--slots".into(),
            slots.into(),
        ],
        ..Launch::default()
    })
}

#[test]
fn pool_of_two_never_runs_three_at_once() {
    let sb = standalone("8");
    let work = sb.work();
    sb.apply(&pool_dag(&work, "pa"));
    let tasks = parse_array(&sb.ctl_ok(&["tasks", "-o", "json"]));
    let load1 = tasks.iter().find(|t| t["id"] == "pa_load1").expect("pa_load1");
    assert_eq!(load1["pool"], "warehouse", "{load1:#}");
    sb.ctl_ok(&["run", "-j", "pa_root", "-d", "2026-03-01", "--down"]);

    // While they run: the pool is full, the others say why they wait.
    let (pool, waiting) = wait_for(
        SETTLE,
        "the pool full and an instance waiting for it",
        || sb.log_tail(40),
        || {
            let pools = parse_array(&sb.ctl_ok(&["pools", "-o", "json"]));
            let rows = sb.status_json("20260301");
            let waiting = rows
                .iter()
                .find(|r| {
                    r["state"] == "queued" && r["wait_reason"].as_str().is_some_and(|w| w.contains("pool"))
                })?
                .clone();
            let pool = pools.into_iter().find(|p| p["id"] == "warehouse")?;
            (pool["used"] == 2).then_some((pool, waiting))
        },
    );
    assert_eq!(pool["slots"], 2, "{pool:#}");
    assert_eq!(pool["running"].as_array().map(Vec::len), Some(2), "{pool:#}");
    // The count is the one when it was held back: running tries and those on their way.
    let reason = waiting["wait_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("waiting for pool warehouse (") && reason.ends_with(" of 2 slots in use)"),
        "{waiting:#}"
    );
    let table = sb.ctl_ok(&["pools"]);
    assert!(
        table.starts_with("POOL") && table.contains("warehouse"),
        "{table}"
    );

    let rows = sb.wait_status("20260301", SETTLE, "every instance to succeed", |rows| {
        rows.len() == 9 && rows.iter().all(|r| r["state"] == "success")
    });
    for r in &rows {
        // Held back, not refused: no try number was spent waiting.
        assert_eq!(r["try_number"], 1, "{r:#}");
    }
    let (max, counted) = max_seen(&work, "warehouse");
    assert_eq!(counted, 8, "every pooled try ran once");
    assert_eq!(max, 2, "a pool of 2 ran {max} tries at once\n{}", sb.log_tail(40));
    let pools = parse_array(&sb.ctl_ok(&["pools", "-o", "json"]));
    assert_eq!(
        (pools[0]["used"].as_i64(), pools[0]["waiting"].as_i64()),
        (Some(0), Some(0))
    );
}

#[test]
fn max_active_bounds_a_tasks_tries_across_days() {
    let sb = standalone("8");
    let work = sb.work();
    let command = counting_command(&work, "limited", 1.0);
    sb.apply(&format!(
        "tasks:\n  - id: ma_load\n    command: \"{command}\"\n    max_active: 1\n    day_offset: 0\n"
    ));
    sb.ctl_ok(&[
        "run",
        "-j",
        "ma_load",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-04",
    ]);
    let reason = wait_for(
        SETTLE,
        "an instance waiting for max_active",
        || sb.log_tail(40),
        || {
            let rows = parse_array(&sb.ctl_ok(&["status", "-j", "ma_load", "-o", "json"]));
            rows.iter().find_map(|r| {
                r["wait_reason"]
                    .as_str()
                    .filter(|w| w.contains("max_active"))
                    .map(String::from)
            })
        },
    );
    assert_eq!(
        reason,
        "waiting for max_active of task ma_load (1 of 1 tries running)"
    );
    wait_for(
        SETTLE,
        "the 4 days to succeed",
        || sb.log_tail(40),
        || {
            let rows = parse_array(&sb.ctl_ok(&["status", "-j", "ma_load", "-o", "json"]));
            (rows.len() == 4 && rows.iter().all(|r| r["state"] == "success")).then_some(())
        },
    );
    assert_eq!(max_seen(&work, "limited"), (1, 4));
}

#[test]
fn bad_pools_and_limits_are_refused_and_change_nothing() {
    let sb = Sandbox::start();
    sb.apply("pools:\n  - {id: small, slots: 1}\ntasks:\n  - id: bp_a\n    command: \"true\"\n");
    let before = sb.ctl_ok(&["tasks", "-o", "json"]);
    let pools_before = sb.ctl_ok(&["pools", "-o", "json"]);
    let cases = [
        (
            "tasks:\n  - id: bp_b\n    command: \"true\"\n    pool: nowhere\n",
            "task \"bp_b\": unknown pool \"nowhere\"",
        ),
        (
            "pools:\n  - {id: small, slots: 0}\ntasks:\n  - id: bp_b\n    command: \"true\"\n",
            "slots must be at least 1, not 0",
        ),
        (
            "pools:\n  - {id: big, slots: -2}\ntasks: []\n",
            "slots must be at least 1, not -2",
        ),
        (
            "tasks:\n  - id: bp_a\n    command: \"true\"\n    max_active: 0\n",
            "max_active must be at least 1, not 0",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = sb.write(&format!("bad{i}.yaml"), yaml);
        let err = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
        assert!(err.contains(expected), "case {i}: {err}");
    }
    assert_eq!(sb.ctl_ok(&["tasks", "-o", "json"]), before);
    assert_eq!(sb.ctl_ok(&["pools", "-o", "json"]), pools_before);

    // A pool the next file does not list stays; a task of another file may name it.
    sb.apply("tasks:\n  - id: bp_c\n    command: \"true\"\n    pool: small\n");
    let pools: Vec<Value> = parse_array(&sb.ctl_ok(&["pools", "-o", "json"]));
    assert_eq!(pools[0]["tasks"], serde_json::json!(["bp_c"]), "{pools:#?}");
    // Deleting it is refused while a task names it, and works once none does.
    let err = sb.ctl_err(&["pools", "delete", "small"]);
    assert!(err.contains("pool \"small\" is used by 1 task (bp_c)"), "{err}");
    sb.apply("tasks:\n  - id: bp_c\n    command: \"true\"\n");
    sb.ctl_ok(&["pools", "delete", "small"]);
    assert_eq!(sb.ctl_ok(&["pools"]).trim(), "no pools");
    let err = sb.ctl_err(&["pools", "delete", "small"]);
    assert!(err.contains("unknown pool \"small\""), "{err}");
}

/// Two coordinators, the leader killed while the pool's tries run: the other takes over and
/// the pool still never runs three at once; every instance succeeds.
#[test]
fn pool_holds_across_two_coordinators_and_a_leader_killed() {
    let mut ha = Ha::start(Options {
        coordinators: 2,
        agents: 2,
        slots: 4,
        worker_timeout: 10,
        etcd: true,
    });
    let dag = pool_dag(ha.work(), "ph");
    let day = "20260302";
    ha.run_dag(&dag, "ph_root", day);
    let work = ha.work().to_path_buf();
    ha.wait_for(SETTLE, "two pooled tries to have started", || {
        (work.join("warehouse.counts").exists() && max_seen(&work, "warehouse").1 >= 2).then_some(())
    });
    ha.coordinators[0].kill9();
    ha.wait_for(SETTLE, "the other coordinator to lead", || {
        (ha.leader_indexes()? == vec![1]).then_some(())
    });
    let rows = ha.wait_dag_done(day, 9, SETTLE);
    assert_eq!(rows.len(), 9);
    let (max, counted) = max_seen(&work, "warehouse");
    assert!(counted >= 8, "every pooled try ran: {counted}");
    assert!(max <= 2, "a pool of 2 ran {max} tries at once\n{}", ha.logs());
    let pools = ha.ctl_json(&["pools", "-o", "json"]).expect("pools");
    assert_eq!(pools[0]["used"], 0, "{pools:#?}");
}
