//! What the process-level tests share.

#![allow(dead_code)]

use std::path::Path;
use std::process::Child;

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first secret API key a server wrote to its data directory.
pub fn first_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("first-secret-key"))
        .expect("first-secret-key")
        .trim()
        .to_string()
}

/// The PostgreSQL server the tests use (`TOLLGATE_TEST_DATABASE_URL`, default the local `test`
/// database); `None` when `TOLLGATE_TEST_SKIP_POSTGRES=1`.
pub fn postgres_url() -> Option<String> {
    if std::env::var("TOLLGATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        return None;
    }
    Some(
        std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    )
}

/// A fresh schema on the test database, as a URL whose connections use it.
pub async fn fresh_schema(base: &str) -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(base)
        .await
        .expect("PostgreSQL (set TOLLGATE_TEST_SKIP_POSTGRES=1 to skip)");
    let schema = format!("tg_proc_{}", uuid_like());
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("CREATE SCHEMA");
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

fn uuid_like() -> String {
    format!("{:016x}{:08x}", rand::random::<u64>(), std::process::id())
}
