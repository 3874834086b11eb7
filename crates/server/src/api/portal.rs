//! Stripe's customer portal for a subscriber: `POST /v1/subscribers/{customid}/portal-session`
//! (secret key) creates a Stripe billing portal session for the customid's Stripe customer and
//! answers its `url`; `GET /manage?token=…` is the subscriber's `management_url`, a page link
//! for the buyer's browser that creates a fresh session each time it is opened and redirects to
//! it (portal sessions expire within minutes, so none is ever stored).
//!
//! The management link is authenticated by its token alone: the merchant account, the customid
//! and an expiry, sealed (encrypted and authenticated) under the master key. Nobody can make,
//! read or alter one without the key, and a link stops working [`MANAGEMENT_LINK_SECS`] after
//! the subscriber was read. The token travels in the query string, which the request log
//! leaves out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use sha2::{Digest, Sha256};
use tollgate_domain::entitlements::{Ledger, Record, SubStatus};
use tollgate_store::connections;
use tollgate_store::entitlements as es;
use tollgate_stripe::client::RequestOptions;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::typed::Body;
use crate::ApiContext;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};

/// How long a subscriber's `management_url` works after it was read: a day.
pub const MANAGEMENT_LINK_SECS: i64 = 24 * 3600;
/// The associated data of sealed management tokens (no other sealed value opens as one).
const TOKEN_PURPOSE: &str = "tollgate management link v1";

/// The API route (under the Idempotency-Key middleware) and its part of the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new().routes(routes!(create_session));
    super::typed::close(&mut router, &["PortalSessionCreate"]);
    router
}

/// `POST /v1/subscribers/{customid}/portal-session`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"return_url": "https://example.com/account"}))]
pub struct PortalSessionCreate {
    /// Where the portal's "Return to …" link leads: an absolute http(s) URL.
    #[schema(max_length = 2048, example = "https://example.com/account")]
    pub return_url: String,
}

/// A Stripe customer portal session: send the buyer's browser to `url` (it expires soon).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PortalSession)]
pub struct PortalSessionOut {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^portal-session$", example = "portal-session")]
    pub object: &'static str,
    /// The portal page at Stripe, for the buyer's browser.
    #[schema(example = "https://billing.stripe.com/p/session/test_…")]
    pub url: String,
    /// The Stripe billing portal session (`bps_…`).
    #[schema(example = "bps_Example")]
    pub id: String,
    #[schema(example = "user-7")]
    pub customid: String,
    /// The Stripe customer the portal shows (`cus_…`).
    #[schema(example = "cus_Example")]
    pub customerid: String,
    pub connection_id: String,
    /// Where the portal's return link leads; null when Stripe's portal configuration decides.
    #[schema(required = true)]
    pub return_url: Option<String>,
}

/// An absolute http(s) URL, or a 400 naming `/return_url`.
fn return_url(raw: &str) -> ApiResult<String> {
    let bad = || {
        ApiError::field(
            "/return_url",
            "Must be an absolute http or https URL of at most 2048 characters.",
        )
    };
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(raw.to_string())
}

#[utoipa::path(
    post,
    path = "/v1/subscribers/{customid}/portal-session",
    operation_id = "create_portal_session",
    tag = "entitlements",
    summary = "Open Stripe's customer portal for a subscriber",
    description = "Creates a Stripe billing portal session for the customid's Stripe customer (the one linked last when there are several) on its connection, and answers its `url`, where the buyer can cancel, resume or change a subscription and update the card. Sessions expire within minutes: create one when the buyer asks.",
    params(("customid" = String, Path, description = "The business's own id of its user: 1 to 255 characters, no control characters.", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$")),
    request_body = PortalSessionCreate,
    responses(
        (status = 200, description = "The session; send the browser to its `url`.", body = PortalSessionOut),
        (status = 400, description = "`return_url` is missing or not an absolute http(s) URL, or the customid is not valid text.", body = ErrorEnvelope),
        (status = 404, description = "The customid has no Stripe customer.", body = ErrorEnvelope),
        (status = 502, description = "Stripe answered with an error.", body = ErrorEnvelope),
        (status = 504, description = "Stripe did not answer in time.", body = ErrorEnvelope),
    ),
)]
pub async fn create_session(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    Path(customid): Path<String>,
    Body(body): Body<PortalSessionCreate>,
) -> ApiResult<Json<PortalSessionOut>> {
    caller.require_secret()?;
    if !super::entitlements::customid_ok(&customid) {
        return Err(ApiError::path("/customid", "Must be 1 to 255 characters."));
    }
    let return_url = return_url(&body.return_url)?;
    // A retried request (same Idempotency-Key) asks Stripe with the same key.
    let stripe_key = crate::idempotency::request_key(&headers, &caller).map(|k| {
        let mut h = Sha256::new();
        h.update(b"portal-session\0");
        h.update(customid.as_bytes());
        h.update(b"\0");
        h.update(k.as_bytes());
        format!("tollgate-portal-{}", hex::encode(&h.finalize()[..16]))
    });
    let session = open_session(
        &ctx,
        &caller.merchant_account_id,
        &customid,
        Some(return_url),
        stripe_key,
    )
    .await?;
    Ok(Json(session))
}

/// Creates a portal session for the customid's (last linked) Stripe customer.
async fn open_session(
    ctx: &ApiContext,
    merchant: &str,
    customid: &str,
    return_url: Option<String>,
    stripe_key: Option<String>,
) -> ApiResult<PortalSessionOut> {
    let links = {
        let mut conn = ctx.store.hold_reader().await?;
        es::links_of_customids(&mut conn, merchant, &[customid]).await?
    };
    let no_customer = || {
        ApiError::NotFound(format!(
            "The customid {customid} has no Stripe customer (link one with POST /v1/connect_stripe or a Stripe customer's metadata.customid)."
        ))
    };
    let link = links.last().ok_or_else(no_customer)?;
    let conn = connections::get(ctx.store.reader(), &link.connection_id)
        .await?
        .filter(|c| c.merchant_account_id == merchant)
        .ok_or_else(no_customer)?;
    let stripe = ctx.stripe_for(&conn)?;
    let mut params = Map::new();
    params.insert("customer".into(), json!(link.stripe_customer_id));
    if let Some(u) = &return_url {
        params.insert("return_url".into(), json!(u));
    }
    let key = stripe_key.unwrap_or_else(|| format!("tollgate-portal-{}", uuid::Uuid::new_v4()));
    let session = stripe
        .request(
            reqwest::Method::POST,
            "/v1/billing_portal/sessions",
            &params,
            RequestOptions::idempotent(key),
        )
        .await
        .map_err(|e| match e.status() {
            Some(404) => no_customer(),
            _ => crate::entitlements::stripe_error(ctx, &e),
        })?;
    let (Some(url), Some(id)) = (session["url"].as_str(), session["id"].as_str()) else {
        return Err(ApiError::BadGateway {
            message: "Stripe answered a billing portal session without a url.".into(),
            transaction_id: None,
        });
    };
    Ok(PortalSessionOut {
        object: "portal-session",
        url: url.to_string(),
        id: id.to_string(),
        customid: customid.to_string(),
        customerid: link.stripe_customer_id.clone(),
        connection_id: conn.id.clone(),
        return_url: session["return_url"].as_str().map(str::to_string),
    })
}

// ---- the management link ---------------------------------------------------------------------

/// What a management token holds.
#[derive(Serialize, Deserialize)]
struct Token {
    /// Merchant account.
    m: String,
    /// Customid.
    c: String,
    /// Expiry, epoch seconds.
    x: i64,
}

/// The subscriber's `management_url`: a link of this server that opens Stripe's portal for
/// the customid, valid for [`MANAGEMENT_LINK_SECS`] from `now_secs`.
pub fn management_url(ctx: &ApiContext, merchant: &str, customid: &str, now_secs: i64) -> String {
    let token = Token {
        m: merchant.to_string(),
        c: customid.to_string(),
        x: now_secs.saturating_add(MANAGEMENT_LINK_SECS),
    };
    let plain = serde_json::to_string(&token).unwrap_or_default();
    let sealed = ctx.keys.seal(TOKEN_PURPOSE, &plain);
    format!(
        "{}/manage?token={}",
        ctx.public_url.trim_end_matches('/'),
        URL_SAFE_NO_PAD.encode(sealed)
    )
}

/// The token's contents when it is authentic and not expired.
fn open_token(ctx: &ApiContext, token: &str) -> Option<Token> {
    if token.len() > 4096 {
        return None;
    }
    let sealed = URL_SAFE_NO_PAD.decode(token).ok()?;
    let plain = ctx.keys.open(TOKEN_PURPOSE, &sealed).ok()?;
    let t: Token = serde_json::from_str(&plain).ok()?;
    (t.x > ctx.now() / 1000).then_some(t)
}

/// The management link's page route (a browser link outside the API, as the payment pages).
pub fn page_router() -> axum::Router<ApiContext> {
    axum::Router::new().route("/manage", axum::routing::get(open_management))
}

/// `GET /manage?token=…`.
#[derive(Deserialize)]
pub struct ManageQuery {
    token: Option<String>,
}

/// The subscriber's `management_url`: creates a fresh Stripe portal session (without a return
/// URL: the portal configuration's default applies) and redirects (303) to it. An invalid or
/// expired link, or a customid without a Stripe customer any more, is a page saying so.
pub async fn open_management(
    State(ctx): State<ApiContext>,
    axum::extract::Query(q): axum::extract::Query<ManageQuery>,
) -> Response {
    let Some(t) = q.token.as_deref().and_then(|t| open_token(&ctx, t)) else {
        return crate::page::notice(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This subscription management link is not valid or has expired. Return to the app to open it again.",
        );
    };
    let session = match open_session(&ctx, &t.m, &t.c, None, None).await {
        Ok(s) => s,
        Err(ApiError::NotFound(_)) => {
            return crate::page::notice(
                StatusCode::NOT_FOUND,
                "Nothing to manage",
                "There is no subscription to manage for this account any more.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "management link: Stripe's portal could not be opened");
            return crate::page::notice(
                StatusCode::BAD_GATEWAY,
                "Try again later",
                "The subscription portal could not be opened just now. Please try again in a moment.",
            );
        }
    };
    let Ok(location) = HeaderValue::from_str(&session.url) else {
        return crate::page::notice(
            StatusCode::BAD_GATEWAY,
            "Try again later",
            "The subscription portal could not be opened just now. Please try again in a moment.",
        );
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

// ---- billing issues ---------------------------------------------------------------------------

/// When the subscriber's billing trouble began: the earliest moment (epoch seconds) one of its
/// subscriptions went `past_due` or `unpaid` because a renewal invoice was not paid (that
/// invoice's creation, as the grace period counts it), or `None` when every subscription is
/// paid up. Derived from the subscriptions' current state, so it clears once the invoice is
/// paid (the subscription is `active` again) or the subscription ends.
pub fn billing_issue_since(ledger: &Ledger) -> Option<i64> {
    ledger
        .records()
        .filter_map(|r| match r {
            Record::Subscription(s)
                if matches!(s.status, SubStatus::PastDue | SubStatus::Unpaid) =>
            {
                let invoice = s.latest_invoice.as_deref().and_then(|id| {
                    ledger.records().find_map(|r| match r {
                        Record::Invoice(i) if i.id == id => Some(i),
                        _ => None,
                    })
                });
                Some(
                    invoice
                        .map(|i| i.created)
                        .or(s.current_period_start)
                        .unwrap_or(s.created),
                )
            }
            _ => None,
        })
        .min()
}

/// `billing_issue_detected_at` as the API writes it (RFC 3339, whole seconds).
pub fn billing_issue_detected_at(ledger: &Ledger) -> Option<String> {
    billing_issue_since(ledger).map(crate::entitlements::rfc3339_secs)
}
