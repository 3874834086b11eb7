//! The JSON API: one module per resource.

pub mod bootstrap;
pub mod connections;
pub mod credits;
pub mod definitions;
pub mod entitlements;
pub mod health;
pub mod list;
pub mod merchant_accounts;
pub mod portal;
pub mod refunds;
pub mod render;
pub mod stream;
pub mod stripe_features;
pub mod transactions;
pub mod typed;
pub mod webhook_events;
pub mod webhooks_in;
pub mod webhooks_out;

use axum::Router;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;

pub use list::{Cursor, Page, cursor, page_params, paginate};

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
        .merge(stripe_features::routes())
        .merge(portal::routes())
        .merge(webhooks_out::routes());
    crate::idempotency::document(keyed.get_openapi_mut());
    if let Some(ctx) = ctx {
        keyed = keyed.route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::idempotency::middleware,
        ));
    }
    // The permission check and its stream (public keys): no idempotency layer, their own auth
    // cache; apps call them from browsers on the business's own origin, so they answer CORS.
    let mut public = entitlements::check_routes().merge(stream::routes());
    if ctx.is_some() {
        public = public.layer(public_cors());
    }
    let mut api = keyed.merge(health::routes()).merge(public);
    if ctx.is_some() {
        // Path and query parameters Tollgate cannot store are refused before anything else.
        api = api.route_layer(axum::middleware::from_fn(crate::edge::api));
    }
    api.merge(webhooks_in::routes())
}

/// CORS of the public-key routes: any origin may read them with a public key (no cookies are
/// involved, so no credentials mode); the request headers the permission check reads and the
/// answer headers a client needs (`ETag` for caching, `Retry-After` for the rate limit).
fn public_cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET])
        .allow_headers([
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
            header::CACHE_CONTROL,
            HeaderName::from_static("x-customer-token"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-merchant-account-id"),
        ])
        .expose_headers([header::ETAG, header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
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
