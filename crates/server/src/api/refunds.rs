//! Refunds of a captured transaction: many, partial or full, up to the captured amount.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tollgate_store::transactions as store_tx;
use tollgate_store::{RefundRow, TransactionRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use super::render::RefundOut;
use super::transactions::{TransactionPath, closed_body_schema, opt_amount, optional_bodies};
use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::transactions::refunds::send;
use crate::transactions::{connection_for, transaction_id};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(get_by_id));
    optional_bodies(router.get_openapi_mut(), &["/transactions/{id}/refunds"]);
    router
}

async fn transaction(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<TransactionRow> {
    store_tx::get(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}

/// `POST /transactions/{id}/refunds`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = RefundCreateFields, example = json!({"amount": 300, "reason": "requested_by_customer"}))]
pub struct RefundCreate {
    /// Minor units; default: all that is left to refund. Many refunds are allowed up to the
    /// captured amount.
    #[serde(default, deserialize_with = "opt_amount")]
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
    /// Free text. `duplicate`, `fraudulent` and `requested_by_customer` are passed to Stripe as
    /// its reason; anything else is kept in the Stripe refund's metadata.
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    /// Accepted and ignored (always the payment method).
    #[schema(value_type = Value, required = false)]
    pub target_type: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub target_id: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Value, required = false)]
    pub external_identifier: Option<Value>,
}

closed_body_schema!(RefundCreateSchema, RefundCreate, "RefundCreate");

/// A refund of a transaction's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TransactionRefundPath {
    /// The transaction's id. Another merchant account's transaction is 404.
    #[param(format = "uuid")]
    pub id: String,
    /// The refund's id.
    #[param(format = "uuid")]
    pub refund_id: String,
}

/// A refund's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RefundPath {
    /// The refund's id.
    #[param(format = "uuid")]
    pub refund_id: String,
}

/// Full (no `amount`: all that is left) or partial; many per transaction up to the captured
/// amount. Refunds do not change the transaction's status. A refund Stripe refuses is answered
/// 201 with `status: declined`.
#[utoipa::path(
    post,
    path = "/transactions/{id}/refunds",
    operation_id = "create_transaction_refund",
    tag = "refunds",
    summary = "Refund a captured transaction",
    params(TransactionPath),
    request_body(content = RefundCreateSchema, description = "Optional: no body refunds all that is left."),
    responses(
        (status = 201, description = "The refund.", body = RefundOut),
        (status = 400, description = "`bad_request`: the body is not valid, the transaction is not captured, or `amount` exceeds what is left to refund.", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<RefundCreate>,
) -> ApiResult<(StatusCode, Json<RefundOut>)> {
    caller.require_secret()?;
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
        return Ok((StatusCode::CREATED, Json(RefundOut::new(&row, Some(&t)))));
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
    let amount = match body.amount {
        None => available,
        Some(a) if a > 0 => a,
        Some(_) => return Err(ApiError::field("/amount", "Must be a positive integer.")),
    };
    if amount <= 0 || amount > available {
        return Err(ApiError::field(
            "/amount",
            format!("Must not exceed what is left to refund ({available})."),
        ));
    }
    let reason = match body.reason {
        Some(s) if s.len() > 200 => {
            return Err(ApiError::field(
                "/reason",
                "A string of at most 200 characters.",
            ));
        }
        r => r,
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
    Ok((StatusCode::CREATED, Json(RefundOut::new(&row, Some(&t)))))
}

/// A transaction's refunds, oldest first; not paged (the cursors are null).
#[utoipa::path(
    get,
    path = "/transactions/{id}/refunds",
    operation_id = "list_transaction_refunds",
    tag = "refunds",
    summary = "List a transaction's refunds",
    params(TransactionPath),
    responses(
        (status = 200, description = "A transaction's refunds (not paged: the cursors are null).", body = super::render::Refunds),
        (status = 404, description = "`not_found`: no such transaction in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<RefundOut>>> {
    caller.require_secret()?;
    let t = transaction(&ctx, &caller, &id).await?;
    let rows = store_tx::refunds_of(ctx.store.reader(), &t.id).await?;
    let items: Vec<RefundOut> = rows.iter().map(|r| RefundOut::new(r, Some(&t))).collect();
    let mut page = Page::whole(items);
    // Gr4vy's SDK requires a positive `limit`, even for an empty list.
    page.limit = page.limit.max(1);
    Ok(Json(page))
}

/// A refund of this transaction.
#[utoipa::path(
    get,
    path = "/transactions/{id}/refunds/{refund_id}",
    operation_id = "get_transaction_refund",
    tag = "refunds",
    summary = "Get a refund of a transaction",
    params(TransactionRefundPath),
    responses(
        (status = 200, description = "The refund.", body = RefundOut),
        (status = 404, description = "`not_found`: no such transaction in this merchant account, or no such refund of it.", body = ErrorEnvelope),
    ),
)]
pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path((id, refund_id)): Path<(String, String)>,
) -> ApiResult<Json<RefundOut>> {
    caller.require_secret()?;
    let t = transaction(&ctx, &caller, &id).await?;
    let r = store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, &refund_id)
        .await?
        .filter(|r| r.transaction_id == t.id)
        .ok_or_else(|| ApiError::not_found("refund"))?;
    Ok(Json(RefundOut::new(&r, Some(&t))))
}

/// A refund, by its id alone.
#[utoipa::path(
    get,
    path = "/refunds/{refund_id}",
    operation_id = "get_refund",
    tag = "refunds",
    summary = "Get a refund",
    params(RefundPath),
    responses(
        (status = 200, description = "The refund.", body = RefundOut),
        (status = 404, description = "`not_found`: no such refund in this merchant account.", body = ErrorEnvelope),
    ),
)]
pub async fn get_by_id(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(refund_id): Path<String>,
) -> ApiResult<Json<RefundOut>> {
    caller.require_secret()?;
    let r = store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, &refund_id)
        .await?
        .ok_or_else(|| ApiError::not_found("refund"))?;
    let t = transaction(&ctx, &caller, &r.transaction_id).await.ok();
    Ok(Json(RefundOut::new(&r, t.as_ref())))
}
