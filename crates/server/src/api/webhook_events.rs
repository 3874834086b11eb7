//! The inbox of Stripe events as an API (SPEC §4): `GET /webhook-events?status=…`,
//! `GET /webhook-events/{id}`, `POST /webhook-events/{id}/replay`, and reconcile
//! (`POST /connections/{id}/sync`).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use tollgate_store::inbox::{self, InboxRow, ListFilter};

use super::JsonBody;
use super::transactions::query_multi;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route("/connections/{id}/sync", routing::post(sync))
        .route("/webhook-events", routing::get(list))
        .route("/webhook-events/{id}", routing::get(get))
        .route("/webhook-events/{id}/replay", routing::post(replay))
}

/// Query parameters of `GET /webhook-events`.
pub const LIST_PARAMS: &[&str] = &[
    "cursor",
    "limit",
    "status",
    "connection_id",
    "type",
    "stripe_event_id",
];

/// Fields of the `POST /connections/{id}/sync` body.
pub const SYNC_FIELDS: &[&str] = &["since"];

/// One inbox row as the API shows it; `payload` (the event as Stripe sent it) only when asked
/// for one row.
pub fn render(r: &InboxRow, with_payload: bool) -> Value {
    let mut v = json!({
        "type": "webhook-event",
        "id": r.id,
        "connection_id": r.connection_id,
        "stripe_event_id": r.stripe_event_id,
        "stripe_account": (!r.stripe_account.is_empty()).then_some(&r.stripe_account),
        "event_type": r.event_type,
        "api_version": r.api_version,
        "source": r.source,
        "status": r.status,
        "attempts": r.attempts,
        "note": r.note,
        "stripe_created_at": r.stripe_created.map(|s| rfc3339(s * 1000)),
        "received_at": rfc3339(r.received_at),
        "applied_at": r.applied_at.map(rfc3339),
        "next_attempt_at": matches!(r.status.as_str(), inbox::FAILED).then(|| rfc3339(r.next_attempt_at)),
        "updated_at": rfc3339(r.updated_at),
    });
    if with_payload {
        v["payload"] = serde_json::from_str(&r.payload).unwrap_or(Value::String(r.payload.clone()));
    }
    v
}

pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let q = query_multi(uri.query());
    for k in q.keys() {
        if !LIST_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    let one = |k: &str| q.get(k).and_then(|v| v.last()).cloned();
    let (cursor, limit) = super::page_params(&q)?;
    let statuses = q.get("status").cloned().unwrap_or_default();
    for s in &statuses {
        if !inbox::STATUSES.contains(&s.as_str()) {
            return Err(ApiError::query(
                "/status",
                format!("'{s}' is not one of {}.", inbox::STATUSES.join(", ")),
            ));
        }
    }
    let filter = ListFilter {
        merchant_account_id: caller.merchant_account_id.clone(),
        statuses,
        connection_id: one("connection_id"),
        event_type: one("type"),
        stripe_event_id: one("stripe_event_id"),
        // Inbox ids are time-ordered: the id alone is the position.
        cursor: cursor.as_ref().map(|(_, id, after)| (id.clone(), *after)),
        limit,
    };
    let rows = inbox::list(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |r| {
        (r.received_at, r.id.clone())
    });
    let items = rows.iter().map(|r| render(r, false)).collect();
    Ok(Json(super::render::page(items, limit, next, previous)))
}

async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<InboxRow> {
    inbox::get(ctx.store.reader(), &caller.merchant_account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook event"))
}

pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    Ok(Json(render(&load(&ctx, &caller, &id).await?, true)))
}

/// Queues the event to be applied again from its first attempt (dead letters after a fix,
/// or any event: applying is forward-only, so a replay never moves anything backwards).
pub async fn replay(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, &[])?;
    let row = load(&ctx, &caller, &id).await?;
    inbox::replay(ctx.store.writer(), &row.id, ctx.now()).await?;
    ctx.inbox.wake.notify_waiters();
    let row = load(&ctx, &caller, &id).await?;
    Ok(Json(render(&row, false)))
}

/// `POST /connections/{id}/sync`: reconcile one connection now (`since`: unix seconds or
/// RFC 3339; default where the last reconcile stopped, at most Stripe's 30 days back).
pub async fn sync(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, SYNC_FIELDS)?;
    let since = match body.get("since") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let s = parse_since(v).ok_or_else(|| {
                ApiError::field("/since", "Must be unix seconds or an RFC 3339 timestamp.")
            })?;
            if s > ctx.now() / 1000 {
                return Err(ApiError::field("/since", "Must not be in the future."));
            }
            Some(s)
        }
    };
    let conn = tollgate_store::connections::get(ctx.store.reader(), &id)
        .await?
        .filter(|c| c.merchant_account_id == caller.merchant_account_id)
        .ok_or_else(|| ApiError::not_found("connection"))?;
    Ok(Json(
        crate::reconcile::sync_connection(&ctx, &conn, since).await?,
    ))
}

/// `since` as unix seconds: an integer, or an RFC 3339 timestamp.
pub fn parse_since(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|s| *s >= 0),
        Value::String(s) => s
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .or_else(|| crate::clock::parse_rfc3339(s).map(|ms| ms / 1000)),
        _ => None,
    }
}
