//! Refunds: sending them to Stripe, recording Stripe's answers (the refund row and the
//! transaction's refunded amount), and re-reading those an outage left unfinished.

use serde_json::{Map, Value, json};
use tollgate_domain::{Amount, Currency, Money, Observation};
use tollgate_store::transactions as store_tx;
use tollgate_store::{RefundRow, TransactionRow};
use tollgate_stripe::client::StripeClient;

use super::{apply_observations, outage};
use crate::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::stripe_map;

pub(crate) const STRIPE_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

/// Applies a Stripe refund object to our refund row and the charge's cumulative refunded
/// amount to the transaction.
pub(crate) async fn record(
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

/// Creates the Stripe refund of a refund row (at create, or resumed by sync after an outage)
/// under a Stripe Idempotency-Key derived from the refund id.
pub(crate) async fn send(
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
