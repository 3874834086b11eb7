//! The JSON API: one module per resource.

pub mod bootstrap;
pub mod connections;
pub mod entitlements;
pub mod health;
pub mod merchant_accounts;
pub mod refunds;
pub mod render;
pub mod transactions;
pub mod webhook_events;
pub mod webhooks_in;
pub mod webhooks_out;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn router(ctx: &ApiContext) -> Router<ApiContext> {
    use entitlements as ent;
    use transactions as tx;
    let api = Router::new()
        .route(
            "/merchant-accounts",
            post(merchant_accounts::create).get(merchant_accounts::list),
        )
        .route(
            "/connections",
            post(connections::create).get(connections::list),
        )
        .route(
            "/connections/{id}",
            get(connections::get)
                .patch(connections::update)
                .delete(connections::delete),
        )
        .route("/connections/{id}/verify", post(connections::verify))
        .route("/connections/{id}/sync", post(webhook_events::sync))
        .route("/webhook-events", get(webhook_events::list))
        .route("/webhook-events/{id}", get(webhook_events::get))
        .route("/webhook-events/{id}/replay", post(webhook_events::replay))
        .route("/transactions", post(tx::create).get(tx::list))
        .route("/transactions/{id}", get(tx::get))
        .route("/transactions/{id}/capture", post(tx::capture))
        .route("/transactions/{id}/void", post(tx::void))
        .route("/transactions/{id}/cancel", post(tx::cancel))
        .route("/transactions/{id}/sync", post(tx::sync))
        .route("/transactions/{id}/events", get(tx::events))
        .route("/transactions/{id}/session", post(tx::session))
        .route(
            "/transactions/{id}/refunds",
            post(refunds::create).get(refunds::list),
        )
        .route("/transactions/{id}/refunds/{refund_id}", get(refunds::get))
        .route("/refunds/{refund_id}", get(refunds::get_by_id))
        .route("/v1/skus", post(ent::sku_create).get(ent::sku_list))
        .route(
            "/v1/skus/{identifier}",
            get(ent::sku_get)
                .patch(ent::sku_update)
                .delete(ent::sku_delete),
        )
        .route(
            "/v1/permissions/definitions",
            post(ent::definition_create).get(ent::definition_list),
        )
        .route(
            "/v1/permissions/definitions/{identifier}",
            get(ent::definition_get)
                .patch(ent::definition_update)
                .delete(ent::definition_delete),
        )
        .route("/v1/connect_stripe", post(ent::connect_stripe))
        .route("/v1/subscribers/{customid}", get(ent::subscriber))
        .route(
            "/v1/subscribers/{customid}/grants",
            post(ent::grant_create).get(ent::grant_list),
        )
        .route(
            "/v1/subscribers/{customid}/grants/{id}",
            axum::routing::delete(ent::grant_revoke),
        )
        .route("/v1/subscribers/{customid}/history", get(ent::history))
        .route(
            "/v1/entitlements/settings",
            get(ent::settings_get).patch(ent::settings_update),
        )
        .route(
            "/webhook-subscriptions",
            post(webhooks_out::create_subscription).get(webhooks_out::list_subscriptions),
        )
        .route(
            "/webhook-subscriptions/{id}",
            get(webhooks_out::get_subscription)
                .put(webhooks_out::update_subscription)
                .patch(webhooks_out::update_subscription)
                .delete(webhooks_out::delete_subscription),
        )
        .route(
            "/webhook-subscriptions/{id}/rotate-secret",
            post(webhooks_out::rotate_secret),
        )
        .route("/webhook-deliveries", get(webhooks_out::list_deliveries))
        .route("/webhook-deliveries/{id}", get(webhooks_out::get_delivery))
        .route(
            "/webhook-deliveries/{id}/resend",
            post(webhooks_out::resend),
        )
        // Idempotency-Key handling for every POST above (SPEC §8).
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::idempotency::middleware,
        ));
    api.merge(health::router())
        // The permission check (public keys): no idempotency layer, its own auth cache.
        .route("/v1/permissions", get(ent::permissions))
        // Path and query parameters Tollgate cannot store are refused before anything else.
        .route_layer(axum::middleware::from_fn(crate::edge::api))
        .route(
            "/webhooks/stripe/{connection_id}",
            post(webhooks_in::receive),
        )
}

/// A JSON object body, read with the API's limits and errors: an empty body is `{}` (bodiless
/// POSTs such as void send none), anything else must be a JSON object.
pub struct JsonBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // `MAX_BODY` itself, not axum's default limit (2 MB).
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "The request body could not be read or is larger than {} bytes.",
                    MAX_BODY
                ))
            })?;
        parse_object(&bytes).map(JsonBody)
    }
}

/// Refuses the first body field not in `allowed` (a 400 naming it).
pub fn unknown_fields(body: &Map<String, Value>, allowed: &[&str]) -> ApiResult<()> {
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::field(&format!("/{k}"), "Unknown field."));
        }
    }
    Ok(())
}

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    // No body at all is `{}`; white space alone is not JSON (it was taken for no body).
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => match crate::edge::check_json(&m) {
            Some(refusal) => Err(refusal.into_api_error()),
            None => Ok(m),
        },
        Ok(_) => Err(ApiError::field(
            "",
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::field(
            "",
            format!(
                "The request body is not valid JSON (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )),
    }
}

/// A decoded list cursor: (sort stamp, id, forward).
pub type Cursor = (i64, String, bool);

/// `limit` (1 to 100, default 20) and `cursor` of a list request.
pub fn page_params(
    q: &std::collections::HashMap<String, Vec<String>>,
) -> ApiResult<(Option<Cursor>, i64)> {
    let one = |k: &str| q.get(k).and_then(|v| v.last()).cloned();
    let limit = match one("limit") {
        None => 20,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::query("/limit", "Must be between 1 and 100."))?,
    };
    let cursor = match one("cursor") {
        Some(c) if !c.is_empty() => Some(
            cursor::decode(&c)
                .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this server made."))?,
        ),
        _ => None,
    };
    Ok((cursor, limit))
}

/// Trims the `limit + 1` rows a list read to a page, with its cursors newest first: `next` continues after the
/// last item; `previous` goes back before the first, and exists whenever this page did not start
/// at the top.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: Option<&Cursor>,
    key: impl Fn(&T) -> (i64, String),
) -> (Vec<T>, Option<String>, Option<String>) {
    let more = rows.len() as i64 > limit;
    let backwards = matches!(cursor, Some((_, _, false)));
    if more {
        if backwards {
            rows.remove(0);
        } else {
            rows.truncate(limit as usize);
        }
    }
    let next = match (rows.last(), more || backwards) {
        (Some(last), true) => {
            let (c, id) = key(last);
            Some(cursor::encode(c, &id, true))
        }
        _ => None,
    };
    let previous = match (rows.first(), cursor.is_some() && (!backwards || more)) {
        (Some(first), true) => {
            let (c, id) = key(first);
            Some(cursor::encode(c, &id, false))
        }
        _ => None,
    };
    (rows, next, previous)
}

/// Opaque list cursors: base64url of `created_at:id:direction`.
pub mod cursor {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(created_at: i64, id: &str, after: bool) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{created_at}:{id}:{}",
            if after { "n" } else { "p" }
        ))
    }

    pub fn decode(s: &str) -> Option<(i64, String, bool)> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.splitn(3, ':');
        let created = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_string();
        let after = match parts.next()? {
            "n" => true,
            "p" => false,
            _ => return None,
        };
        Some((created, id, after))
    }
}
