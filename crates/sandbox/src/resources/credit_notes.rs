//! Credit notes (`/v1/credit_notes`): against an open invoice they lower what is due
//! (`pre_payment`); against a paid one (`post_payment`) they refund (`refund_amount`, a refund
//! on the invoice's charge), credit the customer's balance (`credit_amount`) or record money
//! returned outside Stripe (`out_of_band_amount`).

use serde_json::{Map, Value, json};

use super::{fetch, format_amount, invoices, no_params, previous, refunds, test_clocks};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map, list_object};

pub const KIND: &str = "credit_note";

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    fetch(ctx, KIND, id, "id")
}

fn cn_line(
    kind: &str,
    amount: i64,
    description: Value,
    il: Option<&Value>,
    qty: i64,
    unit: Option<i64>,
) -> Value {
    let mut line = json!({
        "id": new_id("cnli"), "object": "credit_note_line_item", "amount": amount,
        "description": description, "discount_amount": 0, "discount_amounts": [],
        "invoice_line_item": il.map(|l| l["id"].clone()), "livemode": false,
        "metadata": empty_map(), "pretax_credit_amounts": [], "quantity": qty, "tax_rates": [],
        "taxes": [], "type": kind, "unit_amount": unit,
        "unit_amount_decimal": unit.map(|u| u.to_string()),
    });
    // Custom lines have no invoice line to point at (Stripe omits the field).
    if il.is_none()
        && let Some(m) = line.as_object_mut()
    {
        m.remove("invoice_line_item");
    }
    line
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let inv_id = p.req_str("invoice")?;
    let amount = p.int("amount")?;
    let line_params = p.sub_list("lines")?;
    let refund_amount = p.int("refund_amount")?;
    let credit_amount = p.int("credit_amount")?;
    let oob = p.int("out_of_band_amount")?;
    let reason = p.enum_str(
        "reason",
        &[
            "duplicate",
            "fraudulent",
            "order_change",
            "product_unsatisfactory",
        ],
    )?;
    let memo = p.opt_str("memo")?;
    let md = p.metadata("metadata")?;
    p.ignore(&["effective_at", "email_type", "shipping_cost", "refunds"]);
    p.finish()?;
    let inv = invoices::get_invoice(ctx, &inv_id)
        .map_err(|_| StripeError::missing("invoice", &inv_id, "invoice"))?;
    let status = s(&inv["status"]);
    if status != "open" && status != "paid" {
        return Err(StripeError::invalid(format!(
            "You can only create credit notes for open or paid invoices; this invoice is {status}."
        ))
        .param("invoice"));
    }
    let cur = s(&inv["currency"]);
    let inv_lines = inv["lines"]["data"].as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    if let Some(list) = line_params {
        for (i, mut lp) in list.into_iter().enumerate() {
            let kind = lp
                .enum_str("type", &["custom_line_item", "invoice_line_item"])?
                .ok_or_else(|| StripeError::missing_param(&format!("lines[{i}][type]")))?;
            let qty = lp.int("quantity")?;
            let amt = lp.int("amount")?;
            let unit = lp.int("unit_amount")?;
            let desc = lp.opt_str("description")?;
            let il_id = lp.opt_str("invoice_line_item")?;
            lp.ignore(&[
                "tax_rates",
                "tax_amounts",
                "unit_amount_decimal",
                "metadata",
            ]);
            lp.finish()?;
            if kind == "invoice_line_item" {
                let il_id = il_id.ok_or_else(|| {
                    StripeError::missing_param(&format!("lines[{i}][invoice_line_item]"))
                })?;
                let il = inv_lines
                    .iter()
                    .find(|l| l["id"] == il_id.as_str())
                    .ok_or_else(|| {
                        StripeError::missing(
                            "line_item",
                            &il_id,
                            &format!("lines[{i}][invoice_line_item]"),
                        )
                    })?;
                let line_qty = il["quantity"].as_i64().unwrap_or(1).max(1);
                let q = qty.unwrap_or(line_qty);
                let a = amt.unwrap_or_else(|| {
                    il["amount"].as_i64().unwrap_or(0).saturating_mul(q) / line_qty
                });
                lines.push(cn_line(
                    &kind,
                    a,
                    il["description"].clone(),
                    Some(il),
                    q,
                    None,
                ));
            } else {
                let u = unit.ok_or_else(|| {
                    StripeError::missing_param(&format!("lines[{i}][unit_amount]"))
                })?;
                let q = qty.unwrap_or(1);
                lines.push(cn_line(
                    &kind,
                    u.saturating_mul(q),
                    json!(desc),
                    None,
                    q,
                    Some(u),
                ));
            }
        }
    }
    let total = match (amount, lines.is_empty()) {
        (Some(a), true) => {
            lines.push(cn_line(
                "custom_line_item",
                a,
                json!("Credit"),
                None,
                1,
                Some(a),
            ));
            a
        }
        (a, false) => {
            let sum: i64 = lines
                .iter()
                .filter_map(|l| l["amount"].as_i64())
                .fold(0i64, i64::saturating_add);
            if let Some(a) = a
                && a != sum
            {
                return Err(StripeError::invalid(format!(
                    "The amount ({}) must equal the sum of the line amounts ({}).",
                    format_amount(a, &cur),
                    format_amount(sum, &cur)
                ))
                .param("amount"));
            }
            sum
        }
        (None, true) => {
            return Err(StripeError::invalid(
                "You must pass either `amount` or `lines` to create a credit note.",
            )
            .code("parameter_missing")
            .param("amount"));
        }
    };
    if total <= 0 {
        return Err(
            StripeError::invalid("The credit note amount must be greater than zero.")
                .param("amount"),
        );
    }
    let credited = inv["pre_payment_credit_notes_amount"].as_i64().unwrap_or(0)
        + inv["post_payment_credit_notes_amount"]
            .as_i64()
            .unwrap_or(0);
    let creditable = inv["total"].as_i64().unwrap_or(0) - credited;
    if total > creditable {
        return Err(StripeError::invalid(format!(
            "The credit note amount ({}) exceeds the amount remaining that can be credited on the invoice ({}).",
            format_amount(total, &cur),
            format_amount(creditable.max(0), &cur)
        ))
        .param("amount"));
    }
    let post = status == "paid";
    let (refund_amt, credit_amt, oob_amt) = if post {
        match (refund_amount, credit_amount, oob) {
            (None, None, None) => (0, total, 0),
            (r, c, o) => (r.unwrap_or(0), c.unwrap_or(0), o.unwrap_or(0)),
        }
    } else {
        (0, 0, 0)
    };
    let parts = refund_amt
        .saturating_add(credit_amt)
        .saturating_add(oob_amt);
    if post && (parts != total || refund_amt < 0 || credit_amt < 0 || oob_amt < 0) {
        return Err(StripeError::invalid(format!(
            "The sum of credit amount, refund amount and out of band amount ({}) must equal the credit note amount ({}).",
            format_amount(parts, &cur),
            format_amount(total, &cur)
        )));
    }
    if !post && (refund_amount.is_some_and(|r| r > 0) || credit_amount.is_some_and(|c| c > 0)) {
        return Err(StripeError::invalid(
            "You can only refund or credit a credit note on a paid invoice.",
        )
        .param("refund_amount"));
    }
    let customer = s(&inv["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let mut refund_list = Vec::new();
        if refund_amt > 0 {
            let charge = invoices::intent_of(ctx, &inv_id)
                .and_then(|pi| ctx.get("payment_intent", &pi))
                .and_then(|pi| pi["latest_charge"].as_str().map(str::to_string))
                .ok_or_else(|| {
                    StripeError::invalid(
                        "This invoice was not paid with a charge, so it cannot be refunded.",
                    )
                    .param("refund_amount")
                })?;
            let mut m = Map::new();
            m.insert("charge".into(), json!(charge));
            m.insert("amount".into(), json!(refund_amt.to_string()));
            let refund = refunds::create(ctx, Params::new(m), &[])?;
            refund_list.push(
                json!({"amount_refunded": refund_amt, "payment_record_refund": null,
                                     "refund": refund["id"], "type": "refund"}),
            );
        }
        if credit_amt > 0
            && let Some(before) = ctx.get("customer", &customer)
        {
            let mut cus = before.clone();
            cus["balance"] = json!(cus["balance"].as_i64().unwrap_or(0) - credit_amt);
            ctx.put("customer", cus.clone());
            ctx.emit("customer.updated", &cus, Some(previous(&before, &cus)));
        }
        let id = new_id("cn");
        let count = ctx
            .acct()
            .collection(KIND)
            .map(|c| {
                c.objects
                    .values()
                    .filter(|n| n["invoice"] == inv_id.as_str())
                    .count()
            })
            .unwrap_or(0);
        let number = match inv["number"].as_str() {
            Some(n) => format!("{n}-CN-{:02}", count + 1),
            None => format!("CN-{:02}", count + 1),
        };
        let mut cn = json!({
            "id": id, "object": "credit_note", "amount": total, "amount_shipping": 0,
            "created": ctx.now, "currency": cur, "customer": customer, "customer_account": null,
            "customer_balance_transaction": null, "discount_amount": 0, "discount_amounts": [],
            "effective_at": ctx.now, "invoice": inv_id,
            "lines": list_object(&format!("/v1/credit_notes/{id}/lines"), lines, false),
            "livemode": false, "memo": memo, "metadata": empty_map(), "number": number,
            "out_of_band_amount": if oob_amt > 0 { json!(oob_amt) } else { Value::Null },
            "pdf": format!("{}/_sandbox/credit_notes/{id}/pdf", ctx.public_url),
            "post_payment_amount": if post { total } else { 0 },
            "pre_payment_amount": if post { 0 } else { total },
            "pretax_credit_amounts": [], "reason": reason, "refunds": refund_list,
            "shipping_cost": null, "status": "issued", "subtotal": total,
            "subtotal_excluding_tax": total, "total": total, "total_excluding_tax": total,
            "total_taxes": [], "type": if post { "post_payment" } else { "pre_payment" },
            "voided_at": null,
        });
        merge_metadata(&mut cn["metadata"], md);
        ctx.put(KIND, cn.clone());
        ctx.emit("credit_note.created", &cn, None);
        let before = invoices::get_invoice(ctx, &inv_id)?;
        let mut after = before.clone();
        if post {
            after["post_payment_credit_notes_amount"] = json!(
                before["post_payment_credit_notes_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    + total
            );
        } else {
            after["pre_payment_credit_notes_amount"] = json!(
                before["pre_payment_credit_notes_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    + total
            );
            let due = before["amount_due"].as_i64().unwrap_or(0) - total;
            after["amount_due"] = json!(due.max(0));
            after["amount_remaining"] =
                json!((before["amount_remaining"].as_i64().unwrap_or(0) - total).max(0));
        }
        ctx.put(invoices::KIND, after.clone());
        ctx.emit("invoice.updated", &after, Some(previous(&before, &after)));
        if !post && after["amount_remaining"].as_i64() == Some(0) {
            invoices::mark_paid(ctx, &inv_id, None)?;
        }
        Ok(cn)
    })
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    get(ctx, &ids[0])
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = get(ctx, &ids[0])?;
    let mut cn = before.clone();
    if let Some(m) = p.str("memo")? {
        cn["memo"] = if m.is_empty() { Value::Null } else { json!(m) };
    }
    merge_metadata(&mut cn["metadata"], p.metadata("metadata")?);
    p.finish()?;
    ctx.put(KIND, cn.clone());
    ctx.emit("credit_note.updated", &cn, Some(previous(&before, &cn)));
    Ok(cn)
}

pub fn void(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = get(ctx, &ids[0])?;
    if before["status"] == "void" {
        return Err(StripeError::invalid(
            "This credit note has already been voided.",
        ));
    }
    if before["refunds"].as_array().is_some_and(|r| !r.is_empty()) {
        return Err(StripeError::invalid(
            "This credit note cannot be voided because it has refunds.",
        ));
    }
    let customer = s(&before["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let mut cn = before.clone();
        cn["status"] = json!("void");
        cn["voided_at"] = json!(ctx.now);
        ctx.put(KIND, cn.clone());
        let total = cn["amount"].as_i64().unwrap_or(0);
        let inv_id = s(&cn["invoice"]);
        if let Ok(ib) = invoices::get_invoice(ctx, &inv_id) {
            let mut ia = ib.clone();
            if cn["type"] == "pre_payment" {
                ia["pre_payment_credit_notes_amount"] =
                    json!(ib["pre_payment_credit_notes_amount"].as_i64().unwrap_or(0) - total);
                if ib["status"] == "open" {
                    ia["amount_due"] = json!(ib["amount_due"].as_i64().unwrap_or(0) + total);
                    ia["amount_remaining"] =
                        json!(ib["amount_remaining"].as_i64().unwrap_or(0) + total);
                }
            } else {
                ia["post_payment_credit_notes_amount"] =
                    json!(ib["post_payment_credit_notes_amount"].as_i64().unwrap_or(0) - total);
            }
            ctx.put(invoices::KIND, ia.clone());
            ctx.emit("invoice.updated", &ia, Some(previous(&ib, &ia)));
        }
        ctx.emit("credit_note.voided", &cn, None);
        Ok(cn)
    })
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let invoice = p.opt_str("invoice")?;
    let customer = p.opt_str("customer")?;
    p.ignore(&["customer_account"]);
    super::list(ctx, p, KIND, "/v1/credit_notes", |o| {
        invoice.as_deref().is_none_or(|c| o["invoice"] == c)
            && customer.as_deref().is_none_or(|c| o["customer"] == c)
    })
}

pub fn lines(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let cn = get(ctx, &ids[0])?;
    let data = cn["lines"]["data"].as_array().cloned().unwrap_or_default();
    super::page_array(
        p,
        &data,
        &format!("/v1/credit_notes/{}/lines", ids[0]),
        "credit_note_line_item",
    )
}
