//! `tollgate demo`: a scripted walk through the whole product against the built-in sandbox
//! (SPEC §11), printing every step: a payment through the hosted flow, its capture and a
//! refund; then a subscription bought through Checkout, renewed by a Stripe test clock and
//! refunded, with the app's permission check (`GET /v1/permissions`) after each step.
//!
//! It starts its own server (this binary's `serve`, with the built-in sandbox, on a free port and
//! a temporary data directory, SQLite) as a child process, and then uses only public HTTP APIs:
//! Tollgate's API and the sandbox's Stripe wire protocol (plus the sandbox's buyer action that
//! completes a Checkout Session, which is what the buyer's browser does on the hosted page).
//! The public key is made with `tollgate keys create --kind public`, as an operator would.
//! Any step that does not give what it should stops the demo with an error (exit status 1).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the temporary data directory (database, server log) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Seconds to wait for each asynchronous outcome (webhooks, test clock) before failing.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// The server child process and its data directory, stopped and removed when dropped (also on
/// an error path).
struct Server {
    child: Child,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.keep {
            println!("data directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What the demo talks to.
struct Demo {
    http: reqwest::Client,
    base: String,
    sandbox: String,
    secret_key: String,
    public_key: String,
    stripe_key: String,
    publishable_key: String,
    timeout: Duration,
    step: u32,
}

const CUSTOMID: &str = "demo-user-7";
const PERMISSION: &str = "premium";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (server, lines) = start_server(args.keep)?;
    let http = reqwest::Client::builder()
        // The completion page answers 303 to the merchant's site: shown, not followed.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .context("http client")?;
    let base = lines.base.clone();
    let secret_key = wait_ready(&http, &base, &server.dir, args.timeout_secs).await?;
    let public_key = public_key(&server.dir)?;
    let mut demo = Demo {
        http,
        sandbox: format!("{base}/sandbox/stripe"),
        base,
        secret_key,
        public_key,
        stripe_key: lines.sandbox_secret_key,
        publishable_key: lines.sandbox_publishable_key,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        step: 0,
    };
    println!(
        "Tollgate demo: a server with the built-in Stripe sandbox at {}",
        demo.base
    );
    println!("  data directory {} (SQLite)", server.dir.display());
    println!(
        "  secret API key tg_sk_… (from first-secret-key), public SDK key tg_pk_… (tollgate keys create --kind public)"
    );
    let result = demo.walk().await;
    let mut server = server;
    if result.is_err() {
        // Keep the server's log (and database) for whoever looks into the failure.
        server.keep = true;
        println!("server log: {}", server.dir.join("serve.log").display());
    }
    drop(server);
    match result {
        Ok(()) => {
            println!();
            println!("demo finished: all {} steps succeeded", demo.step);
            Ok(())
        }
        Err(e) => Err(e.context(format!("demo step {} failed", demo.step))),
    }
}

impl Demo {
    async fn walk(&mut self) -> anyhow::Result<()> {
        // ---- the catalogue ----
        self.title(
            "the catalogue: a monthly plan in Stripe, sold as SKU web_monthly, granting 'premium'",
        );
        let price = self
            .stripe(
                Method::POST,
                "/v1/prices",
                &[
                    ("currency", "usd"),
                    ("unit_amount", "999"),
                    ("recurring[interval]", "month"),
                    ("product_data[name]", "Premium (monthly)"),
                ],
            )
            .await?;
        let price_id = str_of(&price, "id")?;
        let product = str_of(&price, "product")?;
        println!("  Stripe price {price_id} of product {product}: 9.99 USD a month");
        self.api(
            Method::POST,
            "/v1/skus",
            json!({"identifier": "web_monthly", "store": "stripe", "product_id": product, "kind": "subscription"}),
            StatusCode::CREATED,
        )
        .await?;
        self.api(
            Method::POST,
            "/v1/permissions/definitions",
            json!({"identifier": PERMISSION, "skus": ["web_monthly"]}),
            StatusCode::CREATED,
        )
        .await?;
        println!("  POST /v1/skus, POST /v1/permissions/definitions: premium = [web_monthly]");
        let p = self.permissions().await?;
        expect_absent(&p)?;

        // ---- a payment through the hosted flow ----
        self.title("a payment: create a transaction (redirect flow, authorize 12.99 USD)");
        let tx = self
            .api(
                Method::POST,
                "/transactions",
                json!({"amount": 1299, "currency": "USD", "intent": "authorize", "customid": CUSTOMID,
                       "payment_method": {"method": "stripe", "redirect_url": "https://shop.example/callback"}}),
                StatusCode::CREATED,
            )
            .await?;
        let tx_id = str_of(&tx, "id")?;
        let approval_url = tx["payment_method"]["approval_url"]
            .as_str()
            .ok_or_else(|| anyhow!("the transaction has no payment_method.approval_url: {tx}"))?
            .to_string();
        let pi = tx["additional_identifiers"]["payment_id"]
            .as_str()
            .ok_or_else(|| anyhow!("the transaction has no additional_identifiers.payment_id"))?
            .to_string();
        let client_secret = str_of(&tx, "payment_service_transaction_id")?;
        expect_eq(&tx["status"], "buyer_approval_pending", "status")?;
        println!("  transaction {tx_id}: buyer_approval_pending, PaymentIntent {pi}");
        println!("  approval URL: {approval_url}");

        self.title("the buyer approves on the hosted page (the sandbox's card form, card 4242…)");
        let page = self
            .http
            .get(&approval_url)
            .send()
            .await
            .context("opening the approval page")?;
        if page.status() != StatusCode::OK {
            bail!("the approval page answered {}", page.status());
        }
        println!("  GET approval URL: 200, the hosted payment page");
        // What the page's Stripe.js does on "Pay": confirm with the publishable key.
        let confirmed = self
            .stripe_as(
                &self.publishable_key.clone(),
                &format!("/v1/payment_intents/{pi}/confirm"),
                &[
                    ("client_secret", client_secret.as_str()),
                    ("payment_method", "pm_card_visa"),
                    ("return_url", &format!("{}/pay/{tx_id}/complete", self.base)),
                ],
            )
            .await?;
        println!(
            "  POST {}/v1/payment_intents/{pi}/confirm (publishable key): {}",
            self.sandbox,
            confirmed["status"].as_str().unwrap_or("?")
        );
        let back = self
            .http
            .get(format!(
                "{}/pay/{tx_id}/complete?payment_intent={pi}&payment_intent_client_secret={client_secret}",
                self.base
            ))
            .send()
            .await
            .context("the completion page")?;
        let location = back
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if back.status() != StatusCode::SEE_OTHER
            || !location.contains("transaction_status=authorization_succeeded")
        {
            bail!(
                "the completion page answered {} to {location:?}, not 303 to …transaction_status=authorization_succeeded",
                back.status()
            );
        }
        println!("  the browser lands on /pay/{tx_id}/complete: 303 to {location}");
        let tx = self
            .wait_transaction(&tx_id, "authorization_succeeded")
            .await?;
        println!(
            "  GET /transactions/{tx_id}: authorization_succeeded, authorized_amount {}",
            tx["authorized_amount"]
        );
        let p = self.permissions().await?;
        expect_absent(&p)?;
        println!("  (a payment without a SKU grants no permission)");

        self.title("capture 10.00 of the 12.99 authorized");
        self.api(
            Method::POST,
            &format!("/transactions/{tx_id}/capture"),
            json!({"amount": 1000}),
            StatusCode::OK,
        )
        .await?;
        let tx = self.wait_transaction(&tx_id, "capture_succeeded").await?;
        println!(
            "  capture_succeeded, captured_amount {}",
            tx["captured_amount"]
        );

        self.title("refund 3.00 of it");
        let refund = self
            .api(
                Method::POST,
                &format!("/transactions/{tx_id}/refunds"),
                json!({"amount": 300}),
                StatusCode::CREATED,
            )
            .await?;
        println!(
            "  refund {}: {}, amount {}",
            refund["id"].as_str().unwrap_or("?"),
            refund["status"].as_str().unwrap_or("?"),
            refund["amount"]
        );
        let tx = self
            .wait(
                "the refund on the transaction",
                || self.get_transaction(&tx_id),
                |t| t["refunded_amount"] == json!(300),
            )
            .await?;
        println!(
            "  GET /transactions/{tx_id}: {}, refunded_amount {}",
            tx["status"].as_str().unwrap_or("?"),
            tx["refunded_amount"]
        );

        // ---- a subscription through Checkout, on a test clock ----
        self.title(
            "a subscription: the buyer (on a Stripe test clock) checks out the monthly plan",
        );
        let now = unix_now();
        let clock = self
            .stripe(
                Method::POST,
                "/v1/test_helpers/test_clocks",
                &[("frozen_time", &now.to_string()), ("name", "tollgate demo")],
            )
            .await?;
        let clock_id = str_of(&clock, "id")?;
        let customer = self
            .stripe(
                Method::POST,
                "/v1/customers",
                &[
                    ("email", "demo-user-7@example.com"),
                    ("test_clock", &clock_id),
                ],
            )
            .await?;
        let cus = str_of(&customer, "id")?;
        let session = self
            .stripe(
                Method::POST,
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", &cus),
                    ("line_items[0][price]", &price_id),
                    ("line_items[0][quantity]", "1"),
                    ("metadata[customid]", CUSTOMID),
                    ("success_url", "https://shop.example/welcome"),
                ],
            )
            .await?;
        let cs = str_of(&session, "id")?;
        println!(
            "  test clock {clock_id}, customer {cus}, Checkout Session {cs} (metadata.customid = {CUSTOMID})"
        );
        println!(
            "  hosted checkout page: {}",
            session["url"].as_str().unwrap_or("?")
        );
        let done = self
            .control(
                &format!("/_sandbox/checkout_sessions/{cs}/complete"),
                json!({"payment_method": "pm_card_visa"}),
            )
            .await?;
        let sub_id = str_of(&done, "subscription")?;
        let sub = self
            .stripe(Method::GET, &format!("/v1/subscriptions/{sub_id}"), &[])
            .await?;
        let end = period_end(&sub)?;
        println!(
            "  the buyer pays: session {}, subscription {sub_id} {}, period ends {}",
            done["payment_status"].as_str().unwrap_or("?"),
            sub["status"].as_str().unwrap_or("?"),
            tollgate_server::entitlements::rfc3339_secs(end)
        );
        self.wait_renewing("premium, renewing to the period end", end)
            .await?;

        self.title("the test clock passes the period end: Stripe renews and charges the card");
        self.stripe(
            Method::POST,
            &format!("/v1/test_helpers/test_clocks/{clock_id}/advance"),
            &[("frozen_time", &(end + 3600).to_string())],
        )
        .await?;
        let clock_path = format!("/v1/test_helpers/test_clocks/{clock_id}");
        self.wait(
            "the test clock to be ready",
            || self.stripe(Method::GET, &clock_path, &[]),
            |c| c["status"] == "ready",
        )
        .await?;
        let sub = self
            .stripe(Method::GET, &format!("/v1/subscriptions/{sub_id}"), &[])
            .await?;
        let end2 = period_end(&sub)?;
        let invoice = str_of(&sub, "latest_invoice")?;
        println!(
            "  clock at {}: subscription {}, new period ends {}, renewal invoice {invoice}",
            tollgate_server::entitlements::rfc3339_secs(end + 3600),
            sub["status"].as_str().unwrap_or("?"),
            tollgate_server::entitlements::rfc3339_secs(end2)
        );
        self.wait_renewing("premium, renewed to the new period end", end2)
            .await?;

        self.title("the renewal is refunded in full: the permission is revoked");
        let payments = self
            .stripe(
                Method::GET,
                &format!("/v1/invoice_payments?invoice={invoice}"),
                &[],
            )
            .await?;
        let renewal_pi = payments["data"][0]["payment"]["payment_intent"]
            .as_str()
            .ok_or_else(|| anyhow!("the renewal invoice {invoice} has no payment intent"))?
            .to_string();
        let refund = self
            .stripe(
                Method::POST,
                "/v1/refunds",
                &[("payment_intent", &renewal_pi)],
            )
            .await?;
        println!(
            "  Stripe refund {} of {renewal_pi}: {}, amount {}",
            refund["id"].as_str().unwrap_or("?"),
            refund["status"].as_str().unwrap_or("?"),
            refund["amount"]
        );
        self.wait_permission("premium revoked (refunded)", |p| {
            p["is_valid"] == json!(false) && p["entitlement"] == json!(-8)
        })
        .await?;
        Ok(())
    }

    fn title(&mut self, what: &str) {
        self.step += 1;
        println!();
        println!("==> {}. {what}", self.step);
    }

    /// A Tollgate API call with the secret key; any other status than `want` is an error.
    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        answer(r, want, &format!("{method} {path}")).await
    }

    async fn get_transaction(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/transactions/{id}");
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        answer(r, StatusCode::OK, &format!("GET {path}")).await
    }

    async fn wait_transaction(&self, id: &str, status: &str) -> anyhow::Result<Value> {
        self.wait(
            &format!("transaction {id} to be {status}"),
            || self.get_transaction(id),
            |t| t["status"] == status,
        )
        .await
    }

    /// A Stripe call to the sandbox with its secret key (form-encoded, Stripe's wire protocol).
    async fn stripe(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.sandbox);
        let mut req = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.stripe_key);
        if method != Method::GET {
            req = req.form(form);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("Stripe {method} {path}"))?;
        answer(r, StatusCode::OK, &format!("Stripe {method} {path}")).await
    }

    async fn stripe_as(
        &self,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.sandbox))
            .bearer_auth(key)
            .form(form)
            .send()
            .await
            .with_context(|| format!("Stripe POST {path}"))?;
        answer(r, StatusCode::OK, &format!("Stripe POST {path}")).await
    }

    /// A buyer action of the sandbox (what its hosted Checkout page does on "Pay").
    async fn control(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        answer(r, StatusCode::OK, &format!("POST {path}")).await
    }

    /// `GET /v1/permissions?customid=…` with the public key, printed.
    async fn permissions(&self) -> anyhow::Result<Value> {
        let body = self.read_permissions().await?;
        println!(
            "  GET /v1/permissions?customid={CUSTOMID} (public key) -> {}",
            compact(&body)
        );
        Ok(body)
    }

    async fn read_permissions(&self) -> anyhow::Result<Value> {
        let r = self
            .http
            // The customid is made of URL-safe characters: no escaping needed.
            .get(format!("{}/v1/permissions?customid={CUSTOMID}", self.base))
            .bearer_auth(&self.public_key)
            .send()
            .await
            .context("GET /v1/permissions")?;
        answer(r, StatusCode::OK, "GET /v1/permissions").await
    }

    /// Waits until the permission satisfies `ok` (webhooks are asynchronous), then prints it.
    async fn wait_permission(&self, what: &str, ok: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        self.wait(
            what,
            || self.read_permissions(),
            |b| premium(b).is_some_and(&ok),
        )
        .await?;
        self.permissions().await?;
        println!("  => {what}");
        Ok(())
    }

    /// Waits until `premium` is held, renewing (code 5), to `end`.
    async fn wait_renewing(&self, what: &str, end: i64) -> anyhow::Result<()> {
        self.wait_permission(what, |p| {
            p["is_valid"] == json!(true)
                && p["entitlement"] == json!(5)
                && p["expires_date"] == json!(end)
        })
        .await
    }

    /// Polls `read` until `ok`, for at most the demo's timeout.
    async fn wait<F, Fut>(
        &self,
        what: &str,
        read: F,
        ok: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Value>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let last = read().await?;
            if ok(&last) {
                return Ok(last);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {}s waiting for {what}; last answer: {}",
                    self.timeout.as_secs(),
                    compact(&last)
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

/// The body of an answer with status `want`, else an error naming what was asked.
async fn answer(r: reqwest::Response, want: StatusCode, what: &str) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r
        .text()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    if status != want {
        bail!(
            "{what} answered {status}, not {want}: {}",
            truncate(&text, 600)
        );
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
}

fn premium(body: &Value) -> Option<&Value> {
    body["permissions"]
        .as_array()?
        .iter()
        .find(|p| p["identifier"] == PERMISSION)
}

fn expect_absent(body: &Value) -> anyhow::Result<()> {
    if premium(body).is_some() {
        bail!("'{PERMISSION}' should not be held yet: {}", compact(body));
    }
    Ok(())
}

fn expect_eq(v: &Value, want: &str, what: &str) -> anyhow::Result<()> {
    if v != want {
        bail!("{what} is {v}, not {want}");
    }
    Ok(())
}

fn str_of(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no `{key}` in {}", truncate(&v.to_string(), 400)))
}

/// A subscription's current period end (on its items since API version 2025-03-31).
fn period_end(sub: &Value) -> anyhow::Result<i64> {
    sub["items"]["data"][0]["current_period_end"]
        .as_i64()
        .or_else(|| sub["current_period_end"].as_i64())
        .ok_or_else(|| anyhow!("subscription without a period end"))
}

fn compact(v: &Value) -> String {
    truncate(&v.to_string(), 800)
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The wall clock in whole seconds (Stripe's `created` and signature timestamps).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

// ---- the server child process ------------------------------------------------------------------

struct ServeLines {
    base: String,
    sandbox_secret_key: String,
    sandbox_publishable_key: String,
}

/// Starts `tollgate serve --sandbox` on a free port with a fresh data directory and reads the
/// lines it prints at start (address and sandbox keys). Its log goes to `serve.log` there.
fn start_server(keep: bool) -> anyhow::Result<(Server, ServeLines)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = std::env::temp_dir().join(format!("tollgate-demo-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A port free right now (the server prints the address it listens on; it must be known
    // before start so that the public URL in approval links is right).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port();
    let log = std::fs::File::create(dir.join("serve.log")).context("creating serve.log")?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--sandbox",
        "true",
    ])
    .arg("--data-dir")
    .arg(&dir)
    // SQLite in the temporary directory, whatever the environment names.
    .env_remove("DATABASE_URL")
    .env_remove("TOLLGATE_CONFIG")
    .env("TOLLGATE_LOG_FORMAT", "text")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::from(log));
    let mut child = cmd.spawn().context("starting `tollgate serve`")?;
    let stdout = child.stdout.take();
    let server = Server { child, dir, keep };
    let stdout = stdout.ok_or_else(|| anyhow!("no stdout of `tollgate serve`"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Reads to the end, also once nobody listens any more: a closed pipe would make the
        // server's next line to stdout fail (it printed the first key's path after its address,
        // and a failed print took the server down).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut base, mut sk, mut pk) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while base.is_none() || sk.is_none() || pk.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            anyhow!(
                "`tollgate serve` did not print its address and sandbox keys (log: {})",
                server.dir.join("serve.log").display()
            )
        })?;
        if let Some(v) = line.strip_prefix("sandbox secret key: ") {
            sk = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("sandbox publishable key: ") {
            pk = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("tollgate listening on ") {
            base = v
                .split_whitespace()
                .next()
                .map(|s| s.trim_end_matches('/').to_string());
        }
    }
    let lines = ServeLines {
        base: base.unwrap_or_default(),
        sandbox_secret_key: sk.unwrap_or_default(),
        sandbox_publishable_key: pk.unwrap_or_default(),
    };
    Ok((server, lines))
}

/// Waits for `/healthz` and the first secret key (written to the data directory).
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    dir: &Path,
    timeout_secs: u64,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs.max(30));
    let path = dir.join("first-secret-key");
    loop {
        let healthy = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if healthy && let Ok(text) = std::fs::read_to_string(&path) {
            let key = text.trim().to_string();
            // The file is written just before the key is stored: ask until the key works.
            if !key.is_empty()
                && http
                    .get(format!("{base}/v1/skus"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            {
                return Ok(key);
            }
        }
        if Instant::now() >= deadline {
            bail!("the server at {base} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tollgate keys create --kind public` on the demo's data directory; the key is its last line.
fn public_key(dir: &Path) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let out = Command::new(exe)
        .args(["keys", "create", "--kind", "public", "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .context("running `tollgate keys create --kind public`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout.lines().last().unwrap_or_default().trim().to_string();
    if !out.status.success() || !key.starts_with("tg_pk_") {
        bail!(
            "`tollgate keys create --kind public` failed: {}",
            truncate(&String::from_utf8_lossy(&out.stderr), 600)
        );
    }
    Ok(key)
}
