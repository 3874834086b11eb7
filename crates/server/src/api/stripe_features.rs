//! Stripe Features as permissions: `GET|POST /v1/connections/{id}/import-features`
//! (docs/stripe-entitlements.md; the work is in `crate::entitlements::features`).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use tollgate_store::ConnectionRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::entitlements::features::{self, ImportOut};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new().routes(routes!(import_state, import_features));
    super::typed::close(&mut router, &["FeatureImportRequest"]);
    router
}

/// The body of `POST /v1/connections/{id}/import-features` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = FeatureImportRequest, example = json!({"automatic": true}))]
pub struct ImportRequest {
    /// Turns the automatic import on or off (absent: unchanged; new connections: off).
    #[serde(default)]
    pub automatic: Option<bool>,
}

async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<ConnectionRow> {
    tollgate_store::connections::get(ctx.store.reader(), id)
        .await?
        .filter(|c| c.merchant_account_id == caller.merchant_account_id)
        .ok_or_else(|| ApiError::not_found("connection"))
}

/// Whether the connection imports its Stripe Features automatically, and what its last import
/// found.
#[utoipa::path(
    get,
    path = "/v1/connections/{id}/import-features",
    operation_id = "get_feature_import",
    tag = "entitlements",
    summary = "Get a connection's Stripe Features import",
    params(("id" = String, Path, description = "The connection's id.")),
    responses(
        (status = 200, description = "The import's mode and last report.", body = ImportOut),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn import_state(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ImportOut>> {
    caller.require_secret()?;
    let conn = load(&ctx, &caller, &id).await?;
    Ok(Json(features::state(&ctx, &conn).await?))
}

/// Reads the connection's Stripe Features and the products carrying them, and makes each
/// active feature the permission named by its `lookup_key`, with the products' SKUs (created
/// where missing). Definitions made by hand are never changed (reported as `conflict`).
/// `automatic: true` keeps the import in step with Stripe's product and entitlement events.
#[utoipa::path(
    post,
    path = "/v1/connections/{id}/import-features",
    operation_id = "import_features",
    tag = "entitlements",
    summary = "Import Stripe Features as permissions",
    params(("id" = String, Path, description = "The connection's id.")),
    request_body(content = ImportRequest, description = "Optional: the automatic mode.", content_type = "application/json"),
    responses(
        (status = 200, description = "What the import found and did.", body = ImportOut),
        (status = 400, description = "`bad_request`: a field is unknown or not a boolean.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such connection in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached or failed; nothing was changed, import again.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time; nothing was changed, import again.", body = ErrorEnvelope),
    ),
)]
pub async fn import_features(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ImportRequest>,
) -> ApiResult<Json<ImportOut>> {
    caller.require_secret()?;
    let conn = load(&ctx, &caller, &id).await?;
    Ok(Json(features::import(&ctx, &conn, body.automatic).await?))
}
