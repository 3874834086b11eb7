//! Payment methods: test cards (numbers, `pm_card_*`, `tok_*`) and `customer_balance`.
//!
//! Which test card stands behind a `pm_…` is sandbox-internal knowledge, kept in the hidden
//! `_card` collection (never listed or returned), so that the object itself is exactly Stripe's.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::customers::address;
use super::previous;
use super::{fetch, no_params};
use crate::cards::{self, Behaviour, TestCard};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map};

fn billing_details(p: &mut Params) -> Result<Value> {
    let mut out = json!({"address": {"city": null, "country": null, "line1": null, "line2": null,
                          "postal_code": null, "state": null},
                         "email": null, "name": null, "phone": null, "tax_id": null});
    if let Some(mut b) = p.sub("billing_details")? {
        for k in ["email", "name", "phone"] {
            if let Some(v) = b.opt_str(k)? {
                out[k] = json!(v);
            }
        }
        if let Some(a) = address(&mut b, "address")? {
            out["address"] = a;
        }
        b.ignore(&["tax_id"]);
        b.finish()?;
    }
    Ok(out)
}

fn card_object(card: &TestCard, number: &str, exp_month: i64, exp_year: i64) -> Value {
    let last4: String = number
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let fingerprint: String = hex::encode(Sha256::digest(number.as_bytes()))
        .chars()
        .take(16)
        .collect();
    json!({
        "brand": card.brand,
        "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "unchecked"},
        "country": card.country, "display_brand": card.brand, "exp_month": exp_month,
        "exp_year": exp_year, "fingerprint": fingerprint, "funding": card.funding,
        "generated_from": null, "last4": last4,
        "networks": {"available": [card.brand], "preferred": null},
        "regulated_status": "unregulated",
        "three_d_secure_usage": {"supported": true}, "wallet": null,
    })
}

fn new_pm(ctx: &mut Ctx, kind: &str, details: Value, billing: Value, metadata: Value) -> Value {
    let mut pm = json!({
        "id": new_id("pm"), "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": billing, "created": ctx.now, "customer": null,
        "customer_account": null, "livemode": false, "metadata": metadata, "type": kind,
    });
    pm[kind] = details;
    pm
}

fn store_card(ctx: &mut Ctx, pm: &Value, number: &str) {
    ctx.put("_card", json!({"id": pm["id"], "number": number}));
}

/// Creates a card payment method for a test card.
fn card_pm(
    ctx: &mut Ctx,
    card: TestCard,
    number: &str,
    exp: (i64, i64),
    billing: Value,
    md: Value,
) -> Value {
    let pm = new_pm(
        ctx,
        "card",
        card_object(&card, number, exp.0, exp.1),
        billing,
        md,
    );
    store_card(ctx, &pm, number);
    ctx.put("payment_method", pm.clone());
    pm
}

/// Reads `card[…]` (number + expiry + cvc, or a `tok_*` token).
fn card_params(p: &mut Params, prefix: &str) -> Result<(TestCard, String, (i64, i64))> {
    let Some(mut c) = p.sub("card")? else {
        return Err(StripeError::missing_param(&format!("{prefix}card")));
    };
    if let Some(token) = c.opt_str("token")? {
        c.finish()?;
        let card = cards::by_shortcut(&token).ok_or_else(|| {
            StripeError::missing("token", &token, &format!("{prefix}card[token]"))
        })?;
        return Ok((card, card.number.to_string(), (12, 2034)));
    }
    let number = c.req_str("number")?;
    let exp_month = c.req_int("exp_month")?;
    let exp_year = c.req_int("exp_year")?;
    c.ignore(&["cvc", "networks"]);
    c.finish()?;
    let digits: String = number.chars().filter(|ch| !ch.is_whitespace()).collect();
    let card = cards::by_number(&digits).ok_or_else(|| {
        StripeError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "Your card number is incorrect.",
        )
        .code("incorrect_number")
        .param(&format!("{prefix}card[number]"))
    })?;
    if !(1..=12).contains(&exp_month) {
        return Err(StripeError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "Your card's expiration month is invalid.",
        )
        .code("invalid_expiry_month")
        .param(&format!("{prefix}card[exp_month]")));
    }
    let year = if exp_year < 100 {
        2000 + exp_year
    } else {
        exp_year
    };
    if !(2000..=2100).contains(&year) {
        return Err(StripeError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "Your card's expiration year is invalid.",
        )
        .code("invalid_expiry_year")
        .param(&format!("{prefix}card[exp_year]")));
    }
    Ok((card, digits, (exp_month, year)))
}

/// `payment_method_data[…]` on an intent, or the body of `POST /v1/payment_methods`.
pub fn from_params(ctx: &mut Ctx, p: &mut Params, prefix: &str) -> Result<Value> {
    let kind = p
        .enum_str(
            "type",
            &["card", "customer_balance", "us_bank_account", "sepa_debit"],
        )?
        .ok_or_else(|| StripeError::missing_param(&format!("{prefix}type")))?;
    let billing = billing_details(p)?;
    let mut md = empty_map();
    merge_metadata(&mut md, p.metadata("metadata")?);
    p.ignore(&["allow_redisplay"]);
    match kind.as_str() {
        "card" => {
            let (card, number, exp) = card_params(p, prefix)?;
            Ok(card_pm(ctx, card, &number, exp, billing, md))
        }
        "customer_balance" => {
            let pm = new_pm(ctx, "customer_balance", json!({}), billing, md);
            ctx.put("payment_method", pm.clone());
            Ok(pm)
        }
        other => Err(StripeError::invalid(format!(
            "The payment method type `{other}` is not supported by the sandbox; use card or customer_balance."
        ))
        .param(&format!("{prefix}type"))),
    }
}

/// A payment method by id, turning `pm_card_*` shortcuts into a fresh object as Stripe does.
pub fn resolve(ctx: &mut Ctx, id: &str, param: &str) -> Result<Value> {
    if let Some(card) = cards::by_shortcut(id) {
        let billing = json!({"address": {"city": null, "country": null, "line1": null, "line2": null,
                             "postal_code": null, "state": null},
                             "email": null, "name": null, "phone": null, "tax_id": null});
        return Ok(card_pm(
            ctx,
            card,
            card.number,
            (12, 2034),
            billing,
            empty_map(),
        ));
    }
    ctx.get("payment_method", id)
        .ok_or_else(|| StripeError::missing("payment_method", id, param))
}

/// The test card behind a payment method (`None` for non-card methods).
pub fn behaviour(ctx: &mut Ctx, pm_id: &str) -> Option<Behaviour> {
    let number = ctx.get("_card", pm_id)?["number"].as_str()?.to_string();
    cards::by_number(&number).map(|c| c.behaviour)
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    if let Some(existing) = p.opt_str("payment_method")? {
        // Cloning a platform payment method onto a connected account.
        let _customer = p.opt_str("customer")?;
        p.finish()?;
        return resolve(ctx, &existing, "payment_method");
    }
    let pm = from_params(ctx, &mut p, "")?;
    p.finish()?;
    Ok(pm)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    resolve(ctx, &ids[0], "payment_method")
}

/// Attaches `pm` to `customer` (validating both); the 0341 card attaches fine.
pub fn attach_to(ctx: &mut Ctx, pm: &str, customer: &str) -> Result<Value> {
    let mut obj = resolve(ctx, pm, "payment_method")?;
    let before = obj.clone();
    if !obj["customer"].is_null() && obj["customer"] != customer {
        return Err(StripeError::invalid(
            "The payment method you provided has already been attached to a customer.",
        )
        .code("payment_method_unexpected_state"));
    }
    obj["customer"] = json!(customer);
    ctx.put("payment_method", obj.clone());
    if before["customer"].is_null() {
        ctx.emit(
            "payment_method.attached",
            &obj,
            Some(previous(&before, &obj)),
        );
    }
    Ok(obj)
}

pub fn attach(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    p.finish()?;
    let c = fetch(ctx, "customer", &customer, "customer")?;
    if c["deleted"] == true {
        return Err(StripeError::missing("customer", &customer, "customer"));
    }
    attach_to(ctx, &ids[0], &customer)
}

pub fn detach(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = fetch(ctx, "payment_method", &ids[0], "payment_method")?;
    if before["customer"].is_null() {
        return Err(StripeError::invalid(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
        )
        .code("payment_method_unexpected_state"));
    }
    let mut obj = before.clone();
    obj["customer"] = Value::Null;
    ctx.put("payment_method", obj.clone());
    ctx.emit(
        "payment_method.detached",
        &obj,
        Some(previous(&before, &obj)),
    );
    Ok(obj)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    let kind = p.opt_str("type")?;
    super::list(ctx, p, "payment_method", "/v1/payment_methods", |o| {
        customer.as_deref().is_none_or(|c| o["customer"] == c)
            && kind.as_deref().is_none_or(|t| o["type"] == t)
    })
}

pub fn list_for_customer(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    fetch(ctx, "customer", &ids[0], "customer")?;
    let kind = p.opt_str("type")?;
    p.ignore(&["allow_redisplay"]);
    let url = format!("/v1/customers/{}/payment_methods", ids[0]);
    let customer = ids[0].clone();
    super::list(ctx, p, "payment_method", &url, |o| {
        o["customer"] == customer.as_str() && kind.as_deref().is_none_or(|t| o["type"] == t)
    })
}
