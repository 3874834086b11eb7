//! The completion URL of both flows, where the buyer's browser or app lands after paying
//! (the hosted payment page is `page.rs`).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use tollgate_store::transactions as store_tx;

use crate::ApiContext;
use crate::error::ApiError;
use crate::transactions::{redirect_target, spend_tokens, sync_row, token_matches};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/pay/{id}/complete", get(complete))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompleteQuery {
    /// The approval or session token.
    #[param(value_type = String, required = false)]
    token: Option<String>,
    /// Appended by Stripe.js / Stripe's redirect after confirmation.
    #[param(value_type = String, required = false)]
    payment_intent_client_secret: Option<String>,
    /// `succeeded` or `failed`, appended by Stripe's redirect.
    #[param(value_type = String, required = false)]
    redirect_status: Option<String>,
}

/// The direct flow's completion answer (the redirect flow answers 303 instead).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PaymentCompletion {
    pub transaction_id: String,
    /// The transaction's status after the sync.
    #[schema(value_type = crate::api::render::TransactionStatusName)]
    pub transaction_status: String,
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
#[utoipa::path(
    get,
    path = "/pay/{id}/complete",
    operation_id = "complete_payment",
    tag = "buyer",
    summary = "Complete a payment (buyer's browser or app)",
    description = "Where the hosted page and Stripe's redirect land: syncs the transaction from Stripe, then redirects the buyer (303) to `redirect_url?transaction_id=…&transaction_status=…` (redirect flow) or answers the status as JSON (direct flow). Authorised by the approval or session token, or by the PaymentIntent client secret Stripe appends. A wrong, expired or spent token is a 404 that reveals nothing. Sends `Referrer-Policy: no-referrer`.",
    security(()),
    params(("id" = String, Path, description = "The transaction's id."), CompleteQuery),
    responses(
        (status = 200, description = "Direct flow: the transaction's status (JSON). Redirect flow with a stored redirect URL no browser could follow: a page saying the payment finished (HTML).", content(
            (PaymentCompletion = "application/json"),
            (String = "text/html"),
        )),
        (status = 303, description = "Redirect flow: back to the merchant's `redirect_url`, or (3-D Secure failed) back to the hosted payment page to try again.", headers(
            ("Location" = String, description = "`redirect_url` with `transaction_id` and `transaction_status` appended, or the payment page."),
        )),
        (status = 400, description = "A path or query parameter holding the NUL character or text that is not UTF-8: a plain page saying the link is not valid.", body = String, content_type = "text/html"),
        (status = 404, description = "`not_found`: no such transaction, or a wrong, expired or spent token.", body = crate::error::ErrorEnvelope),
        (status = 500, description = "`server_error`.", body = crate::error::ErrorEnvelope),
        (status = 502, description = "`bad_gateway`: Stripe could not be reached, failed or refused.", body = crate::error::ErrorEnvelope),
        (status = 504, description = "`gateway_timeout`: Stripe did not answer in time.", body = crate::error::ErrorEnvelope),
    ),
)]
pub(crate) async fn complete(
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
            axum::Json(PaymentCompletion {
                transaction_id: t.id,
                transaction_status: t.status,
            })
            .into_response(),
        ),
    }
}
