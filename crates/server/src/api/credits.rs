//! Metered permissions: consume units, reserve then settle, adjust by hand, and read a
//! customer's balances and ledger. Secret keys only. Every POST takes an `Idempotency-Key`: a
//! replayed key answers what it answered first and changes nothing (a consume keeps its key
//! in the commit of its work, see [`consumes`]; the others go through the middleware).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_domain::credits::Overage;
use tollgate_store::credits::{self as cs, BalanceRow, LedgerRow, ReservationRow};
use tollgate_store::idempotency::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::typed::{Body, Params};
use super::{MAX_BODY, Page};
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::entitlements::credits as svc;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

mod consumes;

pub use consumes::Consumes;
use consumes::{Answer, Consume, Keyed};

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(consume))
        .routes(routes!(reserve))
        .routes(routes!(commit))
        .routes(routes!(release))
        .routes(routes!(adjust))
        .routes(routes!(ledger))
        .routes(routes!(balances))
}

/// Units of one request: 1 to 10^12.
const MAX_UNITS: i64 = 1_000_000_000_000;

fn units_ok(units: i64, pointer: &str) -> ApiResult<i64> {
    if (1..=MAX_UNITS).contains(&units) {
        Ok(units)
    } else {
        Err(ApiError::field(
            pointer,
            "Must be a whole number of units from 1 to 1000000000000.",
        ))
    }
}

fn customid_ok(c: &str, pointer: &str) -> ApiResult<()> {
    if super::entitlements::customid_ok(c) {
        Ok(())
    } else {
        Err(ApiError::field(pointer, "Must be 1 to 255 characters."))
    }
}

fn identifier_ok(id: &str) -> ApiResult<()> {
    if super::entitlements::valid_identifier(id) {
        Ok(())
    } else {
        Err(ApiError::path(
            "/identifier",
            "Use 1 to 100 letters, digits, '.', '_' or '-'.",
        ))
    }
}

// ---- consume -------------------------------------------------------------------------------

/// `POST /v1/permissions/{identifier}/consume`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customid": "user-42", "units": 2, "metadata": {"request": "gen-981"}}))]
pub struct ConsumeRequest {
    /// The customer (your user id).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"
    )]
    pub customid: String,
    /// Units to consume.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub units: i64,
    /// Stored on the ledger row.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// `reject` (default): refuse when fewer units are available than asked; `cap`: consume
    /// what is available (refused only when nothing is); `allow` (a permission naming a Stripe
    /// meter): accept it all, the units beyond the balance billed through the meter.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(reject|cap|allow)$")]
    pub overage: Option<String>,
}

fn overage_of(o: Option<&str>) -> ApiResult<Overage> {
    match o {
        None => Ok(Overage::Reject),
        Some(s) => Overage::parse(s)
            .ok_or_else(|| ApiError::field("/overage", "Must be 'reject', 'cap' or 'allow'.")),
    }
}

/// A consumption done.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Consumption)]
pub struct ConsumeOut {
    /// The balance after it.
    pub balance: i64,
    /// Units consumed (fewer than asked only under `overage: cap`).
    pub consumed: i64,
    /// The ledger row written.
    pub ledger_id: String,
}

/// Consumes units of a customer's balance of a metered permission, atomically: concurrent
/// consumptions never take a balance below zero nor below what reservations hold. Not enough
/// units: 402 `insufficient_balance` with the `balance`.
#[utoipa::path(
    post,
    path = "/v1/permissions/{identifier}/consume",
    operation_id = "consume_units",
    tag = "entitlements",
    summary = "Consume units of a metered permission",
    params(("identifier" = String, Path, description = "The metered permission.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    request_body = ConsumeRequest,
    responses(
        (status = 200, description = "Consumed.", body = ConsumeOut),
        (status = 400, description = "`bad_request`: a field is invalid.", body = ErrorEnvelope),
        (status = 402, description = "`insufficient_balance`: fewer units available than asked; `balance` says how many the customer has.", body = ErrorEnvelope),
        (status = 404, description = "The permission is not metered.", body = ErrorEnvelope),
    ),
)]
pub async fn consume(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(identifier): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    // The body is read here, not by `Body<T>`: the Idempotency-Key record keeps its hash.
    let key = crate::idempotency::header_key(req.headers())?;
    let path = req.uri().path().to_string();
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "The request body could not be read or is larger than {MAX_BODY} bytes."
            ))
        })?;
    let body: ConsumeRequest = super::typed::from_object(super::parse_object(&bytes)?)?;
    caller.require_secret()?;
    identifier_ok(&identifier)?;
    customid_ok(&body.customid, "/customid")?;
    let units = units_ok(body.units, "/units")?;
    let overage = overage_of(body.overage.as_deref())?;
    if overage == Overage::Allow {
        crate::credits_meter::require_meter(&ctx, &caller.merchant_account_id, &identifier).await?;
    }
    let key = key.map(|idem_key| Keyed {
        scope: Scope {
            merchant_account_id: caller.merchant_account_id.clone(),
            key_id: caller.key_id.clone(),
            method: "POST".into(),
            path,
            idem_key,
        },
        body_hash: crate::idempotency::body_hash(&bytes),
    });
    let scope = key.as_ref().map(|k| k.scope.clone());
    let answer = consumes::consume(
        &ctx,
        Consume {
            merchant: caller.merchant_account_id,
            permission: identifier,
            customid: body.customid,
            units,
            overage,
            metadata: body.metadata.map(Value::Object),
            key,
        },
    )
    .await?;
    Ok(match (answer, scope) {
        (Answer::Done { status, body }, _) => {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        (Answer::Replay { status, body }, Some(scope)) => {
            crate::idempotency::replay(&ctx, &scope, status, body)
        }
        (Answer::Replay { .. }, None) => {
            ApiError::Internal("a replay without a key".into()).into_response()
        }
        (Answer::Refused(e), _) => e.into_response(),
    })
}

// ---- reservations ----------------------------------------------------------------------------

/// `POST /v1/permissions/{identifier}/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customid": "user-42", "units": 50, "expires_in": 300}))]
pub struct ReserveRequest {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"
    )]
    pub customid: String,
    /// Units to hold.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub units: i64,
    /// Seconds the hold lasts unless committed or released (1 to 86400; default 300).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub expires_in: Option<i64>,
}

/// `POST …/reservations/{id}/commit`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"units": 37}))]
pub struct CommitRequest {
    /// Units to consume, at most those held (default: all of them); the rest is freed.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub units: Option<i64>,
}

/// `POST …/reservations/{id}/release`: no fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReleaseRequest {}

/// A hold on units of a balance.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Reservation)]
pub struct ReservationOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^reservation$")]
    pub kind: &'static str,
    #[schema(example = "rsv_0190f7d6c1a27b3f9e4d2a1b0c9d8e7f")]
    pub id: String,
    pub customid: String,
    pub permission: String,
    /// Units held.
    pub units: i64,
    #[schema(value_type = String, pattern = "^(held|committed|released|expired)$")]
    pub status: String,
    /// When an unsettled hold ends (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Units a commit consumed.
    pub committed_units: Option<i64>,
    /// The ledger row of the commit (none when it consumed nothing).
    pub ledger_id: Option<String>,
    /// The customer's balance after this request.
    pub balance: i64,
    /// Units available after this request (balance less open holds).
    pub available: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn render_reservation(r: &ReservationRow, b: &BalanceRow) -> ReservationOut {
    ReservationOut {
        kind: "reservation",
        id: r.id.clone(),
        customid: r.customid.clone(),
        permission: r.permission.clone(),
        units: r.units,
        status: r.status.clone(),
        expires_at: rfc3339(r.expires_at),
        committed_units: r.committed_units,
        ledger_id: r.ledger_id.clone(),
        balance: b.balance,
        available: b.available(),
        created_at: rfc3339(r.created_at),
    }
}

/// Holds units for work whose cost is known at its end: the available balance drops at once;
/// commit consumes up to the held units, release frees them, and a hold neither committed nor
/// released ends by itself after `expires_in` seconds.
#[utoipa::path(
    post,
    path = "/v1/permissions/{identifier}/reservations",
    operation_id = "create_reservation",
    tag = "entitlements",
    summary = "Reserve units of a metered permission",
    params(("identifier" = String, Path, description = "The metered permission.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    request_body = ReserveRequest,
    responses(
        (status = 201, description = "The hold.", body = ReservationOut),
        (status = 400, description = "`bad_request`: a field is invalid.", body = ErrorEnvelope),
        (status = 402, description = "`insufficient_balance`: fewer units available than asked.", body = ErrorEnvelope),
        (status = 404, description = "The permission is not metered.", body = ErrorEnvelope),
    ),
)]
pub async fn reserve(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(identifier): Path<String>,
    Body(body): Body<ReserveRequest>,
) -> ApiResult<(StatusCode, Json<ReservationOut>)> {
    caller.require_secret()?;
    identifier_ok(&identifier)?;
    customid_ok(&body.customid, "/customid")?;
    let units = units_ok(body.units, "/units")?;
    let ttl = body.expires_in.unwrap_or(300);
    if !(1..=86_400).contains(&ttl) {
        return Err(ApiError::field(
            "/expires_in",
            "Must be a number of seconds from 1 to 86400.",
        ));
    }
    let (r, b) = svc::reserve(
        &ctx,
        &caller.merchant_account_id,
        &identifier,
        &body.customid,
        units,
        ttl,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(render_reservation(&r, &b))))
}

fn reservation_id_ok(id: &str) -> ApiResult<()> {
    if id.len() <= 64 && id.starts_with("rsv_") {
        Ok(())
    } else {
        Err(ApiError::not_found("reservation"))
    }
}

/// Consumes up to the held units (at most the balance, should a refund have clawed units back
/// under the hold) and frees the rest.
#[utoipa::path(
    post,
    path = "/v1/permissions/{identifier}/reservations/{id}/commit",
    operation_id = "commit_reservation",
    tag = "entitlements",
    summary = "Commit a reservation",
    params(
        ("identifier" = String, Path, description = "The metered permission.", pattern = "^[A-Za-z0-9._-]{1,100}$"),
        ("id" = String, Path, description = "The reservation (`rsv_…`)."),
    ),
    request_body = CommitRequest,
    responses(
        (status = 200, description = "The reservation, committed.", body = ReservationOut),
        (status = 400, description = "`bad_request`: more units than held.", body = ErrorEnvelope),
        (status = 404, description = "No such reservation.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: the reservation was already committed, released or expired.", body = ErrorEnvelope),
    ),
)]
pub async fn commit(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path((identifier, id)): Path<(String, String)>,
    Body(body): Body<CommitRequest>,
) -> ApiResult<Json<ReservationOut>> {
    caller.require_secret()?;
    identifier_ok(&identifier)?;
    reservation_id_ok(&id)?;
    let units = body.units.map(|u| units_ok(u, "/units")).transpose()?;
    let merchant = caller.merchant_account_id.as_str();
    let (r, done) = svc::commit(&ctx, merchant, &identifier, &id, units).await?;
    let b = cs::get_balance(ctx.store.reader(), merchant, &r.customid, &identifier, "")
        .await?
        .ok_or_else(|| ApiError::not_found("balance"))?;
    let mut out = render_reservation(&r, &b);
    out.balance = done.balance;
    Ok(Json(out))
}

/// Frees the held units.
#[utoipa::path(
    post,
    path = "/v1/permissions/{identifier}/reservations/{id}/release",
    operation_id = "release_reservation",
    tag = "entitlements",
    summary = "Release a reservation",
    params(
        ("identifier" = String, Path, description = "The metered permission.", pattern = "^[A-Za-z0-9._-]{1,100}$"),
        ("id" = String, Path, description = "The reservation (`rsv_…`)."),
    ),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "The reservation, released.", body = ReservationOut),
        (status = 404, description = "No such reservation.", body = ErrorEnvelope),
        (status = 409, description = "`duplicate_record`: the reservation was already committed, released or expired.", body = ErrorEnvelope),
    ),
)]
pub async fn release(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path((identifier, id)): Path<(String, String)>,
    Body(_body): Body<ReleaseRequest>,
) -> ApiResult<Json<ReservationOut>> {
    caller.require_secret()?;
    identifier_ok(&identifier)?;
    reservation_id_ok(&id)?;
    let (r, b) = svc::release(&ctx, &caller.merchant_account_id, &identifier, &id).await?;
    Ok(Json(render_reservation(&r, &b)))
}

// ---- adjustments ------------------------------------------------------------------------------

/// `POST /v1/permissions/{identifier}/adjustments`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customid": "user-42", "units": 100, "reason": "Goodwill after the outage of 3 May"}))]
pub struct AdjustRequest {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"
    )]
    pub customid: String,
    /// Units to add (positive) or take away (negative; at most those available). Not 0.
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub units: i64,
    /// Why (shown in the ledger).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// One ledger row: a change of a customer's balance of a metered permission.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerEntry)]
pub struct LedgerEntryOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^ledger-entry$")]
    pub kind: &'static str,
    pub id: String,
    pub customid: String,
    pub permission: String,
    /// `grant` (a purchase or a paid period), `consume`, `expiry` (a lot ended), `clawback`
    /// (a refund or lost dispute took the purchase's unconsumed units back) or `adjustment`.
    #[serde(rename = "kind")]
    #[schema(value_type = String, pattern = "^(grant|consume|expiry|clawback|adjustment)$")]
    pub entry_kind: String,
    /// Signed: added (positive) or taken (negative).
    pub units: i64,
    pub balance_after: i64,
    /// The lot a grant opens or an expiry or claw-back closes.
    pub lot: Option<String>,
    /// When a granted lot ends (RFC 3339); `null`: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// On a claw-back: units of the lot already consumed, which are not taken back.
    pub shortfall: i64,
    /// The Stripe object (grants, claw-backs) or who made an adjustment.
    pub source: Option<String>,
    pub reservation_id: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

pub fn render_entry(e: &LedgerRow) -> LedgerEntryOut {
    LedgerEntryOut {
        kind: "ledger-entry",
        id: e.id.clone(),
        customid: e.customid.clone(),
        permission: e.permission.clone(),
        entry_kind: e.kind.clone(),
        units: e.units,
        balance_after: e.balance_after,
        lot: e.lot.clone(),
        expires_at: e.expires_at.map(rfc3339),
        shortfall: e.shortfall,
        source: e.source.clone(),
        reservation_id: e.reservation_id.clone(),
        reason: e.reason.clone(),
        metadata: e
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        created_at: rfc3339(e.created_at),
    }
}

/// Adds or takes units by hand (support, goodwill), with a reason; one ledger row.
#[utoipa::path(
    post,
    path = "/v1/permissions/{identifier}/adjustments",
    operation_id = "create_adjustment",
    tag = "entitlements",
    summary = "Adjust a balance by hand",
    params(("identifier" = String, Path, description = "The metered permission.", pattern = "^[A-Za-z0-9._-]{1,100}$")),
    request_body = AdjustRequest,
    responses(
        (status = 201, description = "The ledger row.", body = LedgerEntryOut),
        (status = 400, description = "`bad_request`: a field is invalid.", body = ErrorEnvelope),
        (status = 402, description = "`insufficient_balance`: taking more than is available.", body = ErrorEnvelope),
        (status = 404, description = "The permission is not metered.", body = ErrorEnvelope),
    ),
)]
pub async fn adjust(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(identifier): Path<String>,
    Body(body): Body<AdjustRequest>,
) -> ApiResult<(StatusCode, Json<LedgerEntryOut>)> {
    caller.require_secret()?;
    identifier_ok(&identifier)?;
    customid_ok(&body.customid, "/customid")?;
    if body.units == 0 || body.units.abs() > MAX_UNITS {
        return Err(ApiError::field(
            "/units",
            "Must be a whole number of units, not 0, from -1000000000000 to 1000000000000.",
        ));
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::field(
            "/reason",
            "Must be a non-empty string of at most 500 characters.",
        ));
    }
    let by = format!("key:{}", caller.key_id);
    let (e, _) = svc::adjust(
        &ctx,
        &caller.merchant_account_id,
        &identifier,
        &body.customid,
        body.units,
        reason,
        &by,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(render_entry(&e))))
}

// ---- reading -----------------------------------------------------------------------------------

/// `GET /v1/subscribers/{customid}/ledger`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn customid_of_path(c: &str) -> ApiResult<()> {
    if !c.is_empty() && c.chars().count() <= 255 && !c.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::path("/customid", "Must be 1 to 255 characters."))
    }
}

/// A customer's ledger rows, newest first, every metered permission.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{customid}/ledger",
    operation_id = "list_ledger",
    tag = "entitlements",
    summary = "A customer's credit ledger",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"), LedgerQuery),
    responses(
        (status = 200, description = "The rows, newest first.", body = Page<LedgerEntryOut>),
        (status = 400, description = "`bad_request`: a bad `limit` or `cursor`.", body = ErrorEnvelope),
    ),
)]
pub async fn ledger(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
    Params(q): Params<LedgerQuery>,
) -> ApiResult<Json<Page<LedgerEntryOut>>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::query("/limit", "Must be from 1 to 100."));
    }
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this list gave."))?,
        ),
    };
    let mut rows = cs::ledger_page(
        ctx.store.reader(),
        &caller.merchant_account_id,
        &customid,
        before,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(render_entry).collect(),
        limit,
        next_cursor,
        previous_cursor: None,
    }))
}

/// A customer's balance of one metered permission.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Balance)]
pub struct BalanceOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^balance$")]
    pub kind: &'static str,
    pub customid: String,
    pub permission: String,
    /// The sum of the ledger.
    pub balance: i64,
    /// Units held by open reservations.
    pub held: i64,
    /// Balance less held.
    pub available: i64,
    /// Units of the lots still open (granted and not yet ended).
    pub granted: i64,
    /// Units of those lots consumed.
    pub consumed: i64,
    /// When the next lot ends (a period's units reset); `null`: none ends.
    #[schema(format = DateTime)]
    pub resets_at: Option<String>,
}

pub fn render_balance(b: &BalanceRow) -> BalanceOut {
    BalanceOut {
        kind: "balance",
        customid: b.customid.clone(),
        permission: b.permission.clone(),
        balance: b.balance,
        held: b.held,
        available: b.available(),
        granted: b.granted,
        consumed: b.consumed,
        resets_at: b.resets_at.map(rfc3339),
    }
}

/// A customer's balances, one per metered permission it ever had units of.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{customid}/balances",
    operation_id = "list_balances",
    tag = "entitlements",
    summary = "A customer's credit balances",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$")),
    responses(
        (status = 200, description = "The balances.", body = Page<BalanceOut>),
        (status = 400, description = "`bad_request`: a bad customid.", body = ErrorEnvelope),
    ),
)]
pub async fn balances(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Path(customid): Path<String>,
) -> ApiResult<Json<Page<BalanceOut>>> {
    caller.require_secret()?;
    customid_of_path(&customid)?;
    let rows = cs::balances_of(ctx.store.reader(), &caller.merchant_account_id, &customid).await?;
    Ok(Json(Page::whole(rows.iter().map(render_balance).collect())))
}
