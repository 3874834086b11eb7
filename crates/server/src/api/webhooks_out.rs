//! Outbound webhooks (SPEC §7): `/webhook-subscriptions` (CRUD, secret rotation) and the
//! delivery log `/webhook-deliveries` (list, one with its attempts, resend). Every object is
//! scoped to the caller's merchant account.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_store::outbox::{
    self, AttemptRow, DeliveryFilter, DeliveryRow, Resend, SubscriptionRow,
};

use super::JsonBody;
use super::render;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::outbound::{WebhookSecret, ssrf};
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route(
            "/webhook-subscriptions",
            routing::post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/webhook-subscriptions/{id}",
            routing::get(get_subscription)
                .put(update_subscription)
                .patch(update_subscription)
                .delete(delete_subscription),
        )
        .route(
            "/webhook-subscriptions/{id}/rotate-secret",
            routing::post(rotate_secret),
        )
        .route("/webhook-deliveries", routing::get(list_deliveries))
        .route("/webhook-deliveries/{id}", routing::get(get_delivery))
        .route("/webhook-deliveries/{id}/resend", routing::post(resend))
}

/// The fields of a subscription create or update.
const FIELDS: &[&str] = &["url", "events", "active", "description"];

/// The filters of `GET /webhook-deliveries`.
const DELIVERY_QUERY: &[&str] = &[
    "cursor",
    "limit",
    "status",
    "subscription_id",
    "event_name",
    "event_id",
];

const DELIVERY_STATUSES: &[&str] = &["pending", "failed", "delivered", "dead"];

fn opt_time(ms: Option<i64>) -> Value {
    ms.map(|m| json!(rfc3339(m))).unwrap_or(Value::Null)
}

pub fn render_subscription(s: &SubscriptionRow, now: i64) -> Value {
    let rotating = s
        .old_secret_expires_at
        .filter(|t| *t > now && s.old_secret_enc.is_some());
    json!({
        "type": "webhook-subscription",
        "id": s.id,
        "merchant_account_id": s.merchant_account_id,
        "url": s.url,
        "events": serde_json::from_str::<Value>(&s.events).unwrap_or_else(|_| json!([])),
        "description": s.description,
        "active": s.active,
        "secret_hint": s.secret_hint,
        "previous_secret_expires_at": opt_time(rotating),
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.updated_at),
    })
}

pub fn render_delivery(d: &DeliveryRow) -> Value {
    let waiting = matches!(d.status.as_str(), "pending" | "failed");
    json!({
        "type": "webhook-delivery",
        "id": d.id,
        "merchant_account_id": d.merchant_account_id,
        "subscription_id": d.subscription_id,
        "event_id": d.event_id,
        "event_name": d.event_name,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": if waiting { json!(rfc3339(d.next_attempt_at)) } else { Value::Null },
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "delivered_at": opt_time(d.delivered_at),
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

pub fn render_attempt(a: &AttemptRow) -> Value {
    json!({
        "type": "webhook-delivery-attempt",
        "attempt": a.attempt,
        "attempted_at": rfc3339(a.attempted_at),
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "response_excerpt": a.response_excerpt,
        "error": a.error,
        "next_attempt_at": opt_time(a.next_attempt_at),
    })
}

/// A subscription answer that shows the secret: the one time it is ever shown. The response
/// is marked so that the idempotency middleware keeps a copy without it.
fn with_secret(status: StatusCode, mut body: Value, secret: &WebhookSecret) -> Response {
    body["secret"] = json!(secret.expose());
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(crate::idempotency::ShownOnce);
    r
}

/// Validated fields of a create or update (`None`: not given).
#[derive(Default)]
struct Input {
    url: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    description: Option<Option<String>>,
}

fn parse_input(ctx: &ApiContext, body: &Map<String, Value>) -> ApiResult<Input> {
    super::unknown_fields(body, FIELDS)?;
    let mut input = Input::default();
    match body.get("url") {
        None => {}
        Some(Value::String(u)) if u.len() <= 2048 => {
            ssrf::check_url(u.trim(), ctx.config.allow_private_webhook_targets)
                .map_err(|m| ApiError::field("/url", m))?;
            input.url = Some(u.trim().to_string());
        }
        Some(Value::String(_)) => {
            return Err(ApiError::field("/url", "At most 2048 characters."));
        }
        Some(_) => return Err(ApiError::field("/url", "Must be a string.")),
    }
    match body.get("events") {
        None => {}
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::field(
                    "/events",
                    "At least one event name or filter (e.g. \"transaction.*\" or \"*\").",
                ));
            }
            if items.len() > 50 {
                return Err(ApiError::field("/events", "At most 50 filters."));
            }
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                match v.as_str() {
                    Some(f) if outbox::valid_filter(f) => {
                        if !out.iter().any(|x: &String| x == f) {
                            out.push(f.to_string());
                        }
                    }
                    Some(f) => {
                        return Err(ApiError::field(
                            &format!("/events/{i}"),
                            format!(
                                "'{f}' is not an event name or filter: use one of {}, a group filter ({}) or \"*\".",
                                outbox::EVENT_NAMES.join(", "),
                                outbox::EVENT_GROUPS
                                    .iter()
                                    .map(|g| format!("{g}.*"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    None => {
                        return Err(ApiError::field(
                            &format!("/events/{i}"),
                            "Must be a string.",
                        ));
                    }
                }
            }
            input.events = Some(out);
        }
        Some(_) => {
            return Err(ApiError::field(
                "/events",
                "Must be an array of event names or filters.",
            ));
        }
    }
    match body.get("active") {
        None => {}
        Some(Value::Bool(b)) => input.active = Some(*b),
        Some(_) => return Err(ApiError::field("/active", "Must be true or false.")),
    }
    match body.get("description") {
        None => {}
        Some(Value::Null) => input.description = Some(None),
        Some(Value::String(s)) if s.len() <= 500 => input.description = Some(Some(s.clone())),
        Some(_) => {
            return Err(ApiError::field(
                "/description",
                "A string of at most 500 characters.",
            ));
        }
    }
    Ok(input)
}

async fn load_subscription(
    ctx: &ApiContext,
    caller: &Caller,
    id: &str,
) -> ApiResult<SubscriptionRow> {
    outbox::get_subscription(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))
}

pub async fn create_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_secret()?;
    let input = parse_input(&ctx, &body)?;
    let url = input
        .url
        .ok_or_else(|| ApiError::field("/url", "Required."))?;
    let events = input.events.unwrap_or_else(|| vec!["*".to_string()]);
    let now = ctx.now();
    let id = tollgate_store::new_id();
    let secret = WebhookSecret::generate();
    let row = SubscriptionRow {
        id: id.clone(),
        merchant_account_id: caller.merchant_account_id.clone(),
        url,
        events: json!(events).to_string(),
        description: input.description.flatten(),
        active: input.active.unwrap_or(true),
        secret_enc: ctx.keys.seal(&id, secret.expose()),
        secret_hint: secret.hint(),
        old_secret_enc: None,
        old_secret_expires_at: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    outbox::insert_subscription(ctx.store.writer(), &row).await?;
    Ok(with_secret(
        StatusCode::CREATED,
        render_subscription(&row, now),
        &secret,
    ))
}

pub async fn list_subscriptions(
    State(ctx): State<ApiContext>,
    caller: Caller,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let q = super::transactions::query_multi(uri.query());
    for k in q.keys() {
        if !["cursor", "limit"].contains(&k.as_str()) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    let (cursor, limit) = super::page_params(&q)?;
    let rows = outbox::list_subscriptions(
        ctx.store.reader(),
        &caller.merchant_account_id,
        cursor.as_ref(),
        limit,
    )
    .await?;
    let now = ctx.now();
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |s| {
        (s.created_at, s.id.clone())
    });
    let items = rows.iter().map(|s| render_subscription(s, now)).collect();
    Ok(Json(render::page(items, limit, next, previous)))
}

pub async fn get_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let s = load_subscription(&ctx, &caller, &id).await?;
    Ok(Json(render_subscription(&s, ctx.now())))
}

/// PATCH changes the fields given; PUT replaces the subscription's settings (`url` and
/// `events` required, `active` defaults to true and `description` to none).
pub async fn update_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    method: axum::http::Method,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let input = parse_input(&ctx, &body)?;
    let replace = method == axum::http::Method::PUT;
    if replace {
        if input.url.is_none() {
            return Err(ApiError::field(
                "/url",
                "Required (PUT replaces the settings).",
            ));
        }
        if input.events.is_none() {
            return Err(ApiError::field(
                "/events",
                "Required (PUT replaces the settings).",
            ));
        }
    }
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let mut s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        &id,
        ctx.store.for_update(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    if let Some(u) = input.url {
        s.url = u;
    }
    if let Some(e) = input.events {
        s.events = json!(e).to_string();
    }
    match input.active {
        Some(a) => s.active = a,
        None if replace => s.active = true,
        None => {}
    }
    match input.description {
        Some(d) => s.description = d,
        None if replace => s.description = None,
        None => {}
    }
    s.updated_at = now;
    outbox::update_subscription(&mut *tx, &s).await?;
    tollgate_store::commit(tx).await?;
    Ok(Json(render_subscription(&s, now)))
}

/// Deletes a subscription: no new events for it, and deliveries still waiting end `dead`.
pub async fn delete_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let mut s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        &id,
        ctx.store.for_update(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    s.active = false;
    s.deleted_at = Some(now);
    s.updated_at = now;
    // The secrets are of no use any more.
    s.old_secret_enc = None;
    s.old_secret_expires_at = None;
    outbox::update_subscription(&mut *tx, &s).await?;
    tollgate_store::commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret, shown once; the previous one keeps signing (both signatures are sent) for
/// `webhook_secret_grace_secs`, so receivers can switch without losing an event.
pub async fn rotate_secret(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_secret()?;
    super::unknown_fields(&body, &[])?;
    let now = ctx.now();
    let secret = WebhookSecret::generate();
    let mut tx = ctx.store.begin().await?;
    let mut s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        &id,
        ctx.store.for_update(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    s.old_secret_enc = Some(std::mem::replace(
        &mut s.secret_enc,
        ctx.keys.seal(&s.id, secret.expose()),
    ));
    s.old_secret_expires_at = Some(now + ctx.config.webhook_secret_grace_secs as i64 * 1000);
    s.secret_hint = secret.hint();
    s.updated_at = now;
    outbox::update_subscription(&mut *tx, &s).await?;
    tollgate_store::commit(tx).await?;
    Ok(with_secret(
        StatusCode::OK,
        render_subscription(&s, now),
        &secret,
    ))
}

// ---- deliveries ---------------------------------------------------------------------------------

pub async fn list_deliveries(
    State(ctx): State<ApiContext>,
    caller: Caller,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let q = super::transactions::query_multi(uri.query());
    for k in q.keys() {
        if !DELIVERY_QUERY.contains(&k.as_str()) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    let (cursor, limit) = super::page_params(&q)?;
    let statuses = q.get("status").cloned().unwrap_or_default();
    for s in &statuses {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::query(
                "/status",
                format!("'{s}' is not a delivery status (pending, failed, delivered, dead)."),
            ));
        }
    }
    let event_names = q.get("event_name").cloned().unwrap_or_default();
    // As documented (an event name): a misspelt one would otherwise list nothing, silently.
    if let Some(n) = event_names
        .iter()
        .find(|n| !outbox::EVENT_NAMES.contains(&n.as_str()))
    {
        return Err(ApiError::query(
            "/event_name",
            format!(
                "'{n}' is not an event name ({}).",
                outbox::EVENT_NAMES.join(", ")
            ),
        ));
    }
    let one = |k: &str| q.get(k).and_then(|v| v.last()).cloned();
    let filter = DeliveryFilter {
        merchant_account_id: caller.merchant_account_id.clone(),
        statuses,
        subscription_id: one("subscription_id"),
        event_names,
        event_id: one("event_id"),
        cursor: cursor.clone(),
        limit,
    };
    let rows = outbox::list_deliveries(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |d| {
        (d.created_at, d.id.clone())
    });
    let items = rows.iter().map(render_delivery).collect();
    Ok(Json(render::page(items, limit, next, previous)))
}

/// One delivery with the event as sent and its attempts (the delivery log).
pub async fn get_delivery(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let d = outbox::get_delivery(ctx.store.reader(), &caller.merchant_account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    let attempts = outbox::attempts_of(ctx.store.reader(), &d.id).await?;
    let mut v = render_delivery(&d);
    v["event"] = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    v["attempt_log"] = Value::Array(attempts.iter().map(render_attempt).collect());
    Ok(Json(v))
}

/// Sends the event again (same event id, so `webhook-id` is unchanged and receivers can
/// deduplicate), with a fresh round of retries, whatever the delivery's status.
pub async fn resend(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    super::unknown_fields(&body, &[])?;
    match outbox::resend(
        ctx.store.writer(),
        &caller.merchant_account_id,
        &id,
        ctx.now(),
    )
    .await?
    {
        Resend::Queued => {}
        Resend::InFlight => {
            return Err(ApiError::DuplicateRecord(
                "This delivery is being attempted right now; resend it once the attempt is over."
                    .into(),
            ));
        }
        Resend::NotFound => return Err(ApiError::not_found("webhook delivery")),
    }
    let d = outbox::get_delivery(ctx.store.reader(), &caller.merchant_account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(render_delivery(&d))))
}
