//! Subscriptions (`/v1/subscriptions`, `/v1/subscription_items`) and the billing engine that
//! test clocks drive: renewals, trial ends, payment retries (dunning), cancellation at period
//! end, expiry of unpaid first invoices.
//!
//! Objects are kept in the current API shape (periods on the items). Sandbox-only facts (when an
//! incomplete subscription expires, whether `trial_will_end` was sent) live in the hidden `_sub`
//! collection.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::test_clocks::{self, add_interval, next_boundary};
use super::{fetch, invoices, no_params, payment_methods, previous};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map, list_object};

pub const KIND: &str = "subscription";
const HIDDEN: &str = "_sub";
/// An incomplete subscription whose first invoice is not paid expires after 23 hours.
const INCOMPLETE_EXPIRES_SECS: i64 = 23 * 3600;
/// `customer.subscription.trial_will_end` is sent three days before a trial ends.
const TRIAL_WILL_END_SECS: i64 = 3 * 86_400;
/// A trial may last at most two years (730 days).
const MAX_TRIAL_SECS: i64 = 730 * 86_400;

/// A `trial_end` timestamp: in the future, at most two years ahead.
fn check_trial_end(t: i64, now: i64) -> Result<()> {
    if t > now + MAX_TRIAL_SECS {
        return Err(StripeError::invalid(
            "Invalid timestamp: can be no more than two years in the future.",
        )
        .param("trial_end"));
    }
    if t <= now {
        return Err(StripeError::invalid(
            "Invalid timestamp: must be an integer Unix timestamp in the future.",
        )
        .param("trial_end"));
    }
    Ok(())
}
/// The largest quantity of one item.
const MAX_QUANTITY: i64 = 1_000_000;
const LIVE: &[&str] = &[
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
];

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    fetch(ctx, KIND, id, "subscription")
}

fn hidden(ctx: &mut Ctx, id: &str) -> Value {
    ctx.get(HIDDEN, id).unwrap_or_else(|| json!({"id": id}))
}

fn set_hidden(ctx: &mut Ctx, id: &str, key: &str, v: Value) {
    let mut h = hidden(ctx, id);
    h[key] = v;
    ctx.put(HIDDEN, h);
}

/// `(start, end)` of the current period (from the first item).
pub fn period(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}

fn interval(sub: &Value) -> (String, i64) {
    let r = &sub["items"]["data"][0]["price"]["recurring"];
    (
        r["interval"].as_str().unwrap_or("month").to_string(),
        r["interval_count"].as_i64().unwrap_or(1).max(1),
    )
}

fn set_period(sub: &mut Value, start: i64, end: i64) {
    if let Some(items) = sub["items"]["data"].as_array_mut() {
        for it in items {
            it["current_period_start"] = json!(start);
            it["current_period_end"] = json!(end);
        }
    }
}

/// The legacy `plan` view of a recurring price (still on subscription items).
fn plan_of(price: &Value) -> Value {
    let r = &price["recurring"];
    json!({
        "id": price["id"], "object": "plan", "active": price["active"],
        "amount": price["unit_amount"], "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"], "created": price["created"],
        "currency": price["currency"], "interval": r["interval"],
        "interval_count": r["interval_count"], "livemode": false, "metadata": price["metadata"],
        "meter": r["meter"], "nickname": price["nickname"], "product": price["product"],
        "tiers_mode": null, "transform_usage": null, "trial_period_days": r["trial_period_days"],
        "usage_type": r["usage_type"],
    })
}

fn new_item(ctx: &Ctx, sub: &str, price: &Value, qty: i64, md: Value, period: (i64, i64)) -> Value {
    json!({
        "id": new_id("si").chars().take(17).collect::<String>(), "object": "subscription_item",
        "billing_thresholds": null, "created": ctx.now, "current_period_end": period.1,
        "current_period_start": period.0, "discounts": [], "metadata": md,
        "plan": plan_of(price), "price": price, "quantity": qty, "subscription": sub,
        "tax_rates": [],
    })
}

/// A recurring, active price compatible with the others (`param` names it in errors).
fn recurring_price(ctx: &mut Ctx, id: &str, param: &str) -> Result<Value> {
    let price = fetch(ctx, "price", id, param)?;
    if price["type"] != "recurring" {
        return Err(StripeError::invalid(
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
        )
        .param(param));
    }
    if price["active"] != true {
        return Err(StripeError::invalid(
            "The price specified is inactive. This field only accepts active prices.",
        )
        .param(param));
    }
    Ok(price)
}

/// A payment method usable for the customer: `pm_card_*` shortcuts are made and attached.
fn customer_pm(ctx: &mut Ctx, customer: &str, pm: &str, param: &str) -> Result<String> {
    let obj = payment_methods::resolve(ctx, pm, param)?;
    let id = s(&obj["id"]);
    if obj["customer"].is_null() {
        payment_methods::attach_to(ctx, &id, customer)?;
    } else if obj["customer"] != customer {
        return Err(StripeError::invalid(format!(
            "The customer does not have a payment method with the ID {pm}. The payment method must be attached to the customer."
        ))
        .code("resource_missing")
        .param(param));
    }
    Ok(id)
}

/// What a new subscription starts with.
pub(crate) struct Start {
    pub items: Vec<(Value, i64, Value)>,
    pub default_payment_method: Option<String>,
    /// `allow_incomplete`, `default_incomplete`, `error_if_incomplete`, `pending_if_incomplete`.
    pub behavior: String,
    pub trial_end: Option<i64>,
    pub metadata: Value,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub collection_method: String,
    pub days_until_due: Option<i64>,
    pub description: Option<String>,
    pub missing_pm: String,
    pub off_session: bool,
    /// Emit `customer.subscription.created` before the first payment (status `incomplete`, then
    /// `updated` to `active`), as Checkout does; otherwise after it, with the status it ends in
    /// (as a direct API create does).
    pub announce_first: bool,
}

/// Creates a subscription and its first invoice (paid, or left as the behaviour says). Runs at
/// the customer's time. A decline with `error_if_incomplete` undoes everything and answers the
/// card error.
pub(crate) fn start(ctx: &mut Ctx, customer: &Value, st: Start) -> Result<(Value, Value)> {
    let cus_id = s(&customer["id"]);
    test_clocks::for_customer(ctx, &cus_id, |ctx| start_now(ctx, customer, st))
}

fn start_now(ctx: &mut Ctx, customer: &Value, st: Start) -> Result<(Value, Value)> {
    let mark = ctx.effects.mark();
    let now = ctx.now;
    let cus_id = s(&customer["id"]);
    let id = new_id("sub");
    let first = &st.items[0].0;
    let (iv, count) = (
        first["recurring"]["interval"]
            .as_str()
            .unwrap_or("month")
            .to_string(),
        first["recurring"]["interval_count"]
            .as_i64()
            .unwrap_or(1)
            .max(1),
    );
    let currency = s(&first["currency"]);
    let trial_end = st.trial_end.filter(|t| *t > now);
    let anchor = trial_end.unwrap_or(now);
    let end = trial_end.unwrap_or_else(|| add_interval(now, &iv, count, 1));
    let items: Vec<Value> = st
        .items
        .iter()
        .map(|(price, qty, md)| new_item(ctx, &id, price, *qty, md.clone(), (now, end)))
        .collect();
    let mut sub = json!({
        "id": id, "object": "subscription", "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": anchor, "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": null, "type": "classic"}, "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": st.cancel_at.or(if st.cancel_at_period_end { Some(end) } else { None }),
        "cancel_at_period_end": st.cancel_at_period_end,
        "canceled_at": if st.cancel_at_period_end { json!(now) } else { Value::Null },
        "cancellation_details": {"comment": null, "feedback": null,
            "reason": if st.cancel_at_period_end { json!("cancellation_requested") } else { Value::Null }},
        "collection_method": st.collection_method, "created": now, "currency": currency,
        "customer": cus_id, "customer_account": null, "days_until_due": st.days_until_due,
        "default_payment_method": st.default_payment_method, "default_source": null,
        "default_tax_rates": [], "description": st.description, "discounts": [],
        "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "custom_fields": null, "description": null,
                             "footer": null, "issuer": {"type": "self"}},
        "items": list_object(&format!("/v1/subscription_items?subscription={id}"), items, false),
        "latest_invoice": null, "livemode": false, "managed_payments": null,
        "metadata": st.metadata, "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null, "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null,
                              "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null, "pending_setup_intent": null,
        "pending_update": null, "schedule": null, "start_date": now,
        "status": if trial_end.is_some() { "trialing" } else { "incomplete" },
        "test_clock": customer["test_clock"], "transfer_data": null,
        "trial_end": trial_end, "trial_settings": {"end_behavior": {"missing_payment_method": st.missing_pm}},
        "trial_start": trial_end.map(|_| now),
    });
    ctx.put(KIND, sub.clone());
    // Unless `announce_first`, `customer.subscription.created` goes out once the first payment
    // attempt is over, with the status it ends in (no `updated` for that incomplete → active).
    if st.announce_first {
        ctx.emit("customer.subscription.created", &sub, None);
    } else {
        set_hidden(ctx, &id, "creating", json!(true));
    }

    let mut inv =
        invoices::new_invoice(ctx, customer, Some(&sub), "subscription_create", &currency);
    let inv_id = s(&inv["id"]);
    for item in sub["items"]["data"].as_array().cloned().unwrap_or_default() {
        let line = invoices::subscription_line(ctx, &inv_id, &sub, &item, (now, end));
        if let Some(arr) = inv["lines"]["data"].as_array_mut() {
            arr.push(line);
        }
    }
    invoices::pull_pending(ctx, &mut inv, Some(&id));
    invoices::recompute(&mut inv);
    inv["period_start"] = json!(now);
    inv["period_end"] = json!(now);
    if st.collection_method == "send_invoice" {
        inv["due_date"] =
            json!(now.saturating_add(st.days_until_due.unwrap_or(30).saturating_mul(86_400)));
    }
    sub["latest_invoice"] = json!(inv_id);
    ctx.put(KIND, sub.clone());
    invoices::create_draft(ctx, inv);
    let finalized = invoices::finalize_now(ctx, &inv_id);
    if let Err(e) = finalized {
        ctx.effects.roll_back_to(ctx.state, mark);
        return Err(e);
    }
    if get(ctx, &id)?["status"] == "incomplete" {
        set_hidden(
            ctx,
            &id,
            "incomplete_expires",
            json!(now + INCOMPLETE_EXPIRES_SECS),
        );
    }
    let inv = invoices::get_invoice(ctx, &inv_id)?;
    let automatic = st.collection_method == "charge_automatically";
    if inv["status"] == "open" && automatic && st.behavior != "default_incomplete" {
        match invoices::attempt(ctx, &inv_id, None, st.off_session) {
            Ok(_) => {}
            Err(e) if e.status == StatusCode::PAYMENT_REQUIRED => {
                if st.behavior == "error_if_incomplete" {
                    ctx.effects.roll_back_to(ctx.state, mark);
                    return Err(e);
                }
            }
            Err(e) => {
                ctx.effects.roll_back_to(ctx.state, mark);
                return Err(e);
            }
        }
        if st.behavior == "error_if_incomplete"
            && invoices::get_invoice(ctx, &inv_id)?["status"] != "paid"
        {
            ctx.effects.roll_back_to(ctx.state, mark);
            return Err(StripeError::new(
                StatusCode::PAYMENT_REQUIRED,
                "card_error",
                "Your card was declined. This transaction requires authentication.",
            )
            .code("authentication_required"));
        }
    }
    let sub = get(ctx, &id)?;
    if !st.announce_first {
        set_hidden(ctx, &id, "creating", json!(false));
        ctx.emit("customer.subscription.created", &sub, None);
    }
    Ok((sub, invoices::get_invoice(ctx, &inv_id)?))
}

/// For Checkout in subscription mode: a subscription (charge_automatically) for `customer` with
/// its first invoice paid with `payment_method` (attached to the customer and made the
/// subscription's default), every event emitted. A decline undoes the attempt's writes and
/// answers Stripe's card error.
pub(crate) fn create_from_checkout(
    ctx: &mut Ctx,
    customer: &str,
    items: &[(String, i64)],
    payment_method: &str,
    metadata: &Map<String, Value>,
    trial_period_days: Option<i64>,
) -> Result<(Value, Value)> {
    let mark = ctx.effects.mark();
    let out = (|| {
        let cus = fetch(ctx, "customer", customer, "customer")?;
        if items.is_empty() {
            return Err(StripeError::missing_param("line_items"));
        }
        let mut list = Vec::new();
        for (i, (price, qty)) in items.iter().enumerate() {
            let p = recurring_price(ctx, price, &format!("line_items[{i}][price]"))?;
            list.push((p, (*qty).max(1), empty_map()));
        }
        check_items(&list)?;
        let pm = customer_pm(ctx, customer, payment_method, "payment_method")?;
        let now = test_clocks::now_for(ctx, customer);
        start(
            ctx,
            &cus,
            Start {
                items: list,
                default_payment_method: Some(pm),
                behavior: "error_if_incomplete".into(),
                trial_end: trial_period_days
                    .filter(|d| *d > 0)
                    .map(|d| now + d.min(730) * 86_400),
                metadata: Value::Object(metadata.clone()),
                cancel_at_period_end: false,
                cancel_at: None,
                collection_method: "charge_automatically".into(),
                days_until_due: None,
                description: None,
                missing_pm: "create_invoice".into(),
                off_session: false,
                announce_first: true,
            },
        )
    })();
    if out.is_err() {
        ctx.effects.roll_back_to(ctx.state, mark);
    }
    out
}

/// Every item must share one currency and billing interval.
fn check_items(items: &[(Value, i64, Value)]) -> Result<()> {
    let Some((first, _, _)) = items.first() else {
        return Err(StripeError::missing_param("items"));
    };
    for (p, q, _) in items {
        if p["currency"] != first["currency"] {
            return Err(
                StripeError::invalid("Currency of all items must be the same.").param("items"),
            );
        }
        if p["recurring"]["interval"] != first["recurring"]["interval"]
            || p["recurring"]["interval_count"] != first["recurring"]["interval_count"]
        {
            return Err(StripeError::invalid(
                "Currently all items in a subscription must have the same billing interval (recurring[interval] and recurring[interval_count]).",
            )
            .param("items"));
        }
        if !(0..=MAX_QUANTITY).contains(q) {
            return Err(StripeError::invalid(format!(
                "Invalid quantity: must be between 0 and {MAX_QUANTITY}."
            ))
            .param("items"));
        }
    }
    Ok(())
}

fn read_items(ctx: &mut Ctx, p: &mut Params) -> Result<Vec<(Value, i64, Value)>> {
    let Some(list) = p.sub_list("items")? else {
        return Err(StripeError::missing_param("items"));
    };
    let mut out = Vec::new();
    for (i, mut it) in list.into_iter().enumerate() {
        let price_id = it.req_str("price")?;
        let qty = it.int("quantity")?.unwrap_or(1);
        let mut md = empty_map();
        merge_metadata(&mut md, it.metadata("metadata")?);
        it.ignore(&["tax_rates", "discounts", "billing_thresholds", "price_data"]);
        it.finish()?;
        let price = recurring_price(ctx, &price_id, &format!("items[{i}][price]"))?;
        out.push((price, qty, md));
    }
    check_items(&out)?;
    Ok(out)
}

/// `trial_end`: a timestamp or `now`.
fn trial_end_param(p: &mut Params) -> Result<Option<TrialEnd>> {
    match p.opt_str("trial_end")? {
        None => Ok(None),
        Some(v) if v == "now" => Ok(Some(TrialEnd::Now)),
        Some(v) => v
            .parse::<i64>()
            .map(|t| Some(TrialEnd::At(t)))
            .map_err(|_| StripeError::invalid_integer("trial_end", &v)),
    }
}

enum TrialEnd {
    Now,
    At(i64),
}

fn missing_pm_param(p: &mut Params) -> Result<Option<String>> {
    let Some(mut ts) = p.sub("trial_settings")? else {
        return Ok(None);
    };
    let mut out = None;
    if let Some(mut eb) = ts.sub("end_behavior")? {
        out = eb.enum_str(
            "missing_payment_method",
            &["cancel", "create_invoice", "pause"],
        )?;
        eb.finish()?;
    }
    ts.finish()?;
    Ok(out)
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    let cus = fetch(ctx, "customer", &customer, "customer")?;
    if cus["deleted"] == true {
        return Err(StripeError::missing("customer", &customer, "customer"));
    }
    let items = read_items(ctx, &mut p)?;
    let pm = p.opt_str("default_payment_method")?;
    let behavior = p
        .enum_str(
            "payment_behavior",
            &[
                "allow_incomplete",
                "default_incomplete",
                "error_if_incomplete",
                "pending_if_incomplete",
            ],
        )?
        .unwrap_or_else(|| "allow_incomplete".into());
    let trial_days = p.int("trial_period_days")?;
    let trial_end = trial_end_param(&mut p)?;
    let trial_from_plan = p.bool("trial_from_plan")?.unwrap_or(false);
    let mut md = empty_map();
    merge_metadata(&mut md, p.metadata("metadata")?);
    let cape = p.bool("cancel_at_period_end")?.unwrap_or(false);
    let cancel_at = p.int("cancel_at")?;
    let collection = p
        .enum_str(
            "collection_method",
            &["charge_automatically", "send_invoice"],
        )?
        .unwrap_or_else(|| "charge_automatically".into());
    let days = p.int("days_until_due")?;
    invoices::check_days_until_due(days)?;
    let description = p.opt_str("description")?;
    let missing = missing_pm_param(&mut p)?.unwrap_or_else(|| "create_invoice".into());
    let off_session = p.bool("off_session")?.unwrap_or(false);
    p.ignore(&[
        "add_invoice_items",
        "application_fee_percent",
        "automatic_tax",
        "backdate_start_date",
        "billing_cycle_anchor_config",
        "billing_mode",
        "billing_thresholds",
        "currency",
        "default_source",
        "default_tax_rates",
        "discounts",
        "invoice_settings",
        "on_behalf_of",
        "payment_settings",
        "pending_invoice_item_interval",
        "proration_behavior",
        "transfer_data",
        "customer_account",
    ]);
    p.finish()?;
    if collection == "send_invoice" && days.is_none() {
        return Err(StripeError::invalid(
            "Subscriptions with `send_invoice` collection method require `days_until_due`.",
        )
        .param("days_until_due"));
    }
    let now = test_clocks::now_for(ctx, &customer);
    let trial = match (trial_end, trial_days) {
        (Some(TrialEnd::Now), _) => None,
        (Some(TrialEnd::At(t)), _) => {
            check_trial_end(t, now)?;
            Some(t)
        }
        (None, Some(d)) if d > 0 => Some(now + d.min(730) * 86_400),
        (None, Some(_)) => None,
        (None, None) if trial_from_plan => items[0].0["recurring"]["trial_period_days"]
            .as_i64()
            .filter(|d| *d > 0)
            .map(|d| now + d.min(730) * 86_400),
        _ => None,
    };
    let pm = match pm {
        Some(pm) => Some(customer_pm(ctx, &customer, &pm, "default_payment_method")?),
        None => None,
    };
    let has_pm = pm.is_some() || !cus["invoice_settings"]["default_payment_method"].is_null();
    if !has_pm
        && trial.is_none()
        && collection == "charge_automatically"
        && behavior != "default_incomplete"
        && items
            .iter()
            .any(|(p, q, _)| p["unit_amount"].as_i64().unwrap_or(0).saturating_mul(*q) > 0)
    {
        return Err(StripeError::invalid(
            "This customer has no attached payment source or default payment method. Please consider adding a default payment method. For more information, visit https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.",
        )
        .code("resource_missing"));
    }
    let (sub, _) = start(
        ctx,
        &cus,
        Start {
            items,
            default_payment_method: pm,
            behavior,
            trial_end: trial,
            metadata: md,
            cancel_at_period_end: cape,
            cancel_at,
            collection_method: collection,
            days_until_due: days,
            description,
            missing_pm: missing,
            off_session,
            announce_first: false,
        },
    )?;
    Ok(sub)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    get(ctx, &ids[0])
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    let status = p.enum_str(
        "status",
        &[
            "active",
            "all",
            "canceled",
            "ended",
            "incomplete",
            "incomplete_expired",
            "past_due",
            "paused",
            "trialing",
            "unpaid",
        ],
    )?;
    let price = p.opt_str("price")?;
    let clock = p.opt_str("test_clock")?;
    let cm = p.enum_str(
        "collection_method",
        &["charge_automatically", "send_invoice"],
    )?;
    for k in ["current_period_end", "current_period_start"] {
        super::range(&mut p, k)?;
    }
    p.ignore(&["automatic_tax", "customer_account", "plan"]);
    super::list(ctx, p, KIND, "/v1/subscriptions", |o| {
        let st = o["status"].as_str().unwrap_or_default();
        let status_ok = match status.as_deref() {
            None => st != "canceled" && st != "incomplete_expired",
            Some("all") => true,
            Some("ended") => st == "canceled" || st == "incomplete_expired",
            Some(x) => st == x,
        };
        status_ok
            && customer.as_deref().is_none_or(|c| o["customer"] == c)
            && clock.as_deref().is_none_or(|c| o["test_clock"] == c)
            && cm.as_deref().is_none_or(|c| o["collection_method"] == c)
            && price.as_deref().is_none_or(|pr| {
                o["items"]["data"]
                    .as_array()
                    .is_some_and(|its| its.iter().any(|it| it["price"]["id"] == pr))
            })
    })
}

pub fn update(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let sub = get(ctx, &ids[0])?;
    let customer = s(&sub["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| update_now(ctx, p, &ids[0]))
}

fn update_now(ctx: &mut Ctx, mut p: Params, id: &str) -> Result<Value> {
    let before = get(ctx, id)?;
    let status = s(&before["status"]);
    let mut sub = before.clone();
    let customer = s(&sub["customer"]);
    if status == "canceled" || status == "incomplete_expired" {
        let md = p.metadata("metadata")?;
        let cd = p.sub("cancellation_details")?;
        if let Some(mut cd) = cd {
            for k in ["comment", "feedback"] {
                if let Some(v) = cd.str(k)? {
                    sub["cancellation_details"][k] =
                        if v.is_empty() { Value::Null } else { json!(v) };
                }
            }
            cd.finish()?;
        }
        p.finish().map_err(|_| {
            StripeError::invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        })?;
        merge_metadata(&mut sub["metadata"], md);
        ctx.put(KIND, sub.clone());
        ctx.emit(
            "customer.subscription.updated",
            &sub,
            Some(previous(&before, &sub)),
        );
        return Ok(sub);
    }
    let proration = p
        .enum_str(
            "proration_behavior",
            &["always_invoice", "create_prorations", "none"],
        )?
        .unwrap_or_else(|| "create_prorations".into());
    let item_params = p.sub_list("items")?;
    let cape = p.bool("cancel_at_period_end")?;
    let cancel_at = p.str("cancel_at")?;
    merge_metadata(&mut sub["metadata"], p.metadata("metadata")?);
    if let Some(pm) = p.str("default_payment_method")? {
        sub["default_payment_method"] = if pm.is_empty() {
            Value::Null
        } else {
            json!(customer_pm(ctx, &customer, &pm, "default_payment_method")?)
        };
    }
    if let Some(d) = p.str("description")? {
        sub["description"] = if d.is_empty() { Value::Null } else { json!(d) };
    }
    let trial_end = trial_end_param(&mut p)?;
    if let Some(m) = missing_pm_param(&mut p)? {
        sub["trial_settings"]["end_behavior"]["missing_payment_method"] = json!(m);
    }
    if let Some(mut cd) = p.sub("cancellation_details")? {
        for k in ["comment", "feedback"] {
            if let Some(v) = cd.str(k)? {
                sub["cancellation_details"][k] = if v.is_empty() { Value::Null } else { json!(v) };
            }
        }
        cd.finish()?;
    }
    if p.has("pause_collection") {
        if p.is_hash("pause_collection") {
            if let Some(mut pc) = p.sub("pause_collection")? {
                let b = pc
                    .enum_str("behavior", &["keep_as_draft", "mark_uncollectible", "void"])?
                    .ok_or_else(|| StripeError::missing_param("pause_collection[behavior]"))?;
                let resumes = pc.int("resumes_at")?;
                pc.finish()?;
                sub["pause_collection"] = json!({"behavior": b, "resumes_at": resumes});
            }
        } else {
            p.str("pause_collection")?;
            sub["pause_collection"] = Value::Null;
        }
    }
    let off_session = p.bool("off_session")?.unwrap_or(true);
    p.ignore(&[
        "payment_behavior",
        "proration_date",
        "automatic_tax",
        "billing_cycle_anchor",
        "billing_thresholds",
        "collection_method",
        "days_until_due",
        "default_source",
        "default_tax_rates",
        "discounts",
        "invoice_settings",
        "on_behalf_of",
        "payment_settings",
        "pending_invoice_item_interval",
        "transfer_data",
        "trial_from_plan",
        "add_invoice_items",
    ]);
    p.finish()?;

    let (start, end) = period(&sub);
    let now = ctx.now;
    // Items: change price / quantity, add, delete.
    let mut changes: Vec<(Option<Value>, Option<Value>)> = Vec::new();
    if let Some(list) = item_params {
        let mut items = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        for (i, mut it) in list.into_iter().enumerate() {
            let iid = it.opt_str("id")?;
            let price_id = it.opt_str("price")?;
            let qty = it.int("quantity")?;
            let deleted = it.bool("deleted")?.unwrap_or(false);
            let md = it.metadata("metadata")?;
            it.ignore(&[
                "tax_rates",
                "discounts",
                "billing_thresholds",
                "price_data",
                "clear_usage",
            ]);
            it.finish()?;
            let price = match &price_id {
                Some(pid) => Some(recurring_price(ctx, pid, &format!("items[{i}][price]"))?),
                None => None,
            };
            match iid {
                Some(iid) => {
                    let pos = items
                        .iter()
                        .position(|x| x["id"] == iid.as_str())
                        .ok_or_else(|| {
                            StripeError::missing(
                                "subscription_item",
                                &iid,
                                &format!("items[{i}][id]"),
                            )
                        })?;
                    let old = items[pos].clone();
                    if deleted {
                        items.remove(pos);
                        changes.push((Some(old), None));
                        continue;
                    }
                    let mut new = old.clone();
                    if let Some(pr) = price {
                        new["plan"] = plan_of(&pr);
                        new["price"] = pr;
                    }
                    if let Some(q) = qty {
                        new["quantity"] = json!(q);
                    }
                    merge_metadata(&mut new["metadata"], md);
                    if new["price"] != old["price"] || new["quantity"] != old["quantity"] {
                        changes.push((Some(old), Some(new.clone())));
                    }
                    items[pos] = new;
                }
                None => {
                    let pr = price
                        .ok_or_else(|| StripeError::missing_param(&format!("items[{i}][price]")))?;
                    let mut m = empty_map();
                    merge_metadata(&mut m, md);
                    let new = new_item(ctx, id, &pr, qty.unwrap_or(1), m, (start, end));
                    changes.push((None, Some(new.clone())));
                    items.push(new);
                }
            }
        }
        if items.is_empty() {
            return Err(StripeError::invalid(
                "A subscription must have at least one active plan. To cancel a subscription, send a DELETE request.",
            )
            .param("items"));
        }
        let check: Vec<(Value, i64, Value)> = items
            .iter()
            .map(|it| {
                (
                    it["price"].clone(),
                    it["quantity"].as_i64().unwrap_or(1),
                    Value::Null,
                )
            })
            .collect();
        check_items(&check)?;
        sub["items"]["data"] = json!(items);
    }
    if let Some(c) = cape {
        sub["cancel_at_period_end"] = json!(c);
        if c {
            sub["cancel_at"] = json!(end);
            sub["canceled_at"] = json!(now);
            sub["cancellation_details"]["reason"] = json!("cancellation_requested");
        } else {
            sub["cancel_at"] = Value::Null;
            sub["canceled_at"] = Value::Null;
            sub["cancellation_details"]["reason"] = Value::Null;
        }
    }
    if let Some(ca) = cancel_at {
        if ca.is_empty() {
            sub["cancel_at"] = Value::Null;
            sub["cancel_at_period_end"] = json!(false);
            sub["canceled_at"] = Value::Null;
        } else {
            let t = ca
                .parse::<i64>()
                .map_err(|_| StripeError::invalid_integer("cancel_at", &ca))?;
            sub["cancel_at"] = json!(t);
            sub["canceled_at"] = json!(now);
            sub["cancellation_details"]["reason"] = json!("cancellation_requested");
        }
    }
    let mut end_trial = false;
    match trial_end {
        Some(TrialEnd::Now) if status == "trialing" => end_trial = true,
        Some(TrialEnd::At(t)) if status == "trialing" => {
            check_trial_end(t, now)?;
            sub["trial_end"] = json!(t);
            set_period(&mut sub, start, t);
            sub["billing_cycle_anchor"] = json!(t);
        }
        _ => {}
    }
    ctx.put(KIND, sub.clone());
    ctx.emit(
        "customer.subscription.updated",
        &sub,
        Some(previous(&before, &sub)),
    );

    // Prorations for price / quantity changes during a paid period.
    let billable = matches!(status.as_str(), "active" | "past_due") && now < end && now >= start;
    if billable && proration != "none" && !changes.is_empty() {
        let total = (end - start).max(1);
        let left = end - now;
        for (old, new) in &changes {
            if let Some(o) = old {
                let amt = o["price"]["unit_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    .saturating_mul(o["quantity"].as_i64().unwrap_or(1));
                let credit = -((amt as i128 * left as i128 / total as i128) as i64);
                let name = product_label(ctx, o);
                invoices::proration_item(
                    ctx,
                    &sub,
                    o,
                    credit,
                    format!("Unused time on {name}"),
                    (now, end),
                );
            }
            if let Some(n) = new {
                let amt = n["price"]["unit_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    .saturating_mul(n["quantity"].as_i64().unwrap_or(1));
                let charge = (amt as i128 * left as i128 / total as i128) as i64;
                let name = product_label(ctx, n);
                invoices::proration_item(
                    ctx,
                    &sub,
                    n,
                    charge,
                    format!("Remaining time on {name}"),
                    (now, end),
                );
            }
        }
        if proration == "always_invoice" {
            let inv = cycle_invoice(ctx, id, "subscription_update", None)?;
            let _ = pay_cycle_invoice(ctx, &inv, off_session);
        }
    }
    if end_trial {
        end_trial_now(ctx, id, "subscription_update");
    }
    get(ctx, id)
}

fn product_label(ctx: &mut Ctx, item: &Value) -> String {
    let name = item["price"]["product"]
        .as_str()
        .and_then(|p| ctx.get("product", p))
        .and_then(|p| p["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| "Item".into());
    format!("{} × {name}", item["quantity"].as_i64().unwrap_or(1))
}

/// `DELETE /v1/subscriptions/{id}`: ends it now.
pub fn cancel(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let invoice_now = p.bool("invoice_now")?.unwrap_or(false);
    let _prorate = p.bool("prorate")?;
    let mut details = (None, None);
    if let Some(mut cd) = p.sub("cancellation_details")? {
        details.0 = cd.opt_str("comment")?;
        details.1 = cd.enum_str(
            "feedback",
            &[
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ],
        )?;
        cd.finish()?;
    }
    p.finish()?;
    let sub = get(ctx, &ids[0])?;
    if !LIVE.contains(&sub["status"].as_str().unwrap_or_default()) {
        return Err(StripeError::invalid(
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    let customer = s(&sub["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        if invoice_now {
            let inv = cycle_invoice_pending_only(ctx, &ids[0])?;
            if let Some(inv) = inv {
                let _ = pay_cycle_invoice(ctx, &inv, true);
            }
        }
        cancel_now(ctx, &ids[0], "cancellation_requested", details.0, details.1);
        get(ctx, &ids[0])
    })
}

/// Ends a subscription now (`customer.subscription.deleted`); its open invoices stop retrying.
pub fn cancel_now(
    ctx: &mut Ctx,
    id: &str,
    reason: &str,
    comment: Option<String>,
    feedback: Option<String>,
) {
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    if !LIVE.contains(&before["status"].as_str().unwrap_or_default()) {
        return;
    }
    let mut sub = before.clone();
    let was_incomplete = before["status"] == "incomplete";
    sub["status"] = json!("canceled");
    if sub["canceled_at"].is_null() || reason != "cancellation_requested" {
        sub["canceled_at"] = json!(ctx.now);
    }
    sub["ended_at"] = json!(ctx.now);
    sub["cancellation_details"]["reason"] = json!(reason);
    if comment.is_some() {
        sub["cancellation_details"]["comment"] = json!(comment);
    }
    if feedback.is_some() {
        sub["cancellation_details"]["feedback"] = json!(feedback);
    }
    ctx.put(KIND, sub.clone());
    stop_retries(ctx, id, was_incomplete);
    ctx.emit(
        "customer.subscription.deleted",
        &sub,
        Some(previous(&before, &sub)),
    );
}

/// Open invoices of the subscription stop retrying (an incomplete one is voided, as Stripe does
/// for the first invoice of a subscription that never started).
fn stop_retries(ctx: &mut Ctx, id: &str, void_open: bool) {
    let open: Vec<Value> = invoices_of(ctx, id)
        .into_iter()
        .filter(|i| i["status"] == "open")
        .collect();
    for before in open {
        let iid = s(&before["id"]);
        if void_open {
            let _ = invoices::void_now(ctx, &iid);
        } else if !before["next_payment_attempt"].is_null() {
            let mut inv = before.clone();
            inv["next_payment_attempt"] = Value::Null;
            ctx.put(invoices::KIND, inv.clone());
            ctx.emit("invoice.updated", &inv, Some(previous(&before, &inv)));
        }
    }
}

fn invoices_of(ctx: &mut Ctx, sub: &str) -> Vec<Value> {
    ctx.acct()
        .collection(invoices::KIND)
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|i| c.objects.get(i))
                .filter(|i| invoices::subscription_of(i) == Some(sub))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Ends every live subscription of a customer (its clock or itself being deleted).
pub fn end_all_for_customer(ctx: &mut Ctx, customer: &str) {
    for id in subs_of(ctx, &[customer.to_string()]) {
        cancel_now(ctx, &id, "cancellation_requested", None, None);
    }
}

fn subs_of(ctx: &mut Ctx, customers: &[String]) -> Vec<String> {
    ctx.acct()
        .collection(KIND)
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|i| c.objects.get(i))
                .filter(|o| {
                    customers.iter().any(|cu| o["customer"] == cu.as_str())
                        && LIVE.contains(&o["status"].as_str().unwrap_or_default())
                })
                .map(|o| s(&o["id"]))
                .collect()
        })
        .unwrap_or_default()
}

/// The shortest billing interval among a clock's live subscriptions.
pub fn shortest_interval(ctx: &mut Ctx, clock: &str) -> Option<(String, i64)> {
    let customers = test_clocks::customers_on(ctx, clock);
    let subs = subs_of(ctx, &customers);
    let mut best: Option<(i64, (String, i64))> = None;
    for id in subs {
        let Some(sub) = ctx.get(KIND, &id) else {
            continue;
        };
        let (iv, count) = interval(&sub);
        // Compare by length from a fixed point (months differ in length).
        let len = add_interval(0, &iv, count, 1);
        if best.as_ref().is_none_or(|(l, _)| len < *l) {
            best = Some((len, (iv, count)));
        }
    }
    best.map(|(_, x)| x)
}

// ---- the billing engine -------------------------------------------------------------------------

/// When the subscription next needs the engine (renewal, trial end, cancellation, expiry).
fn due_at(ctx: &mut Ctx, sub: &Value) -> Option<i64> {
    let id = s(&sub["id"]);
    let (_, end) = period(sub);
    match sub["status"].as_str()? {
        "incomplete" => hidden(ctx, &id)["incomplete_expires"].as_i64(),
        "trialing" => {
            let te = sub["trial_end"].as_i64()?;
            let warn = te - TRIAL_WILL_END_SECS;
            if hidden(ctx, &id)["trial_will_end_sent"] != true && warn > sub["created"].as_i64()? {
                Some(warn)
            } else {
                Some(te)
            }
        }
        "active" | "past_due" | "unpaid" => {
            let cancel = sub["cancel_at"].as_i64().filter(|c| *c < end);
            Some(cancel.unwrap_or(end))
        }
        _ => None,
    }
}

fn open_retries(ctx: &mut Ctx, customers: &[String]) -> Vec<(i64, String)> {
    ctx.acct()
        .collection(invoices::KIND)
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|i| c.objects.get(i))
                .filter(|i| {
                    i["status"] == "open" && customers.iter().any(|cu| i["customer"] == cu.as_str())
                })
                .filter_map(|i| Some((i["next_payment_attempt"].as_i64()?, s(&i["id"]))))
                .collect()
        })
        .unwrap_or_default()
}

/// The earliest billing moment of these customers at or before `until`.
pub fn next_due(ctx: &mut Ctx, customers: &[String], until: i64) -> Option<i64> {
    let mut best: Option<i64> = None;
    for id in subs_of(ctx, customers) {
        if let Some(sub) = ctx.get(KIND, &id)
            && let Some(t) = due_at(ctx, &sub)
            && t <= until
        {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
    }
    for (t, _) in open_retries(ctx, customers) {
        if t <= until {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
    }
    best
}

/// Performs everything due at or before `t` (`ctx.now` is `t`).
pub fn run_due(ctx: &mut Ctx, customers: &[String], t: i64) {
    for (at, inv) in open_retries(ctx, customers) {
        if at <= t {
            retry(ctx, &inv);
        }
    }
    for id in subs_of(ctx, customers) {
        let Some(sub) = ctx.get(KIND, &id) else {
            continue;
        };
        let Some(due) = due_at(ctx, &sub) else {
            continue;
        };
        if due > t {
            continue;
        }
        match sub["status"].as_str().unwrap_or_default() {
            "incomplete" => expire_incomplete(ctx, &id),
            "trialing" => {
                if sub["trial_end"].as_i64() == Some(due) {
                    end_trial_now(ctx, &id, "subscription_cycle");
                } else {
                    set_hidden(ctx, &id, "trial_will_end_sent", json!(true));
                    ctx.emit("customer.subscription.trial_will_end", &sub, None);
                }
            }
            _ => {
                let (_, end) = period(&sub);
                if sub["cancel_at"].as_i64().is_some_and(|c| c <= end) {
                    cancel_now(ctx, &id, "cancellation_requested", None, None);
                } else {
                    renew(ctx, &id);
                }
            }
        }
    }
}

fn retry(ctx: &mut Ctx, inv: &str) {
    match invoices::attempt(ctx, inv, None, true) {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::PAYMENT_REQUIRED => {}
        Err(_) => {
            // Not attemptable (no intent, wrong state): stop retrying rather than loop.
            if let Some(mut i) = ctx.get(invoices::KIND, inv)
                && !i["next_payment_attempt"].is_null()
            {
                i["next_payment_attempt"] = Value::Null;
                ctx.put(invoices::KIND, i);
            }
        }
    }
}

fn expire_incomplete(ctx: &mut Ctx, id: &str) {
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    let mut sub = before.clone();
    sub["status"] = json!("incomplete_expired");
    sub["ended_at"] = json!(ctx.now);
    ctx.put(KIND, sub.clone());
    stop_retries(ctx, id, true);
    ctx.emit(
        "customer.subscription.deleted",
        &sub,
        Some(previous(&before, &sub)),
    );
}

/// A new invoice for the subscription's current period (`reason`), pending items included.
fn cycle_invoice(
    ctx: &mut Ctx,
    id: &str,
    reason: &str,
    lines: Option<(i64, i64)>,
) -> Result<String> {
    let sub = get(ctx, id)?;
    let customer = s(&sub["customer"]);
    let cus = fetch(ctx, "customer", &customer, "customer")?;
    let currency = s(&sub["currency"]);
    let mut inv = invoices::new_invoice(ctx, &cus, Some(&sub), reason, &currency);
    let inv_id = s(&inv["id"]);
    if let Some(per) = lines {
        for item in sub["items"]["data"].as_array().cloned().unwrap_or_default() {
            let line = invoices::subscription_line(ctx, &inv_id, &sub, &item, per);
            if let Some(arr) = inv["lines"]["data"].as_array_mut() {
                arr.push(line);
            }
        }
    }
    invoices::pull_pending(ctx, &mut inv, Some(id));
    invoices::recompute(&mut inv);
    let (ps, _) = period(&sub);
    inv["period_start"] = json!(ps.min(ctx.now));
    inv["period_end"] = json!(ctx.now);
    if sub["collection_method"] == "send_invoice" {
        inv["due_date"] = json!(
            ctx.now.saturating_add(
                sub["days_until_due"]
                    .as_i64()
                    .unwrap_or(30)
                    .saturating_mul(86_400),
            )
        );
    }
    invoices::create_draft(ctx, inv);
    let before = get(ctx, id)?;
    let mut after = before.clone();
    after["latest_invoice"] = json!(inv_id);
    ctx.put(KIND, after);
    Ok(inv_id)
}

/// An invoice of only the pending items (cancel with `invoice_now`), if there are any.
fn cycle_invoice_pending_only(ctx: &mut Ctx, id: &str) -> Result<Option<String>> {
    let inv = cycle_invoice(ctx, id, "subscription_update", None)?;
    let lines = invoices::get_invoice(ctx, &inv)?["lines"]["data"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    if lines == 0 {
        let _ = invoices::delete_draft(ctx, &inv);
        return Ok(None);
    }
    Ok(Some(inv))
}

/// Finalizes and (for `charge_automatically`) attempts the invoice; failures are recorded.
fn pay_cycle_invoice(ctx: &mut Ctx, inv: &str, off_session: bool) -> Result<()> {
    let out = invoices::finalize_now(ctx, inv)?;
    if out["status"] == "open" && out["collection_method"] == "charge_automatically" {
        match invoices::attempt(ctx, inv, None, off_session) {
            Ok(_) => {}
            Err(e) if e.status == StatusCode::PAYMENT_REQUIRED => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The period ended: a new period and its invoice (billing_reason `subscription_cycle`).
fn renew(ctx: &mut Ctx, id: &str) {
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    let (_, end) = period(&before);
    let (iv, count) = interval(&before);
    let anchor = before["billing_cycle_anchor"].as_i64().unwrap_or(end);
    let next = next_boundary(anchor, &iv, count, end);
    let mut sub = before.clone();
    set_period(&mut sub, end, next);
    ctx.put(KIND, sub.clone());
    if before["status"] == "unpaid" {
        // Unpaid subscriptions keep their cycle but are not invoiced (docs/sandbox.md).
        ctx.emit(
            "customer.subscription.updated",
            &sub,
            Some(previous(&before, &sub)),
        );
        return;
    }
    let inv = match cycle_invoice(ctx, id, "subscription_cycle", Some((end, next))) {
        Ok(i) => i,
        Err(_) => return,
    };
    let after = ctx.get(KIND, id).unwrap_or(sub);
    ctx.emit(
        "customer.subscription.updated",
        &after,
        Some(previous(&before, &after)),
    );
    // Collection paused: the invoice is kept as a draft, or finalized and marked
    // uncollectible / voided, as `pause_collection.behavior` says; never charged.
    match before["pause_collection"]["behavior"].as_str() {
        Some("keep_as_draft") => {}
        Some(b) => {
            if invoices::finalize_now(ctx, &inv).is_ok_and(|i| i["status"] == "open") {
                let _ = if b == "void" {
                    invoices::void_now(ctx, &inv)
                } else {
                    invoices::uncollectible_now(ctx, &inv)
                };
            }
        }
        None => {
            let _ = pay_cycle_invoice(ctx, &inv, true);
        }
    }
}

/// The trial ends (at its time, or now with `trial_end=now`): a first paid period begins.
fn end_trial_now(ctx: &mut Ctx, id: &str, reason: &str) {
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    let now = ctx.now;
    let customer = s(&before["customer"]);
    let has_pm = !before["default_payment_method"].is_null()
        || ctx
            .get("customer", &customer)
            .is_some_and(|c| !c["invoice_settings"]["default_payment_method"].is_null());
    let behavior = before["trial_settings"]["end_behavior"]["missing_payment_method"]
        .as_str()
        .unwrap_or("create_invoice")
        .to_string();
    let mut sub = before.clone();
    sub["trial_end"] = json!(now);
    if !has_pm && behavior == "pause" {
        sub["status"] = json!("paused");
        ctx.put(KIND, sub.clone());
        ctx.emit(
            "customer.subscription.updated",
            &sub,
            Some(previous(&before, &sub)),
        );
        ctx.emit("customer.subscription.paused", &sub, None);
        return;
    }
    if !has_pm && behavior == "cancel" {
        ctx.put(KIND, sub);
        cancel_now(ctx, id, "payment_failed", None, None);
        return;
    }
    let (iv, count) = interval(&before);
    let next = add_interval(now, &iv, count, 1);
    sub["status"] = json!("active");
    sub["billing_cycle_anchor"] = json!(now);
    set_period(&mut sub, now, next);
    ctx.put(KIND, sub.clone());
    let Ok(inv) = cycle_invoice(ctx, id, reason, Some((now, next))) else {
        return;
    };
    let after = ctx.get(KIND, id).unwrap_or(sub);
    ctx.emit(
        "customer.subscription.updated",
        &after,
        Some(previous(&before, &after)),
    );
    let _ = pay_cycle_invoice(ctx, &inv, true);
}

/// `POST /v1/subscriptions/{id}/resume`: a `paused` subscription starts a new paid period now.
pub fn resume(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    p.enum_str("billing_cycle_anchor", &["now", "unchanged"])?;
    p.ignore(&["proration_behavior", "proration_date"]);
    p.finish()?;
    let sub = get(ctx, &ids[0])?;
    if sub["status"] != "paused" {
        return Err(StripeError::invalid(format!(
            "Subscription {} is not paused (its status is {}), so it cannot be resumed.",
            ids[0],
            sub["status"].as_str().unwrap_or_default()
        )));
    }
    let customer = s(&sub["customer"]);
    test_clocks::for_customer(ctx, &customer, |ctx| {
        let before = get(ctx, &ids[0])?;
        let now = ctx.now;
        let (iv, count) = interval(&before);
        let next = add_interval(now, &iv, count, 1);
        let mut sub = before.clone();
        sub["status"] = json!("active");
        sub["billing_cycle_anchor"] = json!(now);
        set_period(&mut sub, now, next);
        ctx.put(KIND, sub);
        let inv = cycle_invoice(ctx, &ids[0], "subscription_cycle", Some((now, next)))?;
        let after = get(ctx, &ids[0])?;
        ctx.emit(
            "customer.subscription.updated",
            &after,
            Some(previous(&before, &after)),
        );
        ctx.emit("customer.subscription.resumed", &after, None);
        pay_cycle_invoice(ctx, &inv, true)?;
        get(ctx, &ids[0])
    })
}

/// An invoice of the subscription was paid: it is active again (or for the first time).
pub fn on_invoice_paid(ctx: &mut Ctx, inv: &Value) {
    let Some(id) = invoices::subscription_of(inv) else {
        return;
    };
    let Some(before) = ctx.get(KIND, id) else {
        return;
    };
    if !matches!(
        before["status"].as_str(),
        Some("incomplete" | "past_due" | "unpaid")
    ) {
        return;
    }
    // Only the latest invoice decides (an old invoice paid late does not revive a newer debt).
    if before["latest_invoice"] != inv["id"] {
        return;
    }
    let mut sub = before.clone();
    sub["status"] = json!("active");
    ctx.put(KIND, sub.clone());
    if hidden(ctx, id)["creating"] == true {
        return;
    }
    ctx.emit(
        "customer.subscription.updated",
        &sub,
        Some(previous(&before, &sub)),
    );
}

/// A payment attempt of one of its invoices failed: `past_due`, and after the last retry the
/// ending chosen in the billing settings.
pub fn on_invoice_failed(ctx: &mut Ctx, inv: &Value) {
    let Some(id) = invoices::subscription_of(inv).map(str::to_string) else {
        return;
    };
    let Some(before) = ctx.get(KIND, &id) else {
        return;
    };
    let status = s(&before["status"]);
    if inv["billing_reason"] == "subscription_create" && status == "incomplete" {
        return;
    }
    if !matches!(status.as_str(), "active" | "past_due" | "trialing") {
        return;
    }
    if status != "past_due" {
        let mut sub = before.clone();
        sub["status"] = json!("past_due");
        ctx.put(KIND, sub.clone());
        ctx.emit(
            "customer.subscription.updated",
            &sub,
            Some(previous(&before, &sub)),
        );
    }
    let last = inv["next_payment_attempt"].is_null() && inv["auto_advance"] == true;
    if !last {
        return;
    }
    match ctx.state.billing.after_retries.as_str() {
        "unpaid" => {
            let Some(b) = ctx.get(KIND, &id) else { return };
            let mut sub = b.clone();
            sub["status"] = json!("unpaid");
            ctx.put(KIND, sub.clone());
            ctx.emit(
                "customer.subscription.updated",
                &sub,
                Some(previous(&b, &sub)),
            );
        }
        "past_due" => {}
        _ => cancel_now(ctx, &id, "payment_failed", None, None),
    }
}

// ---- subscription items -----------------------------------------------------------------------

fn find_item(ctx: &mut Ctx, id: &str) -> Option<Value> {
    let c = ctx.acct().collection(KIND)?;
    c.objects.values().find_map(|sub| {
        sub["items"]["data"]
            .as_array()?
            .iter()
            .find(|it| it["id"] == id)
            .cloned()
    })
}

pub fn retrieve_item(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    find_item(ctx, &ids[0]).ok_or_else(|| StripeError::missing("subscription_item", &ids[0], "id"))
}

pub fn list_items(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let sub_id = p.req_str("subscription")?;
    let sub = get(ctx, &sub_id)?;
    let data = sub["items"]["data"].as_array().cloned().unwrap_or_default();
    super::page_array(
        p,
        &data,
        &format!("/v1/subscription_items?subscription={sub_id}"),
        "subscription_item",
    )
}
