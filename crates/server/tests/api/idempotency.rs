//! `Idempotency-Key` on every POST (SPEC §8): a replay returns the first answer, another body
//! is 409 `idempotency_key_mismatch`, the same key while the first request runs is 409
//! `concurrent_request`. A sandbox latency fault keeps the first request running.

use serde_json::{Value, json};

use crate::common::{Db, Resp, TestServer, assert_error};

crate::both_dbs!(
    create_idempotent,
    capture_idempotent,
    void_idempotent,
    cancel_idempotent,
    sync_idempotent,
    refund_idempotent,
    keys_are_scoped,
);

/// Sends `body` to `path` twice at once under `key` (the first one slowed down by Stripe
/// latency), then replays it and sends another body under the same key. Returns the first
/// answer.
async fn exercise(
    s: &TestServer,
    path: &str,
    body: Option<Value>,
    other: Option<Value>,
    key: &str,
    status: u16,
) -> Resp {
    s.faults("latency", 1.0, 800).await;
    let first = s.post_idem(path, body.as_ref(), key);
    let second = async {
        crate::common::wait_for(
            std::time::Duration::from_secs(10),
            "the first request to claim the key",
            || async { s.idempotency_in_progress(key).await.then_some(()) },
        )
        .await;
        s.post_idem(path, body.as_ref(), key).await
    };
    let (first, second) = tokio::join!(first, second);
    s.faults_off().await;
    assert_eq!(first.status, status, "first: {}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    assert_error(&second, 409, "concurrent_request");

    let before = s.db_snapshot().await;
    let replay = s.post_idem(path, body.as_ref(), key).await;
    assert_eq!(replay.status, status, "replay: {}", replay.text);
    assert_eq!(
        replay.body, first.body,
        "the replay differs from the first answer"
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert!(
        replay
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );

    let mismatch = s.post_idem(path, other.as_ref(), key).await;
    assert_error(&mismatch, 409, "idempotency_key_mismatch");
    assert_eq!(
        s.db_snapshot().await,
        before,
        "a replay or a mismatch changed the database"
    );
    first
}

async fn create_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let body = TestServer::redirect_body(1000, "authorize");
    let mut other = body.clone();
    other["amount"] = json!(1001);
    let first = exercise(
        &s,
        "/transactions",
        Some(body),
        Some(other),
        "create-1",
        201,
    )
    .await;
    let id = first.body["id"].as_str().unwrap();
    assert_eq!(first.body["status"], "buyer_approval_pending");
    assert!(first.body["payment_method"]["approval_url"].is_string());
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);
    assert_eq!(s.intents_of(id).await.len(), 1);
    // Another key is another transaction.
    let second = s
        .post_idem(
            "/transactions",
            Some(&TestServer::redirect_body(1000, "authorize")),
            "create-2",
        )
        .await
        .expect(201);
    assert_ne!(second["id"], first.body["id"]);
}

async fn capture_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(900).await;
    let path = format!("/transactions/{}/capture", tx["id"].as_str().unwrap());
    let first = exercise(
        &s,
        &path,
        Some(json!({"amount": 400})),
        Some(json!({"amount": 500})),
        "cap-1",
        200,
    )
    .await;
    assert_eq!(first.body["status"], "capture_succeeded");
    assert_eq!(first.body["captured_amount"], 400);
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["captured_amount"],
        400
    );
}

async fn void_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(900).await;
    let path = format!("/transactions/{}/void", tx["id"].as_str().unwrap());
    let first = exercise(&s, &path, None, Some(json!({"reason": "x"})), "void-1", 200).await;
    assert_eq!(first.body["status"], "authorization_voided");
}

async fn cancel_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(900, "capture").await;
    let path = format!("/transactions/{}/cancel", tx["id"].as_str().unwrap());
    let first = exercise(&s, &path, None, Some(json!({"x": 1})), "cancel-1", 200).await;
    assert_eq!(first.body["type"], "transaction-cancel");
    assert_eq!(first.body["transaction"]["status"], "authorization_failed");
}

async fn sync_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(900, "capture").await;
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let path = format!("/transactions/{}/sync", tx["id"].as_str().unwrap());
    let first = exercise(&s, &path, None, Some(json!({"x": 1})), "sync-1", 200).await;
    assert_eq!(first.body["status"], "capture_succeeded");
}

async fn refund_idempotent(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.captured(900).await;
    let id = tx["id"].as_str().unwrap();
    let path = format!("/transactions/{id}/refunds");
    let first = exercise(
        &s,
        &path,
        Some(json!({"amount": 100})),
        Some(json!({"amount": 200})),
        "rf-1",
        201,
    )
    .await;
    assert_eq!(first.body["amount"], 100);
    let list = s.get(&path).await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(s.get_tx(id).await["refunded_amount"], 100);
    let refunds = s.stripe_get("/v1/refunds?limit=100").await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1, "{refunds}");
}

/// The scope is (merchant account, API key, method, path, key): the same key elsewhere is
/// another request, not a replay nor a mismatch.
async fn keys_are_scoped(db: Db) {
    let s = TestServer::start(db).await;
    let a = s.authorized(300).await;
    let b = s.authorized(300).await;
    let body = json!({"amount": 100});
    let ra = s
        .post_idem(
            &format!("/transactions/{}/capture", a["id"].as_str().unwrap()),
            Some(&body),
            "same",
        )
        .await
        .expect(200);
    let rb = s
        .post_idem(
            &format!("/transactions/{}/capture", b["id"].as_str().unwrap()),
            Some(&body),
            "same",
        )
        .await;
    assert_eq!(rb.status, 200, "{}", rb.text);
    assert!(rb.header("idempotent-replayed").is_none());
    assert_ne!(ra["id"], rb.body["id"]);
    // A 4xx answer is kept too: replayed, not re-run.
    let bad = json!({"amount": 99999});
    let path = format!("/transactions/{}/refunds", a["id"].as_str().unwrap());
    let r1 = s.post_idem(&path, Some(&bad), "bad-refund").await;
    assert_error(&r1, 400, "bad_request");
    let r2 = s.post_idem(&path, Some(&bad), "bad-refund").await;
    assert_eq!(r2.body, r1.body);
    assert_eq!(r2.header("idempotent-replayed"), Some("true"));
}
