//! Payment intents: create, update, confirm (cards with their test behaviours, 3-D Secure,
//! customer cash balance), capture, cancel; and cash-balance funding.
//!
//! Sandbox-only facts about an intent (its `return_url`, whether 3-D Secure was passed) live in
//! the hidden `_pi` collection so the intent object stays exactly Stripe's.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::previous;
use super::{charge_amount, charges, currency, fetch, no_params, payment_methods};
use crate::cards::Behaviour;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, empty_map};

const CONFIRMABLE: &[&str] = &[
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
];

fn hidden(ctx: &mut Ctx, id: &str) -> Value {
    ctx.get("_pi", id).unwrap_or_else(|| json!({"id": id}))
}

fn set_hidden(ctx: &mut Ctx, id: &str, key: &str, value: Value) {
    let mut h = hidden(ctx, id);
    h[key] = value;
    ctx.put("_pi", h);
}

/// The `return_url` given at confirmation (for the 3-D Secure page's redirect).
pub fn return_url(ctx: &mut Ctx, id: &str) -> Option<String> {
    hidden(ctx, id)["return_url"].as_str().map(str::to_string)
}

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    fetch(ctx, "payment_intent", id, "intent")
}

/// Parameters create, update and confirm share.
fn common(ctx: &mut Ctx, pi: &mut Value, p: &mut Params) -> Result<()> {
    for k in [
        "description",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
    ] {
        if let Some(v) = p.str(k)? {
            pi[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if let Some(sfu) = p.str("setup_future_usage")? {
        if !["", "on_session", "off_session"].contains(&sfu.as_str()) {
            return Err(StripeError::invalid_value(
                "setup_future_usage",
                "Invalid setup_future_usage: must be one of on_session, off_session",
            ));
        }
        pi["setup_future_usage"] = if sfu.is_empty() {
            Value::Null
        } else {
            json!(sfu)
        };
    }
    if let Some(c) = p.str("customer")? {
        if c.is_empty() {
            pi["customer"] = Value::Null;
        } else {
            let cus = fetch(ctx, "customer", &c, "customer")?;
            if cus["deleted"] == true {
                return Err(StripeError::missing("customer", &c, "customer"));
            }
            pi["customer"] = json!(c);
        }
    }
    if let Some(types) = p.str_list("payment_method_types")? {
        pi["payment_method_types"] = json!(types);
        pi["automatic_payment_methods"] = Value::Null;
    }
    if let Some(opts) = p.take("payment_method_options") {
        pi["payment_method_options"] = opts;
    }
    if let Some(mut sh) = p.sub("shipping")? {
        let name = sh.req_str("name")?;
        let addr = super::customers::address(&mut sh, "address")?;
        let phone = sh.opt_str("phone")?;
        sh.ignore(&["carrier", "tracking_number"]);
        sh.finish()?;
        pi["shipping"] = json!({"address": addr, "carrier": null, "name": name, "phone": phone, "tracking_number": null});
    }
    merge_metadata(&mut pi["metadata"], p.metadata("metadata")?);
    p.ignore(&[
        "mandate_data",
        "radar_options",
        "use_stripe_sdk",
        "payment_details",
        "hooks",
    ]);
    Ok(())
}

/// `payment_method` or `payment_method_data`: the payment method to confirm with, if given.
fn payment_method_param(ctx: &mut Ctx, p: &mut Params) -> Result<Option<Value>> {
    if let Some(id) = p.opt_str("payment_method")? {
        return payment_methods::resolve(ctx, &id, "payment_method").map(Some);
    }
    if let Some(mut data) = p.sub("payment_method_data")? {
        let pm = payment_methods::from_params(ctx, &mut data, "payment_method_data[")?;
        data.finish()?;
        return Ok(Some(pm));
    }
    Ok(None)
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let amount = p.req_int("amount")?;
    let cur = currency(&mut p, "currency")?;
    charge_amount(amount, &cur, "amount")?;
    let capture_method = p
        .enum_str(
            "capture_method",
            &["automatic", "automatic_async", "manual"],
        )?
        .unwrap_or_else(|| "automatic_async".into());
    let confirmation_method = p
        .enum_str("confirmation_method", &["automatic", "manual"])?
        .unwrap_or_else(|| "automatic".into());
    let confirm = p.bool("confirm")?.unwrap_or(false);
    let return_url = p.opt_str("return_url")?;
    let off_session = p.str("off_session")?;
    let error_on_requires_action = p.bool("error_on_requires_action")?;
    if !confirm
        && (return_url.is_some() || off_session.is_some() || error_on_requires_action.is_some())
    {
        let which = if return_url.is_some() {
            "return_url"
        } else if off_session.is_some() {
            "off_session"
        } else {
            "error_on_requires_action"
        };
        return Err(StripeError::invalid(format!(
            "You can only pass `{which}` when you also pass `confirm=true`."
        ))
        .param(which));
    }
    let apm = match p.sub("automatic_payment_methods")? {
        Some(mut a) => {
            let enabled = a
                .bool("enabled")?
                .ok_or_else(|| StripeError::missing_param("automatic_payment_methods[enabled]"))?;
            let redirects = a.enum_str("allow_redirects", &["always", "never"])?;
            a.finish()?;
            let mut apm = json!({"enabled": enabled});
            if let Some(r) = redirects {
                apm["allow_redirects"] = json!(r);
            }
            Some(apm)
        }
        None => None,
    };
    let id = new_id("pi");
    let mut pi = json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": 0, "application": null,
        "application_fee_amount": null, "automatic_payment_methods": {"enabled": true},
        "canceled_at": null, "cancellation_reason": null, "capture_method": capture_method,
        "client_secret": format!("{id}_secret_{}", random_string(25)),
        "confirmation_method": confirmation_method, "created": ctx.now, "currency": cur,
        "customer": null, "customer_account": null, "description": null,
        "excluded_payment_method_types": null, "last_payment_error": null, "latest_charge": null,
        "livemode": false, "managed_payments": {"enabled": false}, "metadata": empty_map(),
        "next_action": null, "on_behalf_of": null, "payment_method": null,
        "payment_method_configuration_details": null, "payment_method_options": {"card": {
            "installments": null, "mandate_options": null, "network": null,
            "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "processing": null, "receipt_email": null,
        "review": null, "setup_future_usage": null, "shipping": null, "source": null,
        "statement_descriptor": null, "statement_descriptor_suffix": null,
        "status": "requires_payment_method", "transfer_data": null, "transfer_group": null,
    });
    if let Some(a) = apm {
        pi["automatic_payment_methods"] = a;
    }
    common(ctx, &mut pi, &mut p)?;
    let pm = payment_method_param(ctx, &mut p)?;
    p.ignore(&[
        "application_fee_amount",
        "on_behalf_of",
        "transfer_data",
        "payment_method_configuration",
        "excluded_payment_method_types",
    ]);
    p.finish()?;
    if pi["payment_method_types"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == "customer_balance"))
        && pi["customer"].is_null()
    {
        return Err(StripeError::invalid(
            "A customer is required to use the customer_balance payment method.",
        )
        .param("customer"));
    }
    if let Some(pm) = &pm {
        pi["payment_method"] = pm["id"].clone();
        pi["status"] = json!("requires_confirmation");
    }
    ctx.put("payment_intent", pi.clone());
    ctx.emit("payment_intent.created", &pi, None);
    if confirm {
        if let Some(url) = return_url {
            set_hidden(ctx, &id, "return_url", json!(url));
        }
        let off = matches!(
            off_session.as_deref(),
            Some("true" | "one_off" | "recurring")
        );
        return run_confirm(ctx, pi, pm, off);
    }
    Ok(pi)
}

pub fn retrieve(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    p.ignore(&["client_secret"]);
    no_params(p)?;
    get(ctx, &ids[0])
}

pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = get(ctx, &ids[0])?;
    let mut pi = before.clone();
    let status = pi["status"].as_str().unwrap_or_default().to_string();
    let editable = CONFIRMABLE.contains(&status.as_str());
    if let Some(a) = p.int("amount")? {
        if !editable {
            return Err(StripeError::unexpected_state(format!("This PaymentIntent's amount could not be updated because it has a status of {status}.")).param("amount"));
        }
        pi["amount"] = json!(a);
    }
    if p.has("currency") {
        pi["currency"] = json!(currency(&mut p, "currency")?);
    }
    charge_amount(
        pi["amount"].as_i64().unwrap_or(0),
        pi["currency"].as_str().unwrap_or("usd"),
        "amount",
    )?;
    if let Some(cm) = p.enum_str(
        "capture_method",
        &["automatic", "automatic_async", "manual"],
    )? {
        pi["capture_method"] = json!(cm);
    }
    common(ctx, &mut pi, &mut p)?;
    let pm = payment_method_param(ctx, &mut p)?;
    p.ignore(&[
        "application_fee_amount",
        "transfer_data",
        "payment_method_configuration",
        "excluded_payment_method_types",
    ]);
    p.finish()?;
    if let Some(pm) = pm {
        if !editable {
            return Err(StripeError::unexpected_state(format!(
                "This PaymentIntent's payment_method could not be updated because it has a status of {status}."
            )));
        }
        pi["payment_method"] = pm["id"].clone();
        pi["status"] = json!("requires_confirmation");
    }
    ctx.put("payment_intent", pi.clone());
    ctx.emit("payment_intent.updated", &pi, Some(previous(&before, &pi)));
    Ok(pi)
}

pub fn confirm(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let mut pi = get(ctx, &ids[0])?;
    let status = pi["status"].as_str().unwrap_or_default().to_string();
    if status == "succeeded" {
        return Err(StripeError::unexpected_state(
            "You cannot confirm this PaymentIntent because it has already succeeded after being previously confirmed.",
        )
        .with("payment_intent", pi));
    }
    if !CONFIRMABLE.contains(&status.as_str()) {
        return Err(StripeError::unexpected_state(format!(
            "You cannot confirm this PaymentIntent because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be confirmed: requires_payment_method, requires_confirmation, requires_action."
        ))
        .with("payment_intent", pi));
    }
    p.ignore(&["client_secret"]);
    let return_url = p.opt_str("return_url")?;
    let off_session = p.str("off_session")?;
    p.ignore(&["error_on_requires_action", "payment_method_options"]);
    if let Some(cm) = p.enum_str(
        "capture_method",
        &["automatic", "automatic_async", "manual"],
    )? {
        pi["capture_method"] = json!(cm);
    }
    common(ctx, &mut pi, &mut p)?;
    let pm = payment_method_param(ctx, &mut p)?;
    p.finish()?;
    if let Some(url) = return_url {
        set_hidden(ctx, &ids[0], "return_url", json!(url));
    }
    let off = matches!(
        off_session.as_deref(),
        Some("true" | "one_off" | "recurring")
    );
    run_confirm(ctx, pi, pm, off)
}

/// Confirms `pi` with `pm` (or the payment method it already has).
fn run_confirm(
    ctx: &mut Ctx,
    mut pi: Value,
    pm: Option<Value>,
    off_session: bool,
) -> Result<Value> {
    let id = pi["id"].as_str().unwrap_or_default().to_string();
    let pm = match pm {
        Some(pm) => pm,
        None => match pi["payment_method"].as_str().map(str::to_string) {
            Some(pm_id) => payment_methods::resolve(ctx, &pm_id, "payment_method")?,
            None => {
                return Err(StripeError::unexpected_state(
                    "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.",
                )
                .with("payment_intent", pi));
            }
        },
    };
    let pm_type = pm["type"].as_str().unwrap_or("card").to_string();
    if !pi["payment_method_types"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == pm_type.as_str()))
    {
        return Err(StripeError::invalid(format!(
            "The PaymentMethod provided ({pm_type}) is not allowed for this PaymentIntent. Please attach a PaymentMethod of one of the following types: {}. Alternatively update the allowed payment_method_types for this PaymentIntent to include \"{pm_type}\".",
            pi["payment_method_types"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
        ))
        .code("payment_intent_incompatible_payment_method")
        .param("payment_method"));
    }
    if let (Some(owner), Some(cus)) = (pm["customer"].as_str(), pi["customer"].as_str())
        && owner != cus
    {
        return Err(StripeError::invalid(
            "The provided PaymentMethod belongs to a different Customer. Please specify the Customer that owns this PaymentMethod.",
        )
        .param("payment_method"));
    }
    pi["payment_method"] = pm["id"].clone();
    pi["last_payment_error"] = Value::Null;
    pi["next_action"] = Value::Null;
    if pm_type == "customer_balance" {
        return confirm_cash_balance(ctx, pi);
    }
    let behaviour = payment_methods::behaviour(ctx, pm["id"].as_str().unwrap_or_default())
        .unwrap_or(Behaviour::Succeeds);
    let authenticated = hidden(ctx, &id)["authenticated_pm"] == pm["id"];
    if matches!(
        behaviour,
        Behaviour::Requires3ds | Behaviour::Requires3dsThenDecline
    ) && !authenticated
    {
        if off_session {
            return decline(
                ctx,
                pi,
                &pm,
                (
                    "authentication_required",
                    "authentication_required",
                    "Your card was declined. This transaction requires authentication.",
                ),
                None,
            );
        }
        let secret = pi["client_secret"].as_str().unwrap_or_default().to_string();
        let ret = return_url(ctx, &id);
        pi["status"] = json!("requires_action");
        pi["next_action"] = json!({
            "type": "redirect_to_url",
            "redirect_to_url": {
                "return_url": ret,
                "url": format!("{}/_sandbox/authenticate/{id}?client_secret={secret}", ctx.public_url),
            },
        });
        ctx.put("payment_intent", pi.clone());
        ctx.emit("payment_intent.requires_action", &pi, None);
        return Ok(pi);
    }
    charge(ctx, pi, &pm, behaviour, authenticated)
}

/// A card charge attempt with a known behaviour.
fn charge(
    ctx: &mut Ctx,
    mut pi: Value,
    pm: &Value,
    behaviour: Behaviour,
    three_ds: bool,
) -> Result<Value> {
    match behaviour {
        Behaviour::Declines(code, decline_code, message, param) => {
            decline(ctx, pi, pm, (code, decline_code, message), param)
        }
        Behaviour::AttachThenDecline => decline(
            ctx,
            pi,
            pm,
            (
                "card_declined",
                "generic_decline",
                "Your card was declined.",
            ),
            None,
        ),
        Behaviour::Requires3dsThenDecline => decline(
            ctx,
            pi,
            pm,
            (
                "card_declined",
                "insufficient_funds",
                "Your card has insufficient funds.",
            ),
            None,
        ),
        Behaviour::Succeeds
        | Behaviour::Requires3ds
        | Behaviour::Disputed(_)
        | Behaviour::EarlyFraudWarning
        | Behaviour::RefundFails => {
            let ch = charges::attempt(ctx, &pi, pm, &charges::Outcome::Authorized, three_ds);
            let amount = pi["amount"].clone();
            pi["latest_charge"] = ch["id"].clone();
            if pi["capture_method"] == "manual" {
                pi["status"] = json!("requires_capture");
                pi["amount_capturable"] = amount;
                ctx.put("payment_intent", pi.clone());
                ctx.emit("charge.succeeded", &ch, None);
                ctx.emit(
                    "payment_intent.amount_capturable_updated",
                    &pi,
                    Some(json!({"amount_capturable": 0})),
                );
            } else {
                pi["status"] = json!("succeeded");
                pi["amount_received"] = amount;
                ctx.put("payment_intent", pi.clone());
                ctx.emit("charge.succeeded", &ch, None);
                ctx.emit("payment_intent.succeeded", &pi, None);
            }
            if let Behaviour::Disputed(reason) = behaviour {
                super::disputes::open(ctx, ch["id"].as_str().unwrap_or_default(), reason);
            }
            if behaviour == Behaviour::EarlyFraudWarning {
                super::disputes::early_fraud_warning(ctx, ch["id"].as_str().unwrap_or_default());
            }
            Ok(pi)
        }
    }
}

/// Records a declined attempt and answers Stripe's 402 card error.
fn decline(
    ctx: &mut Ctx,
    mut pi: Value,
    pm: &Value,
    (code, decline_code, message): (&str, &str, &str),
    param: Option<&str>,
) -> Result<Value> {
    let ch = charges::attempt(
        ctx,
        &pi,
        pm,
        &charges::Outcome::Declined(code, decline_code, message),
        false,
    );
    let mut last = json!({
        "charge": ch["id"], "code": code, "decline_code": decline_code,
        "doc_url": format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")),
        "message": message, "payment_method": pm, "type": "card_error",
    });
    if let Some(param) = param {
        last["param"] = json!(param);
    }
    if let Some(advice) = ch["outcome"]["advice_code"].as_str() {
        last["advice_code"] = json!(advice);
    }
    pi["status"] = json!("requires_payment_method");
    pi["payment_method"] = Value::Null;
    pi["last_payment_error"] = last;
    pi["latest_charge"] = ch["id"].clone();
    pi["next_action"] = Value::Null;
    ctx.put("payment_intent", pi.clone());
    ctx.emit("charge.failed", &ch, None);
    ctx.emit("payment_intent.payment_failed", &pi, None);
    let mut err = StripeError::new(StatusCode::PAYMENT_REQUIRED, "card_error", message).code(code);
    err.decline_code = Some(decline_code.to_string());
    if let Some(param) = param {
        err.param = Some(param.to_string());
    }
    Err(err
        .with("charge", ch["id"].clone())
        .with("payment_intent", pi)
        .with("payment_method", pm.clone()))
}

/// The buyer's answer on the 3-D Secure page.
pub fn authenticate(ctx: &mut Ctx, id: &str, approve: bool) -> Result<Value> {
    let pi = get(ctx, id)?;
    if pi["status"] != "requires_action" || pi["next_action"]["type"] != "redirect_to_url" {
        return Err(StripeError::unexpected_state(format!(
            "This PaymentIntent is not awaiting authentication (status {}).",
            pi["status"].as_str().unwrap_or_default()
        )));
    }
    let pm_id = pi["payment_method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pm = payment_methods::resolve(ctx, &pm_id, "payment_method")?;
    if approve {
        set_hidden(ctx, id, "authenticated_pm", json!(pm_id));
        let behaviour = payment_methods::behaviour(ctx, &pm_id).unwrap_or(Behaviour::Succeeds);
        let mut pi = pi;
        pi["next_action"] = Value::Null;
        // A decline after authentication is reported on the intent, not to the browser.
        return match charge(ctx, pi, &pm, behaviour, true) {
            Ok(v) => Ok(v),
            Err(e) if e.status == StatusCode::PAYMENT_REQUIRED => get(ctx, id),
            Err(e) => Err(e),
        };
    }
    let mut pi = pi;
    pi["status"] = json!("requires_payment_method");
    pi["payment_method"] = Value::Null;
    pi["next_action"] = Value::Null;
    pi["last_payment_error"] = json!({
        "code": "payment_intent_authentication_failure",
        "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
        "message": "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        "payment_method": pm, "type": "invalid_request_error",
    });
    ctx.put("payment_intent", pi.clone());
    ctx.emit("payment_intent.payment_failed", &pi, None);
    Ok(pi)
}

pub fn capture(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = get(ctx, &ids[0])?;
    let status = before["status"].as_str().unwrap_or_default().to_string();
    if status != "requires_capture" {
        return Err(StripeError::unexpected_state(format!(
            "This PaymentIntent could not be captured because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture."
        ))
        .with("payment_intent", before));
    }
    let capturable = before["amount_capturable"].as_i64().unwrap_or(0);
    let amount = p.int("amount_to_capture")?.unwrap_or(capturable);
    let mut pi = before.clone();
    merge_metadata(&mut pi["metadata"], p.metadata("metadata")?);
    for k in ["statement_descriptor", "statement_descriptor_suffix"] {
        if let Some(v) = p.opt_str(k)? {
            pi[k] = json!(v);
        }
    }
    p.ignore(&["application_fee_amount", "final_capture", "transfer_data"]);
    p.finish()?;
    if amount > capturable {
        return Err(StripeError::invalid(format!(
            "The amount to capture ({amount}) must be less than or equal to the amount capturable ({capturable})."
        ))
        .code("amount_too_large")
        .param("amount_to_capture"));
    }
    if amount <= 0 {
        return Err(
            StripeError::invalid("Amount to capture must be greater than zero.")
                .code("amount_too_small")
                .param("amount_to_capture"),
        );
    }
    let charge_id = pi["latest_charge"].as_str().unwrap_or_default().to_string();
    charges::capture(ctx, &charge_id, amount)?;
    pi["status"] = json!("succeeded");
    pi["amount_capturable"] = json!(0);
    pi["amount_received"] = json!(amount);
    ctx.put("payment_intent", pi.clone());
    ctx.emit(
        "payment_intent.succeeded",
        &pi,
        Some(previous(&before, &pi)),
    );
    Ok(pi)
}

/// Cancels an intent (also used by expiry); an authorized charge is released (refunded).
pub fn cancel_for(ctx: &mut Ctx, id: &str, reason: Option<&str>, check: bool) -> Result<Value> {
    let before = get(ctx, id)?;
    let status = before["status"].as_str().unwrap_or_default().to_string();
    const CANCELABLE: &[&str] = &[
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    ];
    if !CANCELABLE.contains(&status.as_str()) {
        if !check && status == "canceled" {
            return Ok(before);
        }
        return Err(StripeError::unexpected_state(format!(
            "You cannot cancel this PaymentIntent because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing."
        ))
        .with("payment_intent", before));
    }
    let mut pi = before.clone();
    if status == "requires_capture"
        && let Some(ch_id) = pi["latest_charge"].as_str().map(str::to_string)
        && let Some(ch) = ctx.get("charge", &ch_id)
        && ch["refunded"] != true
    {
        let mut ch2 = ch.clone();
        ch2["refunded"] = json!(true);
        ch2["amount_refunded"] = ch["amount"].clone();
        let refund = super::refunds::new_refund(
            ctx,
            &ch2,
            ch["amount"].as_i64().unwrap_or(0),
            None,
            "succeeded",
        );
        ctx.put("refund", refund);
        ctx.put("charge", ch2.clone());
        ctx.emit("charge.refunded", &ch2, Some(previous(&ch, &ch2)));
    }
    pi["status"] = json!("canceled");
    pi["canceled_at"] = json!(ctx.now);
    pi["cancellation_reason"] = json!(reason);

    pi["amount_capturable"] = json!(0);
    pi["next_action"] = Value::Null;
    ctx.put("payment_intent", pi.clone());
    ctx.emit("payment_intent.canceled", &pi, Some(previous(&before, &pi)));
    Ok(pi)
}

pub fn cancel(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let reason = p.enum_str(
        "cancellation_reason",
        &[
            "duplicate",
            "fraudulent",
            "requested_by_customer",
            "abandoned",
        ],
    )?;
    p.finish()?;
    cancel_for(ctx, &ids[0], reason.as_deref(), true)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.opt_str("customer")?;
    super::list(ctx, p, "payment_intent", "/v1/payment_intents", |o| {
        customer.as_deref().is_none_or(|c| o["customer"] == c)
    })
}

// ---- customer cash balance -------------------------------------------------------------

fn cash_balance(ctx: &mut Ctx, customer: &str, cur: &str) -> i64 {
    ctx.get("_cash", customer)
        .and_then(|c| c[cur].as_i64())
        .unwrap_or(0)
}

fn set_cash_balance(ctx: &mut Ctx, customer: &str, cur: &str, amount: i64) {
    let mut c = ctx
        .get("_cash", customer)
        .unwrap_or_else(|| json!({"id": customer}));
    c[cur] = json!(amount);
    ctx.put("_cash", c);
}

/// Bank-transfer intents wait for funds (`requires_action` with transfer instructions); funds
/// already in the customer's cash balance are applied at once.
fn confirm_cash_balance(ctx: &mut Ctx, mut pi: Value) -> Result<Value> {
    let customer = pi["customer"].as_str().unwrap_or_default().to_string();
    let cur = pi["currency"].as_str().unwrap_or("usd").to_string();
    let amount = pi["amount"].as_i64().unwrap_or(0);
    pi["status"] = json!("requires_action");
    pi["next_action"] = json!({
        "type": "display_bank_transfer_instructions",
        "display_bank_transfer_instructions": {
            "amount_remaining": amount, "currency": cur,
            "financial_addresses": [{"aba": {"account_number": "000123456789", "bank_name": "STRIPE TEST BANK",
                                              "routing_number": "110000000"},
                                     "supported_networks": ["ach", "domestic_wire_us"], "type": "aba"}],
            "hosted_instructions_url": format!("{}/_sandbox/bank_transfer/{}", ctx.public_url, pi["id"].as_str().unwrap_or_default()),
            "reference": random_string(10).to_uppercase(), "type": "us_bank_transfer",
        },
    });
    ctx.put("payment_intent", pi.clone());
    ctx.emit("payment_intent.requires_action", &pi, None);
    apply_cash(ctx, &customer, &cur);
    get(ctx, pi["id"].as_str().unwrap_or_default())
}

/// Applies a customer's cash balance to their waiting bank-transfer intents, oldest first.
fn apply_cash(ctx: &mut Ctx, customer: &str, cur: &str) {
    let waiting: Vec<Value> = ctx
        .acct()
        .collection("payment_intent")
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|pi| {
                    pi["customer"] == customer
                        && pi["currency"] == cur
                        && pi["status"] == "requires_action"
                        && pi["next_action"]["type"] == "display_bank_transfer_instructions"
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for before in waiting {
        let balance = cash_balance(ctx, customer, cur);
        if balance <= 0 {
            return;
        }
        let remaining =
            before["next_action"]["display_bank_transfer_instructions"]["amount_remaining"]
                .as_i64()
                .unwrap_or(0);
        let applied = balance.min(remaining);
        set_cash_balance(ctx, customer, cur, balance - applied);
        let mut pi = before.clone();
        if applied == remaining {
            let pm_id = pi["payment_method"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pm = ctx.get("payment_method", &pm_id).unwrap_or_else(
                || json!({"id": pm_id, "type": "customer_balance", "billing_details": null}),
            );
            let ch = charges::attempt(ctx, &pi, &pm, &charges::Outcome::Authorized, false);
            pi["status"] = json!("succeeded");
            pi["amount_received"] = pi["amount"].clone();
            pi["next_action"] = Value::Null;
            pi["latest_charge"] = ch["id"].clone();
            ctx.put("payment_intent", pi.clone());
            ctx.emit("charge.succeeded", &ch, None);
            ctx.emit(
                "payment_intent.succeeded",
                &pi,
                Some(previous(&before, &pi)),
            );
        } else {
            pi["next_action"]["display_bank_transfer_instructions"]["amount_remaining"] =
                json!(remaining - applied);
            ctx.put("payment_intent", pi.clone());
            ctx.emit(
                "payment_intent.partially_funded",
                &pi,
                Some(previous(&before, &pi)),
            );
        }
    }
}

/// `POST /v1/test_helpers/customers/{id}/fund_cash_balance`.
pub fn fund_cash_balance(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let customer = ids[0].clone();
    fetch(ctx, "customer", &customer, "customer")?;
    let amount = p.req_int("amount")?;
    let cur = currency(&mut p, "currency")?;
    let reference = p.opt_str("reference")?;
    p.finish()?;
    if amount <= 0 {
        return Err(StripeError::invalid("Amount must be positive.").param("amount"));
    }
    let balance = cash_balance(ctx, &customer, &cur) + amount;
    set_cash_balance(ctx, &customer, &cur, balance);
    let txn = json!({
        "id": new_id("ccsbtxn"), "object": "customer_cash_balance_transaction", "created": ctx.now,
        "currency": cur, "customer": customer, "ending_balance": balance,
        "funded": {"bank_transfer": {"reference": reference, "type": "us_bank_transfer",
                   "us_bank_transfer": {"network": "ach", "sender_name": "Sandbox Sender"}}},
        "livemode": false, "net_amount": amount, "type": "funded",
    });
    ctx.emit("customer_cash_balance_transaction.created", &txn, None);
    apply_cash(ctx, &customer, &cur);
    Ok(txn)
}
