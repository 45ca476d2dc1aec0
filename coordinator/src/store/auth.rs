//! Users, sessions and API tokens. Only hashes are stored: argon2 for passwords, SHA-256 for
//! the random tokens (high-entropy, so a fast hash is enough and lookups stay one index probe).

use sqlx::Row;

use super::Db;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn user(db: &mut impl Db, name: &str) -> anyhow::Result<Option<UserRow>> {
    let d = db.dialect();
    let row = sqlx::query(
        d.sql("SELECT name, role, password_hash, created_at, updated_at FROM users WHERE name = ?"),
    )
    .bind(name)
    .fetch_optional(db.conn())
    .await?;
    row.map(|r| {
        Ok(UserRow {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            password_hash: r.try_get("password_hash")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .transpose()
}

pub async fn list_users(db: &mut impl Db) -> anyhow::Result<Vec<(String, String, i64)>> {
    let d = db.dialect();
    Ok(
        sqlx::query_as(d.sql("SELECT name, role, created_at FROM users ORDER BY name"))
            .fetch_all(db.conn())
            .await?,
    )
}

/// Creates a user; false if the name is taken.
pub async fn insert_user(
    db: &mut impl Db,
    name: &str,
    role: &str,
    password_hash: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = d.insert_unless_exists(
        "users (name, role, password_hash, created_at, updated_at)",
        "(?, ?, ?, ?, ?)",
        "name",
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(now)
        .bind(now)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a user's password (and ends their sessions: a changed password logs everyone out).
pub async fn set_password(
    db: &mut impl Db,
    name: &str,
    password_hash: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?"))
        .bind(password_hash)
        .bind(now)
        .bind(name)
        .execute(db.conn())
        .await?;
    sqlx::query(d.sql("DELETE FROM sessions WHERE user_name = ?"))
        .bind(name)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove_user(db: &mut impl Db, name: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM sessions WHERE user_name = ?"))
        .bind(name)
        .execute(db.conn())
        .await?;
    let done = sqlx::query(d.sql("DELETE FROM users WHERE name = ?"))
        .bind(name)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count_users(db: &mut impl Db) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM users"))
        .fetch_one(db.conn())
        .await?)
}

pub async fn insert_session(
    db: &mut impl Db,
    token_hash: &str,
    user: &str,
    now: i64,
    expires_at: i64,
) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(
        d.sql("INSERT INTO sessions (token_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)"),
    )
    .bind(token_hash)
    .bind(user)
    .bind(now)
    .bind(expires_at)
    .execute(db.conn())
    .await?;
    // Expired sessions go when new ones come.
    sqlx::query(d.sql("DELETE FROM sessions WHERE expires_at < ?"))
        .bind(now)
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn delete_session(db: &mut impl Db, token_hash: &str) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM sessions WHERE token_hash = ?"))
        .bind(token_hash)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// The user and role of a live session.
pub async fn session_user(
    db: &mut impl Db,
    token_hash: &str,
    now: i64,
) -> anyhow::Result<Option<(String, String)>> {
    let d = db.dialect();
    Ok(sqlx::query_as(d.sql(
        "SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.user_name
         WHERE s.token_hash = ? AND s.expires_at > ?",
    ))
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.conn())
    .await?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub role: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

fn token_row(r: &sqlx::any::AnyRow) -> anyhow::Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

const TOKEN_COLUMNS: &str = "name, role, created_by, created_at, expires_at, last_used_at";

/// Stores a token; false if the name is taken.
pub async fn insert_token(db: &mut impl Db, row: &TokenRow, token_hash: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = d.insert_unless_exists(
        "api_tokens (name, token_hash, role, created_by, created_at, expires_at)",
        "(?, ?, ?, ?, ?, ?)",
        "name",
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(&row.name)
        .bind(token_hash)
        .bind(&row.role)
        .bind(&row.created_by)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list_tokens(db: &mut impl Db) -> anyhow::Result<Vec<TokenRow>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name")))
        .fetch_all(db.conn())
        .await?;
    rows.iter().map(token_row).collect()
}

pub async fn delete_token(db: &mut impl Db, name: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("DELETE FROM api_tokens WHERE name = ?"))
        .bind(name)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The token with this hash, unless it expired.
pub async fn token_by_hash(db: &mut impl Db, token_hash: &str, now: i64) -> anyhow::Result<Option<TokenRow>> {
    let d = db.dialect();
    let row = sqlx::query(d.sql(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ? AND (expires_at IS NULL OR expires_at > ?)"
    )))
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.conn())
    .await?;
    row.as_ref().map(token_row).transpose()
}

pub async fn touch_token(db: &mut impl Db, name: &str, now: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE api_tokens SET last_used_at = ? WHERE name = ?"))
        .bind(now)
        .bind(name)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Failed logins recorded for `scope`, and when the last was (epoch ms).
pub async fn login_failures(db: &mut impl Db, scope: &str) -> anyhow::Result<Option<(i64, i64)>> {
    let d = db.dialect();
    Ok(
        sqlx::query_as(d.sql("SELECT failures, last_at FROM login_failures WHERE scope = ?"))
            .bind(scope)
            .fetch_optional(db.conn())
            .await?,
    )
}

/// Counts one more failed login for `scope`; rows quiet for longer than `forget_ms` go.
pub async fn record_login_failure(
    db: &mut impl Db,
    scope: &str,
    now: i64,
    forget_ms: i64,
) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = match d {
        super::Dialect::MySql | super::Dialect::MariaDb => {
            "INSERT INTO login_failures (scope, failures, last_at) VALUES (?, 1, ?)
             ON DUPLICATE KEY UPDATE failures = failures + 1, last_at = VALUES(last_at)"
        }
        _ => {
            "INSERT INTO login_failures (scope, failures, last_at) VALUES (?, 1, ?)
             ON CONFLICT (scope) DO UPDATE SET failures = login_failures.failures + 1, last_at = excluded.last_at"
        }
    };
    sqlx::query(d.sql(sql))
        .bind(scope)
        .bind(now)
        .execute(db.conn())
        .await?;
    sqlx::query(d.sql("DELETE FROM login_failures WHERE last_at < ?"))
        .bind(now - forget_ms)
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn clear_login_failures(db: &mut impl Db, scope: &str) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM login_failures WHERE scope = ?"))
        .bind(scope)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Revokes the API tokens `user` made (a removed user's tokens must not outlive them);
/// returns their names.
pub async fn revoke_tokens_created_by(db: &mut impl Db, user: &str) -> anyhow::Result<Vec<String>> {
    let d = db.dialect();
    let names: Vec<String> =
        sqlx::query_scalar(d.sql("SELECT name FROM api_tokens WHERE created_by = ? ORDER BY name"))
            .bind(user)
            .fetch_all(db.conn())
            .await?;
    sqlx::query(d.sql("DELETE FROM api_tokens WHERE created_by = ?"))
        .bind(user)
        .execute(db.conn())
        .await?;
    Ok(names)
}
