//! The dashboard's pages and actions. Pages read through the API's handlers and render their
//! JSON; actions are `POST` + CSRF (checked by the session layer) + redirect (post/redirect/get),
//! and call the API's handlers too, or the service behind them (capture, void). Everything
//! shown is escaped with [`esc`]: names, ids and above all webhook payloads come from outside.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_store::{accounts, connections as store_conn, entitlements as es, operators};

use super::layout::{head, secure};
use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::auth::{KeyKind, new_key};
use crate::error::ApiError;
use crate::page::{esc, format_money};

type Form = axum::Form<Vec<(String, String)>>;
type Params = Query<Vec<(String, String)>>;

// ---- layout ----------------------------------------------------------------------------------

fn sandbox_banner(ctx: &ApiContext) -> &'static str {
    if ctx.sandbox_running() {
        "<div class=\"sandbox-banner\" role=\"status\" data-testid=\"sandbox-banner\">Sandbox mode: \
         payments go to Tollgate's built-in Stripe sandbox. No real money moves.</div>"
    } else {
        ""
    }
}

const NAV: &[(&str, &str, &str)] = &[
    ("transactions", "/dashboard/transactions", "Transactions"),
    ("connections", "/dashboard/connections", "Connections"),
    ("webhooks", "/dashboard/webhooks", "Webhooks"),
    ("deliveries", "/dashboard/deliveries", "Deliveries"),
    ("customers", "/dashboard/customers", "Customers"),
    ("catalogue", "/dashboard/catalogue", "Catalogue"),
    ("keys", "/dashboard/keys", "API keys"),
];

pub fn csrf_input(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// A full dashboard page.
async fn page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    title: &str,
    active: &str,
    body: &str,
) -> Response {
    let nav: String = NAV
        .iter()
        .map(|(key, href, label)| {
            let current = if *key == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{current}>{label}</a>")
        })
        .collect();
    // The merchant-account switcher, when there is more than one account.
    let accounts_list = accounts::list_merchant_accounts(ctx.store.reader())
        .await
        .unwrap_or_default();
    let switcher = if accounts_list.len() > 1 {
        let options: String = accounts_list
            .iter()
            .map(|a| {
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    esc(&a.id),
                    if a.id == s.merchant_account_id {
                        " selected"
                    } else {
                        ""
                    },
                    esc(&a.display_name)
                )
            })
            .collect();
        format!(
            "<form method=\"post\" action=\"/dashboard/account\" class=\"inline\">{}\
             <label>Account <select name=\"merchant_account_id\">{options}</select></label>\
             <button type=\"submit\">Switch</button></form>",
            csrf_input(s)
        )
    } else {
        String::new()
    };
    let html = format!(
        "{head}<body>{banner}<header class=\"top\"><a class=\"brand\" href=\"/dashboard\">Tollgate</a>\
         <nav>{nav}</nav><div class=\"who\">{switcher}\
         <form method=\"post\" action=\"/dashboard/logout\" class=\"inline\">{csrf}\
         <button type=\"submit\" class=\"link\">Log out {user}</button></form></div></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        head = head(title),
        banner = sandbox_banner(ctx),
        csrf = csrf_input(s),
        user = esc(&s.username),
        title = esc(title),
    );
    secure((status, html).into_response())
}

pub fn login_html(
    ctx: &ApiContext,
    token: &str,
    next: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let html = format!(
        "{}<body>{}<main class=\"narrow\"><h1>Tollgate dashboard</h1>{error}\
         <form method=\"post\" action=\"/dashboard/login\" class=\"card stack\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Username <input name=\"username\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">Operators are created with <code>tollgate operator create</code>.</p>\
         </main></body></html>",
        head("Log in"),
        sandbox_banner(ctx),
        esc(token),
        esc(next),
    );
    secure((status, html).into_response())
}

/// An error of an API handler, shown with its message and field details.
async fn fail(ctx: &ApiContext, s: &Session, active: &str, e: ApiError) -> Response {
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
    let back = NAV
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

fn bad(message: &str) -> ApiError {
    ApiError::bad_request(message.to_string())
}

/// Fixed texts for `?done=…` after a redirect (fixed, so a crafted link cannot put words on
/// the page).
fn notice(params: &[(String, String)]) -> String {
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
        _ => return String::new(),
    };
    format!("<p class=\"notice\" role=\"status\">{text}</p>")
}

// ---- small helpers ---------------------------------------------------------------------------

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn all<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect()
}

fn confirmed(form: &[(String, String)]) -> Result<(), ApiError> {
    match param(form, "confirm") {
        Some("yes") => Ok(()),
        _ => Err(bad("Tick the confirmation box to do this.")),
    }
}

/// A string of a JSON value for display ("" for null).
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-11-24T05:07:04.123Z` → `2026-11-24 05:07:04`.
fn when(v: &Value) -> String {
    let s = text(v);
    match (s.get(..10), s.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => s,
    }
}

fn money(v: &Value, amount_key: &str) -> String {
    format_money(
        v[amount_key].as_i64().unwrap_or(0),
        v["currency"].as_str().unwrap_or("USD"),
    )
}

fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge badge-{}\">{}</span>",
        esc(&status.replace('_', "-")),
        esc(status)
    )
}

/// A path segment: everything but unreserved characters (RFC 3986) percent-encoded.
fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn query_string(pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

fn api_uri(path: &str, pairs: &[(&str, String)]) -> Uri {
    let q = query_string(pairs);
    format!("{path}?{q}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Previous / next links of a cursor page, keeping the filters.
fn pager(base: &str, filters: &[(&str, String)], listed: &Value) -> String {
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

fn select(name: &str, options: &[&str], current: Option<&str>, any: &str) -> String {
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

fn confirm_box(label: &str) -> String {
    format!(
        "<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> {}</label>",
        esc(label)
    )
}

/// Query pairs of a list page or an API call.
type Pairs = Vec<(&'static str, String)>;

/// A status-filtered list page's filter (kept for the pager links) and the API query it makes
/// (the filter, 25 a page, the cursor).
fn status_query(params: &[(String, String)]) -> (Pairs, Pairs) {
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
fn status_list(
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
fn item_rows(listed: &Value, row: impl Fn(&Value) -> String) -> Vec<String> {
    listed["items"]
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

fn table(head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let th: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
    format!(
        "<div class=\"table-wrap\"><table><thead><tr>{th}</tr></thead><tbody>{}</tbody></table></div>",
        rows.concat()
    )
}

fn json_block(v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    format!("<pre class=\"payload\">{}</pre>", esc(&pretty))
}

// ---- home, account, 404 ----------------------------------------------------------------------

pub async fn home() -> Response {
    see_other("/dashboard/transactions")
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

// ---- connections -----------------------------------------------------------------------------

/// The Stripe events a connection's webhook endpoint should send (SPEC §4).
pub const WEBHOOK_EVENTS: &[&str] = &[
    "charge.expired",
    "charge.refund.updated",
    "charge.refunded",
    "charge.failed",
    "charge.succeeded",
    "payment_intent.succeeded",
    "payment_intent.amount_capturable_updated",
    "payment_intent.payment_failed",
    "payment_intent.partially_funded",
    "payment_intent.canceled",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
    "credit_note.created",
];

pub async fn connections(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let listed = match api::connections::list(State(ctx.clone()), super::caller(&s)).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "connections", e).await,
    };
    let rows = item_rows(&listed, |c| {
        format!(
            "<tr><td><a href=\"/dashboard/connections/{id}\">{name}</a>{sb}</td><td>{status}</td>\
                 <td><code>{sk}</code></td><td>{default}</td></tr>",
            id = esc(&seg(&text(&c["id"]))),
            name = esc(&text(&c["display_name"])),
            sb = if c["sandbox"] == json!(true) {
                " <span class=\"badge\">sandbox</span>"
            } else {
                ""
            },
            status = badge(&text(&c["status"])),
            sk = esc(&text(&c["secret_key"])),
            default = if c["default"] == json!(true) {
                "default"
            } else {
                ""
            },
        )
    });
    let body = format!(
        "{notice}{table}\
         <h2>Add a Stripe connection</h2>\
         <form method=\"post\" action=\"/dashboard/connections\" class=\"card stack\" autocomplete=\"off\">{csrf}\
         <label>Name <input name=\"display_name\" placeholder=\"Stripe (live)\"></label>\
         <label>Secret key (<code>sk_…</code> or restricted <code>rk_…</code>) <input name=\"secret_key\" type=\"password\" required autocomplete=\"off\" spellcheck=\"false\"></label>\
         <label>Publishable key (<code>pk_…</code>, for payments) <input name=\"publishable_key\" spellcheck=\"false\"></label>\
         <label>Connected account (<code>acct_…</code>, optional) <input name=\"stripe_account\" spellcheck=\"false\"></label>\
         <label>API version (optional) <input name=\"api_version\" placeholder=\"2026-10-28.endive\"></label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"default\" value=\"true\"> Default payments connection</label>\
         <button type=\"submit\">Save connection</button>\
         <p class=\"hint\">The webhook URL to register in Stripe is shown next. The key is stored encrypted and never shown again in full.</p>\
         </form>",
        notice = notice(&params),
        table = table(
            &["Name", "Status", "Secret key", ""],
            &rows,
            "No connections yet."
        ),
        csrf = csrf_input(&s),
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Connections",
        "connections",
        &body,
    )
    .await
}

pub async fn connection_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    body.insert("type".into(), json!("stripe"));
    for k in [
        "display_name",
        "secret_key",
        "publishable_key",
        "stripe_account",
        "api_version",
    ] {
        if let Some(v) = param(&form, k) {
            body.insert(k.into(), json!(v));
        }
    }
    if param(&form, "default") == Some("true") {
        body.insert("default".into(), json!(true));
    }
    let created = match api::typed::from_object(body) {
        Ok(b) => {
            api::connections::create(State(ctx.clone()), super::caller(&s), api::typed::Body(b))
                .await
        }
        Err(e) => Err(e),
    };
    match created {
        Ok((_, j)) => see_other(&format!(
            "/dashboard/connections/{}?done=connection_created",
            seg(&j.0.id)
        )),
        Err(e) => fail(&ctx, &s, "connections", e).await,
    }
}

pub async fn connection(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let c = match api::connections::get(State(ctx.clone()), super::caller(&s), Path(id.clone()))
        .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "connections", e).await,
    };
    let status = text(&c["status"]);
    let events: String = WEBHOOK_EVENTS
        .iter()
        .map(|e| format!("<li><code>{e}</code></li>"))
        .collect();
    let verify = if param(&params, "verify").is_some() {
        match api::connections::verify(
            State(ctx.clone()),
            super::caller(&s),
            Path(id.clone()),
            api::typed::Body(Default::default()),
        )
        .await
        {
            Ok(j) => render_verification(&serde_json::to_value(&j.0).unwrap_or_default()),
            Err(e) => format!(
                "<div class=\"error\" role=\"alert\">{}</div>",
                esc(e.body()["message"].as_str().unwrap_or_default())
            ),
        }
    } else {
        String::new()
    };
    let secret_step = if status == "awaiting_webhook_secret" {
        "<p class=\"warn\">Until you paste the webhook signing secret, this connection is <strong>awaiting_webhook_secret</strong> and refuses Stripe's events.</p>"
    } else {
        "<p>A signing secret is set (shown masked above). Paste a new one to rotate it: the previous one keeps verifying during the rotation.</p>"
    };
    let body = format!(
        "{notice}<section class=\"card\"><h2>1. Credentials</h2><dl>\
         <dt>Status</dt><dd>{status_badge}</dd>\
         <dt>Name</dt><dd>{name}</dd>\
         <dt>Secret key</dt><dd><code data-testid=\"secret-key\">{sk}</code></dd>\
         <dt>Publishable key</dt><dd><code>{pk}</code></dd>\
         <dt>Webhook secret</dt><dd><code>{ws}</code></dd>\
         <dt>Connected account</dt><dd><code>{acct}</code></dd>\
         <dt>API version</dt><dd>{ver}</dd>\
         <dt>Default</dt><dd>{default}</dd></dl></section>\
         <section class=\"card\"><h2>2. Register the webhook in Stripe</h2>\
         <p>In Stripe's dashboard (Developers → Webhooks → Add endpoint), paste this URL:</p>\
         <div class=\"copy-row\"><input id=\"webhook-url\" data-testid=\"webhook-url\" readonly value=\"{url}\">\
         <button type=\"button\" data-copy=\"#webhook-url\">Copy</button></div>\
         <p>and enable these events:</p><ul class=\"events\">{events}</ul>\
         <div class=\"copy-row\"><input id=\"event-list\" readonly value=\"{event_csv}\">\
         <button type=\"button\" data-copy=\"#event-list\">Copy list</button></div></section>\
         <section class=\"card\"><h2>3. Webhook signing secret</h2>{secret_step}\
         <form method=\"post\" action=\"/dashboard/connections/{sid}/webhook-secret\" class=\"stack\" autocomplete=\"off\">{csrf}\
         <label>Signing secret (<code>whsec_…</code>) <input name=\"webhook_secret\" type=\"password\" required autocomplete=\"off\" spellcheck=\"false\"></label>\
         <button type=\"submit\">Save signing secret</button></form></section>\
         <section class=\"card\"><h2>4. Key permissions</h2>\
         <p>Checks, per resource, what the key may read and write at Stripe.</p>\
         <p><a class=\"button\" href=\"/dashboard/connections/{sid}?verify=1\">Check key permissions</a></p>{verify}</section>",
        notice = notice(&params),
        status_badge = badge(&status),
        name = esc(&text(&c["display_name"])),
        sk = esc(&text(&c["secret_key"])),
        pk = esc(&text(&c["publishable_key"])),
        ws = esc(&text(&c["webhook_secret"])),
        acct = esc(&text(&c["stripe_account"])),
        ver = esc(&text(&c["api_version"])),
        default = if c["default"] == json!(true) {
            "yes"
        } else {
            "no"
        },
        url = esc(&text(&c["webhook_url"])),
        event_csv = WEBHOOK_EVENTS.join(","),
        sid = esc(&seg(&id)),
        csrf = csrf_input(&s),
    );
    let title = format!("Connection {}", text(&c["display_name"]));
    page(&ctx, &s, StatusCode::OK, &title, "connections", &body).await
}

fn render_verification(v: &Value) -> String {
    let yes_no = |x: &Value| match x.as_bool() {
        Some(true) => "<span class=\"ok\">yes</span>".to_string(),
        Some(false) => "<span class=\"bad\">no</span>".to_string(),
        None => "<span>unknown</span>".to_string(),
    };
    let rows: Vec<String> = v["read"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&text(&x["resource"])),
                        yes_no(&x["read"]),
                        esc(&text(&x["note"]))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<div data-testid=\"verification\"><p>Credentials valid: {}. Payments ready (writes PaymentIntents and Refunds): {}.</p>{}</div>",
        yes_no(&v["credentials_valid"]),
        yes_no(&v["payments_ready"]),
        table(&["Resource", "Readable", "Note"], &rows, "")
    )
}

pub async fn connection_webhook_secret(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let Some(secret) = param(&form, "webhook_secret") else {
        return fail(
            &ctx,
            &s,
            "connections",
            bad("Paste the signing secret (whsec_…)."),
        )
        .await;
    };
    let mut body = Map::new();
    body.insert("webhook_secret".into(), json!(secret));
    let updated = match api::typed::from_object(body) {
        Ok(b) => {
            api::connections::update(
                State(ctx.clone()),
                super::caller(&s),
                Path(id.clone()),
                api::typed::Body(b),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match updated {
        Ok(_) => see_other(&format!(
            "/dashboard/connections/{}?done=webhook_secret_saved",
            seg(&id)
        )),
        Err(e) => fail(&ctx, &s, "connections", e).await,
    }
}

// ---- transactions ----------------------------------------------------------------------------

const TX_STATUSES: &[&str] = &tollgate_domain::TransactionStatus::NAMES;

fn valid_date(d: &str) -> bool {
    d.len() == 10
        && d.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

pub async fn transactions(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    // The page's filters, kept for the pager links.
    let mut filters: Vec<(&str, String)> = Vec::new();
    for k in ["status", "from", "to", "min", "max", "customid"] {
        if let Some(v) = param(&params, k) {
            filters.push((k, v.to_string()));
        }
    }
    // …and the API query they make.
    let mut q: Vec<(&str, String)> = vec![("limit", "25".into())];
    for (k, v) in &filters {
        match *k {
            "status" => q.push(("status", v.clone())),
            "customid" => q.push(("customid", v.clone())),
            "min" => q.push(("amount_gte", v.clone())),
            "max" => q.push(("amount_lte", v.clone())),
            "from" | "to" => {
                if !valid_date(v) {
                    return fail(&ctx, &s, "transactions", bad("Dates are YYYY-MM-DD.")).await;
                }
                if *k == "from" {
                    q.push(("created_at_gte", format!("{v}T00:00:00Z")));
                } else {
                    q.push(("created_at_lte", format!("{v}T23:59:59.999Z")));
                }
            }
            _ => {}
        }
    }
    if let Some(c) = param(&params, "cursor") {
        q.push(("cursor", c.to_string()));
    }
    let listed = match match api::transactions::ListParams::parse(
        api_uri("/transactions", &q).query().unwrap_or(""),
    ) {
        Ok(p) => api::transactions::list(State(ctx.clone()), super::caller(&s), p).await,
        Err(e) => Err(e),
    } {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let rows = item_rows(&listed, |t| {
        format!(
            "<tr><td>{created}</td><td><a href=\"/dashboard/transactions/{id}\">{id_text}</a></td>\
                 <td>{status}</td><td class=\"num\">{amount}</td><td>{who}</td></tr>",
            created = esc(&when(&t["created_at"])),
            id = esc(&seg(&text(&t["id"]))),
            id_text = esc(&text(&t["id"])),
            status = badge(&text(&t["status"])),
            amount = esc(&money(t, "amount")),
            who = esc(&text(if t["customid"].is_null() {
                &t["external_identifier"]
            } else {
                &t["customid"]
            })),
        )
    });
    let get = |k: &str| esc(param(&params, k).unwrap_or_default());
    let body = format!(
        "{notice}<form method=\"get\" action=\"/dashboard/transactions\" class=\"filters\">\
         <label>Status {status}</label>\
         <label>From <input type=\"date\" name=\"from\" value=\"{from}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{to}\"></label>\
         <label>Min amount <input name=\"min\" inputmode=\"numeric\" placeholder=\"minor units\" value=\"{min}\"></label>\
         <label>Max amount <input name=\"max\" inputmode=\"numeric\" placeholder=\"minor units\" value=\"{max}\"></label>\
         <label>Customer <input name=\"customid\" value=\"{customid}\"></label>\
         <button type=\"submit\">Filter</button></form>{table}{pager}",
        notice = notice(&params),
        status = select("status", TX_STATUSES, param(&params, "status"), "any"),
        from = get("from"),
        to = get("to"),
        min = get("min"),
        max = get("max"),
        customid = get("customid"),
        table = table(
            &[
                "Created (UTC)",
                "Transaction",
                "Status",
                "Amount",
                "Customer / reference"
            ],
            &rows,
            "No transactions match."
        ),
        pager = pager("/dashboard/transactions", &filters, &listed),
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Transactions",
        "transactions",
        &body,
    )
    .await
}

pub async fn transaction(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let c = || super::caller(&s);
    let st = || State(ctx.clone());
    let t = match api::transactions::get(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let events = match api::transactions::events(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let refunds = match api::refunds::list(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let status = text(&t["status"]);
    let timeline: String = events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    format!(
                        "<li><time>{}</time> <strong>{}</strong><details><summary>details</summary>{}</details></li>",
                        esc(&when(&e["created_at"])),
                        esc(&text(&e["name"])),
                        json_block(&e["context"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let refund_rows: Vec<String> = refunds["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|r| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                        esc(&when(&r["created_at"])),
                        badge(&text(&r["status"])),
                        esc(&money(r, "amount")),
                        esc(&text(&r["payment_service_refund_id"])),
                        esc(&text(&r["reason"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let sid = esc(&seg(&id));
    let csrf = csrf_input(&s);
    let mut actions = String::new();
    if status == "authorization_succeeded" {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/dashboard/transactions/{sid}/capture\" class=\"card stack\">{csrf}\
             <h3>Capture</h3><label>Amount (minor units; empty: all) <input name=\"amount\" inputmode=\"numeric\"></label>\
             {confirm}<button type=\"submit\">Capture</button></form>\
             <form method=\"post\" action=\"/dashboard/transactions/{sid}/void\" class=\"card stack\">{csrf}\
             <h3>Void</h3><p>Releases the authorization; the buyer is not charged.</p>{confirm_void}\
             <button type=\"submit\" class=\"danger\">Void</button></form>",
            confirm = confirm_box("I want to capture this payment"),
            confirm_void = confirm_box("I want to void this authorization"),
        ));
    }
    let refundable =
        t["captured_amount"].as_i64().unwrap_or(0) - t["refunded_amount"].as_i64().unwrap_or(0);
    if refundable > 0 {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/dashboard/transactions/{sid}/refund\" class=\"card stack\">{csrf}\
             <h3>Refund</h3><p>Up to {left} can be refunded.</p>\
             <label>Amount (minor units; empty: everything left) <input name=\"amount\" inputmode=\"numeric\"></label>\
             <label>Reason (optional) <input name=\"reason\" maxlength=\"200\"></label>\
             {confirm}<button type=\"submit\" class=\"danger\">Refund</button></form>",
            left = esc(&format_money(refundable, t["currency"].as_str().unwrap_or("USD"))),
            confirm = confirm_box("I want to refund this payment"),
        ));
    }
    let body = format!(
        "{notice}<section class=\"card\"><dl>\
         <dt>Status</dt><dd data-testid=\"status\">{status_badge}</dd>\
         <dt>Amount</dt><dd>{amount}</dd>\
         <dt>Captured</dt><dd>{captured}</dd>\
         <dt>Refunded</dt><dd>{refunded}</dd>\
         <dt>Intent</dt><dd>{intent}</dd>\
         <dt>Customer</dt><dd>{customid}</dd>\
         <dt>Reference</dt><dd>{ext}</dd>\
         <dt>Stripe PaymentIntent</dt><dd><code>{pi}</code></dd>\
         <dt>Connection</dt><dd><a href=\"/dashboard/connections/{conn_seg}\"><code>{conn}</code></a></dd>\
         <dt>Error</dt><dd>{err}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Updated</dt><dd>{updated}</dd></dl></section>\
         <div class=\"actions\">{actions}</div>\
         <h2>Refunds</h2>{refund_table}\
         <h2>Timeline</h2><ol class=\"timeline\" data-testid=\"timeline\">{timeline}</ol>",
        notice = notice(&params),
        status_badge = badge(&status),
        amount = esc(&money(&t, "amount")),
        captured = esc(&money(&t, "captured_amount")),
        refunded = esc(&money(&t, "refunded_amount")),
        intent = esc(&text(&t["intent"])),
        customid = esc(&text(&t["customid"])),
        ext = esc(&text(&t["external_identifier"])),
        pi = esc(&text(&t["additional_identifiers"]["payment_id"])),
        conn_seg = esc(&seg(&text(&t["payment_service"]["id"]))),
        conn = esc(&text(&t["payment_service"]["id"])),
        err = esc(
            [text(&t["error_code"]), text(&t["raw_response_description"])]
                .join(" ")
                .trim()
        ),
        created = esc(&when(&t["created_at"])),
        updated = esc(&when(&t["updated_at"])),
        refund_table = table(
            &[
                "Created (UTC)",
                "Status",
                "Amount",
                "Stripe refund",
                "Reason"
            ],
            &refund_rows,
            "No refunds."
        ),
    );
    let title = format!("Transaction {id}");
    page(&ctx, &s, StatusCode::OK, &title, "transactions", &body).await
}

/// An optional minor-units amount field.
fn amount_field(form: &[(String, String)], body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(a) = param(form, "amount") {
        let n = a
            .parse::<i64>()
            .map_err(|_| bad("The amount is a whole number of minor units (1299 for 12.99)."))?;
        body.insert("amount".into(), json!(n));
    }
    Ok(())
}

pub async fn transaction_capture(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Err(e) = confirmed(&form).and_then(|_| amount_field(&form, &mut body)) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    let done =
        crate::transactions::capture(&ctx, &super::caller(&s), &id, body.get("amount")).await;
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=captured",
            seg(&id)
        )),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}

pub async fn transaction_void(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    let done = crate::transactions::void(&ctx, &super::caller(&s), &id).await;
    match done {
        Ok(_) => see_other(&format!("/dashboard/transactions/{}?done=voided", seg(&id))),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}

pub async fn transaction_refund(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Err(e) = confirmed(&form).and_then(|_| amount_field(&form, &mut body)) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    if let Some(r) = param(&form, "reason") {
        body.insert("reason".into(), json!(r));
    }
    let done = match api::typed::from_object(body) {
        Ok(body) => {
            api::refunds::create(
                State(ctx.clone()),
                super::caller(&s),
                Path(id.clone()),
                HeaderMap::new(),
                api::typed::Body(body),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=refunded",
            seg(&id)
        )),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}

// ---- webhooks received -----------------------------------------------------------------------

const INBOX_STATUSES: &[&str] = &["received", "applied", "ignored", "failed", "dead"];

pub async fn webhooks(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let (filters, q) = status_query(&params);
    let listed = match api::webhook_events::list(
        State(ctx.clone()),
        super::caller(&s),
        api_uri("/webhook-events", &q),
    )
    .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "webhooks", e).await,
    };
    let rows = item_rows(&listed, |w| {
        format!(
            "<tr><td>{}</td><td><a href=\"/dashboard/webhooks/{}\">{}</a></td><td><code>{}</code></td>\
                 <td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&when(&w["received_at"])),
            esc(&seg(&text(&w["id"]))),
            esc(&text(&w["event_type"])),
            esc(&text(&w["stripe_event_id"])),
            badge(&text(&w["status"])),
            esc(&text(&w["attempts"])),
            esc(&text(&w["note"])),
        )
    });
    let body = status_list(
        &params,
        "/dashboard/webhooks",
        INBOX_STATUSES,
        table(
            &[
                "Received (UTC)",
                "Event",
                "Stripe id",
                "Status",
                "Attempts",
                "Note",
            ],
            &rows,
            "No webhook events.",
        ),
        &filters,
        &listed,
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Webhooks received",
        "webhooks",
        &body,
    )
    .await
}

pub async fn webhook(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let w = match api::webhook_events::get(State(ctx.clone()), super::caller(&s), Path(id.clone()))
        .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "webhooks", e).await,
    };
    let body = format!(
        "{notice}<section class=\"card\"><dl>\
         <dt>Status</dt><dd data-testid=\"status\">{status}</dd>\
         <dt>Event</dt><dd>{kind}</dd><dt>Stripe id</dt><dd><code>{evt}</code></dd>\
         <dt>Connection</dt><dd><code>{conn}</code></dd><dt>API version</dt><dd>{ver}</dd>\
         <dt>Attempts</dt><dd>{attempts}</dd><dt>Note</dt><dd>{note}</dd>\
         <dt>Received</dt><dd>{received}</dd><dt>Applied</dt><dd>{applied}</dd></dl></section>\
         <form method=\"post\" action=\"/dashboard/webhooks/{sid}/replay\" class=\"card stack\">{csrf}\
         <p>Replay applies the stored event again (after fixing what made it fail).</p>\
         <button type=\"submit\">Replay</button></form>\
         <h2>Payload</h2>{payload}",
        notice = notice(&params),
        status = badge(&text(&w["status"])),
        kind = esc(&text(&w["event_type"])),
        evt = esc(&text(&w["stripe_event_id"])),
        conn = esc(&text(&w["connection_id"])),
        ver = esc(&text(&w["api_version"])),
        attempts = esc(&text(&w["attempts"])),
        note = esc(&text(&w["note"])),
        received = esc(&when(&w["received_at"])),
        applied = esc(&when(&w["applied_at"])),
        sid = esc(&seg(&id)),
        csrf = csrf_input(&s),
        payload = json_block(&w["payload"]),
    );
    page(&ctx, &s, StatusCode::OK, "Webhook event", "webhooks", &body).await
}

pub async fn webhook_replay(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhook_events::replay(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        api::typed::Body(api::webhook_events::NoFields {}),
    )
    .await
    {
        Ok(_) => see_other(&format!("/dashboard/webhooks/{}?done=replayed", seg(&id))),
        Err(e) => fail(&ctx, &s, "webhooks", e).await,
    }
}

// ---- outbound deliveries ---------------------------------------------------------------------

const DELIVERY_STATUSES: &[&str] = &["pending", "failed", "delivered", "dead"];

pub async fn deliveries(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let (filters, q) = status_query(&params);
    let listed = match api::webhooks_out::KnownParams::parse(
        api_uri("/webhook-deliveries", &q).query().unwrap_or(""),
    ) {
        Ok(query) => {
            api::webhooks_out::list_deliveries(State(ctx.clone()), super::caller(&s), query).await
        }
        Err(e) => Err(e),
    };
    let listed = match listed {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "deliveries", e).await,
    };
    let rows = item_rows(&listed, |d| {
        format!(
            "<tr><td>{}</td><td><a href=\"/dashboard/deliveries/{}\">{}</a></td><td>{}</td>\
                 <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(&d["created_at"])),
            esc(&seg(&text(&d["id"]))),
            esc(&text(&d["event_name"])),
            badge(&text(&d["status"])),
            esc(&text(&d["attempts"])),
            esc(&text(&d["last_status_code"])),
            esc(&text(&d["last_error"])),
        )
    });
    let body = status_list(
        &params,
        "/dashboard/deliveries",
        DELIVERY_STATUSES,
        table(
            &[
                "Created (UTC)",
                "Event",
                "Status",
                "Attempts",
                "Last HTTP status",
                "Last error",
            ],
            &rows,
            "No outbound deliveries (add a webhook subscription through the API).",
        ),
        &filters,
        &listed,
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Outbound deliveries",
        "deliveries",
        &body,
    )
    .await
}

pub async fn delivery(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let d = match api::webhooks_out::get_delivery(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
    )
    .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "deliveries", e).await,
    };
    let attempts: Vec<String> = d["attempt_log"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|a| {
                    format!(
                        "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        esc(&text(&a["attempt"])),
                        esc(&when(&a["attempted_at"])),
                        esc(&text(&a["status_code"])),
                        esc(&text(&a["latency_ms"])),
                        esc(&text(&a["error"])),
                        esc(&text(&a["response_excerpt"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = format!(
        "{notice}<section class=\"card\"><dl>\
         <dt>Status</dt><dd data-testid=\"status\">{status}</dd><dt>Event</dt><dd>{name}</dd>\
         <dt>Subscription</dt><dd><code>{sub}</code></dd><dt>Attempts</dt><dd>{n}</dd>\
         <dt>Next attempt</dt><dd>{next}</dd><dt>Delivered</dt><dd>{delivered}</dd></dl></section>\
         <form method=\"post\" action=\"/dashboard/deliveries/{sid}/resend\" class=\"card stack\">{csrf}\
         <p>Resend delivers the same event again (same id, so receivers can deduplicate).</p>\
         <button type=\"submit\">Resend</button></form>\
         <h2>Attempts</h2>{attempts}<h2>Event</h2>{event}",
        notice = notice(&params),
        status = badge(&text(&d["status"])),
        name = esc(&text(&d["event_name"])),
        sub = esc(&text(&d["subscription_id"])),
        n = esc(&text(&d["attempts"])),
        next = esc(&when(&d["next_attempt_at"])),
        delivered = esc(&when(&d["delivered_at"])),
        sid = esc(&seg(&id)),
        csrf = csrf_input(&s),
        attempts = table(
            &["#", "At (UTC)", "HTTP status", "ms", "Error", "Response"],
            &attempts,
            "No attempts yet."
        ),
        event = json_block(&d["event"]),
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Outbound delivery",
        "deliveries",
        &body,
    )
    .await
}

pub async fn delivery_resend(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhooks_out::resend(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        api::typed::Body(api::webhooks_out::NoBody {}),
    )
    .await
    {
        Ok(_) => see_other(&format!("/dashboard/deliveries/{}?done=resent", seg(&id))),
        Err(e) => fail(&ctx, &s, "deliveries", e).await,
    }
}

// ---- customers -------------------------------------------------------------------------------

pub async fn customers(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let merchant = s.merchant_account_id.clone();
    let mut found = String::new();
    if let Some(q) = param(&params, "q") {
        if q.starts_with("cus_") {
            // A Stripe customer: find its link on any connection of this account.
            let conns = match store_conn::list(ctx.store.reader(), Some(&merchant)).await {
                Ok(c) => c,
                Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
            };
            for c in conns {
                match es::get_link(ctx.store.reader(), &c.id, q, "").await {
                    Ok(Some(link)) => {
                        return see_other(&format!("/dashboard/customers/{}", seg(&link.customid)));
                    }
                    Ok(None) => {}
                    Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
                }
            }
            found = format!(
                "<p class=\"empty\">No customer is linked to the Stripe customer <code>{}</code>.</p>",
                esc(q)
            );
        } else {
            return see_other(&format!("/dashboard/customers/{}", seg(q)));
        }
    }
    let ids = match es::customids(ctx.store.reader(), &merchant).await {
        Ok(ids) => ids,
        Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
    };
    let list: String = ids
        .iter()
        .take(200)
        .map(|c| {
            format!(
                "<li><a href=\"/dashboard/customers/{}\">{}</a></li>",
                esc(&seg(c)),
                esc(c)
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"/dashboard/customers\" class=\"filters\" role=\"search\">\
         <label>customid or Stripe customer (<code>cus_…</code>) <input name=\"q\" value=\"{q}\" required></label>\
         <button type=\"submit\">Find</button></form>{found}\
         <h2>Known customers</h2>{list}",
        q = esc(param(&params, "q").unwrap_or_default()),
        list = if list.is_empty() {
            "<p class=\"empty\">No customers yet.</p>".to_string()
        } else {
            format!("<ul class=\"customers\">{list}</ul>")
        },
    );
    page(&ctx, &s, StatusCode::OK, "Customers", "customers", &body).await
}

pub async fn customer(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
) -> Response {
    let sub = match api::entitlements::subscriber(
        State(ctx.clone()),
        super::caller(&s),
        Path(customid.clone()),
    )
    .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(ApiError::NotFound(_)) => {
            let body = format!(
                "<p class=\"empty\">Nothing is known about the customer <code>{}</code> yet: no linked Stripe customer, purchase or permission.</p>",
                esc(&customid)
            );
            return page(
                &ctx,
                &s,
                StatusCode::NOT_FOUND,
                "Customer",
                "customers",
                &body,
            )
            .await;
        }
        Err(e) => return fail(&ctx, &s, "customers", e).await,
    };
    let rows = |key: &str, f: &dyn Fn(&Value) -> String| -> Vec<String> {
        sub[key]
            .as_array()
            .map(|items| items.iter().map(f).collect())
            .unwrap_or_default()
    };
    let yes = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let linked = rows("stripe_customers", &|c| {
        format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&text(&c["id"])),
            esc(&text(&c["connection_id"])),
            esc(&text(&c["linked_by"])),
            esc(&when(&c["linked_at"]))
        )
    });
    let perms = rows("permissions", &|p| {
        let skus: Vec<String> = p["skuarray"]
            .as_array()
            .map(|a| a.iter().map(|x| text(&x["identifier"])).collect())
            .unwrap_or_default();
        format!(
            "<tr><td><strong>{}</strong></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&p["identifier"])),
            yes(&p["is_valid"]),
            esc(&text(&p["entitlement"])),
            esc(&when(&p["expires_at"])),
            esc(&skus.join(", "))
        )
    });
    let purchases = rows("purchases", &|p| {
        format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&p["id"])),
            esc(&text(&p["object"])),
            esc(&text(&p["sku"])),
            yes(&p["is_valid"]),
            esc(&text(&p["entitlement"])),
            esc(&when(&p["expires_at"])),
            yes(&p["istrial"])
        )
    });
    let path = format!("/dashboard/customers/{}", seg(&customid));
    let csrf = csrf_input(&s);
    let grants = rows("grants", &|g| {
        let action = if g["revoked_at"].is_null() {
            format!(
                "<form method=\"post\" action=\"{}/grants/{}/revoke\">{csrf}\
                 <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label> \
                 <button type=\"submit\">Revoke</button></form>",
                esc(&path),
                esc(&seg(&text(&g["id"])))
            )
        } else {
            format!(
                "revoked {} by {}",
                esc(&when(&g["revoked_at"])),
                esc(&text(&g["revoked_by"]))
            )
        };
        format!(
            "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&g["permission"])),
            esc(&when(&g["starts_at"])),
            esc(&when(&g["expires_at"])),
            esc(&text(&g["reason"])),
            esc(&text(&g["created_by"])),
            action
        )
    });
    let grant_form = format!(
        "<form method=\"post\" action=\"{p}/grants\" class=\"filters\">{csrf}\
         <label>Permission <input name=\"permission\" required></label>\
         <label>Until (UTC, empty: no end) <input type=\"datetime-local\" name=\"expires_at\"></label>\
         <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
         <button type=\"submit\">Grant</button></form>",
        p = esc(&path)
    );
    let body = format!(
        "<p><a href=\"/dashboard/transactions?customid={cq}\">Transactions of this customer</a></p>\
         <h2>Permissions</h2>{perms}\
         <p class=\"hint\">Entitlement codes: 3 lifetime, 5 renewing, 4 canceling, 2 granted by hand, 1 grace, 0 incomplete, \
         -1 grace over, -2 payment failed, -5 expired, -8 revoked, -9 never, -10 paused.</p>\
         <h2>Grants</h2>{grants}<h3>Grant a permission</h3>{grant_form}\
         <h2>Linked Stripe customers</h2>{linked}<h2>Purchase history</h2>{purchases}\
         <p class=\"hint\">Evaluated at {at}.</p>",
        grants = table(
            &[
                "Permission",
                "From (UTC)",
                "Until (UTC)",
                "Reason",
                "Given by",
                ""
            ],
            &grants,
            "No grants."
        ),
        cq = esc(&form_urlencoded::byte_serialize(customid.as_bytes()).collect::<String>()),
        perms = table(
            &[
                "Permission",
                "Valid",
                "Entitlement",
                "Expires (UTC)",
                "SKUs"
            ],
            &perms,
            "No permissions."
        ),
        linked = table(
            &[
                "Stripe customer",
                "Connection",
                "Linked by",
                "Linked at (UTC)"
            ],
            &linked,
            "No linked Stripe customers."
        ),
        purchases = table(
            &[
                "Stripe object",
                "Kind",
                "SKU",
                "Valid",
                "Entitlement",
                "Expires (UTC)",
                "Trial"
            ],
            &purchases,
            "No purchases."
        ),
        at = esc(&when(&sub["evaluated_at"])),
    );
    let title = format!("Customer {customid}");
    page(&ctx, &s, StatusCode::OK, &title, "customers", &body).await
}

/// The dashboard's grant: given by the operator of the session.
pub async fn grant_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
    axum::Form(form): Form,
) -> Response {
    // `datetime-local` sends `2026-12-31T00:00`: UTC, seconds added.
    let expires_at = param(&form, "expires_at").map(|t| match t.len() {
        16 => format!("{t}:00Z"),
        _ => t.to_string(),
    });
    let body = api::entitlements::GrantCreate {
        permission: param(&form, "permission").unwrap_or_default().to_string(),
        expires_at,
        reason: param(&form, "reason").unwrap_or_default().to_string(),
    };
    let created_by = format!("operator:{}", s.username);
    match api::entitlements::grant(&ctx, &s.merchant_account_id, &customid, body, created_by).await
    {
        Ok(g) => {
            tracing::info!(grant = %g.id, operator = %s.username, "permission granted in the dashboard");
            see_other(&format!("/dashboard/customers/{}", seg(&customid)))
        }
        Err(e) => fail(&ctx, &s, "customers", e).await,
    }
}

pub async fn grant_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path((customid, id)): Path<(String, String)>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "customers", e).await;
    }
    let by = format!("operator:{}", s.username);
    match api::entitlements::revoke(&ctx, &s.merchant_account_id, &customid, &id, &by).await {
        Ok(_) => {
            tracing::info!(grant = %id, operator = %s.username, "grant revoked in the dashboard");
            see_other(&format!("/dashboard/customers/{}", seg(&customid)))
        }
        Err(e) => fail(&ctx, &s, "customers", e).await,
    }
}

// ---- catalogue -------------------------------------------------------------------------------

pub async fn catalogue(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let skus = match api::entitlements::sku_list(State(ctx.clone()), super::caller(&s)).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    let defs = match api::definitions::definition_list(State(ctx.clone()), super::caller(&s)).await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    let csrf = csrf_input(&s);
    let sku_ids: Vec<String> = skus["items"]
        .as_array()
        .map(|a| a.iter().map(|x| text(&x["identifier"])).collect())
        .unwrap_or_default();
    let kinds = |current: &str| -> String {
        ["subscription", "one_time"]
            .iter()
            .map(|k| {
                format!(
                    "<option value=\"{k}\"{}>{k}</option>",
                    if *k == current { " selected" } else { "" }
                )
            })
            .collect()
    };
    let sku_rows: Vec<String> = skus["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|k| {
                    let id = text(&k["identifier"]);
                    format!(
                        "<tr><td><strong>{idt}</strong></td><td colspan=\"2\">\
                         <form method=\"post\" action=\"/dashboard/skus/{ids}\" class=\"inline\">{csrf}\
                         <input name=\"product_id\" value=\"{prod}\" aria-label=\"Product id of {idt}\" required>\
                         <select name=\"kind\" aria-label=\"Kind of {idt}\">{kinds}</select>\
                         <button type=\"submit\">Save</button></form></td></tr>",
                        idt = esc(&id),
                        ids = esc(&seg(&id)),
                        prod = esc(&text(&k["product_id"])),
                        kinds = kinds(&text(&k["kind"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let checkboxes = |chosen: &[String]| -> String {
        if sku_ids.is_empty() {
            return "<span class=\"hint\">(create a SKU first)</span>".into();
        }
        sku_ids
            .iter()
            .map(|k| {
                format!(
                    "<label class=\"check\"><input type=\"checkbox\" name=\"skus\" value=\"{v}\"{c}> {v}</label>",
                    v = esc(k),
                    c = if chosen.contains(k) { " checked" } else { "" }
                )
            })
            .collect()
    };
    let def_rows: Vec<String> = defs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|d| {
                    let id = text(&d["identifier"]);
                    let chosen: Vec<String> = d["skus"]
                        .as_array()
                        .map(|a| a.iter().map(text).collect())
                        .unwrap_or_default();
                    format!(
                        "<tr><td><strong>{idt}</strong></td><td>\
                         <form method=\"post\" action=\"/dashboard/permissions/{ids}\" class=\"inline\">{csrf}\
                         {boxes}<button type=\"submit\">Save</button></form></td></tr>",
                        idt = esc(&id),
                        ids = esc(&seg(&id)),
                        boxes = checkboxes(&chosen),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = format!(
        "{notice}<h2>SKUs</h2>{sku_table}\
         <form method=\"post\" action=\"/dashboard/skus\" class=\"card stack\">{csrf}<h3>New SKU</h3>\
         <label>Identifier <input name=\"identifier\" required pattern=\"[A-Za-z0-9._-]{{1,100}}\"></label>\
         <label>Stripe product (<code>prod_…</code>) <input name=\"product_id\" required></label>\
         <label>Kind <select name=\"kind\">{kinds}</select></label>\
         <button type=\"submit\">Create SKU</button></form>\
         <h2>Permissions</h2>{def_table}\
         <form method=\"post\" action=\"/dashboard/permissions\" class=\"card stack\">{csrf}<h3>New permission</h3>\
         <label>Identifier <input name=\"identifier\" required pattern=\"[A-Za-z0-9._-]{{1,100}}\"></label>\
         <fieldset><legend>Granted by holding any of these SKUs</legend>{boxes}</fieldset>\
         <button type=\"submit\">Create permission</button></form>",
        notice = notice(&params),
        sku_table = table(&["SKU", "Product", ""], &sku_rows, "No SKUs yet."),
        def_table = table(&["Permission", "SKUs"], &def_rows, "No permissions yet."),
        kinds = kinds("subscription"),
        boxes = checkboxes(&[]),
    );
    page(&ctx, &s, StatusCode::OK, "Catalogue", "catalogue", &body).await
}

pub async fn sku_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    body.insert("store".into(), json!("stripe"));
    for k in ["identifier", "product_id", "kind"] {
        if let Some(v) = param(&form, k) {
            body.insert(k.into(), json!(v));
        }
    }
    let body = match api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::entitlements::sku_create(
        State(ctx.clone()),
        super::caller(&s),
        api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn sku_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    for k in ["product_id", "kind"] {
        if let Some(v) = param(&form, k) {
            body.insert(k.into(), json!(v));
        }
    }
    let body = match api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::entitlements::sku_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn permission_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Some(v) = param(&form, "identifier") {
        body.insert("identifier".into(), json!(v));
    }
    body.insert("skus".into(), json!(all(&form, "skus")));
    let body = match crate::api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::definitions::definition_create(
        State(ctx.clone()),
        super::caller(&s),
        crate::api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn permission_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    body.insert("skus".into(), json!(all(&form, "skus")));
    let body = match crate::api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::definitions::definition_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        crate::api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

// ---- API keys --------------------------------------------------------------------------------

async fn keys_page(
    ctx: &ApiContext,
    s: &Session,
    params: &[(String, String)],
    created: Option<(String, String)>,
) -> Response {
    let keys = match accounts::list_api_keys(ctx.store.reader(), None).await {
        Ok(k) => k,
        Err(e) => return fail(ctx, s, "keys", e.into()).await,
    };
    let csrf = csrf_input(s);
    let rows: Vec<String> = keys
        .iter()
        .filter(|k| {
            k.merchant_account_id.is_none()
                || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str())
        })
        .rev()
        .map(|k| {
            let action = if k.revoked_at.is_some() {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/dashboard/keys/{}/revoke\" class=\"inline\">{csrf}{}\
                     <button type=\"submit\" class=\"danger\">Revoke</button></form>",
                    esc(&seg(&k.id)),
                    confirm_box("sure")
                )
            };
            format!(
                "<tr data-key-id=\"{id}\"><td><code>{id}</code></td><td>{kind}</td><td>{name}</td><td>{acct}</td>\
                 <td>{created}</td><td>{status}</td><td>{action}</td></tr>",
                id = esc(&k.id),
                kind = esc(&k.kind),
                name = esc(k.display_name.as_deref().unwrap_or_default()),
                acct = esc(k.merchant_account_id.as_deref().unwrap_or("all accounts")),
                created = esc(&when(&json!(crate::clock::rfc3339(k.created_at)))),
                status = if k.revoked_at.is_some() { badge("revoked") } else { badge("active") },
            )
        })
        .collect();
    let shown = match created {
        Some((id, full)) => format!(
            "<section class=\"card shown-once\" role=\"status\"><h2>New key {}</h2>\
             <p><strong>Copy it now: it is shown only this once</strong> (only its hash is stored).</p>\
             <div class=\"copy-row\"><input id=\"new-key\" data-testid=\"new-key\" readonly value=\"{}\">\
             <button type=\"button\" data-copy=\"#new-key\">Copy</button></div></section>",
            esc(&id),
            esc(&full)
        ),
        None => String::new(),
    };
    let body = format!(
        "{notice}{shown}{table}\
         <form method=\"post\" action=\"/dashboard/keys\" class=\"card stack\">{csrf}<h3>New API key</h3>\
         <label>Kind <select name=\"kind\"><option value=\"secret\">secret (server-side API)</option>\
         <option value=\"public\">public (permission reads, safe in apps)</option></select></label>\
         <label>Name <input name=\"display_name\" maxlength=\"100\"></label>\
         <p class=\"hint\">The key is bound to the merchant account <code>{acct}</code>.</p>\
         <button type=\"submit\">Create key</button></form>",
        notice = notice(params),
        table = table(
            &[
                "Id",
                "Kind",
                "Name",
                "Account",
                "Created (UTC)",
                "Status",
                ""
            ],
            &rows,
            "No API keys."
        ),
        acct = esc(&s.merchant_account_id),
    );
    page(ctx, s, StatusCode::OK, "API keys", "keys", &body).await
}

pub async fn keys(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    keys_page(&ctx, &s, &params, None).await
}

/// Creates a key with the function `tollgate keys create` uses and shows it in the answer
/// itself, once: it is not stored anywhere it could be shown from again, so this one action
/// answers with a page instead of a redirect.
pub async fn key_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let kind = match param(&form, "kind") {
        Some("secret") | None => KeyKind::Secret,
        Some("public") => KeyKind::Public,
        Some(_) => return fail(&ctx, &s, "keys", bad("The kind is secret or public.")).await,
    };
    let name = param(&form, "display_name");
    if name.is_some_and(|n| n.chars().count() > 100) {
        return fail(
            &ctx,
            &s,
            "keys",
            bad("The name has at most 100 characters."),
        )
        .await;
    }
    let (row, full) = new_key(kind, Some(&s.merchant_account_id), name, ctx.now());
    if let Err(e) = accounts::insert_api_key(ctx.store.writer(), &row).await {
        return fail(&ctx, &s, "keys", e.into()).await;
    }
    tracing::info!(key = %row.id, operator = %s.username, "API key created in the dashboard");
    keys_page(&ctx, &s, &[], Some((row.id, full))).await
}

pub async fn key_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "keys", e).await;
    }
    // Only keys this session's account can see: its own and operator keys.
    let visible = match accounts::get_api_key(ctx.store.reader(), &id).await {
        Ok(Some(k)) => {
            k.merchant_account_id.is_none()
                || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str())
        }
        Ok(None) => false,
        Err(e) => return fail(&ctx, &s, "keys", e.into()).await,
    };
    if !visible {
        return fail(&ctx, &s, "keys", ApiError::not_found("API key")).await;
    }
    match accounts::revoke_api_key(ctx.store.writer(), &id, ctx.now()).await {
        Ok(true) => {
            tracing::info!(key = %id, operator = %s.username, "API key revoked in the dashboard");
            see_other("/dashboard/keys?done=key_revoked")
        }
        Ok(false) => fail(&ctx, &s, "keys", bad("This key is already revoked.")).await,
        Err(e) => fail(&ctx, &s, "keys", e.into()).await,
    }
}
