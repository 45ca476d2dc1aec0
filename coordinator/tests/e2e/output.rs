//! What goflowctl and `goflow --help` print, as a new user reads it (issue 17): applies that
//! change nothing say so, counts in the singular, new instances in a dry run, who marked an
//! instance, the retries in force, a wait that names its way out, and each subcommand's flags.

use std::time::Duration;

use goflow_proto as pb;
use pb::control_service_client::ControlServiceClient;
use serde_json::Value;

use crate::sandbox::{Launch, Sandbox, goflow_bin, parse_array, run_goflow};

const DAY: &str = "20260501";

/// Applying the same file again, its `depends_on` reordered, changes nothing and says so;
/// the operations log has one apply.
#[test]
fn apply_is_idempotent_whatever_the_order_of_depends_on() {
    let sb = Sandbox::start();
    let dag = |deps: &str| {
        format!(
            "tasks:\n  - id: idem_a\n    command: \"true\"\n  - id: idem_b\n    command: \"true\"\n  \
             - id: idem_c\n    command: \"true\"\n    depends_on: {deps}\n"
        )
    };
    let first = sb.apply(&dag("[idem_a, {task: idem_b, day_offset: -1}]"));
    assert!(first.contains("idem_c created"), "{first}");
    for again in [
        dag("[idem_a, {task: idem_b, day_offset: -1}]"),
        dag("[{task: idem_b, day_offset: -1}, idem_a]"),
    ] {
        let out = sb.apply(&again);
        for task in ["idem_a", "idem_b", "idem_c"] {
            assert!(out.contains(&format!("{task} unchanged")), "{out}");
        }
        assert!(!out.contains("updated"), "{out}");
        let dry = sb.ctl_ok(&[
            "apply",
            "-f",
            sb.write("again.yaml", &again).to_str().unwrap(),
            "--dry-run",
        ]);
        assert!(!dry.contains("depends_on"), "a dry run lists no change: {dry}");
    }
    let applies = parse_array(&sb.ctl_ok(&["history", "-o", "json"]))
        .into_iter()
        .filter(|o| o["action"] == "apply")
        .count();
    assert_eq!(applies, 1, "only the first apply wrote anything");
    // A real change is still one.
    let out = sb.apply(&dag("[idem_a]"));
    assert!(out.contains("idem_c updated"), "{out}");
}

/// One instance is "1 instance"; a dry run shows instances that do not exist yet as new.
#[test]
fn counts_read_right_and_a_dry_run_shows_new_instances() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: one_t\n    command: \"true\"\n");
    let dry = sb.ctl_ok(&["run", "-j", "one_t", "-d", DAY, "--dry-run"]);
    assert!(dry.contains("would run 1 instance (1 new, 0 existing)"), "{dry}");
    assert!(dry.contains("1 instance:"), "{dry}");
    let row = dry.lines().find(|l| l.contains("one_t")).unwrap_or_default();
    assert!(row.starts_with("new "), "no ID 0 for a new instance: {dry}");
    assert!(!dry.contains("instances"), "{dry}");

    let run = sb.ctl_ok(&["run", "-j", "one_t", "-d", DAY, "--wait"]);
    assert!(run.contains("1 instance to run"), "{run}");
    assert!(run.contains("waiting for 1 instance to finish"), "{run}");
    let dry = sb.ctl_ok(&["run", "-j", "one_t", "-d", DAY, "--dry-run"]);
    assert!(dry.contains("would run 1 instance (0 new, 1 existing)"), "{dry}");
    let id = dry.lines().find(|l| l.contains("one_t")).unwrap_or_default();
    assert!(
        id.split_whitespace()
            .next()
            .is_some_and(|id| id.parse::<i64>().is_ok_and(|n| n > 0)),
        "{dry}"
    );
    let marked = sb.ctl_ok(&["mark-success", "-j", "one_t", "-d", DAY]);
    assert!(marked.contains("1 instance marked success"), "{marked}");
}

/// A force-passed instance shows who marked it, not the failed try's exit code and duration,
/// which stay on that try. Without USER, goflowctl names the OS account, marked `local:`.
#[test]
fn a_marked_instance_names_who_marked_it_and_leaves_the_try_as_it_was() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: mark_t\n    command: \"echo trying; exit 3\"\n");
    let failed = sb.ctl_env(
        &["run", "-j", "mark_t", "-d", DAY, "--wait"],
        &[("USER", "e2e-bob")],
    );
    assert!(!failed.status.success(), "{}", sb.describe(&failed));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("1 of 1 instance did not succeed (1 failed): mark_t 20260501 failed")
            && err.contains("goflowctl status -d 20260501"),
        "{err}"
    );
    let out = sb.ctl_env(
        &["mark-success", "-j", "mark_t", "-d", DAY],
        &[("USER", "e2e-bob")],
    );
    assert!(out.status.success(), "{}", sb.describe(&out));

    let row = sb.instance(&sb.status_json(DAY), "mark_t").clone();
    assert_eq!(row["state"], "success", "{row:#}");
    assert_eq!(row["forced"], true, "{row:#}");
    assert_eq!(row["marked_by"], "local:e2e-bob", "{row:#}");
    assert_eq!(
        row["exit_code"],
        Value::Null,
        "the failed try's exit code is not the instance's: {row:#}"
    );
    assert_eq!(row["started_at"], Value::Null, "{row:#}");
    assert_eq!(row["try_number"], 1, "{row:#}");
    let table = sb.ctl_ok(&["status", "-d", DAY]);
    let line = table.lines().find(|l| l.contains("mark_t")).unwrap_or_default();
    assert!(line.contains("success (marked by local:e2e-bob)"), "{table}");
    assert!(!line.contains(" 3 "), "no exit code beside success: {table}");

    // The try keeps its own figures, and its log.
    let url = sb.server_url();
    let attempts = tokio::runtime::Runtime::new().unwrap().block_on(async move {
        let mut client = ControlServiceClient::connect(url).await.unwrap();
        client
            .list_attempts(pb::ListAttemptsRequest {
                task: "mark_t".into(),
                etl_day: DAY.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .attempts
    });
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let try1 = &attempts[0];
    assert_eq!(try1.state, "failed", "{try1:?}");
    assert!(try1.has_exit_code && try1.exit_code == 3, "{try1:?}");
    assert!(
        try1.started_at > 0 && try1.finished_at >= try1.started_at,
        "{try1:?}"
    );
    let log = sb.ctl_ok(&["logs", "-j", "mark_t", "-d", DAY, "--try", "1"]);
    assert!(log.contains("trying"), "{log}");

    // With no usable USER or LOGNAME, the OS account of goflowctl's uid, never "unknown".
    let out = sb.ctl_env(&["pause", "-j", "mark_t"], &[("USER", ""), ("LOGNAME", "")]);
    assert!(out.status.success(), "{}", sb.describe(&out));
    let ops = parse_array(&sb.ctl_ok(&["history", "-o", "json"]));
    let actors: Vec<&str> = ops
        .iter()
        .map(|o| o["actor"].as_str().unwrap_or_default())
        .collect();
    // Newest first: pause (no USER), mark-success and run (USER=e2e-bob), apply.
    assert_eq!(actors[1..3], ["local:e2e-bob", "local:e2e-bob"], "{ops:#?}");
    let pauser = actors[0];
    assert!(
        pauser.starts_with("local:") && pauser.len() > "local:".len() && pauser != "local:unknown",
        "{ops:#?}"
    );
}

/// `tasks` shows the retries in force (the configured default for a task that names none)
/// and the next fire with its zone.
#[test]
fn tasks_show_the_retries_in_force_and_the_zone_of_the_next_fire() {
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: vec![("GOFLOW_RETRIES".into(), "2".into())],
        ..Launch::default()
    });
    sb.apply(
        "tasks:\n  - id: tz_default\n    command: \"true\"\n    schedule: \"30 2 * * *\"\n    \
         timezone: Asia/Shanghai\n  - id: tz_own\n    command: \"true\"\n    retries: 0\n",
    );
    let table = sb.ctl_ok(&["tasks"]);
    // A cell by its column's place in the header (cells may be empty).
    let header = table.lines().next().unwrap_or_default();
    let cell = |task: &str, column: &str| -> String {
        let line = table.lines().find(|l| l.starts_with(task)).unwrap_or_default();
        let start = header.find(column).unwrap();
        let end = header[start..].find("   ").map_or(line.len(), |n| {
            start + n + header[start + n..].find(|c: char| c != ' ').unwrap_or(0)
        });
        line.get(start..end.min(line.len()))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(cell("tz_default", "RETRIES"), "2", "{table}");
    let next = cell("tz_default", "NEXT_FIRE");
    let zone = next.rsplit(' ').next().unwrap_or_default();
    assert!(
        zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) && zone.as_bytes()[3] == b':',
        "NEXT_FIRE has its zone: {table}"
    );
    assert_eq!(cell("tz_own", "RETRIES"), "0", "{table}");
    let json = sb.tasks_json();
    let task = json.iter().find(|t| t["id"] == "tz_default").unwrap();
    assert_eq!(task["retries_in_force"], 2, "{task:#}");
}

/// A dependency on yesterday's instance of a task that has none (the first day of a new DAG)
/// says how to get out: start_day. Setting it releases the waiting instance.
#[test]
fn a_wait_on_a_day_without_an_instance_names_start_day() {
    let sb = Sandbox::start();
    let dag = |start: &str| {
        format!(
            "tasks:\n  - id: xd_extract\n    command: \"true\"\n{start}  - id: xd_load\n    command: \"true\"\n    \
             depends_on: [{{task: xd_extract, day_offset: -1}}]\n"
        )
    };
    sb.apply(&dag(""));
    sb.ctl_ok(&["run", "-j", "xd_load", "-d", DAY]);
    let rows = sb.status_json(DAY);
    let row = sb.instance(&rows, "xd_load");
    assert_eq!(row["state"], "waiting", "{row:#}");
    assert_eq!(
        row["wait_reason"],
        "waits for xd_extract@20260430, which has no instance (before xd_extract's first day? set its start_day)",
        "{row:#}"
    );
    sb.apply(&dag(&format!("    start_day: {DAY}\n")));
    sb.wait_status(
        DAY,
        Duration::from_secs(120),
        "xd_load to run once xd_extract starts on its day",
        |rows| {
            rows.iter()
                .any(|r| r["task"] == "xd_load" && r["state"] == "success")
        },
    );
}

/// Each subcommand's --help offers the flags it uses and describes them for itself.
#[test]
fn every_subcommand_help_describes_its_own_flags() {
    let work = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--help");
        let out = run_goflow(&all, &[], work.path(), Duration::from_secs(60));
        assert!(out.status.success(), "goflow {all:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let flags = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
            .map(|w| w.trim_end_matches(',').to_string())
            .collect()
    };
    let database = ["--data-dir", "--database-url"];
    let cluster = [
        "--redis-url",
        "--etcd-endpoints",
        "--etcd-key",
        "--lease-ttl",
        "--advertise-address",
        "--ha",
        "--tls-client-ca",
    ];

    let webui = help(&["webui"]);
    for flag in database {
        assert!(
            !flags(&webui).contains(&flag.to_string()),
            "webui offers {flag}:\n{webui}"
        );
    }
    assert!(
        !webui.contains("agent"),
        "the web UI's help speaks of agents:\n{webui}"
    );
    assert!(webui.contains("serve the web UI over HTTPS"), "{webui}");

    let agent = help(&["agent"]);
    for flag in database {
        assert!(
            !flags(&agent).contains(&flag.to_string()),
            "agent offers {flag}:\n{agent}"
        );
    }
    assert!(
        !agent.contains("web UI"),
        "the agent's help speaks of the web UI:\n{agent}"
    );
    assert!(agent.contains("This agent's client certificate"), "{agent}");

    let standalone = help(&["standalone"]);
    for flag in cluster {
        assert!(
            !flags(&standalone).contains(&flag.to_string()),
            "standalone offers {flag}:\n{standalone}"
        );
    }
    let coordinator = help(&["coordinator"]);
    for flag in cluster.iter().chain(&database) {
        assert!(
            flags(&coordinator).contains(&flag.to_string()),
            "coordinator lacks {flag}:\n{coordinator}"
        );
    }
    for sub in [
        &["migrate"][..],
        &["user", "add"],
        &["user", "list"],
        &["user", "passwd"],
        &["user", "remove"],
        &["agent-token", "create"],
        &["agent-token", "list"],
        &["agent-token", "revoke"],
    ] {
        let text = help(sub);
        for flag in database {
            assert!(
                flags(&text).contains(&flag.to_string()),
                "{sub:?} lacks {flag}:\n{text}"
            );
        }
        assert!(
            !flags(&text).contains(&"--grpc-listen".to_string()),
            "{sub:?}:\n{text}"
        );
    }
    // Every flag of every subcommand says something.
    for sub in [
        &["standalone"][..],
        &["coordinator"],
        &["agent"],
        &["webui"],
        &["migrate"],
        &["user", "add"],
        &["user", "passwd"],
        &["agent-token", "create"],
    ] {
        let text = help(sub);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with('-'))
        {
            // The description follows on the line, or (long ones) on the next.
            let words = line.split_whitespace().count();
            let next = lines.get(i + 1).map_or("", |l| l.trim_start());
            assert!(
                words > 2 || (!next.is_empty() && !next.starts_with('-')),
                "{sub:?}: a flag without a description: {line:?}\n{text}"
            );
        }
    }
    assert!(goflow_bin().exists());
}
