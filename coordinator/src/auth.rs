//! Who is calling, and may they: users with passwords (argon2), their sessions, and API
//! tokens, checked on every ControlService and AuthService call when authentication is on.
//!
//! Tokens are 32 random bytes, hex, with a prefix saying what they are (`gfs_` a session,
//! `gft_` an API token); the store keeps only their SHA-256. Logins are rate-limited per
//! coordinator and per client address; failed ones slow down the address they come from (per
//! account and overall, stored so that restarts and other coordinators keep the back-off), so
//! guessing one password costs seconds per try, not microseconds, and nobody can lock an
//! account's owner out.

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
/// Failed logins of one account from one address allowed before each further try must wait.
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

/// Logins the whole coordinator takes: per second, and in a burst.
const GLOBAL_LOGINS_PER_SECOND: u32 = 20;
const GLOBAL_LOGIN_BURST: u32 = 40;
/// Logins one client address may try: per minute, and in a burst. The web UI logs everyone
/// in from its own address, so this leaves room for a team behind one UI.
const CLIENT_LOGINS_PER_MINUTE: u32 = 60;
const CLIENT_LOGIN_BURST: u32 = 20;
/// Failed logins from one address, whatever the names, before each further try must wait
/// (a sprayer of names is slowed down, while the account's owner elsewhere is not).
const FREE_SOURCE_FAILURES: u32 = 10;
/// Failure records quiet for this long are forgotten.
const FORGET_FAILURES_MS: i64 = 24 * 3600 * 1000;

/// Where a login comes from: the client's address (without its port), as the operations log
/// names it; `None` when the transport does not say (in-process calls).
pub type Source = Option<std::net::IpAddr>;

type Limiter<K> =
    governor::RateLimiter<K, governor::state::keyed::HashMapStateStore<K>, governor::clock::DefaultClock>;

pub struct Auth {
    store: Store,
    /// Agents' per-agent tokens (AgentService and LogService calls).
    agents: crate::agent_identity::AgentIdentities,
    enabled: bool,
    touched: Mutex<HashMap<String, Instant>>,
    /// Hashes run on the blocking pool, this many at once: a flood of logins queues here
    /// instead of taking every core from heartbeats and the scheduler.
    hashing: tokio::sync::Semaphore,
    global_logins: governor::DefaultDirectRateLimiter,
    client_logins: Limiter<Source>,
    /// Login tries being checked, by failure scope.
    in_flight: Mutex<HashMap<String, u32>>,
}

/// A login try counted in `Auth::in_flight` until it is decided.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<String, u32>>,
    scopes: [String; 2],
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap();
        for scope in &self.scopes {
            if let Some(n) = map.get_mut(scope) {
                *n -= 1;
                if *n == 0 {
                    map.remove(scope);
                }
            }
        }
    }
}

impl Auth {
    pub fn new(store: Store, enabled: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_second = |n: u32| std::num::NonZeroU32::new(n).expect("a positive rate");
        Self {
            agents: crate::agent_identity::AgentIdentities::new(store.clone()),
            store,
            enabled,
            touched: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new((cores / 2).max(1)),
            global_logins: governor::RateLimiter::direct(
                governor::Quota::per_second(per_second(GLOBAL_LOGINS_PER_SECOND))
                    .allow_burst(per_second(GLOBAL_LOGIN_BURST)),
            ),
            client_logins: governor::RateLimiter::hashmap(
                governor::Quota::per_minute(per_second(CLIENT_LOGINS_PER_MINUTE))
                    .allow_burst(per_second(CLIENT_LOGIN_BURST)),
            ),
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

    /// A user's password for a session token. A wrong name and a wrong password fail alike,
    /// and cost alike (a full hash, so timing does not tell which names exist). Tries are
    /// limited per coordinator and per client address before any hashing, and failures slow
    /// down the address they come from, for that account and overall, across restarts and
    /// coordinators (they are stored). The account itself is never locked: its owner, from
    /// another address, still logs in while someone guesses at it.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: Source,
    ) -> Result<(String, Role, i64), Status> {
        let wait = |what: String, wait: Duration| {
            Status::resource_exhausted(format!("{what}: try again in {} s", wait.as_secs().max(1)))
        };
        if let Err(not_until) = self.client_logins.check_key(&source) {
            let delay = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(wait(
                format!("too many logins from {}", source_name(source)),
                delay,
            ));
        }
        if let Err(not_until) = self.global_logins.check() {
            let delay = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(wait("too many logins on this coordinator".into(), delay));
        }
        let (source_scope, account_scope) = scopes(user, source);
        let now = now_ms();
        let mut conn = self.store.read().await.map_err(internal)?;
        let source_failures = store::login_failures(&mut conn, &source_scope)
            .await
            .map_err(internal)?;
        let account_failures = store::login_failures(&mut conn, &account_scope)
            .await
            .map_err(internal)?;
        // Tries in flight count as failures until proven right, so guesses sent all at once
        // do not all get checked before the first failure is stored.
        let _in_flight = {
            let mut in_flight = self.in_flight.lock().unwrap();
            let pending = |scope: &str| in_flight.get(scope).copied().unwrap_or(0);
            let with_pending = |stored: Option<(i64, i64)>, pending: u32| match (stored, pending) {
                (stored, 0) => stored,
                (stored, n) => Some((stored.map_or(0, |(count, _)| count) + i64::from(n), now)),
            };
            let source_count = with_pending(source_failures, pending(&source_scope));
            if let Some(left) = still_waiting(source_count, FREE_SOURCE_FAILURES, now) {
                return Err(wait(
                    format!("too many failed logins from {}", source_name(source)),
                    left,
                ));
            }
            let account_count = with_pending(account_failures, pending(&account_scope));
            if let Some(left) = still_waiting(account_count, FREE_FAILURES, now) {
                return Err(wait(
                    format!("too many failed logins for {user} from {}", source_name(source)),
                    left,
                ));
            }
            for scope in [&source_scope, &account_scope] {
                *in_flight.entry(scope.clone()).or_default() += 1;
            }
            InFlight {
                map: &self.in_flight,
                scopes: [source_scope.clone(), account_scope.clone()],
            }
        };
        let found = store::user(&mut conn, user).await.map_err(internal)?;
        drop(conn);
        // As long as a real check for an unknown name, so timing does not tell which exist.
        let stored = match &found {
            Some(row) => row.password_hash.clone(),
            None => dummy_hash().to_string(),
        };
        let verified = self.verify_off_workers(password, stored).await? && found.is_some();
        let Some(row) = found.filter(|_| verified) else {
            tracing::warn!("failed login for {user:?} from {}", source_name(source));
            let recorded = async {
                let mut tx = self.store.begin().await?;
                store::record_login_failure(&mut tx, &source_scope, now, FORGET_FAILURES_MS).await?;
                store::record_login_failure(&mut tx, &account_scope, now, FORGET_FAILURES_MS).await?;
                tx.commit().await
            };
            recorded.await.map_err(internal)?;
            return Err(Status::unauthenticated("wrong user name or password"));
        };
        let role = known_role(&row.role)?;
        let (token, hash) = new_token(SESSION_PREFIX);
        let expires_at = now + SESSION_TTL.as_millis() as i64;
        let mut tx = self.store.begin().await.map_err(internal)?;
        if account_failures.is_some() {
            store::clear_login_failures(&mut tx, &account_scope)
                .await
                .map_err(internal)?;
        }
        store::insert_session(&mut tx, &hash, &row.name, now, expires_at)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        tracing::info!("{} logged in ({role})", row.name);
        Ok((token, role, expires_at))
    }

    /// argon2 on the blocking pool, at most `hashing`'s permits at once: tens of milliseconds
    /// of CPU each, which on an async worker would stall heartbeats behind a flood of logins.
    async fn verify_off_workers(&self, password: &str, stored: String) -> Result<bool, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| internal(anyhow::anyhow!("the hashing semaphore closed: {e}")))?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|e| internal(anyhow::anyhow!("password check failed: {e}")))
    }

    pub async fn logout(&self, principal: &Principal) -> Result<(), Status> {
        if let Some(hash) = &principal.session {
            let mut tx = self.store.begin().await.map_err(internal)?;
            store::delete_session(&mut tx, hash).await.map_err(internal)?;
            tx.commit().await.map_err(internal)?;
        }
        Ok(())
    }
}

/// The stored scopes of failed logins: the address, and the account at that address.
fn scopes(user: &str, source: Source) -> (String, String) {
    let address = source.map_or_else(|| "local".to_string(), |ip| ip.to_string());
    (format!("source:{address}"), format!("account:{user}@{address}"))
}

fn source_name(source: Source) -> String {
    source.map_or_else(|| "this process".to_string(), |ip| ip.to_string())
}

/// How long a scope with `failures` (count, last at) must still wait at `now`, if at all.
fn still_waiting(failures: Option<(i64, i64)>, free: u32, now: i64) -> Option<Duration> {
    let (count, last_at) = failures?;
    let wait = backoff(u32::try_from(count).unwrap_or(u32::MAX), free);
    let waited = Duration::from_millis(u64::try_from(now - last_at).unwrap_or(0));
    (waited < wait).then(|| wait - waited)
}

fn dummy_hash() -> &'static str {
    DUMMY_HASH.get_or_init(|| hash_password("not a password").unwrap())
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The wait before the next try after `count` failures: none for the first `free`, then
/// doubling.
fn backoff(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(6);
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
        assert_eq!(backoff(0, FREE_FAILURES), Duration::ZERO);
        assert_eq!(backoff(2, FREE_FAILURES), Duration::ZERO);
        assert_eq!(backoff(3, FREE_FAILURES), Duration::from_secs(1));
        assert_eq!(backoff(4, FREE_FAILURES), Duration::from_secs(2));
        assert_eq!(backoff(5, FREE_FAILURES), Duration::from_secs(4));
        assert_eq!(backoff(100, FREE_FAILURES), MAX_BACKOFF);
        assert_eq!(backoff(9, FREE_SOURCE_FAILURES), Duration::ZERO);
        // Stored as (count, last failure at): the wait left shrinks as time passes.
        assert_eq!(still_waiting(None, FREE_FAILURES, 10_000), None);
        assert_eq!(still_waiting(Some((2, 9_000)), FREE_FAILURES, 10_000), None);
        assert_eq!(
            still_waiting(Some((4, 9_500)), FREE_FAILURES, 10_000),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(still_waiting(Some((4, 7_000)), FREE_FAILURES, 10_000), None);
    }

    use crate::testing::{TestDatabase, suite_dialect};

    fn ip(text: &str) -> Source {
        Some(text.parse().unwrap())
    }

    /// A database with user alice (password "correct horse"), and an `Auth` on it.
    async fn with_alice() -> (TestDatabase, Store, Auth) {
        let db = TestDatabase::create(suite_dialect()).await;
        let store = Store::open(&db.database_url()).await.unwrap();
        let mut tx = store.begin_unfenced().await.unwrap();
        let hash = hash_password("correct horse").unwrap();
        assert!(
            store::insert_user(&mut tx, "alice", "admin", &hash, now_ms())
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let auth = Auth::new(store.clone(), true);
        (db, store, auth)
    }

    fn refused(result: Result<(String, Role, i64), Status>) -> String {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        status.message().to_string()
    }

    /// The probe: back-off refused the right password too, so anyone knowing a name could
    /// keep its owner out. Now the guesser's address waits; the owner elsewhere logs in.
    #[tokio::test]
    async fn failed_logins_slow_down_their_source_not_the_account() {
        let (_db, _store, auth) = with_alice().await;
        let (guesser, owner) = (ip("10.0.0.66"), ip("10.0.0.7"));
        for _ in 0..FREE_FAILURES {
            let status = auth.login("alice", "wrong guess", guesser).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let message = refused(auth.login("alice", "correct horse", guesser).await);
        assert!(
            message.starts_with("too many failed logins for alice from 10.0.0.66: try again in"),
            "{message}"
        );
        let (_, role, _) = auth.login("alice", "correct horse", owner).await.unwrap();
        assert_eq!(role, Role::Admin);
    }

    /// The back-off is stored: another coordinator, or this one restarted, keeps it.
    #[tokio::test]
    async fn the_back_off_holds_on_another_coordinator() {
        let (db, _store, auth) = with_alice().await;
        let sprayer = ip("192.0.2.1");
        for n in 0..FREE_SOURCE_FAILURES {
            // Unknown names cost a hash and count like wrong passwords.
            let status = auth
                .login(&format!("nobody{n}"), "whatever1", sprayer)
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert_eq!(status.message(), "wrong user name or password");
        }
        let other = Auth::new(Store::open(&db.database_url()).await.unwrap(), true);
        let message = refused(other.login("alice", "correct horse", sprayer).await);
        assert!(
            message.starts_with("too many failed logins from 192.0.2.1"),
            "{message}"
        );
        other
            .login("alice", "correct horse", ip("192.0.2.2"))
            .await
            .unwrap();
    }

    /// Before any hashing: a client gets a burst, then waits; the coordinator as a whole too.
    #[tokio::test]
    async fn logins_are_rate_limited_per_client_and_overall() {
        let (_db, _store, auth) = with_alice().await;
        let client = ip("198.51.100.5");
        // The bucket refills by one a second while the burst is spent (each login
        // hashes), so a slow machine may get a few more in: only the burst is certain.
        let mut allowed = 0;
        let message = loop {
            match auth.login("alice", "correct horse", client).await {
                Ok(_) => allowed += 1,
                Err(status) => break status.message().to_string(),
            }
            assert!(allowed < CLIENT_LOGIN_BURST * 3, "never limited");
        };
        assert!(allowed >= CLIENT_LOGIN_BURST, "{allowed}");
        assert!(
            message.starts_with("too many logins from 198.51.100.5: try again in"),
            "{message}"
        );
        // From many addresses at once: the limit checks come before any hashing.
        let auth = std::sync::Arc::new(auth);
        let mut logins = tokio::task::JoinSet::new();
        for n in 0..GLOBAL_LOGIN_BURST * 3 {
            let auth = auth.clone();
            logins.spawn(async move {
                let from = ip(&format!("198.51.101.{n}"));
                auth.login("alice", "wrong password", from).await.unwrap_err()
            });
        }
        let messages: Vec<String> = logins
            .join_all()
            .await
            .into_iter()
            .map(|status| status.message().to_string())
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("too many logins on this coordinator: try again in")),
            "{messages:?}"
        );
    }

    /// Done-when of issue 20: 200 logins at once with unknown names do not hold up a
    /// heartbeat-like tick on the same runtime past its interval (argon2 ran on the async
    /// workers; a flood stalled them for seconds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_logins_leaves_the_async_workers_free() {
        let (_db, _store, auth) = with_alice().await;
        let auth = std::sync::Arc::new(auth);
        let interval = Duration::from_secs(1);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = tokio::spawn({
            let done = done.clone();
            async move {
                let mut worst = Duration::ZERO;
                let mut last = Instant::now();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                }
                worst
            }
        });
        let logins: Vec<_> = (0..200)
            .map(|n| {
                let auth = auth.clone();
                // Many addresses, as a botnet would come: only the global limit holds them.
                tokio::spawn(async move {
                    let from = ip(&format!("10.1.{}.{}", n / 250, n % 250));
                    auth.login(&format!("ghost{n}"), "password1", from).await
                })
            })
            .collect();
        let mut codes = HashMap::new();
        for login in logins {
            let code = login.await.unwrap().unwrap_err().code();
            *codes.entry(code).or_insert(0) += 1;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let worst = ticker.await.unwrap();
        assert!(codes[&tonic::Code::Unauthenticated] > 0, "{codes:?}");
        assert!(codes[&tonic::Code::ResourceExhausted] > 0, "{codes:?}");
        assert!(
            worst < interval,
            "a 100 ms tick came {worst:?} late during the flood"
        );
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("user", "alice.b-1").is_ok());
        assert!(check_name("user", "alice bob").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
