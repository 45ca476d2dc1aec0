//! An agent's settings: defaults -> config file -> `GOFLOW_*` environment -> flags. The same
//! file and variables as `goflow agent`, which loads them with the coordinator's settings and
//! takes [`AgentSettings`] out of them; `goflow-agent` loads only the agent's keys, here (the
//! coordinator's tests check that both read the same values).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::config_file::{
    agent_secret, check_agent_token, count, duration, env_value, parse_file, path, queue_names,
    read_agent_token_file, read_ca, seconds, string, with_scheme,
};

/// What an agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// The coordinators' gRPC addresses, comma-separated.
    pub server: String,
    pub broker: Option<String>,
    /// Where the broker came from, for messages (`Common.Broker`, `GOFLOW_BROKER`).
    pub broker_source: String,
    pub redis_ca: Option<PathBuf>,
    pub agent_id: String,
    pub agent_secret: Option<String>,
    /// Its own token, or the file holding it: whichever was set last wins.
    pub agent_token: Option<String>,
    pub agent_token_file: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub slots: usize,
    pub queues: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub drain_timeout: Duration,
    pub spool_dir: Option<PathBuf>,
    pub spool_bytes: u64,
    /// `Worker.LogDir` + `Worker.LogFile`; None: stderr.
    pub log_file: Option<PathBuf>,
    /// What loading noticed and the operator should read (unknown keys).
    pub warnings: Vec<String>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            server: format!("http://{}", goflow_proto::DEFAULT_GRPC_ADDR),
            broker: None,
            broker_source: String::new(),
            redis_ca: None,
            agent_id: String::new(),
            agent_secret: None,
            agent_token: None,
            agent_token_file: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            slots: default_slots(),
            queues: vec![],
            tls_cert: None,
            tls_key: None,
            ca: None,
            drain_timeout: crate::DEFAULT_DRAIN_TIMEOUT,
            spool_dir: None,
            spool_bytes: DEFAULT_SPOOL_BYTES,
            log_file: None,
            warnings: vec![],
        }
    }
}

/// How often an agent heartbeats unless told (`Worker.HeartbeatInterval`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Unacknowledged output bytes a try may keep in the spool unless told (`Worker.SpoolBytes`).
pub const DEFAULT_SPOOL_BYTES: u64 = 64 * 1024 * 1024;
/// The least `Worker.SpoolBytes` taken.
pub const MIN_SPOOL_BYTES: i64 = 64 * 1024;

/// Tries at once unless told: four a core, at least eight.
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()).max(2) * 4
}

/// What a key of the file (or an environment variable) sets in an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKey {
    Broker,
    RedisCa,
    Server,
    AgentId,
    AgentSecret,
    AgentToken,
    AgentTokenFile,
    HeartbeatInterval,
    Parallelism,
    Queues,
    TlsCert,
    TlsKey,
    Ca,
    DrainTimeout,
    SpoolDir,
    SpoolBytes,
    LogDir,
    LogFile,
}

/// The file keys an agent reads, the seed's spellings included.
pub const AGENT_FILE_KEYS: &[(&str, AgentKey)] = &[
    ("Common.Broker", AgentKey::Broker),
    ("Common.RedisUrl", AgentKey::Broker),
    ("Common.RedisCa", AgentKey::RedisCa),
    ("Common.AgentSecret", AgentKey::AgentSecret),
    ("Common.TlsCert", AgentKey::TlsCert),
    ("Common.TlsKey", AgentKey::TlsKey),
    ("Common.Ca", AgentKey::Ca),
    ("Worker.Server", AgentKey::Server),
    ("Worker.Coordinator", AgentKey::Server),
    ("Worker.AgentId", AgentKey::AgentId),
    ("Worker.AgentToken", AgentKey::AgentToken),
    ("Worker.AgentTokenFile", AgentKey::AgentTokenFile),
    ("Worker.HearteatInterval", AgentKey::HeartbeatInterval),
    ("Worker.HeartbeatInterval", AgentKey::HeartbeatInterval),
    ("Worker.Parallelism", AgentKey::Parallelism),
    ("Worker.Queues", AgentKey::Queues),
    ("Worker.DrainTimeout", AgentKey::DrainTimeout),
    ("Worker.SpoolDir", AgentKey::SpoolDir),
    ("Worker.SpoolBytes", AgentKey::SpoolBytes),
    ("Worker.LogDir", AgentKey::LogDir),
    ("Worker.LogFile", AgentKey::LogFile),
];

/// The file keys of coordinators and web UIs, which an agent leaves to them (no warning).
pub const OTHER_FILE_KEYS: &[&str] = &[
    "Common.MysqlConn",
    "Common.DatabaseUrl",
    "Common.DataDir",
    "Common.WebuiSecret",
    "Common.EtcdEndpoints",
    "Common.Auth",
    "Common.TlsClientCa",
    "Common.InsecurePlaintext",
    "Common.EtcdCa",
    "Common.EtcdUser",
    "Common.EtcdPassword",
    "Scheduler.LogDir",
    "Scheduler.LogFile",
    "Scheduler.FetchInterval",
    "Scheduler.WorkerTimeOut",
    "Scheduler.RetryQueueimes",
    "Scheduler.RetryQueueTimes",
    "Scheduler.GrpcListen",
    "Scheduler.HttpListen",
    "Scheduler.MaxLogBytes",
    "Scheduler.RetentionDays",
    "Scheduler.LogArchive",
    "Scheduler.EtcdEndpoints",
    "Scheduler.EtcdKey",
    "Scheduler.LeaseTtl",
    "Scheduler.AdvertiseAddress",
    // A task's defaults: the coordinators apply them.
    "Worker.Retry",
    "Worker.RetryDelay",
    "Worker.TaskTimeOut",
    "Alerts.Webhook",
    "Alerts.Channels",
    "Alerts.Rules",
    "Alerts.OnRetry",
    "Alerts.UiUrl",
    "Alerts.CheckInterval",
    "Alerts.AtRiskMargin",
];

/// The environment variables an agent reads, which override the file; later ones win.
pub const AGENT_ENV_KEYS: &[(&str, AgentKey)] = &[
    ("GOFLOW_BROKER", AgentKey::Broker),
    ("GOFLOW_REDIS_URL", AgentKey::Broker),
    ("GOFLOW_COORDINATOR", AgentKey::Server),
    ("GOFLOW_ID", AgentKey::AgentId),
    ("GOFLOW_TLS_CERT", AgentKey::TlsCert),
    ("GOFLOW_TLS_KEY", AgentKey::TlsKey),
    ("GOFLOW_CA", AgentKey::Ca),
    ("GOFLOW_SERVER", AgentKey::Server),
    ("GOFLOW_SLOTS", AgentKey::Parallelism),
    ("GOFLOW_HEARTBEAT_INTERVAL", AgentKey::HeartbeatInterval),
    ("GOFLOW_QUEUES", AgentKey::Queues),
    ("GOFLOW_AGENT_ID", AgentKey::AgentId),
    ("GOFLOW_AGENT_SECRET", AgentKey::AgentSecret),
    ("GOFLOW_AGENT_TOKEN", AgentKey::AgentToken),
    ("GOFLOW_AGENT_TOKEN_FILE", AgentKey::AgentTokenFile),
    ("GOFLOW_DRAIN_TIMEOUT", AgentKey::DrainTimeout),
    ("GOFLOW_SPOOL_DIR", AgentKey::SpoolDir),
    ("GOFLOW_SPOOL_BYTES", AgentKey::SpoolBytes),
    ("GOFLOW_REDIS_CA", AgentKey::RedisCa),
];

impl AgentSettings {
    /// Defaults, then `file`, then the environment (passed in, so tests can inject it).
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut settings = Self::default();
        let (mut log_dir, mut log_name) = (None, None);
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read config file {}", file.display()))?;
            let (seen, duplicates) = parse_file(file, &text)?;
            settings.warnings.extend(duplicates);
            for (name, value) in seen {
                let origin = format!("{} key {name}", file.display());
                match AGENT_FILE_KEYS.iter().find(|(known, _)| *known == name) {
                    Some((_, AgentKey::LogDir)) => log_dir = Some(PathBuf::from(string(&value, &origin)?)),
                    Some((_, AgentKey::LogFile)) => log_name = Some(string(&value, &origin)?),
                    Some((_, key)) => settings.set(*key, &value, &origin, &name)?,
                    None if OTHER_FILE_KEYS.contains(&name.as_str()) => {}
                    None => settings
                        .warnings
                        .push(format!("{}: unknown key {name:?} is ignored", file.display())),
                }
            }
        }
        for (var, key) in AGENT_ENV_KEYS {
            if let Some(raw) = env.get(*var) {
                let value = env_value(raw, key.is_numeric());
                settings.set(*key, &value, &format!("environment variable {var}"), var)?;
            }
        }
        if let (Some(dir), Some(name)) = (log_dir, log_name) {
            settings.log_file = Some(dir.join(name));
        }
        Ok(settings)
    }

    /// Sets what `key` names from `value`; `origin` (where it came from) and `name` (the key's
    /// own name) go into messages.
    pub fn set(&mut self, key: AgentKey, value: &Value, origin: &str, name: &str) -> anyhow::Result<()> {
        match key {
            AgentKey::Broker => {
                self.broker = Some(string(value, origin)?).filter(|b| !b.is_empty());
                self.broker_source = name.to_string();
            }
            AgentKey::RedisCa => self.redis_ca = path(value, origin)?,
            AgentKey::Server => self.server = with_scheme(&string(value, origin)?),
            AgentKey::AgentId => self.agent_id = string(value, origin)?,
            AgentKey::AgentSecret => self.agent_secret = Some(agent_secret(value, origin)?),
            AgentKey::AgentToken => {
                let token = string(value, origin)?;
                check_agent_token(&token).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
                self.agent_token = Some(token);
                self.agent_token_file = None;
            }
            AgentKey::AgentTokenFile => {
                self.agent_token_file = path(value, origin)?;
                if self.agent_token_file.is_some() {
                    self.agent_token = None;
                }
            }
            AgentKey::HeartbeatInterval => self.heartbeat_interval = seconds(value, origin, 1)?,
            AgentKey::Parallelism => {
                self.slots = count(value, origin)? as usize;
                if self.slots == 0 {
                    bail!("{origin}: must be at least 1");
                }
            }
            AgentKey::Queues => self.queues = queue_names(value, origin)?,
            AgentKey::TlsCert => self.tls_cert = path(value, origin)?,
            AgentKey::TlsKey => self.tls_key = path(value, origin)?,
            AgentKey::Ca => self.ca = path(value, origin)?,
            AgentKey::DrainTimeout => self.drain_timeout = duration(value, origin)?,
            AgentKey::SpoolDir => self.spool_dir = path(value, origin)?,
            AgentKey::SpoolBytes => {
                self.spool_bytes = super::config_file::integer(value, origin)?.max(MIN_SPOOL_BYTES) as u64
            }
            AgentKey::LogDir | AgentKey::LogFile => {}
        }
        Ok(())
    }

    /// This agent's token: the configured one, or the first line of the configured file.
    pub fn read_agent_token(&self) -> anyhow::Result<Option<String>> {
        match &self.agent_token_file {
            Some(file) => read_agent_token_file(file).map(Some),
            None => Ok(self.agent_token.clone()),
        }
    }

    /// The Redis CA's PEM (`--redis-ca`), read; None without one.
    pub fn redis_ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        read_ca(
            self.redis_ca.as_deref(),
            "Redis CA (--redis-ca, GOFLOW_REDIS_CA, Common.RedisCa)",
        )
    }
}

impl AgentKey {
    /// Whether an environment variable for it holds a number.
    fn is_numeric(self) -> bool {
        matches!(
            self,
            AgentKey::Parallelism | AgentKey::HeartbeatInterval | AgentKey::SpoolBytes
        )
    }
}
