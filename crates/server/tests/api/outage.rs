//! Stripe outages (SPEC §8): the transaction is saved first, the 502/504 carries its id, and
//! `sync` or a retry with the same Idempotency-Key finishes it, never making a second
//! PaymentIntent (or refund).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Db, TestServer, assert_error, wait_for};

crate::both_dbs!(
    create_outage_finished_by_sync,
    create_outage_finished_by_keyed_retry,
    create_timeout_after_stripe_made_the_intent,
    sync_after_outage,
    sync_after_rate_limiting,
    capture_during_outage,
    refund_during_outage_finished_by_sync,
    refund_during_outage_finished_by_keyed_retry,
    connection_sync_during_outage,
);

/// Asserts a 502/504 that names the saved transaction; returns its id.
#[track_caller]
fn outage_id(r: &crate::common::Resp) -> String {
    assert!(
        r.status == 502 || r.status == 504,
        "expected 502/504, got {}: {}",
        r.status,
        r.text
    );
    let code = if r.status == 502 {
        "bad_gateway"
    } else {
        "gateway_timeout"
    };
    let b = assert_error(r, r.status, code);
    assert!(!b["message"].as_str().unwrap().contains("panicked"), "{b}");
    b["transaction_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no transaction_id: {b}"))
        .to_string()
}

async fn create_outage_finished_by_sync(db: Db) {
    let s = TestServer::start(db).await;
    s.faults("500-retry", 1.0, 0).await;
    let body = TestServer::redirect_body(1234, "capture");
    let r = s.post_idem("/transactions", Some(&body), "order-1").await;
    let id = outage_id(&r);
    let t = s.get_tx(&id).await;
    assert_eq!(t["status"], "processing", "{t}");
    assert!(t["payment_service_transaction_id"].is_null(), "{t}");

    // Still down: sync answers 502 again and changes nothing.
    let before = s.db_snapshot().await;
    let r = s.post_empty(&format!("/transactions/{id}/sync")).await;
    assert_eq!(outage_id(&r), id);
    assert_eq!(s.db_snapshot().await, before);

    s.faults_off().await;
    assert!(s.intents_of(&id).await.is_empty());
    let t = s.sync(&id).await;
    assert_eq!(t["status"], "buyer_approval_pending", "{t}");
    assert!(
        t["payment_method"]["approval_url"].is_string(),
        "the sync that made the PaymentIntent hands out the approval URL: {t}"
    );
    let pi = t["additional_identifiers"]["payment_id"]
        .as_str()
        .expect("payment_id")
        .to_string();
    assert_eq!(s.intents_of(&id).await.len(), 1);

    // The client's keyed retry finds the same transaction, with a usable approval URL.
    let retry = s
        .post_idem("/transactions", Some(&body), "order-1")
        .await
        .expect(201);
    assert_eq!(retry["id"], id);
    assert_eq!(retry["status"], "buyer_approval_pending");
    assert_eq!(retry["additional_identifiers"]["payment_id"], pi);
    assert!(
        retry["payment_method"]["approval_url"].is_string(),
        "no approval_url: {retry}"
    );
    let intents = s.intents_of(&id).await;
    assert_eq!(intents.len(), 1, "exactly one PaymentIntent");
    assert_eq!(intents[0]["id"], pi);

    s.approve(&retry, "pm_card_visa").await.expect(200);
    assert_eq!(s.sync(&id).await["status"], "capture_succeeded");
}

async fn create_outage_finished_by_keyed_retry(db: Db) {
    let s = TestServer::start(db).await;
    s.faults("drop", 1.0, 0).await;
    let body = TestServer::redirect_body(555, "authorize");
    let r = s.post_idem("/transactions", Some(&body), "order-2").await;
    let id = outage_id(&r);
    assert_eq!(s.get_tx(&id).await["status"], "processing");
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);

    s.faults_off().await;
    let r = s.post_idem("/transactions", Some(&body), "order-2").await;
    let t = r.expect(201);
    assert!(
        r.header("idempotent-replayed").is_none(),
        "a 5xx is not replayed"
    );
    assert_eq!(t["id"], id, "the retry finishes the same transaction");
    assert_eq!(t["status"], "buyer_approval_pending");
    assert!(
        t["payment_method"]["approval_url"].is_string(),
        "no approval_url: {t}"
    );
    assert_eq!(s.db_snapshot().await.transactions.len(), 1);
    assert_eq!(s.intents_of(&id).await.len(), 1);

    // Now it is finished, the same key replays that answer.
    let again = s.post_idem("/transactions", Some(&body), "order-2").await;
    assert_eq!(again.expect(201), t);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    s.approve(&t, "pm_card_visa").await.expect(200);
    let t = s.sync(&id).await;
    assert_eq!(t["status"], "authorization_succeeded");
    assert_eq!(s.intents_of(&id).await.len(), 1);
}

/// Stripe made the PaymentIntent but its answer never arrived (our timeout): the sync re-sends
/// the create under the same Stripe Idempotency-Key and gets that same PaymentIntent.
async fn create_timeout_after_stripe_made_the_intent(db: Db) {
    let s = TestServer::start_with(db, |c| {
        c.stripe_timeout_ms = 300;
        c.stripe_max_retries = 0;
    })
    .await;
    s.faults("latency", 1.0, 900).await;
    let r = s
        .post_idem(
            "/transactions",
            Some(&TestServer::redirect_body(777, "capture")),
            "order-3",
        )
        .await;
    let id = outage_id(&r);
    assert_eq!(s.get_tx(&id).await["status"], "processing");
    s.faults_off().await;
    // The sandbox finishes the request its client left.
    let made = wait_for(
        Duration::from_secs(5),
        "the sandbox to make the PaymentIntent",
        || async {
            let v = s.intents_of(&id).await;
            (!v.is_empty()).then_some(v)
        },
    )
    .await;
    assert_eq!(made.len(), 1);
    let t = s.sync(&id).await;
    assert_eq!(t["status"], "buyer_approval_pending", "{t}");
    assert_eq!(t["additional_identifiers"]["payment_id"], made[0]["id"]);
    let intents = s.intents_of(&id).await;
    assert_eq!(intents.len(), 1, "exactly one PaymentIntent: {intents:?}");
}

async fn sync_after_outage(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(640, "authorize").await;
    let id = tx["id"].as_str().unwrap().to_string();
    s.approve(&tx, "pm_card_visa").await.expect(200);
    for kind in ["500-retry", "drop"] {
        s.faults(kind, 1.0, 0).await;
        let before = s.db_snapshot().await;
        let r = s.post_empty(&format!("/transactions/{id}/sync")).await;
        assert_eq!(outage_id(&r), id);
        assert_eq!(
            s.db_snapshot().await,
            before,
            "{kind}: the database changed"
        );
        s.faults_off().await;
    }
    assert_eq!(s.get_tx(&id).await["status"], "buyer_approval_pending");
    let t = s.sync(&id).await;
    assert_eq!(t["status"], "authorization_succeeded", "{t}");
    assert_eq!(t["authorized_amount"], 640);
}

async fn sync_after_rate_limiting(db: Db) {
    let s = TestServer::start_with(db, |c| c.stripe_max_retries = 0).await;
    let tx = s.create_redirect(650, "capture").await;
    let id = tx["id"].as_str().unwrap().to_string();
    s.approve(&tx, "pm_card_visa").await.expect(200);
    s.faults("429", 1.0, 0).await;
    let before = s.db_snapshot().await;
    let r = s.post_empty(&format!("/transactions/{id}/sync")).await;
    assert_eq!(outage_id(&r), id);
    assert!(
        r.header("retry-after")
            .is_none_or(|v| v.parse::<u64>().is_ok_and(|s| s <= 1))
    );
    assert_eq!(s.db_snapshot().await, before);
    s.faults_off().await;
    assert_eq!(s.sync(&id).await["status"], "capture_succeeded");
}

async fn capture_during_outage(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(900).await;
    let id = tx["id"].as_str().unwrap().to_string();
    s.faults("500-retry", 1.0, 0).await;
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{id}/capture"),
            json!({"amount": 600}),
        )
        .await;
    assert_eq!(outage_id(&r), id);
    assert_eq!(s.db_snapshot().await, before);
    s.faults_off().await;
    assert_eq!(s.intents_of(&id).await[0]["status"], "requires_capture");
    let t = s
        .post(
            &format!("/transactions/{id}/capture"),
            json!({"amount": 600}),
        )
        .await
        .expect(200);
    assert_eq!(t["status"], "capture_succeeded");
    assert_eq!(t["captured_amount"], 600);
}

async fn refunds_at_stripe(s: &TestServer) -> Vec<Value> {
    s.stripe_get("/v1/refunds?limit=100").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn refund_during_outage_finished_by_sync(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.captured(1000).await;
    let id = tx["id"].as_str().unwrap().to_string();
    s.faults("500-retry", 1.0, 0).await;
    let r = s
        .post(
            &format!("/transactions/{id}/refunds"),
            json!({"amount": 400}),
        )
        .await;
    assert_eq!(outage_id(&r), id);
    s.faults_off().await;
    assert!(refunds_at_stripe(&s).await.is_empty());
    // The refund was saved first: it is processing until a sync sends it.
    let list = s
        .get(&format!("/transactions/{id}/refunds"))
        .await
        .expect(200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["status"], "processing");
    let t = s.sync(&id).await;
    assert_eq!(t["refunded_amount"], 400, "{t}");
    let list = s
        .get(&format!("/transactions/{id}/refunds"))
        .await
        .expect(200);
    assert_eq!(list["items"][0]["status"], "succeeded", "{list}");
    assert_eq!(refunds_at_stripe(&s).await.len(), 1);
    // A second sync sends nothing more.
    s.sync(&id).await;
    assert_eq!(refunds_at_stripe(&s).await.len(), 1);
}

async fn refund_during_outage_finished_by_keyed_retry(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.captured(1000).await;
    let id = tx["id"].as_str().unwrap().to_string();
    let path = format!("/transactions/{id}/refunds");
    let body = json!({"amount": 700});
    s.faults("drop", 1.0, 0).await;
    let r = s.post_idem(&path, Some(&body), "refund-1").await;
    assert_eq!(outage_id(&r), id);
    s.faults_off().await;
    let r = s.post_idem(&path, Some(&body), "refund-1").await;
    let refund = r.expect(201);
    assert_eq!(refund["amount"], 700);
    assert_eq!(refund["status"], "succeeded", "{refund}");
    let list = s.get(&path).await.expect(200);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "one refund, not two: {list}"
    );
    assert_eq!(refunds_at_stripe(&s).await.len(), 1);
    assert_eq!(s.get_tx(&id).await["refunded_amount"], 700);
    // What is left is 300.
    let r = s.post(&path, json!({"amount": 301})).await;
    assert_error(&r, 400, "bad_request");
}

/// `POST /connections/{id}/sync` during an outage: a 502 about the connection (sync it again),
/// not about a transaction, which it never saved.
async fn connection_sync_during_outage(db: Db) {
    let s = TestServer::start(db).await;
    let conn = s.get("/connections").await.expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.faults("500-retry", 1.0, 0).await;
    let r = s
        .post(&format!("/connections/{conn}/sync"), json!({}))
        .await;
    s.faults_off().await;
    let b = assert_error(&r, 502, "bad_gateway");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("/connections/{conn}/sync")),
        "{message}"
    );
    assert!(!message.contains("transaction"), "{message}");
    assert!(b.get("transaction_id").is_none(), "{b}");
    // Once Stripe answers, the same sync works.
    s.post(&format!("/connections/{conn}/sync"), json!({}))
        .await
        .expect(200);
}
