//! `POST /webhooks/stripe/{connection_id}`: Stripe's events, verified on the raw body and
//! applied to the connection's own transactions through the domain (forward-only, so late,
//! duplicated or reordered events end in the same state).
//!
//! This first version applies each event while Stripe waits for the answer. The durable
//! inbox (store before 2xx, background workers, dead letters, replay) and reconcile are the
//! next step (issue 5).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tollgate_domain::{DisputeSnapshot, Observation};
use tollgate_store::{connections, transactions as store_tx};

use super::transactions::apply_observations;
use crate::ApiContext;
use crate::error::{ApiError, ApiResult};
use crate::stripe_map;

/// Signatures older or newer than this are refused (SPEC §4).
const TOLERANCE_SECS: i64 = 300;
const MAX_EVENT_BYTES: usize = 1024 * 1024;

pub async fn receive(
    State(ctx): State<ApiContext>,
    Path(connection_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::bad_request("The event is larger than 1 MiB."));
    }
    let refused = |why: &str| ApiError::bad_request(format!("Webhook refused: {why}."));
    let conn = connections::get(ctx.store.reader(), &connection_id)
        .await?
        .ok_or_else(|| refused("unknown connection"))?;
    let mut secrets = Vec::new();
    for sealed in [&conn.webhook_secret_enc, &conn.webhook_secret_old_enc]
        .into_iter()
        .flatten()
    {
        secrets.push(
            ctx.keys
                .open(&conn.id, sealed)
                .map_err(|e| ApiError::Internal(format!("webhook secret of {}: {e}", conn.id)))?,
        );
    }
    if secrets.is_empty() {
        return Err(refused("the connection is awaiting its webhook secret"));
    }
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("no Stripe-Signature header"))?;
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    tollgate_stripe::signature::verify(&refs, header, &body, ctx.now() / 1000, TOLERANCE_SECS)
        .map_err(|e| refused(&format!("bad signature ({e:?})")))?;
    let event: Value =
        serde_json::from_slice(&body).map_err(|_| refused("the body is not JSON"))?;
    if event["object"] != "event" || !event["id"].is_string() || !event["type"].is_string() {
        return Err(refused("the body is not a Stripe event"));
    }
    // An event of another Stripe account than the connection's is not ours to apply.
    if event["account"].as_str() != conn.stripe_account.as_deref() && !event["account"].is_null() {
        return Ok((
            StatusCode::OK,
            Json(json!({"received": true, "applied": false})),
        ));
    }
    let applied = apply_event(&ctx, &conn.id, &event).await?;
    Ok((
        StatusCode::OK,
        Json(json!({"received": true, "applied": applied})),
    ))
}

/// Applies one event to the transaction it concerns; `false` when none of ours does.
async fn apply_event(ctx: &ApiContext, connection_id: &str, event: &Value) -> ApiResult<bool> {
    let kind = event["type"].as_str().unwrap_or_default();
    let object = &event["data"]["object"];
    let at = event["created"].as_i64().unwrap_or(0) * 1000;
    let (pi_id, observations) = if kind.starts_with("payment_intent.") {
        (
            object["id"].as_str(),
            stripe_map::observations_of_intent(object, at),
        )
    } else if kind == "charge.expired" {
        (
            object["payment_intent"].as_str(),
            vec![Observation::ChargeExpired(stripe_map::charge(object, at))],
        )
    } else if kind.starts_with("charge.dispute.") {
        let obs = Observation::Dispute(DisputeSnapshot {
            status: object["status"].as_str().unwrap_or_default().to_string(),
        });
        (object["payment_intent"].as_str(), vec![obs])
    } else if kind == "charge.refund.updated" || kind.starts_with("refund.") {
        (
            object["payment_intent"].as_str(),
            vec![Observation::Refund(stripe_map::refund(object))],
        )
    } else if kind.starts_with("charge.") {
        (
            object["payment_intent"].as_str(),
            vec![Observation::Charge(stripe_map::charge(object, at))],
        )
    } else {
        (None, Vec::new())
    };
    let Some(pi_id) = pi_id else {
        return Ok(false);
    };
    let Some(t) = store_tx::get_by_payment_intent(ctx.store.reader(), connection_id, pi_id).await?
    else {
        return Ok(false);
    };
    let refund_event = kind == "charge.refund.updated" || kind.starts_with("refund.");
    if refund_event
        && let Some(rid) = object["id"].as_str()
        && let Some(mut r) = store_tx::get_refund_by_stripe_id(ctx.store.reader(), rid).await?
        && r.transaction_id == t.id
    {
        let status = stripe_map::refund_status(object["status"].as_str().unwrap_or("pending"));
        // Refund statuses move forward only: a late `pending` never undoes `succeeded`.
        if r.status == "processing" && status != "processing" {
            r.status = status.to_string();
            r.updated_at = ctx.now();
            super::refunds::save_refund(ctx, &r, true).await?;
        }
    }
    apply_observations(ctx, &t, observations).await?;
    Ok(true)
}
