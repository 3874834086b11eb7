//! `Idempotency-Key` on every POST (SPEC §8): a replay returns the first answer, another body
//! is 409 `idempotency_key_mismatch`, the same key while the first request runs is 409
//! `concurrent_request`. A sandbox latency fault keeps the first request running.
//!
//! A request that ends without an answer leaves its work to a retry: dropped (its client went
//! away), its claim is given back at once; its server dead, the claim's lease lapses. Stored
//! answers are sealed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Db, Resp, TestServer, assert_error, now_ms, query_param, wait_for};

crate::both_dbs!(
    create_idempotent,
    capture_idempotent,
    void_idempotent,
    cancel_idempotent,
    sync_idempotent,
    refund_idempotent,
    keys_are_scoped,
    a_dropped_request_is_resumed_by_its_retry,
    a_retry_while_stripe_still_runs_the_first_try_resumes,
    a_lapsed_claim_is_taken_over_by_a_retry,
    stored_answers_are_sealed,
    answers_kept_in_clear_are_sealed,
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

/// A keyed create of `body` whose client gives up after 0.5 s while Stripe takes `latency_ms`;
/// returns once the dropped request gave its claim back.
async fn drop_a_keyed_create(s: &TestServer, body: &Value, key: &str, latency_ms: u64) {
    s.faults("latency", 1.0, latency_ms).await;
    let gave_up = s
        .request(reqwest::Method::POST, "/transactions")
        .header("idempotency-key", key)
        .json(body)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{gave_up:?}"
    );
    // Only the request already at the sandbox is slow.
    s.faults_off().await;
    wait_for(
        Duration::from_secs(10),
        "the dropped request to give its claim back",
        || async { (!s.idempotency_in_progress(key).await).then_some(()) },
    )
    .await;
}

/// `body` sent again to `/transactions` under `key` is a replay of the answer `first`.
async fn assert_replayed(s: &TestServer, body: &Value, key: &str, first: &Value) {
    let replay = s.post_idem("/transactions", Some(body), key).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(&replay.body, first);
}

/// The client gives up after 0.5 s while Stripe takes 2 s; hyper drops the request, which gives
/// its claim back (the lease is an hour here, so only that can free it within the test). The
/// retry finishes the same transaction on the one PaymentIntent Stripe made for the first try.
async fn a_dropped_request_is_resumed_by_its_retry(db: Db) {
    let s = TestServer::start_with(db, |c| c.idempotency_lease_secs = 3600).await;
    let body = TestServer::redirect_body(1000, "authorize");
    drop_a_keyed_create(&s, &body, "drop-1", 2000).await;
    // Stripe finishes what it was asked even though its client went away.
    let first_try = wait_for(
        Duration::from_secs(10),
        "the PaymentIntent of the first try",
        || async {
            let list = s.stripe_get("/v1/payment_intents?limit=100").await;
            let data = list["data"].as_array().cloned().unwrap_or_default();
            (!data.is_empty()).then_some(data)
        },
    )
    .await;
    assert_eq!(first_try.len(), 1, "{first_try:?}");

    let retry = s.post_idem("/transactions", Some(&body), "drop-1").await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert!(retry.header("idempotent-replayed").is_none());
    let id = retry.body["id"].as_str().unwrap();
    assert_eq!(retry.body["status"], "buyer_approval_pending");
    assert!(retry.body["payment_method"]["approval_url"].is_string());
    assert_eq!(
        retry.body["additional_identifiers"]["payment_id"],
        first_try[0]["id"]
    );
    assert_eq!(first_try[0]["metadata"]["tollgate_transaction_id"], id);
    let all = s.stripe_get("/v1/payment_intents?limit=100").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);

    assert_replayed(&s, &body, "drop-1", &retry.body).await;
}

/// The retry comes while Stripe still runs the dropped first try (same Stripe key): Stripe
/// answers 409 `idempotency_key_in_use`, which is no refusal. The retry is a 502 that is not
/// kept (the transaction saved), and a later one finishes it on the one PaymentIntent.
async fn a_retry_while_stripe_still_runs_the_first_try_resumes(db: Db) {
    let s = TestServer::start_with(db, |c| c.idempotency_lease_secs = 3600).await;
    let body = TestServer::redirect_body(1100, "authorize");
    drop_a_keyed_create(&s, &body, "busy-1", 3000).await;
    let tx = wait_for(Duration::from_secs(30), "a retry to finish", || async {
        let r = s.post_idem("/transactions", Some(&body), "busy-1").await;
        match r.status {
            201 => Some(r.body),
            502 => {
                let e = assert_error(&r, 502, "bad_gateway");
                assert!(e["message"].as_str().unwrap().contains("retry"), "{e}");
                None
            }
            _ => panic!("retry: {} {}", r.status, r.text),
        }
    })
    .await;
    let id = tx["id"].as_str().unwrap();
    assert_eq!(tx["status"], "buyer_approval_pending");
    let all = s.stripe_get("/v1/payment_intents?limit=100").await;
    let all = all["data"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["metadata"]["tollgate_transaction_id"], id);
    assert_eq!(tx["additional_identifiers"]["payment_id"], all[0]["id"]);
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);
}

/// A server that died mid-request leaves its claim behind, unanswered, under a lease nobody
/// renews: a retry is 409 `concurrent_request` until the lease lapses, then finishes the same
/// transaction (the process-level test kills a real server; here the row is made as it leaves
/// it).
async fn a_lapsed_claim_is_taken_over_by_a_retry(db: Db) {
    let s = TestServer::start(db).await;
    let body = TestServer::redirect_body(700, "capture");
    let first = s
        .post_idem("/transactions", Some(&body), "crash-1")
        .await
        .expect(201);
    let id = first["id"].as_str().unwrap();
    let set_claim = |lease_expires_at: i64| {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = NULL, response = NULL, response_enc = NULL,
                    lease_owner = 'a-server-that-died', lease_expires_at = $1
              WHERE idem_key = 'crash-1'",
        )
        .bind(lease_expires_at)
        .execute(&s.pool)
    };
    set_claim(now_ms() + 3_600_000).await.unwrap();
    let r = s.post_idem("/transactions", Some(&body), "crash-1").await;
    assert_error(&r, 409, "concurrent_request");

    set_claim(now_ms() - 1).await.unwrap();
    let retry = s.post_idem("/transactions", Some(&body), "crash-1").await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert!(retry.header("idempotent-replayed").is_none());
    assert_eq!(retry.body["id"], id);
    assert_eq!(
        retry.body["additional_identifiers"]["payment_id"],
        first["additional_identifiers"]["payment_id"]
    );
    // The first answer never arrived: the retry hands out a new approval URL.
    assert!(retry.body["payment_method"]["approval_url"].is_string());
    assert_eq!(s.intents_of(id).await.len(), 1);
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);
    assert_replayed(&s, &body, "crash-1", &retry.body).await;
    // Another body under the key is still a mismatch.
    let mut other = body.clone();
    other["amount"] = json!(701);
    let r = s.post_idem("/transactions", Some(&other), "crash-1").await;
    assert_error(&r, 409, "idempotency_key_mismatch");
}

/// Answers kept for replays hold approval URLs and session tokens: stored sealed, never in
/// clear; a replay still answers them.
async fn stored_answers_are_sealed(db: Db) {
    let s = TestServer::start(db).await;
    let redirect_body = TestServer::redirect_body(500, "authorize");
    let redirect = s
        .post_idem("/transactions", Some(&redirect_body), "seal-1")
        .await
        .expect(201);
    let approval_url = redirect["payment_method"]["approval_url"].as_str().unwrap();
    let approval_token = query_param(approval_url, "token").unwrap();
    let direct_body = TestServer::direct_body(600, "authorize");
    let direct = s
        .post_idem("/transactions", Some(&direct_body), "seal-2")
        .await
        .expect(201);
    let session_token = direct["session_token"].as_str().unwrap().to_string();

    let clear: Vec<Option<String>> = sqlx::query_scalar("SELECT response FROM idempotency_keys")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    assert_eq!(clear.len(), 2);
    for text in clear.iter().flatten() {
        assert!(
            !text.contains(&approval_token) && !text.contains(&session_token),
            "a token kept in clear: {text}"
        );
    }
    let sealed: Vec<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT response_enc FROM idempotency_keys")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    for bytes in &sealed {
        let bytes = bytes.as_deref().expect("a sealed answer");
        for needle in [
            approval_token.as_str(),
            session_token.as_str(),
            "approval_url",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} readable in a stored answer"
            );
        }
    }

    for (key, body, first) in [
        ("seal-1", &redirect_body, &redirect),
        ("seal-2", &direct_body, &direct),
    ] {
        assert_replayed(&s, body, key, first).await;
    }
}

/// An answer an older version kept in clear is sealed by the server's background pass, and
/// replays the same before and after.
async fn answers_kept_in_clear_are_sealed(db: Db) {
    let s = TestServer::start(db).await;
    let body = TestServer::direct_body(800, "authorize");
    let first = s.post_idem("/transactions", Some(&body), "old-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    // As an older version stored it.
    sqlx::query(
        "UPDATE idempotency_keys SET response = $1, response_enc = NULL WHERE idem_key = 'old-1'",
    )
    .bind(&first.text)
    .execute(&s.pool)
    .await
    .unwrap();
    assert_replayed(&s, &body, "old-1", &first.body).await;
    wait_for(
        Duration::from_secs(10),
        "the answer kept in clear to be sealed",
        || async {
            let row: (Option<String>, Option<Vec<u8>>) = sqlx::query_as(
                "SELECT response, response_enc FROM idempotency_keys WHERE idem_key = 'old-1'",
            )
            .fetch_one(&s.pool)
            .await
            .unwrap();
            (row.0.is_none() && row.1.is_some()).then_some(())
        },
    )
    .await;
    assert_replayed(&s, &body, "old-1", &first.body).await;
}
