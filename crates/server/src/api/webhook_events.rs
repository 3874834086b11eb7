//! The inbox of Stripe events as an API: `GET /webhook-events?status=…`,
//! `GET /webhook-events/{id}`, `POST /webhook-events/{id}/replay`, and reconcile
//! (`POST /connections/{id}/sync`).

use axum::Json;
use axum::extract::{Path, State};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tollgate_store::inbox::{self, InboxRow, ListFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use super::typed::{self, Body};
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(sync))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(replay));
    super::typed::close(&mut router, &["SyncRequest", "NoFields"]);
    router
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

// ---- the webhook event object ------------------------------------------------------------------

/// A Stripe event in the inbox: stored before the webhook was answered, applied by a worker.
/// Every field is always present (possibly `null`); `payload` only on
/// `GET /webhook-events/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEvent)]
pub struct WebhookEventOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^webhook-event$", example = "webhook-event")]
    pub object: &'static str,
    /// The inbox row's id (not the Stripe `evt_` id).
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// `evt_…`, or `sync_{object id}_{content hash}` for an object reconcile read from a list.
    #[schema(example = "evt_1QExample")]
    pub stripe_event_id: String,
    /// The connected account (`acct_…`); null for the platform's own.
    #[schema(required = true)]
    pub stripe_account: Option<String>,
    /// Stripe's event type (`{object}.synced` for listed objects).
    #[schema(example = "payment_intent.succeeded")]
    pub event_type: String,
    #[schema(required = true)]
    pub api_version: Option<String>,
    #[schema(value_type = WebhookEventSource)]
    pub source: String,
    #[schema(value_type = WebhookEventStatus)]
    pub status: String,
    #[schema(minimum = 0)]
    pub attempts: i64,
    /// What applying did, why it was ignored, or the last error.
    #[schema(required = true)]
    pub note: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub stripe_created_at: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    #[schema(required = true, format = DateTime)]
    pub applied_at: Option<String>,
    /// When a `failed` event is tried again.
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The event exactly as received (untrusted data); only on `GET /webhook-events/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = any_value)]
    pub payload: Option<Value>,
}

/// Any JSON value: the event as Stripe sent it.
fn any_value() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "The event exactly as received (untrusted data); only on `GET /webhook-events/{id}`.",
        ))
        .build()
}

/// `received` (waiting), `applied`, `ignored` (not ours or not needed), `failed` (will retry),
/// `dead` (retries exhausted; replayable).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: the rows hold the status as text.
pub enum WebhookEventStatus {
    Received,
    Applied,
    Ignored,
    Failed,
    Dead,
}

/// `webhook`: Stripe sent it; `sync`: reconcile read it.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: the rows hold the source as text.
pub enum WebhookEventSource {
    Webhook,
    Sync,
}

/// One inbox row as the API shows it; `payload` (the event as Stripe sent it) only when asked
/// for one row.
pub fn render(r: &InboxRow, with_payload: bool) -> WebhookEventOut {
    WebhookEventOut {
        object: "webhook-event",
        id: r.id.clone(),
        connection_id: r.connection_id.clone(),
        stripe_event_id: r.stripe_event_id.clone(),
        stripe_account: (!r.stripe_account.is_empty()).then(|| r.stripe_account.clone()),
        event_type: r.event_type.clone(),
        api_version: r.api_version.clone(),
        source: r.source.clone(),
        status: r.status.clone(),
        attempts: r.attempts,
        note: r.note.clone(),
        stripe_created_at: r.stripe_created.map(|s| rfc3339(s * 1000)),
        received_at: rfc3339(r.received_at),
        applied_at: r.applied_at.map(rfc3339),
        next_attempt_at: matches!(r.status.as_str(), inbox::FAILED)
            .then(|| rfc3339(r.next_attempt_at)),
        updated_at: rfc3339(r.updated_at),
        payload: with_payload.then(|| {
            serde_json::from_str(&r.payload).unwrap_or_else(|_| Value::String(r.payload.clone()))
        }),
    }
}

// ---- list --------------------------------------------------------------------------------------

/// The query of `GET /webhook-events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookEventQuery {
    /// A `next_cursor` or `previous_cursor` from an earlier page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// Only these statuses (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<WebhookEventStatus>>, style = Form, explode)]
    pub status: Vec<String>,
    /// Only this connection's events.
    pub connection_id: Option<String>,
    /// Only this Stripe event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only this Stripe event id.
    pub stripe_event_id: Option<String>,
}

/// The inbox, newest first, with cursor paging. An unknown query parameter is a 400.
#[utoipa::path(
    get,
    path = "/webhook-events",
    operation_id = "list_webhook_events",
    tag = "webhook-events",
    summary = "List received Stripe events",
    params(WebhookEventQuery),
    responses(
        (status = 200, description = "A page of inbox rows.", body = Page<WebhookEventOut>),
        (status = 400, description = "An unknown query parameter, or one that is not valid (named in `details`).", body = ErrorEnvelope),
    ),
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    uri: axum::http::Uri,
) -> ApiResult<Json<Page<WebhookEventOut>>> {
    caller.require_secret()?;
    let raw = uri.query().unwrap_or("");
    for (k, _) in form_urlencoded::parse(raw.as_bytes()) {
        let k = k.strip_suffix("[]").unwrap_or(&k);
        if !LIST_PARAMS.contains(&k) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    let q: WebhookEventQuery = typed::from_query(raw)?;
    let limit = match q.limit {
        None => 20,
        Some(l) if (1..=100).contains(&l) => l,
        Some(_) => return Err(ApiError::query("/limit", "Must be between 1 and 100.")),
    };
    let cursor = match q.cursor.as_deref() {
        Some(c) if !c.is_empty() => Some(
            super::cursor::decode(c)
                .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this server made."))?,
        ),
        _ => None,
    };
    for s in &q.status {
        if !inbox::STATUSES.contains(&s.as_str()) {
            return Err(ApiError::query(
                "/status",
                format!("'{s}' is not one of {}.", inbox::STATUSES.join(", ")),
            ));
        }
    }
    let filter = ListFilter {
        merchant_account_id: caller.merchant_account_id.clone(),
        statuses: q.status,
        connection_id: q.connection_id,
        event_type: q.event_type,
        stripe_event_id: q.stripe_event_id,
        // Inbox ids are time-ordered: the id alone is the position.
        cursor: cursor.as_ref().map(|(_, id, after)| (id.clone(), *after)),
        limit,
    };
    let rows = inbox::list(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |r| {
        (r.received_at, r.id.clone())
    });
    Ok(Json(Page {
        items: rows.iter().map(|r| render(r, false)).collect(),
        limit,
        next_cursor: next,
        previous_cursor: previous,
    }))
}

async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<InboxRow> {
    inbox::get(ctx.store.reader(), &caller.merchant_account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook event"))
}

// ---- one event ---------------------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/webhook-events/{id}",
    operation_id = "get_webhook_event",
    tag = "webhook-events",
    summary = "Get a received Stripe event",
    params(("id" = String, Path, format = "uuid", description = "The inbox row's id (not the Stripe `evt_` id). Another merchant account's row is 404.")),
    responses(
        (status = 200, description = "The row, with its payload.", body = WebhookEventOut),
        (status = 404, description = "`not_found`: no such event in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookEventOut>> {
    caller.require_secret()?;
    Ok(Json(render(&load(&ctx, &caller, &id).await?, true)))
}

/// A body with no fields: no body, an empty one, or `{}` (any field is a 400).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct NoFields {}

/// Queues the event to be applied again from its first attempt (a dead letter after a fix, or
/// any event: applying is forward-only, so a replay never moves anything backwards).
#[utoipa::path(
    post,
    path = "/webhook-events/{id}/replay",
    operation_id = "replay_webhook_event",
    tag = "webhook-events",
    summary = "Replay a received Stripe event",
    params(("id" = String, Path, format = "uuid", description = "The inbox row's id (not the Stripe `evt_` id). Another merchant account's row is 404.")),
    request_body(content = NoFields, description = "No body is needed; an empty body or `{}` (any field is a 400)."),
    responses(
        (status = 200, description = "The row, back in `received`.", body = WebhookEventOut),
        (status = 400, description = "A field in the body (each one is listed in `details`).", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such event in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn replay(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(NoFields {}): Body<NoFields>,
) -> ApiResult<Json<WebhookEventOut>> {
    caller.require_secret()?;
    let row = load(&ctx, &caller, &id).await?;
    inbox::replay(ctx.store.writer(), &row.id, ctx.now()).await?;
    ctx.inbox.wake.notify_waiters();
    let row = load(&ctx, &caller, &id).await?;
    Ok(Json(render(&row, false)))
}

// ---- reconcile ---------------------------------------------------------------------------------

/// The body of `POST /connections/{id}/sync`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"since": 1767225600}))]
pub struct SyncRequest {
    /// Unix seconds or RFC 3339, not in the future; default where the last reconcile stopped (at
    /// most 30 days back, Stripe's event retention).
    #[schema(schema_with = since_schema)]
    pub since: Option<Since>,
}

/// Unix seconds (an integer, or a string of digits), or an RFC 3339 timestamp.
#[derive(Debug, Clone)]
pub enum Since {
    Seconds(i64),
    Text(String),
}

/// The schema of `since`: unix seconds or RFC 3339, or `null` (the default).
fn since_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaFormat, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(
            SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime),
        )))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

impl Since {
    /// Unix seconds, if the value is one.
    pub fn seconds(&self) -> Option<i64> {
        match self {
            Since::Seconds(s) => Some(*s).filter(|s| *s >= 0),
            Since::Text(s) => since_text(s),
        }
    }
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Since;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("unix seconds or an RFC 3339 timestamp")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Since, E> {
                Ok(Since::Seconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Since, E> {
                i64::try_from(v)
                    .map(Since::Seconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Since, E> {
                Ok(Since::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `since` as unix seconds: an integer, or an RFC 3339 timestamp (the API and the CLI).
pub fn parse_since(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|s| *s >= 0),
        Value::String(s) => since_text(s),
        _ => None,
    }
}

fn since_text(s: &str) -> Option<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|s| *s >= 0)
        .or_else(|| crate::clock::parse_rfc3339(s).map(|ms| ms / 1000))
}

pub use crate::reconcile::{ListRead, Resync, ResyncError, SyncReport};

/// Re-reads Stripe with the connection's key: `GET /v1/events` since the last event reconcile
/// saw (when the key may read Events), the list endpoints over a `created` window, and every
/// transaction Stripe may still move; feeds what it finds through the inbox and applies it
/// before answering. `tollgate stripe sync` does the same from the command line; a periodic
/// reconcile runs every `reconcile_interval_secs`.
#[utoipa::path(
    post,
    path = "/connections/{id}/sync",
    operation_id = "sync_connection",
    tag = "webhook-events",
    summary = "Reconcile a connection with Stripe",
    params(("id" = String, Path, description = "The connection's id.")),
    request_body = SyncRequest,
    responses(
        (status = 200, description = "The report.", body = SyncReport),
        (status = 400, description = "`since` is not unix seconds or RFC 3339, or is in the future; or an unknown field (each one is listed in `details`).", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached or failed; nothing read so far is lost, sync again.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time; nothing read so far is lost, sync again.", body = ErrorEnvelope),
    ),
)]
pub async fn sync(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<SyncRequest>,
) -> ApiResult<Json<SyncReport>> {
    caller.require_secret()?;
    let since = match body.since {
        None => None,
        Some(v) => {
            let s = v.seconds().ok_or_else(|| {
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
