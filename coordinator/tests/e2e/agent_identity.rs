//! Per-agent identity: `goflow agent-token`, a coordinator with a broker and no shared secret,
//! and an agent credential of agent B trying to act for agent A (register, heartbeat, claim,
//! finish, log, watch), each refused with PERMISSION_DENIED, recorded, and harmless to A.

use std::path::Path;
use std::time::Duration;

use goflow_coordinator::testing::{TestDatabase, suite_dialect};
use goflow_proto as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::log_service_client::LogServiceClient;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

use crate::sandbox::{Agent, Launch, Redis, Sandbox, parse_array, run_goflow, wait_for};

const SETTLE: Duration = Duration::from_secs(60);
const QUICK: Duration = Duration::from_secs(60);

/// `goflow agent-token ARGS... ` on `database`: its output.
fn agent_token(args: &[&str], database: &str, cwd: &Path) -> std::process::Output {
    let mut all = vec!["agent-token"];
    all.extend_from_slice(args);
    run_goflow(&all, &[("GOFLOW_DATABASE_URL", database)], cwd, QUICK)
}

/// Creates the token of `id` and returns it (alone on stdout).
fn create_token(id: &str, database: &str, cwd: &Path) -> String {
    let out = agent_token(&["create", "--id", id], database, cwd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "agent-token create --id {id}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {stdout:?}");
    assert!(lines[0].starts_with("gfa_") && lines[0].len() == 68, "{stdout:?}");
    lines[0].to_string()
}

/// A request with `token` as its bearer credential.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn register(agent_id: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_id: agent_id.into(),
        host: "intruder-host".into(),
        slots: 1,
        queues: vec!["default".into()],
        version: "e2e".into(),
        running_attempts: vec![],
        incarnation: "e2e-intruder".into(),
    }
}

fn operations(sb: &Sandbox) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["history", "-o", "json"]))
}

#[test]
fn an_agent_token_acts_only_for_its_own_agent() {
    let db = TestDatabase::create_blocking(suite_dialect());
    let database = db.url.clone();
    let redis = Redis::start();
    let scratch = tempfile::tempdir().unwrap();

    // Tokens are made before the coordinator ever started, on its database settings.
    let token_a = create_token("a1", &database, scratch.path());
    let token_b = create_token("b1", &database, scratch.path());
    assert_ne!(token_a, token_b);
    // A second token for a1 is refused, and a1's token still works (checked below).
    let out = agent_token(&["create", "--id", "a1"], &database, scratch.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("has a token already"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no token printed on refusal");
    let out = agent_token(&["create", "--id", "bad id"], &database, scratch.path());
    assert!(!out.status.success(), "a malformed id is refused");
    let out = agent_token(&["list"], &database, scratch.path());
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.contains("a1") && listed.contains("b1"), "{listed}");
    assert!(
        !listed.contains(&token_a[4..]),
        "the list never shows a token: {listed}"
    );

    // A coordinator with a broker and no shared secret starts, and takes agents by token.
    let (database_url, broker) = (database.clone(), redis.url());
    let sb = Sandbox::start_with(|root| Launch {
        args: vec![
            "coordinator".into(),
            "--data-dir".into(),
            root.join("data").into(),
        ],
        env: vec![
            ("GOFLOW_DATABASE_URL".into(), database_url.into()),
            ("GOFLOW_BROKER".into(), broker.into()),
            ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
        ],
        log_file: None,
        own_database: true,
    });
    let token_file = sb.root().join("a1.token");
    std::fs::write(&token_file, format!("{token_a}\n")).unwrap();
    let broker = redis.url();
    let a1 = Agent::start(
        &sb.server_url(),
        "a1",
        2,
        &["--agent-token-file", token_file.to_str().unwrap()],
        &[
            ("GOFLOW_BROKER", broker.as_str()),
            ("GOFLOW_HEARTBEAT_INTERVAL", "1"),
        ],
        &sb.work(),
        &sb.root().join("agent-a1.log"),
    );
    // An agent without a credential is refused (on loopback too) and never listed.
    let mut nobody = Agent::start(
        &sb.server_url(),
        "nobody",
        1,
        &[],
        &[("GOFLOW_BROKER", broker.as_str())],
        &sb.work(),
        &sb.root().join("agent-nobody.log"),
    );
    let status = nobody
        .wait_exit(SETTLE)
        .unwrap_or_else(|| panic!("the agent without a credential still runs\n{}", sb.log_tail(40)));
    assert!(!status.success());
    assert!(nobody.log().contains("per-agent token"), "{}", nobody.log());
    let logs = || format!("coordinator log:\n{}\n\n{}", sb.log_tail(40), a1.log_tail(20));
    wait_for(SETTLE, "agent a1 to register", logs, || {
        let listed = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
        listed
            .iter()
            .any(|a| a["id"] == "a1" && a["state"] == "alive")
            .then_some(listed)
    });

    // A long try on a1, the victim.
    let marker = sb.work().join("victim.done");
    // And two tasks of queues nobody serves yet: they stay queued.
    sb.apply(&format!(
        "tasks:\n  - id: victim\n    command: \"echo victim-start; sleep 8; echo victim-end; touch {}\"\n\
         \x20 - id: gpu_job\n    command: \"echo gpu\"\n    queue: gpu\n\
         \x20 - id: spare_job\n    command: \"echo spare\"\n    queue: spare\n",
        marker.display()
    ));
    sb.ctl_ok(&["run", "-j", "victim", "-d", "20260101"]);
    sb.ctl_ok(&["run", "-j", "gpu_job", "-d", "20260101"]);
    sb.ctl_ok(&["run", "-j", "spare_job", "-d", "20260101"]);
    let row = wait_for(SETTLE, "the victim to run on a1", logs, || {
        let rows = sb.status_json("20260101");
        rows.into_iter()
            .find(|r| r["task"] == "victim" && r["state"] == "running" && r["agent"] == "a1")
    });
    let instance_id = row["id"].as_i64().expect("an instance id");
    let attempt_id = format!("{instance_id}-1");
    let queued_id = |task: &str| {
        let rows = sb.status_json("20260101");
        let row = sb.instance(&rows, task);
        assert_eq!(row["state"], "queued", "{row:#}");
        row["id"].as_i64().expect("an instance id")
    };
    let (gpu_id, spare_id) = (queued_id("gpu_job"), queued_id("spare_job"));
    let dispatch = |instance_id: i64, queue: &str| pb::ReportStartRequest {
        agent_id: String::new(),
        dispatch: Some(pb::Dispatch {
            instance_id,
            try_number: 1,
            epoch: 1,
            queue: queue.into(),
            priority: 0,
        }),
    };

    let url = sb.server_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut agents_api = AgentServiceClient::new(channel.clone());
        let mut logs_api = LogServiceClient::new(channel.clone());
        let denied = |what: &str, result: Result<(), tonic::Status>| match result {
            Err(status) if status.code() == Code::PermissionDenied => {}
            other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
        };

        // b1 may register as itself: it is then listed as b1.
        let mut as_b1 = register("b1");
        as_b1.queues = vec!["default".into(), "spare".into()];
        agents_api
            .register(with_token(as_b1, &token_b))
            .await
            .expect("b1 registers as itself");
        // It claims only dispatches of the queues it serves (however it learned of others).
        denied(
            "claim a gpu dispatch",
            agents_api
                .report_start(with_token(dispatch(gpu_id, "default"), &token_b))
                .await
                .map(drop),
        );
        let answer = agents_api
            .report_start(with_token(dispatch(spare_id, "spare"), &token_b))
            .await
            .expect("a dispatch of b1's own queue is b1's to claim");
        let answer = answer.into_inner();
        assert!(
            answer.granted || !answer.reason.is_empty(),
            "answered, granted or not (epoch): {answer:?}"
        );
        // b1's credential cannot register as a1 (which would declare a1's tries lost).
        denied(
            "register as a1",
            agents_api
                .register(with_token(register("a1"), &token_b))
                .await
                .map(drop),
        );
        denied(
            "heartbeat as a1",
            agents_api
                .heartbeat(with_token(
                    pb::HeartbeatRequest {
                        agent_id: "a1".into(),
                        ..Default::default()
                    },
                    &token_b,
                ))
                .await
                .map(drop),
        );
        for named in ["a1", "b1", ""] {
            denied(
                &format!("finish a1's try naming {named:?}"),
                agents_api
                    .report_finish(with_token(
                        pb::ReportFinishRequest {
                            agent_id: named.into(),
                            attempt_id: attempt_id.clone(),
                            outcome: "success".into(),
                            has_exit_code: true,
                            exit_code: 0,
                            ..Default::default()
                        },
                        &token_b,
                    ))
                    .await
                    .map(drop),
            );
        }
        denied(
            "append to a1's log",
            logs_api
                .append_log(with_token(
                    pb::AppendLogRequest {
                        agent_id: "b1".into(),
                        attempt_id: attempt_id.clone(),
                        offset: 0,
                        data: b"INTRUDER\n".to_vec(),
                    },
                    &token_b,
                ))
                .await
                .map(drop),
        );
        denied(
            "append to a1's log naming a1",
            logs_api
                .append_log(with_token(
                    pb::AppendLogRequest {
                        agent_id: "a1".into(),
                        attempt_id: attempt_id.clone(),
                        offset: 0,
                        data: b"INTRUDER\n".to_vec(),
                    },
                    &token_b,
                ))
                .await
                .map(drop),
        );
        denied(
            "stream into a1's log",
            agents_api
                .stream_logs(with_token(
                    tokio_stream::iter(vec![pb::LogAppend {
                        attempt_id: attempt_id.clone(),
                        data: b"INTRUDER\n".to_vec(),
                        ..Default::default()
                    }]),
                    &token_b,
                ))
                .await
                .map(drop),
        );
        denied(
            "watch a1's kill stream",
            agents_api
                .watch_commands(with_token(
                    pb::WatchCommandsRequest {
                        agent_id: "a1".into(),
                    },
                    &token_b,
                ))
                .await
                .map(drop),
        );
        // Claiming a1's running try again is not granted, and tells no command.
        let claim = agents_api
            .report_start(with_token(
                pb::ReportStartRequest {
                    agent_id: "b1".into(),
                    dispatch: Some(pb::Dispatch {
                        instance_id,
                        try_number: 1,
                        epoch: 1,
                        queue: "default".into(),
                        priority: 0,
                    }),
                },
                &token_b,
            ))
            .await
            .map(tonic::Response::into_inner);
        match claim {
            Ok(answer) => assert!(
                !answer.granted && answer.command.is_empty(),
                "a1's try is not b1's to claim: {answer:?}"
            ),
            Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        }

        // No credential, or a token nobody made: UNAUTHENTICATED.
        for token in [
            "",
            "gfa_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let status = agents_api
                .register(with_token(register("a1"), token))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    });

    // a1's try ran on undisturbed: it succeeded on a1, its log is its own.
    let row = wait_for(SETTLE, "the victim to finish", logs, || {
        sb.status_json("20260101")
            .into_iter()
            .find(|r| r["task"] == "victim" && r["state"] != "running" && r["state"] != "queued")
    });
    assert_eq!(row["state"], "success", "{row:#}\n{}", logs());
    assert_eq!(row["agent"], "a1", "{row:#}");
    assert_eq!(row["try_number"], 1, "one try, never declared lost: {row:#}");
    assert!(marker.exists(), "the command ran to its end");
    let log = sb.ctl_ok(&["logs", "-j", "victim", "-d", "20260101"]);
    assert!(
        log.contains("victim-start") && log.contains("victim-end"),
        "{log}"
    );
    assert!(
        !log.contains("INTRUDER"),
        "b1 wrote nothing into a1's log:\n{log}"
    );

    // The refusals are recorded, as b1's.
    let ops = operations(&sb);
    let refused: Vec<&Value> = ops.iter().filter(|o| o["action"] == "agent-refused").collect();
    assert!(
        refused.iter().all(|o| o["actor"] == "agent:b1") && refused.len() >= 5,
        "refusals recorded as b1's: {ops:#?}"
    );
    // And counted by reason: b1 acting for a1, no credential, a token nobody made.
    let (status, metrics) = crate::observability::get(&sb.ui_url(), "/metrics");
    assert_eq!(status, 200, "{metrics}");
    for reason in ["not_its_own", "no_credential", "unknown_token"] {
        let line = format!("goflow_agent_refusals_total{{reason=\"{reason}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let at_least = if reason == "not_its_own" { 5.0 } else { 1.0 };
        assert!(
            count >= at_least,
            "{line}is {count}, expected at least {at_least}:\n{metrics}"
        );
    }
    for call in [
        "Register",
        "Heartbeat",
        "ReportFinish",
        "AppendLog",
        "StreamLogs",
        "WatchCommands",
    ] {
        assert!(
            refused
                .iter()
                .any(|o| o["client"].as_str().unwrap_or("").contains(call)),
            "{call} refusal recorded: {refused:#?}"
        );
    }
    assert!(
        ops.iter()
            .any(|o| o["action"] == "agent-token-create" && o["target"] == "a1"),
        "token changes are in the operations log: {ops:#?}"
    );
    // Refused agents are never listed; b1 registered as itself is.
    let listed = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
    let ids: Vec<&str> = listed.iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(!ids.contains(&"nobody"), "{listed:#?}");
    assert!(ids.contains(&"a1") && ids.contains(&"b1"), "{listed:#?}");

    // A revoked token is refused (within the coordinator's few seconds of caching).
    let out = agent_token(&["revoke", "b1"], &database, scratch.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = agent_token(&["revoke", "b1"], &database, scratch.path());
    assert!(!out.status.success(), "revoking twice says there is no token");
    let url = sb.server_url();
    wait_for(SETTLE, "b1's revoked token to be refused", logs, || {
        rt.block_on(async {
            let channel = Channel::from_shared(url.clone()).ok()?.connect().await.ok()?;
            let answer = AgentServiceClient::new(channel)
                .register(with_token(register("b1"), &token_b))
                .await;
            matches!(answer, Err(status) if status.code() == Code::Unauthenticated).then_some(())
        })
    });
    let ops = operations(&sb);
    assert!(
        ops.iter()
            .any(|o| o["action"] == "agent-token-revoke" && o["target"] == "b1"),
        "{ops:#?}"
    );
    drop(a1);
}

/// Standalone's embedded agent needs nothing, and nobody else may act as an agent there, on
/// loopback included. `goflow user` changes are in the operations log.
#[test]
fn standalone_refuses_agents_without_a_credential_and_records_user_changes() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: hello\n    command: \"echo hello\"\n");
    sb.ctl_ok(&["run", "-j", "hello", "-d", "20260101"]);
    let rows = sb.wait_status("20260101", SETTLE, "hello to succeed", |rows| {
        rows.iter()
            .any(|r| r["task"] == "hello" && r["state"] == "success")
    });
    assert_eq!(sb.instance(&rows, "hello")["state"], "success", "{rows:#?}");

    let url = sb.server_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = AgentServiceClient::new(channel.clone())
            .register(with_token(register("standalone"), ""))
            .await
            .expect_err("an agent without a credential is refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = LogServiceClient::new(channel)
            .append_log(with_token(
                pb::AppendLogRequest {
                    agent_id: "standalone".into(),
                    attempt_id: "1-1".into(),
                    offset: 0,
                    data: b"x".to_vec(),
                },
                "not-a-secret",
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    });
    let listed = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
    assert!(listed.iter().all(|a| a["host"] != "intruder-host"), "{listed:#?}");

    let out = std::process::Command::new(crate::sandbox::goflow_bin())
        .args(["user", "add", "ops-admin", "--role", "admin", "--password-stdin"])
        .args(sb.database_args())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"long enough password\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ops = operations(&sb);
    assert!(
        ops.iter().any(|o| o["action"] == "user-add"
            && o["target"] == "ops-admin"
            && o["actor"].as_str().is_some_and(|a| a.starts_with("local:"))),
        "{ops:#?}"
    );
}
