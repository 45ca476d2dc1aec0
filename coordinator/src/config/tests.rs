//! Settings: the seed's file, layers, keys, and the loopback rule.

use super::*;

/// The seed's example configuration, its comments removed (JSON has none).
pub const SEED_CONF: &str = r#"{
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

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_seed_configuration_maps_onto_the_new_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "goflow_conf.json", SEED_CONF);
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Coordinator).unwrap();
    assert_eq!(
        s.database_url.as_deref(),
        Some("mysql://test:test@localhost:3306/cflow"),
        "the last duplicate wins"
    );
    assert_eq!(s.broker.as_deref(), Some("localhost:9092"));
    assert_eq!(s.engine.worker_timeout, Duration::from_secs(20));
    assert_eq!(s.engine.retry_queue_times, 4);
    assert_eq!(s.agent_slots, 32);
    assert_eq!(s.engine.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(s.engine.default_retries, 3);
    assert_eq!(s.engine.default_timeout, Some(Duration::from_secs(60)));
    assert_eq!(s.log_file, Some(PathBuf::from("/var/log/go_log/scheduler.log")));
    let agent = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(
        agent.log_file,
        Some(PathBuf::from("/var/log/go_log/executer.log"))
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("FetchInterval")),
        "{:?}",
        s.warnings
    );
    // The last MysqlConn wins, and the password never reaches a message.
    let url = s.database_url().unwrap();
    assert_eq!(url.dialect, crate::store::Dialect::MySql);
    assert_eq!(url.redacted(), "mysql://test:***@localhost:3306/cflow");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "goflow_conf.json", SEED_CONF);
    let env = HashMap::from([
        (
            "GOFLOW_DATABASE_URL".to_string(),
            "sqlite:///tmp/x/goflow.db".to_string(),
        ),
        ("GOFLOW_SLOTS".to_string(), "3".to_string()),
    ]);
    let s = Settings::load(Some(&path), &env, Role::Coordinator).unwrap();
    assert_eq!(
        s.database_url().unwrap().sqlite_file(),
        Some(PathBuf::from("/tmp/x/goflow.db"))
    );
    assert_eq!(s.agent_slots, 3);
    let bad = HashMap::from([("GOFLOW_SLOTS".to_string(), "many".to_string())]);
    let err = Settings::load(None, &bad, Role::Agent).unwrap_err().to_string();
    assert!(
        err.contains("GOFLOW_SLOTS") && err.contains("whole number"),
        "{err}"
    );
}

#[test]
fn unknown_keys_warn_and_wrong_types_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.json",
        r#"{"Worker": {"Parallelism": "lots", "Colour": 1}}"#,
    );
    let err = Settings::load(Some(&path), &HashMap::new(), Role::Agent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Worker.Parallelism") && err.contains("a string"),
        "{err}"
    );
    let path = write(&dir, "d.json", r#"{"Worker": {"Colour": 1}, "Extra": true}"#);
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("Worker.Colour") || s.warnings[1].contains("Worker.Colour"));
}

#[test]
fn alerts_from_a_toml_file_and_the_environment() {
    use crate::alerts::AlertKind;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "goflow.toml",
        r#"
[Alerts]
UiUrl = "https://goflow.example"
CheckInterval = 5

[[Alerts.Channels]]
name = "dw"
type = "feishu"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/x"

[[Alerts.Rules]]
tasks = ["report_*"]
events = ["deadline"]
channels = ["dw"]
"#,
    );
    let env = HashMap::from([
        (
            "GOFLOW_ALERT_WEBHOOK".to_string(),
            "http://hook.example/x".to_string(),
        ),
        ("GOFLOW_ALERT_ON_RETRY".to_string(), "true".to_string()),
    ]);
    let s = Settings::load(Some(&path), &env, Role::Coordinator).unwrap();
    let alerts = &s.engine.alerts;
    assert_eq!(alerts.ui_url.as_deref(), Some("https://goflow.example"));
    assert_eq!(alerts.check_interval, Duration::from_secs(5));
    assert_eq!(
        alerts.route("report_daily", AlertKind::Deadline),
        ["dw", "webhook"]
    );
    assert_eq!(alerts.route("report_daily", AlertKind::Retry), ["webhook"]);
    assert_eq!(alerts.route("etl", AlertKind::Deadline), ["webhook"]);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    let bad = write(
        &dir,
        "bad.toml",
        "[[Alerts.Rules]]
channels = [\"nowhere\"]\n",
    );
    let err = Settings::load(Some(&bad), &HashMap::new(), Role::Coordinator).unwrap_err();
    assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
}

#[test]
fn toml_files_load_and_malformed_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "goflow.toml",
        "[Worker]\nParallelism = 5\nQueues = [\"etl\", \"gpu\"]\n",
    );
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(
        (s.agent_slots, s.agent_queues.clone()),
        (5, vec!["etl".to_string(), "gpu".to_string()])
    );
    let path = write(
        &dir,
        "broken.json",
        "{\"Common\": {\"Broker\": \"x\", # comment\n}}",
    );
    let err = format!(
        "{:#}",
        Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap_err()
    );
    assert!(
        err.contains("broken.json") && err.contains("not valid JSON"),
        "{err}"
    );
    let err = Settings::load(
        Some(&dir.path().join("missing.json")),
        &HashMap::new(),
        Role::Agent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.json"));
}

#[test]
fn default_database_is_sqlite_in_the_data_folder() {
    let s = Settings::default();
    assert_eq!(
        s.database_url().unwrap().sqlite_file(),
        Some(PathBuf::from("goflow-data/goflow.db"))
    );
    let s = Settings {
        database_url: Some("sqlite::memory:".into()),
        ..Settings::default()
    };
    assert!(s.database_url().is_err());
    for (url, dialect) in [
        (
            "postgres://u:p@127.0.0.1:5432/goflow",
            crate::store::Dialect::Postgres,
        ),
        ("postgresql://u@127.0.0.1/goflow", crate::store::Dialect::Postgres),
        ("mysql://root@127.0.0.1:3306/goflow", crate::store::Dialect::MySql),
        (
            "mariadb://root@127.0.0.1:3306/goflow",
            crate::store::Dialect::MySql,
        ),
    ] {
        let s = Settings {
            database_url: Some(url.into()),
            ..Settings::default()
        };
        assert_eq!(s.database_url().unwrap().dialect, dialect, "{url}");
    }
    let s = Settings {
        database_url: Some("oracle://x".into()),
        ..Settings::default()
    };
    assert!(
        s.database_url()
            .unwrap_err()
            .to_string()
            .contains("unknown database scheme")
    );
}

// The loopback rule and the authentication switch.

#[test]
fn listening_beyond_loopback_needs_auth() {
    let local = Settings::default();
    assert!(require_auth_beyond_loopback(&local).is_ok());
    for address in ["0.0.0.0:7070", "10.0.0.5:7070", "[::]:7070", "example.com:7070"] {
        let open = Settings {
            grpc_listen: address.into(),
            ..Settings::default()
        };
        let err = require_auth_beyond_loopback(&open).unwrap_err().to_string();
        assert!(err.contains("--auth") && err.contains(address), "{err}");
        assert!(require_auth_beyond_loopback(&Settings { auth: true, ..open }).is_ok());
    }
    let web = Settings {
        http_listen: "0.0.0.0:8080".into(),
        ..Settings::default()
    };
    assert!(require_auth_beyond_loopback(&web).is_err());
    for address in ["127.0.0.1:7070", "[::1]:7070", "localhost:7070"] {
        assert!(is_loopback(address), "{address}");
    }
}

#[test]
fn auth_comes_from_the_file_and_the_environment() {
    let env = HashMap::from([("GOFLOW_AUTH".to_string(), "true".to_string())]);
    assert!(Settings::load(None, &env, Role::Coordinator).unwrap().auth);
    let env = HashMap::from([("GOFLOW_AUTH".to_string(), "maybe".to_string())]);
    assert!(Settings::load(None, &env, Role::Coordinator).is_err());
}

#[test]
fn the_drain_timeout_comes_from_the_file_and_the_environment() {
    assert_eq!(
        Settings::default().drain_timeout,
        Duration::from_secs(600),
        "ten minutes unless told"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "goflow.toml", "[Worker]\nDrainTimeout = \"90s\"\n");
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(s.drain_timeout, Duration::from_secs(90));
    let path = write(&dir, "goflow.json", r#"{"Worker": {"DrainTimeout": 30}}"#);
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(s.drain_timeout, Duration::from_secs(30), "a number is seconds");
    let env = HashMap::from([("GOFLOW_DRAIN_TIMEOUT".to_string(), "1h 5m".to_string())]);
    let s = Settings::load(Some(&path), &env, Role::Agent).unwrap();
    assert_eq!(s.drain_timeout, Duration::from_secs(3900), "the environment wins");
    let bad = HashMap::from([("GOFLOW_DRAIN_TIMEOUT".to_string(), "soon".to_string())]);
    let err = Settings::load(None, &bad, Role::Agent).unwrap_err().to_string();
    assert!(
        err.contains("GOFLOW_DRAIN_TIMEOUT") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn the_agent_s_log_spool_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "goflow.json",
        r#"{"Worker": {"SpoolDir": "/var/spool/goflow", "SpoolBytes": 1048576}}"#,
    );
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(s.spool_dir, Some(PathBuf::from("/var/spool/goflow")));
    assert_eq!(s.spool_bytes, 1024 * 1024);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let env = HashMap::from([("GOFLOW_SPOOL_BYTES".to_string(), "2097152".to_string())]);
    let s = Settings::load(Some(&path), &env, Role::Agent).unwrap();
    assert_eq!(
        s.spool_bytes,
        2 * 1024 * 1024,
        "the environment wins over the file"
    );
    assert_eq!(Settings::default().spool_bytes, 64 * 1024 * 1024);
}

/// An agent's token comes from the file's `Worker.AgentToken` or `Worker.AgentTokenFile`, or
/// the environment, the later layer winning; a malformed one is refused, naming its source.
#[test]
fn an_agent_token_comes_from_the_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("gfa_{}", "ab".repeat(32));
    let conf = write(
        &dir,
        "agent.json",
        &format!(r#"{{"Worker": {{"AgentToken": "{token}"}}}}"#),
    );
    let s = Settings::load(Some(&conf), &HashMap::new(), Role::Agent).unwrap();
    assert_eq!(s.read_agent_token().unwrap().as_deref(), Some(token.as_str()));

    // The environment's file wins over the config file's token.
    let other = format!("gfa_{}", "cd".repeat(32));
    let file = write(&dir, "a1.token", &format!("{other}\n"));
    let env = HashMap::from([("GOFLOW_AGENT_TOKEN_FILE".to_string(), file.display().to_string())]);
    let s = Settings::load(Some(&conf), &env, Role::Agent).unwrap();
    assert_eq!(s.read_agent_token().unwrap().as_deref(), Some(other.as_str()));

    let env = HashMap::from([("GOFLOW_AGENT_TOKEN".to_string(), "not-a-token".to_string())]);
    let err = Settings::load(None, &env, Role::Agent).unwrap_err().to_string();
    assert!(
        err.contains("GOFLOW_AGENT_TOKEN") && err.contains("gfa_"),
        "{err}"
    );

    let bad = write(&dir, "bad.token", "gfa_ with spaces\n");
    let env = HashMap::from([("GOFLOW_AGENT_TOKEN_FILE".to_string(), bad.display().to_string())]);
    let s = Settings::load(None, &env, Role::Agent).unwrap();
    let err = s.read_agent_token().unwrap_err().to_string();
    assert!(err.contains("bad.token"), "{err}");
    let missing = HashMap::from([(
        "GOFLOW_AGENT_TOKEN_FILE".to_string(),
        "/nonexistent/t".to_string(),
    )]);
    let s = Settings::load(None, &missing, Role::Agent).unwrap();
    assert!(
        s.read_agent_token()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/t")
    );
}
#[test]
fn auth_beyond_loopback_needs_tls_unless_insecure_plaintext_says_so() {
    let exposed = Settings {
        auth: true,
        grpc_listen: "0.0.0.0:7070".into(),
        ..Settings::default()
    };
    let err = require_tls_beyond_loopback(&mut exposed.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS") && err.contains("--tls-cert") && err.contains("--grpc-listen 0.0.0.0:7070"),
        "{err}"
    );
    assert!(err.contains("--insecure-plaintext"), "{err}");

    let mut with_tls = Settings {
        tls_cert: Some("cert.pem".into()),
        ..exposed.clone()
    };
    assert!(require_tls_beyond_loopback(&mut with_tls).is_ok());
    assert!(with_tls.warnings.is_empty());

    let mut insecure = Settings {
        insecure_plaintext: true,
        ..exposed.clone()
    };
    require_tls_beyond_loopback(&mut insecure).unwrap();
    assert!(
        insecure.warnings.iter().any(|w| w.contains("in clear")),
        "{:?}",
        insecure.warnings
    );

    // On loopback, or without authentication (refused elsewhere), TLS is not asked for.
    assert!(
        require_tls_beyond_loopback(&mut Settings {
            auth: true,
            ..Settings::default()
        })
        .is_ok()
    );
    let env = HashMap::from([("GOFLOW_INSECURE_PLAINTEXT".to_string(), "true".to_string())]);
    assert!(
        Settings::load(None, &env, Role::Coordinator)
            .unwrap()
            .insecure_plaintext
    );
}

#[test]
fn secrets_in_flags_are_refused_and_etcd_endpoints_carry_no_credentials() {
    let err = refuse_secret_in_flag(
        "--database-url",
        "postgres://goflow:s3cr3t@db/goflow",
        "GOFLOW_DATABASE_URL",
        "--database-url-file",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("GOFLOW_DATABASE_URL") && err.contains("goflow:***@db"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(
        refuse_secret_in_flag(
            "--redis-url",
            "redis://cache:6379",
            "GOFLOW_REDIS_URL",
            "--redis-url-file"
        )
        .is_ok()
    );

    let env = HashMap::from([(
        "GOFLOW_ETCD_ENDPOINTS".to_string(),
        "https://root:etcdpw@etcd:2379".to_string(),
    )]);
    let err = Settings::load(None, &env, Role::Coordinator)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GOFLOW_ETCD_PASSWORD") && !err.contains("etcdpw"),
        "{err}"
    );

    let env = HashMap::from([
        ("GOFLOW_ETCD_USER".to_string(), "goflow".to_string()),
        ("GOFLOW_ETCD_PASSWORD".to_string(), "etcdpw".to_string()),
    ]);
    let s = Settings::load(None, &env, Role::Coordinator).unwrap();
    assert_eq!(
        s.etcd_credentials().unwrap(),
        Some(("goflow".into(), "etcdpw".into()))
    );
    let half = Settings {
        etcd_password: None,
        ..s
    };
    assert!(
        half.etcd_credentials()
            .unwrap_err()
            .to_string()
            .contains("GOFLOW_ETCD_PASSWORD")
    );
}

#[test]
fn a_database_url_that_does_not_parse_hides_its_password() {
    for typo in [
        "postgres//goflow:s3cr3t@db:5432/goflow",
        "postgress://goflow:s3cr3t@db:5432/goflow",
    ] {
        let s = Settings {
            database_url: Some(typo.into()),
            database_url_source: "GOFLOW_DATABASE_URL".into(),
            ..Settings::default()
        };
        let err = s.database_url().unwrap_err().to_string();
        assert!(err.contains("GOFLOW_DATABASE_URL"), "{err}");
        assert!(!err.contains("s3cr3t"), "{typo}: {err}");
    }
}

#[test]
fn retention_and_the_log_archive_come_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "goflow.json",
        r#"{"Scheduler": {"RetentionDays": 90, "LogArchive": "s3://logs/goflow"}}"#,
    );
    let s = Settings::load(Some(&path), &HashMap::new(), Role::Coordinator).unwrap();
    assert_eq!(s.engine.retention_days, Some(90));
    assert_eq!(s.log_archive.as_deref(), Some("s3://logs/goflow"));
    let env = HashMap::from([
        ("GOFLOW_RETENTION_DAYS".to_string(), "7".to_string()),
        ("GOFLOW_LOG_ARCHIVE".to_string(), "file:///srv/logs".to_string()),
    ]);
    let s = Settings::load(Some(&path), &env, Role::Coordinator).unwrap();
    assert_eq!(s.engine.retention_days, Some(7));
    assert_eq!(s.log_archive.as_deref(), Some("file:///srv/logs"));
    assert_eq!(Settings::default().engine.retention_days, None);
    for bad in ["0", "-3", "soon"] {
        let env = HashMap::from([("GOFLOW_RETENTION_DAYS".to_string(), bad.to_string())]);
        let err = format!("{:#}", Settings::load(None, &env, Role::Coordinator).unwrap_err());
        assert!(err.contains("GOFLOW_RETENTION_DAYS"), "{err}");
    }
}

/// The web UI's secret comes from the environment or the file, is long enough, and is never
/// the agents' shared secret (which would let a web UI act as a coordinator or an agent).
#[test]
fn the_webui_secret_is_checked_and_differs_from_the_agent_secret() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s = Settings::load(
        None,
        &env(&[("GOFLOW_WEBUI_SECRET", "webui-secret-0123456789")]),
        Role::Coordinator,
    )
    .unwrap();
    assert_eq!(s.webui_secret.as_deref(), Some("webui-secret-0123456789"));
    assert!(super::check_secrets_differ(&s).is_ok());
    let err = Settings::load(None, &env(&[("GOFLOW_WEBUI_SECRET", "short")]), Role::Agent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("GOFLOW_WEBUI_SECRET") && err.contains("16"), "{err}");
    let same = "the-same-secret-0123456789";
    let s = Settings::load(
        None,
        &env(&[("GOFLOW_WEBUI_SECRET", same), ("GOFLOW_AGENT_SECRET", same)]),
        Role::Coordinator,
    )
    .unwrap();
    let err = super::check_secrets_differ(&s).unwrap_err().to_string();
    assert!(err.contains("agents' shared secret"), "{err}");
}

/// `goflow-agent` reads the agent's keys itself (without the coordinator); it must read them
/// as `goflow agent` does, warn about the same unknown keys, and know every key of the file.
#[test]
fn goflow_agent_reads_the_file_and_the_environment_as_goflow_agent_does() {
    use goflow_agent::cli::{AGENT_ENV_KEYS, AGENT_FILE_KEYS, AgentSettings, OTHER_FILE_KEYS};
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "agent.json",
        r#"{
  "Common": {"Broker": "redis://r:6379", "RedisCa": "/etc/r.pem", "Ca": "/etc/ca.pem",
             "TlsCert": "/etc/a.pem", "TlsKey": "/etc/a.key", "AgentSecret": "0123456789abcdef0123",
             "MysqlConn": "mysql://x@y/z", "Typo": 1},
  "Scheduler": {"LogDir": "/var/log/s", "LogFile": "s.log", "WorkerTimeOut": 20},
  "Worker": {"Server": "c1:7070,c2:7070", "AgentId": "a-1", "Parallelism": 7, "HearteatInterval": 5,
             "Queues": "gpu, cpu", "DrainTimeout": "90s", "SpoolDir": "/var/spool/g",
             "SpoolBytes": 1000, "LogDir": "/var/log/w", "LogFile": "w.log", "Retry": 3,
             "AgentTokenFile": "/etc/token", "Paralellism": 2}
}"#,
    );
    let env: HashMap<String, String> = [
        ("GOFLOW_SLOTS", "9"),
        ("GOFLOW_QUEUES", "etl"),
        ("GOFLOW_AGENT_TOKEN", "gfa_0123"),
        ("GOFLOW_DRAIN_TIMEOUT", "30"),
        ("GOFLOW_RETRIES", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let full = Settings::load(Some(&file), &env, Role::Agent)
        .unwrap()
        .agent_settings();
    let alone = AgentSettings::load(Some(&file), &env).unwrap();
    assert_eq!(alone, full);
    assert_eq!(alone.slots, 9);
    assert_eq!(alone.queues, ["etl"]);
    assert_eq!(alone.agent_token.as_deref(), Some("gfa_0123"));
    assert_eq!(alone.agent_token_file, None);
    assert_eq!(alone.spool_bytes, 64 * 1024);
    assert_eq!(alone.log_file, Some(PathBuf::from("/var/log/w/w.log")));
    assert_eq!(alone.warnings.len(), 2, "{:?}", alone.warnings);

    // Every key of the file is the agent's, or left to the coordinators and web UIs.
    for (name, _) in FILE_KEYS {
        let agent_s = AGENT_FILE_KEYS.iter().any(|(known, _)| known == name);
        assert!(
            agent_s != OTHER_FILE_KEYS.contains(name),
            "{name}: in exactly one of the agent's keys and the others'"
        );
    }
    let agent_names: Vec<&str> = AGENT_FILE_KEYS.iter().map(|(name, _)| *name).collect();
    for name in agent_names.iter().chain(OTHER_FILE_KEYS) {
        assert!(
            FILE_KEYS.iter().any(|(known, _)| known == name),
            "{name} is no key of the file"
        );
    }
    // Each variable an agent reads, alone, lands where `goflow agent` puts it.
    for (var, _) in AGENT_ENV_KEYS {
        assert!(ENV_KEYS.iter().any(|(known, _)| known == var), "{var}");
        let value = match *var {
            "GOFLOW_SLOTS" | "GOFLOW_HEARTBEAT_INTERVAL" | "GOFLOW_SPOOL_BYTES" => "70000",
            "GOFLOW_AGENT_SECRET" => "0123456789abcdef0123",
            "GOFLOW_AGENT_TOKEN" => "gfa_x",
            "GOFLOW_DRAIN_TIMEOUT" => "5m",
            _ => "/some/where:1",
        };
        let env: HashMap<String, String> = [(var.to_string(), value.to_string())].into();
        let full = Settings::load(None, &env, Role::Agent).unwrap().agent_settings();
        let alone = AgentSettings::load(None, &env).unwrap();
        assert_eq!(alone, full, "{var}");
        assert_ne!(alone, AgentSettings::default(), "{var} changes nothing");
    }
}
