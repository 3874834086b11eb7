//! The hosted payment page (SPEC §3.3): `/pay/{id}?token=…` shows the merchant and the amount
//! and Stripe's Payment Element (in sandbox mode the sandbox's Stripe.js stand-in, from the same
//! template). Assets are embedded; no inline script or style, so the Content-Security-Policy
//! allows Stripe.js and nothing else.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_store::{accounts, connections, transactions as store_tx};

use crate::ApiContext;
use crate::transactions::{expire_approval, sync_row, token_matches};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/pay/{id}", get(page))
        .route(
            "/pay/assets/pay.js",
            get(|| {
                asset(
                    include_str!("../assets/pay.js"),
                    "application/javascript; charset=utf-8",
                )
            }),
        )
        .route(
            "/pay/assets/pay.css",
            get(|| asset(include_str!("../assets/pay.css"), "text/css; charset=utf-8")),
        )
}

pub async fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// HTML-escapes text for element content and quoted attributes (the escaper the sandbox
/// uses too).
pub use tollgate_stripe::html::esc;

/// `$12.99`, `€1,234.50`, `¥1,000`, `12.99 CHF`: the amount in its currency's minor units.
pub fn format_money(amount: i64, currency: &str) -> String {
    let exp = tollgate_domain::Currency::parse(currency)
        .map(|c| c.exponent())
        .unwrap_or(2) as u32;
    let div = 10i64.pow(exp);
    let whole = (amount / div).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let number = if exp == 0 {
        grouped
    } else {
        format!("{grouped}.{:0w$}", amount % div, w = exp as usize)
    };
    match currency {
        "USD" => format!("${number}"),
        "EUR" => format!("€{number}"),
        "GBP" => format!("£{number}"),
        "JPY" => format!("¥{number}"),
        _ => format!("{number} {currency}"),
    }
}

fn secure_headers(mut r: Response, sandbox: bool) -> Response {
    let csp = if sandbox {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    } else {
        "default-src 'none'; script-src 'self' https://js.stripe.com; style-src 'self'; img-src 'self' data: https://*.stripe.com; connect-src 'self' https://api.stripe.com; frame-src https://js.stripe.com https://hooks.stripe.com; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert("content-security-policy", v);
    }
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn shell(title: &str, body: &str, head_extra: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/pay/assets/pay.css\">{head_extra}</head>\
         <body><main>{body}</main></body></html>",
        esc(title)
    )
}

/// The plain page for a wrong, spent or expired link: nothing about the transaction.
pub fn notice(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<div class=\"card notice\"><h1>{}</h1><p>{}</p></div>",
        esc(title),
        esc(text)
    );
    secure_headers((status, shell(title, &body, "")).into_response(), true)
}

fn invalid() -> Response {
    notice(
        StatusCode::NOT_FOUND,
        "Payment link not valid",
        "This payment link is not valid, or it was already used.",
    )
}

#[derive(serde::Deserialize)]
pub struct PageQuery {
    token: Option<String>,
    /// Set when the buyer comes back from a failed attempt (3-D Secure failed).
    failed: Option<String>,
}

async fn page(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Ok(Some(t)) = store_tx::get_any(ctx.store.reader(), &id, "").await else {
        return invalid();
    };
    let Some(token) = q.token.as_deref() else {
        return invalid();
    };
    if !token_matches(token, t.approval_token_hash.as_deref()) {
        return invalid();
    }
    let t = if t.approval_expires_at.is_some_and(|at| at <= ctx.now()) {
        // Expire now rather than wait for the job (cancel first; a last-second payment wins).
        let t = match expire_approval(&ctx, &t).await {
            Ok(expired) => expired,
            Err(_) => t,
        };
        if matches!(
            t.status.as_str(),
            "buyer_approval_pending"
                | "processing"
                | "authorization_failed"
                | "authorization_declined"
        ) {
            return notice(
                StatusCode::GONE,
                "Payment link expired",
                "This payment link has expired. Please return to the merchant and start again.",
            );
        }
        t
    } else {
        t
    };
    let t = if t.payment_intent_id.is_none() {
        match sync_row(&ctx, &t).await {
            Ok(t) => t,
            Err(_) => {
                return notice(
                    StatusCode::BAD_GATEWAY,
                    "Payment unavailable",
                    "The payment service cannot be reached right now. Please try again in a moment.",
                );
            }
        }
    } else {
        t
    };
    if t.status != "buyer_approval_pending" {
        // Approved or ended: the completion URL sends the buyer back to the merchant.
        let mut r = (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                format!("/pay/{}/complete?token={token}", t.id),
            )],
        )
            .into_response();
        r.headers_mut()
            .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        return r;
    }
    let Ok(Some(conn)) = connections::get(ctx.store.reader(), &t.connection_id).await else {
        return invalid();
    };
    let merchant = accounts::get_merchant_account(ctx.store.reader(), &t.merchant_account_id)
        .await
        .ok()
        .flatten()
        .map(|m| m.display_name)
        .unwrap_or_else(|| t.merchant_account_id.clone());
    let stripe_js = if conn.sandbox {
        format!("{}/sandbox/stripe/js/v3/", ctx.public_url)
    } else {
        "https://js.stripe.com/v3/".to_string()
    };
    let amount = format_money(t.amount, &t.currency);
    let message = if q.failed.is_some() {
        match t.raw_response_code.as_deref() {
            // Stripe.js words it for buyers; the raw description is meant for developers.
            Some("payment_intent_authentication_failure") => "We are unable to authenticate your payment method. Please choose a different payment method and try again.".to_string(),
            _ => t
                .raw_response_description
                .clone()
                .unwrap_or_else(|| "The payment was not completed. Please try again or use another card.".into()),
        }
    } else {
        String::new()
    };
    let banner = if conn.sandbox {
        "<p class=\"sandbox\" role=\"note\">Sandbox: no real money moves. Test card 4242 4242 4242 4242, any future date, any CVC.</p>"
    } else {
        ""
    };
    let body = format!(
        "<div class=\"card\" id=\"pay\" data-publishable-key=\"{pk}\" data-client-secret=\"{cs}\" data-return-url=\"{ret}\">\
         {banner}<h1>Pay {merchant}</h1><p class=\"amount\" data-testid=\"amount\">{amount}</p>\
         <form id=\"payment-form\" novalidate><div id=\"payment-element\"></div>\
         <button id=\"submit\" type=\"submit\">Pay {amount}</button>\
         <p id=\"message\" class=\"message\" role=\"alert\" aria-live=\"polite\">{message}</p></form></div>",
        pk = esc(conn.publishable_key.as_deref().unwrap_or_default()),
        cs = esc(t.client_secret.as_deref().unwrap_or_default()),
        ret = esc(&format!(
            "{}/pay/{}/complete?token={token}",
            ctx.public_url, t.id
        )),
        merchant = esc(&merchant),
        amount = esc(&amount),
        message = esc(&message),
    );
    let head = format!(
        "<script src=\"{}\"></script><script src=\"/pay/assets/pay.js\" defer></script>",
        esc(&stripe_js)
    );
    secure_headers(
        (
            StatusCode::OK,
            shell(&format!("Pay {merchant}"), &body, &head),
        )
            .into_response(),
        conn.sandbox,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money() {
        assert_eq!(format_money(1299, "USD"), "$12.99");
        assert_eq!(format_money(123456, "EUR"), "€1,234.56");
        assert_eq!(format_money(1000, "JPY"), "¥1,000");
        assert_eq!(format_money(1500, "KWD"), "1.500 KWD");
        assert_eq!(format_money(5, "CHF"), "0.05 CHF");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
