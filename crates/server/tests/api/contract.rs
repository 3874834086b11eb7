//! Places where the server and its OpenAPI document disagreed, found by the API fuzzer
//! (`scripts/schemathesis`) and fixed on the server's side: each test is one finding.

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::common::{Db, TestServer, assert_bad_field};

crate::both_dbs!(
    idempotency_keys_outside_visible_ascii_are_refused,
    verify_refuses_a_body_that_is_not_an_object,
    connection_keys_are_checked_as_stripe_writes_them,
    lengths_are_counted_in_characters,
    a_body_of_white_space_is_not_json,
    delivery_filters_name_known_events,
);

/// An `Idempotency-Key` with a space or a byte outside ASCII was ignored (the request ran
/// unkeyed, so its retry ran the work again); the document says 1 to 255 visible ASCII
/// characters, and anything else is now a 400 naming the header, with nothing created.
async fn idempotency_keys_outside_visible_ascii_are_refused(db: Db) {
    let s = TestServer::start(db).await;
    let body = TestServer::redirect_body(1000, "authorize");
    for key in [
        HeaderValue::from_static("order 42"),
        HeaderValue::from_bytes(b"caf\xe9").expect("a header value"),
        HeaderValue::from_bytes(&[b'k'; 256]).expect("a header value"),
    ] {
        let r = s
            .send(
                s.request(Method::POST, "/transactions")
                    .header("idempotency-key", key.clone())
                    .json(&body),
            )
            .await;
        assert_bad_field(&r, "header", "/idempotency-key");
    }
    let list = s.get("/transactions").await.expect(200);
    assert_eq!(
        list["items"],
        json!([]),
        "a refused request created something"
    );

    // The longest key there is, and every visible ASCII character, still work.
    let long = "k".repeat(255);
    s.post_idem("/transactions", Some(&body), &long)
        .await
        .expect(201);
    let all: String = ('!'..='~').collect();
    s.post_idem("/transactions", Some(&body), &all)
        .await
        .expect(201);
}

/// `POST /connections/{id}/verify` is documented as a bodiless POST whose body, when there is
/// one, is a JSON object; it answered 200 to any body (a number, say) where the other bodiless
/// POSTs answer 400.
async fn verify_refuses_a_body_that_is_not_an_object(db: Db) {
    let s = TestServer::start(db).await;
    let list = s.get("/connections").await.expect(200);
    let id = list["items"][0]["id"]
        .as_str()
        .expect("the sandbox connection");
    let path = format!("/connections/{id}/verify");
    let r = s
        .send(
            s.request(Method::POST, &path)
                .header("content-type", "application/json")
                .body("-40777380578541559808"),
        )
        .await;
    assert_bad_field(&r, "body", "");
    s.post(&path, json!({})).await.expect(200);
    s.post_empty(&path).await.expect(200);
}

/// Stripe's keys are a prefix and letters or digits: `sk_test_` alone or `sk_test_a_b` was
/// stored, and every Stripe call with it then failed (502). An `api_version` is sent as the
/// Stripe-Version header: text that cannot be a header value made every call fail too.
async fn connection_keys_are_checked_as_stripe_writes_them(db: Db) {
    let s = TestServer::start(db).await;
    for (body, pointer) in [
        (json!({"secret_key": "sk_test_"}), "/secret_key"),
        (json!({"secret_key": "sk_test_a_b"}), "/secret_key"),
        (json!({"secret_key": "rk_live_a-b"}), "/secret_key"),
        (
            json!({"secret_key": "sk_test_abc123", "publishable_key": "pk_test_"}),
            "/publishable_key",
        ),
        (
            json!({"secret_key": "sk_test_abc123", "publishable_key": "pk_test_x.y"}),
            "/publishable_key",
        ),
        (
            json!({"secret_key": "sk_test_abc123", "webhook_secret": "whsec_"}),
            "/webhook_secret",
        ),
        (
            json!({"secret_key": "sk_test_abc123", "api_version": "2026-10-28.endivé"}),
            "/api_version",
        ),
        (
            json!({"secret_key": "sk_test_abc123", "api_version": "0550-15-47\u{19}b"}),
            "/api_version",
        ),
    ] {
        let r = s.post("/connections", body.clone()).await;
        assert_bad_field(&r, "body", pointer);
    }
    let list = s.get("/connections").await.expect(200);
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "only the sandbox connection: {list}"
    );

    let c = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_abc123", "publishable_key": "pk_test_abc123",
                   "webhook_secret": "whsec_a_b-c.d", "api_version": "2026-10-28.endive"}),
        )
        .await
        .expect(201);
    assert_eq!(c["api_version"], "2026-10-28.endive");
}

/// Limits the document gives in characters were checked in bytes: a customid of 255 `Ü` (510
/// bytes), a customer-token secret of 255 `é` and a connection name of 500 `é` were refused,
/// and a secret of 8 `é` (16 bytes) was taken for 16 characters.
async fn lengths_are_counted_in_characters(db: Db) {
    let s = TestServer::start(db).await;
    // `Ü` percent-encoded: 255 of them pass, 256 do not.
    let path = |n: usize| format!("/v1/permissions?customid={}", "%C3%9C".repeat(n));
    s.get(&path(255)).await.expect(200);
    assert_bad_field(&s.get(&path(256)).await, "query", "/customid");

    // The customer-token secret: at least 16 and at most 255 characters, not bytes.
    for (secret, ok) in [
        ("é".repeat(8), false),
        ("é".repeat(16), true),
        ("é".repeat(255), true),
    ] {
        let r = s
            .send(
                s.request(Method::PATCH, "/v1/entitlements/settings")
                    .json(&json!({"customer_token_secret": secret})),
            )
            .await;
        if ok {
            r.expect(200);
        } else {
            assert_bad_field(&r, "body", "/customer_token_secret");
        }
    }

    let name = "é".repeat(500);
    let c = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_abc123", "display_name": name}),
        )
        .await
        .expect(201);
    assert_eq!(c["display_name"], name);
    let r = s
        .post(
            "/connections",
            json!({"secret_key": "sk_test_abc123", "display_name": "é".repeat(501)}),
        )
        .await;
    assert_bad_field(&r, "body", "/display_name");
}

/// A body of white space only was taken for no body (`{}`); it is not JSON, and is a 400 like
/// any other body that is not. No body at all is still `{}`.
async fn a_body_of_white_space_is_not_json(db: Db) {
    let s = TestServer::start(db).await;
    for body in ["\n", "  ", "\r\n\t"] {
        let r = s
            .send(
                s.request(Method::PATCH, "/v1/entitlements/settings")
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_bad_field(&r, "body", "");
    }
    s.send(s.request(Method::PATCH, "/v1/entitlements/settings"))
        .await
        .expect(200);
}

/// `event_name` of the delivery log is documented as an event name: an unknown one listed
/// nothing, silently; it is a 400 naming the parameter, as an unknown `status` is.
async fn delivery_filters_name_known_events(db: Db) {
    let s = TestServer::start(db).await;
    let r = s
        .get("/webhook-deliveries?event_name=transaction.captured&event_name=transaction.capture")
        .await;
    assert_bad_field(&r, "query", "/event_name");
    let list = s
        .get("/webhook-deliveries?event_name=transaction.captured&event_name=refund.succeeded")
        .await
        .expect(200);
    assert_eq!(list["items"], json!([]));
}
