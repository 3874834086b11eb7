//! Connections (SPEC §2), merchant accounts and the operational endpoints: secrets encrypted
//! and never returned, the `awaiting_webhook_secret` state, rotation, the default connection,
//! the per-resource verify report, the master-key check, health and metrics.

use serde_json::{Value, json};
use tollgate_server::auth::KeyKind;

use crate::common::{Db, TestServer, assert_error};

crate::both_dbs!(
    connection_lifecycle,
    verify_reports_restricted_key,
    default_connection_and_payment_service_id,
    merchant_accounts_need_an_operator_key,
    wrong_master_key_refuses_to_start,
    health_metrics_openapi,
    live_keys_stop_the_sandbox
);

const SK: &str = "sk_test_connectionsecret4242424242";

/// A server whose live-Stripe base URL is its own sandbox, so user-made connections with any
/// `sk_test_` key reach it (the sandbox accepts any well-formed test key).
async fn server(db: Db) -> TestServer {
    TestServer::start_with(db, |c| {
        c.stripe_api_base = format!("http://{}/sandbox/stripe", c.listen);
    })
    .await
}

async fn connection_lifecycle(db: Db) {
    let s = TestServer::start(db).await;
    let c = s
        .post(
            "/connections",
            json!({"secret_key": SK, "publishable_key": "pk_test_abcdef123456"}),
        )
        .await
        .expect(201);
    assert_eq!(c["status"], "awaiting_webhook_secret");
    assert_eq!(c["secret_key"], "sk_test_…4242");
    assert!(
        !c.to_string().contains(SK),
        "the secret key is never returned"
    );
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["webhook_url"], format!("{}/webhooks/stripe/{id}", s.base));

    // Encrypted at rest: the stored bytes do not contain the key.
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT secret_key_enc FROM connections WHERE id = $1")
            .bind(&id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("connectionsecret"));

    let patched = s
        .request(reqwest::Method::PATCH, &format!("/connections/{id}"))
        .json(&json!({"webhook_secret": "whsec_first1234"}));
    let patched = s.send(patched).await.expect(200);
    assert_eq!(patched["status"], "active");
    assert_eq!(patched["webhook_secret"], "whsec_…1234");
    assert_eq!(patched["has_previous_webhook_secret"], false);
    let rotated = s
        .request(reqwest::Method::PATCH, &format!("/connections/{id}"))
        .json(&json!({"webhook_secret": "whsec_second5678"}));
    let rotated = s.send(rotated).await.expect(200);
    assert_eq!(rotated["has_previous_webhook_secret"], true);
    assert!(!rotated.to_string().contains("second5678"));

    let listed = s.get("/connections").await.expect(200);
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str())
    );
    assert_error(
        &s.post("/connections", json!({"secret_key": "not-a-key"}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &s.post(
            "/connections",
            json!({"secret_key": SK, "webhook_url": "x"}),
        )
        .await,
        400,
        "bad_request",
    );
    let del = s
        .send(s.request(reqwest::Method::DELETE, &format!("/connections/{id}")))
        .await;
    assert_eq!(del.status, 204);
    assert_error(
        &s.get(&format!("/connections/{id}")).await,
        404,
        "not_found",
    );
}

async fn verify_reports_restricted_key(db: Db) {
    let s = server(db).await;
    let rk = s
        .sandbox_control(
            "/restricted_keys",
            json!({"permissions": {"customers": "read", "payment_intents": "read"}}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let c = s
        .post("/connections", json!({"secret_key": rk}))
        .await
        .expect(201);
    let report = s
        .post(
            &format!("/connections/{}/verify", c["id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .expect(200);
    let read = |name: &str| -> Value {
        report["read"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == name)
            .map(|r| r["read"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(read("customers"), json!(true), "{report}");
    assert_eq!(read("payment_intents"), json!(true));
    assert_eq!(read("charges"), json!(false));
    assert_eq!(report["write"]["payment_intents"], false);
    assert_eq!(report["write"]["refunds"], false);
    assert_eq!(report["payments_ready"], false);

    let full = s
        .post("/connections", json!({"secret_key": SK}))
        .await
        .expect(201);
    let report = s
        .post(
            &format!("/connections/{}/verify", full["id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(report["credentials_valid"], true);
    assert_eq!(report["write"]["payment_intents"], true);
    assert_eq!(report["write"]["refunds"], true);
    assert_eq!(report["payments_ready"], true);
}

async fn default_connection_and_payment_service_id(db: Db) {
    let s = server(db).await;
    let sandbox_conn = s.get("/connections").await.expect(200)["items"][0].clone();
    assert_eq!(sandbox_conn["default"], true);
    let other = s
        .post(
            "/connections",
            json!({"secret_key": SK, "publishable_key": "pk_test_other123456"}),
        )
        .await
        .expect(201);
    assert_eq!(
        other["default"], false,
        "the first connection stays the default"
    );
    let other_id = other["id"].as_str().unwrap();
    let mut body = TestServer::redirect_body(700, "authorize");
    body["payment_service_id"] = json!(other_id);
    let tx = s.post("/transactions", body).await.expect(201);
    assert_eq!(tx["payment_service"]["id"], other_id);
    let made = s
        .send(
            s.request(reqwest::Method::PATCH, &format!("/connections/{other_id}"))
                .json(&json!({"default": true})),
        )
        .await
        .expect(200);
    assert_eq!(made["default"], true);
    let tx = s
        .post("/transactions", TestServer::redirect_body(800, "authorize"))
        .await
        .expect(201);
    assert_eq!(tx["payment_service"]["id"], other_id);
    let mut body = TestServer::redirect_body(900, "authorize");
    body["payment_service_id"] = json!("nope");
    assert_error(&s.post("/transactions", body).await, 400, "bad_request");
}

async fn merchant_accounts_need_an_operator_key(db: Db) {
    let s = TestServer::start(db).await;
    let bound = s.merchant_account("shop-b").await;
    let r = s
        .send(
            s.http
                .post(s.url("/merchant-accounts"))
                .bearer_auth(&bound)
                .header("x-merchant-account-id", "shop-b")
                .json(&json!({"id": "shop-c"})),
        )
        .await;
    assert_error(&r, 403, "forbidden");
    assert_error(
        &s.post("/merchant-accounts", json!({"id": "shop-b"})).await,
        409,
        "duplicate_record",
    );
    assert_error(
        &s.post("/merchant-accounts", json!({"id": "Bad Id"})).await,
        400,
        "bad_request",
    );
    let listed = s
        .send(
            s.http
                .get(s.url("/merchant-accounts"))
                .bearer_auth(&bound)
                .header("x-merchant-account-id", "shop-b"),
        )
        .await
        .expect(200);
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["shop-b"], "a bound key sees its own account only");
    let public = s.bound_key(KeyKind::Public, "default").await;
    let r = s
        .send(s.http.get(s.url("/connections")).bearer_auth(&public))
        .await;
    assert_error(&r, 403, "forbidden");
}

async fn wrong_master_key_refuses_to_start(db: Db) {
    let s = TestServer::start(db).await;
    let mut config = s.config.clone();
    config.master_key = Some("ff".repeat(32).into());
    let err: tollgate_server::startup::Error = tollgate_server::open_store(&config)
        .await
        .err()
        .expect("a wrong master key is refused");
    assert!(err.to_string().contains("master key"), "{err}");
}

async fn health_metrics_openapi(db: Db) {
    let s = TestServer::start(db).await;
    assert_eq!(s.get("/healthz").await.status, 200);
    assert_eq!(s.get("/readyz").await.expect(200)["status"], "ready");
    s.post("/transactions", TestServer::redirect_body(500, "capture"))
        .await
        .expect(201);
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_transactions_created_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_http_requests_total{class=\"2xx\"}"));
    let doc = s.get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let r = s.get("/transactions").await;
    assert!(
        r.header("x-request-id").is_some(),
        "every answer carries a request id"
    );
}

/// Live keys given to a connection at runtime stop the built-in sandbox at once (it never runs
/// beside them) and make that connection the default in place of the sandbox's. A later live
/// connection does not take the default from it. (After a restart the sandbox stays off and the
/// default stays live: `crates/tollgate/tests/live_keys.rs`.)
async fn live_keys_stop_the_sandbox(db: Db) {
    let s = TestServer::start(db).await;
    let sandbox_customers = || s.send(s.http.get(s.url("/sandbox/stripe/v1/customers")));
    // Mounted: it answers (here, that a key is missing).
    assert_eq!(sandbox_customers().await.status, 401);
    let listed = s.get("/connections").await.expect(200);
    let sandbox_conn = listed["items"][0].clone();
    assert_eq!(sandbox_conn["sandbox"], true);
    assert_eq!(sandbox_conn["default"], true);
    let sandbox_id = sandbox_conn["id"].as_str().unwrap().to_string();

    let c = s
        .post("/connections", json!({"secret_key": SK}))
        .await
        .expect(201);
    assert_eq!(c["default"], false, "test keys leave the sandbox running");
    assert_eq!(sandbox_customers().await.status, 401);
    let id = c["id"].as_str().unwrap().to_string();
    let live = s
        .send(
            s.request(reqwest::Method::PATCH, &format!("/connections/{id}"))
                .json(&json!({"secret_key": "sk_live_nowlive1234567890"})),
        )
        .await
        .expect(200);
    assert_eq!(live["default"], true, "{live}");

    let r = sandbox_customers().await;
    let b = assert_error(&r, 404, "not_found");
    assert!(b["message"].as_str().unwrap().contains("live"), "{b}");
    let sandbox_conn = s
        .get(&format!("/connections/{sandbox_id}"))
        .await
        .expect(200);
    assert_eq!(sandbox_conn["default"], false);

    let second = s
        .post(
            "/connections",
            json!({"secret_key": "sk_live_secondlive1234567"}),
        )
        .await
        .expect(201);
    assert_eq!(second["default"], false, "the first live connection stays");
    let live = s.get(&format!("/connections/{id}")).await.expect(200);
    assert_eq!(live["default"], true);
}
