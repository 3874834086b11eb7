//! Charges: made by payment intents (never created directly), captured, expired.

use serde_json::{Value, json};

use super::previous;
use super::{fetch, no_params};
use crate::Ctx;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};

/// How a charge attempt ended.
pub enum Outcome<'a> {
    Authorized,
    /// (code, decline_code, message)
    Declined(&'a str, &'a str, &'a str),
}

/// Stripe's fee for a card charge in the sandbox: 2.9% + 30 minor units.
fn fee(amount: i64) -> i64 {
    amount * 29 / 1000 + 30
}

pub fn balance_transaction(
    ctx: &mut Ctx,
    source: &str,
    amount: i64,
    currency: &str,
    kind: &str,
) -> String {
    let fee = if kind == "charge" { fee(amount) } else { 0 };
    let id = new_id("txn");
    let txn = json!({
        "id": id, "object": "balance_transaction", "amount": amount,
        "available_on": ctx.now + 2 * 86_400, "balance_type": "payments", "created": ctx.now,
        "currency": currency,
        "description": null, "exchange_rate": null, "fee": fee,
        "fee_details": if fee > 0 { json!([{"amount": fee, "application": null, "currency": currency,
                                     "description": "Stripe processing fees", "type": "stripe_fee"}]) } else { json!([]) },
        "net": amount - fee, "reporting_category": kind, "source": source, "status": "pending",
        "type": kind,
    });
    ctx.put("balance_transaction", txn);
    id
}

/// Builds (and stores) the charge of an attempt of `pi` with payment method `pm`.
pub fn attempt(
    ctx: &mut Ctx,
    pi: &Value,
    pm: &Value,
    outcome: &Outcome,
    three_d_secure: bool,
) -> Value {
    let id = new_id("ch");
    let amount = pi["amount"].as_i64().unwrap_or(0);
    let currency = pi["currency"].as_str().unwrap_or("usd").to_string();
    let manual = pi["capture_method"] == "manual";
    let succeeded = matches!(outcome, Outcome::Authorized);
    let captured = succeeded && !manual;
    let mut details = json!({"type": pm["type"]});
    if pm["type"] == "card" {
        let c = &pm["card"];
        details["card"] = json!({
            "amount_authorized": if succeeded { json!(amount) } else { Value::Null },
            "authorization_code": if succeeded { json!(random_string(6).to_uppercase()) } else { Value::Null },
            "brand": c["brand"], "checks": c["checks"], "country": c["country"],
            "exp_month": c["exp_month"], "exp_year": c["exp_year"],
            "extended_authorization": {"status": "disabled"}, "fingerprint": c["fingerprint"],
            "funding": c["funding"], "incremental_authorization": {"status": "unavailable"},
            "installments": null, "last4": c["last4"], "mandate": null,
            "multicapture": {"status": "unavailable"}, "network": c["brand"],
            "network_token": {"used": false},
            "network_transaction_id": if succeeded { json!(random_string(15)) } else { Value::Null },
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": "unregulated",
            "three_d_secure": if three_d_secure {
                json!({"authentication_flow": "challenge", "electronic_commerce_indicator": "05",
                       "exemption_indicator": null, "result": "authenticated", "result_reason": null,
                       "transaction_id": random_string(36), "version": "2.2.0"})
            } else { Value::Null },
            "transaction_link_id": null, "wallet": null,
        });
        if manual && succeeded {
            details["card"]["capture_before"] = json!(ctx.now + 7 * 86_400);
        }
    } else {
        details[pm["type"].as_str().unwrap_or("card")] = json!({});
    }
    let (failure_code, failure_message, outcome_obj) = match outcome {
        Outcome::Authorized => (
            Value::Null,
            Value::Null,
            json!({"advice_code": null, "network_advice_code": null, "network_decline_code": null,
                   "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
                   "risk_score": 32, "seller_message": "Payment complete.", "type": "authorized"}),
        ),
        Outcome::Declined(code, decline, message) => {
            let blocked = *decline == "fraudulent";
            (
                json!(code),
                json!(message),
                json!({"advice_code": if *decline == "insufficient_funds" { json!("try_again_later") } else { json!("do_not_try_again") },
                       "network_advice_code": null, "network_decline_code": null,
                       "network_status": if blocked { "not_sent_to_network" } else { "declined_by_network" },
                       "reason": if blocked { json!("highest_risk_level") } else { json!(decline) },
                       "risk_level": if blocked { "highest" } else { "normal" },
                       "risk_score": if blocked { 95 } else { 40 },
                       "seller_message": if blocked { "Stripe blocked this payment as too risky." } else { "The bank did not return any further details with this decline." },
                       "type": if blocked { "blocked" } else { "issuer_declined" }}),
            )
        }
    };
    let txn = if captured {
        json!(balance_transaction(ctx, &id, amount, &currency, "charge"))
    } else {
        Value::Null
    };
    let charge = json!({
        "id": id, "object": "charge", "amount": amount,
        "amount_captured": if captured { amount } else { 0 }, "amount_refunded": 0,
        "application": null, "application_fee": null, "application_fee_amount": null,
        "balance_transaction": txn, "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": "TOLLGATE SANDBOX", "captured": captured,
        "created": ctx.now, "currency": currency, "customer": pi["customer"],
        "description": pi["description"], "disputed": false,
        "failure_balance_transaction": null, "failure_code": failure_code,
        "failure_message": failure_message, "fraud_details": {}, "livemode": false,
        "metadata": pi["metadata"], "on_behalf_of": null, "outcome": outcome_obj,
        "paid": succeeded, "payment_intent": pi["id"], "payment_method": pm["id"],
        "payment_method_details": details, "radar_options": {},
        "receipt_email": pi["receipt_email"], "receipt_number": null,
        "receipt_url": format!("{}/_sandbox/receipts/{id}", ctx.public_url),
        "refunded": false, "review": null, "shipping": pi["shipping"], "source": null,
        "source_transfer": null, "statement_descriptor": pi["statement_descriptor"],
        "statement_descriptor_suffix": pi["statement_descriptor_suffix"],
        "status": if succeeded { "succeeded" } else { "failed" },
        "transfer_data": null, "transfer_group": pi["transfer_group"],
    });
    ctx.put("charge", charge.clone());
    charge
}

/// Captures `amount` of an authorized charge; the rest is released (a refund for the remainder,
/// as Stripe records it).
pub fn capture(ctx: &mut Ctx, charge_id: &str, amount: i64) -> Result<Value> {
    let before = fetch(ctx, "charge", charge_id, "charge")?;
    let mut ch = before.clone();
    let total = ch["amount"].as_i64().unwrap_or(0);
    let currency = ch["currency"].as_str().unwrap_or("usd").to_string();
    ch["captured"] = json!(true);
    ch["amount_captured"] = json!(amount);
    ch["balance_transaction"] = json!(balance_transaction(
        ctx, charge_id, amount, &currency, "charge"
    ));
    if amount < total {
        let refund = super::refunds::new_refund(ctx, &ch, total - amount, None, "succeeded");
        ctx.put("refund", refund);
        ch["amount_refunded"] = json!(total - amount);
    }
    ctx.put("charge", ch.clone());
    ctx.emit("charge.captured", &ch, Some(previous(&before, &ch)));
    Ok(ch)
}

/// An uncaptured authorization lapsing (after about 7 days on Stripe; on demand here through the
/// control API): the charge is refunded in full, `charge.expired` fires, and the intent is
/// canceled with `cancellation_reason: automatic`.
pub fn expire(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let before = fetch(ctx, "charge", id, "charge")?;
    if before["captured"] == true || before["status"] != "succeeded" || before["refunded"] == true {
        return Err(StripeError::invalid(format!(
            "Charge {id} cannot expire: only an uncaptured, successful charge can."
        )));
    }
    let mut ch = before.clone();
    ch["refunded"] = json!(true);
    ch["amount_refunded"] = ch["amount"].clone();
    ctx.put("charge", ch.clone());
    ctx.emit("charge.expired", &ch, Some(previous(&before, &ch)));
    if let Some(pi_id) = ch["payment_intent"].as_str() {
        super::payment_intents::cancel_for(ctx, pi_id, Some("automatic"), false)?;
    }
    Ok(ch)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "charge", &ids[0], "charge")
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "charge", &ids[0], "charge")?;
    let mut ch = before.clone();
    if let Some(d) = p.str("description")? {
        ch["description"] = if d.is_empty() { Value::Null } else { json!(d) };
    }
    if let Some(e) = p.str("receipt_email")? {
        ch["receipt_email"] = if e.is_empty() { Value::Null } else { json!(e) };
    }
    merge_metadata(&mut ch["metadata"], p.metadata("metadata")?);
    p.ignore(&["fraud_details", "shipping", "transfer_group", "customer"]);
    p.finish()?;
    ctx.put("charge", ch.clone());
    ctx.emit("charge.updated", &ch, Some(previous(&before, &ch)));
    Ok(ch)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    let pi = p.opt_str("payment_intent")?;
    p.ignore(&["transfer_group"]);
    super::list(ctx, p, "charge", "/v1/charges", |c| {
        customer.as_deref().is_none_or(|x| c["customer"] == x)
            && pi.as_deref().is_none_or(|x| c["payment_intent"] == x)
    })
}
