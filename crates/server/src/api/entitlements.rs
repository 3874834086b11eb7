//! Entitlements API (SPEC §5): the catalogue (`/v1/skus`, `/v1/permissions/definitions`),
//! linking (`POST /v1/connect_stripe`), the permission check (`GET /v1/permissions`, public
//! key), subscribers (`GET /v1/subscribers/{customid}`) and the account's entitlement settings
//! (`/v1/entitlements/settings`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tollgate_store::entitlements::{self as es, SettingsRow, SkuRow};
use tollgate_store::{ApiKeyRow, ConnectionRow, connections};

use super::JsonBody;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::entitlements as ent;
use crate::error::{ApiError, ApiResult, Detail};

// ---- validation helpers ----------------------------------------------------------------------

/// Identifiers (SKUs, permissions): 1 to 100 of letters, digits, `.`, `_`, `-`.
fn identifier(body: &Map<String, Value>, key: &str) -> ApiResult<String> {
    let v = body
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field(&format!("/{key}"), "Required: a string."))?;
    if valid_identifier(v) {
        Ok(v.to_string())
    } else {
        Err(ApiError::field(
            &format!("/{key}"),
            "Use 1 to 100 letters, digits, '.', '_' or '-'.",
        ))
    }
}

fn valid_identifier(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

fn opt_str<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim())),
        Some(_) => Err(ApiError::field(
            &format!("/{key}"),
            "Must be a non-empty string of at most 255 characters.",
        )),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> ApiResult<Option<bool>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::field(
            &format!("/{key}"),
            "Must be true or false.",
        )),
    }
}

// ---- SKUs ------------------------------------------------------------------------------------

pub const SKU_FIELDS: &[&str] = &["identifier", "store", "product_id", "kind"];
pub const SKU_KINDS: &[&str] = &["subscription", "one_time"];

pub fn render_sku(s: &SkuRow) -> Value {
    json!({
        "type": "sku",
        "identifier": s.identifier,
        "store": s.store,
        "product_id": s.product_id,
        "kind": s.kind,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.updated_at),
    })
}

/// Applies `store`, `product_id`, `kind` of `body` to `s`.
fn sku_fields(s: &mut SkuRow, body: &Map<String, Value>, create: bool) -> ApiResult<()> {
    match opt_str(body, "store")? {
        Some("stripe") => s.store = "stripe".into(),
        None => {}
        Some(_) => return Err(ApiError::field("/store", "Only 'stripe' SKUs exist.")),
    }
    match opt_str(body, "product_id")? {
        Some(p) if p.starts_with("prod_") && valid_identifier(p) => s.product_id = p.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                "/product_id",
                "Must be a Stripe product id (prod_…).",
            ));
        }
        None if create => return Err(ApiError::field("/product_id", "Required: prod_…")),
        None => {}
    }
    match opt_str(body, "kind")? {
        Some(k) if SKU_KINDS.contains(&k) => s.kind = k.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                "/kind",
                "Must be 'subscription' or 'one_time'.",
            ));
        }
        None if create => {
            return Err(ApiError::field(
                "/kind",
                "Required: 'subscription' or 'one_time'.",
            ));
        }
        None => {}
    }
    Ok(())
}

pub async fn sku_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    super::unknown_fields(&body, SKU_FIELDS)?;
    let id = identifier(&body, "identifier")?;
    let now = ctx.now();
    let mut row = SkuRow {
        merchant_account_id: caller.merchant_account_id.clone(),
        identifier: id.clone(),
        store: "stripe".into(),
        product_id: String::new(),
        kind: String::new(),
        created_at: now,
        updated_at: now,
    };
    sku_fields(&mut row, &body, true)?;
    match es::insert_sku(ctx.store.writer(), &row).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "identifier: a SKU '{id}' already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::CREATED, Json(render_sku(&row))))
}

pub async fn sku_list(State(ctx): State<ApiContext>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let rows = es::list_skus(ctx.store.reader(), &caller.merchant_account_id).await?;
    let items: Vec<Value> = rows.iter().map(render_sku).collect();
    Ok(Json(json!({"items": items})))
}

async fn load_sku(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<SkuRow> {
    es::get_sku(ctx.store.reader(), &caller.merchant_account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("SKU"))
}

pub async fn sku_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    Ok(Json(render_sku(&load_sku(&ctx, &caller, &id).await?)))
}

pub async fn sku_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, &["store", "product_id", "kind"])?;
    let mut row = load_sku(&ctx, &caller, &id).await?;
    sku_fields(&mut row, &body, false)?;
    row.updated_at = ctx.now();
    es::update_sku(ctx.store.writer(), &row).await?;
    ent::reevaluate_account(&ctx, &caller.merchant_account_id).await?;
    Ok(Json(render_sku(&row)))
}

pub async fn sku_delete(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    load_sku(&ctx, &caller, &id).await?;
    let users =
        es::permissions_using_sku(ctx.store.reader(), &caller.merchant_account_id, &id).await?;
    if !users.is_empty() {
        return Err(ApiError::DuplicateRecord(format!(
            "identifier: the SKU '{id}' is used by the permission(s) {}; remove it from them first.",
            users.join(", ")
        )));
    }
    es::delete_sku(ctx.store.writer(), &caller.merchant_account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- permission definitions ------------------------------------------------------------------

pub const DEFINITION_FIELDS: &[&str] = &["identifier", "skus"];

fn render_definition(d: &es::PermissionDefRow) -> Value {
    json!({
        "type": "permission-definition",
        "identifier": d.identifier,
        "skus": d.skus,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

/// The `skus` of a body: known SKU identifiers of the account, no repeats.
async fn definition_skus(
    ctx: &ApiContext,
    merchant: &str,
    body: &Map<String, Value>,
) -> ApiResult<Vec<String>> {
    let arr = body
        .get("skus")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::field("/skus", "Required: an array of SKU identifiers."))?;
    let known = es::list_skus(ctx.store.reader(), merchant).await?;
    let mut out: Vec<String> = Vec::new();
    for (i, v) in arr.iter().enumerate() {
        let pointer = format!("/skus/{i}");
        let s = v
            .as_str()
            .ok_or_else(|| ApiError::field(&pointer, "Must be a SKU identifier (a string)."))?;
        if !known.iter().any(|k| k.identifier == s) {
            return Err(ApiError::field(
                &pointer,
                format!("Unknown SKU '{s}': create it with POST /v1/skus first."),
            ));
        }
        if out.iter().any(|o| o == s) {
            return Err(ApiError::field(
                &pointer,
                format!("SKU '{s}' is listed twice."),
            ));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

async fn write_definition_skus(
    tx: &mut tollgate_store::Tx<'_>,
    merchant: &str,
    id: &str,
    skus: &[String],
) -> ApiResult<()> {
    es::clear_permission_skus(&mut **tx, merchant, id).await?;
    for (i, s) in skus.iter().enumerate() {
        es::add_permission_sku(&mut **tx, merchant, id, s, i as i64).await?;
    }
    Ok(())
}

async fn load_definition(
    ctx: &ApiContext,
    merchant: &str,
    id: &str,
) -> ApiResult<es::PermissionDefRow> {
    es::list_permission_defs(ctx.store.reader(), merchant)
        .await?
        .into_iter()
        .find(|d| d.identifier == id)
        .ok_or_else(|| ApiError::not_found("permission definition"))
}

pub async fn definition_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    super::unknown_fields(&body, DEFINITION_FIELDS)?;
    let merchant = caller.merchant_account_id.as_str();
    let id = identifier(&body, "identifier")?;
    let skus = definition_skus(&ctx, merchant, &body).await?;
    let now = ctx.now();
    let mut tx = ctx.store.begin().await?;
    match es::insert_permission_def(&mut *tx, merchant, &id, now).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "identifier: a permission '{id}' already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    write_definition_skus(&mut tx, merchant, &id, &skus).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant).await?;
    let d = load_definition(&ctx, merchant, &id).await?;
    Ok((StatusCode::CREATED, Json(render_definition(&d))))
}

pub async fn definition_list(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let rows = es::list_permission_defs(ctx.store.reader(), &caller.merchant_account_id).await?;
    let items: Vec<Value> = rows.iter().map(render_definition).collect();
    Ok(Json(json!({"items": items})))
}

pub async fn definition_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let d = load_definition(&ctx, &caller.merchant_account_id, &id).await?;
    Ok(Json(render_definition(&d)))
}

pub async fn definition_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, &["skus"])?;
    let merchant = caller.merchant_account_id.as_str();
    load_definition(&ctx, merchant, &id).await?;
    let skus = definition_skus(&ctx, merchant, &body).await?;
    let mut tx = ctx.store.begin().await?;
    es::touch_permission_def(&mut *tx, merchant, &id, ctx.now()).await?;
    write_definition_skus(&mut tx, merchant, &id, &skus).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant).await?;
    let d = load_definition(&ctx, merchant, &id).await?;
    Ok(Json(render_definition(&d)))
}

pub async fn definition_delete(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    load_definition(&ctx, merchant, &id).await?;
    let mut tx = ctx.store.begin().await?;
    es::clear_permission_skus(&mut *tx, merchant, &id).await?;
    es::delete_permission_def(&mut *tx, merchant, &id).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- linking ---------------------------------------------------------------------------------

pub const CONNECT_FIELDS: &[&str] = &["customid", "customerid", "force", "connection_id"];

fn customid_ok(c: &str) -> bool {
    !c.is_empty() && c.len() <= 255 && !c.chars().any(char::is_control)
}

/// The connection a request names (`connection_id`), or the account's default one.
async fn connection_of(
    ctx: &ApiContext,
    merchant: &str,
    named: Option<&str>,
    pointer: &str,
) -> ApiResult<ConnectionRow> {
    match named {
        Some(id) => match connections::get(ctx.store.reader(), id).await? {
            Some(c) if c.merchant_account_id == merchant => Ok(c),
            _ => Err(ApiError::field(pointer, "Unknown connection.")),
        },
        None => connections::default_for(ctx.store.reader(), merchant)
            .await?
            .ok_or_else(|| {
                ApiError::bad_request("This merchant account has no Stripe connection yet.")
            }),
    }
}

pub async fn connect_stripe(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, CONNECT_FIELDS)?;
    let customid = body
        .get("customid")
        .and_then(Value::as_str)
        .filter(|c| customid_ok(c))
        .ok_or_else(|| {
            ApiError::field("/customid", "Required: a string of 1 to 255 characters.")
        })?;
    let customer = body
        .get("customerid")
        .and_then(Value::as_str)
        .filter(|c| c.starts_with("cus_") && valid_identifier(c))
        .ok_or_else(|| ApiError::field("/customerid", "Required: a Stripe customer id (cus_…)."))?;
    let force = opt_bool(&body, "force")?.unwrap_or(false);
    let conn = connection_of(
        &ctx,
        &caller.merchant_account_id,
        opt_str(&body, "connection_id")?,
        "/connection_id",
    )
    .await?;
    let outcome = ent::link_customer(&ctx, &conn, customid, customer, force).await?;
    let now = ctx.now();
    let perms =
        es::permissions_of(ctx.store.reader(), &caller.merchant_account_id, customid).await?;
    let permissions: Vec<Value> = perms.iter().map(|p| ent::permission_json(p, now)).collect();
    Ok(Json(json!({
        "type": "customer-link",
        "customid": customid,
        "customerid": customer,
        "connection_id": conn.id,
        "moved_from": outcome.moved_from,
        "permissions": permissions,
    })))
}

// ---- the permission check (public key) -------------------------------------------------------

pub const PERMISSIONS_QUERY: &[&str] = &["customid"];

/// Authenticates a permission read: a public (or secret) key, from the short cache.
async fn check_caller(ctx: &ApiContext, headers: &HeaderMap) -> ApiResult<(String, String)> {
    let (kind, id, secret) = crate::auth::presented_key(headers)?;
    let row: Option<ApiKeyRow> = match ctx.entitlements.cached_key(id) {
        Some(r) => r,
        None => {
            let r = tollgate_store::accounts::get_api_key(ctx.store.reader(), id).await?;
            ctx.entitlements.put_key(id, r.clone());
            r
        }
    };
    let row = crate::auth::verify_key(row, kind, secret)?;
    let merchant = crate::auth::acting_account(&row, headers)?;
    crate::auth::account_exists(ctx, &row, &merchant).await?;
    Ok((row.id, merchant))
}

async fn settings_of(ctx: &ApiContext, merchant: &str) -> ApiResult<SettingsRow> {
    if let Some(s) = ctx.entitlements.cached_settings(merchant) {
        return Ok(s);
    }
    let s = es::get_settings(ctx.store.reader(), merchant).await?;
    ctx.entitlements.put_settings(s.clone());
    Ok(s)
}

/// The `X-Customer-Token` of SPEC §5.4: hex HMAC-SHA256 of the customid under the account's
/// secret.
pub fn customer_token(secret: &str, customid: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(ring::hmac::sign(&key, customid.as_bytes()).as_ref())
}

pub async fn permissions(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    match check(&ctx, addr, &headers, &query).await {
        Ok(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err((e, retry)) => {
            let mut r = e.into_response();
            if let Some(s) = retry
                && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
            {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
    }
}

async fn check(
    ctx: &ApiContext,
    addr: SocketAddr,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<String, (ApiError, Option<u64>)> {
    let (key_id, merchant) = check_caller(ctx, headers).await.map_err(|e| (e, None))?;
    ctx.entitlements.take(&key_id, addr.ip()).map_err(|wait| {
        (
            ApiError::TooManyRequests(format!(
                "Too many permission checks from this key and address; retry in {wait} s."
            )),
            Some(wait),
        )
    })?;
    for (k, _) in query {
        if !PERMISSIONS_QUERY.contains(&k.as_str()) {
            return Err((
                ApiError::query(&format!("/{k}"), "Unknown parameter."),
                None,
            ));
        }
    }
    let customid = query
        .iter()
        .find(|(k, _)| k == "customid")
        .map(|(_, v)| v.as_str())
        .filter(|c| customid_ok(c))
        .ok_or_else(|| {
            (
                ApiError::query("/customid", "Required: 1 to 255 characters."),
                None,
            )
        })?;
    let settings = settings_of(ctx, &merchant).await.map_err(|e| (e, None))?;
    if settings.require_customer_token {
        let presented = headers
            .get("x-customer-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let ok = settings.customer_token_secret.as_deref().is_some_and(|s| {
            let want = customer_token(s, customid);
            bool::from(want.as_bytes().ct_eq(presented.as_bytes()))
        });
        if !ok {
            return Err((
                ApiError::Unauthorized(
                    "A valid X-Customer-Token is required for this customid.".into(),
                ),
                None,
            ));
        }
    }
    let rows = match ctx.entitlements.cached_permissions(&merchant, customid) {
        ent::Cached::Hit(rows) => rows,
        ent::Cached::Miss(ticket) => {
            let rows = es::permissions_of(ctx.store.reader(), &merchant, customid)
                .await
                .map_err(|e| (ApiError::from(e), None))?;
            let rows = std::sync::Arc::new(rows);
            ctx.entitlements
                .put_permissions(&merchant, customid, rows.clone(), ticket);
            rows
        }
    };
    let now = ctx.now();
    let permissions: Vec<Value> = rows.iter().map(|r| ent::permission_json(r, now)).collect();
    Ok(json!({"customid": customid, "permissions": permissions}).to_string())
}

// ---- subscribers -----------------------------------------------------------------------------

pub async fn subscriber(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    let mut conn = ctx.store.hold_reader().await?;
    let purchases = ent::load_purchases(&mut conn, merchant, &customid).await?;
    let perms = es::permissions_of(&mut *conn, merchant, &customid).await?;
    drop(conn);
    if purchases.links.is_empty() && purchases.objects.is_empty() && perms.is_empty() {
        return Err(ApiError::not_found("subscriber"));
    }
    let settings = es::get_settings(ctx.store.reader(), merchant).await?;
    let now_ms = ctx.now();
    let now = purchases.frozen_time.unwrap_or(now_ms / 1000);
    let grants =
        tollgate_domain::entitlements::grants(&purchases.ledger, &ent::policy(&settings), now);
    let customers: Vec<Value> = purchases
        .links
        .iter()
        .map(|l| {
            json!({
                "id": l.stripe_customer_id,
                "connection_id": l.connection_id,
                "linked_by": l.linked_by,
                "test_clock": l.test_clock,
                "linked_at": rfc3339(l.created_at),
            })
        })
        .collect();
    let history: Vec<Value> = grants
        .iter()
        .map(|g| {
            let object = purchases
                .ledger
                .records()
                .find(|r| r.id() == g.source)
                .map(|r| r.kind())
                .unwrap_or("unknown");
            json!({
                "id": g.source,
                "object": object,
                "products": g.products,
                "sku": g.sku,
                "is_valid": g.held,
                "entitlement": g.code,
                "expires_date": g.expires,
                "expires_at": g.expires.map(ent::rfc3339_secs),
                "istrial": g.trial,
            })
        })
        .collect();
    let permissions: Vec<Value> = perms
        .iter()
        .map(|p| ent::permission_json(p, now_ms))
        .collect();
    Ok(Json(json!({
        "type": "subscriber",
        "customid": customid,
        "stripe_customers": customers,
        "permissions": permissions,
        "purchases": history,
        "evaluated_at": ent::rfc3339_secs(now),
    })))
}

// ---- settings --------------------------------------------------------------------------------

pub const SETTINGS_FIELDS: &[&str] = &[
    "grace_days",
    "revoke_on_partial_refund",
    "renewal_leeway_secs",
    "require_customer_token",
    "customer_token_secret",
    "connection_id",
    "customid_metadata_key",
];

fn render_settings(s: &SettingsRow) -> Value {
    json!({
        "type": "entitlement-settings",
        "merchant_account_id": s.merchant_account_id,
        "grace_days": s.grace_days,
        "revoke_on_partial_refund": s.revoke_on_partial_refund,
        "renewal_leeway_secs": s.renewal_leeway_secs,
        "require_customer_token": s.require_customer_token,
        "has_customer_token_secret": s.customer_token_secret.is_some(),
    })
}

pub async fn settings_get(State(ctx): State<ApiContext>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let s = es::get_settings(ctx.store.reader(), &caller.merchant_account_id).await?;
    Ok(Json(render_settings(&s)))
}

fn int_field(body: &Map<String, Value>, key: &str, min: i64, max: i64) -> ApiResult<Option<i64>> {
    match body.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::field(
                    &format!("/{key}"),
                    format!("Must be an integer from {min} to {max}."),
                )
            }),
    }
}

pub async fn settings_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    super::unknown_fields(&body, SETTINGS_FIELDS)?;
    let merchant = caller.merchant_account_id.as_str();
    let mut s = es::get_settings(ctx.store.reader(), merchant).await?;
    if body.contains_key("grace_days") {
        s.grace_days = match body.get("grace_days") {
            Some(Value::Null) => None,
            _ => int_field(&body, "grace_days", 0, 365)?,
        };
    }
    if let Some(b) = opt_bool(&body, "revoke_on_partial_refund")? {
        s.revoke_on_partial_refund = b;
    }
    if let Some(n) = int_field(&body, "renewal_leeway_secs", 0, 7 * 86_400)? {
        s.renewal_leeway_secs = n;
    }
    if let Some(secret) = opt_str(&body, "customer_token_secret")? {
        if secret.len() < 16 {
            return Err(ApiError::field(
                "/customer_token_secret",
                "Use at least 16 characters.",
            ));
        }
        s.customer_token_secret = Some(secret.to_string());
    }
    if let Some(b) = opt_bool(&body, "require_customer_token")? {
        if b && s.customer_token_secret.is_none() {
            return Err(ApiError::BadRequest {
                message: "Request failed validation: set customer_token_secret first.".into(),
                details: vec![Detail::body(
                    "/require_customer_token",
                    "Needs a customer_token_secret.",
                )],
            });
        }
        s.require_customer_token = b;
    }
    match (
        opt_str(&body, "connection_id")?,
        opt_str(&body, "customid_metadata_key")?,
    ) {
        (Some(cid), Some(key)) => {
            let conn = connection_of(&ctx, merchant, Some(cid), "/connection_id").await?;
            if !valid_identifier(key) || key.len() > 40 {
                return Err(ApiError::field(
                    "/customid_metadata_key",
                    "Use 1 to 40 letters, digits, '.', '_' or '-'.",
                ));
            }
            es::put_customid_key(ctx.store.writer(), &conn.id, key, ctx.now()).await?;
        }
        (None, None) => {}
        (None, Some(_)) => {
            return Err(ApiError::field(
                "/connection_id",
                "Name the connection whose metadata key this is.",
            ));
        }
        (Some(_), None) => {
            return Err(ApiError::field(
                "/customid_metadata_key",
                "Required with connection_id.",
            ));
        }
    }
    s.updated_at = ctx.now();
    es::put_settings(ctx.store.writer(), &s).await?;
    ctx.entitlements.forget_settings(merchant);
    ent::reevaluate_account(&ctx, merchant).await?;
    Ok(Json(render_settings(&s)))
}
