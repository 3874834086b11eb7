//! Live Stripe keys and the built-in sandbox, across a restart: `tollgate serve` mounts the
//! sandbox when no live connection exists; a live connection added through the API stops it at
//! once and becomes the default payments connection, and after a restart on the same database
//! the sandbox stays off and payments go through the live connection (no 502 about a sandbox
//! that is not running).
//!
//! Real Stripe is out of reach here: `--stripe-api-base` points at a stand-in that refuses
//! every request and records the key each came with.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

mod common;
use common::{
    Proc, first_key, free_port, fresh_schema, postgres_url, serve_command, start_ready, status_json,
};

const MASTER_KEY: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const LIVE_KEY: &str = "sk_live_restartedlive1234567890";
const REFUSAL: &str = "This stand-in for Stripe creates nothing.";

/// The stand-in for live Stripe: its base URL and the bearer keys of the requests it refused.
async fn stripe_stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keys = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let keys = keys.clone();
        async move {
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_string();
            keys.lock().expect("keys").push(key);
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"type": "invalid_request_error", "message": REFUSAL}})),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// `tollgate serve` on `data` with the default sandbox choice (no `--sandbox` flag).
async fn start_server(data: &Path, stripe: &str, database_url: Option<&str>) -> (Proc, String) {
    std::fs::create_dir_all(data).expect("data dir");
    let port = free_port();
    let mut cmd = serve_command(data, port, database_url);
    cmd.args(["--stripe-api-base", stripe])
        .env("TOLLGATE_MASTER_KEY", MASTER_KEY);
    start_ready(&mut cmd, port).await
}

/// (status, body) of one request with the operator key.
async fn call(
    http: &reqwest::Client,
    key: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = http.request(method, &url).bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    status_json(rb).await
}

/// The connections of the default merchant account: (sandbox one, the others).
async fn connections(http: &reqwest::Client, key: &str, base: &str) -> (Value, Vec<Value>) {
    let (status, list) = call(
        http,
        key,
        reqwest::Method::GET,
        format!("{base}/connections"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().expect("items").clone();
    let (sandbox, others): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|c| c["sandbox"] == true);
    assert_eq!(sandbox.len(), 1, "one sandbox connection: {list}");
    (sandbox[0].clone(), others)
}

async fn sandbox_status(http: &reqwest::Client, base: &str) -> u16 {
    http.get(format!("{base}/sandbox/stripe/v1/customers"))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn live_keys_outlast_a_restart(database_url: Option<String>) {
    tollgate_stripe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (stripe, seen) = stripe_stand_in().await;
    let http = reqwest::Client::new();

    let (server, base) = start_server(&data, &stripe, database_url.as_deref()).await;
    let key = first_key(&data);
    // No live keys: the sandbox is mounted (it asks for a key) and is the default.
    assert_eq!(sandbox_status(&http, &base).await, 401);
    let (sandbox, others) = connections(&http, &key, &base).await;
    assert_eq!(sandbox["default"], true, "{sandbox}");
    assert!(others.is_empty());

    let (status, live) = call(
        &http,
        &key,
        reqwest::Method::POST,
        format!("{base}/connections"),
        Some(json!({"secret_key": LIVE_KEY})),
    )
    .await;
    assert_eq!(status, 201, "{live}");
    assert_eq!(live["default"], true, "{live}");
    let live_id = live["id"].as_str().expect("id").to_string();
    // Stopped at once.
    assert_eq!(sandbox_status(&http, &base).await, 404);
    drop(server);

    let (_server, base) = start_server(&data, &stripe, database_url.as_deref()).await;
    assert_eq!(sandbox_status(&http, &base).await, 404, "not mounted again");
    let (sandbox, others) = connections(&http, &key, &base).await;
    assert_eq!(sandbox["default"], false, "{sandbox}");
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["id"], live_id.as_str());
    assert_eq!(others[0]["default"], true, "{}", others[0]);

    // A payment goes to (the stand-in for) live Stripe with the live key.
    let (status, answer) = call(
        &http,
        &key,
        reqwest::Method::POST,
        format!("{base}/transactions"),
        Some(
            json!({"amount": 1299, "currency": "USD", "intent": "authorize",
                    "payment_method": {"method": "stripe",
                                       "redirect_url": "https://example.com/callback"}}),
        ),
    )
    .await;
    // Refused by the stand-in (whatever status that maps to), not by a missing sandbox.
    assert_eq!(answer["status"], status, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains(REFUSAL), "{answer}");
    assert!(!message.contains("sandbox"), "{answer}");
    assert!(
        seen.lock().expect("keys").iter().any(|k| k == LIVE_KEY),
        "the stand-in heard the live key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keys_stop_the_sandbox_and_stay_the_default_after_a_restart_on_sqlite() {
    live_keys_outlast_a_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keys_stop_the_sandbox_and_stay_the_default_after_a_restart_on_postgres() {
    let Some(pg) = postgres_url() else {
        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
        return;
    };
    live_keys_outlast_a_restart(Some(fresh_schema(&pg).await)).await;
}
