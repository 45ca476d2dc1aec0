//! Reading goflow's config file (JSON or TOML, the seed's `goflow_conf.json` as it is) and the
//! typed values of its keys. One reader for every process: the `goflow` binary's settings and
//! the agent-only `goflow-agent` binary's both go through it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// `(Section.Key, value)` pairs, in file order.
pub type KeyValues = Vec<(String, Value)>;

/// The file's `(Section.Key, value)` pairs in order, and a warning for each key given twice
/// (JSON allows it; the last one wins, as in the seed's own example with two `MysqlConn`).
pub fn parse_file(path: &Path, text: &str) -> anyhow::Result<(KeyValues, Vec<String>)> {
    let mut pairs = vec![];
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        // TOML itself refuses duplicate keys.
        let table: toml::Table = toml::from_str(text)
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        for (section, value) in serde_json::to_value(table)?.as_object().into_iter().flatten() {
            match value.as_object() {
                Some(keys) => pairs.extend(keys.iter().map(|(k, v)| (format!("{section}.{k}"), v.clone()))),
                None => pairs.push((section.clone(), value.clone())),
            }
        }
        return Ok((pairs, vec![]));
    }
    let invalid = || {
        format!(
            "config file {} is not valid JSON (comments are not allowed in JSON)",
            path.display()
        )
    };
    let sections: Entries<Box<serde_json::value::RawValue>> =
        serde_json::from_str(text).with_context(invalid)?;
    for (section, raw) in sections.0 {
        if raw.get().trim_start().starts_with('{') {
            let keys: Entries<Value> = serde_json::from_str(raw.get()).with_context(invalid)?;
            pairs.extend(keys.0.into_iter().map(|(k, v)| (format!("{section}.{k}"), v)));
        } else {
            pairs.push((section, serde_json::from_str(raw.get()).with_context(invalid)?));
        }
    }
    let mut warnings = vec![];
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[i + 1..].iter().any(|(later, _)| later == name) {
            warnings.push(format!(
                "{}: key {name} is given twice; the last one is used",
                path.display()
            ));
        }
    }
    Ok((pairs, warnings))
}

/// A JSON object's entries in order, duplicates kept (a map would keep only the last).
struct Entries<T>(Vec<(String, T)>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut entries = vec![];
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// An environment variable's text as a value: a number where the key wants one (`numeric`).
pub fn env_value(raw: &str, numeric: bool) -> Value {
    if numeric && let Ok(n) = raw.trim().parse::<i64>() {
        return Value::from(n);
    }
    Value::from(raw)
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub fn string(value: &Value, origin: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => bail!("{origin}: expected a string, found {} ({other})", kind(other)),
    }
}

pub fn integer(value: &Value, origin: &str) -> anyhow::Result<i64> {
    match value {
        Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap()),
        other => bail!(
            "{origin}: expected a whole number, found {} ({other})",
            kind(other)
        ),
    }
}

pub fn count(value: &Value, origin: &str) -> anyhow::Result<u32> {
    let n = integer(value, origin)?;
    u32::try_from(n).map_err(|_| anyhow::anyhow!("{origin}: {n} must be zero or more"))
}

pub fn seconds(value: &Value, origin: &str, min: i64) -> anyhow::Result<Duration> {
    let n = integer(value, origin)?;
    if n < min {
        bail!("{origin}: {n} seconds is too small (at least {min})");
    }
    Ok(Duration::from_secs(n as u64))
}

/// A duration as humantime text (`10m`, `90s`, `0s`) or a number of seconds.
pub fn duration(value: &Value, origin: &str) -> anyhow::Result<Duration> {
    match value {
        Value::String(text) => parse_duration(text).map_err(|e| anyhow::anyhow!("{origin}: {e}")),
        Value::Number(_) => seconds(value, origin, 0),
        other => bail!(
            "{origin}: expected a duration such as 10m or 90s, found {} ({other})",
            kind(other)
        ),
    }
}

/// `10m`, `90s`, `1h 30m`, or a bare number of seconds (`--drain-timeout`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 10m or 90s ({e})"))
}

pub fn boolean(value: &Value, origin: &str) -> anyhow::Result<bool> {
    Ok(match value {
        Value::Bool(b) => *b,
        Value::String(s) if matches!(s.as_str(), "true" | "1" | "yes" | "on") => true,
        Value::String(s) if matches!(s.as_str(), "false" | "0" | "no" | "off" | "") => false,
        other => bail!("{origin}: expected true or false, not {other}"),
    })
}

/// A file's path; empty: none.
pub fn path(value: &Value, origin: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(Some(string(value, origin)?)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// Queue names: a list, or one comma-separated string.
pub fn queue_names(value: &Value, origin: &str) -> anyhow::Result<Vec<String>> {
    Ok(match value {
        Value::String(s) => s
            .split(',')
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|v| string(v, origin))
            .collect::<anyhow::Result<_>>()?,
        other => bail!("{origin}: expected a list of queue names, found {}", kind(other)),
    })
}

/// The cluster's shared agent secret: long enough not to be guessed.
pub fn agent_secret(value: &Value, origin: &str) -> anyhow::Result<String> {
    let secret = string(value, origin)?;
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{origin}: the agent secret must be at least 16 printable characters, without spaces");
    }
    Ok(secret)
}

/// What every agent token starts with (`goflow agent-token create` makes them).
pub const AGENT_TOKEN_PREFIX: &str = "gfa_";

/// An agent token as `goflow agent-token create` prints it.
pub fn check_agent_token(token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.starts_with(AGENT_TOKEN_PREFIX)
            && token.len() > AGENT_TOKEN_PREFIX.len()
            && token.bytes().all(|b| b.is_ascii_graphic()),
        "an agent token starts with {AGENT_TOKEN_PREFIX} and has no spaces (`goflow agent-token create --id ID` prints one)"
    );
    Ok(())
}

/// The token in an agent token file: its first line, checked.
pub fn read_agent_token_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the agent token file {}: {e}", file.display()))?;
    let token = text.trim().to_string();
    check_agent_token(&token).map_err(|e| anyhow::anyhow!("agent token file {}: {e}", file.display()))?;
    Ok(token)
}

pub fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A CA file's PEM, checked to hold a certificate; None without a file.
pub fn read_ca(path: Option<&Path>, what: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
        "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(Some(pem))
}

/// A secret-bearing URL given on the command line is refused: every user of the machine reads
/// it in `ps` and `/proc/PID/cmdline`. `flag` names the flag, `env` and `file_flag` where the
/// URL should come from instead.
pub fn refuse_secret_in_flag(flag: &str, value: &str, env: &str, file_flag: &str) -> anyhow::Result<()> {
    if goflow_core::redact::has_secret(value) {
        bail!(
            "{flag} {} holds a password or token, which any user of this machine can read in the \
             process list: set {env} in the environment or put the URL in a file ({file_flag} FILE); \
             nothing was started",
            goflow_core::redact_url(value)
        );
    }
    Ok(())
}

/// The first line of a file holding a secret (`--database-url-file`, `--redis-url-file`,
/// `--etcd-password-file`): a file readable by its owner only keeps it out of `ps`.
pub fn read_secret_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let value = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!value.is_empty(), "{flag} {} is empty", path.display());
    Ok(value)
}
