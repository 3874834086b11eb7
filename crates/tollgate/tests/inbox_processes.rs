//! The inbox across processes (SPEC §4, issue 5): the `tollgate` binary as `serve` and as a
//! standalone `sandbox`, killed, restarted, doubled and reconciled.
//!
//! - crash: the server is SIGKILLed in the middle of a stream of signed events and restarted;
//!   every event that got a 2xx is applied, none twice;
//! - two servers on one PostgreSQL database receive the same stream: each event applied once;
//! - reconcile: the server is down while the sandbox moves payments; `tollgate stripe sync`
//!   puts every transaction right.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_stripe::signature;

mod common;
use common::{
    BIN, Proc, first_key, free_port, fresh_schema, postgres_url, serve_command, start_ready,
    start_sandbox,
};

const SECRET: &str = "whsec_process_tests_0123456789";
const MASTER_KEY: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Server {
    proc: Proc,
    base: String,
}

fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(
        &path,
        "inbox_poll_ms = 50\ninbox_lease_ms = 2000\ninbox_retry_base_ms = 100\nreconcile_interval_secs = 0\nexpiry_interval_ms = 1000\n",
    )
    .expect("config file");
    path
}

async fn start_server(
    dir: &Path,
    port: u16,
    sandbox_url: &str,
    database_url: Option<&str>,
) -> Server {
    std::fs::create_dir_all(dir).expect("data dir");
    let mut cmd = serve_command(dir, port, database_url);
    cmd.arg("--config")
        .arg(config_file(dir))
        .args(["--sandbox", "false", "--stripe-api-base", sandbox_url])
        .env("TOLLGATE_MASTER_KEY", MASTER_KEY);
    let (proc, base) = start_ready(&mut cmd, port).await;
    Server { proc, base }
}

struct Api {
    http: reqwest::Client,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {v}");
        v
    }
}

/// Creates a connection to the standalone sandbox and `n` transactions on it, each approved
/// at the sandbox (the server does not hear of it: no webhook endpoint is registered).
/// Returns (connection id, [(transaction id, PaymentIntent id)]).
async fn payments(
    api: &Api,
    base: &str,
    sandbox: &str,
    sk: &str,
    n: usize,
) -> (String, Vec<(String, String)>) {
    let conn = api
        .call(
            reqwest::Method::POST,
            format!("{base}/connections"),
            Some(json!({"secret_key": sk, "webhook_secret": SECRET})),
        )
        .await;
    let conn_id = conn["id"].as_str().expect("id").to_string();
    let mut out = Vec::new();
    for i in 0..n {
        let tx = api
            .call(
                reqwest::Method::POST,
                format!("{base}/transactions"),
                Some(json!({"amount": 1000 + i as i64, "currency": "EUR", "intent": "authorize",
                            "payment_service_id": conn_id,
                            "payment_method": {"method": "card", "redirect_url": "https://merchant.example/done"}})),
            )
            .await;
        let pi = tx["additional_identifiers"]["payment_id"]
            .as_str()
            .expect("PaymentIntent")
            .to_string();
        let r = api
            .http
            .post(format!("{sandbox}/v1/payment_intents/{pi}/confirm"))
            .bearer_auth(sk)
            .form(&[
                ("payment_method", "pm_card_visa"),
                ("return_url", "https://merchant.example/r"),
            ])
            .send()
            .await
            .expect("confirm");
        assert!(r.status().is_success(), "confirm {pi}");
        out.push((tx["id"].as_str().expect("id").to_string(), pi));
    }
    (conn_id, out)
}

/// Two events per payment, as Stripe would send them: the intent authorized, its charge.
async fn events_of(
    http: &reqwest::Client,
    sandbox: &str,
    sk: &str,
    payments: &[(String, String)],
) -> Vec<Value> {
    let mut out = Vec::new();
    for (n, (_, pi)) in payments.iter().enumerate() {
        let obj: Value = http
            .get(format!(
                "{sandbox}/v1/payment_intents/{pi}?expand[]=latest_charge"
            ))
            .bearer_auth(sk)
            .send()
            .await
            .expect("pi")
            .json()
            .await
            .expect("json");
        let charge = obj["latest_charge"].clone();
        let mut intent = obj.clone();
        intent["latest_charge"] = charge["id"].clone();
        for (k, (kind, object)) in [
            ("payment_intent.amount_capturable_updated", intent),
            ("charge.succeeded", charge),
        ]
        .into_iter()
        .enumerate()
        {
            out.push(json!({"id": format!("evt_proc_{n}_{k}"), "object": "event",
                "api_version": "2026-10-28.endive", "created": now_s(), "type": kind,
                "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
                "request": {"id": null, "idempotency_key": null}}));
        }
    }
    out
}

/// Sends one signed event; `true` on a 2xx.
async fn send(http: &reqwest::Client, base: &str, conn_id: &str, event: &Value) -> bool {
    let body = serde_json::to_vec_pretty(event).expect("json");
    let header = signature::header(&[SECRET], now_s(), &body);
    http.post(format!("{base}/webhooks/stripe/{conn_id}"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Waits until no inbox row waits; returns every row (all pages).
async fn settled_inbox(api: &Api, base: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let waiting = api
            .call(
                reqwest::Method::GET,
                format!("{base}/webhook-events?status=received&status=failed&limit=1"),
                None,
            )
            .await;
        if waiting["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the inbox did not settle: {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    let mut url = format!("{base}/webhook-events?limit=100");
    loop {
        let page = api.call(reqwest::Method::GET, url.clone(), None).await;
        rows.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{base}/webhook-events?limit=100&cursor={c}"),
            None => return rows,
        }
    }
}

/// Every payment is authorized, and reached that status exactly once.
async fn assert_applied_once(api: &Api, base: &str, payments: &[(String, String)]) {
    for (id, _) in payments {
        let t = api
            .call(
                reqwest::Method::GET,
                format!("{base}/transactions/{id}"),
                None,
            )
            .await;
        assert_eq!(t["status"], "authorization_succeeded", "{t}");
        let events = api
            .call(
                reqwest::Method::GET,
                format!("{base}/transactions/{id}/events"),
                None,
            )
            .await;
        let items = events["items"].as_array().expect("items");
        let to_authorized = items
            .iter()
            .filter(|e| {
                e["name"] == "transaction.status_changed"
                    && e["context"]["to"] == "authorization_succeeded"
            })
            .count();
        assert_eq!(to_authorized, 1, "applied once: {events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_acknowledged_event_and_applies_none_twice() {
    tollgate_stripe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_sb, sandbox, sk) = start_sandbox();
    let port = free_port();
    let mut server = start_server(&data, port, &sandbox, None).await;
    let api = Api {
        http: reqwest::Client::new(),
        key: first_key(&data),
    };
    let (conn_id, pays) = payments(&api, &server.base, &sandbox, &sk, 30).await;
    let events = events_of(&api.http, &sandbox, &sk, &pays).await;

    // The stream, 4 at a time; the server is killed once a third is acknowledged.
    let mut acked = std::collections::HashSet::new();
    let mut killed = false;
    for chunk in events.chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|e| {
                let (http, base, conn_id, e) = (
                    api.http.clone(),
                    server.base.clone(),
                    conn_id.clone(),
                    e.clone(),
                );
                tokio::spawn(async move { send(&http, &base, &conn_id, &e).await })
            })
            .collect();
        for (e, t) in chunk.iter().zip(tasks) {
            if t.await.expect("task") {
                acked.insert(e["id"].as_str().expect("id").to_string());
            }
        }
        if !killed && acked.len() >= events.len() / 3 {
            // SIGKILL: no shutdown, no flush.
            server.proc.kill();
            killed = true;
        }
    }
    assert!(killed);
    assert!(
        acked.len() < events.len(),
        "some events were refused while down"
    );
    let acked_before_restart = acked.clone();

    // Restarted on the same data; Stripe retries what was not acknowledged (and, at least
    // once, some of what was).
    server = start_server(&data, port, &sandbox, None).await;
    for e in &events {
        let first_time = !acked.contains(e["id"].as_str().expect("id"));
        if first_time || e["id"].as_str().is_some_and(|id| id.ends_with("_0")) {
            assert!(
                send(&api.http, &server.base, &conn_id, e).await,
                "resend {}",
                e["id"]
            );
            acked.insert(e["id"].as_str().expect("id").to_string());
        }
    }
    let rows = settled_inbox(&api, &server.base).await;
    assert_eq!(rows.len(), events.len(), "one inbox row per event");
    for id in &acked_before_restart {
        let row = rows
            .iter()
            .find(|r| r["stripe_event_id"] == id.as_str())
            .unwrap_or_else(|| panic!("acknowledged {id} was lost"));
        assert_eq!(row["status"], "applied", "{row}");
    }
    assert_applied_once(&api, &server.base, &pays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_apply_each_event_once() {
    let Some(pg) = postgres_url() else {
        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
        return;
    };
    tollgate_stripe::install_crypto_provider();
    let url = fresh_schema(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sb, sandbox, sk) = start_sandbox();
    let a = start_server(&dir.path().join("a"), free_port(), &sandbox, Some(&url)).await;
    let b = start_server(&dir.path().join("b"), free_port(), &sandbox, Some(&url)).await;
    let api = Api {
        http: reqwest::Client::new(),
        key: first_key(&dir.path().join("a")),
    };
    let (conn_id, pays) = payments(&api, &a.base, &sandbox, &sk, 40).await;
    let events = events_of(&api.http, &sandbox, &sk, &pays).await;
    // Every event to both servers at once (two deliveries of one event racing).
    for chunk in events.chunks(8) {
        let mut tasks = Vec::new();
        for e in chunk {
            for base in [&a.base, &b.base] {
                let (http, base, conn_id, e) =
                    (api.http.clone(), base.clone(), conn_id.clone(), e.clone());
                tasks.push(tokio::spawn(async move {
                    send(&http, &base, &conn_id, &e).await
                }));
            }
        }
        for t in tasks {
            assert!(t.await.expect("task"), "a delivery was refused");
        }
    }
    let rows = settled_inbox(&api, &b.base).await;
    assert_eq!(rows.len(), events.len(), "one inbox row per event");
    for r in &rows {
        assert_eq!(r["status"], "applied", "{r}");
        assert_eq!(r["attempts"], 1, "claimed by one worker once: {r}");
    }
    assert_applied_once(&api, &a.base, &pays).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_sync_repairs_what_happened_while_the_server_was_down() {
    tollgate_stripe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_sb, sandbox, sk) = start_sandbox();
    let port = free_port();
    let server = start_server(&data, port, &sandbox, None).await;
    let api = Api {
        http: reqwest::Client::new(),
        key: first_key(&data),
    };
    let conn = api
        .call(
            reqwest::Method::POST,
            format!("{}/connections", server.base),
            Some(json!({"secret_key": sk, "webhook_secret": SECRET})),
        )
        .await;
    let conn_id = conn["id"].as_str().expect("id").to_string();
    let mut txs = Vec::new();
    for (i, intent) in ["authorize", "capture", "authorize", "authorize"]
        .iter()
        .enumerate()
    {
        let tx = api
            .call(
                reqwest::Method::POST,
                format!("{}/transactions", server.base),
                Some(json!({"amount": 2000 + i as i64, "currency": "EUR", "intent": intent,
                            "payment_service_id": conn_id,
                            "payment_method": {"method": "card", "redirect_url": "https://merchant.example/done"}})),
            )
            .await;
        txs.push((
            tx["id"].as_str().expect("id").to_string(),
            tx["additional_identifiers"]["payment_id"]
                .as_str()
                .expect("pi")
                .to_string(),
        ));
    }
    drop(server);

    // While Tollgate is down: authorized, captured, authorized then canceled, declined.
    let stripe = |path: String, form: Vec<(&'static str, &'static str)>| {
        let http = api.http.clone();
        let (sandbox, sk) = (sandbox.clone(), sk.clone());
        async move {
            let r = http
                .post(format!("{sandbox}{path}"))
                .bearer_auth(&sk)
                .form(&form)
                .send()
                .await
                .expect("sandbox");
            r.status().as_u16()
        }
    };
    let confirm = |pi: &str, pm: &'static str| {
        stripe(
            format!("/v1/payment_intents/{pi}/confirm"),
            vec![
                ("payment_method", pm),
                ("return_url", "https://merchant.example/r"),
            ],
        )
    };
    assert_eq!(confirm(&txs[0].1, "pm_card_visa").await, 200);
    assert_eq!(confirm(&txs[1].1, "pm_card_visa").await, 200);
    assert_eq!(confirm(&txs[2].1, "pm_card_visa").await, 200);
    assert_eq!(
        stripe(format!("/v1/payment_intents/{}/cancel", txs[2].1), vec![]).await,
        200
    );
    assert_eq!(confirm(&txs[3].1, "pm_card_chargeDeclined").await, 402);

    // Back up, and reconciled from the command line (the server runs meanwhile).
    let server = start_server(&data, port, &sandbox, None).await;
    let out = Command::new(BIN)
        .args(["stripe", "sync", "--connection", &conn_id])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--stripe-api-base",
            &sandbox,
        ])
        .env("TOLLGATE_MASTER_KEY", MASTER_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("tollgate stripe sync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(report["events"]["status"], "read", "{report}");
    let want = [
        "authorization_succeeded",
        "capture_succeeded",
        "authorization_voided",
        "buyer_approval_pending",
    ];
    for ((id, _), want) in txs.iter().zip(want) {
        let t = api
            .call(
                reqwest::Method::GET,
                format!("{}/transactions/{id}", server.base),
                None,
            )
            .await;
        assert_eq!(t["status"], want, "{t}");
    }
}
