//! The dashboard's catalogue: SKUs with their Stripe product's name and prices (read from
//! Stripe, kept a minute), permission definitions (held or metered, with the units each SKU
//! grants), and their forms, refused ones shown again with the message next to the field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tollgate_store::connections as store_conn;

use super::common::{Form, Params, all, notice_text, param, seg};
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::definitions::{
    DefinitionCreate, DefinitionOut, DefinitionUpdate, MeteredSkuIn, SkuItem,
};
use crate::api::entitlements::{SkuCreate, SkuOut, SkuUpdate};
use crate::api::typed::Body;
use crate::error::ApiError;
use crate::page::format_money;

// ---- products and prices read from Stripe ------------------------------------------------------

/// How long what Stripe said is kept; a failure is kept shorter.
const FRESH: Duration = Duration::from_secs(60);
const FAILED_FRESH: Duration = Duration::from_secs(15);
/// A SKU naming a product the kept list lacks (made in Stripe since) reads again after this.
const RECHECK_MISSING: Duration = Duration::from_secs(5);
/// How long the page waits for Stripe before showing ids alone.
const STRIPE_WAIT: Duration = Duration::from_secs(4);
/// At most this many products and prices are read per connection.
const READ_CAP: usize = 500;

/// A Stripe product as the catalogue shows it.
#[derive(Debug, Clone)]
pub struct Product {
    pub name: String,
    pub active: bool,
    /// Its active prices in words: "$9.99 / month", "¥1,299 once".
    pub prices: Vec<String>,
}

/// What one connection's Stripe account says about its products.
#[derive(Debug, Default)]
struct Known {
    products: HashMap<String, Product>,
    /// Why Stripe could not be read (then `products` is empty).
    problem: Option<String>,
}

type Cache = Mutex<HashMap<String, (Instant, Arc<Known>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A price in words: `$9.99 / month`, `$99.00 / 3 months`, `€5.00 once`, `custom pricing`.
pub fn price_words(price: &Value) -> String {
    let currency = price["currency"]
        .as_str()
        .unwrap_or("")
        .to_ascii_uppercase();
    let amount = match price["unit_amount"].as_i64() {
        Some(a) if !currency.is_empty() => format_money(a, &currency),
        _ => return "custom pricing".to_string(),
    };
    match price["recurring"]["interval"].as_str() {
        Some(interval) => match price["recurring"]["interval_count"].as_i64().unwrap_or(1) {
            1 => format!("{amount} / {interval}"),
            n => format!("{amount} / {n} {interval}s"),
        },
        None => format!("{amount} once"),
    }
}

async fn read_products(ctx: &ApiContext, conn: &tollgate_store::ConnectionRow) -> Known {
    let stripe = match ctx.stripe_for(conn) {
        Ok(s) => s,
        Err(e) => {
            return Known {
                products: HashMap::new(),
                problem: Some(e.to_string()),
            };
        }
    };
    let read = async {
        let products = stripe
            .list_all("/v1/products", &Map::new(), READ_CAP)
            .await?;
        let mut params = Map::new();
        params.insert("active".into(), json!(true));
        let prices = stripe.list_all("/v1/prices", &params, READ_CAP).await?;
        Ok::<_, tollgate_stripe::client::StripeError>((products, prices))
    };
    match tokio::time::timeout(STRIPE_WAIT, read).await {
        Ok(Ok((products, prices))) => {
            let mut out: HashMap<String, Product> = HashMap::new();
            let mut defaults: HashMap<String, String> = HashMap::new();
            for p in &products {
                let Some(id) = p["id"].as_str() else { continue };
                if let Some(d) = p["default_price"]
                    .as_str()
                    .or_else(|| p["default_price"]["id"].as_str())
                {
                    defaults.insert(id.to_string(), d.to_string());
                }
                out.insert(
                    id.to_string(),
                    Product {
                        name: p["name"].as_str().unwrap_or(id).to_string(),
                        active: p["active"].as_bool().unwrap_or(true),
                        prices: Vec::new(),
                    },
                );
            }
            for price in &prices {
                let product = price["product"]
                    .as_str()
                    .or_else(|| price["product"]["id"].as_str());
                let Some(product) = product else { continue };
                let Some(entry) = out.get_mut(product) else {
                    continue;
                };
                let words = price_words(price);
                // The product's default price first.
                if defaults.get(product).map(String::as_str) == price["id"].as_str() {
                    entry.prices.insert(0, words);
                } else {
                    entry.prices.push(words);
                }
            }
            Known {
                products: out,
                problem: None,
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(connection = %conn.id, cause = %e, "catalogue: Stripe products not read");
            Known {
                products: HashMap::new(),
                problem: Some("Stripe answered with an error".into()),
            }
        }
        Err(_) => {
            tracing::warn!(connection = %conn.id, "catalogue: Stripe did not answer in time");
            Known {
                products: HashMap::new(),
                problem: Some("Stripe did not answer in time".into()),
            }
        }
    }
}

/// The products of every connection of the merchant account (kept a minute), and why some
/// could not be read.
async fn products(
    ctx: &ApiContext,
    merchant: &str,
    wanted: &[&str],
) -> (HashMap<String, Product>, Option<String>) {
    let conns = match store_conn::list(ctx.store.reader(), Some(merchant)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(cause = %e, "catalogue: connections not read");
            return (
                HashMap::new(),
                Some("the connections could not be read".into()),
            );
        }
    };
    let mut all = HashMap::new();
    let mut problems = Vec::new();
    for conn in &conns {
        let key = format!("{}\u{1f}{}", conn.id, conn.updated_at);
        let cached = cache().lock().ok().and_then(|c| {
            c.get(&key).and_then(|(at, k)| {
                let fresh = if k.problem.is_some() {
                    FAILED_FRESH
                } else {
                    FRESH
                };
                // A product a SKU names and Stripe did not list: read again after a moment.
                let missing = k.problem.is_none()
                    && wanted.iter().any(|w| !k.products.contains_key(*w))
                    && at.elapsed() >= RECHECK_MISSING;
                (at.elapsed() < fresh && !missing).then(|| k.clone())
            })
        });
        let known = match cached {
            Some(k) => k,
            None => {
                let k = Arc::new(read_products(ctx, conn).await);
                if let Ok(mut c) = cache().lock() {
                    c.retain(|_, (at, _)| at.elapsed() < FRESH);
                    c.insert(key, (Instant::now(), k.clone()));
                }
                k
            }
        };
        if let Some(p) = &known.problem {
            problems.push(format!("{}: {p}", conn.display_name));
        }
        for (id, p) in &known.products {
            all.entry(id.clone()).or_insert_with(|| p.clone());
        }
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    (all, problem)
}

// ---- the page ------------------------------------------------------------------------------------

struct SkuView {
    identifier: String,
    action: String,
    product_id: String,
    product: Option<Product>,
    kind: String,
    kind_words: &'static str,
    /// This row's form, refused: the message.
    error: Option<String>,
}

struct SkuChoice {
    identifier: String,
    checked: bool,
    units: String,
    per: String,
    /// What the SKU sells, in words.
    about: String,
}

struct DefView {
    identifier: String,
    action: String,
    metered: bool,
    /// "pro_monthly: 1,000 per period".
    summary: Vec<String>,
    choices: Vec<SkuChoice>,
    rollover: bool,
    threshold: String,
    errors: FieldErrors,
    error: Option<String>,
}

/// The new-SKU form as typed.
#[derive(Default)]
struct SkuInput {
    identifier: String,
    product_id: String,
    kind: String,
}

/// The new-permission form as typed.
#[derive(Default)]
struct DefInput {
    identifier: String,
    kind: String,
    chosen: Vec<String>,
    units: HashMap<String, String>,
    per: HashMap<String, String>,
    rollover: bool,
    threshold: String,
}

#[derive(Template)]
#[template(path = "dashboard/catalogue/page.html")]
struct CataloguePage {
    frame: Frame,
    skus: Vec<SkuView>,
    defs: Vec<DefView>,
    /// Why product names are missing (Stripe unreachable).
    stripe_problem: Option<String>,
    products: Vec<(String, String)>,
    sku: SkuInput,
    sku_errors: FieldErrors,
    sku_problem: Option<String>,
    def: DefInput,
    new_choices: Vec<SkuChoice>,
    def_errors: FieldErrors,
    def_problem: Option<String>,
}

/// What a refused form brings back.
enum Refused {
    None,
    NewSku(SkuInput, FieldErrors, Option<String>),
    Sku(String, String),
    NewDef(DefInput, FieldErrors, Option<String>),
    Def(String, DefInput, FieldErrors, Option<String>),
}

pub async fn catalogue(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    page(
        &ctx,
        &s,
        StatusCode::OK,
        notice_text(&params),
        Refused::None,
    )
    .await
}

fn kind_words(kind: &str) -> &'static str {
    match kind {
        "subscription" => "Subscription",
        "one_time" => "One-time purchase",
        _ => "Other",
    }
}

fn group(n: i64) -> String {
    super::customers::group(n.unsigned_abs())
}

async fn page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    notice: Option<&'static str>,
    refused: Refused,
) -> Response {
    let caller = super::caller(s);
    let skus: Vec<SkuOut> =
        match api::entitlements::sku_list(State(ctx.clone()), caller.clone()).await {
            Ok(j) => j.0.items,
            Err(e) => return problem(ctx, s, e).await,
        };
    let defs: Vec<DefinitionOut> =
        match api::definitions::definition_list(State(ctx.clone()), caller).await {
            Ok(j) => j.0.items,
            Err(e) => return problem(ctx, s, e).await,
        };
    let wanted: Vec<&str> = skus.iter().map(|k| k.product_id.as_str()).collect();
    let (known, stripe_problem) = products(ctx, &s.merchant_account_id, &wanted).await;
    let about = |sku: &SkuOut| -> String {
        match known.get(&sku.product_id) {
            Some(p) => match p.prices.first() {
                Some(price) => format!("{}, {price}", p.name),
                None => p.name.clone(),
            },
            None => sku.product_id.clone(),
        }
    };
    let mut sku_views: Vec<SkuView> = skus
        .iter()
        .map(|k| SkuView {
            identifier: k.identifier.clone(),
            action: format!("/dashboard/skus/{}", seg(&k.identifier)),
            product_id: k.product_id.clone(),
            product: known.get(&k.product_id).cloned(),
            kind: k.kind.clone(),
            kind_words: kind_words(&k.kind),
            error: None,
        })
        .collect();
    let choices = |chosen: &[String],
                   units: &HashMap<String, String>,
                   per: &HashMap<String, String>|
     -> Vec<SkuChoice> {
        skus.iter()
            .map(|k| SkuChoice {
                identifier: k.identifier.clone(),
                checked: chosen.contains(&k.identifier),
                units: units.get(&k.identifier).cloned().unwrap_or_default(),
                per: per.get(&k.identifier).cloned().unwrap_or_default(),
                about: about(k),
            })
            .collect()
    };
    let mut def_views: Vec<DefView> = defs
        .iter()
        .map(|d| {
            let mut units = HashMap::new();
            let mut per = HashMap::new();
            let mut summary = Vec::new();
            if let Some(m) = &d.metering {
                for k in &m.skus {
                    units.insert(k.identifier.clone(), k.units.to_string());
                    per.insert(k.identifier.clone(), k.per.clone());
                    summary.push(format!(
                        "{}: {} units {}",
                        k.identifier,
                        group(k.units),
                        if k.per == "period" {
                            "each paid period"
                        } else {
                            "per purchase"
                        }
                    ));
                }
            } else {
                summary = d.skus.clone();
            }
            DefView {
                identifier: d.identifier.clone(),
                action: format!("/dashboard/permissions/{}", seg(&d.identifier)),
                metered: d.metering.is_some(),
                summary,
                choices: choices(&d.skus, &units, &per),
                rollover: d.metering.as_ref().is_some_and(|m| m.rollover),
                threshold: d
                    .metering
                    .as_ref()
                    .and_then(|m| m.low_balance_threshold)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                errors: FieldErrors::new(),
                error: None,
            }
        })
        .collect();
    let mut products: Vec<(String, String)> = known
        .iter()
        .filter(|(_, p)| p.active)
        .map(|(id, p)| (id.clone(), p.name.clone()))
        .collect();
    products.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut out = CataloguePage {
        frame: Frame::new(ctx, s, "Catalogue", "catalogue")
            .await
            .notice(notice),
        skus: Vec::new(),
        defs: Vec::new(),
        stripe_problem,
        products,
        sku: SkuInput {
            kind: "subscription".into(),
            ..SkuInput::default()
        },
        sku_errors: FieldErrors::new(),
        sku_problem: None,
        def: DefInput {
            kind: "access".into(),
            ..DefInput::default()
        },
        new_choices: Vec::new(),
        def_errors: FieldErrors::new(),
        def_problem: None,
    };
    match refused {
        Refused::None => {}
        Refused::NewSku(input, errors, p) => {
            out.sku = input;
            out.sku_errors = errors;
            out.sku_problem = p;
        }
        Refused::Sku(id, message) => {
            if let Some(v) = sku_views.iter_mut().find(|v| v.identifier == id) {
                v.error = Some(message);
            }
        }
        Refused::NewDef(input, errors, p) => {
            out.def = input;
            out.def_errors = errors;
            out.def_problem = p;
        }
        Refused::Def(id, input, errors, p) => {
            if let Some(v) = def_views.iter_mut().find(|v| v.identifier == id) {
                v.choices = choices(&input.chosen, &input.units, &input.per);
                v.rollover = input.rollover;
                v.threshold = input.threshold;
                v.errors = errors;
                v.error = p;
            }
        }
    }
    out.new_choices = choices(&out.def.chosen, &out.def.units, &out.def.per);
    out.skus = sku_views;
    out.defs = def_views;
    render(status, &out)
}

#[derive(Template)]
#[template(path = "dashboard/catalogue/problem.html")]
struct ProblemPage {
    frame: Frame,
    message: String,
}

async fn problem(ctx: &ApiContext, s: &Session, e: ApiError) -> Response {
    let status = status_of(&e);
    let message = match &e {
        ApiError::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error (dashboard catalogue)");
            "This page could not be shown. The error is in the server's log.".to_string()
        }
        other => other.to_string(),
    };
    let frame = Frame::new(ctx, s, "Catalogue", "catalogue").await;
    render(status, &ProblemPage { frame, message })
}

/// The API's refusal as field messages (by the form's names, under `prefix`) and a message for
/// the form when no field is named.
fn refusal(
    e: &ApiError,
    fields: &[&str],
    errors: &mut FieldErrors,
    prefix: &str,
) -> Option<String> {
    match e {
        ApiError::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error (dashboard catalogue)");
            Some("This could not be saved. The error is in the server's log.".into())
        }
        ApiError::DuplicateRecord(m) if fields.contains(&"identifier") => {
            errors.insert(format!("{prefix}identifier"), m.clone());
            None
        }
        ApiError::BadRequest { details, message } => {
            let mut named = false;
            for d in details {
                let field = d.pointer.trim_start_matches('/');
                let text = d
                    .message
                    .trim_start_matches("Request failed validation: ")
                    .to_string();
                if fields.contains(&field) {
                    errors.insert(format!("{prefix}{field}"), text);
                    named = true;
                }
            }
            (!named).then(|| message.clone())
        }
        other => Some(other.to_string()),
    }
}

pub async fn sku_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let input = SkuInput {
        identifier: param(&form, "identifier").unwrap_or_default().to_string(),
        product_id: param(&form, "product_id").unwrap_or_default().to_string(),
        kind: param(&form, "kind").unwrap_or("subscription").to_string(),
    };
    let mut errors = FieldErrors::new();
    if input.identifier.is_empty() {
        errors.insert(
            "sku_identifier".into(),
            "Give the SKU an identifier: letters, digits, '.', '_' or '-'.".into(),
        );
    }
    if input.product_id.is_empty() {
        errors.insert(
            "sku_product_id".into(),
            "Choose the Stripe product (prod_…) this SKU sells.".into(),
        );
    }
    if !errors.is_empty() {
        let r = Refused::NewSku(input, errors, None);
        return page(&ctx, &s, REFUSED, None, r).await;
    }
    let body = SkuCreate {
        identifier: input.identifier.clone(),
        store: Some("stripe".into()),
        product_id: input.product_id.clone(),
        kind: input.kind.clone(),
    };
    match api::entitlements::sku_create(State(ctx.clone()), super::caller(&s), Body(body)).await {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => {
            let status = status_of(&e);
            let p = refusal(
                &e,
                &["identifier", "product_id", "kind"],
                &mut errors,
                "sku_",
            );
            page(&ctx, &s, status, None, Refused::NewSku(input, errors, p)).await
        }
    }
}

pub async fn sku_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let body = SkuUpdate {
        store: None,
        product_id: param(&form, "product_id").map(str::to_string),
        kind: param(&form, "kind").map(str::to_string),
    };
    match api::entitlements::sku_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => {
            let status = status_of(&e);
            let mut errors = FieldErrors::new();
            let message = refusal(&e, &["product_id", "kind"], &mut errors, "")
                .or_else(|| errors.values().next().cloned())
                .unwrap_or_default();
            page(&ctx, &s, status, None, Refused::Sku(id, message)).await
        }
    }
}

/// A permission form as typed: chosen SKUs, and per SKU the units and `per` of a metered one.
fn def_input(form: &[(String, String)]) -> DefInput {
    let chosen: Vec<String> = all(form, "skus").into_iter().map(str::to_string).collect();
    let mut units = HashMap::new();
    let mut per = HashMap::new();
    for (k, v) in form {
        if let Some(sku) = k.strip_prefix("units-") {
            units.insert(sku.to_string(), v.trim().to_string());
        } else if let Some(sku) = k.strip_prefix("per-") {
            per.insert(sku.to_string(), v.trim().to_string());
        }
    }
    DefInput {
        identifier: param(form, "identifier").unwrap_or_default().to_string(),
        kind: param(form, "kind").unwrap_or("access").to_string(),
        chosen,
        units,
        per,
        rollover: param(form, "rollover").is_some(),
        threshold: param(form, "low_balance_threshold")
            .unwrap_or_default()
            .to_string(),
    }
}

/// The SKUs of a permission form for the API, checked as typed (units of metered SKUs are
/// whole numbers above 0); messages under `units-{sku}`.
fn def_skus(input: &DefInput, metered: bool, errors: &mut FieldErrors) -> Vec<SkuItem> {
    let mut out = Vec::new();
    for sku in &input.chosen {
        if !metered {
            out.push(SkuItem::Identifier(sku.clone()));
            continue;
        }
        let typed = input.units.get(sku).map(String::as_str).unwrap_or("");
        let cleaned: String = typed
            .chars()
            .filter(|c| !matches!(c, ',' | ' ' | '_'))
            .collect();
        match cleaned.parse::<i64>() {
            Ok(u) if u >= 1 => out.push(SkuItem::Metered(MeteredSkuIn {
                identifier: sku.clone(),
                units: u,
                per: input.per.get(sku).filter(|p| !p.is_empty()).cloned(),
                expires_in: None,
            })),
            _ => {
                errors.insert(
                    format!("units-{sku}"),
                    format!("Say how many units {sku} grants: a whole number above 0."),
                );
            }
        }
    }
    out
}

fn threshold(input: &DefInput, errors: &mut FieldErrors) -> Option<i64> {
    if input.threshold.is_empty() {
        return None;
    }
    match input.threshold.parse::<i64>() {
        Ok(t) if t >= 0 => Some(t),
        _ => {
            errors.insert(
                "low_balance_threshold".into(),
                "A number of units, 0 or more (empty: no warning).".into(),
            );
            None
        }
    }
}

/// API pointers of a permission body (`/skus/2/units`) as the form's fields.
fn def_refusal(e: &ApiError, input: &DefInput, errors: &mut FieldErrors) -> Option<String> {
    if let ApiError::BadRequest { details, .. } = e {
        let mut named = false;
        for d in details {
            let text = d
                .message
                .trim_start_matches("Request failed validation: ")
                .to_string();
            let parts: Vec<&str> = d.pointer.trim_start_matches('/').split('/').collect();
            let field = match parts.as_slice() {
                ["skus", i, ..] => i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| input.chosen.get(i))
                    .map(|sku| format!("units-{sku}"))
                    .unwrap_or_else(|| "skus".into()),
                ["skus"] => "skus".into(),
                [f] => f.to_string(),
                _ => continue,
            };
            errors.insert(field, text);
            named = true;
        }
        if named {
            return None;
        }
    }
    refusal(e, &["identifier", "kind"], errors, "")
}

pub async fn permission_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let input = def_input(&form);
    let metered = input.kind == "metered";
    let mut errors = FieldErrors::new();
    if input.identifier.is_empty() {
        errors.insert(
            "identifier".into(),
            "Give the permission an identifier: letters, digits, '.', '_' or '-'.".into(),
        );
    }
    let skus = def_skus(&input, metered, &mut errors);
    let low = threshold(&input, &mut errors);
    if !errors.is_empty() {
        let r = Refused::NewDef(input, errors, None);
        return page(&ctx, &s, REFUSED, None, r).await;
    }
    let body = DefinitionCreate {
        identifier: input.identifier.clone(),
        skus,
        kind: Some(input.kind.clone()),
        rollover: metered.then_some(input.rollover),
        low_balance_threshold: if metered { low } else { None },
        meter_event_name: None,
    };
    match api::definitions::definition_create(State(ctx.clone()), super::caller(&s), Body(body))
        .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => {
            let status = status_of(&e);
            let p = def_refusal(&e, &input, &mut errors);
            page(&ctx, &s, status, None, Refused::NewDef(input, errors, p)).await
        }
    }
}

pub async fn permission_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let input = def_input(&form);
    let metered = param(&form, "metered") == Some("yes");
    let mut errors = FieldErrors::new();
    let skus = def_skus(&input, metered, &mut errors);
    let low = threshold(&input, &mut errors);
    if !errors.is_empty() {
        let r = Refused::Def(id, input, errors, None);
        return page(&ctx, &s, REFUSED, None, r).await;
    }
    let body = DefinitionUpdate {
        skus,
        rollover: metered.then_some(input.rollover),
        low_balance_threshold: if metered { low } else { None },
        meter_event_name: None,
    };
    match api::definitions::definition_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => {
            let status = status_of(&e);
            let p = def_refusal(&e, &input, &mut errors);
            page(&ctx, &s, status, None, Refused::Def(id, input, errors, p)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_in_words() {
        let monthly = json!({"currency": "usd", "unit_amount": 999, "recurring": {"interval": "month", "interval_count": 1}});
        assert_eq!(price_words(&monthly), "$9.99 / month");
        let quarterly = json!({"currency": "eur", "unit_amount": 2500, "recurring": {"interval": "month", "interval_count": 3}});
        assert_eq!(price_words(&quarterly), "€25.00 / 3 months");
        let once = json!({"currency": "jpy", "unit_amount": 1299, "recurring": null});
        assert_eq!(price_words(&once), "¥1,299 once");
        assert_eq!(
            price_words(&json!({"currency": "usd", "unit_amount": null})),
            "custom pricing"
        );
    }
}
