//! Events and their delivery: [`emit`] records Stripe's event object and queues one
//! [`Delivery`] per subscribed endpoint; [`run`] is the worker that signs and POSTs them, with
//! retries and the chaos switches (duplicate, reorder, delay).
//!
//! Every attempt looks the endpoint up again and signs with its secret *at send time*, as Stripe
//! does, so a rotated secret or a deleted/disabled endpoint takes effect for pending retries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tollgate_stripe::backoff::Jitter;

use crate::resources::events::PRIVATE;
use crate::state::{self, Account, new_id};
use crate::{Ctx, Inner, lock};

/// Attempts kept in the delivery log (oldest dropped first).
const LOG_CAP: usize = 10_000;
/// The longest wait between retries, whatever the base and attempt count.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// The longest reorder window honoured (guards `Instant` arithmetic against huge values).
const MAX_WINDOW_MS: u64 = 3_600_000;
/// How much of a receiver's answer is read (to let the connection be reused), at most.
const MAX_RESPONSE_READ: usize = 64 * 1024;
const USER_AGENT: &str = "Stripe/1.0 (+https://stripe.com/docs/webhooks)";

/// One event on its way to one endpoint.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The account holding the endpoint (the platform, for Connect endpoints).
    pub account: String,
    pub endpoint_id: String,
    /// The account holding the event (where `pending_webhooks` is counted down).
    pub event_account: String,
    pub event_id: String,
    pub event_type: String,
    /// The event as this endpoint receives it (in its pinned API version), serialised once.
    pub payload: String,
    /// The number of the next attempt (1 for a fresh delivery).
    pub attempt: u32,
    /// A chaos copy: sent like the original but not counted in `pending_webhooks`.
    pub duplicate: bool,
}

/// Records an event of `kind` about `object` in the current account and queues its deliveries.
pub fn emit(ctx: &mut Ctx, kind: &str, object: &Value, previous: Option<Value>) {
    let platform = ctx.state.platform_account.clone();
    let connected = ctx.account != platform;

    // (endpoint account, endpoint id, pinned api_version): the account's own endpoints, and for
    // a connected account also the platform's Connect endpoints.
    let mut targets = Vec::new();
    if let Some(acct) = ctx.state.accounts.get(&ctx.account) {
        subscribed(&ctx.account, acct, kind, false, &mut targets);
    }
    if connected && let Some(acct) = ctx.state.accounts.get(&platform) {
        subscribed(&platform, acct, kind, true, &mut targets);
    }

    let mut ev = Map::new();
    ev.insert("id".into(), json!(new_id("evt")));
    ev.insert("object".into(), json!("event"));
    if connected {
        ev.insert("account".into(), json!(ctx.account));
    }
    // The event is stored once, in the account's default version (the current one); endpoints
    // pinned to another version get their own rendering below (`crate::versions`).
    ev.insert("api_version".into(), json!(crate::CURRENT_API_VERSION));
    // Wall-clock time, also for objects on a test clock (their own stamps carry clock time).
    ev.insert("created".into(), json!(state::now()));
    // `data` is stored as its JSON text: events are the bulk of the state (four or more per
    // payment) and are written once, read rarely; see [`inflate`].
    let data = EventData {
        object,
        previous_attributes: previous.as_ref(),
    };
    ev.insert(
        "data".into(),
        Value::String(serde_json::to_string(&data).unwrap_or_default()),
    );
    ev.insert("livemode".into(), json!(false));
    ev.insert("pending_webhooks".into(), json!(targets.len()));
    // Automatic events (no API request behind them) have `{id: null, idempotency_key: null}`.
    ev.insert(
        "request".into(),
        json!({"id": ctx.request_id, "idempotency_key": ctx.idempotency_key}),
    );
    ev.insert("type".into(), json!(kind));
    let ev = Value::Object(ev);
    if targets.is_empty() {
        // The common case under load: nobody listens, so nothing is rendered for delivery.
        ctx.put("event", ev);
        return;
    }

    let event_id = ev["id"].as_str().unwrap_or_default().to_string();
    let mut full = ev.clone();
    inflate(&mut full);
    // Stripe sends pretty-printed JSON; the signature covers these exact bytes.
    let default_payload = serde_json::to_string_pretty(&full).unwrap_or_default();
    // Each distinct pinned version is rendered once, when the event is created (never for
    // versions no endpoint asked for).
    let mut rendered: Vec<(String, String)> = Vec::new();
    for (account, endpoint_id, version) in targets {
        let payload = match version {
            Some(v) if v != crate::CURRENT_API_VERSION => {
                if let Some((_, p)) = rendered.iter().find(|(rv, _)| *rv == v) {
                    p.clone()
                } else {
                    let acct = ctx.state.accounts.get(&ctx.account);
                    let copy = render_event(acct, &full, object, previous.as_ref(), &v);
                    let p = serde_json::to_string_pretty(&copy).unwrap_or_default();
                    rendered.push((v, p.clone()));
                    p
                }
            }
            _ => default_payload.clone(),
        };
        ctx.effects.deliveries.push(Delivery {
            account,
            endpoint_id,
            event_account: ctx.account.clone(),
            event_id: event_id.clone(),
            event_type: kind.to_string(),
            payload,
            attempt: 1,
            duplicate: false,
        });
    }
    ctx.put("event", ev);
}

/// The event as an endpoint pinned to `version` receives it (`api_version` and the shapes of
/// `data.object` and `data.previous_attributes` in that version).
fn render_event(
    acct: Option<&Account>,
    full: &Value,
    object: &Value,
    previous: Option<&Value>,
    version: &str,
) -> Value {
    let mut copy = full.clone();
    copy["api_version"] = json!(version);
    if crate::versions::differs(version) {
        copy["data"]["object"] = crate::versions::render(acct, object, version);
        if let Some(prev) = previous {
            copy["data"]["previous_attributes"] =
                crate::versions::render_previous(acct, object, prev, version);
        }
    }
    copy
}

#[derive(serde::Serialize)]
struct EventData<'a> {
    object: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_attributes: Option<&'a Value>,
}

/// Turns a stored event (its `data` kept as JSON text) back into Stripe's event object.
pub fn inflate(ev: &mut Value) {
    if let Some(text) = ev.get("data").and_then(Value::as_str)
        && let Ok(data) = serde_json::from_str::<Value>(text)
    {
        ev["data"] = data;
    }
}

/// Adds the enabled endpoints of `acct` (Connect ones when `connect`) that listen to `kind`.
fn subscribed(
    acct_id: &str,
    acct: &Account,
    kind: &str,
    connect: bool,
    out: &mut Vec<(String, String, Option<String>)>,
) {
    let Some(endpoints) = acct.collection("webhook_endpoint") else {
        return;
    };
    for id in &endpoints.ids {
        let Some(ep) = endpoints.objects.get(id) else {
            continue;
        };
        let is_connect = acct
            .get(PRIVATE, id)
            .and_then(|p| p["connect"].as_bool())
            .unwrap_or(false);
        let listens = ep["enabled_events"]
            .as_array()
            .is_some_and(|evs| evs.iter().any(|e| e == "*" || e == kind));
        if is_connect == connect && ep["status"] == "enabled" && listens {
            out.push((
                acct_id.to_string(),
                id.clone(),
                ep["api_version"].as_str().map(str::to_string),
            ));
        }
    }
}

/// The delivery worker: receives queued deliveries and starts each as its own task.
pub async fn run(inner: Arc<Inner>, mut rx: UnboundedReceiver<Delivery>) {
    while let Some(first) = rx.recv().await {
        let window = lock(&inner.chaos).reorder_window_ms.min(MAX_WINDOW_MS);
        let mut batch = vec![first];
        if window > 0 {
            // Chaos: hold everything arriving within the window, then release it shuffled.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(window);
            while let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                batch.push(d);
            }
            batch.shuffle(&mut rand::rng());
        }
        for d in batch {
            start(&inner, d);
        }
    }
}

/// Spawns a delivery (and, by the `duplicate` chaos rate, an independently signed copy), or
/// keeps it back while the `hold` chaos switch names its event type.
fn start(inner: &Arc<Inner>, d: Delivery) {
    let chaos = lock(&inner.chaos).clone();
    if chaos.holds(&d.event_type) {
        lock(&inner.held).push(d);
        return;
    }
    let delay = Duration::from_millis(chaos.delay_ms.min(MAX_WINDOW_MS));
    if chaos.duplicate > 0.0 && rand::random::<f64>() < chaos.duplicate {
        let copy = Delivery {
            duplicate: true,
            ..d.clone()
        };
        tokio::spawn(deliver(inner.clone(), copy, delay));
    }
    tokio::spawn(deliver(inner.clone(), d, delay));
}

/// Sends the held deliveries the `hold` switch no longer names, in the order they were due
/// (called after the chaos switches change). Returns how many are still held.
pub(crate) fn release_held(inner: &Arc<Inner>) -> usize {
    let chaos = lock(&inner.chaos).clone();
    let due: Vec<Delivery> = {
        let mut held = lock(&inner.held);
        let (keep, due) = std::mem::take(&mut *held)
            .into_iter()
            .partition(|d| chaos.holds(&d.event_type));
        *held = keep;
        due
    };
    for d in due {
        start(inner, d);
    }
    lock(&inner.held).len()
}

/// Attempts one delivery until a 2xx, the attempt limit, or its endpoint disappears.
async fn deliver(inner: Arc<Inner>, mut d: Delivery, first_delay: Duration) {
    if !first_delay.is_zero() {
        tokio::time::sleep(first_delay).await;
    }
    let max_attempts = inner.config.webhook_max_attempts.max(1);
    loop {
        let Some((url, secret)) = endpoint(&inner, &d) else {
            return; // deleted or disabled since: Stripe stops delivering too
        };
        let (status, error) = send(&inner, &url, &secret, &d.payload).await;
        log_attempt(&inner, &d, &url, status, error);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            if !d.duplicate {
                delivered(&inner, &d);
            }
            return;
        }
        if d.attempt >= max_attempts {
            return; // given up: the event keeps counting this webhook as pending, as on Stripe
        }
        tokio::time::sleep(backoff(inner.config.webhook_retry_base, d.attempt)).await;
        d.attempt += 1;
    }
}

/// The endpoint's URL and current secret, if it still exists and is enabled.
fn endpoint(inner: &Inner, d: &Delivery) -> Option<(String, String)> {
    let st = lock(&inner.state);
    let acct = st.accounts.get(&d.account)?;
    let ep = acct.get("webhook_endpoint", &d.endpoint_id)?;
    if ep["status"] != "enabled" {
        return None;
    }
    let url = ep["url"].as_str()?.to_string();
    let secret = acct.get(PRIVATE, &d.endpoint_id)?["secret"]
        .as_str()?
        .to_string();
    Some((url, secret))
}

/// One signed POST. → (HTTP status, transport error).
async fn send(
    inner: &Inner,
    url: &str,
    secret: &str,
    payload: &str,
) -> (Option<u16>, Option<String>) {
    let signature = tollgate_stripe::signature::header(&[secret], state::now(), payload.as_bytes());
    let res = inner
        .http
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Accept", "*/*; q=0.5, application/xml")
        .header("Cache-Control", "no-cache")
        .header("Stripe-Signature", signature)
        .header("User-Agent", USER_AGENT)
        .body(payload.to_string())
        .send()
        .await;
    match res {
        Ok(mut r) => {
            let status = r.status().as_u16();
            // Read a bounded amount of the answer so the connection can be reused.
            let mut read = 0;
            while read < MAX_RESPONSE_READ {
                match r.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            (Some(status), None)
        }
        Err(e) => (None, Some(error_text(&e))),
    }
}

/// reqwest's error with its causes (the top level alone is often just "error sending request").
fn error_text(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `base * 2^(attempt-1)`, capped, with ±20% jitter.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    tollgate_stripe::backoff::delay(base, doublings, MAX_BACKOFF, Jitter::Spread(0.2))
}

/// Counts a successful delivery down in the event's `pending_webhooks` (best effort: the event
/// may have been reset away).
fn delivered(inner: &Inner, d: &Delivery) {
    let mut st = lock(&inner.state);
    let Some(ev) = st
        .accounts
        .get_mut(&d.event_account)
        .and_then(|a| a.get_mut("event", &d.event_id))
    else {
        return;
    };
    let pending = ev["pending_webhooks"].as_i64().unwrap_or(0);
    ev["pending_webhooks"] = json!((pending - 1).max(0));
    drop(st);
    inner.dirty.store(true, Ordering::Release);
}

fn log_attempt(inner: &Inner, d: &Delivery, url: &str, status: Option<u16>, error: Option<String>) {
    let entry = json!({
        "event_id": d.event_id,
        "event_type": d.event_type,
        "endpoint_id": d.endpoint_id,
        "url": url,
        "attempt": d.attempt,
        "status": status,
        "error": error,
        "duplicate": d.duplicate,
        "at_ms": state::now_ms(),
    });
    let mut log = lock(&inner.delivery_log);
    log.push(entry);
    if log.len() > LOG_CAP {
        let excess = log.len() - LOG_CAP;
        log.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_patterns_name_exact_types_prefixes_or_everything() {
        let chaos = crate::ChaosConfig {
            hold: vec!["invoice.*".into(), "customer.subscription.updated".into()],
            ..Default::default()
        };
        assert!(chaos.holds("invoice.paid"));
        assert!(chaos.holds("invoice.payment_failed"));
        assert!(chaos.holds("customer.subscription.updated"));
        assert!(!chaos.holds("customer.subscription.deleted"));
        assert!(!chaos.holds("invoice_payment.paid"));
        assert!(!chaos.holds("invoice"));
        let all = crate::ChaosConfig {
            hold: vec!["*".into()],
            ..Default::default()
        };
        assert!(all.holds("charge.succeeded"));
        assert!(!crate::ChaosConfig::default().holds("charge.succeeded"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_never_overflows() {
        let base = Duration::from_secs(1);
        for attempt in 1..=5u32 {
            let d = backoff(base, attempt).as_secs_f64();
            let plain = f64::from(1u32 << (attempt - 1));
            assert!(
                d >= plain * 0.8 - 1e-9 && d <= plain * 1.2 + 1e-9,
                "{attempt}: {d}"
            );
        }
        assert!(backoff(Duration::MAX, u32::MAX) <= MAX_BACKOFF.mul_f64(1.2));
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
