//! TLS where secrets travel, and secrets never printed (issue 20), with the real binaries:
//! - `--auth` beyond loopback without `--tls-cert` is refused, naming TLS; `--insecure-plaintext`
//!   starts with a warning;
//! - a password in a `--database-url` / `--redis-url` flag is refused (it would show in `ps`);
//! - a mistyped database scheme does not print the password (probe item);
//! - `goflow webui` beyond loopback refuses a coordinator without authentication (probe item);
//! - Redis over TLS (`rediss://` + `--redis-ca`) with a password, through a coordinator and an
//!   agent that run a task, and the password appears in no log, no `/metrics`, no command line
//!   and no environment of a process goflow starts (probe item: the Redis password was logged);
//!
//! TLS to PostgreSQL, MySQL and etcd is in `tls_stores.rs`. Certificates come from
//! `scripts/make-test-ca`; Redis is started here on loopback, in its own folder, and stopped
//! at the end.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::sandbox::{Agent, Launch, Sandbox, clean_env, free_port, goflow_bin, run_goflow, wait_for};

pub(crate) const START: Duration = Duration::from_secs(60);

/// Runs `scripts/make-test-ca DIR`, failing the test when it cannot (openssl missing).
pub(crate) fn make_test_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-ca");
    let out = Command::new(&script).arg(dir).output().expect("run make-test-ca");
    assert!(out.status.success(), "make-test-ca failed: {}", text(&out));
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A child process killed (and reaped) on drop.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `goflow ARGS...` in the background with a clean environment plus `env`, output to `log`.
fn spawn_goflow(args: &[&str], env: &[(&str, &str)], cwd: &Path, log: &Path) -> Process {
    let file = std::fs::File::create(log).unwrap();
    let child = clean_env(&mut Command::new(goflow_bin()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start goflow");
    Process(child)
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `curl -sS URL` (plain HTTP on loopback): the body, or the error.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", url])
        .output()
        .expect("curl is needed by this test");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn auth_beyond_loopback_needs_tls_unless_insecure_plaintext() {
    let dir = temp("goflow-e2e-tlsreq.");
    let grpc = format!("0.0.0.0:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let args = [
        "standalone",
        "--auth",
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-listen",
        &grpc,
        "--http-listen",
        &http,
    ];
    let out = run_goflow(&args, &[], dir.path(), START);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        err.contains("TLS") && err.contains("--tls-cert") && err.contains(&grpc),
        "the refusal names TLS, the flag and the address: {}",
        text(&out)
    );
    assert!(
        !data.join("goflow.db").exists(),
        "a refused start changes nothing stored"
    );

    // The explicit override starts, warning about it.
    let log = dir.path().join("insecure.log");
    let mut with_override = args.to_vec();
    with_override.push("--insecure-plaintext");
    let _goflow = spawn_goflow(&with_override, &[], dir.path(), &log);
    wait_for(
        START,
        "the insecure-plaintext warning",
        || read(&log),
        || {
            let log = read(&log);
            (log.contains("--insecure-plaintext") && log.contains("goflow standalone is up")).then_some(())
        },
    );
    assert!(read(&log).contains("in clear"), "{}", read(&log));
}

#[test]
fn a_password_in_a_flag_is_refused_and_never_echoed() {
    let dir = temp("goflow-e2e-flagsecret.");
    const PASSWORD: &str = "flag-pw-8c41d";
    let url = format!("postgres://goflow:{PASSWORD}@127.0.0.1:1/goflow");
    let out = run_goflow(&["migrate", "--database-url", &url], &[], dir.path(), START);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("GOFLOW_DATABASE_URL") && all.contains("--database-url-file"),
        "{all}"
    );
    assert!(!all.contains(PASSWORD), "the password is echoed: {all}");

    let redis = format!("redis://:{PASSWORD}@127.0.0.1:1");
    let out = run_goflow(
        &["agent", "--redis-url", &redis, "--coordinator", "127.0.0.1:1"],
        &[],
        dir.path(),
        START,
    );
    let all = text(&out);
    assert!(!out.status.success() && all.contains("GOFLOW_REDIS_URL"), "{all}");
    assert!(!all.contains(PASSWORD), "the password is echoed: {all}");

    // From a file it is taken (and the server's refusal does not echo it either).
    let file = dir.path().join("db-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let out = run_goflow(
        &["migrate", "--database-url-file", file.to_str().unwrap()],
        &[],
        dir.path(),
        START,
    );
    let all = text(&out);
    assert!(
        !out.status.success() && all.contains("cannot open the PostgreSQL database"),
        "{all}"
    );
    assert!(all.contains("goflow:***@127.0.0.1:1"), "{all}");
    assert!(!all.contains(PASSWORD), "the password is echoed: {all}");
}

/// Probe item: `postgres//user:pw@...` printed the password.
#[test]
fn a_mistyped_database_scheme_does_not_print_the_password() {
    let dir = temp("goflow-e2e-typo.");
    const PASSWORD: &str = "typo-pw-51e0a";
    for typo in [
        format!("postgres//goflow:{PASSWORD}@127.0.0.1:5432/goflow"),
        format!("postgress://goflow:{PASSWORD}@127.0.0.1:5432/goflow"),
        format!("postgres:/goflow:{PASSWORD}@127.0.0.1:5432/goflow"),
    ] {
        let out = run_goflow(&["migrate"], &[("GOFLOW_DATABASE_URL", &typo)], dir.path(), START);
        let all = text(&out);
        assert!(!out.status.success(), "{typo}: {all}");
        assert!(
            all.contains("GOFLOW_DATABASE_URL"),
            "the message names the setting: {all}"
        );
        assert!(!all.contains(PASSWORD), "{typo} printed the password: {all}");
    }
}

/// Probe item: `goflow webui --http-listen 0.0.0.0` in front of a coordinator without auth.
#[test]
fn the_web_ui_beyond_loopback_refuses_a_coordinator_without_auth() {
    let open = Sandbox::start();
    let dir = temp("goflow-e2e-webui.");
    let http = format!("0.0.0.0:{}", free_port());
    let out = run_goflow(
        &[
            "webui",
            "--coordinator",
            &open.server_url(),
            "--http-listen",
            &http,
            "--insecure-plaintext",
        ],
        &[],
        dir.path(),
        START,
    );
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("authentication off") && all.contains("--auth"),
        "the refusal says why: {all}"
    );

    // In front of a coordinator with authentication the same start serves (without TLS only
    // with --insecure-plaintext, since its login form takes passwords).
    let guarded = Sandbox::start_with(|root| Launch {
        args: vec![
            "standalone".into(),
            "--auth".into(),
            "--data-dir".into(),
            root.join("data").into(),
        ],
        ..Launch::default()
    });
    let without_tls = run_goflow(
        &[
            "webui",
            "--coordinator",
            &guarded.server_url(),
            "--http-listen",
            &http,
        ],
        &[],
        dir.path(),
        START,
    );
    let all = text(&without_tls);
    assert!(!without_tls.status.success() && all.contains("TLS"), "{all}");
    let log = dir.path().join("webui.log");
    let _webui = spawn_goflow(
        &[
            "webui",
            "--coordinator",
            &guarded.server_url(),
            "--http-listen",
            &http,
            "--insecure-plaintext",
        ],
        &[],
        dir.path(),
        &log,
    );
    let port = http.rsplit_once(':').unwrap().1;
    let login = wait_for(
        START,
        "the web UI to answer",
        || read(&log),
        || {
            let page = curl(&format!("http://127.0.0.1:{port}/login"));
            page.contains("<form").then_some(page)
        },
    );
    assert!(login.contains("password"), "{login}");
}

/// A `redis-server` serving TLS only, with a password, on a free port of 127.0.0.1.
struct TlsRedis {
    _process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(certs: &Path, password: &str) -> Self {
        let dir = temp("goflow-e2e-redis-tls.");
        // The password goes in a config file, not on redis-server's command line.
        let conf = dir.path().join("redis.conf");
        let port = free_port();
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\nrequirepass {password}\nsave \"\"\n\
                 appendonly no\ndir {}\n",
                certs.join("server.pem").display(),
                certs.join("server.key").display(),
                certs.join("ca.pem").display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server is needed by this test");
        let process = Process(child);
        let log_path = dir.path().join("redis.log");
        wait_for(
            START,
            "redis-server over TLS",
            || read(&log_path),
            || {
                read(&log_path)
                    .contains("Ready to accept connections")
                    .then_some(())
            },
        );
        Self {
            _process: process,
            port,
            _dir: dir,
        }
    }
}

/// Every process whose parent chain reaches `root`, with its command line and environment.
fn descendants(root: u32) -> Vec<(u32, String, String)> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut at = pid;
        let mut hops = 0;
        while let Some(parent) = parent_of(at) {
            if parent == root {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                found.push((
                    pid,
                    String::from_utf8_lossy(&cmdline).replace('\0', " "),
                    String::from_utf8_lossy(&environ).replace('\0', " "),
                ));
                break;
            }
            if parent <= 1 || hops > 64 {
                break;
            }
            at = parent;
            hops += 1;
        }
    }
    found
}

pub(crate) fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

#[test]
fn redis_over_tls_with_a_password_that_no_log_metric_or_command_line_shows() {
    const REDIS_PASSWORD: &str = "redis-pw-3f9b27c1";
    const SECRET: &str = "e2e-secrets-agent-secret-7d2e";
    let certs = temp("goflow-e2e-redis-ca.");
    make_test_ca(certs.path());
    let redis = TlsRedis::start(certs.path(), REDIS_PASSWORD);
    let url = format!("rediss://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let sb = Sandbox::start_with(|root| Launch {
        args: vec![
            "coordinator".into(),
            "--data-dir".into(),
            root.join("data").into(),
        ],
        env: vec![
            ("GOFLOW_REDIS_URL".into(), url.clone().into()),
            ("GOFLOW_REDIS_CA".into(), ca.into()),
            ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
            ("GOFLOW_HEARTBEAT_INTERVAL".into(), "1".into()),
        ],
        ..Launch::default()
    });
    let agent_log = sb.root().join("agent.log");
    let agent = Agent::start(
        &sb.server_url(),
        "tls-agent",
        2,
        &[],
        &[
            ("GOFLOW_REDIS_URL", &url),
            ("GOFLOW_REDIS_CA", ca),
            ("GOFLOW_AGENT_SECRET", SECRET),
        ],
        &sb.work(),
        &agent_log,
    );
    sb.apply(
        r#"
tasks:
  - id: sec_env
    command: "sleep 3; env; echo sec_env done"
"#,
    );
    let day = "20260301";
    sb.ctl_ok(&["run", "-j", "sec_env", "-d", day]);
    // While the task runs: no process the agent started carries a secret on its command line
    // or in its environment.
    let agent_pid = agent.pid().expect("the agent runs");
    let running = wait_for(
        START,
        "the task's shell under the agent",
        || format!("{}\n{}", sb.log_tail(30), agent.log_tail(30)),
        || {
            let found = descendants(agent_pid);
            found
                .iter()
                .any(|(_, cmd, _)| cmd.contains("sec_env done"))
                .then_some(found)
        },
    );
    for (pid, cmd, env) in &running {
        for secret in [REDIS_PASSWORD, SECRET] {
            assert!(
                !cmd.contains(secret),
                "process {pid} `{cmd}` shows a secret on its command line"
            );
            assert!(
                !env.contains(secret),
                "process {pid} `{cmd}` inherits a secret in its environment"
            );
        }
    }
    sb.wait_status(day, START, "sec_env to succeed", |rows| {
        crate::sandbox::state_of(rows, "sec_env") == Some("success")
    });
    let task_log = sb.ctl_ok(&["logs", "-j", "sec_env", "-d", day]);
    assert!(task_log.contains("sec_env done"), "{task_log}");

    let web = sb
        .log()
        .split("web UI on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_end_matches(',').to_string())
        .expect("the coordinator logs its web UI address");
    let metrics = curl(&format!("{web}/metrics"));
    assert!(metrics.contains("goflow_"), "{metrics}");

    let coordinator_log = sb.log();
    let agent_text = agent.log();
    assert!(
        coordinator_log.contains(&format!("rediss://:***@127.0.0.1:{}", redis.port)),
        "the coordinator names Redis without its password:\n{coordinator_log}"
    );
    assert!(
        agent_text.contains("rediss://:***@"),
        "the agent names Redis without its password:\n{agent_text}"
    );
    for (what, text) in [
        ("the coordinator's log", coordinator_log.as_str()),
        ("the agent's log", agent_text.as_str()),
        ("/metrics", metrics.as_str()),
        ("the task's log", task_log.as_str()),
        ("the coordinator's command line", &cmdline(sb.pid().unwrap())),
        ("the agent's command line", &cmdline(agent_pid)),
    ] {
        for secret in [REDIS_PASSWORD, SECRET] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    }

    // An agent given another CA is refused by the TLS handshake, and says so without the
    // password.
    let other = temp("goflow-e2e-other-ca.");
    make_test_ca(other.path());
    let other_ca = other.path().join("ca.pem");
    let out = run_goflow(
        &["agent", "--coordinator", &sb.server_url()],
        &[
            ("GOFLOW_REDIS_URL", &url),
            ("GOFLOW_REDIS_CA", other_ca.to_str().unwrap()),
            ("GOFLOW_AGENT_SECRET", SECRET),
        ],
        &sb.work(),
        START,
    );
    let all = text(&out);
    assert!(
        !out.status.success() && all.contains("cannot reach Redis"),
        "{all}"
    );
    assert!(
        all.to_lowercase().contains("certificate"),
        "the error names the certificate: {all}"
    );
    assert!(!all.contains(REDIS_PASSWORD), "{all}");
}
