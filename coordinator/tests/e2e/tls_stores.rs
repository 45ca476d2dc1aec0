//! TLS to the stores (issue 20), each server started here on loopback with certificates from
//! `scripts/make-test-ca`, with a password, and accepting TLS connections only:
//! - PostgreSQL (`sslmode=verify-full`, `sslrootcert`): goflow runs a task over TLS
//!   (`pg_stat_ssl` says every connection is encrypted); another CA is refused naming TLS, and
//!   `sslmode=disable` is refused by the server;
//! - MariaDB (`ssl-mode=VERIFY_IDENTITY`, `ssl-ca`, `require_secure_transport`): the same;
//! - etcd over `https://` with authentication on: a wrong password is refused at start, the
//!   right one (from `--etcd-password-file`) elects the leader.
//!
//! No password appears in any message or log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sandbox::{Launch, Sandbox, free_port, run_goflow, wait_for};
use crate::secrets::{Process, START, cmdline, make_test_ca, read, temp, text};

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
