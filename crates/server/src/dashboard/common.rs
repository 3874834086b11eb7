//! What the dashboard's pages share: the page frame, the error page, notices, and small helpers
//! for lists, forms and money. Everything shown is escaped.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use tollgate_store::{accounts, operators};

use super::session::{Session, see_other};
pub(super) use super::view::{Frame, render};
use crate::ApiContext;
use crate::error::ApiError;
use crate::page::{esc, format_money};

pub(super) type Form = axum::Form<Vec<(String, String)>>;
pub(super) type Params = Query<Vec<(String, String)>>;

// ---- layout ----------------------------------------------------------------------------------

pub fn csrf_input(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// A page of the dashboard whose body is still built as HTML text (being moved to templates).
#[derive(askama::Template)]
#[template(path = "dashboard/raw.html")]
struct RawPage<'a> {
    frame: Frame,
    body: &'a str,
}

/// A full dashboard page around `body` (HTML, already escaped).
pub(super) async fn page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    title: &str,
    active: &str,
    body: &str,
) -> Response {
    let frame = Frame::new(ctx, s, title, active).await;
    render(status, &RawPage { frame, body })
}

/// An error of an API handler, shown with its message and field details.
pub(super) async fn fail(ctx: &ApiContext, s: &Session, active: &str, e: ApiError) -> Response {
    let status = e.status();
    let body = e.body();
    if let ApiError::Internal(cause) = &e {
        tracing::error!(cause = %cause, "internal error (dashboard)");
    }
    let details: String = body["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| {
                    format!(
                        "<li><code>{}</code>: {}</li>",
                        esc(x["pointer"].as_str().unwrap_or_default()),
                        esc(x["message"].as_str().unwrap_or_default())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let back = super::view::NAV
        .iter()
        .find(|(k, _, _)| *k == active)
        .map(|(_, href, _)| *href)
        .unwrap_or("/dashboard");
    let html = format!(
        "<div class=\"error\" role=\"alert\"><p>{}</p>{}</div>\
         <p><a href=\"{back}\" data-back>Go back</a></p>",
        esc(body["message"].as_str().unwrap_or("The request failed.")),
        if details.is_empty() {
            String::new()
        } else {
            format!("<ul>{details}</ul>")
        }
    );
    page(ctx, s, status, "Not done", active, &html).await
}

pub(super) fn bad(message: &str) -> ApiError {
    ApiError::bad_request(message.to_string())
}

/// Fixed texts for `?done=…` after a redirect (fixed, so a crafted link cannot put words on
/// the page).
pub(super) fn notice(params: &[(String, String)]) -> String {
    notice_text(params)
        .map(|text| format!("<p class=\"notice\" role=\"status\">{text}</p>"))
        .unwrap_or_default()
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

/// A string of a JSON value for display ("" for null).
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-11-24T05:07:04.123Z` → `2026-11-24 05:07:04`.
pub(super) fn when(v: &Value) -> String {
    let s = text(v);
    match (s.get(..10), s.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => s,
    }
}

pub(super) fn money(v: &Value, amount_key: &str) -> String {
    format_money(
        v[amount_key].as_i64().unwrap_or(0),
        v["currency"].as_str().unwrap_or("USD"),
    )
}

pub(super) fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge badge-{}\">{}</span>",
        esc(&status.replace('_', "-")),
        esc(status)
    )
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

pub(super) fn api_uri(path: &str, pairs: &[(&str, String)]) -> Uri {
    let q = query_string(pairs);
    format!("{path}?{q}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Previous / next links of a cursor page, keeping the filters.
pub(super) fn pager(base: &str, filters: &[(&str, String)], listed: &Value) -> String {
    let link = |cursor: &Value, label: &str, rel: &str| -> String {
        match cursor.as_str() {
            Some(c) => {
                let mut pairs: Vec<(&str, String)> = filters.to_vec();
                pairs.push(("cursor", c.to_string()));
                format!(
                    "<a rel=\"{rel}\" href=\"{base}?{}\">{label}</a>",
                    esc(&query_string(&pairs))
                )
            }
            None => String::new(),
        }
    };
    format!(
        "<nav class=\"pager\">{}{}</nav>",
        link(&listed["previous_cursor"], "← Newer", "prev"),
        link(&listed["next_cursor"], "Older →", "next")
    )
}

pub(super) fn select(name: &str, options: &[&str], current: Option<&str>, any: &str) -> String {
    let mut out = format!("<select name=\"{name}\"><option value=\"\">{any}</option>");
    for o in options {
        out.push_str(&format!(
            "<option value=\"{o}\"{}>{o}</option>",
            if current == Some(*o) { " selected" } else { "" }
        ));
    }
    out.push_str("</select>");
    out
}

pub(super) fn confirm_box(label: &str) -> String {
    format!(
        "<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> {}</label>",
        esc(label)
    )
}

/// Query pairs of a list page or an API call.
pub(super) type Pairs = Vec<(&'static str, String)>;

/// A status-filtered list page's filter (kept for the pager links) and the API query it makes
/// (the filter, 25 a page, the cursor).
pub(super) fn status_query(params: &[(String, String)]) -> (Pairs, Pairs) {
    let filters: Pairs = param(params, "status")
        .map(|v| ("status", v.to_string()))
        .into_iter()
        .collect();
    let mut q = filters.clone();
    q.push(("limit", "25".into()));
    if let Some(c) = param(params, "cursor") {
        q.push(("cursor", c.to_string()));
    }
    (filters, q)
}

/// The body of a list page filtered by status: notice, filter form, `table`, pager.
pub(super) fn status_list(
    params: &[(String, String)],
    path: &str,
    statuses: &[&str],
    table: String,
    filters: &[(&str, String)],
    listed: &Value,
) -> String {
    format!(
        "{notice}<form method=\"get\" action=\"{path}\" class=\"filters\">\
         <label>Status {status}</label><button type=\"submit\">Filter</button></form>{table}{pager}",
        notice = notice(params),
        status = select("status", statuses, param(params, "status"), "any"),
        pager = pager(path, filters, listed),
    )
}

/// One table row per item of an API list answer.
pub(super) fn item_rows(listed: &Value, row: impl Fn(&Value) -> String) -> Vec<String> {
    listed["items"]
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

pub(super) fn table(head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let th: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
    format!(
        "<div class=\"table-wrap\"><table><thead><tr>{th}</tr></thead><tbody>{}</tbody></table></div>",
        rows.concat()
    )
}

pub(super) fn json_block(v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    format!("<pre class=\"payload\">{}</pre>", esc(&pretty))
}

// ---- home, account, 404 ----------------------------------------------------------------------

pub async fn home() -> Response {
    see_other("/dashboard/overview")
}

pub async fn not_found(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
) -> Response {
    page(
        &ctx,
        &s,
        StatusCode::NOT_FOUND,
        "Not found",
        "",
        "<p>There is no such dashboard page.</p>",
    )
    .await
}

pub async fn switch_account(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let Some(id) = param(&form, "merchant_account_id") else {
        return fail(&ctx, &s, "", bad("Choose a merchant account.")).await;
    };
    match accounts::get_merchant_account(ctx.store.reader(), id).await {
        Ok(Some(_)) => {}
        Ok(None) => return fail(&ctx, &s, "", ApiError::not_found("merchant account")).await,
        Err(e) => return fail(&ctx, &s, "", e.into()).await,
    }
    if let Err(e) = operators::set_session_account(ctx.store.writer(), &s.id_hash, id).await {
        return fail(&ctx, &s, "", e.into()).await;
    }
    see_other("/dashboard/transactions?done=account_switched")
}
