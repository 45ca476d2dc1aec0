//! Who is calling, and may they: users with passwords (argon2), their sessions, and API
//! tokens, checked on every ControlService and AuthService call when authentication is on.
//!
//! Tokens are 32 random bytes, hex, with a prefix saying what they are (`gfs_` a session,
//! `gft_` an API token); the store keeps only their SHA-256. Failed logins are slowed down per
//! account, so guessing one password costs seconds per try, not microseconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use goflow_core::Role;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::store::{self, Store, now_ms};

pub const SESSION_PREFIX: &str = "gfs_";
pub const TOKEN_PREFIX: &str = "gft_";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins of one account allowed before each further try must wait.
const FREE_FAILURES: u32 = 3;
/// The longest wait between two tries of one account.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// `last_used_at` of a token is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Who a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user, or `token:NAME`.
    pub name: String,
    pub role: Role,
    /// The session token's hash, for logout.
    pub session: Option<String>,
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A password a user may set: at least 8 characters.
pub fn check_password(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        password.chars().count() >= 8,
        "a password needs at least 8 characters"
    );
    Ok(())
}

/// A user or token name: what task ids may be.
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        goflow_core::dag::is_valid_task_id(name),
        "{what} {name:?} must match [A-Za-z0-9_.-]+ (at most 128 characters)"
    );
    Ok(())
}

/// A new random token with `prefix`, and the hash the store keeps of it.
pub fn new_token(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let token = format!("{prefix}{}", hex::encode(bytes));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Failures {
    count: u32,
    last: Instant,
}

pub struct Auth {
    store: Store,
    /// Agents' per-agent tokens (AgentService and LogService calls).
    agents: crate::agent_identity::AgentIdentities,
    enabled: bool,
    failures: Mutex<HashMap<String, Failures>>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    pub fn new(store: Store, enabled: bool) -> Self {
        Self {
            agents: crate::agent_identity::AgentIdentities::new(store.clone()),
            store,
            enabled,
            failures: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who agents' calls come from.
    pub fn agents(&self) -> &crate::agent_identity::AgentIdentities {
        &self.agents
    }

    /// The caller of `bearer` (the token of `authorization: Bearer ...`), if it needs `role`.
    /// None when authentication is off.
    pub async fn authorize(&self, bearer: Option<&str>, role: Role) -> Result<Option<Principal>, Status> {
        if !self.enabled {
            return Ok(None);
        }
        let principal = self.authenticate(bearer).await?;
        if !principal.role.allows(role) {
            return Err(Status::permission_denied(format!(
                "{} is {}; this needs the {role} role",
                principal.name, principal.role
            )));
        }
        Ok(Some(principal))
    }

    async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, Status> {
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            return Err(Status::unauthenticated(
                "authentication is on: log in (goflowctl login -u NAME) or pass a token (--token, GOFLOW_TOKEN)",
            ));
        };
        let hash = token_hash(token);
        let now = now_ms();
        let mut conn = self.store.read().await.map_err(internal)?;
        if token.starts_with(SESSION_PREFIX) {
            if let Some((user, role)) = store::session_user(&mut conn, &hash, now)
                .await
                .map_err(internal)?
            {
                return Ok(Principal {
                    role: known_role(&role)?,
                    name: user,
                    session: Some(hash),
                });
            }
        } else if token.starts_with(TOKEN_PREFIX)
            && let Some(row) = store::token_by_hash(&mut conn, &hash, now)
                .await
                .map_err(internal)?
        {
            drop(conn);
            self.touch(&row.name, now).await;
            return Ok(Principal {
                role: known_role(&row.role)?,
                name: format!("token:{}", row.name),
                session: None,
            });
        }
        Err(Status::unauthenticated(
            "the token is unknown, expired or revoked: log in again (goflowctl login -u NAME) or use another token",
        ))
    }

    /// Records a token's use, at most once a minute (a write per call would cost more than
    /// the call).
    async fn touch(&self, name: &str, now: i64) {
        {
            let mut touched = self.touched.lock().unwrap();
            if touched.get(name).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(name.to_string(), Instant::now());
        }
        let written = async {
            let mut tx = self.store.begin().await?;
            store::touch_token(&mut tx, name, now).await?;
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::debug!("token {name}: last use not recorded: {e:#}");
        }
    }

    /// A user's password for a session token. A wrong name and a wrong password fail alike;
    /// an account with failed tries waits longer after each.
    pub async fn login(&self, user: &str, password: &str) -> Result<(String, Role, i64), Status> {
        if let Some(wait) = self.count_try(user) {
            return Err(Status::resource_exhausted(format!(
                "too many failed logins for {user}: try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let mut conn = self.store.read().await.map_err(internal)?;
        let found = store::user(&mut conn, user).await.map_err(internal)?;
        drop(conn);
        let verified = match &found {
            Some(row) => verify_password(password, &row.password_hash),
            None => {
                // As long as a real check, so timing does not tell which names exist.
                verify_password(
                    password,
                    DUMMY_HASH.get_or_init(|| hash_password("not a password").unwrap()),
                );
                false
            }
        };
        let Some(row) = found.filter(|_| verified) else {
            tracing::warn!("failed login for {user:?}");
            return Err(Status::unauthenticated("wrong user name or password"));
        };
        self.failures.lock().unwrap().remove(user);
        let role = known_role(&row.role)?;
        let (token, hash) = new_token(SESSION_PREFIX);
        let now = now_ms();
        let expires_at = now + SESSION_TTL.as_millis() as i64;
        let mut tx = self.store.begin().await.map_err(internal)?;
        store::insert_session(&mut tx, &hash, &row.name, now, expires_at)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        tracing::info!("{} logged in ({role})", row.name);
        Ok((token, role, expires_at))
    }

    pub async fn logout(&self, principal: &Principal) -> Result<(), Status> {
        if let Some(hash) = &principal.session {
            let mut tx = self.store.begin().await.map_err(internal)?;
            store::delete_session(&mut tx, hash).await.map_err(internal)?;
            tx.commit().await.map_err(internal)?;
        }
        Ok(())
    }

    /// How long this account must still wait; else counts this try as failed until its
    /// password proves right (under one lock, so tries in flight together count too).
    fn count_try(&self, user: &str) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap();
        if let Some(entry) = failures.get(user) {
            let wait = backoff(entry.count);
            let waited = entry.last.elapsed();
            if waited < wait {
                return Some(wait - waited);
            }
        }
        // Made-up names must not grow the map without bound: forget accounts quiet for long.
        if failures.len() > 10_000 {
            failures.retain(|_, entry| entry.last.elapsed() < MAX_BACKOFF * 2);
        }
        let entry = failures.entry(user.to_string()).or_insert(Failures {
            count: 0,
            last: Instant::now(),
        });
        entry.count += 1;
        entry.last = Instant::now();
        None
    }
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The wait before the next try after `count` failures: none for the first few, then doubling.
fn backoff(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES).min(6);
    (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

fn known_role(role: &str) -> Result<Role, Status> {
    Role::parse(role).ok_or_else(|| Status::internal(format!("stored role {role:?} is unknown")))
}

fn internal(e: anyhow::Error) -> Status {
    tracing::error!("authentication: {e:#}");
    Status::internal("internal error (see the coordinator's log)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_prefixed_and_stored_hashed() {
        let (a, hash_a) = new_token(TOKEN_PREFIX);
        let (b, _) = new_token(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("gft_") && a.len() == 4 + 64);
        assert_eq!(hash_a, token_hash(&a));
        assert!(!hash_a.contains(&a[4..]), "the hash does not contain the token");
    }

    #[test]
    fn failed_logins_wait_longer_and_longer() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(2), Duration::ZERO);
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("user", "alice.b-1").is_ok());
        assert!(check_name("user", "alice bob").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
