//! TLS where secrets travel, and secrets never printed (issue 20), with the real binaries:
//! - `--auth` beyond loopback without `--tls-cert` is refused, naming TLS; `--insecure-plaintext`
//!   starts with a warning;
//! - a password in a `--database-url` / `--redis-url` flag is refused (it would show in `ps`);
//! - a mistyped database scheme does not print the password (probe item);
//! - `goflow webui` beyond loopback refuses a coordinator without authentication (probe item);
//! - Redis over TLS (`rediss://` + `--redis-ca`) with a password, through a coordinator and an
//!   agent that run a task, and the password appears in no log, no `/metrics`, no command line
//!   and no environment of a process goflow starts (probe item: the Redis password was logged);
//! - PostgreSQL over TLS (`sslmode=verify-full`, `sslrootcert`) with a password, on a server
//!   that accepts TLS connections only; a wrong CA is refused, naming TLS; the same for MariaDB
//!   (`ssl-mode=VERIFY_IDENTITY`, `ssl-ca`, `require_secure_transport`);
//! - etcd over TLS with authentication on, its password from a file.
//!
//! Certificates come from `scripts/make-test-ca`; Redis, PostgreSQL, MariaDB and etcd are
//! started here on loopback, each with its own folder, and stopped at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::sandbox::{Agent, Launch, Sandbox, clean_env, free_port, goflow_bin, run_goflow, wait_for};

const START: Duration = Duration::from_secs(60);

/// Runs `scripts/make-test-ca DIR`, failing the test when it cannot (openssl missing).
fn make_test_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-ca");
    let out = Command::new(&script).arg(dir).output().expect("run make-test-ca");
    assert!(out.status.success(), "make-test-ca failed: {}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A child process killed (and reaped) on drop.
struct Process(Child);

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

fn read(path: &Path) -> String {
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

fn cmdline(pid: u32) -> String {
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

/// A PostgreSQL that accepts TLS connections only (`hostssl`), with a password for `postgres`,
/// on a free port of 127.0.0.1, in its own folder.
struct TlsPostgres {
    _process: Process,
    port: u16,
    dir: tempfile::TempDir,
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries in /usr/lib/postgresql (scripts/test-services installs them)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join(name)
}

impl TlsPostgres {
    fn start(certs: &Path, password: &str) -> Self {
        let dir = temp("goflow-e2e-pg-tls.");
        let root = is_root();
        let as_postgres = |program: PathBuf| -> Command {
            if root {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            } else {
                Command::new(program)
            }
        };
        std::fs::copy(certs.join("server.pem"), dir.path().join("server.pem")).unwrap();
        std::fs::copy(certs.join("server.key"), dir.path().join("server.key")).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, password).unwrap();
        if root {
            let out = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
        }
        let data = dir.path().join("data");
        let out = as_postgres(postgres_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", text(&out));
        // TLS only: a plain connection finds no pg_hba.conf line.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("pg.log")).unwrap();
        if root {
            let _ = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path().join("pg.log"))
                .output();
        }
        let child = as_postgres(postgres_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.path().join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                dir.path().join("server.key").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let process = Process(child);
        let pg = Self {
            _process: process,
            port,
            dir,
        };
        wait_for(
            START,
            "PostgreSQL with TLS",
            || read(&pg.dir.path().join("pg.log")),
            || pg.psql("select 1").ok(),
        );
        pg.psql("create database goflow").unwrap();
        pg
    }

    /// `psql -Atc SQL` as postgres over the Unix socket.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(text(&out))
        }
    }
}

/// Whether this test runs as root (PostgreSQL then runs as user postgres).
fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

#[test]
fn postgres_over_tls_with_the_test_ca_and_sslmode_honoured() {
    const PASSWORD: &str = "pg-pw-0a9c4e71";
    let certs = temp("goflow-e2e-pg-ca.");
    make_test_ca(certs.path());
    // PostgreSQL reads its key as its own user; the CA stays readable for goflow.
    let pg = TlsPostgres::start(certs.path(), PASSWORD);
    let ca = certs.path().join("ca.pem");
    let url = |mode: &str, ca: &Path| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/goflow?sslmode={mode}&sslrootcert={}",
            pg.port,
            ca.display()
        )
    };
    let verified = url("verify-full", &ca);
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: vec![("GOFLOW_DATABASE_URL".into(), verified.clone().into())],
        own_database: true,
        ..Launch::default()
    });
    sb.apply(
        r#"
tasks:
  - id: pg_tls
    command: "echo over tls"
"#,
    );
    sb.ctl_ok(&["run", "-j", "pg_tls", "-d", "20260301", "--wait"]);
    let encrypted = pg
        .psql(
            "select count(*) filter (where s.ssl), count(*) filter (where not s.ssl) from pg_stat_ssl s \
             join pg_stat_activity a using (pid) where a.datname = 'goflow'",
        )
        .unwrap();
    let (with_tls, without) = encrypted.split_once('|').unwrap();
    assert!(
        with_tls.parse::<u32>().unwrap() > 0,
        "goflow's connections use TLS: {encrypted}"
    );
    assert_eq!(without, "0", "no goflow connection is plain: {encrypted}");
    let log = sb.log();
    assert!(log.contains("postgres:***@127.0.0.1"), "{log}");
    assert!(!log.contains(PASSWORD), "the log shows the password:\n{log}");
    drop(sb);

    // sslmode is honoured: a certificate of another CA fails verify-full, naming TLS ...
    let other = temp("goflow-e2e-pg-other-ca.");
    make_test_ca(other.path());
    let out = run_goflow(
        &["migrate"],
        &[(
            "GOFLOW_DATABASE_URL",
            &url("verify-full", &other.path().join("ca.pem")),
        )],
        other.path(),
        START,
    );
    let all = text(&out);
    assert!(!out.status.success() && all.contains("TLS"), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    // ... and sslmode=disable reaches a server that takes TLS only, which refuses it.
    let out = run_goflow(
        &["migrate"],
        &[("GOFLOW_DATABASE_URL", &url("disable", &ca))],
        other.path(),
        START,
    );
    let all = text(&out);
    assert!(!out.status.success() && all.contains("no encryption"), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
}

/// An etcd serving clients over TLS only, with authentication on (user root), on free ports of
/// 127.0.0.1.
struct TlsEtcd {
    _process: Process,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsEtcd {
    fn start(certs: &Path, root_password: &str) -> Self {
        let dir = temp("goflow-e2e-etcd-tls.");
        let port = free_port();
        let mut peer = free_port();
        while peer == port {
            peer = free_port();
        }
        let client = format!("https://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "tls", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .arg("--cert-file")
            .arg(certs.join("server.pem"))
            .arg("--key-file")
            .arg(certs.join("server.key"))
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCDCTL_API")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd is needed by this test (apt-get install -y etcd-server)");
        let etcd = Self {
            _process: Process(child),
            port,
            dir,
        };
        let ca = certs.join("ca.pem");
        wait_for(
            START,
            "etcd over TLS",
            || read(&etcd.dir.path().join("etcd.log")),
            || etcd.call(&ca, "/health", None).contains("true").then_some(()),
        );
        // Authentication on, through etcd's JSON gateway (no etcdctl needed): root and its role.
        for (path, body) in [
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_string()),
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"root","password":"{root_password}"}}"#),
            ),
            (
                "/v3/auth/user/grant",
                r#"{"user":"root","role":"root"}"#.to_string(),
            ),
            ("/v3/auth/enable", "{}".to_string()),
        ] {
            let answer = etcd.call(&ca, path, Some(&body));
            assert!(!answer.contains("\"error\""), "etcd {path}: {answer}");
        }
        etcd
    }

    /// `curl --cacert CA https://127.0.0.1:PORT/PATH` (a POST of `body` when given).
    fn call(&self, ca: &Path, path: &str, body: Option<&str>) -> String {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg(format!("https://127.0.0.1:{}{path}", self.port));
        if let Some(body) = body {
            command.args(["-X", "POST", "-d", body]);
        }
        let out = command.output().expect("curl is needed by this test");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

#[test]
fn etcd_over_tls_with_a_user_and_password_elects_the_leader() {
    const PASSWORD: &str = "etcd-pw-62b1f0";
    let certs = temp("goflow-e2e-etcd-ca.");
    make_test_ca(certs.path());
    let etcd = TlsEtcd::start(certs.path(), PASSWORD);
    let endpoint = format!("https://127.0.0.1:{}", etcd.port);
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // A wrong password fails at start, naming etcd, without showing either password.
    let dir = temp("goflow-e2e-etcd-wrong.");
    let wrong = "etcd-wrong-pw-77aa";
    let out = run_goflow(
        &[
            "coordinator",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--etcd-ca",
            ca,
        ],
        &[
            ("GOFLOW_ETCD_ENDPOINTS", &endpoint),
            ("GOFLOW_ETCD_USER", "root"),
            ("GOFLOW_ETCD_PASSWORD", wrong),
        ],
        dir.path(),
        START,
    );
    let all = text(&out);
    assert!(!out.status.success() && all.contains("etcd"), "{all}");
    assert!(!all.contains(wrong) && !all.contains(PASSWORD), "{all}");

    // The right one, from a file: this coordinator is elected through etcd over TLS.
    let password_file = certs.path().join("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let password_file = password_file.to_str().unwrap().to_string();
    let sb = Sandbox::start_with(|root| Launch {
        args: vec![
            "coordinator".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--etcd-user".into(),
            "root".into(),
            "--etcd-password-file".into(),
            password_file.clone().into(),
        ],
        env: vec![
            ("GOFLOW_ETCD_ENDPOINTS".into(), endpoint.clone().into()),
            ("GOFLOW_ETCD_CA".into(), ca.into()),
        ],
        ..Launch::default()
    });
    wait_for(
        START,
        "leadership through etcd",
        || sb.log_tail(30),
        || sb.log().contains("leading (etcd").then_some(()),
    );
    sb.apply(
        r#"
tasks:
  - id: etcd_tls
    command: "echo elected over tls"
"#,
    );
    sb.ctl_ok(&["run", "-j", "etcd_tls", "-d", "20260301", "--wait"]);
    assert!(!sb.log().contains(PASSWORD), "{}", sb.log());
    assert!(!cmdline(sb.pid().unwrap()).contains(PASSWORD));
}

/// A MariaDB that takes TLS connections only (`require_secure_transport`), with a user
/// `goflow` and a password, on a free port of 127.0.0.1.
struct TlsMariaDb {
    _process: Process,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsMariaDb {
    fn start(certs: &Path, password: &str) -> Self {
        let dir = temp("goflow-e2e-mariadb-tls.");
        let user = if is_root() {
            "mysql".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(certs.join(file), dir.path().join(file)).unwrap();
        }
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", &user])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
        }
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .output()
            .expect("mariadb-install-db (scripts/test-services installs MariaDB)");
        assert!(out.status.success(), "mariadb-install-db: {}", text(&out));
        let port = free_port();
        let socket = dir.path().join("sock");
        let log = std::fs::File::create(dir.path().join("mariadb.log")).unwrap();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--ssl-cert={}", dir.path().join("server.pem").display()))
            .arg(format!("--ssl-key={}", dir.path().join("server.key").display()))
            .arg(format!("--ssl-ca={}", dir.path().join("ca.pem").display()))
            .arg("--require-secure-transport=ON")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        let db = Self {
            _process: Process(child),
            port,
            dir,
        };
        wait_for(
            START,
            "MariaDB with TLS",
            || read(&db.dir.path().join("mariadb.log")),
            || db.sql("select 1").ok(),
        );
        // Named for every host a loopback client may be seen as: install-db's anonymous
        // ''@'localhost' would otherwise take precedence over 'goflow'@'%'.
        let mut statements = vec!["CREATE DATABASE goflow".to_string()];
        for host in ["localhost", "127.0.0.1", "%"] {
            statements.push(format!(
                "CREATE USER 'goflow'@'{host}' IDENTIFIED BY '{password}'"
            ));
            statements.push(format!("GRANT ALL ON goflow.* TO 'goflow'@'{host}'"));
        }
        db.sql(&statements.join("; ")).unwrap();
        db
    }

    /// `mariadb -uroot -e SQL` over the Unix socket (which counts as secure transport).
    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("-uroot")
            .arg(format!("--socket={}", self.dir.path().join("sock").display()))
            .args(["-N", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(text(&out))
        }
    }
}

#[test]
fn mysql_over_tls_with_the_test_ca_and_ssl_mode_honoured() {
    const PASSWORD: &str = "my-pw-4d0c9b";
    let certs = temp("goflow-e2e-my-ca.");
    make_test_ca(certs.path());
    let db = TlsMariaDb::start(certs.path(), PASSWORD);
    let url = |mode: &str, ca: &Path| {
        format!(
            "mysql://goflow:{PASSWORD}@127.0.0.1:{}/goflow?ssl-mode={mode}&ssl-ca={}",
            db.port,
            ca.display()
        )
    };
    let verified = url("VERIFY_IDENTITY", &certs.path().join("ca.pem"));
    let sb = Sandbox::start_with(|root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: vec![("GOFLOW_DATABASE_URL".into(), verified.clone().into())],
        own_database: true,
        ..Launch::default()
    });
    sb.apply(
        r#"
tasks:
  - id: my_tls
    command: "echo over tls"
"#,
    );
    sb.ctl_ok(&["run", "-j", "my_tls", "-d", "20260301", "--wait"]);
    let log = sb.log();
    assert!(log.contains("goflow:***@127.0.0.1"), "{log}");
    assert!(!log.contains(PASSWORD), "the log shows the password:\n{log}");
    drop(sb);

    // ssl-mode is honoured: another CA fails VERIFY_IDENTITY, naming TLS; DISABLED reaches a
    // server that takes TLS only, which refuses it.
    let other = temp("goflow-e2e-my-other-ca.");
    make_test_ca(other.path());
    for (mode, ca, expected) in [
        ("VERIFY_IDENTITY", other.path().join("ca.pem"), "TLS"),
        // MariaDB answers a plain login under require_secure_transport as refused credentials
        // (the same ones that work over TLS above).
        ("DISABLED", certs.path().join("ca.pem"), "refused"),
    ] {
        let out = run_goflow(
            &["migrate"],
            &[("GOFLOW_DATABASE_URL", &url(mode, &ca))],
            other.path(),
            START,
        );
        let all = text(&out);
        assert!(!out.status.success() && all.contains(expected), "{mode}: {all}");
        assert!(!all.contains(PASSWORD), "{all}");
    }
}
