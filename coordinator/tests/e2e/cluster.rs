//! Cluster dispatch through Redis: `goflow coordinator` with a broker hands work to separate
//! `goflow agent` processes, re-dispatches the tries of an agent that died, refuses agents
//! without the shared secret (when it is the cluster's credential), and routes work by queue.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sandbox::{Agent, Launch, Redis, Sandbox, free_port, parse_array, run_goflow, state_of, time_of};

/// What every agent and the coordinator of these tests present.
const SECRET: &str = "e2e-cluster-secret-0123456789";
/// Seconds of silence before the coordinator declares an agent dead.
const WORKER_TIMEOUT: &str = "3";
/// Generous: a few short shell commands on a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A private Redis, a coordinator dispatching through it, and the agents started so far.
struct Cluster {
    // Dropped in this order: agents, then the coordinator, then Redis.
    agents: Vec<Agent>,
    sb: Sandbox,
    redis: Redis,
}

impl Cluster {
    /// Redis and `goflow coordinator` with GOFLOW_BROKER, the secret, a 3 s WorkerTimeOut and
    /// 1 s heartbeats (so a loaded machine does not make a live agent look dead).
    fn start() -> Self {
        let redis = Redis::start();
        let broker = redis.url();
        let sb = Sandbox::start_with(|root| Launch {
            args: vec![
                "coordinator".into(),
                "--data-dir".into(),
                root.join("data").into(),
            ],
            env: vec![
                ("GOFLOW_BROKER".into(), broker.into()),
                ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
                ("GOFLOW_WORKER_TIMEOUT".into(), WORKER_TIMEOUT.into()),
                ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
            ],
            log_file: None,
            own_database: false,
        });
        Self {
            agents: vec![],
            sb,
            redis,
        }
    }

    /// Starts `goflow agent --server URL --slots N EXTRA...` as `id` with the cluster's broker
    /// and `secret` (None: no GOFLOW_AGENT_SECRET at all); returns its index in `agents`.
    fn spawn_agent(&mut self, id: &str, slots: usize, extra: &[&str], secret: Option<&str>) -> usize {
        let broker = self.redis.url();
        let mut env = vec![
            ("GOFLOW_BROKER", broker.as_str()),
            ("GOFLOW_WORKER_TIMEOUT", WORKER_TIMEOUT),
        ];
        if let Some(secret) = secret {
            env.push(("GOFLOW_AGENT_SECRET", secret));
        }
        let log = self.sb.root().join(format!("agent-{id}.log"));
        let agent = Agent::start(
            &self.sb.server_url(),
            id,
            slots,
            extra,
            &env,
            &self.sb.work(),
            &log,
        );
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// Starts agents with the right secret and waits until `goflowctl agents` shows them alive.
    fn add_agents(&mut self, agents: &[(&str, usize, &[&str])]) {
        for (id, slots, extra) in agents {
            self.spawn_agent(id, *slots, extra, Some(SECRET));
        }
        let ids: Vec<&str> = agents.iter().map(|(id, _, _)| *id).collect();
        self.wait_for(SETTLE, &format!("agents {ids:?} to register"), || {
            let listed = self.agents_json();
            ids.iter()
                .all(|id| listed.iter().any(|a| a["id"] == *id && a["state"] == "alive"))
                .then_some(())
        });
    }

    fn agent(&self, id: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.id() == id)
            .unwrap_or_else(|| panic!("no agent {id} was started"))
    }

    fn agent_mut(&mut self, id: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.id() == id)
            .unwrap_or_else(|| panic!("no agent {id} was started"))
    }

    /// `goflowctl agents -o json`.
    fn agents_json(&self) -> Vec<Value> {
        parse_array(&self.sb.ctl_ok(&["agents", "-o", "json"]))
    }

    /// The coordinator's and every agent's log tails, for failure messages.
    fn logs(&self) -> String {
        let mut text = format!("coordinator log (tail):\n{}", self.sb.log_tail(40));
        for agent in &self.agents {
            text.push_str("\n\n");
            text.push_str(&agent.log_tail(25));
        }
        text
    }

    /// Polls `probe` until it returns Some, for at most `limit`.
    fn wait_for<T>(&self, limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            if Instant::now() > deadline {
                panic!("waited {limit:?} for {what}\n{}", self.logs());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `goflowctl` ARGS, asserting success, with every log in the failure message.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.sb.ctl(args);
        if !out.status.success() {
            panic!(
                "`goflowctl {}` failed ({})\nstdout:\n{}\nstderr:\n{}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
        }
        String::from_utf8(out.stdout).expect("goflowctl prints UTF-8")
    }
}

/// The `agent` field of the instance of `task` in `rows`.
fn agent_of<'a>(rows: &'a [Value], task: &str) -> &'a str {
    rows.iter()
        .find(|r| r["task"] == task)
        .and_then(|r| r["agent"].as_str())
        .unwrap_or_else(|| panic!("no instance of {task} with an agent in {rows:#?}"))
}

/// A coordinator with a broker runs nothing itself: two agents share a fan-out of eight
/// one-second leaves, and the join runs after all of them.
#[test]
fn coordinator_dispatches_through_redis_to_two_agents() {
    let mut cl = Cluster::start();
    assert!(
        cl.sb
            .log()
            .contains(&format!("dispatching through Redis at {}", cl.redis.url())),
        "the coordinator says where it dispatches:\n{}",
        cl.sb.log_tail(20)
    );
    cl.add_agents(&[("a1", 2, &[]), ("a2", 2, &[])]);
    let agents = cl.agents_json();
    assert_eq!(
        agents.len(),
        2,
        "no embedded agent next to a1 and a2: {agents:#?}"
    );
    for a in &agents {
        assert_eq!(a["state"], "alive", "{agents:#?}");
        assert_eq!(a["slots"], 2, "{agents:#?}");
    }

    let leaves: Vec<String> = (1..=8).map(|i| format!("fan_leaf{i}")).collect();
    let mut dag = String::from("tasks:\n  - id: fan_root\n    command: \"echo root-ran\"\n");
    for leaf in &leaves {
        dag.push_str(&format!(
            "  - id: {leaf}\n    command: \"echo leaf-{{{{task_id}}}}; sleep 1\"\n    depends_on: [fan_root]\n"
        ));
    }
    dag.push_str(&format!(
        "  - id: fan_join\n    command: \"echo join-ran\"\n    depends_on: [{}]\n",
        leaves.join(", ")
    ));
    cl.sb.apply(&dag);
    let day = "20260301";
    cl.ctl_ok(&["run", "-j", "fan_root", "-d", day, "--down", "--wait"]);

    let rows = cl.sb.status_json(day);
    assert_eq!(rows.len(), 10, "{rows:#?}");
    let mut used = BTreeSet::new();
    for r in &rows {
        assert_eq!(r["state"], "success", "{r:#}\n{}", cl.logs());
        assert_eq!(r["try_number"], 1, "{r:#}");
        let agent = r["agent"].as_str().unwrap_or("");
        assert!(
            agent == "a1" || agent == "a2",
            "every instance ran on a1 or a2, not {agent:?}: {r:#}"
        );
        used.insert(agent.to_string());
    }
    assert_eq!(
        used.len(),
        2,
        "eight leaves on four slots: both agents took work; {rows:#?}"
    );
    let join = cl.sb.instance(&rows, "fan_join");
    for leaf in &leaves {
        let leaf_row = cl.sb.instance(&rows, leaf);
        assert!(
            time_of(join, "started_at") >= time_of(leaf_row, "finished_at"),
            "fan_join started before {leaf} finished: {rows:#?}"
        );
    }

    // Logs went from the agents to the coordinator.
    let log = cl.ctl_ok(&["logs", "-j", "fan_leaf3", "-d", day]);
    assert!(log.contains("leaf-fan_leaf3"), "{log}");
    let log = cl.ctl_ok(&["logs", "-j", "fan_join", "-d", day]);
    assert!(log.contains("join-ran"), "{log}");
    let log = cl.ctl_ok(&["logs", "-j", "fan_root", "-d", day, "--try", "1"]);
    assert!(log.contains("root-ran"), "{log}");
}

/// kill -9 of the agent running a try: after WorkerTimeOut the coordinator declares it dead
/// and the try runs again, as try 2, on the other agent.
#[test]
fn a_dead_agent_s_try_is_run_again_elsewhere() {
    let mut cl = Cluster::start();
    cl.add_agents(&[("a1", 2, &[]), ("a2", 2, &[])]);
    cl.sb.apply(
        r#"
tasks:
  - id: lost_t
    command: "echo try-{{try_number}}; sleep 5; echo done"
    retries: 0
"#,
    );
    let day = "20260302";
    cl.ctl_ok(&["run", "-j", "lost_t", "-d", day]);
    let first = cl.wait_for(SETTLE, "lost_t to run", || {
        let rows = cl.sb.status_json(day);
        let r = rows.iter().find(|r| r["task"] == "lost_t")?;
        (r["state"] == "running" && r["try_number"] == 1 && !r["agent"].as_str()?.is_empty())
            .then(|| r["agent"].as_str().unwrap().to_string())
    });
    assert!(first == "a1" || first == "a2", "{first}");
    let other = if first == "a1" { "a2" } else { "a1" };
    // Its output has reached the coordinator: the try really runs there.
    cl.wait_for(SETTLE, "try 1's first line in the logs", || {
        cl.ctl_ok(&["logs", "-j", "lost_t", "-d", day, "--try", "1"])
            .contains("try-1")
            .then_some(())
    });
    let killed_at = chrono::Utc::now();
    cl.agent_mut(&first).kill9();

    let rows = cl.wait_for(
        Duration::from_secs(30),
        &format!("lost_t to succeed on {other} after {first} was killed"),
        || {
            let rows = cl.sb.status_json(day);
            let r = rows.iter().find(|r| r["task"] == "lost_t")?;
            (r["state"] == "success").then_some(rows)
        },
    );
    let r = cl.sb.instance(&rows, "lost_t");
    assert_eq!(r["try_number"], 2, "a new try: {r:#}\n{}", cl.logs());
    assert_eq!(
        r["agent"],
        other,
        "try 2 ran on the live agent: {r:#}\n{}",
        cl.logs()
    );
    // The last heartbeat may be up to 1 s older than the kill: 3 s of silence is 2 s after it.
    let waited = time_of(r, "started_at").signed_duration_since(killed_at);
    assert!(
        waited >= chrono::TimeDelta::milliseconds(1500),
        "try 2 started {waited} after the kill: not before WorkerTimeOut (3 s) of silence: {r:#}"
    );

    let agents = cl.agents_json();
    let state = |id: &str| {
        agents
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("agent {id} is not listed: {agents:#?}"))["state"]
            .clone()
    };
    assert_eq!(state(&first), "dead", "{agents:#?}");
    assert_eq!(state(other), "alive", "{agents:#?}");
    let coordinator_log = cl.sb.log();
    assert!(
        coordinator_log.contains(&format!("agent {first} missed its heartbeats")),
        "the coordinator says why:\n{}",
        cl.sb.log_tail(30)
    );

    let log = cl.ctl_ok(&["logs", "-j", "lost_t", "-d", day, "--try", "2"]);
    assert!(
        log.contains("try-2") && log.contains("done"),
        "try 2's log:\n{log}"
    );
    let log = cl.ctl_ok(&["logs", "-j", "lost_t", "-d", day, "--try", "1"]);
    assert!(log.contains("try-1"), "try 1's log is kept:\n{log}");
    assert!(cl.agent(other).log().contains("try started"), "{}", cl.logs());
}

/// Agents without the secret, or with a wrong one, are refused and exit; a secret too short
/// does not start a coordinator.
#[test]
fn agents_need_the_secret() {
    let mut cl = Cluster::start();
    cl.spawn_agent("wrong1", 1, &[], Some("not-the-cluster-secret-42"));
    cl.spawn_agent("nosecret1", 1, &[], None);
    for id in ["wrong1", "nosecret1"] {
        let started = Instant::now();
        let status = cl
            .agent_mut(id)
            .wait_exit(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("agent {id} still runs after 40 s\n{}", cl.logs()));
        assert!(!status.success(), "agent {id} must fail: {status}\n{}", cl.logs());
        let log = cl.agent(id).log();
        assert!(
            log.contains("secret") && log.contains("could not register"),
            "agent {id}'s log says what is wrong:\n{log}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a refusal is not retried for long: {:?}",
            started.elapsed()
        );
    }
    let agents = cl.agents_json();
    assert!(agents.is_empty(), "refused agents are not listed: {agents:#?}");

    // A secret too short is refused, naming the variable. (A coordinator with a broker and
    // no secret starts and accepts agents by their own tokens: see agent_identity.rs.)
    let data = cl.sb.root().join("data-shortsecret");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let broker = cl.redis.url();
    let out = run_goflow(
        &[
            "coordinator",
            "--data-dir",
            data.to_str().unwrap(),
            "--grpc-listen",
            &grpc,
            "--http-listen",
            &http,
        ],
        &[
            ("GOFLOW_BROKER", broker.as_str()),
            ("GOFLOW_AGENT_SECRET", "short"),
        ],
        &cl.sb.work(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "must not start with a short secret:\n{stderr}"
    );
    assert!(
        stderr.contains("GOFLOW_AGENT_SECRET") && stderr.contains("16"),
        "{stderr}"
    );
}

/// An agent takes only the queues it subscribes to: `gpu` work goes to g1, default work to d1.
#[test]
fn queues_route_work_to_subscribed_agents() {
    let mut cl = Cluster::start();
    cl.add_agents(&[("g1", 2, &["--queues", "gpu"]), ("d1", 2, &[])]);
    let agents = cl.agents_json();
    let queues_of = |id: &str| {
        agents
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("{agents:#?}"))["queues"]
            .clone()
    };
    assert_eq!(queues_of("g1"), serde_json::json!(["gpu"]), "{agents:#?}");
    assert_eq!(queues_of("d1"), serde_json::json!(["default"]), "{agents:#?}");

    let mut dag = String::from("tasks:\n  - id: q_root\n    command: \"echo root\"\n");
    for i in 1..=3 {
        dag.push_str(&format!(
            "  - id: q_gpu{i}\n    command: \"echo gpu{i}; sleep 1\"\n    queue: gpu\n    depends_on: [q_root]\n"
        ));
        dag.push_str(&format!(
            "  - id: q_cpu{i}\n    command: \"echo cpu{i}; sleep 1\"\n    depends_on: [q_root]\n"
        ));
    }
    cl.sb.apply(&dag);
    let day = "20260303";
    cl.ctl_ok(&["run", "-j", "q_root", "-d", day, "--down", "--wait"]);
    let rows = cl.sb.status_json(day);
    assert_eq!(rows.len(), 7, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["state"], "success", "{r:#}\n{}", cl.logs());
    }
    assert_eq!(agent_of(&rows, "q_root"), "d1", "{rows:#?}");
    for i in 1..=3 {
        assert_eq!(
            agent_of(&rows, &format!("q_gpu{i}")),
            "g1",
            "gpu work on g1: {rows:#?}"
        );
        assert_eq!(
            agent_of(&rows, &format!("q_cpu{i}")),
            "d1",
            "default work on d1: {rows:#?}"
        );
    }
    let log = cl.ctl_ok(&["logs", "-j", "q_gpu2", "-d", day]);
    assert!(log.contains("gpu2"), "{log}");
}

/// An agent cut off from its coordinator stops its tries before the coordinator declares it
/// dead and dispatches them again: no two live runs across a partition.
#[test]
fn an_agent_cut_off_from_the_coordinator_stops_its_tries() {
    let mut cluster = Cluster::start();
    cluster.add_agents(&[("p1", 2, &[])]);
    let pids = cluster.sb.work().join("pids");
    cluster.sb.apply(&format!(
        r#"
tasks:
  - id: cut_off
    command: "if [ {{{{try_number}}}} -eq 1 ]; then sleep 300 & echo $! >> {p}; wait; fi; echo try-{{{{try_number}}}}"
"#,
        p = pids.display()
    ));
    cluster.sb.ctl_ok(&["run", "-j", "cut_off", "-d", "20260701"]);
    let sleep_pid: u32 = cluster.wait_for(SETTLE, "the first try's sleep", || {
        std::fs::read_to_string(&pids)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    let coordinator = cluster.sb.pid().expect("the coordinator runs");
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &coordinator.to_string()])
            .status()
            .unwrap();
    };
    // Pause the coordinator: to the agent it is a partition. WorkerTimeOut is 3 s.
    signal("-STOP");
    let cut_at = Instant::now();
    while crate::sandbox::is_alive(sleep_pid) && cut_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_while_cut_off = !crate::sandbox::is_alive(sleep_pid);
    signal("-CONT");
    if !stopped_while_cut_off {
        let _ = std::process::Command::new("kill")
            .args(["-9", &sleep_pid.to_string()])
            .status();
    }
    assert!(
        stopped_while_cut_off,
        "the agent kept its try running while cut off for 20 s"
    );
    let rows = cluster
        .sb
        .wait_status("20260701", SETTLE, "cut_off done by a later try", |rows| {
            state_of(rows, "cut_off") == Some("success")
        });
    let row = cluster.sb.instance(&rows, "cut_off");
    assert!(
        row["try_number"].as_i64() >= Some(2),
        "the try was dispatched again: {row:#}"
    );
}

/// kill -9 of the coordinator while its remote agents run a DAG over Redis, restarted at once
/// on the same database (the suite's: SQLite, PostgreSQL or MariaDB) and ports: the agents'
/// tries live on and the DAG finishes. See [`coordinator_kill9_mid_dag`].
#[test]
fn coordinator_kill9_mid_dag_with_remote_agents_recovers() {
    coordinator_kill9_mid_dag(Outage::Brief);
}

/// kill -9 of the coordinator, down longer than WorkerTimeOut: the agents, cut off, stop their
/// tries; restarted, the coordinator runs them again and the DAG finishes, each task never
/// running twice at once. See [`coordinator_kill9_mid_dag`].
#[test]
fn coordinator_kill9_and_a_long_outage_redo_the_stopped_tries() {
    coordinator_kill9_mid_dag(Outage::LongerThanWorkerTimeout);
}

#[derive(PartialEq, Debug)]
enum Outage {
    /// Restarted at once.
    Brief,
    /// Restarted once the agents have stopped the tries they ran (WorkerTimeOut is 3 s).
    LongerThanWorkerTimeout,
}

/// A coordinator with two agents over Redis runs root -> six 4-second leaves -> join -> tail;
/// it is killed with SIGKILL while the leaves run, and restarted on the same database and
/// ports after `outage`. It finishes the DAG, every instance a success, finished work not
/// redone, and no task ever had two live runs at once (each command checks that the processes
/// of its task's earlier tries are gone before it starts). The standalone's kill -9 recovery
/// is scheduling.rs's `kill9_mid_run_recovers_and_completes`, on the suite's database as well.
fn coordinator_kill9_mid_dag(outage: Outage) {
    let mut cl = Cluster::start();
    cl.add_agents(&[("k1", 4, &[]), ("k2", 4, &[])]);
    let work = cl.sb.work();
    let _cleanup = KillPidsIn(work.clone());
    let overlaps = work.join("overlaps.txt");
    let trace = work.join("trace.txt");
    // Before it starts, each try looks for a live process of an earlier try of its task.
    let command = |secs: u32| {
        format!(
            "for p in $(cat {w}/{{{{task_id}}}}.pids 2>/dev/null); do if kill -0 $p 2>/dev/null; then \
             echo {{{{task_id}}}} try {{{{try_number}}}} started while $p ran >> {o}; fi; done; \
             echo $$ >> {w}/{{{{task_id}}}}.pids; echo {{{{task_id}}}} start >> {t}; sleep {secs}; \
             echo {{{{task_id}}}} done >> {t}",
            w = work.display(),
            o = overlaps.display(),
            t = trace.display(),
        )
    };
    let mids: Vec<String> = (1..=6).map(|i| format!("k_mid{i}")).collect();
    let mut dag = format!("tasks:\n  - id: k_root\n    command: \"{}\"\n", command(0));
    for mid in &mids {
        dag.push_str(&format!(
            "  - id: {mid}\n    command: \"{}\"\n    depends_on: [k_root]\n",
            command(4)
        ));
    }
    dag.push_str(&format!(
        "  - id: k_join\n    command: \"{}\"\n    depends_on: [{}]\n",
        command(1),
        mids.join(", ")
    ));
    dag.push_str(&format!(
        "  - id: k_tail\n    command: \"{}\"\n    depends_on: [k_join]\n",
        command(1)
    ));
    cl.sb.apply(&dag);
    let day = "20260305";
    cl.ctl_ok(&["run", "-j", "k_root", "-d", day, "--down"]);

    // Kill it while the middle of the DAG runs on the agents.
    let running = cl.wait_for(SETTLE, "the fan-out to run on the agents", || {
        let rows = cl.sb.status_json(day);
        let running: Vec<String> = rows
            .iter()
            .filter(|r| r["state"] == "running")
            .filter_map(|r| r["task"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("k_mid"))
            .collect();
        let started = std::fs::read_to_string(&trace).unwrap_or_default();
        (!running.is_empty() && running.iter().all(|t| started.contains(&format!("{t} start"))))
            .then_some(running)
    });
    cl.sb.kill9();
    let started = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        !started.contains("k_join start"),
        "the join had not started at the kill:\n{started}"
    );
    if outage == Outage::LongerThanWorkerTimeout {
        // The leaves that ran at the kill: their shells must go once the agents give up.
        let shells: Vec<u32> = running
            .iter()
            .flat_map(|t| {
                std::fs::read_to_string(work.join(format!("{t}.pids")))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        let cut_at = Instant::now();
        while shells.iter().any(|p| crate::sandbox::is_alive(*p))
            && cut_at.elapsed() < Duration::from_secs(30)
        {
            thread::sleep(Duration::from_millis(100));
        }
        let alive: Vec<&u32> = shells.iter().filter(|p| crate::sandbox::is_alive(**p)).collect();
        assert!(
            alive.is_empty(),
            "30 s after the coordinator died, its agents still run tries {alive:?} of {running:?}\n{}",
            cl.logs()
        );
    }
    cl.sb.restart();

    let mut all: Vec<String> = vec!["k_root".into()];
    all.extend(mids.iter().cloned());
    all.extend(["k_join".to_string(), "k_tail".to_string()]);
    let rows = cl.wait_for(
        Duration::from_secs(180),
        "the DAG to finish after the restart",
        || {
            let rows = cl.sb.status_json(day);
            all.iter()
                .all(|t| state_of(&rows, t) == Some("success"))
                .then_some(rows)
        },
    );
    assert_eq!(rows.len(), all.len(), "{rows:#?}");
    let overlapped = std::fs::read_to_string(&overlaps).unwrap_or_default();
    assert!(
        overlapped.is_empty(),
        "two live runs of one task (running at the kill: {running:?}):\n{overlapped}\n{}",
        cl.logs()
    );
    let ran = std::fs::read_to_string(&trace).unwrap_or_default();
    for task in &all {
        assert!(
            ran.contains(&format!("{task} done")),
            "{task} never completed:\n{ran}"
        );
    }
    let root_tries = std::fs::read_to_string(work.join("k_root.pids")).unwrap_or_default();
    assert_eq!(
        root_tries.lines().count(),
        1,
        "k_root had finished before the kill: not redone:\n{ran}"
    );
    if outage == Outage::LongerThanWorkerTimeout {
        for task in &running {
            let r = cl.sb.instance(&rows, task);
            assert!(
                r["try_number"].as_i64() >= Some(2),
                "{task}, stopped by its cut-off agent, ran again: {r:#}"
            );
        }
    }
    let join = cl.sb.instance(&rows, "k_join");
    for mid in &mids {
        let r = cl.sb.instance(&rows, mid);
        assert!(
            time_of(join, "started_at") >= time_of(r, "finished_at"),
            "k_join started before {mid} finished: {rows:#?}"
        );
    }
    assert!(
        cl.sb
            .log()
            .contains(&format!("dispatching through Redis at {}", cl.redis.url())),
        "the restarted coordinator dispatches through Redis again:\n{}",
        cl.sb.log_tail(20)
    );
}

/// Kills (SIGKILL) every pid listed in the `*.pids` files of a folder when dropped, so a failing
/// test leaves no command behind.
struct KillPidsIn(std::path::PathBuf);

impl Drop for KillPidsIn {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_none_or(|e| e != "pids") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if crate::sandbox::is_alive(pid) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}
