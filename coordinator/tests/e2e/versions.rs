//! Definitions with history and DAG files that own their tasks (issue 18): versions made by
//! apply, `task history/diff/show`, `run --as-then`, `definition_version` in `status -o json`,
//! `apply --prune`, and the refusals that change nothing.

use std::path::Path;

use serde_json::Value;

use crate::sandbox::{Sandbox, parse_array, read};

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_string).collect()
}

fn task_doc(out: &Path, word: &str) -> String {
    format!(
        "dag: vt\ntasks:\n  - id: vt_a\n    command: \"echo {word} >> {o}\"\n",
        o = out.display()
    )
}

fn apply_file(sb: &Sandbox, name: &str, doc: &str, extra: &[&str]) -> std::process::Output {
    let path = sb.write(name, doc);
    let mut args = vec!["apply", "-f", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    sb.ctl(&args)
}

fn apply_ok(sb: &Sandbox, name: &str, doc: &str, extra: &[&str]) -> String {
    let out = apply_file(sb, name, doc, extra);
    assert!(
        out.status.success(),
        "apply {name} {extra:?} failed: {}",
        sb.describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply_err(sb: &Sandbox, name: &str, doc: &str, extra: &[&str]) -> String {
    let out = apply_file(sb, name, doc, extra);
    assert!(
        !out.status.success(),
        "apply {name} {extra:?} should fail: {}",
        sb.describe(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn history(sb: &Sandbox, task: &str) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["task", "history", task, "-o", "json"]))
}

fn task_ids(sb: &Sandbox) -> Vec<String> {
    let mut ids: Vec<String> = sb
        .tasks_json()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// apply v1, run, apply v2, run: history and diff show it, the first instance records
/// version 1, and `run --as-then` runs v1's command again; a plain rerun runs v2's.
#[test]
fn versions_history_diff_and_as_then() {
    let sb = Sandbox::start();
    let out = sb.work().join("out.txt");
    let (d1, d2) = ("20260301", "20260302");
    let first = apply_ok(&sb, "vt.yaml", &task_doc(&out, "v1"), &[]);
    assert!(first.contains("vt_a created (version 1)"), "{first}");
    sb.ctl_ok(&["run", "-j", "vt_a", "-d", d1, "--wait"]);
    assert_eq!(lines(&out), ["v1"]);
    // The same file again changes nothing, so it makes no version.
    let again = apply_ok(&sb, "vt.yaml", &task_doc(&out, "v1"), &[]);
    assert!(again.contains("vt_a unchanged"), "{again}");
    assert_eq!(history(&sb, "vt_a").len(), 1);

    let second = apply_ok(&sb, "vt.yaml", &task_doc(&out, "v2"), &[]);
    assert!(second.contains("vt_a updated (version 2)"), "{second}");
    sb.ctl_ok(&["run", "-j", "vt_a", "-d", d2, "--wait"]);
    assert_eq!(lines(&out), ["v1", "v2"]);

    let first_row = sb.instance(&sb.status_json(d1), "vt_a").clone();
    assert_eq!(first_row["definition_version"], 1, "{first_row:#}");
    let second_row = sb.instance(&sb.status_json(d2), "vt_a").clone();
    assert_eq!(second_row["definition_version"], 2, "{second_row:#}");

    let versions = history(&sb, "vt_a");
    assert_eq!(versions.len(), 2, "{versions:#?}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["changes"], serde_json::json!([]));
    assert_eq!(versions[1]["version"], 2);
    assert_eq!(versions[1]["changes"], serde_json::json!(["command"]));
    assert_eq!(versions[1]["current"], true);
    assert_eq!(versions[0]["current"], false);
    assert!(versions[1]["created_at"].is_string(), "{:#}", versions[1]);
    let table = sb.ctl_ok(&["task", "history", "vt_a"]);
    assert!(table.contains("VERSION") && table.contains("2 *"), "{table}");

    let diff = sb.ctl_ok(&["task", "diff", "vt_a"]);
    assert!(diff.starts_with("task vt_a: version 1 -> version 2\n"), "{diff}");
    assert!(
        diff.contains(&format!(
            "command: \"echo v1 >> {o}\" -> \"echo v2 >> {o}\"",
            o = out.display()
        )),
        "{diff}"
    );
    assert_eq!(diff.lines().count(), 2, "only the command changed: {diff}");
    let same = sb.ctl_ok(&["task", "diff", "vt_a", "2", "2"]);
    assert!(same.contains("no changes"), "{same}");
    let old = sb.ctl_ok(&["task", "show", "vt_a", "--version", "1", "-o", "yaml"]);
    assert!(old.contains("echo v1") && old.contains("dag: vt"), "{old}");
    let now = sb.ctl_ok(&["task", "show", "vt_a"]);
    assert!(
        now.contains("version 2 (current)") && now.contains("echo v2"),
        "{now}"
    );

    // --as-then: the first day ran version 1, so it runs v1's command again, and says so.
    let said = sb.ctl_ok(&["run", "-j", "vt_a", "-d", d1, "--as-then", "--wait"]);
    assert!(said.contains("runs version 1"), "{said}");
    assert_eq!(lines(&out), ["v1", "v2", "v1"]);
    let row = sb.instance(&sb.status_json(d1), "vt_a").clone();
    assert_eq!(row["definition_version"], 1, "{row:#}");
    assert_eq!(row["run_version"], 1, "{row:#}");
    // A plain rerun runs the current definition, as before.
    sb.ctl_ok(&["run", "-j", "vt_a", "-d", d1, "--wait"]);
    assert_eq!(lines(&out), ["v1", "v2", "v1", "v2"]);
    let row = sb.instance(&sb.status_json(d1), "vt_a").clone();
    assert_eq!(row["run_version"], Value::Null, "{row:#}");

    // The operations log names the versions an apply made.
    let ops = sb.ctl_ok(&["history"]);
    assert!(ops.contains("vt_a v2"), "{ops}");

    // Bad input: clear errors, nothing changed.
    let err = sb.ctl_err(&["task", "diff", "vt_a", "1", "9"]);
    assert!(err.contains("no version 9"), "{err}");
    let err = sb.ctl_err(&["task", "show", "vt_a", "--version", "7"]);
    assert!(err.contains("no version 7"), "{err}");
    let err = sb.ctl_err(&["task", "history", "vt_nope"]);
    assert!(err.contains("unknown task"), "{err}");
    let d3 = "20260303";
    let err = sb.ctl_err(&["run", "-j", "vt_a", "-d", d3, "--as-then"]);
    assert!(
        err.contains("never ran") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(sb.status_json(d3).is_empty(), "--as-then created an instance");
    let err = sb.ctl_err(&["run", "-j", "vt_a", "-d", d3, "--as-then", "--dry-run"]);
    assert!(err.contains("never ran"), "{err}");
    assert_eq!(history(&sb, "vt_a").len(), 2);
    assert_eq!(lines(&out), ["v1", "v2", "v1", "v2"]);
}

/// `apply --prune` removes the tasks of the file's own DAG that it no longer lists, with the
/// deletion rules; tasks of other DAGs or of none stay; a task of another DAG is not taken.
#[test]
fn prune_removes_only_its_own_dags_missing_tasks() {
    let sb = Sandbox::start();
    let shop = "dag: shop\ntasks:\n  - id: p_a\n    command: \"true\"\n  - id: p_b\n    command: \"true\"\n  - id: p_c\n    command: \"true\"\n    depends_on: [p_b]\n";
    apply_ok(&sb, "shop.yaml", shop, &[]);
    apply_ok(
        &sb,
        "other.yaml",
        "dag: other\ntasks:\n  - id: q_a\n    command: \"true\"\n",
        &[],
    );
    apply_ok(
        &sb,
        "loose.yaml",
        "tasks:\n  - id: l_a\n    command: \"true\"\n",
        &[],
    );
    let all = ["l_a", "p_a", "p_b", "p_c", "q_a"];
    assert_eq!(task_ids(&sb), all);
    let p_a = sb.tasks_json().into_iter().find(|t| t["id"] == "p_a").unwrap();
    assert_eq!(
        (p_a["dag"].clone(), p_a["version"].clone()),
        ("shop".into(), 1.into())
    );

    // A task that stays depends on one that would go: refused, nothing changed.
    let keeps_c = "dag: shop\ntasks:\n  - id: p_a\n    command: \"true\"\n  - id: p_c\n    command: \"true\"\n    depends_on: [p_b]\n";
    let err = apply_err(&sb, "shop.yaml", keeps_c, &["--prune"]);
    assert!(
        err.contains("p_c depends on p_b") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(task_ids(&sb), all);

    let only_a = "dag: shop\ntasks:\n  - id: p_a\n    command: \"true\"\n";
    let dry = apply_ok(&sb, "shop.yaml", only_a, &["--prune", "--dry-run"]);
    assert!(
        dry.contains("p_b deleted (dry run)") && dry.contains("p_c deleted (dry run)"),
        "{dry}"
    );
    assert!(!dry.contains("q_a") && !dry.contains("l_a"), "{dry}");
    assert_eq!(task_ids(&sb), all);
    // Without --prune, a shorter file deletes nothing.
    apply_ok(&sb, "shop.yaml", only_a, &[]);
    assert_eq!(task_ids(&sb), all);

    let pruned = apply_ok(&sb, "shop.yaml", only_a, &["--prune"]);
    assert!(
        pruned.contains("p_b deleted") && pruned.contains("p_c deleted"),
        "{pruned}"
    );
    assert_eq!(task_ids(&sb), ["l_a", "p_a", "q_a"]);
    // Their history stays readable.
    assert_eq!(history(&sb, "p_b").len(), 1);

    // --prune needs the file to name its DAG.
    let err = apply_err(
        &sb,
        "loose.yaml",
        "tasks:\n  - id: l_a\n    command: \"true\"\n",
        &["--prune"],
    );
    assert!(
        err.contains("--prune needs") && err.contains("dag: NAME"),
        "{err}"
    );

    // A dag: clash: a file naming another DAG (or none) may not take a task over.
    let grab =
        "dag: other\ntasks:\n  - id: q_a\n    command: \"true\"\n  - id: p_a\n    command: \"echo mine\"\n";
    let err = apply_err(&sb, "grab.yaml", grab, &[]);
    assert!(
        err.contains("\"p_a\" belongs to DAG \"shop\", not to DAG \"other\"")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let err = apply_err(
        &sb,
        "grab2.yaml",
        "tasks:\n  - id: p_a\n    command: \"echo mine\"\n",
        &[],
    );
    assert!(
        err.contains("belongs to DAG \"shop\" and this file names no DAG"),
        "{err}"
    );
    let p_a = sb.tasks_json().into_iter().find(|t| t["id"] == "p_a").unwrap();
    assert_eq!(p_a["command"], "true", "{p_a:#}");
    assert_eq!(history(&sb, "p_a").len(), 1);
    // A loose task may join a DAG: a new version, with the DAG named as the change.
    let joined = apply_ok(
        &sb,
        "other.yaml",
        "dag: other\ntasks:\n  - id: q_a\n    command: \"true\"\n  - id: l_a\n    command: \"true\"\n",
        &[],
    );
    assert!(joined.contains("l_a updated (version 2)"), "{joined}");
    assert_eq!(history(&sb, "l_a")[1]["changes"], serde_json::json!(["dag"]));
    assert_eq!(task_ids(&sb), ["l_a", "p_a", "q_a"]);
}
