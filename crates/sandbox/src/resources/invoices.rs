//! Invoices (`/v1/invoices`), invoice items (`/v1/invoiceitems`) and invoice payments
//! (`/v1/invoice_payments`).
//!
//! An invoice is paid through a PaymentIntent made (and confirmed) by the payments code, so the
//! charge and intent events of an invoice payment are the ones any payment has. The link from an
//! intent back to its invoice lives in the hidden `_pi_invoice` collection; when an intent linked
//! to an open invoice succeeds (whoever confirmed it), [`observe`] marks the invoice paid.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    fetch, format_amount, no_params, payment_intents, previous, subscriptions, test_clocks,
};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map, list_object};

pub const KIND: &str = "invoice";
/// Hidden: intent id → `{id, invoice}`.
pub const PI_INVOICE: &str = "_pi_invoice";

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let inv = fetch(ctx, KIND, id, "invoice")?;
    if inv["deleted"] == true {
        return Err(StripeError::missing(KIND, id, "invoice"));
    }
    Ok(inv)
}

/// `days_until_due`: 0 to 3650 (ten years).
pub fn check_days_until_due(days: Option<i64>) -> Result<()> {
    match days {
        Some(d) if !(0..=3650).contains(&d) => Err(StripeError::invalid(
            "Invalid days_until_due: must be between 0 and 3650.",
        )
        .code("parameter_invalid_integer")
        .param("days_until_due")),
        _ => Ok(()),
    }
}

/// Invoice item amounts: at most 99,999,999 either way (Stripe's limit for an amount).
fn check_amount(v: Option<i64>, param: &str) -> Result<()> {
    match v {
        Some(a) if !(-99_999_999..=99_999_999).contains(&a) => Err(StripeError::invalid(format!(
            "Invalid {param}: must be between -99999999 and 99999999."
        ))
        .code("parameter_invalid_integer")
        .param(param)),
        _ => Ok(()),
    }
}

pub fn get_invoice(ctx: &mut Ctx, id: &str) -> Result<Value> {
    get(ctx, id)
}

/// Drops a draft nobody saw finished (an empty `invoice_now` invoice).
pub fn delete_draft(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let before = get(ctx, id)?;
    if before["status"] != "draft" {
        return Err(StripeError::invalid("Only drafts can be deleted."));
    }
    let tomb = json!({"id": id, "object": "invoice", "deleted": true});
    ctx.put(KIND, tomb.clone());
    ctx.emit("invoice.deleted", &before, None);
    Ok(tomb)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The subscription an invoice belongs to (current shape: `parent.subscription_details`).
pub fn subscription_of(inv: &Value) -> Option<&str> {
    inv["parent"]["subscription_details"]["subscription"].as_str()
}

/// A new draft invoice for `customer` (lines added by the caller, then [`recompute`]).
pub fn new_invoice(
    ctx: &mut Ctx,
    customer: &Value,
    subscription: Option<&Value>,
    billing_reason: &str,
    currency: &str,
) -> Value {
    let id = new_id("in");
    let parent = match subscription {
        Some(sub) => json!({
            "quote_details": null,
            "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]},
            "type": "subscription_details",
        }),
        None => Value::Null,
    };
    let collection = subscription
        .and_then(|s| s["collection_method"].as_str())
        .unwrap_or("charge_automatically");
    json!({
        "id": id, "object": "invoice", "account_country": "US", "account_name": "Tollgate Sandbox",
        "account_tax_ids": null, "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": 0, "amount_shipping": 0, "application": null, "attempt_count": 0,
        "attempted": false, "auto_advance": subscription.is_some(),
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null,
                           "provider": null, "status": null},
        "automatically_finalizes_at": null, "billing_reason": billing_reason,
        "collection_method": collection, "created": ctx.now, "currency": currency,
        "custom_fields": null, "customer": customer["id"], "customer_account": null,
        "customer_address": customer["address"], "customer_email": customer["email"],
        "customer_name": customer["name"], "customer_phone": customer["phone"],
        "customer_shipping": customer["shipping"], "customer_tax_exempt": "none",
        "customer_tax_ids": [], "default_payment_method": null, "default_source": null,
        "default_tax_rates": [], "description": null, "discounts": [], "due_date": null,
        "effective_at": null, "ending_balance": null, "footer": null, "from_invoice": null,
        "hosted_invoice_url": null, "invoice_pdf": null, "issuer": {"type": "self"},
        "last_finalization_error": null, "latest_revision": null,
        "lines": list_object(&format!("/v1/invoices/{id}/lines"), Vec::new(), false),
        "livemode": false, "metadata": empty_map(), "next_payment_attempt": null, "number": null,
        "on_behalf_of": null, "parent": parent,
        "payment_settings": {"default_mandate": null, "payment_method_options": null,
                              "payment_method_types": null},
        "period_end": ctx.now, "period_start": ctx.now, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": null, "rendering": null,
        "shipping_cost": null, "shipping_details": null, "starting_balance": 0,
        "statement_descriptor": null, "status": "draft",
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null,
                                "paid_at": null, "voided_at": null},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": customer["test_clock"],
        "total": 0, "total_discount_amounts": [], "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [], "total_taxes": [], "webhooks_delivered_at": null,
    })
}

/// Recomputes the totals of a draft from its lines.
pub fn recompute(inv: &mut Value) {
    let total: i64 = inv["lines"]["data"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x["amount"].as_i64())
                .fold(0i64, i64::saturating_add)
        })
        .unwrap_or(0);
    let due = total.max(0);
    for k in [
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
    ] {
        inv[k] = json!(total);
    }
    inv["amount_due"] = json!(due);
    inv["amount_remaining"] = json!(due - inv["amount_paid"].as_i64().unwrap_or(0));
}

fn product_name(ctx: &mut Ctx, product: &Value) -> String {
    product
        .as_str()
        .and_then(|p| ctx.get("product", p))
        .and_then(|p| p["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| "Item".into())
}

/// A subscription line (`parent.type = subscription_item_details`).
pub fn subscription_line(
    ctx: &mut Ctx,
    invoice: &str,
    sub: &Value,
    item: &Value,
    period: (i64, i64),
) -> Value {
    let price = &item["price"];
    let unit = price["unit_amount"].as_i64().unwrap_or(0);
    let (qty, period) = match price["recurring"]["meter"].as_str() {
        // Metered: billed in arrears, the usage of the period that just ended.
        Some(meter) => metered_usage(ctx, sub, meter, &price["recurring"], period),
        None => (item["quantity"].as_i64().unwrap_or(1), period),
    };
    let cur = s(&price["currency"]);
    let name = product_name(ctx, &price["product"]);
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month");
    let trial = sub["status"] == "trialing" && sub["trial_end"].as_i64() >= Some(period.1);
    let (amount, description) = if trial {
        (0, format!("Trial period for {name}"))
    } else {
        (
            unit.saturating_mul(qty),
            format!(
                "{qty} × {name} (at {} / {interval})",
                format_amount(unit, &cur)
            ),
        )
    };
    json!({
        "id": new_id("il"), "object": "line_item", "amount": amount, "currency": cur,
        "description": description, "discount_amounts": [], "discountable": true,
        "discounts": [], "invoice": invoice, "livemode": false, "metadata": sub["metadata"],
        "parent": {
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null, "proration": false,
                "proration_details": {"credited_items": null},
                "subscription": sub["id"], "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period.1, "start": period.0}, "pretax_credit_amounts": [],
        "pricing": {"price_details": {"price": price["id"], "product": price["product"]},
                    "type": "price_details", "unit_amount_decimal": unit.to_string()},
        "quantity": qty, "quantity_decimal": qty.to_string(), "subscription": sub["id"],
        "subtotal": amount, "taxes": [],
    })
}

/// The quantity and period of a metered line on an invoice for the period starting at
/// `period.0`: the meter's aggregate for the subscription's customer over the period before
/// (nothing on the first invoice, whose line covers the new period at quantity 0).
fn metered_usage(
    ctx: &mut Ctx,
    sub: &Value,
    meter: &str,
    recurring: &Value,
    period: (i64, i64),
) -> (i64, (i64, i64)) {
    let started = sub["start_date"].as_i64().unwrap_or(period.0);
    if period.0 <= started {
        return (0, period);
    }
    let interval = recurring["interval"].as_str().unwrap_or("month");
    let count = recurring["interval_count"].as_i64().unwrap_or(1).max(1);
    let from = test_clocks::add_interval(period.0, interval, count, -1).max(started);
    let customer = s(&sub["customer"]);
    let used = super::billing_meters::usage(ctx, meter, &customer, from, period.0);
    (used.round().max(0.0) as i64, (from, period.0))
}

/// An invoice-item line (`parent.type = invoice_item_details`).
fn item_line(invoice: &str, ii: &Value) -> Value {
    let sub = ii["parent"]["subscription_details"]["subscription"].clone();
    let pricing = match ii["pricing"]["price_details"]["price"].as_str() {
        Some(_) => ii["pricing"].clone(),
        None => json!({"price_details": null, "type": "price_details",
                       "unit_amount_decimal": ii["pricing"]["unit_amount_decimal"]}),
    };
    json!({
        "id": new_id("il"), "object": "line_item", "amount": ii["amount"],
        "currency": ii["currency"], "description": ii["description"], "discount_amounts": [],
        "discountable": ii["discountable"], "discounts": [], "invoice": invoice,
        "livemode": false, "metadata": ii["metadata"],
        "parent": {
            "invoice_item_details": {
                "invoice_item": ii["id"], "proration": ii["proration"],
                "proration_details": {"credited_items": null}, "subscription": sub,
            },
            "subscription_item_details": null,
            "type": "invoice_item_details",
        },
        "period": ii["period"], "pretax_credit_amounts": [], "pricing": pricing,
        "quantity": ii["quantity"], "quantity_decimal": ii["quantity_decimal"],
        "subscription": sub, "subtotal": ii["amount"], "taxes": [],
    })
}

fn push_line(inv: &mut Value, line: Value) {
    if let Some(arr) = inv["lines"]["data"].as_array_mut() {
        arr.push(line);
    }
}

/// Moves the customer's pending invoice items (of `subscription`, or all when `None`) onto
/// `inv`.
pub fn pull_pending(ctx: &mut Ctx, inv: &mut Value, subscription: Option<&str>) {
    let customer = s(&inv["customer"]);
    let inv_id = s(&inv["id"]);
    let pending: Vec<Value> = ctx
        .acct()
        .collection("invoiceitem")
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|ii| {
                    ii["customer"] == customer.as_str()
                        && ii["invoice"].is_null()
                        && ii["deleted"] != true
                        && subscription.is_none_or(|s| {
                            ii["parent"]["subscription_details"]["subscription"] == s
                                || ii["parent"].is_null()
                        })
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for mut ii in pending {
        ii["invoice"] = json!(inv_id);
        push_line(inv, item_line(&inv_id, &ii));
        ctx.put("invoiceitem", ii);
    }
}

fn next_number(ctx: &mut Ctx, customer: &str) -> Value {
    let Some(mut cus) = ctx.get("customer", customer) else {
        return Value::Null;
    };
    let seq = cus["next_invoice_sequence"].as_i64().unwrap_or(1);
    let prefix = cus["invoice_prefix"]
        .as_str()
        .unwrap_or("SANDBOX")
        .to_string();
    cus["next_invoice_sequence"] = json!(seq + 1);
    ctx.put("customer", cus);
    json!(format!("{prefix}-{seq:04}"))
}

/// Stores a new draft and emits `invoice.created`.
pub fn create_draft(ctx: &mut Ctx, inv: Value) -> Value {
    ctx.put(KIND, inv.clone());
    ctx.emit("invoice.created", &inv, None);
    inv
}

/// Draft → open (or straight to paid when nothing is due). Creates the invoice's PaymentIntent
/// for `charge_automatically` invoices.
pub fn finalize_now(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let before = get(ctx, id)?;
    if before["status"] != "draft" {
        return Err(StripeError::invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
        )
        .code("invoice_not_editable"));
    }
    let customer = s(&before["customer"]);
    let mut inv = before.clone();
    inv["status"] = json!("open");
    inv["number"] = next_number(ctx, &customer);
    inv["status_transitions"]["finalized_at"] = json!(ctx.now);
    inv["effective_at"] = json!(ctx.now);
    inv["ending_balance"] = json!(0);
    if let Some(cus) = ctx.get("customer", &customer) {
        for (k, f) in [
            ("customer_address", "address"),
            ("customer_email", "email"),
            ("customer_name", "name"),
            ("customer_phone", "phone"),
            ("customer_shipping", "shipping"),
        ] {
            inv[k] = cus[f].clone();
        }
    }
    inv["hosted_invoice_url"] = json!(format!("{}/_sandbox/invoices/{id}", ctx.public_url));

    if inv["collection_method"] == "send_invoice" && inv["due_date"].is_null() {
        inv["due_date"] = json!(ctx.now + 30 * 86_400);
    }
    let due = inv["amount_due"].as_i64().unwrap_or(0);
    if due > 0 && inv["collection_method"] == "charge_automatically" {
        let pi = create_intent(ctx, &inv)?;
        let pi_id = s(&pi["id"]);
        let payment = json!({
            "id": new_id("inpay"), "object": "invoice_payment", "amount_paid": null,
            "amount_requested": due, "created": ctx.now, "currency": inv["currency"],
            "invoice": id, "is_default": true, "livemode": false,
            "payment": {"payment_intent": pi_id, "type": "payment_intent"},
            "status": "open", "status_transitions": {"canceled_at": null, "paid_at": null},
        });
        ctx.put("invoice_payment", payment);
        ctx.put(PI_INVOICE, json!({"id": pi_id, "invoice": id}));
    }
    ctx.put(KIND, inv.clone());
    ctx.emit("invoice.finalized", &inv, Some(previous(&before, &inv)));
    if due == 0 {
        return mark_paid(ctx, id, None);
    }
    Ok(inv)
}

fn create_intent(ctx: &mut Ctx, inv: &Value) -> Result<Value> {
    let description = match inv["billing_reason"].as_str() {
        Some("subscription_create") => "Subscription creation",
        Some("subscription_cycle") => "Subscription cycle",
        Some("subscription_update") => "Subscription update",
        _ => "Invoice payment",
    };
    let mut m = Map::new();
    m.insert(
        "amount".into(),
        json!(inv["amount_due"].as_i64().unwrap_or(0).to_string()),
    );
    m.insert("currency".into(), inv["currency"].clone());
    m.insert("customer".into(), inv["customer"].clone());
    m.insert("description".into(), json!(description));
    m.insert("payment_method_types".into(), json!(["card"]));
    if subscription_of(inv).is_some() {
        m.insert("setup_future_usage".into(), json!("off_session"));
    }
    payment_intents::create(ctx, Params::new(m), &[])
}

/// The invoice's default invoice payment.
pub fn payment_of(ctx: &mut Ctx, invoice: &str) -> Option<Value> {
    let c = ctx.acct().collection("invoice_payment")?;
    c.ids
        .iter()
        .rev()
        .filter_map(|id| c.objects.get(id))
        .find(|p| p["invoice"] == invoice && p["is_default"] == true)
        .cloned()
}

/// Fields of an invoice present only when expanded: `payments` (its invoice payments) and
/// `confirmation_secret` (the client secret of its PaymentIntent, for confirming it client-side).
pub fn includable(ctx: &mut Ctx, invoice: &str, field: &str) -> Option<Value> {
    match field {
        "payments" => {
            let data: Vec<Value> = ctx
                .acct()
                .collection("invoice_payment")
                .map(|c| {
                    c.ids
                        .iter()
                        .rev()
                        .filter_map(|i| c.objects.get(i))
                        .filter(|p| p["invoice"] == invoice)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Some(list_object(
                &format!("/v1/invoice_payments?invoice={invoice}"),
                data,
                false,
            ))
        }
        "confirmation_secret" => {
            let secret = intent_of(ctx, invoice)
                .and_then(|pi| ctx.get("payment_intent", &pi))
                .map(|pi| pi["client_secret"].clone());
            Some(match secret {
                Some(s) => json!({"client_secret": s, "type": "payment_intent"}),
                None => Value::Null,
            })
        }
        _ => None,
    }
}

/// The PaymentIntent paying an invoice, if any.
pub fn intent_of(ctx: &mut Ctx, invoice: &str) -> Option<String> {
    payment_of(ctx, invoice)
        .and_then(|p| p["payment"]["payment_intent"].as_str().map(str::to_string))
}

/// The payment method an invoice is charged with: its own, its subscription's, its customer's.
fn payment_method_for(ctx: &mut Ctx, inv: &Value) -> Option<String> {
    if let Some(pm) = inv["default_payment_method"].as_str() {
        return Some(pm.to_string());
    }
    if let Some(sub) = subscription_of(inv).and_then(|s| ctx.get("subscription", s))
        && let Some(pm) = sub["default_payment_method"].as_str()
    {
        return Some(pm.to_string());
    }
    let cus = ctx.get("customer", inv["customer"].as_str().unwrap_or_default())?;
    cus["invoice_settings"]["default_payment_method"]
        .as_str()
        .map(str::to_string)
}

/// One payment attempt on an open invoice. `Ok` with the invoice (paid, or awaiting the
/// customer's authentication); a decline is recorded on the invoice and answered as the card
/// error.
pub fn attempt(ctx: &mut Ctx, id: &str, pm: Option<String>, off_session: bool) -> Result<Value> {
    let mut inv = get(ctx, id)?;
    if inv["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "Invoice is already {}",
            inv["status"].as_str().unwrap_or_default()
        ))
        .code("invoice_not_open"));
    }
    if inv["amount_remaining"].as_i64().unwrap_or(0) <= 0 {
        return mark_paid(ctx, id, None);
    }
    let pm = pm.or_else(|| payment_method_for(ctx, &inv));
    inv["attempt_count"] = json!(inv["attempt_count"].as_i64().unwrap_or(0) + 1);
    inv["attempted"] = json!(true);
    ctx.put(KIND, inv.clone());
    let Some(pm) = pm else {
        failed(ctx, id);
        return Err(StripeError::invalid(
            "This customer has no attached payment source or default payment method. Please consider adding a default payment method.",
        )
        .code("invoice_no_customer_payment_method"));
    };
    let Some(pi_id) = intent_of(ctx, id) else {
        return Err(StripeError::invalid(
            "This invoice has no payment to attempt.",
        ));
    };
    let mut m = Map::new();
    m.insert("payment_method".into(), json!(pm));
    if off_session {
        m.insert("off_session".into(), json!("true"));
    }
    match payment_intents::confirm(ctx, Params::new(m), &[pi_id]) {
        Ok(pi) if pi["status"] == "succeeded" => get(ctx, id),
        Ok(_) => {
            let inv = get(ctx, id)?;
            ctx.emit("invoice.payment_action_required", &inv, None);
            Ok(inv)
        }
        Err(e) if e.status == StatusCode::PAYMENT_REQUIRED => {
            failed(ctx, id);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Records a failed attempt: the next retry (if any), `invoice.payment_failed`, and the
/// subscription's reaction.
fn failed(ctx: &mut Ctx, id: &str) {
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    let mut inv = before.clone();
    let attempts = inv["attempt_count"].as_i64().unwrap_or(1).max(1) as usize;
    let settings = ctx.state.billing.clone();
    let retries = inv["auto_advance"] == true && subscription_of(&inv).is_some();
    inv["next_payment_attempt"] = match settings.retry_days.get(attempts - 1) {
        Some(days) if retries => json!(ctx.now + days * 86_400),
        _ => Value::Null,
    };
    ctx.put(KIND, inv.clone());
    ctx.emit("invoice.payment_failed", &inv, None);
    ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    subscriptions::on_invoice_failed(ctx, &inv);
}

/// Marks an open invoice paid (by its intent `pi`, or out of band / nothing due when `None`).
pub fn mark_paid(ctx: &mut Ctx, id: &str, out_of_band: Option<bool>) -> Result<Value> {
    let before = get(ctx, id)?;
    let mut inv = before.clone();
    let due = inv["amount_due"].as_i64().unwrap_or(0);
    inv["status"] = json!("paid");
    inv["amount_paid"] = json!(due);
    inv["amount_remaining"] = json!(0);
    inv["status_transitions"]["paid_at"] = json!(ctx.now);
    inv["next_payment_attempt"] = Value::Null;
    inv["auto_advance"] = json!(false);
    if out_of_band == Some(true) {
        // Old API versions show `paid_out_of_band`; the current shape has no such field.
        ctx.put("_invoice_oob", json!({"id": id}));
    }
    ctx.put(KIND, inv.clone());
    let payment = payment_of(ctx, id).filter(|p| p["status"] == "open");
    ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    ctx.emit("invoice.paid", &inv, None);
    ctx.emit("invoice.payment_succeeded", &inv, None);
    if let Some(mut p) = payment {
        p["status"] = json!("paid");
        p["amount_paid"] = json!(due);
        p["status_transitions"]["paid_at"] = json!(ctx.now);
        ctx.put("invoice_payment", p.clone());
        ctx.emit("invoice_payment.paid", &p, None);
    }
    subscriptions::on_invoice_paid(ctx, &inv);
    get(ctx, id)
}

/// Reacts to payment events (called for every emitted event): an intent linked to an open
/// invoice that succeeds pays it.
pub fn observe(ctx: &mut Ctx, kind: &str, object: &Value) {
    if kind != "payment_intent.succeeded" {
        return;
    }
    let Some(pi) = object["id"].as_str() else {
        return;
    };
    // Looked up without cloning anything: this runs for every payment, billing or not.
    let Some(link) = ctx
        .state
        .accounts
        .get(&ctx.account)
        .and_then(|a| a.get(PI_INVOICE, pi))
        .cloned()
    else {
        return;
    };
    let inv_id = s(&link["invoice"]);
    let Some(inv) = ctx.get(KIND, &inv_id) else {
        return;
    };
    if inv["status"] != "open" {
        return;
    }
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let _ = mark_paid(ctx, &inv_id, None);
    });
}

// ---- the API -------------------------------------------------------------------------------

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    let cus = fetch(ctx, "customer", &customer, "customer")?;
    if cus["deleted"] == true {
        return Err(StripeError::missing("customer", &customer, "customer"));
    }
    let sub = match p.opt_str("subscription")? {
        Some(sid) => Some(fetch(ctx, "subscription", &sid, "subscription")?),
        None => None,
    };
    let auto_advance = p.bool("auto_advance")?;
    let collection = p.enum_str(
        "collection_method",
        &["charge_automatically", "send_invoice"],
    )?;
    let days = p.int("days_until_due")?;
    let description = p.opt_str("description")?;
    let currency = p.opt_str("currency")?.map(|c| c.to_ascii_lowercase());
    let pending = p.enum_str("pending_invoice_items_behavior", &["exclude", "include"])?;
    let pm = p.opt_str("default_payment_method")?;
    let md = p.metadata("metadata")?;
    p.ignore(&[
        "account_tax_ids",
        "application_fee_amount",
        "automatic_tax",
        "custom_fields",
        "default_source",
        "default_tax_rates",
        "discounts",
        "due_date",
        "effective_at",
        "footer",
        "from_invoice",
        "issuer",
        "number",
        "on_behalf_of",
        "payment_settings",
        "rendering",
        "shipping_cost",
        "shipping_details",
        "statement_descriptor",
        "transfer_data",
    ]);
    p.finish()?;
    check_days_until_due(days)?;
    if collection.as_deref() == Some("send_invoice") && days.is_none() {
        return Err(StripeError::invalid(
            "Invoices with `send_invoice` collection method require `days_until_due` or `due_date`.",
        )
        .param("days_until_due"));
    }
    let cur = currency
        .or_else(|| cus["currency"].as_str().map(str::to_string))
        .unwrap_or_else(|| "usd".into());
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let mut inv = new_invoice(ctx, &cus, sub.as_ref(), "manual", &cur);
        inv["auto_advance"] = json!(auto_advance.unwrap_or(false));
        if let Some(c) = collection {
            inv["collection_method"] = json!(c);
        }
        if let Some(d) = days {
            inv["due_date"] = json!(ctx.now.saturating_add(d.saturating_mul(86_400)));
        }
        inv["description"] = json!(description);
        inv["default_payment_method"] = json!(pm);
        merge_metadata(&mut inv["metadata"], md);
        if pending.as_deref() == Some("include") {
            pull_pending(ctx, &mut inv, None);
        }
        recompute(&mut inv);
        Ok(create_draft(ctx, inv))
    })
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    get(ctx, &ids[0])
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = get(ctx, &ids[0])?;
    let mut inv = before.clone();
    for k in ["description", "footer", "statement_descriptor"] {
        if let Some(v) = p.str(k)? {
            inv[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if let Some(a) = p.bool("auto_advance")? {
        inv["auto_advance"] = json!(a);
    }
    if let Some(pm) = p.str("default_payment_method")? {
        inv["default_payment_method"] = if pm.is_empty() {
            Value::Null
        } else {
            json!(pm)
        };
    }
    merge_metadata(&mut inv["metadata"], p.metadata("metadata")?);
    p.ignore(&[
        "custom_fields",
        "rendering",
        "payment_settings",
        "default_source",
    ]);
    p.finish()?;
    ctx.put(KIND, inv.clone());
    ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    Ok(inv)
}

pub fn delete(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = get(ctx, &ids[0])?;
    if before["status"] != "draft" {
        return Err(StripeError::invalid(
            "You can only delete draft invoices. Finalized invoices can be voided instead.",
        )
        .code("invoice_not_editable"));
    }
    let tomb = json!({"id": ids[0], "object": "invoice", "deleted": true});
    ctx.put(KIND, tomb.clone());
    ctx.emit("invoice.deleted", &before, None);
    Ok(tomb)
}

pub fn finalize(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let auto = p.bool("auto_advance")?;
    p.finish()?;
    let inv = get(ctx, &ids[0])?;
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let out = finalize_now(ctx, &ids[0])?;
        if let Some(a) = auto {
            let mut inv = get(ctx, &ids[0])?;
            inv["auto_advance"] = json!(a);
            ctx.put(KIND, inv.clone());
            return Ok(inv);
        }
        Ok(out)
    })
}

pub fn pay(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let pm = p.opt_str("payment_method")?;
    let oob = p.bool("paid_out_of_band")?.unwrap_or(false);
    let off = p.bool("off_session")?.unwrap_or(true);
    p.ignore(&["forgive", "mandate", "source"]);
    p.finish()?;
    let inv = get(ctx, &ids[0])?;
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        if inv["status"] == "draft" {
            finalize_now(ctx, &ids[0])?;
        }
        let inv = get(ctx, &ids[0])?;
        match inv["status"].as_str() {
            Some("paid") => {
                return Err(
                    StripeError::invalid("Invoice is already paid").code("invoice_already_paid")
                );
            }
            Some("open") | Some("uncollectible") => {}
            _ => {
                return Err(StripeError::invalid(format!(
                    "You cannot pay an invoice with status {}.",
                    inv["status"].as_str().unwrap_or_default()
                ))
                .code("invoice_not_open"));
            }
        }
        if inv["status"] == "uncollectible" {
            let mut reopened = inv.clone();
            reopened["status"] = json!("open");
            ctx.put(KIND, reopened);
        }
        if oob {
            if let Some(pi) = intent_of(ctx, &ids[0]) {
                let _ = payment_intents::cancel_for(ctx, &pi, None, false);
            }
            return mark_paid(ctx, &ids[0], Some(true));
        }
        attempt(ctx, &ids[0], pm, off)
    })
}

pub fn void(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let inv = get(ctx, &ids[0])?;
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| void_now(ctx, &ids[0]))
}

pub fn void_now(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let before = get(ctx, id)?;
    if before["status"] != "open" && before["status"] != "uncollectible" {
        return Err(StripeError::invalid(format!(
            "You can only void invoices that are open or uncollectible; this one is {}.",
            before["status"].as_str().unwrap_or_default()
        ))
        .code("invoice_not_open"));
    }
    let mut inv = before.clone();
    inv["status"] = json!("void");
    inv["status_transitions"]["voided_at"] = json!(ctx.now);
    inv["next_payment_attempt"] = Value::Null;
    inv["auto_advance"] = json!(false);
    inv["amount_remaining"] = json!(0);
    ctx.put(KIND, inv.clone());
    if let Some(mut pay) = payment_of(ctx, id).filter(|p| p["status"] == "open") {
        if let Some(pi) = pay["payment"]["payment_intent"]
            .as_str()
            .map(str::to_string)
        {
            let _ = payment_intents::cancel_for(ctx, &pi, None, false);
        }
        pay["status"] = json!("canceled");
        pay["status_transitions"]["canceled_at"] = json!(ctx.now);
        ctx.put("invoice_payment", pay);
    }
    ctx.emit("invoice.voided", &inv, None);
    ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    Ok(inv)
}

pub fn mark_uncollectible(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let inv = get(ctx, &ids[0])?;
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| uncollectible_now(ctx, &ids[0]))
}

pub fn uncollectible_now(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let before = get(ctx, id)?;
    if before["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "You can only mark open invoices as uncollectible; this one is {}.",
            before["status"].as_str().unwrap_or_default()
        ))
        .code("invoice_not_open"));
    }
    let mut inv = before.clone();
    inv["status"] = json!("uncollectible");
    inv["status_transitions"]["marked_uncollectible_at"] = json!(ctx.now);
    inv["next_payment_attempt"] = Value::Null;
    ctx.put(KIND, inv.clone());
    ctx.emit("invoice.marked_uncollectible", &inv, None);
    ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    Ok(inv)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    let sub = p.opt_str("subscription")?;
    let status = p.enum_str(
        "status",
        &["draft", "open", "paid", "uncollectible", "void"],
    )?;
    let cm = p.enum_str(
        "collection_method",
        &["charge_automatically", "send_invoice"],
    )?;
    p.ignore(&["due_date", "customer_account"]);
    super::list(ctx, p, KIND, "/v1/invoices", |o| {
        customer.as_deref().is_none_or(|c| o["customer"] == c)
            && sub.as_deref().is_none_or(|x| subscription_of(o) == Some(x))
            && status.as_deref().is_none_or(|x| o["status"] == x)
            && cm.as_deref().is_none_or(|x| o["collection_method"] == x)
    })
}

pub fn lines(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let inv = get(ctx, &ids[0])?;
    let data = inv["lines"]["data"].as_array().cloned().unwrap_or_default();
    super::page_array(
        p,
        &data,
        &format!("/v1/invoices/{}/lines", ids[0]),
        "line_item",
    )
}

// ---- invoice items ----------------------------------------------------------------------------

pub fn create_item(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    let cus = fetch(ctx, "customer", &customer, "customer")?;
    if cus["deleted"] == true {
        return Err(StripeError::missing("customer", &customer, "customer"));
    }
    let price_id = match p.sub("pricing")? {
        Some(mut pr) => {
            let v = pr.opt_str("price")?;
            pr.finish()?;
            v
        }
        None => p.opt_str("price")?,
    };
    let quantity = p.int("quantity")?.unwrap_or(1);
    let amount = p.int("amount")?;
    let unit_amount = p.int("unit_amount")?;
    let currency = p.opt_str("currency")?.map(|c| c.to_ascii_lowercase());
    let description = p.opt_str("description")?;
    let invoice = p.opt_str("invoice")?;
    let sub = p.opt_str("subscription")?;
    let md = p.metadata("metadata")?;
    let discountable = p.bool("discountable")?.unwrap_or(true);
    p.ignore(&[
        "period",
        "tax_rates",
        "tax_behavior",
        "tax_code",
        "discounts",
        "price_data",
        "customer_account",
    ]);
    p.finish()?;
    if !(1..=1_000_000).contains(&quantity) {
        return Err(
            StripeError::invalid("Quantity must be between 1 and 1000000.").param("quantity"),
        );
    }
    check_amount(amount, "amount")?;
    check_amount(unit_amount, "unit_amount")?;
    let (amount, cur, unit, price) = match &price_id {
        Some(pid) => {
            let price = fetch(ctx, "price", pid, "price")?;
            let unit = price["unit_amount"].as_i64().unwrap_or(0);
            (
                unit.saturating_mul(quantity),
                s(&price["currency"]),
                unit,
                Some(price),
            )
        }
        None => {
            let cur = currency.ok_or_else(|| StripeError::missing_param("currency"))?;
            match (amount, unit_amount) {
                (Some(a), _) => (a, cur, a, None),
                (None, Some(u)) => (u.saturating_mul(quantity), cur, u, None),
                (None, None) => {
                    return Err(StripeError::invalid(
                        "You must specify either `price`, `amount` or `unit_amount`.",
                    )
                    .code("parameter_missing")
                    .param("amount"));
                }
            }
        }
    };
    let target = match &invoice {
        Some(iid) => {
            let inv = get(ctx, iid)?;
            if inv["status"] != "draft" {
                return Err(StripeError::invalid(
                    "You can only add invoice items to draft invoices.",
                )
                .code("invoice_not_editable")
                .param("invoice"));
            }
            Some(inv)
        }
        None => None,
    };
    let name = match &price {
        Some(pr) => product_name(ctx, &pr["product"]),
        None => "Invoice item".into(),
    };
    let now = test_clocks::now_for(ctx, &customer);
    let mut ii = json!({
        "id": new_id("ii"), "object": "invoiceitem", "amount": amount, "currency": cur,
        "customer": customer, "customer_account": null, "date": now,
        "description": description.unwrap_or(name), "discountable": discountable,
        "discounts": [], "invoice": invoice, "livemode": false, "metadata": empty_map(),
        "net_amount": amount,
        "parent": match &sub { Some(sid) => json!({"subscription_details": {"subscription": sid}, "type": "subscription_details"}), None => Value::Null },
        "period": {"end": now, "start": now},
        "pricing": {"price_details": price.as_ref().map(|pr| json!({"price": pr["id"], "product": pr["product"]})),
                    "type": "price_details", "unit_amount_decimal": unit.to_string()},
        "proration": false, "quantity": quantity, "quantity_decimal": quantity.to_string(),
        "tax_rates": [], "test_clock": cus["test_clock"],
    });
    merge_metadata(&mut ii["metadata"], md);
    ctx.put("invoiceitem", ii.clone());
    ctx.emit("invoiceitem.created", &ii, None);
    if let Some(before) = target {
        let mut inv = before.clone();
        let iid = s(&inv["id"]);
        push_line(&mut inv, item_line(&iid, &ii));
        recompute(&mut inv);
        ctx.put(KIND, inv.clone());
        ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
    }
    Ok(ii)
}

/// A pending proration item for a subscription (picked up by its next invoice).
pub fn proration_item(
    ctx: &mut Ctx,
    sub: &Value,
    item: &Value,
    amount: i64,
    description: String,
    period: (i64, i64),
) -> Value {
    let price = &item["price"];
    let customer = s(&sub["customer"]);
    let tc = ctx
        .get("customer", &customer)
        .map(|c| c["test_clock"].clone())
        .unwrap_or(Value::Null);
    let ii = json!({
        "id": new_id("ii"), "object": "invoiceitem", "amount": amount,
        "currency": price["currency"], "customer": customer, "customer_account": null,
        "date": ctx.now, "description": description, "discountable": false, "discounts": [],
        "invoice": null, "livemode": false, "metadata": empty_map(), "net_amount": amount,
        "parent": {"subscription_details": {"subscription": sub["id"], "subscription_item": item["id"]},
                   "type": "subscription_details"},
        "period": {"end": period.1, "start": period.0},
        "pricing": {"price_details": {"price": price["id"], "product": price["product"]},
                    "type": "price_details", "unit_amount_decimal": price["unit_amount"].as_i64().unwrap_or(0).to_string()},
        "proration": true, "quantity": item["quantity"], "quantity_decimal": item["quantity"].as_i64().unwrap_or(1).to_string(),
        "tax_rates": [], "test_clock": tc,
    });
    ctx.put("invoiceitem", ii.clone());
    ctx.emit("invoiceitem.created", &ii, None);
    ii
}

pub fn retrieve_item(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "invoiceitem", &ids[0], "invoiceitem")
}

pub fn list_items(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    let invoice = p.opt_str("invoice")?;
    let pending = p.bool("pending")?;
    super::list(ctx, p, "invoiceitem", "/v1/invoiceitems", |o| {
        customer.as_deref().is_none_or(|c| o["customer"] == c)
            && invoice.as_deref().is_none_or(|c| o["invoice"] == c)
            && pending.is_none_or(|pd| o["invoice"].is_null() == pd)
    })
}

// ---- invoice payments -------------------------------------------------------------------------

pub fn retrieve_payment(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "invoice_payment", &ids[0], "invoice_payment")
}

pub fn list_payments(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let invoice = p.opt_str("invoice")?;
    let status = p.enum_str("status", &["canceled", "open", "paid"])?;
    let mut pi = None;
    if let Some(mut pay) = p.sub("payment")? {
        pi = pay.opt_str("payment_intent")?;
        pay.ignore(&["type", "payment_record"]);
        pay.finish()?;
    }
    super::list(ctx, p, "invoice_payment", "/v1/invoice_payments", |o| {
        invoice.as_deref().is_none_or(|c| o["invoice"] == c)
            && status.as_deref().is_none_or(|c| o["status"] == c)
            && pi
                .as_deref()
                .is_none_or(|c| o["payment"]["payment_intent"] == c)
    })
}
