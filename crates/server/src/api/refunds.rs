//! Refunds of a captured transaction: many, partial or full, up to the captured amount.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tollgate_store::transactions as store_tx;
use tollgate_store::{RefundRow, TransactionRow};

use super::JsonBody;
use super::render;
use crate::ApiContext;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::transactions::refunds::send;
use crate::transactions::{connection_for, transaction_id};
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route(
            "/transactions/{id}/refunds",
            routing::post(create).get(list),
        )
        .route("/transactions/{id}/refunds/{refund_id}", routing::get(get))
        .route("/refunds/{refund_id}", routing::get(get_by_id))
}

async fn transaction(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<TransactionRow> {
    store_tx::get(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}

pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    for k in body.keys() {
        if ![
            "amount",
            "reason",
            "target_type",
            "target_id",
            "external_identifier",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::field(&format!("/{k}"), "Unknown field."));
        }
    }
    let t = transaction(&ctx, &caller, &id).await?;
    // Under an Idempotency-Key the refund's id is derived from it, so a retry after an outage
    // finishes the refund the first attempt saved instead of making a second one.
    let refund_id = crate::idempotency::request_key(&headers, &caller)
        .map(|k| transaction_id(Some(&format!("{k}\u{0}refund\u{0}{}", t.id))));
    if let Some(rid) = &refund_id
        && let Some(row) =
            store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, rid).await?
    {
        let row = if row.stripe_refund_id.is_none() && row.status == "processing" {
            let conn = connection_for(&ctx, &t.merchant_account_id, Some(&t.connection_id)).await?;
            let stripe = ctx.stripe_for(&conn)?;
            send(&ctx, &stripe, &t, row).await?
        } else {
            row
        };
        let t = transaction(&ctx, &caller, &id).await?;
        return Ok((StatusCode::CREATED, Json(render::refund(&row, Some(&t)))));
    }
    let existing = store_tx::refunds_of(ctx.store.reader(), &t.id).await?;
    let committed: i64 = existing
        .iter()
        .filter(|r| matches!(r.status.as_str(), "processing" | "succeeded"))
        .map(|r| r.amount)
        .sum();
    let available = t.captured_amount - committed.max(t.refunded_amount);
    if t.captured_amount == 0 || !matches!(t.status.as_str(), "capture_succeeded") {
        return Err(ApiError::bad_request(format!(
            "Only a captured transaction can be refunded; this one is {}.",
            t.status
        )));
    }
    let amount = match body.get("amount") {
        None | Some(Value::Null) => available,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|a| a > 0) => n.as_i64().unwrap_or(0),
        Some(_) => return Err(ApiError::field("/amount", "Must be a positive integer.")),
    };
    if amount <= 0 || amount > available {
        return Err(ApiError::field(
            "/amount",
            format!("Must not exceed what is left to refund ({available})."),
        ));
    }
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 200 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::field(
                "/reason",
                "A string of at most 200 characters.",
            ));
        }
    };
    let now = ctx.now();
    let row = RefundRow {
        id: refund_id.unwrap_or_else(tollgate_store::new_id),
        transaction_id: t.id.clone(),
        merchant_account_id: t.merchant_account_id.clone(),
        stripe_refund_id: None,
        amount,
        currency: t.currency.clone(),
        status: "processing".into(),
        reason: reason.clone(),
        error_code: None,
        raw_response_code: None,
        raw_response_description: None,
        created_at: now,
        updated_at: now,
    };
    store_tx::insert_refund(ctx.store.writer(), &row).await?;
    let conn = connection_for(&ctx, &t.merchant_account_id, Some(&t.connection_id)).await?;
    let stripe = ctx.stripe_for(&conn)?;
    let row = send(&ctx, &stripe, &t, row).await?;
    let t = transaction(&ctx, &caller, &id).await?;
    Ok((StatusCode::CREATED, Json(render::refund(&row, Some(&t)))))
}

pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = transaction(&ctx, &caller, &id).await?;
    let rows = store_tx::refunds_of(ctx.store.reader(), &t.id).await?;
    let items: Vec<Value> = rows.iter().map(|r| render::refund(r, Some(&t))).collect();
    let n = items.len() as i64;
    Ok(Json(render::page(items, n.max(1), None, None)))
}

pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path((id, refund_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = transaction(&ctx, &caller, &id).await?;
    let r = store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, &refund_id)
        .await?
        .filter(|r| r.transaction_id == t.id)
        .ok_or_else(|| ApiError::not_found("refund"))?;
    Ok(Json(render::refund(&r, Some(&t))))
}

pub async fn get_by_id(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(refund_id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let r = store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, &refund_id)
        .await?
        .ok_or_else(|| ApiError::not_found("refund"))?;
    let t = transaction(&ctx, &caller, &r.transaction_id).await.ok();
    Ok(Json(render::refund(&r, t.as_ref())))
}
