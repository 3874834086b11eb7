//! Stripe Features as permissions (docs/stripe-entitlements.md).
//!
//! [`import`] reads a connection's features (`GET /v1/entitlements/features`) and which products
//! carry them (`GET /v1/products/{id}/features` for every product), and writes the catalogue:
//! each active feature becomes the permission definition named by its `lookup_key`, whose SKUs
//! are the products carrying it (a product's existing Stripe SKU, else a new one named by the
//! product id). A feature archived or gone leaves its definition without SKUs, so nobody holds
//! it. The import manages only the definitions it made: one made by hand (or by another
//! connection) with the same identifier is reported as a conflict and left alone. Every
//! customer of the merchant account is re-evaluated when the catalogue changed.
//!
//! With `automatic` on, [`after_batch`] (the webhook inbox, after each batch commits) imports
//! again on `product.*` and `entitlements.*` events, and on
//! `entitlements.active_entitlement_summary.updated` also re-reads that customer's
//! subscriptions from Stripe as a sync does. The summary is only a signal: it knows no expiry,
//! grace or one-time purchase, so permissions always come from Tollgate's own evaluation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tollgate_store::entitlements::{self as es, SkuRow};
use tollgate_store::stripe_features::{self as fs, ImportedRow, SyncRow};
use tollgate_store::{ConnectionRow, inbox::InboxRow};
use utoipa::ToSchema;

use super::{Cause, stripe_error};
use crate::ApiContext;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};

/// The summary event Stripe sends when a customer's active entitlements change.
pub const SUMMARY_EVENT: &str = "entitlements.active_entitlement_summary.updated";
/// At most this many features and products are read per import.
const READ_CAP: usize = 10_000;
/// Products whose features are read at once.
const PARALLEL_READS: usize = 8;
/// Subscriptions of one customer re-read on a summary event.
const CUSTOMER_READ_CAP: usize = 1_000;

/// What happened to one Stripe feature in an import.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = ImportedFeature)]
pub struct FeatureOut {
    /// The Stripe feature (`feat_…`).
    #[schema(example = "feat_test_61QGU1MWyFMSP9YBZ41ClCIKljWvsTgu")]
    pub feature_id: String,
    #[schema(example = "analytics")]
    pub lookup_key: String,
    pub name: String,
    /// `imported`: its permission definition holds the SKUs of the products carrying it;
    /// `archived`: archived (or deleted) at Stripe, its definition keeps no SKU;
    /// `conflict`: a definition with that identifier exists and was not made by this
    /// connection's import (left as it is); `invalid_identifier`: the lookup_key cannot be a
    /// permission identifier (1 to 100 letters, digits, `.`, `_`, `-`).
    #[schema(value_type = String, pattern = "^(imported|archived|conflict|invalid_identifier)$")]
    pub status: String,
    /// The permission definition it manages (null when not imported).
    pub permission: Option<String>,
    /// The Stripe products (`prod_…`) that carry it.
    pub products: Vec<String>,
    /// The SKUs of its permission definition.
    pub skus: Vec<String>,
}

/// A connection's Stripe Features import: its mode and what the last import found.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = FeatureImport)]
pub struct ImportOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^feature-import$")]
    pub object: String,
    pub connection_id: String,
    /// Whether product, feature and entitlement-summary events import again by themselves.
    pub automatic: bool,
    /// When the last import ran (null: never).
    #[schema(format = DateTime)]
    pub imported_at: Option<String>,
    /// Every feature the last import read, with what became of it.
    pub features: Vec<FeatureOut>,
    /// SKUs the last import created.
    pub skus_created: Vec<String>,
    /// Whether the last import changed the catalogue (then every customer was re-evaluated).
    pub catalogue_changed: bool,
}

/// The stored state of `connection`'s import (no import yet: empty, not automatic).
pub async fn state(ctx: &ApiContext, connection: &ConnectionRow) -> ApiResult<ImportOut> {
    let row = fs::get_sync(ctx.store.reader(), &connection.id).await?;
    Ok(render(connection, row.as_ref()))
}

fn render(connection: &ConnectionRow, row: Option<&SyncRow>) -> ImportOut {
    let last: Option<ImportOut> = row
        .and_then(|r| r.report.as_deref())
        .and_then(|t| serde_json::from_str(t).ok());
    ImportOut {
        object: "feature-import".into(),
        connection_id: connection.id.clone(),
        automatic: row.is_some_and(|r| r.automatic),
        imported_at: row.and_then(|r| r.imported_at).map(rfc3339),
        features: last
            .as_ref()
            .map(|l| l.features.clone())
            .unwrap_or_default(),
        skus_created: last
            .as_ref()
            .map(|l| l.skus_created.clone())
            .unwrap_or_default(),
        catalogue_changed: last.is_some_and(|l| l.catalogue_changed),
    }
}

/// Sets the automatic mode without importing.
pub async fn set_automatic(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    automatic: bool,
) -> ApiResult<()> {
    let mut tx = ctx.store.begin().await?;
    let mut row = fs::get_sync(&mut *tx, &connection.id)
        .await?
        .unwrap_or_else(|| empty_sync(connection, ctx.now()));
    row.automatic = automatic;
    row.updated_at = ctx.now();
    fs::put_sync(&mut *tx, &row).await?;
    tollgate_store::commit(tx).await?;
    Ok(())
}

fn empty_sync(connection: &ConnectionRow, now: i64) -> SyncRow {
    SyncRow {
        connection_id: connection.id.clone(),
        merchant_account_id: connection.merchant_account_id.clone(),
        automatic: false,
        imported_at: None,
        report: None,
        updated_at: now,
    }
}

fn valid_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

fn seg(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What Stripe says: the active features and, per feature, the products carrying it.
struct Read {
    features: Vec<Value>,
    carried_by: BTreeMap<String, BTreeSet<String>>,
}

async fn read_stripe(ctx: &ApiContext, connection: &ConnectionRow) -> ApiResult<Read> {
    let stripe = ctx.stripe_for(connection)?;
    let mut active = Map::new();
    active.insert("archived".into(), json!(false));
    let features = stripe
        .list_all("/v1/entitlements/features", &active, READ_CAP)
        .await
        .map_err(|e| stripe_error(ctx, &e))?;
    let products = stripe
        .list_all("/v1/products", &Map::new(), READ_CAP)
        .await
        .map_err(|e| stripe_error(ctx, &e))?;
    let ids: Vec<String> = products
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect();
    let per_product: Vec<(String, Vec<Value>)> = stream::iter(ids)
        .map(|id| {
            let stripe = stripe.clone();
            async move {
                let path = format!("/v1/products/{}/features", seg(&id));
                let items = stripe.list_all(&path, &Map::new(), READ_CAP).await?;
                Ok::<_, tollgate_stripe::client::StripeError>((id, items))
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await
        .map_err(|e| stripe_error(ctx, &e))?;
    let mut carried_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (product, items) in per_product {
        for pf in items {
            let feature = match &pf["entitlement_feature"] {
                Value::String(id) => id.clone(),
                other => other["id"].as_str().unwrap_or_default().to_string(),
            };
            if !feature.is_empty() {
                carried_by
                    .entry(feature)
                    .or_default()
                    .insert(product.clone());
            }
        }
    }
    Ok(Read {
        features,
        carried_by,
    })
}

/// Imports `connection`'s Stripe Features into the catalogue (see the module's text); with
/// `automatic`, also sets the mode. Answers the import's report.
pub async fn import(
    ctx: &ApiContext,
    connection: &ConnectionRow,
    automatic: Option<bool>,
) -> ApiResult<ImportOut> {
    let read = read_stripe(ctx, connection).await?;
    let merchant = connection.merchant_account_id.as_str();
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    let mut sync = fs::get_sync(&mut *tx, &connection.id)
        .await?
        .unwrap_or_else(|| empty_sync(connection, now));
    if let Some(a) = automatic {
        sync.automatic = a;
    }
    // Written first: on PostgreSQL the row's lock makes a second import of this connection
    // wait for this one (and then read the catalogue it wrote).
    sync.updated_at = now;
    fs::put_sync(&mut *tx, &sync).await?;
    let mut skus = es::list_skus(&mut *tx, merchant).await?;
    let defs: HashMap<String, Vec<String>> = es::list_permission_defs(&mut *tx, merchant)
        .await?
        .into_iter()
        .map(|d| (d.identifier, d.skus))
        .collect();
    let metered: BTreeSet<String> = tollgate_store::credits::definitions(&mut *tx, merchant)
        .await?
        .into_iter()
        .map(|d| d.permission)
        .collect();
    let imported = fs::imported_of_account(&mut *tx, merchant).await?;
    // Which connection's import manages each permission.
    let owner: HashMap<&str, &str> = imported
        .iter()
        .map(|r| (r.permission.as_str(), r.connection_id.as_str()))
        .collect();
    let mine = |perm: &str| owner.get(perm).is_some_and(|c| *c == connection.id);

    let mut out: Vec<FeatureOut> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let mut changed = false;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for f in &read.features {
        let (Some(id), Some(key)) = (f["id"].as_str(), f["lookup_key"].as_str()) else {
            continue;
        };
        if f["active"] == false {
            continue;
        }
        seen.insert(id.to_string());
        let products: Vec<String> = read
            .carried_by
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut entry = FeatureOut {
            feature_id: id.to_string(),
            lookup_key: key.to_string(),
            name: f["name"].as_str().unwrap_or_default().to_string(),
            status: "imported".into(),
            permission: None,
            products: products.clone(),
            skus: Vec::new(),
        };
        if !valid_identifier(key) {
            entry.status = "invalid_identifier".into();
            out.push(entry);
            continue;
        }
        if (defs.contains_key(key) && !mine(key)) || metered.contains(key) {
            entry.status = "conflict".into();
            entry.skus = defs.get(key).cloned().unwrap_or_default();
            out.push(entry);
            continue;
        }
        // The SKU of each product: an existing Stripe SKU of it, else a new one.
        let mut want: Vec<String> = Vec::new();
        for p in &products {
            let sku = match skus
                .iter()
                .find(|s| s.store == "stripe" && s.product_id == *p)
            {
                Some(s) => s.identifier.clone(),
                None => {
                    let identifier = free_identifier(&skus, p);
                    let row = SkuRow {
                        merchant_account_id: merchant.to_string(),
                        identifier: identifier.clone(),
                        store: "stripe".into(),
                        product_id: p.clone(),
                        kind: "subscription".into(),
                        created_at: now,
                        updated_at: now,
                    };
                    es::insert_sku(&mut *tx, &row).await?;
                    skus.push(row);
                    created.push(identifier.clone());
                    changed = true;
                    identifier
                }
            };
            if !want.contains(&sku) {
                want.push(sku);
            }
        }
        match defs.get(key) {
            None => {
                es::insert_permission_def(&mut *tx, merchant, key, now).await?;
                write_skus(&mut tx, merchant, key, &want).await?;
                changed = true;
            }
            Some(have) if *have != want => {
                es::touch_permission_def(&mut *tx, merchant, key, now).await?;
                write_skus(&mut tx, merchant, key, &want).await?;
                changed = true;
            }
            Some(_) => {}
        }
        fs::put_imported(
            &mut *tx,
            &ImportedRow {
                connection_id: connection.id.clone(),
                feature_id: id.to_string(),
                merchant_account_id: merchant.to_string(),
                permission: key.to_string(),
                updated_at: now,
            },
        )
        .await?;
        entry.permission = Some(key.to_string());
        entry.skus = want;
        out.push(entry);
    }
    // Features imported before that are archived or gone now: their definitions keep no SKU.
    for r in imported
        .iter()
        .filter(|r| r.connection_id == connection.id && !seen.contains(&r.feature_id))
    {
        // Another feature of this import may have taken the identifier over.
        if out
            .iter()
            .any(|o| o.permission.as_deref() == Some(r.permission.as_str()))
        {
            continue;
        }
        if defs.get(&r.permission).is_some_and(|s| !s.is_empty()) {
            es::touch_permission_def(&mut *tx, merchant, &r.permission, now).await?;
            es::clear_permission_skus(&mut *tx, merchant, &r.permission).await?;
            changed = true;
        }
        out.push(FeatureOut {
            feature_id: r.feature_id.clone(),
            lookup_key: r.permission.clone(),
            name: String::new(),
            status: "archived".into(),
            permission: Some(r.permission.clone()),
            products: Vec::new(),
            skus: Vec::new(),
        });
    }
    let mut report = render(connection, Some(&sync));
    report.features = out;
    report.skus_created = created;
    report.catalogue_changed = changed;
    report.imported_at = Some(rfc3339(now));
    sync.imported_at = Some(now);
    sync.updated_at = now;
    sync.report =
        Some(serde_json::to_string(&report).map_err(|e| ApiError::Internal(e.to_string()))?);
    fs::put_sync(&mut *tx, &sync).await?;
    tollgate_store::commit(tx).await?;
    if changed {
        super::reevaluate_account(ctx, merchant, &Cause::Catalogue).await?;
    }
    Ok(report)
}

/// A SKU identifier for `product` not taken yet: the product id itself, else with a suffix.
fn free_identifier(skus: &[SkuRow], product: &str) -> String {
    let taken = |id: &str| skus.iter().any(|s| s.identifier == id);
    let base: String = product.chars().take(90).collect();
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}.{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

async fn write_skus(
    tx: &mut tollgate_store::Tx<'_>,
    merchant: &str,
    permission: &str,
    skus: &[String],
) -> ApiResult<()> {
    es::clear_permission_skus(&mut **tx, merchant, permission).await?;
    for (i, s) in skus.iter().enumerate() {
        es::add_permission_sku(&mut **tx, merchant, permission, s, i as i64).await?;
    }
    Ok(())
}

/// Whether an event type concerns the import (the inbox keeps it either way).
pub fn is_feature_event(event_type: &str) -> bool {
    event_type.starts_with("product.") || event_type.starts_with("entitlements.")
}

/// The webhook inbox calls this after each batch committed: connections with the automatic
/// import read their features again once per batch that had product or entitlement events,
/// and each customer named by a summary event is re-read from Stripe. A failure is logged;
/// the next such event, a manual import or a sync catches up.
pub async fn after_batch(
    ctx: &ApiContext,
    rows: &[InboxRow],
    conns: &HashMap<String, Option<ConnectionRow>>,
) {
    let mut by_conn: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for row in rows.iter().filter(|r| is_feature_event(&r.event_type)) {
        let customers = by_conn.entry(row.connection_id.as_str()).or_default();
        if row.event_type == SUMMARY_EVENT
            && let Ok(ev) = serde_json::from_str::<Value>(&row.payload)
            && let Some(c) = ev["data"]["object"]["customer"].as_str()
        {
            customers.insert(c.to_string());
        }
    }
    for (conn_id, customers) in by_conn {
        let Some(Some(conn)) = conns.get(conn_id) else {
            continue;
        };
        if let Err(e) = on_events(ctx, conn, &customers).await {
            tracing::warn!(connection = %conn_id, error = %e, "importing Stripe features after events failed; the next event or import catches up");
        }
    }
}

async fn on_events(
    ctx: &ApiContext,
    conn: &ConnectionRow,
    customers: &BTreeSet<String>,
) -> ApiResult<()> {
    let automatic = fs::get_sync(ctx.store.reader(), &conn.id)
        .await?
        .is_some_and(|r| r.automatic);
    if !automatic {
        return Ok(());
    }
    import(ctx, conn, None).await?;
    for customer in customers {
        reread_customer(ctx, conn, customer).await?;
    }
    Ok(())
}

/// Reads the customer's subscriptions from Stripe and re-evaluates it, as a sync would.
pub async fn reread_customer(
    ctx: &ApiContext,
    conn: &ConnectionRow,
    customer: &str,
) -> ApiResult<()> {
    let stripe = ctx.stripe_for(conn)?;
    let mut params = Map::new();
    params.insert("customer".into(), json!(customer));
    params.insert("status".into(), json!("all"));
    let subs = stripe
        .list_all("/v1/subscriptions", &params, CUSTOMER_READ_CAP)
        .await
        .map_err(|e| stripe_error(ctx, &e))?;
    let at = ctx.now() / 1000;
    let objects = subs.into_iter().map(|s| (at, s)).collect();
    super::ingest(ctx, conn, objects, None, Cause::StripeRead).await?;
    Ok(())
}
