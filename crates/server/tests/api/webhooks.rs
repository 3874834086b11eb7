//! Stripe webhooks in (SPEC §4, first part): the sandbox's real, signed deliveries move
//! transactions without a sync; forged, altered, stale, future and foreign events change
//! nothing; a rotated secret keeps verifying.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_stripe::signature;

use crate::common::{Db, TestServer, now_ms, wait_for};

crate::both_dbs!(
    sandbox_deliveries_drive_transactions,
    signatures_are_checked,
    foreign_account_events_are_ignored
);

const SECRET: &str = "whsec_testsecret1234567890";

async fn sandbox_deliveries_drive_transactions(db: Db) {
    let s = TestServer::start_with_webhooks(db).await;
    let tx = s.create_redirect(1500, "authorize").await;
    s.approve(&tx, "pm_card_visa").await.expect(200);
    // No sync: the sandbox's signed `payment_intent.amount_capturable_updated` does it.
    let id = tx["id"].as_str().unwrap().to_string();
    let got = wait_for(Duration::from_secs(10), "the webhook to apply", || async {
        let t = s.get_tx(&id).await;
        (t["status"] == "authorization_succeeded").then_some(t)
    })
    .await;
    assert_eq!(got["authorized_amount"], 1500);
}

/// A server whose "live" Stripe is its own sandbox, a connection with a known webhook secret
/// and a transaction on it, approved at the sandbox (not yet synced).
async fn setup(db: Db) -> (TestServer, String, Value, Value) {
    let s = TestServer::start_with(db, |c| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
    })
    .await;
    let conn = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_webhooktests1234", "publishable_key": "pk_test_webhooktests1234",
                   "webhook_secret": SECRET}),
        )
        .await
        .expect(201);
    let conn_id = conn["id"].as_str().unwrap().to_string();
    let mut body = TestServer::redirect_body(900, "authorize");
    body["payment_service_id"] = json!(conn_id);
    let tx = s.post("/transactions", body).await.expect(201);
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let pi = s
        .stripe_get(&format!(
            "/v1/payment_intents/{}",
            tx["additional_identifiers"]["payment_id"].as_str().unwrap()
        ))
        .await;
    let event = json!({"id": "evt_test_1", "object": "event", "api_version": "2026-10-28.endive",
                       "created": now_ms() / 1000, "type": "payment_intent.amount_capturable_updated",
                       "data": {"object": pi}, "livemode": false, "pending_webhooks": 1,
                       "request": {"id": null, "idempotency_key": null}});
    (s, conn_id, tx, event)
}

async fn send(
    s: &TestServer,
    conn_id: &str,
    body: &[u8],
    header: Option<String>,
) -> crate::common::Resp {
    let mut rb = s
        .http
        .post(s.url(&format!("/webhooks/stripe/{conn_id}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(h) = header {
        rb = rb.header("stripe-signature", h);
    }
    s.send(rb).await
}

async fn signatures_are_checked(db: Db) {
    let (s, conn_id, tx, event) = setup(db).await;
    let body = serde_json::to_vec(&event).unwrap();
    let now = now_ms() / 1000;
    let before = s.db_snapshot().await;
    let refused = [
        None,
        Some(signature::header(&["whsec_wrong"], now, &body)),
        Some(format!(
            "t={now},v0={}",
            signature::sign(SECRET, now, &body)
        )),
        Some(signature::header(&[SECRET], now - 1000, &body)),
        Some(signature::header(&[SECRET], now + 1000, &body)),
        Some("garbage".to_string()),
    ];
    for header in refused {
        let r = send(&s, &conn_id, &body, header.clone()).await;
        assert_eq!(r.status, 400, "{header:?}: {}", r.text);
        assert_eq!(r.body["type"], "error");
    }
    // One byte changed: the signature no longer matches.
    let mut altered = body.clone();
    let at = altered.iter().position(|b| *b == b'9').unwrap();
    altered[at] = b'8';
    let r = send(
        &s,
        &conn_id,
        &altered,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &s,
        "no-such-connection",
        &body,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.status, 400);
    let not_event = br#"{"hello": "world"}"#;
    let r = send(
        &s,
        &conn_id,
        not_event,
        Some(signature::header(&[SECRET], now, not_event)),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        s.db_snapshot().await,
        before,
        "refused events change nothing"
    );

    // Rotation: the previous secret still verifies.
    let rb = s
        .request(reqwest::Method::PATCH, &format!("/connections/{conn_id}"))
        .json(&json!({"webhook_secret": "whsec_rotated0987654321"}));
    s.send(rb).await.expect(200);
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&[SECRET], now, &body)),
    )
    .await;
    assert_eq!(r.body["applied"], true, "{}", r.text);
    let t = s.get_tx(tx["id"].as_str().unwrap()).await;
    assert_eq!(t["status"], "authorization_succeeded");
    // A duplicate is harmless.
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&["whsec_rotated0987654321"], now, &body)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["status"],
        "authorization_succeeded"
    );
}

async fn foreign_account_events_are_ignored(db: Db) {
    let (s, conn_id, tx, mut event) = setup(db).await;
    event["account"] = json!("acct_someoneelse");
    let body = serde_json::to_vec(&event).unwrap();
    let r = send(
        &s,
        &conn_id,
        &body,
        Some(signature::header(&[SECRET], now_ms() / 1000, &body)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["applied"], false);
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["status"],
        "buyer_approval_pending"
    );
}
