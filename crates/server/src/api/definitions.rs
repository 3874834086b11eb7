//! Permission definitions (SPEC §5): `/v1/permissions/definitions`, the permissions a
//! merchant account's SKUs unlock.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing;
use serde_json::{Map, Value, json};
use tollgate_store::entitlements as es;
use utoipa_axum::router::OpenApiRouter;

use super::JsonBody;
use super::entitlements::identifier;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::entitlements as ent;
use crate::error::{ApiError, ApiResult};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route(
            "/v1/permissions/definitions",
            routing::post(definition_create).get(definition_list),
        )
        .route(
            "/v1/permissions/definitions/{identifier}",
            routing::get(definition_get)
                .patch(definition_update)
                .delete(definition_delete),
        )
}

// ---- permission definitions ------------------------------------------------------------------

pub const DEFINITION_FIELDS: &[&str] = &["identifier", "skus"];

fn render_definition(d: &es::PermissionDefRow) -> Value {
    json!({
        "type": "permission-definition",
        "identifier": d.identifier,
        "skus": d.skus,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

/// The `skus` of a body: known SKU identifiers of the account, no repeats.
async fn definition_skus(
    ctx: &ApiContext,
    merchant: &str,
    body: &Map<String, Value>,
) -> ApiResult<Vec<String>> {
    let arr = body
        .get("skus")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::field("/skus", "Required: an array of SKU identifiers."))?;
    let known = es::list_skus(ctx.store.reader(), merchant).await?;
    let mut out: Vec<String> = Vec::new();
    for (i, v) in arr.iter().enumerate() {
        let pointer = format!("/skus/{i}");
        let s = v
            .as_str()
            .ok_or_else(|| ApiError::field(&pointer, "Must be a SKU identifier (a string)."))?;
        if !known.iter().any(|k| k.identifier == s) {
            return Err(ApiError::field(
                &pointer,
                format!("Unknown SKU '{s}': create it with POST /v1/skus first."),
            ));
        }
        if out.iter().any(|o| o == s) {
            return Err(ApiError::field(
                &pointer,
                format!("SKU '{s}' is listed twice."),
            ));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

async fn write_definition_skus(
    tx: &mut tollgate_store::Tx<'_>,
    merchant: &str,
    id: &str,
    skus: &[String],
) -> ApiResult<()> {
    es::clear_permission_skus(&mut **tx, merchant, id).await?;
    for (i, s) in skus.iter().enumerate() {
        es::add_permission_sku(&mut **tx, merchant, id, s, i as i64).await?;
    }
    Ok(())
}

async fn load_definition(
    ctx: &ApiContext,
    merchant: &str,
    id: &str,
) -> ApiResult<es::PermissionDefRow> {
    es::list_permission_defs(ctx.store.reader(), merchant)
        .await?
        .into_iter()
        .find(|d| d.identifier == id)
        .ok_or_else(|| ApiError::not_found("permission definition"))
}

pub async fn definition_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    super::unknown_fields(&body, DEFINITION_FIELDS)?;
    let merchant = caller.merchant_account_id.as_str();
    let id = identifier(&body, "identifier")?;
    let skus = definition_skus(&ctx, merchant, &body).await?;
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    match es::insert_permission_def(&mut *tx, merchant, &id, now).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "identifier: a permission '{id}' already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    write_definition_skus(&mut tx, merchant, &id, &skus).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    let d = load_definition(&ctx, merchant, &id).await?;
    Ok((StatusCode::CREATED, Json(render_definition(&d))))
}

pub async fn definition_list(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let rows = es::list_permission_defs(ctx.store.reader(), &caller.merchant_account_id).await?;
    let items: Vec<Value> = rows.iter().map(render_definition).collect();
    Ok(Json(json!({"items": items})))
}

pub async fn definition_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let d = load_definition(&ctx, &caller.merchant_account_id, &id).await?;
    Ok(Json(render_definition(&d)))
}

pub async fn definition_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, &["skus"])?;
    let merchant = caller.merchant_account_id.as_str();
    load_definition(&ctx, merchant, &id).await?;
    let skus = definition_skus(&ctx, merchant, &body).await?;
    let mut tx = ctx.store.begin().await?;
    es::touch_permission_def(&mut *tx, merchant, &id, ctx.now()).await?;
    write_definition_skus(&mut tx, merchant, &id, &skus).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    let d = load_definition(&ctx, merchant, &id).await?;
    Ok(Json(render_definition(&d)))
}

pub async fn definition_delete(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    load_definition(&ctx, merchant, &id).await?;
    let mut tx = ctx.store.begin().await?;
    es::clear_permission_skus(&mut *tx, merchant, &id).await?;
    es::delete_permission_def(&mut *tx, merchant, &id).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    Ok(StatusCode::NO_CONTENT)
}
