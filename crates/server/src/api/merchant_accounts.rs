//! Merchant accounts (tenants). Operator keys only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Page;
use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::ErrorEnvelope;
use crate::error::{ApiError, ApiResult};
use tollgate_store::{MerchantAccountRow, accounts};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes and their part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(create, list))
}

/// A merchant account (tenant).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MerchantAccount)]
pub struct MerchantAccountOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^merchant-account$", example = "merchant-account")]
    pub kind: &'static str,
    #[schema(pattern = "^[a-z0-9_-]{1,64}$", example = "shop-eu")]
    pub id: String,
    #[schema(example = "Shop EU")]
    pub display_name: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

pub fn render(m: &MerchantAccountRow) -> MerchantAccountOut {
    MerchantAccountOut {
        kind: "merchant-account",
        id: m.id.clone(),
        display_name: m.display_name.clone(),
        created_at: rfc3339(m.created_at),
    }
}

/// `POST /merchant-accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"id": "shop-eu", "display_name": "Shop EU"}))]
pub struct MerchantAccountCreate {
    /// 1 to 64 lower-case letters, digits, `-` or `_`; what clients put in the
    /// `X-Merchant-Account-Id` header.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub id: String,
    /// Shown in the dashboard and on the hosted payment page; the `id` when absent.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub display_name: Option<String>,
}

/// A valid new account: its id and display name.
pub struct NewMerchantAccount {
    pub id: String,
    pub display_name: String,
}

impl TryFrom<MerchantAccountCreate> for NewMerchantAccount {
    type Error = ApiError;

    fn try_from(b: MerchantAccountCreate) -> ApiResult<Self> {
        if !valid_id(&b.id) {
            return Err(ApiError::field(
                "/id",
                "Use 1 to 64 lower-case letters, digits, '-' or '_'.",
            ));
        }
        let display_name = match b.display_name {
            None => b.id.clone(),
            Some(s) if !s.trim().is_empty() && s.chars().count() <= 200 => s,
            Some(_) => {
                return Err(ApiError::field(
                    "/display_name",
                    "A non-empty string of at most 200 characters.",
                ));
            }
        };
        Ok(NewMerchantAccount {
            id: b.id,
            display_name,
        })
    }
}

/// Ids are what clients put in headers: lower-case letters, digits, `-` and `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Operator keys only (made with `tollgate keys create --all-accounts`).
#[utoipa::path(
    post,
    path = "/merchant-accounts",
    operation_id = "create_merchant_account",
    tag = "merchant-accounts",
    summary = "Create a merchant account",
    request_body = MerchantAccountCreate,
    responses(
        (status = 201, description = "The merchant account.", body = MerchantAccountOut),
        (status = 409, description = "`duplicate_record`: an account with this id exists.", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Body(body): Body<MerchantAccountCreate>,
) -> ApiResult<(StatusCode, Json<MerchantAccountOut>)> {
    caller.require_operator()?;
    let NewMerchantAccount { id, display_name } = body.try_into()?;
    let now = ctx.now();
    match accounts::insert_merchant_account(ctx.store.writer(), &id, &display_name, now).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "The merchant account '{id}' already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let row = MerchantAccountRow {
        id,
        display_name,
        created_at: now,
    };
    Ok((StatusCode::CREATED, Json(render(&row))))
}

/// Every account for an operator key; a bound key sees its own.
#[utoipa::path(
    get,
    path = "/merchant-accounts",
    operation_id = "list_merchant_accounts",
    tag = "merchant-accounts",
    summary = "List merchant accounts",
    responses((status = 200, description = "The merchant accounts.", body = Page<MerchantAccountOut>)),
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
) -> ApiResult<Json<Page<MerchantAccountOut>>> {
    caller.require_secret()?;
    let rows = accounts::list_merchant_accounts(ctx.store.reader()).await?;
    let items: Vec<MerchantAccountOut> = rows
        .iter()
        .filter(|m| caller.operator || m.id == caller.merchant_account_id)
        .map(render)
        .collect();
    Ok(Json(Page::whole(items)))
}
