//! Metrics and health (issue 11): `/metrics` parses as Prometheus text and its counters move
//! as a DAG runs; `/healthz` and `/readyz` answer on the standalone's HTTP listener.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use crate::sandbox::Sandbox;

/// `http://127.0.0.1:PORT` of the standalone's web UI, as its start line says.
pub(crate) fn web_url(sb: &Sandbox) -> String {
    let log = sb.log();
    let start = log
        .find("web UI http://")
        .unwrap_or_else(|| panic!("no web UI address in the log:\n{log}"))
        + "web UI ".len();
    log[start..].split_whitespace().next().unwrap().to_string()
}

/// A plain HTTP/1.1 GET: (status, body).
pub(crate) fn get(base: &str, path: &str) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The scrape, parsed by a Prometheus text parser.
pub(crate) fn scrape(base: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(base, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

fn value(sample: &prometheus_parse::Sample) -> f64 {
    use prometheus_parse::Value;
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => 0.0,
    }
}

/// The sum of `metric`'s samples whose labels include all of `labels`.
pub(crate) fn sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

#[test]
fn metrics_parse_and_move_as_a_dag_runs_and_health_answers() {
    let sb = Sandbox::start();
    let web = web_url(&sb);

    assert_eq!(get(&web, "/healthz").0, 200);
    let (status, body) = get(&web, "/readyz");
    assert_eq!(
        status, 200,
        "a standalone that answers goflowctl is ready: {body}"
    );

    let before = scrape(&web);
    let success =
        |s: &prometheus_parse::Scrape| sum(s, "goflow_tries_finished_total", &[("outcome", "success")]);
    let started = |s: &prometheus_parse::Scrape| sum(s, "goflow_tries_started_total", &[]);
    let (success_before, started_before) = (success(&before), started(&before));

    sb.apply(
        r#"
tasks:
  - id: obs_a
    command: "echo extract"
  - id: obs_b
    command: "echo transform"
    depends_on: [obs_a]
  - id: obs_c
    command: "echo load"
    depends_on: [obs_b]
"#,
    );
    sb.ctl_ok(&["run", "-j", "obs_a", "-d", "2026-03-14", "--down", "--wait"]);

    let after = scrape(&web);
    assert_eq!(success(&after) - success_before, 3.0, "one success per task");
    assert_eq!(started(&after) - started_before, 3.0, "one try started per task");
    assert!(
        sum(&after, "goflow_log_bytes_ingested_total", &[]) > 0.0,
        "the echoes' output was stored"
    );
    assert!(
        sum(
            &after,
            "goflow_grpc_requests_total",
            &[("method", "ReportFinish"), ("code", "OK")]
        ) >= 3.0,
        "every finish report is counted by method and code"
    );
    // The embedded agent claims and reports in-process, never over gRPC. It claims obs_a
    // alone: obs_b and obs_c are handed off with their upstream's finish (issue 21).
    for (method, calls) in [("ReportStart", 1.0), ("ReportFinish", 3.0)] {
        let over = |transport| {
            sum(
                &after,
                "goflow_grpc_requests_total",
                &[("method", method), ("transport", transport)],
            )
        };
        assert!(over("in_process") >= calls, "{method} in-process");
        assert_eq!(over("grpc"), 0.0, "{method} over gRPC");
    }
    assert!(sum(&after, "goflow_dispatch_latency_seconds", &[("queue", "default")]) >= 3.0);
    assert!(
        sum(&after, "goflow_release_to_start_seconds", &[("queue", "default")]) >= 2.0,
        "b and c were released by their upstream"
    );
    assert_eq!(sum(&after, "goflow_leader", &[]), 1.0, "the standalone leads");

    // Low cardinality: no data date, instance or try in any label.
    let mut names: HashMap<&str, usize> = HashMap::new();
    for sample in &after.samples {
        assert!(sample.metric.starts_with("goflow_"), "{}", sample.metric);
        *names.entry(sample.metric.as_str()).or_default() += 1;
        for (key, label) in sample.labels.iter() {
            assert!(
                ![
                    "etl_day",
                    "instance",
                    "try",
                    "try_number",
                    "attempt",
                    "attempt_id"
                ]
                .contains(&key.as_str()),
                "{} has a label {key}",
                sample.metric
            );
            assert!(
                !label.contains("2026-03-14") && !label.contains("20260314"),
                "{} carries the data date in {key}={label}",
                sample.metric
            );
        }
    }
    assert!(
        names.contains_key("goflow_grpc_request_duration_seconds"),
        "{names:?}"
    );
}
