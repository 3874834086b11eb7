//! API objects as the seed orchestrator's SDK expects them (docs/gr4vy-compat.md): every field
//! its models require, with honest defaults where Tollgate has no such concept.

use serde_json::{Map, Value, json};
use tollgate_store::{RefundRow, TransactionRow};

use crate::clock::rfc3339;

fn opt_time(ms: Option<i64>) -> Value {
    ms.map(|m| json!(rfc3339(m))).unwrap_or(Value::Null)
}

/// `pending` until the payment ends, then `succeeded` or `failed`.
fn intent_outcome(status: &str) -> &'static str {
    match status {
        "authorization_succeeded"
        | "capture_succeeded"
        | "capture_pending"
        | "authorization_void_pending"
        | "authorization_voided" => "succeeded",
        "authorization_declined" | "authorization_failed" => "failed",
        _ => "pending",
    }
}

/// Extra values known only at the moment they are made (tokens are stored hashed).
#[derive(Default)]
pub struct Fresh {
    pub approval_url: Option<String>,
    pub session_token: Option<String>,
}

pub fn transaction(t: &TransactionRow, fresh: &Fresh) -> Value {
    let metadata: Value = serde_json::from_str(&t.metadata).unwrap_or_else(|_| json!({}));
    // Before approval the PaymentIntent's client secret, then its id (SPEC §3.3).
    let approved = matches!(
        t.status.as_str(),
        "authorization_succeeded"
            | "authorization_void_pending"
            | "authorization_voided"
            | "capture_pending"
            | "capture_succeeded"
    );
    let pst = if approved {
        t.payment_intent_id.clone()
    } else {
        t.client_secret
            .clone()
            .or_else(|| t.payment_intent_id.clone())
    };
    let ids = match &t.payment_intent_id {
        Some(pi) => json!({"payment_id": pi}),
        None => json!({}),
    };
    let buyer = match &t.customid {
        Some(c) => json!({"type": "buyer", "external_identifier": c}),
        None => Value::Null,
    };
    json!({
        "type": "transaction",
        "id": t.id,
        "reconciliation_id": t.id.replace('-', ""),
        "merchant_account_id": t.merchant_account_id,
        "status": t.status,
        "intent": t.intent,
        "intent_outcome": intent_outcome(&t.status),
        "amount": t.amount,
        "currency": t.currency,
        "country": t.country,
        "authorized_amount": t.authorized_amount,
        "captured_amount": t.captured_amount,
        "refunded_amount": t.refunded_amount,
        "settled_amount": 0,
        "settled_currency": null,
        "settled": false,
        "external_identifier": t.external_identifier,
        "metadata": metadata,
        "customid": t.customid,
        "buyer": buyer,
        "method": t.method,
        "instrument_type": "redirect",
        "payment_method": {
            "type": "payment-method",
            "method": t.method,
            "mode": "redirect",
            "approval_url": fresh.approval_url,
            "redirect_url": t.redirect_url,
            "country": t.country,
            "currency": t.currency,
        },
        "payment_service": {
            "type": "payment-service",
            "id": t.connection_id,
            "payment_service_definition_id": format!("stripe-{}", t.method),
            "method": t.method,
            "display_name": "Stripe",
        },
        "payment_service_transaction_id": pst,
        "additional_identifiers": ids.clone(),
        "extra_xids": ids,
        "error_code": t.error_code,
        "raw_response_code": t.raw_response_code,
        "raw_response_description": t.raw_response_description,
        "session_token": fresh.session_token,
        "integration_client": t.integration_client,
        "gift_card_redemptions": [],
        "disputed": t.disputed,
        "payment_source": "ecommerce",
        "merchant_initiated": false,
        "is_subsequent_payment": false,
        "multi_tender": false,
        "account_funding_transaction": false,
        "pending_review": false,
        "approval_expires_at": opt_time(t.approval_expires_at),
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
        "authorized_at": opt_time(t.authorized_at),
        "captured_at": opt_time(t.captured_at),
        "voided_at": opt_time(t.voided_at),
    })
}

pub fn refund(r: &RefundRow, t: Option<&TransactionRow>) -> Value {
    json!({
        "type": "refund",
        "id": r.id,
        "transaction_id": r.transaction_id,
        "payment_service_refund_id": r.stripe_refund_id,
        "amount": r.amount,
        "currency": r.currency,
        "status": r.status,
        "reason": r.reason,
        "target_type": "payment-method",
        "target_id": null,
        "reconciliation_id": r.id.replace('-', ""),
        "transaction_reconciliation_id": r.transaction_id.replace('-', ""),
        "external_identifier": null,
        "transaction_external_identifier": t.and_then(|t| t.external_identifier.clone()),
        "error_code": r.error_code,
        "raw_response_code": r.raw_response_code,
        "raw_response_description": r.raw_response_description,
        "settled": false,
        "settled_amount": 0,
        "settled_currency": null,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
    })
}

/// A list envelope.
pub fn page(
    items: Vec<Value>,
    limit: i64,
    next: Option<String>,
    previous: Option<String>,
) -> Value {
    let mut m = Map::new();
    m.insert("items".into(), Value::Array(items));
    m.insert("limit".into(), json!(limit));
    m.insert("next_cursor".into(), json!(next));
    m.insert("previous_cursor".into(), json!(previous));
    Value::Object(m)
}
