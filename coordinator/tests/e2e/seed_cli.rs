//! The seed's command lines on the `goflow` binary: `goflow run -j TASK -d YYYY-MM-DD -down`,
//! `goflow dep -j TASK`, `goflow kill ...`, `goflow do_all_job -d ...`, doing what the matching
//! goflowctl verbs do, with the same output and exit status, on the same server.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::sandbox::{CTL_TIMEOUT, Sandbox, read, run_goflow, state_of};

/// Generous: a few short shell commands on a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// `goflow ARGS... --server URL` (the seed's verbs take goflowctl's global `--server` anywhere
/// after the verb).
fn goflow(sb: &Sandbox, args: &[&str]) -> Output {
    let url = sb.server_url();
    let mut all = args.to_vec();
    all.extend(["--server", &url]);
    run_goflow(&all, &[], &sb.work(), CTL_TIMEOUT)
}

/// `goflow ARGS...` finding the server through GOFLOW_SERVER (`host:port`, as goflowctl takes it).
fn goflow_env(sb: &Sandbox, args: &[&str]) -> Output {
    let server = sb.server_url().trim_start_matches("http://").to_string();
    run_goflow(args, &[("GOFLOW_SERVER", &server)], &sb.work(), CTL_TIMEOUT)
}

/// Asserts `out` succeeded and returns its stdout.
fn ok(sb: &Sandbox, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "`goflow {}` failed ({})\n{}",
        args.join(" "),
        out.status,
        sb.describe(&out)
    );
    String::from_utf8(out.stdout).expect("goflow prints UTF-8")
}

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_string).collect()
}

/// Waits until `path` holds `n` lines (the tasks append one each), and returns them.
fn wait_lines(sb: &Sandbox, path: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let got = lines(path);
        if got.len() >= n {
            return got;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "waited {SETTLE:?} for {n} lines in {}, got {got:?}\nstandalone log:\n{}",
                path.display(),
                sb.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A chain seed_a -> seed_b -> seed_c, each appending its name to `order.txt`.
fn chain(sb: &Sandbox) -> std::path::PathBuf {
    let order = sb.work().join("order.txt");
    let line = |id: &str| format!("echo {id} >> {}", order.display());
    sb.apply(&format!(
        r#"
tasks:
  - id: seed_a
    command: "{a}"
  - id: seed_b
    command: "{b}"
    depends_on: [seed_a]
  - id: seed_c
    command: "{c}"
    depends_on: [seed_b]
  - id: seed_fail
    command: "exit 3"
"#,
        a = line("seed_a"),
        b = line("seed_b"),
        c = line("seed_c"),
    ));
    order
}

/// `goflow run -j a -d YYYY-MM-DD` reruns a alone, `-down` reruns a and its downstream; the
/// output is goflowctl's, `--wait` waits and fails as goflowctl's does.
#[test]
fn seed_run_with_single_dash_down_reruns_the_downstream() {
    let sb = Sandbox::start();
    let order = chain(&sb);
    sb.ctl_ok(&["run", "-j", "seed_a", "-d", "2026-01-05", "--down", "--wait"]);
    assert_eq!(lines(&order), ["seed_a", "seed_b", "seed_c"]);

    // Without -down: only seed_a; found through GOFLOW_SERVER.
    let args = ["run", "-j", "seed_a", "-d", "2026-01-05", "--wait"];
    let out = ok(&sb, &args, goflow_env(&sb, &args));
    assert!(out.contains("waiting for 1 instance to finish"), "{out}");
    assert_eq!(lines(&order), ["seed_a", "seed_b", "seed_c", "seed_a"]);

    // The seed's -down, waited for.
    let args = ["run", "-j", "seed_a", "-d", "2026-01-05", "-down", "--wait"];
    let out = ok(&sb, &args, goflow(&sb, &args));
    assert!(out.contains("3 instances:"), "{out}");
    assert!(out.contains("waiting for 3 instances to finish"), "{out}");
    let ran = lines(&order);
    assert_eq!(ran[4..], ["seed_a", "seed_b", "seed_c"], "{ran:?}");
    let rows = sb.status_json("20260105");
    for task in ["seed_a", "seed_b", "seed_c"] {
        assert_eq!(state_of(&rows, task), Some("success"), "{rows:#?}");
    }

    // The same words as goflowctl's: goflowctl `--down`, then goflow `-down`, on the same
    // instances, print the same lines.
    let ctl = sb.ctl_ok(&["run", "-j", "seed_a", "-d", "20260105", "--down"]);
    wait_lines(&sb, &order, 10);
    sb.wait_status("20260105", SETTLE, "the chain to succeed again", |rows| {
        rows.iter().all(|r| r["state"] == "success")
    });
    let args = ["run", "-j", "seed_a", "-d", "2026-01-05", "-down"];
    let seed = ok(&sb, &args, goflow(&sb, &args));
    assert_eq!(seed, ctl);
    assert!(seed.contains("3 instances:"), "{seed}");
    let ran = wait_lines(&sb, &order, 13);
    assert_eq!(ran[10..], ["seed_a", "seed_b", "seed_c"], "{ran:?}");

    // A failed wait: exit status 1 and goflowctl's error line, from both.
    let args = ["run", "-j", "seed_fail", "-d", "2026-01-05", "--wait"];
    let seed = goflow(&sb, &args);
    assert_eq!(seed.status.code(), Some(1), "{}", sb.describe(&seed));
    let seed_err = String::from_utf8_lossy(&seed.stderr);
    assert!(
        seed_err.starts_with("error: 1 of 1 instance did not succeed (1 failed): seed_fail 20260105 failed"),
        "{seed_err}"
    );
    let ctl_err = sb.ctl_err(&args);
    assert_eq!(seed_err, ctl_err);

    // A usage error is goflowctl's, named `goflow run`, with clap's status 2.
    let args = ["run", "-j", "seed_a", "-down"];
    let usage = goflow(&sb, &args);
    assert_eq!(usage.status.code(), Some(2), "{}", sb.describe(&usage));
    let text = String::from_utf8_lossy(&usage.stderr);
    assert!(text.contains("goflow run"), "{text}");
    assert_eq!(lines(&order).len(), 13, "nothing ran after the usage error");
}

/// `goflow dep -j TASK` prints goflowctl's dependency trees; `-up` keeps only the upstream.
#[test]
fn seed_dep_prints_what_goflowctl_dep_prints() {
    let sb = Sandbox::start();
    chain(&sb);
    let seed = ok(
        &sb,
        &["dep", "-j", "seed_b"],
        goflow(&sb, &["dep", "-j", "seed_b"]),
    );
    assert_eq!(seed, sb.ctl_ok(&["dep", "-j", "seed_b"]));
    for want in ["upstream of seed_b:", "downstream of seed_b:", "seed_a", "seed_c"] {
        assert!(seed.contains(want), "dep lacks {want:?}:\n{seed}");
    }
    let up = ok(
        &sb,
        &["dep", "-j", "seed_b", "-up"],
        goflow(&sb, &["dep", "-j", "seed_b", "-up"]),
    );
    assert_eq!(up, sb.ctl_ok(&["dep", "-j", "seed_b", "--up"]));
    assert!(up.contains("seed_a") && !up.contains("seed_c"), "{up}");

    let out = goflow(&sb, &["dep", "-j", "seed_nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", sb.describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("seed_nope"),
        "{}",
        sb.describe(&out)
    );
}

/// `goflow kill -j TASK -d YYYY-MM-DD` stops a running try and records it as killed.
#[test]
fn seed_kill_stops_a_sleeping_task() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: seed_sleep
    command: "sleep 300"
"#,
    );
    sb.ctl_ok(&["run", "-j", "seed_sleep", "-d", "20260107"]);
    sb.wait_status("20260107", SETTLE, "seed_sleep to run", |rows| {
        state_of(rows, "seed_sleep") == Some("running")
    });
    let args = ["kill", "-j", "seed_sleep", "-d", "2026-01-07"];
    let out = ok(&sb, &args, goflow_env(&sb, &args));
    assert!(out.contains("killed"), "{out}");
    assert!(out.contains("seed_sleep"), "{out}");
    let rows = sb.status_json("20260107");
    assert_eq!(state_of(&rows, "seed_sleep"), Some("killed"), "{rows:#?}");

    // Nothing left to kill: goflowctl's refusal and status.
    let again = goflow(&sb, &args);
    assert_eq!(again.status.code(), Some(1), "{}", sb.describe(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        sb.ctl_err(&["kill", "-j", "seed_sleep", "-d", "20260107"])
    );
}

/// `goflow do_all_job -d YYYY-MM-DD` (and `do-all-job --date`, the seed's long name) runs the
/// day's scheduled roots and their downstream.
#[test]
fn seed_do_all_job_runs_the_scheduled_roots_of_a_day() {
    let sb = Sandbox::start();
    // Schedules far away: the cron loop must not create anything itself.
    sb.apply(
        r#"
tasks:
  - id: seed_root
    command: "true"
    schedule: "0 0 1 1 *"
  - id: seed_root_down
    command: "true"
    depends_on: [seed_root]
  - id: seed_free
    command: "true"
"#,
    );
    let out = ok(
        &sb,
        &["do_all_job", "-d", "2025-06-10"],
        goflow(&sb, &["do_all_job", "-d", "2025-06-10"]),
    );
    assert!(out.contains("2 instances:"), "{out}");
    let rows = sb.wait_status("20250610", SETTLE, "the day's two instances to succeed", |rows| {
        rows.len() >= 2 && rows.iter().all(|r| r["state"] == "success")
    });
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(
        tasks,
        BTreeSet::from(["seed_root", "seed_root_down"]),
        "{rows:#?}"
    );

    let args = ["do-all-job", "--date", "2025-06-11"];
    let out = ok(&sb, &args, goflow_env(&sb, &args));
    assert!(out.contains("2 instances:"), "{out}");
    let rows = sb.wait_status("20250611", SETTLE, "the next day's instances", |rows| {
        rows.len() >= 2
    });
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(
        tasks,
        BTreeSet::from(["seed_root", "seed_root_down"]),
        "{rows:#?}"
    );
}

/// With nobody at the address, the seed verbs say so as goflowctl does, and exit 1.
#[test]
fn seed_verbs_name_an_unreachable_server() {
    let cwd = std::env::temp_dir();
    let out = run_goflow(
        &[
            "run",
            "-j",
            "a",
            "-d",
            "2026-01-05",
            "-down",
            "--server",
            "http://127.0.0.1:1",
        ],
        &[],
        &cwd,
        CTL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach goflow at http://127.0.0.1:1: "),
        "{err}"
    );
    let out = run_goflow(
        &["do_all_job", "-d", "2026-01-05"],
        &[("GOFLOW_SERVER", "127.0.0.1:1")],
        &cwd,
        CTL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach goflow at http://127.0.0.1:1: "),
        "{err}"
    );
}
