//! Stripe's JSON → the domain's snapshots. The only place that knows Stripe's field names for
//! PaymentIntents, Charges and Refunds; tolerant of API versions (before 2022-11-15 an intent
//! embeds `charges.data`, later it names `latest_charge`, expanded or not).

use serde_json::Value;
use tollgate_domain::{
    ChargeRef, ChargeSnapshot, ChargeStatus, Observation, PaymentError, PaymentIntentSnapshot,
    PaymentIntentStatus, RefundSnapshot,
};

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

pub fn payment_error(e: &Value) -> Option<PaymentError> {
    if e.is_null() || !e.is_object() {
        return None;
    }
    Some(PaymentError {
        error_type: s(&e["type"]),
        code: s(&e["code"]),
        decline_code: s(&e["decline_code"]),
        message: s(&e["message"]),
    })
}

/// The charge an intent points at: `latest_charge` (an id or an expanded object), or the newest
/// of the embedded `charges.data` of old API versions.
fn latest_charge(pi: &Value) -> Option<ChargeRef> {
    let lc = &pi["latest_charge"];
    if let Some(id) = lc.as_str() {
        return Some(ChargeRef {
            id: id.to_string(),
            status: None,
        });
    }
    let obj = if lc.is_object() {
        lc
    } else {
        pi["charges"]["data"].as_array()?.first()?
    };
    Some(ChargeRef {
        id: s(&obj["id"])?,
        status: s(&obj["status"]).map(ChargeStatus::from),
    })
}

pub fn payment_intent(pi: &Value, observed_at: i64) -> PaymentIntentSnapshot {
    PaymentIntentSnapshot {
        observed_at,
        status: PaymentIntentStatus::parse(pi["status"].as_str().unwrap_or_default()),
        amount: pi["amount"].as_i64().unwrap_or(0),
        amount_capturable: pi["amount_capturable"].as_i64().unwrap_or(0),
        amount_received: pi["amount_received"].as_i64().unwrap_or(0),
        amount_remaining:
            pi["next_action"]["display_bank_transfer_instructions"]["amount_remaining"].as_i64(),
        last_payment_error: payment_error(&pi["last_payment_error"]),
        cancellation_reason: s(&pi["cancellation_reason"]),
        latest_charge: latest_charge(pi),
    }
}

pub fn charge(ch: &Value, observed_at: i64) -> ChargeSnapshot {
    let amount = ch["amount"].as_i64().unwrap_or(0);
    let captured = ch["captured"].as_bool().unwrap_or(false);
    let amount_captured =
        ch["amount_captured"]
            .as_i64()
            .unwrap_or(if captured { amount } else { 0 });
    // When a capture takes less than was authorized, Stripe releases the rest and counts it
    // in `amount_refunded`; only money that was captured can be refunded, so that part is
    // left out of the transaction's refunds.
    let released = if captured {
        amount - amount_captured
    } else {
        0
    };
    ChargeSnapshot {
        observed_at,
        id: s(&ch["id"]).unwrap_or_default(),
        status: ChargeStatus::from(s(&ch["status"]).unwrap_or_default()),
        amount,
        amount_captured,
        captured,
        amount_refunded: (ch["amount_refunded"].as_i64().unwrap_or(0) - released).max(0),
        refunded: ch["refunded"].as_bool().unwrap_or(false),
        disputed: ch["disputed"].as_bool().unwrap_or(false),
    }
}

pub fn refund(r: &Value) -> RefundSnapshot {
    RefundSnapshot {
        id: s(&r["id"]).unwrap_or_default(),
        status: s(&r["status"]).unwrap_or_default(),
    }
}

/// Everything one re-read PaymentIntent (with `latest_charge` expanded) teaches: the intent,
/// and its charge when expanded.
pub fn observations_of_intent(pi: &Value, observed_at: i64) -> Vec<Observation> {
    let mut out = vec![Observation::PaymentIntent(payment_intent(pi, observed_at))];
    let lc = &pi["latest_charge"];
    if lc.is_object() {
        out.push(Observation::Charge(charge(lc, observed_at)));
    } else if let Some(first) = pi["charges"]["data"].as_array().and_then(|d| d.first()) {
        out.push(Observation::Charge(charge(first, observed_at)));
    }
    out
}

/// Stripe refund status → ours (SPEC §3.5).
pub fn refund_status(stripe: &str) -> &'static str {
    match stripe {
        "succeeded" => "succeeded",
        "failed" => "failed",
        "canceled" => "voided",
        _ => "processing",
    }
}
