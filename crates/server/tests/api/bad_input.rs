//! Bad input (issue 3): each a clear error in the envelope of SPEC §8, and nothing changed in
//! the database.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;

use crate::common::{Db, REDIRECT_URL, Resp, TestServer, assert_bad_field, assert_error};

crate::both_dbs!(
    missing_amount,
    negative_amount,
    zero_amount,
    non_integer_amount,
    unknown_currency,
    country_mismatch,
    missing_redirect_url,
    missing_payment_method_in_redirect_flow,
    non_https_redirect_url,
    raw_card_data,
    unknown_fields,
    malformed_json,
    body_not_an_object,
    two_megabyte_body,
    other_merchant_accounts_transaction,
    key_naming_another_account,
    public_key_on_secret_endpoint,
    no_key,
    wrong_key,
);

/// Runs `request` against a server holding one transaction already, and checks the database
/// did not change.
async fn unchanged<F, Fut>(s: &TestServer, request: F) -> Resp
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let before = s.db_snapshot().await;
    let intents_before = s.stripe_get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    let r = request().await;
    assert_eq!(
        s.db_snapshot().await,
        before,
        "the database changed: {}",
        r.text
    );
    let intents_after = s.stripe_get("/v1/payment_intents?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(intents_after, intents_before, "a PaymentIntent was made");
    r
}

async fn server_with_one_transaction(db: Db) -> (TestServer, Value) {
    let s = TestServer::start(db).await;
    let tx = s.create_redirect(100, "authorize").await;
    (s, tx)
}

fn body_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut b = TestServer::redirect_body(1000, "capture");
    change(&mut b);
    b
}

async fn create_refused(db: Db, body: Value, pointer: &str) {
    let (s, _) = server_with_one_transaction(db).await;
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", pointer);
}

async fn missing_amount(db: Db) {
    create_refused(
        db,
        body_with(|b| drop(b.as_object_mut().unwrap().remove("amount"))),
        "/amount",
    )
    .await;
}

async fn negative_amount(db: Db) {
    create_refused(db, body_with(|b| b["amount"] = json!(-1)), "/amount").await;
}

async fn zero_amount(db: Db) {
    create_refused(db, body_with(|b| b["amount"] = json!(0)), "/amount").await;
}

async fn non_integer_amount(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for amount in [json!(10.5), json!("1000"), json!(null), json!(1e3)] {
        let body = body_with(|b| b["amount"] = amount.clone());
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", "/amount");
    }
}

async fn unknown_currency(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for currency in ["XYZ", "usd1", ""] {
        let body = body_with(|b| {
            b["currency"] = json!(currency);
            b["payment_method"]
                .as_object_mut()
                .unwrap()
                .remove("currency");
        });
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", "/currency");
    }
}

async fn country_mismatch(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let body = body_with(|b| b["payment_method"]["country"] = json!("GB"));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/country");
    let body = body_with(|b| b["payment_method"]["currency"] = json!("EUR"));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/currency");
}

async fn missing_redirect_url(db: Db) {
    create_refused(
        db,
        body_with(|b| {
            drop(
                b["payment_method"]
                    .as_object_mut()
                    .unwrap()
                    .remove("redirect_url"),
            )
        }),
        "/payment_method/redirect_url",
    )
    .await;
}

async fn missing_payment_method_in_redirect_flow(db: Db) {
    create_refused(
        db,
        body_with(|b| drop(b.as_object_mut().unwrap().remove("payment_method"))),
        "/payment_method",
    )
    .await;
}

async fn non_https_redirect_url(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for url in [
        "http://merchant.example/callback",
        "ftp://merchant.example/",
        "merchant.example",
        "https://",
    ] {
        let body = body_with(|b| b["payment_method"]["redirect_url"] = json!(url));
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_bad_field(&r, "body", "/payment_method/redirect_url");
    }
}

async fn raw_card_data(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    // As the seed SDK sends a card (CardWithURLPaymentMethodCreate).
    let body = json!({
        "amount": 1000, "currency": "USD",
        "payment_method": {"method": "card", "number": "4242424242424242",
                           "expiration_date": "12/30", "security_code": "123",
                           "redirect_url": REDIRECT_URL},
    });
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    let b = assert_error(&r, 400, "bad_request");
    assert!(
        b["details"][0]["pointer"]
            .as_str()
            .unwrap()
            .starts_with("/payment_method/"),
        "{b}"
    );
    assert!(
        !r.text.contains("4242424242424242"),
        "the card number is echoed: {}",
        r.text
    );
    // Even beside other mistakes, raw card data is what is refused.
    let body = json!({"amount": "x", "bogus": 1, "payment_method": {"method": "card", "security_code": "123"}});
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/security_code");
}

async fn unknown_fields(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let body = body_with(|b| b["no_such_field"] = json!(true));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/no_such_field");
    let body = body_with(|b| b["payment_method"]["no_such_field"] = json!(1));
    let r = unchanged(&s, || s.post("/transactions", body)).await;
    assert_bad_field(&r, "body", "/payment_method/no_such_field");
    // The seed API's own fields are accepted (and ignored).
    let body = body_with(|b| {
        for k in [
            "store",
            "is_subsequent_payment",
            "merchant_initiated",
            "async_capture",
            "account_funding_transaction",
            "allow_partial_authorization",
        ] {
            b[k] = json!(false);
        }
    });
    s.post("/transactions", body).await.expect(201);
}

async fn malformed_json(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    for path in [
        "/transactions".to_string(),
        format!("/transactions/{id}/capture"),
    ] {
        let rb = s
            .request(Method::POST, &path)
            .header("content-type", "application/json")
            .body(r#"{"amount": 100, "currency": "USD""#);
        let r = unchanged(&s, || s.send(rb)).await;
        let b = assert_error(&r, 400, "bad_request");
        assert_eq!(b["details"][0]["location"], "body", "{b}");
    }
}

async fn body_not_an_object(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    for body in [json!([1, 2]), json!("amount"), json!(1000)] {
        let r = unchanged(&s, || s.post("/transactions", body)).await;
        assert_error(&r, 400, "bad_request");
    }
}

/// A body over the 1 MiB limit, its size the only thing wrong with it (`cart_items` is a seed
/// API field Tollgate accepts and ignores).
fn oversized(bytes: usize) -> Value {
    body_with(|b| b["cart_items"] = json!([{"name": "x".repeat(bytes)}]))
}

#[track_caller]
fn assert_too_large(r: &Resp) {
    let b = assert_error(r, 400, "bad_request");
    assert!(
        b["message"].as_str().unwrap().contains("larger than"),
        "{b}"
    );
}

async fn two_megabyte_body(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let post = |path: &str, body: Value, key: Option<&str>| {
        let path = path.to_string();
        let key = key.map(str::to_string);
        let s = &s;
        move || {
            let mut rb = s.request(Method::POST, &path).json(&body);
            if let Some(k) = &key {
                rb = rb.header("idempotency-key", k);
            }
            rb
        }
    };
    let big = oversized(2 * 1024 * 1024);
    let r = unchanged(&s, || {
        s.send_oversized(post("/transactions", big.clone(), None))
    })
    .await;
    assert_too_large(&r);
    // With an Idempotency-Key too (the key middleware reads the body first).
    let r = unchanged(&s, || {
        s.send_oversized(post("/transactions", big, Some("big-1")))
    })
    .await;
    assert_too_large(&r);
    // Just over the limit is refused as well, on every endpoint.
    let body = oversized(1024 * 1024 + 16);
    let r = unchanged(&s, || s.send_oversized(post("/transactions", body, None))).await;
    assert_too_large(&r);
    let path = format!("/transactions/{}/capture", tx["id"].as_str().unwrap());
    let body = json!({"amount": 100, "airline": {"legs": "x".repeat(1024 * 1024 + 16)}});
    let r = unchanged(&s, || s.send_oversized(post(&path, body, None))).await;
    assert_too_large(&r);
    assert_eq!(
        s.get_tx(tx["id"].as_str().unwrap()).await["status"],
        "authorization_succeeded"
    );
    // Under the limit, the same fields are accepted.
    s.post("/transactions", oversized(1000)).await.expect(201);
}

async fn other_merchant_accounts_transaction(db: Db) {
    let s = TestServer::start(db).await;
    let tx = s.authorized(500).await;
    let id = tx["id"].as_str().unwrap();
    let other = s.merchant_account("shop-b").await;
    let before = s.db_snapshot().await;
    for (method, path) in [
        (Method::GET, format!("/transactions/{id}")),
        (Method::GET, format!("/transactions/{id}/refunds")),
        (Method::GET, format!("/transactions/{id}/events")),
        (Method::POST, format!("/transactions/{id}/capture")),
        (Method::POST, format!("/transactions/{id}/void")),
        (Method::POST, format!("/transactions/{id}/cancel")),
        (Method::POST, format!("/transactions/{id}/sync")),
        (Method::POST, format!("/transactions/{id}/refunds")),
    ] {
        let mut rb = s
            .http
            .request(method.clone(), s.url(&path))
            .bearer_auth(&other);
        if method == Method::POST {
            rb = rb.json(&json!({}));
        }
        let r = s.send(rb).await;
        assert_error(&r, 404, "not_found");
        // Nor does the operator key see it when it acts for the other account.
        let mut rb = s
            .request(method.clone(), &path)
            .header("x-merchant-account-id", "shop-b");
        if method == Method::POST {
            rb = rb.json(&json!({}));
        }
        assert_error(&s.send(rb).await, 404, "not_found");
    }
    let list = s
        .send(s.http.get(s.url("/transactions")).bearer_auth(&other))
        .await
        .expect(200);
    assert_eq!(list["items"], json!([]));
    assert_eq!(s.db_snapshot().await, before);
    assert_eq!(s.get_tx(id).await["status"], "authorization_succeeded");
}

async fn key_naming_another_account(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let key_b = s.merchant_account("shop-b").await;
    let id = tx["id"].as_str().unwrap();
    for header in ["x-merchant-account-id", "x-gr4vy-merchant-account-id"] {
        let rb = s
            .http
            .post(s.url("/transactions"))
            .bearer_auth(&key_b)
            .header(header, "default")
            .json(&TestServer::redirect_body(100, "capture"));
        let r = unchanged(&s, || s.send(rb)).await;
        assert_error(&r, 403, "forbidden");
        let rb = s
            .http
            .get(s.url(&format!("/transactions/{id}")))
            .bearer_auth(&key_b)
            .header(header, "default");
        assert_error(&s.send(rb).await, 403, "forbidden");
    }
    // Naming its own account is fine.
    let rb = s
        .http
        .get(s.url("/transactions"))
        .bearer_auth(&key_b)
        .header("x-merchant-account-id", "shop-b");
    s.send(rb).await.expect(200);
}

async fn public_key_on_secret_endpoint(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let public = s.bound_key(KeyKind::Public, "default").await;
    let id = tx["id"].as_str().unwrap();
    let rb = s
        .http
        .post(s.url("/transactions"))
        .bearer_auth(&public)
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 403, "forbidden");
    for path in [format!("/transactions/{id}"), "/transactions".to_string()] {
        let r = s.send(s.http.get(s.url(&path)).bearer_auth(&public)).await;
        assert_error(&r, 403, "forbidden");
    }
    let rb = s
        .http
        .post(s.url(&format!("/transactions/{id}/cancel")))
        .bearer_auth(&public);
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 403, "forbidden");
}

async fn no_key(db: Db) {
    let (s, tx) = server_with_one_transaction(db).await;
    let id = tx["id"].as_str().unwrap();
    let rb = s
        .http
        .post(s.url("/transactions"))
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
    let r = s
        .send(s.http.get(s.url(&format!("/transactions/{id}"))))
        .await;
    assert_error(&r, 401, "unauthorized");
    let rb = s.http.post(s.url(&format!("/transactions/{id}/cancel")));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
    // With an Idempotency-Key, authentication still comes first.
    let rb = s
        .http
        .post(s.url("/transactions"))
        .header("idempotency-key", "k1")
        .json(&TestServer::redirect_body(100, "capture"));
    let r = unchanged(&s, || s.send(rb)).await;
    assert_error(&r, 401, "unauthorized");
}

async fn wrong_key(db: Db) {
    let (s, _) = server_with_one_transaction(db).await;
    let mut forged = s.key.clone();
    forged.pop();
    forged.push(if s.key.ends_with('A') { 'B' } else { 'A' });
    for key in [
        forged.as_str(),
        "tg_sk_nope_nope",
        "sk_test_123",
        "Basic abc",
    ] {
        let rb = s
            .http
            .post(s.url("/transactions"))
            .bearer_auth(key)
            .json(&TestServer::redirect_body(100, "capture"));
        let r = unchanged(&s, || s.send(rb)).await;
        assert_error(&r, 401, "unauthorized");
    }
}
