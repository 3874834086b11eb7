//! Metered permissions with two real `tollgate serve` processes on one PostgreSQL database:
//! 64 concurrent consumers of 2 units, spread over both servers, against a balance of 100 →
//! exactly 50 succeed, 14 get `insufficient_balance`, the balance ends at 0 and equals the
//! sum of its ledger.

use std::path::Path;

use serde_json::json;

mod common;
use common::{
    Proc, first_key, free_port, fresh_schema, postgres_url, serve_command, start_ready, status_json,
};

const MASTER_KEY: &str = "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f";

async fn serve(dir: &Path, port: u16, database_url: &str) -> Proc {
    std::fs::create_dir_all(dir).expect("data dir");
    let mut cmd = serve_command(dir, port, Some(database_url));
    cmd.args(["--sandbox", "false"]);
    cmd.env("TOLLGATE_MASTER_KEY", MASTER_KEY);
    start_ready(&mut cmd, port).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_never_overdraw_a_balance() {
    let Some(pg) = postgres_url() else {
        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
        return;
    };
    tollgate_stripe::install_crypto_provider();
    let url = fresh_schema(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b) = (free_port(), free_port());
    let _a = serve(&dir.path().join("a"), port_a, &url).await;
    let key = first_key(&dir.path().join("a"));
    let _b = serve(&dir.path().join("b"), port_b, &url).await;
    let bases = [
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ];
    let http = reqwest::Client::new();
    let (status, v) = status_json(
        http.post(format!("{}/v1/permissions/definitions", bases[0]))
            .bearer_auth(&key)
            .json(&json!({"identifier": "ai_credits", "kind": "metered", "skus": []})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = status_json(
        http.post(format!(
            "{}/v1/permissions/ai_credits/adjustments",
            bases[1]
        ))
        .bearer_auth(&key)
        .json(&json!({"customid": "hot", "units": 100, "reason": "test"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let rb = http
            .post(format!(
                "{}/v1/permissions/ai_credits/consume",
                bases[i % 2]
            ))
            .bearer_auth(&key)
            .header("idempotency-key", format!("c-{i}"))
            .json(&json!({"customid": "hot", "units": 2}));
        tasks.push(tokio::spawn(status_json(rb)));
    }
    let (mut ok, mut short) = (0, 0);
    for t in tasks {
        let (status, v) = t.await.expect("task");
        match status {
            200 => ok += 1,
            402 => {
                assert_eq!(v["code"], "insufficient_balance", "{v}");
                short += 1;
            }
            _ => panic!("unexpected {status}: {v}"),
        }
    }
    assert_eq!((ok, short), (50, 14));
    for base in &bases {
        let (status, b) = status_json(
            http.get(format!("{base}/v1/subscribers/hot/balances"))
                .bearer_auth(&key),
        )
        .await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["items"][0]["balance"], 0, "{b}");
    }
    let (_, page) = status_json(
        http.get(format!("{}/v1/subscribers/hot/ledger?limit=100", bases[0]))
            .bearer_auth(&key),
    )
    .await;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 51, "{page}");
    let sum: i64 = rows.iter().filter_map(|r| r["units"].as_i64()).sum();
    assert_eq!(sum, 0);
}
