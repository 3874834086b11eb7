//! Black-box test harness: the real server (`tollgate_server::serve`) on 127.0.0.1:0 with the
//! in-process Stripe sandbox mounted, a fresh database per test (SQLite in a temporary data
//! directory, or a fresh schema of the PostgreSQL database `test`), and HTTP helpers.
//!
//! PostgreSQL: `TOLLGATE_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! An unreachable PostgreSQL fails the `postgres` variants unless `TOLLGATE_TEST_SKIP_POSTGRES=1`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tollgate_sandbox::{Sandbox, SandboxConfig};
use tollgate_server::auth::{KeyKind, new_key};
use tollgate_server::clock::ShiftedClock;
use tollgate_server::{Config, SandboxHandle, ServeOptions};

/// A fixed master key for every test server (tests never share a database).
pub const TEST_MASTER_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const REDIRECT_URL: &str = "https://merchant.example/callback";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates, for each `async fn name(db: Db)` given, a module `name` with the tests `sqlite`
/// and `postgres` (`cargo test name::sqlite`, `cargo test postgres`).
#[macro_export]
macro_rules! both_dbs {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Db::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::common::skip_postgres() {
                        eprintln!("TOLLGATE_TEST_SKIP_POSTGRES=1: skipped");
                        return;
                    }
                    super::$name($crate::common::Db::Postgres).await;
                }
            }
        )+
    };
}

pub fn skip_postgres() -> bool {
    std::env::var("TOLLGATE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

fn postgres_base_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// An answer of the server (or the sandbox): status, headers, body as JSON (Null if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.text
        );
        self.body.clone()
    }
}

/// What "nothing changed" compares: every transaction (id, status, version), every refund
/// (id, status) and the number of transaction events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub transactions: Vec<(String, String, i64)>,
    pub refunds: Vec<(String, String)>,
    pub events: i64,
    /// Rows in the inbox of Stripe events.
    pub inbox: i64,
}

pub struct TestServer {
    pub db: Db,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The operator secret key the server wrote to `{data_dir}/first-secret-key`.
    pub key: String,
    pub http: reqwest::Client,
    pub sandbox: Sandbox,
    pub data_dir: PathBuf,
    /// The configuration the server was started with.
    pub config: Config,
    /// The test's own connection to the server's database.
    pub pool: AnyPool,
    /// The server's clock: the system time until a test moves it forward.
    pub clock: Arc<ShiftedClock>,
    pg_schema: Option<String>,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    /// Starts a server whose configuration `tweak` may change (durations, retries…).
    ///
    /// The sandbox's webhook deliveries are off: most tests check exactly what one request
    /// changed, and events of earlier steps arriving meanwhile would blur that. Tests of the
    /// webhook path use [`TestServer::start_with_webhooks`].
    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_opts(db, false, tweak).await
    }

    /// A server whose sandbox delivers its signed events to the server's webhook endpoint.
    pub async fn start_with_webhooks(db: Db) -> TestServer {
        Self::start_opts(db, true, |_| {}).await
    }

    async fn start_opts(db: Db, webhooks: bool, tweak: impl FnOnce(&mut Config)) -> TestServer {
        tollgate_stripe::install_crypto_provider();
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_schema) = match db {
            Db::Sqlite => (None, None),
            Db::Postgres => {
                let (url, schema) = fresh_postgres_schema().await;
                (Some(url), Some(schema))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let sandbox = Sandbox::start(SandboxConfig {
            public_url: format!("{base}/sandbox/stripe"),
            webhook_max_attempts: 3,
            webhook_retry_base: Duration::from_millis(200),
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let mut config = Config {
            listen: addr,
            data_dir: dir.path().to_path_buf(),
            database_url: database_url.clone(),
            stripe_timeout_ms: 10_000,
            stripe_max_retries: 2,
            stripe_retry_base_ms: 10,
            expiry_interval_ms: 100,
            inbox_poll_ms: 50,
            inbox_retry_base_ms: 50,
            reconcile_interval_secs: 0,
            master_key: Some(TEST_MASTER_KEY.to_string().into()),
            ..Config::default()
        };
        tweak(&mut config);
        let started_config = config.clone();
        let sb = sandbox.clone();
        let handle = SandboxHandle {
            router: sandbox.router(),
            secret_key: sandbox.secret_key(),
            publishable_key: sandbox.publishable_key(),
            register_webhook: Arc::new(move |url: &str| {
                if webhooks {
                    sb.ensure_webhook_endpoint(url, None)
                } else {
                    // Not registered at the sandbox: no deliveries reach this server.
                    (
                        "we_not_registered".into(),
                        "whsec_not_registered_in_this_test".into(),
                    )
                }
            }),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let clock = ShiftedClock::new();
        let opts = ServeOptions {
            clock: clock.clone(),
            sandbox: Some(handle),
        };
        let task = tokio::spawn(tollgate_server::serve(config, listener, opts, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        // Ready once the first key is written and /healthz answers.
        let key_file = dir.path().join("first-secret-key");
        let started = Instant::now();
        loop {
            if task.is_finished() {
                let out = task.await;
                panic!("the server stopped during start-up: {out:?}");
            }
            if key_file.exists()
                && http
                    .get(format!("{base}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = std::fs::read_to_string(&key_file)
            .expect("first key")
            .trim()
            .to_string();
        let pool_url = database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("tollgate.db").display()));
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&pool_url)
            .await
            .expect("test connection to the server's database");
        TestServer {
            db,
            base,
            key,
            http,
            sandbox,
            data_dir: dir.path().to_path_buf(),
            config: started_config,
            pool,
            clock,
            pg_schema,
            _dir: dir,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the operator key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("HTTP request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    /// Sends an oversized body. The server answers once it has read `MAX_BODY` bytes and closes
    /// the connection, so the client may see the connection reset while it is still writing
    /// (an HTTP fact, not a server fault): such attempts are repeated, a few times at most.
    pub async fn send_oversized(&self, make: impl Fn() -> reqwest::RequestBuilder) -> Resp {
        for _ in 0..4 {
            // The server answers 413 without reading the rest of the body and closes; with
            // `Connection: close` the client does not put that connection back in its pool,
            // where the next request (a read to check nothing changed) could pick it up and
            // fail with an incomplete message.
            match make()
                .header(reqwest::header::CONNECTION, "close")
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    let text = r.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    return Resp {
                        status,
                        headers,
                        text,
                        body,
                    };
                }
                Err(e) => eprintln!("oversized request: {e} (the server closed early); again"),
            }
        }
        panic!("no answer to an oversized request in 4 attempts");
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// A POST with no body at all (as the seed SDK sends void, cancel and sync).
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(self.request(Method::POST, path)).await
    }

    /// A POST with an `Idempotency-Key` (`body: None` sends no body).
    pub async fn post_idem(&self, path: &str, body: Option<&Value>, key: &str) -> Resp {
        let mut rb = self
            .request(Method::POST, path)
            .header("idempotency-key", key);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(rb).await
    }

    // ---- transactions ------------------------------------------------------------------

    pub fn redirect_body(amount: i64, intent: &str) -> Value {
        json!({
            "amount": amount, "currency": "USD", "country": "US", "intent": intent,
            "external_identifier": "order-42", "metadata": {"k": "v"},
            "payment_method": {"method": "stripe", "redirect_url": REDIRECT_URL,
                               "country": "US", "currency": "USD"},
        })
    }

    pub fn direct_body(amount: i64, intent: &str) -> Value {
        json!({"amount": amount, "currency": "USD", "intent": intent, "integration_client": "web"})
    }

    /// Creates a redirect-flow transaction (asserts 201).
    pub async fn create_redirect(&self, amount: i64, intent: &str) -> Value {
        self.post("/transactions", Self::redirect_body(amount, intent))
            .await
            .expect(201)
    }

    pub async fn get_tx(&self, id: &str) -> Value {
        self.get(&format!("/transactions/{id}")).await.expect(200)
    }

    pub async fn sync(&self, id: &str) -> Value {
        self.post_empty(&format!("/transactions/{id}/sync"))
            .await
            .expect(200)
    }

    /// The buyer pays: confirms the PaymentIntent at the sandbox as Stripe.js would, with the
    /// publishable key, the client secret and a test payment method (`pm_card_visa`, …).
    /// Returns the sandbox's answer (200, or 402 for a decline).
    pub async fn approve(&self, tx: &Value, pm: &str) -> Resp {
        let pi = tx["additional_identifiers"]["payment_id"]
            .as_str()
            .expect("additional_identifiers.payment_id");
        let secret = tx["payment_service_transaction_id"]
            .as_str()
            .expect("payment_service_transaction_id (the client secret)");
        assert!(
            secret.starts_with(&format!("{pi}_secret_")),
            "not a client secret: {secret}"
        );
        self.confirm_intent(pi, secret, pm).await
    }

    pub async fn confirm_intent(&self, pi: &str, client_secret: &str, pm: &str) -> Resp {
        let rb = self
            .http
            .post(self.url(&format!("/sandbox/stripe/v1/payment_intents/{pi}/confirm")))
            .bearer_auth(self.sandbox.publishable_key())
            .form(&[
                ("client_secret", client_secret),
                ("payment_method", pm),
                ("return_url", &self.url("/return")),
            ]);
        self.send(rb).await
    }

    /// A transaction of `amount` approved with `pm_card_visa` and synced.
    pub async fn authorized(&self, amount: i64) -> Value {
        let tx = self.create_redirect(amount, "authorize").await;
        self.approve(&tx, "pm_card_visa").await.expect(200);
        let tx = self.sync(tx["id"].as_str().unwrap()).await;
        assert_eq!(tx["status"], "authorization_succeeded", "{tx}");
        tx
    }

    /// An authorized transaction captured in full.
    pub async fn captured(&self, amount: i64) -> Value {
        let tx = self.authorized(amount).await;
        let id = tx["id"].as_str().unwrap();
        let tx = self
            .post(&format!("/transactions/{id}/capture"), json!({}))
            .await
            .expect(200);
        assert_eq!(tx["status"], "capture_succeeded", "{tx}");
        tx
    }

    // ---- the sandbox -------------------------------------------------------------------

    /// `POST {base}/sandbox/stripe/_sandbox/{path}` with a JSON body (asserts 200).
    pub async fn sandbox_control(&self, path: &str, body: Value) -> Value {
        let rb = self
            .http
            .post(self.url(&format!(
                "/sandbox/stripe/_sandbox/{}",
                path.trim_start_matches('/')
            )))
            .json(&body);
        self.send(rb).await.expect(200)
    }

    /// Rate-based fault injection at the sandbox; `rate: 0.0` turns it off.
    pub async fn faults(&self, kind: &str, rate: f64, latency_ms: u64) {
        self.sandbox_control(
            "/faults",
            json!({"kind": kind, "rate": rate, "latency_ms": latency_ms}),
        )
        .await;
    }

    pub async fn faults_off(&self) {
        self.sandbox_control("/faults", json!({"rate": 0})).await;
    }

    /// A Stripe API GET at the sandbox with its secret key.
    pub async fn stripe_get(&self, path: &str) -> Value {
        let rb = self
            .http
            .get(self.url(&format!("/sandbox/stripe{path}")))
            .bearer_auth(self.sandbox.secret_key());
        self.send(rb).await.expect(200)
    }

    /// A Stripe API POST at the sandbox with its secret key, form-encoded as Stripe's libraries
    /// send it (asserts 200).
    pub async fn stripe_post<F: serde::Serialize + ?Sized>(&self, path: &str, form: &F) -> Value {
        let rb = self
            .http
            .post(self.url(&format!("/sandbox/stripe{path}")))
            .bearer_auth(self.sandbox.secret_key())
            .form(form);
        self.send(rb).await.expect(200)
    }

    /// A product named `name` at the sandbox with one USD price of `unit_amount`: (product id,
    /// price id).
    pub async fn stripe_product_price(&self, name: &str, unit_amount: i64) -> (String, String) {
        let product = self.stripe_post("/v1/products", &[("name", name)]).await;
        let product = product["id"].as_str().expect("a product id").to_string();
        let amount = unit_amount.to_string();
        let price = self
            .stripe_post(
                "/v1/prices",
                &[
                    ("product", product.as_str()),
                    ("unit_amount", amount.as_str()),
                    ("currency", "usd"),
                ],
            )
            .await;
        let price = price["id"].as_str().expect("a price id").to_string();
        (product, price)
    }

    /// The PaymentIntents at the sandbox made for transaction `id` (by metadata).
    pub async fn intents_of(&self, id: &str) -> Vec<Value> {
        let list = self.stripe_get("/v1/payment_intents?limit=100").await;
        list["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|pi| pi["metadata"]["tollgate_transaction_id"] == id)
            .cloned()
            .collect()
    }

    // ---- accounts and keys -------------------------------------------------------------

    /// Creates a merchant account (operator key) and returns a secret key bound to it.
    pub async fn merchant_account(&self, id: &str) -> String {
        self.post("/merchant-accounts", json!({"id": id, "display_name": id}))
            .await
            .expect(201);
        self.bound_key(KeyKind::Secret, id).await
    }

    /// A new key of `kind` bound to merchant account `account`, stored directly.
    pub async fn bound_key(&self, kind: KeyKind, account: &str) -> String {
        let (row, full) = new_key(kind, Some(account), Some("test"), now_ms());
        tollgate_store::accounts::insert_api_key(&self.pool, &row)
            .await
            .expect("insert key");
        full
    }

    // ---- the database ------------------------------------------------------------------

    pub async fn db_snapshot(&self) -> Snapshot {
        let transactions: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, status, version FROM transactions ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .expect("snapshot");
        let refunds: Vec<(String, String)> =
            sqlx::query_as("SELECT id, status FROM refunds ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .expect("snapshot");
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transaction_events")
            .fetch_one(&self.pool)
            .await
            .expect("snapshot");
        let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(&self.pool)
            .await
            .expect("snapshot");
        Snapshot {
            transactions,
            refunds,
            events,
            inbox,
        }
    }

    /// Whether a request holding idempotency key `key` is running (claimed, no answer yet).
    pub async fn idempotency_in_progress(&self, key: &str) -> bool {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1 AND status_code IS NULL",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .expect("idempotency_keys");
        n > 0
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(schema) = self.pg_schema.take() {
            // Best effort, on a thread of its own (Drop cannot await).
            let url = postgres_base_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(pool) =
                            AnyPoolOptions::new().max_connections(1).connect(&url).await
                        {
                            let _ = sqlx::query("SET lock_timeout = '3s'").execute(&pool).await;
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA IF EXISTS {schema} CASCADE"
                            )))
                            .execute(&pool)
                            .await;
                            pool.close().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Creates a fresh schema in the test database; returns the URL that makes it the server's
/// `search_path`, and its name.
async fn fresh_postgres_schema() -> (String, String) {
    let base = postgres_base_url();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {base}: {e}\n(set TOLLGATE_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL variants)"
            )
        });
    let schema = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("CREATE SCHEMA");
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the error envelope of SPEC §8 and returns the body.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status, status,
        "expected HTTP {status} {code}, got {}: {}",
        r.status, r.text
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let b = &r.body;
    assert_eq!(b["type"], "error", "{b}");
    assert_eq!(b["code"], code, "{b}");
    assert_eq!(b["status"], status, "{b}");
    assert!(
        b["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {b}"
    );
    let details = b["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details[]: {b}"));
    for d in details {
        for k in ["location", "pointer", "message", "type"] {
            assert!(d[k].is_string(), "detail without {k}: {b}");
        }
        assert!(
            ["body", "query", "path", "header", "unknown"]
                .contains(&d["location"].as_str().unwrap()),
            "{b}"
        );
    }
    b.clone()
}

/// Asserts a 400 whose details point at `pointer` in `location`.
#[track_caller]
pub fn assert_bad_field(r: &Resp, location: &str, pointer: &str) -> Value {
    let b = assert_error(r, 400, "bad_request");
    let found = b["details"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["location"] == location && d["pointer"] == pointer);
    assert!(found, "no detail at {location} {pointer}: {b}");
    b
}

/// The query parameter `name` of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
