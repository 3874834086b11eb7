//! The built-in sandbox inside `tollgate serve` is no open door: only the keys Tollgate holds
//! (the pair `serve` prints, which its sandbox connection uses) open it unless
//! `--sandbox-any-test-key` relaxes that for local scripts, and its control API needs
//! `TOLLGATE_SANDBOX_CONTROL_KEY` unless the server is reachable on loopback only.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

mod common;
use common::{Proc, free_port, serve_command, wait_until_up};

const CONTROL_KEY: &str = "sandbox-control-key-0123456789";

struct Serve {
    _proc: Proc,
    base: String,
    secret_key: String,
    publishable_key: String,
    _dir: tempfile::TempDir,
}

/// `tollgate serve` on 127.0.0.1 (SQLite in a fresh data directory) with `extra` flags and
/// environment; returns once it answers `/healthz`.
async fn serve(extra: &[&str], env: &[(&str, &str)]) -> Serve {
    tollgate_stripe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut cmd = serve_command(dir.path(), port, None);
    cmd.args(["--sandbox", "true"])
        .args(extra)
        .env_remove("TOLLGATE_SANDBOX_CONTROL_KEY")
        .env_remove("TOLLGATE_SANDBOX_ANY_TEST_KEY")
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting tollgate serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let (mut sk, mut pk) = (String::new(), String::new());
    while sk.is_empty() || pk.is_empty() {
        let line = lines
            .next()
            .expect("serve printed its sandbox keys")
            .expect("utf-8");
        if let Some(k) = line.strip_prefix("sandbox secret key: ") {
            sk = k.trim().to_string();
        } else if let Some(k) = line.strip_prefix("sandbox publishable key: ") {
            pk = k.trim().to_string();
        }
    }
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base, "/healthz").await;
    Serve {
        _proc: Proc(child),
        base,
        secret_key: sk,
        publishable_key: pk,
        _dir: dir,
    }
}

impl Serve {
    /// A Stripe call to the mounted sandbox with `key`: (status, body).
    async fn stripe(
        &self,
        method: &str,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = format!("{}/sandbox/stripe{path}", self.base);
        let rb = match method {
            "GET" => reqwest::Client::new().get(url),
            _ => reqwest::Client::new().post(url).form(form),
        };
        let r = rb
            .bearer_auth(key)
            .send()
            .await
            .expect("the sandbox answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A control API call (`GET /_sandbox/state`), with the control key header if given.
    async fn control(&self, key: Option<&str>) -> u16 {
        let mut rb =
            reqwest::Client::new().get(format!("{}/sandbox/stripe/_sandbox/state", self.base));
        if let Some(k) = key {
            rb = rb.header("x-sandbox-control-key", k);
        }
        rb.send()
            .await
            .expect("the sandbox answers")
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_keys_tollgate_holds_open_the_sandbox() {
    let s = serve(&[], &[]).await;
    let (status, pi) = s
        .stripe(
            "POST",
            "/v1/payment_intents",
            &s.secret_key,
            &[("amount", "1299"), ("currency", "usd")],
        )
        .await;
    assert_eq!(status, 200, "{pi}");
    let pi_id = pi["id"].as_str().unwrap();
    assert!(pi["client_secret"].as_str().is_some());
    // Made-up test keys, however well-formed, read nothing: not the intent, not the list.
    for key in ["sk_test_123", "sk_test_abcdefghijklmnopqrstuvwx"] {
        let (status, body) = s
            .stripe("GET", &format!("/v1/payment_intents/{pi_id}"), key, &[])
            .await;
        assert_eq!(status, 401, "{key}: {body}");
        assert!(!body.to_string().contains("_secret_"), "{body}");
        let (status, _) = s.stripe("GET", "/v1/payment_intents", key, &[]).await;
        assert_eq!(status, 401, "{key}");
    }
    let (status, _) = s
        .stripe(
            "GET",
            "/v1/payment_intents",
            "pk_test_abcdefghijklmnop",
            &[],
        )
        .await;
    assert_eq!(status, 401);
    let (status, listed) = s
        .stripe("GET", "/v1/payment_intents", &s.secret_key, &[])
        .await;
    assert_eq!(status, 200, "{listed}");
    // The printed publishable key still confirms with the client secret (the hosted page).
    let secret = pi["client_secret"].as_str().unwrap();
    let (status, body) = s
        .stripe(
            "POST",
            &format!("/v1/payment_intents/{pi_id}/confirm"),
            &s.publishable_key,
            &[
                ("client_secret", secret),
                ("payment_method", "pm_card_visa"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Listening on loopback only, with a loopback public URL: the control API answers.
    assert_eq!(s.control(None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_scripts_may_relax_keys_and_a_proxied_server_needs_the_control_key() {
    // Reached at a public URL (a reverse proxy on this host relays to the loopback listener):
    // every proxied request comes from loopback, so loopback no longer opens the control API.
    let s = serve(
        &[
            "--sandbox-any-test-key",
            "--public-url",
            "http://tollgate.invalid",
        ],
        &[("TOLLGATE_SANDBOX_CONTROL_KEY", CONTROL_KEY)],
    )
    .await;
    let (status, body) = s
        .stripe("GET", "/v1/payment_intents", "sk_test_123", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.control(None).await, 403);
    assert_eq!(s.control(Some("wrong-key")).await, 403);
    assert_eq!(s.control(Some(CONTROL_KEY)).await, 200);
    drop(s);

    // Without a control key such a server keeps the control API closed.
    let s = serve(&["--public-url", "http://tollgate.invalid"], &[]).await;
    assert_eq!(s.control(None).await, 403);
    assert_eq!(s.control(Some("")).await, 403);
    let (status, _) = s
        .stripe("GET", "/v1/payment_intents", "sk_test_123", &[])
        .await;
    assert_eq!(status, 401);
}
