//! Overage reported to a Stripe Billing Meter across a crash: a real `tollgate serve` with a
//! standalone sandbox. A metered permission names a meter; 1,200 units are consumed against a
//! balance of 1,000 with `overage: "allow"`. The sandbox answers meter events slowly (a latency
//! fault, which the sandbox finishes even when its client is gone); the server is SIGKILLed
//! once its worker has taken an event for sending, then restarted: the meter sums exactly 200
//! for the customer and every queued event ends sent, none counted twice. SQLite and PostgreSQL.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{
    Proc, first_key, free_port, fresh_schema, postgres_url, serve_command, start_ready,
    start_sandbox, status_json,
};

const MASTER_KEY: &str = "505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f";

async fn serve(dir: &Path, port: u16, sandbox: &str, database_url: Option<&str>) -> Proc {
    std::fs::create_dir_all(dir).expect("data dir");
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, "reconcile_interval_secs = 0\n").expect("config file");
    let mut cmd = serve_command(dir, port, database_url);
    cmd.arg("--config")
        .arg(&config)
        .args(["--sandbox", "false", "--stripe-api-base", sandbox]);
    match database_url {
        Some(_) => cmd.env("TOLLGATE_MASTER_KEY", MASTER_KEY),
        None => cmd.env_remove("TOLLGATE_MASTER_KEY"),
    };
    start_ready(&mut cmd, port).await.0
}

/// (queued events, of which taken for sending at least once, of which sent).
async fn outbox(pool: &sqlx::AnyPool) -> (i64, i64, i64) {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT COUNT(*),
                COALESCE(SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0)
         FROM meter_outbox",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    row.unwrap_or((0, 0, 0))
}

async fn ok(rb: reqwest::RequestBuilder, want: u16) -> Value {
    let (status, v) = status_json(rb).await;
    assert_eq!(status, want, "{v}");
    v
}

async fn meter_sum(http: &reqwest::Client, sandbox: &str, sk: &str, meter: &str, cus: &str) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let start = (now / 3600) * 3600 - 3600;
    let end = start + 3 * 3600;
    let v = ok(
        http.get(format!(
            "{sandbox}/v1/billing/meters/{meter}/event_summaries?customer={cus}&start_time={start}&end_time={end}"
        ))
        .bearer_auth(sk),
        200,
    )
    .await;
    v["data"][0]["aggregated_value"].as_i64().unwrap_or(-1)
}

async fn killed_while_reporting(database_url: Option<String>) {
    tollgate_stripe::install_crypto_provider();
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_sb, sandbox, sk) = start_sandbox();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&data, port, &sandbox, database_url.as_deref()).await;
    let key = first_key(&data);
    let http = reqwest::Client::new();
    let conn = ok(
        http.post(format!("{base}/connections"))
            .bearer_auth(&key)
            .json(&json!({"secret_key": sk})),
        201,
    )
    .await;
    let meter = ok(
        http.post(format!("{sandbox}/v1/billing/meters"))
            .bearer_auth(&sk)
            .form(&[
                ("display_name", "Generations beyond the plan"),
                ("event_name", "generations"),
                ("default_aggregation[formula]", "sum"),
            ]),
        200,
    )
    .await;
    let meter = meter["id"].as_str().expect("meter id").to_string();
    let cus = ok(
        http.post(format!("{sandbox}/v1/customers"))
            .bearer_auth(&sk)
            .form(&[("email", "crash@example.com")]),
        200,
    )
    .await;
    let cus = cus["id"].as_str().expect("customer id").to_string();
    ok(
        http.post(format!("{base}/v1/connect_stripe"))
            .bearer_auth(&key)
            .json(&json!({"customid": "crash", "customerid": cus, "connection_id": conn["id"]})),
        200,
    )
    .await;
    ok(
        http.post(format!("{base}/v1/permissions/definitions"))
            .bearer_auth(&key)
            .json(&json!({"identifier": "gens", "kind": "metered", "skus": [],
                          "meter_event_name": "generations"})),
        201,
    )
    .await;
    ok(
        http.post(format!("{base}/v1/permissions/gens/adjustments"))
            .bearer_auth(&key)
            .json(&json!({"customid": "crash", "units": 1000, "reason": "plan"})),
        201,
    )
    .await;

    // Stripe answers meter events in 3 s.
    ok(
        http.post(format!("{sandbox}/_sandbox/faults"))
            .bearer_auth(&sk)
            .json(&json!({"kind": "latency", "rate": 1.0, "latency_ms": 3000,
                          "path": "/v1/billing/meter_events"})),
        200,
    )
    .await;
    for (units, balance) in [(900, 100), (200, 0), (100, 0)] {
        let c = ok(
            http.post(format!("{base}/v1/permissions/gens/consume"))
                .bearer_auth(&key)
                .json(&json!({"customid": "crash", "units": units, "overage": "allow"})),
            200,
        )
        .await;
        assert_eq!(c["balance"], balance, "{c}");
        assert_eq!(c["consumed"], units, "{c}");
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(
            &database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", data.join("tollgate.db").display())),
        )
        .await
        .expect("the server's database");
    // Two events queued with their ledger rows; killed once the worker has taken one.
    let started = Instant::now();
    loop {
        let (queued, taken, sent) = outbox(&pool).await;
        assert_eq!(queued, 2);
        assert_eq!(sent, 0, "sent despite the latency");
        if taken > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker never took an event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    ok(
        http.post(format!("{sandbox}/_sandbox/faults"))
            .bearer_auth(&sk)
            .json(&json!({"rate": 0})),
        200,
    )
    .await;

    // Restarted: every queued event ends sent, the meter holds 200 once.
    server = serve(&data, port, &sandbox, database_url.as_deref()).await;
    let started = Instant::now();
    loop {
        let (queued, _, sent) = outbox(&pool).await;
        if sent == queued {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events left unsent: {sent} of {queued}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(meter_sum(&http, &sandbox, &sk, &meter, &cus).await, 200);
    // The ledger holds the overage: 1,000 consumed from the balance, 200 beyond it.
    let ledger = ok(
        http.get(format!("{base}/v1/subscribers/crash/ledger?limit=100"))
            .bearer_auth(&key),
        200,
    )
    .await;
    let rows = ledger["items"].as_array().cloned().unwrap_or_default();
    let beyond: i64 = rows.iter().filter_map(|r| r["shortfall"].as_i64()).sum();
    let consumed: i64 = rows
        .iter()
        .filter(|r| r["kind"] == "consume")
        .filter_map(|r| r["units"].as_i64())
        .sum();
    assert_eq!((consumed, beyond), (-1000, 200), "{rows:#?}");
    pool.close().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_reported_once_across_a_kill_while_reporting_sqlite() {
    killed_while_reporting(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_reported_once_across_a_kill_while_reporting_postgres() {
    let Some(pg) = postgres_url() else {
        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
        return;
    };
    killed_while_reporting(Some(fresh_schema(&pg).await)).await;
}
