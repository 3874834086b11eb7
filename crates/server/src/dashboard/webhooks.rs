//! The dashboard's webhooks pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::page::esc;


use super::common::*;

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
