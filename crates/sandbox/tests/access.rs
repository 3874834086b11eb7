//! Who may use the sandbox: which API keys open it (any well-formed test key, as Stripe's own
//! fakes write them, or in strict mode only the sandbox's own keys), and who may use the control
//! API (the control key, or a direct loopback peer when the sandbox is reachable on loopback
//! only).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tollgate_sandbox::{Sandbox, SandboxConfig, reachable_only_locally};
use tower::ServiceExt;

const LOOPBACK_PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);

/// One request through the router from a loopback peer; returns the status and the JSON body.
async fn call(
    sandbox: &Sandbox,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(LOOPBACK_PEER)));
    let resp = sandbox.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn list_customers(sandbox: &Sandbox, key: &str) -> StatusCode {
    let auth = format!("Bearer {key}");
    call(
        sandbox,
        "GET",
        "/v1/customers?limit=1",
        &[("authorization", &auth)],
        "",
    )
    .await
    .0
}

#[tokio::test]
async fn any_well_formed_test_key_works_like_stripes_fakes() {
    let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
    // `sk_test_123` is the key of Stripe's docs and of stripe-mock's examples.
    for key in [
        "sk_test_123",
        "sk_test_x",
        "sk_test_51HabcdefghijklmnopQRSTUV0123456789",
    ] {
        assert_eq!(list_customers(&sandbox, key).await, StatusCode::OK, "{key}");
    }
    // Basic auth, as Stripe's libraries and curl -u send it.
    let (status, _) = call(
        &sandbox,
        "GET",
        "/v1/customers",
        &[("authorization", "Basic c2tfdGVzdF8xMjM6")], // sk_test_123:
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for key in ["sk_test_", "sk_test_a_b", "sk_live_123", "rk_test_123"] {
        assert_eq!(
            list_customers(&sandbox, key).await,
            StatusCode::UNAUTHORIZED,
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn strict_keys_accept_only_the_sandboxs_own() {
    let sandbox = Sandbox::start(SandboxConfig {
        strict_keys: true,
        ..SandboxConfig::default()
    })
    .unwrap();
    for key in ["sk_test_123", "sk_test_abcdefghijklmnopqrstuvwx"] {
        let auth = format!("Bearer {key}");
        let (status, body) = call(
            &sandbox,
            "GET",
            "/v1/payment_intents",
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        list_customers(&sandbox, &sandbox.secret_key()).await,
        StatusCode::OK
    );
    // A restricted key the sandbox made is its own too.
    let (status, made) = call(
        &sandbox,
        "POST",
        "/_sandbox/restricted_keys",
        &[("content-type", "application/json")],
        r#"{"permissions": {"customers": "read"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let rk = made["key"].as_str().unwrap();
    assert_eq!(list_customers(&sandbox, rk).await, StatusCode::OK);
}

#[tokio::test]
async fn the_control_api_trusts_loopback_only_when_told_and_never_a_relayed_request() {
    let open = Sandbox::start(SandboxConfig::default()).unwrap();
    assert_eq!(
        call(&open, "GET", "/_sandbox/state", &[], "").await.0,
        StatusCode::OK
    );
    // A reverse proxy on the same host connects from loopback too; its headers give it away.
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let (status, body) = call(&open, "GET", "/_sandbox/state", &[(header, "1")], "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{header}: {body}");
    }

    // Reachable from elsewhere: the key is needed, even from loopback.
    let closed = Sandbox::start(SandboxConfig {
        control_key: Some("control-key-0123456789".into()),
        trust_loopback: false,
        ..SandboxConfig::default()
    })
    .unwrap();
    let (status, body) = call(&closed, "POST", "/_sandbox/reset", &[], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Sandbox-Control-Key")
    );
    let wrong = [("x-sandbox-control-key", "control-key-x")];
    assert_eq!(
        call(&closed, "GET", "/_sandbox/state", &wrong, "").await.0,
        StatusCode::FORBIDDEN
    );
    let right = [("x-sandbox-control-key", "control-key-0123456789")];
    assert_eq!(
        call(&closed, "GET", "/_sandbox/state", &right, "").await.0,
        StatusCode::OK
    );
    // Without a configured key nothing opens it.
    let no_key = Sandbox::start(SandboxConfig {
        trust_loopback: false,
        ..SandboxConfig::default()
    })
    .unwrap();
    let empty = [("x-sandbox-control-key", "")];
    assert_eq!(
        call(&no_key, "GET", "/_sandbox/state", &empty, "").await.0,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn reachable_only_locally_needs_a_loopback_address_and_public_url() {
    let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    assert!(reachable_only_locally(lo, "http://127.0.0.1:8080"));
    assert!(reachable_only_locally(lo, "http://localhost:8080/"));
    assert!(reachable_only_locally(lo6, "http://[::1]:8080"));
    assert!(!reachable_only_locally(any, "http://127.0.0.1:8080"));
    // Behind a reverse proxy: listening on loopback, reached at a public name.
    assert!(!reachable_only_locally(lo, "https://pay.example.com"));
    assert!(!reachable_only_locally(lo, "http://10.0.0.5:8080"));
    assert!(!reachable_only_locally(lo, "not a url"));
}
