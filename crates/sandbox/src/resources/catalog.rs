//! Products and prices (one-time and recurring).

use serde_json::{Value, json};

use super::previous;
use super::{currency, fetch, no_params};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id};
use crate::{Ctx, empty_map};

fn product_fields(obj: &mut Value, p: &mut Params) -> Result<()> {
    for k in [
        "description",
        "statement_descriptor",
        "unit_label",
        "url",
        "tax_code",
    ] {
        if let Some(v) = p.str(k)? {
            obj[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    if let Some(a) = p.bool("active")? {
        obj["active"] = json!(a);
    }
    if let Some(s) = p.bool("shippable")? {
        obj["shippable"] = json!(s);
    }
    if let Some(images) = p.str_list("images")? {
        obj["images"] = json!(images);
    }
    merge_metadata(&mut obj["metadata"], p.metadata("metadata")?);
    p.ignore(&["package_dimensions", "marketing_features", "features"]);
    Ok(())
}

pub fn create_product(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let name = p.req_str("name")?;
    let id = match p.opt_str("id")? {
        Some(id) => {
            if ctx.get("product", &id).is_some() {
                return Err(StripeError::invalid("Product already exists.")
                    .code("resource_already_exists")
                    .param("id"));
            }
            id
        }
        None => new_id("prod").chars().take(19).collect(),
    };
    let kind = p
        .enum_str("type", &["good", "service"])?
        .unwrap_or_else(|| "service".into());
    let mut obj = json!({
        "id": id, "object": "product", "active": true, "created": ctx.now, "default_price": null,
        "description": null, "images": [], "livemode": false, "marketing_features": [],
        "metadata": empty_map(), "name": name, "package_dimensions": null, "shippable": null,
        "statement_descriptor": null, "tax_code": null, "type": kind, "unit_label": null,
        "updated": ctx.now, "url": null,
    });
    product_fields(&mut obj, &mut p)?;
    let default_price = p.sub("default_price_data")?;
    if let Some(mut dp) = default_price {
        let cur = currency(&mut dp, "currency")?;
        let unit = dp.int("unit_amount")?;
        let recurring = recurring(ctx, &mut dp)?;
        dp.ignore(&["tax_behavior", "unit_amount_decimal", "currency_options"]);
        dp.finish()?;
        p.finish()?;
        let price = new_price(ctx, &id, &cur, unit, recurring, None, None, empty_map());
        obj["default_price"] = price["id"].clone();
        ctx.put("product", obj.clone());
        ctx.emit("product.created", &obj, None);
        ctx.put("price", price.clone());
        ctx.emit("price.created", &price, None);
        return Ok(obj);
    }
    p.finish()?;
    ctx.put("product", obj.clone());
    ctx.emit("product.created", &obj, None);
    Ok(obj)
}

pub fn retrieve_product(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "product", &ids[0], "id")
}

pub fn update_product(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "product", &ids[0], "id")?;
    let mut obj = before.clone();
    if let Some(n) = p.opt_str("name")? {
        obj["name"] = json!(n);
    }
    if let Some(dp) = p.opt_str("default_price")? {
        let price = fetch(ctx, "price", &dp, "default_price")?;
        if price["product"] != obj["id"] {
            return Err(
                StripeError::invalid("The default price must belong to this product.")
                    .param("default_price"),
            );
        }
        obj["default_price"] = json!(dp);
    }
    product_fields(&mut obj, &mut p)?;
    p.finish()?;
    obj["updated"] = json!(ctx.now);
    ctx.put("product", obj.clone());
    ctx.emit("product.updated", &obj, Some(previous(&before, &obj)));
    Ok(obj)
}

pub fn delete_product(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = fetch(ctx, "product", &ids[0], "id")?;
    let has_prices = ctx.acct().collection("price").is_some_and(|c| {
        c.objects
            .values()
            .any(|pr| pr["product"] == ids[0].as_str())
    });
    if has_prices {
        return Err(StripeError::invalid(
            "This product cannot be deleted because it has one or more user-created prices.",
        ));
    }
    let tomb = json!({"id": ids[0], "object": "product", "deleted": true});
    ctx.put("product", tomb.clone());
    ctx.emit("product.deleted", &before, None);
    Ok(tomb)
}

pub fn list_products(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let active = p.bool("active")?;
    let ids = p.str_list("ids")?;
    super::list(ctx, p, "product", "/v1/products", |o| {
        active.is_none_or(|a| o["active"] == a)
            && ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| o["id"] == i.as_str()))
    })
}

/// `interval` and `interval_count` of a `recurring` hash (named `path` in errors): at most
/// three years, as Stripe allows.
pub(crate) fn billing_interval(r: &mut Params, path: &str) -> Result<(String, i64)> {
    let interval = r
        .enum_str("interval", &["day", "week", "month", "year"])?
        .ok_or_else(|| StripeError::missing_param(&format!("{path}[interval]")))?;
    let count = r.int("interval_count")?.unwrap_or(1);
    let max = match interval.as_str() {
        "day" => 1095,
        "week" => 156,
        "month" => 36,
        _ => 3,
    };
    if !(1..=max).contains(&count) {
        return Err(StripeError::invalid(
            "Invalid recurring[interval_count]: the maximum billing interval is three years.",
        )
        .param(&format!("{path}[interval_count]")));
    }
    Ok((interval, count))
}

/// A price's `recurring` hash. Metered prices (`usage_type=metered`) name the Billing Meter
/// whose usage they bill (`recurring[meter]`, required for them and refused for others).
fn recurring(ctx: &mut Ctx, p: &mut Params) -> Result<Option<Value>> {
    let Some(mut r) = p.sub("recurring")? else {
        return Ok(None);
    };
    let (interval, count) = billing_interval(&mut r, "recurring")?;
    let usage = r
        .enum_str("usage_type", &["licensed", "metered"])?
        .unwrap_or_else(|| "licensed".into());
    let trial = r.int("trial_period_days")?;
    let meter = r.opt_str("meter")?;
    r.ignore(&["aggregate_usage"]);
    r.finish()?;
    match (&meter, usage.as_str()) {
        (None, "metered") => return Err(StripeError::missing_param("recurring[meter]")),
        (Some(_), "licensed") => {
            return Err(StripeError::invalid(
                "You can only set `recurring[meter]` when `recurring[usage_type]` is `metered`.",
            )
            .param("recurring[meter]"));
        }
        (Some(m), _) => {
            fetch(ctx, super::billing_meters::METER, m, "recurring[meter]")?;
        }
        _ => {}
    }
    Ok(Some(
        json!({"interval": interval, "interval_count": count, "meter": meter,
                   "trial_period_days": trial, "usage_type": usage}),
    ))
}

#[allow(clippy::too_many_arguments)]
fn new_price(
    ctx: &mut Ctx,
    product: &str,
    currency: &str,
    unit_amount: Option<i64>,
    recurring: Option<Value>,
    nickname: Option<String>,
    lookup_key: Option<String>,
    metadata: Value,
) -> Value {
    let kind = if recurring.is_some() {
        "recurring"
    } else {
        "one_time"
    };
    json!({
        "id": new_id("price"), "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": ctx.now, "currency": currency, "custom_unit_amount": null, "livemode": false,
        "lookup_key": lookup_key, "metadata": metadata, "nickname": nickname, "product": product,
        "recurring": recurring, "tax_behavior": "unspecified", "tiers_mode": null,
        "transform_quantity": null, "type": kind, "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.map(|u| u.to_string()),
    })
}

pub fn create_price(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let cur = currency(&mut p, "currency")?;
    let product = match p.opt_str("product")? {
        Some(pr) => {
            let prod = fetch(ctx, "product", &pr, "product")?;
            if prod["deleted"] == true {
                return Err(StripeError::missing("product", &pr, "product"));
            }
            pr
        }
        None => {
            let Some(mut pd) = p.sub("product_data")? else {
                return Err(StripeError::invalid(
                    "You must specify either `product` or `product_data` when creating a price.",
                )
                .code("parameter_missing")
                .param("product"));
            };
            let name = pd.req_str("name")?;
            let mut md = empty_map();
            merge_metadata(&mut md, pd.metadata("metadata")?);
            pd.ignore(&[
                "active",
                "statement_descriptor",
                "tax_code",
                "unit_label",
                "id",
            ]);
            pd.finish()?;
            let prod = json!({
                "id": new_id("prod").chars().take(19).collect::<String>(), "object": "product",
                "active": true, "created": ctx.now, "default_price": null, "description": null,
                "images": [], "livemode": false, "marketing_features": [], "metadata": md,
                "name": name, "package_dimensions": null, "shippable": null,
                "statement_descriptor": null, "tax_code": null, "type": "service",
                "unit_label": null, "updated": ctx.now, "url": null,
            });
            ctx.put("product", prod.clone());
            ctx.emit("product.created", &prod, None);
            prod["id"].as_str().unwrap_or_default().to_string()
        }
    };
    let unit = p.int("unit_amount")?;
    let decimal = p.opt_str("unit_amount_decimal")?;
    let unit = match (unit, decimal) {
        (Some(u), _) => Some(u),
        (None, Some(d)) => Some(d.parse::<f64>().map(|x| x.round() as i64).map_err(|_| {
            StripeError::invalid(format!("Invalid decimal: {d}")).param("unit_amount_decimal")
        })?),
        (None, None) => None,
    };
    if let Some(u) = unit
        && u < 0
    {
        return Err(
            StripeError::invalid("Invalid integer: unit_amount must be non-negative")
                .param("unit_amount"),
        );
    }
    let recurring = recurring(ctx, &mut p)?;
    let nickname = p.opt_str("nickname")?;
    let lookup_key = p.opt_str("lookup_key")?;
    let mut md = empty_map();
    merge_metadata(&mut md, p.metadata("metadata")?);
    p.ignore(&[
        "tax_behavior",
        "billing_scheme",
        "active",
        "currency_options",
        "tiers",
        "tiers_mode",
        "transfer_lookup_key",
        "transform_quantity",
        "custom_unit_amount",
    ]);
    p.finish()?;
    if unit.is_none() {
        return Err(StripeError::missing_param("unit_amount"));
    }
    let price = new_price(
        ctx, &product, &cur, unit, recurring, nickname, lookup_key, md,
    );
    ctx.put("price", price.clone());
    ctx.emit("price.created", &price, None);
    Ok(price)
}

pub fn retrieve_price(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "price", &ids[0], "price")
}

pub fn update_price(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = fetch(ctx, "price", &ids[0], "price")?;
    let mut obj = before.clone();
    if let Some(a) = p.bool("active")? {
        obj["active"] = json!(a);
    }
    for k in ["nickname", "lookup_key"] {
        if let Some(v) = p.str(k)? {
            obj[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    merge_metadata(&mut obj["metadata"], p.metadata("metadata")?);
    p.ignore(&["tax_behavior", "currency_options", "transfer_lookup_key"]);
    p.finish()?;
    ctx.put("price", obj.clone());
    ctx.emit("price.updated", &obj, Some(previous(&before, &obj)));
    Ok(obj)
}

pub fn list_prices(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let active = p.bool("active")?;
    let product = p.opt_str("product")?;
    let kind = p.enum_str("type", &["one_time", "recurring"])?;
    let cur = p.opt_str("currency")?;
    let lookup = p.str_list("lookup_keys")?;
    super::list(ctx, p, "price", "/v1/prices", |o| {
        active.is_none_or(|a| o["active"] == a)
            && product.as_deref().is_none_or(|pr| o["product"] == pr)
            && kind.as_deref().is_none_or(|k| o["type"] == k)
            && cur.as_deref().is_none_or(|c| o["currency"] == c)
            && lookup
                .as_ref()
                .is_none_or(|l| l.iter().any(|k| o["lookup_key"] == k.as_str()))
    })
}
