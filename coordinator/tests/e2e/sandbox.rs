//! `Sandbox`: one `goflow standalone` child process on free ports with its own data folder,
//! driven through the real `goflowctl` binary. [`Sandbox::start_with`] starts another
//! subcommand instead (`goflow scheduler -c FILE ...`), with its own environment.
//!
//! The suite runs on the database `GOFLOW_TEST_DATABASE` names (sqlite by default, postgres,
//! mysql): on PostgreSQL and MySQL each sandbox gets a fresh database of its own on the local
//! server (GOFLOW_DATABASE_URL), dropped when the sandbox is.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use goflow_coordinator::store::Dialect;
use goflow_coordinator::testing::{TestDatabase, suite_dialect};
use serde_json::Value;
use tempfile::TempDir;

/// How long `goflow standalone` may take to answer `goflowctl tasks`.
const STARTUP: Duration = Duration::from_secs(20);
/// Default limit of one goflowctl call (a `--wait` included): a hang fails the test.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// The `goflow` binary Cargo built for this test.
pub fn goflow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_goflow"))
}

/// With `GOFLOW_TEST_AGENT=goflow-agent`, agents started as `goflow agent ...` run as the
/// agent-only `goflow-agent ...` beside `goflow` instead (the same flags), so that the agent
/// tests cover that binary too.
fn agent_command(args: &[&str]) -> (PathBuf, Vec<String>) {
    let alone = std::env::var("GOFLOW_TEST_AGENT").is_ok_and(|v| v == "goflow-agent");
    match args.split_first() {
        Some((&"agent", rest)) if alone => {
            let bin = goflow_bin().with_file_name(format!("goflow-agent{}", std::env::consts::EXE_SUFFIX));
            assert!(
                bin.is_file(),
                "GOFLOW_TEST_AGENT=goflow-agent: build it first (cargo build --workspace --bins)"
            );
            (bin, rest.iter().map(|a| a.to_string()).collect())
        }
        _ => (goflow_bin(), args.iter().map(|a| a.to_string()).collect()),
    }
}

/// `goflowctl`, next to `goflow` (another package's binary: Cargo does not build it for us).
fn goflowctl_bin() -> PathBuf {
    let goflow = goflow_bin();
    let ctl = goflow
        .parent()
        .expect("goflow has a parent folder")
        .join(format!("goflowctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        ctl.is_file(),
        "{} is missing: the e2e tests drive the real CLI; run `cargo build --workspace --bins` first",
        ctl.display()
    );
    ctl
}

/// A port nobody listens on right now (the OS picks it; we let it go at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Removes every `GOFLOW_*` and `OTEL_*` variable of the test's environment, so a developer's
/// settings (GOFLOW_SERVER, GOFLOW_CONFIG, GOFLOW_RETRIES, an OTLP endpoint...) cannot leak into
/// the sandbox.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("GOFLOW_") || key_text.starts_with("OTEL_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// How [`Sandbox::start_with`] starts goflow: the arguments before `--grpc-listen ADDR
/// --http-listen ADDR` (which the sandbox appends), variables added to the cleaned
/// environment, and the log file goflow writes itself (LogDir/LogFile), if any.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub log_file: Option<PathBuf>,
    /// The launch names its database itself (a config file's `Common.MysqlConn`, or its own
    /// GOFLOW_DATABASE_URL): the sandbox makes none for it and sets no GOFLOW_DATABASE_URL.
    pub own_database: bool,
}

/// A fresh database for one sandbox when the suite runs on PostgreSQL or MySQL; None on SQLite
/// (the data folder holds it).
pub fn suite_database() -> Option<TestDatabase> {
    match suite_dialect() {
        Dialect::Sqlite => None,
        other => Some(TestDatabase::create_blocking(other)),
    }
}

pub struct Sandbox {
    dir: TempDir,
    /// Dropped with the sandbox, after `Drop` has killed the child.
    database: Option<TestDatabase>,
    grpc_port: u16,
    http_port: u16,
    child: Option<Child>,
    ctl: PathBuf,
    launch: Launch,
}

impl Sandbox {
    /// Starts `goflow standalone` on fresh ports and waits until goflowctl reaches it.
    pub fn start() -> Self {
        Self::start_with(|root| Launch {
            args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
            ..Launch::default()
        })
    }

    /// Starts goflow as `prepare` says, given the sandbox's root folder (to write a config
    /// file in), on fresh ports, and waits until goflowctl reaches it.
    pub fn start_with(prepare: impl FnOnce(&Path) -> Launch) -> Self {
        let ctl = goflowctl_bin();
        let dir = tempfile::Builder::new()
            .prefix("goflow-e2e.")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let launch = prepare(dir.path());
        let mut sandbox = Self {
            dir,
            database: if launch.own_database {
                None
            } else {
                suite_database()
            },
            grpc_port: 0,
            http_port: 0,
            child: None,
            ctl,
            launch,
        };
        // Another test may grab a port between our pick and goflow's bind: pick again then.
        for attempt in 1..=3 {
            sandbox.grpc_port = free_port();
            sandbox.http_port = free_port();
            while sandbox.http_port == sandbox.grpc_port {
                sandbox.http_port = free_port();
            }
            match sandbox.spawn_and_wait() {
                Ok(()) => return sandbox,
                Err(why) if attempt < 3 && why.contains("cannot listen") => continue,
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!()
    }

    /// The sandbox's root temp folder (the data folder, the log and `work/` are in it).
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The temp folder of this test; `work/` inside it is free for the test's files.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The data folder of `goflow standalone` (the SQLite file is in it).
    #[allow(dead_code)]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("standalone.log")
    }

    /// The database settings of the sandbox's goflow, as `goflow user` or `goflow agent-token`
    /// take them: its suite database's URL, or its data folder.
    #[allow(dead_code)]
    pub fn database_args(&self) -> Vec<String> {
        match &self.database {
            Some(db) => vec!["--database-url".into(), db.url.clone()],
            None => vec![
                "--data-dir".into(),
                self.data_dir().to_string_lossy().into_owned(),
            ],
        }
    }

    /// The database goflow runs on (the suite's, or SQLite in the data folder), for tests
    /// that look at rows.
    #[allow(dead_code)]
    pub fn database_url(&self) -> goflow_coordinator::store::DatabaseUrl {
        match &self.database {
            Some(db) => db.database_url(),
            None => goflow_coordinator::store::DatabaseUrl::sqlite(&self.data_dir().join("goflow.db")),
        }
    }

    /// `http://127.0.0.1:PORT` of the web UI.
    #[allow(dead_code)]
    pub fn ui_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:PORT` of the gRPC API.
    pub fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The standalone's log so far (stdout and stderr of every run of it, then the log file
    /// goflow writes itself when the launch names one).
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        if let Some(file) = &self.launch.log_file {
            log.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        log
    }

    /// The last `n` lines of the standalone's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the standalone log");
        let log_err = log.try_clone().expect("clone the log handle");
        let mut command = Command::new(goflow_bin());
        clean_env(&mut command);
        if let Some(db) = &self.database {
            command.env("GOFLOW_DATABASE_URL", &db.url);
        }
        let child = command
            .args(&self.launch.args)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", goflow_bin().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "goflow standalone exited early ({status}); its log:\n{}",
                    self.log_tail(30)
                ));
            }
            let probe = self.ctl_timeout(&["tasks"], Duration::from_secs(10));
            // Behind --auth a stranger is told to log in: the server answers, so it is up.
            if probe.status.success() || String::from_utf8_lossy(&probe.stderr).contains("goflowctl login") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "goflow standalone did not answer `goflowctl tasks` within {STARTUP:?}; \
                     last error: {}\nits log:\n{}",
                    String::from_utf8_lossy(&probe.stderr),
                    self.log_tail(30)
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The goflow process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the standalone with SIGKILL (no shutdown at all) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on unix
            let _ = child.wait();
        }
    }

    /// Starts the standalone again on the same data folder and ports.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The old listener may linger for a moment after the kill.
                Err(why) if why.contains("cannot listen") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200))
                }
                Err(why) => panic!("restart: {why}"),
            }
        }
    }

    /// Runs `goflowctl --server URL ARGS...`, failing the test if it takes over `limit`.
    pub fn ctl_timeout(&self, args: &[&str], limit: Duration) -> Output {
        self.ctl_env_timeout(args, &[], limit)
    }

    /// Like [`ctl`](Self::ctl) with variables added to goflowctl's environment (`USER`, ...).
    pub fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.ctl_env_timeout(args, env, CTL_TIMEOUT)
    }

    fn ctl_env_timeout(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
        let mut child = clean_env(&mut Command::new(&self.ctl))
            .envs(env.iter().copied())
            .arg("--server")
            .arg(self.server_url())
            .args(args)
            .current_dir(self.work())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.ctl.display()));
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let deadline = Instant::now() + limit;
        let status: ExitStatus = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`goflowctl {}` did not return within {limit:?} (hangs?)\nstdout:\n{}\nstderr:\n{}\nstandalone log:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&stdout.join().unwrap()),
                    String::from_utf8_lossy(&stderr.join().unwrap()),
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }

    /// Runs `goflowctl --server URL ARGS...` (at most [`CTL_TIMEOUT`]).
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_timeout(args, CTL_TIMEOUT)
    }

    /// Like [`ctl`](Self::ctl), asserting success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if !out.status.success() {
            panic!(
                "`goflowctl {}` failed ({})\n{}",
                args.join(" "),
                out.status,
                self.describe(&out)
            );
        }
        String::from_utf8(out.stdout).expect("goflowctl prints UTF-8")
    }

    /// Like [`ctl`](Self::ctl), asserting failure; returns stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if out.status.success() {
            panic!(
                "`goflowctl {}` succeeded but should have failed\n{}",
                args.join(" "),
                self.describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// stdout, stderr and the standalone's log tail, for failure messages.
    pub fn describe(&self, out: &Output) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\nstandalone log (tail):\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(30)
        )
    }

    /// Writes `document` to a file in the work folder and returns its path.
    pub fn write(&self, name: &str, document: &str) -> PathBuf {
        let path = self.work().join(name);
        std::fs::write(&path, document).expect("write a test file");
        path
    }

    /// `goflowctl apply -f FILE` of `yaml`, asserting success; returns stdout.
    pub fn apply(&self, yaml: &str) -> String {
        let path = self.write("dag.yaml", yaml);
        self.ctl_ok(&["apply", "-f", path.to_str().unwrap()])
    }

    /// `goflowctl status -d DAY -o json`.
    pub fn status_json(&self, day: &str) -> Vec<Value> {
        parse_array(&self.ctl_ok(&["status", "-d", day, "-o", "json"]))
    }

    /// `goflowctl tasks -o json`.
    pub fn tasks_json(&self) -> Vec<Value> {
        parse_array(&self.ctl_ok(&["tasks", "-o", "json"]))
    }

    /// The instance of `task` in `rows`, failing the test when there is not exactly one.
    pub fn instance<'a>(&self, rows: &'a [Value], task: &str) -> &'a Value {
        let found: Vec<&Value> = rows.iter().filter(|r| r["task"] == task).collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one instance of {task}, got {found:#?}\nall rows: {rows:#?}\nstandalone log:\n{}",
            self.log_tail(30)
        );
        found[0]
    }

    /// Polls `status -d DAY -o json` until `done` holds, for at most `limit`.
    pub fn wait_status(
        &self,
        day: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let rows = self.status_json(day);
            if done(&rows) {
                return rows;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {limit:?} for {what}; status -d {day}:\n{rows:#?}\nstandalone log:\n{}",
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

pub fn parse_array(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("expected a JSON array, got {other:?} from:\n{text}"),
    }
}

/// The state of the instance of `task` in `rows`, if there is one.
pub fn state_of<'a>(rows: &'a [Value], task: &str) -> Option<&'a str> {
    rows.iter()
        .find(|r| r["task"] == task)
        .and_then(|r| r["state"].as_str())
}

/// An RFC 3339 time of a JSON row, failing the test when it is missing.
pub fn time_of(row: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let text = row[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not set in {row:#}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{field} {text:?} is not RFC 3339: {e}"))
}

/// Reads a file the tasks wrote, or "" when it does not exist (yet).
pub fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        f.read_to_string(&mut text).unwrap();
    }
    text
}

/// Runs `goflow ARGS...` once (a command that should return: `init_db`, or a start that
/// must fail) in `cwd` with a cleaned environment plus `env`; fails the test if it takes
/// over `limit` (and kills it then).
pub fn run_goflow(args: &[&str], env: &[(&str, &str)], cwd: &Path, limit: Duration) -> Output {
    let mut child = clean_env(&mut Command::new(goflow_bin()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", goflow_bin().display()));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`goflow {}` did not return within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout.join().unwrap()),
                String::from_utf8_lossy(&stderr.join().unwrap()),
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster pieces: a private Redis, and `goflow agent` processes
// ---------------------------------------------------------------------------------------------

/// How long a fresh `redis-server` may take to answer PING.
const REDIS_STARTUP: Duration = Duration::from_secs(10);

/// The `redis-server` on PATH (as `which` finds it), failing the test with what to run when
/// there is none.
fn redis_server_bin() -> PathBuf {
    let found = Command::new("which")
        .arg("redis-server")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|path| !path.is_empty())
        // No `which` at all: look through PATH ourselves.
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("redis-server"))
                .find(|path| path.is_file())
        });
    match found {
        Some(path) => path,
        None => panic!("redis-server not found: run scripts/ensure-tools --tests"),
    }
}

/// Whether a Redis answers `PING` with `+PONG` on 127.0.0.1:`port`.
fn redis_pongs(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    if conn.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// A private `redis-server` on a free port of 127.0.0.1 (never the machine's own on 6379),
/// without persistence, in its own temp folder; killed when dropped.
pub struct Redis {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts it and waits until it answers PING.
    pub fn start() -> Self {
        let bin = redis_server_bin();
        let dir = tempfile::Builder::new()
            .prefix("goflow-e2e-redis.")
            .tempdir()
            .expect("temp dir");
        let log_path = dir.path().join("redis.log");
        let mut last_error = String::new();
        // Another test may take the port between our pick and Redis's bind: pick again then.
        for _attempt in 1..=3 {
            let port = free_port();
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open the Redis log");
            let log_err = log.try_clone().expect("clone the log handle");
            let mut child = Command::new(&bin)
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--dir")
                .arg(dir.path())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + REDIS_STARTUP;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!("redis-server exited early ({status})");
                    break;
                }
                if redis_pongs(port) {
                    return Self {
                        dir,
                        port,
                        child: Some(child),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("redis-server did not answer PING within {REDIS_STARTUP:?}");
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "{last_error}; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    #[allow(dead_code)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills redis-server with SIGKILL (it keeps nothing on disk: its data is gone) and starts
    /// a new, empty one on the same port; waits until it answers PING.
    #[allow(dead_code)]
    pub fn restart_empty(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let bin = redis_server_bin();
        let log_path = self.dir.path().join("redis.log");
        let deadline = Instant::now() + REDIS_STARTUP;
        loop {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open the Redis log");
            let log_err = log.try_clone().expect("clone the log handle");
            let mut child = Command::new(&bin)
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            loop {
                if child.try_wait().unwrap().is_some() {
                    // The port may linger for a moment after the kill: start again.
                    break;
                }
                if redis_pongs(self.port) {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server did not start again on port {} within {REDIS_STARTUP:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:PORT`, for GOFLOW_BROKER.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Redis's own log, for failure messages.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// etcd: a private single-member cluster for leader election
// ---------------------------------------------------------------------------------------------

/// How long a fresh etcd may take to report itself healthy.
const ETCD_STARTUP: Duration = Duration::from_secs(20);

/// Debian's `etcd` (package etcd-server), on PATH or in /usr/bin.
fn etcd_bin() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .find(|path| path.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("etcd not found: run scripts/ensure-tools --tests (it installs Debian's etcd-server)")
        })
}

/// Whether etcd on 127.0.0.1:`port` answers `GET /health` with `"health":"true"`.
fn etcd_healthy(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.contains(r#""health":"true""#)
}

/// A private single-member etcd on free ports of 127.0.0.1, its data in a temp folder; killed
/// (SIGKILL) when dropped.
pub struct Etcd {
    /// Its data folder and log, removed when dropped.
    _dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts it and waits until `/health` says it is healthy.
    pub fn start() -> Self {
        let bin = etcd_bin();
        let dir = tempfile::Builder::new()
            .prefix("goflow-e2e-etcd.")
            .tempdir()
            .expect("temp dir");
        let log_path = dir.path().join("etcd.log");
        let mut last_error = String::new();
        // Another test may take a port between our pick and etcd's bind: pick again then.
        for attempt in 1..=3 {
            let port = free_port();
            let mut peer = free_port();
            while peer == port {
                peer = free_port();
            }
            let client_url = format!("http://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open the etcd log");
            let log_err = log.try_clone().expect("clone the log handle");
            let mut child = Command::new(&bin)
                .arg("--name")
                .arg("e2e")
                .arg("--data-dir")
                .arg(dir.path().join(format!("data{attempt}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("e2e={peer_url}")])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .env_remove("ETCDCTL_API")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + ETCD_STARTUP;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!("etcd exited early ({status})");
                    break;
                }
                if etcd_healthy(port) {
                    return Self {
                        _dir: dir,
                        port,
                        child: Some(child),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("etcd was not healthy within {ETCD_STARTUP:?}");
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        // etcd's info lines are long JSON: its errors first, so a cut report still shows why.
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                [
                    "\"level\":\"warn\"",
                    "\"level\":\"error\"",
                    "\"level\":\"fatal\"",
                    "\"level\":\"panic\"",
                ]
                .iter()
                .any(|level| l.contains(level))
                    || !l.starts_with('{')
            })
            .collect();
        panic!(
            "{last_error}; its warnings and errors:\n{}\nits log (tail):\n{}",
            errors[errors.len().saturating_sub(10)..].join("\n"),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }

    /// `http://127.0.0.1:PORT`, for --etcd-endpoints / GOFLOW_ETCD_ENDPOINTS.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process as /proc shows it: its parent and its start time (to tell a reused pid apart).
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the fields after the last ')' start with the state.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((ppid, start_time))
}

/// Every process below `root` (children, their children, ...), with its start time.
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let mut all = vec![];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, start)) = proc_stat(pid) {
                all.push((pid, ppid, start));
            }
        }
    }
    let mut found = vec![];
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start) in &all {
            if ppid == parent && pid != root && !found.iter().any(|&(p, _)| p == pid) {
                found.push((pid, start));
                frontier.push(pid);
            }
        }
    }
    found
}

/// One `goflow agent` (or `goflow executer`) child process, its stdout and stderr in a log
/// file. [`Agent::kill9`] is a crash: the agent's tries live on as orphans (goflow does not kill
/// them yet), and are killed when the `Agent` is dropped.
pub struct Agent {
    id: String,
    child: Option<Child>,
    log: PathBuf,
    /// Processes the agent had started when it was killed, with their start times.
    orphans: Vec<(u32, u64)>,
    /// How it ended, once it has.
    exit: Option<ExitStatus>,
}

impl Agent {
    /// `goflow agent --server SERVER --slots SLOTS EXTRA...` with GOFLOW_AGENT_ID=`id` and `env`
    /// added to a cleaned environment, in `cwd`, its output appended to `log`.
    pub fn start(
        server: &str,
        id: &str,
        slots: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        cwd: &Path,
        log: &Path,
    ) -> Self {
        let slots = slots.to_string();
        let mut args = vec!["agent", "--server", server, "--slots", &slots];
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        env.push(("GOFLOW_AGENT_ID", id));
        Self::start_args(id, &args, &env, cwd, log)
    }

    /// `goflow ARGS...` (an agent of any spelling), with `env` added to a cleaned environment;
    /// `id` only names it in messages.
    pub fn start_args(id: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path, log: &Path) -> Self {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open the agent log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log handle");
        let (program, args) = agent_command(args);
        let child = clean_env(&mut Command::new(&program))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            id: id.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            orphans: vec![],
            exit: None,
        }
    }

    #[allow(dead_code)]
    pub fn id(&self) -> &str {
        &self.id
    }

    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the agent printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log, headed by its id, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "agent {} log (tail):\n{}",
            self.id,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// Its exit status if it has exited (reaping it), None while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            self.exit = Some(status);
            self.child = None;
        }
        self.exit
    }

    /// Waits at most `limit` for it to exit on its own; None if it still runs.
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash: no shutdown at all. The tries it runs are left running (noted, to
    /// be killed when the `Agent` is dropped).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let below = descendants(child.id());
            self.orphans.extend(below);
            let _ = child.kill(); // SIGKILL on unix
            if let Ok(status) = child.wait() {
                self.exit = Some(status);
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for &(pid, start) in &self.orphans {
            // Only the very process we saw: the pid may have been reused since.
            if proc_stat(pid).is_some_and(|(_, now)| now == start) {
                let _ = Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Running: /proc/PID exists and its state is not Z (zombie) or X (dead).
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    !matches!(state, "Z" | "X" | "x")
}

/// Polls `probe` until it returns Some, for at most `limit`; `logs` explains a timeout.
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    logs: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if Instant::now() > deadline {
            panic!("waited {limit:?} for {what}\n{}", logs());
        }
        thread::sleep(Duration::from_millis(200));
    }
}
