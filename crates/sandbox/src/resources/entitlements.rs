//! Stripe's Entitlements API: features (`/v1/entitlements/features`), the features attached to
//! products (`/v1/products/{id}/features`) and the active entitlements of customers
//! (`/v1/entitlements/active_entitlements`), with the
//! `entitlements.active_entitlement_summary.updated` event.
//!
//! A customer's active entitlements are computed as on Stripe: the features attached to the
//! products of the items of its subscriptions that are `active`, `trialing` or `past_due`
//! (archived features count for nobody). One-time purchases never entitle. Whenever a
//! subscription event is emitted ([`observe`], called from `Ctx::emit`) or a product's features
//! or a feature's `active` flag change, the customers concerned are computed again; each one
//! whose set changed gets the summary event (its `entitlements` list holds the first 10, with
//! `has_more`, as Stripe's does).
//!
//! Stored: features in `entitlements.feature`; the sandbox-only records of attachments
//! (`_product_feature`: product, feature) and of entitlements (`_active_entitlement`: customer,
//! feature, lookup key, whether it is still active; an entitlement keeps its id while it lasts).

use serde_json::{Value, json};

use super::{fetch, no_params, page_array};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, empty_map, list_object};

pub const FEATURE: &str = "entitlements.feature";
pub const ACTIVE: &str = "entitlements.active_entitlement";
const SUMMARY: &str = "entitlements.active_entitlement_summary";
const ATTACHED: &str = "_product_feature";
const ENTITLEMENT: &str = "_active_entitlement";
/// Subscription statuses that entitle their customer to their products' features.
const ENTITLING: &[&str] = &["active", "trialing", "past_due"];
/// The summary event's `entitlements` list shows this many.
const SUMMARY_LIMIT: usize = 10;
/// Stripe's limit on a feature's `name` and `lookup_key`.
const MAX_LEN: usize = 80;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn test_id(prefix: &str) -> String {
    format!("{prefix}_test_{}", random_string(32))
}

fn bounded(p: &mut Params, key: &str, required: bool) -> Result<Option<String>> {
    let v = if required {
        Some(p.req_str(key)?)
    } else {
        p.opt_str(key)?
    };
    if let Some(v) = &v
        && v.chars().count() > MAX_LEN
    {
        return Err(StripeError::invalid(format!(
            "Invalid {key}: must be at most {MAX_LEN} characters"
        ))
        .code("parameter_invalid_string")
        .param(key));
    }
    Ok(v)
}

fn feature_of(ctx: &mut Ctx, id: &str, param: &str) -> Result<Value> {
    ctx.get(FEATURE, id)
        .ok_or_else(|| StripeError::missing("feature", id, param))
}

// ---- features --------------------------------------------------------------------------------

pub fn create_feature(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let name = bounded(&mut p, "name", true)?.unwrap_or_default();
    let lookup_key = bounded(&mut p, "lookup_key", true)?.unwrap_or_default();
    let mut md = empty_map();
    merge_metadata(&mut md, p.metadata("metadata")?);
    p.finish()?;
    let taken = ctx
        .acct()
        .collection(FEATURE)
        .is_some_and(|c| c.objects.values().any(|f| f["lookup_key"] == lookup_key));
    if taken {
        return Err(StripeError::invalid(format!(
            "A feature with the lookup_key '{lookup_key}' already exists."
        ))
        .code("resource_already_exists")
        .param("lookup_key"));
    }
    let obj = json!({
        "id": test_id("feat"), "object": FEATURE, "active": true, "livemode": false,
        "lookup_key": lookup_key, "metadata": md, "name": name,
    });
    ctx.put(FEATURE, obj.clone());
    Ok(obj)
}

pub fn retrieve_feature(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    feature_of(ctx, &ids[0], "id")
}

/// Renames, archives (`active=false`) or restores a feature, or changes its metadata. The
/// customers whose products carry it are computed again when `active` changes.
pub fn update_feature(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = feature_of(ctx, &ids[0], "id")?;
    let mut obj = before.clone();
    if let Some(n) = bounded(&mut p, "name", false)? {
        obj["name"] = json!(n);
    }
    if let Some(a) = p.bool("active")? {
        obj["active"] = json!(a);
    }
    merge_metadata(&mut obj["metadata"], p.metadata("metadata")?);
    p.finish()?;
    ctx.put(FEATURE, obj.clone());
    if before["active"] != obj["active"] {
        let products: Vec<String> = attachments(ctx)
            .into_iter()
            .filter(|a| a["feature"] == obj["id"])
            .map(|a| s(&a["product"]))
            .collect();
        refresh_products(ctx, &products);
    }
    // Stripe has no event for features (only the summary event of the customers concerned).
    Ok(obj)
}

pub fn list_features(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let archived = p.bool("archived")?;
    let lookup_key = p.opt_str("lookup_key")?;
    super::list(ctx, p, FEATURE, "/v1/entitlements/features", |f| {
        archived.is_none_or(|a| f["active"] == !a)
            && lookup_key.as_deref().is_none_or(|k| f["lookup_key"] == k)
    })
}

// ---- product features ------------------------------------------------------------------------

fn attachments(ctx: &mut Ctx) -> Vec<Value> {
    match ctx.acct().collection(ATTACHED) {
        None => Vec::new(),
        Some(c) => c
            .ids
            .iter()
            .filter_map(|id| c.objects.get(id))
            .filter(|a| a["deleted"] != true)
            .cloned()
            .collect(),
    }
}

fn render_attachment(ctx: &mut Ctx, a: &Value) -> Value {
    let feature = ctx
        .get(FEATURE, a["feature"].as_str().unwrap_or_default())
        .unwrap_or(Value::Null);
    json!({"id": a["id"], "object": "product_feature", "entitlement_feature": feature,
           "livemode": false})
}

fn live_product(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let prod = fetch(ctx, "product", id, "product")?;
    if prod["deleted"] == true {
        return Err(StripeError::missing("product", id, "product"));
    }
    Ok(prod)
}

fn attachment_of(ctx: &mut Ctx, product: &str, id: &str) -> Result<Value> {
    ctx.get(ATTACHED, id)
        .filter(|a| a["product"] == product && a["deleted"] != true)
        .ok_or_else(|| StripeError::missing("product_feature", id, "id"))
}

/// Attaches a feature to a product: its subscribers are entitled to it from now on.
pub fn attach(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let product = &ids[0];
    live_product(ctx, product)?;
    let feature_id = p.req_str("entitlement_feature")?;
    p.finish()?;
    let feature = feature_of(ctx, &feature_id, "entitlement_feature")?;
    if feature["active"] != true {
        return Err(StripeError::invalid(format!(
            "The feature '{feature_id}' is archived and cannot be attached to a product."
        ))
        .param("entitlement_feature"));
    }
    if attachments(ctx)
        .iter()
        .any(|a| a["product"] == product.as_str() && a["feature"] == feature_id.as_str())
    {
        return Err(StripeError::invalid(format!(
            "The feature '{feature_id}' is already attached to the product '{product}'."
        ))
        .code("resource_already_exists")
        .param("entitlement_feature"));
    }
    let rec = json!({"id": new_id("prodft"), "product": product, "feature": feature_id});
    ctx.put(ATTACHED, rec.clone());
    refresh_products(ctx, std::slice::from_ref(product));
    Ok(render_attachment(ctx, &rec))
}

pub fn list_attached(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    let product = &ids[0];
    live_product(ctx, product)?;
    // Newest first, as Stripe's lists are.
    let recs: Vec<Value> = attachments(ctx)
        .into_iter()
        .rev()
        .filter(|a| a["product"] == product.as_str())
        .collect();
    let data: Vec<Value> = recs.iter().map(|a| render_attachment(ctx, a)).collect();
    page_array(
        p,
        &data,
        &format!("/v1/products/{product}/features"),
        "product_feature",
    )
}

pub fn retrieve_attached(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    live_product(ctx, &ids[0])?;
    let rec = attachment_of(ctx, &ids[0], &ids[1])?;
    Ok(render_attachment(ctx, &rec))
}

/// Detaches a feature from a product: its subscribers lose it unless another product of
/// theirs carries it too.
pub fn detach(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    live_product(ctx, &ids[0])?;
    let rec = attachment_of(ctx, &ids[0], &ids[1])?;
    ctx.put(ATTACHED, json!({"id": rec["id"], "deleted": true}));
    refresh_products(ctx, std::slice::from_ref(&ids[0]));
    Ok(json!({"id": rec["id"], "object": "product_feature", "deleted": true}))
}

// ---- active entitlements ---------------------------------------------------------------------

fn public_entitlement(rec: &Value) -> Value {
    json!({"id": rec["id"], "object": ACTIVE, "feature": rec["feature"], "livemode": false,
           "lookup_key": rec["lookup_key"]})
}

/// The customer's active entitlements, oldest first.
fn active_of(ctx: &mut Ctx, customer: &str) -> Vec<Value> {
    match ctx.acct().collection(ENTITLEMENT) {
        None => Vec::new(),
        Some(c) => c
            .ids
            .iter()
            .filter_map(|id| c.objects.get(id))
            .filter(|e| e["customer"] == customer && e["active"] == true)
            .map(public_entitlement)
            .collect(),
    }
}

pub fn list_active(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let customer = p.req_str("customer")?;
    let data = active_of(ctx, &customer);
    page_array(
        p,
        &data,
        "/v1/entitlements/active_entitlements",
        "entitlements.active_entitlement",
    )
}

pub fn retrieve_active(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    ctx.get(ENTITLEMENT, &ids[0])
        .filter(|e| e["active"] == true)
        .map(|e| public_entitlement(&e))
        .ok_or_else(|| StripeError::missing("active_entitlement", &ids[0], "id"))
}

// ---- computing entitlements ------------------------------------------------------------------

/// `Ctx::emit` calls this with every event: a subscription event computes its customer's
/// entitlements again (with the event's object, which may not be stored yet).
pub fn observe(ctx: &mut Ctx, kind: &str, object: &Value) {
    if !kind.starts_with("customer.subscription.") || object["object"] != "subscription" {
        return;
    }
    // Nothing to compute in an account that never attached a feature (the common case, and
    // a scan of its subscriptions saved on every subscription event).
    let acct = ctx.acct();
    let none = |kind: &str| acct.collection(kind).is_none_or(|c| c.ids.is_empty());
    if none(ATTACHED) && none(ENTITLEMENT) {
        return;
    }
    let Some(customer) = object["customer"].as_str().map(str::to_string) else {
        return;
    };
    refresh(ctx, &customer, Some(object));
}

/// Products of a subscription's items.
fn products_of(sub: &Value) -> Vec<String> {
    sub["items"]["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| match &i["price"]["product"] {
                    Value::String(p) => p.clone(),
                    other => s(&other["id"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The features (ids, in attachment order, once each) `customer` is entitled to now.
fn entitled(ctx: &mut Ctx, customer: &str, fresh: Option<&Value>) -> Vec<String> {
    let mut subs: Vec<Value> = match ctx.acct().collection(super::subscriptions::KIND) {
        None => Vec::new(),
        Some(c) => c
            .objects
            .values()
            .filter(|v| v["customer"] == customer)
            .cloned()
            .collect(),
    };
    if let Some(f) = fresh {
        subs.retain(|v| v["id"] != f["id"]);
        subs.push(f.clone());
    }
    let products: Vec<String> = subs
        .iter()
        .filter(|v| ENTITLING.iter().any(|st| v["status"] == *st))
        .flat_map(products_of)
        .collect();
    let mut out: Vec<String> = Vec::new();
    for a in attachments(ctx) {
        let feature = s(&a["feature"]);
        if products.iter().any(|p| a["product"] == p.as_str())
            && !out.contains(&feature)
            && ctx
                .get(FEATURE, &feature)
                .is_some_and(|f| f["active"] == true)
        {
            out.push(feature);
        }
    }
    out
}

/// Customers with a subscription to one of `products` (any status: one that just ended may
/// lose a feature too).
fn customers_of(ctx: &mut Ctx, products: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(c) = ctx.acct().collection(super::subscriptions::KIND) {
        for id in &c.ids {
            let Some(sub) = c.objects.get(id) else {
                continue;
            };
            let cus = s(&sub["customer"]);
            if products_of(sub).iter().any(|p| products.contains(p)) && !out.contains(&cus) {
                out.push(cus);
            }
        }
    }
    out
}

fn refresh_products(ctx: &mut Ctx, products: &[String]) {
    for cus in customers_of(ctx, products) {
        refresh(ctx, &cus, None);
    }
}

/// Computes `customer`'s entitlements again; when the set changed, records it and emits
/// `entitlements.active_entitlement_summary.updated`.
fn refresh(ctx: &mut Ctx, customer: &str, fresh: Option<&Value>) {
    let now = entitled(ctx, customer, fresh);
    let before = active_of(ctx, customer);
    let had: Vec<String> = before.iter().map(|e| s(&e["feature"])).collect();
    if had.len() == now.len() && had.iter().all(|f| now.contains(f)) {
        return;
    }
    let stale: Vec<Value> = match ctx.acct().collection(ENTITLEMENT) {
        None => Vec::new(),
        Some(c) => c
            .objects
            .values()
            .filter(|e| {
                e["customer"] == customer
                    && e["active"] == true
                    && !now.iter().any(|f| e["feature"] == f.as_str())
            })
            .cloned()
            .collect(),
    };
    for mut e in stale {
        e["active"] = json!(false);
        ctx.put(ENTITLEMENT, e);
    }
    for f in now.iter().filter(|f| !had.contains(f)) {
        let lookup_key = ctx
            .get(FEATURE, f)
            .map(|v| v["lookup_key"].clone())
            .unwrap_or(Value::Null);
        ctx.put(
            ENTITLEMENT,
            json!({"id": test_id("ent"), "customer": customer, "feature": f,
                   "lookup_key": lookup_key, "active": true}),
        );
    }
    let summary = summary_of(ctx, customer);
    let old_list = list_head(&before);
    ctx.emit(
        &format!("{SUMMARY}.updated"),
        &summary,
        Some(json!({"entitlements": old_list})),
    );
}

fn list_head(all: &[Value]) -> Value {
    let head: Vec<Value> = all.iter().take(SUMMARY_LIMIT).cloned().collect();
    list_object(
        "/v1/entitlements/active_entitlements",
        head,
        all.len() > SUMMARY_LIMIT,
    )
}

fn summary_of(ctx: &mut Ctx, customer: &str) -> Value {
    let all = active_of(ctx, customer);
    json!({"object": SUMMARY, "customer": customer, "entitlements": list_head(&all),
           "livemode": false})
}
