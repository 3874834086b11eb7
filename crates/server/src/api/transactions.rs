//! Transactions (SPEC §3): create (redirect and direct flows), read, list, capture, void,
//! cancel, sync, events, and the direct flow's session.
//!
//! The handlers parse and render; every change of a transaction goes through the
//! transactions service ([`crate::transactions`]).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use tollgate_domain::{
    Amount, Currency, ErrorCode, Intent, Money, TransactionState, TransactionStatus,
};
use tollgate_store::TransactionRow;
use tollgate_store::transactions::{self as store_tx, ListFilter, TransactionUpdate};

use super::JsonBody;
use super::render::{self, Fresh};
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::parse_rfc3339;
use crate::error::{ApiError, ApiResult, Detail};
use crate::stripe_map;
use axum::routing;
use utoipa_axum::router::OpenApiRouter;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .route("/transactions", routing::post(create).get(list))
        .route("/transactions/{id}", routing::get(get))
        .route("/transactions/{id}/capture", routing::post(capture))
        .route("/transactions/{id}/void", routing::post(void))
        .route("/transactions/{id}/cancel", routing::post(cancel))
        .route("/transactions/{id}/sync", routing::post(sync))
        .route("/transactions/{id}/events", routing::get(events))
        .route("/transactions/{id}/session", routing::post(session))
}

use crate::transactions::{
    apply_observations, cancel_intent, connection_for, connection_of, create_payment_intent,
    end_locally, hash_token, insert_event, load, new_token, request_payment_intent, sync_row,
    token_matches, transaction_id,
};

/// Fields of the seed orchestrator's create schema that Tollgate accepts and ignores (they
/// have no meaning over Stripe); documented in the OpenAPI description.
pub const IGNORED_CREATE_FIELDS: &[&str] = &[
    "buyer",
    "buyer_id",
    "gift_cards",
    "store",
    "three_d_secure_data",
    "three_d_secure",
    "is_subsequent_payment",
    "merchant_initiated",
    "payment_source",
    "airline",
    "cart_items",
    "statement_descriptor",
    "previous_scheme_transaction_id",
    "previous_transaction_link_id",
    "browser_info",
    "shipping_details_id",
    "connection_options",
    "async_capture",
    "anti_fraud_fingerprint",
    "account_funding_transaction",
    "allow_partial_authorization",
    "recipient",
    "installment_count",
    "tax_amount",
    "merchant_tax_id",
    "purchase_order_number",
    "customer_reference_number",
    "amount_includes_tax",
    "supplier_order_number",
    "duty_amount",
    "shipping_amount",
    "is_amount_estimated",
];

const CREATE_FIELDS: &[&str] = &[
    "amount",
    "currency",
    "country",
    "payment_method",
    "external_identifier",
    "intent",
    "metadata",
    "customid",
    "buyer_external_identifier",
    "integration_client",
    "payment_service_id",
    "approval_expires_at",
    "description",
];

pub const RAW_CARD_FIELDS: &[&str] = &[
    "number",
    "security_code",
    "expiration_date",
    "card_number",
    "cvv",
    "cvc",
];

/// A validated create request.
struct CreateInput {
    money: Money,
    country: Option<String>,
    intent: Intent,
    method: String,
    redirect_url: Option<String>,
    integration_client: Option<String>,
    external_identifier: Option<String>,
    metadata: Map<String, Value>,
    customid: Option<String>,
    payment_service_id: Option<String>,
    approval_expires_at: Option<i64>,
}

fn direct_flow(client: Option<&str>) -> bool {
    matches!(client, Some("web" | "ios" | "android"))
}

/// Longest accepted `redirect_url`.
const MAX_REDIRECT_URL: usize = 2048;

/// A `redirect_url` the completion page can send a buyer to: parsed as browsers do (the `url`
/// crate, WHATWG rules), https (http only for localhost, or when configured), no user name or
/// password (`http://localhost:80@evil.com/` names the host `evil.com`), and no spaces or
/// control characters, which a parser would drop or encode silently.
fn check_redirect_url(ctx: &ApiContext, raw: &str) -> Result<(), String> {
    if raw.len() > MAX_REDIRECT_URL {
        return Err(format!("At most {MAX_REDIRECT_URL} characters."));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("Must not contain spaces or control characters (percent-encode them).".into());
    }
    let https_only = "Must be an https:// URL (http://localhost is allowed for development).";
    let url = url::Url::parse(raw).map_err(|_| https_only.to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Must not contain a user name or password.".into());
    }
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if local || ctx.config.allow_http_redirect_urls => Ok(()),
        _ => Err(https_only.into()),
    }
}

fn string_field(body: &Map<String, Value>, key: &str, max: usize) -> ApiResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::field(
            &format!("/{key}"),
            format!("At most {max} characters."),
        )),
        Some(_) => Err(ApiError::field(&format!("/{key}"), "Must be a string.")),
    }
}

fn parse_create(ctx: &ApiContext, body: &Map<String, Value>) -> ApiResult<CreateInput> {
    // Raw card data is refused first, before anything else looks at (or logs) the body.
    if let Some(pm) = body.get("payment_method").and_then(Value::as_object)
        && let Some(k) = RAW_CARD_FIELDS.iter().find(|k| pm.contains_key(**k))
    {
        return Err(ApiError::field(
            &format!("/payment_method/{k}"),
            "Raw card data is not accepted: card details go from the buyer to Stripe (hosted page or Stripe.js), never through Tollgate.",
        ));
    }
    let mut details = Vec::new();
    for k in body.keys() {
        if !CREATE_FIELDS.contains(&k.as_str()) && !IGNORED_CREATE_FIELDS.contains(&k.as_str()) {
            details.push(Detail::body(&format!("/{k}"), "Unknown field."));
        }
    }
    if !details.is_empty() {
        return Err(ApiError::BadRequest {
            message: "Request failed validation: unknown fields.".into(),
            details,
        });
    }
    let amount = match body.get("amount") {
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(_) => {
            return Err(ApiError::field(
                "/amount",
                "Must be an integer number of minor units.",
            ));
        }
        None => return Err(ApiError::field("/amount", "Required.")),
    };
    let amount = Amount::new(amount)
        .map_err(|_| ApiError::field("/amount", "Must be greater than zero."))?;
    if amount.get() > 99_999_999 {
        return Err(ApiError::field("/amount", "Must be at most 99999999."));
    }
    let currency = match body.get("currency") {
        Some(Value::String(c)) => Currency::parse(c).map_err(|_| {
            ApiError::field(
                "/currency",
                format!("'{c}' is not an ISO-4217 currency code."),
            )
        })?,
        Some(_) => return Err(ApiError::field("/currency", "Must be a string.")),
        None => return Err(ApiError::field("/currency", "Required.")),
    };
    let country = string_field(body, "country", 2)?;
    if let Some(c) = &country
        && (c.len() != 2 || !c.chars().all(|x| x.is_ascii_uppercase()))
    {
        return Err(ApiError::field(
            "/country",
            "Must be an ISO-3166 alpha-2 code (e.g. US).",
        ));
    }
    let intent = match body.get("intent").and_then(Value::as_str) {
        None => Intent::Authorize,
        Some("authorize") => Intent::Authorize,
        Some("capture") => Intent::Capture,
        Some(_) => {
            return Err(ApiError::field(
                "/intent",
                "Must be 'authorize' or 'capture'.",
            ));
        }
    };
    let integration_client = string_field(body, "integration_client", 20)?;
    if let Some(c) = &integration_client
        && !["redirect", "web", "ios", "android"].contains(&c.as_str())
    {
        return Err(ApiError::field(
            "/integration_client",
            "Must be one of redirect, web, ios, android.",
        ));
    }
    let direct = direct_flow(integration_client.as_deref());
    let mut method = "stripe".to_string();
    let mut redirect_url = None;
    match body.get("payment_method") {
        None | Some(Value::Null) if direct => {}
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "/payment_method",
                "Required for the redirect flow: {\"method\": \"stripe\", \"redirect_url\": \"https://…\"}.",
            ));
        }
        Some(Value::Object(pm)) => {
            const PM_FIELDS: &[&str] = &[
                "method",
                "redirect_url",
                "country",
                "currency",
                "buyer_id",
                "buyer_external_identifier",
                "external_identifier",
            ];
            for k in pm.keys() {
                if !PM_FIELDS.contains(&k.as_str()) {
                    return Err(ApiError::field(
                        &format!("/payment_method/{k}"),
                        "Unknown or unsupported field.",
                    ));
                }
            }
            method = match pm.get("method") {
                Some(Value::String(m))
                    if !m.is_empty()
                        && m.len() <= 40
                        && m.chars()
                            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-') =>
                {
                    m.clone()
                }
                _ => {
                    return Err(ApiError::field(
                        "/payment_method/method",
                        "Required: 'stripe' or a payment method type (card, klarna, …).",
                    ));
                }
            };
            if let Some(pc) = pm.get("currency").and_then(Value::as_str)
                && !pc.eq_ignore_ascii_case(currency.code())
            {
                return Err(ApiError::field(
                    "/payment_method/currency",
                    "Must equal the transaction's currency.",
                ));
            }
            if let (Some(pc), Some(c)) = (pm.get("country").and_then(Value::as_str), &country)
                && pc != c
            {
                return Err(ApiError::field(
                    "/payment_method/country",
                    "Must equal the transaction's country.",
                ));
            }
            match pm.get("redirect_url") {
                Some(Value::String(u)) => {
                    check_redirect_url(ctx, u)
                        .map_err(|m| ApiError::field("/payment_method/redirect_url", m))?;
                    redirect_url = Some(u.clone());
                }
                None | Some(Value::Null) if direct => {}
                None | Some(Value::Null) => {
                    return Err(ApiError::field(
                        "/payment_method/redirect_url",
                        "Required for the redirect flow.",
                    ));
                }
                Some(_) => {
                    return Err(ApiError::field(
                        "/payment_method/redirect_url",
                        "Must be a string.",
                    ));
                }
            }
        }
        Some(_) => return Err(ApiError::field("/payment_method", "Must be an object.")),
    }
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            if m.len() > 20 {
                return Err(ApiError::field("/metadata", "At most 20 keys."));
            }
            for (k, v) in m {
                if k.is_empty() || k.len() > 40 || k.starts_with("tollgate_") {
                    return Err(ApiError::field(
                        &format!("/metadata/{k}"),
                        "Keys are 1 to 40 characters and may not start with 'tollgate_'.",
                    ));
                }
                match v {
                    Value::String(s) if s.len() <= 500 => {}
                    _ => {
                        return Err(ApiError::field(
                            &format!("/metadata/{k}"),
                            "Values are strings of at most 500 characters.",
                        ));
                    }
                }
            }
            m.clone()
        }
        Some(_) => {
            return Err(ApiError::field(
                "/metadata",
                "Must be an object of strings.",
            ));
        }
    };
    let customid = match string_field(body, "customid", 200)? {
        Some(c) => Some(c),
        None => string_field(body, "buyer_external_identifier", 200)?,
    };
    let approval_expires_at = match body.get("approval_expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let at = parse_rfc3339(s).ok_or_else(|| {
                ApiError::field("/approval_expires_at", "Must be an RFC 3339 timestamp.")
            })?;
            if at <= ctx.now() {
                return Err(ApiError::field(
                    "/approval_expires_at",
                    "Must be in the future.",
                ));
            }
            Some(at)
        }
        Some(_) => {
            return Err(ApiError::field(
                "/approval_expires_at",
                "Must be an RFC 3339 timestamp.",
            ));
        }
    };
    // Validated, then not kept: Tollgate has no use for it (the seed API's field).
    string_field(body, "description", 1000)?;
    Ok(CreateInput {
        money: Money::new(amount, currency),
        country,
        intent,
        method,
        redirect_url,
        integration_client,
        external_identifier: string_field(body, "external_identifier", 200)?,
        metadata,
        customid,
        payment_service_id: string_field(body, "payment_service_id", 100)?,
        approval_expires_at,
    })
}

fn intent_str(i: Intent) -> &'static str {
    match i {
        Intent::Authorize => "authorize",
        Intent::Capture => "capture",
    }
}

/// What the answer that hands out a new token shows: the approval URL (redirect flow) or the
/// session token (direct flow).
fn fresh_token(ctx: &ApiContext, id: &str, direct: bool, token: String) -> Fresh {
    if direct {
        Fresh {
            approval_url: None,
            session_token: Some(token),
        }
    } else {
        Fresh {
            approval_url: Some(format!("{}/pay/{id}?token={token}", ctx.public_url)),
            session_token: None,
        }
    }
}

// ---- handlers -----------------------------------------------------------------------------

pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_secret()?;
    let input = parse_create(&ctx, &body)?;
    let conn = connection_for(
        &ctx,
        &caller.merchant_account_id,
        input.payment_service_id.as_deref(),
    )
    .await?;
    let id = transaction_id(crate::idempotency::request_key(&headers, &caller).as_deref());
    // A keyed retry of a create that hit an outage: finish that transaction.
    if let Some(existing) =
        store_tx::get(ctx.store.reader(), &caller.merchant_account_id, &id, "").await?
    {
        let row = if existing.payment_intent_id.is_none() && existing.status == "processing" {
            create_payment_intent(&ctx, &existing, &conn).await?
        } else {
            existing
        };
        // The first answer (with the approval URL or session token) never reached the client.
        let (row, fresh) = reissue_token(&ctx, &row).await?;
        return Ok((StatusCode::CREATED, Json(render::transaction(&row, &fresh))));
    }
    let now = ctx.now();
    let direct = direct_flow(input.integration_client.as_deref());
    let token = new_token();
    let expires = input
        .approval_expires_at
        .unwrap_or(now + ctx.config.approval_ttl_secs as i64 * 1000);
    let state = TransactionState::new(input.intent, input.money.amount, false);
    let metadata = input.metadata.clone();
    let row = TransactionRow {
        id: id.clone(),
        merchant_account_id: caller.merchant_account_id.clone(),
        connection_id: conn.id.clone(),
        status: TransactionStatus::Processing.as_str().to_string(),
        intent: intent_str(input.intent).to_string(),
        amount: input.money.amount.get(),
        currency: input.money.currency.code().to_string(),
        country: input.country.clone(),
        authorized_amount: 0,
        captured_amount: 0,
        refunded_amount: 0,
        external_identifier: input.external_identifier.clone(),
        metadata: Value::Object(metadata).to_string(),
        customid: input.customid.clone(),
        method: input.method.clone(),
        redirect_url: input.redirect_url.clone(),
        integration_client: input.integration_client.clone(),
        payment_intent_id: None,
        client_secret: None,
        error_code: None,
        raw_response_code: None,
        raw_response_description: None,
        approval_token_hash: (!direct).then(|| hash_token(&token)),
        approval_expires_at: Some(expires),
        session_token_hash: direct.then(|| hash_token(&token)),
        session_expires_at: direct.then_some(now + ctx.config.session_ttl_secs as i64 * 1000),
        disputed: false,
        state: serde_json::to_string(&state).unwrap_or_default(),
        created_at: now,
        updated_at: now,
        authorized_at: None,
        captured_at: None,
        voided_at: None,
        version: 0,
    };
    let created = json!({"amount": row.amount, "currency": row.currency, "intent": row.intent,
                         "flow": if direct { "direct" } else { "redirect" }});
    // The PaymentIntent first, then one write: the row with its PaymentIntent and both events.
    // If Stripe cannot be reached, the row is saved `processing` instead, so the 502/504
    // carries its id and sync (or a keyed retry) finishes it with the same Stripe key. A
    // crash between the two leaves at most a PaymentIntent nobody can approve (no approval URL
    // was handed out), which Stripe expires.
    let pi = match request_payment_intent(&ctx, &row, &conn).await {
        Ok(pi) => pi,
        Err(e @ (ApiError::BadGateway { .. } | ApiError::GatewayTimeout { .. })) => {
            let mut tx = ctx.store.begin().await?;
            store_tx::insert(&mut *tx, &row).await?;
            insert_event(&mut tx, &row, "transaction.created", created, now).await?;
            tollgate_store::commit(tx).await?;
            ctx.metrics
                .transactions_created
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        // Refused by Stripe: nothing is kept, as for any other bad input.
        Err(e) => return Err(e),
    };
    let pi_id = pi["id"].as_str().unwrap_or_default().to_string();
    let mut row = row;
    let mut state = state;
    state.approval_issued = true;
    state.status = TransactionStatus::BuyerApprovalPending;
    row.status = TransactionStatus::BuyerApprovalPending.as_str().to_string();
    row.payment_intent_id = Some(pi_id.clone());
    row.client_secret = pi["client_secret"].as_str().map(str::to_string);
    row.state = serde_json::to_string(&state).unwrap_or_default();
    let mut tx = ctx.store.begin().await?;
    store_tx::insert(&mut *tx, &row).await?;
    insert_event(&mut tx, &row, "transaction.created", created, now).await?;
    insert_event(
        &mut tx,
        &row,
        "transaction.payment_intent_created",
        json!({"payment_intent": pi_id}),
        now,
    )
    .await?;
    tollgate_store::commit(tx).await?;
    ctx.metrics
        .transactions_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A PaymentIntent created together with a server-side confirmation could already be past
    // approval; applying it records that.
    let row = if pi["status"] != "requires_payment_method" {
        apply_observations(&ctx, &row, stripe_map::observations_of_intent(&pi, now)).await?
    } else {
        row
    };
    let fresh = fresh_token(&ctx, &row.id, direct, token);
    Ok((StatusCode::CREATED, Json(render::transaction(&row, &fresh))))
}

pub async fn get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    Ok(Json(render::transaction(&t, &Fresh::default())))
}

/// Query parameters, repeated keys kept (`status=a&status=b`, `status[]=a`, `currency[]=…`).
pub(crate) fn query_multi(raw: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let k = k.trim_end_matches("[]").to_string();
        out.entry(k).or_default().push(v.into_owned());
    }
    out
}

pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    const KNOWN: &[&str] = &[
        "cursor",
        "limit",
        "status",
        "created_at_gte",
        "created_at_lte",
        "updated_at_gte",
        "updated_at_lte",
        "external_identifier",
        "customid",
        "buyer_external_identifier",
        "payment_service_transaction_id",
        "amount_gte",
        "amount_lte",
        "amount_eq",
        "currency",
        "id",
        "country",
        "method",
        "payment_service_id",
        "error_code",
        "has_refunds",
        "disputed",
    ];
    let q = query_multi(uri.query());
    for k in q.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return Err(ApiError::query(
                &format!("/{k}"),
                "Unknown query parameter.",
            ));
        }
    }
    let one = |k: &str| q.get(k).and_then(|v| v.last()).cloned();
    let int = |k: &str| -> ApiResult<Option<i64>> {
        one(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::query(&format!("/{k}"), "Must be an integer."))
            })
            .transpose()
    };
    let time = |k: &str| -> ApiResult<Option<i64>> {
        one(k)
            .map(|v| {
                parse_rfc3339(&v).ok_or_else(|| {
                    ApiError::query(&format!("/{k}"), "Must be an RFC 3339 timestamp.")
                })
            })
            .transpose()
    };
    let limit = int("limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::query("/limit", "Must be between 1 and 100."));
    }
    let statuses = q.get("status").cloned().unwrap_or_default();
    for s in &statuses {
        if s.parse::<TransactionStatus>().is_err() {
            return Err(ApiError::query(
                "/status",
                format!("'{s}' is not a transaction status."),
            ));
        }
    }
    let cursor = match one("cursor") {
        Some(c) if !c.is_empty() => Some(
            super::cursor::decode(&c)
                .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this server made."))?,
        ),
        _ => None,
    };
    let mut amount_gte = int("amount_gte")?;
    let mut amount_lte = int("amount_lte")?;
    if let Some(eq) = int("amount_eq")? {
        amount_gte = Some(eq);
        amount_lte = Some(eq);
    }
    let many = |k: &str| q.get(k).cloned().unwrap_or_default();
    let flag = |k: &str| -> ApiResult<Option<bool>> {
        match one(k).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::query(&format!("/{k}"), "Must be true or false.")),
        }
    };
    let filter = ListFilter {
        merchant_account_id: caller.merchant_account_id.clone(),
        statuses,
        created_gte: time("created_at_gte")?,
        created_lte: time("created_at_lte")?,
        updated_gte: time("updated_at_gte")?,
        updated_lte: time("updated_at_lte")?,
        external_identifier: one("external_identifier"),
        customid: one("customid").or_else(|| one("buyer_external_identifier")),
        payment_service_transaction_id: one("payment_service_transaction_id"),
        amount_gte,
        amount_lte,
        currencies: many("currency")
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        ids: many("id"),
        countries: many("country")
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        methods: many("method"),
        connection_ids: many("payment_service_id"),
        error_codes: many("error_code"),
        has_refunds: flag("has_refunds")?,
        disputed: flag("disputed")?,
        cursor: cursor.clone(),
        limit,
    };
    let rows = store_tx::list(ctx.store.reader(), &filter).await?;
    let (rows, next, previous) = super::paginate(rows, limit, cursor.as_ref(), |t| {
        (t.created_at, t.id.clone())
    });
    let items = rows
        .iter()
        .map(|t| render::transaction(t, &Fresh::default()))
        .collect();
    Ok(Json(render::page(items, limit, next, previous)))
}

pub async fn capture(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    const FIELDS: &[&str] = &[
        "amount",
        "final",
        "reauthorize_if_authorization_expired",
        "airline",
        "cart_items",
        "tracking",
        "external_identifier",
    ];
    super::unknown_fields(&body, FIELDS)?;
    let row = crate::transactions::capture(&ctx, &caller, &id, body.get("amount")).await?;
    Ok(Json(render::transaction(&row, &Fresh::default())))
}

pub async fn void(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(_body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let row = crate::transactions::void(&ctx, &caller, &id).await?;
    Ok(Json(render::transaction(&row, &Fresh::default())))
}

pub async fn cancel(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(_body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    if !matches!(t.status.as_str(), "processing" | "buyer_approval_pending") {
        return Err(ApiError::bad_request(format!(
            "Only a transaction not yet authorized can be canceled; this one is {} (use void or refunds).",
            t.status
        )));
    }
    let row = if t.payment_intent_id.is_some() {
        cancel_intent(&ctx, &t, "requested_by_customer", "cancel").await?
    } else {
        end_locally(
            &ctx,
            &t,
            TransactionStatus::AuthorizationFailed,
            ErrorCode::Canceled,
        )
        .await?
    };
    let outcome = match row.status.as_str() {
        "authorization_failed" | "authorization_voided" => "succeeded",
        "processing" | "buyer_approval_pending" => "pending",
        _ => "failed",
    };
    Ok(Json(json!({
        "type": "transaction-cancel",
        "status": outcome,
        "code": row.error_code,
        "raw_response_code": row.raw_response_code,
        "raw_response_description": row.raw_response_description,
        "transaction": render::transaction(&row, &Fresh::default()),
    })))
}

pub async fn sync(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(_body): JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    let row = sync_row(&ctx, &t).await?;
    // This sync finished a create an outage interrupted: the create's answer, with its approval
    // URL or session token, never reached the client, so hand out a new one.
    if t.payment_intent_id.is_none() && row.payment_intent_id.is_some() {
        let (row, fresh) = reissue_token(&ctx, &row).await?;
        return Ok(Json(render::transaction(&row, &fresh)));
    }
    Ok(Json(render::transaction(&row, &Fresh::default())))
}

pub async fn events(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let t = load(&ctx, &caller, &id).await?;
    let rows = store_tx::events_of(ctx.store.reader(), &t.id).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({"type": "transaction-event", "id": e.id, "name": e.name,
                   "transaction_id": e.transaction_id,
                   "created_at": crate::clock::rfc3339(e.created_at),
                   "context": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null)})
        })
        .collect();
    let n = items.len() as i64;
    Ok(Json(render::page(items, n, None, None)))
}

#[derive(serde::Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// `POST /transactions/{id}/session?token=…` (direct flow, SPEC §3.4): what Stripe.js or the
/// mobile SDKs need. Authorised by the session token only.
pub async fn session(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<Value>> {
    let denied =
        || ApiError::Unauthorized("The session token is not valid for this transaction.".into());
    let t = store_tx::get_any(ctx.store.reader(), &id, "")
        .await?
        .ok_or_else(denied)?;
    let token = q.token.ok_or_else(denied)?;
    let live = t.session_expires_at.is_some_and(|e| e > ctx.now());
    if !token_matches(&token, t.session_token_hash.as_deref()) || !live {
        return Err(denied());
    }
    let conn = connection_of(&ctx, &t).await?;
    let t = if t.payment_intent_id.is_none() {
        sync_row(&ctx, &t).await?
    } else {
        t
    };
    Ok(Json(json!({
        "session_data": {
            "publishableKey": conn.publishable_key,
            "clientSecret": t.client_secret,
            "returnUrl": format!("{}/pay/{}/complete", ctx.public_url, t.id),
        },
        "default_completion_url": format!("{}/pay/{}/complete?token={token}", ctx.public_url, t.id),
        "integration_client": t.integration_client,
    })))
}

/// A new approval URL (redirect flow) or session token (direct flow) for a transaction whose
/// create answer was lost to an outage: only the token's hash was kept, so a new token replaces
/// it. Nothing is issued once the buyer's part is over.
async fn reissue_token(ctx: &ApiContext, t: &TransactionRow) -> ApiResult<(TransactionRow, Fresh)> {
    if !matches!(t.status.as_str(), "processing" | "buyer_approval_pending") {
        return Ok((t.clone(), Fresh::default()));
    }
    let direct = direct_flow(t.integration_client.as_deref());
    let token = new_token();
    let mut tx = ctx.store.begin().await?;
    let current = store_tx::get_any(&mut *tx, &t.id, ctx.store.for_update())
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    let update = TransactionUpdate::TokenIssued {
        approval_token_hash: (!direct).then(|| hash_token(&token)),
        session_token_hash: direct.then(|| hash_token(&token)),
    };
    store_tx::update(&mut *tx, &current.id, current.version, ctx.now(), &update).await?;
    let row = store_tx::get_any(&mut *tx, &current.id, "")
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))?;
    tollgate_store::commit(tx).await?;
    let fresh = fresh_token(ctx, &row.id, direct, token);
    Ok((row, fresh))
}
