//! What differs between SQLite, PostgreSQL and MySQL in the SQL goflow writes: placeholders,
//! "insert unless it exists", upserts, and `UPDATE ... RETURNING` (MariaDB has none).
//! Queries are written once with `?` placeholders and portable SQL; these few helpers fill in
//! the rest.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    /// MySQL 8 (a `mysql://` URL whose server is not MariaDB).
    MySql,
    /// MariaDB 10.6+: MySQL's SQL, plus `INSERT ... RETURNING`. Told apart at connect time.
    MariaDb,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
            Dialect::MariaDb => "MariaDB",
        }
    }

    /// The statement with this database's placeholders: `?` stays `?` on SQLite and MySQL and
    /// becomes `$1, $2, ...` on PostgreSQL. goflow's SQL never has a `?` inside a literal.
    pub fn sql(self, sql: &str) -> sqlx::AssertSqlSafe<String> {
        if self != Dialect::Postgres {
            return sqlx::AssertSqlSafe(sql.to_string());
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                write!(out, "${n}").expect("writing to a String");
            } else {
                out.push(c);
            }
        }
        sqlx::AssertSqlSafe(out)
    }

    /// `INSERT INTO {into} VALUES {values}` that does nothing when a row with the same unique
    /// key exists (`conflict` names the key's columns for SQLite and PostgreSQL; MySQL's
    /// `INSERT IGNORE` finds it itself). Rows affected: 1 when inserted, 0 when it existed.
    pub fn insert_unless_exists(self, into: &str, values: &str, conflict: &str) -> String {
        match self {
            Dialect::MySql | Dialect::MariaDb => format!("INSERT IGNORE INTO {into} VALUES {values}"),
            _ => format!("INSERT INTO {into} VALUES {values} ON CONFLICT ({conflict}) DO NOTHING"),
        }
    }

    /// `INSERT INTO {into} VALUES {values}`, or on a duplicate `conflict` key, set `columns`
    /// to the inserted row's values.
    pub fn upsert(self, into: &str, values: &str, conflict: &str, columns: &[&str]) -> String {
        let (clause, set): (String, Vec<String>) = match self {
            Dialect::MySql | Dialect::MariaDb => (
                "ON DUPLICATE KEY UPDATE".into(),
                columns.iter().map(|c| format!("{c} = VALUES({c})")).collect(),
            ),
            _ => (
                format!("ON CONFLICT ({conflict}) DO UPDATE SET"),
                columns.iter().map(|c| format!("{c} = excluded.{c}")).collect(),
            ),
        };
        format!("INSERT INTO {into} VALUES {values} {clause} {}", set.join(", "))
    }

    /// Whether `UPDATE ... RETURNING` works (not on MariaDB or MySQL).
    pub fn update_returning(self) -> bool {
        !self.is_mysql_family()
    }

    /// Whether `INSERT ... RETURNING` works, returning only the rows inserted (not on MySQL 8).
    pub fn insert_returning(self) -> bool {
        self != Dialect::MySql
    }

    pub fn is_mysql_family(self) -> bool {
        matches!(self, Dialect::MySql | Dialect::MariaDb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_placeholders_in_order() {
        let sql = Dialect::Postgres.sql("UPDATE t SET a = ? WHERE b = ? AND c IN (?, ?)");
        assert_eq!(sql.0, "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)");
        assert_eq!(Dialect::MySql.sql("a = ?").0, "a = ?");
        assert_eq!(Dialect::Sqlite.sql("a = ?").0, "a = ?");
    }

    #[test]
    fn insert_unless_exists_per_database() {
        assert_eq!(
            Dialect::MySql.insert_unless_exists("t (a, b)", "(?, ?)", "a"),
            "INSERT IGNORE INTO t (a, b) VALUES (?, ?)"
        );
        assert_eq!(
            Dialect::Postgres.insert_unless_exists("t (a, b)", "(?, ?)", "a"),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO NOTHING"
        );
    }

    #[test]
    fn upsert_per_database() {
        assert_eq!(
            Dialect::MySql.upsert("t (a, b)", "(?, ?)", "a", &["b"]),
            "INSERT INTO t (a, b) VALUES (?, ?) ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
        assert_eq!(
            Dialect::Sqlite.upsert("t (a, b)", "(?, ?)", "a", &["b"]),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = excluded.b"
        );
    }
}
