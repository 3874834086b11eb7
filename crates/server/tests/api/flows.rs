//! The payment flows: create (redirect and direct), approval through the sandbox (decline,
//! retry, 3-D Secure), completion, capture, refunds, void, cancel, and the state rules.

use serde_json::{Value, json};

use crate::common::{Db, REDIRECT_URL, TestServer, assert_bad_field, assert_error, query_param};

crate::both_dbs!(
    create_redirect_flow,
    create_direct_flow,
    decline_then_retry_succeeds,
    three_d_secure_approved,
    three_d_secure_failed,
    completion_redirects_to_merchant,
    partial_capture_and_two_partial_refunds,
    void_authorization,
    void_after_capture_is_refused,
    capture_after_void_is_refused,
    second_capture_is_refused,
    capture_above_authorized_is_refused,
    refund_above_captured_is_refused,
    cancel_before_approval,
    cancel_after_a_decline,
    list_and_events,
);

fn id(tx: &Value) -> String {
    tx["id"].as_str().expect("id").to_string()
}

async fn create_redirect_flow(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(1299, "capture").await;
    assert_eq!(tx["type"], "transaction");
    assert_eq!(tx["status"], "buyer_approval_pending");
    assert_eq!(tx["amount"], 1299);
    assert_eq!(tx["currency"], "USD");
    assert_eq!(tx["country"], "US");
    assert_eq!(tx["intent"], "capture");
    assert_eq!(tx["merchant_account_id"], "default");
    assert_eq!(tx["external_identifier"], "order-42");
    assert_eq!(tx["metadata"], json!({"k": "v"}));
    assert_eq!(tx["payment_method"]["method"], "stripe");
    assert_eq!(tx["payment_method"]["redirect_url"], REDIRECT_URL);
    assert_eq!(
        tx["payment_service"]["payment_service_definition_id"],
        "stripe-stripe"
    );
    assert!(tx["session_token"].is_null(), "{tx}");
    let approval_url = tx["payment_method"]["approval_url"]
        .as_str()
        .expect("approval_url");
    assert!(
        approval_url.starts_with(&s.url(&format!("/pay/{}?token=", id(&tx)))),
        "{approval_url}"
    );
    let pi = tx["additional_identifiers"]["payment_id"]
        .as_str()
        .expect("payment_id");
    assert!(pi.starts_with("pi_"), "{pi}");
    assert_eq!(tx["extra_xids"]["payment_id"], pi);
    let secret = tx["payment_service_transaction_id"].as_str().unwrap();
    assert!(secret.starts_with(&format!("{pi}_secret_")), "{secret}");

    // The PaymentIntent at Stripe carries our ids.
    let intents = s.intents_of(&id(&tx)).await;
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["id"], pi);
    assert_eq!(intents[0]["amount"], 1299);
    assert_eq!(intents[0]["capture_method"], "automatic");

    // GET shows the same, without the one-time approval URL.
    let got = s.get_tx(&id(&tx)).await;
    assert_eq!(got["status"], "buyer_approval_pending");
    assert_eq!(got["payment_service_transaction_id"], secret);

    // Approved: the PaymentIntent id replaces the client secret.
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let done = s.sync(&id(&tx)).await;
    assert_eq!(done["status"], "capture_succeeded", "{done}");
    assert_eq!(done["payment_service_transaction_id"], pi);
    assert_eq!(done["additional_identifiers"]["payment_id"], pi);
    assert_eq!(done["captured_amount"], 1299);
    assert_eq!(done["authorized_amount"], 1299);
    assert!(done["captured_at"].is_string(), "{done}");
    assert!(done["error_code"].is_null(), "{done}");
}

async fn create_direct_flow(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s
        .post("/transactions", TestServer::direct_body(700, "authorize"))
        .await
        .expect(201);
    assert_eq!(tx["status"], "buyer_approval_pending");
    assert_eq!(tx["integration_client"], "web");
    assert!(tx["payment_method"]["approval_url"].is_null(), "{tx}");
    let token = tx["session_token"]
        .as_str()
        .expect("session_token")
        .to_string();
    let tid = id(&tx);

    // A wrong token, or none: 401, nothing revealed.
    for path in [
        format!("/transactions/{tid}/session?token=wrong"),
        format!("/transactions/{tid}/session"),
    ] {
        let r = s.send(s.http.post(s.url(&path))).await;
        assert_error(&r, 401, "unauthorized");
    }

    // The session, authorised by the token alone (no API key).
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/transactions/{tid}/session?token={token}"))),
        )
        .await;
    let session = r.expect(200);
    let data = &session["session_data"];
    assert_eq!(data["publishableKey"], s.sandbox.publishable_key());
    let secret = data["clientSecret"].as_str().expect("clientSecret");
    let pi = tx["additional_identifiers"]["payment_id"].as_str().unwrap();
    assert!(secret.starts_with(&format!("{pi}_secret_")), "{session}");
    assert_eq!(data["returnUrl"], s.url(&format!("/pay/{tid}/complete")));
    assert_eq!(session["integration_client"], "web");
    let completion = session["default_completion_url"]
        .as_str()
        .expect("default_completion_url");
    assert!(
        completion.starts_with(&s.url(&format!("/pay/{tid}/complete?token="))),
        "{completion}"
    );

    // The app confirms with Stripe's SDK, then calls the completion URL: JSON, not a redirect.
    s.confirm_intent(pi, secret, "pm_card_visa")
        .await
        .expect(200);
    let r = s.send(s.http.get(completion)).await;
    let done = r.expect(200);
    assert_eq!(done["transaction_id"], tid);
    assert_eq!(done["transaction_status"], "authorization_succeeded");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let got = s.get_tx(&tid).await;
    assert_eq!(got["status"], "authorization_succeeded");
    assert_eq!(got["authorized_amount"], 700);
    assert_eq!(got["payment_service_transaction_id"], pi);

    // After completion the token is spent.
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/transactions/{tid}/session?token={token}"))),
        )
        .await;
    assert_error(&r, 401, "unauthorized");
}

async fn decline_then_retry_succeeds(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(1500, "authorize").await;
    let tid = id(&tx);
    let r = s.approve(&tx, "pm_card_chargeDeclined").await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"]["decline_code"], "generic_decline");

    // A decline while the buyer approves is not final.
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "buyer_approval_pending", "{t}");
    assert_eq!(t["error_code"], "issuer_decline", "{t}");
    assert_eq!(t["raw_response_code"], "generic_decline", "{t}");
    assert_eq!(
        t["raw_response_description"], "Your card was declined.",
        "{t}"
    );
    assert_eq!(t["authorized_amount"], 0);
    let events = s
        .get(&format!("/transactions/{tid}/events"))
        .await
        .expect(200);
    let names: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"transaction.error_recorded"), "{names:?}");

    // Another try with a good card succeeds; the decline is cleared.
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "authorization_succeeded", "{t}");
    assert_eq!(t["authorized_amount"], 1500);
    assert!(t["error_code"].is_null(), "{t}");
}

async fn three_d_secure_approved(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(2000, "capture").await;
    let tid = id(&tx);
    let pi = s
        .approve(&tx, "pm_card_authenticationRequired")
        .await
        .expect(200);
    assert_eq!(pi["status"], "requires_action", "{pi}");
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "buyer_approval_pending", "{t}");

    let pi_id = pi["id"].as_str().unwrap();
    let pi = s
        .sandbox_control(
            &format!("/payment_intents/{pi_id}/authenticate"),
            json!({"outcome": "approve"}),
        )
        .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "capture_succeeded", "{t}");
    assert_eq!(t["captured_amount"], 2000);
}

async fn three_d_secure_failed(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(2000, "authorize").await;
    let tid = id(&tx);
    let pi = s
        .approve(&tx, "pm_card_authenticationRequired")
        .await
        .expect(200);
    assert_eq!(pi["status"], "requires_action", "{pi}");
    let pi_id = pi["id"].as_str().unwrap();
    s.sandbox_control(
        &format!("/payment_intents/{pi_id}/authenticate"),
        json!({"outcome": "fail"}),
    )
    .await;
    // A failed authentication is a decline before approval: not final.
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "buyer_approval_pending", "{t}");
    assert_eq!(t["error_code"], "failed_buyer_approval", "{t}");
    assert_eq!(
        t["raw_response_code"], "payment_intent_authentication_failure",
        "{t}"
    );
    assert_eq!(t["authorized_amount"], 0);

    // The buyer may still pay with another card.
    s.approve(&tx, "pm_card_visa").await.expect(200);
    let t = s.sync(&tid).await;
    assert_eq!(t["status"], "authorization_succeeded", "{t}");
}

async fn completion_redirects_to_merchant(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(990, "capture").await;
    let tid = id(&tx);
    let approval_url = tx["payment_method"]["approval_url"].as_str().unwrap();
    let token = query_param(approval_url, "token").expect("token");

    // A wrong token reveals nothing.
    let r = s
        .send(
            s.http
                .get(s.url(&format!("/pay/{tid}/complete?token=nope"))),
        )
        .await;
    assert_error(&r, 404, "not_found");

    s.approve(&tx, "pm_card_visa").await.expect(200);
    let r = s
        .send(
            s.http
                .get(s.url(&format!("/pay/{tid}/complete?token={token}"))),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let location = r.header("location").expect("Location");
    assert!(
        location.starts_with(&format!("{REDIRECT_URL}?")),
        "{location}"
    );
    assert_eq!(
        query_param(location, "transaction_id").as_deref(),
        Some(tid.as_str())
    );
    assert_eq!(
        query_param(location, "transaction_status").as_deref(),
        Some("capture_succeeded")
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    // The completion synced the transaction.
    assert_eq!(s.get_tx(&tid).await["status"], "capture_succeeded");
}

async fn partial_capture_and_two_partial_refunds(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(1299).await;
    let tid = id(&tx);
    assert_eq!(tx["authorized_amount"], 1299);
    assert_eq!(tx["captured_amount"], 0);
    assert!(tx["authorized_at"].is_string());

    let t = s
        .post(
            &format!("/transactions/{tid}/capture"),
            json!({"amount": 1000, "final": true}),
        )
        .await
        .expect(200);
    assert_eq!(t["status"], "capture_succeeded", "{t}");
    assert_eq!(t["captured_amount"], 1000);
    assert_eq!(t["authorized_amount"], 1299);
    assert_eq!(
        t["refunded_amount"], 0,
        "the released rest is not a refund: {t}"
    );

    let r1 = s
        .post(
            &format!("/transactions/{tid}/refunds"),
            json!({"amount": 300, "reason": "damaged"}),
        )
        .await
        .expect(201);
    assert_eq!(r1["type"], "refund");
    assert_eq!(r1["amount"], 300);
    assert_eq!(r1["transaction_id"], tid);
    assert_eq!(r1["reason"], "damaged");
    assert_eq!(r1["currency"], "USD");
    assert_eq!(r1["status"], "succeeded", "{r1}");
    assert!(
        r1["payment_service_refund_id"]
            .as_str()
            .is_some_and(|x| x.starts_with("re_"))
    );
    let r2 = s
        .post(
            &format!("/transactions/{tid}/refunds"),
            json!({"amount": 200}),
        )
        .await
        .expect(201);
    assert_eq!(r2["amount"], 200);

    let t = s.get_tx(&tid).await;
    assert_eq!(
        t["status"], "capture_succeeded",
        "refunds do not change the status"
    );
    assert_eq!(t["captured_amount"], 1000);
    assert_eq!(t["refunded_amount"], 500, "{t}");

    let list = s
        .get(&format!("/transactions/{tid}/refunds"))
        .await
        .expect(200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&r1["id"].as_str().unwrap()));
    assert!(ids.contains(&r2["id"].as_str().unwrap()));
    let one = s
        .get(&format!(
            "/transactions/{tid}/refunds/{}",
            r1["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(one["amount"], 300);
    assert_eq!(one["id"], r1["id"]);
    let by_id = s
        .get(&format!("/refunds/{}", r2["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(by_id["amount"], 200);

    // What is left (500) can be refunded, not more.
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{tid}/refunds"),
            json!({"amount": 501}),
        )
        .await;
    assert_bad_field(&r, "body", "/amount");
    assert_eq!(s.db_snapshot().await, before);
    let r3 = s
        .post(&format!("/transactions/{tid}/refunds"), json!({}))
        .await
        .expect(201);
    assert_eq!(
        r3["amount"], 500,
        "a refund without amount refunds the rest"
    );
    assert_eq!(s.get_tx(&tid).await["refunded_amount"], 1000);
}

async fn void_authorization(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let tid = id(&tx);
    let t = s
        .post_empty(&format!("/transactions/{tid}/void"))
        .await
        .expect(200);
    assert_eq!(t["status"], "authorization_voided", "{t}");
    assert!(t["voided_at"].is_string(), "{t}");
    assert_eq!(t["captured_amount"], 0);
    let intents = s.intents_of(&tid).await;
    assert_eq!(intents[0]["status"], "canceled");
}

async fn void_after_capture_is_refused(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.captured(800).await;
    let tid = id(&tx);
    let before = s.db_snapshot().await;
    let r = s.post_empty(&format!("/transactions/{tid}/void")).await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.get_tx(&tid).await["status"], "capture_succeeded");
}

async fn capture_after_void_is_refused(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(800).await;
    let tid = id(&tx);
    s.post_empty(&format!("/transactions/{tid}/void"))
        .await
        .expect(200);
    let before = s.db_snapshot().await;
    let r = s
        .post(&format!("/transactions/{tid}/capture"), json!({}))
        .await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.get_tx(&tid).await["status"], "authorization_voided");
}

async fn second_capture_is_refused(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(800).await;
    let tid = id(&tx);
    s.post(
        &format!("/transactions/{tid}/capture"),
        json!({"amount": 300}),
    )
    .await
    .expect(200);
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{tid}/capture"),
            json!({"amount": 100}),
        )
        .await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(s.db_snapshot().await, before);
    let t = s.get_tx(&tid).await;
    assert_eq!(t["captured_amount"], 300);
}

async fn capture_above_authorized_is_refused(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(800).await;
    let tid = id(&tx);
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{tid}/capture"),
            json!({"amount": 801}),
        )
        .await;
    assert_bad_field(&r, "body", "/amount");
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.intents_of(&tid).await[0]["status"], "requires_capture");
    // The whole authorized amount is fine.
    let t = s
        .post(
            &format!("/transactions/{tid}/capture"),
            json!({"amount": 800}),
        )
        .await
        .expect(200);
    assert_eq!(t["captured_amount"], 800);
}

async fn refund_above_captured_is_refused(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.captured(800).await;
    let tid = id(&tx);
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{tid}/refunds"),
            json!({"amount": 801}),
        )
        .await;
    assert_bad_field(&r, "body", "/amount");
    assert_eq!(s.db_snapshot().await, before);
    // Nor on a transaction that was never captured.
    let auth = s.authorized(100).await;
    let before = s.db_snapshot().await;
    let r = s
        .post(
            &format!("/transactions/{}/refunds", id(&auth)),
            json!({"amount": 50}),
        )
        .await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(s.db_snapshot().await, before);
}

async fn cancel_before_approval(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(450, "capture").await;
    let tid = id(&tx);
    let c = s
        .post_empty(&format!("/transactions/{tid}/cancel"))
        .await
        .expect(200);
    assert_eq!(c["type"], "transaction-cancel", "{c}");
    assert_eq!(c["status"], "succeeded", "{c}");
    for k in ["code", "raw_response_code", "raw_response_description"] {
        assert!(c.as_object().unwrap().contains_key(k), "{k} missing: {c}");
    }
    assert_eq!(c["transaction"]["id"], tid);
    assert_eq!(c["transaction"]["status"], "authorization_failed");
    assert_eq!(c["transaction"]["error_code"], "canceled");
    assert_eq!(s.intents_of(&tid).await[0]["status"], "canceled");
    // The buyer can no longer pay.
    let r = s.approve(&tx, "pm_card_visa").await;
    assert_eq!(r.status, 400, "{}", r.text);
    // An authorized transaction is voided, not canceled.
    let auth = s.authorized(100).await;
    let before = s.db_snapshot().await;
    let r = s
        .post_empty(&format!("/transactions/{}/cancel", id(&auth)))
        .await;
    assert_error(&r, 400, "bad_request");
    assert_eq!(s.db_snapshot().await, before);
}

async fn list_and_events(db: Db) {
    let s = TestServer::start(db).await;
    let a = s.authorized(100).await;
    let b = s.create_redirect(200, "capture").await;
    let c = s.captured(300).await;
    let page = s.get("/transactions?limit=2").await.expect(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], c["id"], "newest first");
    assert_eq!(items[1]["id"], b["id"]);
    let cursor = page["next_cursor"].as_str().expect("next_cursor");
    let page2 = s
        .get(&format!("/transactions?limit=2&cursor={cursor}"))
        .await
        .expect(200);
    let items2 = page2["items"].as_array().unwrap();
    assert_eq!(items2.len(), 1);
    assert_eq!(items2[0]["id"], a["id"]);
    assert!(page2["next_cursor"].is_null(), "{page2}");

    let filtered = s
        .get("/transactions?status=capture_succeeded&status=authorization_succeeded")
        .await
        .expect(200);
    let ids: Vec<&Value> = filtered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, vec![&c["id"], &a["id"]]);

    let events = s
        .get(&format!("/transactions/{}/events", id(&c)))
        .await
        .expect(200);
    let names: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names.first(), Some(&"transaction.created"), "{names:?}");
    assert!(names.contains(&"transaction.status_changed"), "{names:?}");
}

async fn cancel_after_a_decline(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(450, "authorize").await;
    let tid = id(&tx);
    assert_eq!(
        s.approve(&tx, "pm_card_chargeDeclinedInsufficientFunds")
            .await
            .status,
        402
    );
    let c = s
        .post_empty(&format!("/transactions/{tid}/cancel"))
        .await
        .expect(200);
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(c["transaction"]["status"], "authorization_failed", "{c}");
    assert_eq!(c["transaction"]["error_code"], "canceled", "{c}");
    assert_eq!(s.get_tx(&tid).await["status"], "authorization_failed");
}
