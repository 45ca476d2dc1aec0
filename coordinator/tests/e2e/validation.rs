//! Refusals: bad DAG documents change nothing, bad command-line input is named.

use crate::sandbox::Sandbox;

const VALID: &str = r#"
tasks:
  - id: ref_a
    command: "echo a {{etl_day}}"
    schedule: "0 3 1 1 *"
    retries: 1
  - id: ref_b
    command: "echo b"
    depends_on: [ref_a]
"#;

/// Every refused document leaves the stored tasks exactly as they were, and says why.
#[test]
fn refused_dags_leave_the_store_unchanged() {
    let sb = Sandbox::start();
    sb.apply(VALID);
    let before = sb.ctl_ok(&["tasks", "-o", "json"]);
    assert!(
        before.contains("\"ref_a\"") && before.contains("\"ref_b\""),
        "{before}"
    );

    // (file name, document, words the error must contain). Each document also changes a
    // stored task and adds a valid new one, which must not be written either.
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "cycle.yaml",
            r#"
tasks:
  - id: ref_a
    command: "echo changed"
  - id: cyc_x
    command: "true"
    depends_on: [cyc_z]
  - id: cyc_y
    command: "true"
    depends_on: [cyc_x]
  - id: cyc_z
    command: "true"
    depends_on: [cyc_y]
"#,
            &["cycle", "cyc_x", "cyc_y", "cyc_z"],
        ),
        (
            "typo.yaml",
            "tasks:\n  - id: ref_a\n    command: \"echo changed\"\n  - id: new_ok\n    command: \"true\"\n    schedual: \"0 1 * * *\"\n",
            &["typo.yaml", "schedual", "line 6"],
        ),
        (
            "badcron.yaml",
            "tasks:\n  - id: new_ok\n    command: \"true\"\n  - id: bad_cron\n    command: \"true\"\n    schedule: \"99 * * * *\"\n",
            &["bad_cron", "schedule", "99 * * * *", "line 4"],
        ),
        (
            "ghost.yaml",
            "tasks:\n  - id: new_ok\n    command: \"true\"\n  - id: haunted\n    command: \"true\"\n    depends_on: [ref_a, ghost_upstream]\n",
            &["haunted", "ghost_upstream"],
        ),
        (
            "dup.yaml",
            "tasks:\n  - id: dup_me\n    command: \"true\"\n  - id: new_ok\n    command: \"true\"\n  - id: dup_me\n    command: \"false\"\n",
            &["duplicate", "dup_me"],
        ),
        (
            "broken.yaml",
            "tasks:\n  - id: ref_a\n    command: [\"echo changed\"\n",
            &["broken.yaml"],
        ),
        ("empty.yaml", "\n", &["empty.yaml", "empty"]),
        // A cycle through a stored task: ref_a would depend on ref_b, which depends on ref_a.
        (
            "stored-cycle.yaml",
            "tasks:\n  - id: ref_a\n    command: \"true\"\n    depends_on: [ref_b]\n",
            &["cycle", "ref_a", "ref_b"],
        ),
    ];
    for (name, document, words) in cases {
        let path = sb.write(name, document);
        let stderr = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
        for word in *words {
            assert!(
                stderr.contains(word),
                "{name}: the error should name {word:?}:\n{stderr}"
            );
        }
        let after = sb.ctl_ok(&["tasks", "-o", "json"]);
        assert_eq!(after, before, "{name} was refused but changed the tasks");
    }

    // The cycle is named as a path in dependency direction: x -> y -> z -> x (any start).
    let path = sb.work().join("cycle.yaml");
    let stderr = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
    let rotations = [
        "cyc_x -> cyc_y -> cyc_z -> cyc_x",
        "cyc_y -> cyc_z -> cyc_x -> cyc_y",
        "cyc_z -> cyc_x -> cyc_y -> cyc_z",
    ];
    assert!(
        rotations.iter().any(|r| stderr.contains(r)),
        "the cycle path (upstream -> downstream) should be one of {rotations:?}:\n{stderr}"
    );

    // Dry runs of a valid change write nothing either; a real apply then does.
    let change = sb.write(
        "change.yaml",
        "tasks:\n  - id: ref_b\n    command: \"echo b2\"\n    depends_on: [ref_a]\n",
    );
    let dry = sb.ctl_ok(&["apply", "-f", change.to_str().unwrap(), "--dry-run"]);
    assert!(dry.contains("ref_b"), "{dry}");
    assert_eq!(sb.ctl_ok(&["tasks", "-o", "json"]), before, "--dry-run wrote");
    sb.ctl_ok(&["apply", "-f", change.to_str().unwrap()]);
    let changed = sb.tasks_json();
    let b = changed.iter().find(|t| t["id"] == "ref_b").unwrap();
    assert_eq!(b["command"], "echo b2", "{b:#}");
}

/// Unknown tasks and impossible dates are refused with a message naming them.
#[test]
fn bad_command_line_input_is_refused_and_named() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: input_a\n    command: \"true\"\n");

    let err = sb.ctl_err(&["run", "-j", "nosuch", "-d", "20260101"]);
    assert!(err.contains("unknown task") && err.contains("nosuch"), "{err}");

    let err = sb.ctl_err(&["run", "-j", "input_a", "-d", "2026-13-01"]);
    assert!(err.contains("2026-13-01"), "the error names the date:\n{err}");

    let err = sb.ctl_err(&["status", "-d", "20260230"]);
    assert!(err.contains("20260230"), "the error names the date:\n{err}");

    let err = sb.ctl_err(&["run", "-j", "input_a", "--from", "20260105", "--to", "20260101"]);
    assert!(err.contains("20260105") && err.contains("20260101"), "{err}");

    // Nothing was created by any of them.
    let all = crate::sandbox::parse_array(&sb.ctl_ok(&["status", "-j", "input_a", "-o", "json"]));
    assert!(all.is_empty(), "refused runs created instances: {all:#?}");
}

/// Two applies at once that would close a cycle between them: exactly one is stored, the
/// other is refused naming the cycle, and goflow still starts afterwards.
#[test]
fn concurrent_applies_never_store_a_cycle() {
    use std::process::{Command, Stdio};
    let mut sb = Sandbox::start();
    // A downstream may come before its upstream in a document.
    sb.apply("tasks:\n  - id: cx\n    command: \"true\"\n    depends_on: [cw]\n  - id: cw\n    command: \"true\"\n  - id: cy\n    command: \"true\"\n");
    let x_after_y = sb.write(
        "x.yaml",
        "tasks:\n  - id: cx\n    command: \"true\"\n    depends_on: [cw, cy]\n",
    );
    let y_after_x = sb.write(
        "y.yaml",
        "tasks:\n  - id: cy\n    command: \"true\"\n    depends_on: [cx]\n",
    );
    let ctl = crate::sandbox::goflow_bin().with_file_name("goflowctl");
    let spawn = |file: &std::path::Path| {
        crate::sandbox::clean_env(&mut Command::new(&ctl))
            .args(["--server", &sb.server_url(), "apply", "-f"])
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start goflowctl apply")
    };
    let (a, b) = (spawn(&x_after_y), spawn(&y_after_x));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [a.status.success(), b.status.success()];
    assert_eq!(
        ok.iter().filter(|s| **s).count(),
        1,
        "exactly one apply wins: {a:?} {b:?}"
    );
    let loser = if ok[0] { &b } else { &a };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(
        err.contains("cycle") && err.contains("cx") && err.contains("cy"),
        "{err}"
    );
    let tasks = sb.tasks_json();
    let deps: usize = tasks
        .iter()
        .map(|t| t["depends_on"].as_array().map_or(0, |d| d.len()))
        .sum();
    // Either cx -> {cw, cy}, or cx -> cw and cy -> cx: two edges; all three would be a cycle.
    assert_eq!(deps, 2, "exactly one of the two applies is stored: {tasks:#?}");
    sb.restart();
    assert_eq!(sb.tasks_json().len(), 3, "the store still loads after a restart");
}

/// A definition change that leaves a waiting instance nothing to wait for releases it.
#[test]
fn dropping_an_unmet_dependency_releases_the_waiting_instance() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: da\n    command: \"true\"\n  - id: dc\n    command: \"exit 1\"\n  - id: db\n    command: \"true\"\n    depends_on: [da, dc]\n");
    sb.ctl_ok(&["run", "-j", "da", "-d", "20260601"]);
    let out = sb.ctl(&["run", "-j", "dc", "-d", "20260601", "--wait"]);
    assert!(!out.status.success(), "dc fails");
    sb.ctl_ok(&["run", "-j", "db", "-d", "20260601"]);
    sb.wait_status(
        "20260601",
        std::time::Duration::from_secs(30),
        "db waiting behind dc",
        |rows| {
            crate::sandbox::state_of(rows, "da") == Some("success")
                && crate::sandbox::state_of(rows, "db") == Some("waiting")
        },
    );
    sb.apply("tasks:\n  - id: db\n    command: \"true\"\n    depends_on: [da]\n");
    sb.wait_status(
        "20260601",
        std::time::Duration::from_secs(30),
        "db released by the new definition",
        |rows| crate::sandbox::state_of(rows, "db") == Some("success"),
    );
}
