//! Outbound webhooks: `/webhook-subscriptions` (CRUD, secret rotation) and the delivery log
//! `/webhook-deliveries` (list, one with its attempts, resend). Every object is scoped to the
//! caller's merchant account.
//!
//! The event a delivery carries ([`OutboundEvent`]) is written by the outbox
//! (`tollgate_store::outbox::event_payload`) when the change that causes it commits; this module
//! reads it back for the delivery log and documents it.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tollgate_store::outbox::{
    self, AttemptRow, DeliveryFilter, DeliveryRow, Resend, SubscriptionRow,
};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::outbound::{WebhookSecret, ssrf};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(
            get_subscription,
            replace_subscription,
            update_subscription,
            delete_subscription
        ))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(resend));
    super::typed::close(
        &mut router,
        &[
            "WebhookSubscriptionCreate",
            "WebhookSubscriptionReplace",
            "WebhookSubscriptionUpdate",
        ],
    );
    // The bodiless POSTs take no body at all, or `{}`.
    for path in [
        "/webhook-subscriptions/{id}/rotate-secret",
        "/webhook-subscriptions/{id}/test",
        "/webhook-deliveries/{id}/resend",
    ] {
        let body = router
            .get_openapi_mut()
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(RefOr::T(body)) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
    router
}

// ---- event names, filters and statuses ----------------------------------------------------------

/// An event name Tollgate emits (the outbox's own list).
pub struct EventName;

impl PartialSchema for EventName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(outbox::EVENT_NAMES.iter().copied()))
            .description(Some(
                "`transaction.*` when a transaction reaches authorization_succeeded (authorized), capture_succeeded (captured), capture_pending, authorization_declined (declined), authorization_failed (failed), authorization_void_pending, authorization_voided; `refund.*` when a refund is accepted by Stripe while pending (processing) or reaches succeeded, failed, declined (Stripe refused it) or voided; `permission.*`, `customer.linked` and `customer.state_changed` (the customer's whole permission set with a `version` that strictly increases per customer: keep only the highest) from entitlements; `balance.low` and `balance.depleted` from credits; `webhook.test` only when asked for with `POST /webhook-subscriptions/{id}/test` (its target is the subscription).",
            ))
            .into()
    }
}

impl ToSchema for EventName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookEventName")
    }
}

/// Which events a subscription receives: an exact event name, a group (`transaction.*`, …) or
/// `*`. Read from a body, an unknown one is refused naming its index.
#[derive(Debug, Clone)]
pub struct EventFilter(pub String);

impl EventFilter {
    /// Every filter this server knows: `*`, each group's `group.*`, each event name.
    fn all() -> Vec<String> {
        let mut all: Vec<String> = vec!["*".into()];
        all.extend(outbox::EVENT_GROUPS.iter().map(|g| format!("{g}.*")));
        all.extend(outbox::EVENT_NAMES.iter().map(|n| n.to_string()));
        all
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = String::deserialize(d)?;
        if outbox::valid_filter(&f) {
            return Ok(EventFilter(f));
        }
        Err(serde::de::Error::custom(format!(
            "'{f}' is not an event name or filter: use one of {}, a group filter ({}) or \"*\".",
            outbox::EVENT_NAMES.join(", "),
            outbox::EVENT_GROUPS
                .iter()
                .map(|g| format!("{g}.*"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

impl PartialSchema for EventFilter {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(EventFilter::all()))
            .description(Some(
                "An exact event name, a group (`transaction.*`, `refund.*`, `permission.*`, `customer.*`) or `*` (every event).",
            ))
            .into()
    }
}

impl ToSchema for EventFilter {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WebhookEventFilter")
    }
}

/// `pending`: not attempted yet; `failed`: the last attempt failed, another is scheduled
/// (`next_attempt_at`); `delivered`: a 2xx answer; `dead`: given up after the maximum age (3 days
/// by default) or the subscription was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = WebhookDeliveryStatus)]
pub enum DeliveryStatus {
    Pending,
    Failed,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Failed,
        DeliveryStatus::Delivered,
        DeliveryStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

// ---- responses ----------------------------------------------------------------------------------

/// Where and which events to deliver. The signing secret is shown once, in the answer that
/// makes it (create, rotate-secret).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookSubscription)]
pub struct WebhookSubscriptionOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^webhook-subscription$", example = "webhook-subscription")]
    pub kind: &'static str,
    #[schema(example = "0193f2a4-5b6c-7d8e-9f00-112233445566")]
    pub id: String,
    #[schema(example = "default")]
    pub merchant_account_id: String,
    #[schema(format = "uri", example = "https://shop.example/hooks/tollgate")]
    pub url: String,
    #[schema(value_type = Vec<EventFilter>)]
    pub events: Vec<String>,
    #[schema(required = true)]
    pub description: Option<String>,
    pub active: bool,
    /// `whsec_…` and the last four characters.
    pub secret_hint: String,
    /// During a rotation: until when the previous secret still signs (both signatures are sent).
    #[schema(format = DateTime, required = true)]
    pub previous_secret_expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Only in the answers of create and rotate-secret: `whsec_` + base64 of 32 random bytes.
    /// The HMAC key is the base64-decoded part (Standard Webhooks). A replay of the request
    /// under its Idempotency-Key answers null here.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^whsec_")]
    pub secret: Option<String>,
}

pub fn render_subscription(s: &SubscriptionRow, now: i64) -> WebhookSubscriptionOut {
    let rotating = s
        .old_secret_expires_at
        .filter(|t| *t > now && s.old_secret_enc.is_some());
    WebhookSubscriptionOut {
        kind: "webhook-subscription",
        id: s.id.clone(),
        merchant_account_id: s.merchant_account_id.clone(),
        url: s.url.clone(),
        events: serde_json::from_str::<Vec<String>>(&s.events).unwrap_or_default(),
        description: s.description.clone(),
        active: s.active,
        secret_hint: s.secret_hint.clone(),
        previous_secret_expires_at: rotating.map(rfc3339),
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        secret: None,
    }
}

/// The body of every delivery, signed per Standard Webhooks: headers `webhook-id` (= `id`),
/// `webhook-timestamp` (unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}">`, one per active secret, space-separated).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboundEvent {
    #[serde(rename = "type")]
    #[schema(pattern = "^event$", example = "event")]
    pub kind: String,
    #[schema(pattern = "^evt_", example = "evt_0193f2a45b6c7d8e9f00112233445566")]
    pub id: String,
    #[schema(value_type = EventName)]
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub merchant_account_id: String,
    /// The resource exactly as the API returns it (a Transaction, a Refund, …).
    pub target: Value,
}

/// One event for one subscription (its `webhook-id` header is `event_id`, the same on every
/// attempt and resend).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct WebhookDeliveryOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^webhook-delivery$", example = "webhook-delivery")]
    pub kind: &'static str,
    pub id: String,
    pub merchant_account_id: String,
    pub subscription_id: String,
    #[schema(pattern = "^evt_")]
    pub event_id: String,
    #[schema(value_type = EventName)]
    pub event_name: String,
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    /// Attempts made so far (all rounds).
    #[schema(minimum = 0)]
    pub attempts: i64,
    /// When the next attempt is due (`pending` and `failed` only).
    #[schema(format = DateTime, required = true)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true)]
    pub last_status_code: Option<i64>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub delivered_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `GET /webhook-deliveries/{id}` only: the event as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = OutboundEvent)]
    pub event: Option<OutboundEvent>,
    /// `GET /webhook-deliveries/{id}` only: every attempt, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<WebhookDeliveryAttemptOut>)]
    pub attempt_log: Option<Vec<WebhookDeliveryAttemptOut>>,
}

pub fn render_delivery(d: &DeliveryRow) -> WebhookDeliveryOut {
    let waiting = matches!(d.status.as_str(), "pending" | "failed");
    WebhookDeliveryOut {
        kind: "webhook-delivery",
        id: d.id.clone(),
        merchant_account_id: d.merchant_account_id.clone(),
        subscription_id: d.subscription_id.clone(),
        event_id: d.event_id.clone(),
        event_name: d.event_name.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: waiting.then(|| rfc3339(d.next_attempt_at)),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        delivered_at: d.delivered_at.map(rfc3339),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
        event: None,
        attempt_log: None,
    }
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDeliveryAttempt)]
pub struct WebhookDeliveryAttemptOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^webhook-delivery-attempt$", example = "webhook-delivery-attempt")]
    pub kind: &'static str,
    #[schema(minimum = 1)]
    pub attempt: i64,
    #[schema(format = DateTime)]
    pub attempted_at: String,
    /// null: no answer (refused, connection error, timeout).
    #[schema(required = true)]
    pub status_code: Option<i64>,
    #[schema(minimum = 0)]
    pub latency_ms: i64,
    /// At most 1 KiB of the answer's body.
    #[schema(required = true)]
    pub response_excerpt: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
    /// When the retry after this attempt was scheduled (null: delivered or given up).
    #[schema(format = DateTime, required = true)]
    pub next_attempt_at: Option<String>,
}

pub fn render_attempt(a: &AttemptRow) -> WebhookDeliveryAttemptOut {
    WebhookDeliveryAttemptOut {
        kind: "webhook-delivery-attempt",
        attempt: a.attempt,
        attempted_at: rfc3339(a.attempted_at),
        status_code: a.status_code,
        latency_ms: a.latency_ms,
        response_excerpt: a.response_excerpt.clone(),
        error: a.error.clone(),
        next_attempt_at: a.next_attempt_at.map(rfc3339),
    }
}

/// A subscription answer that shows the secret (`body.secret`): the one time it is ever shown.
/// The response is marked so that the idempotency middleware keeps a copy without it.
fn shown_once(status: StatusCode, body: WebhookSubscriptionOut) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(crate::idempotency::ShownOnce);
    r
}

// ---- requests -----------------------------------------------------------------------------------

/// A field that may be absent but not null: present means a value of type `T`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field where absent (`None`), null (`Some(None)`) and a value differ (PATCH).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new subscription: where to POST which events.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = WebhookSubscriptionCreate,
    example = json!({"url": "https://shop.example/hooks/tollgate", "events": ["transaction.*", "refund.succeeded"]})
)]
pub struct SubscriptionCreate {
    /// Where events are POSTed. `https://` only, and not to loopback, private, link-local, CGNAT
    /// or other non-public addresses (checked again at every attempt, on the resolved address),
    /// unless the server runs with `--allow-private-webhook-targets` (which also allows
    /// `http://`).
    #[schema(format = "uri", max_length = 2048)]
    pub url: String,
    /// Which events to receive. Default: `["*"]`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<EventFilter>, min_items = 1, max_items = 50)]
    pub events: Option<Vec<EventFilter>>,
    /// Inactive subscriptions get no new events; deliveries already queued wait (up to their
    /// maximum age) until it is active again. Default true.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub active: Option<bool>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// A subscription's new settings, replacing them all: `url` and `events` are required, `active`
/// defaults to true and `description` to null.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = WebhookSubscriptionReplace,
    example = json!({"url": "https://shop.example/hooks/tollgate", "events": ["*"], "active": true})
)]
pub struct SubscriptionReplace {
    /// Where events are POSTed. `https://` only, and not to loopback, private, link-local, CGNAT
    /// or other non-public addresses (checked again at every attempt, on the resolved address),
    /// unless the server runs with `--allow-private-webhook-targets` (which also allows
    /// `http://`).
    #[schema(format = "uri", max_length = 2048)]
    pub url: String,
    /// Which events to receive.
    #[schema(min_items = 1, max_items = 50)]
    pub events: Vec<EventFilter>,
    /// Inactive subscriptions get no new events; deliveries already queued wait (up to their
    /// maximum age) until it is active again. Default true.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub active: Option<bool>,
    /// Default null.
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// The settings to change: the fields given are set, absent ones are kept
/// (`description: null` removes the description).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = WebhookSubscriptionUpdate, example = json!({"active": false}))]
pub struct SubscriptionUpdate {
    #[serde(default, deserialize_with = "present")]
    /// Where events are POSTed. `https://` only, and not to loopback, private, link-local, CGNAT
    /// or other non-public addresses (checked again at every attempt, on the resolved address),
    /// unless the server runs with `--allow-private-webhook-targets` (which also allows
    /// `http://`).
    #[schema(value_type = String, format = "uri", max_length = 2048)]
    pub url: Option<String>,
    /// Which events to receive.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<EventFilter>, min_items = 1, max_items = 50)]
    pub events: Option<Vec<EventFilter>>,
    /// Inactive subscriptions get no new events; deliveries already queued wait (up to their
    /// maximum age) until it is active again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub active: Option<bool>,
    /// null removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
}

/// No body is needed; an empty body or `{}` (any field is a 400).
#[derive(Debug, Default, Deserialize)]
pub struct NoBody {}

impl ToSchema for NoBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NoBody")
    }
}

impl PartialSchema for NoBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .max_properties(Some(0))
            .description(Some(
                "No body is needed; an empty body or `{}` (any field is a 400).",
            ))
            .into()
    }
}

/// Validated fields of a create or update (`None`: not given).
#[derive(Debug, Default)]
struct Input {
    url: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    description: Option<Option<String>>,
}

impl Input {
    /// The checks serde cannot express: the URL's length and target, the filter list's size
    /// (duplicates dropped), the description's length.
    fn validated(self, allow_private_targets: bool) -> ApiResult<Input> {
        let url = match self.url {
            None => None,
            Some(u) if u.len() <= 2048 => {
                ssrf::check_url(u.trim(), allow_private_targets)
                    .map_err(|m| ApiError::field("/url", m))?;
                Some(u.trim().to_string())
            }
            Some(_) => return Err(ApiError::field("/url", "At most 2048 characters.")),
        };
        let events = match self.events {
            None => None,
            Some(items) if items.is_empty() => {
                return Err(ApiError::field(
                    "/events",
                    "At least one event name or filter (e.g. \"transaction.*\" or \"*\").",
                ));
            }
            Some(items) if items.len() > 50 => {
                return Err(ApiError::field("/events", "At most 50 filters."));
            }
            Some(items) => {
                let mut out: Vec<String> = Vec::new();
                for f in items {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
                Some(out)
            }
        };
        if let Some(Some(d)) = &self.description
            && d.len() > 500
        {
            return Err(ApiError::field(
                "/description",
                "A string of at most 500 characters.",
            ));
        }
        Ok(Input {
            url,
            events,
            active: self.active,
            description: self.description,
        })
    }
}

fn filters(items: Option<Vec<EventFilter>>) -> Option<Vec<String>> {
    items.map(|v| v.into_iter().map(|f| f.0).collect())
}

impl From<SubscriptionCreate> for Input {
    fn from(b: SubscriptionCreate) -> Input {
        Input {
            url: Some(b.url),
            events: filters(b.events),
            active: b.active,
            description: Some(b.description),
        }
    }
}

impl From<SubscriptionReplace> for Input {
    fn from(b: SubscriptionReplace) -> Input {
        Input {
            url: Some(b.url),
            events: filters(Some(b.events)),
            active: b.active,
            description: Some(b.description),
        }
    }
}

impl From<SubscriptionUpdate> for Input {
    fn from(b: SubscriptionUpdate) -> Input {
        Input {
            url: b.url,
            events: filters(b.events),
            active: b.active,
            description: b.description,
        }
    }
}

// ---- queries ------------------------------------------------------------------------------------

/// A typed query whose parameters are exactly those `T` documents: any other is a 400 naming it
/// ("Unknown query parameter."), so a misspelt filter does not silently list everything.
/// `key[]` is `key`.
#[derive(Debug)]
pub struct KnownParams<T>(pub T);

impl<T: DeserializeOwned + IntoParams> KnownParams<T> {
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let known: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        for (k, _) in form_urlencoded::parse(raw.as_bytes()) {
            let k = k.trim_end_matches("[]");
            if !known.iter().any(|n| n == k) {
                return Err(ApiError::query(
                    &format!("/{k}"),
                    "Unknown query parameter.",
                ));
            }
        }
        super::typed::from_query(raw).map(KnownParams)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + IntoParams> FromRequestParts<S> for KnownParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query().unwrap_or(""))
    }
}

/// The last value of a parameter given more than once (as before: `limit=5&limit=10` is 10).
fn last<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?.pop())
}

/// `cursor` and `limit` as [`super::page_params`] reads them.
fn page_of(
    cursor: Option<String>,
    limit: Option<String>,
) -> ApiResult<(Option<super::Cursor>, i64)> {
    let mut q: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(c) = cursor {
        q.insert("cursor".into(), vec![c]);
    }
    if let Some(l) = limit {
        q.insert("limit".into(), vec![l]);
    }
    super::page_params(&q)
}

/// `GET /webhook-subscriptions`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionListQuery {
    /// A `next_cursor` or `previous_cursor` from an earlier page.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<String>,
}

/// `GET /webhook-deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListQuery {
    /// A `next_cursor` or `previous_cursor` from an earlier page.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub cursor: Option<String>,
    /// Page size, 1 to 100.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<String>,
    /// Only these statuses (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<DeliveryStatus>>)]
    pub status: Vec<String>,
    /// Only this subscription's deliveries.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub subscription_id: Option<String>,
    /// Only these events (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<EventName>>)]
    pub event_name: Vec<String>,
    /// Only the deliveries of this event.
    #[serde(default, deserialize_with = "last")]
    #[param(value_type = Option<String>)]
    pub event_id: Option<String>,
}

// ---- subscriptions ------------------------------------------------------------------------------

async fn load_subscription(
    ctx: &ApiContext,
    caller: &Caller,
    id: &str,
) -> ApiResult<SubscriptionRow> {
    outbox::get_subscription(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))
}

/// Makes a subscription and its signing secret, shown in this answer only.
#[utoipa::path(
    post,
    path = "/webhook-subscriptions",
    operation_id = "create_webhook_subscription",
    tag = "webhooks",
    summary = "Subscribe to events",
    request_body = SubscriptionCreate,
    responses(
        (status = 201, description = "The subscription, with `secret`.", body = WebhookSubscriptionOut),
        (status = 400, description = "`bad_request`: the request failed validation; `details` points at each problem.", body = ErrorEnvelope),
    ),
)]
pub async fn create_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<SubscriptionCreate>,
) -> ApiResult<Response> {
    let made = subscribe(&ctx, &caller, body).await?;
    Ok(shown_once(StatusCode::CREATED, made))
}

/// Makes a subscription; the answer carries its new signing secret (`secret`), to be shown
/// this once (what `POST /webhook-subscriptions` and the dashboard do).
pub async fn subscribe(
    ctx: &ApiContext,
    caller: &Caller,
    body: SubscriptionCreate,
) -> ApiResult<WebhookSubscriptionOut> {
    caller.require_secret()?;
    let input = Input::from(body).validated(ctx.config.allow_private_webhook_targets)?;
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
        events: serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()),
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
    let mut out = render_subscription(&row, now);
    out.secret = Some(secret.expose().to_string());
    Ok(out)
}

/// The merchant account's subscriptions, newest first.
#[utoipa::path(
    get,
    path = "/webhook-subscriptions",
    operation_id = "list_webhook_subscriptions",
    tag = "webhooks",
    summary = "List webhook subscriptions",
    params(SubscriptionListQuery),
    responses(
        (status = 200, description = "A page of subscriptions, newest first.", body = Page<WebhookSubscriptionOut>),
        (status = 400, description = "`bad_request`: an unknown query parameter, a bad `limit` or a cursor this server did not make.", body = ErrorEnvelope),
    ),
)]
pub async fn list_subscriptions(
    State(ctx): State<ApiContext>,
    caller: Caller,
    KnownParams(q): KnownParams<SubscriptionListQuery>,
) -> ApiResult<Json<Page<WebhookSubscriptionOut>>> {
    caller.require_secret()?;
    let (cursor, limit) = page_of(q.cursor, q.limit)?;
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
    Ok(Json(Page {
        items: rows.iter().map(|s| render_subscription(s, now)).collect(),
        limit,
        next_cursor: next,
        previous_cursor: previous,
    }))
}

/// One subscription (never its secret).
#[utoipa::path(
    get,
    path = "/webhook-subscriptions/{id}",
    operation_id = "get_webhook_subscription",
    tag = "webhooks",
    summary = "Get a webhook subscription",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    responses(
        (status = 200, description = "The subscription (never its secret).", body = WebhookSubscriptionOut),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookSubscriptionOut>> {
    caller.require_secret()?;
    let s = load_subscription(&ctx, &caller, &id).await?;
    Ok(Json(render_subscription(&s, ctx.now())))
}

/// Replaces the subscription's settings: `url` and `events` are required, `active` defaults to
/// true and `description` to null.
#[utoipa::path(
    put,
    path = "/webhook-subscriptions/{id}",
    operation_id = "replace_webhook_subscription",
    tag = "webhooks",
    summary = "Replace a webhook subscription's settings",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    request_body = SubscriptionReplace,
    responses(
        (status = 200, description = "The subscription.", body = WebhookSubscriptionOut),
        (status = 400, description = "`bad_request`: the request failed validation; `details` points at each problem.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn replace_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<SubscriptionReplace>,
) -> ApiResult<Json<WebhookSubscriptionOut>> {
    caller.require_secret()?;
    let input = Input::from(body).validated(ctx.config.allow_private_webhook_targets)?;
    apply(&ctx, &caller, &id, input, true).await.map(Json)
}

/// Sets the fields given; absent ones are kept.
#[utoipa::path(
    patch,
    path = "/webhook-subscriptions/{id}",
    operation_id = "update_webhook_subscription",
    tag = "webhooks",
    summary = "Update a webhook subscription",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    request_body(content = SubscriptionUpdate, description = "The fields to change.", content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription.", body = WebhookSubscriptionOut),
        (status = 400, description = "`bad_request`: the request failed validation; `details` points at each problem.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn update_subscription(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<SubscriptionUpdate>,
) -> ApiResult<Json<WebhookSubscriptionOut>> {
    caller.require_secret()?;
    let input = Input::from(body).validated(ctx.config.allow_private_webhook_targets)?;
    apply(&ctx, &caller, &id, input, false).await.map(Json)
}

/// PATCH (`replace` false) changes the fields given; PUT replaces the settings (`active`
/// defaults to true and `description` to none).
async fn apply(
    ctx: &ApiContext,
    caller: &Caller,
    id: &str,
    input: Input,
    replace: bool,
) -> ApiResult<WebhookSubscriptionOut> {
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let mut s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        id,
        ctx.store.for_update(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    if let Some(u) = input.url {
        s.url = u;
    }
    if let Some(e) = input.events {
        s.events = serde_json::to_string(&e).unwrap_or_else(|_| "[]".into());
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
    Ok(render_subscription(&s, now))
}

/// No new events are made for it; its deliveries still waiting end `dead`. The delivery log is
/// kept.
#[utoipa::path(
    delete,
    path = "/webhook-subscriptions/{id}",
    operation_id = "delete_webhook_subscription",
    tag = "webhooks",
    summary = "Delete a webhook subscription",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
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

/// A new secret, shown in this answer only. The previous one keeps signing for a grace period
/// (24 h by default, `webhook_secret_grace_secs`): meanwhile every delivery carries both
/// signatures, so receivers can switch without losing an event.
#[utoipa::path(
    post,
    path = "/webhook-subscriptions/{id}/rotate-secret",
    operation_id = "rotate_webhook_secret",
    tag = "webhooks",
    summary = "Rotate a subscription's signing secret",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    request_body(content = inline(NoBody), description = "No body is needed.", content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription, with the new `secret`.", body = WebhookSubscriptionOut),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn rotate_secret(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(NoBody {}): Body<NoBody>,
) -> ApiResult<Response> {
    let rotated = rotate(&ctx, &caller, &id).await?;
    Ok(shown_once(StatusCode::OK, rotated))
}

/// Gives the subscription a new signing secret, in the answer's `secret` (to be shown this
/// once); the previous one keeps signing for the grace period.
pub async fn rotate(
    ctx: &ApiContext,
    caller: &Caller,
    id: &str,
) -> ApiResult<WebhookSubscriptionOut> {
    caller.require_secret()?;
    let now = ctx.now();
    let secret = WebhookSecret::generate();
    let mut tx = ctx.store.begin().await?;
    let mut s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        id,
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
    let mut out = render_subscription(&s, now);
    out.secret = Some(secret.expose().to_string());
    Ok(out)
}

/// Sends a `webhook.test` event to this subscription alone, whatever its event filters: a real
/// delivery through the outbox (signed, logged, retried like any other), whose `target` is the
/// subscription. 400 when the subscription is inactive (its deliveries would only wait).
#[utoipa::path(
    post,
    path = "/webhook-subscriptions/{id}/test",
    operation_id = "test_webhook_subscription",
    tag = "webhooks",
    summary = "Send a test event to a subscription",
    params(("id" = String, Path, description = "The webhook subscription's id.")),
    request_body(content = inline(NoBody), description = "No body is needed.", content_type = "application/json"),
    responses(
        (status = 202, description = "The delivery of the test event, due now.", body = WebhookDeliveryOut),
        (status = 400, description = "`bad_request`: the subscription is inactive, or the body has a field.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such subscription in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn send_test(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(NoBody {}): Body<NoBody>,
) -> ApiResult<(StatusCode, Json<WebhookDeliveryOut>)> {
    caller.require_secret()?;
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let s = outbox::get_subscription(
        &mut *tx,
        &caller.merchant_account_id,
        &id,
        ctx.store.for_update(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    if !s.active {
        return Err(ApiError::bad_request(
            "This subscription is inactive: activate it to send a test event.",
        ));
    }
    let target = serde_json::to_value(render_subscription(&s, now))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let event_id = outbox::new_event_id();
    let payload = outbox::event_payload(
        &event_id,
        TEST_EVENT,
        &caller.merchant_account_id,
        &target,
        now,
    )
    .to_string();
    let delivery_id = outbox::insert_delivery(
        &mut *tx,
        &caller.merchant_account_id,
        &s.id,
        &event_id,
        TEST_EVENT,
        &payload,
        now,
    )
    .await?;
    tollgate_store::commit(tx).await?;
    let d = outbox::get_delivery(
        ctx.store.reader(),
        &caller.merchant_account_id,
        &delivery_id,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(render_delivery(&d))))
}

/// The event [`send_test`] sends.
pub const TEST_EVENT: &str = "webhook.test";

// ---- deliveries ---------------------------------------------------------------------------------

/// The delivery log, newest first.
#[utoipa::path(
    get,
    path = "/webhook-deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    summary = "List webhook deliveries",
    params(DeliveryListQuery),
    responses(
        (status = 200, description = "A page of deliveries, newest first.", body = Page<WebhookDeliveryOut>),
        (status = 400, description = "`bad_request`: an unknown query parameter or status or event name, a bad `limit` or a cursor this server did not make.", body = ErrorEnvelope),
    ),
)]
pub async fn list_deliveries(
    State(ctx): State<ApiContext>,
    caller: Caller,
    KnownParams(q): KnownParams<DeliveryListQuery>,
) -> ApiResult<Json<Page<WebhookDeliveryOut>>> {
    caller.require_secret()?;
    let (cursor, limit) = page_of(q.cursor, q.limit)?;
    if let Some(s) = q.status.iter().find(|s| DeliveryStatus::parse(s).is_none()) {
        return Err(ApiError::query(
            "/status",
            format!("'{s}' is not a delivery status (pending, failed, delivered, dead)."),
        ));
    }
    // As documented (an event name): a misspelt one would otherwise list nothing, silently.
    if let Some(n) = q
        .event_name
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
    let filter = DeliveryFilter {
        merchant_account_id: caller.merchant_account_id.clone(),
        statuses: q.status,
        subscription_id: q.subscription_id,
        event_names: q.event_name,
        event_id: q.event_id,
        cursor: cursor.clone(),
        limit,
    };
    let rows = outbox::list_deliveries(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |d| {
        (d.created_at, d.id.clone())
    });
    Ok(Json(Page {
        items: rows.iter().map(render_delivery).collect(),
        limit,
        next_cursor: next,
        previous_cursor: previous,
    }))
}

/// One delivery with the event as sent and its attempts (the delivery log).
#[utoipa::path(
    get,
    path = "/webhook-deliveries/{id}",
    operation_id = "get_webhook_delivery",
    tag = "webhooks",
    summary = "Get a webhook delivery with its attempts",
    params(("id" = String, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "The delivery, the event as sent, and every attempt.", body = WebhookDeliveryOut),
        (status = 404, description = "`not_found`: no such delivery in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get_delivery(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookDeliveryOut>> {
    caller.require_secret()?;
    let d = outbox::get_delivery(ctx.store.reader(), &caller.merchant_account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    let attempts = outbox::attempts_of(ctx.store.reader(), &d.id).await?;
    let mut out = render_delivery(&d);
    out.event = serde_json::from_str(&d.payload).ok();
    out.attempt_log = Some(attempts.iter().map(render_attempt).collect());
    Ok(Json(out))
}

/// Attempts the event again now, with the same event id (`webhook-id`, so receivers can
/// deduplicate) and a fresh round of retries, whatever its status. 409 while an attempt of it
/// is in flight.
#[utoipa::path(
    post,
    path = "/webhook-deliveries/{id}/resend",
    operation_id = "resend_webhook_delivery",
    tag = "webhooks",
    summary = "Resend a webhook delivery",
    params(("id" = String, Path, description = "The delivery's id.")),
    request_body(content = inline(NoBody), description = "No body is needed.", content_type = "application/json"),
    responses(
        (status = 202, description = "The delivery, due now.", body = WebhookDeliveryOut),
        (status = 404, description = "`not_found`: no such delivery in this merchant account.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: an attempt of this delivery is in flight; resend it once the attempt is over.", body = ErrorEnvelope),
    ),
)]
pub async fn resend(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(NoBody {}): Body<NoBody>,
) -> ApiResult<(StatusCode, Json<WebhookDeliveryOut>)> {
    caller.require_secret()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::to_value(routes().into_openapi()).unwrap_or_default()
    }

    #[test]
    fn request_bodies_are_closed_and_patch_tells_null_from_absent() {
        let d = doc();
        let schemas = &d["components"]["schemas"];
        for name in [
            "WebhookSubscriptionCreate",
            "WebhookSubscriptionReplace",
            "WebhookSubscriptionUpdate",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"],
                Value::Bool(false),
                "{name}"
            );
        }
        let patch = &schemas["WebhookSubscriptionUpdate"];
        assert!(patch.get("required").is_none(), "{patch}");
        assert_eq!(
            patch["properties"]["description"]["type"],
            serde_json::json!(["string", "null"])
        );
        for field in ["url", "events", "active"] {
            let t = &patch["properties"][field]["type"];
            assert!(t.is_string(), "{field} is not nullable: {t}");
        }
        assert_eq!(
            schemas["WebhookSubscriptionReplace"]["required"],
            serde_json::json!(["url", "events"])
        );
    }

    #[test]
    fn bodiless_posts_need_no_body_and_lists_document_their_filters() {
        let d = doc();
        for path in [
            "/webhook-subscriptions/{id}/rotate-secret",
            "/webhook-subscriptions/{id}/test",
            "/webhook-deliveries/{id}/resend",
        ] {
            let body = &d["paths"][path]["post"]["requestBody"];
            assert_ne!(body["required"], Value::Bool(true), "{path}: {body}");
            let schema = &body["content"]["application/json"]["schema"];
            assert_eq!(schema["maxProperties"], 0, "{path}");
        }
        let names: Vec<String> = DeliveryListQuery::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            [
                "cursor",
                "limit",
                "status",
                "subscription_id",
                "event_name",
                "event_id"
            ]
        );
        let statuses: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            d["components"]["schemas"]["WebhookDeliveryStatus"]["enum"],
            serde_json::json!(statuses)
        );
    }

    #[test]
    fn known_params_refuse_unknown_keys_and_take_key_brackets() {
        let q =
            KnownParams::<DeliveryListQuery>::parse("status[]=dead&status=failed&limit=2&limit=9")
                .map(|k| k.0)
                .unwrap_or_default();
        assert_eq!(q.status, ["dead", "failed"]);
        assert_eq!(q.limit.as_deref(), Some("9"));
        match KnownParams::<SubscriptionListQuery>::parse("limit=5&status=dead") {
            Err(ApiError::BadRequest { details, .. }) => {
                assert_eq!(
                    (details[0].location, details[0].pointer.as_str()),
                    ("query", "/status")
                )
            }
            other => panic!("not a 400: {other:?}"),
        }
    }
}
