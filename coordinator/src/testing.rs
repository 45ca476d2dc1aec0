//! Fresh databases for tests, on the real servers: each [`TestDatabase`] is a new, empty
//! database on the local PostgreSQL or MySQL/MariaDB server (or a SQLite file), dropped when
//! the value is dropped. The servers are found through `GOFLOW_TEST_POSTGRES_URL` and
//! `GOFLOW_TEST_MYSQL_URL` (admin URLs; `scripts/test-services` starts servers and sets them),
//! by default the standard local ports.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor};

use crate::store::{DatabaseUrl, Dialect};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/mysql";

/// Which database the end-to-end suite runs on: `GOFLOW_TEST_DATABASE` = sqlite (default),
/// postgres or mysql.
pub fn suite_dialect() -> Dialect {
    match std::env::var("GOFLOW_TEST_DATABASE").as_deref() {
        Ok("postgres") | Ok("postgresql") => Dialect::Postgres,
        Ok("mysql") | Ok("mariadb") => Dialect::MySql,
        Ok("sqlite") | Ok("") | Err(_) => Dialect::Sqlite,
        Ok(other) => panic!("GOFLOW_TEST_DATABASE={other:?}: expected sqlite, postgres or mysql"),
    }
}

fn admin_url(dialect: Dialect) -> String {
    let (var, default) = match dialect {
        Dialect::Postgres => ("GOFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        Dialect::MySql | Dialect::MariaDb => ("GOFLOW_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
        Dialect::Sqlite => unreachable!("SQLite needs no server"),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// `scheme://user@host:port/` + `name`.
fn with_database(admin: &str, name: &str) -> String {
    let (base, _) = admin.rsplit_once('/').expect("an admin URL names a database");
    format!("{base}/{name}")
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    dialect: Dialect,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(dialect: Dialect) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "goflow_t{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_millis() % 100_000
        );
        if dialect == Dialect::Sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            return Self {
                url: format!("sqlite://{}", dir.path().join("goflow.db").display()),
                dialect,
                name,
                _dir: Some(dir),
            };
        }
        let admin = admin_url(dialect);
        let mut conn = connect_admin(&admin).await;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} on {admin}: {e}"));
        conn.close().await.ok();
        Self {
            url: with_database(&admin, &name),
            dialect,
            name,
            _dir: None,
        }
    }

    /// [`create`](Self::create) for synchronous code (the end-to-end sandbox).
    pub fn create_blocking(dialect: Dialect) -> Self {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(Self::create(dialect))
        })
        .join()
        .expect("creating a test database")
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url, "test database").expect("a valid test URL")
    }

    /// Drops the database now (Drop does it too, on a thread of its own).
    pub fn drop_now(&self) {
        if self.dialect == Dialect::Sqlite {
            return;
        }
        let admin = admin_url(self.dialect);
        let name = self.name.clone();
        let dialect = self.dialect;
        // Drop may run inside a runtime: a thread with its own keeps it simple.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    let mut conn = connect_admin(&admin).await;
                    let sql = match dialect {
                        Dialect::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        _ => format!("DROP DATABASE IF EXISTS {name}"),
                    };
                    if let Err(e) = conn.execute(sqlx::AssertSqlSafe(sql)).await {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                    conn.close().await.ok();
                })
        });
        done.join().ok();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.drop_now();
    }
}

async fn connect_admin(admin: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(admin).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the test database server at {}: {e}\n\
             (scripts/test-services starts PostgreSQL and MariaDB on loopback)",
            crate::store::redact(admin)
        )
    })
}
