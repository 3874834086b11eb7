//! The HTTP face of the sandbox: authentication, idempotency, faults, routing to resource
//! handlers, `expand[]`, and Stripe's response headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::resources::{self, Handler};
use crate::state::{self, Access, IdempotencyRecord, random_string};
use crate::{Ctx, Effects, Inner, lock};

const MAX_BODY: usize = 1024 * 1024;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .nest("/_sandbox", crate::control::router())
        .route("/js/v3/", axum::routing::get(stripe_js))
        .route("/js/v3", axum::routing::get(stripe_js))
        .fallback(handle)
        .with_state(inner)
}

/// Who is calling.
#[derive(Clone)]
enum Caller {
    Secret,
    Publishable,
    Restricted(std::collections::HashMap<String, Access>),
}

pub(crate) fn is_loopback(req_ext: &axum::http::Extensions) -> bool {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().is_loopback())
        // Without connection info the peer is unknown: refuse (an embedder must serve the
        // router with `into_make_service_with_connect_info`).
        .unwrap_or(false)
}

/// The Stripe.js stand-in (`assets/stripe-v3.js`), for pages that load `…/js/v3/`.
async fn stripe_js() -> Response {
    let mut r = include_str!("../assets/stripe-v3.js").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// CORS preflight: Stripe's API answers browsers of any origin (Stripe.js calls it cross-site).
fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "authorization, content-type, stripe-version, stripe-account, idempotency-key",
        ),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    if req.method() == Method::OPTIONS {
        return preflight();
    }
    let request_id = format!("req_{}", random_string(14));
    let (parts, body) = req.into_parts();
    let version = parts
        .headers
        .get("stripe-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            api(
                &inner,
                &parts.method,
                &parts.uri,
                &parts.headers,
                bytes,
                &request_id,
            )
            .await
        }
        Err(_) => error_response(
            &StripeError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "Request body too large.",
            ),
            &request_id,
        ),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    let version = version.unwrap_or_else(|| crate::CURRENT_API_VERSION.to_string());
    if let Ok(v) = HeaderValue::from_str(&version) {
        h.insert("stripe-version", v);
    }
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store"),
    );
    resp
}

fn json_response(status: StatusCode, body: &str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &StripeError, request_id: &str) -> Response {
    let mut r = json_response(e.status, &e.body(request_id).to_string());
    if let Some(retry) = e.should_retry {
        r.headers_mut().insert(
            "stripe-should-retry",
            HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
    }
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A response whose body fails before any byte is written: hyper closes the connection, so the
/// client sees a dropped connection, as when Stripe's edge resets one.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: dropped connection",
        ))
    });
    Response::new(Body::from_stream(stream))
}

enum Fault {
    Error(StripeError),
    Drop,
    Latency(u64),
}

fn pick_fault(inner: &Inner, path: &str, headers: &HeaderMap) -> Result<Option<Fault>> {
    let explicit = headers
        .get("sandbox-fault")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let kind = match explicit {
        Some(k) => Some(k),
        None => {
            let f = lock(&inner.faults).clone();
            match f.kind {
                Some(k)
                    if f.rate > 0.0
                        && f.path.as_deref().is_none_or(|p| path.contains(p))
                        && rand::random::<f64>() < f.rate =>
                {
                    if k == "latency" {
                        Some(format!("latency={}", f.latency_ms))
                    } else {
                        Some(k)
                    }
                }
                _ => None,
            }
        }
    };
    let Some(kind) = kind else { return Ok(None) };
    Ok(Some(match kind.as_str() {
        "500" => Fault::Error(StripeError::api_error(false)),
        "500-retry" => Fault::Error(StripeError::api_error(true)),
        "429" => Fault::Error(StripeError::rate_limited()),
        "drop" => Fault::Drop,
        other => match other.strip_prefix("latency=").map(str::parse::<u64>) {
            Some(Ok(ms)) => Fault::Latency(ms.min(60_000)),
            _ => {
                return Err(StripeError::invalid(format!(
                    "Unknown Sandbox-Fault: {other}. Use 500, 500-retry, 429, drop or latency=MS."
                )));
            }
        },
    }))
}

fn mask_key(key: &str) -> String {
    let (prefix, rest) = match key
        .find('_')
        .and_then(|i| key[i + 1..].find('_').map(|j| i + j + 2))
    {
        Some(i) if i <= key.len() => (&key[..i], &key[i..]),
        _ => ("", key),
    };
    let tail: String = rest
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "{prefix}{}{tail}",
        "*".repeat(rest.chars().count().saturating_sub(4))
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(k) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(k.trim().to_string());
    }
    let b = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    Some(s.split(':').next().unwrap_or_default().to_string())
}

/// A test key as Stripe's own fakes write them: the prefix and at least one letter or digit
/// (`sk_test_123`, the key of Stripe's docs and stripe-mock's examples, as well as real-looking
/// `sk_test_51H…` keys).
fn well_formed(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 255 && rest.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// Whether a proxy relayed the request (it then came from loopback only in appearance).
pub(crate) fn relayed(headers: &HeaderMap) -> bool {
    ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// Resolves the key and `Stripe-Account` to a caller and the account it acts for.
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<(Caller, String)> {
    let Some(key) = bearer(headers) else {
        return Err(StripeError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        ));
    };
    let invalid = || {
        StripeError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            format!("Invalid API Key provided: {}", mask_key(&key)),
        )
    };
    let st = lock(&inner.state);
    let (caller, key_account) =
        if key == st.secret_key || (!inner.config.strict_keys && well_formed(&key, "sk_test_")) {
            (Caller::Secret, st.platform_account.clone())
        } else if key == st.publishable_key
            || (!inner.config.strict_keys && well_formed(&key, "pk_test_"))
        {
            (Caller::Publishable, st.platform_account.clone())
        } else if let Some(rk) = st.restricted_keys.get(&key) {
            (
                Caller::Restricted(rk.permissions.clone()),
                rk.account.clone(),
            )
        } else {
            return Err(invalid());
        };
    let account = match headers.get("stripe-account").and_then(|v| v.to_str().ok()) {
        None => key_account,
        Some(a) if a == key_account => key_account,
        Some(a) => {
            // A platform key may act for its connected accounts; nothing else may.
            let connected = key_account == st.platform_account
                && st
                    .accounts
                    .get(&st.platform_account)
                    .and_then(|p| p.get("account", a))
                    .is_some();
            if !connected {
                return Err(StripeError::new(
                    StatusCode::FORBIDDEN,
                    "invalid_request_error",
                    format!(
                        "The provided key '{}' does not have access to account '{a}' (or that account does not exist). Application access may have been revoked.",
                        mask_key(&key)
                    ),
                )
                .code("account_invalid"));
            }
            a.to_string()
        }
    };
    Ok((caller, account))
}

fn authorize(caller: &Caller, route: &resources::Route, account: &str) -> Result<()> {
    match caller {
        Caller::Secret => Ok(()),
        Caller::Publishable if route.publishable => Ok(()),
        Caller::Publishable => Err(StripeError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "This API call cannot be made with a publishable API key. Please use a secret API key. You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys.",
        )
        .code("secret_key_required")),
        Caller::Restricted(perms) => {
            let have = perms.get(route.perm).copied().unwrap_or(Access::None);
            let need = if route.write { Access::Write } else { Access::Read };
            if have >= need {
                Ok(())
            } else {
                let singular = route.perm.trim_end_matches('s');
                Err(StripeError::new(
                    StatusCode::FORBIDDEN,
                    "invalid_request_error",
                    format!(
                        "The provided key does not have the required permissions for this endpoint on account '{account}'. Having the 'rak_{singular}_{}' permission would allow this request to continue.",
                        if route.write { "write" } else { "read" }
                    ),
                ))
            }
        }
    }
}

async fn api(
    inner: &Arc<Inner>,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
) -> Response {
    let fail = |e: StripeError| error_response(&e, request_id);
    // A fault limited to a path matches the path as decoded (ids may arrive escaped).
    let decoded_path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    let fault = match pick_fault(inner, &decoded_path, headers) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if matches!(fault, Some(Fault::Drop)) {
        return dropped();
    }
    let (caller, account) = match authenticate(inner, headers) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let path = uri.path();
    // Path segments are percent-decoded, as on Stripe: a client may escape any character of an
    // id (Tollgate escapes everything but letters and digits, so `cs_…` arrives as `cs%5F…`).
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_or_else(|_| s.to_string(), |d| d.into_owned())
        })
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let Some(route) = resources::route(method, &segs) else {
        return fail(StripeError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            ),
        ));
    };
    if let Err(e) = authorize(&caller, &route, &account) {
        return fail(e);
    }
    let raw = if *method == Method::GET || *method == Method::DELETE {
        uri.query().unwrap_or("").as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let mut map = match tollgate_stripe::form::parse(&raw) {
        Ok(m) => m,
        Err(e) => return fail(StripeError::invalid(e.message).param(&e.param)),
    };
    if *method == Method::DELETE && !body.is_empty() {
        match tollgate_stripe::form::parse(&body) {
            Ok(m) => map.extend(m),
            Err(e) => return fail(StripeError::invalid(e.message).param(&e.param)),
        }
    }
    let expand = match Params::new(Map::new()).and_list(&mut map, "expand") {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if matches!(caller, Caller::Publishable) && route.publishable {
        // Publishable keys act on an intent only with its client secret.
        if let Err(e) = resources::check_client_secret(inner, &account, &route, &map) {
            return fail(e);
        }
    }

    // Idempotency (POST only, as Stripe): same key + same request replays; another request is
    // an idempotency_error; a concurrent one is a 409.
    let idem_key = if *method == Method::POST {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    } else {
        None
    };
    let mut slot = None;
    if let Some(key) = &idem_key {
        if key.len() > 255 {
            return fail(StripeError::invalid(
                "Invalid idempotency key: must be at most 255 characters long.",
            ));
        }
        let slot_key = format!("{account}\u{0}{key}");
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(method.as_str().as_bytes());
            h.update(b" ");
            h.update(path.as_bytes());
            h.update(b"\n");
            h.update(&raw);
            hex::encode(h.finalize())
        };
        let existing = lock(&inner.state).idempotency.get(&slot_key).cloned();
        if let Some(rec) = existing {
            if rec.fingerprint != fingerprint {
                return fail(StripeError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                ));
            }
            let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
            let mut r = json_response(status, &rec.body);
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Ok(v) = HeaderValue::from_str(key) {
                r.headers_mut().insert("idempotency-key", v);
            }
            return r;
        }
        if !lock(&inner.in_flight).insert(slot_key.clone()) {
            return fail(
                StripeError::new(
                    StatusCode::CONFLICT,
                    "idempotency_error",
                    "There is currently another in-progress request using this Stripe-Account + Idempotency-Key. Please try again later.",
                )
                .code("idempotency_key_in_use"),
            );
        }
        slot = Some((slot_key, fingerprint));
    }

    let outcome: Result<Value> = match fault {
        Some(Fault::Error(e)) => Err(e),
        Some(Fault::Latency(ms)) => {
            // Stripe finishes a request whose client went away and keeps its result under the
            // idempotency key; a spawned task does the same here even if this handler is dropped.
            let inner2 = inner.clone();
            let (route, account, request_id2, idem2) = (
                route.clone(),
                account.clone(),
                request_id.to_string(),
                idem_key.clone(),
            );
            let slot2 = slot.take();
            let task = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let out = execute(
                    &inner2,
                    &route,
                    map,
                    &account,
                    &request_id2,
                    idem2.as_deref(),
                    &expand,
                );
                record(&inner2, slot2, &out, &request_id2);
                out
            });
            match task.await {
                Ok(out) => out,
                Err(_) => Err(StripeError::api_error(true)),
            }
        }
        None | Some(Fault::Drop) => execute(
            inner,
            &route,
            map,
            &account,
            request_id,
            idem_key.as_deref(),
            &expand,
        ),
    };
    record(inner, slot, &outcome, request_id);
    match outcome {
        Err(e) => error_response(&e, request_id),
        Ok(v) => {
            let mut r = json_response(StatusCode::OK, &v.to_string());
            if let Some(k) = &idem_key
                && let Ok(v) = HeaderValue::from_str(k)
            {
                r.headers_mut().insert("idempotency-key", v);
            }
            r
        }
    }
}

/// Saves a finished request's answer under its idempotency key (when Stripe would) and frees
/// the key. Stripe saves a result once the endpoint started executing: successes, declines and
/// 500s (unless it said the request may be retried). Validation errors are not saved.
fn record(
    inner: &Inner,
    slot: Option<(String, String)>,
    outcome: &Result<Value>,
    request_id: &str,
) {
    let Some((slot_key, fingerprint)) = slot else {
        return;
    };
    let saved = match outcome {
        Ok(v) => Some((StatusCode::OK, v.to_string())),
        Err(e)
            if e.status == StatusCode::PAYMENT_REQUIRED
                || (e.status == StatusCode::INTERNAL_SERVER_ERROR
                    && e.should_retry != Some(true)) =>
        {
            Some((e.status, e.body(request_id).to_string()))
        }
        Err(_) => None,
    };
    if let Some((status, body)) = saved {
        lock(&inner.state).idempotency.insert(
            slot_key.clone(),
            IdempotencyRecord {
                fingerprint,
                status: status.as_u16(),
                body,
                created: state::now(),
            },
        );
    }
    lock(&inner.in_flight).remove(&slot_key);
}

fn execute(
    inner: &Arc<Inner>,
    route: &resources::Route,
    map: Map<String, Value>,
    account: &str,
    request_id: &str,
    idem_key: Option<&str>,
    expand: &[String],
) -> Result<Value> {
    let mut effects = Effects::default();
    let out = {
        let mut st = lock(&inner.state);
        let mut ctx = Ctx {
            state: &mut st,
            account: account.to_string(),
            now: state::now(),
            request_id: Some(request_id.to_string()),
            idempotency_key: idem_key.map(str::to_string),
            public_url: &inner.config.public_url,
            effects: &mut effects,
        };
        let handler: Handler = route.handler;
        let out = handler(&mut ctx, Params::new(map), &route.ids).and_then(|mut v| {
            resources::expand(&mut ctx, &mut v, expand)?;
            Ok(v)
        });
        // A refused request changes nothing; a decline (402) is an outcome Stripe records
        // (the failed charge, the intent's last_payment_error, the events).
        if let Err(e) = &out
            && e.status != axum::http::StatusCode::PAYMENT_REQUIRED
        {
            effects.roll_back(&mut st);
        }
        out
    };
    inner.after(effects);
    out
}

impl Params {
    /// Reads a string list out of a raw map (used for `expand` before the handler runs).
    fn and_list(mut self, map: &mut Map<String, Value>, key: &str) -> Result<Vec<String>> {
        if let Some(v) = map.remove(key) {
            let mut m = Map::new();
            m.insert(key.to_string(), v);
            self = Params::new(m);
            return Ok(self.str_list(key)?.unwrap_or_default());
        }
        Ok(Vec::new())
    }
}
