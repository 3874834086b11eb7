//! Refunds of a captured transaction: many, partial or full, up to the captured amount.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use tollgate_domain::{Amount, Currency, Money, Observation};
use tollgate_store::transactions as store_tx;
use tollgate_store::{RefundRow, TransactionRow};
use tollgate_stripe::client::StripeClient;

use super::JsonBody;
use super::render;
use super::transactions::{apply_observations, outage};
use crate::ApiContext;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::stripe_map;

const STRIPE_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

async fn transaction(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<TransactionRow> {
    store_tx::get(ctx.store.reader(), &caller.merchant_account_id, id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}

/// Applies a Stripe refund object to our refund row and the charge's cumulative refunded
/// amount to the transaction.
async fn record(
    ctx: &ApiContext,
    stripe: &StripeClient,
    t: &TransactionRow,
    mut row: RefundRow,
    r: &Value,
) -> ApiResult<RefundRow> {
    let before = row.status.clone();
    let first_answer = row.stripe_refund_id.is_none();
    row.stripe_refund_id = r["id"].as_str().map(str::to_string);
    let stripe_status = r["status"].as_str().unwrap_or("pending");
    row.status = stripe_map::refund_status(stripe_status).to_string();
    if row.status == "failed" {
        row.error_code = Some("refund_failed".into());
        row.raw_response_code = r["failure_reason"].as_str().map(str::to_string);
    }
    row.updated_at = ctx.now();
    // Stripe's first answer announces the refund (`refund.processing` while it is pending);
    // later answers only when the status moves.
    let announce = row.status != before || (first_answer && row.stripe_refund_id.is_some());
    save_refund(ctx, &row, announce).await?;
    let mut obs = vec![Observation::Refund(stripe_map::refund(r))];
    if let Some(ch) = r["charge"].as_str()
        && let Ok(charge) = stripe.retrieve_charge(ch).await
    {
        obs.push(Observation::Charge(stripe_map::charge(&charge, ctx.now())));
    }
    apply_observations(ctx, t, obs).await?;
    Ok(row)
}

/// Saves a refund row, and with `announce` its outbound event (`refund.<status>`), in one
/// database transaction (transactional outbox, SPEC §7).
pub async fn save_refund(ctx: &ApiContext, row: &RefundRow, announce: bool) -> ApiResult<()> {
    let mut tx = ctx.store.begin().await?;
    store_tx::update_refund(&mut *tx, row).await?;
    if announce {
        let t = store_tx::get_any(&mut *tx, &row.transaction_id, "").await?;
        crate::outbound::refund_changed(&mut tx, row, t.as_ref(), row.updated_at).await?;
    }
    tollgate_store::commit(tx).await?;
    Ok(())
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
    let refund_id = crate::idempotency::request_key(&headers, &caller).map(|k| {
        super::transactions::transaction_id(Some(&format!("{k}\u{0}refund\u{0}{}", t.id)))
    });
    if let Some(rid) = &refund_id
        && let Some(row) =
            store_tx::get_refund(ctx.store.reader(), &caller.merchant_account_id, rid).await?
    {
        let row = if row.stripe_refund_id.is_none() && row.status == "processing" {
            let conn = super::transactions::connection_for(
                &ctx,
                &t.merchant_account_id,
                Some(&t.connection_id),
            )
            .await?;
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
    let conn =
        super::transactions::connection_for(&ctx, &t.merchant_account_id, Some(&t.connection_id))
            .await?;
    let stripe = ctx.stripe_for(&conn)?;
    let row = send(&ctx, &stripe, &t, row).await?;
    let t = transaction(&ctx, &caller, &id).await?;
    Ok((StatusCode::CREATED, Json(render::refund(&row, Some(&t)))))
}

/// Creates the Stripe refund of a refund row (at create, or resumed by sync after an outage)
/// under a Stripe Idempotency-Key derived from the refund id.
async fn send(
    ctx: &ApiContext,
    stripe: &StripeClient,
    t: &TransactionRow,
    mut row: RefundRow,
) -> ApiResult<RefundRow> {
    let currency =
        Currency::parse(&row.currency).map_err(|_| ApiError::Internal("stored currency".into()))?;
    let amount = Money::new(
        Amount::new(row.amount).map_err(|_| ApiError::Internal("stored amount".into()))?,
        currency,
    )
    .to_stripe_amount()
    .map_err(|_| ApiError::field("/amount", "Not expressible in Stripe's units."))?;
    let mut p = Map::new();
    p.insert("payment_intent".into(), json!(t.payment_intent_id));
    p.insert("amount".into(), json!(amount));
    let mut md = Map::new();
    md.insert("tollgate_refund_id".into(), json!(row.id));
    md.insert("tollgate_transaction_id".into(), json!(t.id));
    if let Some(r) = &row.reason {
        if STRIPE_REASONS.contains(&r.as_str()) {
            p.insert("reason".into(), json!(r));
        } else {
            md.insert("reason".into(), json!(r));
        }
    }
    p.insert("metadata".into(), Value::Object(md));
    match stripe
        .create_refund(&p, Some(&format!("tollgate-refund-{}", row.id)))
        .await
    {
        Ok(r) => record(ctx, stripe, t, row, &r).await,
        Err(e) if e.is_retryable_outage() => Err(outage(ctx, &e, Some(&t.id))),
        Err(e) => {
            row.status = "declined".into();
            row.error_code = Some("refund_declined".into());
            row.raw_response_code = e.code().map(str::to_string);
            row.raw_response_description = Some(e.message());
            row.updated_at = ctx.now();
            save_refund(ctx, &row, true).await?;
            Ok(row)
        }
    }
}

/// For `sync`: re-sends refunds an outage left without a Stripe refund, and re-reads the
/// status of those still processing.
pub async fn sync_refunds(
    ctx: &ApiContext,
    t: &TransactionRow,
    stripe: &StripeClient,
) -> ApiResult<()> {
    for row in store_tx::refunds_of(ctx.store.reader(), &t.id).await? {
        if row.status != "processing" {
            continue;
        }
        match row.stripe_refund_id.clone() {
            None => {
                send(ctx, stripe, t, row).await?;
            }
            Some(rid) => {
                let r = stripe
                    .retrieve_refund(&rid)
                    .await
                    .map_err(|e| outage(ctx, &e, Some(&t.id)))?;
                record(ctx, stripe, t, row, &r).await?;
            }
        }
    }
    Ok(())
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
