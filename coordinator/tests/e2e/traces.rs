//! Traces (issue 11): with OTEL_EXPORTER_OTLP_ENDPOINT set, one `goflowctl run` is one trace
//! across goflowctl, the coordinator (its call, the engine's run, the dispatch, the claim) and
//! the agent's claim and run of the command, exported over OTLP to a receiver the test runs:
//! OTLP/HTTP protobuf against a standalone, OTLP/gRPC against a coordinator and a separate
//! agent through Redis. Without the variables nothing is exported.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

use crate::sandbox::{Agent, Launch, Redis, Sandbox};

/// How long the spans of a finished run may take to arrive (the servers send every 200 ms).
const ARRIVAL: Duration = Duration::from_secs(30);

/// One span as received.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: HashMap<String, String>,
}

impl Received {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// What an OTLP receiver got.
#[derive(Default)]
struct Collector {
    spans: Mutex<Vec<Received>>,
    requests: AtomicUsize,
}

impl Collector {
    fn add(&self, request: ExportTraceServiceRequest) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            let service = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received, or [`ARRIVAL`] passes; returns them.
    fn wait_for(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered 200 with an empty `ExportTraceServiceResponse`.
fn start_http_receiver() -> (u16, Arc<Collector>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP/HTTP receiver");
    let port = listener.local_addr().unwrap().port();
    let collector = Arc::new(Collector::default());
    let shared = collector.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let collector = shared.clone();
            thread::spawn(move || {
                let _ = serve_http(stream, &collector);
            });
        }
    });
    (port, collector)
}

/// HTTP/1.1 requests on one connection (kept alive) until the client closes it.
fn serve_http(stream: TcpStream, collector: &Collector) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let status = match (path.as_str(), ExportTraceServiceRequest::decode(body.as_slice())) {
            ("/v1/traces", Ok(request)) => {
                collector.add(request);
                "200 OK"
            }
            ("/v1/traces", Err(_)) => "400 Bad Request",
            _ => "404 Not Found",
        };
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )?;
        writer.write_all(&answer)?;
        writer.flush()?;
    }
}

struct GrpcReceiver(Arc<Collector>);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver (the TraceService) on a free port, on a runtime of its own.
fn start_grpc_receiver() -> (u16, Arc<Collector>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP/gRPC receiver");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let collector = Arc::new(Collector::default());
    let service = TraceServiceServer::new(GrpcReceiver(collector.clone()));
    thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the receiver");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("the OTLP/gRPC receiver");
        });
    });
    (port, collector)
}

/// The variables that point a process at the receiver.
fn otel_env(port: u16, protocol: &str) -> Vec<(String, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        // Servers send every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ]
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn dump(spans: &[Received]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} trace={} span={} parent={} {:?}",
                s.service, s.name, s.trace_id, s.span_id, s.parent_id, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The trace of the one `goflowctl run` span; panics (listing what arrived) when there is not
/// exactly one.
fn run_trace(spans: &[Received]) -> (Received, Vec<Received>) {
    let roots: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == "goflowctl" && s.name == "goflowctl run")
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one `goflowctl run` span expected; received:\n{}",
        dump(spans)
    );
    let root = roots[0].clone();
    assert!(
        root.parent_id.is_empty(),
        "goflowctl's span starts the trace:\n{}",
        dump(spans)
    );
    let trace = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    (root, trace)
}

fn find<'a>(trace: &'a [Received], service: &str, name: &str, task: Option<&str>) -> Option<&'a Received> {
    trace
        .iter()
        .find(|s| s.service == service && s.name == name && task.is_none_or(|t| s.attr("goflow.task") == t))
}

fn must<'a>(
    trace: &'a [Received],
    all: &[Received],
    service: &str,
    name: &str,
    task: Option<&str>,
) -> &'a Received {
    find(trace, service, name, task).unwrap_or_else(|| {
        panic!(
            "no {service} span {name:?}{} in the run's trace; received:\n{}",
            task.map(|t| format!(" of {t}")).unwrap_or_default(),
            dump(all)
        )
    })
}

const DAG: &str = r#"
tasks:
  - id: tr_a
    command: "echo traced a"
  - id: tr_b
    command: "echo traced b"
    depends_on: [tr_a]
"#;

/// Standalone over OTLP/HTTP protobuf: goflowctl's command, the coordinator's call, the
/// engine's run, the dispatches and claims, the agent's runs of tr_a and of its downstream
/// tr_b (released by tr_a's finish report) are one trace, parent by parent.
#[test]
fn one_run_is_one_trace_over_otlp_http() {
    let (port, collector) = start_http_receiver();
    let env = otel_env(port, "http/protobuf");
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        ..Launch::default()
    });
    sb.apply(DAG);
    let out = sb.ctl_env(
        &["run", "-j", "tr_a", "-d", "2026-02-01", "--down", "--wait"],
        &borrowed(&env),
    );
    assert!(out.status.success(), "{}", sb.describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        sb.describe(&out)
    );

    let complete = |spans: &[Received]| {
        spans.iter().filter(|s| s.name == "agent.run").count() >= 2
            && spans
                .iter()
                .any(|s| s.service == "goflowctl" && s.name == "goflowctl run")
            && spans
                .iter()
                .filter(|s| s.name == "goflow.v1.AgentService/ReportFinish")
                .count()
                >= 2
            && spans.iter().any(|s| s.name == "engine.run")
            && spans.iter().filter(|s| s.name == "claim").count() >= 2
    };
    let spans = collector.wait_for(complete);
    let (root, trace) = run_trace(&spans);
    let standalone = "goflow-standalone";
    // goflowctl asks for a preview first, then for the run: two calls, one of them ran.
    let engine = must(&trace, &spans, standalone, "engine.run", Some("tr_a"));
    let call = trace
        .iter()
        .find(|s| s.span_id == engine.parent_id)
        .unwrap_or_else(|| panic!("the engine's run has its call as parent:\n{}", dump(&spans)));
    assert_eq!(call.name, "goflow.v1.ControlService/Run", "{}", dump(&spans));
    assert_eq!(call.service, standalone, "{}", dump(&spans));
    assert_eq!(
        call.parent_id,
        root.span_id,
        "the coordinator's call is a child of goflowctl's:\n{}",
        dump(&spans)
    );
    assert_eq!(engine.attr("goflow.etl_day"), "20260201", "{}", dump(&spans));

    for task in ["tr_a", "tr_b"] {
        let run = must(&trace, &spans, standalone, "agent.run", Some(task));
        assert_eq!(run.attr("goflow.etl_day"), "20260201", "{}", dump(&spans));
        assert_eq!(run.attr("goflow.outcome"), "success", "{}", dump(&spans));
        let claim = must(&trace, &spans, standalone, "claim", Some(task));
        let dispatch = trace
            .iter()
            .find(|s| s.name == "dispatch" && s.span_id == run.parent_id)
            .unwrap_or_else(|| panic!("the run of {task} is a child of its dispatch:\n{}", dump(&spans)));
        assert_eq!(claim.parent_id, dispatch.span_id, "{}", dump(&spans));
        // tr_a is claimed by the agent; tr_b is handed off with tr_a's finish (issue 21),
        // claimed in its transaction: no claim of the agent's own.
        let claimed_by_agent = trace
            .iter()
            .any(|s| s.name == "agent.claim" && s.parent_id == dispatch.span_id);
        let handed_off = task == "tr_b";
        assert_eq!(claimed_by_agent, !handed_off, "{task}:\n{}", dump(&spans));
        assert_eq!(
            claim.attr("goflow.handoff"),
            if handed_off { "true" } else { "" },
            "{task}:\n{}",
            dump(&spans)
        );
        assert!(
            trace
                .iter()
                .any(|s| s.name == "goflow.v1.AgentService/ReportFinish" && s.parent_id == run.span_id),
            "the finish report of {task} continues its run:\n{}",
            dump(&spans)
        );
    }
    // tr_a was queued by the run; tr_b by tr_a's finish.
    let dispatch_of = |task: &str| {
        let run = find(&trace, standalone, "agent.run", Some(task)).unwrap();
        trace.iter().find(|s| s.span_id == run.parent_id).unwrap().clone()
    };
    assert_eq!(dispatch_of("tr_a").parent_id, engine.span_id, "{}", dump(&spans));
    let finish_a = trace
        .iter()
        .find(|s| {
            s.name == "goflow.v1.AgentService/ReportFinish"
                && s.parent_id
                    == find(&trace, standalone, "agent.run", Some("tr_a"))
                        .unwrap()
                        .span_id
        })
        .unwrap();
    assert_eq!(
        dispatch_of("tr_b").parent_id,
        finish_a.span_id,
        "{}",
        dump(&spans)
    );

    // Heartbeats and the startup probes (goflowctl without OTEL_*) exported nothing.
    assert!(
        !spans
            .iter()
            .any(|s| s.name.contains("Heartbeat") || s.name.contains("grpc.health")),
        "{}",
        dump(&spans)
    );
    assert!(
        !spans.iter().any(|s| s.name == "goflowctl tasks"),
        "goflowctl without OTEL_* exports nothing:\n{}",
        dump(&spans)
    );
    // With them, every command is traced, and `OTEL_SERVICE_NAME` wins.
    let mut named = borrowed(&env);
    named.push(("OTEL_SERVICE_NAME", "nightly-cron"));
    let out = sb.ctl_env(&["tasks"], &named);
    assert!(out.status.success(), "{}", sb.describe(&out));
    let spans = collector.wait_for(|spans| spans.iter().any(|s| s.name == "goflowctl tasks"));
    let tasks = spans
        .iter()
        .find(|s| s.name == "goflowctl tasks")
        .unwrap_or_else(|| panic!("no `goflowctl tasks` span:\n{}", dump(&spans)));
    assert_eq!(tasks.service, "nightly-cron", "{}", dump(&spans));
}

/// A coordinator and a separate agent through Redis, over OTLP/gRPC: goflowctl's, the
/// coordinator's and the agent's spans (by their `service.name`) share the run's trace.
#[test]
fn coordinator_and_agent_spans_share_the_trace_over_otlp_grpc() {
    const SECRET: &str = "e2e-traces-secret-0123456789";
    let (port, collector) = start_grpc_receiver();
    let env = otel_env(port, "grpc");
    let redis = Redis::start();
    let broker = redis.url();
    let sb = Sandbox::start_with(|root| {
        let mut launch_env: Vec<(std::ffi::OsString, std::ffi::OsString)> =
            env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        launch_env.push(("GOFLOW_BROKER".into(), broker.clone().into()));
        launch_env.push(("GOFLOW_AGENT_SECRET".into(), SECRET.into()));
        launch_env.push(("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()));
        Launch {
            args: vec![
                "coordinator".into(),
                "--data-dir".into(),
                root.join("data").into(),
            ],
            env: launch_env,
            ..Launch::default()
        }
    });
    let mut agent_env = borrowed(&env);
    agent_env.push(("GOFLOW_BROKER", broker.as_str()));
    agent_env.push(("GOFLOW_AGENT_SECRET", SECRET));
    let log = sb.root().join("agent-traced.log");
    let agent = Agent::start(&sb.server_url(), "traced", 1, &[], &agent_env, &sb.work(), &log);
    sb.apply(DAG);
    let out = sb.ctl_env(
        &["run", "-j", "tr_a", "-d", "2026-02-02", "--wait"],
        &borrowed(&env),
    );
    assert!(
        out.status.success(),
        "{}\nagent log:\n{}",
        sb.describe(&out),
        agent.log()
    );

    // Each process exports on its own schedule: wait for every span the checks below need.
    let spans = collector.wait_for(|spans| {
        let has = |service: &str, name: &str| spans.iter().any(|s| s.service == service && s.name == name);
        has("goflow-agent", "agent.run")
            && has("goflow-agent", "agent.claim")
            && spans.iter().any(|s| s.service == "goflowctl")
            && has("goflow-coordinator", "goflow.v1.ControlService/Run")
            && has("goflow-coordinator", "engine.run")
            && has("goflow-coordinator", "dispatch")
            && has("goflow-coordinator", "claim")
    });
    let (root, trace) = run_trace(&spans);
    let call = must(
        &trace,
        &spans,
        "goflow-coordinator",
        "goflow.v1.ControlService/Run",
        None,
    );
    assert_eq!(call.parent_id, root.span_id, "{}", dump(&spans));
    must(&trace, &spans, "goflow-coordinator", "engine.run", Some("tr_a"));
    must(&trace, &spans, "goflow-coordinator", "dispatch", None);
    must(&trace, &spans, "goflow-coordinator", "claim", Some("tr_a"));
    must(&trace, &spans, "goflow-agent", "agent.claim", None);
    let run = must(&trace, &spans, "goflow-agent", "agent.run", Some("tr_a"));
    assert_eq!(run.attr("goflow.etl_day"), "20260202", "{}", dump(&spans));
    assert_eq!(run.attr("goflow.agent"), "traced", "{}", dump(&spans));
    drop(agent);
}
