//! Nothing panics on any input: random methods, paths, headers and form bodies go through the
//! real router, and every answer is one of Stripe's statuses with Stripe's error shape.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tower::ServiceExt;

const PATHS: &[&str] = &[
    "/v1/customers",
    "/v1/customers/cus_x",
    "/v1/products",
    "/v1/prices",
    "/v1/payment_intents",
    "/v1/payment_intents/pi_x/confirm",
    "/v1/payment_intents/pi_x/capture",
    "/v1/payment_intents/pi_x/cancel",
    "/v1/refunds",
    "/v1/charges",
    "/v1/disputes/dp_x",
    "/v1/disputes/dp_x/close",
    "/v1/events",
    "/v1/webhook_endpoints",
    "/v1/payment_methods",
    "/v1/payment_methods/pm_card_visa/attach",
    "/v1/accounts",
    "/v1/test_helpers/customers/cus_x/fund_cash_balance",
    "/v1/nope",
    "/_sandbox/state",
    "/_sandbox/faults",
    "/_sandbox/chaos",
    "/_sandbox/restricted_keys",
    "/_sandbox/authenticate/pi_x",
    "/_sandbox/payment_intents/pi_x/authenticate",
];

const KEYS: &[&str] = &[
    "amount",
    "currency",
    "confirm",
    "payment_method",
    "payment_method_data",
    "metadata",
    "capture_method",
    "customer",
    "limit",
    "starting_after",
    "ending_before",
    "created",
    "expand",
    "amount_to_capture",
    "cancellation_reason",
    "charge",
    "payment_intent",
    "url",
    "enabled_events",
    "evidence",
    "type",
    "name",
    "product",
    "unit_amount",
    "recurring",
    "email",
];

fn key() -> impl Strategy<Value = String> {
    (
        prop::sample::select(KEYS),
        prop::collection::vec(
            prop::sample::select(&["", "[]", "[0]", "[a]", "[gte]", "[number]", "[", "]"][..]),
            0..3,
        ),
    )
        .prop_map(|(k, suffixes)| format!("{k}{}", suffixes.concat()))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("usd".to_string()),
        Just("pm_card_visa".to_string()),
        Just("pm_card_chargeDeclined".to_string()),
        Just("true".to_string()),
        "-?[0-9]{1,20}",
        ".{0,12}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec((key(), value()), 0..8).prop_map(|pairs| {
            let mut s = form_urlencoded_pairs(&pairs);
            s.truncate(4000);
            s.into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn form_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", k, v.replace('&', "%26").replace('=', "%3D")))
        .collect::<Vec<_>>()
        .join("&")
}

/// Authorization header variants; index `n` picks one.
fn auth(sk: &str, n: usize) -> Option<String> {
    let all = [
        None,
        Some(format!("Bearer {sk}")),
        Some("Bearer sk_test_abcdefghijklmnop".to_string()),
        Some("Bearer pk_test_abcdefghijklmnop".to_string()),
        Some("Bearer rk_test_nope".to_string()),
        Some("Basic !!!".to_string()),
        Some("Bearer sk_live_abcdefghijklmnop".to_string()),
    ];
    all[n % all.len()].clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_requests_never_panic_or_500(
        method in prop::sample::select(&["GET", "POST", "DELETE", "PUT"][..]),
        path in prop::sample::select(PATHS),
        query in prop::option::of(prop::collection::vec((key(), value()), 0..4)),
        body in body(),
        auth_choice in 0usize..7,
        idem in prop::option::of("[ -~]{0,300}"),
        account in prop::option::of(prop_oneof![Just("acct_nope".to_string()), ".{0,10}"]),
        version in prop::option::of(".{0,16}"),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
            let sk = sandbox.secret_key();
            let auth = auth(&sk, auth_choice);
            let uri = match &query {
                Some(q) => format!("{path}?{}", form_urlencoded_pairs(q)),
                None => path.to_string(),
            };
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(a) = &auth && let Ok(v) = axum::http::HeaderValue::from_str(a) {
                req = req.header("authorization", v);
            }
            for (name, val) in [("idempotency-key", &idem), ("stripe-account", &account), ("stripe-version", &version)] {
                if let Some(v) = val && let Ok(v) = axum::http::HeaderValue::from_str(v) {
                    req = req.header(name, v);
                }
            }
            let Ok(req) = req.body(Body::from(body)) else { return };
            let resp = sandbox.router().oneshot(req).await.unwrap();
            let status = resp.status();
            assert!(
                [200, 303, 400, 401, 402, 403, 404, 405, 409, 413, 415, 429].contains(&status.as_u16()),
                "unexpected status {status}"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            if status.is_client_error() && path.starts_with("/v1") {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert!(v["error"]["type"].is_string(), "{v}");
                assert!(v["error"]["message"].is_string(), "{v}");
            }
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        });
    }
}
