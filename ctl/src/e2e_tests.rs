//! The commands against an in-process fake ControlService: real gRPC, real metadata.

use goflow_proto::{control_service_client::ControlServiceClient, *};

use crate::{commands, connect};

mod auth;
mod fake;

use fake::*;

fn run_args(args: &[&str]) -> commands::run::RunArgs {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    match crate::tests::parse(&all).unwrap().command {
        crate::Command::Run(args) => args,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn run_wait_reports_failed_and_blocked_and_sends_metadata() {
    let fake = Fake::default();
    let server = serve(fake.clone()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let mut out = Vec::new();
    let args = run_args(&["-j", "extract", "-d", "2026-01-01", "--down", "--wait"]);
    let err = commands::run::run(&mut client, &args, &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        crate::error_message(&err, &server),
        "3 of 3 instances did not succeed (1 failed, 2 blocked): extract 20260101 failed; \
         load 20260101 blocked; report 20260101 blocked (goflowctl status -d 20260101 shows them)"
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("queued\n3 instances:\nID   TASK      ETL_DAY\n1    extract   20260101\n"),
        "{text}"
    );
    assert!(
        text.contains("waiting for 3 instances to finish...\nTASK"),
        "{text}"
    );
    assert!(text.contains("extract   20260101   failed"), "{text}");
    assert_eq!(*fake.polls.lock().unwrap(), 3, "polls until nothing can change");
    let seen = fake.seen.lock().unwrap();
    let expected_actor = crate::actor_name(std::env::var("USER").ok());
    assert!(
        seen.iter()
            .all(|(c, a)| *c == format!("goflowctl/{}", crate::VERSION) && *a == expected_actor),
        "{seen:?}"
    );
}

#[tokio::test]
async fn server_errors_are_printed_in_words() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let err = commands::run::run(
        &mut client,
        &run_args(&["-j", "x", "-d", "20260101"]),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        crate::error_message(&err, &server),
        r#"not found: unknown task "x""#
    );
}

#[tokio::test]
async fn logs_are_written_raw() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let args = match crate::tests::parse(&["logs", "-j", "a", "-d", "20260101"])
        .unwrap()
        .command
    {
        crate::Command::Logs(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::logs::run(&mut client, &args, &mut out).await.unwrap();
    assert_eq!(out, b"hello \xffworld\n");
}

/// A follow cut by a step-down reconnects and resumes at its byte offset: nothing twice.
#[tokio::test]
async fn a_cut_follow_resumes_where_it_was() {
    let fake = Fake::default();
    let server = serve(fake.clone()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let args = match crate::tests::parse(&["logs", "-j", "a", "-d", "20260101", "-f"])
        .unwrap()
        .command
    {
        crate::Command::Logs(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::logs::run(&mut client, &args, &mut out).await.unwrap();
    assert_eq!(out, b"hello \xffworld\n");
    let tails: Vec<_> = fake
        .tails
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.try_number, r.offset))
        .collect();
    // Cut, resumed at byte 6 of try 1, then one look for a later try.
    assert_eq!(tails, [(0, 0), (1, 6), (0, 0)]);
}

#[tokio::test]
async fn version_prints_both() {
    let server = serve(Fake::default()).await;
    let mut out = Vec::new();
    commands::version::run(connect(&server, meta()).await, &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "client: goflowctl {}\nserver: goflow 9.9.9 (standalone)\n",
            crate::VERSION
        )
    );
}

fn coordinators_args(args: &[&str]) -> commands::coordinators::CoordinatorsArgs {
    let mut all = vec!["coordinators"];
    all.extend_from_slice(args);
    match crate::tests::parse(&all).unwrap().command {
        crate::Command::Coordinators(args) => args,
        _ => unreachable!(),
    }
}

/// `goflowctl coordinators` through `--server A,B`: table and JSON.
async fn list_coordinators(servers: &str) -> (String, serde_json::Value) {
    let mut client = connect(servers, meta()).await.unwrap();
    let mut table = Vec::new();
    commands::coordinators::run(&mut client, &coordinators_args(&[]), &mut table)
        .await
        .unwrap();
    let mut json = Vec::new();
    commands::coordinators::run(&mut client, &coordinators_args(&["-o", "json"]), &mut json)
        .await
        .unwrap();
    (
        String::from_utf8(table).unwrap(),
        serde_json::from_slice(&json).unwrap(),
    )
}

#[tokio::test]
async fn coordinators_are_listed_past_a_dead_coordinator() {
    let dead = closed_port().await;
    let live = serve(Fake::named("live:1")).await;
    let (table, json) = list_coordinators(&format!("{dead},{live}")).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ADDRESS", "LEADER", "TOKEN", "LAST_SEEN", "ID", "VERSION"]
    );
    assert!(
        lines[1].starts_with("http://10.0.0.1:7070   yes      42      2s ago      live:1 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("http://10.0.0.2:7070                    1s ago      other:2 "),
        "{table}"
    );
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["address"], "http://10.0.0.1:7070");
    assert_eq!(all[0]["leader"], true);
    assert_eq!(all[0]["token"], 42);
    assert_eq!(all[0]["id"], "live:1");
    assert!(all[0]["last_seen_at"].as_str().unwrap().ends_with('Z'), "{json}");
    assert!(all[0]["started_at"].is_string(), "{json}");
    assert_eq!(all[1]["leader"], false);
}

#[tokio::test]
async fn a_coordinator_answering_unavailable_is_passed_over() {
    let refusing = Fake {
        unavailable: true,
        ..Fake::named("refusing:1")
    };
    let first = serve(refusing.clone()).await;
    let second = serve(Fake::named("live:2")).await;
    let (table, _) = list_coordinators(&format!("{first}, {second}")).await;
    assert!(table.contains(" live:2 "), "{table}");
    assert!(*refusing.refused.lock().unwrap() >= 1, "the first was not asked");
}

#[tokio::test]
async fn a_call_refused_with_unavailable_goes_to_the_next_coordinator() {
    // The first answers the probe, then has no leader when the command's call comes.
    let leaderless = Fake {
        no_leader: true,
        ..Fake::named("leaderless:1")
    };
    let first = serve(leaderless.clone()).await;
    let second = serve(Fake::named("live:2")).await;
    let (table, json) = list_coordinators(&format!("{first},{second}")).await;
    assert!(table.contains(" live:2 "), "{table}");
    assert_eq!(json[0]["id"], "live:2");
    // Once the second answered, later calls start there.
    assert_eq!(*leaderless.refused.lock().unwrap(), 1);
}

/// One coordinator listed (a standalone, or a single URL) that steps down and takes over again:
/// the call waits the takeover out as it would with several listed, instead of failing.
#[tokio::test]
async fn a_single_coordinator_s_takeover_is_waited_out() {
    let taking_over = Fake {
        leaderless_calls: 2,
        ..Fake::named("comeback:1")
    };
    let server = serve(taking_over.clone()).await;
    let (table, _) = list_coordinators(&server).await;
    assert!(table.contains(" comeback:1 "), "{table}");
    assert_eq!(
        *taking_over.refused.lock().unwrap(),
        2,
        "refused twice, then served"
    );
}

/// A standby that answers UNAVAILABLE (it cannot reach the leader) says more than a dead
/// coordinator's connect error: after a round of both, the standby's answer is the error.
#[tokio::test]
async fn a_standby_answer_wins_over_a_dead_coordinator_connect_error() {
    let leaderless = Fake {
        no_leader: true,
        ..Fake::named("standby:1")
    };
    let standby = serve(leaderless.clone()).await;
    let dead = closed_port().await;
    let options = crate::failover::Options {
        streaming_requests: vec![],
        // One round, then the answer.
        unavailable_patience: std::time::Duration::ZERO,
    };
    for urls in [[standby.clone(), dead.clone()], [dead.clone(), standby.clone()]] {
        let failover = crate::failover::Failover::lazy(&urls, options.clone(), |e| e).unwrap();
        let mut client = ControlServiceClient::new(failover);
        let status = client
            .list_coordinators(ListCoordinatorsRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{urls:?}: {status:?}");
        assert_eq!(status.message(), "no leader", "{urls:?}: {status:?}");
    }
    assert_eq!(*leaderless.refused.lock().unwrap(), 2, "asked once per round");
}

#[tokio::test]
async fn none_answering_names_them_all() {
    let (a, b) = (closed_port().await, closed_port().await);
    let err = connect(&format!("{a},{b}"), meta())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot reach goflow at {a}, {b}: {a}: ")),
        "{err}"
    );
    assert!(err.contains(&format!("; {b}: ")), "{err}");
    assert!(
        err.ends_with("(is goflow running? set --server or GOFLOW_SERVER)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication: login, the stored session, tokens, and what a refused call says.
// ---------------------------------------------------------------------------------------------

/// `goflowctl alerts -j TASK -o json` asks ListAlerts for that task and prints its alerts.
#[tokio::test]
async fn alerts_are_listed_for_a_task() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let args = match crate::tests::parse(&["alerts", "-j", "report", "-o", "json"])
        .unwrap()
        .command
    {
        crate::Command::Alerts(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::alerts::run(&mut client, &args, &mut out).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json[0]["task"], "report", "{json}");
    assert_eq!(json[0]["kind"], "failed", "{json}");
    assert_eq!(json[0]["delivery"], "sent", "{json}");
}
