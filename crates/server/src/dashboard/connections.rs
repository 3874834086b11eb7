//! The dashboard's connections pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::page::esc;


use super::common::*;

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
