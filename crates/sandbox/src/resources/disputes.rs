//! Disputes: opened by the dispute test cards; evidence `winning_evidence` wins (with
//! `charge.dispute.funds_reinstated`), `losing_evidence` loses (a moment after submission, as on
//! Stripe); closing concedes. Early fraud warnings: created by the `createIssuerFraudRecord`
//! test card (4000000000005423); a dispute opening on the charge makes them not actionable.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::previous;
use super::{fetch, no_params};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::merge_metadata;
use crate::{Ctx, empty_map};

const EVIDENCE: &[&str] = &[
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
];

const DECIDE_AFTER: Duration = Duration::from_millis(500);

/// Opens a dispute on a successful charge (the dispute test cards).
pub fn open(ctx: &mut Ctx, charge_id: &str, reason: &str) {
    let Some(before) = ctx.get("charge", charge_id) else {
        return;
    };
    let amount = before["amount"].as_i64().unwrap_or(0);
    let currency = before["currency"].as_str().unwrap_or("usd").to_string();
    let id = format!("dp_{}", crate::state::random_string(24));
    let txn = super::charges::balance_transaction(ctx, &id, -amount, &currency, "adjustment");
    let mut evidence = Map::new();
    for k in EVIDENCE {
        evidence.insert((*k).to_string(), Value::Null);
    }
    let dispute = json!({
        "id": id, "object": "dispute", "amount": amount, "balance_transactions": [ctx.get("balance_transaction", &txn)],
        "charge": charge_id, "created": ctx.now, "currency": currency,
        "enhanced_eligibility_types": [], "evidence": evidence,
        "evidence_details": {"due_by": ctx.now + 7 * 86_400, "enhanced_eligibility": {},
                             "has_evidence": false, "past_due": false, "submission_count": 0},
        "is_charge_refundable": false, "livemode": false, "metadata": empty_map(),
        "payment_intent": before["payment_intent"],
        "payment_method_details": {"card": {"brand": before["payment_method_details"]["card"]["brand"],
                                            "case_type": "chargeback", "network_reason_code": "10.4"},
                                   "type": "card"},
        "reason": reason, "status": "needs_response",
    });
    ctx.put("dispute", dispute.clone());
    // An early fraud warning stops being actionable once the charge is disputed.
    let warnings: Vec<Value> = ctx
        .acct()
        .collection("radar.early_fraud_warning")
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|w| w["charge"] == charge_id && w["actionable"] == true)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for w in warnings {
        let mut after = w.clone();
        after["actionable"] = json!(false);
        ctx.put("radar.early_fraud_warning", after.clone());
        ctx.emit(
            "radar.early_fraud_warning.updated",
            &after,
            Some(previous(&w, &after)),
        );
    }
    let mut ch = before.clone();
    ch["disputed"] = json!(true);
    ctx.put("charge", ch.clone());
    ctx.emit("charge.dispute.created", &dispute, None);
    ctx.emit("charge.dispute.funds_withdrawn", &dispute, None);
    ctx.emit("charge.updated", &ch, Some(previous(&before, &ch)));
}

/// The issuer reports a successful charge as fraudulent (the `createIssuerFraudRecord` card).
pub fn early_fraud_warning(ctx: &mut Ctx, charge_id: &str) {
    let Some(ch) = ctx.get("charge", charge_id) else {
        return;
    };
    let warning = json!({
        "id": format!("issfr_{}", crate::state::random_string(24)),
        "object": "radar.early_fraud_warning", "actionable": true, "charge": charge_id,
        "created": ctx.now, "fraud_type": "made_with_stolen_card", "livemode": false,
        "payment_intent": ch["payment_intent"],
    });
    ctx.put("radar.early_fraud_warning", warning.clone());
    ctx.emit("radar.early_fraud_warning.created", &warning, None);
}

pub fn retrieve_warning(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(
        ctx,
        "radar.early_fraud_warning",
        &ids[0],
        "radar.early_fraud_warning",
    )
}

pub fn list_warnings(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let charge = p.opt_str("charge")?;
    let pi = p.opt_str("payment_intent")?;
    super::list(
        ctx,
        p,
        "radar.early_fraud_warning",
        "/v1/radar/early_fraud_warnings",
        |w| {
            charge.as_deref().is_none_or(|c| w["charge"] == c)
                && pi.as_deref().is_none_or(|x| w["payment_intent"] == x)
        },
    )
}

fn open_statuses(status: &str) -> bool {
    matches!(status, "needs_response" | "warning_needs_response")
}

fn close_with(ctx: &mut Ctx, id: &str, status: &str) -> Result<Value> {
    let before = fetch(ctx, "dispute", id, "dispute")?;
    let mut d = before.clone();
    d["status"] = json!(status);
    if status == "won" {
        // The withdrawn amount comes back as a second balance transaction.
        let amount = d["amount"].as_i64().unwrap_or(0);
        let currency = d["currency"].as_str().unwrap_or("usd").to_string();
        let txn = super::charges::balance_transaction(ctx, id, amount, &currency, "adjustment");
        if let (Some(list), Some(t)) = (
            d["balance_transactions"].as_array_mut(),
            ctx.get("balance_transaction", &txn),
        ) {
            list.push(t);
        }
    }
    ctx.put("dispute", d.clone());
    let prev = previous(&before, &d);
    if status == "won" {
        ctx.emit("charge.dispute.funds_reinstated", &d, None);
    }
    ctx.emit("charge.dispute.closed", &d, Some(prev));
    Ok(d)
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "dispute", &ids[0], "dispute")?;
    let status = before["status"].as_str().unwrap_or_default().to_string();
    let mut d = before.clone();
    if let Some(mut ev) = p.sub("evidence")? {
        if !open_statuses(&status) {
            return Err(StripeError::invalid(format!(
                "This dispute is already {status} and its evidence can no longer be updated."
            )));
        }
        for k in EVIDENCE {
            if let Some(v) = ev.str(k)? {
                d["evidence"][*k] = if v.is_empty() { Value::Null } else { json!(v) };
            }
        }
        ev.finish()?;
    }
    merge_metadata(&mut d["metadata"], p.metadata("metadata")?);
    let submit = p.bool("submit")?.unwrap_or(true);
    p.finish()?;
    let has_evidence = d["evidence"]
        .as_object()
        .is_some_and(|e| e.values().any(|v| !v.is_null()));
    d["evidence_details"]["has_evidence"] = json!(has_evidence);
    if submit && open_statuses(&status) {
        d["status"] = json!("under_review");
        let n = d["evidence_details"]["submission_count"]
            .as_i64()
            .unwrap_or(0);
        d["evidence_details"]["submission_count"] = json!(n + 1);
        let text = d["evidence"]["uncategorized_text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let outcome = if text.contains("winning_evidence") {
            Some("won")
        } else if text.contains("losing_evidence") {
            Some("lost")
        } else {
            None
        };
        if let Some(outcome) = outcome {
            let id = ids[0].clone();
            ctx.later(DECIDE_AFTER, move |ctx| {
                let _ = close_with(ctx, &id, outcome);
            });
        }
    }
    ctx.put("dispute", d.clone());
    ctx.emit("charge.dispute.updated", &d, Some(previous(&before, &d)));
    Ok(d)
}

pub fn close(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let d = fetch(ctx, "dispute", &ids[0], "dispute")?;
    let status = d["status"].as_str().unwrap_or_default();
    if !open_statuses(status) && status != "under_review" {
        return Err(StripeError::invalid(format!(
            "This dispute is already closed (status {status})."
        )));
    }
    close_with(ctx, &ids[0], "lost")
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "dispute", &ids[0], "dispute")
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let charge = p.opt_str("charge")?;
    let pi = p.opt_str("payment_intent")?;
    super::list(ctx, p, "dispute", "/v1/disputes", |d| {
        charge.as_deref().is_none_or(|c| d["charge"] == c)
            && pi.as_deref().is_none_or(|x| d["payment_intent"] == x)
    })
}
