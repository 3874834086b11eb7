//! Instant unlock: `GET /v1/permissions/stream?customid=…`, the permission check as a stream of
//! Server-Sent Events.
//!
//! The stream answers like `GET /v1/permissions` (same keys, same customer-token rule, same
//! rate limit for opening it) and then pushes the customer's whole permission set again
//! whenever it changes:
//! - woken by the change feed of the permission cache ([`crate::entitlements::runtime`]: the
//!   SQLite change log or PostgreSQL's LISTEN/NOTIFY), for changes made by this server or any
//!   other on the same database; while that feed is down the stream reads the customer every
//!   second instead;
//! - and when a held permission lapses by the clock (its end passes: the answer changes
//!   without a new version).
//!
//! Each `permissions` event's `id` is the answer's ETag (the customer's state version, see
//! `GET /v1/permissions`), so a client that reconnects with `Last-Event-ID` gets the current
//! set at once if anything changed while it was away, and nothing until the next change if
//! not. Every event carries the whole set, so no change is lost across a reconnection: the
//! newest set holds all of them. Heartbeats (`: heartbeat` comments) keep proxies from closing
//! an idle stream. The stream ends when the server shuts down; clients reconnect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiContext;
use crate::entitlements::map::{Permission, Permissions};
use crate::entitlements::runtime::{Rows, Watch, Woke};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

/// The stream's route and its part of the OpenAPI document (public keys: beside the check,
/// outside the Idempotency-Key middleware).
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// Seconds between heartbeats unless the client asks otherwise.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
/// How often a stream reads its customer again while the change feed is down.
const POLL_WITHOUT_FEED: Duration = Duration::from_secs(1);
/// What a client waits before reconnecting (sent with the first event).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The query of `GET /v1/permissions/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The business's own id of its user: 1 to 255 characters, no control characters.
    #[param(
        required = true,
        value_type = String,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$",
        example = "user-7"
    )]
    pub customid: Option<String>,
    /// Seconds between heartbeats (comment lines that keep proxies from closing an idle
    /// stream), 1 to 300; 15 when absent.
    #[param(minimum = 1, maximum = 300, example = 15)]
    pub heartbeat: Option<u64>,
}

/// One event of the permission stream, as Server-Sent Events frame it (documentation only: the
/// stream writes these fields as `field: value` lines).
#[derive(Debug, ToSchema)]
#[schema(as = PermissionsEvent)]
pub struct PermissionsEvent {
    /// Always `permissions`.
    #[schema(pattern = "^permissions$", example = "permissions")]
    pub event: String,
    /// The answer's ETag (as `GET /v1/permissions` sends it, without quotes): send it back as
    /// `Last-Event-ID` when reconnecting.
    #[schema(example = "3")]
    pub id: String,
    /// The answer of `GET /v1/permissions` as JSON text: `{"customid": …, "permissions": […]}`.
    #[schema(
        content_media_type = "application/json",
        example = "{\"customid\":\"user-7\",\"permissions\":[{\"identifier\":\"premium\",\"is_valid\":true,\"entitlement\":3,\"expires_date\":253402300799,\"expires_at\":null,\"skuarray\":[]}]}"
    )]
    pub data: String,
    /// Milliseconds a client waits before reconnecting (sent with the first event).
    #[schema(example = 1000)]
    pub retry: Option<u64>,
}

/// Stream a customer's permissions (Server-Sent Events)
///
/// Answers like `GET /v1/permissions`, then keeps the connection open and sends the
/// customer's whole permission set again whenever it changes: a purchase, a renewal, a
/// refund, a grant, a lapse by the clock. Use it to unlock an app the moment a payment
/// succeeds, without polling.
///
/// Every event is `event: permissions`, its `data` the JSON answer of `GET /v1/permissions`
/// (`{"customid": …, "permissions": […]}`) and its `id` that answer's ETag. Reconnect with the
/// `Last-Event-ID` header (browsers' `EventSource` does it by itself) and the stream sends the
/// current set at once if it changed while you were away, nothing otherwise. Comment lines
/// (`: heartbeat`) come every `heartbeat` seconds. Opening a stream counts as one permission
/// check for the rate limit; keys and the `X-Customer-Token` rule are those of the check, so
/// send them as headers (the Tollgate client SDKs read the stream with `fetch`).
#[utoipa::path(
    get,
    path = "/v1/permissions/stream",
    operation_id = "stream_permissions",
    tag = "entitlements",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: the stream sends the current set at once only if it differs."),
        ("X-Customer-Token" = Option<String>, Header,
            description = "Hex HMAC-SHA256 of the customid under the account's customer-token secret; required when the account's settings require it."),
    ),
    responses(
        (status = 200, description = "A stream of `permissions` events (see above), e.g. `retry: 1000` / `event: permissions` / `id: 3` / `data: {\"customid\":\"user-7\",\"permissions\":[…]}`, then `: heartbeat` comments.",
            content_type = "text/event-stream", body = PermissionsEvent),
        (status = 400, description = "`bad_request`: no or a bad `customid`, or a bad `heartbeat`.", body = ErrorEnvelope),
        (status = 401, description = "`unauthorized`: no valid key, or the account requires an `X-Customer-Token` and none valid was sent.", body = ErrorEnvelope),
        (status = 429, description = "`too_many_requests`: too many permission checks from this key and address; see `Retry-After`.", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearerAuth" = [])),
)]
pub async fn stream(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match open(&ctx, addr, &headers, query.as_deref().unwrap_or("")).await {
        Ok(mut r) => {
            // Reverse proxies (nginx) must pass events on at once.
            r.headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
            r
        }
        Err((e, retry)) => {
            let mut r = e.into_response();
            if let Some(s) = retry
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// Checks the caller as `GET /v1/permissions` does, then starts the stream.
async fn open(
    ctx: &ApiContext,
    addr: SocketAddr,
    headers: &HeaderMap,
    raw_query: &str,
) -> Result<Response, (ApiError, Option<u64>)> {
    let (key_id, merchant, _kind) = super::entitlements::check_caller(ctx, headers)
        .await
        .map_err(|e| (e, None))?;
    ctx.entitlements.take(&key_id, addr.ip()).map_err(|wait| {
        (
            ApiError::TooManyRequests(format!(
                "Too many permission checks from this key and address; retry in {wait} s."
            )),
            Some(wait),
        )
    })?;
    let query: StreamQuery = super::typed::from_query(raw_query).map_err(|e| (e, None))?;
    let customid = query
        .customid
        .filter(|c| !c.is_empty() && c.chars().count() <= 255 && !c.chars().any(char::is_control))
        .ok_or_else(|| {
            (
                ApiError::query("/customid", "Required: 1 to 255 characters."),
                None,
            )
        })?;
    let heartbeat = match query.heartbeat {
        None => DEFAULT_HEARTBEAT_SECS,
        Some(s) if (1..=300).contains(&s) => s,
        Some(_) => {
            return Err((
                ApiError::query("/heartbeat", "Must be 1 to 300 seconds."),
                None,
            ));
        }
    };
    customer_token_ok(ctx, &merchant, &customid, headers)
        .await
        .map_err(|e| (e, None))?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    // Watch before the first read: a change committed after that read always wakes the stream.
    let watch = ctx.entitlements.watch(&merchant, &customid);
    let watcher = Watcher {
        ctx: ctx.clone(),
        merchant,
        customid,
        watch,
        sent: last_event_id,
        first: true,
        read_now: true,
        lapse_at: None,
    };
    let events = futures_util::stream::unfold(watcher, |w| w.next());
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(heartbeat))
                .text("heartbeat"),
        )
        .into_response())
}

/// The `X-Customer-Token` rule of the permission check.
async fn customer_token_ok(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    headers: &HeaderMap,
) -> ApiResult<()> {
    let settings = super::entitlements::settings_of(ctx, merchant).await?;
    if !settings.require_customer_token {
        return Ok(());
    }
    let presented = headers
        .get("x-customer-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ok = settings.customer_token_secret.as_deref().is_some_and(|s| {
        let want = super::entitlements::customer_token(s, customid);
        bool::from(want.as_bytes().ct_eq(presented.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "A valid X-Customer-Token is required for this customid.".into(),
        ))
    }
}

/// One open stream.
struct Watcher {
    ctx: ApiContext,
    merchant: String,
    customid: String,
    /// `None` only if the runtime's lock was poisoned: the stream then reads every second.
    watch: Option<Watch>,
    /// The `id` of the last event sent (or the client's `Last-Event-ID`).
    sent: Option<String>,
    first: bool,
    read_now: bool,
    /// When the first held permission lapses by the clock (ms).
    lapse_at: Option<i64>,
}

impl Watcher {
    /// The next event: the permission set when it differs from the last one sent; `None` ends
    /// the stream (shutdown, or the database failing: the client reconnects).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Watcher)> {
        loop {
            if self.read_now {
                self.read_now = false;
                let rows = match read(&self.ctx, &self.merchant, &self.customid).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "permission stream: reading the permissions failed; the stream ends");
                        return None;
                    }
                };
                let now = self.ctx.now();
                let tag = super::entitlements::etag_of(&rows, now);
                self.lapse_at = rows
                    .permissions
                    .iter()
                    .filter(|r| r.is_valid)
                    .filter_map(|r| r.valid_until)
                    .filter(|v| *v > now)
                    .min();
                if self.sent.as_deref() == Some(tag.as_str()) {
                    continue;
                }
                // Built as the check builds its answer, so the two never differ.
                let answer = Permissions {
                    customid: &self.customid,
                    permissions: Permission::all(&rows, now),
                };
                let data = match serde_json::to_string(&answer) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "permission stream: encoding the answer failed; the stream ends");
                        return None;
                    }
                };
                let mut event = Event::default()
                    .event("permissions")
                    .id(tag.clone())
                    .data(data);
                if self.first {
                    event = event.retry(RECONNECT_AFTER);
                    self.first = false;
                }
                self.sent = Some(tag);
                return Some((Ok(event), self));
            }
            if self.wait().await == Woke::Closing {
                return None;
            }
            self.read_now = true;
        }
    }

    /// Waits for a change, a lapse, or (without a change feed) the next poll.
    async fn wait(&mut self) -> Woke {
        let far = Duration::from_secs(24 * 3600);
        let lapse = self.lapse_at.map_or(far, |at| {
            let ms = at.saturating_sub(self.ctx.now()).max(0).saturating_add(1);
            Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(far)
        });
        let poll = if self.watch.is_some() && self.ctx.entitlements.following() {
            far
        } else {
            POLL_WITHOUT_FEED
        };
        let woke = async {
            match self.watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            w = woke => w,
            _ = tokio::time::sleep(lapse.min(poll)) => Woke::Changed,
        }
    }
}

/// The customer's permission rows and balances, from the permission cache when it holds them.
async fn read(ctx: &ApiContext, merchant: &str, customid: &str) -> ApiResult<Rows> {
    crate::entitlements::runtime::read(ctx, merchant, customid).await
}
