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
