//! The agent against a fake coordinator over real gRPC: registration (with the coordinator
//! starting late), claims, logs stored before the finish report, kills from both paths and
//! shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{AgentConfig, DispatchQueue, MemoryQueue, run_agent};
use goflow_core::Dispatch;
use goflow_proto::agent_service_server::{AgentService, AgentServiceServer};
use goflow_proto::log_service_server::{LogService, LogServiceServer};
use goflow_proto::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) registers: Vec<RegisterRequest>,
    pub(crate) heartbeats: Vec<HeartbeatRequest>,
    /// instance id -> (granted, command)
    pub(crate) claims: HashMap<i64, (bool, String)>,
    pub(crate) logs: HashMap<String, Vec<u8>>,
    /// Each finish with the log stored for its try when it arrived.
    pub(crate) finishes: Vec<(ReportFinishRequest, String)>,
    pub(crate) kill_on_heartbeat: Vec<String>,
    pub(crate) commands: Vec<mpsc::Sender<Result<AgentCommand, Status>>>,
    /// Every call is refused with UNAVAILABLE (a coordinator without a leader, or going away).
    pub(crate) unavailable: bool,
    /// Heartbeats of an agent that has not registered here are answered with `reregister`.
    pub(crate) reregister_unknown: bool,
    /// How many calls were refused.
    pub(crate) refused: usize,
    /// How many claims (ReportStart) arrived, granted or not.
    pub(crate) starts: usize,
    /// The `authorization` metadata of each claim and finish report.
    pub(crate) authorizations: Vec<String>,
    /// How long a claim's answer takes (a coordinator paused after granting it).
    pub(crate) claim_delay: Duration,
    /// Every n-th AppendLog (0: none) is stored but answered with an error, as when the
    /// answer is lost on the way: the agent must resend without duplicating anything.
    pub(crate) lose_log_answers_every: usize,
    pub(crate) appends: usize,
    /// AppendLog answers only once this file exists (a coordinator too slow to take output).
    pub(crate) logs_wait_for: Option<std::path::PathBuf>,
    /// The WorkerTimeOut told at registration (0: unknown, the agent never abandons tries).
    pub(crate) worker_timeout_ms: i64,
    /// Finished try -> the instance its finish hands off (issue 21), when the agent asks.
    pub(crate) hand_offs: HashMap<String, i64>,
}

#[derive(Clone, Default)]
pub(crate) struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    fn gate(&self) -> Result<(), Status> {
        self.with(|s| {
            if s.unavailable {
                s.refused += 1;
                Err(Status::unavailable("no leader"))
            } else {
                Ok(())
            }
        })
    }

    pub(crate) async fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&mut FakeState) -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = self.with(&mut f) {
                return found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn note_authorization<T>(&self, request: &Request<T>) {
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let value = value.unwrap_or_default().to_string();
        self.with(|s| s.authorizations.push(value));
    }

    /// What a claim of instance `id` is answered (`claims`; not granted if not there).
    fn claim_answer(&self, id: i64) -> ReportStartResponse {
        let (granted, command) = self.with(|s| s.claims.get(&id).cloned()).unwrap_or_default();
        ReportStartResponse {
            granted,
            reason: if granted { String::new() } else { "stale".into() },
            attempt_id: format!("a{id}"),
            command,
            env: HashMap::from([("GOFLOW_ETL_DAY".into(), "20261124".into())]),
            timeout_ms: 0,
            task: "t".into(),
            etl_day: "20261124".into(),
            traceparent: String::new(),
        }
    }

    pub(crate) async fn finish_of(&self, attempt_id: &str) -> (ReportFinishRequest, String) {
        self.wait_for(&format!("the finish of {attempt_id}"), |s| {
            s.finishes
                .iter()
                .find(|(f, _)| f.attempt_id == attempt_id)
                .cloned()
        })
        .await
    }
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.gate()?;
        self.with(|s| s.registers.push(request.into_inner()));
        Ok(Response::new(RegisterResponse {
            agent_id: "agent-1".into(),
            heartbeat_interval_ms: 100,
            worker_timeout_ms: self.with(|s| s.worker_timeout_ms),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.gate()?;
        let (kill_attempts, reregister) = self.with(|s| {
            s.heartbeats.push(request.into_inner());
            (
                std::mem::take(&mut s.kill_on_heartbeat),
                s.reregister_unknown && s.registers.is_empty(),
            )
        });
        Ok(Response::new(HeartbeatResponse {
            kill_attempts,
            reregister,
        }))
    }

    async fn report_start(
        &self,
        request: Request<ReportStartRequest>,
    ) -> Result<Response<ReportStartResponse>, Status> {
        self.gate()?;
        self.note_authorization(&request);
        let request = request.into_inner();
        assert_eq!(request.agent_id, "agent-1");
        let id = request.dispatch.unwrap().instance_id;
        self.with(|s| s.starts += 1);
        let delay = self.with(|s| s.claim_delay);
        tokio::time::sleep(delay).await;
        Ok(Response::new(self.claim_answer(id)))
    }

    async fn report_finish(
        &self,
        request: Request<ReportFinishRequest>,
    ) -> Result<Response<ReportFinishResponse>, Status> {
        self.gate()?;
        self.note_authorization(&request);
        let request = request.into_inner();
        let handed = self.with(|s| {
            let handed = request
                .take_next
                .then(|| s.hand_offs.get(&request.attempt_id).copied())
                .flatten();
            let log =
                String::from_utf8_lossy(s.logs.get(&request.attempt_id).map_or(&[][..], |l| l)).into_owned();
            s.finishes.push((request, log));
            handed
        });
        Ok(Response::new(ReportFinishResponse {
            accepted: true,
            reason: String::new(),
            next: handed.map(|id| self.claim_answer(id)),
            next_dispatch: handed.map(|id| goflow_proto::Dispatch {
                instance_id: id,
                try_number: 1,
                epoch: 9,
                queue: "default".into(),
                priority: 0,
            }),
        }))
    }

    async fn stream_logs(
        &self,
        request: Request<Streaming<LogAppend>>,
    ) -> Result<Response<StreamLogsResponse>, Status> {
        self.gate()?;
        let mut stream = request.into_inner();
        let mut stored = 0;
        while let Some(append) = stream.message().await? {
            stored += append.data.len() as i64;
            self.with(|s| {
                s.logs
                    .entry(append.attempt_id)
                    .or_default()
                    .extend_from_slice(&append.data)
            });
        }
        Ok(Response::new(StreamLogsResponse { bytes_stored: stored }))
    }

    type WatchCommandsStream = ReceiverStream<Result<AgentCommand, Status>>;

    async fn watch_commands(
        &self,
        _request: Request<WatchCommandsRequest>,
    ) -> Result<Response<Self::WatchCommandsStream>, Status> {
        self.gate()?;
        let (tx, rx) = mpsc::channel(4);
        self.with(|s| s.commands.push(tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Stores by offset as the coordinator does: bytes it has are skipped, a gap is refused.
#[tonic::async_trait]
impl LogService for Fake {
    async fn append_log(
        &self,
        request: Request<AppendLogRequest>,
    ) -> Result<Response<AppendLogResponse>, Status> {
        self.gate()?;
        if let Some(path) = self.with(|s| s.logs_wait_for.clone()) {
            let started = Instant::now();
            while !path.exists() {
                if started.elapsed() > Duration::from_secs(60) {
                    return Err(Status::unavailable("still too slow"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let append = request.into_inner();
        assert_eq!(append.agent_id, "agent-1");
        self.with(|s| {
            let log = s.logs.entry(append.attempt_id).or_default();
            let stored = log.len() as i64;
            let end = append.offset + append.data.len() as i64;
            if append.offset <= stored && end > stored {
                log.extend_from_slice(&append.data[(stored - append.offset) as usize..]);
            }
            let acked = log.len() as i64;
            s.appends += 1;
            if s.lose_log_answers_every > 0 && s.appends % s.lose_log_answers_every == 0 {
                return Err(Status::unavailable("the answer was lost"));
            }
            Ok(Response::new(AppendLogResponse { acked_offset: acked }))
        })
    }
}

pub(crate) fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub(crate) fn serve(fake: Fake, addr: SocketAddr, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(fake.clone()))
            .add_service(LogServiceServer::new(fake))
            .serve_with_shutdown(addr, stop.cancelled_owned())
            .await
            .unwrap();
    })
}

/// Shuts the agent down (it must end in 5 s without an error), then the fake coordinator.
pub(crate) async fn stop(
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    stop_server: CancellationToken,
) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop_server.cancel();
    server.await.unwrap();
}

pub(crate) fn dispatch(instance_id: i64) -> Dispatch {
    Dispatch {
        instance_id,
        try_number: 1,
        epoch: 7,
        queue: "default".into(),
        priority: 0,
    }
}

pub(crate) fn config(addr: SocketAddr, slots: usize) -> AgentConfig {
    AgentConfig {
        coordinators: vec![format!("http://{addr}")],
        slots,
        ..AgentConfig::default()
    }
}

#[tokio::test]
async fn runs_claimed_tries_and_reports_after_the_logs_are_stored() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (false, "echo never".into()));
        s.claims.insert(
            2,
            (true, "echo hello $GOFLOW_ETL_DAY; echo oops >&2; exit 2".into()),
        );
        s.claims.insert(3, (true, "echo fine".into()));
    });
    let queue = Arc::new(MemoryQueue::new());
    queue
        .push(vec![dispatch(1), dispatch(2), dispatch(3)])
        .await
        .unwrap();

    // The agent starts before the coordinator, as in `goflow standalone`.
    let addr = free_addr();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());

    let (failed, log) = fake.finish_of("a2").await;
    assert_eq!(failed.agent_id, "agent-1");
    assert_eq!(failed.epoch, 7);
    assert_eq!(failed.outcome, "failed");
    assert!(failed.has_exit_code);
    assert_eq!(failed.exit_code, 2);
    assert!(log.contains(" out| hello 20261124\n"), "{log}");
    assert!(log.contains(" err| oops\n"), "{log}");

    let (ok, log) = fake.finish_of("a3").await;
    assert_eq!(ok.outcome, "success");
    assert!(log.ends_with(" out| fine\n"), "{log}");

    fake.with(|s| {
        let register = &s.registers[0];
        assert_eq!(register.slots, 1);
        assert_eq!(register.queues, ["default"]);
        assert!(!register.host.is_empty());
        assert!(
            s.finishes.iter().all(|(f, _)| f.attempt_id != "a1"),
            "an ungranted dispatch ran"
        );
        assert!(!s.logs.contains_key("a1"));
    });
    // Heartbeats come at the interval the coordinator asked for (100ms).
    fake.wait_for("a few heartbeats", |s| (s.heartbeats.len() >= 3).then_some(()))
        .await;
    assert!(queue.is_empty());

    stop(agent, shutdown, server, stop_server).await;
}

/// Answers to AppendLog lost on the way (the chunk stored, the agent told it failed): the
/// agent sends again from the last acknowledged offset, and the stored log has every line
/// once, in order, before the finish is reported.
#[tokio::test]
async fn resent_output_is_stored_once_and_in_order() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(
            1,
            (
                true,
                "for i in $(seq 1 40); do echo line $i; sleep 0.01; done".into(),
            ),
        );
        s.lose_log_answers_every = 2;
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));

    let (finish, log) = fake.finish_of("a1").await;
    assert_eq!(finish.outcome, "success");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(" out| ").expect("a stamped output line").1)
        .collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "{log}");
    // Answers were lost, so some chunks were sent more than once.
    fake.with(|s| assert!(s.appends >= 2, "{} appends", s.appends));

    stop(agent, shutdown, server, stop_server).await;
}

/// A coordinator too slow to take output never holds the command up: here it answers no
/// AppendLog until the command has printed far more lines than any channel holds, and ended.
#[tokio::test]
async fn a_slow_coordinator_does_not_slow_the_command() {
    let fake = Fake::default();
    let dir = tempfile::tempdir().unwrap();
    let ended = dir.path().join("ended");
    fake.with(|s| {
        s.claims.insert(
            1,
            (
                true,
                format!("seq 1 20000 | sed 's/^/line /'; touch {}", ended.display()),
            ),
        );
        s.logs_wait_for = Some(ended.clone());
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));

    let (finish, log) = fake.finish_of("a1").await;
    assert_eq!(finish.outcome, "success");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(" out| ").expect("a stamped output line").1)
        .collect();
    let expected: Vec<String> = (1..=20000).map(|i| format!("line {i}")).collect();
    assert!(
        lines == expected,
        "{} lines, the last {:?}",
        lines.len(),
        lines.last()
    );

    stop(agent, shutdown, server, stop_server).await;
}

/// A grant that arrives later than a coordinator waits before it counts the try lost is not
/// started: another agent may run it by then.
#[tokio::test]
async fn a_grant_that_comes_too_late_is_not_started() {
    let fake = Fake::default();
    let marker = std::env::temp_dir().join(format!("goflow-late-claim-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    fake.with(|s| {
        s.claims.insert(1, (true, format!("touch {}", marker.display())));
        s.claim_delay = Duration::from_secs(6);
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));
    fake.wait_for("the claim", |s| (s.starts == 1).then_some(()))
        .await;
    // While the answer is awaited, heartbeats name the claim, so the coordinator does not count
    // its try lost.
    fake.wait_for("a heartbeat naming the claim in flight", |s| {
        s.heartbeats
            .iter()
            .any(|h| h.claiming.iter().any(|c| c.instance_id == 1 && c.try_number == 1))
            .then_some(())
    })
    .await;
    // The answer comes after 6 s; the heartbeats after it show whether the try runs, and name
    // it unstarted, so the coordinator dispatches it again without counting it lost.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let told = fake
        .wait_for("a heartbeat naming the unstarted grant", |s| {
            s.heartbeats.iter().position(|h| h.unstarted_attempts == ["a1"])
        })
        .await;
    fake.wait_for("a heartbeat after that one", |s| {
        (s.heartbeats.len() > told + 1).then_some(())
    })
    .await;
    fake.with(|s| {
        assert!(
            s.heartbeats.iter().all(|h| h.running_attempts.is_empty()),
            "it ran"
        );
        assert!(s.finishes.is_empty(), "it ran");
        let last = s.heartbeats.last().unwrap();
        assert!(
            last.unstarted_attempts.is_empty() && last.claiming.is_empty(),
            "told once, then forgotten: {last:?}"
        );
        assert!(!last.draining);
    });
    assert!(!marker.exists(), "the command ran");
    stop(agent, shutdown, server, stop_server).await;
}

#[tokio::test]
async fn kills_on_command_and_heartbeat_and_stops_everything_on_shutdown() {
    let fake = Fake::default();
    fake.with(|s| {
        for id in 1..=3 {
            s.claims.insert(id, (true, "echo $$; sleep 30 & sleep 30".into()));
        }
    });
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let queue = Arc::new(MemoryQueue::new());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 2), queue.clone(), shutdown.clone()));

    queue
        .push(vec![dispatch(1), dispatch(2), dispatch(3)])
        .await
        .unwrap();
    fake.wait_for("both slots busy in a heartbeat", |s| {
        s.heartbeats
            .iter()
            .any(|h| h.running_attempts.len() == 2 && h.free_slots == 0)
            .then_some(())
    })
    .await;
    assert_eq!(queue.len(), 1, "a third dispatch was taken without a free slot");

    // Kill from the command stream.
    let command = fake
        .wait_for("the command stream", |s| s.commands.first().cloned())
        .await;
    command
        .send(Ok(AgentCommand {
            kill_attempt: "a1".into(),
        }))
        .await
        .unwrap();
    let (killed, _) = fake.finish_of("a1").await;
    assert_eq!(killed.outcome, "killed");

    // Kill from a heartbeat answer.
    fake.with(|s| s.kill_on_heartbeat.push("a2".into()));
    let (killed, _) = fake.finish_of("a2").await;
    assert_eq!(killed.outcome, "killed");

    // The third took a freed slot; shutdown kills it and does not report it.
    let pid = fake
        .wait_for("the output of a3", |s| {
            let log = String::from_utf8_lossy(s.logs.get("a3")?).into_owned();
            log.split("out| ").nth(1)?.trim().parse::<i32>().ok()
        })
        .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    fake.with(|s| {
        assert!(
            s.finishes.iter().all(|(f, _)| f.attempt_id != "a3"),
            "a3 was reported"
        )
    });
    assert_eq!(
        live_processes_in_group(pid),
        Vec::<i32>::new(),
        "the try's processes survived shutdown"
    );

    stop_server.cancel();
    server.await.unwrap();
}

/// Processes (not zombies) whose process group is `pgid`, from /proc.
fn live_processes_in_group(pgid: i32) -> Vec<i32> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After `(comm)`: state ppid pgrp ...
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Several coordinators (issue 7): the agent reaches a live one past a dead address, past one
/// that answers UNAVAILABLE, and follows when the one it talks to turns UNAVAILABLE.
mod failover {
    use super::*;

    fn config_for(addrs: &[SocketAddr], slots: usize) -> AgentConfig {
        AgentConfig {
            coordinators: addrs.iter().map(|a| format!("http://{a}")).collect(),
            slots,
            ..AgentConfig::default()
        }
    }

    /// Runs dispatch 1 (`echo fine`) with the coordinators at `addrs`, `live` being the one
    /// that answers; returns after its finish was reported there.
    async fn run_one_through(addrs: &[SocketAddr], live: &Fake) {
        live.with(|s| {
            s.claims.insert(1, (true, "echo fine".into()));
        });
        let queue = Arc::new(MemoryQueue::new());
        queue.push(vec![dispatch(1)]).await.unwrap();
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run_agent(config_for(addrs, 1), queue.clone(), shutdown.clone()));
        let (finish, log) = live.finish_of("a1").await;
        assert_eq!(finish.outcome, "success");
        assert!(log.ends_with(" out| fine\n"), "{log}");
        live.wait_for("a heartbeat", |s| (!s.heartbeats.is_empty()).then_some(()))
            .await;
        live.wait_for("the command stream", |s| (!s.commands.is_empty()).then_some(()))
            .await;
        live.with(|s| assert_eq!(s.registers.len(), 1));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn reaches_the_second_coordinator_when_the_first_is_dead() {
        // Nothing listens on `dead`.
        let dead = free_addr();
        let live = Fake::default();
        let addr = free_addr();
        let stop = CancellationToken::new();
        let server = serve(live.clone(), addr, stop.clone());
        run_one_through(&[dead, addr], &live).await;
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn reaches_the_second_coordinator_when_the_first_answers_unavailable() {
        let refusing = Fake::default();
        refusing.with(|s| s.unavailable = true);
        let live = Fake::default();
        let (first, second) = (free_addr(), free_addr());
        let stop = CancellationToken::new();
        let servers = [
            serve(refusing.clone(), first, stop.clone()),
            serve(live.clone(), second, stop.clone()),
        ];
        run_one_through(&[first, second], &live).await;
        refusing.with(|s| {
            assert!(s.refused >= 1, "the first coordinator was never asked");
            assert!(s.registers.is_empty() && s.finishes.is_empty());
        });
        stop.cancel();
        for server in servers {
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn follows_when_its_coordinator_turns_unavailable_and_reregisters_there() {
        let (a, b) = (Fake::default(), Fake::default());
        b.with(|s| {
            s.reregister_unknown = true;
            s.claims.insert(1, (true, "sleep 30".into()));
        });
        a.with(|s| {
            s.claims.insert(1, (true, "sleep 30".into()));
        });
        let (addr_a, addr_b) = (free_addr(), free_addr());
        let stop = CancellationToken::new();
        let servers = [
            serve(a.clone(), addr_a, stop.clone()),
            serve(b.clone(), addr_b, stop.clone()),
        ];
        let queue = Arc::new(MemoryQueue::new());
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run_agent(
            config_for(&[addr_a, addr_b], 1),
            queue.clone(),
            shutdown.clone(),
        ));
        queue.push(vec![dispatch(1)]).await.unwrap();
        a.wait_for("the try running, in a heartbeat to A", |s| {
            s.heartbeats
                .iter()
                .any(|h| h.running_attempts == ["a1"])
                .then_some(())
        })
        .await;
        a.wait_for("the command stream on A", |s| {
            (!s.commands.is_empty()).then_some(())
        })
        .await;
        b.with(|s| assert!(s.registers.is_empty() && s.heartbeats.is_empty()));

        // A loses its leader / goes away: every call refused, its streams end.
        a.with(|s| {
            s.unavailable = true;
            s.commands.clear();
        });
        // B does not know the agent: it says reregister, and the agent registers there with
        // the try it runs.
        let register = b
            .wait_for("a registration at B", |s| s.registers.first().cloned())
            .await;
        assert_eq!(register.running_attempts, ["a1"]);
        // The command stream moved to B too: a kill sent there reaches the try, and its end is
        // reported to B.
        let command = b
            .wait_for("the command stream on B", |s| s.commands.first().cloned())
            .await;
        command
            .send(Ok(AgentCommand {
                kill_attempt: "a1".into(),
            }))
            .await
            .unwrap();
        let (killed, _) = b.finish_of("a1").await;
        assert_eq!(killed.outcome, "killed");
        a.with(|s| assert!(s.finishes.is_empty()));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        stop.cancel();
        for server in servers {
            server.await.unwrap();
        }
    }
}

/// An embedded agent (`goflow standalone`): claims and finish reports go to the coordinator in
/// its process, with the metadata a gRPC call would carry, and are retried while it answers
/// UNAVAILABLE; the rest still goes over gRPC.
mod in_process {
    use super::*;
    use crate::LocalCoordinator;

    /// The coordinator of the agent's process, answering as `Fake` does.
    struct Local(Fake);

    impl std::fmt::Debug for Local {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Local")
        }
    }

    #[tonic::async_trait]
    impl LocalCoordinator for Local {
        async fn report_start(
            &self,
            request: Request<ReportStartRequest>,
        ) -> Result<Response<ReportStartResponse>, Status> {
            AgentService::report_start(&self.0, request).await
        }

        async fn report_finish(
            &self,
            request: Request<ReportFinishRequest>,
        ) -> Result<Response<ReportFinishResponse>, Status> {
            AgentService::report_finish(&self.0, request).await
        }
    }

    #[tokio::test]
    async fn claims_and_reports_in_process_and_the_rest_over_grpc() {
        let over_grpc = Fake::default();
        let local = Fake::default();
        local.with(|s| {
            s.claims.insert(1, (true, "echo fine".into()));
            // Starting up, not leading yet.
            s.unavailable = true;
        });
        let addr = free_addr();
        let stop_server = CancellationToken::new();
        let server = serve(over_grpc.clone(), addr, stop_server.clone());
        let queue = Arc::new(MemoryQueue::new());
        queue.push(vec![dispatch(1)]).await.unwrap();
        let config = AgentConfig {
            secret: Some("embedded-secret".into()),
            local: Some(Arc::new(Local(local.clone()))),
            ..config(addr, 1)
        };
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run_agent(config, queue.clone(), shutdown.clone()));

        local
            .wait_for("a claim refused while not leading", |s| {
                (s.refused > 0).then_some(())
            })
            .await;
        local.with(|s| s.unavailable = false);
        let (finish, _) = local.finish_of("a1").await;
        assert_eq!(finish.outcome, "success");
        local.with(|s| {
            assert_eq!(s.starts, 1);
            assert_eq!(
                s.authorizations,
                ["Bearer embedded-secret", "Bearer embedded-secret"],
                "the in-process calls carry the agent secret, as gRPC calls do"
            );
        });
        // The log stream, registration and heartbeats went over gRPC; no claim or finish did.
        over_grpc
            .wait_for("the try's log", |s| {
                s.logs
                    .get("a1")
                    .filter(|log| log.ends_with(b" out| fine\n"))
                    .map(|_| ())
            })
            .await;
        over_grpc.with(|s| {
            assert_eq!(s.registers.len(), 1);
            assert_eq!(s.starts, 0, "a claim went over gRPC");
            assert!(s.finishes.is_empty(), "a finish report went over gRPC");
        });

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        stop_server.cancel();
        server.await.unwrap();
    }
}

#[path = "drain_tests.rs"]
mod drain;

/// Cut off from every coordinator after its command ended, before its end was reported (the
/// log still being stored): the agent does not abandon that try, since there is nothing left
/// to stop, and reports its success once a coordinator answers again.
#[tokio::test]
async fn a_try_that_ended_is_reported_after_a_cut_off_not_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let answer_logs = dir.path().join("answer-logs");
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (true, "echo done".into()));
        s.logs_wait_for = Some(answer_logs.clone());
        s.worker_timeout_ms = 400;
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));

    // Claimed; `echo` ends at once, and its output waits for the coordinator's answer.
    fake.wait_for("the claim", |s| (s.starts > 0).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every coordinator out of reach for well over 3/4 of the worker timeout.
    fake.with(|s| s.unavailable = true);
    fake.wait_for("heartbeats refused for a while", |s| {
        (s.refused >= 8).then_some(())
    })
    .await;
    fake.with(|s| s.unavailable = false);
    std::fs::write(&answer_logs, "").unwrap();

    let (finish, log) = fake.finish_of("a1").await;
    assert_eq!(finish.outcome, "success");
    assert!(log.ends_with(" out| done\n"), "{log}");
    stop(agent, shutdown, server, stop_server).await;
}

/// The same try pushed twice (the coordinator grants a repeated claim, since the first answer
/// may have been lost) runs once: the second grant finds it running here.
#[tokio::test]
async fn a_try_pushed_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let fake = Fake::default();
    fake.with(|s| {
        s.claims
            .insert(5, (true, format!("echo start >> {}; sleep 2", starts.display())));
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(5)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 2), queue.clone(), shutdown.clone()));
    // Pushed again while it runs (the in-process queue drops a push of a waiting dispatch).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !starts.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the try never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    queue.push(vec![dispatch(5)]).await.unwrap();

    let (finished, _) = fake.finish_of("a5").await;
    assert_eq!(finished.outcome, "success");
    fake.wait_for("both claims", |s| (s.starts >= 2).then_some(()))
        .await;
    assert!(queue.is_empty());
    // Long enough for a second process, had one started, to have written its line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(
        lines.lines().count(),
        1,
        "the try ran {} times",
        lines.lines().count()
    );
    fake.with(|s| {
        let reports = s.finishes.iter().filter(|(f, _)| f.attempt_id == "a5").count();
        assert_eq!(reports, 1, "its end was reported {reports} times");
    });
    stop(agent, shutdown, server, stop_server).await;
}
