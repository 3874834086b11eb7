//! Stripe's customer portal: configurations (`/v1/billing_portal/configurations`), sessions
//! (`/v1/billing_portal/sessions`) and the hosted portal page a session's `url` opens
//! (`/_sandbox/billing_portal/{secret}`), where the buyer cancels (now or at the period end),
//! renews, switches the price of a subscription and updates the card.
//!
//! Every action of the page goes through the resources' own handlers (`subscriptions::update`,
//! `subscriptions::cancel`, `payment_methods::from_params`, `customers::update`), so the objects
//! and events are those of the API calls Stripe's portal makes on the buyer's behalf.
//!
//! A session created without `configuration` uses the account's default configuration; the
//! first such session makes one (as saving the portal settings in Stripe's Dashboard does):
//! cancellation at the period end, price switches among the product's active recurring prices,
//! card updates and the invoice history enabled.
//!
//! Hidden collections: `_portal_configuration` (a configuration's products and prices, which
//! Stripe returns only with `expand[]=features.subscription_update.products`) and
//! `_portal_link` (a session's secret, the credential of its page, to the session).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{customers, fetch, format_amount, no_params, payment_methods, previous, subscriptions};
use crate::control::esc;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, Inner, empty_map, lock};

/// The collection (and `object` value) of configurations.
pub const CONFIG: &str = "billing_portal.configuration";
/// The collection (and `object` value) of sessions.
pub const SESSION: &str = "billing_portal.session";
const HIDDEN_CONFIG: &str = "_portal_configuration";
const LINK: &str = "_portal_link";
const FEEDBACK: &[&str] = &[
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
];
const LIVE: &[&str] = &["trialing", "active", "past_due", "unpaid", "paused"];

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

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

/// An absolute http(s) URL without white space.
fn url_param(p: &mut Params, key: &str) -> Result<Option<String>> {
    let Some(url) = p.opt_str(key)? else {
        return Ok(None);
    };
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|r| r.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if host.is_empty()
        || url.len() > 5000
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StripeError::invalid("Not a valid URL")
            .code("url_invalid")
            .param(key));
    }
    Ok(Some(url))
}

fn bool_of(p: &mut Params, key: &str, name: &str) -> Result<Option<bool>> {
    p.bool(key).map_err(|e| e.param(name))
}

// ---------------------------------------------------------------------------------------------
// Configurations

fn default_features() -> Value {
    json!({
        "customer_update": {"allowed_updates": [], "enabled": false},
        "invoice_history": {"enabled": false},
        "payment_method_update": {"enabled": false, "payment_method_configuration": null},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": false, "options": []},
            "enabled": false, "mode": "at_period_end", "proration_behavior": "none",
        },
        "subscription_update": {
            "billing_cycle_anchor": null, "default_allowed_updates": [], "enabled": false,
            "proration_behavior": "none", "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    })
}

fn new_config(ctx: &Ctx) -> Value {
    json!({
        "id": new_id("bpc"), "object": CONFIG, "active": true, "application": null,
        "business_profile": {"headline": null, "privacy_policy_url": null,
                             "terms_of_service_url": null},
        "created": ctx.now, "default_return_url": null, "features": default_features(),
        "is_default": false, "livemode": false,
        "login_page": {"enabled": false, "url": null}, "metadata": empty_map(), "name": null,
        "updated": ctx.now,
    })
}

/// The products (with their allowed prices) a configuration lets subscriptions switch among.
fn allowed_products(ctx: &mut Ctx, config: &str) -> Vec<Value> {
    ctx.get(HIDDEN_CONFIG, config)
        .and_then(|h| h["products"].as_array().cloned())
        .unwrap_or_default()
}

/// `features[subscription_update][products]`: each product with its recurring prices.
fn read_products(ctx: &mut Ctx, list: Vec<Params>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, mut item) in list.into_iter().enumerate() {
        let name = format!("features[subscription_update][products][{i}]");
        let product = item.req_str("product")?;
        fetch(ctx, "product", &product, &format!("{name}[product]"))?;
        let prices = item.str_list("prices")?.unwrap_or_default();
        if prices.is_empty() {
            return Err(StripeError::missing_param(&format!("{name}[prices]")));
        }
        for (j, price) in prices.iter().enumerate() {
            let param = format!("{name}[prices][{j}]");
            let pr = fetch(ctx, "price", price, &param)?;
            if pr["product"] != product.as_str() {
                return Err(StripeError::invalid(format!(
                    "The price {price} does not belong to the product {product}."
                ))
                .param(&param));
            }
            if pr["type"] != "recurring" {
                return Err(StripeError::invalid(format!(
                    "The price {price} is not recurring; the customer portal switches subscriptions among recurring prices only."
                ))
                .param(&param));
            }
        }
        item.ignore(&["adjustable_quantity"]);
        item.finish()?;
        out.push(json!({"prices": prices, "product": product,
                        "adjustable_quantity": {"enabled": false, "maximum": null, "minimum": 1}}));
    }
    Ok(out)
}

/// `features`, `business_profile`, `default_return_url`, `login_page`, `metadata`, `name`
/// (shared by create and update).
fn apply(ctx: &mut Ctx, obj: &mut Value, p: &mut Params) -> Result<()> {
    if let Some(mut bp) = p.sub("business_profile")? {
        for k in ["headline", "privacy_policy_url", "terms_of_service_url"] {
            if let Some(v) = bp.str(k)? {
                obj["business_profile"][k] = if v.is_empty() { Value::Null } else { json!(v) };
            }
        }
        bp.finish()?;
    }
    if p.has("default_return_url") {
        obj["default_return_url"] = json!(url_param(p, "default_return_url")?);
    }
    if let Some(mut lp) = p.sub("login_page")? {
        if let Some(enabled) = bool_of(&mut lp, "enabled", "login_page[enabled]")? {
            obj["login_page"] = json!({
                "enabled": enabled,
                "url": enabled.then(|| format!("{}/_sandbox/billing_portal/login/{}", ctx.public_url, random_string(16))),
            });
        }
        lp.finish()?;
    }
    merge_metadata(&mut obj["metadata"], p.metadata("metadata")?);
    if let Some(name) = p.str("name")? {
        obj["name"] = if name.is_empty() {
            Value::Null
        } else {
            json!(name)
        };
    }
    let Some(mut f) = p.sub("features")? else {
        return Ok(());
    };
    let feat = &mut obj["features"];
    if let Some(mut cu) = f.sub("customer_update")? {
        if let Some(list) = cu.str_list("allowed_updates")? {
            for u in &list {
                if !["address", "email", "name", "phone", "shipping", "tax_id"]
                    .contains(&u.as_str())
                {
                    return Err(StripeError::invalid(format!(
                        "Invalid features[customer_update][allowed_updates]: {u} is not one of address, email, name, phone, shipping, tax_id"
                    ))
                    .param("features[customer_update][allowed_updates]"));
                }
            }
            feat["customer_update"]["allowed_updates"] = json!(list);
        }
        if let Some(e) = bool_of(&mut cu, "enabled", "features[customer_update][enabled]")? {
            feat["customer_update"]["enabled"] = json!(e);
        }
        cu.finish()?;
    }
    if let Some(mut ih) = f.sub("invoice_history")? {
        let e = bool_of(&mut ih, "enabled", "features[invoice_history][enabled]")?
            .ok_or_else(|| StripeError::missing_param("features[invoice_history][enabled]"))?;
        feat["invoice_history"]["enabled"] = json!(e);
        ih.finish()?;
    }
    if let Some(mut pm) = f.sub("payment_method_update")? {
        if let Some(e) = bool_of(
            &mut pm,
            "enabled",
            "features[payment_method_update][enabled]",
        )? {
            feat["payment_method_update"]["enabled"] = json!(e);
        }
        if let Some(c) = pm.str("payment_method_configuration")? {
            feat["payment_method_update"]["payment_method_configuration"] =
                if c.is_empty() { Value::Null } else { json!(c) };
        }
        pm.finish()?;
    }
    if let Some(mut sc) = f.sub("subscription_cancel")? {
        if let Some(mut cr) = sc.sub("cancellation_reason")? {
            let e = bool_of(
                &mut cr,
                "enabled",
                "features[subscription_cancel][cancellation_reason][enabled]",
            )?
            .ok_or_else(|| {
                StripeError::missing_param(
                    "features[subscription_cancel][cancellation_reason][enabled]",
                )
            })?;
            let options = cr.str_list("options")?.unwrap_or_default();
            for o in &options {
                if !FEEDBACK.contains(&o.as_str()) {
                    return Err(StripeError::invalid(format!(
                        "Invalid features[subscription_cancel][cancellation_reason][options]: must be among {}",
                        FEEDBACK.join(", ")
                    ))
                    .param("features[subscription_cancel][cancellation_reason][options]"));
                }
            }
            if e && options.is_empty() {
                return Err(StripeError::missing_param(
                    "features[subscription_cancel][cancellation_reason][options]",
                ));
            }
            cr.finish()?;
            feat["subscription_cancel"]["cancellation_reason"] =
                json!({"enabled": e, "options": options});
        }
        if let Some(e) = bool_of(&mut sc, "enabled", "features[subscription_cancel][enabled]")? {
            feat["subscription_cancel"]["enabled"] = json!(e);
        }
        if let Some(m) = sc.enum_str("mode", &["at_period_end", "immediately"])? {
            feat["subscription_cancel"]["mode"] = json!(m);
        }
        if let Some(pb) = sc.enum_str(
            "proration_behavior",
            &["always_invoice", "create_prorations", "none"],
        )? {
            feat["subscription_cancel"]["proration_behavior"] = json!(pb);
        }
        sc.finish()?;
    }
    if let Some(mut su) = f.sub("subscription_update")? {
        if let Some(list) = su.str_list("default_allowed_updates")? {
            for u in &list {
                if !["price", "promotion_code", "quantity"].contains(&u.as_str()) {
                    return Err(StripeError::invalid(format!(
                        "Invalid features[subscription_update][default_allowed_updates]: {u} is not one of price, promotion_code, quantity"
                    ))
                    .param("features[subscription_update][default_allowed_updates]"));
                }
            }
            feat["subscription_update"]["default_allowed_updates"] = json!(list);
        }
        if let Some(e) = bool_of(&mut su, "enabled", "features[subscription_update][enabled]")? {
            feat["subscription_update"]["enabled"] = json!(e);
        }
        if let Some(pb) = su.enum_str(
            "proration_behavior",
            &["always_invoice", "create_prorations", "none"],
        )? {
            feat["subscription_update"]["proration_behavior"] = json!(pb);
        }
        if let Some(t) = su.enum_str("trial_update_behavior", &["continue_trial", "end_trial"])? {
            feat["subscription_update"]["trial_update_behavior"] = json!(t);
        }
        if let Some(a) = su.enum_str("billing_cycle_anchor", &["now", "unchanged"])? {
            feat["subscription_update"]["billing_cycle_anchor"] = json!(a);
        }
        if let Some(mut sape) = su.sub("schedule_at_period_end")? {
            if let Some(conds) = sape.sub_list("conditions")? {
                let mut out = Vec::new();
                for mut c in conds {
                    let t = c
                        .enum_str("type", &["decreasing_item_amount", "shortening_interval"])?
                        .ok_or_else(|| {
                            StripeError::missing_param(
                                "features[subscription_update][schedule_at_period_end][conditions][type]",
                            )
                        })?;
                    c.finish()?;
                    out.push(json!({"type": t}));
                }
                feat["subscription_update"]["schedule_at_period_end"]["conditions"] = json!(out);
            }
            sape.finish()?;
        }
        let products = su.sub_list("products")?;
        su.finish()?;
        if let Some(list) = products {
            let products = read_products(ctx, list)?;
            let id = s(&obj["id"]);
            ctx.put(HIDDEN_CONFIG, json!({"id": id, "products": products}));
        }
    }
    f.finish()?;
    Ok(())
}

pub fn create_configuration(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    if !p.has("features") {
        return Err(StripeError::missing_param("features"));
    }
    let mut obj = new_config(ctx);
    apply(ctx, &mut obj, &mut p)?;
    p.finish()?;
    ctx.put(CONFIG, obj.clone());
    ctx.emit("billing_portal.configuration.created", &obj, None);
    Ok(obj)
}

pub fn retrieve_configuration(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, CONFIG, &ids[0], "configuration")
}

pub fn update_configuration(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, CONFIG, &ids[0], "configuration")?;
    let mut obj = before.clone();
    if let Some(a) = p.bool("active")? {
        if !a && obj["is_default"] == true {
            return Err(
                StripeError::invalid("The default configuration cannot be deactivated.")
                    .param("active"),
            );
        }
        obj["active"] = json!(a);
    }
    apply(ctx, &mut obj, &mut p)?;
    p.finish()?;
    if obj != before {
        obj["updated"] = json!(ctx.now);
    }
    ctx.put(CONFIG, obj.clone());
    ctx.emit(
        "billing_portal.configuration.updated",
        &obj,
        Some(previous(&before, &obj)),
    );
    Ok(obj)
}

pub fn list_configurations(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let active = p.bool("active")?;
    let is_default = p.bool("is_default")?;
    p.ignore(&["customer", "customer_account"]);
    super::list(ctx, p, CONFIG, "/v1/billing_portal/configurations", |o| {
        active.is_none_or(|a| o["active"] == a) && is_default.is_none_or(|d| o["is_default"] == d)
    })
}

/// `expand[]=features.subscription_update.products` on a configuration (or a list of them):
/// whether `path` was that and is now done.
pub fn include(ctx: &mut Ctx, value: &mut Value, path: &str) -> bool {
    const PATH: &str = "features.subscription_update.products";
    if value["object"] == "list" && path.strip_prefix("data.") == Some(PATH) {
        if let Some(items) = value["data"].as_array_mut() {
            for item in items.iter_mut().filter(|i| i["object"] == CONFIG) {
                let id = s(&item["id"]);
                item["features"]["subscription_update"]["products"] =
                    json!(allowed_products(ctx, &id));
            }
        }
        return true;
    }
    if value["object"] == CONFIG && path == PATH {
        let id = s(&value["id"]);
        value["features"]["subscription_update"]["products"] = json!(allowed_products(ctx, &id));
        return true;
    }
    false
}

/// The account's default configuration, made on first use (the Dashboard's portal settings).
fn default_configuration(ctx: &mut Ctx) -> Value {
    let existing = ctx.acct().collection(CONFIG).and_then(|c| {
        c.ids
            .iter()
            .filter_map(|id| c.objects.get(id))
            .find(|o| o["is_default"] == true)
            .cloned()
    });
    if let Some(c) = existing {
        return c;
    }
    let mut obj = new_config(ctx);
    obj["is_default"] = json!(true);
    obj["features"] = json!({
        "customer_update": {"allowed_updates": ["email", "address", "phone"], "enabled": true},
        "invoice_history": {"enabled": true},
        "payment_method_update": {"enabled": true, "payment_method_configuration": null},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": true, "options": FEEDBACK},
            "enabled": true, "mode": "at_period_end", "proration_behavior": "none",
        },
        "subscription_update": {
            "billing_cycle_anchor": null, "default_allowed_updates": ["price"], "enabled": true,
            "proration_behavior": "create_prorations", "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    });
    ctx.put(CONFIG, obj.clone());
    ctx.emit("billing_portal.configuration.created", &obj, None);
    obj
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A subscription of `customer` the portal may act on (`param` names it in errors).
fn customer_subscription(ctx: &mut Ctx, customer: &str, id: &str, param: &str) -> Result<Value> {
    let sub = fetch(ctx, subscriptions::KIND, id, param)?;
    if sub["customer"] != customer {
        return Err(StripeError::invalid(format!(
            "The subscription {id} does not belong to the customer {customer}."
        ))
        .param(param));
    }
    Ok(sub)
}

fn read_flow(ctx: &mut Ctx, mut f: Params, customer: &str, config: &Value) -> Result<Value> {
    let kind = f
        .enum_str(
            "type",
            &[
                "payment_method_update",
                "subscription_cancel",
                "subscription_update",
                "subscription_update_confirm",
            ],
        )?
        .ok_or_else(|| StripeError::missing_param("flow_data[type]"))?;
    let mut after =
        json!({"hosted_confirmation": null, "redirect": null, "type": "portal_homepage"});
    if let Some(mut ac) = f.sub("after_completion")? {
        let t = ac
            .enum_str(
                "type",
                &["hosted_confirmation", "portal_homepage", "redirect"],
            )?
            .ok_or_else(|| StripeError::missing_param("flow_data[after_completion][type]"))?;
        after["type"] = json!(t);
        if let Some(mut hc) = ac.sub("hosted_confirmation")? {
            let m = hc.opt_str("custom_message")?;
            hc.finish()?;
            after["hosted_confirmation"] = json!({"custom_message": m});
        }
        if let Some(mut r) = ac.sub("redirect")? {
            let url = url_param(&mut r, "return_url")
                .map_err(|e| e.param("flow_data[after_completion][redirect][return_url]"))?
                .ok_or_else(|| {
                    StripeError::missing_param("flow_data[after_completion][redirect][return_url]")
                })?;
            r.finish()?;
            after["redirect"] = json!({"return_url": url});
        }
        ac.finish()?;
        if t == "redirect" && after["redirect"].is_null() {
            return Err(StripeError::missing_param(
                "flow_data[after_completion][redirect][return_url]",
            ));
        }
        if t == "hosted_confirmation" && after["hosted_confirmation"].is_null() {
            after["hosted_confirmation"] = json!({"custom_message": null});
        }
        if t != "redirect" {
            after["redirect"] = Value::Null;
        }
        if t != "hosted_confirmation" {
            after["hosted_confirmation"] = Value::Null;
        }
    }
    let mut flow = json!({
        "after_completion": after, "subscription_cancel": null, "subscription_update": null,
        "subscription_update_confirm": null, "type": kind,
    });
    let feature = |name: &str| config["features"][name]["enabled"] == true;
    match kind.as_str() {
        "subscription_cancel" => {
            let mut sc = f
                .sub("subscription_cancel")?
                .ok_or_else(|| StripeError::missing_param("flow_data[subscription_cancel]"))?;
            let id = sc.req_str("subscription")?;
            sc.ignore(&["retention"]);
            sc.finish()?;
            let sub = customer_subscription(
                ctx,
                customer,
                &id,
                "flow_data[subscription_cancel][subscription]",
            )?;
            if !feature("subscription_cancel") {
                return Err(StripeError::invalid(
                    "This flow cannot be used: the portal configuration does not enable features[subscription_cancel].",
                )
                .param("flow_data[type]"));
            }
            if !LIVE.contains(&sub["status"].as_str().unwrap_or_default())
                || sub["cancel_at_period_end"] == true
            {
                return Err(StripeError::invalid(format!(
                    "The subscription {id} cannot be canceled: it is already canceled or set to cancel."
                ))
                .code("subscription_canceled")
                .param("flow_data[subscription_cancel][subscription]"));
            }
            flow["subscription_cancel"] = json!({"retention": null, "subscription": id});
        }
        "subscription_update" | "subscription_update_confirm" => {
            let mut su = f
                .sub(&kind)?
                .ok_or_else(|| StripeError::missing_param(&format!("flow_data[{kind}]")))?;
            let id = su.req_str("subscription")?;
            let mut items = Vec::new();
            if kind == "subscription_update_confirm" {
                let list = su.sub_list("items")?.ok_or_else(|| {
                    StripeError::missing_param("flow_data[subscription_update_confirm][items]")
                })?;
                for (i, mut it) in list.into_iter().enumerate() {
                    let iid = it.opt_str("id")?;
                    let price = it.opt_str("price")?;
                    let qty = it.int("quantity")?;
                    it.finish()?;
                    if let Some(pr) = &price {
                        let param =
                            format!("flow_data[subscription_update_confirm][items][{i}][price]");
                        fetch(ctx, "price", pr, &param)?;
                    }
                    let mut item = json!({"id": iid, "price": price});
                    if let Some(q) = qty {
                        item["quantity"] = json!(q);
                    }
                    items.push(item);
                }
                su.ignore(&["discounts"]);
            }
            su.finish()?;
            customer_subscription(
                ctx,
                customer,
                &id,
                &format!("flow_data[{kind}][subscription]"),
            )?;
            if !feature("subscription_update") {
                return Err(StripeError::invalid(
                    "This flow cannot be used: the portal configuration does not enable features[subscription_update].",
                )
                .param("flow_data[type]"));
            }
            flow[kind.as_str()] = if kind == "subscription_update" {
                json!({"subscription": id})
            } else {
                json!({"discounts": [], "items": items, "subscription": id})
            };
        }
        _ => {
            if !feature("payment_method_update") {
                return Err(StripeError::invalid(
                    "This flow cannot be used: the portal configuration does not enable features[payment_method_update].",
                )
                .param("flow_data[type]"));
            }
        }
    }
    f.finish()?;
    Ok(flow)
}

pub fn create_session(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    let cus = fetch(ctx, "customer", &customer, "customer")?;
    if cus["deleted"] == true {
        return Err(StripeError::missing("customer", &customer, "customer"));
    }
    let config = match p.opt_str("configuration")? {
        Some(id) => {
            let c = fetch(ctx, CONFIG, &id, "configuration")?;
            if c["active"] != true {
                return Err(
                    StripeError::invalid(format!("The configuration {id} is not active."))
                        .param("configuration"),
                );
            }
            c
        }
        None => default_configuration(ctx),
    };
    let return_url = url_param(&mut p, "return_url")?;
    let locale = p.opt_str("locale")?;
    let on_behalf_of = p.opt_str("on_behalf_of")?;
    let flow = match p.sub("flow_data")? {
        Some(f) => read_flow(ctx, f, &customer, &config)?,
        None => Value::Null,
    };
    p.ignore(&["customer_account"]);
    p.finish()?;
    let return_url =
        return_url.or_else(|| config["default_return_url"].as_str().map(str::to_string));
    let secret = format!("test_{}", random_string(32));
    let id = new_id("bps");
    let obj = json!({
        "id": id, "object": SESSION, "configuration": config["id"], "created": ctx.now,
        "customer": customer, "customer_account": null, "flow": flow, "livemode": false,
        "locale": locale, "on_behalf_of": on_behalf_of, "return_url": return_url,
        "url": format!("{}/_sandbox/billing_portal/{secret}", ctx.public_url),
    });
    ctx.put(SESSION, obj.clone());
    ctx.put(LINK, json!({"id": secret, "session": id}));
    ctx.emit("billing_portal.session.created", &obj, None);
    Ok(obj)
}

// ---------------------------------------------------------------------------------------------
// The hosted portal page (`/_sandbox/billing_portal/{secret}`)

/// The page's routes, under `/_sandbox` (open: the secret in the link is the credential).
pub fn pages() -> Router<Arc<Inner>> {
    Router::new()
        .route("/billing_portal/{secret}", get(home))
        .route(
            "/billing_portal/{secret}/subscriptions/{sub}/cancel",
            get(cancel_page).post(cancel_submit),
        )
        .route(
            "/billing_portal/{secret}/subscriptions/{sub}/renew",
            axum::routing::post(renew_submit),
        )
        .route(
            "/billing_portal/{secret}/subscriptions/{sub}/update",
            get(update_page).post(update_submit),
        )
        .route(
            "/billing_portal/{secret}/payment_method",
            get(card_page).post(card_submit),
        )
}

/// What a page request knows: the session, its configuration, its account.
struct Visit {
    account: String,
    session: Value,
    config: Value,
    /// `{public_url}/_sandbox/billing_portal/{secret}`.
    base: String,
}

fn visit(inner: &Arc<Inner>, secret: &str) -> Option<Visit> {
    let account = {
        let st = lock(&inner.state);
        st.accounts
            .iter()
            .find(|(_, a)| a.get(LINK, secret).is_some())
            .map(|(id, _)| id.clone())?
    };
    let (session, config) = inner.run_as(&account, |ctx| {
        let link = ctx.get(LINK, secret)?;
        let session = ctx.get(SESSION, link["session"].as_str()?)?;
        let config = ctx.get(CONFIG, session["configuration"].as_str()?)?;
        Some((session, config))
    })?;
    Some(Visit {
        account,
        session,
        config,
        base: format!(
            "{}/_sandbox/billing_portal/{secret}",
            inner.config.public_url
        ),
    })
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This portal link does not exist or is incomplete. Return to the merchant to open the portal again.</p>",
    )
}

/// The query of the home page: what just happened.
#[derive(Deserialize, Default)]
pub struct Notice {
    done: Option<String>,
}

/// What the buyer sees about one subscription.
struct SubView {
    sub: Value,
    /// "Plan name · $10.00 / month" of each item.
    lines: Vec<String>,
    product: String,
}

fn money_per(price: &Value) -> String {
    let cur = price["currency"].as_str().unwrap_or("usd");
    let amount = format_amount(price["unit_amount"].as_i64().unwrap_or(0), cur);
    let r = &price["recurring"];
    match (r["interval"].as_str(), r["interval_count"].as_i64()) {
        (Some(i), Some(1) | None) => format!("{amount} / {i}"),
        (Some(i), Some(n)) => format!("{amount} every {n} {i}s"),
        _ => amount,
    }
}

fn product_name(ctx: &mut Ctx, id: &str) -> String {
    ctx.get("product", id)
        .and_then(|p| p["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| id.to_string())
}

fn sub_view(ctx: &mut Ctx, sub: Value) -> SubView {
    let mut lines = Vec::new();
    let mut product = String::new();
    for it in sub["items"]["data"].as_array().cloned().unwrap_or_default() {
        let pid = s(&it["price"]["product"]);
        let name = product_name(ctx, &pid);
        if product.is_empty() {
            product = pid;
        }
        let qty = it["quantity"].as_i64().unwrap_or(1);
        let q = if qty > 1 {
            format!(" × {qty}")
        } else {
            String::new()
        };
        lines.push(format!("{name}{q} · {}", money_per(&it["price"])));
    }
    SubView {
        sub,
        lines,
        product,
    }
}

fn customer_subs(ctx: &mut Ctx, customer: &str) -> Vec<SubView> {
    let subs: Vec<Value> = ctx
        .acct()
        .collection(subscriptions::KIND)
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|o| {
                    o["customer"] == customer
                        && LIVE.contains(&o["status"].as_str().unwrap_or_default())
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    subs.into_iter().map(|sub| sub_view(ctx, sub)).collect()
}

fn date(t: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (y, m, d) = super::test_clocks::civil_from_days(t.div_euclid(86_400));
    let month = MONTHS[(m.clamp(1, 12) - 1) as usize];
    format!("{month} {d}, {y}")
}

fn return_link(v: &Visit) -> String {
    let Some(url) = v.session["return_url"].as_str() else {
        return String::new();
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?', '#']).next())
        .unwrap_or(url);
    format!(
        "<p class=\"back\"><a href=\"{}\">← Return to {}</a></p>",
        esc(url),
        esc(host)
    )
}

/// `GET /_sandbox/billing_portal/{secret}`: the portal's home page, or the flow it opens on.
async fn home(
    State(inner): State<Arc<Inner>>,
    Path(secret): Path<String>,
    Query(q): Query<Notice>,
) -> Response {
    let Some(v) = visit(&inner, &secret) else {
        return not_found();
    };
    // A flow session opens straight on its page (until its action is done).
    if q.done.is_none() {
        let flow = &v.session["flow"];
        match flow["type"].as_str() {
            Some("subscription_cancel") => {
                let sub = s(&flow["subscription_cancel"]["subscription"]);
                return render_cancel(&inner, &v, &sub, None);
            }
            Some("subscription_update" | "subscription_update_confirm") => {
                let key = s(&flow["type"]);
                let sub = s(&flow[key.as_str()]["subscription"]);
                return render_update(&inner, &v, &sub, None);
            }
            Some("payment_method_update") => return render_card(&v, None, StatusCode::OK),
            _ => {}
        }
    }
    let customer = s(&v.session["customer"]);
    let features = v.config["features"].clone();
    let (cus, subs, card, invoices) = inner.run_as(&v.account, |ctx| {
        let cus = ctx.get("customer", &customer).unwrap_or(Value::Null);
        let subs = customer_subs(ctx, &customer);
        let card = cus["invoice_settings"]["default_payment_method"]
            .as_str()
            .and_then(|pm| ctx.get("payment_method", pm));
        let invoices: Vec<Value> = ctx
            .acct()
            .collection("invoice")
            .map(|c| {
                c.ids
                    .iter()
                    .rev()
                    .filter_map(|id| c.objects.get(id))
                    .filter(|i| i["customer"] == customer.as_str() && i["status"] != "draft")
                    .take(10)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (cus, subs, card, invoices)
    });
    let mut body = return_link(&v);
    let notice = match q.done.as_deref() {
        Some("canceled") => Some("Your subscription has been canceled."),
        Some("scheduled") => {
            Some("Your subscription will be canceled at the end of the billing period.")
        }
        Some("renewed") => Some("Your subscription has been renewed."),
        Some("updated") => Some("Your subscription has been updated."),
        Some("card") => Some("Your payment method has been updated."),
        _ => None,
    };
    if let Some(n) = notice {
        body.push_str(&format!(
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(n)
        ));
    }
    let who = cus["email"]
        .as_str()
        .or(cus["name"].as_str())
        .unwrap_or_default();
    if !who.is_empty() {
        body.push_str(&format!("<p class=\"who\">Signed in as {}</p>", esc(who)));
    }
    body.push_str("<h2>Current subscriptions</h2>\n");
    if subs.is_empty() {
        body.push_str("<p>You have no active subscriptions.</p>\n");
    }
    for view in &subs {
        let sub = &view.sub;
        let id = s(&sub["id"]);
        let (_, end) = subscriptions::period(sub);
        let status = s(&sub["status"]);
        let state = if sub["cancel_at_period_end"] == true || !sub["cancel_at"].is_null() {
            let at = sub["cancel_at"].as_i64().unwrap_or(end);
            format!("Cancels on {}", date(at))
        } else {
            match status.as_str() {
                "trialing" => format!(
                    "Trial ends on {}",
                    date(sub["trial_end"].as_i64().unwrap_or(end))
                ),
                "past_due" | "unpaid" => "Payment failed: update your payment method".to_string(),
                "paused" => "Paused".to_string(),
                _ => format!("Renews on {}", date(end)),
            }
        };
        let lines: String = view
            .lines
            .iter()
            .map(|l| format!("<li>{}</li>", esc(l)))
            .collect();
        let mut actions = String::new();
        let ending = sub["cancel_at_period_end"] == true || !sub["cancel_at"].is_null();
        if ending {
            actions.push_str(&format!(
                "<form method=\"post\" action=\"{}/subscriptions/{}/renew\"><button type=\"submit\">Renew subscription</button></form>",
                esc(&v.base),
                esc(&id)
            ));
        } else {
            if features["subscription_update"]["enabled"] == true {
                actions.push_str(&format!(
                    "<a class=\"button secondary\" href=\"{}/subscriptions/{}/update\">Update subscription</a>",
                    esc(&v.base),
                    esc(&id)
                ));
            }
            if features["subscription_cancel"]["enabled"] == true {
                actions.push_str(&format!(
                    "<a class=\"button danger\" href=\"{}/subscriptions/{}/cancel\">Cancel subscription</a>",
                    esc(&v.base),
                    esc(&id)
                ));
            }
        }
        body.push_str(&format!(
            "<section class=\"sub\" aria-label=\"Subscription {id}\">\n<ul class=\"lines\">{lines}</ul>\n<p class=\"state\">{state}</p>\n<div class=\"actions\">{actions}</div>\n</section>\n",
            id = esc(&id),
            state = esc(&state),
        ));
    }
    if features["payment_method_update"]["enabled"] == true {
        body.push_str("<h2>Payment method</h2>\n");
        let label = card
            .as_ref()
            .filter(|pm| pm["type"] == "card")
            .map(|pm| {
                format!(
                    "{} •••• {} (expires {:02}/{})",
                    pm["card"]["display_brand"]
                        .as_str()
                        .or(pm["card"]["brand"].as_str())
                        .unwrap_or("card"),
                    s(&pm["card"]["last4"]),
                    pm["card"]["exp_month"].as_i64().unwrap_or(0),
                    pm["card"]["exp_year"].as_i64().unwrap_or(0)
                )
            })
            .unwrap_or_else(|| "No default payment method.".to_string());
        body.push_str(&format!(
            "<p class=\"card\">{}</p>\n<p><a class=\"button secondary\" href=\"{}/payment_method\">Update payment method</a></p>\n",
            esc(&label),
            esc(&v.base)
        ));
    }
    if features["invoice_history"]["enabled"] == true && !invoices.is_empty() {
        body.push_str("<h2>Invoice history</h2>\n<ul class=\"lines\">\n");
        for i in &invoices {
            let cur = i["currency"].as_str().unwrap_or("usd");
            body.push_str(&format!(
                "<li><span>{}</span><span class=\"amt\">{} · {}</span></li>\n",
                esc(&date(i["created"].as_i64().unwrap_or(0))),
                esc(&format_amount(i["total"].as_i64().unwrap_or(0), cur)),
                esc(i["status"].as_str().unwrap_or_default()),
            ));
        }
        body.push_str("</ul>\n");
    }
    page(StatusCode::OK, "Manage your subscriptions", &body)
}

/// The confirmation page of a cancellation.
fn render_cancel(inner: &Arc<Inner>, v: &Visit, sub_id: &str, error: Option<&str>) -> Response {
    let customer = s(&v.session["customer"]);
    let view = inner.run_as(&v.account, |ctx| {
        ctx.get(subscriptions::KIND, sub_id)
            .filter(|sub| sub["customer"] == customer.as_str())
            .map(|sub| sub_view(ctx, sub))
    });
    let Some(view) = view else {
        return not_found();
    };
    let cancel = &v.config["features"]["subscription_cancel"];
    if cancel["enabled"] != true {
        return page(
            StatusCode::FORBIDDEN,
            "Cancel subscription",
            &format!(
                "{}<p>Canceling is not available here. Contact the merchant.</p>",
                return_link(v)
            ),
        );
    }
    let sub = &view.sub;
    let ending = sub["cancel_at_period_end"] == true || !sub["cancel_at"].is_null();
    if ending || !LIVE.contains(&sub["status"].as_str().unwrap_or_default()) {
        return page(
            StatusCode::OK,
            "Cancel subscription",
            &format!(
                "{}<p role=\"status\">This subscription is already canceled or set to cancel.</p><p><a href=\"{}?done=none\">Back to your subscriptions</a></p>",
                return_link(v),
                esc(&v.base)
            ),
        );
    }
    let (_, end) = subscriptions::period(sub);
    let immediately = cancel["mode"] == "immediately";
    let explain = if immediately {
        "Your subscription will be canceled now, and you will lose access right away.".to_string()
    } else {
        format!(
            "Your subscription will be canceled, but it stays available until the end of your billing period on {}.",
            date(end)
        )
    };
    let reasons = if cancel["cancellation_reason"]["enabled"] == true {
        let options: String = cancel["cancellation_reason"]["options"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|o| {
                let o = s(o);
                format!(
                    "<option value=\"{}\">{}</option>",
                    esc(&o),
                    esc(&feedback_label(&o))
                )
            })
            .collect();
        format!(
            "<label for=\"reason\">Why are you canceling? (optional)</label>\n<select id=\"reason\" name=\"reason\"><option value=\"\">Choose a reason</option>{options}</select>\n"
        )
    } else {
        String::new()
    };
    let lines: String = view
        .lines
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    let error = error
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        r#"{back}{error}<ul class="lines">{lines}</ul>
<p>{explain}</p>
<form method="post" action="{base}/subscriptions/{sub}/cancel">
{reasons}<button type="submit" class="danger">Cancel subscription</button>
</form>
<p class="back"><a href="{base}?done=none">Go back</a></p>"#,
        back = return_link(v),
        explain = esc(&explain),
        base = esc(&v.base),
        sub = esc(sub_id),
    );
    let _ = view.product;
    page(StatusCode::OK, "Cancel your subscription", &body)
}

fn feedback_label(o: &str) -> String {
    match o {
        "customer_service" => "Customer service was less than expected",
        "low_quality" => "Quality was less than expected",
        "missing_features" => "Some features are missing",
        "switched_service" => "I'm switching to a different service",
        "too_complex" => "Ease of use was less than expected",
        "too_expensive" => "It's too expensive",
        "unused" => "I don't use the service enough",
        _ => "Other reason",
    }
    .to_string()
}

async fn cancel_page(
    State(inner): State<Arc<Inner>>,
    Path((secret, sub)): Path<(String, String)>,
) -> Response {
    match visit(&inner, &secret) {
        Some(v) => render_cancel(&inner, &v, &sub, None),
        None => not_found(),
    }
}

fn form_fields(body: &Bytes) -> Map<String, Value> {
    tollgate_stripe::form::parse(body).unwrap_or_default()
}

fn field(fields: &Map<String, Value>, k: &str) -> String {
    fields
        .get(k)
        .and_then(Value::as_str)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Runs a portal action as a request of the session's account: all of it or nothing.
fn act<T>(inner: &Arc<Inner>, v: &Visit, f: impl FnOnce(&mut Ctx) -> Result<T>) -> Result<T> {
    inner.run_as(&v.account, |ctx| {
        let mark = ctx.effects.mark();
        let out = f(ctx);
        if out.is_err() {
            ctx.effects.roll_back_to(ctx.state, mark);
        }
        out
    })
}

/// Where the buyer goes once the action is done: the flow's after-completion, or home.
fn after(v: &Visit, done: &str) -> Response {
    let ac = &v.session["flow"]["after_completion"];
    match ac["type"].as_str() {
        Some("redirect") => {
            if let Some(r) = see_other(ac["redirect"]["return_url"].as_str().unwrap_or_default()) {
                return r;
            }
        }
        Some("hosted_confirmation") => {
            let message = ac["hosted_confirmation"]["custom_message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| match done {
                    "canceled" => "Your subscription has been canceled.".into(),
                    "scheduled" => {
                        "Your subscription will be canceled at the end of the billing period."
                            .into()
                    }
                    "card" => "Your payment method has been updated.".into(),
                    _ => "Your subscription has been updated.".into(),
                });
            return page(
                StatusCode::OK,
                "Done",
                &format!(
                    "{}<p class=\"notice\" role=\"status\">{}</p>",
                    return_link(v),
                    esc(&message)
                ),
            );
        }
        _ => {}
    }
    see_other(&format!("{}?done={done}", v.base)).unwrap_or_else(not_found)
}

fn see_other(url: &str) -> Option<Response> {
    let location = HeaderValue::from_str(url).ok()?;
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(r)
}

/// `POST …/subscriptions/{sub}/cancel` (form: `reason`): cancels now or at the period end, as
/// the configuration's `features.subscription_cancel.mode` says.
async fn cancel_submit(
    State(inner): State<Arc<Inner>>,
    Path((secret, sub)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(v) = visit(&inner, &secret) else {
        return not_found();
    };
    let fields = form_fields(&body);
    let reason = field(&fields, "reason");
    let cancel = v.config["features"]["subscription_cancel"].clone();
    let customer = s(&v.session["customer"]);
    let feedback = (cancel["cancellation_reason"]["enabled"] == true
        && FEEDBACK.contains(&reason.as_str()))
    .then(|| json!({"feedback": reason}));
    let immediately = cancel["mode"] == "immediately";
    let result = act(&inner, &v, |ctx| {
        if cancel["enabled"] != true {
            return Err(StripeError::invalid("Canceling is not available here."));
        }
        let current = customer_subscription(ctx, &customer, &sub, "subscription")?;
        if current["cancel_at_period_end"] == true
            || !LIVE.contains(&current["status"].as_str().unwrap_or_default())
        {
            return Err(StripeError::invalid(
                "This subscription is already canceled or set to cancel.",
            ));
        }
        let ids = [sub.clone()];
        if immediately {
            let prorate = cancel["proration_behavior"] != "none";
            subscriptions::cancel(
                ctx,
                form(vec![
                    (
                        "cancellation_details",
                        feedback.clone().unwrap_or(Value::Null),
                    ),
                    ("prorate", json!(prorate.to_string())),
                    (
                        "invoice_now",
                        json!((cancel["proration_behavior"] == "always_invoice").to_string()),
                    ),
                ]),
                &ids,
            )
        } else {
            subscriptions::update(
                ctx,
                form(vec![
                    ("cancel_at_period_end", json!("true")),
                    (
                        "cancellation_details",
                        feedback.clone().unwrap_or(Value::Null),
                    ),
                ]),
                &ids,
            )
        }
    });
    match result {
        Ok(_) => after(&v, if immediately { "canceled" } else { "scheduled" }),
        Err(e) => render_cancel(&inner, &v, &sub, Some(&e.message)),
    }
}

/// `POST …/subscriptions/{sub}/renew`: undoes a cancellation at the period end.
async fn renew_submit(
    State(inner): State<Arc<Inner>>,
    Path((secret, sub)): Path<(String, String)>,
) -> Response {
    let Some(v) = visit(&inner, &secret) else {
        return not_found();
    };
    let customer = s(&v.session["customer"]);
    let result = act(&inner, &v, |ctx| {
        let current = customer_subscription(ctx, &customer, &sub, "subscription")?;
        if !LIVE.contains(&current["status"].as_str().unwrap_or_default()) {
            return Err(StripeError::invalid("This subscription has ended."));
        }
        let mut pairs = vec![("cancel_at_period_end", json!("false"))];
        if current["cancel_at_period_end"] != true && !current["cancel_at"].is_null() {
            pairs = vec![("cancel_at", json!(""))];
        }
        subscriptions::update(ctx, form(pairs), std::slice::from_ref(&sub))
    });
    match result {
        Ok(_) => see_other(&format!("{}?done=renewed", v.base)).unwrap_or_else(not_found),
        Err(e) => page(
            StatusCode::BAD_REQUEST,
            "Renew subscription",
            &format!(
                "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"{}?done=none\">Back to your subscriptions</a></p>",
                esc(&e.message),
                esc(&v.base)
            ),
        ),
    }
}

/// The prices a subscription may switch to: those the configuration lists for its product,
/// or else the product's active recurring prices (its current price excluded).
fn switch_prices(ctx: &mut Ctx, config: &Value, sub: &Value) -> Vec<Value> {
    let item = &sub["items"]["data"][0];
    let current = s(&item["price"]["id"]);
    let product = s(&item["price"]["product"]);
    let configured = allowed_products(ctx, &s(&config["id"]));
    let ids: Vec<String> = if configured.is_empty() {
        ctx.acct()
            .collection("price")
            .map(|c| {
                c.ids
                    .iter()
                    .filter_map(|id| c.objects.get(id))
                    .filter(|p| {
                        p["product"] == product.as_str()
                            && p["active"] == true
                            && p["type"] == "recurring"
                    })
                    .map(|p| s(&p["id"]))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        configured
            .iter()
            .flat_map(|p| p["prices"].as_array().cloned().unwrap_or_default())
            .map(|p| s(&p))
            .collect()
    };
    ids.into_iter()
        .filter(|id| *id != current)
        .filter_map(|id| ctx.get("price", &id))
        .filter(|p| p["active"] == true && p["currency"] == item["price"]["currency"])
        .collect()
}

fn render_update(inner: &Arc<Inner>, v: &Visit, sub_id: &str, error: Option<&str>) -> Response {
    let customer = s(&v.session["customer"]);
    let config = v.config.clone();
    let found = inner.run_as(&v.account, |ctx| {
        let sub = ctx
            .get(subscriptions::KIND, sub_id)
            .filter(|sub| sub["customer"] == customer.as_str())?;
        let prices = switch_prices(ctx, &config, &sub);
        let named: Vec<(Value, String)> = prices
            .into_iter()
            .map(|p| {
                let name = product_name(ctx, &s(&p["product"]));
                (p, name)
            })
            .collect();
        Some((sub_view(ctx, sub), named))
    });
    let Some((view, prices)) = found else {
        return not_found();
    };
    if v.config["features"]["subscription_update"]["enabled"] != true {
        return page(
            StatusCode::FORBIDDEN,
            "Update subscription",
            &format!(
                "{}<p>Changing plans is not available here. Contact the merchant.</p>",
                return_link(v)
            ),
        );
    }
    let lines: String = view
        .lines
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    let error = error
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    // A `subscription_update_confirm` flow proposes its price.
    let proposed = v.session["flow"]["subscription_update_confirm"]["items"][0]["price"]
        .as_str()
        .filter(|p| prices.iter().any(|(x, _)| x["id"] == *p))
        .map(str::to_string);
    let choices = if prices.is_empty() {
        "<p>There is no other plan to switch to.</p>".to_string()
    } else {
        let options: String = prices
            .iter()
            .enumerate()
            .map(|(i, (p, name))| {
                let label = match p["nickname"].as_str() {
                    Some(n) => format!("{name} ({n}) · {}", money_per(p)),
                    None => format!("{name} · {}", money_per(p)),
                };
                format!(
                    "<label class=\"choice\"><input type=\"radio\" name=\"price\" value=\"{}\"{}> {}</label>\n",
                    esc(&s(&p["id"])),
                    if proposed.as_deref().map_or(i == 0, |pr| p["id"] == pr) {
                        " checked"
                    } else {
                        ""
                    },
                    esc(&label)
                )
            })
            .collect();
        format!(
            "<form method=\"post\" action=\"{}/subscriptions/{}/update\">\n<fieldset><legend>Choose a plan</legend>\n{options}</fieldset>\n<button type=\"submit\">Confirm</button>\n</form>",
            esc(&v.base),
            esc(sub_id)
        )
    };
    let body = format!(
        "{}{error}<h2>Current plan</h2><ul class=\"lines\">{lines}</ul>\n{choices}\n<p class=\"back\"><a href=\"{}?done=none\">Go back</a></p>",
        return_link(v),
        esc(&v.base)
    );
    page(StatusCode::OK, "Update your subscription", &body)
}

async fn update_page(
    State(inner): State<Arc<Inner>>,
    Path((secret, sub)): Path<(String, String)>,
) -> Response {
    match visit(&inner, &secret) {
        Some(v) => render_update(&inner, &v, &sub, None),
        None => not_found(),
    }
}

/// `POST …/subscriptions/{sub}/update` (form: `price`): switches the subscription's price.
async fn update_submit(
    State(inner): State<Arc<Inner>>,
    Path((secret, sub)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(v) = visit(&inner, &secret) else {
        return not_found();
    };
    let price = field(&form_fields(&body), "price");
    let customer = s(&v.session["customer"]);
    let config = v.config.clone();
    let result = act(&inner, &v, |ctx| {
        if config["features"]["subscription_update"]["enabled"] != true {
            return Err(StripeError::invalid(
                "Changing plans is not available here.",
            ));
        }
        let current = customer_subscription(ctx, &customer, &sub, "subscription")?;
        if !LIVE.contains(&current["status"].as_str().unwrap_or_default()) {
            return Err(StripeError::invalid("This subscription has ended."));
        }
        if !switch_prices(ctx, &config, &current)
            .iter()
            .any(|p| p["id"] == price.as_str())
        {
            return Err(StripeError::invalid("Choose one of the plans shown."));
        }
        let item = s(&current["items"]["data"][0]["id"]);
        let proration = config["features"]["subscription_update"]["proration_behavior"].clone();
        subscriptions::update(
            ctx,
            form(vec![
                ("items", json!([{"id": item, "price": price}])),
                ("proration_behavior", proration),
            ]),
            std::slice::from_ref(&sub),
        )
    });
    match result {
        Ok(_) => after(&v, "updated"),
        Err(e) => render_update(&inner, &v, &sub, Some(&e.message)),
    }
}

fn render_card(v: &Visit, error: Option<&str>, status: StatusCode) -> Response {
    if v.config["features"]["payment_method_update"]["enabled"] != true {
        return page(
            StatusCode::FORBIDDEN,
            "Update payment method",
            &format!(
                "{}<p>Updating the payment method is not available here. Contact the merchant.</p>",
                return_link(v)
            ),
        );
    }
    let error = error
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        r#"{back}<form method="post" action="{base}/payment_method" autocomplete="on" novalidate>
{error}
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
<input id="name" name="name" autocomplete="cc-name">
<button type="submit">Save card</button>
</form>
<p class="back"><a href="{base}?done=none">Go back</a></p>
<p class="hint">Test cards: 4242 4242 4242 4242 (Visa), 5555 5555 5555 4444 (Mastercard).</p>"#,
        back = return_link(v),
        base = esc(&v.base),
    );
    page(status, "Update your payment method", &body)
}

async fn card_page(State(inner): State<Arc<Inner>>, Path(secret): Path<String>) -> Response {
    match visit(&inner, &secret) {
        Some(v) => render_card(&v, None, StatusCode::OK),
        None => not_found(),
    }
}

/// The card form's fields as `POST /v1/payment_methods` parameters.
fn card_params(fields: &Map<String, Value>) -> Result<Params> {
    let card_error = |message: &str, param: &str| {
        StripeError::new(StatusCode::BAD_REQUEST, "card_error", message).param(param)
    };
    let number: String = field(fields, "cardnumber")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if number.is_empty() {
        return Err(card_error("Your card number is incomplete.", "cardnumber"));
    }
    let exp: String = field(fields, "exp")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if !matches!(exp.len(), 4 | 6) {
        return Err(card_error(
            "Your card's expiration date is incomplete.",
            "exp",
        ));
    }
    let (month, year) = exp.split_at(2);
    let cvc = field(fields, "cvc");
    if !(3..=4).contains(&cvc.len()) || !cvc.chars().all(|c| c.is_ascii_digit()) {
        return Err(card_error(
            "Your card's security code is incomplete.",
            "cvc",
        ));
    }
    let name = field(fields, "name");
    let mut billing = Map::new();
    if !name.is_empty() {
        billing.insert("name".into(), json!(name));
    }
    Ok(form(vec![
        ("type", json!("card")),
        (
            "card",
            json!({"number": number, "exp_month": month, "exp_year": year, "cvc": cvc}),
        ),
        (
            "billing_details",
            if billing.is_empty() {
                Value::Null
            } else {
                Value::Object(billing)
            },
        ),
    ]))
}

/// `POST …/payment_method` (form: `cardnumber`, `exp`, `cvc`, `name`): attaches the card and
/// makes it the default of the customer and of its subscriptions that name one.
async fn card_submit(
    State(inner): State<Arc<Inner>>,
    Path(secret): Path<String>,
    body: Bytes,
) -> Response {
    let Some(v) = visit(&inner, &secret) else {
        return not_found();
    };
    let fields = form_fields(&body);
    let customer = s(&v.session["customer"]);
    let enabled = v.config["features"]["payment_method_update"]["enabled"] == true;
    let result = act(&inner, &v, |ctx| {
        if !enabled {
            return Err(StripeError::invalid(
                "Updating the payment method is not available here.",
            ));
        }
        let mut p = card_params(&fields)?;
        let pm = payment_methods::from_params(ctx, &mut p, "")?;
        p.finish()?;
        let pm_id = s(&pm["id"]);
        customers::update(
            ctx,
            form(vec![
                ("payment_method", json!(pm_id)),
                ("invoice_settings", json!({"default_payment_method": pm_id})),
            ]),
            std::slice::from_ref(&customer),
        )?;
        let with_default: Vec<String> = customer_subs(ctx, &customer)
            .into_iter()
            .filter(|view| !view.sub["default_payment_method"].is_null())
            .map(|view| s(&view.sub["id"]))
            .collect();
        for id in with_default {
            subscriptions::update(
                ctx,
                form(vec![("default_payment_method", json!(pm_id))]),
                &[id],
            )?;
        }
        Ok(())
    });
    match result {
        Ok(()) => after(&v, "card"),
        Err(e) => render_card(&v, Some(&e.message), StatusCode::BAD_REQUEST),
    }
}

const PORTAL_CSS: &str = r#"
h2 { font-size: 1rem; margin: 1.25rem 0 .5rem; }
.sub { border: 1px solid #e3e8ee; border-radius: 6px; padding: .5rem .75rem; margin-bottom: .75rem; }
.sub .lines li { border-bottom: 0; }
.state { color: #425466; margin: .25rem 0; }
.actions { display: flex; gap: .5rem; flex-wrap: wrap; }
.actions form { display: inline; }
.actions button, a.button { margin-top: .25rem; font-size: .95rem; padding: .5rem .8rem; }
a.button { display: inline-block; border-radius: 6px; text-decoration: none; font-weight: 600; background: #635bff; color: #fff; }
a.button.secondary { background: #e3e8ee; color: #1a1f36; }
a.button.danger, button.danger { background: #a4161a; color: #fff; }
.notice { background: #e6f4ea; color: #1e4620; border-radius: 6px; padding: .6rem .75rem; }
.who { color: #697386; font-size: .9rem; }
.choice { display: flex; gap: .5rem; align-items: center; font-size: 1rem; color: #1a1f36; }
.choice input { width: auto; }
select { font: inherit; font-size: 1rem; padding: .55rem .6rem; border: 1px solid #cfd7df; border-radius: 6px; }
"#;

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let css = format!("{}{PORTAL_CSS}", include_str!("../../assets/checkout.css"));
    let mut r = crate::control::private_html(status, crate::control::html_page(title, &css, body));
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
    fn card_form_fields() {
        let mut f = Map::new();
        f.insert("cardnumber".into(), json!("4242 4242 4242 4242"));
        f.insert("exp".into(), json!("12 / 34"));
        f.insert("cvc".into(), json!("123"));
        assert!(card_params(&f).is_ok());
        f.insert("exp".into(), json!("1"));
        let e = card_params(&f).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("Your card's expiration date is incomplete.")
        );
    }

    #[test]
    fn dates_read_as_words() {
        assert_eq!(date(0), "January 1, 1970");
    }
}
