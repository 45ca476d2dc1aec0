//! The store: the only home of SQL, and the one source of truth, on SQLite, PostgreSQL or
//! MySQL/MariaDB.
//!
//! # Why the state stays right
//! - **One writer.** The coordinator that leads is the only writer of scheduling state
//!   (DESIGN.md, "One fenced writer"); the leadership issue fences it with a token checked in
//!   every write transaction. Inside a coordinator, writes go through one connection (a pool of
//!   one), so its own transactions never interleave, and the engine's in-memory state (catalog,
//!   join counts, agent liveness) is only ever updated after its own commits. Reads use a pool
//!   of their own and see committed data.
//! - **Compare-and-set.** Every transition of an instance or a try is an `UPDATE ... WHERE
//!   state = <expected> [AND try_number = <expected>]`, and the rows it touched say whether this
//!   writer won. Two writers (two coordinators in a split brain, or a test racing two stores)
//!   can both try; exactly one sees a row affected. MySQL is told to count matched rows
//!   (sqlx sets CLIENT_FOUND_ROWS), as PostgreSQL and SQLite do.
//! - **Unique keys** on instances (task, etl_day), cron fires (schedule, fire time), tries
//!   (instance, try number) and log chunks (try, byte offset): whoever inserts second gets
//!   nothing, never a duplicate run.
//! - **READ COMMITTED** on PostgreSQL (its default) and on MySQL (set on every connection,
//!   instead of REPEATABLE READ), so a read inside a write transaction sees the latest commits,
//!   as on SQLite. The read-then-write steps (releasing a join when its last upstream succeeds,
//!   appending a log chunk, the cycle check of apply) are safe because the single writer is
//!   the only one who changes what they read; log chunks are keyed by (try, offset), so even a
//!   second writer could only fail on the key, never interleave bytes.
//!
//! Times are epoch milliseconds and data dates `yyyymmdd` text on every database, so one set
//! of queries (with [`Dialect`] filling in placeholders, upserts and `RETURNING`) serves all
//! three through sqlx's `Any` driver.

mod agent_tokens;
mod agents;
mod alerts;
mod apply_batch;
mod attempts;
mod auth;
mod backfills;
mod dialect;
mod eta;
mod fires;
mod instance_batch;
mod instance_states;
mod instances;
mod leadership;
mod log_archive;
mod logs;
mod operations;
mod pools;
mod retention;
mod returning;
mod statistics;
mod task_deletion;
mod tasks;
mod timings;
mod versions;

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod instance_batch_tests;
#[cfg(test)]
mod returning_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use tokio_util::sync::CancellationToken;

pub use agent_tokens::*;
pub use agents::*;
pub use alerts::*;
pub use apply_batch::*;
pub use attempts::*;
pub use auth::*;
pub use backfills::*;
pub use dialect::Dialect;
pub use eta::*;
pub use fires::*;
pub use instance_batch::*;
pub use instance_states::*;
pub use instances::*;
pub use leadership::*;
pub use log_archive::*;
pub use logs::*;
pub use operations::*;
pub use pools::*;
pub use retention::*;
pub use returning::*;
pub use statistics::*;
pub use task_deletion::*;
pub use tasks::*;
pub use timings::{TryTimes, try_times_of};
pub use versions::*;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/mysql");

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where the store lives: `sqlite://PATH`, `postgres://` (or `postgresql://`) or `mysql://`
/// (or `mariadb://`).
#[derive(Clone)]
pub struct DatabaseUrl {
    url: String,
    pub dialect: Dialect,
    /// The setting it came from, for messages (`Common.MysqlConn`, `--database-url`, ...).
    source: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DatabaseUrl {
    /// Parses the scheme; `source` names the setting in messages (`Common.MysqlConn`, ...).
    /// A message never shows the URL's password: a text that does not parse shows nothing
    /// before its `@` (see [`goflow_core::redact`]).
    pub fn parse(url: &str, source: &str) -> anyhow::Result<Self> {
        let shown = redact(url);
        let scheme = match url::Url::parse(url) {
            Ok(parsed) => parsed.scheme().to_string(),
            Err(e) => anyhow::bail!(
                "{source} is {shown}: not a URL ({e}); expected sqlite://PATH, \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE or mysql://USER:PASSWORD@HOST:PORT/DATABASE"
            ),
        };
        let dialect = match scheme.as_str() {
            "sqlite" => {
                let path = sqlite_path(url);
                anyhow::ensure!(
                    !path.is_empty() && !path.starts_with(":memory:"),
                    "{source}: {shown:?} names no file; goflow keeps its state on disk (sqlite://PATH)"
                );
                Dialect::Sqlite
            }
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            _ => anyhow::bail!(
                "{source} is {shown}: unknown database scheme {:?} (expected sqlite://PATH, postgres://... or mysql://...)",
                redact(&scheme)
            ),
        };
        anyhow::ensure!(
            dialect == Dialect::Sqlite || url.contains("://"),
            "{source} is {shown}: expected {scheme}://USER:PASSWORD@HOST:PORT/DATABASE"
        );
        let url = match scheme.as_str() {
            // sqlx knows mysql:// only.
            "mariadb" => format!("mysql{}", &url["mariadb".len()..]),
            _ => url.to_string(),
        };
        Ok(Self {
            url,
            dialect,
            source: source.to_string(),
        })
    }

    pub fn sqlite(path: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", path.display()),
            dialect: Dialect::Sqlite,
            source: "the data folder".into(),
        }
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// The SQLite file, for a `sqlite://` URL.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        (self.dialect == Dialect::Sqlite).then(|| sqlite_path(&self.url).into())
    }
}

fn sqlite_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or("");
    rest.split('?').next().unwrap_or(rest)
}

/// `scheme://user:***@host/...`: the password (and any token parameter) never reaches a log.
pub fn redact(url: &str) -> String {
    goflow_core::redact_url(url)
}

/// A connection queries run on: a write transaction ([`Tx`]) or a read connection
/// ([`Reader`]), with the dialect its SQL must be written in.
pub trait Db: Send {
    fn conn(&mut self) -> &mut AnyConnection;
    fn dialect(&self) -> Dialect;
}

/// A write transaction on the store's one writer connection. Dropped without `commit`, it
/// rolls back.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
}

impl Tx {
    pub async fn commit(self) -> anyhow::Result<()> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> anyhow::Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

impl Db for Tx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
    fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// A connection of the read pool.
pub struct Reader {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    dialect: Dialect,
}

impl Db for Reader {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
    fn dialect(&self) -> Dialect {
        self.dialect
    }
}

#[derive(Clone)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    /// Log chunks, written by any coordinator beside the scheduling writer (see `logs.rs`), so
    /// output never queues behind scheduling transactions, nor they behind it.
    logs: AnyPool,
    /// Lease renewal and presence: their own connection, so a busy writer never delays them
    /// past the lease.
    bookkeeping: AnyPool,
    url: DatabaseUrl,
    /// The URL's dialect, with MariaDB told apart from MySQL by asking the server.
    dialect: Dialect,
    /// The term whose token every write transaction of this handle must still hold; None
    /// for tools, tests and the bookkeeping that writes without leading.
    fence: Option<Fence>,
}

/// One term of leadership as its writes see it: the fencing token taken at its start, and
/// whether it is over. The engine of a term holds it (through [`Store::fenced`]), so a
/// handler of an old term still carries the old token after a new term began, even in the
/// same process, and is refused.
#[derive(Debug, Clone)]
pub struct Fence {
    token: i64,
    ended: CancellationToken,
}

impl Fence {
    pub fn new(token: i64) -> Self {
        Self {
            token,
            ended: CancellationToken::new(),
        }
    }

    pub fn token(&self) -> i64 {
        self.token
    }

    /// Ends the term here: from now on its writes are refused without asking the database.
    pub fn end(&self) {
        self.ended.cancel();
    }

    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Cancelled when the term ends: stepped down, or a write was refused for its token.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }
}

/// A write refused because its term is over (another coordinator, or a newer term of this
/// one, took over, or this one stepped down): whoever wrote for that term must stop.
#[derive(Debug, thiserror::Error)]
#[error("the term of fencing token {token} is over (this coordinator no longer leads for it): write refused")]
pub struct Fenced {
    pub token: i64,
}

impl Store {
    /// Connects, checks the schema and migrates it (creating a SQLite file and its folder if
    /// needed). Fails naming the URL (password redacted) and what went wrong.
    pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        let write = connect(url, 1, false).await?;
        migrate(&write, url).await?;
        let read = connect(url, 4, true).await?;
        // SQLite has one writer at a time whatever the pool: one connection waits its turn.
        let log_writers = if url.dialect == Dialect::Sqlite { 1 } else { 2 };
        let logs = connect(url, log_writers, false).await?;
        let bookkeeping = connect(url, 1, false).await?;
        let dialect = match url.dialect {
            Dialect::MySql => {
                let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&read).await?;
                if version.to_lowercase().contains("mariadb") {
                    Dialect::MariaDb
                } else {
                    Dialect::MySql
                }
            }
            other => other,
        };
        Ok(Self {
            write,
            read,
            logs,
            bookkeeping,
            url: url.clone(),
            dialect,
            fence: None,
        })
    }

    /// Opens (creating if needed) the SQLite database `data_dir/goflow.db`.
    pub async fn open_dir(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::open(&DatabaseUrl::sqlite(&data_dir.join("goflow.db"))).await
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A write transaction. On a fenced handle it first confirms the term's token is still
    /// the stored one (and locks the leader row until it ends), or fails with [`Fenced`] and
    /// ends the term.
    pub async fn begin(&self) -> anyhow::Result<Tx> {
        if let Some(fence) = &self.fence
            && fence.is_ended()
        {
            return Err(Fenced { token: fence.token }.into());
        }
        let mut tx = Tx {
            tx: self.write.begin().await?,
            dialect: self.dialect(),
        };
        let Some(fence) = &self.fence else {
            return Ok(tx);
        };
        // Asked again once the writer is ours: the term may have ended while we waited for it
        // (a step-down hands the lease back after the writes in flight, not after later ones).
        if fence.is_ended() || !check_fence(&mut tx, fence.token).await? {
            tx.rollback().await.ok();
            fence.end();
            return Err(Fenced { token: fence.token }.into());
        }
        Ok(tx)
    }

    /// A handle on the same database whose every write transaction carries `fence`.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The term this handle writes for; None when unfenced.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// A write transaction without the fence check: the leadership bookkeeping of a coordinator
    /// (taking and renewing the lease, recording that it is alive), on its own connection, so
    /// it never waits behind the scheduling writer's queue.
    pub async fn begin_unfenced(&self) -> anyhow::Result<Tx> {
        self.begin_beside(&self.bookkeeping).await
    }

    /// A write transaction for log chunks, unfenced: any coordinator, leading or not, stores
    /// them (under the unique key (try, offset)), beside the scheduling writer.
    pub async fn begin_logs(&self) -> anyhow::Result<Tx> {
        self.begin_beside(&self.logs).await
    }

    /// A transaction on a pool beside the scheduling writer. On SQLite it takes the write lock
    /// at once (waiting its turn): a deferred one that read first could not write after the
    /// other connection committed in between.
    async fn begin_beside(&self, pool: &AnyPool) -> anyhow::Result<Tx> {
        let tx = match self.dialect {
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            _ => pool.begin().await?,
        };
        Ok(Tx {
            tx,
            dialect: self.dialect(),
        })
    }

    /// A read connection: sees committed data, never blocks the writer.
    pub async fn read(&self) -> anyhow::Result<Reader> {
        Ok(Reader {
            conn: self.read.acquire().await?,
            dialect: self.dialect(),
        })
    }

    /// Increments and returns the coordinator epoch: every start gets a new one, and a
    /// dispatch of an older epoch is refused.
    pub async fn next_epoch(&self) -> anyhow::Result<i64> {
        let mut tx = self.begin_unfenced().await?;
        let d = tx.dialect();
        sqlx::query(d.sql("UPDATE leader SET epoch = epoch + 1 WHERE id = 1"))
            .execute(tx.conn())
            .await?;
        let epoch: i64 = sqlx::query_scalar(d.sql("SELECT epoch FROM leader WHERE id = 1"))
            .fetch_one(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        self.logs.close().await;
        self.bookkeeping.close().await;
    }
}

async fn connect(url: &DatabaseUrl, connections: u32, read_only: bool) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let mut text = url.url.clone();
    if let Some(path) = url.sqlite_file() {
        if !read_only && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data folder {}", dir.display()))?;
        }
        if !read_only {
            create_private(&path)?;
        }
        // `mode` is ours to set: rwc creates the file, ro keeps readers from writing.
        text = format!(
            "sqlite://{}?mode={}",
            path.display(),
            if read_only { "ro" } else { "rwc" }
        );
    }
    let options: AnyConnectOptions = text.parse().map_err(|e: sqlx::Error| {
        anyhow::anyhow!(
            "database URL {} is not valid: {}",
            url.redacted(),
            goflow_core::redact::scrub(&e.to_string(), &url.url)
        )
    })?;
    let dialect = url.dialect;
    // One connection first, so that a wrong address, password or database name fails now
    // with the server's own words, not after the pool's retries as a timeout.
    let probe = tokio::time::timeout(Duration::from_secs(15), AnyConnection::connect_with(&options))
        .await
        .map_err(|_| connect_error(url, sqlx::Error::PoolTimedOut))?
        .map_err(|e| connect_error(url, e))?;
    probe.close().await.ok();
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        .min_connections(if read_only { 0 } else { 1 })
        // The writer may wait behind a long backfill chunk; a reader never waits that long.
        .acquire_timeout(Duration::from_secs(if read_only { 30 } else { 120 }))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for statement in session_settings(dialect) {
                    conn.execute(*statement).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| connect_error(url, e))?;
    Ok(pool)
}

/// Per-connection settings: SQLite's durability and locking, MySQL's isolation level.
fn session_settings(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => &[
            "PRAGMA journal_mode = WAL",
            // NORMAL in WAL mode: a commit survives a crash of the process (kill -9); only a
            // power loss can drop the last commits. FULL costs 6x per commit.
            "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 30000",
            "PRAGMA wal_autocheckpoint = 100000",
            // Up to 32 MiB of pages (taken only as used; the default is 2 MiB): a year-long
            // backfill's inserts otherwise read the index pages they touch back from the WAL.
            "PRAGMA cache_size = -32768",
        ],
        // A coordinator stopped in the middle of a transaction (SIGSTOP, a VM paused) would
        // hold the leader row's lock, and with it any takeover, for as long as it is stopped:
        // the server ends such a session after a while, which rolls its transaction back.
        Dialect::MySql | Dialect::MariaDb => &[
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
            "SET SESSION wait_timeout = 6",
        ],
        Dialect::Postgres => &["SET idle_in_transaction_session_timeout = '5s'"],
    }
}

/// A connection failure as a user can act on it: which database, and what it said.
/// Creates a missing SQLite file readable by its owner only (0600): it holds password and
/// token hashes and every command. SQLite gives its -wal and -shm files the same mode. An
/// existing file keeps the mode its owner chose.
fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {}", path.display()))),
    }
}

fn connect_error(url: &DatabaseUrl, e: sqlx::Error) -> anyhow::Error {
    let what = match &e {
        // rustls reports a refused certificate as an I/O error of the handshake.
        sqlx::Error::Io(io) if is_tls_failure(&io.to_string()) => tls_failure(io),
        sqlx::Error::Io(io) => format!("cannot reach the server ({io})"),
        sqlx::Error::PoolTimedOut => "the server did not answer in time".to_string(),
        sqlx::Error::Database(db) => {
            let msg = db.message();
            let lower = msg.to_lowercase();
            if lower.contains("password") || lower.contains("access denied") {
                format!("the server refused the credentials: {msg}")
            } else if lower.contains("does not exist") || lower.contains("unknown database") {
                format!("the database does not exist: {msg} (create it first, e.g. CREATE DATABASE ...)")
            } else {
                msg.to_string()
            }
        }
        sqlx::Error::Tls(tls) => tls_failure(tls),
        other => other.to_string(),
    };
    // A driver's message may quote the URL it was given.
    let what = goflow_core::redact::scrub(&what, &url.url);
    anyhow::anyhow!(
        "cannot open the {} database {} ({}): {what}",
        url.dialect.name(),
        url.redacted(),
        url.source
    )
}

fn is_tls_failure(text: &str) -> bool {
    let text = text.to_lowercase();
    ["certificate", "tls", "handshake"]
        .iter()
        .any(|word| text.contains(word))
}

fn tls_failure(why: impl std::fmt::Display) -> String {
    format!(
        "TLS with the server failed ({why}): check the URL's sslmode and sslrootcert (PostgreSQL) or \
         ssl-mode and ssl-ca (MySQL)"
    )
}

fn migrator(dialect: Dialect) -> &'static Migrator {
    match dialect {
        Dialect::Sqlite => &SQLITE_MIGRATIONS,
        Dialect::Postgres => &POSTGRES_MIGRATIONS,
        Dialect::MySql | Dialect::MariaDb => &MYSQL_MIGRATIONS,
    }
}

/// The newest schema version this binary knows.
pub fn schema_version(dialect: Dialect) -> i64 {
    migrator(dialect).iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies the migrations this database has not seen; idempotent. Refuses a database whose
/// schema is newer than this binary (another goflow upgraded it): running on it could
/// corrupt what the newer version wrote.
async fn migrate(pool: &AnyPool, url: &DatabaseUrl) -> anyhow::Result<()> {
    match migrator(url.dialect).run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(version)) => anyhow::bail!(
            "the database {} has schema version {version}, newer than this goflow {} knows (up to {}): \
             upgrade goflow, or point it at another database",
            url.redacted(),
            env!("CARGO_PKG_VERSION"),
            schema_version(url.dialect)
        ),
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("cannot migrate the database {}", url.redacted())))
        }
    }
}

/// Applies migrations only (`goflow migrate`); returns the schema version.
pub async fn migrate_only(url: &DatabaseUrl) -> anyhow::Result<i64> {
    let pool = connect(url, 1, false).await?;
    migrate(&pool, url).await?;
    pool.close().await;
    Ok(schema_version(url.dialect))
}
