//! Checkout Sessions (`/v1/checkout/sessions`): create, retrieve, list, line items, expire; their
//! completion (by the hosted sandbox checkout page or the control API) in `payment` and
//! `subscription` mode; delayed payment methods; expiry.
//!
//! What the session object does not show (its line items with their prices as they were at
//! creation, `payment_intent_data`, `subscription_data`, the customer made for it before the
//! payment succeeded) lives in the hidden `_checkout_session` collection, so the session object
//! stays exactly Stripe's.
//!
//! Expiry happens at `expires_at` twice over: a timer set at creation, and lazily whenever a
//! session is read, listed, paid or expired (timers do not survive a restart; the state does).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{charges, currency, customers, fetch, format_amount, payment_intents, payment_methods};
use crate::control::esc;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, Inner, empty_map, list_object, lock};

/// The collection (and `object` value) of sessions.
pub const KIND: &str = "checkout.session";
const HIDDEN: &str = "_checkout_session";
/// Stripe's bounds for `expires_at`, from creation.
const MIN_EXPIRY: i64 = 30 * 60;
const MAX_EXPIRY: i64 = 24 * 3600;
/// How long a delayed payment method (bank debit) takes to succeed or fail.
const ASYNC_DELAY: Duration = Duration::from_secs(1);
const MAX_LINE_ITEMS: usize = 100;
/// Delayed payment method types a session may be paid with through the control API.
const DELAYED_TYPES: &[&str] = &["us_bank_account", "sepa_debit"];
const PAYMENT_METHOD_TYPES: &[&str] = &[
    "acss_debit",
    "affirm",
    "afterpay_clearpay",
    "alipay",
    "amazon_pay",
    "au_becs_debit",
    "bacs_debit",
    "bancontact",
    "blik",
    "boleto",
    "card",
    "cashapp",
    "customer_balance",
    "eps",
    "fpx",
    "giropay",
    "grabpay",
    "ideal",
    "klarna",
    "konbini",
    "link",
    "oxxo",
    "p24",
    "paynow",
    "paypal",
    "pix",
    "promptpay",
    "revolut_pay",
    "sepa_debit",
    "sofort",
    "swish",
    "twint",
    "us_bank_account",
    "wechat_pay",
    "zip",
];

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Builds handler parameters the way a form body would arrive (for calling other handlers).
fn form(pairs: Vec<(&str, Value)>) -> Params {
    let mut m = Map::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    }
    Params::new(m)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn hidden(ctx: &mut Ctx, id: &str) -> Value {
    ctx.get(HIDDEN, id).unwrap_or_else(|| json!({"id": id}))
}

fn set_hidden(ctx: &mut Ctx, id: &str, key: &str, value: Value) {
    let mut h = hidden(ctx, id);
    h[key] = value;
    ctx.put(HIDDEN, h);
}

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    expire_if_due(ctx, id);
    fetch(ctx, KIND, id, "session")
}

/// A URL parameter (`success_url`, `cancel_url`): absolute http(s), no whitespace.
fn url_param(p: &mut Params, key: &str) -> Result<Option<String>> {
    let Some(url) = p.opt_str(key)? else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest
        .map(|r| r.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    let ok = !host.is_empty()
        && url.len() <= 5000
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(StripeError::invalid("Not a valid URL")
            .code("url_invalid")
            .param(key));
    }
    Ok(Some(url))
}

/// `unit_amount × quantity`, refusing amounts past Stripe's bound instead of overflowing.
fn line_amount(unit: i64, quantity: i64, param: &str) -> Result<i64> {
    unit.checked_mul(quantity)
        .filter(|a| *a <= 99_999_999_999)
        .ok_or_else(|| {
            StripeError::invalid("The line item's total amount is too large.")
                .code("amount_too_large")
                .param(param)
        })
}

// ---------------------------------------------------------------------------------------------
// Line items

/// One line item as given at creation, with its (stored) price.
struct Line {
    price: Value,
    quantity: i64,
    metadata: Value,
}

/// `line_items[i][price_data]`: an inline price (and product, with `product_data`), stored like
/// Stripe's inline prices: a real price object, `active: false`.
fn inline_price(ctx: &mut Ctx, mut pd: Params, prefix: &str) -> Result<Value> {
    let cur = currency(&mut pd, "currency").map_err(|mut e| {
        if e.param.as_deref() == Some("currency") {
            e.param = Some(format!("{prefix}[currency]"));
        }
        e
    })?;
    let unit = match (pd.int("unit_amount")?, pd.opt_str("unit_amount_decimal")?) {
        (Some(u), _) => u,
        (None, Some(d)) => d
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1e12)
            .map(|x| x.round() as i64)
            .ok_or_else(|| {
                StripeError::invalid(format!("Invalid decimal: {d}"))
                    .code("parameter_invalid_decimal")
                    .param(&format!("{prefix}[unit_amount_decimal]"))
            })?,
        (None, None) => {
            return Err(StripeError::missing_param(&format!(
                "{prefix}[unit_amount]"
            )));
        }
    };
    if unit < 0 {
        return Err(StripeError::invalid(
            "Invalid integer: unit_amount must be greater than or equal to 0",
        )
        .code("parameter_invalid_integer")
        .param(&format!("{prefix}[unit_amount]")));
    }
    let recurring = match pd.sub("recurring")? {
        None => Value::Null,
        Some(mut r) => {
            let (interval, count) =
                super::catalog::billing_interval(&mut r, &format!("{prefix}[recurring]"))?;
            r.finish()?;
            json!({"interval": interval, "interval_count": count, "meter": null,
                   "trial_period_days": null, "usage_type": "licensed"})
        }
    };
    let product = match pd.opt_str("product")? {
        Some(id) => {
            let prod = fetch(ctx, "product", &id, &format!("{prefix}[product]"))?;
            if prod["deleted"] == true {
                return Err(StripeError::missing(
                    "product",
                    &id,
                    &format!("{prefix}[product]"),
                ));
            }
            id
        }
        None => {
            let Some(mut prd) = pd.sub("product_data")? else {
                return Err(StripeError::invalid(format!(
                    "You must specify either `product` or `product_data` in `{prefix}`."
                ))
                .code("parameter_missing")
                .param(&format!("{prefix}[product_data]")));
            };
            let name = prd.req_str("name")?;
            let description = prd.opt_str("description")?;
            let images = prd.str_list("images")?.unwrap_or_default();
            let mut md = empty_map();
            merge_metadata(&mut md, prd.metadata("metadata")?);
            let tax_code = prd.opt_str("tax_code")?;
            let unit_label = prd.opt_str("unit_label")?;
            prd.ignore(&["statement_descriptor"]);
            prd.finish()?;
            let prod = json!({
                "id": new_id("prod").chars().take(19).collect::<String>(), "object": "product",
                "active": true, "created": ctx.now, "default_price": null,
                "description": description, "images": images, "livemode": false,
                "marketing_features": [], "metadata": md, "name": name,
                "package_dimensions": null, "shippable": null, "statement_descriptor": null,
                "tax_code": tax_code, "type": "service", "unit_label": unit_label,
                "updated": ctx.now, "url": null,
            });
            ctx.put("product", prod.clone());
            s(&prod["id"])
        }
    };
    pd.ignore(&["tax_behavior"]);
    pd.finish()?;
    let kind = if recurring.is_null() {
        "one_time"
    } else {
        "recurring"
    };
    // Inline one-time prices are archived at once, as on Stripe; inline recurring prices stay
    // active here, because the billing side renews only active prices.
    let active = !recurring.is_null();
    let price = json!({
        "id": new_id("price"), "object": "price", "active": active, "billing_scheme": "per_unit",
        "created": ctx.now, "currency": cur, "custom_unit_amount": null, "livemode": false,
        "lookup_key": null, "metadata": empty_map(), "nickname": null, "product": product,
        "recurring": recurring, "tax_behavior": "unspecified", "tiers_mode": null,
        "transform_quantity": null, "type": kind, "unit_amount": unit,
        "unit_amount_decimal": unit.to_string(),
    });
    ctx.put("price", price.clone());
    Ok(price)
}

fn read_line(ctx: &mut Ctx, mut li: Params, i: usize) -> Result<Line> {
    let prefix = format!("line_items[{i}]");
    let price = match (li.opt_str("price")?, li.sub("price_data")?) {
        (Some(_), Some(_)) => {
            return Err(StripeError::invalid(format!(
                "You may only specify one of these parameters: {prefix}[price], {prefix}[price_data]."
            ))
            .param(&prefix));
        }
        (Some(id), None) => {
            let price = fetch(ctx, "price", &id, &format!("{prefix}[price]"))?;
            if price["active"] != true {
                return Err(StripeError::invalid(
                    "The price specified is inactive. This field only accepts active prices.",
                )
                .param(&format!("{prefix}[price]")));
            }
            price
        }
        (None, Some(pd)) => inline_price(ctx, pd, &format!("{prefix}[price_data]"))?,
        (None, None) => {
            return Err(StripeError::invalid(
                "You must provide either price or price_data for each line item when using prices.",
            )
            .param(&prefix));
        }
    };
    if !price["unit_amount"].is_i64() || price["billing_scheme"] != "per_unit" {
        return Err(StripeError::invalid(
            "The sandbox supports line items with per-unit prices (`unit_amount`) only.",
        )
        .param(&format!("{prefix}[price]")));
    }
    let quantity = li.int("quantity")?.ok_or_else(|| {
        StripeError::invalid(format!(
            "Quantity is required. Add `quantity` to `{prefix}`."
        ))
        .code("parameter_missing")
        .param(&format!("{prefix}[quantity]"))
    })?;
    if !(1..=999_999).contains(&quantity) {
        return Err(StripeError::invalid(
            "Invalid integer: quantity must be between 1 and 999999.",
        )
        .code("parameter_invalid_integer")
        .param(&format!("{prefix}[quantity]")));
    }
    let mut metadata = empty_map();
    merge_metadata(&mut metadata, li.metadata("metadata")?);
    li.ignore(&["adjustable_quantity", "dynamic_tax_rates", "tax_rates"]);
    li.finish()?;
    Ok(Line {
        price,
        quantity,
        metadata,
    })
}

/// Stripe's `item` object for a line.
fn item_object(ctx: &mut Ctx, line: &Line) -> Result<Value> {
    let unit = line.price["unit_amount"].as_i64().unwrap_or(0);
    let amount = line_amount(unit, line.quantity, "line_items")?;
    let product = s(&line.price["product"]);
    let description = ctx
        .get("product", &product)
        .and_then(|p| p["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(json!({
        "id": format!("li_{}", random_string(24)), "object": "item",
        "adjustable_quantity": null, "amount_discount": 0, "amount_subtotal": amount,
        "amount_tax": 0, "amount_total": amount, "currency": line.price["currency"],
        "description": description, "metadata": line.metadata, "price": line.price,
        "quantity": line.quantity,
    }))
}

fn stored_items(ctx: &mut Ctx, id: &str) -> Vec<Value> {
    hidden(ctx, id)["line_items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The session's line items as a complete list object (for `expand[]=line_items`).
pub fn line_items_value(ctx: &mut Ctx, id: &str) -> Value {
    let items = stored_items(ctx, id);
    list_object(
        &format!("/v1/checkout/sessions/{id}/line_items"),
        items,
        false,
    )
}

// ---------------------------------------------------------------------------------------------
// API handlers

/// `POST /v1/checkout/sessions`.
pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let mode = p
        .enum_str("mode", &["payment", "setup", "subscription"])?
        .ok_or_else(|| StripeError::missing_param("mode"))?;
    if mode == "setup" {
        return Err(StripeError::invalid(
            "The sandbox does not support Checkout in `setup` mode; use `payment` or `subscription`.",
        )
        .param("mode"));
    }
    let payment = mode == "payment";
    let ui_mode = p.enum_str(
        "ui_mode",
        &[
            "hosted",
            "hosted_page",
            "embedded",
            "embedded_page",
            "custom",
            "elements",
            "form",
        ],
    )?;
    if ui_mode
        .as_deref()
        .is_some_and(|u| u != "hosted" && u != "hosted_page")
    {
        return Err(StripeError::invalid(
            "The sandbox serves hosted Checkout only (`ui_mode=hosted_page`).",
        )
        .param("ui_mode"));
    }
    let success_url = url_param(&mut p, "success_url")?;
    let cancel_url = url_param(&mut p, "cancel_url")?;
    let client_reference_id = p.opt_str("client_reference_id")?;
    if client_reference_id
        .as_ref()
        .is_some_and(|c| c.chars().count() > 200)
    {
        return Err(StripeError::invalid(
            "Invalid client_reference_id: must be at most 200 characters",
        )
        .code("parameter_invalid_string")
        .param("client_reference_id"));
    }
    let customer = p.opt_str("customer")?;
    let customer_email = p.opt_str("customer_email")?;
    let customer_creation = p.enum_str("customer_creation", &["always", "if_required"])?;
    let mut metadata = empty_map();
    merge_metadata(&mut metadata, p.metadata("metadata")?);
    let types = p.str_list("payment_method_types")?;
    let expires_at = p.int("expires_at")?;
    let allow_promotion_codes = p.bool("allow_promotion_codes")?;
    let billing_address_collection =
        p.enum_str("billing_address_collection", &["auto", "required"])?;
    let locale = p.opt_str("locale")?;
    let submit_type = p.enum_str(
        "submit_type",
        &["auto", "book", "donate", "pay", "subscribe"],
    )?;
    let payment_method_collection =
        p.enum_str("payment_method_collection", &["always", "if_required"])?;

    let pid = match p.sub("payment_intent_data")? {
        None => None,
        Some(mut d) => {
            let mut md = empty_map();
            merge_metadata(&mut md, d.metadata("metadata")?);
            let capture_method = d.enum_str(
                "capture_method",
                &["automatic", "automatic_async", "manual"],
            )?;
            let mut out = json!({"metadata": md, "capture_method": capture_method});
            for k in [
                "description",
                "receipt_email",
                "statement_descriptor",
                "statement_descriptor_suffix",
                "transfer_group",
            ] {
                out[k] = json!(d.opt_str(k)?);
            }
            out["setup_future_usage"] =
                json!(d.enum_str("setup_future_usage", &["on_session", "off_session"])?);
            d.ignore(&[
                "application_fee_amount",
                "on_behalf_of",
                "shipping",
                "transfer_data",
            ]);
            d.finish()?;
            Some(out)
        }
    };
    let sd = match p.sub("subscription_data")? {
        None => None,
        Some(mut d) => {
            let mut md = empty_map();
            merge_metadata(&mut md, d.metadata("metadata")?);
            let trial = d.int("trial_period_days")?;
            if let Some(t) = trial
                && !(1..=730).contains(&t)
            {
                return Err(StripeError::invalid(if t < 1 {
                    "The minimum number of trial period days is 1."
                } else {
                    "The maximum number of trial period days is 730."
                })
                .param("subscription_data[trial_period_days]"));
            }
            let description = d.opt_str("description")?;
            d.ignore(&[
                "application_fee_percent",
                "billing_cycle_anchor",
                "billing_mode",
                "default_tax_rates",
                "invoice_settings",
                "on_behalf_of",
                "proration_behavior",
                "transfer_data",
                "trial_end",
                "trial_settings",
            ]);
            d.finish()?;
            Some(json!({"metadata": md, "trial_period_days": trial, "description": description}))
        }
    };
    let lines = p.sub_list("line_items")?;
    p.ignore(&[
        "adaptive_pricing",
        "after_expiration",
        "automatic_tax",
        "branding_settings",
        "consent_collection",
        "currency",
        "custom_fields",
        "custom_text",
        "customer_update",
        "discounts",
        "excluded_payment_method_types",
        "invoice_creation",
        "name_collection",
        "optional_items",
        "origin_context",
        "payment_method_configuration",
        "payment_method_data",
        "payment_method_options",
        "permissions",
        "phone_number_collection",
        "redirect_on_completion",
        "saved_payment_method_options",
        "shipping_address_collection",
        "shipping_options",
        "tax_id_collection",
        "wallet_options",
    ]);
    p.finish()?;

    // Parameters that depend on each other, in the order Stripe reports them.
    if payment && sd.is_some() {
        return Err(StripeError::invalid(
            "You can not pass `subscription_data` in `payment` mode.",
        )
        .param("subscription_data"));
    }
    if !payment && pid.is_some() {
        return Err(StripeError::invalid(
            "You can not pass `payment_intent_data` in `subscription` mode.",
        )
        .param("payment_intent_data"));
    }
    if !payment && customer_creation.is_some() {
        return Err(StripeError::invalid(
            "`customer_creation` can only be used in `payment` mode.",
        )
        .param("customer_creation"));
    }
    if customer.is_some() && customer_email.is_some() {
        return Err(StripeError::invalid(
            "You may only specify one of these parameters: customer, customer_email.",
        )
        .param("customer_email"));
    }
    if customer.is_some() && customer_creation.is_some() {
        return Err(StripeError::invalid(
            "You may only specify one of these parameters: customer, customer_creation.",
        )
        .param("customer_creation"));
    }
    if let Some(c) = &customer {
        let cus = fetch(ctx, "customer", c, "customer")?;
        if cus["deleted"] == true {
            return Err(StripeError::missing("customer", c, "customer"));
        }
    }
    let explicit_types = types.is_some();
    let types = types.unwrap_or_else(|| vec!["card".to_string()]);
    if types.is_empty() {
        return Err(StripeError::invalid(
            "Invalid payment_method_types: must contain at least one payment method type",
        )
        .code("parameter_invalid_array")
        .param("payment_method_types"));
    }
    for (i, t) in types.iter().enumerate() {
        if !PAYMENT_METHOD_TYPES.contains(&t.as_str()) {
            return Err(StripeError::invalid(format!(
                "Invalid payment_method_types[{i}]: must be one of {}",
                PAYMENT_METHOD_TYPES.join(", ")
            ))
            .code("parameter_invalid_string")
            .param(&format!("payment_method_types[{i}]")));
        }
    }
    let expires_at = match expires_at {
        None => ctx.now + MAX_EXPIRY,
        Some(t) if t < ctx.now + MIN_EXPIRY => {
            return Err(StripeError::invalid(
                "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
            )
            .param("expires_at"));
        }
        Some(t) if t > ctx.now + MAX_EXPIRY => {
            return Err(StripeError::invalid(
                "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            )
            .param("expires_at"));
        }
        Some(t) => t,
    };

    // Line items.
    let Some(lines) = lines.filter(|l| !l.is_empty()) else {
        return Err(StripeError::missing_param("line_items"));
    };
    if lines.len() > MAX_LINE_ITEMS {
        return Err(StripeError::invalid(format!(
            "You may only specify up to {MAX_LINE_ITEMS} line items."
        ))
        .param("line_items"));
    }
    let mut read = Vec::with_capacity(lines.len());
    for (i, li) in lines.into_iter().enumerate() {
        read.push(read_line(ctx, li, i)?);
    }
    let cur = s(&read[0].price["currency"]);
    if let Some(i) = read
        .iter()
        .position(|l| l.price["currency"] != cur.as_str())
    {
        return Err(StripeError::invalid(format!(
            "All line items must use the same currency; `line_items[{i}]` is in {} but `line_items[0]` is in {cur}.",
            s(&read[i].price["currency"])
        ))
        .param(&format!("line_items[{i}]")));
    }
    let recurring: Vec<&Line> = read
        .iter()
        .filter(|l| l.price["type"] == "recurring")
        .collect();
    if payment && let Some(i) = read.iter().position(|l| l.price["type"] == "recurring") {
        return Err(StripeError::invalid(
            "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.",
        )
        .param(&format!("line_items[{i}]")));
    }
    if !payment {
        let Some(first) = recurring.first() else {
            return Err(StripeError::invalid(
                "You must provide at least one recurring price in `subscription` mode when using prices.",
            )
            .param("line_items"));
        };
        let interval = |l: &Line| {
            (
                l.price["recurring"]["interval"].clone(),
                l.price["recurring"]["interval_count"].clone(),
            )
        };
        if let Some(i) = read
            .iter()
            .position(|l| l.price["type"] == "recurring" && interval(l) != interval(first))
        {
            return Err(StripeError::invalid(
                "All prices on a subscription must have the same `recurring.interval` and `recurring.interval_count`.",
            )
            .param(&format!("line_items[{i}]")));
        }
    }
    if !payment && let Some(i) = read.iter().position(|l| l.price["type"] != "recurring") {
        return Err(StripeError::invalid(
            "The sandbox's subscription-mode Checkout takes recurring prices only; one-time prices (setup fees) are not supported in `subscription` mode.",
        )
        .param(&format!("line_items[{i}]")));
    }
    let mut items = Vec::with_capacity(read.len());
    let (mut subtotal, mut recurring_total) = (0i64, 0i64);
    for line in &read {
        let item = item_object(ctx, line)?;
        let amount = item["amount_subtotal"].as_i64().unwrap_or(0);
        subtotal = subtotal.saturating_add(amount);
        if line.price["type"] == "recurring" {
            recurring_total = recurring_total.saturating_add(amount);
        }
        items.push(item);
    }
    if subtotal > 99_999_999 {
        return Err(StripeError::invalid(format!(
            "The Checkout Session's total amount due must be no more than {}.",
            format_amount(99_999_999, &cur)
        ))
        .code("amount_too_large")
        .param("line_items"));
    }
    let trial = sd
        .as_ref()
        .and_then(|d| d["trial_period_days"].as_i64())
        .is_some();
    // The first payment: everything in payment mode; in subscription mode the first invoice
    // (recurring items are free during a trial).
    let due = if trial {
        subtotal - recurring_total
    } else {
        subtotal
    };
    if payment {
        super::charge_amount(subtotal, &cur, "line_items").map_err(|e| {
            StripeError::invalid(format!(
                "The Checkout Session's total amount due must add up to at least {}.",
                format_amount(minimum_charge(&cur), &cur)
            ))
            .code(e.code.as_deref().unwrap_or("amount_too_small"))
            .param("line_items")
        })?;
    }

    let id = format!("cs_test_{}", random_string(58));
    let session = json!({
        "id": id, "object": KIND,
        "adaptive_pricing": {"enabled": false}, "after_expiration": null,
        "allow_promotion_codes": allow_promotion_codes, "amount_subtotal": subtotal,
        "amount_total": due,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": billing_address_collection, "cancel_url": cancel_url,
        "client_reference_id": client_reference_id, "client_secret": null,
        "collected_information": null, "consent": null, "consent_collection": null,
        "created": ctx.now, "currency": cur, "currency_conversion": null, "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null,
                        "terms_of_service_acceptance": null},
        "customer": customer, "customer_account": null,
        "customer_creation": if payment {
            json!(customer_creation.as_deref().unwrap_or("if_required"))
        } else {
            Value::Null
        },
        "customer_details": null, "customer_email": customer_email, "discounts": [],
        "expires_at": expires_at, "integration_identifier": null, "invoice": null,
        "invoice_creation": if payment {
            json!({"enabled": false, "invoice_data": {
                "account_tax_ids": null, "custom_fields": null, "description": null,
                "footer": null, "issuer": null, "metadata": {}, "rendering_options": null}})
        } else {
            Value::Null
        },
        "livemode": false, "locale": locale, "managed_payments": {"enabled": false},
        "metadata": metadata, "mode": mode, "origin_context": null, "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": if payment {
            json!("if_required")
        } else {
            json!(payment_method_collection.as_deref().unwrap_or("always"))
        },
        "payment_method_configuration_details": null, "payment_method_options": {},
        "payment_method_types": types, "payment_status": "unpaid", "permissions": null,
        "phone_number_collection": {"enabled": false}, "recovered_from": null,
        "saved_payment_method_options": null, "setup_intent": null,
        "shipping_address_collection": null, "shipping_cost": null, "shipping_options": [],
        "status": "open", "submit_type": submit_type, "subscription": null,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": format!("{}/_sandbox/checkout/{id}", ctx.public_url),
        "wallet_options": null,
    });
    ctx.put(KIND, session.clone());
    ctx.put(
        HIDDEN,
        json!({
            "id": id, "line_items": items, "payment_intent_data": pid,
            "subscription_data": sd, "explicit_types": explicit_types,
        }),
    );
    let delay = u64::try_from(expires_at - ctx.now).unwrap_or(0);
    let sid = id.clone();
    ctx.later(Duration::from_secs(delay), move |ctx| {
        expire_if_due(ctx, &sid);
    });
    Ok(session)
}

fn minimum_charge(cur: &str) -> i64 {
    // The smallest amount `charge_amount` accepts, found by its own rule.
    [30, 50, 400, 500, 1000]
        .into_iter()
        .find(|m| super::charge_amount(*m, cur, "amount").is_ok())
        .unwrap_or(50)
}

/// `GET /v1/checkout/sessions/{id}`.
pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    p.finish()?;
    get(ctx, &ids[0])
}

/// `POST /v1/checkout/sessions/{id}`: `metadata` (Stripe's other updatable fields belong to
/// custom UI sessions, which the sandbox does not serve).
pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let mut sess = get(ctx, &ids[0])?;
    merge_metadata(&mut sess["metadata"], p.metadata("metadata")?);
    p.ignore(&["collected_information", "shipping_options"]);
    p.finish()?;
    ctx.put(KIND, sess.clone());
    Ok(sess)
}

/// `GET /v1/checkout/sessions`: filters `payment_intent`, `customer`, `customer_details[email]`,
/// `subscription`, `status`, `payment_link`, `created`.
pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let pi = p.opt_str("payment_intent")?;
    let customer = p.opt_str("customer")?;
    let subscription = p.opt_str("subscription")?;
    let payment_link = p.opt_str("payment_link")?;
    let status = p.enum_str("status", &["open", "complete", "expired"])?;
    let email = match p.sub("customer_details")? {
        None => None,
        Some(mut d) => {
            let e = d.req_str("email")?;
            d.finish()?;
            Some(e)
        }
    };
    sweep(ctx);
    super::list(ctx, p, KIND, "/v1/checkout/sessions", |o| {
        pi.as_deref().is_none_or(|v| o["payment_intent"] == v)
            && customer.as_deref().is_none_or(|v| o["customer"] == v)
            && subscription
                .as_deref()
                .is_none_or(|v| o["subscription"] == v)
            && payment_link
                .as_deref()
                .is_none_or(|v| o["payment_link"] == v)
            && status.as_deref().is_none_or(|v| o["status"] == v)
            && email
                .as_deref()
                .is_none_or(|v| o["customer_details"]["email"] == v)
    })
}

/// `GET /v1/checkout/sessions/{id}/line_items`: in the order given at creation.
pub fn line_items(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let id = &ids[0];
    get(ctx, id)?;
    if p.has("starting_after") && p.has("ending_before") {
        return Err(StripeError::invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
        ));
    }
    let items = stored_items(ctx, id);
    super::page_array(
        p,
        &items,
        &format!("/v1/checkout/sessions/{id}/line_items"),
        "item",
    )
}

/// `POST /v1/checkout/sessions/{id}/expire`.
pub fn expire(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    p.finish()?;
    // Not `get`: an overdue session that is still open is expired by this call itself.
    let sess = fetch(ctx, KIND, &ids[0], "session")?;
    if sess["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of `{}`.",
            s(&sess["status"])
        )));
    }
    Ok(do_expire(ctx, sess))
}

// ---------------------------------------------------------------------------------------------
// Expiry

fn do_expire(ctx: &mut Ctx, mut sess: Value) -> Value {
    // An intent left by a declined attempt is canceled with the session, as Stripe does.
    if let Some(pi) = sess["payment_intent"].as_str().map(str::to_string)
        && ctx.get("payment_intent", &pi).is_some_and(|p| {
            [
                "requires_payment_method",
                "requires_confirmation",
                "requires_action",
            ]
            .contains(&p["status"].as_str().unwrap_or_default())
        })
    {
        let _ = payment_intents::cancel_for(ctx, &pi, Some("abandoned"), false);
    }
    sess["status"] = json!("expired");
    sess["url"] = Value::Null;
    ctx.put(KIND, sess.clone());
    ctx.emit("checkout.session.expired", &sess, None);
    sess
}

/// Expires session `id` if it is open and past `expires_at`.
pub fn expire_if_due(ctx: &mut Ctx, id: &str) {
    if let Some(sess) = ctx.get(KIND, id)
        && sess["status"] == "open"
        && sess["expires_at"].as_i64().is_some_and(|t| t <= ctx.now)
    {
        do_expire(ctx, sess);
    }
}

/// Expires every open session of the account that is past `expires_at`.
fn sweep(ctx: &mut Ctx) {
    let now = ctx.now;
    let due: Vec<String> = ctx
        .acct()
        .collection(KIND)
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|s| {
                    s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|t| t <= now)
                })
                .map(|s| s["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    for id in due {
        expire_if_due(ctx, &id);
    }
}

// ---------------------------------------------------------------------------------------------
// Completion

/// A buyer's payment, from the hosted page or the control API.
pub struct Payment {
    /// A payment method id (`pm_card_visa`, a `pm_…` made from the page's card form); `None`
    /// to finish a session whose payment already succeeded (after 3-D Secure).
    pub payment_method: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// A delayed payment method (`us_bank_account`, `sepa_debit`) and whether it will succeed.
    pub delayed: Option<(String, bool)>,
    /// Where 3-D Secure sends the buyer back (the hosted page's return route).
    pub return_url: Option<String>,
}

/// What a payment attempt came to.
pub enum Outcome {
    /// The session is complete.
    Complete(Value),
    /// The buyer must authenticate (3-D Secure) at this URL first.
    Authenticate(String),
}

/// Pays session `id`; a refused attempt (not a decline) changes nothing, except that an
/// overdue session is expired first (and stays so).
pub fn pay(ctx: &mut Ctx, id: &str, payment: Payment) -> Result<Outcome> {
    expire_if_due(ctx, id);
    let mark = ctx.effects.mark();
    let out = pay_inner(ctx, id, payment);
    if let Err(e) = &out
        && e.status != StatusCode::PAYMENT_REQUIRED
    {
        ctx.effects.roll_back_to(ctx.state, mark);
    }
    out
}

fn pay_inner(ctx: &mut Ctx, id: &str, payment: Payment) -> Result<Outcome> {
    let sess = get(ctx, id)?;
    if sess["status"] != "open" {
        return Err(StripeError::invalid(format!(
            "This Checkout Session is no longer open: its status is `{}`.",
            s(&sess["status"])
        ))
        .code("checkout_session_not_open"));
    }
    if let Some(e) = &payment.email
        && (e.len() > 512 || !e.contains('@') || e.starts_with('@') || e.ends_with('@'))
    {
        return Err(StripeError::invalid(format!("Invalid email address: {e}")).param("email"));
    }
    if let Some((kind, _)) = &payment.delayed {
        if !DELAYED_TYPES.contains(&kind.as_str()) {
            return Err(StripeError::invalid(format!(
                "`{kind}` is not a delayed payment method; use one of: {}.",
                DELAYED_TYPES.join(", ")
            ))
            .param("payment_method"));
        }
        if sess["mode"] != "payment" {
            return Err(StripeError::invalid(
                "The sandbox completes subscription-mode sessions with cards only.",
            )
            .param("outcome"));
        }
        let explicit = hidden(ctx, id)["explicit_types"] == true;
        if explicit
            && !sess["payment_method_types"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == kind.as_str()))
        {
            return Err(StripeError::invalid(format!(
                "This Checkout Session does not accept `{kind}`: its payment_method_types are {}.",
                sess["payment_method_types"]
            ))
            .param("payment_method"));
        }
    }
    match sess["mode"].as_str() {
        Some("subscription") => pay_subscription(ctx, sess, payment),
        _ => pay_payment(ctx, sess, payment),
    }
}

/// The session's customer, or one made for it (subscription mode, `customer_creation=always`),
/// at most once per session.
fn customer_for(ctx: &mut Ctx, sess: &Value, payment: &Payment) -> Result<Option<String>> {
    if let Some(c) = sess["customer"].as_str() {
        return Ok(Some(c.to_string()));
    }
    let id = s(&sess["id"]);
    if let Some(c) = hidden(ctx, &id)["customer"].as_str() {
        return Ok(Some(c.to_string()));
    }
    let wanted = sess["mode"] == "subscription" || sess["customer_creation"] == "always";
    if !wanted {
        return Ok(None);
    }
    let email = buyer_email(ctx, sess, payment);
    let cus = customers::create(
        ctx,
        form(vec![("email", json!(email)), ("name", json!(payment.name))]),
        &[],
    )?;
    let cid = s(&cus["id"]);
    set_hidden(ctx, &id, "customer", json!(cid));
    Ok(Some(cid))
}

/// The email the buyer paid with: given, else the session's `customer_email` or customer's.
fn buyer_email(ctx: &mut Ctx, sess: &Value, payment: &Payment) -> Option<String> {
    if let Some(e) = &payment.email {
        return Some(e.clone());
    }
    if let Some(e) = sess["customer_email"].as_str() {
        return Some(e.to_string());
    }
    if let Some(c) = sess["customer"].as_str()
        && let Some(e) = ctx
            .get("customer", c)
            .and_then(|c| c["email"].as_str().map(str::to_string))
    {
        return Some(e);
    }
    Some("customer@example.com".to_string())
}

fn customer_details(ctx: &mut Ctx, sess: &Value, payment: &Payment) -> Value {
    let email = buyer_email(ctx, sess, payment);
    let name = payment.name.clone().or_else(|| {
        sess["customer"]
            .as_str()
            .and_then(|c| ctx.get("customer", c))
            .and_then(|c| c["name"].as_str().map(str::to_string))
    });
    json!({
        "address": {"city": null, "country": null, "line1": null, "line2": null,
                    "postal_code": null, "state": null},
        "business_name": null, "email": email, "individual_name": null, "name": name,
        "phone": null, "tax_exempt": "none", "tax_ids": [],
    })
}

/// Marks the session complete and emits `checkout.session.completed`.
fn finish(
    ctx: &mut Ctx,
    mut sess: Value,
    payment: &Payment,
    customer: Option<String>,
    payment_status: &str,
) -> Value {
    sess["customer_details"] = customer_details(ctx, &sess, payment);
    sess["customer"] = json!(customer);
    sess["status"] = json!("complete");
    sess["payment_status"] = json!(payment_status);
    sess["url"] = Value::Null;
    ctx.put(KIND, sess.clone());
    ctx.emit("checkout.session.completed", &sess, None);
    sess
}

fn pay_payment(ctx: &mut Ctx, mut sess: Value, payment: Payment) -> Result<Outcome> {
    let id = s(&sess["id"]);
    let existing = sess["payment_intent"]
        .as_str()
        .and_then(|pi| ctx.get("payment_intent", pi));
    // A payment that already went through (3-D Secure approved on the authentication page):
    // finish the session with it rather than charge again.
    if let Some(pi) = &existing
        && payment.delayed.is_none()
    {
        match pi["status"].as_str() {
            Some("succeeded") => {
                let cus = pi["customer"].as_str().map(str::to_string);
                return Ok(Outcome::Complete(finish(ctx, sess, &payment, cus, "paid")));
            }
            Some("requires_capture") => {
                let cus = pi["customer"].as_str().map(str::to_string);
                return Ok(Outcome::Complete(finish(
                    ctx, sess, &payment, cus, "unpaid",
                )));
            }
            Some("requires_action") if payment.payment_method.is_none() => {
                return Err(StripeError::invalid(
                    "This Checkout Session's payment is waiting for 3-D Secure authentication.",
                )
                .code("payment_intent_authentication_failure"));
            }
            _ => {}
        }
    }
    let customer = customer_for(ctx, &sess, &payment)?;
    let h = hidden(ctx, &id);
    let pid = &h["payment_intent_data"];
    let reusable = existing.as_ref().is_some_and(|pi| {
        [
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
        ]
        .contains(&pi["status"].as_str().unwrap_or_default())
    });
    if let Some((kind, succeeds)) = &payment.delayed {
        let reuse = reusable.then(|| s(&sess["payment_intent"]));
        return pay_delayed(ctx, sess, &payment, customer, reuse, kind, *succeeds);
    }
    let pm = payment
        .payment_method
        .clone()
        .unwrap_or_else(|| "pm_card_visa".to_string());
    let result = if reusable {
        let pi_id = s(&sess["payment_intent"]);
        payment_intents::confirm(
            ctx,
            form(vec![
                ("payment_method", json!(pm)),
                ("return_url", json!(payment.return_url)),
            ]),
            &[pi_id],
        )
    } else {
        let mut pairs = vec![
            (
                "amount",
                json!(sess["amount_total"].as_i64().unwrap_or(0).to_string()),
            ),
            ("currency", sess["currency"].clone()),
            ("payment_method_types", json!(["card"])),
            ("customer", json!(customer)),
            ("payment_method", json!(pm)),
            ("confirm", json!("true")),
            ("return_url", json!(payment.return_url)),
            (
                "capture_method",
                json!(pid["capture_method"].as_str().unwrap_or("automatic_async")),
            ),
        ];
        if pid["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
            pairs.push(("metadata", pid["metadata"].clone()));
        }
        for k in [
            "description",
            "receipt_email",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "transfer_group",
            "setup_future_usage",
        ] {
            if pid[k].is_string() {
                pairs.push((k, pid[k].clone()));
            }
        }
        payment_intents::create(ctx, form(pairs), &[])
    };
    // The session points at its intent from the first attempt on, declined or not.
    let pi_id = match &result {
        Ok(pi) => pi["id"].as_str().map(str::to_string),
        Err(e) => e
            .extra
            .get("payment_intent")
            .and_then(|p| p["id"].as_str())
            .map(str::to_string),
    };
    if let Some(pi_id) = pi_id
        && sess["payment_intent"] != pi_id.as_str()
    {
        sess["payment_intent"] = json!(pi_id);
        ctx.put(KIND, sess.clone());
    }
    let pi = result?;
    match pi["status"].as_str() {
        Some("succeeded") => Ok(Outcome::Complete(finish(
            ctx, sess, &payment, customer, "paid",
        ))),
        Some("requires_capture") => Ok(Outcome::Complete(finish(
            ctx, sess, &payment, customer, "unpaid",
        ))),
        Some("requires_action") => match pi["next_action"]["redirect_to_url"]["url"].as_str() {
            Some(url) => Ok(Outcome::Authenticate(url.to_string())),
            None => Err(StripeError::invalid(
                "The payment needs an action the sandbox's checkout cannot take.",
            )),
        },
        other => Err(StripeError::invalid(format!(
            "The payment ended in status `{}`.",
            other.unwrap_or_default()
        ))),
    }
}

/// A bank debit: the intent is `processing` and the session completes `unpaid`; after
/// [`ASYNC_DELAY`] the payment succeeds or fails and the async event follows.
fn pay_delayed(
    ctx: &mut Ctx,
    mut sess: Value,
    payment: &Payment,
    customer: Option<String>,
    reuse: Option<String>,
    kind: &str,
    succeeds: bool,
) -> Result<Outcome> {
    let id = s(&sess["id"]);
    let email = buyer_email(ctx, &sess, payment);
    let fingerprint: String = hex::encode(Sha256::digest(format!("{kind}{email:?}").as_bytes()))
        .chars()
        .take(16)
        .collect();
    let details = if kind == "sepa_debit" {
        json!({"bank_code": "37040044", "branch_code": null, "country": "DE",
               "fingerprint": fingerprint, "generated_from": {"charge": null, "setup_attempt": null},
               "last4": "3000"})
    } else {
        json!({"account_holder_type": "individual", "account_type": "checking",
               "bank_name": "STRIPE TEST BANK", "financial_connections_account": null,
               "fingerprint": fingerprint, "last4": "6789",
               "networks": {"preferred": "ach", "supported": ["ach"]},
               "routing_number": "110000000", "status_details": null})
    };
    let mut pm = json!({
        "id": new_id("pm"), "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": {"address": {"city": null, "country": null, "line1": null,
                            "line2": null, "postal_code": null, "state": null},
                            "email": email, "name": payment.name.clone().unwrap_or_else(|| "Sandbox Buyer".into()),
                            "phone": null, "tax_id": null},
        "created": ctx.now, "customer": null, "customer_account": null, "livemode": false,
        "metadata": {}, "type": kind,
    });
    pm[kind] = details;
    ctx.put("payment_method", pm.clone());
    let h = hidden(ctx, &id);
    let pid = &h["payment_intent_data"];
    let before = match reuse {
        // The intent of an earlier, declined card attempt is switched to the bank debit.
        Some(pi_id) => payment_intents::update(
            ctx,
            form(vec![
                ("payment_method_types", json!([kind])),
                ("payment_method", pm["id"].clone()),
            ]),
            &[pi_id],
        )?,
        None => {
            let mut pairs = vec![
                (
                    "amount",
                    json!(sess["amount_total"].as_i64().unwrap_or(0).to_string()),
                ),
                ("currency", sess["currency"].clone()),
                ("payment_method_types", json!([kind])),
                ("customer", json!(customer)),
                ("payment_method", pm["id"].clone()),
            ];
            if pid["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
                pairs.push(("metadata", pid["metadata"].clone()));
            }
            if pid["description"].is_string() {
                pairs.push(("description", pid["description"].clone()));
            }
            payment_intents::create(ctx, form(pairs), &[])?
        }
    };
    let mut pi = before.clone();
    let mut ch = charges::attempt(ctx, &pi, &pm, &charges::Outcome::Authorized, false);
    let mut method_details = json!({"type": kind});
    method_details[kind] = if kind == "sepa_debit" {
        json!({"bank_code": "37040044", "branch_code": null, "country": "DE",
               "fingerprint": fingerprint, "last4": "3000", "mandate": null})
    } else {
        json!({"account_holder_type": "individual", "account_type": "checking",
               "bank_name": "STRIPE TEST BANK", "fingerprint": fingerprint, "last4": "6789",
               "mandate": null, "payment_reference": null, "routing_number": "110000000"})
    };
    ch["payment_method_details"] = method_details;
    ch["status"] = json!("pending");
    ch["paid"] = json!(false);
    // Radar does not screen bank debits: no risk score.
    ch["outcome"]["risk_level"] = json!("not_assessed");
    if let Some(o) = ch["outcome"].as_object_mut() {
        o.remove("risk_score");
    }
    ch["outcome"]["seller_message"] = json!("Payment pending.");
    ctx.put("charge", ch.clone());
    pi["status"] = json!("processing");
    pi["latest_charge"] = ch["id"].clone();
    ctx.put("payment_intent", pi.clone());
    ctx.emit("charge.pending", &ch, None);
    ctx.emit(
        "payment_intent.processing",
        &pi,
        Some(super::previous(&before, &pi)),
    );
    sess["payment_intent"] = pi["id"].clone();
    let done = finish(ctx, sess, payment, customer, "unpaid");
    let (sid, pi_id) = (id.clone(), s(&pi["id"]));
    ctx.later(ASYNC_DELAY, move |ctx| {
        settle_delayed(ctx, &sid, &pi_id, succeeds);
    });
    Ok(Outcome::Complete(done))
}

/// The bank's answer to a delayed payment.
fn settle_delayed(ctx: &mut Ctx, session_id: &str, pi_id: &str, succeeds: bool) {
    let (Some(mut sess), Some(before)) =
        (ctx.get(KIND, session_id), ctx.get("payment_intent", pi_id))
    else {
        return;
    };
    if before["status"] != "processing" {
        return;
    }
    let ch_id = s(&before["latest_charge"]);
    let Some(ch_before) = ctx.get("charge", &ch_id) else {
        return;
    };
    let mut pi = before.clone();
    let mut ch = ch_before.clone();
    if succeeds {
        ch["status"] = json!("succeeded");
        ch["paid"] = json!(true);
        ch["outcome"]["seller_message"] = json!("Payment complete.");
        pi["status"] = json!("succeeded");
        pi["amount_received"] = pi["amount"].clone();
        ctx.put("charge", ch.clone());
        ctx.put("payment_intent", pi.clone());
        ctx.emit("charge.succeeded", &ch, None);
        ctx.emit(
            "payment_intent.succeeded",
            &pi,
            Some(super::previous(&before, &pi)),
        );
        sess["payment_status"] = json!("paid");
        ctx.put(KIND, sess.clone());
        ctx.emit("checkout.session.async_payment_succeeded", &sess, None);
    } else {
        let message = "The customer's account has insufficient funds to cover this payment.";
        ch["status"] = json!("failed");
        ch["paid"] = json!(false);
        ch["amount_captured"] = json!(0);
        ch["captured"] = json!(false);
        ch["failure_code"] = json!("insufficient_funds");
        ch["failure_message"] = json!(message);
        ch["outcome"]["network_status"] = json!("declined_by_network");
        ch["outcome"]["reason"] = json!("insufficient_funds");
        ch["outcome"]["seller_message"] =
            json!("The bank returned the payment: the account has insufficient funds.");
        ch["outcome"]["type"] = json!("issuer_declined");
        let pm = ctx
            .get("payment_method", &s(&pi["payment_method"]))
            .unwrap_or(Value::Null);
        pi["status"] = json!("requires_payment_method");
        pi["payment_method"] = Value::Null;
        pi["last_payment_error"] = json!({
            "charge": ch_id, "code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/insufficient-funds",
            "message": message, "payment_method": pm, "type": "invalid_request_error",
        });
        ctx.put("charge", ch.clone());
        ctx.put("payment_intent", pi.clone());
        ctx.emit("charge.failed", &ch, None);
        ctx.emit("payment_intent.payment_failed", &pi, None);
        ctx.emit("checkout.session.async_payment_failed", &sess, None);
    }
}

/// Subscription mode: the customer (made now unless the session names one), then the
/// subscription with its first invoice paid by the billing side (`subscriptions.rs`).
fn pay_subscription(ctx: &mut Ctx, mut sess: Value, payment: Payment) -> Result<Outcome> {
    let id = s(&sess["id"]);
    let Some(customer) = customer_for(ctx, &sess, &payment)? else {
        return Err(StripeError::invalid("A subscription needs a customer."));
    };
    let h = hidden(ctx, &id);
    let items: Vec<(String, i64)> = h["line_items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| (s(&i["price"]["id"]), i["quantity"].as_i64().unwrap_or(1)))
                .collect()
        })
        .unwrap_or_default();
    let sd = &h["subscription_data"];
    let metadata = sd["metadata"].as_object().cloned().unwrap_or_default();
    let trial = sd["trial_period_days"].as_i64();
    let pm = payment
        .payment_method
        .clone()
        .unwrap_or_else(|| "pm_card_visa".to_string());
    let (sub, inv) =
        super::subscriptions::create_from_checkout(ctx, &customer, &items, &pm, &metadata, trial)?;
    sess["subscription"] = sub["id"].clone();
    sess["invoice"] = inv["id"].clone();
    let status = if inv["amount_due"].as_i64() == Some(0) {
        "no_payment_required"
    } else if inv["status"] == "paid" {
        "paid"
    } else {
        "unpaid"
    };
    Ok(Outcome::Complete(finish(
        ctx,
        sess,
        &payment,
        Some(customer),
        status,
    )))
}

// ---------------------------------------------------------------------------------------------
// The hosted checkout page (`/_sandbox/checkout/{id}`)

/// The account holding session `id`.
fn owner(inner: &Inner, id: &str) -> Option<String> {
    let st = lock(&inner.state);
    st.accounts
        .iter()
        .find(|(_, acct)| acct.get(KIND, id).is_some())
        .map(|(acct_id, _)| acct_id.clone())
}

/// What the page shows besides the session: the buyer's email so far and a message.
#[derive(Default)]
struct Form {
    email: String,
    name: String,
    error: Option<String>,
    /// Where the form posts when not shown at its own URL (the 3-D Secure return route).
    action: Option<String>,
}

/// `GET /_sandbox/checkout/{id}`.
pub async fn page(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let Some(account) = owner(&inner, &id) else {
        return simple_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>This checkout page does not exist or its link is incomplete.</p>",
        );
    };
    let (sess, items, email) = inner.run_as(&account, |ctx| {
        expire_if_due(ctx, &id);
        let sess = ctx.get(KIND, &id).unwrap_or(Value::Null);
        let email = sess["customer_email"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                sess["customer"]
                    .as_str()
                    .and_then(|c| ctx.get("customer", c))
                    .and_then(|c| c["email"].as_str().map(str::to_string))
            })
            .unwrap_or_default();
        (sess, stored_items(ctx, &id), email)
    });
    let form = Form {
        email,
        ..Form::default()
    };
    render(StatusCode::OK, &sess, &items, &form)
}

/// `POST /_sandbox/checkout/{id}` (form: `email`, `name`, `cardnumber`, `exp`, `cvc`).
pub async fn page_submit(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(account) = owner(&inner, &id) else {
        return simple_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>This checkout page does not exist or its link is incomplete.</p>",
        );
    };
    let fields = tollgate_stripe::form::parse(&body).unwrap_or_default();
    let field = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_str)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut form = Form {
        email: field("email"),
        name: field("name"),
        ..Form::default()
    };
    let (number, exp, cvc) = (field("cardnumber"), field("exp"), field("cvc"));
    let return_url = format!("{}/_sandbox/checkout/{id}/return", inner.config.public_url);
    let (result, sess, items) = inner.run_as(&account, |ctx| {
        if let Some(done) = ctx.get(KIND, &id).filter(|s| s["status"] == "complete") {
            // A second submit of a page already paid (a double click): on to success_url.
            return (Ok(Outcome::Complete(done.clone())), done, Vec::new());
        }
        let result = card_from_form(&form, &number, &exp, &cvc).and_then(|card| {
            let mut pm = card;
            let made = payment_methods::from_params(ctx, &mut pm, "")?;
            pay(
                ctx,
                &id,
                Payment {
                    payment_method: Some(s(&made["id"])),
                    email: Some(form.email.clone()),
                    name: Some(form.name.clone()).filter(|n| !n.is_empty()),
                    delayed: None,
                    return_url: Some(return_url.clone()),
                },
            )
        });
        let sess = ctx.get(KIND, &id).unwrap_or(Value::Null);
        (result, sess, stored_items(ctx, &id))
    });
    match result {
        Ok(Outcome::Complete(sess)) => after_payment(&sess),
        Ok(Outcome::Authenticate(url)) => see_other(&url).unwrap_or_else(|| {
            simple_page(
                StatusCode::OK,
                "Authentication required",
                &format!(
                    "<p><a href=\"{}\">Authenticate this payment</a></p>",
                    esc(&url)
                ),
            )
        }),
        Err(e) => {
            form.error = Some(e.message);
            let status = if e.status == StatusCode::PAYMENT_REQUIRED {
                StatusCode::PAYMENT_REQUIRED
            } else {
                StatusCode::BAD_REQUEST
            };
            render(status, &sess, &items, &form)
        }
    }
}

/// `GET /_sandbox/checkout/{id}/return`: back from 3-D Secure.
pub async fn page_return(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(_q): Query<HashMap<String, String>>,
) -> Response {
    let Some(account) = owner(&inner, &id) else {
        return simple_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>This checkout page does not exist or its link is incomplete.</p>",
        );
    };
    let action = format!("{}/_sandbox/checkout/{id}", inner.config.public_url);
    let (result, sess, items, email, error) = inner.run_as(&account, |ctx| {
        let sess = ctx.get(KIND, &id).unwrap_or(Value::Null);
        let pi = sess["payment_intent"]
            .as_str()
            .and_then(|p| ctx.get("payment_intent", p))
            .unwrap_or(Value::Null);
        // The email the buyer typed is on the card's billing details (the failed attempt's
        // payment method is only in last_payment_error).
        let email = pi["payment_method"]
            .as_str()
            .and_then(|pm| ctx.get("payment_method", pm))
            .unwrap_or_else(|| pi["last_payment_error"]["payment_method"].clone())
            ["billing_details"]["email"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let result = if sess["status"] == "open"
            && matches!(
                pi["status"].as_str(),
                Some("succeeded" | "requires_capture")
            ) {
            Some(pay(
                ctx,
                &id,
                Payment {
                    payment_method: None,
                    email: Some(email.clone()).filter(|e| !e.is_empty()),
                    name: None,
                    delayed: None,
                    return_url: None,
                },
            ))
        } else {
            None
        };
        // What Stripe's own pages tell a buyer whose challenge failed.
        let error = if pi["last_payment_error"]["code"] == "payment_intent_authentication_failure" {
            Some("We are unable to authenticate your payment method. Please choose a different payment method and try again.".to_string())
        } else {
            pi["last_payment_error"]["message"]
                .as_str()
                .map(str::to_string)
        };
        let sess = ctx.get(KIND, &id).unwrap_or(Value::Null);
        (result, sess, stored_items(ctx, &id), email, error)
    });
    if result.is_none() && sess["status"] == "complete" {
        return after_payment(&sess);
    }
    match result {
        Some(Ok(Outcome::Complete(sess))) => after_payment(&sess),
        Some(Err(e)) => render(
            StatusCode::BAD_REQUEST,
            &sess,
            &items,
            &Form {
                email,
                error: Some(e.message),
                action: Some(action),
                ..Form::default()
            },
        ),
        _ => render(
            StatusCode::OK,
            &sess,
            &items,
            &Form {
                email,
                action: Some(action),
                error: error.or_else(|| {
                    (sess["status"] == "open")
                        .then(|| "The payment was not authenticated.".to_string())
                }),
                ..Form::default()
            },
        ),
    }
}

/// The card form's fields as `payment_method_data`-style parameters.
fn card_from_form(form: &Form, number: &str, exp: &str, cvc: &str) -> Result<Params> {
    let card_error = |message: &str, param: &str| {
        StripeError::new(StatusCode::BAD_REQUEST, "card_error", message).param(param)
    };
    if form.email.is_empty() {
        return Err(StripeError::invalid("Your email is incomplete.").param("email"));
    }
    if form.email.len() > 512
        || !form.email.contains('@')
        || form.email.starts_with('@')
        || form.email.ends_with('@')
    {
        return Err(StripeError::invalid("Your email is invalid.").param("email"));
    }
    let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty() {
        return Err(card_error("Your card number is incomplete.", "cardnumber"));
    }
    let exp_digits: String = exp.chars().filter(char::is_ascii_digit).collect();
    let (month, year) = match exp_digits.len() {
        4 => (&exp_digits[..2], &exp_digits[2..]),
        6 => (&exp_digits[..2], &exp_digits[2..]),
        _ => {
            return Err(card_error(
                "Your card's expiration date is incomplete.",
                "exp",
            ));
        }
    };
    let month: i64 = month.parse().unwrap_or(0);
    let mut year: i64 = year.parse().unwrap_or(0);
    if year < 100 {
        year += 2000;
    }
    if !(1..=12).contains(&month) {
        return Err(card_error("Your card's expiration date is invalid.", "exp"));
    }
    let this_year = 1970 + crate::state::now() / 31_556_952;
    if year < this_year {
        return Err(card_error(
            "Your card's expiration year is in the past.",
            "exp",
        ));
    }
    let cvc_digits = cvc.chars().all(|c| c.is_ascii_digit());
    if !(3..=4).contains(&cvc.len()) || !cvc_digits {
        return Err(card_error(
            "Your card's security code is incomplete.",
            "cvc",
        ));
    }
    let mut billing = Map::new();
    billing.insert("email".into(), json!(form.email));
    if !form.name.is_empty() {
        billing.insert("name".into(), json!(form.name));
    }
    Ok(form_params(vec![
        ("type", json!("card")),
        (
            "card",
            json!({"number": digits, "exp_month": month.to_string(),
                   "exp_year": year.to_string(), "cvc": cvc}),
        ),
        ("billing_details", Value::Object(billing)),
    ]))
}

fn form_params(pairs: Vec<(&str, Value)>) -> Params {
    form(pairs)
}

/// Where the buyer goes once the session is complete: `success_url` with
/// `{CHECKOUT_SESSION_ID}` filled in, or a confirmation page when there is none.
fn after_payment(sess: &Value) -> Response {
    let id = s(&sess["id"]);
    if let Some(url) = sess["success_url"].as_str() {
        let target = url.replace("{CHECKOUT_SESSION_ID}", &id);
        if let Some(r) = see_other(&target) {
            return r;
        }
    }
    simple_page(
        StatusCode::OK,
        "Thanks for your order",
        "<p role=\"status\">Your payment is complete. You can close this page.</p>",
    )
}

fn see_other(url: &str) -> Option<Response> {
    let location = HeaderValue::from_str(url).ok()?;
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(r)
}

/// The checkout page for `sess` (open: the form; otherwise why it cannot be paid).
fn render(status: StatusCode, sess: &Value, items: &[Value], form: &Form) -> Response {
    if sess.is_null() {
        return simple_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>This checkout page does not exist or its link is incomplete.</p>",
        );
    }
    let cur = sess["currency"].as_str().unwrap_or("usd");
    let money = |a: i64| format!("{} ({})", format_amount(a, cur), cur.to_ascii_uppercase());
    let mut lines = String::new();
    for item in items {
        let recurring = &item["price"]["recurring"];
        let per = match (
            recurring["interval"].as_str(),
            recurring["interval_count"].as_i64(),
        ) {
            (Some(i), Some(1)) => format!(" / {i}"),
            (Some(i), Some(n)) => format!(" every {n} {i}s"),
            _ => String::new(),
        };
        lines.push_str(&format!(
            "<li><span class=\"desc\">{desc} <span class=\"qty\">× {qty}</span></span><span class=\"amt\">{amount}{per}</span></li>\n",
            desc = esc(item["description"].as_str().unwrap_or_default()),
            qty = item["quantity"].as_i64().unwrap_or(1),
            amount = esc(&format_amount(item["amount_total"].as_i64().unwrap_or(0), cur)),
            per = esc(&per),
        ));
    }
    let total = sess["amount_total"].as_i64().unwrap_or(0);
    let subscription = sess["mode"] == "subscription";
    let summary = format!(
        "<ul class=\"lines\">\n{lines}</ul>\n<p class=\"total\"><span>{label}</span><strong>{total}</strong></p>",
        label = if subscription {
            "Total due today"
        } else {
            "Total"
        },
        total = esc(&money(total)),
    );
    let back = sess["cancel_url"]
        .as_str()
        .map(|u| format!("<p class=\"back\"><a href=\"{}\">← Back</a></p>", esc(u)))
        .unwrap_or_default();
    let body = match sess["status"].as_str() {
        Some("open") => {
            let error = form
                .error
                .as_deref()
                .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
                .unwrap_or_default();
            let button = if subscription {
                "Subscribe".to_string()
            } else {
                format!("Pay {}", format_amount(total, cur))
            };
            format!(
                r#"{back}{summary}
<form method="post" action="{action}" autocomplete="on" novalidate>
{error}
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="email" inputmode="email" value="{email}" required>
<fieldset>
<legend>Card information</legend>
<label for="cardnumber">Card number</label>
<input id="cardnumber" name="cardnumber" autocomplete="cc-number" inputmode="numeric" placeholder="1234 1234 1234 1234" required>
<div class="row">
<div><label for="exp">Expiration (MM / YY)</label>
<input id="exp" name="exp" autocomplete="cc-exp" inputmode="numeric" placeholder="MM / YY" required></div>
<div><label for="cvc">Security code</label>
<input id="cvc" name="cvc" autocomplete="cc-csc" inputmode="numeric" placeholder="CVC" required></div>
</div>
</fieldset>
<label for="name">Name on card</label>
<input id="name" name="name" autocomplete="cc-name" value="{name}">
<button type="submit">{button}</button>
</form>
<p class="hint">Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined, 4000 0025 0000 3155 asks for 3-D Secure.</p>"#,
                action = esc(&form
                    .action
                    .clone()
                    .unwrap_or_else(|| format!("./{}", s(&sess["id"])))),
                email = esc(&form.email),
                name = esc(&form.name),
                button = esc(&button),
            )
        }
        Some("complete") => format!(
            "{summary}\n<p role=\"status\">This checkout session is complete: it has already been paid.</p>"
        ),
        _ => {
            return with_headers(
                StatusCode::GONE,
                page_html(
                    "Checkout session expired",
                    &format!(
                        "{back}<p role=\"status\">This checkout session has expired. Return to the merchant to start again.</p>"
                    ),
                ),
            );
        }
    };
    with_headers(status, page_html("Checkout", &body))
}

fn simple_page(status: StatusCode, title: &str, body: &str) -> Response {
    with_headers(status, page_html(title, body))
}

fn page_html(title: &str, body: &str) -> String {
    crate::control::html_page(title, include_str!("../../assets/checkout.css"), body)
}

/// The sandbox's private page headers, plus a policy that allows no script at all.
fn with_headers(status: StatusCode, html: String) -> Response {
    let mut r = crate::control::private_html(status, html);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_form() {
        let f = Form {
            email: "a@b.test".into(),
            ..Form::default()
        };
        assert!(card_from_form(&f, "4242 4242 4242 4242", "12 / 34", "123").is_ok());
        let e = card_from_form(&f, "4242", "13/34", "123")
            .err()
            .map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("Your card's expiration date is invalid.")
        );
        let e = card_from_form(&f, "4242", "12/34", "1")
            .err()
            .map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("Your card's security code is incomplete.")
        );
        let none = Form::default();
        let e = card_from_form(&none, "4242", "12/34", "123")
            .err()
            .map(|e| e.message);
        assert_eq!(e.as_deref(), Some("Your email is incomplete."));
    }

    #[test]
    fn amounts_do_not_overflow() {
        assert!(line_amount(i64::MAX, 2, "x").is_err());
        assert_eq!(line_amount(1999, 3, "x").ok(), Some(5997));
    }
}
