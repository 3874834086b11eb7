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
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes under the Idempotency-Key middleware, and their part of the OpenAPI
/// document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route("/v1/skus", routing::post(sku_create).get(sku_list))
        .route(
            "/v1/skus/{identifier}",
            routing::get(sku_get).patch(sku_update).delete(sku_delete),
        )
        .route("/v1/connect_stripe", routing::post(connect_stripe))
        .route("/v1/subscribers/{customid}", routing::get(subscriber))
        .route(
            "/v1/subscribers/{customid}/grants",
            routing::post(grant_create).get(grant_list),
        )
        .route(
            "/v1/subscribers/{customid}/grants/{id}",
            routing::delete(grant_revoke),
        )
        .route("/v1/subscribers/{customid}/history", routing::get(history))
        .route(
            "/v1/entitlements/settings",
            routing::get(settings_get).patch(settings_update),
        )
}

/// The permission check (public keys): outside the Idempotency-Key middleware, with its own
/// auth cache.
pub fn check_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().route("/v1/permissions", routing::get(permissions))
}

// ---- validation helpers ----------------------------------------------------------------------

/// Identifiers (SKUs, permissions): 1 to 100 of letters, digits, `.`, `_`, `-`.
pub(super) fn identifier(body: &Map<String, Value>, key: &str) -> ApiResult<String> {
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

pub(super) fn valid_identifier(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

fn opt_str<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => {
            Ok(Some(s.trim()))
        }
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
    ent::reevaluate_account(&ctx, &caller.merchant_account_id, &ent::Cause::Catalogue).await?;
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

// ---- linking ---------------------------------------------------------------------------------

pub const CONNECT_FIELDS: &[&str] = &["customid", "customerid", "force", "connection_id"];

fn customid_ok(c: &str) -> bool {
    // Characters, not bytes: the documented limit (a 255-letter customid in a script with
    // multi-byte letters was refused).
    !c.is_empty() && c.chars().count() <= 255 && !c.chars().any(char::is_control)
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

pub const PERMISSIONS_QUERY: &[&str] = &["customid", "at"];

/// Authenticates a permission read: a public (or secret) key, from the short cache.
pub(crate) async fn check_caller(
    ctx: &ApiContext,
    headers: &HeaderMap,
) -> ApiResult<(String, String, crate::auth::KeyKind)> {
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
    Ok((row.id, merchant, kind))
}

pub(crate) async fn settings_of(ctx: &ApiContext, merchant: &str) -> ApiResult<SettingsRow> {
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
        Ok(Checked { body, etag: None }) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Checked {
            body,
            etag: Some(etag),
        }) => {
            let tag = format!("\"{etag}\"");
            if if_none_match(&headers, &tag) {
                return (StatusCode::NOT_MODIFIED, [(axum::http::header::ETAG, tag)])
                    .into_response();
            }
            (
                StatusCode::OK,
                [
                    (
                        axum::http::header::CONTENT_TYPE,
                        "application/json".to_string(),
                    ),
                    (axum::http::header::ETAG, tag),
                ],
                body,
            )
                .into_response()
        }
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

/// Whether `If-None-Match` names `tag` (or `*`); weak tags compare as strong ones.
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// The check's answer, with its ETag (the customer's state version; absent for `?at=`).
struct Checked {
    body: String,
    etag: Option<String>,
}

/// The ETag of an answer: the customer's state version, and the number of its permissions
/// that have lapsed by the clock since (a lapse changes the answer without a new version).
pub(crate) fn etag_of(rows: &[tollgate_store::entitlements::PermissionRow], now_ms: i64) -> String {
    let version = rows.iter().map(|r| r.version).max().unwrap_or(0);
    let lapsed = rows
        .iter()
        .filter(|r| r.is_valid && r.valid_until.is_some_and(|v| now_ms >= v))
        .count();
    if lapsed == 0 {
        version.to_string()
    } else {
        format!("{version}.{lapsed}")
    }
}

async fn check(
    ctx: &ApiContext,
    addr: SocketAddr,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Checked, (ApiError, Option<u64>)> {
    let (key_id, merchant, kind) = check_caller(ctx, headers).await.map_err(|e| (e, None))?;
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
    if let Some((_, at)) = query.iter().find(|(k, _)| k == "at") {
        if kind != crate::auth::KeyKind::Secret {
            return Err((
                ApiError::Forbidden(
                    "Permissions at a past moment are for secret keys only.".into(),
                ),
                None,
            ));
        }
        let at_ms = crate::clock::parse_rfc3339(at).ok_or_else(|| {
            (
                ApiError::query("/at", "Must be an RFC 3339 date-time."),
                None,
            )
        })?;
        let body = permissions_at(ctx, &merchant, customid, at_ms)
            .await
            .map_err(|e| (e, None))?;
        return Ok(Checked { body, etag: None });
    }
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
    Ok(Checked {
        body: json!({"customid": customid, "permissions": permissions}).to_string(),
        etag: Some(etag_of(&rows, now)),
    })
}

/// What the check answered at `at_ms`: per permission the newest history entry at or before
/// that moment, judged against the clock at that moment (a held permission past its
/// `valid_until` was answered lapsed).
async fn permissions_at(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    at_ms: i64,
) -> ApiResult<String> {
    let entries = es::history_at(ctx.store.reader(), merchant, customid, at_ms).await?;
    let permissions: Vec<Value> = entries
        .iter()
        .filter(|h| !h.removed)
        .map(|h| ent::permission_json(&h.permission(), at_ms))
        .collect();
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
    let grant_rows = es::grants_of(&mut *conn, merchant, &customid).await?;
    drop(conn);
    if purchases.links.is_empty()
        && purchases.objects.is_empty()
        && perms.is_empty()
        && grant_rows.is_empty()
    {
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
        "grants": grant_rows.iter().map(render_grant).collect::<Vec<_>>(),
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
    "revoke_on_dispute",
    "revoke_on_fraud_warning",
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
        "revoke_on_dispute": s.revoke_on_dispute,
        "revoke_on_fraud_warning": s.revoke_on_fraud_warning,
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
    match opt_str(&body, "revoke_on_dispute")? {
        Some(p @ ("opened" | "lost")) => s.revoke_on_dispute = p.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                "/revoke_on_dispute",
                "Must be 'opened' or 'lost'.",
            ));
        }
        None => {}
    }
    if let Some(b) = opt_bool(&body, "revoke_on_fraud_warning")? {
        s.revoke_on_fraud_warning = b;
    }
    if let Some(n) = int_field(&body, "renewal_leeway_secs", 0, 7 * 86_400)? {
        s.renewal_leeway_secs = n;
    }
    if let Some(secret) = opt_str(&body, "customer_token_secret")? {
        if secret.chars().count() < 16 {
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
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Settings).await?;
    Ok(Json(render_settings(&s)))
}

// ---- typed bodies ----------------------------------------------------------------------------

/// Reads `body` as `T`: a field not in `fields` is refused naming it, as is a field of the
/// wrong type or a missing one (a 400 whose detail points at it).
fn typed<T: serde::de::DeserializeOwned>(
    body: Map<String, Value>,
    fields: &[&str],
) -> ApiResult<T> {
    super::unknown_fields(&body, fields)?;
    serde_path_to_error::deserialize::<_, T>(Value::Object(body)).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let pointer = match message.strip_prefix("missing field `") {
            Some(rest) if path == "." => format!("/{}", rest.split('`').next().unwrap_or("")),
            _ if path == "." => String::new(),
            _ => format!("/{}", path.replace('.', "/")),
        };
        let message = if message.starts_with("missing field") {
            "Required.".to_string()
        } else {
            // serde's words ("invalid type: integer `5`, expected a string"); the pointer
            // names the field.
            message
        };
        ApiError::field(&pointer, message)
    })
}

fn path_error(pointer: &str, message: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!("Request failed validation: {message}"),
        details: vec![Detail {
            location: "path",
            pointer: pointer.to_string(),
            message: message.to_string(),
            kind: "value_error",
        }],
    }
}

fn customid_of_path(customid: &str) -> ApiResult<()> {
    if customid_ok(customid) {
        Ok(())
    } else {
        Err(path_error("/customid", "Must be 1 to 255 characters."))
    }
}

// ---- manual grants ---------------------------------------------------------------------------

pub const GRANT_FIELDS: &[&str] = &["permission", "expires_at", "reason"];

/// `POST /v1/subscribers/{customid}/grants`.
#[derive(Debug, serde::Deserialize)]
pub struct GrantCreate {
    pub permission: String,
    /// RFC 3339; `null` or absent: no end.
    #[serde(default)]
    pub expires_at: Option<String>,
    pub reason: String,
}

/// A grant as the API shows it.
#[derive(Debug, serde::Serialize)]
pub struct GrantOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub customid: String,
    pub permission: String,
    pub starts_at: String,
    pub expires_at: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

pub fn render_grant(g: &es::GrantRow) -> GrantOut {
    GrantOut {
        kind: "grant",
        id: g.id.clone(),
        customid: g.customid.clone(),
        permission: g.permission.clone(),
        starts_at: rfc3339(g.starts_at),
        expires_at: g.expires_at.map(rfc3339),
        reason: g.reason.clone(),
        created_by: g.created_by.clone(),
        revoked_at: g.revoked_at.map(rfc3339),
        revoked_by: g.revoked_by.clone(),
    }
}

/// Who made a change through the API: the key.
pub fn key_actor(caller: &Caller) -> String {
    format!("key:{}", caller.key_id)
}

/// Gives `customid` a permission by hand, re-evaluates it, all in one transaction. Used by the
/// API and the dashboard.
pub async fn grant(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    body: GrantCreate,
    created_by: String,
) -> ApiResult<es::GrantRow> {
    let now = ctx.now();
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::field(
            "/reason",
            "Must be 1 to 500 characters without control characters.",
        ));
    }
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(t) => {
            let ms = crate::clock::parse_rfc3339(t)
                .ok_or_else(|| ApiError::field("/expires_at", "Must be an RFC 3339 date-time."))?;
            // Permissions expire in whole seconds (`expires_date`): so does a grant.
            let ms = ms - ms.rem_euclid(1000);
            if ms <= now {
                return Err(ApiError::field(
                    "/expires_at",
                    "Must be in the future (null: no end).",
                ));
            }
            Some(ms)
        }
    };
    let defs = es::list_permission_defs(ctx.store.reader(), merchant).await?;
    if !defs.iter().any(|d| d.identifier == body.permission) {
        return Err(ApiError::field(
            "/permission",
            format!(
                "Unknown permission '{}': define it with POST /v1/permissions/definitions first.",
                body.permission
            ),
        ));
    }
    let row = es::GrantRow {
        id: tollgate_store::new_id(),
        merchant_account_id: merchant.to_string(),
        customid: customid.to_string(),
        permission: body.permission,
        starts_at: now,
        expires_at,
        reason: reason.to_string(),
        created_by,
        revoked_at: None,
        revoked_by: None,
    };
    let mut tx = ctx.store.begin().await?;
    es::insert_grant(&mut *tx, &row).await?;
    let cause = ent::Cause::Grant {
        id: row.id.clone(),
        action: "granted",
    };
    let notices = ent::reevaluate(ctx, &mut tx, merchant, customid, &cause).await?;
    ent::notify(&mut tx, &notices, ctx.now()).await?;
    tollgate_store::commit(tx).await?;
    Ok(row)
}

/// Revokes grant `id` of `customid` (a revoked grant stays as it was revoked), re-evaluates.
pub async fn revoke(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    id: &str,
    by: &str,
) -> ApiResult<es::GrantRow> {
    let mut tx = ctx.store.begin().await?;
    if es::revoke_grant(&mut *tx, merchant, customid, id, ctx.now(), by).await? {
        let cause = ent::Cause::Grant {
            id: id.to_string(),
            action: "revoked",
        };
        let notices = ent::reevaluate(ctx, &mut tx, merchant, customid, &cause).await?;
        ent::notify(&mut tx, &notices, ctx.now()).await?;
    }
    let found = es::grants_of(&mut *tx, merchant, customid)
        .await?
        .into_iter()
        .find(|g| g.id == id);
    tollgate_store::commit(tx).await?;
    found.ok_or_else(|| ApiError::not_found("grant"))
}

pub async fn grant_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<GrantOut>)> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let body: GrantCreate = typed(body, GRANT_FIELDS)?;
    let row = grant(
        &ctx,
        &caller.merchant_account_id,
        &customid,
        body,
        key_actor(&caller),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(render_grant(&row))))
}

#[derive(Debug, serde::Serialize)]
pub struct GrantList {
    pub items: Vec<GrantOut>,
}

pub async fn grant_list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
) -> ApiResult<Json<GrantList>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let rows = es::grants_of(ctx.store.reader(), &caller.merchant_account_id, &customid).await?;
    Ok(Json(GrantList {
        items: rows.iter().map(render_grant).collect(),
    }))
}

pub async fn grant_revoke(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path((customid, id)): Path<(String, String)>,
) -> ApiResult<Json<GrantOut>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let row = revoke(
        &ctx,
        &caller.merchant_account_id,
        &customid,
        &id,
        &key_actor(&caller),
    )
    .await?;
    Ok(Json(render_grant(&row)))
}

// ---- history ---------------------------------------------------------------------------------

pub const HISTORY_QUERY: &[&str] = &["limit", "cursor"];

/// One change of one permission.
#[derive(Debug, serde::Serialize)]
pub struct HistoryEntry {
    pub permission: String,
    pub at: String,
    pub is_valid: bool,
    pub entitlement: i64,
    pub expires_at: Option<String>,
    /// The permission left the answer (its SKUs or definition left the catalogue).
    pub removed: bool,
    pub cause: Value,
    /// The customer's state version this change is part of.
    pub version: i64,
}

#[derive(Debug, serde::Serialize)]
pub struct HistoryPage {
    pub items: Vec<HistoryEntry>,
    pub limit: i64,
    pub next_cursor: Option<String>,
}

pub async fn history(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult<Json<HistoryPage>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let mut q: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (k, v) in query {
        if !HISTORY_QUERY.contains(&k.as_str()) {
            return Err(ApiError::query(&format!("/{k}"), "Unknown parameter."));
        }
        q.entry(k).or_default().push(v);
    }
    let (cursor, limit) = super::page_params(&q)?;
    let not_ours = || ApiError::query("/cursor", "Not a cursor this server made.");
    let before = match cursor {
        None => None,
        Some((at, seq, true)) => Some((at, seq.parse::<i64>().map_err(|_| not_ours())?)),
        Some((_, _, false)) => return Err(not_ours()),
    };
    let mut rows = es::history_page(
        ctx.store.reader(),
        &caller.merchant_account_id,
        &customid,
        before,
        ctx.now(),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(super::cursor::encode(last.at, &last.seq.to_string(), true)),
        _ => None,
    };
    let items = rows
        .iter()
        .map(|h| HistoryEntry {
            permission: h.identifier.clone(),
            at: rfc3339(h.at),
            is_valid: h.is_valid,
            entitlement: h.entitlement,
            expires_at: h
                .expires_at
                .map(|ms| ent::rfc3339_secs(ms.div_euclid(1000))),
            removed: h.removed,
            cause: serde_json::from_str(&h.cause).unwrap_or(Value::Null),
            version: h.version,
        })
        .collect();
    Ok(Json(HistoryPage {
        items,
        limit,
        next_cursor,
    }))
}
