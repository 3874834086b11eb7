//! The Stripe client against the real sandbox, served over HTTP on 127.0.0.1 so that timeouts,
//! dropped connections and headers are real. A middleware records every `/v1` request the
//! sandbox sees, so tests can count attempts and check the headers each one carried.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use serde_json::{Map, Value, json};
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tollgate_stripe::client::{
    CURRENT_API_VERSION, ClientConfig, Method, RequestOptions, StripeClient, StripeError, mask_key,
};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    idempotency_key: Option<String>,
    stripe_account: Option<String>,
    stripe_version: Option<String>,
    user_agent: Option<String>,
}

struct Env {
    base_url: String,
    key: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Env {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}");
        let sandbox = Sandbox::start(SandboxConfig {
            public_url: base_url.clone(),
            ..Default::default()
        })
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = sandbox
            .router()
            .layer(middleware::from_fn(move |req: Request, next: Next| {
                let log = log.clone();
                async move {
                    if req.uri().path().starts_with("/v1/") {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        let seen = Seen {
                            method: req.method().to_string(),
                            path: req.uri().path().to_string(),
                            idempotency_key: h("idempotency-key"),
                            stripe_account: h("stripe-account"),
                            stripe_version: h("stripe-version"),
                            user_agent: h("user-agent"),
                        };
                        log.lock().unwrap().push(seen);
                    }
                    next.run(req).await
                }
            }));
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        Self {
            base_url,
            key: sandbox.secret_key(),
            seen,
        }
    }

    /// Fast retries so that the tests run in well under a second each.
    fn config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            retry_base: Duration::from_millis(10),
            max_retry_delay: Duration::from_millis(200),
            ..ClientConfig::new(self.key.clone())
        }
    }

    fn client(&self) -> StripeClient {
        StripeClient::new(self.config()).unwrap()
    }

    fn seen(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn manual_intent(amount: i64) -> Map<String, Value> {
    obj(json!({
        "amount": amount,
        "currency": "usd",
        "capture_method": "manual",
        "payment_method_types": ["card"],
        "metadata": {"tollgate_transaction_id": "tx_1", "customid": "c1"},
    }))
}

/// A fault header on the first `attempts` attempts only: the retry after it succeeds.
fn fault(kind: &str, attempts: Option<u32>) -> RequestOptions {
    RequestOptions {
        extra_headers: vec![("Sandbox-Fault".into(), kind.into())],
        extra_headers_attempts: attempts,
        ..Default::default()
    }
}

/// Every recorded attempt carried the same Idempotency-Key.
fn one_key(seen: &[Seen]) -> String {
    let key = seen[0]
        .idempotency_key
        .clone()
        .expect("Idempotency-Key sent");
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some(&key)),
        "{seen:?}"
    );
    key
}

#[tokio::test]
async fn create_confirm_capture_partial() {
    let env = Env::start().await;
    let c = env.client();
    let pi = c
        .create_payment_intent(&manual_intent(1000), Some("tx_1-create"))
        .await
        .unwrap();
    let id = pi["id"].as_str().unwrap().to_string();
    assert_eq!(pi["status"], "requires_payment_method");
    assert_eq!(pi["metadata"]["customid"], "c1");

    let confirmed = c
        .confirm_payment_intent(&id, &obj(json!({"payment_method": "pm_card_visa"})), None)
        .await
        .unwrap();
    assert_eq!(confirmed["status"], "requires_capture");

    let captured = c
        .capture_payment_intent(&id, Some(600), Some("tx_1-capture"))
        .await
        .unwrap();
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_received"], 600);

    // expand travels as expand[0]=… in the query string.
    let opts = RequestOptions {
        expand: vec!["latest_charge".into()],
        ..Default::default()
    };
    let path = format!("/v1/payment_intents/{id}");
    let expanded = c
        .request(Method::GET, &path, &Map::new(), opts)
        .await
        .unwrap();
    assert_eq!(expanded["latest_charge"]["object"], "charge");
    let charge_id = expanded["latest_charge"]["id"].as_str().unwrap();
    let charge = c.retrieve_charge(charge_id).await.unwrap();
    assert_eq!(charge["amount_captured"], 600);
    assert_eq!(
        c.retrieve_payment_intent(&id).await.unwrap()["status"],
        "succeeded"
    );

    let creates = env.seen("POST", "/v1/payment_intents");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].idempotency_key.as_deref(), Some("tx_1-create"));
    assert_eq!(
        creates[0].stripe_version.as_deref(),
        Some(CURRENT_API_VERSION)
    );
    assert!(
        creates[0]
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("Tollgate/")
    );
    assert_eq!(creates[0].stripe_account, None);
    // A POST without a caller's key still gets one (generated).
    let confirms = env.seen("POST", &format!("/v1/payment_intents/{id}/confirm"));
    assert!(
        confirms[0]
            .idempotency_key
            .as_deref()
            .unwrap()
            .starts_with("tollgate-")
    );
    // GETs carry no key.
    assert!(
        env.seen("GET", &path)
            .iter()
            .all(|s| s.idempotency_key.is_none())
    );
}

#[tokio::test]
async fn decline_is_a_card_error() {
    let env = Env::start().await;
    let c = env.client();
    let mut params = manual_intent(1000);
    params.insert("confirm".into(), json!(true));
    params.insert(
        "payment_method".into(),
        json!("pm_card_chargeDeclinedInsufficientFunds"),
    );
    let err = c.create_payment_intent(&params, None).await.unwrap_err();
    let api = err.api().expect("an API error");
    assert_eq!(api.status, 402);
    assert_eq!(api.kind, "card_error");
    assert_eq!(api.code.as_deref(), Some("card_declined"));
    assert_eq!(api.decline_code.as_deref(), Some("insufficient_funds"));
    assert!(api.request_id.as_deref().unwrap().starts_with("req_"));
    assert_eq!(
        api.raw["payment_intent"]["status"],
        "requires_payment_method"
    );
    assert!(err.is_card_error());
    assert!(!err.is_retryable_outage());
    // A decline is final: not retried.
    assert_eq!(env.seen("POST", "/v1/payment_intents").len(), 1);
}

#[tokio::test]
async fn rate_limit_is_retried_after_retry_after() {
    let env = Env::start().await;
    let c = StripeClient::new(ClientConfig {
        max_retries: 5,
        ..env.config()
    })
    .unwrap();
    let started = Instant::now();
    let pi = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(500),
            fault("429", Some(2)),
        )
        .await
        .unwrap();
    assert_eq!(pi["object"], "payment_intent");
    let seen = env.seen("POST", "/v1/payment_intents");
    assert_eq!(seen.len(), 3);
    one_key(&seen);
    // `Retry-After: 1`, capped at max_retry_delay (200 ms), was waited for twice; plain jitter
    // on a 10 ms base would have been far shorter.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rate_limit_exhausting_retries_is_an_outage() {
    let env = Env::start().await;
    let c = env.client();
    let err = c
        .request(
            Method::GET,
            "/v1/payment_intents",
            &Map::new(),
            fault("429", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.code(), Some("rate_limit"));
    assert!(err.is_retryable_outage());
    assert_eq!(env.seen("GET", "/v1/payment_intents").len(), 3);
}

#[tokio::test]
async fn server_error_marked_retryable_is_retried() {
    let env = Env::start().await;
    let c = env.client();
    let pi = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(700),
            fault("500-retry", Some(1)),
        )
        .await
        .unwrap();
    assert_eq!(pi["amount"], 700);
    let seen = env.seen("POST", "/v1/payment_intents");
    assert_eq!(seen.len(), 2);
    one_key(&seen);
}

#[tokio::test]
async fn plain_server_error_is_not_retried_and_replays_under_its_key() {
    let env = Env::start().await;
    let c = env.client();
    let opts = RequestOptions {
        idempotency_key: Some("tx_500".into()),
        ..fault("500", None)
    };
    let err = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(800),
            opts,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.kind(), Some("api_error"));
    assert!(err.is_retryable_outage());
    assert_eq!(env.seen("POST", "/v1/payment_intents").len(), 1);

    // Same key, no fault: Stripe replays the saved 500 instead of executing again.
    let again = c
        .create_payment_intent(&manual_intent(800), Some("tx_500"))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(500));
    assert_eq!(env.seen("POST", "/v1/payment_intents").len(), 2);
    let list = c.list("/v1/payment_intents", &Map::new()).await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn dropped_connection_is_retried_and_creates_once() {
    let env = Env::start().await;
    let c = env.client();
    let pi = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(900),
            fault("drop", Some(1)),
        )
        .await
        .unwrap();
    let seen = env.seen("POST", "/v1/payment_intents");
    assert_eq!(seen.len(), 2);
    one_key(&seen);
    let all = c
        .list_all("/v1/payment_intents", &Map::new(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], pi["id"]);
}

#[tokio::test]
async fn dropped_every_time_is_a_connection_outage() {
    let env = Env::start().await;
    let c = env.client();
    let err = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(900),
            fault("drop", None),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Connection(_)), "{err:?}");
    assert!(err.is_retryable_outage());
    let seen = env.seen("POST", "/v1/payment_intents");
    assert_eq!(seen.len(), 3);
    one_key(&seen);
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let env = Env::start().await;
    let c = StripeClient::new(ClientConfig {
        timeout: Duration::from_millis(500),
        max_retries: 1,
        ..env.config()
    })
    .unwrap();
    let pi = c
        .create_payment_intent(&manual_intent(100), None)
        .await
        .unwrap();
    let path = format!("/v1/payment_intents/{}", pi["id"].as_str().unwrap());

    // Slow once: the retry answers.
    let got = c
        .request(
            Method::GET,
            &path,
            &Map::new(),
            fault("latency=3000", Some(1)),
        )
        .await
        .unwrap();
    assert_eq!(got["id"], pi["id"]);
    assert_eq!(env.seen("GET", &path).len(), 2);

    // Slow every time: Timeout after both attempts, well before the sandbox would answer.
    let started = Instant::now();
    let err = c
        .request(Method::GET, &path, &Map::new(), fault("latency=3000", None))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.is_retryable_outage());
    assert_eq!(env.seen("GET", &path).len(), 4);
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn stripe_account_is_sent() {
    let env = Env::start().await;
    let platform = env.client();
    let acct = platform
        .request(
            Method::POST,
            "/v1/accounts",
            &obj(json!({"type": "standard"})),
            RequestOptions::default(),
        )
        .await
        .unwrap();
    let acct_id = acct["id"].as_str().unwrap().to_string();

    let connected = StripeClient::new(ClientConfig {
        stripe_account: Some(acct_id.clone()),
        ..env.config()
    })
    .unwrap();
    assert_eq!(
        connected.retrieve_account().await.unwrap()["id"],
        acct_id.as_str()
    );
    let pi = connected
        .create_payment_intent(&manual_intent(1200), None)
        .await
        .unwrap();
    let seen = env.seen("POST", "/v1/payment_intents");
    assert_eq!(seen[0].stripe_account.as_deref(), Some(acct_id.as_str()));

    // The intent lives on the connected account only.
    let id = pi["id"].as_str().unwrap();
    assert_eq!(
        platform
            .retrieve_payment_intent(id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    // A per-request override reaches it from the platform client.
    let opts = RequestOptions {
        stripe_account: Some(acct_id.clone()),
        ..Default::default()
    };
    let got = platform
        .request(
            Method::GET,
            &format!("/v1/payment_intents/{id}"),
            &Map::new(),
            opts,
        )
        .await
        .unwrap();
    assert_eq!(got["id"], id);
}

#[tokio::test]
async fn refunds_events_endpoints_and_paging() {
    let env = Env::start().await;
    let c = env.client();
    let mut params = manual_intent(1000);
    params.insert("confirm".into(), json!(true));
    params.insert("payment_method".into(), json!("pm_card_visa"));
    params.insert("capture_method".into(), json!("automatic"));
    let pi = c.create_payment_intent(&params, None).await.unwrap();
    assert_eq!(pi["status"], "succeeded");
    let pi_id = pi["id"].as_str().unwrap();

    let refund = c
        .create_refund(
            &obj(json!({"payment_intent": pi_id, "amount": 300})),
            Some("tx_1-refund-1"),
        )
        .await
        .unwrap();
    let refund_id = refund["id"].as_str().unwrap();
    assert_eq!(c.retrieve_refund(refund_id).await.unwrap()["amount"], 300);
    let refunds = c
        .list_refunds(&obj(json!({"payment_intent": pi_id})))
        .await
        .unwrap();
    assert_eq!(refunds["data"][0]["id"], refund_id);

    let events = c.list_events(&obj(json!({"limit": 3}))).await.unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap();
    assert_eq!(c.retrieve_event(event_id).await.unwrap()["id"], event_id);

    let customer = c
        .request(
            Method::POST,
            "/v1/customers",
            &obj(json!({"email": "a@example.com"})),
            RequestOptions::default(),
        )
        .await
        .unwrap();
    let cus = c
        .retrieve_customer(customer["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(cus["email"], "a@example.com");

    let hook = format!("{}/hook", env.base_url);
    let ep = c
        .create_webhook_endpoint(
            &obj(json!({"url": hook, "enabled_events": ["charge.dispute.closed"]})),
            None,
        )
        .await
        .unwrap();
    assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));
    let ep_id = ep["id"].as_str().unwrap();
    let updated = c
        .update_webhook_endpoint(ep_id, &obj(json!({"description": "tollgate"})))
        .await
        .unwrap();
    assert_eq!(updated["description"], "tollgate");
    let eps = c.list_webhook_endpoints(&Map::new()).await.unwrap();
    assert_eq!(eps["data"][0]["id"], ep_id);

    // Paging: 5 more intents, pages of 2, with and without a cap.
    for n in 0..5 {
        c.create_payment_intent(&manual_intent(100 + n), None)
            .await
            .unwrap();
    }
    let all = c
        .list_all("/v1/payment_intents", &obj(json!({"limit": 2})), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    let mut ids: Vec<_> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    let capped = c
        .list_all("/v1/payment_intents", &obj(json!({"limit": 2})), 3)
        .await
        .unwrap();
    assert_eq!(capped.len(), 3);
}

#[tokio::test]
async fn cancel_with_reason() {
    let env = Env::start().await;
    let c = env.client();
    let pi = c
        .create_payment_intent(&manual_intent(1000), None)
        .await
        .unwrap();
    let id = pi["id"].as_str().unwrap();
    let canceled = c
        .cancel_payment_intent(id, Some("requested_by_customer"), Some("tx_1-cancel"))
        .await
        .unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancellation_reason"], "requested_by_customer");
    let updated = c
        .update_payment_intent(id, &obj(json!({"metadata": {"a": "b"}})), None)
        .await
        .unwrap();
    assert_eq!(updated["metadata"]["a"], "b");
}

#[tokio::test]
async fn the_key_is_never_printed() {
    let env = Env::start().await;
    let key = env.key.clone();
    let c = env.client();
    let tail = &key[key.len() - 4..];
    for printed in [format!("{c:?}"), format!("{:?}", c.config())] {
        assert!(!printed.contains(&key), "{printed}");
        assert!(printed.contains(&format!("sk_test_…{tail}")), "{printed}");
    }

    // A rejected key: neither the error's Display nor its Debug carries it.
    let bad_key = "sk_live_0123456789abcdefghijKLMN";
    let bad = StripeClient::new(ClientConfig::new(bad_key))
        .unwrap()
        .with_config(ClientConfig {
            secret_key: bad_key.into(),
            ..env.config()
        })
        .unwrap();
    let err = bad.retrieve_account().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!format!("{err}").contains(bad_key));
    assert!(!format!("{err:?}").contains(bad_key));
}

#[tokio::test]
async fn paths_cannot_leave_the_base_url() {
    let env = Env::start().await;
    let c = env.client();
    let err = c
        .request(
            Method::GET,
            "@evil.example/v1/account",
            &Map::new(),
            RequestOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Config(_)), "{err:?}");
    // Ids are one path segment each: this asks for an odd id, not for the refunds list.
    let err = c
        .retrieve_payment_intent("pi_x/../../refunds")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.code(), Some("resource_missing"));
}

#[test]
fn masks() {
    assert_eq!(mask_key("sk_test_51Habcdefghijklmn4242"), "sk_test_…4242");
    assert_eq!(mask_key("rk_live_abcdefghijklmnopqrst"), "rk_live_…qrst");
    assert_eq!(mask_key("whsec_abcdefghijklmnop1234"), "whsec_…1234");
    assert_eq!(mask_key("sk_test_short"), "sk_test_…");
    assert_eq!(mask_key("nounderscoresatall"), "…tall");
    assert_eq!(mask_key(""), "…");
}

/// A POST whose answer is late: the retry finds the first request still running (409
/// `idempotency_key_in_use`, retried), then gets its saved result, so one PaymentIntent exists.
#[tokio::test]
async fn slow_create_is_retried_under_its_key() {
    let env = Env::start().await;
    let c = StripeClient::new(ClientConfig {
        timeout: Duration::from_millis(500),
        max_retries: 20,
        retry_base: Duration::from_millis(200),
        max_retry_delay: Duration::from_millis(400),
        ..env.config()
    })
    .unwrap();
    let pi = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(100),
            fault("latency=1500", Some(1)),
        )
        .await
        .unwrap();
    one_key(&env.seen("POST", "/v1/payment_intents"));
    let all = c
        .list_all("/v1/payment_intents", &Map::new(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], pi["id"]);
}

/// An earlier request under the same key still running at Stripe (its client went away) past
/// every retry: 409 `idempotency_key_in_use` is an outage (retry later with the same key), not
/// a refusal.
#[tokio::test]
async fn a_key_still_in_use_after_every_retry_is_an_outage() {
    let env = Env::start().await;
    let c = StripeClient::new(ClientConfig {
        timeout: Duration::from_millis(300),
        max_retries: 1,
        ..env.config()
    })
    .unwrap();
    let err = c
        .request(
            Method::POST,
            "/v1/payment_intents",
            &manual_intent(100),
            fault("latency=3000", Some(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    assert_eq!(err.code(), Some("idempotency_key_in_use"));
    assert!(err.is_retryable_outage());
    one_key(&env.seen("POST", "/v1/payment_intents"));
}
