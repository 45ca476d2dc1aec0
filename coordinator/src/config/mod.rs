//! Configuration in layers: defaults -> file (JSON or TOML) -> `GOFLOW_*` environment ->
//! flags (applied by `main`) -> validation.
//!
//! The seed's `goflow_conf.json` loads as it is: its sections (`Common`, `Scheduler`,
//! `Worker`) and its misspelled keys (`HearteatInterval`, `RetryQueueimes`) map onto the new
//! settings. Unknown keys are warned about, never silently dropped; a wrong type names the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::DatabaseUrl;
use anyhow::{Context, bail};
use goflow_agent::cli::AgentSettings;
use goflow_agent::cli::config_file::{
    self, agent_secret, boolean, count, duration, integer, parse_file, path, queue_names, read_ca, seconds,
    string,
};
use serde_json::Value;
// The config file's reader and its values are the agent crate's: `goflow-agent` reads the same file.
pub use goflow_agent::cli::config_file::{
    check_agent_token, parse_duration, read_secret_file, refuse_secret_in_flag, with_scheme,
};
pub use goflow_agent::cli::is_loopback;

use crate::engine::EngineSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// None: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Where the URL came from, for messages (`Common.MysqlConn`, `GOFLOW_DATABASE_URL`, ...).
    pub database_url_source: String,
    pub broker: Option<String>,
    /// Where the broker came from, for messages (`Common.Broker`, `GOFLOW_BROKER`).
    pub broker_source: String,
    pub grpc_listen: String,
    pub http_listen: String,
    /// The coordinator an agent reports to.
    pub server: String,
    pub log_file: Option<PathBuf>,
    pub engine: EngineSettings,
    pub agent_id: String,
    /// The cluster's shared agent secret (a single trusted network): any agent presenting it
    /// is believed to be whichever agent it names.
    pub agent_secret: Option<String>,
    /// What a web UI proves itself with (`--webui-secret-file`, `GOFLOW_WEBUI_SECRET`,
    /// `Common.WebuiSecret`), so that a coordinator believes the browser's address it names:
    /// logins are then slowed down per browser, not per web UI. Never the agents' secret.
    pub webui_secret: Option<String>,
    /// This agent's own credential (`goflow agent-token create --id ID`; `Worker.AgentToken`,
    /// `GOFLOW_AGENT_TOKEN`), or the file holding it (`--agent-token-file`,
    /// `Worker.AgentTokenFile`, `GOFLOW_AGENT_TOKEN_FILE`): whichever was set last wins.
    pub agent_token: Option<String>,
    pub agent_token_file: Option<PathBuf>,
    pub agent_slots: usize,
    pub agent_queues: Vec<String>,
    /// How long an agent that is asked to stop lets its running tries finish before it kills
    /// them (`--drain-timeout`, `Worker.DrainTimeout`, `GOFLOW_DRAIN_TIMEOUT`).
    pub drain_timeout: Duration,
    /// Where an agent keeps each try's output until a coordinator stored it
    /// (`Worker.SpoolDir`); None: a folder of its own under the system's temp folder.
    pub spool_dir: Option<PathBuf>,
    /// Most unacknowledged output bytes per try in the spool (`Worker.SpoolBytes`); past it,
    /// lines are dropped and the log says how many bytes.
    pub spool_bytes: u64,
    /// How this process runs (`standalone`, `coordinator`), for logs and GetVersion.
    pub mode: &'static str,
    /// etcd for leader election; empty: the database lease.
    pub etcd_endpoints: Vec<String>,
    /// The election key in etcd: one per goflow cluster.
    pub etcd_key: String,
    /// How long a leader that stops renewing keeps leading; None: 3 s with etcd, 5 s without.
    pub lease_ttl: Option<Duration>,
    /// The address other coordinators and clients reach this one at (host:port); None: the
    /// gRPC listen address, with this host's name for an unspecified IP.
    pub advertise_address: Option<String>,
    /// Every ControlService call needs a login or a token (always on beyond loopback).
    pub auth: bool,
    /// TLS (issue 9): the certificate (PEM, chain) and key this process serves gRPC and the
    /// web UI with; both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) the coordinators' certificates are signed by: clients verify `https://`
    /// coordinators against it (the system's roots without).
    pub ca: Option<PathBuf>,
    /// The CA (PEM) agents' client certificates must be signed by (mTLS for agents).
    pub tls_client_ca: Option<PathBuf>,
    /// Serve with authentication beyond loopback without TLS, so that passwords and tokens
    /// cross the network in clear (`--insecure-plaintext`); warned about at every start.
    pub insecure_plaintext: bool,
    /// The CA (PEM) a `rediss://` server's certificate must be signed by; None: the system's
    /// trusted roots.
    pub redis_ca: Option<PathBuf>,
    /// The CA (PEM) an `https://` etcd's certificate must be signed by; None: the system's.
    pub etcd_ca: Option<PathBuf>,
    /// etcd's user and password (etcd with authentication enabled); both or neither.
    pub etcd_user: Option<String>,
    pub etcd_password: Option<String>,
    /// Where ended tries' logs are archived (`--log-archive`, `Scheduler.LogArchive`,
    /// `GOFLOW_LOG_ARCHIVE`): `s3://bucket/prefix` or `file:///dir`; opened and checked at start.
    pub log_archive: Option<String>,
    /// What loading noticed and the operator should read (unknown keys, ignored settings).
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("goflow-data"),
            database_url: None,
            database_url_source: String::new(),
            broker: None,
            broker_source: String::new(),
            grpc_listen: goflow_proto::DEFAULT_GRPC_ADDR.into(),
            http_listen: goflow_proto::DEFAULT_HTTP_ADDR.into(),
            server: format!("http://{}", goflow_proto::DEFAULT_GRPC_ADDR),
            log_file: None,
            engine: EngineSettings::default(),
            agent_id: String::new(),
            agent_secret: None,
            webui_secret: None,
            agent_token: None,
            agent_token_file: None,
            agent_slots: goflow_agent::cli::default_slots(),
            agent_queues: vec![],
            drain_timeout: goflow_agent::DEFAULT_DRAIN_TIMEOUT,
            spool_dir: None,
            spool_bytes: goflow_agent::cli::DEFAULT_SPOOL_BYTES,
            mode: "standalone",
            etcd_endpoints: vec![],
            etcd_key: "goflow/leader".into(),
            lease_ttl: None,
            advertise_address: None,
            auth: false,
            tls_cert: None,
            tls_key: None,
            ca: None,
            tls_client_ca: None,
            insecure_plaintext: false,
            redis_ca: None,
            etcd_ca: None,
            etcd_user: None,
            etcd_password: None,
            log_archive: None,
            warnings: vec![],
        }
    }
}

/// What a key of the file (or an environment variable) sets.
// `EtcdKey` and `TlsKey` name settings ("the etcd key", "the TLS key"), not kinds of key.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy)]
enum Key {
    DatabaseUrl,
    Broker,
    DataDir,
    GrpcListen,
    HttpListen,
    Server,
    SchedulerLogDir,
    SchedulerLogFile,
    WorkerLogDir,
    WorkerLogFile,
    FetchInterval,
    WorkerTimeout,
    RetryQueueTimes,
    Parallelism,
    HeartbeatInterval,
    Retry,
    RetryDelay,
    TaskTimeout,
    Queues,
    AgentId,
    AgentSecret,
    WebuiSecret,
    AgentToken,
    AgentTokenFile,
    MaxLogBytes,
    SpoolDir,
    SpoolBytes,
    EtcdEndpoints,
    EtcdKey,
    LeaseTtl,
    AdvertiseAddress,
    Auth,
    TlsCert,
    TlsKey,
    Ca,
    TlsClientCa,
    AlertWebhook,
    AlertChannels,
    AlertRules,
    AlertOnRetry,
    UiUrl,
    AlertCheckInterval,
    AlertAtRiskMargin,
    DrainTimeout,
    InsecurePlaintext,
    RedisCa,
    EtcdCa,
    EtcdUser,
    EtcdPassword,
    RetentionDays,
    LogArchive,
}

/// Every key a file may hold, the seed's spellings included.
const FILE_KEYS: &[(&str, Key)] = &[
    ("Common.MysqlConn", Key::DatabaseUrl),
    ("Common.DatabaseUrl", Key::DatabaseUrl),
    ("Common.Broker", Key::Broker),
    ("Common.DataDir", Key::DataDir),
    ("Scheduler.LogDir", Key::SchedulerLogDir),
    ("Scheduler.LogFile", Key::SchedulerLogFile),
    ("Scheduler.FetchInterval", Key::FetchInterval),
    ("Scheduler.WorkerTimeOut", Key::WorkerTimeout),
    ("Scheduler.RetryQueueimes", Key::RetryQueueTimes),
    ("Scheduler.RetryQueueTimes", Key::RetryQueueTimes),
    ("Scheduler.GrpcListen", Key::GrpcListen),
    ("Scheduler.HttpListen", Key::HttpListen),
    ("Scheduler.MaxLogBytes", Key::MaxLogBytes),
    ("Scheduler.RetentionDays", Key::RetentionDays),
    ("Scheduler.LogArchive", Key::LogArchive),
    ("Worker.LogDir", Key::WorkerLogDir),
    ("Worker.LogFile", Key::WorkerLogFile),
    ("Worker.Parallelism", Key::Parallelism),
    ("Worker.HearteatInterval", Key::HeartbeatInterval),
    ("Worker.HeartbeatInterval", Key::HeartbeatInterval),
    ("Worker.Retry", Key::Retry),
    ("Worker.RetryDelay", Key::RetryDelay),
    ("Worker.TaskTimeOut", Key::TaskTimeout),
    ("Worker.Queues", Key::Queues),
    ("Worker.Server", Key::Server),
    ("Worker.AgentId", Key::AgentId),
    ("Worker.DrainTimeout", Key::DrainTimeout),
    ("Worker.SpoolDir", Key::SpoolDir),
    ("Worker.SpoolBytes", Key::SpoolBytes),
    ("Common.AgentSecret", Key::AgentSecret),
    ("Common.WebuiSecret", Key::WebuiSecret),
    ("Worker.AgentToken", Key::AgentToken),
    ("Worker.AgentTokenFile", Key::AgentTokenFile),
    ("Common.RedisUrl", Key::Broker),
    ("Common.EtcdEndpoints", Key::EtcdEndpoints),
    ("Scheduler.EtcdEndpoints", Key::EtcdEndpoints),
    ("Scheduler.EtcdKey", Key::EtcdKey),
    ("Scheduler.LeaseTtl", Key::LeaseTtl),
    ("Scheduler.AdvertiseAddress", Key::AdvertiseAddress),
    ("Worker.Coordinator", Key::Server),
    ("Common.Auth", Key::Auth),
    ("Common.TlsCert", Key::TlsCert),
    ("Common.TlsKey", Key::TlsKey),
    ("Common.Ca", Key::Ca),
    ("Common.TlsClientCa", Key::TlsClientCa),
    ("Alerts.Webhook", Key::AlertWebhook),
    ("Alerts.Channels", Key::AlertChannels),
    ("Alerts.Rules", Key::AlertRules),
    ("Alerts.OnRetry", Key::AlertOnRetry),
    ("Alerts.UiUrl", Key::UiUrl),
    ("Alerts.CheckInterval", Key::AlertCheckInterval),
    ("Alerts.AtRiskMargin", Key::AlertAtRiskMargin),
    ("Common.InsecurePlaintext", Key::InsecurePlaintext),
    ("Common.RedisCa", Key::RedisCa),
    ("Common.EtcdCa", Key::EtcdCa),
    ("Common.EtcdUser", Key::EtcdUser),
    ("Common.EtcdPassword", Key::EtcdPassword),
];

/// Environment variables, which override the file.
const ENV_KEYS: &[(&str, Key)] = &[
    ("GOFLOW_DATABASE_URL", Key::DatabaseUrl),
    ("GOFLOW_BROKER", Key::Broker),
    ("GOFLOW_REDIS_URL", Key::Broker),
    ("GOFLOW_ETCD_ENDPOINTS", Key::EtcdEndpoints),
    ("GOFLOW_ETCD_KEY", Key::EtcdKey),
    ("GOFLOW_LEASE_TTL", Key::LeaseTtl),
    ("GOFLOW_ADVERTISE_ADDRESS", Key::AdvertiseAddress),
    ("GOFLOW_COORDINATOR", Key::Server),
    ("GOFLOW_ID", Key::AgentId),
    ("GOFLOW_AUTH", Key::Auth),
    ("GOFLOW_TLS_CERT", Key::TlsCert),
    ("GOFLOW_TLS_KEY", Key::TlsKey),
    ("GOFLOW_CA", Key::Ca),
    ("GOFLOW_TLS_CLIENT_CA", Key::TlsClientCa),
    ("GOFLOW_DATA_DIR", Key::DataDir),
    ("GOFLOW_GRPC_LISTEN", Key::GrpcListen),
    ("GOFLOW_HTTP_LISTEN", Key::HttpListen),
    ("GOFLOW_SERVER", Key::Server),
    ("GOFLOW_WORKER_TIMEOUT", Key::WorkerTimeout),
    ("GOFLOW_RETRY_QUEUE_TIMES", Key::RetryQueueTimes),
    ("GOFLOW_SLOTS", Key::Parallelism),
    ("GOFLOW_HEARTBEAT_INTERVAL", Key::HeartbeatInterval),
    ("GOFLOW_RETRIES", Key::Retry),
    ("GOFLOW_RETRY_DELAY", Key::RetryDelay),
    ("GOFLOW_TASK_TIMEOUT", Key::TaskTimeout),
    ("GOFLOW_QUEUES", Key::Queues),
    ("GOFLOW_AGENT_ID", Key::AgentId),
    ("GOFLOW_AGENT_SECRET", Key::AgentSecret),
    ("GOFLOW_WEBUI_SECRET", Key::WebuiSecret),
    ("GOFLOW_AGENT_TOKEN", Key::AgentToken),
    ("GOFLOW_AGENT_TOKEN_FILE", Key::AgentTokenFile),
    ("GOFLOW_DRAIN_TIMEOUT", Key::DrainTimeout),
    ("GOFLOW_SPOOL_DIR", Key::SpoolDir),
    ("GOFLOW_SPOOL_BYTES", Key::SpoolBytes),
    ("GOFLOW_ALERT_WEBHOOK", Key::AlertWebhook),
    ("GOFLOW_ALERT_ON_RETRY", Key::AlertOnRetry),
    ("GOFLOW_UI_URL", Key::UiUrl),
    ("GOFLOW_ALERT_CHECK_INTERVAL", Key::AlertCheckInterval),
    ("GOFLOW_ALERT_AT_RISK_MARGIN", Key::AlertAtRiskMargin),
    ("GOFLOW_INSECURE_PLAINTEXT", Key::InsecurePlaintext),
    ("GOFLOW_REDIS_CA", Key::RedisCa),
    ("GOFLOW_ETCD_CA", Key::EtcdCa),
    ("GOFLOW_ETCD_USER", Key::EtcdUser),
    ("GOFLOW_ETCD_PASSWORD", Key::EtcdPassword),
    ("GOFLOW_RETENTION_DAYS", Key::RetentionDays),
    ("GOFLOW_LOG_ARCHIVE", Key::LogArchive),
];

/// Which role reads the file, so a `LogDir` of the other role does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Agent,
}

impl Settings {
    /// Defaults, then `file`, then the environment (passed in, so tests can inject it).
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>, role: Role) -> anyhow::Result<Self> {
        let mut settings = Self::default();
        let mut log_dir = None;
        let mut log_name = None;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let (seen, duplicates) = parse_file(path, &text)?;
            settings.warnings.extend(duplicates);
            for (name, value) in seen {
                let Some((_, key)) = FILE_KEYS.iter().find(|(known, _)| *known == name) else {
                    settings
                        .warnings
                        .push(format!("{}: unknown key {name:?} is ignored", path.display()));
                    continue;
                };
                let origin = format!("{} key {name}", path.display());
                match (key, role) {
                    (Key::SchedulerLogDir, Role::Coordinator) | (Key::WorkerLogDir, Role::Agent) => {
                        log_dir = Some(PathBuf::from(string(&value, &origin)?))
                    }
                    (Key::SchedulerLogFile, Role::Coordinator) | (Key::WorkerLogFile, Role::Agent) => {
                        log_name = Some(string(&value, &origin)?)
                    }
                    (
                        Key::SchedulerLogDir | Key::WorkerLogDir | Key::SchedulerLogFile | Key::WorkerLogFile,
                        _,
                    ) => {
                        string(&value, &origin)?;
                    }
                    _ => settings.set(*key, &value, &origin, &name)?,
                }
            }
        }
        for (var, key) in ENV_KEYS {
            if let Some(raw) = env.get(*var) {
                let value = env_value(*key, raw);
                settings.set(*key, &value, &format!("environment variable {var}"), var)?;
            }
        }
        if let (Some(dir), Some(name)) = (log_dir, log_name) {
            settings.log_file = Some(dir.join(name));
        }
        settings.engine.alerts.check()?;
        Ok(settings)
    }

    fn set(&mut self, key: Key, value: &Value, origin: &str, name: &str) -> anyhow::Result<()> {
        match key {
            Key::DatabaseUrl => {
                self.database_url = Some(string(value, origin)?);
                self.database_url_source = name.to_string();
            }
            Key::Broker => {
                self.broker = Some(string(value, origin)?).filter(|b| !b.is_empty());
                self.broker_source = name.to_string();
            }
            Key::DataDir => self.data_dir = PathBuf::from(string(value, origin)?),
            Key::GrpcListen => self.grpc_listen = string(value, origin)?,
            Key::HttpListen => self.http_listen = string(value, origin)?,
            Key::Server => self.server = with_scheme(&string(value, origin)?),
            Key::FetchInterval => {
                integer(value, origin)?;
                self.warnings.push(format!(
                    "{origin} is accepted but not needed: goflow fires schedules at their time, it does not scan"
                ));
            }
            Key::WorkerTimeout => self.engine.worker_timeout = seconds(value, origin, 1)?,
            Key::RetryQueueTimes => self.engine.retry_queue_times = count(value, origin)?,
            Key::Parallelism => {
                self.agent_slots = count(value, origin)? as usize;
                if self.agent_slots == 0 {
                    bail!("{origin}: must be at least 1");
                }
            }
            Key::HeartbeatInterval => self.engine.heartbeat_interval = seconds(value, origin, 1)?,
            Key::DrainTimeout => self.drain_timeout = duration(value, origin)?,
            Key::Retry => self.engine.default_retries = count(value, origin)?,
            Key::RetryDelay => self.engine.default_retry_delay = seconds(value, origin, 0)?,
            Key::TaskTimeout => {
                let secs = integer(value, origin)?;
                self.engine.default_timeout = match secs {
                    -1 | 0 => None,
                    s if s > 0 => Some(Duration::from_secs(s as u64)),
                    s => bail!("{origin}: {s} is not a timeout (seconds, or -1 for none)"),
                };
            }
            Key::Queues => self.agent_queues = queue_names(value, origin)?,
            Key::AgentId => self.agent_id = string(value, origin)?,
            Key::AgentSecret => self.agent_secret = Some(agent_secret(value, origin)?),
            Key::WebuiSecret => {
                self.webui_secret = Some(check_webui_secret(&string(value, origin)?, origin)?)
            }
            Key::AgentToken => {
                let token = string(value, origin)?;
                check_agent_token(&token).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
                self.agent_token = Some(token);
                self.agent_token_file = None;
            }
            Key::AgentTokenFile => {
                self.agent_token_file = path(value, origin)?;
                if self.agent_token_file.is_some() {
                    self.agent_token = None;
                }
            }
            Key::EtcdEndpoints => {
                self.etcd_endpoints = match value {
                    Value::Array(items) => items
                        .iter()
                        .map(|v| string(v, origin))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                    other => string(other, origin)?
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                };
                self.etcd_endpoints = self.etcd_endpoints.iter().map(|e| with_scheme(e)).collect();
                for endpoint in &self.etcd_endpoints {
                    refuse_etcd_credentials(endpoint, origin)?;
                }
            }
            Key::EtcdKey => self.etcd_key = string(value, origin)?,
            Key::Auth => self.auth = boolean(value, origin)?,
            Key::AlertWebhook => alerts(&mut self.engine).set_webhook(&string(value, origin)?),
            Key::AlertChannels => {
                alerts(&mut self.engine).set_channels(value, origin)?;
            }
            Key::AlertRules => alerts(&mut self.engine).set_rules(value, origin)?,
            Key::AlertOnRetry => alerts(&mut self.engine).on_retry = boolean(value, origin)?,
            Key::UiUrl => {
                alerts(&mut self.engine).ui_url =
                    Some(string(value, origin)?).filter(|u| !u.trim().is_empty())
            }
            Key::AlertCheckInterval => alerts(&mut self.engine).check_interval = seconds(value, origin, 1)?,
            Key::AlertAtRiskMargin => alerts(&mut self.engine).at_risk_margin = duration(value, origin)?,
            Key::TlsCert => self.tls_cert = path(value, origin)?,
            Key::TlsKey => self.tls_key = path(value, origin)?,
            Key::Ca => self.ca = path(value, origin)?,
            Key::TlsClientCa => self.tls_client_ca = path(value, origin)?,
            Key::InsecurePlaintext => self.insecure_plaintext = boolean(value, origin)?,
            Key::RedisCa => self.redis_ca = path(value, origin)?,
            Key::EtcdCa => self.etcd_ca = path(value, origin)?,
            Key::EtcdUser => self.etcd_user = Some(string(value, origin)?).filter(|u| !u.is_empty()),
            Key::EtcdPassword => self.etcd_password = Some(string(value, origin)?).filter(|p| !p.is_empty()),
            Key::LeaseTtl => self.lease_ttl = Some(seconds(value, origin, 2)?),
            Key::AdvertiseAddress => {
                self.advertise_address = Some(string(value, origin)?).filter(|a| !a.is_empty())
            }
            Key::MaxLogBytes => self.engine.max_log_bytes = integer(value, origin)?.max(1024),
            Key::RetentionDays => {
                self.engine.retention_days = Some(retention_days(integer(value, origin)?, origin)?)
            }
            Key::LogArchive => {
                self.log_archive = Some(string(value, origin)?.trim().to_string()).filter(|u| !u.is_empty())
            }
            Key::SpoolDir => self.spool_dir = path(value, origin)?,
            Key::SpoolBytes => {
                self.spool_bytes = integer(value, origin)?.max(goflow_agent::cli::MIN_SPOOL_BYTES) as u64
            }
            Key::SchedulerLogDir | Key::SchedulerLogFile | Key::WorkerLogDir | Key::WorkerLogFile => {}
        }
        Ok(())
    }

    /// The database to use: the configured URL (`Common.MysqlConn`, `GOFLOW_DATABASE_URL`,
    /// `--database-url`; SQLite, PostgreSQL or MySQL), or SQLite in the data folder.
    pub fn database_url(&self) -> anyhow::Result<DatabaseUrl> {
        let Some(url) = &self.database_url else {
            return Ok(DatabaseUrl::sqlite(&self.data_dir.join("goflow.db")));
        };
        let source = if self.database_url_source.is_empty() {
            "database URL"
        } else {
            &self.database_url_source
        };
        DatabaseUrl::parse(url, source)
    }
}

impl Settings {
    /// The Redis CA's PEM (`--redis-ca`), read; None without one.
    pub fn redis_ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        read_ca(
            self.redis_ca.as_deref(),
            "Redis CA (--redis-ca, GOFLOW_REDIS_CA, Common.RedisCa)",
        )
    }

    /// The etcd CA's PEM (`--etcd-ca`), read; None without one.
    pub fn etcd_ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        read_ca(
            self.etcd_ca.as_deref(),
            "etcd CA (--etcd-ca, GOFLOW_ETCD_CA, Common.EtcdCa)",
        )
    }

    /// etcd's user and password, both or neither.
    pub fn etcd_credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        match (&self.etcd_user, &self.etcd_password) {
            (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => bail!(
                "etcd's user is set but not its password: set GOFLOW_ETCD_PASSWORD, Common.EtcdPassword \
                 or --etcd-password-file"
            ),
            (None, Some(_)) => bail!(
                "etcd's password is set but not its user: set --etcd-user, GOFLOW_ETCD_USER or Common.EtcdUser"
            ),
        }
    }
}

/// A Redis address as logs and messages show it: without its password.
pub fn shown_redis_url(broker: &str) -> String {
    goflow_core::redact_url(broker)
}

/// Environment values are text; numbers are read as numbers where the key wants one.
fn env_value(key: Key, raw: &str) -> Value {
    let numeric = matches!(
        key,
        Key::WorkerTimeout
            | Key::RetryQueueTimes
            | Key::Parallelism
            | Key::HeartbeatInterval
            | Key::Retry
            | Key::RetryDelay
            | Key::TaskTimeout
            | Key::LeaseTtl
            | Key::AlertCheckInterval
            | Key::SpoolBytes
            | Key::RetentionDays
            | Key::MaxLogBytes
    );
    config_file::env_value(raw, numeric)
}

/// Days of history a nightly clean keeps: at least one (0 would delete today's runs).
pub fn retention_days(days: i64, origin: &str) -> anyhow::Result<u32> {
    match u32::try_from(days) {
        Ok(days) if days >= 1 => Ok(days),
        _ => bail!("{origin}: {days} is not a number of days to keep (1 or more)"),
    }
}

fn alerts(engine: &mut EngineSettings) -> &mut crate::alerts::AlertSettings {
    std::sync::Arc::make_mut(&mut engine.alerts)
}

impl Settings {
    /// This agent's token: the configured one, or the first line of the configured file.
    pub fn read_agent_token(&self) -> anyhow::Result<Option<String>> {
        match &self.agent_token_file {
            Some(file) => config_file::read_agent_token_file(file).map(Some),
            None => Ok(self.agent_token.clone()),
        }
    }

    /// What `goflow agent` runs with: the agent's part of these settings.
    pub fn agent_settings(&self) -> AgentSettings {
        AgentSettings {
            server: self.server.clone(),
            broker: self.broker.clone(),
            broker_source: self.broker_source.clone(),
            redis_ca: self.redis_ca.clone(),
            agent_id: self.agent_id.clone(),
            agent_secret: self.agent_secret.clone(),
            agent_token: self.agent_token.clone(),
            agent_token_file: self.agent_token_file.clone(),
            heartbeat_interval: self.engine.heartbeat_interval,
            slots: self.agent_slots,
            queues: self.agent_queues.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            ca: self.ca.clone(),
            drain_timeout: self.drain_timeout,
            spool_dir: self.spool_dir.clone(),
            spool_bytes: self.spool_bytes,
            log_file: self.log_file.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Authentication is always on beyond loopback: a coordinator asked to listen where others
/// can reach it, without `--auth`, refuses to start (anyone reaching the port could otherwise
/// define a task and run any command on every agent).
pub fn require_auth_beyond_loopback(settings: &Settings) -> anyhow::Result<()> {
    if settings.auth {
        return Ok(());
    }
    for (what, address) in [
        ("--grpc-listen", &settings.grpc_listen),
        ("--http-listen", &settings.http_listen),
    ] {
        if !is_loopback(address) {
            bail!(
                "{what} {address} can be reached from other machines, and authentication is off: anyone \
                 reaching it could run any command on every agent. Start with --auth (GOFLOW_AUTH=true, \
                 Common.Auth in the config file) and create users with `goflow user add NAME --role admin`, \
                 or listen on 127.0.0.1"
            );
        }
    }
    Ok(())
}

/// With authentication on, passwords and session tokens travel on every listener: beyond
/// loopback they need TLS. Refuses to start without `--tls-cert`, unless `--insecure-plaintext`
/// says the operator knows (a private network, a TLS-terminating proxy), which is then warned
/// about at every start (`settings.warnings`, logged once logging is up).
pub fn require_tls_beyond_loopback(settings: &mut Settings) -> anyhow::Result<()> {
    if !settings.auth || settings.tls_cert.is_some() {
        return Ok(());
    }
    let exposed: Vec<String> = [
        ("--grpc-listen", &settings.grpc_listen),
        ("--http-listen", &settings.http_listen),
    ]
    .into_iter()
    .filter(|(_, address)| !is_loopback(address))
    .map(|(flag, address)| format!("{flag} {address}"))
    .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    if settings.insecure_plaintext {
        settings.warnings.push(format!(
            "--insecure-plaintext: serving {} without TLS, so passwords, session and API tokens and the \
             agent secret cross the network in clear; set --tls-cert and --tls-key to encrypt them",
            exposed.join(" and ")
        ));
        return Ok(());
    }
    bail!(
        "{} can be reached from other machines and authentication is on, but TLS is off: passwords, \
         tokens and the agent secret would cross the network in clear. Serve TLS with --tls-cert FILE \
         --tls-key FILE (GOFLOW_TLS_CERT/GOFLOW_TLS_KEY, Common.TlsCert/TlsKey; scripts/make-test-ca makes \
         a test CA), or, on a network you trust or behind a proxy that terminates TLS, start with \
         --insecure-plaintext (GOFLOW_INSECURE_PLAINTEXT=true)",
        exposed.join(" and ")
    )
}

/// The web UI's secret: long enough not to be guessed, and fit for a metadata value.
pub fn check_webui_secret(secret: &str, origin: &str) -> anyhow::Result<String> {
    let secret = secret.trim();
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{origin}: the web UI secret must be at least 16 printable characters, without spaces");
    }
    Ok(secret.to_string())
}

/// The web UI's secret proves only a browser's address; the agents' shared secret proves a
/// coordinator (and the agents it vouches for). One secret for both would let a web UI act as
/// a coordinator or an agent.
pub fn check_secrets_differ(settings: &Settings) -> anyhow::Result<()> {
    if let (Some(webui), Some(agents)) = (&settings.webui_secret, &settings.agent_secret)
        && webui == agents
    {
        bail!(
            "the web UI secret (--webui-secret-file, GOFLOW_WEBUI_SECRET, Common.WebuiSecret) is the \
             agents' shared secret: give the web UI a secret of its own, so that it cannot act as an \
             agent or a coordinator"
        );
    }
    Ok(())
}

/// etcd endpoints carry no credentials: etcd takes a user and password apart
/// (`GOFLOW_ETCD_USER`, `GOFLOW_ETCD_PASSWORD`), and an endpoint is logged as it is.
fn refuse_etcd_credentials(endpoint: &str, origin: &str) -> anyhow::Result<()> {
    let has_userinfo = url::Url::parse(endpoint)
        .map(|u| !u.username().is_empty() || u.password().is_some())
        .unwrap_or(endpoint.contains('@'));
    if has_userinfo {
        bail!(
            "{origin}: the etcd endpoint {} holds credentials; give etcd's user and password as \
             GOFLOW_ETCD_USER and GOFLOW_ETCD_PASSWORD (Common.EtcdUser, Common.EtcdPassword, or \
             --etcd-user and --etcd-password-file) and the endpoint as https://HOST:PORT",
            goflow_core::redact_url(endpoint)
        );
    }
    Ok(())
}

/// Checks `--etcd-endpoints` given as flags (the file and environment are checked on load).
pub fn check_etcd_endpoints(endpoints: &[String]) -> anyhow::Result<()> {
    endpoints
        .iter()
        .try_for_each(|e| refuse_etcd_credentials(e, "--etcd-endpoints"))
}

#[cfg(test)]
mod tests;
