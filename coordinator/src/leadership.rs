//! Becoming the one coordinator that schedules, and noticing when it no longer is.
//!
//! Two ways to be elected, both ending in the same takeover in the database (the fencing token
//! raised, the epoch raised; see `store::leadership`):
//! - **etcd** (`--etcd-endpoints`): a campaign on the election key under a lease of a few
//!   seconds, kept alive. etcd gives *a* leader, not *the only* one, so the database takeover
//!   is what counts: it is allowed only for an election newer than the last one that took over.
//! - **the database lease** (no etcd): the `leader` row's lease, taken when it lapsed (or when
//!   its holder is a dead process on this host) and renewed a few times per lease.
//!
//! Either way the leader renews the lease row while it leads (so `goflowctl coordinators` and
//! standbys without etcd see it), and a term ends, stepping down, as soon as a renewal finds
//! the token replaced, the etcd lease is lost, or a write is refused for its token.

use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client as EtcdClient, ConnectOptions, LeaderKey, ResignOptions};
use tokio_util::sync::CancellationToken;

use crate::store::{self, Store, now_ms};

#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// How long a leader that stops renewing keeps its lease (etcd's and the database's).
    pub lease_ttl: Duration,
    /// None: elected through the database lease.
    pub etcd: Option<EtcdSettings>,
}

#[derive(Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// One election key per goflow cluster (coordinators of one database share it).
    pub key: String,
    /// The CA (PEM) an https:// etcd is checked against; None: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// etcd's user and password, when etcd has authentication on.
    pub credentials: Option<(String, String)>,
}

/// Never shows the password.
impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("ca", &self.ca_pem.is_some())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl Default for ElectionSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(5),
            etcd: None,
        }
    }
}

/// One term of leadership.
pub struct Term {
    pub token: i64,
    pub epoch: i64,
    /// Cancelled when the term is over (lost, or released at shutdown).
    pub lost: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    etcd: Option<(EtcdClient, LeaderKey, i64)>,
}

impl Term {
    /// Ends the term: stops renewing, and hands the lease back at once (a clean shutdown or a
    /// step-down) so that another coordinator takes over without waiting for it to lapse.
    pub async fn release(mut self, store: &Store) {
        self.lost.cancel();
        self.tasks.shutdown().await;
        if let Ok(mut tx) = store.begin_unfenced().await
            && store::release_lease(&mut tx, self.token).await.is_ok()
        {
            tx.commit().await.ok();
        }
        if let Some((mut client, leader, lease)) = self.etcd.take() {
            client
                .resign(Some(ResignOptions::new().with_leader(leader)))
                .await
                .ok();
            client.lease_revoke(lease).await.ok();
        }
    }
}

/// Checks that etcd answers, at start: a wrong address fails now, naming it.
pub async fn check_etcd(settings: &EtcdSettings) -> anyhow::Result<()> {
    let mut client = connect_etcd(settings).await?;
    client
        .status()
        .await
        .with_context(|| format!("etcd at {} does not answer", settings.endpoints.join(",")))?;
    Ok(())
}

async fn connect_etcd(settings: &EtcdSettings) -> anyhow::Result<EtcdClient> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let tls = settings.endpoints.iter().any(|e| e.starts_with("https://"));
    if tls {
        let mut config = etcd_client::TlsOptions::new().with_native_roots();
        if let Some(ca) = &settings.ca_pem {
            config = config.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        options = options.with_tls(config);
    } else if settings.ca_pem.is_some() {
        anyhow::bail!(
            "an etcd CA (--etcd-ca) is set, but the endpoints {} are not https://: etcd over TLS needs \
             https://HOST:PORT",
            settings.endpoints.join(",")
        );
    }
    if let Some((user, password)) = &settings.credentials {
        if !tls {
            tracing::warn!(
                "etcd's password is sent in clear to {}: use https:// endpoints (and --etcd-ca)",
                settings.endpoints.join(",")
            );
        }
        // Tokens of etcd's `simple` kind expire after 5 minutes of disuse: renew them.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    EtcdClient::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|e| anyhow::anyhow!("{}", etcd_error(&e)))
        .with_context(|| format!("cannot connect to etcd at {}", settings.endpoints.join(",")))
}

/// An etcd error with its causes (a TLS failure is in the transport error's source), which
/// name neither the password nor the token.
fn etcd_error(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

/// Waits until this coordinator (`me`) leads, then returns its term; None at shutdown.
pub async fn acquire(
    store: &Store,
    me: &str,
    settings: &ElectionSettings,
    shutdown: &CancellationToken,
) -> Option<Term> {
    let mut said_standby = String::new();
    loop {
        let attempt = match &settings.etcd {
            None => acquire_lease(store, me, settings.lease_ttl, &mut said_standby).await,
            Some(etcd) => tokio::select! {
                _ = shutdown.cancelled() => return None,
                term = acquire_elected(store, me, settings.lease_ttl, etcd) => term,
            },
        };
        match attempt {
            Ok(Some(term)) => return Some(term),
            Ok(None) => {}
            Err(e) => tracing::warn!("leadership: {e:#}; trying again"),
        }
        let pause = (settings.lease_ttl / 4).max(Duration::from_millis(250));
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One try at the database lease; None while another coordinator holds it.
async fn acquire_lease(
    store: &Store,
    me: &str,
    ttl: Duration,
    said_standby: &mut String,
) -> anyhow::Result<Option<Term>> {
    let now = now_ms();
    let mut tx = store.begin_unfenced().await?;
    let current = store::leader(&mut tx).await?;
    // A holder that is a dead process of this host is not waited for (a restart after kill -9).
    let dead_holder = if holder_is_dead_here(&current.holder) {
        current.holder.as_str()
    } else {
        ""
    };
    let taken = store::take_lease(&mut tx, me, now + ttl.as_millis() as i64, now, dead_holder).await?;
    tx.commit().await?;
    let Some(term) = taken else {
        let note = format!(
            "standing by: coordinator {} holds the lease (renewed until {}); taking over when it lapses",
            current.holder,
            chrono::DateTime::from_timestamp_millis(current.lease_until)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
        if *said_standby != current.holder {
            tracing::info!("{note}");
            *said_standby = current.holder.clone();
        }
        return Ok(None);
    };
    tracing::info!(
        "leading (database lease, {ttl:?}): fencing token {}, epoch {}",
        term.token,
        term.epoch
    );
    let lost = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(renew_lease_row(store.clone(), term.token, ttl, lost.clone()));
    Ok(Some(Term {
        token: term.token,
        epoch: term.epoch,
        lost,
        tasks,
        etcd: None,
    }))
}

/// Campaigns in etcd, then takes over in the database; None when the election was stale.
async fn acquire_elected(
    store: &Store,
    me: &str,
    ttl: Duration,
    settings: &EtcdSettings,
) -> anyhow::Result<Option<Term>> {
    let mut client = connect_etcd(settings).await?;
    let ttl_secs = ttl.as_secs().max(2) as i64;
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    let lost = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Kept alive from now: the campaign may wait long for an incumbent.
    tasks.spawn(keep_etcd_lease_alive(client.clone(), lease, ttl, lost.clone()));
    let campaign = tokio::select! {
        won = client.campaign(settings.key.as_str(), me, lease) => won?,
        _ = lost.cancelled() => anyhow::bail!("the etcd lease ended while campaigning"),
    };
    let leader = campaign.leader().cloned().context("etcd named no leader key")?;
    let revision = leader.rev();
    let mut tx = store.begin_unfenced().await?;
    let taken = store::take_over_elected(&mut tx, me, revision, now_ms() + ttl.as_millis() as i64).await?;
    tx.commit().await?;
    let Some(term) = taken else {
        // A newer election took over already: this one is stale.
        tracing::warn!(
            "etcd elected this coordinator at revision {revision}, but a newer election leads: resigning"
        );
        client
            .resign(Some(ResignOptions::new().with_leader(leader)))
            .await
            .ok();
        client.lease_revoke(lease).await.ok();
        tasks.shutdown().await;
        return Ok(None);
    };
    tracing::info!(
        "leading (etcd {}, key {}, revision {revision}): fencing token {}, epoch {}",
        settings.endpoints.join(","),
        settings.key,
        term.token,
        term.epoch
    );
    tasks.spawn(renew_lease_row(store.clone(), term.token, ttl, lost.clone()));
    Ok(Some(Term {
        token: term.token,
        epoch: term.epoch,
        lost,
        tasks,
        etcd: Some((client, leader, lease)),
    }))
}

/// MySQL/MariaDB's "Lock wait timeout exceeded" (error 1205).
fn is_lock_wait_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .is_some_and(|db| db.message().contains("Lock wait timeout exceeded"))
    })
}

/// Renews the lease row a few times per lease; ends the term when the token was replaced or
/// the lease could not be confirmed for a whole lease (another may have taken over).
async fn renew_lease_row(store: Store, token: i64, ttl: Duration, lost: CancellationToken) {
    let period = ttl / 3;
    let mut confirmed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let renewed = async {
            let mut tx = store.begin_unfenced().await?;
            let ok = store::renew_lease(&mut tx, token, now_ms() + ttl.as_millis() as i64).await?;
            tx.commit().await?;
            anyhow::Ok(ok)
        };
        match renewed.await {
            Ok(true) => confirmed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(
                    "another coordinator took over (fencing token {token} replaced): stepping down"
                );
                lost.cancel();
                return;
            }
            // The leader row is locked by a fenced write transaction (`check_fence` holds it to
            // the commit): while it is, no takeover can commit either, so a renewal that timed
            // out waiting for it (MySQL's lock wait timeout, during a 20,000-task apply or a
            // year-long backfill) is no sign of a lost lease. The next renewal after the commit
            // says whether the token is still ours.
            Err(e) if is_lock_wait_timeout(&e) => {
                tracing::info!("lease renewal waited on a long write transaction ({e:#}); trying again");
                confirmed = tokio::time::Instant::now();
            }
            Err(e) if confirmed.elapsed() > ttl => {
                tracing::error!("cannot renew the lease for {ttl:?} ({e:#}): stepping down");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!("lease renewal failed, trying again: {e:#}"),
        }
    }
}

/// Keeps the etcd lease alive; ends the term when etcd says it expired or stops answering
/// for a whole lease.
async fn keep_etcd_lease_alive(mut client: EtcdClient, lease: i64, ttl: Duration, lost: CancellationToken) {
    let period = ttl / 3;
    let mut confirmed = tokio::time::Instant::now();
    let mut stream = None;
    loop {
        if stream.is_none() {
            match client.lease_keep_alive(lease).await {
                Ok(pair) => stream = Some(pair),
                Err(e) => tracing::warn!("etcd keep-alive: {e}"),
            }
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let answered = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(period, answered).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => confirmed = tokio::time::Instant::now(),
                Ok(Ok(Some(_))) => {
                    tracing::warn!("the etcd lease expired: stepping down");
                    lost.cancel();
                    return;
                }
                other => {
                    tracing::warn!("etcd keep-alive got no answer ({other:?})");
                    stream = None;
                }
            }
        }
        if confirmed.elapsed() > ttl {
            tracing::warn!("etcd did not confirm the lease for {ttl:?}: stepping down");
            lost.cancel();
            return;
        }
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// This coordinator's id: `host:pid`, unique among live processes.
pub fn coordinator_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `holder` (`host:pid`) names a process of this host that no longer exists.
fn holder_is_dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host != host_name() || pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    // Signal 0 checks existence; ESRCH: no such process.
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_of_this_host_is_recognised() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(holder_is_dead_here(&format!("{}:{pid}", host_name())));
        assert!(!holder_is_dead_here(&format!(
            "{}:{}",
            host_name(),
            std::process::id()
        )));
        assert!(!holder_is_dead_here(&format!("elsewhere:{pid}")));
        assert!(!holder_is_dead_here(""));
    }
}
