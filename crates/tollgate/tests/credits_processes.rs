//! Metered permissions with real `tollgate serve` processes:
//! - two servers on one PostgreSQL database: 64 concurrent consumers of 2 units, spread over
//!   both servers, against a balance of 100 → exactly 50 succeed, 14 get
//!   `insufficient_balance`, the balance ends at 0 and equals the sum of its ledger;
//! - a server on SQLite killed (SIGKILL) under 64 concurrent keyed consumers (group commit):
//!   after a restart every consume it answered is in the ledger once, with the answer its key
//!   replays; the consumes it did not answer, sent again with their keys, are applied once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

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

/// Every ledger row of `customid`, newest first.
async fn ledger(http: &reqwest::Client, base: &str, key: &str, customid: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = status_json(
            http.get(format!(
                "{base}/v1/subscribers/{customid}/ledger?limit=100&cursor={cursor}"
            ))
            .bearer_auth(key),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        rows.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_server_killed_under_keyed_consumes_loses_and_doubles_nothing() {
    tollgate_stripe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        let mut cmd = serve_command(&data, port, None);
        cmd.args(["--sandbox", "false"]);
        cmd.env_remove("TOLLGATE_MASTER_KEY");
        cmd
    };
    let mut server = start_ready(&mut start(), port).await.0;
    let key = first_key(&data);
    let http = reqwest::Client::new();
    let (status, v) = status_json(
        http.post(format!("{base}/v1/permissions/definitions"))
            .bearer_auth(&key)
            .json(&json!({"identifier": "ai_credits", "kind": "metered", "skus": []})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    const CUSTOMERS: usize = 8;
    const GIVEN: i64 = 1_000_000;
    for c in 0..CUSTOMERS {
        let (status, v) = status_json(
            http.post(format!("{base}/v1/permissions/ai_credits/adjustments"))
                .bearer_auth(&key)
                .json(&json!({"customid": format!("c{c}"), "units": GIVEN, "reason": "test"})),
        )
        .await;
        assert_eq!(status, 201, "{v}");
    }
    // 64 clients send keyed consumes until the server dies; each remembers what it was
    // answered, and which of its keys got no answer.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..64 {
        let (http, base, key, answered) =
            (http.clone(), base.clone(), key.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let mut done: Vec<(String, String, Value)> = Vec::new();
            for n in 0.. {
                let k = format!("k-{i}-{n}");
                let customid = format!("c{}", (i + n) % CUSTOMERS);
                let sent = http
                    .post(format!("{base}/v1/permissions/ai_credits/consume"))
                    .bearer_auth(&key)
                    .header("idempotency-key", &k)
                    .json(&json!({"customid": customid, "units": 2, "metadata": {"key": k}}))
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        assert_eq!(r.status().as_u16(), 200, "consume {k}");
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        done.push((k, customid, v));
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server died: this key has no answer.
                    Err(_) => return (done, (k, customid)),
                }
            }
            unreachable!()
        }));
    }
    while answered.load(Ordering::SeqCst) < 2_000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    let mut answers: Vec<(String, String, Value)> = Vec::new();
    let mut unanswered: Vec<(String, String)> = Vec::new();
    for c in clients {
        let (done, open) = c.await.expect("client");
        answers.extend(done);
        unanswered.push(open);
    }
    server = start_ready(&mut start(), port).await.0;
    // Every answered consume is there once, and its key replays its answer.
    let mut rows_by_key: HashMap<String, Vec<Value>> = HashMap::new();
    for c in 0..CUSTOMERS {
        for r in ledger(&http, &base, &key, &format!("c{c}")).await {
            if let Some(k) = r["metadata"]["key"].as_str() {
                rows_by_key
                    .entry(k.to_string())
                    .or_default()
                    .push(r.clone());
            }
        }
    }
    for (k, customid, answer) in &answers {
        let rows = rows_by_key.get(k).cloned().unwrap_or_default();
        assert_eq!(
            rows.len(),
            1,
            "answered consume {k} in the ledger once: {rows:?}"
        );
        assert_eq!(rows[0]["id"], answer["ledger_id"], "{k}");
        let r = http
            .post(format!("{base}/v1/permissions/ai_credits/consume"))
            .bearer_auth(&key)
            .header("idempotency-key", k)
            .json(&json!({"customid": customid, "units": 2, "metadata": {"key": k}}))
            .send()
            .await
            .expect("replay");
        assert_eq!(r.status().as_u16(), 200, "{k}");
        assert_eq!(
            r.headers()
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true"),
            "{k}"
        );
        let v: Value = r.json().await.expect("json");
        assert_eq!(&v, answer, "{k}");
    }
    // The consumes that got no answer: sent again, each is applied once (now, or by the dead
    // server's last commit, which the key replays).
    for (k, customid) in &unanswered {
        let (status, v) = status_json(
            http.post(format!("{base}/v1/permissions/ai_credits/consume"))
                .bearer_auth(&key)
                .header("idempotency-key", k)
                .json(&json!({"customid": customid, "units": 2, "metadata": {"key": k}})),
        )
        .await;
        assert_eq!(status, 200, "{k}: {v}");
    }
    let mut keys = HashSet::new();
    let mut total = 0i64;
    for c in 0..CUSTOMERS {
        let customid = format!("c{c}");
        let rows = ledger(&http, &base, &key, &customid).await;
        let consumes: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "consume").collect();
        for r in &consumes {
            let k = r["metadata"]["key"].as_str().expect("key").to_string();
            assert!(keys.insert(k.clone()), "{k} applied twice");
        }
        let (status, b) = status_json(
            http.get(format!("{base}/v1/subscribers/{customid}/balances"))
                .bearer_auth(&key),
        )
        .await;
        assert_eq!(status, 200, "{b}");
        let sum: i64 = rows.iter().filter_map(|r| r["units"].as_i64()).sum();
        assert_eq!(b["items"][0]["balance"].as_i64(), Some(sum), "{customid}");
        assert_eq!(sum, GIVEN - 2 * consumes.len() as i64, "{customid}");
        total += consumes.len() as i64;
    }
    assert_eq!(total as usize, answers.len() + unanswered.len());
    drop(server);
}
