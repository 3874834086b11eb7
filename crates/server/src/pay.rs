//! The completion URL of both flows, where the buyer's browser or app lands after paying
//! (the hosted payment page is `page.rs`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use subtle::ConstantTimeEq;
use tollgate_store::transactions as store_tx;

use crate::ApiContext;
use crate::error::ApiError;
use crate::transactions::{redirect_target, spend_tokens, sync_row, token_matches};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/pay/{id}/complete", get(complete))
}

#[derive(serde::Deserialize)]
pub struct CompleteQuery {
    token: Option<String>,
    /// Appended by Stripe.js / Stripe's redirect after confirmation.
    payment_intent_client_secret: Option<String>,
    /// `succeeded` or `failed`, appended by Stripe's redirect.
    redirect_status: Option<String>,
}

fn no_referrer(mut r: Response) -> Response {
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// `GET /pay/{id}/complete`: syncs the transaction from Stripe, then sends the buyer back to
/// the merchant (redirect flow, 303) or answers the status as JSON (direct flow). Authorised by
/// the approval or session token, or by the PaymentIntent's client secret that Stripe appends.
/// A wrong, expired or spent token reveals nothing.
async fn complete(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    Query(q): Query<CompleteQuery>,
) -> Response {
    let denied =
        || no_referrer(ApiError::NotFound("This link is not valid.".into()).into_response());
    let Ok(Some(t)) = store_tx::get_any(ctx.store.reader(), &id, "").await else {
        return denied();
    };
    let by_token = q.token.as_deref().is_some_and(|tok| {
        token_matches(tok, t.approval_token_hash.as_deref())
            || token_matches(tok, t.session_token_hash.as_deref())
    });
    let by_secret = match (&q.payment_intent_client_secret, &t.client_secret) {
        (Some(given), Some(stored)) => given.as_bytes().ct_eq(stored.as_bytes()).into(),
        _ => false,
    };
    let tokens_live = t.approval_token_hash.is_some() || t.session_token_hash.is_some();
    if !(by_token || by_secret) || !tokens_live {
        return denied();
    }
    let t = match sync_row(&ctx, &t).await {
        Ok(t) => t,
        Err(e) => return no_referrer(e.into_response()),
    };
    let finished = !matches!(t.status.as_str(), "processing" | "buyer_approval_pending");
    if finished && let Err(e) = spend_tokens(&ctx, &t).await {
        return no_referrer(e.into_response());
    }
    let direct = matches!(
        t.integration_client.as_deref(),
        Some("web" | "ios" | "android")
    );
    // A failed attempt on the hosted page (3-D Secure failed): the buyer goes back to the page
    // to try again, with Stripe's message; the merchant hears of the final outcome only.
    if !finished
        && !direct
        && q.redirect_status.as_deref() == Some("failed")
        && let Some(tok) = q.token.as_deref()
    {
        // Encoded: the request may be authorised by the client secret, whatever `token` holds.
        let tok: String = form_urlencoded::byte_serialize(tok.as_bytes()).collect();
        let target = format!("/pay/{}?token={tok}&failed=1", t.id);
        return no_referrer((StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response());
    }
    match (&t.redirect_url, direct) {
        (Some(url), false) => {
            let target =
                redirect_target(url, &t.id, &t.status).and_then(|u| HeaderValue::from_str(&u).ok());
            let Some(target) = target else {
                // A redirect URL stored before URLs were parsed, that no browser could follow:
                // the buyer still learns the payment went through, never a bare 303.
                return crate::page::notice(
                    StatusCode::OK,
                    "Payment finished",
                    &format!(
                        "The payment is {}. Please return to the merchant's site.",
                        t.status.replace('_', " ")
                    ),
                );
            };
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response();
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            no_referrer(r)
        }
        _ => no_referrer(
            axum::Json(json!({"transaction_id": t.id, "transaction_status": t.status}))
                .into_response(),
        ),
    }
}
