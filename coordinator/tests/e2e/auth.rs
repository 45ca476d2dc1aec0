//! Who may do what (issue 9), on a real `goflow standalone --auth`: users made with
//! `goflow user add` on its database (before the start, and while it runs), driven by the real
//! goflowctl (each person with their own HOME and XDG_CONFIG_HOME in a temp folder) and by a
//! raw gRPC client, as another language's client would call it.
//!
//! Every goflowctl call claims to be `mallory` (USER, which goflowctl sends as
//! `x-goflow-actor`): with authentication on, that claim must never reach the operations log.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use goflow_coordinator::testing::TestDatabase;
use goflow_proto as pb;
use pb::auth_service_client::AuthServiceClient;
use pb::control_service_client::ControlServiceClient;
use serde_json::Value;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::sandbox::{
    Agent, CTL_TIMEOUT, Launch, Redis, Sandbox, clean_env, goflow_bin, parse_array, suite_database,
};

/// The name every goflowctl call claims through USER (and so `x-goflow-actor`).
const CLAIMED: &str = "mallory";
const DAY: &str = "20260301";
/// What the agents of the cluster test and their coordinator share.
const AGENT_SECRET: &str = "e2e-auth-agent-secret-0123456789";
const DAG: &str = r#"
tasks:
  - id: auth_t
    command: "true"
"#;

/// The password of `user` in these tests (argon2 is optimised in dev builds: hashing is quick).
fn password(user: &str) -> String {
    format!("{user}-secret-pw")
}

/// Runs `cmd` with `stdin` (or none), failing the test if it takes over `limit`.
fn run(cmd: &mut Command, stdin: Option<&str>, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not return within {limit:?} (hangs?)");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `goflow user ARGS... --data-dir DATA` on the database the standalone uses (its
/// GOFLOW_DATABASE_URL on PostgreSQL and MySQL, the SQLite file in DATA otherwise).
fn goflow_user(data: &Path, db_url: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(goflow_bin());
    clean_env(&mut cmd);
    if let Some(url) = db_url {
        cmd.env("GOFLOW_DATABASE_URL", url);
    }
    cmd.arg("user").args(args).arg("--data-dir").arg(data);
    run(
        &mut cmd,
        stdin,
        Duration::from_secs(60),
        &format!("goflow user {}", args.join(" ")),
    )
}

fn add_user(data: &Path, db_url: Option<&str>, name: &str, role: &str) {
    let out = goflow_user(
        data,
        db_url,
        &["add", name, "--role", role, "--password-stdin"],
        Some(&format!("{}\n", password(name))),
    );
    assert!(
        out.status.success(),
        "goflow user add {name} failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A `goflow standalone --auth` (or `goflow coordinator --auth` with Redis and agents) whose
/// users exist before it starts.
struct Server {
    /// Dropped in this order: the agents, the standalone or coordinator, Redis, the database.
    agents: Vec<Agent>,
    sb: Sandbox,
    redis: Option<Redis>,
    db: Option<TestDatabase>,
    data: PathBuf,
    /// One folder per person: their HOME and XDG_CONFIG_HOME.
    people: TempDir,
    rt: tokio::runtime::Runtime,
}

impl Server {
    /// Creates `users` (name, role) with [`password`], then starts the standalone with --auth.
    fn start(users: &[(&str, &str)]) -> Self {
        Self::launch(users, None)
    }

    /// Like [`start`](Self::start), but `goflow coordinator --auth` dispatching through a
    /// private Redis to the separate agents `agents` (with the shared secret, no token).
    fn start_cluster(users: &[(&str, &str)], agents: &[&str]) -> Self {
        let mut server = Self::launch(users, Some(Redis::start()));
        let broker = server.redis.as_ref().unwrap().url();
        for id in agents {
            let log = server.sb.root().join(format!("agent-{id}.log"));
            let env = [
                ("GOFLOW_BROKER", broker.as_str()),
                ("GOFLOW_AGENT_SECRET", AGENT_SECRET),
            ];
            let agent = Agent::start(&server.sb.server_url(), id, 2, &[], &env, &server.sb.work(), &log);
            server.agents.push(agent);
        }
        server
    }

    fn launch(users: &[(&str, &str)], redis: Option<Redis>) -> Self {
        let db = suite_database();
        let db_url = db.as_ref().map(|d| d.url.clone());
        let mut data = PathBuf::new();
        let sb = Sandbox::start_with(|root| {
            data = root.join("data");
            for (name, role) in users {
                add_user(&data, db_url.as_deref(), name, role);
            }
            let mut env: Vec<(OsString, OsString)> = db_url
                .iter()
                .map(|u| ("GOFLOW_DATABASE_URL".into(), u.into()))
                .collect();
            let mode = match &redis {
                None => "standalone",
                Some(redis) => {
                    env.push(("GOFLOW_BROKER".into(), redis.url().into()));
                    env.push(("GOFLOW_AGENT_SECRET".into(), AGENT_SECRET.into()));
                    "coordinator"
                }
            };
            Launch {
                args: vec![
                    mode.into(),
                    "--auth".into(),
                    "--data-dir".into(),
                    data.clone().into(),
                ],
                env,
                own_database: true,
                ..Launch::default()
            }
        });
        let people = tempfile::Builder::new()
            .prefix("goflow-e2e-people.")
            .tempdir()
            .expect("temp dir");
        let server = Self {
            agents: vec![],
            sb,
            redis,
            db,
            data,
            people,
            rt: tokio::runtime::Runtime::new().expect("tokio runtime"),
        };
        server.wait_ready();
        server
    }

    /// The sandbox takes a server that asks for a login as up, which it may be before it
    /// leads: waits until the health service (no token needed) says ControlService serves.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut health = HealthClient::new(self.channel());
        loop {
            let answer = self.block(health.check(tonic_health::pb::HealthCheckRequest {
                service: "goflow.v1.ControlService".into(),
            }));
            match answer {
                Ok(a) if a.get_ref().status == ServingStatus::Serving as i32 => return,
                other if Instant::now() > deadline => panic!(
                    "ControlService was not SERVING within 30 s: {other:?}\n{}",
                    self.sb.log_tail(30)
                ),
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `goflow user ARGS...` on this server's database, while it runs.
    fn user(&self, args: &[&str], stdin: Option<&str>) -> Output {
        goflow_user(&self.data, self.db.as_ref().map(|d| d.url.as_str()), args, stdin)
    }

    fn add_user(&self, name: &str, role: &str) {
        add_user(&self.data, self.db.as_ref().map(|d| d.url.as_str()), name, role);
    }

    /// `who`'s XDG_CONFIG_HOME.
    fn xdg(&self, who: &str) -> PathBuf {
        self.people.path().join(who).join("xdg")
    }

    /// `who`'s HOME.
    fn home(&self, who: &str) -> PathBuf {
        self.people.path().join(who).join("home")
    }

    /// Where goflowctl keeps `who`'s logins.
    fn credentials(&self, who: &str) -> PathBuf {
        self.xdg(who).join("goflow").join("credentials")
    }

    /// `goflowctl --server URL ARGS...` as `who` (their own HOME and XDG_CONFIG_HOME, USER
    /// claiming [`CLAIMED`]), with `stdin` and `env` added.
    fn ctl_as(&self, who: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        std::fs::create_dir_all(self.home(who)).unwrap();
        let mut cmd = Command::new(goflow_bin().with_file_name("goflowctl"));
        clean_env(&mut cmd)
            .env("HOME", self.home(who))
            .env("XDG_CONFIG_HOME", self.xdg(who))
            .env("USER", CLAIMED)
            .env("LOGNAME", CLAIMED)
            .envs(env.iter().copied())
            .arg("--server")
            .arg(self.sb.server_url())
            .args(args)
            .current_dir(self.sb.work());
        run(
            &mut cmd,
            stdin,
            CTL_TIMEOUT,
            &format!("goflowctl {}", args.join(" ")),
        )
    }

    fn ctl(&self, who: &str, args: &[&str]) -> Output {
        self.ctl_as(who, args, None, &[])
    }

    fn ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.ctl(who, args);
        assert!(
            out.status.success(),
            "`goflowctl {}` as {who} failed\n{}",
            args.join(" "),
            self.sb.describe(&out)
        );
        text(&out.stdout)
    }

    /// Runs goflowctl as `who`, asserting failure; returns stderr.
    fn err(&self, who: &str, args: &[&str]) -> String {
        self.err_env(who, args, &[])
    }

    fn err_env(&self, who: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.ctl_as(who, args, None, env);
        assert!(
            !out.status.success(),
            "`goflowctl {}` as {who} succeeded but should have been refused\n{}",
            args.join(" "),
            self.sb.describe(&out)
        );
        text(&out.stderr)
    }

    /// `goflowctl login -u USER` as `who`, the password on standard input.
    fn login(&self, who: &str, user: &str, pass: &str) -> Output {
        self.ctl_as(who, &["login", "-u", user], Some(&format!("{pass}\n")), &[])
    }

    fn login_ok(&self, user: &str) {
        let out = self.login(user, user, &password(user));
        assert!(
            out.status.success(),
            "login of {user} failed\n{}",
            self.sb.describe(&out)
        );
    }

    /// Writes the test DAG and returns its path.
    fn dag(&self) -> String {
        self.sb.write("auth-dag.yaml", DAG).to_str().unwrap().to_string()
    }

    /// `goflowctl token create` as `who`: asserts that standard output is the token alone.
    fn create_token(&self, who: &str, name: &str, role: &str, expires: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--name", name, "--role", role];
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        let stdout = self.ok(who, &args);
        let token = stdout.trim().to_string();
        assert!(
            token.starts_with("gft_") && !token.contains(char::is_whitespace),
            "token create prints only the token on stdout, got {stdout:?}"
        );
        token
    }

    fn channel(&self) -> Channel {
        let url = self.sb.server_url();
        self.rt.block_on(async {
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        })
    }

    fn control(&self) -> ControlServiceClient<Channel> {
        ControlServiceClient::new(self.channel())
    }

    fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel())
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A session token for `user` through the raw AuthService.
    fn raw_login(&self, user: &str) -> String {
        let answer = self
            .block(self.auth().login(pb::LoginRequest {
                user: user.into(),
                password: password(user),
            }))
            .unwrap_or_else(|s| panic!("raw login of {user}: {s:?}"))
            .into_inner();
        assert!(answer.token.starts_with("gfs_"), "{answer:?}");
        answer.token
    }

    /// The ids of the tasks, through the raw client with `token`.
    fn raw_tasks(&self, token: Option<&str>) -> Result<Vec<String>, Status> {
        self.block(
            self.control()
                .list_tasks(request(pb::ListTasksRequest {}, token, None)),
        )
        .map(|r| r.into_inner().tasks.into_iter().map(|t| t.id).collect())
    }

    /// `history -o json` as `who`, oldest first, as (action, target, actor).
    /// The operations made over the API, oldest first (`goflow user` changes, made on the
    /// host, are left out: see `user_changes`).
    fn history(&self, who: &str) -> Vec<(String, String, String)> {
        self.all_history(who)
            .into_iter()
            .filter(|(action, _, _)| !action.starts_with("user-"))
            .collect()
    }

    /// `goflow user add/passwd/remove`, as the operations log has them, oldest first.
    fn user_changes(&self, who: &str) -> Vec<(String, String, String)> {
        self.all_history(who)
            .into_iter()
            .filter(|(action, _, _)| action.starts_with("user-"))
            .collect()
    }

    fn all_history(&self, who: &str) -> Vec<(String, String, String)> {
        let ops = parse_array(&self.ok(who, &["history", "-o", "json"]));
        ops.iter()
            .rev()
            .map(|o| {
                let field = |k: &str| o[k].as_str().unwrap_or_default().to_string();
                (field("action"), field("target"), field("actor"))
            })
            .collect()
    }
}

/// A request carrying `authorization: Bearer TOKEN` and `x-goflow-actor: ACTOR` when given.
fn request<T>(message: T, token: Option<&str>, actor: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(actor) = actor {
        request
            .metadata_mut()
            .insert("x-goflow-actor", actor.parse().unwrap());
    }
    request
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(got: Result<T, Status>, code: Code, says: &str) -> Status {
    match got {
        Err(status) if status.code() == code => {
            assert!(
                status.message().contains(says),
                "{code:?} should say {says:?}: {status:?}"
            );
            status
        }
        other => panic!("expected {code:?} ({says:?}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------

/// Without a login or token, goflowctl and a raw client are refused (and told how to log in),
/// nothing changes, and the health service still answers.
#[test]
fn auth_a_stranger_is_refused_but_health_answers() {
    let s = Server::start(&[("root", "admin")]);
    let dag = s.dag();

    for args in [
        vec!["tasks"],
        vec!["apply", "-f", dag.as_str()],
        vec!["run", "-j", "auth_t", "-d", DAY],
        vec!["token", "list"],
    ] {
        let stderr = s.err("stranger", &args);
        assert!(
            stderr.contains("not logged in") && stderr.contains("goflowctl login -u"),
            "`goflowctl {}` says how to log in: {stderr}",
            args.join(" ")
        );
    }
    // A token that is no token at all.
    let stderr = s.err("stranger", &["--token", "gft_0123456789abcdef", "tasks"]);
    assert!(stderr.contains("unknown, expired or revoked"), "{stderr}");

    // The raw client, without metadata (and with a claimed actor only).
    let says = "log in";
    assert_code(s.raw_tasks(None), Code::Unauthenticated, says);
    let apply = pb::ApplyTasksRequest {
        document: DAG.into(),
        source_name: "raw.yaml".into(),
        dry_run: false,
        prune: false,
    };
    assert_code(
        s.block(
            s.control()
                .apply_tasks(request(apply.clone(), None, Some("root"))),
        ),
        Code::Unauthenticated,
        says,
    );
    let run = pb::RunRequest {
        task: "auth_t".into(),
        etl_day: DAY.into(),
        ..Default::default()
    };
    assert_code(
        s.block(s.control().run(request(run, None, None))),
        Code::Unauthenticated,
        says,
    );
    assert_code(
        s.block(
            s.control()
                .list_operations(request(pb::ListOperationsRequest::default(), None, None)),
        ),
        Code::Unauthenticated,
        says,
    );
    assert_code(
        s.block(s.auth().who_am_i(request(pb::WhoAmIRequest {}, None, None))),
        Code::Unauthenticated,
        says,
    );
    let create = pb::CreateTokenRequest {
        name: "sneaky".into(),
        role: "admin".into(),
        expires_in_ms: 0,
    };
    assert_code(
        s.block(s.auth().create_token(request(create, None, None))),
        Code::Unauthenticated,
        says,
    );
    // A made-up bearer, either kind.
    for fake in ["gft_0000", "gfs_0000", "root"] {
        assert_code(
            s.raw_tasks(Some(fake)),
            Code::Unauthenticated,
            "unknown, expired or revoked",
        );
    }
    // A wrong password is no way in either.
    assert_code(
        s.block(s.auth().login(pb::LoginRequest {
            user: "root".into(),
            password: "not-the-password".into(),
        })),
        Code::Unauthenticated,
        "wrong user name or password",
    );

    // Health needs no token.
    let mut health = HealthClient::new(s.channel());
    for service in ["", "goflow.v1.ControlService"] {
        let answer = s
            .block(health.check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            }))
            .unwrap_or_else(|e| panic!("health of {service:?} without a token: {e:?}"))
            .into_inner();
        assert_eq!(
            answer.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    // Nothing the stranger tried happened.
    s.login_ok("root");
    assert_eq!(s.ok("root", &["tasks", "-o", "json"]).trim(), "[]");
    assert_eq!(s.history("root"), vec![], "the refused calls left no operation");
    assert_eq!(s.ok("root", &["token", "list", "-o", "json"]).trim(), "[]");
}

/// viewer < operator < editor < admin, each refused what its role may not do, with the role
/// named; API tokens made, listed and revoked by an admin; revoked and expired tokens refused.
#[test]
fn auth_roles_and_api_tokens() {
    let s = Server::start(&[("root", "admin"), ("vic", "viewer"), ("ed", "editor")]);
    let dag = s.dag();
    for user in ["root", "vic", "ed"] {
        s.login_ok(user);
    }
    let who = s.ok("vic", &["whoami"]);
    assert!(who.contains("vic") && who.contains("viewer"), "{who}");

    // An editor applies.
    s.ok("ed", &["apply", "-f", &dag]);

    // A viewer reads, but neither applies nor runs.
    assert!(s.ok("vic", &["tasks"]).contains("auth_t"));
    let tasks = parse_array(&s.ok("vic", &["tasks", "-o", "json"]));
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(
        parse_array(&s.ok("vic", &["status", "-d", DAY, "-o", "json"])),
        Vec::<Value>::new()
    );
    let stderr = s.err("vic", &["apply", "-f", &dag]);
    assert!(
        stderr.contains("permission denied") && stderr.contains("needs the editor role"),
        "{stderr}"
    );
    let stderr = s.err("vic", &["run", "-j", "auth_t", "-d", DAY]);
    assert!(
        stderr.contains("permission denied") && stderr.contains("needs the operator role"),
        "{stderr}"
    );
    let stderr = s.err("vic", &["pause", "-j", "auth_t"]);
    assert!(stderr.contains("needs the operator role"), "{stderr}");
    let stderr = s.err("vic", &["token", "list"]);
    assert!(stderr.contains("needs the admin role"), "{stderr}");
    let stderr = s.err("ed", &["token", "create", "--name", "mine", "--role", "admin"]);
    assert!(
        stderr.contains("needs the admin role"),
        "an editor makes no tokens: {stderr}"
    );
    assert_eq!(
        parse_array(&s.ok("vic", &["status", "-d", DAY, "-o", "json"])),
        Vec::<Value>::new(),
        "the refused run created no instance"
    );

    // An admin's operator token runs (the embedded agent runs the command) but cannot apply.
    let op = s.create_token("root", "ci-op", "operator", Some("90d"));
    let out = s.ctl_as(
        "robot",
        &["run", "-j", "auth_t", "-d", DAY, "--wait"],
        None,
        &[("GOFLOW_TOKEN", &op)],
    );
    assert!(
        out.status.success(),
        "operator token runs\n{}",
        s.sb.describe(&out)
    );
    let rows = parse_array(&s.ok("vic", &["status", "-d", DAY, "-o", "json"]));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["state"], "success", "{rows:#?}");
    let stderr = s.err("robot", &["--token", &op, "apply", "-f", &dag]);
    assert!(
        stderr.contains("token:ci-op is operator") && stderr.contains("needs the editor role"),
        "{stderr}"
    );
    let stderr = s.err("robot", &["--token", &op, "token", "list"]);
    assert!(stderr.contains("needs the admin role"), "{stderr}");
    // A given token wins over the stored login: root, passing the operator token, is an
    // operator for that call.
    let stderr = s.err("root", &["--token", &op, "apply", "-f", &dag]);
    assert!(stderr.contains("token:ci-op is operator"), "{stderr}");

    // An admin lists tokens (never the tokens themselves) and revokes them.
    let viewer_token = s.create_token("root", "ci-view", "viewer", None);
    let listed = s.ok("root", &["token", "list", "-o", "json"]);
    assert!(
        !listed.contains(&op[4..]) && !listed.contains(&viewer_token[4..]),
        "{listed}"
    );
    let listed = parse_array(&listed);
    let mut names: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["role"].as_str().unwrap(),
                t["created_by"].as_str().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [("ci-op", "operator", "root"), ("ci-view", "viewer", "root")],
        "{listed:#?}"
    );
    let table = s.ok("root", &["token", "list"]);
    assert!(table.contains("ci-op") && table.contains("ci-view"), "{table}");
    assert!(
        s.ok("robot", &["--token", &viewer_token, "tasks"])
            .contains("auth_t")
    );

    s.ok("root", &["token", "revoke", "ci-op"]);
    let stderr = s.err("robot", &["--token", &op, "tasks"]);
    assert!(
        stderr.contains("unknown, expired or revoked"),
        "revoked: {stderr}"
    );
    assert_code(
        s.raw_tasks(Some(&op)),
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
    let listed = parse_array(&s.ok("root", &["token", "list", "-o", "json"]));
    assert_eq!(listed.len(), 1, "ci-op is gone: {listed:#?}");
    assert_eq!(listed[0]["name"], "ci-view");
    let stderr = s.err("root", &["token", "revoke", "ci-op"]);
    assert!(stderr.contains("ci-op"), "revoking twice says which: {stderr}");
    // The other token is untouched.
    assert!(s.raw_tasks(Some(&viewer_token)).is_ok());

    // An expired token is refused.
    let started = Instant::now();
    let brief = s.create_token("root", "brief", "viewer", Some("2s"));
    let first = s.raw_tasks(Some(&brief));
    if started.elapsed() < Duration::from_millis(1800) {
        assert!(first.is_ok(), "a fresh token works: {first:?}");
    }
    thread::sleep(Duration::from_millis(2300).saturating_sub(started.elapsed()));
    assert_code(
        s.raw_tasks(Some(&brief)),
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
    let stderr = s.err("robot", &["--token", &brief, "tasks"]);
    assert!(
        stderr.contains("unknown, expired or revoked"),
        "expired: {stderr}"
    );
    let stderr = s.err(
        "root",
        &[
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "viewer",
            "--expires",
            "soon",
        ],
    );
    assert!(stderr.contains("soon"), "{stderr}");
}

/// A failed login writes nothing; a good one writes the session to a 0600 file in a private
/// folder under $XDG_CONFIG_HOME/goflow (and nothing under $HOME); logout ends the session.
#[test]
fn auth_credentials_file_is_private_and_a_wrong_password_stores_nothing() {
    let s = Server::start(&[("ann", "viewer")]);
    let file = s.credentials("ann");

    for (user, pass) in [("ann", "not-her-password"), ("nobody", "whatever-pw")] {
        let out = s.login("ann", user, pass);
        assert!(!out.status.success(), "{}", s.sb.describe(&out));
        assert!(
            text(&out.stderr).contains("wrong user name or password"),
            "{}",
            s.sb.describe(&out)
        );
        assert!(!file.exists(), "a failed login wrote {}", file.display());
    }
    assert!(!s.home("ann").join(".config").exists(), "nothing under HOME");

    s.login_ok("ann");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", file.display());
    let dir = file.parent().unwrap();
    let dir_mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o077, 0, "{} is mode {dir_mode:o}", dir.display());
    assert!(
        !s.home("ann").join(".config").exists(),
        "XDG_CONFIG_HOME wins over HOME"
    );
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains(&password("ann")),
        "the password is not kept: {stored}"
    );
    let json: Value = serde_json::from_str(&stored).unwrap();
    let session = &json["servers"][s.sb.server_url()];
    let token = session["token"].as_str().unwrap_or_else(|| panic!("{stored}"));
    assert!(token.starts_with("gfs_"), "{stored}");
    assert_eq!(session["user"], "ann", "{stored}");
    s.ok("ann", &["tasks"]);
    assert!(s.raw_tasks(Some(token)).is_ok());

    // A wrong password later changes nothing either.
    let out = s.login("ann", "ann", "not-her-password");
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        stored,
        "the file is unchanged"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.ok("ann", &["tasks"]);

    // Logout ends the session at the server, not only in the file.
    s.ok("ann", &["logout"]);
    assert_code(
        s.raw_tasks(Some(token)),
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
    let stderr = s.err("ann", &["tasks"]);
    assert!(stderr.contains("goflowctl login -u"), "{stderr}");
    let stored = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(!stored.contains(token), "logout forgets the token: {stored}");
}

/// The operations log names the authenticated user or `token:NAME`, whatever actor the client
/// claims (USER for goflowctl, `x-goflow-actor` for a raw client).
#[test]
fn auth_operations_log_names_the_principal_not_the_claimed_actor() {
    let s = Server::start(&[("root", "admin"), ("ed", "editor")]);
    let dag = s.dag();
    s.login_ok("root");
    s.login_ok("ed");

    s.ok("ed", &["apply", "-f", &dag]); // USER=mallory
    let op = s.create_token("root", "ci-op", "operator", None);
    s.ok(
        "robot",
        &["--token", &op, "run", "-j", "auth_t", "-d", DAY, "--wait"],
    );
    s.ok("robot", &["--token", &op, "pause", "-j", "auth_t"]);

    // A raw client with a session, claiming to be mallory.
    let ed = s.raw_login("ed");
    s.block(s.control().set_paused(request(
        pb::SetPausedRequest {
            task: "auth_t".into(),
            paused: false,
        },
        Some(&ed),
        Some(CLAIMED),
    )))
    .expect("ed unpauses");
    s.block(s.control().apply_tasks(request(
        pb::ApplyTasksRequest {
            document: DAG.replace("\"true\"", "\"exit 0\""),
            source_name: "raw.yaml".into(),
            dry_run: false,
            prune: false,
        },
        Some(&ed),
        Some("root"),
    )))
    .expect("ed applies");
    // A claimed actor alone is no login.
    assert_code(
        s.block(s.control().set_paused(request(
            pb::SetPausedRequest {
                task: "auth_t".into(),
                paused: true,
            },
            None,
            Some("root"),
        ))),
        Code::Unauthenticated,
        "log in",
    );
    s.ok("root", &["token", "revoke", "ci-op"]);

    let got = s.history("root");
    let want: Vec<(String, String, String)> = [
        ("apply", "auth-dag.yaml", "ed"),
        ("token-create", "ci-op", "root"),
        ("run", "auth_t@20260301", "token:ci-op"),
        ("pause", "auth_t", "token:ci-op"),
        ("unpause", "auth_t", "ed"),
        ("apply", "raw.yaml", "ed"),
        ("token-revoke", "ci-op", "root"),
    ]
    .iter()
    .map(|(a, t, w)| (a.to_string(), t.to_string(), w.to_string()))
    .collect();
    assert_eq!(got, want, "oldest first");
    let table = s.ok("root", &["history"]);
    assert!(
        table.contains("token:ci-op") && !table.contains(CLAIMED),
        "{table}"
    );
}

/// `goflow user passwd` and `remove` while the server runs end the user's sessions at once;
/// `user add` while it runs lets the new user in at once.
#[test]
fn auth_password_change_and_removal_end_sessions() {
    let s = Server::start(&[("ann", "viewer"), ("bob", "viewer")]);
    s.login_ok("ann");
    s.login_ok("bob");
    s.ok("ann", &["tasks"]);
    s.ok("bob", &["tasks"]);
    let bob_raw = s.raw_login("bob");

    let new = "ann-new-password";
    let out = s.user(&["passwd", "ann", "--password-stdin"], Some(&format!("{new}\n")));
    assert!(out.status.success(), "{}", s.sb.describe(&out));
    let stderr = s.err("ann", &["tasks"]);
    assert!(stderr.contains("refused the session of ann"), "{stderr}");
    let out = s.login("ann", "ann", &password("ann"));
    assert!(
        !out.status.success(),
        "the old password is refused\n{}",
        s.sb.describe(&out)
    );
    let out = s.login("ann", "ann", new);
    assert!(
        out.status.success(),
        "the new password works\n{}",
        s.sb.describe(&out)
    );
    s.ok("ann", &["tasks"]);
    s.ok("bob", &["tasks"]); // bob's session is not ann's

    let out = s.user(&["remove", "bob"], None);
    assert!(out.status.success(), "{}", s.sb.describe(&out));
    let stderr = s.err("bob", &["tasks"]);
    assert!(stderr.contains("refused the session of bob"), "{stderr}");
    assert_code(
        s.raw_tasks(Some(&bob_raw)),
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
    let out = s.login("bob", "bob", &password("bob"));
    assert!(
        !out.status.success(),
        "a removed user cannot log in\n{}",
        s.sb.describe(&out)
    );

    // A user added while the server runs logs in at once.
    s.add_user("carl", "operator");
    s.login_ok("carl");
    let who = s.ok("carl", &["whoami"]);
    assert!(who.contains("carl") && who.contains("operator"), "{who}");
    let out = s.user(&["list"], None);
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}", s.sb.describe(&out));
    assert!(
        listed.contains("ann") && listed.contains("carl") && !listed.contains("bob"),
        "{listed}"
    );
    assert!(!listed.contains("$argon2"), "no hashes listed: {listed}");
    // Each change is in the operations log, as the host's user who made it.
    let changes = s.user_changes("carl");
    let of = |action: &str, target: &str| {
        changes
            .iter()
            .any(|(a, t, actor)| a == action && t == target && actor.starts_with("local:"))
    };
    assert!(
        of("user-add", "ann")
            && of("user-passwd", "ann")
            && of("user-remove", "bob")
            && of("user-add", "carl"),
        "{changes:#?}"
    );

    // A new account with the removed one's name does not inherit its sessions.
    s.add_user("bob", "admin");
    let stderr = s.err("bob", &["tasks"]);
    assert!(stderr.contains("refused the session of bob"), "{stderr}");
    assert_code(
        s.raw_tasks(Some(&bob_raw)),
        Code::Unauthenticated,
        "unknown, expired or revoked",
    );
}

/// After three wrong passwords an account must wait, even with the right one, while another
/// account is unaffected; the wait ends (slowed down, not locked out).
#[test]
fn auth_failed_logins_are_slowed_down_per_account() {
    let s = Server::start(&[("dan", "viewer"), ("eve", "viewer")]);
    let login = |user: &str, pass: &str| {
        s.block(s.auth().login(pb::LoginRequest {
            user: user.into(),
            password: pass.into(),
        }))
    };
    for _ in 0..3 {
        assert_code(
            login("dan", "wrong-password"),
            Code::Unauthenticated,
            "wrong user name or password",
        );
    }
    let status = assert_code(
        login("dan", &password("dan")),
        Code::ResourceExhausted,
        "too many failed logins",
    );
    assert!(status.message().contains("dan"), "{status:?}");
    // Another account is unaffected.
    assert!(login("eve", &password("eve")).is_ok(), "eve logs in");
    s.login_ok("eve");

    // One more failure after the wait doubles it (2 s): goflowctl is refused too, storing
    // nothing.
    thread::sleep(Duration::from_millis(1100));
    assert_code(
        login("dan", "wrong-password"),
        Code::Unauthenticated,
        "wrong user name or password",
    );
    let failed_at = Instant::now();
    let out = s.login("dan", "dan", &password("dan"));
    assert!(!out.status.success(), "{}", s.sb.describe(&out));
    assert!(
        text(&out.stderr).contains("too many failed logins"),
        "{}",
        s.sb.describe(&out)
    );
    assert!(!s.credentials("dan").exists());
    // The wait ends.
    thread::sleep(Duration::from_millis(2200).saturating_sub(failed_at.elapsed()));
    s.login_ok("dan");
    s.ok("dan", &["tasks"]);
}

/// `goflow coordinator --auth` with separate agents: the agents get in with their shared
/// secret (no token), a stranger does not, and an operator token's run is done by an agent.
#[test]
fn auth_coordinator_with_agents() {
    let s = Server::start_cluster(&[("root", "admin"), ("vic", "viewer")], &["auth-a1"]);
    let stderr = s.err("stranger", &["agents"]);
    assert!(stderr.contains("goflowctl login -u"), "{stderr}");
    assert_code(s.raw_tasks(None), Code::Unauthenticated, "log in");
    s.login_ok("root");
    s.login_ok("vic");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents = parse_array(&s.ok("vic", &["agents", "-o", "json"]));
        if agents
            .iter()
            .any(|a| a["id"] == "auth-a1" && a["state"] == "alive")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent auth-a1 did not register behind --auth: {agents:#?}\n{}\n{}",
            s.sb.log_tail(30),
            s.agents[0].log_tail(30)
        );
        thread::sleep(Duration::from_millis(200));
    }
    s.ok("root", &["apply", "-f", &s.dag()]);
    let op = s.create_token("root", "ci-op", "operator", None);
    let stderr = s.err("vic", &["run", "-j", "auth_t", "-d", DAY]);
    assert!(stderr.contains("needs the operator role"), "{stderr}");
    let out = s.ctl_as(
        "robot",
        &["run", "-j", "auth_t", "-d", DAY, "--wait"],
        None,
        &[("GOFLOW_TOKEN", &op)],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        s.sb.describe(&out),
        s.agents[0].log_tail(30)
    );
    let rows = parse_array(&s.ok("vic", &["status", "-d", DAY, "-o", "json"]));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["state"], "success", "{rows:#?}");
    assert_eq!(rows[0]["agent"], "auth-a1", "{rows:#?}");
    let stderr = s.err("robot", &["--token", &op, "apply", "-f", &s.dag()]);
    assert!(stderr.contains("needs the editor role"), "{stderr}");
    let got = s.history("vic");
    let want: Vec<(String, String, String)> = [
        ("apply", "auth-dag.yaml", "root"),
        ("token-create", "ci-op", "root"),
        ("run", "auth_t@20260301", "token:ci-op"),
    ]
    .iter()
    .map(|(a, t, w)| (a.to_string(), t.to_string(), w.to_string()))
    .collect();
    assert_eq!(got, want, "oldest first");
}

/// Guesses sent all at once must not escape the slow-down: at most the free tries are checked
/// against the password, the rest wait (each try is counted before its password is checked).
#[test]
fn auth_parallel_guesses_are_slowed_down_too() {
    let s = Server::start(&[("dan", "viewer")]);
    let auth = s.auth();
    let codes = s.block(async move {
        let mut guesses = tokio::task::JoinSet::new();
        for i in 0..40 {
            let mut client = auth.clone();
            guesses.spawn(async move {
                client
                    .login(pb::LoginRequest {
                        user: "dan".into(),
                        password: format!("guess-{i}"),
                    })
                    .await
            });
        }
        let mut codes = vec![];
        while let Some(answer) = guesses.join_next().await {
            codes.push(answer.unwrap().expect_err("a guess is refused").code());
        }
        codes
    });
    let checked = codes.iter().filter(|c| **c == Code::Unauthenticated).count();
    assert!(
        checked <= 3,
        "{checked} of 40 parallel guesses were checked: {codes:?}"
    );
    assert_eq!(
        codes.len() - checked,
        codes.iter().filter(|c| **c == Code::ResourceExhausted).count()
    );
}
