//! A coordinator that loses its term and wins the next one in the same process (issue 15):
//! another takes the lease from it mid-DAG (here the test itself, as a coordinator that then
//! does nothing), it steps down, and when that lease lapses it leads again. Its old engine's
//! loops, handlers and streams must not leak into the new term: every instance finishes (none
//! left queued under the old epoch), try numbers stay sane, and every log, a `logs -f` that
//! ran across both step-down and comeback included, is exactly what its command printed.

use std::thread;
use std::time::Duration;

use goflow_coordinator::store::{self, DatabaseUrl, Store, now_ms};
use goflow_coordinator::testing::{TestDatabase, suite_dialect};
use serde_json::Value;

use crate::sandbox::{Agent, Launch, Redis, Sandbox, parse_array, wait_for};

const SECRET: &str = "e2e-terms-agent-secret-0123456789";
/// Generous: a few dozen short shell commands, and two elections, on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(180);
/// How long the usurper holds the lease it took: the coordinator stands by meanwhile.
const USURPED_FOR_MS: i64 = 4000;

/// What `lines` lines of `print_lines(task, ...)` print.
fn expected_log(task: &str, lines: usize) -> String {
    (1..=lines).map(|i| format!("{task} line {i}\n")).collect()
}

/// The command's output in a log as goflow stores it (`TIME out| LINE`): the lines, in order.
fn printed(log: &str) -> String {
    log.lines()
        .map(|line| match line.split_once(" out| ") {
            Some((_, text)) => format!("{text}\n"),
            None => panic!("a log line without its stream prefix: {line:?} in\n{log}"),
        })
        .collect()
}

/// A command printing `lines` numbered lines, `pause` seconds apart.
fn print_lines(lines: usize, pause: f64) -> String {
    format!("for i in $(seq 1 {lines}); do echo $GOFLOW_TASK_ID line $i; sleep {pause}; done")
}

/// Takes the lease from whoever holds it, as a newer coordinator would, for `for_ms`; returns
/// the new fencing token.
fn usurp(url: &str, for_ms: i64) -> i64 {
    let url = DatabaseUrl::parse(url, "the test").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin_unfenced().await.unwrap();
        let holder = store::leader(&mut tx).await.unwrap().holder;
        let now = now_ms();
        let term = store::take_lease(&mut tx, "e2e-usurper", now + for_ms, now, &holder)
            .await
            .unwrap()
            .expect("the lease is taken from its holder");
        tx.commit().await.unwrap();
        store.close().await;
        term.token
    })
}

#[test]
fn a_coordinator_that_steps_down_and_wins_again_leaves_nothing_queued() {
    let db = TestDatabase::create_blocking(suite_dialect());
    let redis = Redis::start();
    let database_url = db.url.clone();
    let coordinator = Sandbox::start_with(|root| Launch {
        args: vec![
            "coordinator".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--lease-ttl".into(),
            "3".into(),
            "--worker-timeout".into(),
            "20".into(),
        ],
        env: vec![
            ("GOFLOW_DATABASE_URL".into(), database_url.into()),
            ("GOFLOW_REDIS_URL".into(), redis.url().into()),
            ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
            ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
        ],
        log_file: None,
        own_database: true,
    });
    let log = || coordinator.log_tail(60);
    wait_for(SETTLE, "the coordinator to lead", log, || {
        coordinator
            .log()
            .contains("leading (database lease")
            .then_some(())
    });
    let mut agents = vec![];
    for id in ["t1", "t2"] {
        let agent_log = coordinator.root().join(format!("agent-{id}.log"));
        agents.push(Agent::start(
            &coordinator.server_url(),
            id,
            3,
            &[],
            &[
                ("GOFLOW_BROKER", redis.url().as_str()),
                ("GOFLOW_AGENT_SECRET", SECRET),
                ("GOFLOW_HEARTBEAT_INTERVAL", "1"),
            ],
            &coordinator.work(),
            &agent_log,
        ));
    }

    // A long task to follow across the step-down, and a root -> 16 leaves -> join DAG that is
    // mid-way (some running, some queued: 6 slots) when the term ends.
    const LEAVES: usize = 16;
    let mut yaml = format!(
        "tasks:\n  - id: long\n    command: \"{}\"\n  - id: root\n    command: \"{}\"\n",
        print_lines(30, 0.5),
        print_lines(2, 0.1)
    );
    let leaves: Vec<String> = (0..LEAVES).map(|i| format!("leaf{i:02}")).collect();
    for leaf in &leaves {
        yaml.push_str(&format!(
            "  - id: {leaf}\n    command: \"{}\"\n    depends_on: [root]\n",
            print_lines(6, 0.4)
        ));
    }
    yaml.push_str(&format!(
        "  - id: join\n    command: \"{}\"\n    depends_on: [{}]\n",
        print_lines(1, 0.0),
        leaves.join(", ")
    ));
    coordinator.apply(&yaml);
    let day = "20260501";
    coordinator.ctl_ok(&["run", "-j", "long", "-d", day]);
    coordinator.wait_status(day, SETTLE, "long to run", |rows| {
        rows.iter()
            .any(|r| r["task"] == "long" && r["state"] == "running")
    });
    // A follow that runs across the step-down and the comeback (goflowctl reconnects).
    let (rows, followed, token) = thread::scope(|scope| {
        let follow =
            scope.spawn(|| coordinator.ctl_timeout(&["logs", "-j", "long", "-d", day, "-f"], SETTLE));
        coordinator.ctl_ok(&["run", "-j", "root", "-d", day, "--down"]);
        coordinator.wait_status(day, SETTLE, "leaves to run", |rows| {
            rows.iter()
                .any(|r| r["task"].as_str().is_some_and(|t| t.starts_with("leaf")) && r["state"] == "running")
        });

        let token = usurp(&db.url, USURPED_FOR_MS);
        wait_for(SETTLE, "the coordinator to step down", log, || {
            coordinator.log().contains("no longer leading").then_some(())
        });
        wait_for(SETTLE, "the coordinator to lead again", log, || {
            (coordinator.log().matches("leading (database lease").count() >= 2).then_some(())
        });

        let rows = coordinator.wait_status(day, SETTLE, "every instance to succeed", |rows| {
            rows.len() == LEAVES + 3 && rows.iter().all(|r| r["state"] == "success")
        });
        (rows, follow.join().unwrap(), token)
    });
    let text = coordinator.log();
    assert!(
        text.contains("stepping down"),
        "the coordinator says why it stepped down:\n{}",
        log()
    );
    // Try numbers: a try whose claim or report was cut by the step-down may be lost and run
    // again (try 2), never more.
    for r in &rows {
        let tries = r["try_number"].as_i64().unwrap();
        assert!((1..=2).contains(&tries), "sane try number: {r:#}\n{}", log());
    }
    // The fencing token grew past the usurper's: the comeback is a new term.
    let listed = coordinator.ctl_ok(&["coordinators", "-o", "json"]);
    let listed: Vec<Value> = parse_array(&listed);
    let leader = listed
        .iter()
        .find(|c| c["leader"] == true)
        .unwrap_or_else(|| panic!("a leader is listed: {listed:#?}"));
    assert!(
        leader["token"].as_i64().unwrap() > token,
        "{leader:#}; the usurper had {token}"
    );

    // Logs intact: each try's stored log is exactly what its command printed.
    let mut tasks: Vec<(&str, usize)> = vec![("long", 30), ("root", 2), ("join", 1)];
    tasks.extend(leaves.iter().map(|l| (l.as_str(), 6)));
    for (task, lines) in tasks {
        let row = rows.iter().find(|r| r["task"] == task).expect("listed");
        let last = row["try_number"].to_string();
        let stored = coordinator.ctl_ok(&["logs", "-j", task, "-d", day, "--try", &last]);
        assert_eq!(
            printed(&stored),
            expected_log(task, lines),
            "{task}'s log\n{}",
            log()
        );
    }
    // The follow that ran across the step-down and the comeback ended with the whole log.
    assert!(
        followed.status.success(),
        "logs -f: {}\n{}",
        String::from_utf8_lossy(&followed.stderr),
        log()
    );
    let long_tries = rows.iter().find(|r| r["task"] == "long").unwrap()["try_number"].clone();
    if long_tries == 1 {
        assert_eq!(
            printed(&String::from_utf8_lossy(&followed.stdout)),
            expected_log("long", 30),
            "logs -f resumed at its byte offset\n{}",
            log()
        );
    }
    drop(agents);
}

/// Standalone (its agent embedded) that steps down and wins again: the tries its agent runs
/// across the comeback are the same process's, alive, so they are neither declared lost nor
/// run a second time; each instance succeeds on its first try with its whole log.
#[test]
fn standalone_that_steps_down_and_wins_again_runs_each_try_once() {
    let db = TestDatabase::create_blocking(suite_dialect());
    let database_url = db.url.clone();
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        // Standalone has no cluster flags; its lease still comes from the environment.
        env: vec![
            ("GOFLOW_DATABASE_URL".into(), database_url.into()),
            ("GOFLOW_LEASE_TTL".into(), "3".into()),
        ],
        log_file: None,
        own_database: true,
    });
    let log = || sb.log_tail(60);
    wait_for(SETTLE, "standalone to lead", log, || {
        sb.log().contains("leading (database lease").then_some(())
    });
    const LEAVES: usize = 3;
    let mut yaml = format!("tasks:\n  - id: root\n    command: \"{}\"\n", print_lines(1, 0.0));
    for i in 0..LEAVES {
        yaml.push_str(&format!(
            "  - id: leaf{i}\n    command: \"{}\"\n    retries: 0\n    depends_on: [root]\n",
            print_lines(16, 0.5)
        ));
    }
    sb.apply(&yaml);
    let day = "20260502";
    sb.ctl_ok(&["run", "-j", "root", "-d", day, "--down"]);
    sb.wait_status(day, SETTLE, "the leaves to run", |rows| {
        rows.iter().filter(|r| r["state"] == "running").count() == LEAVES
    });

    usurp(&db.url, USURPED_FOR_MS);
    wait_for(SETTLE, "standalone to step down", log, || {
        sb.log().contains("no longer leading").then_some(())
    });
    wait_for(SETTLE, "standalone to lead again", log, || {
        (sb.log().matches("leading (database lease").count() >= 2).then_some(())
    });
    let rows = sb.wait_status(day, SETTLE, "every instance to succeed", |rows| {
        rows.len() == LEAVES + 1 && rows.iter().all(|r| r["state"] == "success")
    });
    for r in &rows {
        assert_eq!(r["try_number"], 1, "one try, never lost: {r:#}\n{}", log());
        let task = r["task"].as_str().unwrap();
        let lines = if task == "root" { 1 } else { 16 };
        let stored = sb.ctl_ok(&["logs", "-j", task, "-d", day]);
        assert_eq!(
            printed(&stored),
            expected_log(task, lines),
            "{task}'s log\n{}",
            log()
        );
    }
    assert!(
        !sb.log().contains("lost ("),
        "no try was declared lost:\n{}",
        log()
    );
}
