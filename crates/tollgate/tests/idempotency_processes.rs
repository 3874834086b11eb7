//! Keyed requests and the files of a real `tollgate serve` process.
//!
//! - kill -9 mid-request: the server dies while a keyed create waits for Stripe (a standalone
//!   sandbox with a latency fault, which outlives the server). After a restart the retry is 409
//!   `concurrent_request` until the dead request's lease lapses, then finishes the same
//!   transaction on one PaymentIntent. SQLite and PostgreSQL.
//! - the files `serve` makes in its data directory (the SQLite database with its `-wal` and
//!   `-shm`, the master key, the first API key, the sandbox's state) are readable by their
//!   owner only.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{
    Proc, first_key, free_port, fresh_schema, postgres_url, serve_command, start_ready,
    start_sandbox, status_json,
};

const MASTER_KEY: &str = "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f";
/// The lease of a keyed request's claim in these tests (seconds).
const LEASE_SECS: u64 = 2;

/// `tollgate serve` on `port` with `dir` as its data directory and `args` added; waits until
/// it is ready.
async fn serve(dir: &Path, port: u16, args: &[&str], database_url: Option<&str>) -> Proc {
    std::fs::create_dir_all(dir).expect("data dir");
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!("idempotency_lease_secs = {LEASE_SECS}\nreconcile_interval_secs = 0\n"),
    )
    .expect("config file");
    let mut cmd = serve_command(dir, port, database_url);
    cmd.arg("--config").arg(&config).args(args);
    match database_url {
        Some(_) => cmd.env("TOLLGATE_MASTER_KEY", MASTER_KEY),
        None => cmd.env_remove("TOLLGATE_MASTER_KEY"),
    };
    start_ready(&mut cmd, port).await.0
}

/// Whether the server's database holds a claim on `key` that has no answer yet.
async fn claimed(pool: &sqlx::AnyPool, key: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1 AND status_code IS NULL",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .is_ok_and(|n| n == 1)
}

async fn killed_mid_request(database_url: Option<String>) {
    tollgate_stripe::install_crypto_provider();
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_sb, sandbox, sk) = start_sandbox();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let args = ["--sandbox", "false", "--stripe-api-base", &sandbox];
    let mut server = serve(&data, port, &args, database_url.as_deref()).await;
    let key = first_key(&data);
    let http = reqwest::Client::new();
    let (status, conn) = status_json(
        http.post(format!("{base}/connections"))
            .bearer_auth(&key)
            .json(&json!({"secret_key": sk})),
    )
    .await;
    assert_eq!(status, 201, "{conn}");
    let body = json!({"amount": 1500, "currency": "EUR", "intent": "authorize",
        "payment_service_id": conn["id"],
        "payment_method": {"method": "card", "redirect_url": "https://merchant.example/done"}});
    let create = || {
        http.post(format!("{base}/transactions"))
            .bearer_auth(&key)
            .header("idempotency-key", "kill-1")
            .json(&body)
    };

    // Stripe answers in 5 s; the server is SIGKILLed while the create waits for it.
    let (status, _) = status_json(
        http.post(format!("{sandbox}/_sandbox/faults"))
            .bearer_auth(&sk)
            .json(&json!({"kind": "latency", "rate": 1.0, "latency_ms": 5000})),
    )
    .await;
    assert_eq!(status, 200, "latency fault");
    let first = tokio::spawn(create().send());
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(
            &database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", data.join("tollgate.db").display())),
        )
        .await
        .expect("the server's database");
    let started = Instant::now();
    while !claimed(&pool, "kill-1").await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the create did not claim its key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the create the moment it needs to reach Stripe (the checks below hold either way:
    // Stripe finishes a request whose client died, and the retry sends the same Stripe key).
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    assert!(
        first.await.expect("task").is_err(),
        "the first try got no answer"
    );
    pool.close().await;
    let (status, _) = status_json(
        http.post(format!("{sandbox}/_sandbox/faults"))
            .bearer_auth(&sk)
            .json(&json!({"rate": 0})),
    )
    .await;
    assert_eq!(status, 200, "faults off");

    // Restarted: the claim of the dead request holds until its lease lapses, then the retry
    // resumes the work.
    server = serve(&data, port, &args, database_url.as_deref()).await;
    let started = Instant::now();
    let tx = loop {
        let (status, v) = status_json(create()).await;
        match status {
            201 => break v,
            // The dead request's lease has not lapsed yet.
            409 => assert_eq!(v["code"], "concurrent_request", "{v}"),
            // Stripe still busy with the first try's request (same Stripe key): resumable.
            502 | 504 => {}
            _ => panic!("retry: {status} {v}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the retry never got through: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = tx["id"].as_str().expect("id");
    assert_eq!(tx["status"], "buyer_approval_pending", "{tx}");
    assert!(tx["payment_method"]["approval_url"].is_string(), "{tx}");
    let (status, intents) = status_json(
        http.get(format!("{sandbox}/v1/payment_intents?limit=100"))
            .bearer_auth(&sk),
    )
    .await;
    assert_eq!(status, 200);
    let intents = intents["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(intents.len(), 1, "one PaymentIntent: {intents:?}");
    assert_eq!(intents[0]["metadata"]["tollgate_transaction_id"], id);
    assert_eq!(tx["additional_identifiers"]["payment_id"], intents[0]["id"]);
    let (_, list) = status_json(http.get(format!("{base}/transactions")).bearer_auth(&key)).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let replay = create().send().await.expect("replay");
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay["id"], id);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_killed_mid_request_is_finished_by_its_retry_sqlite() {
    killed_mid_request(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_killed_mid_request_is_finished_by_its_retry_postgres() {
    let Some(pg) = postgres_url() else {
        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
        return;
    };
    killed_mid_request(Some(fresh_schema(&pg).await)).await;
}

/// What `serve` writes to its data directory holds secrets: mode 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _server = serve(&data, free_port(), &["--sandbox", "true"], None).await;
    let state = data.join("sandbox-state.json");
    let started = Instant::now();
    while !state.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sandbox state file was not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in [
        "tollgate.db",
        "tollgate.db-wal",
        "tollgate.db-shm",
        "master.key",
        "first-secret-key",
        "sandbox-state.json",
    ] {
        let mode = std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
}
