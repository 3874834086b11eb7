//! Entitlements API: the catalogue's SKUs (`/v1/skus`), linking (`POST /v1/connect_stripe`),
//! the Glassfy-compatible permission check (`GET /v1/permissions`, public key), subscribers
//! (`/v1/subscribers/{customid}`, their manual grants and permission history) and the account's
//! entitlement settings (`/v1/entitlements/settings`). Permission definitions are
//! [`super::definitions`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tollgate_store::credits as cs;
use tollgate_store::entitlements::{self as es, SettingsRow, SkuRow};
use tollgate_store::{ApiKeyRow, ConnectionRow, connections};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::typed::{Body, from_query};
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::entitlements as ent;
use crate::entitlements::map::{Permission, Permissions};
use crate::error::{ApiError, ApiResult, Detail, ErrorEnvelope};

/// This resource's routes under the Idempotency-Key middleware, and their part of the OpenAPI
/// document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    use utoipa::openapi::{RefOr, Required};
    let mut router = OpenApiRouter::new()
        .routes(routes!(sku_create, sku_list))
        .routes(routes!(sku_get, sku_update, sku_delete))
        .routes(routes!(connect_stripe))
        .routes(routes!(subscriber))
        .routes(routes!(grant_create, grant_list))
        .routes(routes!(grant_revoke))
        .routes(routes!(history))
        .routes(routes!(settings_get, settings_update));
    super::typed::close(
        &mut router,
        &[
            "SkuCreate",
            "SkuUpdate",
            "ConnectStripe",
            "GrantCreate",
            "EntitlementSettingsUpdate",
        ],
    );
    let doc = router.get_openapi_mut();
    // The PATCHes take no body at all too (nothing changes).
    for path in ["/v1/skus/{identifier}", "/v1/entitlements/settings"] {
        let body = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.patch.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(RefOr::T(body)) = body {
            body.required = Some(Required::False);
        }
    }
    router
}

/// The permission check (public keys): outside the Idempotency-Key middleware, with its own
/// auth cache.
pub fn check_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(permissions))
}

// ---- validation helpers -----------------------------------------------------------------

/// `v` if it is a valid identifier, else a 400 naming `pointer`.
fn checked_identifier(v: &str, pointer: &str) -> ApiResult<String> {
    if valid_identifier(v) {
        Ok(v.to_string())
    } else {
        Err(ApiError::field(
            pointer,
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

/// An optional text field: absent or null is `None`; else trimmed, not blank, at most 255
/// characters.
fn opt_text(v: Option<String>, pointer: &str) -> ApiResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(s) if !s.trim().is_empty() && s.chars().count() <= 255 => {
            Ok(Some(s.trim().to_string()))
        }
        Some(_) => Err(ApiError::field(
            pointer,
            "Must be a non-empty string of at most 255 characters.",
        )),
    }
}

/// A field that, when present, is read as `T` (`Option<T>` with `#[serde(default)]`): with
/// `T = Option<U>`, null is `Some(None)` (absent and null differ); with any other `T`, null is
/// refused.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads a query string as `T`, refusing a parameter not in `known` (a 400 naming it): the
/// permission check and the history name every parameter they do not know.
fn strict_query<T: serde::de::DeserializeOwned>(raw: &str, known: &[&str]) -> ApiResult<T> {
    for (k, _) in form_urlencoded::parse(raw.as_bytes()) {
        let k = k.strip_suffix("[]").unwrap_or(&k);
        if !known.contains(&k) {
            return Err(ApiError::query(&format!("/{k}"), "Unknown parameter."));
        }
    }
    from_query(raw)
}

// ---- SKUs ------------------------------------------------------------------------------------

pub const SKU_KINDS: &[&str] = &["subscription", "one_time"];

/// What a SKU sells: a subscription or a one-time purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkuKind {
    Subscription,
    OneTime,
}

impl SkuKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SkuKind::Subscription => "subscription",
            SkuKind::OneTime => "one_time",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "subscription" => Some(SkuKind::Subscription),
            "one_time" => Some(SkuKind::OneTime),
            _ => None,
        }
    }
}

/// Where a SKU is sold: Stripe (the only store).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkuStore {
    Stripe,
}

/// A Stripe product made sellable.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sku)]
pub struct SkuOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^sku$", example = "sku")]
    pub object: &'static str,
    #[schema(example = "web_monthly")]
    pub identifier: String,
    #[schema(value_type = SkuStore)]
    pub store: String,
    /// A Stripe product id (`prod_…`).
    #[schema(example = "prod_Example")]
    pub product_id: String,
    #[schema(value_type = SkuKind)]
    pub kind: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

pub fn render_sku(s: &SkuRow) -> SkuOut {
    SkuOut {
        object: "sku",
        identifier: s.identifier.clone(),
        store: s.store.clone(),
        product_id: s.product_id.clone(),
        kind: s.kind.clone(),
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
    }
}

/// The merchant account's SKUs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Skus)]
pub struct SkuList {
    pub items: Vec<SkuOut>,
}

/// `POST /v1/skus`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"identifier": "web_monthly", "store": "stripe", "product_id": "prod_Example", "kind": "subscription"}))]
pub struct SkuCreate {
    /// Unique per merchant account: 1 to 100 letters, digits, `.`, `_` or `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub identifier: String,
    /// `stripe` (the default).
    #[schema(value_type = Option<SkuStore>)]
    pub store: Option<String>,
    /// A Stripe product id (`prod_…`).
    #[schema(
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*prod_[A-Za-z0-9._-]{0,95}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        max_length = 255
    )]
    pub product_id: String,
    #[schema(value_type = SkuKind)]
    pub kind: String,
}

/// `PATCH /v1/skus/{identifier}`: the fields to change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"product_id": "prod_Other"}))]
pub struct SkuUpdate {
    /// `stripe`.
    #[schema(value_type = Option<SkuStore>)]
    pub store: Option<String>,
    /// A Stripe product id (`prod_…`).
    #[schema(
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*prod_[A-Za-z0-9._-]{0,95}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        max_length = 255
    )]
    pub product_id: Option<String>,
    #[schema(value_type = Option<SkuKind>)]
    pub kind: Option<String>,
}

/// A valid change of a SKU's fields (each `None`: unchanged).
struct SkuFields {
    store: Option<&'static str>,
    product_id: Option<String>,
    kind: Option<SkuKind>,
}

impl TryFrom<SkuUpdate> for SkuFields {
    type Error = ApiError;

    fn try_from(b: SkuUpdate) -> ApiResult<Self> {
        let store = match opt_text(b.store, "/store")?.as_deref() {
            None => None,
            Some("stripe") => Some("stripe"),
            Some(_) => return Err(ApiError::field("/store", "Only 'stripe' SKUs exist.")),
        };
        let product_id = match opt_text(b.product_id, "/product_id")? {
            Some(p) if p.starts_with("prod_") && valid_identifier(&p) => Some(p),
            Some(_) => {
                return Err(ApiError::field(
                    "/product_id",
                    "Must be a Stripe product id (prod_…).",
                ));
            }
            None => None,
        };
        let kind = match opt_text(b.kind, "/kind")? {
            None => None,
            Some(k) => Some(SkuKind::parse(&k).ok_or_else(|| {
                ApiError::field("/kind", "Must be 'subscription' or 'one_time'.")
            })?),
        };
        Ok(SkuFields {
            store,
            product_id,
            kind,
        })
    }
}

impl SkuFields {
    fn apply(self, s: &mut SkuRow) {
        if let Some(store) = self.store {
            s.store = store.into();
        }
        if let Some(p) = self.product_id {
            s.product_id = p;
        }
        if let Some(k) = self.kind {
            s.kind = k.as_str().into();
        }
    }
}

/// A valid new SKU: its identifier and fields.
struct NewSku {
    identifier: String,
    product_id: String,
    kind: SkuKind,
}

impl TryFrom<SkuCreate> for NewSku {
    type Error = ApiError;

    fn try_from(b: SkuCreate) -> ApiResult<Self> {
        let identifier = checked_identifier(&b.identifier, "/identifier")?;
        let fields = SkuFields::try_from(SkuUpdate {
            store: b.store,
            product_id: Some(b.product_id),
            kind: Some(b.kind),
        })?;
        match (fields.product_id, fields.kind) {
            (Some(product_id), Some(kind)) => Ok(NewSku {
                identifier,
                product_id,
                kind,
            }),
            (None, _) => Err(ApiError::field("/product_id", "Required: prod_…")),
            (_, None) => Err(ApiError::field(
                "/kind",
                "Required: 'subscription' or 'one_time'.",
            )),
        }
    }
}

/// `identifier` unique per merchant account (409 `duplicate_record` names it); `product_id`
/// must be a `prod_…` id; `kind` `subscription` or `one_time`; `store` is `stripe` (the
/// default).
#[utoipa::path(
    post,
    path = "/v1/skus",
    operation_id = "create_sku",
    tag = "entitlements",
    summary = "Create a SKU",
    request_body = SkuCreate,
    responses(
        (status = 201, description = "The SKU.", body = SkuOut),
        (status = 400, description = "A field is missing or invalid (named in `details`).", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: a SKU with this identifier exists.", body = ErrorEnvelope),
    ),
)]
pub async fn sku_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<SkuCreate>,
) -> ApiResult<(StatusCode, Json<SkuOut>)> {
    caller.require_secret()?;
    let NewSku {
        identifier,
        product_id,
        kind,
    } = body.try_into()?;
    let now = ctx.now();
    let row = SkuRow {
        merchant_account_id: caller.merchant_account_id.clone(),
        identifier,
        store: "stripe".into(),
        product_id,
        kind: kind.as_str().into(),
        created_at: now,
        updated_at: now,
    };
    match es::insert_sku(ctx.store.writer(), &row).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "identifier: a SKU '{}' already exists.",
                row.identifier
            )));
        }
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::CREATED, Json(render_sku(&row))))
}

#[utoipa::path(
    get,
    path = "/v1/skus",
    operation_id = "list_skus",
    tag = "entitlements",
    summary = "List SKUs",
    responses((status = 200, description = "The merchant account's SKUs.", body = SkuList)),
)]
pub async fn sku_list(State(ctx): State<ApiContext>, caller: Caller) -> ApiResult<Json<SkuList>> {
    caller.require_secret()?;
    let rows = es::list_skus(ctx.store.reader(), &caller.merchant_account_id).await?;
    Ok(Json(SkuList {
        items: rows.iter().map(render_sku).collect(),
    }))
}

async fn load_sku(ctx: &ApiContext, caller: &Caller, id: &str) -> ApiResult<SkuRow> {
    es::get_sku(ctx.store.reader(), &caller.merchant_account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("SKU"))
}

#[utoipa::path(
    get,
    path = "/v1/skus/{identifier}",
    operation_id = "get_sku",
    tag = "entitlements",
    summary = "Get a SKU",
    params(("identifier" = String, Path, description = "The SKU's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    responses(
        (status = 200, description = "The SKU.", body = SkuOut),
        (status = 404, description = "No SKU with this identifier.", body = ErrorEnvelope),
    ),
)]
pub async fn sku_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SkuOut>> {
    caller.require_secret()?;
    Ok(Json(render_sku(&load_sku(&ctx, &caller, &id).await?)))
}

/// Changes `product_id`, `kind` or `store`; every customer is re-evaluated.
#[utoipa::path(
    patch,
    path = "/v1/skus/{identifier}",
    operation_id = "update_sku",
    tag = "entitlements",
    summary = "Update a SKU",
    params(("identifier" = String, Path, description = "The SKU's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    request_body(content = SkuUpdate, description = "The fields to change; none (or no body) changes nothing.", content_type = "application/json"),
    responses(
        (status = 200, description = "The SKU.", body = SkuOut),
        (status = 400, description = "A field is invalid (named in `details`).", body = ErrorEnvelope),
        (status = 404, description = "No SKU with this identifier.", body = ErrorEnvelope),
    ),
)]
pub async fn sku_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<SkuUpdate>,
) -> ApiResult<Json<SkuOut>> {
    caller.require_secret()?;
    let mut row = load_sku(&ctx, &caller, &id).await?;
    SkuFields::try_from(body)?.apply(&mut row);
    row.updated_at = ctx.now();
    es::update_sku(ctx.store.writer(), &row).await?;
    ent::reevaluate_account(&ctx, &caller.merchant_account_id, &ent::Cause::Catalogue).await?;
    Ok(Json(render_sku(&row)))
}

/// Only a SKU no permission uses (else 409 naming them).
#[utoipa::path(
    delete,
    path = "/v1/skus/{identifier}",
    operation_id = "delete_sku",
    tag = "entitlements",
    summary = "Delete a SKU",
    params(("identifier" = String, Path, description = "The SKU's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No SKU with this identifier.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: permissions use the SKU (named in the message).", body = ErrorEnvelope),
    ),
)]
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

pub(super) fn customid_ok(c: &str) -> bool {
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

/// `POST /v1/connect_stripe`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customid": "user-7", "customerid": "cus_Example"}))]
pub struct ConnectStripe {
    /// The business's own id of its user: 1 to 255 characters, no control characters.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,255}$")]
    pub customid: String,
    /// A Stripe customer id (`cus_…`).
    #[schema(pattern = "^cus_[A-Za-z0-9._-]{0,96}$")]
    pub customerid: String,
    /// Move a customer linked to another customid (default false).
    pub force: Option<bool>,
    /// The connection the customer is on; default: the account's default connection.
    #[schema(
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
        max_length = 255
    )]
    pub connection_id: Option<String>,
}

/// A valid link request.
struct NewLink {
    customid: String,
    customerid: String,
    force: bool,
    connection_id: Option<String>,
}

impl TryFrom<ConnectStripe> for NewLink {
    type Error = ApiError;

    fn try_from(b: ConnectStripe) -> ApiResult<Self> {
        if !customid_ok(&b.customid) {
            return Err(ApiError::field(
                "/customid",
                "Required: a string of 1 to 255 characters.",
            ));
        }
        if !(b.customerid.starts_with("cus_") && valid_identifier(&b.customerid)) {
            return Err(ApiError::field(
                "/customerid",
                "Required: a Stripe customer id (cus_…).",
            ));
        }
        Ok(NewLink {
            customid: b.customid,
            customerid: b.customerid,
            force: b.force.unwrap_or(false),
            connection_id: opt_text(b.connection_id, "/connection_id")?,
        })
    }
}

/// A customer's permissions rendered at one moment: a JSON array of [`Permission`], each
/// written straight from its row (metered ones with their balance).
#[derive(Debug, Clone)]
pub struct PermissionList {
    pub rows: ent::runtime::Rows,
    pub now_ms: i64,
}

impl Serialize for PermissionList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(Permission::all(&self.rows, self.now_ms))
    }
}

/// A customer's permission rows and balances, read now from the database.
async fn customer_rows(
    db: &mut tollgate_store::Conn,
    merchant: &str,
    customid: &str,
) -> ApiResult<ent::runtime::Rows> {
    let permissions = es::permissions_of(&mut *db, merchant, customid).await?;
    let balances = tollgate_store::credits::balances_of(&mut *db, merchant, customid).await?;
    Ok(Arc::new(ent::runtime::CustomerRows {
        permissions,
        balances,
    }))
}

/// What `POST /v1/connect_stripe` answers: the link and the customid's permissions.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CustomerLink)]
pub struct CustomerLink {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^customer-link$", example = "customer-link")]
    pub object: &'static str,
    #[schema(example = "user-7")]
    pub customid: String,
    #[schema(example = "cus_Example")]
    pub customerid: String,
    pub connection_id: String,
    /// The customid the customer was linked to before (with `force`); null when none.
    #[schema(required = true)]
    pub moved_from: Option<String>,
    #[schema(value_type = Vec<Permission>)]
    pub permissions: PermissionList,
}

/// Checks the customer at Stripe (404 when unknown), links it (409 when it belongs to another
/// customid, unless `force`), reads its subscriptions, invoices, checkout sessions, payment
/// intents, charges and credit notes so earlier purchases count, and answers the customid's
/// permissions.
#[utoipa::path(
    post,
    path = "/v1/connect_stripe",
    operation_id = "connect_stripe",
    tag = "entitlements",
    summary = "Link a Stripe customer to a customid",
    request_body = ConnectStripe,
    responses(
        (status = 200, description = "The link and the customid's permissions.", body = CustomerLink),
        (status = 400, description = "A field is missing or invalid (named in `details`), or the account has no Stripe connection.", body = ErrorEnvelope),
        (status = 404, description = "Stripe does not know the customer.", body = ErrorEnvelope),
        (status = 409, description = "The customer is linked to another customid (send `force` to move it).", body = ErrorEnvelope),
        (status = 502, description = "Stripe answered with an error.", body = ErrorEnvelope),
        (status = 504, description = "Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn connect_stripe(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<ConnectStripe>,
) -> ApiResult<Json<CustomerLink>> {
    caller.require_secret()?;
    let link = NewLink::try_from(body)?;
    let conn = connection_of(
        &ctx,
        &caller.merchant_account_id,
        link.connection_id.as_deref(),
        "/connection_id",
    )
    .await?;
    let outcome =
        ent::link_customer(&ctx, &conn, &link.customid, &link.customerid, link.force).await?;
    let now_ms = ctx.now();
    let mut db = ctx.store.hold_reader().await?;
    let rows = customer_rows(&mut db, &caller.merchant_account_id, &link.customid).await?;
    drop(db);
    Ok(Json(CustomerLink {
        object: "customer-link",
        customid: link.customid,
        customerid: link.customerid,
        connection_id: conn.id,
        moved_from: outcome.moved_from,
        permissions: PermissionList { rows, now_ms },
    }))
}

// ---- the permission check (public key) -------------------------------------------------------

/// The permission check's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PermissionsQuery {
    /// The business's own id of its user: 1 to 255 characters, no control characters.
    #[param(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$",
        example = "user-7"
    )]
    pub customid: String,
    /// A moment (RFC 3339): answer as the check did then (secret keys only).
    #[serde(default, deserialize_with = "present")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub at: Option<String>,
}

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

/// The `X-Customer-Token` a customid's check needs when the account requires one: hex
/// HMAC-SHA256 of the customid under the account's secret.
pub fn customer_token(secret: &str, customid: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(ring::hmac::sign(&key, customid.as_bytes()).as_ref())
}

/// The apps' check, with a **public** key (`tg_pk_…`; secret keys work too), compatible with
/// Glassfy's SDKs. Served from the read model. Rate-limited per key and client address (429
/// with `Retry-After`). When the account requires it, `X-Customer-Token` (hex HMAC-SHA256 of
/// the customid under the account's secret) must match, else 401. A permission never bought is
/// absent. The `ETag` is the customer's state version (the `version` of
/// `customer.state_changed`; `"5"`, or `"5.1"` once one of its permissions has lapsed by the
/// clock since); `If-None-Match` with it answers 304 without a body. With `at` (an RFC 3339
/// moment; secret keys only, else 403) the answer is what the check answered at that moment,
/// from the customer's history (no `ETag`).
#[utoipa::path(
    get,
    path = "/v1/permissions",
    operation_id = "check_permissions",
    tag = "entitlements",
    summary = "Check a user's permissions (public key)",
    params(
        PermissionsQuery,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` this check answered before: 304 while it is still current."),
        ("X-Customer-Token" = Option<String>, Header, description = "Hex HMAC-SHA256 of the customid under the account's customer-token secret; required when the account requires it."),
    ),
    responses(
        (status = 200, description = "The permissions.", body = Permissions,
            headers(("ETag" = String, description = "The customer's state version (absent with `at`)."))),
        (status = 304, description = "`If-None-Match` named the current `ETag`: nothing changed.",
            headers(("ETag" = String, description = "The customer's state version."))),
        (status = 400, description = "A query parameter is missing or invalid (named in `details`).", body = ErrorEnvelope),
        (status = 401, description = "No valid key, or the account requires an `X-Customer-Token` and this one does not match.", body = ErrorEnvelope),
        (status = 403, description = "`at` with a public key.", body = ErrorEnvelope),
        (status = 429, description = "Too many checks from this key and address.", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn permissions(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match check(&ctx, addr, &headers, query.as_deref().unwrap_or("")).await {
        Ok(Checked { body, etag: None }) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Checked {
            body,
            etag: Some(etag),
        }) => {
            let tag = format!("\"{etag}\"");
            if if_none_match(&headers, &tag) {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
            }
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (header::ETAG, tag),
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
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// Whether `If-None-Match` names `tag` (or `*`); weak tags compare as strong ones.
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
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

/// The ETag of an answer: the customer's state version, the number of its permissions that
/// have lapsed by the clock since (a lapse changes the answer without a new version) and, for a
/// customer with balances of metered permissions, a digest of their figures (a consumption
/// changes the answer without a new version).
pub(crate) fn etag_of(rows: &ent::runtime::CustomerRows, now_ms: i64) -> String {
    let permissions = &rows.permissions;
    let version = permissions.iter().map(|r| r.version).max().unwrap_or(0);
    let lapsed = permissions
        .iter()
        .filter(|r| r.is_valid && r.valid_until.is_some_and(|v| now_ms >= v))
        .count();
    let mut tag = if lapsed == 0 {
        version.to_string()
    } else {
        format!("{version}.{lapsed}")
    };
    if let Some(b) = ent::map::balances_tag(&rows.balances) {
        tag.push('-');
        tag.push_str(&b);
    }
    tag
}

/// The check's answer as JSON text.
fn answer(customid: &str, rows: &ent::runtime::CustomerRows, now_ms: i64) -> String {
    let out = Permissions {
        customid,
        permissions: Permission::all(rows, now_ms),
    };
    // Strings, integers and booleans only: serializing cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

async fn check(
    ctx: &ApiContext,
    addr: SocketAddr,
    headers: &HeaderMap,
    query: &str,
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
    // Read after the key and the rate limit, as before: a bad query costs a check too.
    let q: PermissionsQuery = strict_query(query, &["customid", "at"]).map_err(|e| (e, None))?;
    let customid = q.customid.as_str();
    if !customid_ok(customid) {
        return Err((
            ApiError::query("/customid", "Required: 1 to 255 characters."),
            None,
        ));
    }
    if let Some(at) = q.at.as_deref() {
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
    let rows = ent::runtime::read(ctx, &merchant, customid)
        .await
        .map_err(|e| (e, None))?;
    let now = ctx.now();
    Ok(Checked {
        body: answer(customid, &rows, now),
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
    let rows = ent::runtime::CustomerRows {
        permissions: entries
            .iter()
            .filter(|h| !h.removed)
            .map(|h| h.permission())
            .collect(),
        balances: Vec::new(),
    };
    Ok(answer(customid, &rows, at_ms))
}

// ---- subscribers -----------------------------------------------------------------------------

/// The path of a customer's resources.
fn customid_of_path(customid: &str) -> ApiResult<()> {
    if customid_ok(customid) {
        Ok(())
    } else {
        Err(ApiError::path("/customid", "Must be 1 to 255 characters."))
    }
}

/// A Stripe customer linked to a customid.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LinkedStripeCustomer)]
pub struct LinkedCustomer {
    /// The Stripe customer id (`cus_…`).
    #[schema(example = "cus_Example")]
    pub id: String,
    pub connection_id: String,
    /// How it was linked: `api` (`POST /v1/connect_stripe`) or `metadata` (the customid in
    /// its Stripe metadata).
    #[schema(example = "api")]
    pub linked_by: String,
    /// The Stripe test clock the customer is on; null when none.
    #[schema(required = true)]
    pub test_clock: Option<String>,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub linked_at: String,
}

/// One purchase of a subscriber (a Stripe object, or a manual grant) as it is evaluated now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubscriberPurchase)]
pub struct Purchase {
    /// The Stripe object that is the purchase (`sub_…`, `cs_…`, `in_…`, `pi_…`), or a manual
    /// grant's id.
    pub id: String,
    /// Its kind (`subscription`, `checkout.session`, `invoice`, `payment_intent`, …;
    /// `unknown` for a manual grant).
    #[schema(value_type = String, example = "subscription")]
    pub object: &'static str,
    /// The Stripe products it bought.
    pub products: std::collections::BTreeSet<String>,
    /// The SKU named in its metadata; null when none.
    #[schema(required = true)]
    pub sku: Option<String>,
    pub is_valid: bool,
    /// The permission code this purchase gives (as `entitlement` of a permission).
    pub entitlement: i32,
    /// Epoch seconds of the expiry; null when none.
    #[schema(required = true)]
    pub expires_date: Option<i64>,
    /// The expiry in RFC 3339 (whole seconds); null when none.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub istrial: bool,
}

/// A subscriber: its linked Stripe customers, permissions, purchases and grants.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Subscriber)]
pub struct SubscriberOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^subscriber$", example = "subscriber")]
    pub object: &'static str,
    #[schema(example = "user-7")]
    pub customid: String,
    pub stripe_customers: Vec<LinkedCustomer>,
    #[schema(value_type = Vec<Permission>)]
    pub permissions: PermissionList,
    pub purchases: Vec<Purchase>,
    pub grants: Vec<GrantOut>,
    /// The moment of the evaluation (a test clock's time when the customer is on one).
    #[schema(format = DateTime)]
    pub evaluated_at: String,
    /// A link for the buyer's browser: opening it creates a fresh Stripe customer portal session
    /// and redirects to it. Works for a day without an API key (the sealed token in it is the
    /// credential); null when no Stripe customer is linked.
    #[schema(
        required = true,
        example = "https://tollgate.example.com/manage?token=…"
    )]
    pub management_url: Option<String>,
    /// When a renewal payment failed (a subscription went past due or unpaid), RFC 3339; null
    /// when nothing is owed.
    #[schema(format = DateTime, required = true)]
    pub billing_issue_detected_at: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/subscribers/{customid}",
    operation_id = "get_subscriber",
    tag = "entitlements",
    summary = "A subscriber: links, permissions, purchases",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$")),
    responses(
        (status = 200, description = "The subscriber.", body = SubscriberOut),
        (status = 400, description = "The customid is not valid text.", body = ErrorEnvelope),
        (status = 404, description = "Nothing is known about this customid.", body = ErrorEnvelope),
    ),
)]
pub async fn subscriber(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
) -> ApiResult<Json<SubscriberOut>> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    let mut conn = ctx.store.hold_reader().await?;
    let purchases = ent::load_purchases(&mut conn, merchant, &customid).await?;
    let perms = customer_rows(&mut conn, merchant, &customid).await?;
    let grant_rows = es::grants_of(&mut *conn, merchant, &customid).await?;
    let grants_out = render_grants(&mut conn, merchant, &customid, &grant_rows).await?;
    drop(conn);
    if purchases.links.is_empty()
        && purchases.objects.is_empty()
        && perms.permissions.is_empty()
        && perms.balances.is_empty()
        && grant_rows.is_empty()
    {
        return Err(ApiError::not_found("subscriber"));
    }
    let settings = es::get_settings(ctx.store.reader(), merchant).await?;
    let now_ms = ctx.now();
    let now = purchases.frozen_time.unwrap_or(now_ms / 1000);
    let grants =
        tollgate_domain::entitlements::grants(&purchases.ledger, &ent::policy(&settings), now);
    let stripe_customers = purchases
        .links
        .iter()
        .map(|l| LinkedCustomer {
            id: l.stripe_customer_id.clone(),
            connection_id: l.connection_id.clone(),
            linked_by: l.linked_by.clone(),
            test_clock: l.test_clock.clone(),
            linked_at: rfc3339(l.created_at),
        })
        .collect();
    let history = grants
        .into_iter()
        .map(|g| {
            let object = purchases
                .ledger
                .records()
                .find(|r| r.id() == g.source)
                .map(|r| r.kind())
                .unwrap_or("unknown");
            Purchase {
                id: g.source,
                object,
                products: g.products,
                sku: g.sku,
                is_valid: g.held,
                entitlement: g.code,
                expires_date: g.expires,
                expires_at: g.expires.map(ent::rfc3339_secs),
                istrial: g.trial,
            }
        })
        .collect();
    let management_url = (!purchases.links.is_empty())
        .then(|| super::portal::management_url(&ctx, merchant, &customid, now_ms / 1000));
    Ok(Json(SubscriberOut {
        object: "subscriber",
        customid,
        stripe_customers,
        permissions: PermissionList {
            rows: perms,
            now_ms,
        },
        purchases: history,
        grants: grants_out,
        evaluated_at: ent::rfc3339_secs(now),
        management_url,
        billing_issue_detected_at: super::portal::billing_issue_detected_at(&purchases.ledger),
    }))
}

// ---- settings --------------------------------------------------------------------------------

/// When a dispute revokes a permission.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeOnDispute {
    /// When the dispute is lost (the default).
    Lost,
    /// While a dispute is open (restored if won).
    Opened,
}

/// The merchant account's entitlement settings.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EntitlementSettings)]
pub struct EntitlementSettingsOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^entitlement-settings$", example = "entitlement-settings")]
    pub object: &'static str,
    pub merchant_account_id: String,
    /// Days of grace for a `past_due` subscription; null: while Stripe retries.
    #[schema(required = true, example = 3)]
    pub grace_days: Option<i64>,
    /// Whether a partial refund revokes the purchase.
    pub revoke_on_partial_refund: bool,
    /// Seconds a subscription stays held past its period end while its renewal is on its way.
    pub renewal_leeway_secs: i64,
    /// Whether the check needs an `X-Customer-Token`.
    pub require_customer_token: bool,
    /// Whether a customer-token secret is set (the secret itself is never shown).
    pub has_customer_token_secret: bool,
    #[schema(value_type = RevokeOnDispute)]
    pub revoke_on_dispute: String,
    /// Whether an early fraud warning revokes the purchase.
    pub revoke_on_fraud_warning: bool,
}

fn render_settings(s: &SettingsRow) -> EntitlementSettingsOut {
    EntitlementSettingsOut {
        object: "entitlement-settings",
        merchant_account_id: s.merchant_account_id.clone(),
        grace_days: s.grace_days,
        revoke_on_partial_refund: s.revoke_on_partial_refund,
        renewal_leeway_secs: s.renewal_leeway_secs,
        require_customer_token: s.require_customer_token,
        has_customer_token_secret: s.customer_token_secret.is_some(),
        revoke_on_dispute: s.revoke_on_dispute.clone(),
        revoke_on_fraud_warning: s.revoke_on_fraud_warning,
    }
}

#[utoipa::path(
    get,
    path = "/v1/entitlements/settings",
    operation_id = "get_entitlement_settings",
    tag = "entitlements",
    summary = "Entitlement settings",
    responses((status = 200, description = "The merchant account's entitlement settings.", body = EntitlementSettingsOut)),
)]
pub async fn settings_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<EntitlementSettingsOut>> {
    caller.require_secret()?;
    let s = es::get_settings(ctx.store.reader(), &caller.merchant_account_id).await?;
    Ok(Json(render_settings(&s)))
}

/// `PATCH /v1/entitlements/settings`: the settings to change (absent: unchanged; null:
/// unchanged, except `grace_days`, where null means "while Stripe retries").
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"grace_days": 3}))]
pub struct EntitlementSettingsUpdate {
    /// Days of grace for a `past_due` subscription (0 to 365); null: while Stripe retries.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 365)]
    pub grace_days: Option<Option<i64>>,
    /// Whether a partial refund revokes the purchase.
    pub revoke_on_partial_refund: Option<bool>,
    /// Seconds (0 to 604800) a subscription stays held past its period end while its renewal
    /// is on its way.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, minimum = 0, maximum = 604_800)]
    pub renewal_leeway_secs: Option<i64>,
    /// True needs a `customer_token_secret`, set before or in the same request.
    pub require_customer_token: Option<bool>,
    /// At least 16 characters (without surrounding white space).
    #[schema(
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
        min_length = 16,
        max_length = 255
    )]
    pub customer_token_secret: Option<String>,
    /// With `customid_metadata_key`: the connection whose metadata key it is.
    #[schema(
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
        max_length = 255
    )]
    pub connection_id: Option<String>,
    /// With `connection_id`: the Stripe metadata key holding the customid (1 to 40 letters,
    /// digits, '.', '_' or '-').
    #[schema(
        pattern = r"^[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9._-]{1,40}[\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        max_length = 255
    )]
    pub customid_metadata_key: Option<String>,
    /// `lost` (the default): revoked when a dispute is lost; `opened`: revoked while a
    /// dispute is open, restored if won.
    #[schema(value_type = Option<RevokeOnDispute>)]
    pub revoke_on_dispute: Option<String>,
    /// Whether an early fraud warning revokes the purchase.
    pub revoke_on_fraud_warning: Option<bool>,
}

/// A valid settings change (each `None`: unchanged); the checks that need the stored
/// settings or connections are the handler's.
struct SettingsChange {
    grace_days: Option<Option<i64>>,
    revoke_on_partial_refund: Option<bool>,
    revoke_on_dispute: Option<RevokeOnDispute>,
    revoke_on_fraud_warning: Option<bool>,
    renewal_leeway_secs: Option<i64>,
    customer_token_secret: Option<String>,
    require_customer_token: Option<bool>,
    /// A connection and its customid metadata key.
    metadata_key: Option<(String, String)>,
}

fn in_range(n: Option<i64>, pointer: &str, min: i64, max: i64) -> ApiResult<Option<i64>> {
    match n {
        Some(n) if !(min..=max).contains(&n) => Err(ApiError::field(
            pointer,
            format!("Must be an integer from {min} to {max}."),
        )),
        n => Ok(n),
    }
}

impl TryFrom<EntitlementSettingsUpdate> for SettingsChange {
    type Error = ApiError;

    fn try_from(b: EntitlementSettingsUpdate) -> ApiResult<Self> {
        let grace_days = match b.grace_days {
            Some(n) => Some(in_range(n, "/grace_days", 0, 365)?),
            None => None,
        };
        let revoke_on_dispute =
            match opt_text(b.revoke_on_dispute, "/revoke_on_dispute")?.as_deref() {
                None => None,
                Some("opened") => Some(RevokeOnDispute::Opened),
                Some("lost") => Some(RevokeOnDispute::Lost),
                Some(_) => {
                    return Err(ApiError::field(
                        "/revoke_on_dispute",
                        "Must be 'opened' or 'lost'.",
                    ));
                }
            };
        let renewal_leeway_secs =
            in_range(b.renewal_leeway_secs, "/renewal_leeway_secs", 0, 7 * 86_400)?;
        let customer_token_secret =
            match opt_text(b.customer_token_secret, "/customer_token_secret")? {
                Some(secret) if secret.chars().count() < 16 => {
                    return Err(ApiError::field(
                        "/customer_token_secret",
                        "Use at least 16 characters.",
                    ));
                }
                s => s,
            };
        let metadata_key = match (
            opt_text(b.connection_id, "/connection_id")?,
            opt_text(b.customid_metadata_key, "/customid_metadata_key")?,
        ) {
            (Some(cid), Some(key)) => Some((cid, key)),
            (None, None) => None,
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
        };
        Ok(SettingsChange {
            grace_days,
            revoke_on_partial_refund: b.revoke_on_partial_refund,
            revoke_on_dispute,
            revoke_on_fraud_warning: b.revoke_on_fraud_warning,
            renewal_leeway_secs,
            customer_token_secret,
            require_customer_token: b.require_customer_token,
            metadata_key,
        })
    }
}

/// Grace for `past_due` (`grace_days`; null: while Stripe retries), the partial-refund
/// policy, the dispute policy (`revoke_on_dispute`: `lost`, the default, or `opened`: revoked
/// while a dispute is open, restored if won), whether an early fraud warning revokes
/// (`revoke_on_fraud_warning`), the renewal leeway, the customer-token requirement and
/// secret, and a connection's `customid` metadata key. Every customer is re-evaluated.
#[utoipa::path(
    patch,
    path = "/v1/entitlements/settings",
    operation_id = "update_entitlement_settings",
    tag = "entitlements",
    summary = "Change entitlement settings",
    request_body(content = EntitlementSettingsUpdate, description = "The settings to change; none (or no body) changes nothing.", content_type = "application/json"),
    responses(
        (status = 200, description = "The settings.", body = EntitlementSettingsOut),
        (status = 400, description = "A field is invalid (named in `details`), `require_customer_token` without a secret, or an unknown connection.", body = ErrorEnvelope),
    ),
)]
pub async fn settings_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<EntitlementSettingsUpdate>,
) -> ApiResult<Json<EntitlementSettingsOut>> {
    caller.require_secret()?;
    let change = SettingsChange::try_from(body)?;
    let merchant = caller.merchant_account_id.as_str();
    let mut s = es::get_settings(ctx.store.reader(), merchant).await?;
    if let Some(g) = change.grace_days {
        s.grace_days = g;
    }
    if let Some(b) = change.revoke_on_partial_refund {
        s.revoke_on_partial_refund = b;
    }
    if let Some(d) = change.revoke_on_dispute {
        s.revoke_on_dispute = match d {
            RevokeOnDispute::Lost => "lost",
            RevokeOnDispute::Opened => "opened",
        }
        .into();
    }
    if let Some(b) = change.revoke_on_fraud_warning {
        s.revoke_on_fraud_warning = b;
    }
    if let Some(n) = change.renewal_leeway_secs {
        s.renewal_leeway_secs = n;
    }
    if let Some(secret) = change.customer_token_secret {
        s.customer_token_secret = Some(secret);
    }
    if let Some(b) = change.require_customer_token {
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
    if let Some((cid, key)) = change.metadata_key {
        let conn = connection_of(&ctx, merchant, Some(&cid), "/connection_id").await?;
        if !valid_identifier(&key) || key.len() > 40 {
            return Err(ApiError::field(
                "/customid_metadata_key",
                "Use 1 to 40 letters, digits, '.', '_' or '-'.",
            ));
        }
        es::put_customid_key(ctx.store.writer(), &conn.id, &key, ctx.now()).await?;
    }
    s.updated_at = ctx.now();
    es::put_settings(ctx.store.writer(), &s).await?;
    ctx.entitlements.forget_settings(merchant);
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Settings).await?;
    Ok(Json(render_settings(&s)))
}

// ---- manual grants ---------------------------------------------------------------------------

/// A grant of a permission by hand, as [`grant`] takes it (the API's body is
/// [`GrantRequest`], which may also give units of a metered permission).
#[derive(Debug, Deserialize)]
pub struct GrantCreate {
    /// A defined permission's identifier.
    pub permission: String,
    /// When the grant ends (RFC 3339, whole seconds, in the future); `None`: no end.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Why (1 to 500 characters without control characters).
    pub reason: String,
}

/// `POST /v1/subscribers/{customid}/grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GrantCreate, example = json!({"permission": "premium", "expires_at": "2030-12-31T00:00:00Z", "reason": "support ticket 4711"}))]
pub struct GrantRequest {
    /// A defined permission's identifier.
    #[schema(example = "premium")]
    pub permission: String,
    /// When the grant ends (RFC 3339, whole seconds, in the future); null or absent: no end.
    /// The units of a metered grant end with it.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Why (1 to 500 characters without control characters), shown in the history and on the
    /// ledger row of a metered grant.
    #[schema(
        min_length = 1,
        pattern = r"[^\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub reason: String,
    /// Metered permissions only, and required for them: the units the grant gives (1 to
    /// 1000000000000), a ledger row of kind `grant`. Revoking the grant takes back those still
    /// unconsumed, as a refund does.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 500)]
    pub units: Option<i64>,
}

/// A permission given by hand.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Grant)]
pub struct GrantOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^grant$", example = "grant")]
    pub kind: &'static str,
    pub id: String,
    #[schema(example = "user-7")]
    pub customid: String,
    #[schema(example = "premium")]
    pub permission: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// RFC 3339 UTC; null: no end.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub reason: String,
    /// The key (`key:…`) or dashboard operator (`operator:…`) that made it.
    #[schema(example = "key:8f14e45f")]
    pub created_by: String,
    /// RFC 3339 UTC; null while not revoked.
    #[schema(format = DateTime, required = true)]
    pub revoked_at: Option<String>,
    /// Who revoked it; null while not revoked.
    #[schema(required = true)]
    pub revoked_by: Option<String>,
    /// The units of a metered permission the grant gave; null for other grants.
    #[schema(required = true, minimum = 1, example = 500)]
    pub units: Option<i64>,
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
        units: None,
    }
}

/// The grants of a customer as the API shows them, with the units of metered ones (read from
/// the grant rows of their ledgers).
async fn render_grants(
    db: &mut tollgate_store::Conn,
    merchant: &str,
    customid: &str,
    grants: &[es::GrantRow],
) -> ApiResult<Vec<GrantOut>> {
    let mut out: Vec<GrantOut> = grants.iter().map(render_grant).collect();
    let mut permissions: Vec<&str> = grants.iter().map(|g| g.permission.as_str()).collect();
    permissions.sort_unstable();
    permissions.dedup();
    for permission in permissions {
        if cs::get_balance(&mut *db, merchant, customid, permission, "")
            .await?
            .is_none()
        {
            continue;
        }
        let entries = cs::entries(&mut *db, merchant, customid, permission).await?;
        for g in out.iter_mut().filter(|g| g.permission == permission) {
            g.units = entries
                .iter()
                .find(|e| e.kind == "grant" && e.lot.as_deref() == Some(g.id.as_str()))
                .map(|e| e.units);
        }
    }
    Ok(out)
}

/// One grant as the API shows it.
async fn render_one_grant(ctx: &ApiContext, g: &es::GrantRow) -> ApiResult<GrantOut> {
    let mut db = ctx.store.hold_reader().await?;
    let mut out = render_grants(
        &mut db,
        &g.merchant_account_id,
        &g.customid,
        std::slice::from_ref(g),
    )
    .await?;
    out.pop().ok_or_else(|| ApiError::not_found("grant"))
}

/// Who made a change through the API: the key.
pub fn key_actor(caller: &Caller) -> String {
    format!("key:{}", caller.key_id)
}

/// Gives `customid` a permission by hand, re-evaluates it, all in one transaction. Used by the
/// API and the dashboard. A metered permission needs units: see [`grant_units`].
pub async fn grant(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    body: GrantCreate,
    created_by: String,
) -> ApiResult<es::GrantRow> {
    grant_units(ctx, merchant, customid, body, None, created_by).await
}

/// Units of one grant: 1 to 10^12, as a consumption's.
const MAX_GRANT_UNITS: i64 = 1_000_000_000_000;

/// Gives `customid` a permission by hand and, for a metered permission, `units` of it (required
/// then, refused for any other permission, naming `/units`): one ledger row of kind `grant`
/// whose lot is the grant (ending with it), written with the grant and the re-evaluation in
/// one transaction.
pub async fn grant_units(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    body: GrantCreate,
    units: Option<i64>,
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
    let metered = cs::definition(ctx.store.reader(), merchant, &body.permission).await?;
    let units = match (metered.is_some(), units) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ApiError::field(
                "/units",
                format!(
                    "Only for metered permissions: '{}' is not metered (its grant gives it, not units).",
                    body.permission
                ),
            ));
        }
        (true, None) => {
            return Err(ApiError::field(
                "/units",
                format!(
                    "Required: '{}' is a metered permission; say how many units the grant gives.",
                    body.permission
                ),
            ));
        }
        (true, Some(u)) if (1..=MAX_GRANT_UNITS).contains(&u) => Some(u),
        (true, Some(_)) => {
            return Err(ApiError::field(
                "/units",
                "Must be a whole number of units from 1 to 1000000000000.",
            ));
        }
    };
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
    if let Some(units) = units {
        let mut book =
            ent::credits::Book::open(ctx, &mut tx, merchant, customid, &row.permission, now, now)
                .await?;
        let entry = cs::LedgerRow {
            id: tollgate_store::new_id(),
            customid: customid.to_string(),
            permission: row.permission.clone(),
            kind: "grant".into(),
            units,
            lot: Some(row.id.clone()),
            expires_at: row.expires_at,
            source: Some(row.id.clone()),
            reason: Some(row.reason.clone()),
            created_at: now,
            ..cs::LedgerRow::default()
        };
        book.append(&mut tx, entry).await?;
        book.close(&mut tx, now).await?;
    }
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
        clawback_grant(ctx, &mut tx, merchant, customid, id).await?;
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

/// A revoked grant of units: what is left of them is taken back, as a refund takes back a
/// pack's (the consumed part, which is not, is the claw-back's shortfall).
async fn clawback_grant(
    ctx: &ApiContext,
    tx: &mut tollgate_store::Tx<'_>,
    merchant: &str,
    customid: &str,
    id: &str,
) -> ApiResult<()> {
    let Some(g) = es::grants_of(&mut **tx, merchant, customid)
        .await?
        .into_iter()
        .find(|g| g.id == id)
    else {
        return Ok(());
    };
    let lock = ctx.store.for_update();
    if cs::get_balance(&mut **tx, merchant, customid, &g.permission, lock)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let now = ctx.now();
    let mut book =
        ent::credits::Book::open(ctx, tx, merchant, customid, &g.permission, now, now).await?;
    if let Some((c, shortfall)) = book.lots.clawback(id) {
        let entry = cs::LedgerRow {
            id: tollgate_store::new_id(),
            customid: customid.to_string(),
            permission: g.permission.clone(),
            kind: "clawback".into(),
            units: c.units,
            lot: Some(id.to_string()),
            shortfall,
            source: Some(id.to_string()),
            reason: Some("The grant was revoked.".into()),
            created_at: now,
            ..cs::LedgerRow::default()
        };
        book.append(tx, entry).await?;
    }
    book.close(tx, now).await?;
    Ok(())
}

/// A manual grant (support, promotions): one more purchase of `permission` (a defined
/// permission, else 400 naming `/permission`), held from now while not expired (`expires_at`,
/// whole seconds, in the future; null: no end) and not revoked, with its own `entitlement`
/// code 2, combined with Stripe purchases by the usual rule (latest expiry, best code).
/// `created_by` names the key (`key:…`) or the dashboard operator (`operator:…`).
///
/// A metered permission is granted in units (`units`, required for it and refused for any
/// other): a ledger row of kind `grant` with the reason, whose units end with the grant
/// (`expires_at`) and are taken back, those still unconsumed, when it is revoked.
#[utoipa::path(
    post,
    path = "/v1/subscribers/{customid}/grants",
    operation_id = "create_grant",
    tag = "entitlements",
    summary = "Grant a permission by hand",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$")),
    request_body = GrantRequest,
    responses(
        (status = 201, description = "The grant.", body = GrantOut),
        (status = 400, description = "A field is missing or invalid, or the permission is not defined (named in `details`).", body = ErrorEnvelope),
    ),
)]
pub async fn grant_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
    Body(body): Body<GrantRequest>,
) -> ApiResult<(StatusCode, Json<GrantOut>)> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let GrantRequest {
        permission,
        expires_at,
        reason,
        units,
    } = body;
    let body = GrantCreate {
        permission,
        expires_at,
        reason,
    };
    let row = grant_units(
        &ctx,
        &caller.merchant_account_id,
        &customid,
        body,
        units,
        key_actor(&caller),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(render_one_grant(&ctx, &row).await?),
    ))
}

/// A customer's grants.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Grants)]
pub struct GrantList {
    pub items: Vec<GrantOut>,
}

/// Every grant of the customer, oldest first, revoked ones with `revoked_at`.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{customid}/grants",
    operation_id = "list_grants",
    tag = "entitlements",
    summary = "A customer's grants",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$")),
    responses(
        (status = 200, description = "The grants.", body = GrantList),
        (status = 400, description = "The customid is not 1 to 255 characters.", body = ErrorEnvelope),
    ),
)]
pub async fn grant_list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
) -> ApiResult<Json<GrantList>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let merchant = caller.merchant_account_id.as_str();
    let mut db = ctx.store.hold_reader().await?;
    let rows = es::grants_of(&mut *db, merchant, &customid).await?;
    let items = render_grants(&mut db, merchant, &customid, &rows).await?;
    Ok(Json(GrantList { items }))
}

/// The grant stays, with `revoked_at` and `revoked_by`; the customer is re-evaluated.
/// Revoking a revoked grant changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/subscribers/{customid}/grants/{id}",
    operation_id = "revoke_grant",
    tag = "entitlements",
    summary = "Revoke a grant",
    params(
        ("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"),
        ("id" = String, Path, description = "The grant's id."),
    ),
    responses(
        (status = 200, description = "The revoked grant.", body = GrantOut),
        (status = 400, description = "The customid is not 1 to 255 characters.", body = ErrorEnvelope),
        (status = 404, description = "The customer has no grant with this id.", body = ErrorEnvelope),
    ),
)]
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
    Ok(Json(render_one_grant(&ctx, &row).await?))
}

// ---- history ---------------------------------------------------------------------------------

/// The history's query: a cursor page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1 to 100 (default 20).
    #[serde(default, deserialize_with = "present")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<String>,
    /// `next_cursor` of the page before.
    #[serde(default, deserialize_with = "present")]
    pub cursor: Option<String>,
}

/// A valid history page request: before (moment, sequence) and the page size.
struct HistoryPageAsk {
    before: Option<(i64, i64)>,
    limit: i64,
}

impl TryFrom<HistoryQuery> for HistoryPageAsk {
    type Error = ApiError;

    fn try_from(q: HistoryQuery) -> ApiResult<Self> {
        let limit = match q.limit {
            None => 20,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| ApiError::query("/limit", "Must be between 1 and 100."))?,
        };
        let not_ours = || ApiError::query("/cursor", "Not a cursor this server made.");
        let before = match q.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => match super::cursor::decode(c).ok_or_else(not_ours)? {
                (at, seq, true) => Some((at, seq.parse::<i64>().map_err(|_| not_ours())?)),
                (_, _, false) => return Err(not_ours()),
            },
        };
        Ok(HistoryPageAsk { before, limit })
    }
}

/// One change of one permission.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PermissionChange)]
pub struct HistoryEntry {
    #[schema(example = "premium")]
    pub permission: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub at: String,
    pub is_valid: bool,
    /// The permission's code after the change (as `entitlement` of a permission).
    pub entitlement: i64,
    /// RFC 3339 (whole seconds); null when there is no expiry.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    /// The permission left the answer (its SKUs or definition left the catalogue).
    pub removed: bool,
    /// What did it: `{type: stripe_event, event_id, event_type, events}`,
    /// `{type: grant, grant_id, action}`, `{type: link, connection_id, stripe_customer_id}`,
    /// `{type: clock}`, `{type: test_clock, test_clock}`, `{type: stripe_read}`,
    /// `{type: catalogue}`, `{type: settings}`.
    #[schema(value_type = Object)]
    pub cause: Value,
    /// The customer's state version this change is part of.
    pub version: i64,
}

/// A page of a customer's permission history, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PermissionHistory)]
pub struct HistoryPage {
    pub items: Vec<HistoryEntry>,
    /// The page size asked for.
    pub limit: i64,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Every change of every permission of the customer as the check answered it, newest first:
/// a Stripe event (`cause.event_id`, `cause.event_type`), a grant, a link, the clock (a
/// period, grace or grant ending, dated at its moment), a catalogue or settings change.
/// Cursor paged (`limit` 1 to 100, default 20; `next_cursor`).
#[utoipa::path(
    get,
    path = "/v1/subscribers/{customid}/history",
    operation_id = "get_permission_history",
    tag = "entitlements",
    summary = "A customer's permission history",
    params(
        ("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The changes.", body = HistoryPage),
        (status = 400, description = "The customid, `limit` or `cursor` is not valid (named in `details`).", body = ErrorEnvelope),
    ),
)]
pub async fn history(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<HistoryPage>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let query: HistoryQuery = strict_query(query.as_deref().unwrap_or(""), &["limit", "cursor"])?;
    let HistoryPageAsk { before, limit } = query.try_into()?;
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
