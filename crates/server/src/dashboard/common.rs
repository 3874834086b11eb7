//! What the dashboard's pages share: the fixed notices after an action, small helpers for
//! forms and links, the home redirect, the account switch and the page for an unknown path.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_store::{accounts, operators};

use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, render};
use crate::ApiContext;
use crate::error::ApiError;

pub(super) type Form = axum::Form<Vec<(String, String)>>;
pub(super) type Params = Query<Vec<(String, String)>>;

/// A page that only says something (an unknown page, a refused account switch).
#[derive(Template)]
#[template(path = "dashboard/message.html")]
struct MessagePage {
    frame: Frame,
    message: String,
}

/// A message page inside the frame.
async fn message_page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let frame = Frame::new(ctx, s, title, "").await;
    render(
        status,
        &MessagePage {
            frame,
            message: message.to_string(),
        },
    )
}

pub(super) fn bad(message: &str) -> ApiError {
    ApiError::bad_request(message.to_string())
}

/// The fixed text of a `?done=…` notice (for [`Frame::notice`]).
pub(super) fn notice_text(params: &[(String, String)]) -> Option<&'static str> {
    let text = match param(params, "done") {
        Some("connection_created") => {
            "Connection saved. Its secret key is stored encrypted and shown masked from now on."
        }
        Some("webhook_secret_saved") => "Webhook signing secret saved.",
        Some("captured") => "Capture requested.",
        Some("voided") => "Void requested.",
        Some("refunded") => "Refund requested.",
        Some("replayed") => "The event was queued to be applied again.",
        Some("resent") => "The delivery was queued to be sent again.",
        Some("sku_saved") => "SKU saved.",
        Some("permission_saved") => "Permission saved.",
        Some("key_revoked") => "API key revoked.",
        Some("account_switched") => "Merchant account switched.",
        _ => return None,
    };
    Some(text)
}

// ---- what the API answered, for the page --------------------------------------------------

/// The message of an API error for the page (internal causes are logged, not shown).
pub(super) fn message_of(e: &ApiError) -> String {
    if let ApiError::Internal(cause) = e {
        tracing::error!(cause = %cause, "internal error (dashboard)");
    }
    e.body()["message"]
        .as_str()
        .unwrap_or("The request failed.")
        .to_string()
}

/// A refused API call's field messages by form field (`/url` → `url`, `/events/2` → `events`);
/// the general message when no field is named.
pub(super) fn field_errors(e: &ApiError) -> (FieldErrors, Option<String>) {
    let mut errors = FieldErrors::new();
    if let ApiError::BadRequest { details, .. } = e {
        for d in details {
            let field = d
                .pointer
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            if !field.is_empty() {
                errors.entry(field).or_insert_with(|| d.message.clone());
            }
        }
    }
    if errors.is_empty() {
        (errors, Some(message_of(e)))
    } else {
        (errors, None)
    }
}

// ---- small helpers ---------------------------------------------------------------------------

pub(super) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

pub(super) fn all<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect()
}

pub(super) fn confirmed(form: &[(String, String)]) -> Result<(), ApiError> {
    match param(form, "confirm") {
        Some("yes") => Ok(()),
        _ => Err(bad("Tick the confirmation box to do this.")),
    }
}

/// A path segment: everything but unreserved characters (RFC 3986) percent-encoded.
pub(super) fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

pub(super) fn query_string(pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

// ---- home, account, 404 ----------------------------------------------------------------------

pub async fn home() -> Response {
    see_other("/dashboard/overview")
}

pub async fn not_found(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
) -> Response {
    message_page(
        &ctx,
        &s,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such dashboard page.",
    )
    .await
}

pub async fn switch_account(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let refused = |status: StatusCode, message: &'static str| {
        let (ctx, s) = (ctx.clone(), s.clone());
        async move { message_page(&ctx, &s, status, "Account not switched", message).await }
    };
    let Some(id) = param(&form, "merchant_account_id") else {
        return refused(REFUSED, "Choose a merchant account.").await;
    };
    match accounts::get_merchant_account(ctx.store.reader(), id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refused(StatusCode::NOT_FOUND, "There is no such merchant account.").await;
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard: reading a merchant account");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "The account could not be switched. Please try again.",
            )
            .await;
        }
    }
    if let Err(e) = operators::set_session_account(ctx.store.writer(), &s.id_hash, id).await {
        tracing::error!(error = %e, "dashboard: switching the session's account");
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "The account could not be switched. Please try again.",
        )
        .await;
    }
    see_other("/dashboard/transactions?done=account_switched")
}
