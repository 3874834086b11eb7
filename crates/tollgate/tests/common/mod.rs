//! What the process-level tests share.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// SIGKILL (no shutdown, no flush), then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone sandbox: (process, base URL, secret key).
pub fn start_sandbox() -> (Proc, String, String) {
    let mut child = Command::new(BIN)
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the sandbox");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let (mut url, mut key) = (String::new(), String::new());
    for _ in 0..4 {
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(u) = line.strip_prefix("sandbox listening on ") {
            url = u.trim().to_string();
        } else if let Some(k) = line.strip_prefix("secret key: ") {
            key = k.trim().to_string();
        }
    }
    assert!(!url.is_empty() && !key.is_empty(), "sandbox start-up lines");
    (Proc(child), url, key)
}

/// `tollgate serve` on 127.0.0.1:`port` with `dir` as its data directory, logging warnings
/// only, its output discarded; on `database_url`, or on SQLite in `dir` when `None`.
pub fn serve_command(dir: &Path, port: u16, database_url: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match database_url {
        Some(u) => cmd.env("DATABASE_URL", u),
        None => cmd.env_remove("DATABASE_URL"),
    };
    cmd
}

/// Waits until `GET {base}{path}` answers a 2xx.
pub async fn wait_until_up(base: &str, path: &str) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !http
        .get(format!("{base}{path}"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server start-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `cmd` (a `tollgate serve` on `port`) and waits until it is ready: (process, base URL).
pub async fn start_ready(cmd: &mut Command, port: u16) -> (Proc, String) {
    let proc = Proc(cmd.spawn().expect("starting the server"));
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base, "/readyz").await;
    (proc, base)
}

/// (status, body) of a request; the body is `null` when it is not JSON.
pub async fn status_json(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
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
