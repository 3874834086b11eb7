//! The JSON API: one module per resource.

pub mod bootstrap;
pub mod connections;
pub mod credits;
pub mod definitions;
pub mod entitlements;
pub mod health;
pub mod merchant_accounts;
pub mod refunds;
pub mod render;
pub mod stream;
pub mod transactions;
pub mod typed;
pub mod webhook_events;
pub mod webhooks_in;
pub mod webhooks_out;

use axum::Router;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;

use crate::ApiContext;
use crate::error::{ApiError, ApiResult};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Every route of the API with its part of the OpenAPI document, which utoipa derives from each
/// handler's `#[utoipa::path]` and the request and response types it names. With `ctx`, the
/// layers are added too (the document does not depend on them, only on which group a route is in).
pub fn openapi_router(ctx: Option<&ApiContext>) -> OpenApiRouter<ApiContext> {
    // Every POST in this group goes through the Idempotency-Key middleware (SPEC §8).
    let mut keyed = OpenApiRouter::new()
        .merge(merchant_accounts::routes())
        .merge(connections::routes())
        .merge(webhook_events::routes())
        .merge(transactions::routes())
        .merge(refunds::routes())
        .merge(entitlements::routes())
        .merge(definitions::routes())
        .merge(credits::routes())
        .merge(webhooks_out::routes());
    crate::openapi::idempotent(keyed.get_openapi_mut());
    if let Some(ctx) = ctx {
        keyed = keyed.route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::idempotency::middleware,
        ));
    }
    let mut api = keyed
        .merge(health::routes())
        // The permission check (public keys): no idempotency layer, its own auth cache.
        .merge(entitlements::check_routes())
        .merge(stream::routes());
    if ctx.is_some() {
        // Path and query parameters Tollgate cannot store are refused before anything else.
        api = api.route_layer(axum::middleware::from_fn(crate::edge::api));
    }
    api.merge(webhooks_in::routes())
}

pub fn router(ctx: &ApiContext) -> Router<ApiContext> {
    openapi_router(Some(ctx)).split_for_parts().0
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

/// A list: a page of `items` and the cursors around it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The page size asked for (or the number of items when the list is not paged).
    #[schema(minimum = 0)]
    pub limit: i64,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `cursor` for the previous (newer) page; `null` on the first page.
    pub previous_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A list that is not paged: every item, no cursors.
    pub fn whole(items: Vec<T>) -> Self {
        Page {
            limit: items.len() as i64,
            items,
            next_cursor: None,
            previous_cursor: None,
        }
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
