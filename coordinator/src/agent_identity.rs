//! Who an agent's call comes from (AgentService and LogService), from its credential, never
//! from the request's body:
//!
//! - a per-agent token (`goflow agent-token create --id ID`, prefix `gfa_`) acts as that agent
//!   and no other: every call naming another agent, or a try recorded for another agent, is
//!   refused with PERMISSION_DENIED and recorded in the operations log;
//! - the cluster's shared secret (`Common.AgentSecret`, for a single trusted network) and a
//!   coordinator's embedded agent are believed to be whichever agent they name.
//!
//! The router checks the secrets (`routing::Agents::check`) and marks the calls it vouched for
//! in their extensions ([`Vouched`], never on the wire); tokens are looked up here, in the
//! store, by whichever coordinator answers the call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Status};

use crate::auth::token_hash;
use crate::store::{self, Store, now_ms};

pub use goflow_agent::cli::config_file::AGENT_TOKEN_PREFIX;
/// How long a looked-up token is believed without asking the store again: a revoked token is
/// refused at most this long after `goflow agent-token revoke`.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// `last_used_at` of an agent token is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// A refusal of one agent and call is written to the operations log at most this often (an
/// agent retrying in a loop must not flood it); the others go to the coordinator's log.
const RECORD_EVERY: Duration = Duration::from_secs(10);

/// A call the router let through on a secret (carried in the request's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vouched {
    /// The cluster's shared secret: a single trusted network, agents name themselves.
    SharedSecret,
    /// This coordinator's embedded agent (its random secret, or a call made in-process).
    Embedded,
}

/// A call whose agent the router identified by its verified client certificate (mTLS): the
/// certificate subject's common name (carried in the request's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedAgent(pub String);

/// The agent a client certificate names: its subject's common name (CN), when it has one that
/// could be an agent id (visible ASCII).
pub fn certificate_agent(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty() && cn.len() <= 200 && cn.bytes().all(|b| b.is_ascii_graphic())).then(|| cn.to_string())
}

/// Who an agent's call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCaller {
    /// The shared secret or the embedded agent: believed to be the agent it names.
    Trusted,
    /// A per-agent token of this agent.
    Agent(String),
}

impl AgentCaller {
    /// The agent a call acts as. With a token, a request naming no agent acts as the token's;
    /// one naming another is refused (`Err` carries the name the request gave).
    pub fn acting_as(&self, named: &str) -> Result<String, String> {
        match self {
            AgentCaller::Trusted => Ok(named.to_string()),
            AgentCaller::Agent(id) if named.is_empty() || named == id => Ok(id.clone()),
            AgentCaller::Agent(_) => Err(named.to_string()),
        }
    }

    /// Whether a try recorded for `owner` is this caller's.
    pub fn owns(&self, owner: &str, named: &str) -> bool {
        match self {
            AgentCaller::Trusted => owner == named,
            AgentCaller::Agent(id) => owner == id,
        }
    }

    /// How the operations log names the caller.
    pub fn actor(&self, named: &str) -> String {
        match self {
            AgentCaller::Trusted => format!("agent:{named} (shared secret)"),
            AgentCaller::Agent(id) => format!("agent:{id}"),
        }
    }
}

/// A new agent token, and the hash the store keeps of it.
pub fn new_agent_token() -> (String, String) {
    crate::auth::new_token(AGENT_TOKEN_PREFIX)
}

/// `Bearer X` of a request's `authorization`.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Checks agents' calls against the store's agent tokens, and records refusals.
#[derive(Clone)]
pub struct AgentIdentities {
    store: Store,
    /// token hash -> (agent, when looked up).
    cache: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    touched: Arc<Mutex<HashMap<String, Instant>>>,
    recorded: Arc<Mutex<HashMap<(String, &'static str), Instant>>>,
}

impl AgentIdentities {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::default(),
            touched: Arc::default(),
            recorded: Arc::default(),
        }
    }

    /// The caller of an agent's call: vouched for by the router, or the agent of its token.
    pub async fn identify<T>(&self, request: &Request<T>) -> Result<AgentCaller, Status> {
        if request.extensions().get::<Vouched>().is_some() {
            return Ok(AgentCaller::Trusted);
        }
        if let Some(CertifiedAgent(agent)) = request.extensions().get::<CertifiedAgent>() {
            return Ok(AgentCaller::Agent(agent.clone()));
        }
        match bearer(request.metadata()) {
            Some(token) if token.starts_with(AGENT_TOKEN_PREFIX) => self.agent_of(token).await,
            _ => Err(Status::unauthenticated(
                "an agent needs a credential: its per-agent token (GOFLOW_AGENT_TOKEN, --agent-token-file, \
                 Worker.AgentToken; made by `goflow agent-token create --id ID`)",
            )),
        }
    }

    async fn agent_of(&self, token: &str) -> Result<AgentCaller, Status> {
        let hash = token_hash(token);
        let cached = self
            .cache
            .lock()
            .unwrap()
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_FOR)
            .map(|(agent, _)| agent.clone());
        if let Some(agent) = cached {
            return Ok(AgentCaller::Agent(agent));
        }
        let found = async {
            let mut conn = self.store.read().await?;
            store::agent_of_token(&mut conn, &hash).await
        };
        let found = found.await.map_err(|e| {
            tracing::error!("cannot look up an agent token: {e:#}");
            Status::unavailable("cannot check the agent's token now; try again")
        })?;
        let Some(agent) = found else {
            crate::metrics::agent_refused("unknown_token");
            self.cache.lock().unwrap().remove(&hash);
            return Err(Status::unauthenticated(
                "the agent token is unknown or revoked (goflow agent-token list shows the agents that have one)",
            ));
        };
        self.remember(hash, &agent);
        self.touch(&agent).await;
        Ok(AgentCaller::Agent(agent))
    }

    fn remember(&self, hash: String, agent: &str) {
        let mut cache = self.cache.lock().unwrap();
        // Bounded by the number of agents with a token, but forget stale entries anyway.
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        }
        cache.insert(hash, (agent.to_string(), Instant::now()));
    }

    /// Records a token's use, at most once a minute.
    async fn touch(&self, agent: &str) {
        {
            let mut touched = self.touched.lock().unwrap();
            if touched.get(agent).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(agent.to_string(), Instant::now());
        }
        let written = async {
            let mut tx = self.store.begin_logs().await?;
            store::touch_agent_token(&mut tx, agent, now_ms()).await?;
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::debug!("agent token of {agent}: last use not recorded: {e:#}");
        }
    }

    /// Refuses a call of `caller` (which named `named`) with PERMISSION_DENIED saying `why`,
    /// and records it: in the coordinator's log always, in the operations log at most every
    /// [`RECORD_EVERY`] per agent and call. Nothing else changes.
    pub async fn refuse(
        &self,
        caller: &AgentCaller,
        named: &str,
        call: &'static str,
        target: &str,
        why: String,
    ) -> Status {
        let actor = caller.actor(named);
        crate::metrics::agent_refused("not_its_own");
        tracing::warn!(%actor, call, target, "agent call refused: {why}");
        let record = {
            let mut recorded = self.recorded.lock().unwrap();
            let key = (actor.clone(), call);
            if recorded.get(&key).is_some_and(|at| at.elapsed() < RECORD_EVERY) {
                false
            } else {
                if recorded.len() > 10_000 {
                    recorded.retain(|_, at| at.elapsed() < RECORD_EVERY);
                }
                recorded.insert(key, Instant::now());
                true
            }
        };
        if record {
            let written = async {
                let mut tx = self.store.begin_logs().await?;
                store::record_operation(
                    &mut tx,
                    &actor,
                    &format!("goflow agent ({call})"),
                    "agent-refused",
                    target,
                    &why,
                    now_ms(),
                )
                .await?;
                tx.commit().await
            };
            if let Err(e) = written.await {
                tracing::error!("cannot record a refused agent call: {e:#}");
            }
        }
        Status::permission_denied(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_acts_as_its_agent_only() {
        let b = AgentCaller::Agent("b".into());
        assert_eq!(b.acting_as(""), Ok("b".into()));
        assert_eq!(b.acting_as("b"), Ok("b".into()));
        assert_eq!(b.acting_as("a"), Err("a".into()));
        assert!(b.owns("b", "a"), "the credential decides, not the name sent");
        assert!(!b.owns("a", "a"));
        assert_eq!(b.actor("a"), "agent:b");
    }

    #[test]
    fn a_trusted_caller_is_the_agent_it_names() {
        let trusted = AgentCaller::Trusted;
        assert_eq!(trusted.acting_as("a"), Ok("a".into()));
        assert!(trusted.owns("a", "a"));
        assert!(!trusted.owns("a", "b"));
    }

    #[test]
    fn a_certificate_names_its_agent_by_its_common_name() {
        assert_eq!(certificate_agent(b"not a certificate"), None);
    }

    #[test]
    fn agent_tokens_are_prefixed_and_hashed() {
        let (token, hash) = new_agent_token();
        assert!(token.starts_with(AGENT_TOKEN_PREFIX) && token.len() == 4 + 64);
        assert_eq!(hash, token_hash(&token));
    }
}
