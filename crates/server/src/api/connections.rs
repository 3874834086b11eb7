//! Stripe connections (SPEC §2): credentials encrypted at rest and never returned, the
//! `awaiting_webhook_secret` state, the webhook URL to register, one default per merchant
//! account, and a key-permission report.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tollgate_store::{ConnectionRow, connections};
use tollgate_stripe::client::RequestOptions;

use super::JsonBody;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::crypto::mask;
use crate::error::{ApiError, ApiResult};
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route("/connections", routing::post(create).get(list))
        .route(
            "/connections/{id}",
            routing::get(get).patch(update).delete(delete),
        )
        .route("/connections/{id}/verify", routing::post(verify))
}

const FIELDS: &[&str] = &[
    "type",
    "display_name",
    "secret_key",
    "publishable_key",
    "webhook_secret",
    "stripe_account",
    "api_version",
    "default",
    "previous_webhook_secret_expires_in",
];

/// How long a replaced webhook secret keeps verifying when the request does not say
/// (`previous_webhook_secret_expires_in`): 24 hours, as when Stripe rolls a secret.
const PREVIOUS_SECRET_SECS: i64 = 24 * 3600;
/// The longest a replaced webhook secret may keep verifying: 7 days.
const PREVIOUS_SECRET_MAX_SECS: i64 = 7 * 24 * 3600;

pub fn render(ctx: &ApiContext, c: &ConnectionRow) -> Value {
    let previous_expires_at = c
        .previous_webhook_secret(ctx.now())
        .and(c.webhook_secret_old_expires_at)
        .map(rfc3339);
    let webhook_secret = c
        .webhook_secret_enc
        .as_ref()
        .and_then(|s| ctx.keys.open(&c.id, s).ok())
        .map(|s| mask(&s));
    json!({
        "type": "connection",
        "id": c.id,
        "merchant_account_id": c.merchant_account_id,
        "kind": c.kind,
        "display_name": c.display_name,
        "status": if c.webhook_secret_enc.is_some() { "active" } else { "awaiting_webhook_secret" },
        "secret_key": c.secret_key_hint,
        "publishable_key": c.publishable_key,
        "webhook_secret": webhook_secret,
        "has_previous_webhook_secret": previous_expires_at.is_some(),
        "previous_webhook_secret_expires_at": previous_expires_at,
        "stripe_account": c.stripe_account,
        "api_version": c.api_version,
        "webhook_url": format!("{}/webhooks/stripe/{}", ctx.public_url, c.id),
        "default": c.is_default,
        "sandbox": c.sandbox,
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    })
}

fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 500 => {
            Ok(Some(s.trim()))
        }
        Some(_) => Err(ApiError::field(
            &format!("/{key}"),
            "Must be a non-empty string.",
        )),
    }
}

/// `value` is one of `prefixes` and then at least one letter, digit, `_`, `-` or `.`.
fn check_prefix(key: &str, value: &str, prefixes: &[&str]) -> ApiResult<()> {
    let ok = prefixes
        .iter()
        .filter_map(|p| value.strip_prefix(p))
        .any(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            &format!("/{key}"),
            format!(
                "Must start with {}, then letters, digits, '_', '-' or '.'.",
                prefixes.join(" or ")
            ),
        ))
    }
}

/// A Stripe API key: one of `prefixes` and then 1 to 255 letters or digits, as Stripe writes
/// them (a key Stripe could never accept is refused here rather than at the first payment).
fn check_api_key(key: &str, value: &str, prefixes: &[&str]) -> ApiResult<()> {
    let ok = prefixes
        .iter()
        .filter_map(|p| value.strip_prefix(p))
        .any(|rest| {
            !rest.is_empty() && rest.len() <= 255 && rest.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            &format!("/{key}"),
            format!(
                "Must start with {}, then 1 to 255 letters or digits.",
                prefixes.join(" or ")
            ),
        ))
    }
}

/// Applies the settable fields of `body` to `c` (create and update share this).
fn apply_fields(
    ctx: &ApiContext,
    c: &mut ConnectionRow,
    body: &Map<String, Value>,
) -> ApiResult<()> {
    super::unknown_fields(body, FIELDS)?;
    if let Some(t) = str_field(body, "type")?
        && t != "stripe"
    {
        return Err(ApiError::field("/type", "Only 'stripe' connections exist."));
    }
    if let Some(n) = str_field(body, "display_name")? {
        c.display_name = n.to_string();
    }
    if let Some(sk) = str_field(body, "secret_key")? {
        check_api_key(
            "secret_key",
            sk,
            &["sk_test_", "sk_live_", "rk_test_", "rk_live_"],
        )?;
        c.secret_key_enc = ctx.keys.seal(&c.id, sk);
        c.secret_key_hint = mask(sk);
    }
    if let Some(pk) = str_field(body, "publishable_key")? {
        check_api_key("publishable_key", pk, &["pk_test_", "pk_live_"])?;
        c.publishable_key = Some(pk.to_string());
    }
    let previous_secs = match body.get("previous_webhook_secret_expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=PREVIOUS_SECRET_MAX_SECS).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::field(
                    "/previous_webhook_secret_expires_in",
                    "Seconds the replaced webhook secret keeps verifying: from 0 (it stops at once) to 604800 (7 days).",
                ));
            }
        },
    };
    let now = ctx.now();
    if let Some(ws) = str_field(body, "webhook_secret")? {
        check_prefix("webhook_secret", ws, &["whsec_"])?;
        // Rotation: the replaced secret keeps verifying for a while (24 h unless the request
        // says), so events Stripe signed before the switch still arrive.
        if let Some(current) = c.webhook_secret_enc.take() {
            c.webhook_secret_old_enc = Some(current);
            c.webhook_secret_old_expires_at =
                Some(now + previous_secs.unwrap_or(PREVIOUS_SECRET_SECS) * 1000);
        }
        c.webhook_secret_enc = Some(ctx.keys.seal(&c.id, ws));
    } else if let Some(secs) = previous_secs
        && c.previous_webhook_secret(now).is_some()
    {
        // A new end for the secret replaced earlier (0: now).
        c.webhook_secret_old_expires_at = Some(now + secs * 1000);
    }
    if c.previous_webhook_secret(now).is_none() {
        c.webhook_secret_old_enc = None;
        c.webhook_secret_old_expires_at = None;
    }
    if let Some(a) = str_field(body, "stripe_account")? {
        check_prefix("stripe_account", a, &["acct_"])?;
        c.stripe_account = Some(a.to_string());
    }
    if let Some(v) = str_field(body, "api_version")? {
        // `get`, not `[..10]`: the tenth byte may fall inside a multi-byte character. The rest
        // (`.endive`) is sent as the Stripe-Version header, so it is held to letters, digits,
        // '.', '_' and '-' (other text made every Stripe call of the connection fail).
        let ok = v.get(..10).is_some_and(|date| {
            date.chars().enumerate().all(|(i, ch)| {
                if i == 4 || i == 7 {
                    ch == '-'
                } else {
                    ch.is_ascii_digit()
                }
            })
        }) && v[10..].len() <= 40
            && v[10..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
        if !ok {
            return Err(ApiError::field(
                "/api_version",
                "A Stripe API version such as 2026-10-28.endive.",
            ));
        }
        c.api_version = Some(v.to_string());
    }
    match body.get("default") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => c.is_default = *b,
        Some(_) => return Err(ApiError::field("/default", "Must be a boolean.")),
    }
    Ok(())
}

pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    let c = create_for(&ctx, &caller.merchant_account_id, &body).await?;
    Ok((StatusCode::CREATED, Json(render(&ctx, &c))))
}

/// Creates a connection of `merchant` from an API-shaped body (the API and the CLI).
pub async fn create_for(
    ctx: &ApiContext,
    merchant: &str,
    body: &Map<String, Value>,
) -> ApiResult<ConnectionRow> {
    if str_field(body, "secret_key")?.is_none() {
        return Err(ApiError::field(
            "/secret_key",
            "Required: the Stripe secret (sk_…) or restricted (rk_…) key.",
        ));
    }
    let now = ctx.now();
    let mut c = ConnectionRow {
        id: tollgate_store::new_id(),
        merchant_account_id: merchant.to_string(),
        kind: "stripe".into(),
        display_name: "Stripe".into(),
        secret_key_enc: Vec::new(),
        secret_key_hint: String::new(),
        publishable_key: None,
        webhook_secret_enc: None,
        webhook_secret_old_enc: None,
        webhook_secret_old_expires_at: None,
        stripe_account: None,
        api_version: None,
        sandbox: false,
        is_default: false,
        created_at: now,
        updated_at: now,
    };
    apply_fields(ctx, &mut c, body)?;
    let mut tx = ctx.store.begin().await?;
    let default = connections::default_for(&mut *tx, &c.merchant_account_id).await?;
    // The first connection is the default; so is a live one replacing the sandbox, which
    // stops now (it never runs beside live keys).
    if default.is_none_or(|d| d.sandbox && c.is_live()) {
        c.is_default = true;
    }
    connections::insert(&mut *tx, &c).await?;
    if c.is_default {
        connections::set_default(&mut *tx, &c.merchant_account_id, &c.id).await?;
    }
    tollgate_store::commit(tx).await?;
    if c.is_live() {
        ctx.stop_sandbox();
    }
    Ok(c)
}

async fn load(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<ConnectionRow> {
    connections::get(ctx.store.reader(), id)
        .await?
        .filter(|c| c.merchant_account_id == caller.merchant_account_id)
        .ok_or_else(|| ApiError::not_found("connection"))
}

pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    Ok(Json(render(&ctx, &load(&ctx, &caller, &id).await?)))
}

pub async fn list(State(ctx): State<ApiContext>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let rows = connections::list(ctx.store.reader(), Some(&caller.merchant_account_id)).await?;
    let items: Vec<Value> = rows.iter().map(|c| render(&ctx, c)).collect();
    let n = items.len() as i64;
    Ok(Json(super::render::page(items, n.max(1), None, None)))
}

pub async fn update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let mut c = load(&ctx, &caller, &id).await?;
    if c.sandbox && (body.contains_key("secret_key") || body.contains_key("webhook_secret")) {
        return Err(ApiError::bad_request(
            "The sandbox connection's keys are managed by the server.",
        ));
    }
    let was_default = c.is_default;
    apply_fields(&ctx, &mut c, &body)?;
    if was_default && !c.is_default {
        return Err(ApiError::field(
            "/default",
            "Make another connection the default instead.",
        ));
    }
    c.updated_at = ctx.now();
    let mut tx = ctx.store.begin().await?;
    // Live keys given to a connection replace the sandbox as the default, as a new live
    // connection does.
    if c.is_live()
        && !c.is_default
        && connections::default_for(&mut *tx, &c.merchant_account_id)
            .await?
            .is_none_or(|d| d.sandbox)
    {
        c.is_default = true;
    }
    connections::update(&mut *tx, &c).await?;
    if c.is_default && !was_default {
        connections::set_default(&mut *tx, &c.merchant_account_id, &c.id).await?;
    }
    tollgate_store::commit(tx).await?;
    ctx.entitlements.forget_connection(&c.id);
    if c.is_live() {
        ctx.stop_sandbox();
    }
    Ok(Json(render(&ctx, &c)))
}

pub async fn delete(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_secret()?;
    let c = load(&ctx, &caller, &id).await?;
    // Only transactions keep a connection: the Stripe events it received (and where its sync
    // stopped) go with it.
    let mut tx = ctx.store.begin().await?;
    let made = connections::transaction_count(&mut *tx, &c.id).await?;
    if made > 0 {
        tollgate_store::rollback(tx).await?;
        return Err(kept_by_transactions(made));
    }
    // Forgotten before and after the commit: an event verified against the cached connection
    // in between would be stored for a connection that is gone.
    ctx.entitlements.forget_connection(&c.id);
    let deleted = connections::delete(&mut tx, &c.id).await;
    match deleted {
        Ok(_) => {
            tollgate_store::commit(tx).await?;
            ctx.entitlements.forget_connection(&c.id);
            Ok(StatusCode::NO_CONTENT)
        }
        // A row referring to it arrived meanwhile (PostgreSQL: another request committed
        // between the count and the delete): a transaction, or a Stripe event.
        Err(e) if e.is_foreign_key_violation() => {
            tollgate_store::rollback(tx).await?;
            let made = connections::transaction_count(ctx.store.reader(), &c.id).await?;
            Err(if made > 0 {
                kept_by_transactions(made)
            } else {
                ApiError::DuplicateRecord(
                    "This connection received a Stripe event while it was being deleted; try again.".into(),
                )
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn kept_by_transactions(n: i64) -> ApiError {
    let what = if n == 1 {
        "1 transaction was".to_string()
    } else {
        format!("{n} transactions were")
    };
    ApiError::DuplicateRecord(format!(
        "This connection cannot be deleted: {what} made through it, and transactions keep their connection."
    ))
}

/// (Stripe list path, what it enables) for the read checks of `verify`.
const READS: &[(&str, &str, &str)] = &[
    (
        "customers",
        "/v1/customers",
        "linking customers to customids",
    ),
    (
        "invoices",
        "/v1/invoices",
        "subscriptions' renewals and refunds",
    ),
    (
        "payment_intents",
        "/v1/payment_intents",
        "payments and one-time purchases",
    ),
    (
        "checkout_sessions",
        "/v1/checkout/sessions",
        "purchases made through Checkout",
    ),
    ("credit_notes", "/v1/credit_notes", "refunds of invoices"),
    (
        "subscriptions",
        "/v1/subscriptions",
        "subscription permissions",
    ),
    ("events", "/v1/events", "reconcile after missed webhooks"),
    ("charges", "/v1/charges", "refunds and disputes of payments"),
    ("refunds", "/v1/refunds", "refund statuses"),
    ("disputes", "/v1/disputes", "dispute revocations"),
    ("products", "/v1/products", "mapping SKUs to products"),
    ("prices", "/v1/prices", "mapping SKUs to prices"),
];

/// `POST /connections/{id}/verify`: which resources the key can read, and whether it can
/// write PaymentIntents and Refunds. Writes are probed with an empty create: a permitted key
/// gets Stripe's "missing parameter" error, a refused one 403; nothing is created.
pub async fn verify(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    // No body is needed; one that is there must be a JSON object (its fields are ignored), as
    // for the other bodiless POSTs.
    JsonBody(_body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let c = load(&ctx, &caller, &id).await?;
    Ok(Json(verify_for(&ctx, &c).await?))
}

/// The permission report of one connection (the API and the CLI).
pub async fn verify_for(ctx: &ApiContext, c: &ConnectionRow) -> ApiResult<Value> {
    let stripe = ctx.stripe_for(c)?;
    let mut resources = Vec::new();
    let mut reachable = false;
    let mut limit = Map::new();
    limit.insert("limit".into(), json!(1));
    for (name, path, needed_for) in READS {
        let r = stripe
            .request(Method::GET, path, &limit, RequestOptions::default())
            .await;
        let (readable, note) = match &r {
            Ok(_) => (Some(true), None),
            Err(e) if e.status() == Some(403) => {
                (Some(false), Some(format!("missing: disables {needed_for}")))
            }
            Err(e) if e.status() == Some(404) => (
                None,
                Some("this Stripe does not offer the resource".to_string()),
            ),
            Err(e) if e.status() == Some(401) => {
                (Some(false), Some("the key was refused".to_string()))
            }
            Err(e) => (None, Some(format!("could not check: {}", e.message()))),
        };
        reachable |= readable.is_some();
        resources.push(
            json!({"resource": name, "read": readable, "needed_for": needed_for, "note": note}),
        );
    }
    let mut writes = Map::new();
    for (name, path) in [
        ("payment_intents", "/v1/payment_intents"),
        ("refunds", "/v1/refunds"),
    ] {
        let r = stripe
            .request(
                Method::POST,
                path,
                &Map::new(),
                RequestOptions::idempotent(format!("tollgate-verify-{}", tollgate_store::new_id())),
            )
            .await;
        let can = match &r {
            Err(e) if e.status() == Some(400) => Some(true),
            Err(e) if e.status() == Some(403) || e.status() == Some(401) => Some(false),
            Ok(_) => Some(true),
            Err(_) => None,
        };
        writes.insert(name.to_string(), json!(can));
    }
    let payments_ready = writes.get("payment_intents") == Some(&json!(true))
        && writes.get("refunds") == Some(&json!(true));
    Ok(json!({
        "type": "connection-verification",
        "connection_id": c.id,
        "credentials_valid": reachable,
        "read": resources,
        "write": writes,
        "payments_ready": payments_ready,
        "webhook_secret_set": c.webhook_secret_enc.is_some(),
    }))
}
