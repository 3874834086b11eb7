//! Merchant accounts (tenants). Operator keys only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::JsonBody;
use crate::ApiContext;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use tollgate_store::{MerchantAccountRow, accounts};

pub fn render(m: &MerchantAccountRow) -> Value {
    json!({"type": "merchant-account", "id": m.id, "display_name": m.display_name,
           "created_at": rfc3339(m.created_at)})
}

/// Ids are what clients put in headers: lower-case letters, digits, `-` and `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_operator()?;
    for k in body.keys() {
        if k != "id" && k != "display_name" {
            return Err(ApiError::field(&format!("/{k}"), "Unknown field."));
        }
    }
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("/id", "Required: a string."))?;
    if !valid_id(id) {
        return Err(ApiError::field(
            "/id",
            "Use 1 to 64 lower-case letters, digits, '-' or '_'.",
        ));
    }
    let name = match body.get("display_name") {
        None => id,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.as_str(),
        Some(_) => {
            return Err(ApiError::field(
                "/display_name",
                "A non-empty string of at most 200 characters.",
            ));
        }
    };
    let now = ctx.now();
    match accounts::insert_merchant_account(ctx.store.writer(), id, name, now).await {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::DuplicateRecord(format!(
                "The merchant account '{id}' already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let row = MerchantAccountRow {
        id: id.to_string(),
        display_name: name.to_string(),
        created_at: now,
    };
    Ok((StatusCode::CREATED, Json(render(&row))))
}

pub async fn list(State(ctx): State<ApiContext>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_secret()?;
    let rows = accounts::list_merchant_accounts(ctx.store.reader()).await?;
    let items: Vec<Value> = rows
        .iter()
        .filter(|m| caller.operator || m.id == caller.merchant_account_id)
        .map(render)
        .collect();
    Ok(Json(
        json!({"items": items, "limit": items.len(), "next_cursor": null, "previous_cursor": null}),
    ))
}
