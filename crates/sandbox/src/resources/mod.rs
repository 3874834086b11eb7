//! Stripe's resources: the routing table and what every resource shares (lists, `expand`,
//! amounts and currencies).

pub mod accounts;
pub mod billing_meters;
pub mod billing_portal;
pub mod catalog;
pub mod charges;
pub mod checkout;
pub mod credit_notes;
pub mod customers;
pub mod disputes;
pub mod entitlements;
pub mod events;
pub mod invoices;
pub mod payment_intents;
pub mod payment_methods;
pub mod refunds;
pub mod subscriptions;
pub mod test_clocks;

use std::sync::Arc;

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::{Ctx, Inner, list_object, lock};

pub type Handler = fn(&mut Ctx, Params, &[String]) -> Result<Value>;

#[derive(Clone)]
pub struct Route {
    /// Restricted-key permission name (see docs/sandbox.md).
    pub perm: &'static str,
    pub write: bool,
    /// Callable with a publishable key (with the intent's client secret).
    pub publishable: bool,
    pub handler: Handler,
    pub ids: Vec<String>,
}

fn r(perm: &'static str, write: bool, handler: Handler, ids: &[&str]) -> Option<Route> {
    Some(Route {
        perm,
        write,
        publishable: false,
        handler,
        ids: ids.iter().map(|s| s.to_string()).collect(),
    })
}

fn public(mut route: Option<Route>) -> Option<Route> {
    if let Some(r) = route.as_mut() {
        r.publishable = true;
    }
    route
}

const R: bool = false;
const W: bool = true;

/// The routing table: one line per Stripe endpoint the sandbox serves.
pub fn route(method: &Method, segs: &[&str]) -> Option<Route> {
    use billing_meters as meters;
    use entitlements as ent;
    use invoices as inv;
    use payment_intents as pi;
    use subscriptions as subs;
    let m = method.as_str();
    match (m, segs) {
        ("POST", ["v1", "accounts"]) => r("accounts", W, accounts::create, &[]),
        ("GET", ["v1", "accounts"]) => r("accounts", R, accounts::list, &[]),
        ("GET", ["v1", "accounts", id]) => r("accounts", R, accounts::retrieve, &[id]),
        ("GET", ["v1", "account"]) => r("accounts", R, accounts::retrieve_self, &[]),

        ("POST", ["v1", "customers"]) => r("customers", W, customers::create, &[]),
        ("GET", ["v1", "customers"]) => r("customers", R, customers::list, &[]),
        ("GET", ["v1", "customers", id]) => r("customers", R, customers::retrieve, &[id]),
        ("POST", ["v1", "customers", id]) => r("customers", W, customers::update, &[id]),
        ("DELETE", ["v1", "customers", id]) => r("customers", W, customers::delete, &[id]),
        ("GET", ["v1", "customers", id, "payment_methods"]) => r(
            "payment_methods",
            R,
            payment_methods::list_for_customer,
            &[id],
        ),
        ("POST", ["v1", "test_helpers", "customers", id, "fund_cash_balance"]) => {
            r("customers", W, pi::fund_cash_balance, &[id])
        }

        ("POST", ["v1", "products"]) => r("products", W, catalog::create_product, &[]),
        ("GET", ["v1", "products"]) => r("products", R, catalog::list_products, &[]),
        ("GET", ["v1", "products", id]) => r("products", R, catalog::retrieve_product, &[id]),
        ("POST", ["v1", "products", id]) => r("products", W, catalog::update_product, &[id]),
        ("DELETE", ["v1", "products", id]) => r("products", W, catalog::delete_product, &[id]),
        ("GET", ["v1", "products", id, "features"]) => r("products", R, ent::list_attached, &[id]),
        ("POST", ["v1", "products", id, "features"]) => r("products", W, ent::attach, &[id]),
        ("GET", ["v1", "products", id, "features", f]) => {
            r("products", R, ent::retrieve_attached, &[id, f])
        }
        ("DELETE", ["v1", "products", id, "features", f]) => {
            r("products", W, ent::detach, &[id, f])
        }
        ("POST", ["v1", "entitlements", "features"]) => {
            r("entitlements", W, ent::create_feature, &[])
        }
        ("GET", ["v1", "entitlements", "features"]) => {
            r("entitlements", R, ent::list_features, &[])
        }
        ("GET", ["v1", "entitlements", "features", id]) => {
            r("entitlements", R, ent::retrieve_feature, &[id])
        }
        ("POST", ["v1", "entitlements", "features", id]) => {
            r("entitlements", W, ent::update_feature, &[id])
        }
        ("GET", ["v1", "entitlements", "active_entitlements"]) => {
            r("entitlements", R, ent::list_active, &[])
        }
        ("GET", ["v1", "entitlements", "active_entitlements", id]) => {
            r("entitlements", R, ent::retrieve_active, &[id])
        }
        ("POST", ["v1", "prices"]) => r("prices", W, catalog::create_price, &[]),
        ("GET", ["v1", "prices"]) => r("prices", R, catalog::list_prices, &[]),
        ("GET", ["v1", "prices", id]) => r("prices", R, catalog::retrieve_price, &[id]),
        ("POST", ["v1", "prices", id]) => r("prices", W, catalog::update_price, &[id]),

        ("POST", ["v1", "payment_methods"]) => {
            public(r("payment_methods", W, payment_methods::create, &[]))
        }
        ("GET", ["v1", "payment_methods"]) => r("payment_methods", R, payment_methods::list, &[]),
        ("GET", ["v1", "payment_methods", id]) => {
            r("payment_methods", R, payment_methods::retrieve, &[id])
        }
        ("POST", ["v1", "payment_methods", id, "attach"]) => {
            r("payment_methods", W, payment_methods::attach, &[id])
        }
        ("POST", ["v1", "payment_methods", id, "detach"]) => {
            r("payment_methods", W, payment_methods::detach, &[id])
        }

        ("POST", ["v1", "payment_intents"]) => r("payment_intents", W, pi::create, &[]),
        ("GET", ["v1", "payment_intents"]) => r("payment_intents", R, pi::list, &[]),
        ("GET", ["v1", "payment_intents", id]) => {
            public(r("payment_intents", R, pi::retrieve, &[id]))
        }
        ("POST", ["v1", "payment_intents", id]) => r("payment_intents", W, pi::update, &[id]),
        ("POST", ["v1", "payment_intents", id, "confirm"]) => {
            public(r("payment_intents", W, pi::confirm, &[id]))
        }
        ("POST", ["v1", "payment_intents", id, "capture"]) => {
            r("payment_intents", W, pi::capture, &[id])
        }
        ("POST", ["v1", "payment_intents", id, "cancel"]) => {
            r("payment_intents", W, pi::cancel, &[id])
        }

        ("GET", ["v1", "charges"]) => r("charges", R, charges::list, &[]),
        ("GET", ["v1", "charges", id]) => r("charges", R, charges::retrieve, &[id]),
        ("POST", ["v1", "charges", id]) => r("charges", W, charges::update, &[id]),
        ("GET", ["v1", "charges", id, "refunds"]) => {
            r("charges", R, refunds::list_for_charge, &[id])
        }
        ("GET", ["v1", "charges", id, "refunds", rid]) => {
            r("charges", R, refunds::retrieve_for_charge, &[id, rid])
        }

        ("POST", ["v1", "refunds"]) => r("charges", W, refunds::create, &[]),
        ("GET", ["v1", "refunds"]) => r("charges", R, refunds::list, &[]),
        ("GET", ["v1", "refunds", id]) => r("charges", R, refunds::retrieve, &[id]),
        ("POST", ["v1", "refunds", id]) => r("charges", W, refunds::update, &[id]),
        ("POST", ["v1", "refunds", id, "cancel"]) => r("charges", W, refunds::cancel, &[id]),

        ("GET", ["v1", "disputes"]) => r("disputes", R, disputes::list, &[]),
        ("GET", ["v1", "disputes", id]) => r("disputes", R, disputes::retrieve, &[id]),
        ("POST", ["v1", "disputes", id]) => r("disputes", W, disputes::update, &[id]),
        ("POST", ["v1", "disputes", id, "close"]) => r("disputes", W, disputes::close, &[id]),
        ("GET", ["v1", "radar", "early_fraud_warnings"]) => {
            r("disputes", R, disputes::list_warnings, &[])
        }
        ("GET", ["v1", "radar", "early_fraud_warnings", id]) => {
            r("disputes", R, disputes::retrieve_warning, &[id])
        }

        ("POST", ["v1", "checkout", "sessions"]) => {
            r("checkout_sessions", W, checkout::create, &[])
        }
        ("GET", ["v1", "checkout", "sessions"]) => r("checkout_sessions", R, checkout::list, &[]),
        ("GET", ["v1", "checkout", "sessions", id]) => {
            r("checkout_sessions", R, checkout::retrieve, &[id])
        }
        ("POST", ["v1", "checkout", "sessions", id]) => {
            r("checkout_sessions", W, checkout::update, &[id])
        }
        ("GET", ["v1", "checkout", "sessions", id, "line_items"]) => {
            r("checkout_sessions", R, checkout::line_items, &[id])
        }
        ("POST", ["v1", "checkout", "sessions", id, "expire"]) => {
            r("checkout_sessions", W, checkout::expire, &[id])
        }

        ("POST", ["v1", "billing_portal", "configurations"]) => r(
            "billing_portal",
            W,
            billing_portal::create_configuration,
            &[],
        ),
        ("GET", ["v1", "billing_portal", "configurations"]) => r(
            "billing_portal",
            R,
            billing_portal::list_configurations,
            &[],
        ),
        ("GET", ["v1", "billing_portal", "configurations", id]) => r(
            "billing_portal",
            R,
            billing_portal::retrieve_configuration,
            &[id],
        ),
        ("POST", ["v1", "billing_portal", "configurations", id]) => r(
            "billing_portal",
            W,
            billing_portal::update_configuration,
            &[id],
        ),
        ("POST", ["v1", "billing_portal", "sessions"]) => {
            r("billing_portal", W, billing_portal::create_session, &[])
        }

        ("POST", ["v1", "billing", "meters"]) => r("billing_meters", W, meters::create, &[]),
        ("GET", ["v1", "billing", "meters"]) => r("billing_meters", R, meters::list, &[]),
        ("GET", ["v1", "billing", "meters", id]) => r("billing_meters", R, meters::retrieve, &[id]),
        ("POST", ["v1", "billing", "meters", id]) => r("billing_meters", W, meters::update, &[id]),
        ("POST", ["v1", "billing", "meters", id, "deactivate"]) => {
            r("billing_meters", W, meters::deactivate, &[id])
        }
        ("POST", ["v1", "billing", "meters", id, "reactivate"]) => {
            r("billing_meters", W, meters::reactivate, &[id])
        }
        ("GET", ["v1", "billing", "meters", id, "event_summaries"]) => {
            r("billing_meters", R, meters::event_summaries, &[id])
        }
        ("POST", ["v1", "billing", "meter_events"]) => {
            r("billing_meters", W, meters::create_event, &[])
        }

        ("POST", ["v1", "subscriptions"]) => r("subscriptions", W, subs::create, &[]),
        ("GET", ["v1", "subscriptions"]) => r("subscriptions", R, subs::list, &[]),
        ("GET", ["v1", "subscriptions", id]) => r("subscriptions", R, subs::retrieve, &[id]),
        ("POST", ["v1", "subscriptions", id]) => r("subscriptions", W, subs::update, &[id]),
        ("DELETE", ["v1", "subscriptions", id]) => r("subscriptions", W, subs::cancel, &[id]),
        ("POST", ["v1", "subscriptions", id, "resume"]) => {
            r("subscriptions", W, subs::resume, &[id])
        }
        ("GET", ["v1", "subscription_items"]) => r("subscriptions", R, subs::list_items, &[]),
        ("GET", ["v1", "subscription_items", id]) => {
            r("subscriptions", R, subs::retrieve_item, &[id])
        }
        ("POST", ["v1", "invoices"]) => r("invoices", W, inv::create, &[]),
        ("GET", ["v1", "invoices"]) => r("invoices", R, inv::list, &[]),
        ("GET", ["v1", "invoices", id]) => r("invoices", R, inv::retrieve, &[id]),
        ("POST", ["v1", "invoices", id]) => r("invoices", W, inv::update, &[id]),
        ("DELETE", ["v1", "invoices", id]) => r("invoices", W, inv::delete, &[id]),
        ("GET", ["v1", "invoices", id, "lines"]) => r("invoices", R, inv::lines, &[id]),
        ("POST", ["v1", "invoices", id, "finalize"]) => r("invoices", W, inv::finalize, &[id]),
        ("POST", ["v1", "invoices", id, "pay"]) => r("invoices", W, inv::pay, &[id]),
        ("POST", ["v1", "invoices", id, "void"]) => r("invoices", W, inv::void, &[id]),
        ("POST", ["v1", "invoices", id, "mark_uncollectible"]) => {
            r("invoices", W, inv::mark_uncollectible, &[id])
        }
        ("POST", ["v1", "invoiceitems"]) => r("invoices", W, inv::create_item, &[]),
        ("GET", ["v1", "invoiceitems"]) => r("invoices", R, inv::list_items, &[]),
        ("GET", ["v1", "invoiceitems", id]) => r("invoices", R, inv::retrieve_item, &[id]),
        ("GET", ["v1", "invoice_payments"]) => r("invoices", R, inv::list_payments, &[]),
        ("GET", ["v1", "invoice_payments", id]) => r("invoices", R, inv::retrieve_payment, &[id]),
        ("POST", ["v1", "credit_notes"]) => r("credit_notes", W, credit_notes::create, &[]),
        ("GET", ["v1", "credit_notes"]) => r("credit_notes", R, credit_notes::list, &[]),
        ("GET", ["v1", "credit_notes", id]) => r("credit_notes", R, credit_notes::retrieve, &[id]),
        ("POST", ["v1", "credit_notes", id]) => r("credit_notes", W, credit_notes::update, &[id]),
        ("GET", ["v1", "credit_notes", id, "lines"]) => {
            r("credit_notes", R, credit_notes::lines, &[id])
        }
        ("POST", ["v1", "credit_notes", id, "void"]) => {
            r("credit_notes", W, credit_notes::void, &[id])
        }
        ("POST", ["v1", "test_helpers", "test_clocks"]) => {
            r("test_clocks", W, test_clocks::create, &[])
        }
        ("GET", ["v1", "test_helpers", "test_clocks"]) => {
            r("test_clocks", R, test_clocks::list, &[])
        }
        ("GET", ["v1", "test_helpers", "test_clocks", id]) => {
            r("test_clocks", R, test_clocks::retrieve, &[id])
        }
        ("DELETE", ["v1", "test_helpers", "test_clocks", id]) => {
            r("test_clocks", W, test_clocks::delete, &[id])
        }
        ("POST", ["v1", "test_helpers", "test_clocks", id, "advance"]) => {
            r("test_clocks", W, test_clocks::advance, &[id])
        }

        ("GET", ["v1", "events"]) => r("events", R, events::list, &[]),
        ("GET", ["v1", "events", id]) => r("events", R, events::retrieve, &[id]),
        ("POST", ["v1", "webhook_endpoints"]) => {
            r("webhook_endpoints", W, events::create_endpoint, &[])
        }
        ("GET", ["v1", "webhook_endpoints"]) => {
            r("webhook_endpoints", R, events::list_endpoints, &[])
        }
        ("GET", ["v1", "webhook_endpoints", id]) => {
            r("webhook_endpoints", R, events::retrieve_endpoint, &[id])
        }
        ("POST", ["v1", "webhook_endpoints", id]) => {
            r("webhook_endpoints", W, events::update_endpoint, &[id])
        }
        ("DELETE", ["v1", "webhook_endpoints", id]) => {
            r("webhook_endpoints", W, events::delete_endpoint, &[id])
        }
        _ => None,
    }
}

/// With a publishable key, intent calls must name the intent's client secret.
pub fn check_client_secret(
    inner: &Arc<Inner>,
    account: &str,
    route: &Route,
    map: &Map<String, Value>,
) -> Result<()> {
    let Some(id) = route.ids.first() else {
        return Ok(());
    };
    let given = map.get("client_secret").and_then(Value::as_str);
    let st = lock(&inner.state);
    let actual = st
        .accounts
        .get(account)
        .and_then(|a| a.get("payment_intent", id))
        .and_then(|pi| pi["client_secret"].as_str().map(str::to_string));
    match (given, actual) {
        (Some(g), Some(a)) if g == a => Ok(()),
        (None, _) => Err(StripeError::missing_param("client_secret")),
        _ => Err(StripeError::missing("payment_intent", id, "intent")),
    }
}

/// The object type an id refers to, from its prefix.
pub fn kind_of(id: &str) -> Option<&'static str> {
    let prefix = id.split('_').next()?;
    Some(match prefix {
        "cus" => "customer",
        "prod" => "product",
        "price" => "price",
        "pi" => "payment_intent",
        "ch" | "py" => "charge",
        "re" | "pyr" => "refund",
        "pm" | "card" => "payment_method",
        "dp" | "du" => "dispute",
        "we" => "webhook_endpoint",
        "evt" => "event",
        "txn" => "balance_transaction",
        "acct" => "account",
        "cs" => "checkout.session",
        "sub" => "subscription",
        "si" => "subscription_item",
        "in" => "invoice",
        "ii" => "invoiceitem",
        "cn" => "credit_note",
        "inpay" => "invoice_payment",
        "clock" => "test_helpers.test_clock",
        "bpc" => billing_portal::CONFIG,
        "bps" => billing_portal::SESSION,
        "feat" => entitlements::FEATURE,
        "mtr" => billing_meters::METER,
        _ => return None,
    })
}

/// Applies `expand[]` paths (`latest_charge`, `data.customer`, `latest_charge.balance_transaction`).
pub fn expand(ctx: &mut Ctx, value: &mut Value, paths: &[String]) -> Result<()> {
    for path in paths {
        if billing_portal::include(ctx, value, path) {
            continue;
        }
        let segs: Vec<&str> = path.split('.').collect();
        if value["object"] == "list" && segs.first() == Some(&"data") {
            if let Some(items) = value.get_mut("data").and_then(Value::as_array_mut) {
                for item in items {
                    expand_one(ctx, item, &segs[1..], path)?;
                }
            }
        } else {
            expand_one(ctx, value, &segs, path)?;
        }
    }
    Ok(())
}

fn expand_one(ctx: &mut Ctx, value: &mut Value, segs: &[&str], full: &str) -> Result<()> {
    let Some((first, rest)) = segs.split_first() else {
        return Ok(());
    };
    let cannot = || {
        StripeError::invalid(format!("This property cannot be expanded ({first})."))
            .param("expand")
            .with("path", Value::String(full.to_string()))
    };
    let Some(obj) = value.as_object_mut() else {
        return Ok(());
    };
    if !obj.contains_key(*first) {
        // Fields only present when expanded.
        if obj.get("object").and_then(Value::as_str) == Some("charge") && *first == "refunds" {
            let id = obj["id"].as_str().unwrap_or_default().to_string();
            let list = refunds::list_value(ctx, Some(&id), None, 100);
            obj.insert("refunds".into(), list);
            return Ok(());
        }
        if obj.get("object").and_then(Value::as_str) == Some(checkout::KIND)
            && *first == "line_items"
        {
            let id = obj["id"].as_str().unwrap_or_default().to_string();
            obj.insert("line_items".into(), checkout::line_items_value(ctx, &id));
            return Ok(());
        }
        if obj.get("object").and_then(Value::as_str) == Some(invoices::KIND) {
            let id = obj["id"].as_str().unwrap_or_default().to_string();
            if let Some(v) = invoices::includable(ctx, &id, first) {
                obj.insert((*first).to_string(), v);
                return Ok(());
            }
        }
        return Err(cannot());
    }
    let field = obj.get_mut(*first).ok_or_else(cannot)?;
    if let Some(id) = field.as_str().map(str::to_string) {
        let kind = kind_of(&id).ok_or_else(cannot)?;
        if let Some(found) = ctx.get(kind, &id) {
            *field = found;
        } else {
            return Err(cannot());
        }
    } else if let Some(items) = field.as_array_mut() {
        for item in items.iter_mut() {
            if let Some(id) = item.as_str().map(str::to_string)
                && let Some(kind) = kind_of(&id)
                && let Some(found) = ctx.get(kind, &id)
            {
                *item = found;
            }
        }
        return Ok(());
    }
    if !rest.is_empty() && !field.is_null() {
        expand_one(ctx, field, rest, full)?;
    }
    Ok(())
}

/// Reads Stripe's list parameters and pages newest-first through `kind` objects of the account
/// that pass `keep`.
pub fn list(
    ctx: &mut Ctx,
    mut p: Params,
    kind: &str,
    url: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let limit = p.int("limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(
            StripeError::invalid("Invalid limit: must be between 1 and 100")
                .code("parameter_invalid_integer")
                .param("limit"),
        );
    }
    let starting_after = p.opt_str("starting_after")?;
    let ending_before = p.opt_str("ending_before")?;
    if starting_after.is_some() && ending_before.is_some() {
        return Err(StripeError::invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
        ));
    }
    let created = range(&mut p, "created")?;
    p.finish()?;
    let coll = ctx.acct().collection(kind);
    let mut all: Vec<&Value> = match coll {
        None => Vec::new(),
        Some(c) => c
            .ids
            .iter()
            .rev()
            .filter_map(|id| c.objects.get(id))
            .filter(|v| v["deleted"] != Value::Bool(true))
            .filter(|v| created.contains(v["created"].as_i64().unwrap_or(0)))
            .filter(|v| keep(v))
            .collect(),
    };
    let limit = limit as usize;
    let (page, has_more) = if let Some(after) = &starting_after {
        let pos = all
            .iter()
            .position(|v| v["id"] == after.as_str())
            .ok_or_else(|| StripeError::missing(kind, after, "starting_after"))?;
        let rest: Vec<&Value> = all.drain(pos + 1..).collect();
        let more = rest.len() > limit;
        (rest.into_iter().take(limit).collect::<Vec<_>>(), more)
    } else if let Some(before) = &ending_before {
        let pos = all
            .iter()
            .position(|v| v["id"] == before.as_str())
            .ok_or_else(|| StripeError::missing(kind, before, "ending_before"))?;
        let start = pos.saturating_sub(limit);
        (all[start..pos].to_vec(), start > 0)
    } else {
        let more = all.len() > limit;
        (all.into_iter().take(limit).collect(), more)
    };
    let data = page.into_iter().cloned().collect();
    Ok(list_object(url, data, has_more))
}

/// Pages through an array kept in order (an invoice's `lines`, a session's line items) with
/// Stripe's list parameters.
pub fn page_array(mut p: Params, data: &[Value], url: &str, kind: &str) -> Result<Value> {
    let limit = p.int("limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(
            StripeError::invalid("Invalid limit: must be between 1 and 100")
                .code("parameter_invalid_integer")
                .param("limit"),
        );
    }
    let after = p.opt_str("starting_after")?;
    let before = p.opt_str("ending_before")?;
    p.finish()?;
    let limit = limit as usize;
    let pos = |id: &str, param: &str| {
        data.iter()
            .position(|v| v["id"] == id)
            .ok_or_else(|| StripeError::missing(kind, id, param))
    };
    let (page, more): (Vec<Value>, bool) = if let Some(a) = after {
        let i = pos(&a, "starting_after")? + 1;
        let rest = &data[i..];
        (
            rest.iter().take(limit).cloned().collect(),
            rest.len() > limit,
        )
    } else if let Some(b) = before {
        let i = pos(&b, "ending_before")?;
        let start = i.saturating_sub(limit);
        (data[start..i].to_vec(), start > 0)
    } else {
        (
            data.iter().take(limit).cloned().collect(),
            data.len() > limit,
        )
    };
    Ok(list_object(url, page, more))
}

/// A `created`-style filter: an integer or `{gt, gte, lt, lte}`.
#[derive(Default, Clone, Copy)]
pub struct Range {
    gt: Option<i64>,
    gte: Option<i64>,
    lt: Option<i64>,
    lte: Option<i64>,
}

impl Range {
    pub fn contains(&self, x: i64) -> bool {
        self.gt.is_none_or(|v| x > v)
            && self.gte.is_none_or(|v| x >= v)
            && self.lt.is_none_or(|v| x < v)
            && self.lte.is_none_or(|v| x <= v)
    }
}

pub fn range(p: &mut Params, key: &str) -> Result<Range> {
    if p.is_hash(key)
        && let Some(mut sub) = p.sub(key)?
    {
        let r = Range {
            gt: sub.int("gt")?,
            gte: sub.int("gte")?,
            lt: sub.int("lt")?,
            lte: sub.int("lte")?,
        };
        sub.finish()?;
        return Ok(r);
    }
    Ok(match p.int(key)? {
        Some(v) => Range {
            gte: Some(v),
            lte: Some(v),
            ..Range::default()
        },
        None => Range::default(),
    })
}

/// Retrieve-style handlers accept only `expand` (already taken) and nothing else.
pub fn no_params(p: Params) -> Result<()> {
    p.finish()
}

/// Fetches an object of `kind` or Stripe's 404.
pub fn fetch(ctx: &mut Ctx, kind: &str, id: &str, param: &str) -> Result<Value> {
    ctx.get(kind, id)
        .ok_or_else(|| StripeError::missing(kind, id, param))
}

/// ISO-4217 codes Stripe presents (lower case) and their minor-unit exponent.
pub fn currency_exponent(c: &str) -> Option<u32> {
    const ZERO: &[&str] = &[
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    const THREE: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];
    const TWO: &[&str] = &[
        "usd", "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
        "bdt", "bgn", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad", "cdf", "chf",
        "cny", "cop", "crc", "cve", "czk", "dkk", "dop", "dzd", "egp", "etb", "eur", "fjd", "fkp",
        "gbp", "gel", "gip", "gmd", "gtq", "gyd", "hkd", "hnl", "htg", "huf", "idr", "ils", "inr",
        "isk", "jmd", "kes", "kgs", "khr", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad",
        "mdl", "mkd", "mmk", "mnt", "mop", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn",
        "nio", "nok", "npr", "nzd", "pab", "pen", "pgk", "php", "pkr", "pln", "qar", "ron", "rsd",
        "rub", "sar", "sbd", "scr", "sek", "sgd", "shp", "sle", "sos", "srd", "std", "szl", "thb",
        "tjs", "top", "try", "ttd", "twd", "tzs", "uah", "uyu", "uzs", "wst", "xcd", "yer", "zar",
        "zmw",
    ];
    if ZERO.contains(&c) {
        Some(0)
    } else if THREE.contains(&c) {
        Some(3)
    } else if TWO.contains(&c) {
        Some(2)
    } else {
        None
    }
}

/// Reads a required `currency` (lower-cased, validated).
pub fn currency(p: &mut Params, key: &str) -> Result<String> {
    let c = p.req_str(key)?.to_ascii_lowercase();
    if currency_exponent(&c).is_none() {
        return Err(StripeError::invalid(format!(
            "Invalid currency: {c}. Stripe currently supports these currencies: usd, eur, gbp, jpy, …"
        ))
        .code("parameter_invalid_string")
        .param(key));
    }
    Ok(c)
}

/// `$10.99` / `¥1000` / `10.99 eur` as Stripe writes amounts in messages.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let exp = currency_exponent(currency).unwrap_or(2);
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.unsigned_abs();
    let body = if exp == 0 {
        a.to_string()
    } else {
        let d = 10u64.pow(exp);
        format!("{}.{:0w$}", a / d, a % d, w = exp as usize)
    };
    match currency {
        "usd" => format!("{sign}${body}"),
        "eur" => format!("{sign}€{body}"),
        "gbp" => format!("{sign}£{body}"),
        "jpy" => format!("{sign}¥{body}"),
        _ => format!("{sign}{body} {currency}"),
    }
}

/// Validates a charge amount: positive, at least Stripe's minimum, at most 99999999.
pub fn charge_amount(amount: i64, currency: &str, param: &str) -> Result<()> {
    let minimum = match currency {
        "gbp" => 30,
        "jpy" => 50,
        "hkd" => 400,
        "mxn" => 1000,
        c if currency_exponent(c) == Some(0) => 50,
        c if currency_exponent(c) == Some(3) => 500,
        _ => 50,
    };
    if amount < minimum {
        return Err(StripeError::invalid(format!(
            "Amount must be at least {} {currency}",
            format_amount(minimum, currency)
        ))
        .code("amount_too_small")
        .param(param));
    }
    if amount > 99_999_999 {
        return Err(StripeError::invalid(format!(
            "Amount must be no more than {} {currency}",
            format_amount(99_999_999, currency)
        ))
        .code("amount_too_large")
        .param(param));
    }
    Ok(())
}

/// `data.previous_attributes`: the top-level fields whose values changed, with their old values.
pub fn previous(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, old) in b {
            if a.get(k) != Some(old) {
                if let (Some(om), Some(nm)) = (old.as_object(), a.get(k).and_then(Value::as_object))
                    && k == "metadata"
                {
                    // Stripe lists changed metadata keys only (removed keys as their old value,
                    // added keys as empty string).
                    let mut m = serde_json::Map::new();
                    for (mk, mv) in om {
                        if nm.get(mk) != Some(mv) {
                            m.insert(mk.clone(), mv.clone());
                        }
                    }
                    for mk in nm.keys() {
                        if !om.contains_key(mk) {
                            m.insert(mk.clone(), json!(""));
                        }
                    }
                    out.insert(k.clone(), Value::Object(m));
                } else {
                    out.insert(k.clone(), old.clone());
                }
            }
        }
    }
    Value::Object(out)
}
