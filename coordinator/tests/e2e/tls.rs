//! TLS (issue 9): a real `goflow standalone --tls-cert --tls-key --ca` with certificates made
//! by `scripts/make-test-ca`, driven by the real goflowctl over https:// with the CA; a client
//! with another CA (or none) is refused with a word about the certificate; the web UI answers
//! over HTTPS (checked with `curl --cacert`). A task run proves the embedded agent reaches its
//! coordinator over TLS too, and the web UI's pages prove it does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::sandbox::{clean_env, free_port, goflow_bin, suite_database};

/// Runs `scripts/make-test-ca DIR`; the test fails when it cannot (openssl missing...).
fn make_test_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-ca");
    let out = Command::new(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "make-test-ca failed (it needs openssl):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["ca.pem", "server.pem", "server.key"] {
        assert!(dir.join(file).is_file(), "make-test-ca made no {file}");
    }
}

/// Client certificates from the test CA's script: `args` says which (`--client`, `--agent
/// ID`), `made` is the certificate file it must leave in `dir`.
fn make_client_certs(dir: &Path, args: &[&str], made: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-ca");
    let out = Command::new(&script).arg(dir).args(args).output().unwrap();
    assert!(out.status.success() && dir.join(made).is_file(), "{out:?}");
}

/// A gRPC and an HTTP port, free and not the same.
fn two_ports() -> (u16, u16) {
    let grpc_port = free_port();
    let mut http_port = free_port();
    while http_port == grpc_port {
        http_port = free_port();
    }
    (grpc_port, http_port)
}

fn goflowctl_bin() -> PathBuf {
    let ctl = goflow_bin().with_file_name(format!("goflowctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        ctl.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        ctl.display()
    );
    ctl
}

/// `goflowctl --server SERVER ARGS...` with a clean environment, at most 60 s.
fn ctl(server: &str, args: &[&str]) -> Output {
    let mut child = clean_env(&mut Command::new(goflowctl_bin()))
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start goflowctl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`goflowctl --server {server} {}` hangs", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` an https:// URL with `--cacert CA`: (success, body + error).
fn curl(url: &str, ca: &Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl is needed by this test (apt-get install -y curl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A `goflow` child process, killed on drop.
struct Goflow {
    child: Child,
    log: PathBuf,
}

impl Goflow {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Goflow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `goflow ARGS...` in `dir` with a clean environment plus `env`, its output to
/// `dir/NAME.log`.
fn spawn_goflow(dir: &Path, name: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Goflow {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = clean_env(&mut Command::new(goflow_bin()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start goflow");
    Goflow { child, log }
}

/// Polls `what` every 200 ms until it holds, for at most `limit`; false if it never did.
fn eventually(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if what() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

/// mTLS for agents: a coordinator with `--tls-client-ca` dispatching through Redis takes an
/// agent presenting a certificate of that CA, which runs a task; an agent with only `--ca` is
/// refused, told to present a certificate.
#[test]
fn agents_need_a_client_certificate_under_tls_client_ca() {
    const SECRET: &str = "e2e-tls-agent-secret-0123456789";
    let dir = tempfile::Builder::new()
        .prefix("goflow-e2e-mtls.")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let (servers, agents) = (root.join("servers"), root.join("agents"));
    make_test_ca(&servers);
    make_client_certs(&agents, &["--client"], "client.pem");

    let redis = crate::sandbox::Redis::start();
    let database = suite_database();
    let (grpc_port, http_port) = two_ports();
    let path = |p: PathBuf| p.into_os_string();
    let data = path(root.join("data"));
    let grpc_listen = std::ffi::OsString::from(format!("127.0.0.1:{grpc_port}"));
    let http_listen = std::ffi::OsString::from(format!("127.0.0.1:{http_port}"));
    let (cert, key, ca, client_ca) = (
        path(servers.join("server.pem")),
        path(servers.join("server.key")),
        path(servers.join("ca.pem")),
        path(agents.join("ca.pem")),
    );
    let broker = redis.url();
    let mut env = vec![
        ("GOFLOW_BROKER", broker.as_str()),
        ("GOFLOW_AGENT_SECRET", SECRET),
    ];
    if let Some(db) = &database {
        env.push(("GOFLOW_DATABASE_URL", db.url.as_str()));
    }
    let args: Vec<&std::ffi::OsStr> = ["coordinator", "--data-dir"]
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([data.as_os_str()])
        .chain(["--grpc-listen"].iter().map(std::ffi::OsStr::new))
        .chain([grpc_listen.as_os_str()])
        .chain(["--http-listen"].iter().map(std::ffi::OsStr::new))
        .chain([http_listen.as_os_str()])
        .chain(["--tls-cert"].iter().map(std::ffi::OsStr::new))
        .chain([cert.as_os_str()])
        .chain(["--tls-key"].iter().map(std::ffi::OsStr::new))
        .chain([key.as_os_str()])
        .chain(["--ca"].iter().map(std::ffi::OsStr::new))
        .chain([ca.as_os_str()])
        .chain(["--tls-client-ca"].iter().map(std::ffi::OsStr::new))
        .chain([client_ca.as_os_str()])
        .collect();
    let mut coordinator = spawn_goflow(root, "coordinator", &args, &env);
    let server = format!("https://127.0.0.1:{grpc_port}");
    let ca_arg = servers.join("ca.pem");
    let ca_arg = ca_arg.to_str().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || ctl(
            &server,
            &["--ca", ca_arg, "tasks"]
        )
        .status
        .success()),
        "the coordinator never answered goflowctl --ca (goflowctl needs no client certificate):\n{}",
        coordinator.log()
    );

    let agent_env = [
        ("GOFLOW_BROKER", broker.as_str()),
        ("GOFLOW_AGENT_SECRET", SECRET),
    ];
    let agent_args = |id: &str, identity: bool| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = [
            "agent",
            "--coordinator",
            &server,
            "--id",
            id,
            "--slots",
            "1",
            "--ca",
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.push(ca.clone());
        if identity {
            args.extend(["--tls-cert".into(), path(agents.join("client.pem"))]);
            args.extend(["--tls-key".into(), path(agents.join("client.key"))]);
        }
        args
    };
    let stranger_args = agent_args("no-cert", false);
    let stranger = spawn_goflow(
        root,
        "agent-no-cert",
        &stranger_args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        &agent_env,
    );
    let member_args = agent_args("with-cert", true);
    let member = spawn_goflow(
        root,
        "agent-with-cert",
        &member_args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        &agent_env,
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            String::from_utf8_lossy(&ctl(&server, &["--ca", ca_arg, "agents"]).stdout).contains("with-cert")
        }),
        "the agent with a client certificate never registered:\n{}\ncoordinator:\n{}",
        member.log(),
        coordinator.log()
    );
    assert!(
        eventually(Duration::from_secs(20), || stranger
            .log()
            .contains("client certificate")),
        "the agent without a certificate was not told why it is refused:\n{}",
        stranger.log()
    );
    let agents_list = ctl(&server, &["--ca", ca_arg, "agents"]);
    assert!(
        !String::from_utf8_lossy(&agents_list.stdout).contains("no-cert"),
        "the agent without a certificate registered:\n{}",
        text(&agents_list)
    );

    // The member runs a task: claim, logs and report over mTLS.
    let marker = root.join("ran.txt");
    let yaml = root.join("dag.yaml");
    std::fs::write(
        &yaml,
        format!(
            "tasks:\n  - id: mtls_hello\n    command: \"echo by-agent > {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = ctl(&server, &["--ca", ca_arg, "apply", "-f", yaml.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ctl(
        &server,
        &[
            "--ca",
            ca_arg,
            "run",
            "-j",
            "mtls_hello",
            "-d",
            "2026-01-31",
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "run --wait:\n{}\nagent:\n{}\ncoordinator:\n{}",
        text(&out),
        member.log(),
        coordinator.log()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "by-agent"
    );
    assert!(
        coordinator.child.try_wait().unwrap().is_none(),
        "{}",
        coordinator.log()
    );
    drop((member, stranger));
    let _ = coordinator.child.kill();
}

/// mTLS as an agent's identity (issue 20): under `--tls-client-ca`, with no shared secret and
/// no token, an agent presenting a certificate whose CN is `a1` registers and runs as a1; the
/// same certificate cannot register as `a2` (PERMISSION_DENIED); an agent with neither a
/// certificate nor a token is refused. Neither refused agent is ever listed, and /metrics
/// counts both refusals by reason.
#[test]
fn an_agent_certificate_names_the_agent_without_a_token() {
    let dir = tempfile::Builder::new()
        .prefix("goflow-e2e-mtls-id.")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let (servers, agents) = (root.join("servers"), root.join("agents"));
    make_test_ca(&servers);
    make_client_certs(&agents, &["--agent", "a1"], "agent-a1.pem");

    let redis = crate::sandbox::Redis::start();
    let database = suite_database();
    let (grpc_port, http_port) = two_ports();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (cert, key, ca, client_ca) = (
        s(servers.join("server.pem")),
        s(servers.join("server.key")),
        s(servers.join("ca.pem")),
        s(agents.join("ca.pem")),
    );
    let (data, grpc_listen, http_listen) = (
        s(root.join("data")),
        format!("127.0.0.1:{grpc_port}"),
        format!("127.0.0.1:{http_port}"),
    );
    let broker = redis.url();
    // No shared secret: agents are known by their certificate (or a token) only.
    let mut env = vec![("GOFLOW_BROKER", broker.as_str())];
    if let Some(db) = &database {
        env.push(("GOFLOW_DATABASE_URL", db.url.as_str()));
    }
    fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }
    fn refs(args: &[std::ffi::OsString]) -> Vec<&std::ffi::OsStr> {
        args.iter().map(|a| a.as_os_str()).collect()
    }
    let coordinator_args = os(&[
        "coordinator",
        "--data-dir",
        &data,
        "--grpc-listen",
        &grpc_listen,
        "--http-listen",
        &http_listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--ca",
        &ca,
        "--tls-client-ca",
        &client_ca,
    ]);
    let coordinator = spawn_goflow(root, "coordinator", &refs(&coordinator_args), &env);
    let server = format!("https://127.0.0.1:{grpc_port}");
    assert!(
        eventually(Duration::from_secs(30), || ctl(&server, &["--ca", &ca, "tasks"])
            .status
            .success()),
        "the coordinator never answered:\n{}",
        coordinator.log()
    );
    let agent_env = [("GOFLOW_BROKER", broker.as_str())];
    let (a1_cert, a1_key) = (s(agents.join("agent-a1.pem")), s(agents.join("agent-a1.key")));
    let agent = |id: &str, with_cert: bool| {
        let mut args = vec![
            "agent",
            "--coordinator",
            &server,
            "--id",
            id,
            "--slots",
            "1",
            "--ca",
            &ca,
        ];
        if with_cert {
            args.extend(["--tls-client-cert", &a1_cert, "--tls-client-key", &a1_key]);
        }
        let args = os(&args);
        spawn_goflow(root, &format!("agent-{id}"), &refs(&args), &agent_env)
    };
    let a1 = agent("a1", true);
    let impostor = agent("a2", true);
    let stranger = agent("a3", false);
    let listed = || String::from_utf8_lossy(&ctl(&server, &["--ca", &ca, "agents"]).stdout).to_string();
    assert!(
        eventually(Duration::from_secs(30), || listed().contains("a1")),
        "the agent with a1's certificate never registered:\n{}\ncoordinator:\n{}",
        a1.log(),
        coordinator.log()
    );
    assert!(
        // tonic words PERMISSION_DENIED's code as below; the message names both agents.
        eventually(Duration::from_secs(30), || impostor
            .log()
            .contains("The caller does not have permission")
            && impostor.log().contains("belongs to agent:a1, not to agent")),
        "a1's certificate registering as a2 was not refused with PERMISSION_DENIED:\n{}",
        impostor.log()
    );
    assert!(
        eventually(Duration::from_secs(30), || stranger
            .log()
            .contains("client certificate")),
        "the agent with no certificate and no token was not refused:\n{}",
        stranger.log()
    );
    let list = listed();
    assert!(
        !list.contains("a2") && !list.contains("a3"),
        "a refused agent is listed:\n{list}"
    );

    // a1 runs a task: claim, log and report, identified by its certificate alone.
    let marker = root.join("ran.txt");
    let yaml = root.join("dag.yaml");
    std::fs::write(
        &yaml,
        format!(
            "tasks:\n  - id: mtls_id\n    command: \"echo by-a1 > {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = ctl(&server, &["--ca", &ca, "apply", "-f", yaml.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ctl(
        &server,
        &["--ca", &ca, "run", "-j", "mtls_id", "-d", "2026-01-31", "--wait"],
    );
    assert!(
        out.status.success(),
        "run --wait:\n{}\nagent:\n{}\ncoordinator:\n{}",
        text(&out),
        a1.log(),
        coordinator.log()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "by-a1"
    );
    let out = ctl(&server, &["--ca", &ca, "status", "-j", "mtls_id", "-o", "json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"a1\""),
        "{}",
        text(&out)
    );

    // The refusals are counted by reason.
    let (ok, metrics) = curl(&format!("https://127.0.0.1:{http_port}/metrics"), Path::new(&ca));
    assert!(ok, "{metrics}");
    for reason in ["not_its_own", "no_client_certificate"] {
        let line = format!("goflow_agent_refusals_total{{reason=\"{reason}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "no {line}in /metrics:\n{metrics}");
    }
    drop((a1, impostor, stranger, coordinator));
}

#[test]
fn goflowctl_agent_and_web_ui_over_tls_with_the_ca_and_refused_without() {
    let dir = tempfile::Builder::new()
        .prefix("goflow-e2e-tls.")
        .tempdir()
        .unwrap();
    let (ours, theirs) = (dir.path().join("ca"), dir.path().join("other-ca"));
    make_test_ca(&ours);
    make_test_ca(&theirs);
    let ca = ours.join("ca.pem");
    let other_ca = theirs.join("ca.pem");

    let database = suite_database();
    let (grpc_port, http_port) = two_ports();
    let log = dir.path().join("standalone.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(goflow_bin());
    clean_env(&mut command);
    if let Some(db) = &database {
        command.env("GOFLOW_DATABASE_URL", &db.url);
    }
    let child = command
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--tls-cert")
        .arg(ours.join("server.pem"))
        .arg("--tls-key")
        .arg(ours.join("server.key"))
        .arg("--ca")
        .arg(&ca)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start goflow standalone");
    let mut goflow = Goflow { child, log };

    let server = format!("https://127.0.0.1:{grpc_port}");
    let ca_arg = ca.to_str().unwrap();
    // Up when goflowctl with the CA gets an answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = goflow.child.try_wait().unwrap() {
            panic!("goflow standalone exited ({status}):\n{}", goflow.log());
        }
        let out = ctl(&server, &["--ca", ca_arg, "tasks"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "goflowctl --ca never reached the TLS standalone:\n{}\nlog:\n{}",
            text(&out),
            goflow.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(goflow.log().contains("gRPC over TLS"), "{}", goflow.log());

    // A task applied and run over TLS succeeds: the embedded agent claims and reports over TLS.
    let marker = dir.path().join("ran.txt");
    let yaml = dir.path().join("dag.yaml");
    std::fs::write(
        &yaml,
        format!(
            "tasks:\n  - id: tls_hello\n    command: \"echo over-tls > {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = ctl(&server, &["--ca", ca_arg, "apply", "-f", yaml.to_str().unwrap()]);
    assert!(out.status.success(), "apply over TLS:\n{}", text(&out));
    let out = ctl(
        &server,
        &[
            "--ca",
            ca_arg,
            "run",
            "-j",
            "tls_hello",
            "-d",
            "2026-01-31",
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "run --wait over TLS:\n{}\nlog:\n{}",
        text(&out),
        goflow.log()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "over-tls"
    );
    let out = ctl(&server, &["--ca", ca_arg, "status", "-d", "2026-01-31"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("success"),
        "status over TLS:\n{}",
        text(&out)
    );
    // GOFLOW_CA works as --ca does.
    let out = clean_env(&mut Command::new(goflowctl_bin()))
        .env("GOFLOW_CA", &ca)
        .args(["--server", &server, "agents"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("standalone"),
        "GOFLOW_CA:\n{}",
        text(&out)
    );

    // Another CA, or none (the system's roots), or plain HTTP: refused, saying why.
    for (what, args) in [
        ("another CA", vec!["--ca", other_ca.to_str().unwrap(), "tasks"]),
        ("no CA", vec!["tasks"]),
    ] {
        let out = ctl(&server, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{what}: goflowctl trusted the server:\n{}",
            text(&out)
        );
        assert!(
            stderr.contains("certificate") && stderr.contains("--ca"),
            "{what}: the refusal does not speak of the certificate and --ca:\n{}",
            text(&out)
        );
        assert!(!stderr.contains("tls_hello"), "{}", text(&out));
    }
    let out = ctl(&format!("http://127.0.0.1:{grpc_port}"), &["tasks"]);
    assert!(!out.status.success(), "plain HTTP was answered:\n{}", text(&out));

    // The web UI over HTTPS, its pages read from the coordinator over TLS.
    let web = format!("https://127.0.0.1:{http_port}/tasks");
    let (ok, body) = curl(&web, &ca);
    assert!(
        ok && body.contains("tls_hello"),
        "web UI over HTTPS with the CA:\n{body}\nlog:\n{}",
        goflow.log()
    );
    let (ok, body) = curl(&web, &other_ca);
    assert!(!ok, "curl trusted the web UI with another CA:\n{body}");
    assert!(body.contains("certificate"), "{body}");
}

#[test]
fn a_ca_signed_certificate_without_the_ca_is_refused_at_start() {
    let dir = tempfile::Builder::new()
        .prefix("goflow-e2e-tls.")
        .tempdir()
        .unwrap();
    make_test_ca(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let out = crate::sandbox::run_goflow(
        &[
            "standalone",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
        dir.path(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without the CA:\n{stderr}");
    assert!(
        stderr.contains("not self-signed") && stderr.contains("--ca"),
        "{stderr}"
    );
}
