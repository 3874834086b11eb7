#![recursion_limit = "256"]
// Handlers return `Result<Value, StripeError>`; the error carries Stripe's whole error object and
// is the rare path, so its size (~200 bytes) is not worth boxing every field.
#![allow(clippy::result_large_err)]
//! An offline Stripe: an axum router that speaks Stripe's wire protocol over its own in-memory
//! state (optionally persisted to a file), emits Stripe's events and delivers them signed to
//! webhook endpoints. It knows nothing of Tollgate.
//!
//! Shape: one [`Sandbox`] (cheap to clone) owns the state behind a mutex. Every API request runs
//! its resource handler synchronously under that lock with a [`Ctx`]; what must happen after
//! (webhook deliveries, delayed transitions such as a dispute closing) is collected in
//! [`Effects`] and started once the lock is released.

mod cards;
mod control;
mod error;
mod http;
mod params;
mod resources;
mod state;
mod versions;
mod webhooks;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde_json::{Map, Value, json};

pub use error::StripeError;
pub use state::State;

/// The API version the sandbox renders objects in (that of the pinned official libraries).
pub const CURRENT_API_VERSION: &str = "2026-10-28.endive";

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Accept only the sandbox's own keys (the printed `sk_test_`/`pk_test_` pair and the
    /// restricted keys it made), not any well-formed test key.
    pub strict_keys: bool,
    /// Where state is saved (atomically, at most every 100 ms while it changes) and loaded from.
    pub state_file: Option<PathBuf>,
    /// The URL under which this router is reachable by a browser (for 3-D Secure pages).
    pub public_url: String,
    /// When set, control requests carrying it in `X-Sandbox-Control-Key` are accepted.
    pub control_key: Option<String>,
    /// Accept control requests without the key from loopback peers (not relayed by a proxy).
    /// Only safe when the sandbox is reachable on loopback only ([`reachable_only_locally`]):
    /// behind a reverse proxy on the same host every request comes from loopback.
    pub trust_loopback: bool,
    /// Delay before the first webhook retry (doubles per attempt).
    pub webhook_retry_base: Duration,
    /// Attempts per delivery before giving up.
    pub webhook_max_attempts: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            strict_keys: false,
            state_file: None,
            public_url: "http://127.0.0.1:12111".into(),
            control_key: None,
            trust_loopback: true,
            webhook_retry_base: Duration::from_secs(1),
            webhook_max_attempts: 8,
        }
    }
}

/// Whether a server listening on `listen` and reached at `public_url` is reachable from this
/// machine only: a loopback listening address, and a public URL naming a loopback host (a public
/// URL elsewhere means something, such as a reverse proxy, relays other people's requests).
pub fn reachable_only_locally(listen: std::net::SocketAddr, public_url: &str) -> bool {
    let public_loopback = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    listen.ip().is_loopback() && public_loopback
}

/// Fault injection by rate (per-request faults use the `Sandbox-Fault` header).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub kind: Option<String>,
    pub rate: f64,
    pub latency_ms: u64,
    /// Only requests whose path contains this text (a Stripe object's id, say) are faulted;
    /// `None`: every request.
    pub path: Option<String>,
}

/// Webhook delivery chaos.
#[derive(Clone, Debug, Default)]
pub struct ChaosConfig {
    pub duplicate: f64,
    pub reorder_window_ms: u64,
    pub delay_ms: u64,
    /// Event types (exact, or a prefix ending in `.*`, or `*`) whose deliveries are held back
    /// until the switch no longer names them: a webhook that is late by as long as a test
    /// wants (a renewal delivered after the period end).
    pub hold: Vec<String>,
}

impl ChaosConfig {
    /// Whether deliveries of `event_type` are held back now.
    pub fn holds(&self, event_type: &str) -> bool {
        self.hold.iter().any(|h| {
            h == "*"
                || h == event_type
                || h.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
        })
    }
}

/// Work to start once the state lock is released, and how to take the request back.
#[derive(Default)]
pub struct Effects {
    pub deliveries: Vec<webhooks::Delivery>,
    pub later: Vec<(Duration, Task)>,
    /// Every `Ctx::put` of the request: (account, kind, id, previous value).
    pub journal: Vec<(String, String, String, Option<Value>)>,
}

impl Effects {
    /// Undoes every write of a request that failed, so that a refused request changes nothing
    /// (as on Stripe), and drops the deliveries and tasks it queued.
    pub fn roll_back(&mut self, state: &mut State) {
        while let Some((account, kind, id, old)) = self.journal.pop() {
            if let Some(coll) = state
                .accounts
                .get_mut(&account)
                .and_then(|a| a.collections.get_mut(&kind))
            {
                coll.restore(&id, old);
            }
        }
        self.deliveries.clear();
        self.later.clear();
    }

    /// Where the request's effects stand now (for [`Effects::roll_back_to`]).
    pub fn mark(&self) -> EffectsMark {
        EffectsMark {
            journal: self.journal.len(),
            deliveries: self.deliveries.len(),
            later: self.later.len(),
        }
    }

    /// Undoes the writes, deliveries and tasks queued since `mark` (a part of a request that
    /// failed while the rest stands, e.g. a subscription whose first payment must succeed).
    pub fn roll_back_to(&mut self, state: &mut State, mark: EffectsMark) {
        while self.journal.len() > mark.journal {
            let Some((account, kind, id, old)) = self.journal.pop() else {
                break;
            };
            if let Some(coll) = state
                .accounts
                .get_mut(&account)
                .and_then(|a| a.collections.get_mut(&kind))
            {
                coll.restore(&id, old);
            }
        }
        self.deliveries.truncate(mark.deliveries);
        self.later.truncate(mark.later);
    }
}

/// A point in a request's [`Effects`].
#[derive(Clone, Copy, Debug)]
pub struct EffectsMark {
    journal: usize,
    deliveries: usize,
    later: usize,
}

pub type Task = Box<dyn FnOnce(&mut Ctx) + Send + 'static>;

/// What a resource handler sees: the state, the account it acts for, and where to put effects.
pub struct Ctx<'a> {
    pub state: &'a mut State,
    pub account: String,
    pub now: i64,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub public_url: &'a str,
    pub effects: &'a mut Effects,
}

impl Ctx<'_> {
    pub fn acct(&mut self) -> &mut state::Account {
        let id = self.account.clone();
        self.state
            .accounts
            .entry(id.clone())
            .or_insert_with(|| state::Account::new(id))
    }

    pub fn get(&mut self, kind: &str, id: &str) -> Option<Value> {
        self.acct().get(kind, id).cloned()
    }

    pub fn put(&mut self, kind: &str, obj: Value) {
        let id = obj["id"].as_str().unwrap_or_default().to_string();
        let old = self.acct().insert(kind, obj);
        let account = self.account.clone();
        self.effects
            .journal
            .push((account, kind.to_string(), id, old));
    }

    /// Schedules `task` to run under the lock after `delay`, as a request of this account.
    pub fn later(&mut self, delay: Duration, task: impl FnOnce(&mut Ctx) + Send + 'static) {
        let account = self.account.clone();
        self.effects.later.push((
            delay,
            Box::new(move |ctx: &mut Ctx| {
                ctx.account = account;
                task(ctx)
            }),
        ));
    }

    /// Records an event of `kind` about `object` and queues its webhook deliveries.
    pub fn emit(&mut self, kind: &str, object: &Value, previous: Option<Value>) {
        webhooks::emit(self, kind, object, previous);
        // Billing follows payments: an invoice's intent succeeding pays the invoice.
        resources::invoices::observe(self, kind, object);
        // Entitlements follow subscriptions (`entitlements.active_entitlement_summary.updated`).
        resources::entitlements::observe(self, kind, object);
    }
}

pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub config: SandboxConfig,
    pub faults: Mutex<FaultConfig>,
    pub chaos: Mutex<ChaosConfig>,
    /// Deliveries held back by the `hold` chaos switch, in the order they were due.
    pub held: Mutex<Vec<webhooks::Delivery>>,
    pub in_flight: Mutex<HashSet<String>>,
    pub deliveries: tokio::sync::mpsc::UnboundedSender<webhooks::Delivery>,
    pub delivery_log: Mutex<Vec<Value>>,
    pub dirty: AtomicBool,
    pub http: reqwest::Client,
}

/// A running sandbox. Clone freely; all clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave Stripe objects half-written in a way later
    // requests could not read (every handler builds new values before storing them), so a
    // poisoned lock is taken over rather than failing every later request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sandbox {
    /// Starts a sandbox (loading the state file if there is one) and its background tasks.
    /// Must be called inside a Tokio runtime.
    pub fn start(config: SandboxConfig) -> Result<Self, Error> {
        tollgate_stripe::install_crypto_provider();
        let state = match &config.state_file {
            Some(path) if path.exists() => {
                let bytes = std::fs::read(path).map_err(|source| Error::ReadState {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_slice(&bytes).map_err(|source| Error::InvalidState {
                    path: path.clone(),
                    source,
                })?
            }
            _ => State::fresh(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .build()
            .map_err(Error::HttpClient)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            config,
            faults: Mutex::new(FaultConfig::default()),
            chaos: Mutex::new(ChaosConfig::default()),
            held: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashSet::new()),
            deliveries: tx,
            delivery_log: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(true),
            http,
        });
        tokio::spawn(webhooks::run(inner.clone(), rx));
        if inner.config.state_file.is_some() {
            tokio::spawn(persist_loop(inner.clone()));
        }
        Ok(Self { inner })
    }

    /// The router: Stripe's `/v1/…`, the control API `/_sandbox/…` and buyer pages.
    pub fn router(&self) -> Router {
        http::router(self.inner.clone())
    }

    pub fn secret_key(&self) -> String {
        lock(&self.inner.state).secret_key.clone()
    }

    pub fn publishable_key(&self) -> String {
        lock(&self.inner.state).publishable_key.clone()
    }

    pub fn account_id(&self) -> String {
        lock(&self.inner.state).platform_account.clone()
    }

    /// Writes the state file now (if configured). Call at shutdown.
    pub fn flush(&self) -> Result<(), Error> {
        save(&self.inner)
    }

    /// Creates (or replaces) a webhook endpoint on the platform account without going through
    /// HTTP, for embedders that register their own receiver at start. Returns (id, secret).
    pub fn ensure_webhook_endpoint(
        &self,
        url: &str,
        api_version: Option<&str>,
    ) -> (String, String) {
        let mut effects = Effects::default();
        let out = {
            let mut st = lock(&self.inner.state);
            let account = st.platform_account.clone();
            let public_url = self.inner.config.public_url.clone();
            let mut ctx = Ctx {
                state: &mut st,
                account,
                now: state::now(),
                request_id: None,
                idempotency_key: None,
                public_url: &public_url,
                effects: &mut effects,
            };
            resources::events::upsert_endpoint(&mut ctx, url, api_version)
        };
        self.inner.after(effects);
        out
    }
}

impl Inner {
    /// Runs `f` as a request of `account` outside HTTP (scheduled tasks, control actions).
    pub fn run_as<R>(self: &Arc<Self>, account: &str, f: impl FnOnce(&mut Ctx) -> R) -> R {
        let mut effects = Effects::default();
        let out = {
            let mut st = lock(&self.state);
            let mut ctx = Ctx {
                state: &mut st,
                account: account.to_string(),
                now: state::now(),
                request_id: None,
                idempotency_key: None,
                public_url: &self.config.public_url,
                effects: &mut effects,
            };
            f(&mut ctx)
        };
        self.after(effects);
        out
    }

    /// Starts the effects of a finished handler.
    pub fn after(self: &Arc<Self>, effects: Effects) {
        self.dirty.store(true, Ordering::Release);
        for d in effects.deliveries {
            let _ = self.deliveries.send(d);
        }
        for (delay, task) in effects.later {
            let inner = self.clone();
            // `Ctx::later` wraps every task so that it switches to its own account first.
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let account = lock(&inner.state).platform_account.clone();
                inner.run_as(&account, task);
            });
        }
    }
}

async fn persist_loop(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if inner.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = save(&inner)
        {
            tracing::error!(error = %e, "sandbox: saving the state file failed");
        }
    }
}

fn save(inner: &Inner) -> Result<(), Error> {
    let Some(path) = &inner.config.state_file else {
        return Ok(());
    };
    let bytes = {
        let st = lock(&inner.state);
        serde_json::to_vec(&*st).map_err(Error::EncodeState)?
    };
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| Error::WriteState {
            path: path.clone(),
            source,
        })
}

/// Writes `path` readable by its owner only (mode 0600): the state holds the sandbox's API keys
/// and webhook signing secrets. A file left from an earlier run is made 0600 too.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// Why the sandbox could not start or save its state file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}: {source}", path.display())]
    ReadState {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is not valid: {source}", path.display())]
    InvalidState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("encoding the state: {0}")]
    EncodeState(serde_json::Error),
    #[error("writing {}: {source}", path.display())]
    WriteState {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("http client: {0}")]
    HttpClient(reqwest::Error),
}

/// Builds Stripe's list object.
pub(crate) fn list_object(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

pub(crate) fn empty_map() -> Value {
    Value::Object(Map::new())
}
