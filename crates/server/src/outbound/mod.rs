//! Outbound webhooks (SPEC §7): events written to the outbox in the transaction of the change
//! that caused them ([`emit`] and its helpers), signed per Standard Webhooks ([`sign`]), and
//! delivered at least once by a background worker ([`spawn`]) with exponential backoff and
//! jitter, a timeout per attempt, a delivery log, and the SSRF guard of [`ssrf`].
//!
//! The worker pipelines: it claims due deliveries in batches (a lease in the database, so
//! several servers share the work and a crashed one's claims come due again), sends them
//! concurrently over one keep-alive HTTP client (bounded by `webhook_concurrency`), and a
//! writer task records the results in batches, one database transaction per batch.

pub mod ssrf;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tollgate_store::outbox::{self, AttemptRow, DeliveryRow, Finished, Outcome};
use tollgate_store::{RefundRow, TransactionRow, Tx};
use tollgate_stripe::backoff::{self, Jitter};

use crate::ApiContext;
use crate::api::render::{self, Fresh};
use crate::config::Config;
use crate::error::ApiResult;
use ssrf::{Dns, GuardedResolver, SystemDns};

// ---- secrets and signatures -------------------------------------------------------------------

/// A subscription's signing secret, `whsec_` + base64 of 32 random bytes. Never printed: its
/// `Debug` shows nothing of it, and it is returned by the API once, when made.
pub struct WebhookSecret(secrecy::SecretString);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

impl WebhookSecret {
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        Self(format!("whsec_{}", STANDARD.encode(b)).into())
    }

    /// A stored secret (`whsec_` + base64 of 24 to 64 bytes).
    pub fn parse(text: String) -> Option<Self> {
        let s = Self(text.into());
        let n = s.key()?.len();
        (24..=64).contains(&n).then_some(s)
    }

    /// The secret in clear: for sealing and for the one answer that shows it.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }

    /// The HMAC key: the base64-decoded bytes after `whsec_` (unlike Stripe's whole string).
    fn key(&self) -> Option<Vec<u8>> {
        let b64 = self.expose().strip_prefix("whsec_")?;
        STANDARD.decode(b64).ok()
    }

    /// `whsec_…abcd`, for display.
    pub fn hint(&self) -> String {
        crate::crypto::mask(self.expose())
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
/// per secret, space-separated.
pub fn sign(event_id: &str, timestamp: i64, body: &[u8], secrets: &[WebhookSecret]) -> String {
    use ring::hmac;
    let mut out = Vec::new();
    for s in secrets {
        let Some(key) = s.key() else { continue };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(event_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        out.push(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())));
    }
    out.join(" ")
}

// ---- events -----------------------------------------------------------------------------------

/// The event a transaction status emits when a transaction reaches it.
pub fn transaction_event(status: &str) -> Option<&'static str> {
    Some(match status {
        "authorization_succeeded" => "transaction.authorized",
        "capture_succeeded" => "transaction.captured",
        "capture_pending" => "transaction.capture-pending",
        "authorization_declined" => "transaction.declined",
        "authorization_failed" => "transaction.failed",
        "authorization_void_pending" => "transaction.void-pending",
        "authorization_voided" => "transaction.voided",
        _ => return None,
    })
}

/// The event a refund status emits.
pub fn refund_event(status: &str) -> Option<&'static str> {
    Some(match status {
        "processing" => "refund.processing",
        "succeeded" => "refund.succeeded",
        "failed" => "refund.failed",
        "declined" => "refund.declined",
        "voided" => "refund.voided",
        _ => return None,
    })
}

/// Writes event `name` about `target` (the resource as the API returns it) to the outbox, in
/// `tx`: the database transaction of the change. The way every event is made; entitlements
/// (`permission.*`, `customer.linked`) call it the same way.
pub async fn emit(
    tx: &mut Tx<'_>,
    merchant_account_id: &str,
    name: &str,
    target: &Value,
    now: i64,
) -> ApiResult<Option<String>> {
    // Outside a [`with_subscriptions_read_once`] scope nothing is kept.
    let memo = SUBSCRIPTIONS.try_with(|m| m.borrow().get(merchant_account_id).cloned());
    let subs = match memo.ok().flatten() {
        Some(subs) => subs,
        None => {
            let subs = Arc::new(outbox::active_subscriptions(tx, merchant_account_id).await?);
            let _ = SUBSCRIPTIONS.try_with(|m| {
                m.borrow_mut()
                    .insert(merchant_account_id.to_string(), subs.clone())
            });
            subs
        }
    };
    Ok(outbox::enqueue_to(tx, &subs, merchant_account_id, name, target, now).await?)
}

tokio::task_local! {
    /// Set by a writer that emits many events in one database transaction (the inbox's batch):
    /// each merchant account's subscriptions are read once per transaction instead of once per
    /// event. Only for the length of one transaction, in which they are read inside it.
    static SUBSCRIPTIONS: std::cell::RefCell<HashMap<String, Arc<outbox::Subscriptions>>>;
}

/// Runs `f` (the body of one database transaction) with [`emit`] reading each merchant
/// account's subscriptions once.
pub async fn with_subscriptions_read_once<F: Future>(f: F) -> F::Output {
    SUBSCRIPTIONS.scope(Default::default(), f).await
}

/// A transaction's status moved from `before` to `after.status`: its event, if it has one.
pub async fn transaction_changed(
    tx: &mut Tx<'_>,
    before: &str,
    after: &TransactionRow,
    now: i64,
) -> ApiResult<()> {
    if before == after.status {
        return Ok(());
    }
    if let Some(name) = transaction_event(&after.status) {
        let target = render::transaction(after, &Fresh::default());
        emit(tx, &after.merchant_account_id, name, &target, now).await?;
    }
    Ok(())
}

/// A refund reached `refund.status` (or was first accepted by Stripe): its event.
pub async fn refund_changed(
    tx: &mut Tx<'_>,
    refund: &RefundRow,
    transaction: Option<&TransactionRow>,
    now: i64,
) -> ApiResult<()> {
    if let Some(name) = refund_event(&refund.status) {
        let target = render::refund(refund, transaction);
        emit(tx, &refund.merchant_account_id, name, &target, now).await?;
    }
    Ok(())
}

// ---- one attempt ------------------------------------------------------------------------------

/// What one HTTP attempt gave.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status_code: Option<u16>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Sends events: one HTTP client (keep-alive pool, no redirects, no proxy) whose DNS resolver
/// is the SSRF guard.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

const EXCERPT_BYTES: usize = 1024;

impl Deliverer {
    pub fn new(config: &Config, dns: Arc<dyn Dns>) -> Result<Self, String> {
        tollgate_stripe::install_crypto_provider();
        let timeout = Duration::from_millis(config.webhook_timeout_ms.max(1));
        let resolver = Arc::new(GuardedResolver {
            dns,
            allow_private: config.allow_private_webhook_targets,
        });
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.webhook_concurrency.max(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Self {
            client,
            allow_private: config.allow_private_webhook_targets,
            timeout,
        })
    }

    /// POSTs `body` to `url`, signed with `secrets` at `now_ms`.
    pub async fn attempt(
        &self,
        url: &str,
        event_id: &str,
        body: &str,
        secrets: &[WebhookSecret],
        now_ms: i64,
    ) -> Attempt {
        let started = Instant::now();
        let refused = |e: String| Attempt {
            status_code: None,
            response_excerpt: None,
            error: Some(e),
            latency_ms: 0,
        };
        let parsed = match ssrf::check_url(url, self.allow_private) {
            Ok(u) => u,
            Err(e) => return refused(e),
        };
        // IP-literal hosts never reach the resolver: check_url has just checked them. Host
        // names are checked by the client's resolver, on the addresses it connects to.
        let ts = now_ms.div_euclid(1000);
        let signature = sign(event_id, ts, body.as_bytes(), secrets);
        let sent = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_string())
            .send()
            .await;
        let mut out = match sent {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let mut buf: Vec<u8> = Vec::new();
                while buf.len() < EXCERPT_BYTES {
                    match resp.chunk().await {
                        Ok(Some(c)) => buf.extend_from_slice(&c),
                        _ => break,
                    }
                }
                buf.truncate(EXCERPT_BYTES);
                let mut text = String::from_utf8_lossy(&buf).into_owned();
                truncate_to(&mut text, EXCERPT_BYTES);
                Attempt {
                    status_code: Some(status),
                    response_excerpt: (!text.is_empty()).then_some(text),
                    error: (!(200..300).contains(&status)).then(|| {
                        if (300..400).contains(&status) {
                            format!("HTTP {status}: redirects are not followed")
                        } else {
                            format!("HTTP {status}")
                        }
                    }),
                    latency_ms: 0,
                }
            }
            Err(e) => {
                // Without the URL: the log shows the subscription, and a URL may carry a token.
                let e = e.without_url();
                let msg = if e.is_timeout() {
                    format!("timed out after {} ms", self.timeout.as_millis())
                } else {
                    error_chain(&e)
                };
                refused(msg)
            }
        };
        out.latency_ms = started.elapsed().as_millis() as i64;
        out
    }
}

fn truncate_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// An error and its causes, one line, at most 500 bytes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    let mut out = parts.join(": ");
    truncate_to(&mut out, 500);
    out
}

// ---- the schedule -----------------------------------------------------------------------------

/// The delay before attempt `round_attempts + 1` after `round_attempts` failures: base × 2^(n-1),
/// at most `retry_max_ms`, with ±25 % jitter (so retries of many deliveries spread out).
pub fn backoff_ms(config: &Config, round_attempts: i64) -> i64 {
    let doublings = (round_attempts.max(1) - 1).min(40) as u32;
    let delay = backoff::delay(
        Duration::from_millis(config.webhook_retry_base_ms.max(1)),
        doublings,
        Duration::from_millis(config.webhook_retry_max_ms.max(1)),
        Jitter::Spread(0.25),
    );
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

/// What follows a failed attempt: a retry, or `Dead` when the next one would start after the
/// delivery's maximum age (counted from the start of its round).
fn after_failure(config: &Config, d: &DeliveryRow, now: i64) -> Outcome {
    let next = now + backoff_ms(config, d.round_attempts + 1);
    if next > d.round_started_at + config.webhook_max_age_ms as i64 {
        Outcome::Dead
    } else {
        Outcome::Retry {
            next_attempt_at: next,
        }
    }
}

// ---- the worker -------------------------------------------------------------------------------

/// A subscription as the worker needs it.
struct Target {
    url: String,
    active: bool,
    deleted: bool,
    secrets: Vec<WebhookSecret>,
}

/// Starts the delivery worker with the system resolver.
pub fn spawn(ctx: ApiContext) -> Option<tokio::task::JoinHandle<()>> {
    spawn_with(ctx, Arc::new(SystemDns))
}

/// Starts the delivery worker with a given resolver (tests script DNS answers).
pub fn spawn_with(ctx: ApiContext, dns: Arc<dyn Dns>) -> Option<tokio::task::JoinHandle<()>> {
    if !ctx.config.webhook_worker {
        return None;
    }
    let deliverer = match Deliverer::new(&ctx.config, dns) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "outbound webhooks: the delivery worker cannot start");
            return None;
        }
    };
    Some(tokio::spawn(run(ctx, deliverer)))
}

async fn run(ctx: ApiContext, deliverer: Deliverer) {
    let concurrency = ctx.config.webhook_concurrency.max(1);
    let batch = ctx.config.webhook_batch_size.max(1);
    let poll = Duration::from_millis(ctx.config.webhook_poll_interval_ms.max(10));
    // A claim outlives the attempt (timeout) with a margin for writing its result. A server that
    // dies holding claims leaves them due again when this ends.
    let lease_ms = ctx.config.webhook_timeout_ms as i64 + 10_000;
    let (results, mut rx) = tokio::sync::mpsc::channel::<Finished>(concurrency * 4 + batch);
    let store = ctx.store.clone();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut done = vec![first];
            while done.len() < 1000 {
                match rx.try_recv() {
                    Ok(r) => done.push(r),
                    Err(_) => break,
                }
            }
            let mut wait = Duration::from_millis(100);
            // Until it is written: a claim not recorded is attempted again when its lease ends
            // (at least once), but keep trying so that it rarely is.
            while let Err(e) = outbox::record(&store, &done).await {
                tracing::warn!(error = %e, n = done.len(), "outbound webhooks: recording results failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut idle = false;
    loop {
        // An idle server asks the read pool first, so that it does not take the write lock
        // (SQLite's only writer) several times a second for nothing.
        if idle
            && !outbox::any_due(ctx.store.reader(), ctx.now())
                .await
                .unwrap_or(true)
        {
            tokio::time::sleep(poll).await;
            continue;
        }
        let Ok(first) = slots.clone().acquire_owned().await else {
            return;
        };
        let want = (slots.available_permits() + 1).min(batch) as i64;
        let token = tollgate_store::new_id();
        let now = ctx.now();
        let rows = match outbox::claim_due(&ctx.store, &token, now, lease_ms, want).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "outbound webhooks: claiming deliveries failed");
                drop(first);
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        idle = rows.is_empty();
        if idle {
            drop(first);
            tokio::time::sleep(poll).await;
            continue;
        }
        let targets = match targets_of(&ctx, &rows).await {
            Ok(t) => t,
            Err(e) => {
                // The claims lapse after the lease and the rows come due again.
                tracing::warn!(error = %e, "outbound webhooks: reading subscriptions failed");
                drop(first);
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        let mut permit = Some(first);
        for row in rows {
            let p = match permit.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let target = targets.get(&row.subscription_id).cloned();
            let (ctx, deliverer, results, token) = (
                ctx.clone(),
                deliverer.clone(),
                results.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                let fin = deliver(&ctx, &deliverer, &row, target.as_deref(), &token).await;
                let _ = results.send(fin).await;
                drop(p);
            });
        }
    }
}

async fn targets_of(
    ctx: &ApiContext,
    rows: &[DeliveryRow],
) -> Result<HashMap<String, Arc<Target>>, String> {
    let mut ids: Vec<String> = rows.iter().map(|r| r.subscription_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let subs = outbox::subscriptions_by_ids(ctx.store.reader(), &ids)
        .await
        .map_err(|e| e.to_string())?;
    let now = ctx.now();
    let mut out = HashMap::new();
    for s in subs {
        let mut secrets = Vec::new();
        let old = s
            .old_secret_enc
            .as_ref()
            .filter(|_| s.old_secret_expires_at.is_some_and(|t| t > now));
        for sealed in std::iter::once(&s.secret_enc).chain(old) {
            match ctx
                .keys
                .open(&s.id, sealed)
                .ok()
                .and_then(WebhookSecret::parse)
            {
                Some(secret) => secrets.push(secret),
                None => {
                    tracing::error!(subscription = %s.id, "outbound webhooks: a signing secret cannot be opened");
                }
            }
        }
        out.insert(
            s.id.clone(),
            Arc::new(Target {
                url: s.url.clone(),
                active: s.active,
                deleted: s.deleted_at.is_some(),
                secrets,
            }),
        );
    }
    Ok(out)
}

/// One claimed delivery: attempted (or postponed, or ended), and what to record.
async fn deliver(
    ctx: &ApiContext,
    deliverer: &Deliverer,
    d: &DeliveryRow,
    target: Option<&Target>,
    token: &str,
) -> Finished {
    let now = ctx.now();
    let ended = |error: &str, outcome: Outcome| Finished {
        delivery_id: d.id.clone(),
        lease_token: token.to_string(),
        outcome,
        attempt: None,
        status_code: None,
        error: Some(error.to_string()),
        at: now,
    };
    let target = match target {
        Some(t) if !t.deleted => t,
        _ => return ended("the subscription was deleted", Outcome::Dead),
    };
    if !target.active {
        // Held while the subscription is inactive, up to the delivery's maximum age.
        if now > d.round_started_at + ctx.config.webhook_max_age_ms as i64 {
            return ended("the subscription stayed inactive", Outcome::Dead);
        }
        let next_attempt_at = now + ctx.config.webhook_retry_base_ms.max(1000) as i64;
        return ended(
            "the subscription is inactive",
            Outcome::Postponed { next_attempt_at },
        );
    }
    if target.secrets.is_empty() {
        return ended(
            "the subscription's signing secret cannot be opened (master key?)",
            after_failure(&ctx.config, d, now),
        );
    }
    let a = deliverer
        .attempt(&target.url, &d.event_id, &d.payload, &target.secrets, now)
        .await;
    let at = now + a.latency_ms;
    let outcome = if a.ok() {
        Outcome::Delivered
    } else {
        after_failure(&ctx.config, d, at)
    };
    let next = match &outcome {
        Outcome::Retry { next_attempt_at } => Some(*next_attempt_at),
        _ => None,
    };
    if !a.ok() {
        tracing::info!(delivery = %d.id, event = %d.event_id, status = ?a.status_code, error = ?a.error, "outbound webhook attempt failed");
    }
    Finished {
        delivery_id: d.id.clone(),
        lease_token: token.to_string(),
        status_code: a.status_code.map(i64::from),
        error: a.error.clone(),
        at,
        attempt: Some(AttemptRow {
            id: tollgate_store::new_id(),
            delivery_id: d.id.clone(),
            attempt: d.attempts + 1,
            attempted_at: now,
            status_code: a.status_code.map(i64::from),
            latency_ms: a.latency_ms,
            response_excerpt: a.response_excerpt,
            error: a.error,
            next_attempt_at: next,
        }),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_signatures() {
        let s = WebhookSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.key().map(|k| k.len()), Some(32));
        assert_eq!(format!("{s:?}"), "WebhookSecret(whsec_…)");
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
        // The Standard Webhooks reference vector.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()).unwrap();
        let sig = sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &[secret],
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = sign(
            "id",
            1,
            b"{}",
            &[WebhookSecret::generate(), WebhookSecret::generate()],
        );
        assert_eq!(two.split(' ').count(), 2);
        assert!(WebhookSecret::parse("whsec_short".into()).is_none());
        assert!(WebhookSecret::parse("nope".into()).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = Config {
            webhook_retry_base_ms: 1000,
            webhook_retry_max_ms: 10_000,
            ..Config::default()
        };
        for _ in 0..50 {
            let d1 = backoff_ms(&c, 1);
            let d2 = backoff_ms(&c, 2);
            let d5 = backoff_ms(&c, 5);
            let d9 = backoff_ms(&c, 9);
            assert!((750..=1250).contains(&d1), "{d1}");
            assert!((1500..=2500).contains(&d2), "{d2}");
            assert!(d2 > d1);
            assert!((7500..=12_500).contains(&d5), "{d5}");
            assert!(d9 <= 12_500, "{d9}");
        }
    }

    #[test]
    fn event_names_are_known() {
        for s in [
            "authorization_succeeded",
            "capture_succeeded",
            "capture_pending",
            "authorization_declined",
            "authorization_failed",
            "authorization_void_pending",
            "authorization_voided",
        ] {
            let n = transaction_event(s).unwrap();
            assert!(outbox::EVENT_NAMES.contains(&n), "{n}");
        }
        for s in ["processing", "succeeded", "failed", "declined", "voided"] {
            let n = refund_event(s).unwrap();
            assert!(outbox::EVENT_NAMES.contains(&n), "{n}");
        }
        assert!(transaction_event("buyer_approval_pending").is_none());
    }
}
