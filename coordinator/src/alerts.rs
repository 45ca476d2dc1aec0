//! Alert channels and routing (issue 11): where an alert goes, and how each channel wants it.
//!
//! Configuration (file section `Alerts`, see the README's "Alerts"):
//! - `Alerts.Webhook` / `GOFLOW_ALERT_WEBHOOK=URL`: a generic webhook channel named `webhook`
//!   and a rule sending it every alert of every task (final failures, deadlines, long runs;
//!   retries too with `Alerts.OnRetry` / `GOFLOW_ALERT_ON_RETRY=true`).
//! - `Alerts.Channels`: a list of `{name, type, url}` (`type`: webhook, wecom, dingtalk,
//!   feishu, slack) or `{name, type: email, smtp_url, from, to}`.
//! - `Alerts.Rules`: a list of `{tasks, events, channels}`: task id globs (`*`, `?`; empty or
//!   missing: every task), event kinds (failed, retry, long_running, deadline; missing: all
//!   but retry), channel names.
//! - `Alerts.UiUrl` / `GOFLOW_UI_URL`: the web UI's base URL, for the link to the instance.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The last try failed or timed out (not killed by an operator).
    Failed,
    /// A try failed and another one follows.
    Retry,
    /// A try runs longer than the task's `expected_duration`.
    LongRunning,
    /// The instance had not succeeded by the task's `deadline`.
    Deadline,
}

impl AlertKind {
    pub const ALL: [AlertKind; 4] = [Self::Failed, Self::Retry, Self::LongRunning, Self::Deadline];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Retry => "retry",
            Self::LongRunning => "long_running",
            Self::Deadline => "deadline",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelKind {
    Webhook {
        url: String,
    },
    #[serde(rename = "wecom")]
    WeCom {
        url: String,
    },
    #[serde(rename = "dingtalk")]
    DingTalk {
        url: String,
    },
    Feishu {
        url: String,
    },
    Slack {
        url: String,
    },
    /// `smtp_url`: `smtps://user:password@host:465` (TLS), `smtp://host:587?tls=required`
    /// (STARTTLS), as lettre reads it.
    Email {
        smtp_url: String,
        from: String,
        to: Vec<String>,
    },
}

#[derive(Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

impl std::fmt::Debug for Channel {
    /// Names and types only: URLs carry tokens and passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name, self.kind.type_name())
    }
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::WeCom { .. } => "wecom",
            Self::DingTalk { .. } => "dingtalk",
            Self::Feishu { .. } => "feishu",
            Self::Slack { .. } => "slack",
            Self::Email { .. } => "email",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Task id globs; empty: every task.
    pub tasks: Vec<String>,
    pub events: Vec<AlertKind>,
    pub channels: Vec<String>,
}

/// Channels, routing and delivery settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
    /// The web UI's base URL (`http://host:8080`), for links; None: no link.
    pub ui_url: Option<String>,
    /// Add `retry` to the rule of `GOFLOW_ALERT_WEBHOOK`.
    pub on_retry: bool,
    /// How often deadlines and long runs are checked.
    pub check_interval: Duration,
    /// A deadline already at risk alerts again when its prediction gets this much later
    /// (`Alerts.AtRiskMargin`, issue 19).
    pub at_risk_margin: Duration,
    /// The first delay after a failed delivery; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Deliveries tried before an alert is given up as failed.
    pub max_attempts: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            channels: vec![],
            rules: vec![],
            ui_url: None,
            on_retry: false,
            check_interval: Duration::from_secs(30),
            at_risk_margin: Duration::from_secs(15 * 60),
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            max_attempts: 10,
        }
    }
}

/// `deny_unknown_fields` does not mix with `flatten`: `ChannelKind` refuses unknown fields.
#[derive(Deserialize)]
struct RawChannel {
    name: String,
    #[serde(flatten)]
    kind: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    tasks: Vec<String>,
    events: Option<Vec<String>>,
    channels: Vec<String>,
}

impl AlertSettings {
    /// `Alerts.Webhook` / `GOFLOW_ALERT_WEBHOOK`: one channel named `webhook` and a rule for it.
    pub fn set_webhook(&mut self, url: &str) {
        self.channels.retain(|c| c.name != "webhook");
        self.rules.retain(|r| r.channels != ["webhook"]);
        if url.trim().is_empty() {
            return;
        }
        self.channels.push(Channel {
            name: "webhook".into(),
            kind: ChannelKind::Webhook {
                url: url.trim().into(),
            },
        });
        self.rules.push(Rule {
            tasks: vec![],
            events: vec![], // filled in by `finish`: it depends on on_retry
            channels: vec!["webhook".into()],
        });
    }

    pub fn set_channels(&mut self, value: &Value, origin: &str) -> anyhow::Result<()> {
        let raw: Vec<RawChannel> = serde_json::from_value(value.clone())
            .with_context(|| format!("{origin}: expected a list of {{name, type, url}}"))?;
        let webhook = self.channels.iter().find(|c| c.name == "webhook").cloned();
        self.channels.clear();
        for c in raw {
            let kind: ChannelKind =
                serde_json::from_value(c.kind).with_context(|| format!("{origin}: channel {:?}", c.name))?;
            if self.channels.iter().any(|other| other.name == c.name) {
                bail!("{origin}: channel {:?} is defined twice", c.name);
            }
            if c.name.is_empty() || c.name.len() > 128 {
                bail!("{origin}: a channel needs a name of 1 to 128 characters");
            }
            self.channels.push(Channel { name: c.name, kind });
        }
        self.channels
            .extend(webhook.filter(|w| !self.channels.iter().any(|c| c.name == w.name)));
        Ok(())
    }

    pub fn set_rules(&mut self, value: &Value, origin: &str) -> anyhow::Result<()> {
        let raw: Vec<RawRule> = serde_json::from_value(value.clone())
            .with_context(|| format!("{origin}: expected a list of {{tasks, events, channels}}"))?;
        self.rules
            .retain(|r| r.channels == ["webhook"] && r.events.is_empty());
        for (i, r) in raw.into_iter().enumerate() {
            let events = match r.events {
                None => vec![AlertKind::Failed, AlertKind::LongRunning, AlertKind::Deadline],
                Some(names) => names
                    .iter()
                    .map(|n| {
                        AlertKind::parse(n).ok_or_else(|| {
                            anyhow::anyhow!(
                                "{origin}[{i}]: unknown event {n:?} (expected failed, retry, long_running or deadline)"
                            )
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            self.rules.push(Rule {
                tasks: r.tasks,
                events,
                channels: r.channels,
            });
        }
        Ok(())
    }

    /// Every rule's channels exist.
    pub fn check(&self) -> anyhow::Result<()> {
        for rule in &self.rules {
            for name in &rule.channels {
                if !self.channels.iter().any(|c| &c.name == name) {
                    bail!("Alerts.Rules: channel {name:?} is not among Alerts.Channels");
                }
            }
        }
        Ok(())
    }

    /// The channels an alert of `kind` about `task` goes to, each once.
    pub fn route(&self, task: &str, kind: AlertKind) -> Vec<&str> {
        let mut out: Vec<&str> = vec![];
        for rule in &self.rules {
            let events_match = if rule.events.is_empty() {
                // The GOFLOW_ALERT_WEBHOOK rule: everything but retries, unless on_retry.
                kind != AlertKind::Retry || self.on_retry
            } else {
                rule.events.contains(&kind)
            };
            let task_match = rule.tasks.is_empty() || rule.tasks.iter().any(|g| glob_match(g, task));
            if events_match && task_match {
                for c in &rule.channels {
                    if !out.contains(&c.as_str()) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn link(&self, task: &str, etl_day: &str) -> Option<String> {
        self.ui_url
            .as_ref()
            .map(|base| format!("{}/instances/{task}/{etl_day}", base.trim_end_matches('/')))
    }
}

/// `*` any run of characters, `?` one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One alert as the channels see it.
#[derive(Debug, Clone)]
pub struct AlertMessage {
    pub id: i64,
    pub kind: String,
    pub task: String,
    /// `yyyymmdd`.
    pub etl_day: String,
    pub state: String,
    pub try_number: i64,
    pub message: String,
    pub link: Option<String>,
    /// Epoch ms when the alert was raised.
    pub created_at: i64,
}

impl AlertMessage {
    /// The generic webhook's JSON body (documented in the README).
    pub fn webhook_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "task": self.task,
            "etl_day": self.etl_day,
            "state": self.state,
            "try_number": self.try_number,
            "message": self.message,
            "link": self.link,
            "time": chrono::DateTime::from_timestamp_millis(self.created_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "text": self.text(),
        })
    }

    /// The human text the chat channels show.
    pub fn text(&self) -> String {
        let what = match self.kind.as_str() {
            "failed" => format!("failed (try {})", self.try_number),
            "retry" => format!("try {} failed, retrying", self.try_number),
            "long_running" => format!("try {} runs longer than expected", self.try_number),
            "deadline" => format!("missed its deadline (state: {})", self.state),
            other => other.to_string(),
        };
        let mut text = format!("[goflow] {} {}: {what}", self.task, self.etl_day);
        if !self.message.is_empty() {
            text.push_str(&format!("\n{}", self.message));
        }
        if let Some(link) = &self.link {
            text.push_str(&format!("\n{link}"));
        }
        text
    }

    pub fn subject(&self) -> String {
        format!("[goflow] {} {} {}", self.task, self.etl_day, self.kind)
    }

    /// The body `kind` of chat webhook wants (their documented text messages).
    pub fn chat_json(&self, kind: &ChannelKind) -> Value {
        let text = self.text();
        match kind {
            ChannelKind::WeCom { .. } | ChannelKind::DingTalk { .. } => {
                json!({"msgtype": "text", "text": {"content": text}})
            }
            ChannelKind::Feishu { .. } => json!({"msg_type": "text", "content": {"text": text}}),
            ChannelKind::Slack { .. } => json!({"text": text}),
            _ => self.webhook_json(),
        }
    }
}

/// Sends alerts; one HTTP client for every webhook.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Sender {
    pub fn new() -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("goflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the alerts' HTTP client")?;
        Ok(Self { http })
    }

    pub async fn send(&self, channel: &Channel, alert: &AlertMessage) -> anyhow::Result<()> {
        match &channel.kind {
            ChannelKind::Webhook { url } => self.post(url, &alert.webhook_json(), false).await,
            ChannelKind::WeCom { url }
            | ChannelKind::DingTalk { url }
            | ChannelKind::Feishu { url }
            | ChannelKind::Slack { url } => self.post(url, &alert.chat_json(&channel.kind), true).await,
            ChannelKind::Email { smtp_url, from, to } => send_email(smtp_url, from, to, alert).await,
        }
    }

    /// POSTs JSON; a status other than 2xx fails, and so does a chat API's error code in a
    /// 200 answer (WeCom and DingTalk `errcode`, Feishu `code`).
    async fn post(&self, url: &str, body: &Value, chat: bool) -> anyhow::Result<()> {
        let response = self.http.post(url).json(body).send().await.map_err(|e| {
            // reqwest's message names the URL, which may hold a token: keep the host only.
            anyhow::anyhow!("POST to {} failed: {}", host_of(url), without_url(&e))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{} answered {status}: {}", host_of(url), snippet(&text));
        }
        if chat && let Ok(answer) = serde_json::from_str::<Value>(&text) {
            let code = answer
                .get("errcode")
                .or_else(|| answer.get("code"))
                .and_then(Value::as_i64);
            if let Some(code) = code.filter(|c| *c != 0) {
                bail!(
                    "{} refused the message (code {code}): {}",
                    host_of(url),
                    snippet(&text)
                );
            }
        }
        Ok(())
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The host (and port) of a webhook URL, which messages name instead of the URL: its path
/// or query often is the token, and its user info a password.
fn host_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => "the webhook".to_string(),
        },
        Err(_) => "the webhook (its URL does not parse)".to_string(),
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(300).collect()
}

async fn send_email(smtp_url: &str, from: &str, to: &[String], alert: &AlertMessage) -> anyhow::Result<()> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut message = Message::builder()
        .from(from.parse().with_context(|| format!("email: from {from:?}"))?)
        .subject(alert.subject());
    for address in to {
        message = message.to(address
            .parse()
            .with_context(|| format!("email: to {address:?}"))?);
    }
    let message = message
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(alert.text())
        .context("email: cannot build the message")?;
    // lettre's messages may quote the URL, whose user info is the SMTP password.
    let scrub = |e: &dyn std::fmt::Display| goflow_core::redact::scrub(&e.to_string(), smtp_url);
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .map_err(|e| {
            anyhow::anyhow!(
                "email: smtp_url {} is not valid: {}",
                goflow_core::redact_url(smtp_url),
                scrub(&e)
            )
        })?
        .timeout(Some(Duration::from_secs(30)))
        .build();
    transport
        .send(message)
        .await
        .map_err(|e| anyhow::anyhow!("email: {}", scrub(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> AlertMessage {
        AlertMessage {
            id: 7,
            kind: "failed".into(),
            task: "report_daily".into(),
            etl_day: "20240301".into(),
            state: "failed".into(),
            try_number: 2,
            message: "exit code 1".into(),
            link: Some("http://ui:8080/instances/report_daily/20240301".into()),
            created_at: 1_709_337_600_000,
        }
    }

    #[test]
    fn webhook_body_has_the_documented_fields() {
        let v = alert().webhook_json();
        assert_eq!(v["task"], "report_daily");
        assert_eq!(v["etl_day"], "20240301");
        assert_eq!(v["state"], "failed");
        assert_eq!(v["try_number"], 2);
        assert_eq!(v["message"], "exit code 1");
        assert_eq!(v["kind"], "failed");
        assert_eq!(v["link"], "http://ui:8080/instances/report_daily/20240301");
        assert_eq!(v["time"], "2024-03-02T00:00:00Z");
    }

    #[test]
    fn chat_bodies_follow_each_service() {
        let a = alert();
        let text = a.text();
        assert!(
            text.starts_with("[goflow] report_daily 20240301: failed (try 2)"),
            "{text}"
        );
        assert!(
            text.ends_with("http://ui:8080/instances/report_daily/20240301"),
            "{text}"
        );
        let wecom = a.chat_json(&ChannelKind::WeCom { url: String::new() });
        assert_eq!(wecom, json!({"msgtype": "text", "text": {"content": text}}));
        let ding = a.chat_json(&ChannelKind::DingTalk { url: String::new() });
        assert_eq!(ding, json!({"msgtype": "text", "text": {"content": text}}));
        let feishu = a.chat_json(&ChannelKind::Feishu { url: String::new() });
        assert_eq!(feishu, json!({"msg_type": "text", "content": {"text": text}}));
        let slack = a.chat_json(&ChannelKind::Slack { url: String::new() });
        assert_eq!(slack, json!({"text": text}));
    }

    #[test]
    fn routing_by_glob_and_event() {
        let mut s = AlertSettings::default();
        s.set_webhook("http://hook");
        s.set_channels(
            &json!([
                {"name": "dw", "type": "wecom", "url": "https://qyapi.weixin.qq.com/x"},
                {"name": "mail", "type": "email", "smtp_url": "smtps://u:p@mail:465", "from": "goflow@x.org", "to": ["oncall@x.org"]},
            ]),
            "Alerts.Channels",
        )
        .unwrap();
        s.set_rules(
            &json!([
                {"tasks": ["report_*"], "channels": ["dw"]},
                {"tasks": ["etl.?"], "events": ["retry", "failed"], "channels": ["mail", "dw"]},
            ]),
            "Alerts.Rules",
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.route("report_daily", AlertKind::Failed), ["webhook", "dw"]);
        assert_eq!(s.route("report_daily", AlertKind::Retry), Vec::<&str>::new());
        assert_eq!(s.route("etl.a", AlertKind::Retry), ["mail", "dw"]);
        assert_eq!(s.route("etl.ab", AlertKind::Retry), Vec::<&str>::new());
        assert_eq!(s.route("other", AlertKind::Deadline), ["webhook"]);
        s.on_retry = true;
        assert_eq!(s.route("other", AlertKind::Retry), ["webhook"]);
        let bad = s.set_rules(&json!([{"events": ["boom"], "channels": ["dw"]}]), "Alerts.Rules");
        assert!(bad.unwrap_err().to_string().contains("boom"));
        s.set_rules(&json!([{"channels": ["nowhere"]}]), "Alerts.Rules")
            .unwrap();
        assert!(s.check().unwrap_err().to_string().contains("nowhere"));
        assert!(format!("{:?}", s.channels).contains("mail(email)"));
        assert!(!format!("{:?}", s.channels).contains("u:p"));
    }

    /// A plain SMTP server on loopback, one session: answers every command and keeps the lines.
    fn smtp_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = vec![];
            writeln!(out, "220 test ESMTP\r").unwrap();
            let mut reader = BufReader::new(stream);
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                lines.push(line.clone());
                let reply = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    "250 queued"
                } else if line.starts_with("EHLO") {
                    "250 test"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    "354 go on"
                } else if line.starts_with("QUIT") {
                    writeln!(out, "221 bye\r").unwrap();
                    break;
                } else {
                    "250 ok"
                };
                writeln!(out, "{reply}\r").unwrap();
            }
            lines
        });
        (port, handle)
    }

    #[tokio::test]
    async fn email_goes_over_smtp() {
        let (port, server) = smtp_server();
        let channel = Channel {
            name: "mail".into(),
            kind: ChannelKind::Email {
                smtp_url: format!("smtp://127.0.0.1:{port}"),
                from: "goflow <goflow@example.com>".into(),
                to: vec!["oncall@example.com".into()],
            },
        };
        Sender::new().unwrap().send(&channel, &alert()).await.unwrap();
        let lines = server.join().unwrap();
        let text = lines.join("\n");
        assert!(text.contains("MAIL FROM:<goflow@example.com>"), "{text}");
        assert!(text.contains("RCPT TO:<oncall@example.com>"), "{text}");
        assert!(
            text.contains("Subject: [goflow] report_daily 20240301 failed"),
            "{text}"
        );
        assert!(
            text.contains("[goflow] report_daily 20240301: failed (try 2)"),
            "{text}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("report_*", "report_daily"));
        assert!(!glob_match("report_*", "daily_report"));
        assert!(glob_match("*_daily", "report_daily"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("exact", "exact"));
    }
}
