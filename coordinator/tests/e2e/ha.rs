//! Several coordinators (issue 7): separate `goflow coordinator` processes on one database, a
//! private etcd electing the leader (or the database lease without etcd), three `goflow agent`
//! processes over a private Redis. The leader is killed, paused past its lease, Redis loses its
//! data, an agent dies: every DAG finishes, each try started once, and no two tries of one
//! instance ever run at once.
//!
//! The tasks' commands append start and end markers (`TASK DAY ATTEMPT start|end NANOS`) to a
//! file, and each checks before it starts that no process of an earlier try of its task is
//! alive; the tests read both.
//!
//! They run on the suite's database (GOFLOW_TEST_DATABASE), and on PostgreSQL when the suite
//! runs on SQLite: the coordinators of a test share one fresh database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use goflow_coordinator::store::Dialect;
use goflow_coordinator::testing::{TestDatabase, suite_dialect};
use serde_json::{Value, json};

use crate::sandbox::{Agent, Etcd, Launch, Redis, Sandbox, free_port, parse_array, run_goflow};

const SECRET: &str = "e2e-ha-agent-secret-0123456789";
/// What a `goflow webui` in front of these coordinators proves itself with.
pub(crate) const WEBUI_SECRET: &str = "e2e-ha-webui-secret-0123456789";
/// The leader's lease (etcd's and the database's), in seconds.
const LEASE_TTL: &str = "3";
/// Generous: a few hundred short shell commands on a loaded two-core machine.
pub(crate) const SETTLE: Duration = Duration::from_secs(120);
/// One quick goflowctl call; a failure (no leader for a moment) is retried by the caller.
const QUICK: Duration = Duration::from_secs(30);

/// A fresh database for the coordinators of one test: the suite's server, or PostgreSQL when
/// the suite runs on SQLite (several processes share it).
fn ha_database() -> TestDatabase {
    match suite_dialect() {
        Dialect::Sqlite => TestDatabase::create_blocking(Dialect::Postgres),
        other => TestDatabase::create_blocking(other),
    }
}

pub(crate) struct Options {
    pub(crate) coordinators: usize,
    pub(crate) agents: usize,
    pub(crate) slots: usize,
    /// WorkerTimeOut, seconds.
    pub(crate) worker_timeout: u64,
    pub(crate) etcd: bool,
}

/// The processes of one test. Dropped in field order: agents, coordinators, Redis, etcd,
/// the database, the work folder.
pub(crate) struct Ha {
    pub(crate) agents: Vec<Agent>,
    pub(crate) coordinators: Vec<Sandbox>,
    redis: Redis,
    etcd: Option<Etcd>,
    db: TestDatabase,
    work: tempfile::TempDir,
    /// The coordinator paused with SIGSTOP, if any (not asked anything meanwhile).
    stopped: Option<usize>,
    worker_timeout: u64,
}

impl Ha {
    /// Redis, etcd (if asked), the coordinators one after another (the first leads) and the
    /// agents, each listing every coordinator starting with a different one.
    pub(crate) fn start(options: Options) -> Self {
        let db = ha_database();
        let redis = Redis::start();
        let etcd = options.etcd.then(Etcd::start);
        let work = tempfile::Builder::new()
            .prefix("goflow-e2e-ha.")
            .tempdir()
            .expect("temp dir");
        let mut ha = Self {
            agents: vec![],
            coordinators: vec![],
            redis,
            etcd,
            db,
            work,
            stopped: None,
            worker_timeout: options.worker_timeout,
        };
        for i in 0..options.coordinators {
            ha.add_coordinator();
            if i == 0 {
                // The first one leads before the others start: the tests know who leads.
                ha.wait_for(SETTLE, "the first coordinator to lead", || {
                    (ha.leader_indexes()? == vec![0]).then_some(())
                });
            }
        }
        let urls: Vec<String> = ha.coordinators.iter().map(Sandbox::server_url).collect();
        for i in 0..options.agents {
            let mut list = urls.clone();
            list.rotate_left(i % urls.len());
            ha.start_agent(&format!("a{}", i + 1), options.slots, &list.join(","));
        }
        let ids: Vec<String> = ha.agents.iter().map(|a| a.id().to_string()).collect();
        ha.wait_for(SETTLE, &format!("agents {ids:?} to register"), || {
            let listed = ha.ctl_json(&["agents", "-o", "json"])?;
            ids.iter()
                .all(|id| {
                    listed
                        .iter()
                        .any(|a| a["id"] == id.as_str() && a["state"] == "alive")
                })
                .then_some(())
        });
        ha
    }

    fn add_coordinator(&mut self) -> usize {
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
            ("GOFLOW_DATABASE_URL".into(), self.db.url.clone().into()),
            ("GOFLOW_REDIS_URL".into(), self.redis.url().into()),
            ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
            ("GOFLOW_WEBUI_SECRET".into(), WEBUI_SECRET.into()),
            ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
        ];
        if let Some(etcd) = &self.etcd {
            env.push(("GOFLOW_ETCD_ENDPOINTS".into(), etcd.url().into()));
        }
        let worker_timeout = self.worker_timeout.to_string();
        let sb = Sandbox::start_with(|root| Launch {
            args: vec![
                "coordinator".into(),
                "--data-dir".into(),
                root.join("data").into(),
                "--lease-ttl".into(),
                LEASE_TTL.into(),
                "--worker-timeout".into(),
                worker_timeout.into(),
            ],
            env,
            log_file: None,
            own_database: true,
        });
        self.coordinators.push(sb);
        self.coordinators.len() - 1
    }

    fn start_agent(&mut self, id: &str, slots: usize, coordinators: &str) {
        let slots = slots.to_string();
        let redis = self.redis.url();
        let log = self.work.path().join(format!("agent-{id}.log"));
        let agent = Agent::start_args(
            id,
            &[
                "agent",
                "--coordinator",
                coordinators,
                "--redis-url",
                &redis,
                "--slots",
                &slots,
                "--id",
                id,
                "--heartbeat-interval",
                "1",
            ],
            &[("GOFLOW_AGENT_SECRET", SECRET)],
            self.work.path(),
            &log,
        );
        self.agents.push(agent);
    }

    pub(crate) fn work(&self) -> &Path {
        self.work.path()
    }

    fn markers(&self) -> PathBuf {
        self.work().join("markers.txt")
    }

    fn is_up(&self, i: usize) -> bool {
        self.coordinators[i].pid().is_some() && self.stopped != Some(i)
    }

    /// A running coordinator to ask: the last started (a follower until the leader changes,
    /// so calls go through the forwarding).
    pub(crate) fn via(&self) -> &Sandbox {
        let i = (0..self.coordinators.len())
            .rev()
            .find(|&i| self.is_up(i))
            .expect("a coordinator runs");
        &self.coordinators[i]
    }

    /// `goflowctl ARGS` through a running coordinator; None when it fails (no leader yet).
    pub(crate) fn ctl_json(&self, args: &[&str]) -> Option<Vec<Value>> {
        let out = self.via().ctl_timeout(args, QUICK);
        out.status
            .success()
            .then(|| parse_array(&String::from_utf8_lossy(&out.stdout)))
    }

    /// `goflowctl ARGS` through a running coordinator, asserting success.
    pub(crate) fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.via().ctl_timeout(args, QUICK);
        if !out.status.success() {
            panic!(
                "`goflowctl {}` failed ({})\n{}\n{}",
                args.join(" "),
                out.status,
                describe(&out),
                self.logs()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every coordinator as `goflowctl coordinators -o json` lists it (through coordinator
    /// `i`); None when the call fails.
    fn coordinators_json_via(&self, i: usize) -> Option<Vec<Value>> {
        let out = self.coordinators[i].ctl_timeout(&["coordinators", "-o", "json"], QUICK);
        if out.status.success() {
            return Some(parse_array(&String::from_utf8_lossy(&out.stdout)));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("unrecognized subcommand") {
            // A goflowctl without the verb: the same list through the gRPC API.
            return list_coordinators_grpc(&self.coordinators[i].server_url());
        }
        None
    }

    /// The indexes of the coordinators listed as leading (asked through a running one that
    /// does not lead, if there is one); None when the list cannot be had right now.
    pub(crate) fn leader_indexes(&self) -> Option<Vec<usize>> {
        let up: Vec<usize> = (0..self.coordinators.len()).filter(|&i| self.is_up(i)).collect();
        let ask = *up.last()?;
        let listed = self.coordinators_json_via(ask)?;
        let mut leaders = vec![];
        for c in listed.iter().filter(|c| c["leader"] == true) {
            let address = c["address"].as_str().unwrap_or_default();
            let found = self
                .coordinators
                .iter()
                .position(|sb| same_address(&sb.server_url(), address))
                .unwrap_or_else(|| panic!("a leader at an unknown address {address:?}: {listed:#?}"));
            leaders.push(found);
        }
        leaders.sort();
        Some(leaders)
    }

    /// Applies `yaml` and runs `root` and everything downstream for `day`.
    pub(crate) fn run_dag(&self, yaml: &str, root: &str, day: &str) {
        let path = self.work().join(format!("dag-{day}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        self.ctl_ok(&["apply", "-f", path.to_str().unwrap()]);
        self.ctl_ok(&["run", "-j", root, "-d", day, "--down"]);
    }

    /// `goflowctl status -d DAY -o json`, None while it fails.
    fn status(&self, day: &str) -> Option<Vec<Value>> {
        self.ctl_json(&["status", "-d", day, "-o", "json"])
    }

    /// Waits until the day's `count` instances all succeeded; fails at once when one failed.
    pub(crate) fn wait_dag_done(&self, day: &str, count: usize, limit: Duration) -> Vec<Value> {
        self.wait_for(
            limit,
            &format!("the {count} instances of {day} to succeed"),
            || {
                let rows = self.status(day)?;
                if let Some(failed) = rows
                    .iter()
                    .find(|r| matches!(r["state"].as_str(), Some("failed" | "killed")))
                {
                    panic!("an instance failed: {failed:#}\n{}", self.logs());
                }
                (rows.len() == count && rows.iter().all(|r| r["state"] == "success")).then_some(rows)
            },
        )
    }

    /// The tries that had started, from the markers, once `count` of them have.
    fn wait_started(&self, count: usize, what: &str) {
        self.wait_for(SETTLE, what, || {
            (read_markers(&self.markers()).len() >= count).then_some(())
        });
    }

    pub(crate) fn logs(&self) -> String {
        let mut text = String::new();
        for (i, sb) in self.coordinators.iter().enumerate() {
            text.push_str(&format!(
                "\n--- coordinator c{} ({}) log (tail):\n{}\n",
                i + 1,
                sb.server_url(),
                sb.log_tail(30)
            ));
        }
        for agent in &self.agents {
            text.push_str(&format!("\n--- {}\n", agent.log_tail(15)));
        }
        text
    }

    /// Polls `probe` until it returns Some, for at most `limit`.
    pub(crate) fn wait_for<T>(&self, limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            if Instant::now() > deadline {
                panic!("waited {limit:?} for {what}\n{}", self.logs());
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.coordinators[i].pid().expect("the coordinator runs");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

fn describe(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `http://127.0.0.1:7070` and `127.0.0.1:7070` are the same address.
fn same_address(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        s.trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string()
    };
    bare(a) == bare(b)
}

/// ListCoordinators through the gRPC API, as goflowctl's JSON would show it.
fn list_coordinators_grpc(url: &str) -> Option<Vec<Value>> {
    use goflow_proto as pb;
    let url = url.to_string();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .ok()?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .ok()?;
            let answer = pb::control_service_client::ControlServiceClient::new(channel)
                .list_coordinators(pb::ListCoordinatorsRequest {})
                .await
                .ok()?
                .into_inner();
            Some(
                answer
                    .coordinators
                    .into_iter()
                    .map(|c| json!({"id": c.id, "address": c.address, "leader": c.leader, "token": c.token}))
                    .collect(),
            )
        })
    })
    .join()
    .ok()
    .flatten()
}

// ---------------------------------------------------------------------------------------------
// Markers
// ---------------------------------------------------------------------------------------------

/// A command that checks no process of an earlier try of its task is alive, records its
/// shell's pid, writes a start marker, sleeps `secs`, and writes an end marker.
fn marked_command(work: &Path, secs: f64) -> String {
    let w = work.display();
    let sleep = if secs > 0.0 {
        format!("sleep {secs}; ")
    } else {
        String::new()
    };
    format!(
        "for p in $(cat {w}/$GOFLOW_TASK_ID.pids 2>/dev/null); do if kill -0 $p 2>/dev/null; then \
         echo $GOFLOW_TASK_ID $GOFLOW_ATTEMPT_ID started while $p ran >> {w}/overlaps.txt; fi; done; \
         echo $$ >> {w}/$GOFLOW_TASK_ID.pids; \
         echo $GOFLOW_TASK_ID $GOFLOW_ETL_DAY $GOFLOW_ATTEMPT_ID start $(date +%s%N) >> {w}/markers.txt; \
         {sleep}echo $GOFLOW_TASK_ID $GOFLOW_ETL_DAY $GOFLOW_ATTEMPT_ID end $(date +%s%N) >> {w}/markers.txt"
    )
}

/// One try as its markers tell it.
#[derive(Debug, Clone)]
struct Try {
    task: String,
    day: String,
    attempt: String,
    /// Every start marker of this attempt (one, unless it was started twice).
    starts: Vec<u128>,
    end: Option<u128>,
}

/// The tries in the marker file, by attempt id, in the order they started.
fn read_markers(path: &Path) -> Vec<Try> {
    let text = crate::sandbox::read(path);
    let mut tries: BTreeMap<String, Try> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [task, day, attempt, what, at] = fields[..] else {
            panic!("a torn marker line {line:?} in:\n{text}");
        };
        let at: u128 = at.parse().unwrap_or_else(|_| panic!("marker time {line:?}"));
        let t = tries.entry(attempt.to_string()).or_insert_with(|| Try {
            task: task.into(),
            day: day.into(),
            attempt: attempt.into(),
            starts: vec![],
            end: None,
        });
        match what {
            "start" => t.starts.push(at),
            "end" => t.end = Some(at),
            other => panic!("marker kind {other:?} in {line:?}"),
        }
    }
    let mut all: Vec<Try> = tries.into_values().collect();
    all.sort_by_key(|t| t.starts.first().copied().unwrap_or(0));
    all
}

/// Each of `tasks` of `day` started exactly once (one try, one start, and it ended), and
/// nothing else started.
fn assert_each_started_once(ha: &Ha, tasks: &[String], day: &str) {
    let tries = read_markers(&ha.markers());
    let mut by_task: BTreeMap<&str, Vec<&Try>> = BTreeMap::new();
    for t in &tries {
        assert_eq!(t.day, day, "a try of another day: {t:?}");
        by_task.entry(t.task.as_str()).or_default().push(t);
    }
    let mut twice = vec![];
    for task in tasks {
        match by_task.get(task.as_str()).map(Vec::as_slice) {
            Some([one]) if one.starts.len() == 1 && one.end.is_some() => {}
            None => panic!("{task} never started\n{}", ha.logs()),
            Some(more) => twice.push(format!("{task}: {more:?}")),
        }
    }
    assert!(
        twice.is_empty(),
        "tasks started more than once (or never ended):\n{}\n{}",
        twice.join("\n"),
        ha.logs()
    );
    let known: BTreeSet<&str> = tasks.iter().map(String::as_str).collect();
    let unknown: Vec<&&str> = by_task.keys().filter(|t| !known.contains(**t)).collect();
    assert!(unknown.is_empty(), "unexpected tries: {unknown:?}");
    assert_no_overlap_reported(ha);
}

/// No command found a live process of an earlier try of its task when it started.
fn assert_no_overlap_reported(ha: &Ha) {
    let overlaps = crate::sandbox::read(&ha.work().join("overlaps.txt"));
    assert!(
        overlaps.is_empty(),
        "a try started while an earlier try of its task ran:\n{overlaps}\n{}",
        ha.logs()
    );
}

/// Every instance succeeded on its first try.
fn assert_all_first_try(ha: &Ha, rows: &[Value]) {
    for r in rows {
        assert_eq!(r["state"], "success", "{r:#}\n{}", ha.logs());
        assert_eq!(r["try_number"], 1, "one try each: {r:#}\n{}", ha.logs());
    }
    let tasks: BTreeSet<&str> = rows.iter().filter_map(|r| r["task"].as_str()).collect();
    assert_eq!(tasks.len(), rows.len(), "one instance per task: {rows:#?}");
}

/// After a leader change: every instance succeeded and its command started exactly once (the
/// markers). An instance may show a later try when the old leader recorded a claim whose
/// answer never reached the agent (the new leader refuses the old epoch's claim, the agent
/// drops the dispatch, and the claimed try is closed as lost and dispatched again): then the
/// one try that started must be the last one. Returns those instances, to print.
fn assert_started_once_across_takeover(ha: &Ha, rows: &[Value], tasks: &[String], day: &str) -> Vec<String> {
    assert_each_started_once(ha, tasks, day);
    let tries = read_markers(&ha.markers());
    let mut redone = vec![];
    for r in rows {
        assert_eq!(r["state"], "success", "{r:#}\n{}", ha.logs());
        let task = r["task"].as_str().unwrap();
        let try_number = r["try_number"].as_i64().unwrap();
        if try_number == 1 {
            continue;
        }
        let ran = tries.iter().find(|t| t.task == task).expect("started");
        let last = format!("{}-{try_number}", r["id"]);
        assert_eq!(
            ran.attempt,
            last,
            "{task} is at try {try_number}: the one try that started must be that one, not an \
             earlier one whose run was lost: {r:#}\n{}",
            ha.logs()
        );
        redone.push(format!("{task} (try {try_number}; only it ran)"));
    }
    let instances: BTreeSet<&str> = rows.iter().filter_map(|r| r["task"].as_str()).collect();
    assert_eq!(instances.len(), rows.len(), "one instance per task: {rows:#?}");
    redone
}

/// root -> `width` tasks -> `width` tasks (each after two of the layer before) -> `width`
/// tasks -> join: `3 * width + 2` tasks, their ids in order.
fn layered_dag(prefix: &str, width: usize, command: &str) -> (String, Vec<String>) {
    let mut yaml = String::from("tasks:\n");
    let mut ids = vec![];
    let mut add = |yaml: &mut String, id: String, deps: Vec<String>| {
        yaml.push_str(&format!(
            "  - id: {id}\n    command: \"{command}\"\n    retries: 0\n"
        ));
        if !deps.is_empty() {
            yaml.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
        }
        ids.push(id);
    };
    let root = format!("{prefix}_root");
    add(&mut yaml, root.clone(), vec![]);
    let layer = |n: usize| -> Vec<String> { (0..width).map(|i| format!("{prefix}_l{n}_{i:03}")).collect() };
    let (l1, l2, l3) = (layer(1), layer(2), layer(3));
    for id in &l1 {
        add(&mut yaml, id.clone(), vec![root.clone()]);
    }
    for (i, id) in l2.iter().enumerate() {
        let mut deps = vec![l1[i].clone()];
        if width > 1 {
            deps.push(l1[(i + 1) % width].clone());
        }
        add(&mut yaml, id.clone(), deps);
    }
    for (i, id) in l3.iter().enumerate() {
        add(&mut yaml, id.clone(), vec![l2[i].clone()]);
    }
    add(&mut yaml, format!("{prefix}_join"), l3.clone());
    (yaml, ids)
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Three coordinators elected through etcd, three agents: a 200-task DAG, driven through a
/// coordinator that does not lead, finishes with every instance a success on its first try and
/// each try started exactly once; every agent took work and exactly one coordinator leads.
#[test]
fn ha_three_coordinators_run_a_200_task_dag_each_try_once() {
    let ha = Ha::start(Options {
        coordinators: 3,
        agents: 3,
        slots: 4,
        worker_timeout: 10,
        etcd: true,
    });
    assert_eq!(ha.leader_indexes(), Some(vec![0]), "c1 leads\n{}", ha.logs());
    assert!(
        ha.coordinators[0].log().contains("leading (etcd"),
        "c1 says it leads through etcd:\n{}",
        ha.coordinators[0].log_tail(20)
    );
    let listed = ha.coordinators_json_via(2).expect("the coordinators are listed");
    assert_eq!(listed.len(), 3, "{listed:#?}");

    let (dag, tasks) = layered_dag("h", 66, &marked_command(ha.work(), 0.0));
    assert_eq!(tasks.len(), 200);
    let day = "20260401";
    let started = Instant::now();
    ha.run_dag(&dag, "h_root", day);
    let rows = ha.wait_dag_done(day, tasks.len(), Duration::from_secs(240));
    println!(
        "200-task DAG through 3 coordinators and 3 agents ({}): {:.1?}",
        ha.db.url.split(':').next().unwrap_or_default(),
        started.elapsed()
    );
    assert_all_first_try(&ha, &rows);
    assert_each_started_once(&ha, &tasks, day);
    let used: BTreeSet<&str> = rows.iter().filter_map(|r| r["agent"].as_str()).collect();
    assert_eq!(
        used,
        BTreeSet::from(["a1", "a2", "a3"]),
        "every agent took work: {rows:#?}"
    );
    assert_eq!(
        ha.leader_indexes(),
        Some(vec![0]),
        "still one leader, c1\n{}",
        ha.logs()
    );
    for follower in [1, 2] {
        let log = ha.coordinators[follower].log();
        assert!(
            !log.contains("leading ("),
            "c{} never led:\n{}",
            follower + 1,
            ha.coordinators[follower].log_tail(20)
        );
    }
}

/// SIGKILL of an agent running tries (six 6-second leaves): after WorkerTimeOut (4 s) they run
/// again on the other agents, and no two tries of one instance were ever alive at once: the
/// tries' start and end markers, read after the killed agent's commands would have ended, do
/// not overlap, and no try found an earlier one's shell alive when it started.
#[test]
fn ha_sigkill_of_an_agent_reruns_its_tries_elsewhere_never_two_at_once() {
    let mut ha = Ha::start(Options {
        coordinators: 2,
        agents: 3,
        slots: 2,
        worker_timeout: 4,
        etcd: true,
    });
    const SLEEP: f64 = 6.0;
    let w = ha.work().to_path_buf();
    let mut dag = format!(
        "tasks:\n  - id: k_root\n    command: \"{}\"\n",
        marked_command(&w, 0.0)
    );
    let leaves: Vec<String> = (1..=6).map(|i| format!("k_leaf{i}")).collect();
    for leaf in &leaves {
        dag.push_str(&format!(
            "  - id: {leaf}\n    command: \"{}\"\n    retries: 0\n    depends_on: [k_root]\n",
            marked_command(&w, SLEEP)
        ));
    }
    dag.push_str(&format!(
        "  - id: k_join\n    command: \"{}\"\n    depends_on: [{}]\n",
        marked_command(&w, 0.0),
        leaves.join(", ")
    ));
    let day = "20260402";
    ha.run_dag(&dag, "k_root", day);

    // a1 runs leaves, and their commands have started.
    let held: Vec<String> = ha.wait_for(SETTLE, "a1 to run leaves", || {
        let rows = ha.status(day)?;
        let started: BTreeSet<String> = read_markers(&ha.markers()).into_iter().map(|t| t.task).collect();
        let on_a1: Vec<String> = rows
            .iter()
            .filter(|r| r["state"] == "running" && r["agent"] == "a1")
            .filter_map(|r| r["task"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("k_leaf"))
            .collect();
        (!on_a1.is_empty() && on_a1.iter().all(|t| started.contains(t))).then_some(on_a1)
    });
    let killed_at = Instant::now();
    ha.agents[0].kill9();
    println!("killed agent a1 while it ran {held:?}");

    let rows = ha.wait_dag_done(day, leaves.len() + 2, SETTLE);
    // The killed agent's commands would have ended by now (and the shim stops them sooner).
    let quiet = Duration::from_secs_f64(SLEEP + 3.0);
    if killed_at.elapsed() < quiet {
        thread::sleep(quiet - killed_at.elapsed());
    }
    // The tries a1 held at the kill (those seen running there, and any it had just claimed)
    // were closed as lost with a1 and ran again elsewhere; every other instance ran once.
    let coordinator_logs: String = ha.coordinators.iter().map(Sandbox::log).collect();
    let lost_with_a1 = |task: &str| {
        coordinator_logs
            .lines()
            .any(|l| l.contains(&format!("{task}@{day}: try 1 lost")) && l.contains("agent a1 "))
    };
    let mut redone = BTreeSet::new();
    for r in &rows {
        assert_eq!(r["state"], "success", "{r:#}");
        let task = r["task"].as_str().unwrap().to_string();
        if r["try_number"] == 1 {
            assert!(
                !held.contains(&task),
                "{task}, running on a1 at the kill, did not run again: {r:#}\n{}",
                ha.logs()
            );
            continue;
        }
        assert_eq!(r["try_number"], 2, "one more try: {r:#}");
        assert_ne!(r["agent"], "a1", "{task} ran again elsewhere: {r:#}");
        assert!(
            lost_with_a1(&task),
            "{task} ran again, and its first try was not one a1 held: {r:#}\n{}",
            ha.logs()
        );
        redone.insert(task);
    }
    let agents = ha.ctl_json(&["agents", "-o", "json"]).expect("agents");
    let a1 = agents.iter().find(|a| a["id"] == "a1").expect("a1 listed");
    assert_eq!(a1["state"], "dead", "{agents:#?}");

    // No two tries of one instance alive at once.
    let tries = read_markers(&ha.markers());
    let mut by_task: BTreeMap<&str, Vec<&Try>> = BTreeMap::new();
    for t in &tries {
        assert_eq!(t.starts.len(), 1, "attempt {} started twice: {t:?}", t.attempt);
        by_task.entry(t.task.as_str()).or_default().push(t);
    }
    for task in leaves
        .iter()
        .chain(["k_root".to_string(), "k_join".to_string()].iter())
    {
        let of_task = by_task.get(task.as_str()).cloned().unwrap_or_default();
        assert!(!of_task.is_empty(), "{task} never started");
        let ended: Vec<&&Try> = of_task.iter().filter(|t| t.end.is_some()).collect();
        assert!(!ended.is_empty(), "{task}: no try completed: {of_task:?}");
        for pair in of_task.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            if let Some(end) = earlier.end {
                assert!(
                    end <= later.starts[0],
                    "{task}: try {} ran until {end}, after try {} started at {}:\n{of_task:#?}",
                    earlier.attempt,
                    later.attempt,
                    later.starts[0]
                );
            }
        }
        if held.contains(task) {
            assert!(of_task.len() >= 2, "{task} started again: {of_task:?}");
        } else if !redone.contains(task) {
            assert_eq!(
                of_task.len(),
                1,
                "{task} was not on a1: started once: {of_task:?}"
            );
        }
    }
    // A try without an end marker was killed with a1: none of the others lacks one.
    for t in &tries {
        if t.end.is_none() {
            assert!(
                redone.contains(&t.task),
                "try {} of {} never ended, and it was not on the killed agent: {tries:#?}",
                t.attempt,
                t.task
            );
        }
    }
    assert_no_overlap_reported(&ha);
}

/// SIGKILL of the leader mid-DAG: another coordinator takes over (the time from the kill to a
/// listing that shows the new leader is printed) and the DAG finishes, every instance created
/// once and started once (no agent died here).
#[test]
fn ha_sigkill_of_the_leader_mid_dag_another_takes_over() {
    let mut ha = Ha::start(Options {
        coordinators: 3,
        agents: 3,
        slots: 4,
        worker_timeout: 10,
        etcd: true,
    });
    let (dag, tasks) = layered_dag("x", 20, &marked_command(ha.work(), 1.0));
    let day = "20260403";
    ha.run_dag(&dag, "x_root", day);
    ha.wait_started(15, "15 tries to start");

    ha.coordinators[0].kill9();
    let killed_at = Instant::now();
    let (new_leader, listed_after) = ha.wait_for(Duration::from_secs(30), "a new leader", || {
        let leaders = ha.leader_indexes()?;
        match leaders.as_slice() {
            [one] if *one != 0 => Some((*one, killed_at.elapsed())),
            _ => None,
        }
    });
    let log_after = ha.coordinators[new_leader].log().contains("leading (etcd");
    println!(
        "takeover after SIGKILL of the leader (lease {LEASE_TTL} s): c{} listed as leader {:.2} s after the kill",
        new_leader + 1,
        listed_after.as_secs_f64()
    );
    assert!(log_after, "c{} says it leads:\n{}", new_leader + 1, ha.logs());
    assert!(listed_after < Duration::from_secs(30));

    let rows = ha.wait_dag_done(day, tasks.len(), SETTLE);
    let redone = assert_started_once_across_takeover(&ha, &rows, &tasks, day);
    println!("after the leader's SIGKILL, claims lost with it and dispatched again: {redone:?}");
    assert_eq!(
        ha.leader_indexes(),
        Some(vec![new_leader]),
        "one leader\n{}",
        ha.logs()
    );
    for agent in &mut ha.agents {
        assert!(agent.try_exit().is_none(), "{} still runs", agent.log_tail(20));
    }
}

/// SIGSTOP of the leader past its lease (3 s) and past WorkerTimeOut, then SIGCONT: another
/// took over meanwhile; the woken one, which would now think every agent dead, has its late
/// writes refused and steps down; exactly one coordinator leads, the new one; the DAG finishes
/// with every try started once.
#[test]
fn ha_sigstop_of_the_leader_past_its_lease_it_steps_down_when_it_wakes() {
    let mut ha = Ha::start(Options {
        coordinators: 3,
        agents: 3,
        slots: 4,
        worker_timeout: 10,
        etcd: true,
    });
    let (dag, tasks) = layered_dag("s", 20, &marked_command(ha.work(), 1.0));
    let day = "20260404";
    ha.run_dag(&dag, "s_root", day);
    ha.wait_started(15, "15 tries to start");

    ha.signal(0, "-STOP");
    ha.stopped = Some(0);
    let stopped_at = Instant::now();
    let new_leader = ha.wait_for(
        Duration::from_secs(30),
        "another coordinator to take over",
        || match ha.leader_indexes()?.as_slice() {
            [one] if *one != 0 => Some(*one),
            _ => None,
        },
    );
    println!(
        "c{} took over {:.2} s after c1 was paused",
        new_leader + 1,
        stopped_at.elapsed().as_secs_f64()
    );
    // Paused longer than WorkerTimeOut (10 s): awake, its stale view says every agent is dead.
    let pause = Duration::from_secs(12);
    if stopped_at.elapsed() < pause {
        thread::sleep(pause - stopped_at.elapsed());
    }
    ha.signal(0, "-CONT");
    ha.stopped = None;

    let old_log = ha.wait_for(Duration::from_secs(30), "c1 to step down", || {
        let log = ha.coordinators[0].log();
        log.contains("no longer leading").then_some(log)
    });
    assert!(
        old_log.contains("stepping down"),
        "c1 says why it steps down:\n{}",
        ha.coordinators[0].log_tail(30)
    );
    println!(
        "c1 after SIGCONT:\n{}",
        old_log
            .lines()
            .filter(|l| l.contains("stepping down")
                || l.contains("refused")
                || l.contains("no longer leading"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        ha.leader_indexes(),
        Some(vec![new_leader]),
        "exactly one leader, the new one\n{}",
        ha.logs()
    );

    let rows = ha.wait_dag_done(day, tasks.len(), SETTLE);
    let redone = assert_started_once_across_takeover(&ha, &rows, &tasks, day);
    println!("after the leader's pause, claims lost with it and dispatched again: {redone:?}");
    // c1 stays a follower: asked, it forwards to the new leader.
    let out = ha.coordinators[0].ctl_timeout(&["status", "-d", day, "-o", "json"], QUICK);
    assert!(
        out.status.success(),
        "c1 answers as a follower:\n{}",
        describe(&out)
    );
    assert_eq!(
        ha.leader_indexes(),
        Some(vec![new_leader]),
        "still one leader\n{}",
        ha.logs()
    );
    for agent in &mut ha.agents {
        assert!(agent.try_exit().is_none(), "{} still runs", agent.log_tail(20));
    }
}

/// Redis killed mid-DAG and started again empty on the same port: the dispatches it held are
/// pushed again and the DAG finishes, no try started twice.
#[test]
fn ha_redis_restarted_empty_mid_dag_the_dag_finishes() {
    let mut ha = Ha::start(Options {
        coordinators: 2,
        agents: 3,
        slots: 2,
        worker_timeout: 10,
        etcd: true,
    });
    let (dag, tasks) = layered_dag("r", 10, &marked_command(ha.work(), 1.0));
    let day = "20260405";
    ha.run_dag(&dag, "r_root", day);
    ha.wait_started(5, "5 tries to start");
    let before = read_markers(&ha.markers()).len();
    ha.redis.restart_empty();
    println!("Redis restarted empty after {before} tries had started");

    let rows = ha.wait_dag_done(day, tasks.len(), Duration::from_secs(180));
    for r in &rows {
        assert_eq!(r["state"], "success", "{r:#}");
    }
    let tries = read_markers(&ha.markers());
    for t in &tries {
        assert_eq!(
            t.starts.len(),
            1,
            "attempt {} started twice: {t:?}\n{}",
            t.attempt,
            ha.logs()
        );
    }
    let started: BTreeSet<&str> = tries.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(started.len(), tasks.len(), "every task ran");
    assert_no_overlap_reported(&ha);
    for agent in &mut ha.agents {
        assert!(agent.try_exit().is_none(), "{} still runs", agent.log_tail(20));
    }
}

/// Without etcd: the second coordinator on the database stands by and says so; after kill -9
/// of the first it takes over within a few lease periods and runs work. `goflow scheduler --ha`
/// without etcd is refused, naming what to set.
#[test]
fn ha_without_etcd_a_standby_takes_over_the_database_lease() {
    let mut ha = Ha::start(Options {
        coordinators: 2,
        agents: 1,
        slots: 2,
        worker_timeout: 10,
        etcd: false,
    });
    assert!(
        ha.coordinators[0].log().contains("leading (database lease"),
        "{}",
        ha.logs()
    );
    ha.wait_for(Duration::from_secs(20), "c2 to say it stands by", || {
        ha.coordinators[1].log().contains("standing by").then_some(())
    });
    assert_eq!(ha.leader_indexes(), Some(vec![0]), "{}", ha.logs());

    ha.coordinators[0].kill9();
    let killed_at = Instant::now();
    ha.wait_for(Duration::from_secs(30), "c2 to take over", || {
        (ha.leader_indexes()? == vec![1]).then_some(())
    });
    println!(
        "without etcd: c2 took over {:.2} s after kill -9 of c1 (lease {LEASE_TTL} s)",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(
        ha.coordinators[1].log().contains("leading (database lease"),
        "{}",
        ha.logs()
    );

    // It schedules: a task runs on the agent, which moved to c2.
    let cmd = marked_command(ha.work(), 0.0);
    let day = "20260406";
    ha.run_dag(
        &format!("tasks:\n  - id: solo\n    command: \"{cmd}\"\n"),
        "solo",
        day,
    );
    let rows = ha.wait_dag_done(day, 1, SETTLE);
    assert_all_first_try(&ha, &rows);
    assert_each_started_once(&ha, &["solo".to_string()], day);

    // The seed's `scheduler --ha` needs etcd.
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let redis = ha.redis.url();
    let out = run_goflow(
        &[
            "scheduler",
            "--ha",
            "--grpc-listen",
            &grpc,
            "--http-listen",
            &http,
        ],
        &[
            ("GOFLOW_DATABASE_URL", ha.db.url.as_str()),
            ("GOFLOW_REDIS_URL", redis.as_str()),
            ("GOFLOW_AGENT_SECRET", SECRET),
        ],
        ha.work(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--ha without etcd must be refused:\n{}",
        describe(&out)
    );
    assert!(
        stderr.contains("--etcd-endpoints") && stderr.contains("GOFLOW_ETCD_ENDPOINTS"),
        "the refusal says what to set:\n{stderr}"
    );
}
