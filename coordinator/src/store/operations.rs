//! The operations log: who did what, when, from which client.

use super::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub client: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Bytes kept of an entry's target and detail: the log says what happened, not every name of
/// a 10,000-task apply (and MySQL's TEXT holds 64 KiB).
pub const MAX_OPERATION_TEXT: usize = 16 * 1024;

/// `text`, or its first [`MAX_OPERATION_TEXT`] bytes (whole characters) and how much was cut.
fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_OPERATION_TEXT {
        return text.into();
    }
    let mut end = MAX_OPERATION_TEXT - 64;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes not kept)", &text[..end], text.len() - end).into()
}

pub async fn record_operation(
    db: &mut impl Db,
    actor: &str,
    client: &str,
    action: &str,
    target: &str,
    detail: &str,
    now: i64,
) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(
        d.sql("INSERT INTO operations (at, actor, client, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)"),
    )
    .bind(now)
    .bind(actor)
    .bind(client)
    .bind(action)
    .bind(capped(target).into_owned())
    .bind(capped(detail).into_owned())
    .execute(db.conn())
    .await?;
    Ok(())
}

pub async fn list_operations(
    db: &mut impl Db,
    task: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<OperationRow>> {
    let d = db.dialect();
    let columns = "SELECT id, at, actor, client, action, target, detail FROM operations";
    let query = match task {
        Some(task) => sqlx::query_as(d.sql(&format!(
            "{columns} WHERE target = ? OR target LIKE ? ESCAPE '!' ORDER BY id DESC LIMIT ?"
        )))
        .bind(task.to_string())
        .bind(format!("{}@%", like_literal(task))),
        None => sqlx::query_as(d.sql(&format!("{columns} ORDER BY id DESC LIMIT ?"))),
    };
    Ok(query.bind(limit).fetch_all(db.conn()).await?)
}

/// `text` matched literally by LIKE ... ESCAPE '!' (task ids may hold `_`, a LIKE wildcard).
fn like_literal(text: &str) -> String {
    text.replace('!', "!!").replace('_', "!_").replace('%', "!%")
}
