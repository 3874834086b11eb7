//! State written to `--state-file` is what a restarted sandbox starts from.

use axum::body::Body;
use axum::http::Request;
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tower::ServiceExt;

async fn call(sb: &Sandbox, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", sb.secret_key()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = sb.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let config = SandboxConfig {
        state_file: Some(file.clone()),
        strict_keys: true,
        ..SandboxConfig::default()
    };
    let first = Sandbox::start(config.clone()).unwrap();
    let (s, cus) = call(
        &first,
        "POST",
        "/v1/customers",
        "email=a%40example.com&metadata[customid]=u1",
    )
    .await;
    assert_eq!(s, 200);
    let (s, pi) = call(
        &first,
        "POST",
        "/v1/payment_intents",
        "amount=500&currency=usd&payment_method=pm_card_visa&confirm=true&capture_method=manual",
    )
    .await;
    assert_eq!(s, 200, "{pi}");
    first.flush().unwrap();
    let key = first.secret_key();
    drop(first);

    let second = Sandbox::start(config).unwrap();
    assert_eq!(second.secret_key(), key, "the printed keys stay the same");
    let (s, again) = call(
        &second,
        "GET",
        &format!("/v1/customers/{}", cus["id"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(again["metadata"]["customid"], "u1");
    let (s, captured) = call(
        &second,
        "POST",
        &format!("/v1/payment_intents/{}/capture", pi["id"].as_str().unwrap()),
        "amount_to_capture=300",
    )
    .await;
    assert_eq!(s, 200, "{captured}");
    assert_eq!(captured["amount_received"], 300);
}

#[tokio::test]
async fn a_corrupt_state_file_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, b"{not json").unwrap();
    let err = Sandbox::start(SandboxConfig {
        state_file: Some(file.clone()),
        ..SandboxConfig::default()
    });
    assert!(
        matches!(err, Err(tollgate_sandbox::Error::InvalidState { ref path, .. }) if *path == file),
        "{:?}",
        err.err()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"{not json");
}

/// The state file holds the sandbox's keys and signing secrets: owner only (mode 0600).
#[cfg(unix)]
#[tokio::test]
async fn the_state_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let sb = Sandbox::start(SandboxConfig {
        state_file: Some(file.clone()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let (s, _) = call(&sb, "POST", "/v1/customers", "email=b%40example.com").await;
    assert_eq!(s, 200);
    sb.flush().unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}
