//! Refunds: on a charge or an intent, partial or full, several; over-refund rejected; `pending`
//! for bank-transfer payments, `succeeded` then `failed` for the refund-failure test card.

use std::time::Duration;

use serde_json::{Value, json};

use super::previous;
use super::{fetch, format_amount, no_params, payment_methods};
use crate::cards::Behaviour;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map, list_object};

/// How long a pending refund takes to settle, or a failing one to fail.
const SETTLE_AFTER: Duration = Duration::from_millis(1500);

pub fn new_refund(
    ctx: &mut Ctx,
    charge: &Value,
    amount: i64,
    reason: Option<String>,
    status: &str,
) -> Value {
    let id = new_id("re");
    let currency = charge["currency"].as_str().unwrap_or("usd").to_string();
    let txn = super::charges::balance_transaction(ctx, &id, -amount, &currency, "refund");
    let card = charge["payment_method_details"]["type"] == "card";
    json!({
        "id": id, "object": "refund", "amount": amount, "balance_transaction": txn,
        "charge": charge["id"], "created": ctx.now, "currency": currency,
        "customer": charge["customer"], "customer_account": null,
        "destination_details": if card {
            json!({"card": {"reference": null, "reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"}, "type": "card"})
        } else {
            json!({"customer_cash_balance": {}, "type": "customer_cash_balance"})
        },
        "metadata": empty_map(), "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"], "reason": reason, "receipt_number": null,
        "source_transfer_reversal": null, "status": status, "transfer_reversal": null,
    })
}

/// Moves `amount` into or out of the charge's refunded total and emits `charge.refunded`.
fn adjust_charge(ctx: &mut Ctx, charge_id: &str, delta: i64, emit_refunded: bool) -> Value {
    let Some(before) = ctx.get("charge", charge_id) else {
        return Value::Null;
    };
    let mut ch = before.clone();
    let refunded = before["amount_refunded"].as_i64().unwrap_or(0) + delta;
    ch["amount_refunded"] = json!(refunded);
    ch["refunded"] = json!(refunded >= before["amount"].as_i64().unwrap_or(0));
    ctx.put("charge", ch.clone());
    if emit_refunded {
        ctx.emit("charge.refunded", &ch, Some(previous(&before, &ch)));
    }
    ch
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let charge_id = p.opt_str("charge")?;
    let pi_id = p.opt_str("payment_intent")?;
    let amount = p.int("amount")?;
    let reason = p.enum_str(
        "reason",
        &["duplicate", "fraudulent", "requested_by_customer"],
    )?;
    let mut md = empty_map();
    merge_metadata(&mut md, p.metadata("metadata")?);
    p.ignore(&[
        "instructions_email",
        "refund_application_fee",
        "reverse_transfer",
        "origin",
        "currency",
        "customer",
    ]);
    p.finish()?;
    let charge_id = match (charge_id, pi_id) {
        (Some(c), _) => c,
        (None, Some(pi)) => {
            let intent = fetch(ctx, "payment_intent", &pi, "payment_intent")?;
            match intent["latest_charge"].as_str() {
                Some(c)
                    if matches!(
                        intent["status"].as_str(),
                        Some("succeeded" | "requires_capture")
                    ) =>
                {
                    c.to_string()
                }
                _ => {
                    return Err(StripeError::invalid(format!(
                        "This PaymentIntent ({pi}) does not have a successful charge to refund."
                    ))
                    .code("charge_not_refundable")
                    .param("payment_intent"));
                }
            }
        }
        (None, None) => {
            return Err(StripeError::invalid(
                "One of the following params should be provided for this request: payment_intent or charge.",
            )
            .code("parameter_missing"));
        }
    };
    let ch = fetch(ctx, "charge", &charge_id, "charge")?;
    let total = ch["amount"].as_i64().unwrap_or(0);
    let refunded = ch["amount_refunded"].as_i64().unwrap_or(0);
    let currency = ch["currency"].as_str().unwrap_or("usd").to_string();
    if ch["status"] != "succeeded" {
        return Err(StripeError::invalid(format!(
            "Charge {charge_id} has not succeeded, so it cannot be refunded."
        ))
        .code("charge_not_refundable"));
    }
    if ch["refunded"] == true || refunded >= total {
        return Err(
            StripeError::invalid(format!("Charge {charge_id} has already been refunded."))
                .code("charge_already_refunded"),
        );
    }
    if ch["disputed"] == true {
        let lost_or_open = ctx
            .acct()
            .collection("dispute")
            .map(|c| {
                c.objects
                    .values()
                    .any(|d| d["charge"] == charge_id.as_str() && d["status"] != "won")
            })
            .unwrap_or(false);
        if lost_or_open {
            return Err(StripeError::invalid(format!(
                "Charge {charge_id} has been charged back; cannot issue a refund."
            ))
            .code("charge_disputed"));
        }
    }
    let amount = amount.unwrap_or(total - refunded);
    if amount <= 0 {
        return Err(StripeError::invalid("Refund amount must be positive.")
            .code("amount_too_small")
            .param("amount"));
    }
    if amount > total - refunded {
        return Err(StripeError::invalid(format!(
            "Refund amount ({}) is greater than unrefunded amount on charge ({})",
            format_amount(amount, &currency),
            format_amount(total - refunded, &currency)
        ))
        .code("amount_too_large")
        .param("amount"));
    }
    if ch["captured"] != true {
        // Refunding an authorization releases it: only whole, and it cancels the intent.
        if amount != total {
            return Err(StripeError::invalid(
                "You cannot partially refund an uncaptured charge. Instead, capture the charge for an amount less than the original amount",
            )
            .code("charge_not_refundable")
            .param("amount"));
        }
        let pi = ch["payment_intent"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        super::payment_intents::cancel_for(ctx, &pi, Some("requested_by_customer"), true)?;
        let latest = list_value(ctx, Some(&charge_id), None, 1);
        return Ok(latest["data"][0].clone());
    }
    let pm_id = ch["payment_method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let behaviour = payment_methods::behaviour(ctx, &pm_id);
    let bank = ch["payment_method_details"]["type"] == "customer_balance";
    let status = if bank { "pending" } else { "succeeded" };
    let mut refund = new_refund(ctx, &ch, amount, reason, status);
    refund["metadata"] = md;
    ctx.put("refund", refund.clone());
    adjust_charge(ctx, &charge_id, amount, true);
    ctx.emit("refund.created", &refund, None);
    let id = refund["id"].as_str().unwrap_or_default().to_string();
    if bank {
        ctx.later(SETTLE_AFTER, move |ctx| {
            let _ = settle(ctx, &id, true);
        });
    } else if behaviour == Some(Behaviour::RefundFails) {
        ctx.later(SETTLE_AFTER, move |ctx| {
            let _ = settle(ctx, &id, false);
        });
    }
    Ok(refund)
}

/// Ends a refund that is `pending` (or, for the refund-failure card, `succeeded`).
pub fn settle(ctx: &mut Ctx, id: &str, succeeded: bool) -> Result<Value> {
    let before = fetch(ctx, "refund", id, "refund")?;
    let status = before["status"].as_str().unwrap_or_default().to_string();
    let can_fail =
        status == "pending" || status == "requires_action" || (status == "succeeded" && !succeeded);
    if !(can_fail || (status == "pending" && succeeded)) || (status == "succeeded" && succeeded) {
        return Err(StripeError::invalid(format!(
            "Refund {id} has status {status} and cannot be settled."
        )));
    }
    let mut refund = before.clone();
    if succeeded {
        refund["status"] = json!("succeeded");
    } else {
        refund["status"] = json!("failed");
        refund["failure_reason"] = json!("expired_or_canceled_card");
        let currency = refund["currency"].as_str().unwrap_or("usd").to_string();
        let amount = refund["amount"].as_i64().unwrap_or(0);
        refund["failure_balance_transaction"] = json!(super::charges::balance_transaction(
            ctx,
            id,
            amount,
            &currency,
            "refund_failure"
        ));
        let charge = refund["charge"].as_str().unwrap_or_default().to_string();
        adjust_charge(ctx, &charge, -amount, false);
    }
    ctx.put("refund", refund.clone());
    let prev = previous(&before, &refund);
    ctx.emit("refund.updated", &refund, Some(prev.clone()));
    ctx.emit("charge.refund.updated", &refund, Some(prev));
    if !succeeded {
        ctx.emit("refund.failed", &refund, None);
    }
    Ok(refund)
}

pub fn cancel(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = fetch(ctx, "refund", &ids[0], "refund")?;
    if before["status"] != "requires_action" && before["status"] != "pending" {
        return Err(StripeError::invalid(format!(
            "Refund {} has status {} and cannot be canceled. Only refunds with a status of requires_action can be canceled.",
            ids[0],
            before["status"].as_str().unwrap_or_default()
        )));
    }
    let mut refund = before.clone();
    refund["status"] = json!("canceled");
    let amount = refund["amount"].as_i64().unwrap_or(0);
    let charge = refund["charge"].as_str().unwrap_or_default().to_string();
    adjust_charge(ctx, &charge, -amount, false);
    ctx.put("refund", refund.clone());
    let prev = previous(&before, &refund);
    ctx.emit("refund.updated", &refund, Some(prev.clone()));
    ctx.emit("charge.refund.updated", &refund, Some(prev));
    Ok(refund)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "refund", &ids[0], "refund")
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "refund", &ids[0], "refund")?;
    let mut refund = before.clone();
    merge_metadata(&mut refund["metadata"], p.metadata("metadata")?);
    p.finish()?;
    ctx.put("refund", refund.clone());
    ctx.emit("refund.updated", &refund, Some(previous(&before, &refund)));
    Ok(refund)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let charge = p.opt_str("charge")?;
    let pi = p.opt_str("payment_intent")?;
    super::list(ctx, p, "refund", "/v1/refunds", |r| {
        charge.as_deref().is_none_or(|c| r["charge"] == c)
            && pi.as_deref().is_none_or(|x| r["payment_intent"] == x)
    })
}

pub fn list_for_charge(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    fetch(ctx, "charge", &ids[0], "charge")?;
    let url = format!("/v1/charges/{}/refunds", ids[0]);
    let charge = ids[0].clone();
    super::list(ctx, p, "refund", &url, |r| r["charge"] == charge.as_str())
}

pub fn retrieve_for_charge(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let r = fetch(ctx, "refund", &ids[1], "refund")?;
    if r["charge"] != ids[0].as_str() {
        return Err(StripeError::missing("refund", &ids[1], "refund"));
    }
    Ok(r)
}

/// A charge's refunds as a list object (for `expand[]=refunds` and old API versions).
pub fn list_value(ctx: &mut Ctx, charge: Option<&str>, pi: Option<&str>, limit: usize) -> Value {
    let data: Vec<Value> = ctx
        .acct()
        .collection("refund")
        .map(|c| {
            c.ids
                .iter()
                .rev()
                .filter_map(|id| c.objects.get(id))
                .filter(|r| {
                    charge.is_none_or(|x| r["charge"] == x)
                        && pi.is_none_or(|x| r["payment_intent"] == x)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let more = data.len() > limit;
    let url = format!("/v1/charges/{}/refunds", charge.unwrap_or_default());
    list_object(&url, data.into_iter().take(limit).collect(), more)
}
