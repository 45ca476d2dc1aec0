//! The seed's `goflow_conf.json` and its command names: `goflow init_db -c goflow_conf.json`
//! on the local MariaDB (its `Common.MysqlConn` pointing at a fresh test database), failures at
//! start that name the URL without its password, `goflow scheduler -c ... --ha` and
//! `goflow executer -c ...`, and the issue's acceptance run: the seed's file as it is, two
//! executers over Redis, a 40-way fan-in into a join, each task run once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use goflow_coordinator::store::Dialect;
use goflow_coordinator::testing::TestDatabase;

use crate::sandbox::{
    Agent, Etcd, Launch, Redis, Sandbox, free_port, parse_array, read, run_goflow, time_of, wait_for,
};

/// Generous: a few short shell commands on a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// The seed's example configuration, comments removed (JSON has none). LogDir is
/// `/var/log/go_log` in the seed; [`seed_conf`] points it at the test's temp folder, so the
/// coordinator's log is `<tmp>/scheduler.log`. Every other key is as in the seed.
const SEED_CONF: &str = r#"{
  "Common":{
    "MysqlConn":"mysql://test:test@localhost:3306/goflow",
    "MysqlConn":"mysql://test:test@localhost:3306/cflow",
    "Broker":"localhost:9092"
  },
  "Scheduler":{
    "LogDir":"/var/log/go_log",
    "LogFile":"scheduler.log",
    "FetchInterval":10,
    "WorkerTimeOut":20,
    "RetryQueueimes":4
  },
  "Worker": {
    "LogDir":"/var/log/go_log",
    "LogFile":"executer.log",
    "Parallelism": 32,
    "HearteatInterval": 10,
    "Retry": 3,
    "TaskTimeOut": 60
  }
}"#;

/// The seed's two MysqlConn URLs (the last one wins, as in the seed).
const SEED_MYSQL_URLS: [&str; 2] = [
    "mysql://test:test@localhost:3306/goflow",
    "mysql://test:test@localhost:3306/cflow",
];

/// The seed's file with its LogDir in `log_dir`.
fn seed_conf(log_dir: &Path) -> String {
    let text = SEED_CONF.replace("/var/log/go_log", log_dir.to_str().expect("a UTF-8 temp path"));
    assert_eq!(text.matches(log_dir.to_str().unwrap()).count(), 2);
    text
}

/// The seed's file with its LogDir in `log_dir` and both MysqlConn URLs replaced by `url`;
/// nothing else changes.
fn seed_conf_on(log_dir: &Path, url: &str) -> String {
    let mut text = seed_conf(log_dir);
    for seed_url in SEED_MYSQL_URLS {
        assert!(text.contains(seed_url), "the seed's file names {seed_url}");
        text = text.replace(seed_url, url);
    }
    assert_eq!(text.matches(url).count(), 2);
    text
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// `scheme://USER:PASSWORD@HOST:PORT/DATABASE` from `url` (whose credentials are replaced).
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// `url` naming another database on the same server.
fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL naming a database");
    format!("{base}/{name}")
}

/// The database a URL names.
fn database_of(url: &str) -> &str {
    url.rsplit_once('/').expect("a URL naming a database").1
}

/// Runs SQL statements on `url` (a test's own MariaDB), returning the first column of the last
/// statement's rows as text.
fn mysql(url: &str, statements: &[String]) -> Vec<String> {
    let url = url.to_string();
    let statements = statements.to_vec();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                use sqlx::{Connection, Row};
                sqlx::any::install_default_drivers();
                let mut conn = sqlx::AnyConnection::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to the test MariaDB: {e}"));
                let mut last = vec![];
                for sql in statements {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    last = rows
                        .iter()
                        .map(|row| {
                            row.try_get::<String, _>(0)
                                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                                .unwrap_or_default()
                        })
                        .collect();
                }
                conn.close().await.ok();
                last
            })
    })
    .join()
    .expect("a query on the test MariaDB")
}

/// A MariaDB user with a password, allowed every test database (`goflow_t...`, existing or
/// not), dropped afterwards: what a URL with a password needs to reach each failure.
struct PasswordUser {
    admin: String,
    name: String,
    password: String,
}

impl PasswordUser {
    /// Created through `admin` (the test database's URL, whose user may create users).
    fn create(admin: &str) -> Self {
        let name = format!("goflow_e2e_{}", std::process::id());
        let password = format!("Pw-e2e-{}-s3cret", std::process::id());
        mysql(
            admin,
            &[
                format!("DROP USER IF EXISTS '{name}'@'%'"),
                format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"),
                format!("GRANT ALL PRIVILEGES ON `goflow\\_t%`.* TO '{name}'@'%'"),
            ],
        );
        Self {
            admin: admin.to_string(),
            name,
            password,
        }
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP USER IF EXISTS '{}'@'%'", self.name);
        // Not inside a panic's unwinding panic: a failure to drop is only reported.
        let _ = std::panic::catch_unwind(|| mysql(&admin, &[sql]));
    }
}

/// The tables goflow made in a MariaDB database.
fn tables_of(url: &str) -> BTreeSet<String> {
    mysql(
        url,
        &[format!(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = '{}'",
            database_of(url)
        )],
    )
    .into_iter()
    .map(|t| t.to_lowercase())
    .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `goflow init_db -c goflow_conf.json` on the seed's file, its MysqlConn pointing at a fresh
/// MariaDB database: it creates goflow's tables there; `init_db` again, `migrate` and
/// `init-db` on the up-to-date database succeed and change nothing.
#[test]
fn seed_config_init_db_on_mariadb_is_idempotent() {
    let db = TestDatabase::create_blocking(Dialect::MySql);
    let tmp = tempfile::Builder::new()
        .prefix("goflow-e2e-conf.")
        .tempdir()
        .unwrap();
    let conf = tmp.path().join("goflow_conf.json");
    std::fs::write(&conf, seed_conf_on(tmp.path(), &db.url)).unwrap();
    let conf_arg = conf.to_str().unwrap();
    let limit = Duration::from_secs(60);
    assert!(tables_of(&db.url).is_empty(), "a fresh database");

    let out = run_goflow(&["init_db", "-c", conf_arg], &[], tmp.path(), limit);
    assert!(out.status.success(), "init_db on MariaDB failed:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(database_of(&db.url)) && stdout.contains("up to date"),
        "init_db says which database is ready:\n{stdout}"
    );
    let tables = tables_of(&db.url);
    for want in [
        "tasks",
        "dependencies",
        "instances",
        "attempts",
        "log_chunks",
        "schedules",
    ] {
        assert!(tables.contains(want), "init_db made no {want} table: {tables:?}");
    }
    assert!(
        !tmp.path().join("goflow-data").exists(),
        "MysqlConn is used, not a SQLite file in the default data folder"
    );

    for name in ["init_db", "migrate", "init-db"] {
        let out = run_goflow(&[name, "-c", conf_arg], &[], tmp.path(), limit);
        assert!(
            out.status.success(),
            "`goflow {name}` on an up-to-date database failed:\n{}",
            text(&out)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            stdout,
            "`goflow {name}` again reports the same schema version"
        );
        assert_eq!(
            tables_of(&db.url),
            tables,
            "`goflow {name}` again changes no table"
        );
    }
}

/// An unreachable server, wrong credentials and a missing database each stop `init_db` (and
/// `scheduler`) at start with a message naming the URL, its password redacted, and the cause;
/// the password itself is never printed.
#[test]
fn seed_config_database_errors_name_the_url_without_the_password() {
    let db = TestDatabase::create_blocking(Dialect::MySql);
    let user = PasswordUser::create(&db.url);
    let tmp = tempfile::Builder::new()
        .prefix("goflow-e2e-conf.")
        .tempdir()
        .unwrap();
    let good = with_credentials(&db.url, &user.name, &user.password);
    let unreachable = {
        let port = free_port();
        let (scheme, rest) = good.split_once("://").unwrap();
        let (credentials, _) = rest.rsplit_once('@').unwrap();
        format!(
            "{scheme}://{credentials}@127.0.0.1:{port}/{}",
            database_of(&db.url)
        )
    };
    let wrong_password = with_credentials(&db.url, &user.name, "Not-the-password-9731");
    let missing = with_database(&good, &format!("{}_missing", database_of(&db.url)));

    // The user and its password work: each failure below is the one the case names.
    let conf = tmp.path().join("goflow_conf.json");
    std::fs::write(&conf, seed_conf_on(tmp.path(), &good)).unwrap();
    let out = run_goflow(
        &["init_db", "-c", conf.to_str().unwrap()],
        &[],
        tmp.path(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "init_db as {} failed:\n{}",
        user.name,
        text(&out)
    );

    let cases: [(&str, &str, &str, &[&str]); 3] = [
        ("unreachable", &unreachable, "Pw-e2e-", &["cannot reach"]),
        (
            "wrong-password",
            &wrong_password,
            "Not-the-password-9731",
            &["refused the credentials", "access denied"],
        ),
        (
            "missing-database",
            &missing,
            "Pw-e2e-",
            &["does not exist", "unknown database"],
        ),
    ];
    for (case, url, password, causes) in cases {
        let dir = tmp.path().join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("goflow_conf.json");
        std::fs::write(&conf, seed_conf_on(&dir, url)).unwrap();
        let redacted = {
            let (scheme, rest) = url.split_once("://").unwrap();
            let (credentials, host) = rest.rsplit_once('@').unwrap();
            let (name, _) = credentials.split_once(':').unwrap();
            format!("{scheme}://{name}:***@{host}")
        };
        // If it hung instead (retrying), run_goflow fails the test after its limit.
        let out = run_goflow(
            &["init_db", "-c", conf.to_str().unwrap()],
            &[],
            &dir,
            Duration::from_secs(60),
        );
        let said = text(&out);
        assert!(!out.status.success(), "{case}: init_db must fail:\n{said}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            stderr.contains(&redacted),
            "{case}: the message names the URL as {redacted}:\n{said}"
        );
        assert!(
            causes.iter().any(|c| stderr.to_lowercase().contains(c)),
            "{case}: the message says what went wrong ({causes:?}):\n{said}"
        );
        assert!(
            !said.contains(password) && !said.contains(&user.password),
            "{case}: the password reached a message:\n{said}"
        );
    }

    // The scheduler stops at start the same way, before serving anything; the message reaches
    // its log file (Scheduler.LogDir/LogFile) or stderr, without the password.
    let redis = Redis::start();
    let dir = tmp.path().join("wrong-password");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let out = run_goflow(
        &[
            "scheduler",
            "-c",
            dir.join("goflow_conf.json").to_str().unwrap(),
            "--grpc-listen",
            &grpc,
            "--http-listen",
            &http,
        ],
        &[
            ("GOFLOW_BROKER", redis.url().as_str()),
            ("GOFLOW_AGENT_SECRET", "seed-e2e-agent-secret-0123456789"),
        ],
        &dir,
        Duration::from_secs(60),
    );
    let said = format!(
        "{}\nscheduler.log:\n{}",
        text(&out),
        read(&dir.join("scheduler.log"))
    );
    assert!(!out.status.success(), "the scheduler must not start:\n{said}");
    assert!(
        said.contains(&format!("{}:***@", user.name)) && said.to_lowercase().contains("access denied"),
        "the scheduler names the URL and the cause:\n{said}"
    );
    assert!(
        !said.contains("Not-the-password-9731") && !said.contains(&user.password),
        "the password reached a message:\n{said}"
    );
}

/// `goflow scheduler -c goflow_conf.json --ha` starts with the seed's file (the database, the
/// broker, the agent secret and etcd from the environment, which wins over the file), leads
/// through etcd, logs what it ignores, and `goflow executer -c goflow_conf.json` registers
/// with Worker.Parallelism slots and runs a task with Worker.Retry retries. With the seed's
/// file as it is (Broker `localhost:9092`, where no Redis listens), the start fails naming
/// that address.
#[test]
fn seed_config_scheduler_alias_starts_with_ha() {
    let redis = Redis::start();
    let broker = redis.url();
    // `--ha` elects the leader through etcd, as the seed's schedulers did.
    let etcd = Etcd::start();
    const SECRET: &str = "seed-e2e-agent-secret-0123456789";
    let sb = Sandbox::start_with(|root| {
        let conf = root.join("goflow_conf.json");
        std::fs::write(&conf, seed_conf(root)).unwrap();
        Launch {
            args: vec!["scheduler".into(), "-c".into(), conf.into(), "--ha".into()],
            env: vec![
                (
                    "GOFLOW_DATABASE_URL".into(),
                    sqlite_url(&root.join("db").join("goflow.db")).into(),
                ),
                ("GOFLOW_BROKER".into(), broker.clone().into()),
                ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
                ("GOFLOW_ETCD_ENDPOINTS".into(), etcd.url().into()),
            ],
            // Scheduler.LogDir/LogFile, rewritten to the temp folder.
            log_file: Some(root.join("scheduler.log")),
            // GOFLOW_DATABASE_URL above.
            own_database: true,
        }
    });
    let conf = sb.root().join("goflow_conf.json");
    let log_file = sb.root().join("scheduler.log");
    assert!(log_file.is_file(), "the coordinator logs to LogDir/LogFile");
    let log = read(&log_file);
    for want in [
        "FetchInterval",
        &format!("leading (etcd {}", etcd.url()),
        &format!("dispatching through Redis at {broker}"),
    ] {
        assert!(
            log.contains(want),
            "scheduler.log does not mention {want:?}:\n{log}"
        );
    }
    assert!(
        sb.root().join("db").join("goflow.db").is_file(),
        "GOFLOW_DATABASE_URL is used"
    );
    assert!(
        !sb.root().join("goflow-data").exists(),
        "the default data folder is not used"
    );
    // With a broker the coordinator runs no agent of its own.
    let agents = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
    assert!(agents.is_empty(), "no embedded agent: {agents:#?}");

    // The seed's executer, on the same file and environment.
    let server = sb.server_url();
    let db_url = sqlite_url(&sb.root().join("db").join("goflow.db"));
    let env = [
        ("GOFLOW_DATABASE_URL", db_url.as_str()),
        ("GOFLOW_BROKER", broker.as_str()),
        ("GOFLOW_AGENT_SECRET", SECRET),
        ("GOFLOW_SERVER", server.as_str()),
    ];
    let executer = Agent::start_args(
        "executer",
        &["executer", "-c", conf.to_str().unwrap()],
        &env,
        &sb.work(),
        &sb.root().join("executer.stdout.log"),
    );
    let agents = wait_for(
        SETTLE,
        "the executer to register",
        || sb.log_tail(40),
        || {
            let agents = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
            (!agents.is_empty()).then_some(agents)
        },
    );
    assert_eq!(agents.len(), 1, "{agents:#?}");
    assert_eq!(agents[0]["slots"], 32, "Worker.Parallelism: {agents:#?}");
    assert_eq!(agents[0]["state"], "alive", "{agents:#?}");
    let executer_log = read(&sb.root().join("executer.log"));
    assert!(
        executer_log.contains("registered with the coordinator"),
        "the executer logs to Worker.LogDir/LogFile:\n{executer_log}\n{}",
        executer.log_tail(20)
    );

    // Worker.Retry is the default retries: 3 retries, 4 tries.
    sb.apply("tasks:\n  - id: conf_t\n    command: \"echo conf-ok\"\n");
    sb.ctl_ok(&["run", "-j", "conf_t", "-d", "20260402", "--wait"]);
    let rows = sb.status_json("20260402");
    let r = sb.instance(&rows, "conf_t");
    assert_eq!(r["state"], "success", "{r:#}");
    assert_eq!(r["max_tries"], 4, "Worker.Retry 3: {r:#}");
    assert_eq!(r["agent"], agents[0]["id"], "run by the executer: {r:#}");
    let log = sb.ctl_ok(&["logs", "-j", "conf_t", "-d", "20260402"]);
    assert!(log.contains("conf-ok"), "{log}");
    drop(executer);

    // The seed's file as it is names Redis at localhost:9092, where nothing listens: the start
    // fails and says where it looked. (If it started instead, run_goflow fails after 30s.)
    let tmp = sb.root().join("as-is");
    std::fs::create_dir_all(&tmp).unwrap();
    let seed = tmp.join("goflow_conf.json");
    std::fs::write(&seed, seed_conf(&tmp)).unwrap();
    let db = tmp.join("goflow.db");
    let url = sqlite_url(&db);
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let out = run_goflow(
        &[
            "scheduler",
            "-c",
            seed.to_str().unwrap(),
            "--ha",
            "--grpc-listen",
            &grpc,
            "--http-listen",
            &http,
        ],
        &[
            ("GOFLOW_DATABASE_URL", url.as_str()),
            ("GOFLOW_AGENT_SECRET", SECRET),
            ("GOFLOW_ETCD_ENDPOINTS", etcd.url().as_str()),
        ],
        &tmp,
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = read(&tmp.join("scheduler.log"));
    assert!(
        !out.status.success(),
        "the seed's broker has no Redis behind it; the start must fail:\n{stderr}\n{log}"
    );
    assert!(
        format!("{stderr}\n{log}").contains("localhost:9092"),
        "the failure names the Redis address:\nstderr:\n{stderr}\nscheduler.log:\n{log}"
    );
}

/// A wrong type in the seed's file stops the start and names the key; nothing is created.
#[test]
fn seed_config_wrong_types_stop_the_start() {
    let tmp = tempfile::Builder::new()
        .prefix("goflow-e2e-conf.")
        .tempdir()
        .unwrap();
    let conf = tmp.path().join("goflow_conf.json");
    let text = seed_conf(tmp.path()).replace(r#""Parallelism": 32"#, r#""Parallelism": "lots""#);
    assert!(text.contains(r#""Parallelism": "lots""#));
    std::fs::write(&conf, text).unwrap();
    let db = tmp.path().join("goflow.db");
    let url = sqlite_url(&db);
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    // If it started instead, it would not return: run_goflow fails the test after 30s.
    let out = run_goflow(
        &[
            "scheduler",
            "-c",
            conf.to_str().unwrap(),
            "--grpc-listen",
            &grpc,
            "--http-listen",
            &http,
        ],
        &[("GOFLOW_DATABASE_URL", url.as_str())],
        tmp.path(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a string Parallelism must stop the start:\n{stderr}"
    );
    assert!(stderr.contains("Worker.Parallelism"), "{stderr}");
    assert!(!db.exists(), "nothing started: {}", db.display());
}

/// The issue's acceptance run: the seed's goflow_conf.json as it is (its MysqlConn pointing at
/// a fresh database on the local MariaDB, its Broker at a private Redis, its LogDir in a temp
/// folder), through `goflow init_db -c`, `goflow scheduler -c` and two `goflow executer -c`.
/// Forty scheduled roots fan in to a join, then a tail; the seed's `do_all_job` runs the day.
/// Every instance succeeds on its first try, each command ran exactly once, the join after all
/// forty roots, and both executers took work. The state is in MariaDB.
#[test]
fn seed_conf_on_mariadb_runs_a_40_way_fan_in_with_two_executers() {
    const SECRET: &str = "seed-e2e-agent-secret-0123456789";
    const ROOTS: usize = 40;
    let redis = Redis::start();
    // `--ha` elects the leader through etcd, as the seed's schedulers did.
    let etcd = Etcd::start();
    let db = TestDatabase::create_blocking(Dialect::MySql);
    let sb = Sandbox::start_with(|root| {
        let conf = root.join("goflow_conf.json");
        // The seed's Broker is host:port: the private Redis's, in the same form.
        let file = seed_conf_on(root, &db.url).replace(
            r#""Broker":"localhost:9092""#,
            &format!(r#""Broker":"127.0.0.1:{}""#, redis.port()),
        );
        assert!(file.contains(&format!("127.0.0.1:{}", redis.port())));
        std::fs::write(&conf, file).unwrap();
        let out = run_goflow(
            &["init_db", "-c", conf.to_str().unwrap()],
            &[],
            root,
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "init_db failed:\n{}", text(&out));
        Launch {
            args: vec!["scheduler".into(), "-c".into(), conf.into(), "--ha".into()],
            env: vec![
                ("GOFLOW_AGENT_SECRET".into(), SECRET.into()),
                ("GOFLOW_ETCD_ENDPOINTS".into(), etcd.url().into()),
            ],
            log_file: Some(root.join("scheduler.log")),
            // Common.MysqlConn.
            own_database: true,
        }
    });
    assert!(
        !sb.root().join("goflow-data").exists(),
        "MysqlConn is used, not a SQLite file in the default data folder"
    );
    let conf = sb.root().join("goflow_conf.json");
    let server = sb.server_url();
    let executers: Vec<Agent> = ["ex1", "ex2"]
        .iter()
        .map(|id| {
            Agent::start_args(
                id,
                &["executer", "-c", conf.to_str().unwrap()],
                &[
                    ("GOFLOW_AGENT_SECRET", SECRET),
                    ("GOFLOW_SERVER", server.as_str()),
                    ("GOFLOW_AGENT_ID", id),
                ],
                &sb.work(),
                &sb.root().join(format!("{id}.stdout.log")),
            )
        })
        .collect();
    let logs = || {
        let mut text = format!("scheduler log (tail):\n{}", sb.log_tail(40));
        for ex in &executers {
            text.push_str(&format!("\n\n{}", ex.log_tail(20)));
        }
        text.push_str(&format!(
            "\n\nexecuter.log:\n{}",
            read(&sb.root().join("executer.log"))
        ));
        text
    };
    wait_for(SETTLE, "both executers to register", logs, || {
        let agents = parse_array(&sb.ctl_ok(&["agents", "-o", "json"]));
        let alive: BTreeSet<&str> = agents
            .iter()
            .filter(|a| a["state"] == "alive" && a["slots"] == 32)
            .filter_map(|a| a["id"].as_str())
            .collect();
        (alive == BTreeSet::from(["ex1", "ex2"])).then_some(())
    });

    // Each command appends one line: exactly one line per task proves each ran once. The
    // roots sleep 2 s: forty of them cannot all fit in one executer's 32 slots.
    let trace = sb.work().join("trace.txt");
    let roots: Vec<String> = (1..=ROOTS).map(|i| format!("fan_r{i:02}")).collect();
    let mut dag = String::from("tasks:\n");
    for root in &roots {
        dag.push_str(&format!(
            "  - id: {root}\n    command: \"echo {{{{task_id}}}} {{{{etl_day}}}} >> {t}; sleep 2\"\n    schedule: \"0 0 1 1 *\"\n",
            t = trace.display()
        ));
    }
    dag.push_str(&format!(
        "  - id: fan_join\n    command: \"echo {{{{task_id}}}} {{{{etl_day}}}} >> {t}\"\n    depends_on: [{}]\n",
        roots.join(", "),
        t = trace.display()
    ));
    dag.push_str(&format!(
        "  - id: fan_tail\n    command: \"echo {{{{task_id}}}} {{{{etl_day}}}} >> {t}\"\n    depends_on: [fan_join]\n",
        t = trace.display()
    ));
    sb.apply(&dag);

    // The seed's verb, with the seed's date format.
    let out = run_goflow(
        &["do_all_job", "-d", "2026-03-15", "--server", &server],
        &[],
        &sb.work(),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "do_all_job failed:\n{}\n{}",
        text(&out),
        logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{} instances", ROOTS + 2)), "{stdout}");

    let day = "20260315";
    let rows = wait_for(
        Duration::from_secs(300),
        "the day's 42 instances to finish",
        logs,
        || {
            let rows = sb.status_json(day);
            let finished = rows
                .iter()
                .all(|r| matches!(r["state"].as_str(), Some("success" | "failed" | "killed")));
            (rows.len() >= ROOTS + 2 && finished).then_some(rows)
        },
    );
    assert_eq!(rows.len(), ROOTS + 2, "{rows:#?}");
    let mut by_agent: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        assert_eq!(r["state"], "success", "{r:#}\n{}", logs());
        assert_eq!(r["try_number"], 1, "one try each: {r:#}");
        let agent = r["agent"].as_str().unwrap_or_default();
        assert!(agent == "ex1" || agent == "ex2", "run by an executer: {r:#}");
        *by_agent.entry(agent.to_string()).or_default() += 1;
    }
    assert_eq!(
        by_agent.len(),
        2,
        "forty 2-second roots on 32 slots each: both executers took work: {by_agent:?}"
    );
    let join = sb.instance(&rows, "fan_join");
    for root in &roots {
        let r = sb.instance(&rows, root);
        assert!(
            time_of(join, "started_at") >= time_of(r, "finished_at"),
            "fan_join started before {root} finished:\n{join:#}\n{r:#}"
        );
    }
    let tail = sb.instance(&rows, "fan_tail");
    assert!(
        time_of(tail, "started_at") >= time_of(join, "finished_at"),
        "{tail:#}\n{join:#}"
    );

    let ran = read(&trace);
    let mut lines: Vec<&str> = ran.lines().collect();
    lines.sort();
    let mut want: Vec<String> = roots.iter().map(|r| format!("{r} {day}")).collect();
    want.push(format!("fan_join {day}"));
    want.push(format!("fan_tail {day}"));
    want.sort();
    assert_eq!(lines, want, "each task ran exactly once");

    // The scheduling state is in the MariaDB database the file names.
    let count = mysql(&db.url, &["SELECT COUNT(*) FROM instances".to_string()]);
    assert_eq!(count, [(ROOTS + 2).to_string()], "instances in MariaDB");
    drop(executers);
}
