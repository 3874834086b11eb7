//! `tollgate demo` (SPEC §11) runs the real binary end to end: it starts its own server with
//! the built-in sandbox, walks through a payment and a subscription, and must exit 0 having
//! printed every step with the permission answer after each.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

#[test]
fn demo_walks_through_every_step_and_exits_zero() {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "--timeout-secs", "60"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running tollgate demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tollgate demo exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    // Every step, in order.
    let steps = [
        "==> 1. the catalogue",
        "==> 2. a payment: create a transaction",
        "==> 3. the buyer approves on the hosted page",
        "==> 4. capture",
        "==> 5. refund",
        "==> 6. a subscription",
        "==> 7. the test clock passes the period end",
        "==> 8. the renewal is refunded in full",
        "demo finished: all 8 steps succeeded",
    ];
    let mut at = 0;
    for s in steps {
        let found = stdout[at..]
            .find(s)
            .unwrap_or_else(|| panic!("missing {s:?} (in order) in:\n{stdout}"));
        at += found + s.len();
    }
    // What each step shows.
    for want in [
        "transaction_status=authorization_succeeded",
        "capture_succeeded, captured_amount 1000",
        "refunded_amount 300",
        r#""identifier":"premium","is_valid":true,"entitlement":5"#,
        "=> premium, renewed to the new period end",
        r#""identifier":"premium","is_valid":false,"entitlement":-8"#,
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // The permission check is printed after the steps that change it, and before any purchase
    // the answer is empty.
    assert!(
        stdout
            .matches("GET /v1/permissions?customid=demo-user-7")
            .count()
            >= 5
    );
    assert!(stdout.contains(r#"{"customid":"demo-user-7","permissions":[]}"#));
}

/// A server whose standard output is closed before it prints (a parent that stopped reading, as
/// the demo once did) keeps serving: its status lines never take it down.
#[tokio::test]
async fn serve_goes_on_when_its_stdout_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tollgate serve");
    // Closing the read end now: every line the server prints meets a broken pipe.
    drop(child.stdout.take());
    let base = format!("http://127.0.0.1:{port}");
    tollgate_stripe::install_crypto_provider();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let key_file = dir.path().join("first-secret-key");
    let ok = loop {
        assert!(
            child.try_wait().expect("child status").is_none(),
            "the server exited when its stdout was closed"
        );
        if let Ok(key) = std::fs::read_to_string(&key_file)
            && http
                .get(format!("{base}/v1/skus"))
                .bearer_auth(key.trim())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The key is stored after its file is written and the line printed after that: still up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = child.try_wait().expect("child status").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "the server never answered with its first key");
    assert!(alive, "the server exited after its first-key line");
}
