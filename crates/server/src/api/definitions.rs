//! Permission definitions: `/v1/permissions/definitions`, the permissions a merchant account's
//! SKUs unlock. A permission is held or not (`kind: access`), or it is an amount of units
//! (`kind: metered`): each of its SKUs then names the units it grants, per paid period of a
//! subscription or per purchase.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tollgate_store::credits::{self as cs, CreditDefRow, CreditSkuRow};
use tollgate_store::entitlements as es;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::entitlements as ent;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(definition_create, definition_list))
        .routes(routes!(
            definition_get,
            definition_update,
            definition_delete
        ))
}

// ---- the resource --------------------------------------------------------------------------------

/// What a SKU of a metered permission grants.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MeteredSku)]
pub struct MeteredSkuOut {
    /// The SKU.
    #[schema(example = "credits_monthly")]
    pub identifier: String,
    /// Units granted.
    #[schema(example = 1000)]
    pub units: i64,
    /// `period`: at each paid period of a subscription (ending with the period unless the
    /// permission rolls over); `purchase`: once per purchase.
    #[schema(value_type = String, pattern = "^(period|purchase)$")]
    pub per: String,
    /// A purchase's units end this many seconds after it; `null`: never.
    pub expires_in: Option<i64>,
}

/// The metered part of a permission definition.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Metering)]
pub struct MeteringOut {
    /// A period's units outlive the period.
    pub rollover: bool,
    /// `balance.low` is sent when a balance falls to this or below; `null`: never.
    pub low_balance_threshold: Option<i64>,
    pub skus: Vec<MeteredSkuOut>,
    /// The Stripe Billing Meter (its `event_name`) that consumption beyond the balance
    /// (`overage: "allow"`) is reported to; `null`: none.
    pub meter_event_name: Option<String>,
}

/// A named access right granted by holding any of its SKUs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PermissionDefinition)]
pub struct DefinitionOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^permission-definition$")]
    pub object: &'static str,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$", example = "premium")]
    pub identifier: String,
    /// The SKU identifiers, in order.
    pub skus: Vec<String>,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `access` (held or not) or `metered` (an amount of units).
    #[schema(value_type = String, pattern = "^(access|metered)$")]
    pub kind: &'static str,
    /// Metered permissions only: what each SKU grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub metering: Option<MeteringOut>,
}

/// Every permission definition of the account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PermissionDefinitions)]
pub struct DefinitionList {
    pub items: Vec<DefinitionOut>,
}

fn render_definition(
    d: &es::PermissionDefRow,
    metered: Option<&CreditDefRow>,
    meter: Option<&str>,
) -> DefinitionOut {
    DefinitionOut {
        object: "permission-definition",
        identifier: d.identifier.clone(),
        skus: d.skus.clone(),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
        kind: if metered.is_some() {
            "metered"
        } else {
            "access"
        },
        metering: metered.map(|m| MeteringOut {
            rollover: m.rollover,
            low_balance_threshold: m.low_balance_threshold,
            skus: m
                .skus
                .iter()
                .map(|s| MeteredSkuOut {
                    identifier: s.sku.clone(),
                    units: s.units,
                    per: s.per.clone(),
                    expires_in: s.expires_in_secs,
                })
                .collect(),
            meter_event_name: meter.map(str::to_string),
        }),
    }
}

// ---- requests --------------------------------------------------------------------------------------

/// A SKU of a metered permission and what it grants.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeteredSkuIn {
    /// The SKU.
    pub identifier: String,
    /// Units granted: 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub units: i64,
    /// `period` (default for subscription SKUs) or `purchase` (default for the others).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(period|purchase)$")]
    pub per: Option<String>,
    /// A purchase's units end this many seconds after it (default: never).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub expires_in: Option<i64>,
}

/// One SKU of a definition: its identifier, or (metered permissions) what it grants.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum SkuItem {
    Identifier(String),
    Metered(MeteredSkuIn),
}

impl<'de> Deserialize<'de> for SkuItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(SkuItem::Identifier(s)),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(SkuItem::Metered)
                .map_err(|e| D::Error::custom(e.to_string())),
            _ => Err(D::Error::custom("Must be a SKU identifier (a string).")),
        }
    }
}

impl SkuItem {
    fn identifier(&self) -> &str {
        match self {
            SkuItem::Identifier(s) => s,
            SkuItem::Metered(m) => &m.identifier,
        }
    }
}

/// `POST /v1/permissions/definitions`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PermissionDefinitionCreate, example = json!({"identifier": "premium", "skus": ["web_monthly", "lifetime"]}))]
pub struct DefinitionCreate {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub identifier: String,
    /// SKU identifiers of this account; for a metered permission, objects naming the units
    /// each grants (`{"identifier": "credits_monthly", "units": 1000, "per": "period"}`).
    pub skus: Vec<SkuItem>,
    /// `access` (default) or `metered`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(access|metered)$")]
    pub kind: Option<String>,
    /// Metered: a period's units outlive the period (default false).
    #[serde(default)]
    pub rollover: Option<bool>,
    /// Metered: `balance.low` when a balance falls to this or below.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub low_balance_threshold: Option<i64>,
    /// Metered: the `event_name` of the Stripe Billing Meter that consumption beyond the
    /// balance (`overage: "allow"`) is reported to.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub meter_event_name: Option<String>,
}

/// `PATCH /v1/permissions/definitions/{identifier}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PermissionDefinitionUpdate, example = json!({"skus": ["web_monthly", "web_yearly"]}))]
pub struct DefinitionUpdate {
    /// As at creation; the permission's kind stays.
    pub skus: Vec<SkuItem>,
    #[serde(default)]
    pub rollover: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub low_balance_threshold: Option<i64>,
    /// Metered: the Stripe meter's `event_name` for overage; `""` removes it.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub meter_event_name: Option<String>,
}

/// A `meter_event_name` of a body: `Some("")` (update only) removes it.
fn meter_ok(name: Option<&str>, metered: bool, removable: bool) -> ApiResult<Option<&str>> {
    let Some(n) = name else {
        return Ok(None);
    };
    if !metered {
        return Err(ApiError::field(
            "/meter_event_name",
            "Only for metered permissions (\"kind\": \"metered\").",
        ));
    }
    if (n.is_empty() && removable) || crate::credits_meter::event_name_ok(n) {
        return Ok(Some(n));
    }
    Err(ApiError::field(
        "/meter_event_name",
        "A Stripe meter's event_name: 1 to 100 characters, no control characters.",
    ))
}

fn bad_identifier(id: &str) -> bool {
    id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// The SKUs of a body: known SKU identifiers of the account, no repeats; for a metered
/// permission, what each grants.
async fn definition_skus(
    ctx: &ApiContext,
    merchant: &str,
    skus: &[SkuItem],
    metered: bool,
) -> ApiResult<(Vec<String>, Vec<CreditSkuRow>)> {
    let known = es::list_skus(ctx.store.reader(), merchant).await?;
    let mut out: Vec<String> = Vec::new();
    let mut grants = Vec::new();
    for (i, item) in skus.iter().enumerate() {
        let pointer = format!("/skus/{i}");
        let s = item.identifier();
        let Some(sku) = known.iter().find(|k| k.identifier == s) else {
            return Err(ApiError::field(
                &pointer,
                format!("Unknown SKU '{s}': create it with POST /v1/skus first."),
            ));
        };
        if out.iter().any(|o| o == s) {
            return Err(ApiError::field(
                &pointer,
                format!("SKU '{s}' is listed twice."),
            ));
        }
        match (item, metered) {
            (SkuItem::Identifier(_), true) => {
                return Err(ApiError::field(
                    &pointer,
                    "A metered permission's SKU names its units: {\"identifier\", \"units\", \"per\"}.",
                ));
            }
            (SkuItem::Metered(_), false) => {
                return Err(ApiError::field(
                    &pointer,
                    "Units are for metered permissions (\"kind\": \"metered\"): give the SKU identifier.",
                ));
            }
            (SkuItem::Metered(m), true) => {
                if !(1..=1_000_000_000_000).contains(&m.units) {
                    return Err(ApiError::field(
                        &format!("{pointer}/units"),
                        "Must be a whole number of units from 1 to 1000000000000.",
                    ));
                }
                let per = match m.per.as_deref() {
                    Some("period") => "period",
                    Some("purchase") => "purchase",
                    None if sku.kind == "subscription" => "period",
                    None => "purchase",
                    Some(_) => {
                        return Err(ApiError::field(
                            &format!("{pointer}/per"),
                            "Must be 'period' or 'purchase'.",
                        ));
                    }
                };
                if m.expires_in.is_some_and(|e| e < 1) {
                    return Err(ApiError::field(
                        &format!("{pointer}/expires_in"),
                        "Must be a number of seconds, at least 1.",
                    ));
                }
                grants.push(CreditSkuRow {
                    sku: s.to_string(),
                    units: m.units,
                    per: per.to_string(),
                    expires_in_secs: m.expires_in,
                });
            }
            (SkuItem::Identifier(_), false) => {}
        }
        out.push(s.to_string());
    }
    Ok((out, grants))
}

fn threshold_ok(t: Option<i64>) -> ApiResult<Option<i64>> {
    match t {
        Some(t) if t < 0 => Err(ApiError::field(
            "/low_balance_threshold",
            "Must be a number of units, at least 0.",
        )),
        t => Ok(t),
    }
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

async fn load_definition(ctx: &ApiContext, merchant: &str, id: &str) -> ApiResult<DefinitionOut> {
    let d = es::list_permission_defs(ctx.store.reader(), merchant)
        .await?
        .into_iter()
        .find(|d| d.identifier == id)
        .ok_or_else(|| ApiError::not_found("permission definition"))?;
    let metered = cs::definition(ctx.store.reader(), merchant, id).await?;
    let meter = tollgate_store::meter_outbox::meter_of(ctx.store.reader(), merchant, id).await?;
    Ok(render_definition(&d, metered.as_ref(), meter.as_deref()))
}

// ---- handlers ----------------------------------------------------------------------------------------

/// A named access right granted by holding any of its SKUs, or (`kind: metered`) an amount of
/// units each SKU grants. An unknown SKU is a 400 pointing at `/skus/{index}`; a taken
/// identifier 409.
#[utoipa::path(
    post,
    path = "/v1/permissions/definitions",
    operation_id = "create_permission_definition",
    tag = "entitlements",
    summary = "Create a permission",
    request_body = DefinitionCreate,
    responses(
        (status = 201, description = "The permission definition.", body = DefinitionOut),
        (status = 400, description = "`bad_request`: a field is invalid.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: the identifier is taken.", body = ErrorEnvelope),
    ),
)]
pub async fn definition_create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<DefinitionCreate>,
) -> ApiResult<(StatusCode, Json<DefinitionOut>)> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    let id = body.identifier.clone();
    if bad_identifier(&id) {
        return Err(ApiError::field(
            "/identifier",
            "Use 1 to 100 letters, digits, '.', '_' or '-'.",
        ));
    }
    let metered = match body.kind.as_deref() {
        None | Some("access") => false,
        Some("metered") => true,
        Some(_) => {
            return Err(ApiError::field("/kind", "Must be 'access' or 'metered'."));
        }
    };
    if !metered && (body.rollover.is_some() || body.low_balance_threshold.is_some()) {
        let field = if body.rollover.is_some() {
            "/rollover"
        } else {
            "/low_balance_threshold"
        };
        return Err(ApiError::field(
            field,
            "Only for metered permissions (\"kind\": \"metered\").",
        ));
    }
    let threshold = threshold_ok(body.low_balance_threshold)?;
    let meter = meter_ok(body.meter_event_name.as_deref(), metered, false)?;
    let (skus, grants) = definition_skus(&ctx, merchant, &body.skus, metered).await?;
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
    if metered {
        let def = CreditDefRow {
            permission: id.clone(),
            rollover: body.rollover.unwrap_or(false),
            low_balance_threshold: threshold,
            skus: grants,
        };
        cs::put_definition(&mut tx, merchant, &def).await?;
        tollgate_store::meter_outbox::set_meter(&mut *tx, merchant, &id, meter, now).await?;
    }
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    Ok((
        StatusCode::CREATED,
        Json(load_definition(&ctx, merchant, &id).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/permissions/definitions",
    operation_id = "list_permission_definitions",
    tag = "entitlements",
    summary = "List permissions",
    responses((status = 200, description = "The permission definitions.", body = DefinitionList)),
)]
pub async fn definition_list(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<DefinitionList>> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    let rows = es::list_permission_defs(ctx.store.reader(), merchant).await?;
    let metered = cs::definitions(ctx.store.reader(), merchant).await?;
    let meters = tollgate_store::meter_outbox::meters(ctx.store.reader(), merchant).await?;
    let items = rows
        .iter()
        .map(|d| {
            let meter = meters.iter().find(|(p, _)| *p == d.identifier);
            render_definition(
                d,
                metered.iter().find(|m| m.permission == d.identifier),
                meter.map(|(_, m)| m.as_str()),
            )
        })
        .collect();
    Ok(Json(DefinitionList { items }))
}

#[utoipa::path(
    get,
    path = "/v1/permissions/definitions/{identifier}",
    operation_id = "get_permission_definition",
    tag = "entitlements",
    summary = "Get a permission",
    params(("identifier" = String, Path, description = "The permission's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    responses(
        (status = 200, description = "The permission definition.", body = DefinitionOut),
        (status = 404, description = "No such permission.", body = ErrorEnvelope),
    ),
)]
pub async fn definition_get(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DefinitionOut>> {
    caller.require_secret()?;
    Ok(Json(
        load_definition(&ctx, &caller.merchant_account_id, &id).await?,
    ))
}

/// Replaces the permission's SKUs (and, for a metered one, what each grants); its kind stays.
#[utoipa::path(
    patch,
    path = "/v1/permissions/definitions/{identifier}",
    operation_id = "update_permission_definition",
    tag = "entitlements",
    summary = "Change a permission's SKUs",
    params(("identifier" = String, Path, description = "The permission's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    request_body = DefinitionUpdate,
    responses(
        (status = 200, description = "The permission definition.", body = DefinitionOut),
        (status = 400, description = "`bad_request`: a field is invalid.", body = ErrorEnvelope),
        (status = 404, description = "No such permission.", body = ErrorEnvelope),
    ),
)]
pub async fn definition_update(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<DefinitionUpdate>,
) -> ApiResult<Json<DefinitionOut>> {
    caller.require_secret()?;
    let merchant = caller.merchant_account_id.as_str();
    let current = load_definition(&ctx, merchant, &id).await?;
    let metered = current.metering.is_some();
    if !metered && (body.rollover.is_some() || body.low_balance_threshold.is_some()) {
        let field = if body.rollover.is_some() {
            "/rollover"
        } else {
            "/low_balance_threshold"
        };
        return Err(ApiError::field(
            field,
            "Only for metered permissions (\"kind\": \"metered\").",
        ));
    }
    let threshold = threshold_ok(body.low_balance_threshold)?;
    let meter = meter_ok(body.meter_event_name.as_deref(), metered, true)?;
    let (skus, grants) = definition_skus(&ctx, merchant, &body.skus, metered).await?;
    let mut tx = ctx.store.begin().await?;
    es::touch_permission_def(&mut *tx, merchant, &id, ctx.now()).await?;
    write_definition_skus(&mut tx, merchant, &id, &skus).await?;
    if let Some(m) = &current.metering {
        let def = CreditDefRow {
            permission: id.clone(),
            rollover: body.rollover.unwrap_or(m.rollover),
            low_balance_threshold: threshold.or(m.low_balance_threshold),
            skus: grants,
        };
        cs::put_definition(&mut tx, merchant, &def).await?;
    }
    if let Some(m) = meter {
        let m = Some(m).filter(|m| !m.is_empty());
        tollgate_store::meter_outbox::set_meter(&mut *tx, merchant, &id, m, ctx.now()).await?;
    }
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    Ok(Json(load_definition(&ctx, merchant, &id).await?))
}

/// Deletes the permission; customers' ledgers and balances of a metered one are kept.
#[utoipa::path(
    delete,
    path = "/v1/permissions/definitions/{identifier}",
    operation_id = "delete_permission_definition",
    tag = "entitlements",
    summary = "Delete a permission",
    params(("identifier" = String, Path, description = "The permission's identifier.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such permission.", body = ErrorEnvelope),
    ),
)]
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
    cs::delete_definition(&mut tx, merchant, &id).await?;
    tollgate_store::meter_outbox::set_meter(&mut *tx, merchant, &id, None, ctx.now()).await?;
    tollgate_store::commit(tx).await?;
    ent::reevaluate_account(&ctx, merchant, &ent::Cause::Catalogue).await?;
    Ok(StatusCode::NO_CONTENT)
}
