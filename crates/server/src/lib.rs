#![recursion_limit = "256"]
//! Tollgate's server: the API (`api/`), hosted pages (`pay`), background workers, wired around
//! one [`ApiContext`]. The domain decides; the store remembers; the Stripe client talks.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod credits_meter;
pub mod crypto;
pub mod dashboard;
pub mod edge;
pub mod entitlements;
pub mod error;
pub mod idempotency;
pub mod inbox;
pub mod metrics;
pub mod openapi;
pub mod outbound;
pub mod page;
pub mod pay;
pub mod reconcile;
pub mod stripe_map;
pub mod transactions;
pub mod workers;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tollgate_store::{ConnectionRow, Store};
use tollgate_stripe::client::{ClientConfig, StripeClient};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use config::Config;

use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The merchant account every installation starts with.
pub const DEFAULT_MERCHANT_ACCOUNT: &str = "default";

/// The setting holding the public URL of the server last started on this database.
pub const PUBLIC_URL_SETTING: &str = "public_url";

/// Everything a handler needs: [`Context`] behind one reference count. Every request and task
/// clones it (axum's `State` clones per request); cloning the fields one by one cost about 1.4 %
/// of the CPU in the webhooks benchmark (a dozen reference counts and the Stripe client's
/// strings, then as many drops).
#[derive(Clone)]
pub struct ApiContext(Arc<Context>);

impl std::ops::Deref for ApiContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

/// What [`ApiContext`] holds.
pub struct Context {
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<MasterKey>,
    /// A client whose connection pool every per-connection client shares.
    pub stripe: StripeClient,
    pub public_url: Arc<str>,
    /// The API base of the built-in sandbox when it was mounted at start
    /// (`http://127.0.0.1:PORT/sandbox/stripe`); [`Context::sandbox_running`] says whether it
    /// still is.
    pub sandbox_base: Option<Arc<str>>,
    /// Set when live Stripe keys were added while the sandbox was mounted: its routes answer
    /// 404 from then on, and it is not mounted at the next start either.
    pub sandbox_stopped: std::sync::atomic::AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Where verified Stripe events are stored before they are answered.
    pub inbox: inbox::Inbox,
    /// Key/settings cache and rate limits of the permission check.
    pub entitlements: Arc<entitlements::Runtime>,
    /// Consumes of metered permissions (group commit on SQLite).
    pub consumes: api::credits::Consumes,
    /// Merchant accounts seen to exist (operator keys' requests do not read them again).
    pub known_accounts: auth::KnownAccounts,
}

impl Context {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the built-in sandbox is mounted and serving.
    pub fn sandbox_running(&self) -> bool {
        self.sandbox_base.is_some()
            && !self
                .sandbox_stopped
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Unmounts the built-in sandbox (live keys were added; it never runs beside them).
    pub fn stop_sandbox(&self) {
        if self.sandbox_running() {
            self.sandbox_stopped
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!("live Stripe keys were added: the built-in sandbox is stopped");
        }
    }

    /// A Stripe client for one connection (its key, account and API version).
    pub fn stripe_for(&self, conn: &ConnectionRow) -> Result<StripeClient, ApiError> {
        let secret = self
            .keys
            .open(&conn.id, &conn.secret_key_enc)
            .map_err(|e| ApiError::Internal(format!("connection {}: {e}", conn.id)))?;
        let base = if conn.sandbox {
            self.sandbox_base
                .as_deref()
                .filter(|_| self.sandbox_running())
                .ok_or_else(|| ApiError::BadGateway {
                    message: "This connection uses the built-in sandbox, which is not running (live keys are configured).".into(),
                    transaction_id: None,
                })?
                .to_string()
        } else {
            self.config.stripe_api_base.clone()
        };
        let mut cfg = ClientConfig::new(secret);
        cfg.base_url = base;
        cfg.stripe_account = conn.stripe_account.clone();
        cfg.api_version = conn.api_version.clone();
        cfg.timeout = Duration::from_millis(self.config.stripe_timeout_ms);
        cfg.max_retries = self.config.stripe_max_retries;
        cfg.retry_base = Duration::from_millis(self.config.stripe_retry_base_ms);
        self.stripe
            .with_config(cfg)
            .map_err(|e| ApiError::Internal(format!("stripe client: {e}")))
    }
}

/// Registers a webhook endpoint URL at the sandbox; returns (endpoint id, signing secret).
pub type RegisterWebhook = Arc<dyn Fn(&str) -> (String, String) + Send + Sync>;

/// The built-in sandbox as the binary hands it over (the server does not depend on it).
pub struct SandboxHandle {
    pub router: Router,
    pub secret_key: String,
    pub publishable_key: String,
    /// Registers (or re-registers) a webhook endpoint; returns (endpoint id, signing secret).
    pub register_webhook: RegisterWebhook,
}

/// The whole HTTP application.
pub fn app(ctx: ApiContext, sandbox: Option<Router>) -> Router {
    use axum::middleware::from_fn;
    let mut router: Router = api::router(&ctx)
        .merge(
            pay::router()
                .merge(page::router())
                .merge(api::portal::page_router())
                .route_layer(from_fn(edge::pay)),
        )
        .merge(openapi::router())
        .merge(dashboard::router(&ctx).route_layer(from_fn(edge::dashboard)))
        .with_state(ctx.clone());
    if let Some(sb) = sandbox {
        let gate = axum::middleware::from_fn_with_state(ctx.clone(), sandbox_gate);
        router = router.nest("/sandbox/stripe", sb.layer(gate));
    }
    router
        .layer(axum::middleware::from_fn_with_state(ctx, observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The sandbox's routes while it runs; a 404 once live keys stopped it.
async fn sandbox_gate(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    if ctx.sandbox_running() {
        next.run(req).await
    } else {
        use axum::response::IntoResponse;
        ApiError::NotFound(
            "The built-in Stripe sandbox is stopped: live Stripe keys are configured.".into(),
        )
        .into_response()
    }
}

/// Logs one line per request (method, path without its query string, so tokens never reach
/// the log, status, latency, request id) and counts it.
async fn observe(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The path only: query strings may carry approval and session tokens.
    let span = tracing::info_span!("request", %method, %path, request_id = %request_id);
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    ctx.metrics.observe(status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    if !resp.headers().contains_key("cache-control") {
        resp.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
    }
    resp
}

/// Opens the database, applies migrations, loads the master key (SPEC §2 rules).
pub async fn open_store(config: &Config) -> startup::Result<(Store, MasterKey)> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        startup::err(format!(
            "creating data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let url = config.database_url();
    let store = Store::connect(&url)
        .await
        .map_err(|e| startup::err(format!("connecting to the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| startup::err(format!("migrating the database: {e}")))?;
    let key = master_key(config, &store).await?;
    Ok((store, key))
}

async fn master_key(config: &Config, store: &Store) -> startup::Result<MasterKey> {
    use secrecy::ExposeSecret;
    let given = match &config.master_key {
        Some(k) => Ok(("master_key", k.expose_secret().to_string())),
        None => std::env::var("TOLLGATE_MASTER_KEY").map(|k| ("TOLLGATE_MASTER_KEY", k)),
    };
    let key = match given {
        Ok((source, text)) => {
            MasterKey::parse(&text).map_err(|e| startup::err(format!("{source}: {e}")))?
        }
        Err(_) if store.backend() == tollgate_store::Backend::Sqlite => {
            let path = config.data_dir.join("master.key");
            if !path.exists() {
                write_private(&path, &MasterKey::generate_hex())?;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| startup::err(format!("reading {}: {e}", path.display())))?;
            MasterKey::parse(&text).map_err(|e| startup::err(format!("{}: {e}", path.display())))?
        }
        Err(_) => {
            return Err(startup::err(
                "TOLLGATE_MASTER_KEY must be set when the database is PostgreSQL (64 hex digits; generate one with `openssl rand -hex 32`)".into(),
            ));
        }
    };
    let stored = tollgate_store::accounts::init_setting(
        store.reader(),
        "master_key_check",
        key.check_value(),
    )
    .await
    .map_err(|e| startup::err(format!("reading settings: {e}")))?;
    if stored != key.check_value() {
        return Err(startup::err(
            "the master key does not match the one this database was set up with; refusing to start".into(),
        ));
    }
    Ok(key)
}

/// A status line for whoever started the server, on standard output. Unlike `println!` it never
/// panics: a server whose stdout was closed (a parent that stopped reading, `| head`) goes on.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// Writes a file readable by its owner only (mode 0600).
pub fn write_private(path: &Path, contents: &str) -> startup::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| startup::err(format!("writing {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| startup::err(format!("writing {}: {e}", path.display())))
}

/// Opens the store and builds the context (the server, and CLI commands that act like it).
pub async fn context(
    config: Config,
    clock: Arc<dyn Clock>,
    sandbox_base: Option<String>,
) -> startup::Result<ApiContext> {
    let (store, keys) = open_store(&config).await?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen))
        .trim_end_matches('/')
        .to_string();
    let stripe = StripeClient::new(ClientConfig::new(String::from("sk_unset")))
        .map_err(|e| startup::err(format!("stripe client: {e}")))?;
    Ok(ApiContext(Arc::new(Context {
        inbox: inbox::Inbox::start(store.clone()),
        store,
        clock,
        keys: Arc::new(keys),
        stripe,
        public_url: Arc::from(public_url),
        sandbox_base: sandbox_base.map(Arc::from),
        sandbox_stopped: std::sync::atomic::AtomicBool::new(false),
        metrics: Arc::new(Metrics::default()),
        entitlements: Arc::new(entitlements::Runtime::new(
            config.auth_cache_ms,
            config.permissions_rate_per_sec,
            config.permissions_burst,
        )),
        consumes: Default::default(),
        known_accounts: Default::default(),
        config: Arc::new(config),
    })))
}

/// What `serve` needs besides the configuration.
pub struct ServeOptions {
    pub clock: Arc<dyn Clock>,
    pub sandbox: Option<SandboxHandle>,
}

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> startup::Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| startup::err(e.to_string()))?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let sandbox_base = opts
        .sandbox
        .as_ref()
        .map(|_| format!("http://{loopback}/sandbox/stripe"));
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    let ctx = context(config, opts.clock, sandbox_base).await?;
    // Where this server answers, for the commands run beside it on the same database
    // (`tollgate operator create` prints the dashboard's login URL).
    tollgate_store::accounts::put_setting(ctx.store.writer(), PUBLIC_URL_SETTING, &ctx.public_url)
        .await
        .map_err(|e| startup::err(format!("saving the public URL: {e}")))?;
    let sandbox_router = match &opts.sandbox {
        Some(sb) => {
            api::bootstrap::sandbox_connection(&ctx, sb).await?;
            Some(sb.router.clone())
        }
        None => None,
    };
    api::bootstrap::first_key(&ctx).await?;
    workers::spawn(ctx.clone());
    inbox::spawn_workers(ctx.clone());
    reconcile::spawn(ctx.clone());
    outbound::spawn(ctx.clone());
    // Permission streams never end by themselves: end them when shutdown begins.
    let streams = ctx.entitlements.clone();
    let shutdown = async move {
        shutdown.await;
        streams.close_streams();
    };
    let app = app(ctx, sandbox_router).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| startup::err(format!("serving: {e}")))
}

/// Why the server could not start (the database, the master key, files) or stopped serving:
/// one line for the operator.
pub mod startup {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn err(msg: String) -> Error {
        Error(msg)
    }
}
