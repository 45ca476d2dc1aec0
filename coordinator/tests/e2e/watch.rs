//! The change stream (issue 21): `goflowctl run --wait` follows `WatchInstances` to the final
//! states, with the right exit code, and ends cleanly when the server stops under it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::observability::get;
use crate::sandbox::{CTL_TIMEOUT, Sandbox, clean_env, goflow_bin, is_alive, state_of, wait_for};

const DAY: &str = "20260301";

/// Success and failure: the final table, the exit code, the blocked downstream named; and the
/// wait went through the change stream (counted in the coordinator's metrics), not a poll.
#[test]
fn run_wait_follows_the_change_stream_to_success_and_failure() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: w_a
    command: "true"
  - id: w_b
    command: "sleep 1"
    depends_on: [w_a]
  - id: w_c
    command: "true"
    depends_on: [w_b]
  - id: f_a
    command: "exit 3"
    retries: 0
  - id: f_b
    command: "true"
    depends_on: [f_a]
"#,
    );
    let out = sb.ctl_ok(&["run", "-j", "w_a", "-d", DAY, "--down", "--wait"]);
    assert!(out.contains("waiting for 3 instances to finish..."), "{out}");
    for task in ["w_a", "w_b", "w_c"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(task))
            .unwrap_or_else(|| panic!("no line of {task} in the final table:\n{out}"));
        assert!(line.contains("success"), "{line}\n{out}");
    }
    let rows = sb.status_json(DAY);
    for task in ["w_a", "w_b", "w_c"] {
        assert_eq!(state_of(&rows, task), Some("success"), "{rows:#?}");
    }

    let failed = sb.ctl(&["run", "-j", "f_a", "-d", DAY, "--down", "--wait"]);
    assert_eq!(failed.status.code(), Some(1), "{}", sb.describe(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("2 of 2 instances did not succeed (1 failed, 1 blocked): f_a 20260301 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("f_b 20260301 blocked"), "{stderr}");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(stdout.contains("failed"), "the final table shows it: {stdout}");

    let (status, metrics) = get(&sb.ui_url(), "/metrics");
    assert_eq!(status, 200);
    let watched = metrics
        .lines()
        .any(|l| l.starts_with("goflow_grpc_requests_total{") && l.contains("method=\"WatchInstances\""));
    assert!(watched, "run --wait did not watch the change stream:\n{metrics}");
}

/// A refused watch names the problem as the call's status.
#[test]
fn a_bad_watch_is_refused_in_words() {
    use goflow_proto::control_service_client::ControlServiceClient;
    let sb = Sandbox::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = ControlServiceClient::connect(sb.server_url()).await.unwrap();
        let refused = |ids: Vec<i64>, task: &str| goflow_proto::WatchInstancesRequest {
            ids,
            task: task.into(),
            ..Default::default()
        };
        let status = client.watch_instances(refused(vec![], "")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "give the ids of the instances to watch, or a task and/or an etl_day"
        );
        let status = client.watch_instances(refused(vec![-4], "")).await.unwrap_err();
        assert_eq!(status.message(), "ids: -4 is not an instance id");
        // Ids that do not exist are answered as gone, not refused.
        let mut stream = client
            .watch_instances(refused(vec![987_654], ""))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(first.initial && first.instances.is_empty(), "{first:?}");
        assert_eq!(first.gone, [987_654]);
    });
}

/// The server stops while `run --wait` follows a try: the wait ends with an error saying so
/// (exit 1), whether the stream was ended by a graceful stop or cut by a SIGKILL.
#[test]
fn a_wait_ends_cleanly_when_the_server_stops() {
    for graceful in [true, false] {
        let mut sb = Sandbox::start();
        // A graceful stop lets the running try finish and starts nothing new, so the
        // downstream never runs: only the stream's end can end the wait.
        sb.apply(
            r#"
tasks:
  - id: s_a
    command: "sleep 2"
  - id: s_b
    command: "true"
    depends_on: [s_a]
"#,
        );
        let mut waiting = spawn_ctl(&sb, &["run", "-j", "s_a", "-d", DAY, "--down", "--wait"]);
        wait_for(
            Duration::from_secs(60),
            "s_a running",
            || sb.log_tail(30),
            || (state_of(&sb.status_json(DAY), "s_a") == Some("running")).then_some(()),
        );
        let pid = sb.pid().expect("the standalone runs");
        if graceful {
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            wait_for(
                Duration::from_secs(60),
                "the standalone to stop",
                || sb.log_tail(30),
                || (!is_alive(pid)).then_some(()),
            );
        } else {
            sb.kill9();
        }
        let started = Instant::now();
        let status = loop {
            if let Some(status) = waiting.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > CTL_TIMEOUT {
                let _ = waiting.kill();
                panic!("run --wait still waits {CTL_TIMEOUT:?} after the server stopped");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = waiting.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(1), "graceful {graceful}: {stderr}");
        assert!(
            stderr.contains("the change stream of the instances broke off"),
            "graceful {graceful}: {stderr}"
        );
    }
}

fn spawn_ctl(sb: &Sandbox, args: &[&str]) -> Child {
    let ctl = goflow_bin().parent().unwrap().join("goflowctl");
    clean_env(&mut Command::new(ctl))
        .arg("--server")
        .arg(sb.server_url())
        .args(args)
        .current_dir(sb.work())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("goflowctl starts")
}
