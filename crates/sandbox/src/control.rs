//! The control API (`/_sandbox/…`, JSON): test switches and buyer actions, kept apart from
//! Stripe's paths. Every route but the 3-D Secure buyer page (which a browser reaches from
//! `next_action.redirect_to_url.url`) needs the operator key, or a direct loopback peer when
//! the sandbox is reachable on loopback only (`SandboxConfig::trust_loopback`).
//! The hosted Checkout page (`/checkout/{id}`, reached from a session's `url`) is open too.

// Helpers here return `Result<_, Response>` whose error is the finished answer, handed straight
// back to axum; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Result, StripeError};
use crate::http::{error_response, is_loopback, relayed};
use crate::resources::{charges, checkout, format_amount, payment_intents, refunds};
use crate::state::{Access, RestrictedKey, random_string};
use crate::{ChaosConfig, FaultConfig, Inner, lock};

/// Restricted-key permission names (docs/sandbox.md), as the routing table uses them.
const PERMISSIONS: &[&str] = &[
    "customers",
    "products",
    "prices",
    "payment_intents",
    "payment_methods",
    "charges",
    "disputes",
    "events",
    "webhook_endpoints",
    "accounts",
    "checkout_sessions",
    "subscriptions",
    "invoices",
    "credit_notes",
    "test_clocks",
    "entitlements",
    "billing_meters",
    "billing_portal",
];
const FAULT_KINDS: &[&str] = &["500", "500-retry", "429", "drop", "latency"];
/// Upper bound for chaos/fault durations (keeps timer arithmetic far from overflow).
const MAX_MS: u64 = 3_600_000;
/// Query-value escaping for the return URL: everything but RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/reset", post(reset))
        .route("/state", get(state_counts))
        .route("/restricted_keys", post(restricted_keys))
        .route("/faults", post(faults))
        .route("/chaos", post(chaos))
        .route("/webhook_deliveries", get(webhook_deliveries))
        .route("/payment_intents/{id}/authenticate", post(pi_authenticate))
        .route("/refunds/{id}/settle", post(refund_settle))
        .route("/charges/{id}/expire", post(charge_expire))
        .route("/billing_settings", get(billing_get).post(billing_set))
        // Hosted invoice and credit note pages (read-only; the id in the link is the credential).
        .route("/invoices/{id}", get(invoice_page))
        .route("/credit_notes/{id}/pdf", get(credit_note_page))
        // The buyer's page: no operator check (the client secret is the credential).
        .route("/authenticate/{id}", get(buyer_page).post(buyer_submit))
        // Checkout: the control action, and the buyer's hosted page (the session id in its URL
        // is the credential, as on Stripe).
        .route("/checkout_sessions/{id}/complete", post(checkout_complete))
        .route(
            "/checkout/{id}",
            get(checkout::page).post(checkout::page_submit),
        )
        .route("/checkout/{id}/return", get(checkout::page_return))
        // The customer portal's pages (the secret in a session's URL is the credential).
        .merge(crate::resources::billing_portal::pages())
}

// ---------------------------------------------------------------------------------------------
// Access

/// Proof that the caller may use the control API: the operator key, or a trusted loopback peer.
struct Operator;

impl FromRequestParts<Arc<Inner>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        inner: &Arc<Inner>,
    ) -> std::result::Result<Self, Response> {
        if inner.config.trust_loopback && is_loopback(&parts.extensions) && !relayed(&parts.headers)
        {
            return Ok(Operator);
        }
        let given = parts
            .headers
            .get("x-sandbox-control-key")
            .map(HeaderValue::as_bytes);
        match (inner.config.control_key.as_deref(), given) {
            (Some(key), Some(given)) if !key.is_empty() && ct_eq(key.as_bytes(), given) => {
                Ok(Operator)
            }
            _ => Err(fail(StripeError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "The sandbox control API needs a valid X-Sandbox-Control-Key header. Without one it answers only requests made directly from this machine, and only when the sandbox is reachable on loopback only.",
            ))),
        }
    }
}

/// Constant-time equality: both sides are hashed first, so neither length nor the position of
/// the first difference shows in the timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    let diff = ha
        .iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// Responses and bodies

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn fail(e: StripeError) -> Response {
    error_response(&e, "req_control")
}

fn respond(out: Result<Value>) -> Response {
    match out {
        Ok(v) => ok(v),
        Err(e) => fail(e),
    }
}

fn bad(message: impl Into<String>) -> Response {
    fail(StripeError::invalid(message))
}

/// The JSON object body (an empty body is `{}`), with only the `allowed` members.
fn body_json(bytes: &[u8], allowed: &[&str]) -> std::result::Result<Map<String, Value>, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(bad("The request body must be a JSON object."));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(fail(
            StripeError::invalid(format!(
                "Unknown field `{k}`; allowed: {}.",
                allowed.join(", ")
            ))
            .param(k),
        ));
    }
    Ok(map)
}

/// A required string member that must be one of `allowed`.
fn outcome(body: &Map<String, Value>, allowed: &[&str]) -> std::result::Result<String, Response> {
    match body.get("outcome").and_then(Value::as_str) {
        Some(o) if allowed.contains(&o) => Ok(o.to_string()),
        _ => Err(fail(
            StripeError::invalid(format!("`outcome` must be one of: {}.", allowed.join(", ")))
                .param("outcome"),
        )),
    }
}

/// A number in milliseconds (absent = 0).
fn millis(body: &Map<String, Value>, key: &str) -> std::result::Result<u64, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_u64() {
            Some(ms) if ms <= MAX_MS => Ok(ms),
            _ => Err(fail(
                StripeError::invalid(format!(
                    "`{key}` must be an integer number of milliseconds between 0 and {MAX_MS}."
                ))
                .param(key),
            )),
        },
    }
}

/// A probability (absent = `default`).
fn probability(
    body: &Map<String, Value>,
    key: &str,
    default: Option<f64>,
) -> std::result::Result<f64, Response> {
    let err = || {
        fail(
            StripeError::invalid(format!("`{key}` must be a number between 0.0 and 1.0."))
                .param(key),
        )
    };
    match body.get(key) {
        None | Some(Value::Null) => default.ok_or_else(err),
        Some(v) => match v.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => Err(err()),
        },
    }
}

/// The account that holds the object `id` of `kind` (any account, platform or connected).
fn owner(inner: &Inner, kind: &str, id: &str) -> Option<String> {
    let st = lock(&inner.state);
    st.accounts
        .iter()
        .find(|(_, acct)| acct.get(kind, id).is_some())
        .map(|(acct_id, _)| acct_id.clone())
}

// ---------------------------------------------------------------------------------------------
// Operator routes

/// `POST /reset`: every object, event and endpoint forgotten (keys kept), delivery log cleared.
async fn reset(_: Operator, State(inner): State<Arc<Inner>>) -> Response {
    lock(&inner.state).reset();
    lock(&inner.delivery_log).clear();
    inner.dirty.store(true, Ordering::Release);
    ok(json!({"reset": true}))
}

/// `GET /state`: live objects per account and type.
async fn state_counts(_: Operator, State(inner): State<Arc<Inner>>) -> Response {
    let deliveries = lock(&inner.delivery_log).len();
    let st = lock(&inner.state);
    let mut accounts = Map::new();
    for (id, acct) in &st.accounts {
        let counts: Map<String, Value> = acct
            .collections
            .iter()
            // `_…` collections are the sandbox's private bookkeeping, not Stripe objects.
            .filter(|(kind, _)| !kind.starts_with('_'))
            .map(|(kind, c)| {
                let live = c
                    .objects
                    .values()
                    .filter(|v| v["deleted"] != Value::Bool(true))
                    .count();
                (kind.clone(), json!(live))
            })
            .collect();
        accounts.insert(id.clone(), Value::Object(counts));
    }
    ok(json!({
        "platform_account": st.platform_account,
        "accounts": accounts,
        "restricted_keys": st.restricted_keys.len(),
        "idempotency_keys": st.idempotency.len(),
        "webhook_delivery_attempts": deliveries,
    }))
}

/// `POST /restricted_keys`: `{"account"?, "permissions": {name: "read"|"write"|"none"}}`.
async fn restricted_keys(_: Operator, State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match body_json(&body, &["account", "permissions"]) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(given) = body.get("permissions").and_then(Value::as_object) else {
        return fail(
            StripeError::invalid(
                "`permissions` is required: an object of permission name to \"read\", \"write\" or \"none\".",
            )
            .param("permissions"),
        );
    };
    let mut permissions = HashMap::new();
    for (name, level) in given {
        if !PERMISSIONS.contains(&name.as_str()) {
            return fail(
                StripeError::invalid(format!(
                    "Unknown permission `{name}`. Allowed: {}.",
                    PERMISSIONS.join(", ")
                ))
                .param(&format!("permissions[{name}]")),
            );
        }
        let access = match level.as_str() {
            Some("read") => Access::Read,
            Some("write") => Access::Write,
            Some("none") => Access::None,
            _ => {
                return fail(
                    StripeError::invalid(format!(
                        "Permission `{name}` must be \"read\", \"write\" or \"none\"."
                    ))
                    .param(&format!("permissions[{name}]")),
                );
            }
        };
        permissions.insert(name.clone(), access);
    }
    let mut st = lock(&inner.state);
    let account = match body.get("account") {
        None | Some(Value::Null) => st.platform_account.clone(),
        Some(Value::String(a)) => {
            let known = st.accounts.contains_key(a)
                || st
                    .accounts
                    .get(&st.platform_account)
                    .is_some_and(|p| p.get("account", a).is_some());
            if !known {
                return fail(StripeError::missing("account", a, "account"));
            }
            a.clone()
        }
        Some(_) => return bad("`account` must be an account id string."),
    };
    let key = format!("rk_test_{}", random_string(99));
    st.restricted_keys.insert(
        key.clone(),
        RestrictedKey {
            account: account.clone(),
            permissions,
        },
    );
    drop(st);
    inner.dirty.store(true, Ordering::Release);
    ok(json!({"key": key, "account": account}))
}

/// `POST /faults`: `{"kind", "rate", "latency_ms"?, "path"?}`; `{"rate": 0}` turns injection
/// off; `path` limits it to requests whose path contains that text.
async fn faults(_: Operator, State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match body_json(&body, &["kind", "rate", "latency_ms", "path"]) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rate = match probability(&body, "rate", None) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let latency_ms = match millis(&body, "latency_ms") {
        Ok(ms) => ms,
        Err(r) => return r,
    };
    let kind = match body.get("kind") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if FAULT_KINDS.contains(&k.as_str()) => Some(k.clone()),
        Some(_) => {
            return fail(
                StripeError::invalid(format!(
                    "`kind` must be one of: {}.",
                    FAULT_KINDS.join(", ")
                ))
                .param("kind"),
            );
        }
    };
    let path = match body.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() && p.len() <= 1000 => Some(p.clone()),
        Some(_) => {
            return fail(
                StripeError::invalid(
                    "`path` must be a non-empty string of at most 1000 characters.",
                )
                .param("path"),
            );
        }
    };
    if rate > 0.0 && kind.is_none() {
        return fail(StripeError::invalid("`kind` is required when `rate` > 0.").param("kind"));
    }
    let config = FaultConfig {
        kind: if rate > 0.0 { kind } else { None },
        rate,
        latency_ms,
        path: if rate > 0.0 { path } else { None },
    };
    let out = json!({"kind": config.kind, "rate": config.rate, "latency_ms": config.latency_ms,
                     "path": config.path});
    *lock(&inner.faults) = config;
    ok(out)
}

/// Upper bound for one retry delay (days) and for the number of retries.
const MAX_RETRY_DAYS: i64 = 60;
const MAX_RETRIES: usize = 8;

/// `GET /billing_settings`: the subscription dunning settings.
async fn billing_get(_: Operator, State(inner): State<Arc<Inner>>) -> Response {
    let b = lock(&inner.state).billing.clone();
    ok(json!({"retry_days": b.retry_days, "after_retries": b.after_retries}))
}

/// `POST /billing_settings`: `{"retry_days": [3, 5, 7], "after_retries": "cancel"|"unpaid"|"past_due"}`;
/// absent members keep their value.
async fn billing_set(_: Operator, State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match body_json(&body, &["retry_days", "after_retries"]) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut b = lock(&inner.state).billing.clone();
    if let Some(v) = body.get("retry_days") {
        let days: Option<Vec<i64>> = v.as_array().and_then(|a| {
            a.iter()
                .map(|d| d.as_i64().filter(|d| (1..=MAX_RETRY_DAYS).contains(d)))
                .collect()
        });
        match days {
            Some(d) if d.len() <= MAX_RETRIES => b.retry_days = d,
            _ => {
                return fail(
                    StripeError::invalid(format!(
                        "`retry_days` must be a list of at most {MAX_RETRIES} whole numbers of days between 1 and {MAX_RETRY_DAYS}."
                    ))
                    .param("retry_days"),
                );
            }
        }
    }
    if let Some(v) = body.get("after_retries") {
        match v.as_str() {
            Some(a @ ("cancel" | "unpaid" | "past_due")) => b.after_retries = a.to_string(),
            _ => {
                return fail(
                    StripeError::invalid(
                        "`after_retries` must be one of: cancel, unpaid, past_due.",
                    )
                    .param("after_retries"),
                );
            }
        }
    }
    lock(&inner.state).billing = b.clone();
    inner.dirty.store(true, Ordering::Release);
    ok(json!({"retry_days": b.retry_days, "after_retries": b.after_retries}))
}

/// The hosted invoice page (`invoice.hosted_invoice_url`): number, status, lines, totals.
async fn invoice_page(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let Some(account) = owner(&inner, "invoice", &id) else {
        return billing_not_found();
    };
    let inv = {
        let st = lock(&inner.state);
        st.accounts
            .get(&account)
            .and_then(|a| a.get("invoice", &id))
            .cloned()
    };
    match inv {
        Some(inv) if inv["deleted"] != true => billing_page("Invoice", &inv, "amount_due"),
        _ => billing_not_found(),
    }
}

/// The credit note document (`credit_note.pdf`), as a page.
async fn credit_note_page(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let Some(account) = owner(&inner, "credit_note", &id) else {
        return billing_not_found();
    };
    let cn = {
        let st = lock(&inner.state);
        st.accounts
            .get(&account)
            .and_then(|a| a.get("credit_note", &id))
            .cloned()
    };
    match cn {
        Some(cn) => billing_page("Credit note", &cn, "amount"),
        None => billing_not_found(),
    }
}

fn billing_not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This document does not exist.</p>",
    )
}

fn billing_page(title: &str, doc: &Value, total_key: &str) -> Response {
    let cur = doc["currency"].as_str().unwrap_or("usd");
    let mut lines = String::new();
    for l in doc["lines"]["data"].as_array().into_iter().flatten() {
        lines.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            esc(l["description"].as_str().unwrap_or("Item")),
            esc(&format_amount(l["amount"].as_i64().unwrap_or(0), cur))
        ));
    }
    let body = format!(
        "<dl><dt>Number</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd>{lines}<dt>Total</dt><dd>{}</dd></dl>",
        esc(doc["number"].as_str().unwrap_or("(draft)")),
        esc(doc["status"].as_str().unwrap_or_default()),
        esc(&format_amount(doc[total_key].as_i64().unwrap_or(0), cur)),
    );
    page(StatusCode::OK, title, &body)
}

/// `POST /chaos`: `{"duplicate", "reorder_window_ms", "delay_ms", "hold"}`; absent members are
/// 0 (`hold`: none). Deliveries held before and no longer named by `hold` are sent now.
async fn chaos(_: Operator, State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match body_json(
        &body,
        &["duplicate", "reorder_window_ms", "delay_ms", "hold"],
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let config = match (
        probability(&body, "duplicate", Some(0.0)),
        millis(&body, "reorder_window_ms"),
        millis(&body, "delay_ms"),
        event_types(&body, "hold"),
    ) {
        (Ok(duplicate), Ok(reorder_window_ms), Ok(delay_ms), Ok(hold)) => ChaosConfig {
            duplicate,
            reorder_window_ms,
            delay_ms,
            hold,
        },
        (Err(r), _, _, _) | (_, Err(r), _, _) | (_, _, Err(r), _) | (_, _, _, Err(r)) => {
            return r;
        }
    };
    let mut out = json!({
        "duplicate": config.duplicate,
        "reorder_window_ms": config.reorder_window_ms,
        "delay_ms": config.delay_ms,
        "hold": config.hold,
    });
    *lock(&inner.chaos) = config;
    out["held"] = json!(crate::webhooks::release_held(&inner));
    ok(out)
}

/// A list of event-type patterns (absent or null: none): `type`, `prefix.*` or `*`.
fn event_types(body: &Map<String, Value>, key: &str) -> std::result::Result<Vec<String>, Response> {
    let err = || {
        fail(
            StripeError::invalid(format!(
                "`{key}` must be a list of event types (`invoice.paid`, `invoice.*` or `*`)."
            ))
            .param(key),
        )
    };
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(t)
                    if !t.is_empty()
                        && t.len() <= 100
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._*".contains(c)) =>
                {
                    Ok(t.to_string())
                }
                _ => Err(err()),
            })
            .collect(),
        Some(_) => Err(err()),
    }
}

/// `GET /webhook_deliveries`: every attempt, oldest first.
async fn webhook_deliveries(_: Operator, State(inner): State<Arc<Inner>>) -> Response {
    let log = lock(&inner.delivery_log).clone();
    ok(Value::Array(log))
}

/// `POST /payment_intents/{id}/authenticate`: `{"outcome": "approve"|"fail"}`.
async fn pi_authenticate(
    _: Operator,
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let approve =
        match body_json(&body, &["outcome"]).and_then(|b| outcome(&b, &["approve", "fail"])) {
            Ok(o) => o == "approve",
            Err(r) => return r,
        };
    let Some(account) = owner(&inner, "payment_intent", &id) else {
        return fail(StripeError::missing("payment_intent", &id, "intent"));
    };
    respond(inner.run_as(&account, |ctx| {
        payment_intents::authenticate(ctx, &id, approve)
    }))
}

/// `POST /refunds/{id}/settle`: `{"outcome": "succeeded"|"failed"}`.
async fn refund_settle(
    _: Operator,
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let succeeded =
        match body_json(&body, &["outcome"]).and_then(|b| outcome(&b, &["succeeded", "failed"])) {
            Ok(o) => o == "succeeded",
            Err(r) => return r,
        };
    let Some(account) = owner(&inner, "refund", &id) else {
        return fail(StripeError::missing("refund", &id, "refund"));
    };
    respond(inner.run_as(&account, |ctx| refunds::settle(ctx, &id, succeeded)))
}

/// `POST /charges/{id}/expire`: an uncaptured charge's authorization lapses now.
async fn charge_expire(
    _: Operator,
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = body_json(&body, &[]) {
        return r;
    }
    let Some(account) = owner(&inner, "charge", &id) else {
        return fail(StripeError::missing("charge", &id, "charge"));
    };
    respond(inner.run_as(&account, |ctx| charges::expire(ctx, &id)))
}

/// `POST /checkout_sessions/{id}/complete`: `{"payment_method"?, "email"?, "name"?, "outcome"?}`;
/// `outcome` (`async_success` | `async_failure`) pays with a delayed method instead of a card.
async fn checkout_complete(
    _: Operator,
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match body_json(&body, &["payment_method", "email", "name", "outcome"]) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if !v.is_empty() => Ok(Some(v.clone())),
        Some(_) => Err(fail(
            StripeError::invalid(format!("`{k}` must be a non-empty string.")).param(k),
        )),
    };
    let (payment_method, email, name) = match (text("payment_method"), text("email"), text("name"))
    {
        (Ok(pm), Ok(e), Ok(n)) => (pm, e, n),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let delayed = match body.get("outcome") {
        None | Some(Value::Null) => None,
        Some(_) => match outcome(&body, &["async_success", "async_failure"]) {
            Ok(o) => Some((
                payment_method
                    .clone()
                    .unwrap_or_else(|| "us_bank_account".to_string()),
                o == "async_success",
            )),
            Err(r) => return r,
        },
    };
    let Some(account) = owner(&inner, checkout::KIND, &id) else {
        return fail(StripeError::missing(checkout::KIND, &id, "session"));
    };
    let payment = checkout::Payment {
        payment_method: if delayed.is_some() {
            None
        } else {
            payment_method
        },
        email,
        name,
        delayed,
        return_url: None,
    };
    match inner.run_as(&account, |ctx| checkout::pay(ctx, &id, payment)) {
        Ok(checkout::Outcome::Complete(session)) => ok(session),
        Ok(checkout::Outcome::Authenticate(url)) => fail(
            StripeError::new(
                StatusCode::PAYMENT_REQUIRED,
                "card_error",
                "This payment needs 3-D Secure: answer it with POST /_sandbox/payment_intents/{id}/authenticate (or at `redirect_to_url`), then complete the session again without a payment_method.",
            )
            .code("authentication_required")
            .with("redirect_to_url", Value::String(url)),
        ),
        Err(e) => fail(e),
    }
}

// ---------------------------------------------------------------------------------------------
// The buyer's 3-D Secure page

/// The intent's account and object, when `client_secret` is its secret (else `None`, so a wrong
/// secret and a missing intent look the same).
fn intent_for_buyer(
    inner: &Inner,
    id: &str,
    client_secret: Option<&str>,
) -> Option<(String, Value)> {
    let given = client_secret?;
    let st = lock(&inner.state);
    let (account, pi) = st
        .accounts
        .iter()
        .find_map(|(acct_id, acct)| acct.get("payment_intent", id).map(|pi| (acct_id, pi)))?;
    let actual = pi["client_secret"].as_str()?;
    ct_eq(actual.as_bytes(), given.as_bytes()).then(|| (account.clone(), pi.clone()))
}

/// `GET /authenticate/{id}?client_secret=…`.
async fn buyer_page(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let secret = q.get("client_secret").map(String::as_str);
    let Some((_, pi)) = intent_for_buyer(&inner, &id, secret) else {
        return not_found_page();
    };
    let currency = pi["currency"].as_str().unwrap_or("usd");
    let amount = format!(
        "{} ({})",
        format_amount(pi["amount"].as_i64().unwrap_or(0), currency),
        currency.to_ascii_uppercase()
    );
    let status = pi["status"].as_str().unwrap_or_default();
    let body = if status == "requires_action" {
        format!(
            r#"<p>Complete or fail the authentication of this test payment.</p>
<dl><dt>Amount</dt><dd>{amount}</dd><dt>Payment</dt><dd><code>{id}</code></dd></dl>
<form method="post" action="./{action}">
<input type="hidden" name="client_secret" value="{secret}">
<div class="buttons">
<button type="submit" name="outcome" value="approve" class="complete">Complete</button>
<button type="submit" name="outcome" value="fail" class="fail">Fail</button>
</div>
</form>"#,
            amount = esc(&amount),
            id = esc(&id),
            action = esc(&utf8_percent_encode(&id, QUERY_VALUE).to_string()),
            secret = esc(secret.unwrap_or_default()),
        )
    } else {
        format!(
            "<p role=\"status\">This payment ({}) is not awaiting authentication: its status is <code>{}</code>.</p>",
            esc(&amount),
            esc(status)
        )
    };
    page(StatusCode::OK, "3D Secure 2 Test Page", &body)
}

/// `POST /authenticate/{id}` (form: `outcome`, `client_secret`): answers the challenge, then
/// sends the buyer back to the intent's `return_url` like Stripe does.
async fn buyer_submit(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = tollgate_stripe::form::parse(&body).unwrap_or_default();
    let field = |k: &str| form.get(k).and_then(Value::as_str).map(str::to_string);
    let secret = field("client_secret");
    let Some((account, _)) = intent_for_buyer(&inner, &id, secret.as_deref()) else {
        return not_found_page();
    };
    let approve = match field("outcome").as_deref() {
        Some("approve") => true,
        Some("fail") => false,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Invalid answer",
                "<p>Choose <strong>Complete</strong> or <strong>Fail</strong>.</p>",
            );
        }
    };
    let (result, status, return_url) = inner.run_as(&account, |ctx| {
        let result = payment_intents::authenticate(ctx, &id, approve);
        let status = ctx
            .get("payment_intent", &id)
            .and_then(|pi| pi["status"].as_str().map(str::to_string))
            .unwrap_or_default();
        (result, status, payment_intents::return_url(ctx, &id))
    });
    // The buyer always goes back to the merchant; the status the intent ended in decides what
    // `redirect_status` says (an approved challenge whose charge is then declined is "failed").
    let redirect_status = match status.as_str() {
        "succeeded" | "requires_capture" | "processing" => "succeeded",
        _ => "failed",
    };
    if let Some(url) = return_url {
        let target = append_query(
            &url,
            &[
                ("payment_intent", id.as_str()),
                (
                    "payment_intent_client_secret",
                    secret.as_deref().unwrap_or_default(),
                ),
                ("redirect_status", redirect_status),
            ],
        );
        if let Ok(location) = HeaderValue::from_str(&target) {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, location);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
    }
    match result {
        Ok(_) => page(
            StatusCode::OK,
            "Authentication complete",
            &format!(
                "<p role=\"status\">Authentication complete ({}). You can close this page.</p>",
                esc(redirect_status)
            ),
        ),
        Err(e) => page(
            e.status,
            "Authentication failed",
            &format!("<p role=\"alert\">{}</p>", esc(&e.message)),
        ),
    }
}

/// `url` with `pairs` added to its query (before any `#fragment`).
fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_string();
    for (k, v) in pairs {
        let sep = match out.find('?') {
            None => "?",
            Some(_) if out.ends_with('?') || out.ends_with('&') => "",
            Some(_) => "&",
        };
        out.push_str(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&utf8_percent_encode(v, QUERY_VALUE).to_string());
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn not_found_page() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This authentication page does not exist or its link is incomplete.</p>",
    )
}

/// The style of the sandbox's own pages (3-D Secure, invoices, credit notes).
const PAGE_CSS: &str = r#"body { font-family: system-ui, sans-serif; margin: 0; background: #f6f8fa; color: #1a1f36; }
main { max-width: 28rem; margin: 2rem auto; padding: 1.5rem; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.15); }
h1 { font-size: 1.25rem; margin-top: 0; }
.badge { display: inline-block; font-size: .75rem; padding: .1rem .4rem; border-radius: 4px; background: #ffe08a; }
dl { display: grid; grid-template-columns: auto 1fr; gap: .25rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
.buttons { display: flex; gap: .75rem; margin-top: 1.25rem; }
button { flex: 1; font-size: 1rem; padding: .75rem; border-radius: 6px; border: 2px solid transparent; cursor: pointer; }
button:focus-visible { outline: 3px solid #1a1f36; outline-offset: 2px; }
.complete { background: #0a7b3e; color: #fff; }
.fail { background: #fff; color: #a4161a; border-color: #a4161a; }"#;

/// A self-contained page (no external assets). The URL carries the client secret, so no
/// referrer leaves it and nothing caches it.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    private_html(status, html_page(title, PAGE_CSS, body))
}

/// A sandbox page: the test-mode badge, the (escaped) title, `body` and `css` inline, nothing
/// loaded from elsewhere. Shared with the hosted checkout page.
pub(crate) fn html_page(title: &str, css: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<main>
<p class="badge">Stripe sandbox (test mode)</p>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// An HTML answer nothing caches and that sends no referrer (the pages' URLs carry secrets).
pub(crate) fn private_html(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// HTML escaping for text and attribute values (the escaper Tollgate's own pages use too).
pub(crate) use tollgate_stripe::html::esc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_url_query() {
        let p = [("payment_intent", "pi_1"), ("redirect_status", "succeeded")];
        assert_eq!(
            append_query("https://shop.test/done", &p),
            "https://shop.test/done?payment_intent=pi_1&redirect_status=succeeded"
        );
        assert_eq!(
            append_query("https://shop.test/done?o=1#top", &p),
            "https://shop.test/done?o=1&payment_intent=pi_1&redirect_status=succeeded#top"
        );
        assert_eq!(
            append_query("https://x.test/?", &[("s", "a b&c")]),
            "https://x.test/?s=a%20b%26c"
        );
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            esc("<b a=\"x\">'&'</b>"),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }
}
