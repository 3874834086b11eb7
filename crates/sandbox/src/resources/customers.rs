//! Customers.

use serde_json::{Value, json};

use super::{fetch, no_params, previous};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, empty_map};

pub fn address(p: &mut Params, key: &str) -> Result<Option<Value>> {
    let Some(mut a) = p.sub(key)? else {
        return Ok(None);
    };
    let mut out = json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null});
    for k in ["city", "country", "line1", "line2", "postal_code", "state"] {
        if let Some(v) = a.opt_str(k)? {
            out[k] = json!(v);
        }
    }
    a.finish()?;
    Ok(Some(out))
}

/// Fields shared by create and update.
fn apply(ctx: &mut Ctx, obj: &mut Value, mut p: Params) -> Result<()> {
    for k in ["email", "name", "phone", "description"] {
        if let Some(v) = p.str(k)? {
            obj[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if let Some(a) = address(&mut p, "address")? {
        obj["address"] = a;
    }
    merge_metadata(&mut obj["metadata"], p.metadata("metadata")?);
    let mut default_pm = None;
    if let Some(mut inv) = p.sub("invoice_settings")? {
        if let Some(pm) = inv.str("default_payment_method")? {
            if pm.is_empty() {
                obj["invoice_settings"]["default_payment_method"] = Value::Null;
            } else if crate::cards::by_shortcut(&pm).is_none() {
                fetch(
                    ctx,
                    "payment_method",
                    &pm,
                    "invoice_settings[default_payment_method]",
                )?;
                obj["invoice_settings"]["default_payment_method"] = json!(pm);
            } else {
                // A test shortcut (`pm_card_visa`): made and attached below, as on Stripe.
                default_pm = Some(pm);
            }
        }
        inv.ignore(&["custom_fields", "footer", "rendering_options"]);
        inv.finish()?;
    }
    if let Some(locales) = p.str_list("preferred_locales")? {
        obj["preferred_locales"] = json!(locales);
    }
    let pm = p.opt_str("payment_method")?;
    p.ignore(&[
        "shipping",
        "tax_exempt",
        "tax",
        "tax_id_data",
        "source",
        "coupon",
        "promotion_code",
        "invoice_prefix",
        "next_invoice_sequence",
        "balance",
        "cash_balance",
    ]);
    p.finish()?;
    // Last, so that nothing is attached when another parameter is wrong.
    let cus = obj["id"].as_str().unwrap_or_default().to_string();
    let mut attached = None;
    if let Some(pm) = &pm {
        attached = Some(super::payment_methods::attach_to(ctx, pm, &cus)?);
    }
    if let Some(d) = default_pm {
        let made = match (&pm, attached) {
            (Some(given), Some(a)) if *given == d => a,
            _ => super::payment_methods::attach_to(ctx, &d, &cus)?,
        };
        obj["invoice_settings"]["default_payment_method"] = made["id"].clone();
    }
    Ok(())
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let id = new_id("cus").chars().take(18).collect::<String>();
    let clock = p.opt_str("test_clock")?;
    if let Some(c) = &clock {
        fetch(ctx, "test_helpers.test_clock", c, "test_clock")?;
    }
    let mut obj = json!({
        "id": id, "object": "customer",
        "address": null, "balance": 0, "created": ctx.now, "currency": null,
        "default_source": null, "delinquent": false, "description": null, "discount": null,
        "email": null, "invoice_prefix": random_string(8).to_uppercase(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null,
                              "rendering_options": null},
        "livemode": false, "metadata": empty_map(), "name": null, "next_invoice_sequence": 1,
        "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": clock,
    });
    apply(ctx, &mut obj, p)?;
    ctx.put("customer", obj.clone());
    ctx.emit("customer.created", &obj, None);
    Ok(obj)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "customer", &ids[0], "id")
}

pub fn update(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "customer", &ids[0], "id")?;
    if before["deleted"] == true {
        return Err(StripeError::missing("customer", &ids[0], "id"));
    }
    let mut obj = before.clone();
    apply(ctx, &mut obj, p)?;
    ctx.put("customer", obj.clone());
    ctx.emit("customer.updated", &obj, Some(previous(&before, &obj)));
    Ok(obj)
}

pub fn delete(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = fetch(ctx, "customer", &ids[0], "id")?;
    if before["deleted"] == true {
        return Err(StripeError::missing("customer", &ids[0], "id"));
    }
    // Deleting a customer ends its subscriptions, as on Stripe.
    super::subscriptions::end_all_for_customer(ctx, &ids[0]);
    let tomb = json!({"id": ids[0], "object": "customer", "deleted": true});
    ctx.put("customer", tomb.clone());
    ctx.emit("customer.deleted", &before, None);
    Ok(tomb)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let email = p.opt_str("email")?;
    let clock = p.opt_str("test_clock")?;
    super::list(ctx, p, "customer", "/v1/customers", |c| {
        email.as_deref().is_none_or(|e| c["email"] == e)
            && clock.as_deref().is_none_or(|t| c["test_clock"] == t)
    })
}
