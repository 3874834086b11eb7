//! Approval expiry (SPEC §3.3 item 6): an approval not completed in time ends
//! `authorization_failed` / `incomplete_buyer_approval` and its PaymentIntent is canceled; a
//! buyer who paid at the last second keeps the payment.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Db, TestServer, wait_for};

crate::both_dbs!(
    approval_expires,
    direct_flow_approval_expires,
    payment_at_the_last_second_is_kept_authorize,
    payment_at_the_last_second_is_kept_capture,
);

async fn expiring_server(db: Db) -> TestServer {
    TestServer::start_with(db, |c| {
        c.approval_ttl_secs = 1;
        c.expiry_interval_ms = 200;
    })
    .await
}

/// Waits until the transaction leaves `buyer_approval_pending`.
async fn settled(s: &TestServer, id: &str) -> Value {
    wait_for(Duration::from_secs(6), "the expiry job", || async {
        let t = s.get_tx(id).await;
        (t["status"] != "buyer_approval_pending").then_some(t)
    })
    .await
}

async fn approval_expires(db: Db) {
    let s = expiring_server(db).await;
    let tx = s.create_redirect(300, "authorize").await;
    let id = tx["id"].as_str().unwrap();
    assert!(tx["approval_expires_at"].is_string());
    let t = settled(&s, id).await;
    assert_eq!(t["status"], "authorization_failed", "{t}");
    assert_eq!(t["error_code"], "incomplete_buyer_approval", "{t}");
    let pi = &s.intents_of(id).await[0];
    assert_eq!(pi["status"], "canceled");
    assert_eq!(pi["cancellation_reason"], "abandoned");
    // Too late to pay now.
    let r = s.approve(&tx, "pm_card_visa").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(s.get_tx(id).await["status"], "authorization_failed");
}

async fn direct_flow_approval_expires(db: Db) {
    let s = expiring_server(db).await;
    let tx = s
        .post("/transactions", TestServer::direct_body(300, "capture"))
        .await
        .expect(201);
    let id = tx["id"].as_str().unwrap();
    let t = settled(&s, id).await;
    assert_eq!(t["status"], "authorization_failed", "{t}");
    assert_eq!(t["error_code"], "incomplete_buyer_approval", "{t}");
    assert_eq!(s.intents_of(id).await[0]["status"], "canceled");
}

/// The buyer pays just before the deadline and nothing tells Tollgate (no sync, no
/// completion): the expiry job must find the payment, not cancel it.
async fn last_second(db: Db, intent: &str, expected: &str) {
    let s = expiring_server(db).await;
    let tx = s.create_redirect(300, intent).await;
    let id = tx["id"].as_str().unwrap();
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let t = settled(&s, id).await;
    assert_eq!(t["status"], expected, "{t}");
    assert!(t["error_code"].is_null(), "{t}");
    let pi = &s.intents_of(id).await[0];
    assert_ne!(
        pi["status"], "canceled",
        "the expiry job canceled a paid PaymentIntent: {pi}"
    );
}

async fn payment_at_the_last_second_is_kept_authorize(db: Db) {
    last_second(db, "authorize", "authorization_succeeded").await;
}

async fn payment_at_the_last_second_is_kept_capture(db: Db) {
    last_second(db, "capture", "capture_succeeded").await;
}
