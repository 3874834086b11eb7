//! Outbound webhooks (SPEC §7, issue 8): subscriptions (CRUD, validation, rotation), the
//! transactional outbox, delivery with backoff while the receiver is down, the delivery log,
//! resend, and several workers sharing one PostgreSQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tollgate_server::Config;
use tollgate_server::clock::SystemClock;

use crate::common::{Db, TestServer, assert_bad_field, assert_error, now_ms, wait_for};

crate::both_dbs!(
    subscriptions_crud,
    subscription_validation,
    events_arrive_after_the_receiver_comes_back,
    resend_and_delivery_filters,
    rolled_back_changes_deliver_nothing,
    deleted_and_inactive_subscriptions,
);

// ---- a receiver ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Got {
    pub id: String,
    pub signature: String,
    pub timestamp: String,
    pub body: Value,
    pub answered: u16,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Got>>>,
    /// Answer 503 while set.
    pub down: Arc<AtomicBool>,
    /// Answer 500 to the first request of each webhook-id.
    pub fail_first: Arc<AtomicBool>,
    /// Requests in flight per webhook-id, and the most ever seen at once.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    pub max_in_flight_per_id: Arc<AtomicUsize>,
    pub delay_ms: Arc<AtomicUsize>,
    pub addr: Option<SocketAddr>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        r.addr = Some(listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr.expect("started"))
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn ok_ids(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|g| g.answered == 200)
            .map(|g| g.id)
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = h("webhook-id");
    {
        let mut m = r.in_flight.lock().unwrap();
        let n = m.entry(id.clone()).or_default();
        *n += 1;
        r.max_in_flight_per_id.fetch_max(*n, Ordering::SeqCst);
    }
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let seen_before = r.got.lock().unwrap().iter().any(|g| g.id == id);
    let status =
        if r.down.load(Ordering::SeqCst) || (r.fail_first.load(Ordering::SeqCst) && !seen_before) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
    r.got.lock().unwrap().push(Got {
        id: id.clone(),
        signature: h("webhook-signature"),
        timestamp: h("webhook-timestamp"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        answered: status.as_u16(),
    });
    if let Some(n) = r.in_flight.lock().unwrap().get_mut(&id) {
        *n -= 1;
    }
    status
}

/// Fast retries for tests; private targets (the loopback receiver) allowed.
pub fn fast(c: &mut Config) {
    c.allow_private_webhook_targets = true;
    c.webhook_retry_base_ms = 300;
    c.webhook_retry_max_ms = 5_000;
    c.webhook_max_age_ms = 120_000;
    c.webhook_timeout_ms = 2_000;
    c.webhook_poll_interval_ms = 20;
}

async fn subscribe(s: &TestServer, url: &str, events: Value) -> Value {
    s.post(
        "/webhook-subscriptions",
        json!({"url": url, "events": events}),
    )
    .await
    .expect(201)
}

async fn deliveries(s: &TestServer, query: &str) -> Vec<Value> {
    let page = s
        .get(&format!("/webhook-deliveries?limit=100{query}"))
        .await
        .expect(200);
    page["items"].as_array().expect("items").clone()
}

// ---- subscriptions ------------------------------------------------------------------------------

async fn subscriptions_crud(db: Db) {
    let s = TestServer::start(db).await;
    let created = subscribe(
        &s,
        "https://shop.example/hooks",
        json!(["transaction.*", "refund.succeeded"]),
    )
    .await;
    assert_eq!(created["type"], "webhook-subscription");
    assert_eq!(created["url"], "https://shop.example/hooks");
    assert_eq!(
        created["events"],
        json!(["transaction.*", "refund.succeeded"])
    );
    assert_eq!(created["active"], true);
    assert_eq!(created["merchant_account_id"], "default");
    let secret = created["secret"].as_str().expect("secret shown once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .expect("base64");
    assert_eq!(key.len(), 32);
    assert!(
        created["secret_hint"]
            .as_str()
            .unwrap()
            .ends_with(&secret[secret.len() - 4..])
    );
    let id = created["id"].as_str().unwrap().to_string();

    // Never shown again, and not stored in clear.
    let got = s
        .get(&format!("/webhook-subscriptions/{id}"))
        .await
        .expect(200);
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(&secret[6..]));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_enc FROM webhook_subscriptions WHERE id = $1")
            .bind(&id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&secret[6..]));

    // List with paging.
    for i in 0..3 {
        subscribe(&s, &format!("https://shop.example/h{i}"), json!(["*"])).await;
    }
    let p1 = s.get("/webhook-subscriptions?limit=2").await.expect(200);
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let next = p1["next_cursor"].as_str().expect("next_cursor");
    let p2 = s
        .get(&format!("/webhook-subscriptions?limit=2&cursor={next}"))
        .await
        .expect(200);
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert!(p2["next_cursor"].is_null());
    assert_eq!(p2["items"][1]["id"], id, "oldest last");

    // PATCH changes what is given; PUT replaces.
    let patched = s
        .send(
            s.request(
                reqwest::Method::PATCH,
                &format!("/webhook-subscriptions/{id}"),
            )
            .json(&json!({"active": false, "description": "orders"})),
        )
        .await
        .expect(200);
    assert_eq!(patched["active"], false);
    assert_eq!(patched["description"], "orders");
    assert_eq!(patched["url"], "https://shop.example/hooks");
    let put = s
        .send(
            s.request(
                reqwest::Method::PUT,
                &format!("/webhook-subscriptions/{id}"),
            )
            .json(&json!({"url": "https://shop.example/v2", "events": ["refund.*"]})),
        )
        .await
        .expect(200);
    assert_eq!(put["url"], "https://shop.example/v2");
    assert_eq!(put["events"], json!(["refund.*"]));
    assert_eq!(put["active"], true);
    assert!(put["description"].is_null());
    let r = s
        .send(
            s.request(
                reqwest::Method::PUT,
                &format!("/webhook-subscriptions/{id}"),
            )
            .json(&json!({"url": "https://shop.example/v2"})),
        )
        .await;
    assert_bad_field(&r, "body", "/events");

    // Rotation: a new secret shown once, the old one valid for the grace period.
    let rotated = s
        .post_empty(&format!("/webhook-subscriptions/{id}/rotate-secret"))
        .await
        .expect(200);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let until = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("grace end");
    let until = tollgate_server::clock::parse_rfc3339(until).unwrap();
    let grace = until - now_ms();
    assert!(
        (23 * 3600 * 1000..=24 * 3600 * 1000 + 5000).contains(&grace),
        "default grace 24 h: {grace}"
    );

    // Another merchant account sees nothing of it.
    let other = s.merchant_account("shop-b").await;
    let r = s
        .send(
            s.http
                .get(s.url(&format!("/webhook-subscriptions/{id}")))
                .bearer_auth(&other),
        )
        .await;
    assert_error(&r, 404, "not_found");
    let r = s
        .send(
            s.http
                .get(s.url("/webhook-subscriptions"))
                .bearer_auth(&other),
        )
        .await;
    assert_eq!(r.expect(200)["items"], json!([]));

    // A keyed create replayed: same subscription, the secret not shown (nor kept) again.
    let body = json!({"url": "https://shop.example/idem"});
    let first = s
        .post_idem("/webhook-subscriptions", Some(&body), "sub-1")
        .await
        .expect(201);
    assert!(first["secret"].as_str().is_some());
    let replay = s
        .post_idem("/webhook-subscriptions", Some(&body), "sub-1")
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let replay = replay.expect(201);
    assert_eq!(replay["id"], first["id"]);
    assert!(replay["secret"].is_null(), "{replay}");
    // Stored answers are sealed (the replay above shows the kept copy has no secret); none is
    // kept in clear.
    let kept: Vec<Option<String>> = sqlx::query_scalar("SELECT response FROM idempotency_keys")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    let first_secret = first["secret"].as_str().unwrap();
    assert!(
        kept.iter()
            .flatten()
            .all(|k| !k.contains(&first_secret[6..]))
    );

    // Delete: gone.
    let r = s
        .send(s.request(
            reqwest::Method::DELETE,
            &format!("/webhook-subscriptions/{id}"),
        ))
        .await;
    assert_eq!(r.status, 204);
    let r = s.get(&format!("/webhook-subscriptions/{id}")).await;
    assert_error(&r, 404, "not_found");
}

async fn subscription_validation(db: Db) {
    let s = TestServer::start(db).await;
    let cases = [
        (json!({"events": ["*"]}), "/url"),
        (json!({"url": 5}), "/url"),
        (json!({"url": "not a url"}), "/url"),
        (json!({"url": "http://shop.example/hooks"}), "/url"),
        (json!({"url": "ftp://shop.example/hooks"}), "/url"),
        (json!({"url": "https://127.0.0.1/hooks"}), "/url"),
        (json!({"url": "https://10.1.2.3/hooks"}), "/url"),
        (
            json!({"url": "https://169.254.169.254/latest/meta-data"}),
            "/url",
        ),
        (json!({"url": "https://[::1]/hooks"}), "/url"),
        (json!({"url": "https://[::ffff:10.0.0.1]/hooks"}), "/url"),
        (json!({"url": "https://localhost/hooks"}), "/url"),
        (
            json!({"url": "https://shop.example/h", "events": []}),
            "/events",
        ),
        (
            json!({"url": "https://shop.example/h", "events": "*"}),
            "/events",
        ),
        (
            json!({"url": "https://shop.example/h", "events": ["transaction.exploded"]}),
            "/events/0",
        ),
        (
            json!({"url": "https://shop.example/h", "events": ["*", "nope.*"]}),
            "/events/1",
        ),
        (
            json!({"url": "https://shop.example/h", "events": [3]}),
            "/events/0",
        ),
        (
            json!({"url": "https://shop.example/h", "active": "yes"}),
            "/active",
        ),
        (
            json!({"url": "https://shop.example/h", "secret": "whsec_x"}),
            "/secret",
        ),
    ];
    for (body, pointer) in cases {
        let r = s.post("/webhook-subscriptions", body.clone()).await;
        let b = assert_bad_field(&r, "body", pointer);
        assert!(!b.to_string().contains("panicked"), "{body}: {b}");
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_subscriptions")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing stored by a refused create");
    // Unknown ids, list filters.
    assert_error(
        &s.get("/webhook-subscriptions/nope").await,
        404,
        "not_found",
    );
    assert_error(&s.get("/webhook-deliveries/nope").await, 404, "not_found");
    assert_error(
        &s.post_empty("/webhook-deliveries/nope/resend").await,
        404,
        "not_found",
    );
    assert_bad_field(
        &s.get("/webhook-deliveries?status=lost").await,
        "query",
        "/status",
    );
    assert_bad_field(
        &s.get("/webhook-deliveries?colour=red").await,
        "query",
        "/colour",
    );
    assert_bad_field(
        &s.get("/webhook-deliveries?limit=0").await,
        "query",
        "/limit",
    );
    assert_bad_field(
        &s.get("/webhook-subscriptions?cursor=zzz").await,
        "query",
        "/cursor",
    );
    // With private targets allowed, http:// and loopback are accepted.
    let s2 = TestServer::start_with(db, fast).await;
    subscribe(&s2, "http://127.0.0.1:9/hook", json!(["*"])).await;
}

// ---- delivery -----------------------------------------------------------------------------------

/// The receiver is down while events are made; they are retried with a growing delay, and all
/// arrive once it is back. The schedule is in the delivery log.
async fn events_arrive_after_the_receiver_comes_back(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let rx = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    subscribe(&s, &rx.url(), json!(["transaction.*", "refund.*"])).await;
    // authorized, captured, then a refund: processing/succeeded.
    let tx = s.captured(1200).await;
    let tid = tx["id"].as_str().unwrap().to_string();
    s.post(
        &format!("/transactions/{tid}/refunds"),
        json!({"amount": 200}),
    )
    .await
    .expect(201);
    let expected: Vec<String> = deliveries(&s, "")
        .await
        .iter()
        .map(|d| d["event_name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        expected.contains(&"transaction.authorized".to_string()),
        "{expected:?}"
    );
    assert!(
        expected.contains(&"transaction.captured".to_string()),
        "{expected:?}"
    );
    assert!(
        expected.iter().any(|n| n.starts_with("refund.")),
        "{expected:?}"
    );
    // Down for a while: at least 4 attempts of each.
    wait_for(
        Duration::from_secs(30),
        "4 failed attempts each",
        || async {
            let ds = deliveries(&s, "").await;
            ds.iter()
                .all(|d| d["attempts"].as_i64().unwrap_or(0) >= 4 && d["status"] == "failed")
                .then_some(())
        },
    )
    .await;
    rx.down.store(false, Ordering::SeqCst);
    let ds = wait_for(
        Duration::from_secs(30),
        "every delivery delivered",
        || async {
            let ds = deliveries(&s, "").await;
            ds.iter().all(|d| d["status"] == "delivered").then_some(ds)
        },
    )
    .await;
    assert_eq!(ds.len(), expected.len());
    let ok = rx.ok_ids();
    for d in &ds {
        let eid = d["event_id"].as_str().unwrap();
        assert!(ok.iter().any(|i| i == eid), "{eid} never arrived");
        // Every attempt carried the same webhook-id.
        assert!(rx.all().iter().filter(|g| g.id == eid).count() >= 5);
        // The log: failed attempts at a growing delay, then the 2xx.
        let full = s
            .get(&format!(
                "/webhook-deliveries/{}",
                d["id"].as_str().unwrap()
            ))
            .await
            .expect(200);
        let log = full["attempt_log"].as_array().unwrap();
        assert_eq!(log.len() as i64, full["attempts"].as_i64().unwrap());
        assert!(log.len() >= 5, "{full}");
        let last = log.last().unwrap();
        assert_eq!(last["status_code"], 200, "{full}");
        assert!(last["next_attempt_at"].is_null());
        let t = |v: &Value| tollgate_server::clock::parse_rfc3339(v.as_str().unwrap()).unwrap();
        let mut delays = Vec::new();
        for (i, a) in log[..log.len() - 1].iter().enumerate() {
            assert_eq!(a["attempt"], i as i64 + 1);
            assert_eq!(a["status_code"], 503, "{a}");
            assert!(a["error"].as_str().unwrap().contains("503"));
            let planned = t(&a["next_attempt_at"]) - t(&a["attempted_at"]);
            delays.push(planned);
            // The next attempt did not come before its time.
            assert!(t(&log[i + 1]["attempted_at"]) >= t(&a["next_attempt_at"]) - 5);
        }
        // Exponential: each planned delay longer than the one before (doubling, ±25 % jitter).
        for w in delays.windows(2) {
            assert!(w[1] > w[0], "delays do not grow: {delays:?}");
        }
        assert!(delays[0] >= 200 && delays[0] <= 500, "{delays:?}");
        // The event: the resource as the API shows it.
        let event = &full["event"];
        assert_eq!(event["type"], "event");
        assert_eq!(event["id"], d["event_id"]);
        assert_eq!(event["merchant_account_id"], "default");
        let target_type = if d["event_name"].as_str().unwrap().starts_with("refund.") {
            "refund"
        } else {
            "transaction"
        };
        assert_eq!(event["target"]["type"], target_type);
    }
    let captured = rx
        .all()
        .into_iter()
        .find(|g| g.body["name"] == "transaction.captured")
        .unwrap();
    assert_eq!(captured.body["target"]["id"], tid);
    assert!(
        captured.signature.starts_with("v1,"),
        "{}",
        captured.signature
    );
    let ts: i64 = captured.timestamp.parse().expect("unix seconds");
    assert!((ts - now_ms() / 1000).abs() < 120);
    assert_eq!(captured.body["target"]["status"], "capture_succeeded");
    let api = s.get_tx(&tid).await;
    for k in [
        "amount",
        "currency",
        "captured_amount",
        "intent",
        "payment_service",
    ] {
        assert_eq!(captured.body["target"][k], api[k], "{k}");
    }
}

async fn resend_and_delivery_filters(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let rx = Receiver::start().await;
    let sub_a = subscribe(&s, &rx.url(), json!(["transaction.authorized"])).await;
    let sub_b = subscribe(&s, &rx.url(), json!(["transaction.*"])).await;
    let tx = s.authorized(800).await;
    let tid = tx["id"].as_str().unwrap().to_string();
    s.post_empty(&format!("/transactions/{tid}/void"))
        .await
        .expect(200);
    // sub_a: authorized; sub_b: authorized and voided (one event id per event, shared).
    let ds = wait_for(
        Duration::from_secs(20),
        "3 deliveries delivered",
        || async {
            let ds = deliveries(&s, "&status=delivered").await;
            (ds.len() == 3).then_some(ds)
        },
    )
    .await;
    let auth: Vec<&Value> = ds
        .iter()
        .filter(|d| d["event_name"] == "transaction.authorized")
        .collect();
    assert_eq!(auth.len(), 2);
    assert_eq!(auth[0]["event_id"], auth[1]["event_id"]);
    let a_id = sub_a["id"].as_str().unwrap();
    let only_a = deliveries(&s, &format!("&subscription_id={a_id}")).await;
    assert_eq!(only_a.len(), 1);
    let voided = deliveries(&s, "&event_name=transaction.voided").await;
    assert_eq!(voided.len(), 1);
    assert_eq!(voided[0]["subscription_id"], sub_b["id"]);
    assert!(deliveries(&s, "&status=dead").await.is_empty());

    // Resend: the same event id again, a new attempt in the log.
    let did = voided[0]["id"].as_str().unwrap();
    let eid = voided[0]["event_id"].as_str().unwrap().to_string();
    let before = rx.all().iter().filter(|g| g.id == eid).count();
    let r = s
        .post_empty(&format!("/webhook-deliveries/{did}/resend"))
        .await;
    let b = r.expect(202);
    assert_eq!(b["status"], "pending");
    wait_for(Duration::from_secs(10), "the resend to arrive", || async {
        (rx.all().iter().filter(|g| g.id == eid).count() > before).then_some(())
    })
    .await;
    let full = wait_for(
        Duration::from_secs(10),
        "the resend to be recorded",
        || async {
            let d = s
                .get(&format!("/webhook-deliveries/{did}"))
                .await
                .expect(200);
            (d["status"] == "delivered" && d["attempts"] == 2).then_some(d)
        },
    )
    .await;
    assert_eq!(full["attempt_log"].as_array().unwrap().len(), 2);
    let bodies: Vec<Value> = rx
        .all()
        .into_iter()
        .filter(|g| g.id == eid)
        .map(|g| g.body)
        .collect();
    assert_eq!(
        bodies[0],
        bodies[bodies.len() - 1],
        "the same event, byte for byte"
    );

    // Paging the log.
    let p1 = s.get("/webhook-deliveries?limit=2").await.expect(200);
    let next = p1["next_cursor"].as_str().unwrap();
    let p2 = s
        .get(&format!("/webhook-deliveries?limit=2&cursor={next}"))
        .await
        .expect(200);
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    // Another merchant account sees none of it.
    let other = s.merchant_account("shop-c").await;
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/webhook-deliveries/{did}/resend")))
                .bearer_auth(&other),
        )
        .await;
    assert_error(&r, 404, "not_found");
}

/// The outbox row is part of the change's database transaction: a change rolled back leaves no
/// event; a committed one is delivered.
async fn rolled_back_changes_deliver_nothing(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let rx = Receiver::start().await;
    subscribe(&s, &rx.url(), json!(["*"])).await;
    let target = json!({"type": "transaction", "id": "t-rolled-back"});
    let mut tx = s.pool.begin().await.unwrap();
    let rolled = tollgate_store::outbox::enqueue(
        &mut tx,
        "default",
        "transaction.captured",
        &target,
        now_ms(),
    )
    .await
    .unwrap()
    .expect("an event id");
    tx.rollback().await.unwrap();
    let mut tx = s.pool.begin().await.unwrap();
    let kept = tollgate_store::outbox::enqueue(
        &mut tx,
        "default",
        "customer.linked",
        &json!({"type": "customer", "customid": "user-7"}),
        now_ms(),
    )
    .await
    .unwrap()
    .expect("an event id");
    tx.commit().await.unwrap();
    wait_for(Duration::from_secs(10), "the committed event", || async {
        rx.ok_ids().contains(&kept).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rx.all().iter().any(|g| g.id == rolled));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = $1")
        .bind(&rolled)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A refused request (nothing changes) makes no event either.
    let before = deliveries(&s, "").await.len();
    let r = s
        .post(
            "/transactions",
            json!({"amount": -1, "currency": "USD", "payment_method": {"method": "stripe", "redirect_url": "https://x.example"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(deliveries(&s, "").await.len(), before);
}

async fn deleted_and_inactive_subscriptions(db: Db) {
    let s = TestServer::start_with(db, fast).await;
    let rx = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let sub = subscribe(&s, &rx.url(), json!(["transaction.*"])).await;
    let id = sub["id"].as_str().unwrap().to_string();
    s.authorized(500).await;
    wait_for(Duration::from_secs(10), "a failed attempt", || async {
        let ds = deliveries(&s, "&status=failed").await;
        (!ds.is_empty()).then_some(())
    })
    .await;
    // Inactive: no new events, waiting deliveries held.
    s.send(
        s.request(
            reqwest::Method::PATCH,
            &format!("/webhook-subscriptions/{id}"),
        )
        .json(&json!({"active": false})),
    )
    .await
    .expect(200);
    s.authorized(600).await;
    assert_eq!(
        deliveries(&s, "").await.len(),
        1,
        "no event for an inactive subscription"
    );
    rx.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.ok_ids().is_empty(), "held while inactive");
    // Active again: delivered.
    s.send(
        s.request(
            reqwest::Method::PATCH,
            &format!("/webhook-subscriptions/{id}"),
        )
        .json(&json!({"active": true})),
    )
    .await
    .expect(200);
    wait_for(
        Duration::from_secs(15),
        "delivery after reactivation",
        || async { (rx.ok_ids().len() == 1).then_some(()) },
    )
    .await;
    // Deleted: waiting deliveries end dead.
    rx.down.store(true, Ordering::SeqCst);
    s.captured(700).await;
    wait_for(Duration::from_secs(10), "failed attempts", || async {
        (!deliveries(&s, "&status=failed").await.is_empty()).then_some(())
    })
    .await;
    s.send(s.request(
        reqwest::Method::DELETE,
        &format!("/webhook-subscriptions/{id}"),
    ))
    .await;
    wait_for(Duration::from_secs(15), "dead deliveries", || async {
        let ds = deliveries(&s, "").await;
        ds.iter()
            .all(|d| d["status"] == "delivered" || d["status"] == "dead")
            .then_some(())
    })
    .await;
    let dead = deliveries(&s, "&status=dead").await;
    assert!(!dead.is_empty());
    assert!(dead[0]["last_error"].as_str().unwrap().contains("deleted"));
}

// ---- several workers on one PostgreSQL ----------------------------------------------------------

/// Three delivery workers (three servers' worth: each its own pool and claims) on one
/// PostgreSQL database: every delivery is attempted by one worker at a time, and each attempt
/// is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_sharing_postgres_never_attempt_a_delivery_twice_at_once() {
    if crate::common::skip_postgres() {
        return;
    }
    let s = TestServer::start_with(Db::Postgres, |c| {
        fast(c);
        c.webhook_worker = false;
    })
    .await;
    let rx = Receiver::start().await;
    rx.fail_first.store(true, Ordering::SeqCst);
    rx.delay_ms.store(5, Ordering::SeqCst);
    subscribe(&s, &rx.url(), json!(["*"])).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut cfg = s.config.clone();
        fast(&mut cfg);
        cfg.webhook_worker = true;
        cfg.webhook_concurrency = 16;
        cfg.webhook_batch_size = 8;
        let ctx = tollgate_server::context(cfg, Arc::new(SystemClock), None)
            .await
            .expect("context");
        workers.push(tollgate_server::outbound::spawn(ctx).expect("worker"));
    }
    const N: usize = 300;
    let mut ids = Vec::new();
    for chunk in 0..(N / 50) {
        let mut tx = s.pool.begin().await.unwrap();
        for i in 0..50 {
            let id = tollgate_store::outbox::enqueue(
                &mut tx,
                "default",
                "customer.linked",
                &json!({"type": "customer", "customid": format!("u-{chunk}-{i}")}),
                now_ms(),
            )
            .await
            .unwrap()
            .unwrap();
            ids.push(id);
        }
        tx.commit().await.unwrap();
    }
    wait_for(Duration::from_secs(60), "every event delivered", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
        (n as usize == N).then_some(())
    })
    .await;
    for w in workers {
        w.abort();
    }
    // Each event: one failed attempt (fail_first), then one delivered: exactly two requests,
    // never two at once, and exactly two attempts in the log.
    assert_eq!(rx.max_in_flight_per_id.load(Ordering::SeqCst), 1);
    let got = rx.all();
    for id in &ids {
        let n = got.iter().filter(|g| &g.id == id).count();
        assert_eq!(n, 2, "{id}: {n} requests");
    }
    let max_attempts: i64 = sqlx::query_scalar("SELECT MAX(attempts) FROM webhook_deliveries")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(max_attempts, 2);
    let log: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_delivery_attempts")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(log as usize, 2 * N);
}
